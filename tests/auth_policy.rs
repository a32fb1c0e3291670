//! Black-box tests of "whose token is it for": a real gateway on 127.0.0.1:0 in front of real
//! stand-in managers, over real sockets. Issuers bound to tenants, routes that name the
//! issuers they accept, token types (access tokens only), budgets shared by a tenant, and
//! API keys that do not tell an expired key from an unknown one. Every refusal is checked for
//! status, `error_code` and its interesting `details`.

pub mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use pipeline_gateway::auth::apikey;
use pipeline_gateway::Gateway;
use serde_json::{json, Value};
use support::keys::{jwks, key_sources, TestKey};
use support::{gateway, metric, send, serve, standin, Reply};

/// The configuration of a gateway with an admin listener, one upstream per `(name, url)`,
/// and `rest` (routes, `[auth]`, `[rate_limit]`).
fn config(upstreams: &[(&str, String)], rest: &str) -> String {
    let mut text =
        String::from("[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n");
    for (name, url) in upstreams {
        text.push_str(&format!(
            "[[upstreams]]\nname = \"{name}\"\nendpoints = [\"{url}\"]\n\
             connect_timeout = \"1s\"\nrequest_timeout = \"5s\"\n"
        ));
    }
    text.push_str(rest);
    text
}

/// `GET path` with `Authorization: Bearer <bearer>` and more headers.
async fn get_as(gw: &Gateway, path: &str, bearer: &str, headers: &[(&str, &str)]) -> Reply {
    let auth = format!("Bearer {bearer}");
    let mut all = vec![("authorization", auth.as_str())];
    all.extend_from_slice(headers);
    send("GET", &format!("{}{path}", gw.url()), &all, b"").await
}

/// The admin listener's `/metrics` text.
async fn metrics(gw: &Gateway) -> String {
    let admin = gw.admin_addr().expect("admin listener");
    send("GET", &format!("http://{admin}/metrics"), &[], b"")
        .await
        .text()
}

/// An OpenID provider on 127.0.0.1:0: its discovery document names its key set.
struct Idp {
    issuer: String,
}

impl Idp {
    async fn start(keys: &[&TestKey]) -> Idp {
        let key_set = jwks(keys).to_string();
        let discovery: Arc<std::sync::OnceLock<String>> = Arc::default();
        let document = discovery.clone();
        let addr: SocketAddr = serve(Arc::new(move |request: http::Request<_>| {
            let body = if request.uri().path() == "/jwks.json" {
                key_set.clone()
            } else {
                document.get().cloned().unwrap_or_default()
            };
            http::Response::new(Full::new(Bytes::from(body)))
        }))
        .await;
        let issuer = format!("http://{addr}");
        let _ = discovery.set(
            json!({ "issuer": issuer, "jwks_uri": format!("{issuer}/jwks.json") }).to_string(),
        );
        Idp { issuer }
    }
}

/// One `[[auth.jwt]]` issuer: roles from `feldera_role`, tenants from `tenant`.
fn issuer(iss: &str, keys: &str, extra: &str) -> String {
    format!(
        "[[auth.jwt]]\nissuer = \"{iss}\"\naudiences = [\"feldera-api\"]\n\
         algorithms = [\"ES256\", \"RS256\", \"EdDSA\"]\n{keys}\n\
         role_claim = \"feldera_role\"\ntenant_claim = \"tenant\"\n{extra}\n"
    )
}

fn claims(iss: &str, tenant: &str) -> Value {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    json!({
        "iss": iss, "sub": "alice", "aud": "feldera-api", "exp": now + 600,
        "feldera_role": "write", "tenant": tenant,
    })
}

fn with(mut claims: Value, name: &str, value: Value) -> Value {
    claims[name] = value;
    claims
}

/// A token with this `typ` header (none for `None`).
fn typed(key: &TestKey, typ: Option<&str>, claims: &Value) -> String {
    let mut header = json!({ "alg": key.alg(), "kid": key.kid });
    if let Some(typ) = typ {
        header["typ"] = json!(typ);
    }
    key.token_raw(&header.to_string(), &claims.to_string())
}

