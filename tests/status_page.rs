//! The admin status page (`GET /` on the admin listener) in a real headless browser: it
//! renders every section, shows a killed manager as down within one health interval, shows
//! a principal named `<script>…</script>` (refused by its rate limit) as text, never as
//! markup, and a screenshot is kept under `target/browser-artifacts/status-page.png`.
//!
//! The gateway is real (127.0.0.1:0), in front of two stand-in managers: `alpha` a child
//! process the test kills with SIGKILL, `beta` in this process. Health checks run every
//! second; the page is reloaded while polling, with a deadline, never a sleep.
//!
//! Without `chromium`/`chromedriver` the browser test skips loudly; under
//! `PIPELINE_GATEWAY_REQUIRE_TOOLS=1` (set by `.ci/run`) it fails. The HTML checks that need
//! no browser run always.

pub mod support;

use std::time::{Duration, Instant};

use pipeline_gateway::auth::apikey;
use pipeline_gateway::Gateway;
use support::browser::{artifacts_dir, Browser};
use support::{gateway, get, send, standin, StandinProcess};

const PAGE_DEADLINE: Duration = Duration::from_secs(20);
/// The health checks' interval in the configuration below.
const HEALTH_INTERVAL: Duration = Duration::from_secs(1);
/// What a killed manager may take to show as down on the page: one health interval, plus
/// the check's own failure (a refused connection, at once) and a page load.
const DOWN_DEADLINE: Duration = Duration::from_secs(3);

fn config(alpha: &str, beta: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"

[[upstreams]]
name = "alpha"
endpoints = ["{alpha}"]
connect_timeout = "1s"
request_timeout = "5s"
[upstreams.health]
path = "/healthz"
interval = "1s"
timeout = "1s"
unhealthy_after = 1
healthy_after = 1

[[upstreams]]
name = "beta"
endpoints = ["{beta}"]
connect_timeout = "1s"
request_timeout = "5s"

[[routes]]
pipelines = ["alpha-*"]
upstream = "alpha"

[[routes]]
pipelines = ["*"]
upstream = "beta"
default = true

[rate_limit]
[[rate_limit.overrides]]
name = "one-per-hour"
principals = ["key:{HOSTILE_NAME}"]
rate = "1/h"
burst = 1

[auth]
[[auth.api_keys]]
name = "{HOSTILE_NAME}"
sha256 = "{hostile_hash}"
role = "read"
[[auth.api_keys]]
name = "operator"
sha256 = "{operator_hash}"
role = "read"
"#,
        hostile_hash = apikey::hash(&key_of('h')),
        operator_hash = apikey::hash(&key_of('o')),
    )
}

fn status_url(gw: &Gateway) -> String {
    format!("http://{}/", gw.admin_addr().expect("admin listener"))
}

/// A principal whose name is markup (the name of an API key here; a JWT's `sub` would do).
const HOSTILE_NAME: &str = "<script>document.title='owned'</script>";
/// Well-formed API keys (`apikey:` and 128 alphanumerics).
fn key_of(c: char) -> String {
    format!("apikey:{}", c.to_string().repeat(128))
}

async fn get_as(gw: &Gateway, path: &str, key: &str) -> support::Reply {
    let auth = format!("Bearer {key}");
    send(
        "GET",
        &format!("{}{path}", gw.url()),
        &[("authorization", &auth)],
        b"",
    )
    .await
}

/// The hostile principal's second request is refused by its one-per-hour limit.
async fn hostile_principal_refused(gw: &Gateway) {
    let first = get_as(gw, "/v0/pipelines", &key_of('h')).await;
    assert_eq!(first.status, 200, "{}", first.text());
    let refused = get_as(gw, "/v0/pipelines", &key_of('h')).await;
    assert_eq!(
        refused.error(429, "RateLimitExceeded")["policy"],
        "one-per-hour"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_is_html_with_every_section_and_escapes_client_text() {
    let beta = standin("beta").await;
    let gw = gateway(&config("http://127.0.0.1:9", &beta.url())).await;
    hostile_principal_refused(&gw).await;
    let page = get(&status_url(&gw)).await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(page
        .header("content-security-policy")
        .is_some_and(|csp| csp.starts_with("default-src 'none'")));
    let html = page.text();
    for id in [
        "upstreams",
        "routes",
        "auth",
        "rate-limits",
        "limited",
        "errors",
        "tls",
        "config-hash",
    ] {
        assert!(html.contains(&format!("id=\"{id}\"")), "section {id}");
    }
    assert!(!html.contains("<script"), "no markup from clients: {html}");
    assert!(html.contains("key:&lt;script&gt;document.title=&#39;owned&#39;&lt;/script&gt;"));
    assert!(html.contains("no TLS"));
    assert!(
        html.contains("RateLimitExceeded"),
        "recent errors list 429s"
    );
    assert!(!html.contains("nobody was refused recently"), "{html}");
    let post = send("POST", &status_url(&gw), &[], b"").await;
    post.error(405, "MethodNotAllowed");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_renders_in_a_browser_and_shows_a_killed_manager_down() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let mut alpha = StandinProcess::start("alpha", &["alpha-orders"]);
    let beta = standin("beta").await;
    let gw = gateway(&config(&alpha.url(), &beta.url())).await;
    hostile_principal_refused(&gw).await;
    let through = get_as(&gw, "/v0/pipelines/alpha-orders", &key_of('o')).await;
    assert_eq!(through.status, 200, "{}", through.text());
    let url = status_url(&gw);

    browser.goto(&url).await;
    let upstreams = browser
        .wait_for_text("#upstreams", |t| t.contains("healthy"), PAGE_DEADLINE)
        .await;
    let alpha_url = alpha.url();
    let alpha_line = |text: &str| -> String {
        text.lines()
            .find(|l| l.contains(&alpha_url))
            .unwrap_or_default()
            .to_owned()
    };
    let line = alpha_line(&upstreams);
    assert!(
        line.contains("up") && line.contains("healthy") && !line.contains("unhealthy"),
        "{upstreams}"
    );
    let limited = browser
        .wait_for_text("#limited", |t| t.contains("<script>"), PAGE_DEADLINE)
        .await;
    assert!(
        limited.contains(&format!("key:{HOSTILE_NAME}")),
        "shown as text: {limited}"
    );
    let errors = browser
        .wait_for_text(
            "#errors",
            |t| t.contains("RateLimitExceeded"),
            PAGE_DEADLINE,
        )
        .await;
    assert!(errors.contains("429"), "{errors}");
    let title = browser.client().title().await.expect("title");
    assert_eq!(title, "pipeline-gateway status", "no script ran");
    let tls = browser
        .wait_for_text("#tls", |t| t.contains("no TLS"), PAGE_DEADLINE)
        .await;
    assert!(tls.contains("no TLS"));
    browser
        .screenshot(&artifacts_dir().join("status-page.png"))
        .await;

    alpha.kill();
    let killed = Instant::now();
    let end = killed + DOWN_DEADLINE;
    let down = loop {
        browser.goto(&url).await;
        let text = browser
            .wait_for_text("#upstreams", |t| !t.is_empty(), PAGE_DEADLINE)
            .await;
        let line = alpha_line(&text);
        if line.contains("down") && line.contains("unhealthy") {
            break line;
        }
        assert!(
            Instant::now() < end,
            "alpha still not down {DOWN_DEADLINE:?} after the kill \
             (health interval {HEALTH_INTERVAL:?}): {text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(down.contains("alpha"), "{down}");
    browser
        .screenshot(&artifacts_dir().join("status-page-upstream-down.png"))
        .await;
    browser.close().await;
    gw.shutdown().await;
}
