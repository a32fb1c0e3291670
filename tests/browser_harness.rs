//! Proves the real-browser harness (`support::browser`) on a page of our own, before the web
//! console and status page tests rely on it.
//!
//! A test-local server (`support::serve`) on 127.0.0.1:0 serves `/page`, whose script
//! `fetch`es a path on the same server (with `Authorization: Bearer <token>` when the page's
//! `token` parameter is set), and writes the answer's status, `error_code` and JSON into the
//! page. Headless
//! Chromium loads it; the tests wait for the text with a deadline, compare it with what the
//! server sent, check what the server received from the browser, keep a screenshot under
//! `target/browser-artifacts/`, and prove that no `chromedriver` or Chromium process outlives
//! the browser, whether closed or dropped.
//!
//! Without `chromium`/`chromedriver` the tests skip loudly; under
//! `PIPELINE_GATEWAY_REQUIRE_TOOLS=1` (set by `.ci/run`) they fail.

pub mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::{json, Value};
use support::browser::{artifacts_dir, live_processes, Browser};
use support::serve;

/// How long a page may take to show what its script fetched.
const PAGE_DEADLINE: Duration = Duration::from_secs(15);
/// How long the browser's processes may take to be gone after close or drop.
const EXIT_DEADLINE: Duration = Duration::from_secs(10);

const GOOD_TOKEN: &str = "good-token";

const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>pipeline-gateway browser harness</title>
<style>
  body { font-family: sans-serif; margin: 2em; }
  .refused #status { color: #b00020; }
  pre { background: #f4f4f4; padding: 1em; white-space: pre-wrap; }
</style>
</head>
<body>
<h1>Browser harness</h1>
<p>Fetched <code id="target"></code></p>
<p>Error code: <span id="error-code">none</span></p>
<pre id="answer"></pre>
<p id="status">waiting</p>
<script>
  const params = new URLSearchParams(location.search);
  const target = params.get("fetch");
  const token = params.get("token");
  document.getElementById("target").textContent = target;
  const headers = token ? { Authorization: "Bearer " + token } : {};
  fetch(target, { headers })
    .then(async (response) => {
      const body = await response.json();
      if (!response.ok) {
        document.body.classList.add("refused");
        document.getElementById("error-code").textContent = body.error_code;
      }
      document.getElementById("answer").textContent = JSON.stringify(body, null, 2);
      // Written last: once the status shows, everything else is on the page.
      document.getElementById("status").textContent = "HTTP " + response.status;
    })
    .catch((error) => {
      document.getElementById("status").textContent = "fetch failed: " + error;
    });
</script>
</body>
</html>
"#;

fn pipelines() -> Value {
    json!([
        {"name": "orders", "deployment_status": "Standby"},
        {"name": "live", "deployment_status": "Running"},
    ])
}

fn refusal() -> Value {
    json!({
        "message": "The bearer token is not valid",
        "error_code": "AuthenticationFailed",
        "details": {"reason": "invalid_token"},
    })
}

/// A request as the page server received it.
#[derive(Clone, Debug, PartialEq)]
struct Hit {
    method: String,
    path: String,
    authorization: Option<String>,
}

/// The test-local server: `/page` (the HTML above) and `/v0/pipelines` (200 with
/// [`pipelines`] for `Bearer good-token`, else 401 with [`refusal`]); 404 otherwise.
struct PageServer {
    addr: SocketAddr,
    hits: Arc<Mutex<Vec<Hit>>>,
}

impl PageServer {
    async fn start() -> PageServer {
        let hits = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&hits);
        let addr = serve(Arc::new(move |request: Request<Incoming>| {
            answer(&recorded, &request)
        }))
        .await;
        PageServer { addr, hits }
    }

    fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{path_and_query}", self.addr)
    }

    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().expect("hits").clone()
    }
}

fn answer(recorded: &Mutex<Vec<Hit>>, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    recorded.lock().expect("hits").push(Hit {
        method: request.method().to_string(),
        path: request.uri().path().to_owned(),
        authorization: authorization.clone(),
    });
    let respond = |status: StatusCode, content_type: &str, body: String| {
        Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, content_type)
            .body(Full::new(Bytes::from(body)))
            .expect("response")
    };
    match request.uri().path() {
        "/page" => respond(StatusCode::OK, "text/html; charset=utf-8", PAGE.to_owned()),
        "/v0/pipelines" if authorization.as_deref() == Some(&format!("Bearer {GOOD_TOKEN}")) => {
            respond(StatusCode::OK, "application/json", pipelines().to_string())
        }
        "/v0/pipelines" => {
            let mut response = respond(
                StatusCode::UNAUTHORIZED,
                "application/json",
                refusal().to_string(),
            );
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer"),
            );
            response
        }
        _ => respond(StatusCode::NOT_FOUND, "text/plain", String::new()),
    }
}