const DEFAULT_ROUTE: &str = "[[routes]]\nupstream = \"m\"\ndefault = true\npipelines = [\"*\"]\n";

/// The `Feldera-Tenant` the manager received with its last request.
fn last_tenant(manager: &feldera_standin::Standin) -> Option<String> {
    let requests = manager.requests();
    let last = requests.last()?;
    last.headers
        .get("feldera-tenant")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

// ---------------------------------------------------------------- issuers bound to tenants

#[tokio::test]
async fn an_issuer_naming_a_tenant_outside_its_list_is_403_not_a_tenant_member() {
    let manager = standin("a").await;
    let dir = tempfile::tempdir().unwrap();
    let (a_key, b_key, c_key) = (
        TestKey::es256("a"),
        TestKey::es256("b"),
        TestKey::es256("c"),
    );
    let (a_dir, b_dir, c_dir) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("c"),
    );
    for d in [&a_dir, &b_dir, &c_dir] {
        std::fs::create_dir(d).unwrap();
    }
    let (a, b, c) = ("https://idp-a/", "https://idp-b/", "https://idp-c/");
    let auth = format!(
        "[auth]\n{}{}{}",
        issuer(a, &key_sources(&[&a_key], &a_dir), "tenants = [\"acme\"]"),
        issuer(b, &key_sources(&[&b_key], &b_dir), "tenants = [\"beta-*\"]"),
        // Without `tenants`, an issuer may still name any tenant (documented risk).
        issuer(c, &key_sources(&[&c_key], &c_dir), ""),
    );
    let gw = gateway(&config(
        &[("m", manager.url())],
        &format!("{DEFAULT_ROUTE}{auth}"),
    ))
    .await;
    let b_for_acme = b_key.token(&claims(b, "acme"));
    let requests_before = manager.requests().len();

    // B claims A's tenant: refused, whether or not the client asks for it.
    let asked = get_as(
        &gw,
        "/v0/pipelines",
        &b_for_acme,
        &[("feldera-tenant", "acme")],
    )
    .await;
    let details = asked.error(403, "NotATenantMember");
    assert_eq!(details, json!({ "tenant": "acme" }));
    let unasked = get_as(&gw, "/v0/pipelines", &b_for_acme, &[]).await;
    assert_eq!(
        unasked.error(403, "NotATenantMember"),
        json!({}),
        "a tenant read from the token is not echoed"
    );
    // One foreign tenant among its own spoils the token, even for its own tenant.
    let mixed = b_key.token(&with(claims(b, ""), "tenant", json!(["beta-1", "acme"])));
    let answer = get_as(
        &gw,
        "/v0/pipelines",
        &mixed,
        &[("feldera-tenant", "beta-1")],
    )
    .await;
    assert_eq!(answer.error(403, "NotATenantMember"), json!({}));

    // Each issuer in its own tenants reaches the manager, with the verified tenant.
    for (token, tenant) in [
        (b_key.token(&claims(b, "beta-1")), "beta-1"),
        (a_key.token(&claims(a, "acme")), "acme"),
        (c_key.token(&claims(c, "acme")), "acme"),
    ] {
        let answer = get_as(&gw, "/v0/pipelines", &token, &[]).await;
        assert_eq!(answer.status, 200, "{tenant}: {}", answer.text());
        assert_eq!(last_tenant(&manager).as_deref(), Some(tenant));
    }
    assert_eq!(
        manager.requests().len(),
        requests_before + 3,
        "no refused request reached the manager"
    );
}

// ---------------------------------------------------------------- routes name their issuers

