//! What browsers need through the gateway: the manager's web console (public files, the
//! identity-provider question) and CORS (preflights, headers on every response).

use serde_json::json;

use crate::support::*;

/// The stand-in behind a gateway with authentication on (one API key) and `extra` TOML.
async fn with_auth(extra: &str) -> (pipeline_gateway::Gateway, feldera_standin::Standin) {
    let upstream = standin("a").await;
    let config = config_for(&upstream.url(), extra).replace(
        "[auth]\nmode = \"off\"",
        &format!(
            "[auth]\n[[auth.api_keys]]\nname = \"ci\"\nsha256 = \"{}\"\nrole = \"write\"",
            pipeline_gateway::auth::apikey::hash(KEY)
        ),
    );
    (gateway(&config).await, upstream)
}

const KEY: &str = "apikey:abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcd";

#[tokio::test]
async fn the_console_loads_without_credentials_with_its_caching_headers() {
    let (gw, upstream) = with_auth("").await;
    let index = get(&format!("{}/", gw.url())).await;
    assert_eq!(index.status, 200, "{}", index.text());
    assert!(
        index
            .header("content-type")
            .unwrap()
            .starts_with("text/html"),
        "{:?}",
        index.headers
    );
    assert!(index.text().contains("<html"), "{}", index.text());
    let page = get(&format!("{}/pipelines/orders/", gw.url())).await;
    assert_eq!(page.status, 200);
    let script = get(&format!("{}/_app/console.js", gw.url())).await;
    assert_eq!(script.status, 200);
    assert!(
        script.header("cache-control").is_some(),
        "{:?}",
        script.headers
    );
    let head = send("HEAD", &format!("{}/", gw.url()), &[], b"").await;
    assert_eq!(head.status, 200);
    let seen: Vec<String> = upstream
        .requests()
        .iter()
        .map(|r| r.uri.path().to_owned())
        .collect();
    assert!(seen.contains(&"/_app/console.js".to_owned()), "{seen:?}");
    // The API next to it still needs a credential, and no console-looking path can name it
    // in a way the manager would decode into the API.
    get(&format!("{}/v0/pipelines", gw.url()))
        .await
        .error(401, "AuthenticationFailed");
    let before = upstream.requests().len();
    let details = get(&format!("{}/%76%30/pipelines", gw.url()))
        .await
        .error(400, "InvalidPath");
    assert_eq!(details["reason"], "percent-encoding");
    assert_eq!(upstream.requests().len(), before);
}

#[tokio::test]
async fn the_identity_provider_question_is_the_managers_unless_configured() {
    let (gw, upstream) = with_auth("").await;
    let reply = get(&format!("{}/config/authentication", gw.url())).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json(), json!({}), "the stand-in's answer");
    assert_eq!(upstream.requests().len(), 1);

    let (gw, upstream) = with_auth(
        r#"
[[auth.jwt]]
issuer = "https://idp.example/"
audiences = ["feldera-api"]
algorithms = ["RS256"]
jwks_url = "https://idp.example/jwks"
[console.authentication]
generic_oidc = { issuer = "https://idp.example/", client_id = "feldera-console" }
"#,
    )
    .await;
    let reply = get(&format!("{}/config/authentication", gw.url())).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(
        reply.json(),
        json!({"GenericOidc": {"issuer": "https://idp.example/", "client_id": "feldera-console", "extra_oidc_scopes": []}})
    );
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn without_cors_preflights_reach_the_manager_and_other_options_are_405() {
    let (gw, upstream) = with_auth("").await;
    let reply = send(
        "OPTIONS",
        &format!("{}/v0/pipelines", gw.url()),
        &[
            ("origin", "https://console.example.com"),
            ("access-control-request-method", "GET"),
        ],
        b"",
    )
    .await;
    assert_ne!(reply.status, 401, "no credential is asked of a preflight");
    let seen = upstream.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, http::Method::OPTIONS);
    let reply = send("OPTIONS", &format!("{}/v0/pipelines", gw.url()), &[], b"").await;
    reply.error(405, "MethodNotAllowed");
}

const CORS: &str = r#"
[cors]
allow_origins = ["https://console.example.com"]
allow_credentials = true
"#;

#[tokio::test]
async fn with_cors_the_gateway_answers_preflights_and_refuses_other_origins() {
    let (gw, upstream) = with_auth(CORS).await;
    let url = format!("{}/v0/pipelines/orders/activate", gw.url());
    let allowed = send(
        "OPTIONS",
        &url,
        &[
            ("origin", "https://console.example.com"),
            ("access-control-request-method", "POST"),
            (
                "access-control-request-headers",
                "authorization, content-type",
            ),
        ],
        b"",
    )
    .await;
    assert_eq!(allowed.status, 204, "{}", allowed.text());
    assert_eq!(
        allowed.header("access-control-allow-origin"),
        Some("https://console.example.com")
    );
    assert_eq!(
        allowed.header("access-control-allow-credentials"),
        Some("true")
    );
    assert_eq!(
        allowed.header("access-control-allow-methods"),
        Some("GET, POST, PUT, PATCH, DELETE")
    );
    assert_eq!(allowed.header("access-control-max-age"), Some("600"));
    let refused = send(
        "OPTIONS",
        &url,
        &[
            ("origin", "https://evil.example"),
            ("access-control-request-method", "POST"),
        ],
        b"",
    )
    .await;
    let details = refused.error(403, "CorsRejected");
    assert_eq!(
        details,
        json!({"origin": "https://evil.example", "refused": "origin"})
    );
    assert!(refused.header("access-control-allow-origin").is_none());
    assert!(
        upstream.requests().is_empty(),
        "preflights never reach the manager"
    );
}

#[tokio::test]
async fn with_cors_errors_carry_the_headers_a_browser_needs_to_read_them() {
    let (gw, _upstream) = with_auth(CORS).await;
    let reply = send(
        "GET",
        &format!("{}/v0/pipelines", gw.url()),
        &[("origin", "https://console.example.com")],
        b"",
    )
    .await;
    reply.error(401, "AuthenticationFailed");
    assert_eq!(
        reply.header("access-control-allow-origin"),
        Some("https://console.example.com")
    );
    assert!(reply
        .header("access-control-expose-headers")
        .unwrap()
        .contains("retry-after"));
    let ok = send(
        "GET",
        &format!("{}/v0/pipelines", gw.url()),
        &[
            ("origin", "https://console.example.com"),
            ("authorization", &format!("Bearer {KEY}")),
        ],
        b"",
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(
        ok.header("access-control-allow-origin"),
        Some("https://console.example.com")
    );
    assert_eq!(ok.header("vary"), Some("origin"));
}

#[tokio::test]
async fn console_files_and_preflights_spend_only_the_per_ip_budget() {
    let (gw, _upstream) = with_auth(&format!(
        "{CORS}\n[rate_limit]\nclient_ip = {{ rate = \"1/h\", burst = 2 }}\n"
    ))
    .await;
    assert_eq!(get(&format!("{}/", gw.url())).await.status, 200);
    let preflight = send(
        "OPTIONS",
        &format!("{}/v0/pipelines", gw.url()),
        &[
            ("origin", "https://console.example.com"),
            ("access-control-request-method", "GET"),
        ],
        b"",
    )
    .await;
    assert_eq!(preflight.status, 204);
    let details = get(&format!("{}/", gw.url()))
        .await
        .error(429, "RateLimitExceeded");
    assert_eq!(details["policy"], "client_ip");
}