/// The fetches the page made (the browser's own requests, such as `/favicon.ico`, left out).
fn api_hits(server: &PageServer) -> Vec<Hit> {
    server
        .hits()
        .into_iter()
        .filter(|hit| hit.path.starts_with("/v0/"))
        .collect()
}

#[track_caller]
fn assert_png(path: &Path) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is a PNG",
        path.display()
    );
    assert!(bytes.len() > 1000, "{} holds a picture", path.display());
}

/// Polls until no process of `group` (and none mentioning `profile`) is alive.
async fn assert_all_gone(group: i32, profile: &Path) {
    let end = Instant::now() + EXIT_DEADLINE;
    loop {
        let alive = live_processes(group, profile);
        if alive.is_empty() {
            return;
        }
        assert!(
            Instant::now() < end,
            "still alive {EXIT_DEADLINE:?} after the browser ended: {alive:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn page_script_fetches_json_from_its_server_and_shows_it() {
    let server = PageServer::start().await;
    let Some(browser) = Browser::start().await else {
        return;
    };
    let group = browser.process_group();
    let profile = browser.profile_dir().to_owned();

    browser
        .goto(&server.url(&format!("/page?fetch=/v0/pipelines&token={GOOD_TOKEN}")))
        .await;
    let status = browser
        .wait_for_text("#status", |t| t.starts_with("HTTP"), PAGE_DEADLINE)
        .await;
    assert_eq!(status, "HTTP 200");
    let answer = browser
        .wait_for_text("#answer", |t| !t.is_empty(), PAGE_DEADLINE)
        .await;
    let shown: Value = serde_json::from_str(&answer).expect("the page shows JSON");
    assert_eq!(shown, pipelines(), "the page shows what the server sent");
    let error_code = browser
        .wait_for_text("#error-code", |_| true, PAGE_DEADLINE)
        .await;
    assert_eq!(error_code, "none");

    let shot = artifacts_dir().join("harness.png");
    browser.screenshot(&shot).await;
    assert_png(&shot);

    assert_eq!(
        api_hits(&server),
        [Hit {
            method: "GET".into(),
            path: "/v0/pipelines".into(),
            authorization: Some(format!("Bearer {GOOD_TOKEN}")),
        }],
        "the browser fetched once, with the page's token"
    );
    assert!(
        server.hits().iter().any(|hit| hit.path == "/page"),
        "the browser loaded the page from the server: {:?}",
        server.hits()
    );

    browser.close().await;
    assert_all_gone(group, &profile).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn page_shows_the_status_and_error_code_of_a_401_json_error() {
    let server = PageServer::start().await;
    let Some(browser) = Browser::start().await else {
        return;
    };

    browser
        .goto(&server.url("/page?fetch=/v0/pipelines&token=bad-token"))
        .await;
    let status = browser
        .wait_for_text("#status", |t| t.starts_with("HTTP"), PAGE_DEADLINE)
        .await;
    assert_eq!(status, "HTTP 401");
    let error_code = browser
        .wait_for_text("#error-code", |_| true, PAGE_DEADLINE)
        .await;
    assert_eq!(error_code, "AuthenticationFailed");
    let answer = browser
        .wait_for_text("#answer", |t| !t.is_empty(), PAGE_DEADLINE)
        .await;
    let shown: Value = serde_json::from_str(&answer).expect("the page shows JSON");
    assert_eq!(shown, refusal(), "the whole error body reached the page");
    assert_eq!(shown["details"]["reason"], "invalid_token");

    let shot = artifacts_dir().join("harness-401.png");
    browser.screenshot(&shot).await;
    assert_png(&shot);

    assert_eq!(
        api_hits(&server),
        [Hit {
            method: "GET".into(),
            path: "/v0/pipelines".into(),
            authorization: Some("Bearer bad-token".into()),
        }]
    );
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn no_chromedriver_or_chromium_outlives_a_dropped_browser() {
    let server = PageServer::start().await;
    let Some(browser) = Browser::start().await else {
        return;
    };
    let group = browser.process_group();
    let profile = browser.profile_dir().to_owned();
    browser
        .goto(&server.url(&format!("/page?fetch=/v0/pipelines&token={GOOD_TOKEN}")))
        .await;
    browser
        .wait_for_text("#status", |t| t == "HTTP 200", PAGE_DEADLINE)
        .await;

    let running = live_processes(group, &profile);
    assert!(
        running.iter().any(|(_, cmd)| cmd.contains("chromedriver")),
        "{running:#?}"
    );
    assert!(
        running
            .iter()
            .any(|(_, cmd)| cmd.contains("--type=renderer")),
        "a Chromium renderer runs in the driver's group: {running:#?}"
    );

    // As a failed assertion would: no close(), just drop.
    drop(browser);
    assert_all_gone(group, &profile).await;
}