#[tokio::test]
async fn a_route_refuses_credentials_from_issuers_it_does_not_name() {
    let (acme, rest) = (standin("acme").await, standin("rest").await);
    let dir = tempfile::tempdir().unwrap();
    let (a_key, b_key) = (TestKey::es256("a"), TestKey::eddsa("b"));
    let (a_dir, b_dir) = (dir.path().join("a"), dir.path().join("b"));
    for d in [&a_dir, &b_dir] {
        std::fs::create_dir(d).unwrap();
    }
    let (a, b) = ("https://idp-a/", "https://idp-b/");
    let key = apikey::generate();
    let rest_text = format!(
        "[[routes]]\npipelines = [\"orders\"]\nupstream = \"acme\"\nissuers = [\"{a}\"]\n\
         [[routes]]\npipelines = [\"*\"]\nupstream = \"rest\"\ndefault = true\n\
         issuers = [\"{b}\", \"apikey\"]\n\
         [auth]\n\
         [[auth.api_keys]]\nname = \"ci\"\nsha256 = \"{}\"\nrole = \"read\"\n{}{}",
        apikey::hash(&key),
        issuer(a, &key_sources(&[&a_key], &a_dir), ""),
        issuer(b, &key_sources(&[&b_key], &b_dir), ""),
    );
    let gw = gateway(&config(
        &[("acme", acme.url()), ("rest", rest.url())],
        &rest_text,
    ))
    .await;
    let (from_a, from_b) = (
        a_key.token(&claims(a, "acme")),
        b_key.token(&claims(b, "beta")),
    );
    let orders = "/v0/pipelines/orders";
    // The route that takes `orders` serves A only: B and the API key are refused there, and
    // do not fall through to the default route (which would serve them).
    for bearer in [&from_b, &key] {
        let answer = get_as(&gw, orders, bearer, &[]).await;
        let details = answer.error(403, "InsufficientPermissions");
        assert_eq!(details, json!({ "reason": "issuer_not_accepted" }));
    }
    assert!(acme.requests().is_empty() && rest.requests().is_empty());
    let answer = get_as(&gw, orders, &from_a, &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.header("x-standin-instance"), Some("acme"));
    // The default route serves B and API keys, not A.
    for bearer in [&from_b, &key] {
        let answer = get_as(&gw, "/v0/pipelines", bearer, &[]).await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        assert_eq!(answer.header("x-standin-instance"), Some("rest"));
    }
    let answer = get_as(&gw, "/v0/pipelines", &from_a, &[]).await;
    answer.error(403, "InsufficientPermissions");
    // Public paths carry no credential: the route's issuers do not apply.
    let healthz = send("GET", &format!("{}/healthz", gw.url()), &[], b"").await;
    assert_eq!(healthz.status, 200, "{}", healthz.text());
}

// ---------------------------------------------------------------- token types

