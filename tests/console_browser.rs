//! The manager's web console, in a real headless browser, through the gateway with
//! authentication on: the page (the stand-in's small console, which does what the real one
//! does) loads its files without credentials, asks `/config/authentication` — answered by the
//! gateway from `[console.authentication]` —, lists the pipelines with `Authorization: Bearer`,
//! and opens the query WebSocket with the `feldera-bearer.<base64url(token)>` subprotocol; with
//! a bad token it shows the gateway's 401.
//!
//! Without `chromium`/`chromedriver` the test skips loudly; under
//! `PIPELINE_GATEWAY_REQUIRE_TOOLS=1` (set by `.ci/run`) it fails.

pub mod support;

use std::time::Duration;

use support::browser::{artifacts_dir, Browser};
use support::*;

const PAGE_DEADLINE: Duration = Duration::from_secs(20);

const KEY: &str = "apikey:abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcd";

#[tokio::test]
async fn the_console_lists_pipelines_and_opens_its_websocket_through_the_gateway() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let upstream = standin("console").await;
    let config = config_for(
        &upstream.url(),
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
    .replace(
        "[auth]\nmode = \"off\"",
        &format!(
            "[auth]\n[[auth.api_keys]]\nname = \"console\"\nsha256 = \"{}\"\nrole = \"write\"",
            pipeline_gateway::auth::apikey::hash(KEY)
        ),
    );
    let gw = gateway(&config).await;

    browser.goto(&format!("{}/#token={KEY}", gw.url())).await;
    let auth = browser
        .wait_for_text("#auth", |t| !t.is_empty() && t != "…", PAGE_DEADLINE)
        .await;
    assert!(auth.contains("GenericOidc"), "{auth}");
    let state = browser
        .wait_for_text("#state", |t| t == "done" || t == "failed", PAGE_DEADLINE)
        .await;
    let pipelines = browser
        .wait_for_text("#pipelines", |t| t.contains("orders"), PAGE_DEADLINE)
        .await;
    assert!(pipelines.contains("live"), "{pipelines}");
    let ws = browser
        .wait_for_text("#ws", |t| !t.is_empty(), PAGE_DEADLINE)
        .await;
    browser
        .screenshot(&artifacts_dir().join("console-through-gateway.png"))
        .await;
    assert_eq!(state, "done", "ws: {ws}");
    assert!(
        !ws.starts_with("error") && !ws.starts_with("closed"),
        "{ws}"
    );
    // The manager saw the WebSocket with the credential, and never the gateway's own answer.
    let seen = upstream.requests();
    assert!(
        seen.iter()
            .any(|r| r.uri.path().ends_with("/query") && r.headers.contains_key("upgrade")),
        "{:?}",
        seen.iter().map(|r| r.uri.to_string()).collect::<Vec<_>>()
    );
    assert!(!seen
        .iter()
        .any(|r| r.uri.path() == "/config/authentication"));

    // With a token the gateway refuses, the page shows the 401 in the schema.
    browser
        .goto(&format!("{}/#token=apikey:wrong", gw.url()))
        .await;
    let error = browser
        .wait_for_text("#error", |t| t.contains("401"), PAGE_DEADLINE)
        .await;
    assert!(error.contains("AuthenticationFailed"), "{error}");
    browser
        .screenshot(&artifacts_dir().join("console-through-gateway-401.png"))
        .await;
    browser.close().await;
}