#[tokio::test]
async fn a_discovery_issuer_refuses_id_tokens_unless_told_otherwise() {
    let manager = standin("a").await;
    let key = TestKey::es256("k1");
    let idp = Idp::start(&[&key]).await;
    let iss = idp.issuer.as_str();
    let strict = gateway(&config(
        &[("m", manager.url())],
        &format!(
            "{DEFAULT_ROUTE}[auth]\n{}",
            issuer(iss, "discovery = true", "")
        ),
    ))
    .await;
    let access = claims(iss, "acme");
    for (name, token) in [
        (
            "nonce",
            with(access.clone(), "nonce", json!("n-0S6_WzA2Mj")),
        ),
        (
            "token_use id",
            with(access.clone(), "token_use", json!("id")),
        ),
    ] {
        let answer = get_as(&strict, "/v0/pipelines", &key.token(&token), &[]).await;
        let details = answer.error(401, "AuthenticationFailed");
        assert_eq!(details["reason"], "not_an_access_token", "{name}");
    }
    for token in [
        access.clone(),
        with(access.clone(), "token_use", json!("access")),
    ] {
        let answer = get_as(&strict, "/v0/pipelines", &key.token(&token), &[]).await;
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    // An operator who wants ID tokens accepted says so.
    let lax = gateway(&config(
        &[("m", manager.url())],
        &format!(
            "{DEFAULT_ROUTE}[auth]\n{}",
            issuer(iss, "discovery = true", "reject_id_tokens = false")
        ),
    ))
    .await;
    let id_token = key.token(&with(access, "nonce", json!("n")));
    assert_eq!(
        get_as(&lax, "/v0/pipelines", &id_token, &[]).await.status,
        200
    );
}

#[tokio::test]
async fn token_types_accept_only_the_listed_typ_headers() {
    let manager = standin("a").await;
    let dir = tempfile::tempdir().unwrap();
    let key = TestKey::rs256("k1");
    let iss = "https://idp.example.com/";
    let gw = gateway(&config(
        &[("m", manager.url())],
        &format!(
            "{DEFAULT_ROUTE}[auth]\n{}",
            issuer(
                iss,
                &key_sources(&[&key], dir.path()),
                "token_types = [\"at+jwt\"]"
            )
        ),
    ))
    .await;
    let c = claims(iss, "acme");
    for (typ, status) in [
        (Some("at+jwt"), 200),
        (Some("application/AT+JWT"), 200),
        (Some("JWT"), 401),
        (None, 401),
    ] {
        let answer = get_as(&gw, "/v0/pipelines", &typed(&key, typ, &c), &[]).await;
        if status == 200 {
            assert_eq!(answer.status, 200, "{typ:?}: {}", answer.text());
        } else {
            let details = answer.error(401, "AuthenticationFailed");
            assert_eq!(details["reason"], "wrong_token_type", "{typ:?}");
        }
    }
}

// ---------------------------------------------------------------- budgets shared by a tenant

#[tokio::test]
async fn five_keys_of_one_tenant_share_one_budget() {
    let manager = standin("a").await;
    let keys: Vec<(String, &str)> = (0..6)
        .map(|i| (apikey::generate(), if i < 5 { "acme" } else { "beta" }))
        .collect();
    let mut auth = String::from("[auth]\n");
    for (i, (key, tenant)) in keys.iter().enumerate() {
        auth.push_str(&format!(
            "[[auth.api_keys]]\nname = \"k{i}\"\nsha256 = \"{}\"\nrole = \"read\"\n\
             tenant = \"{tenant}\"\n",
            apikey::hash(key)
        ));
    }
    let limits = "[rate_limit]\nprincipal = { rate = \"1/h\", burst = 10 }\n\
                  [[rate_limit.tenants]]\nname = \"per-tenant\"\ntenants = [\"acme\", \"beta\"]\n\
                  rate = \"1/h\"\nburst = 3\n";
    let gw = gateway(&config(
        &[("m", manager.url())],
        &format!("{DEFAULT_ROUTE}{auth}{limits}"),
    ))
    .await;
    let mut answers = Vec::new();
    for (key, _) in &keys[..5] {
        answers.push(get_as(&gw, "/v0/pipelines", key, &[]).await);
    }
    let statuses: Vec<u16> = answers.iter().map(|a| a.status.as_u16()).collect();
    assert_eq!(
        statuses,
        [200, 200, 200, 429, 429],
        "one budget for five keys"
    );
    let policies: Vec<&str> = answers[0]
        .headers
        .get_all("ratelimit-policy")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    assert_eq!(
        policies,
        ["\"principal\";q=10;w=36000", "\"per-tenant\";q=3;w=10800"]
    );
    let refused = &answers[3];
    let details = refused.error(429, "RateLimitExceeded");
    assert_eq!(details["policy"], "per-tenant");
    assert_eq!(refused.header("x-ratelimit-remaining"), Some("0"));
    assert!(refused.header("retry-after").is_some());
    // Another tenant has its own budget.
    assert_eq!(
        get_as(&gw, "/v0/pipelines", &keys[5].0, &[]).await.status,
        200
    );
}

// ---------------------------------------------------------------- reloads keep what is valid

#[tokio::test]
async fn a_reload_keeps_an_unchanged_issuers_key_set_and_drops_identities_under_new_rules() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let manager = standin("a").await;
    let key = TestKey::es256("k1");
    let key_set = jwks(&[&key]).to_string();
    let fetches = Arc::new(AtomicUsize::new(0));
    let counted = fetches.clone();
    let idp = serve(Arc::new(move |_request: http::Request<_>| {
        counted.fetch_add(1, Ordering::SeqCst);
        http::Response::new(Full::new(Bytes::from(key_set.clone())))
    }))
    .await;
    let iss = "https://idp.example.com/";
    let text = |extra: &str| {
        config(
            &[("m", manager.url())],
            &format!(
                "{DEFAULT_ROUTE}[auth]\n{}",
                issuer(
                    iss,
                    &format!("jwks_url = \"http://{idp}/jwks.json\""),
                    extra
                )
            ),
        )
    };
    let gw = gateway(&text("")).await;
    let token = key.token(&claims(iss, "acme"));
    assert_eq!(get_as(&gw, "/v0/pipelines", &token, &[]).await.status, 200);
    let fetched = fetches.load(Ordering::SeqCst);
    assert!(fetched >= 1);
    let parse = |text: String| pipeline_gateway::config::Config::from_toml(&text).unwrap();

    // The same issuer, source and pace: the set comes along, nothing is fetched, and
    // tokens are verified (or served from the cache) at once.
    gw.reload(parse(text(""))).await.unwrap();
    assert!(gw.authenticator().readiness().is_ok());
    let fresh = key.token(&with(claims(iss, "acme"), "sub", json!("bob")));
    assert_eq!(get_as(&gw, "/v0/pipelines", &token, &[]).await.status, 200);
    assert_eq!(get_as(&gw, "/v0/pipelines", &fresh, &[]).await.status, 200);
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        fetched,
        "no fetch after the reload"
    );

    // Another audience: the cached identity is not served any more.
    let other = text("").replace("[\"feldera-api\"]", "[\"other-api\"]");
    gw.reload(parse(other)).await.unwrap();
    let answer = get_as(&gw, "/v0/pipelines", &token, &[]).await;
    assert_eq!(
        answer.error(401, "AuthenticationFailed")["reason"],
        "invalid_audience"
    );
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        fetched,
        "the key set still came along"
    );

    // Another refresh pace is another key set: fetched anew.
    gw.reload(parse(text("jwks_refresh = \"10m\"")))
        .await
        .unwrap();
    assert_eq!(get_as(&gw, "/v0/pipelines", &token, &[]).await.status, 200);
    assert!(fetches.load(Ordering::SeqCst) > fetched);
}

// ---------------------------------------------------------------- API keys

#[tokio::test]
async fn an_expired_api_key_answers_exactly_like_an_unknown_one() {
    let manager = standin("a").await;
    let (live, old) = (apikey::generate(), apikey::generate());
    let gw = gateway(&config(
        &[("m", manager.url())],
        &format!(
            "[[routes]]\nupstream = \"m\"\ndefault = true\n\
             [auth]\n\
             [[auth.api_keys]]\nname = \"live\"\nsha256 = \"{}\"\nrole = \"read\"\n\
             [[auth.api_keys]]\nname = \"old\"\nsha256 = \"{}\"\nrole = \"read\"\n\
             expires = \"2001-01-01T00:00:00Z\"\n",
            apikey::hash(&live),
            apikey::hash(&old)
        ),
    ))
    .await;
    let expired = get_as(&gw, "/v0/pipelines", &old, &[]).await;
    let unknown = get_as(&gw, "/v0/pipelines", &apikey::generate(), &[]).await;
    let details = expired.error(401, "AuthenticationFailed");
    assert_eq!(details["reason"], "invalid_api_key");
    unknown.error(401, "AuthenticationFailed");
    assert_eq!(expired.body, unknown.body, "the same body, byte for byte");
    assert_eq!(
        expired.header("www-authenticate"),
        unknown.header("www-authenticate")
    );
    // Operators still tell them apart.
    let text = metrics(&gw).await;
    let failures = "pipeline_gateway_auth_failures_total{reason=";
    assert_eq!(
        metric(&text, &format!("{failures}\"expired_api_key\"}}")),
        1
    );
    assert_eq!(
        metric(&text, &format!("{failures}\"invalid_api_key\"}}")),
        1
    );
    assert_eq!(get_as(&gw, "/v0/pipelines", &live, &[]).await.status, 200);
}
