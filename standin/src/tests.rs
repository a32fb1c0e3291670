//! Tests of the stand-in over real sockets on 127.0.0.1:0, with hyper-util's legacy client.
//! Exchanges the real manager answered (`testdata/manager-oss-0.337.json`, a copy of
//! `captured/manager-oss-0.337.json`) whose bodies hold nothing that varies are replayed here
//! and must match status, content type and body (same JSON value and same length, i.e. same
//! bytes up to key order); `tests/capture_replay.rs` replays both captures in full. Waiting for the
//! lifecycle polls with a deadline; nothing sleeps a fixed time.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Compiler, Edition, Fault, SeedPipeline, SeedStatus, Standin, StandinOptions};
use async_compression::tokio::bufread::{BrotliDecoder, GzipDecoder, ZlibDecoder, ZstdDecoder};

const CAPTURE: &str = include_str!("testdata/manager-oss-0.337.json");
const JSON: [(&str, &str); 1] = [("content-type", "application/json")];

type TestClient = Client<HttpConnector, Full<Bytes>>;

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

fn seeded(seed: &[(&str, SeedStatus)]) -> StandinOptions {
    StandinOptions {
        seed: seed
            .iter()
            .map(|(name, status)| SeedPipeline {
                name: (*name).into(),
                status: *status,
            })
            .collect(),
        lifecycle_delay: Duration::from_millis(20),
        ..StandinOptions::default()
    }
}

async fn start(opts: StandinOptions) -> Standin {
    Standin::bind("127.0.0.1:0".parse().unwrap(), opts)
        .await
        .unwrap()
}

async fn call(
    standin: &Standin,
    method: Method,
    path: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> Answer {
    let mut request = Request::builder()
        .method(method)
        .uri(format!("{}{path}", standin.url()));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let response = client().request(request).await.unwrap();
    let (parts, body) = response.into_parts();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

async fn get(standin: &Standin, path: &str) -> Answer {
    call(standin, Method::GET, path, "", &[]).await
}

async fn post(standin: &Standin, path: &str) -> Answer {
    call(standin, Method::POST, path, "", &[]).await
}

/// Polls the pipeline's status until it is `want`; returns every status seen on the way.
async fn wait_for_status(standin: &Standin, name: &str, want: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    loop {
        let answer = get(standin, &format!("/v0/pipelines/{name}?selector=status")).await;
        let status = answer.json()["deployment_status"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if seen.last() != Some(&status) {
            seen.push(status.clone());
        }
        if status == want {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "{name} never reached {want}; saw {seen:?}"
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test]
async fn captured_exchanges_are_answered_byte_for_byte() {
    let capture: Value = serde_json::from_str(CAPTURE).unwrap();
    // The captured manager had no SQL compiler: its `orders` failed to compile.
    let standin = start(StandinOptions {
        compiler: Compiler::Absent,
        ..seeded(&[("orders", SeedStatus::Stopped)])
    })
    .await;
    // The exchanges whose behaviour the stand-in shares with the open-source build (not
    // activate, which that build refuses as an enterprise feature).
    let replayed = [0, 1, 5, 6, 7, 8, 9, 10, 11, 12, 15, 16, 18, 19, 20, 21, 22];
    for index in replayed {
        let exchange = &capture["exchanges"][index];
        let request = exchange["request"].as_str().unwrap();
        let (method, path) = request.split_once(' ').unwrap();
        let body = exchange["request_body"].as_str().unwrap_or("");
        // The capture's JSON bodies were sent as `application/json`.
        let headers: &[(&str, &str)] = if body.is_empty() { &[] } else { &JSON };
        let answer = call(&standin, method.parse().unwrap(), path, body, headers).await;
        assert_eq!(
            answer.status.as_u16() as u64,
            exchange["status"].as_u64().unwrap(),
            "{request}"
        );
        let headers = &exchange["headers"];
        assert_eq!(
            answer.header("content-type"),
            headers["content-type"].as_str(),
            "{request}"
        );
        assert_eq!(
            answer.header("retry-after"),
            headers["retry-after"].as_str(),
            "{request}"
        );
        let length: usize = headers["content-length"].as_str().unwrap().parse().unwrap();
        assert_eq!(answer.body.len(), length, "{request}: {}", answer.text());
        match exchange["body_json"] {
            Value::Null => assert_eq!(
                answer.text(),
                exchange["body_text"].as_str().unwrap(),
                "{request}"
            ),
            ref expected => assert_eq!(&answer.json(), expected, "{request}"),
        }
    }
    standin.shutdown().await;
}

#[tokio::test]
async fn pipeline_status_has_the_captured_fields_in_the_captured_order() {
    let capture: Value = serde_json::from_str(CAPTURE).unwrap();
    let standin = start(seeded(&[("orders", SeedStatus::Stopped)])).await;
    let answer = get(&standin, "/v0/pipelines/orders?selector=status").await;
    let text = answer.text();
    let keys = [
        "id",
        "name",
        "description",
        "tags",
        "created_at",
        "version",
        "platform_version",
        "program_config",
        "program_version",
        "program_status",
        "program_status_since",
        "deployment_error",
        "refresh_version",
        "storage_status",
        "storage_status_details",
        "deployment_id",
        "deployment_initial",
        "deployment_status",
        "deployment_status_since",
        "deployment_desired_status",
        "deployment_desired_status_since",
        "deployment_resources_status",
        "deployment_resources_status_since",
        "deployment_resources_desired_status",
        "deployment_resources_desired_status_since",
        "deployment_runtime_status",
        "deployment_runtime_status_details",
        "deployment_runtime_status_since",
        "deployment_runtime_desired_status",
        "deployment_runtime_desired_status_since",
        "bootstrap_policy",
        "silent_bootstrap",
        "concurrent_bootstrap",
    ];
    let ours = answer.json();
    let theirs = &capture["exchanges"][4]["body_json"];
    assert_eq!(ours.as_object().unwrap().len(), keys.len());
    assert_eq!(theirs.as_object().unwrap().len(), keys.len());
    let mut last = 0;
    for key in keys {
        let at = text
            .find(&format!("\"{key}\":"))
            .unwrap_or_else(|| panic!("{key} missing"));
        assert!(at >= last, "{key} out of order");
        last = at;
    }
    for key in [
        "description",
        "tags",
        "platform_version",
        "program_config",
        "deployment_status",
        "deployment_initial",
    ] {
        assert_eq!(ours[key], theirs[key], "{key}");
    }
    assert_eq!(ours["program_status"], "Success");
    let list = get(&standin, "/v0/pipelines?selector=status").await.json();
    assert_eq!(list, json!([ours]));
    let all = get(&standin, "/v0/pipelines/orders").await.json();
    assert_eq!(all["program_code"], "");
    assert!(all["runtime_config"].is_object());
    standin.shutdown().await;
}

#[tokio::test]
async fn empty_name_and_oversized_body_are_refused_like_the_manager() {
    let standin = start(seeded(&[])).await;
    let empty = call(
        &standin,
        Method::POST,
        "/v0/pipelines",
        r#"{"name":"","program_code":""}"#,
        &JSON,
    )
    .await;
    assert_eq!(empty.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        empty.text(),
        r#"{"message":"Name cannot be be empty","error_code":"EmptyName","details":{}}"#
    );
    let big = format!(
        r#"{{"name":"big","program_code":"{}"}}"#,
        "x".repeat(2 * 1024 * 1024)
    );
    let too_big = call(&standin, Method::POST, "/v0/pipelines", &big, &JSON).await;
    assert_eq!(too_big.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        too_big.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert!(
        too_big.text().starts_with("JSON payload ("),
        "{}",
        too_big.text()
    );
    let created = call(
        &standin,
        Method::POST,
        "/v0/pipelines",
        r#"{"name":"ok-1_a","program_code":"CREATE TABLE t (x INT);"}"#,
        &JSON,
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert_eq!(created.json()["program_status"], "Pending");
    assert_eq!(created.json()["program_code"], "CREATE TABLE t (x INT);");
    standin.shutdown().await;
}

#[tokio::test]
async fn activate_walks_standby_through_initializing_to_running() {
    let standin = start(seeded(&[("orders", SeedStatus::Standby)])).await;
    let answer = post(&standin, "/v0/pipelines/orders/activate").await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    assert_eq!(answer.header("content-type"), Some("application/json"));
    assert_eq!(
        answer.text(),
        r#""Pipeline transitioning from Standby to Running""#
    );
    let seen = wait_for_status(&standin, "orders", "Running").await;
    assert!(
        seen.iter().all(|s| s == "Initializing" || s == "Running"),
        "{seen:?}"
    );
    let status = get(&standin, "/v0/pipelines/orders?selector=status")
        .await
        .json();
    assert_eq!(status["deployment_desired_status"], "Running");
    assert_eq!(status["deployment_runtime_status"], "Running");
    assert_eq!(status["deployment_initial"], "Standby");
    standin.shutdown().await;
}

#[tokio::test]
async fn sdk_start_standby_then_activate_paused_reaches_paused() {
    let standin = start(seeded(&[])).await;
    let created = call(
        &standin,
        Method::POST,
        "/v0/pipelines",
        r#"{"name":"p1","program_code":""}"#,
        &JSON,
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let dismissed = post(&standin, "/v0/pipelines/p1/dismiss_error").await;
    assert_eq!(dismissed.status, StatusCode::OK);
    assert_eq!(
        dismissed.text(),
        r#""Pipeline deployment error has been dismissed""#
    );
    let started = post(
        &standin,
        "/v0/pipelines/p1/start?dismiss_error=false&initial=standby",
    )
    .await;
    assert_eq!(started.status, StatusCode::ACCEPTED);
    assert_eq!(started.text(), r#""Pipeline is starting""#);
    let seen = wait_for_status(&standin, "p1", "Standby").await;
    assert!(
        seen.iter().all(|s| s == "Provisioning" || s == "Standby"),
        "{seen:?}"
    );
    let activated = post(&standin, "/v0/pipelines/p1/activate?initial=paused").await;
    assert_eq!(activated.status, StatusCode::ACCEPTED);
    assert_eq!(
        activated.text(),
        r#""Pipeline transitioning from Standby to Paused""#
    );
    wait_for_status(&standin, "p1", "Paused").await;
    let stopped = post(&standin, "/v0/pipelines/p1/stop?force=true").await;
    assert_eq!(stopped.status, StatusCode::ACCEPTED);
    assert_eq!(stopped.text(), r#""Pipeline is forcefully stopping""#);
    wait_for_status(&standin, "p1", "Stopped").await;
    let in_use = call(&standin, Method::DELETE, "/v0/pipelines/p1", "", &[]).await;
    assert_eq!(
        in_use.json()["error_code"],
        "DeleteRestrictedToClearedStorage"
    );
    let cleared = post(&standin, "/v0/pipelines/p1/clear").await;
    assert_eq!(cleared.status, StatusCode::ACCEPTED);
    assert_eq!(cleared.text(), r#""Pipeline storage is being cleared""#);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let deleted = call(&standin, Method::DELETE, "/v0/pipelines/p1", "", &[]).await;
        if deleted.status == StatusCode::OK {
            break;
        }
        assert_eq!(
            deleted.json()["error_code"],
            "DeleteRestrictedToClearedStorage"
        );
        assert!(Instant::now() < deadline, "storage never cleared");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(
        get(&standin, "/v0/pipelines/p1").await.status,
        StatusCode::NOT_FOUND
    );
    standin.shutdown().await;
}

#[tokio::test]
async fn activate_initial_matrix() {
    let standin = start(seeded(&[("orders", SeedStatus::Running)])).await;
    for (value, status) in [
        ("standby", "Standby"),
        ("suspended", "Suspended"),
        ("unavailable", "Unavailable"),
        ("coordination", "Coordination"),
    ] {
        let answer = post(
            &standin,
            &format!("/v0/pipelines/orders/activate?initial={value}"),
        )
        .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{value}");
        let body = answer.json();
        assert_eq!(body["error_code"], "InvalidActivateStatus");
        assert_eq!(
            body["message"],
            format!("Invalid activation status {status} (only running and paused are valid)")
        );
        assert_eq!(body["details"], json!({"status": status}));
    }
    let expected = "expected one of `unavailable`, `coordination`, `standby`, `paused`, `running`, `suspended`";
    for value in ["Running", "RUNNING", "foo", ""] {
        let answer = post(
            &standin,
            &format!("/v0/pipelines/orders/activate?initial={value}"),
        )
        .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{value}");
        assert_eq!(
            answer.header("content-type"),
            Some("text/plain; charset=utf-8")
        );
        assert_eq!(
            answer.text(),
            format!("Query deserialize error: unknown variant `{value}`, {expected}")
        );
    }
    let twice = post(
        &standin,
        "/v0/pipelines/orders/activate?initial=running&initial=running",
    )
    .await;
    assert_eq!(
        twice.text(),
        "Query deserialize error: duplicate field `initial`"
    );
    let unknown = post(&standin, "/v0/pipelines/nope/activate?initial=running").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.json()["details"], json!({"pipeline_name": "nope"}));
    // Idempotence: running→running is a no-op, running→paused pauses, paused→running resumes.
    for (query, body, status) in [
        ("", r#""Pipeline is already Running""#, "Running"),
        (
            "?initial=running",
            r#""Pipeline is already Running""#,
            "Running",
        ),
        (
            "?initial=paused",
            r#""Pipeline transitioning from Running to Paused""#,
            "Paused",
        ),
        (
            "?initial=running",
            r#""Pipeline transitioning from Paused to Running""#,
            "Running",
        ),
    ] {
        let answer = post(&standin, &format!("/v0/pipelines/orders/activate{query}")).await;
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{query}");
        assert_eq!(answer.text(), body);
        assert_eq!(
            get(&standin, "/v0/pipelines/orders?selector=status")
                .await
                .json()["deployment_status"],
            status
        );
    }
    standin.shutdown().await;
}

#[tokio::test]
async fn activate_and_pause_refuse_stopped_and_standby_pipelines() {
    let standin = start(seeded(&[
        ("cold", SeedStatus::Stopped),
        ("warm", SeedStatus::Standby),
    ]))
    .await;
    let answer = post(&standin, "/v0/pipelines/cold/activate").await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.json()["error_code"], "InvalidTransition");
    assert_eq!(answer.json()["details"], json!(["activate", "Stopped"]));
    let answer = post(&standin, "/v0/pipelines/warm/pause").await;
    assert_eq!(answer.json()["details"], json!(["pause", "Standby"]));
    let answer = post(&standin, "/v0/pipelines/cold/resume").await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.header("retry-after"), Some("5"));
    assert_eq!(
        answer.json()["error_code"],
        "PipelineInteractionNotDeployed"
    );
    let answer = post(&standin, "/v0/pipelines/warm/start?initial=running").await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.json()["error_code"], "InitialImmutableUnlessStopped");
    assert_eq!(answer.json()["details"], json!({}));
    assert_eq!(
        post(&standin, "/v0/pipelines/warm/start?initial=standby")
            .await
            .status,
        StatusCode::ACCEPTED
    );
    let answer = post(&standin, "/v0/pipelines/warm/start?dismiss_error=maybe").await;
    assert_eq!(
        answer.text(),
        "Query deserialize error: provided string was not `true` or `false`"
    );
    let answer = call(&standin, Method::DELETE, "/v0/pipelines/warm", "", &[]).await;
    assert_eq!(
        answer.json()["error_code"],
        "DeleteRestrictedToFullyStopped"
    );
    standin.shutdown().await;
}

#[tokio::test]
async fn egress_streams_more_than_10_mb_without_end() {
    let standin = start(seeded(&[("orders", SeedStatus::Running)])).await;
    let request = Request::post(format!(
        "{}/v0/pipelines/orders/egress/v?format=json",
        standin.url()
    ))
    .body(Full::new(Bytes::new()))
    .unwrap();
    let response = client().request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let mut received = 0usize;
    let mut first = None;
    while received <= 10 * 1024 * 1024 {
        let frame = body.frame().await.expect("the stream never ends").unwrap();
        if let Ok(data) = frame.into_data() {
            first.get_or_insert_with(|| data.clone());
            received += data.len();
        }
    }
    let first = first.unwrap();
    assert!(first.starts_with(br#"{"sequence_number":0,"snapshot":false,"text_data":"xx"#));
    drop(body);
    let stopped = post(&standin, "/v0/pipelines/nope/egress/v").await;
    assert_eq!(stopped.status, StatusCode::NOT_FOUND);
    standin.shutdown().await;
}

#[tokio::test]
async fn egress_chunks_have_the_configured_size_and_pace() {
    let opts = StandinOptions {
        egress_chunk_bytes: 100,
        egress_interval: Duration::from_millis(30),
        ..seeded(&[("orders", SeedStatus::Paused)])
    };
    let standin = start(opts).await;
    let request = Request::post(format!("{}/v0/pipelines/orders/egress/v", standin.url()))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let mut body = client().request(request).await.unwrap().into_body();
    let began = Instant::now();
    for sequence in 0..3 {
        let data = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(data.len(), 100);
        assert!(data.ends_with(b"\"}\n"));
        let line: Value = serde_json::from_slice(&data).unwrap();
        assert_eq!(line["sequence_number"], sequence);
    }
    assert!(began.elapsed() >= Duration::from_millis(60));
    standin.shutdown().await;
}

#[tokio::test]
async fn ingress_consumes_and_counts_every_byte() {
    let standin = start(seeded(&[
        ("orders", SeedStatus::Running),
        ("cold", SeedStatus::Stopped),
    ]))
    .await;
    let payload = "a".repeat(3 * 1024 * 1024 + 7);
    let answer = call(
        &standin,
        Method::POST,
        "/v0/pipelines/orders/ingress/t?format=json&force=false",
        &payload,
        &[],
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer.json()["token"]
        .as_str()
        .is_some_and(|t| !t.is_empty()));
    let again = call(
        &standin,
        Method::POST,
        "/v0/pipelines/orders/ingress/t",
        "12345",
        &[],
    )
    .await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(standin.ingested_bytes(), payload.len() as u64 + 5);
    let cold = call(
        &standin,
        Method::POST,
        "/v0/pipelines/cold/ingress/t",
        "x",
        &[],
    )
    .await;
    assert_eq!(cold.status, StatusCode::SERVICE_UNAVAILABLE);
    standin.shutdown().await;
}

#[tokio::test]
async fn api_key_is_required_and_checked_like_the_manager() {
    let opts = StandinOptions {
        require_api_key: Some("apikey:secret".into()),
        ..seeded(&[("orders", SeedStatus::Running)])
    };
    let standin = start(opts).await;
    for headers in [
        &[][..],
        &[("authorization", "Basic abc")][..],
        &[("authorization", "Bearer ")][..],
    ] {
        let answer = call(&standin, Method::GET, "/v0/pipelines", "", headers).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{headers:?}");
        assert_eq!(answer.header("www-authenticate"), Some("Bearer"));
        assert!(answer.body.is_empty());
    }
    let wrong = call(
        &standin,
        Method::GET,
        "/v0/pipelines",
        "",
        &[("authorization", "Bearer apikey:other")],
    )
    .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.header("content-type"), Some("text/plain"));
    assert_eq!(
        wrong.text(),
        r#"{"error_code":"AuthenticationFailed","message":"Unauthorized API key"}"#
    );
    let right = call(
        &standin,
        Method::GET,
        "/v0/pipelines",
        "",
        &[("authorization", "Bearer apikey:secret")],
    )
    .await;
    assert_eq!(right.status, StatusCode::OK);
    for public in ["/healthz", "/config/authentication", "/robots.txt"] {
        assert_eq!(
            get(&standin, public).await.status,
            StatusCode::OK,
            "{public}"
        );
    }
    standin.shutdown().await;
}

#[tokio::test]
async fn faults_delay_respond_and_reset_with_the_latest_winning() {
    let standin = start(seeded(&[("orders", SeedStatus::Running)])).await;
    standin.set_fault(
        "/v0/pipelines/orders",
        Fault::Delay(Duration::from_millis(150)),
    );
    let began = Instant::now();
    let delayed = get(&standin, "/v0/pipelines/orders?selector=status").await;
    assert!(began.elapsed() >= Duration::from_millis(150));
    assert_eq!(delayed.status, StatusCode::OK);

    standin.set_fault(
        "/v0/pipelines",
        Fault::Respond {
            status: 502,
            content_type: Some("text/html".into()),
            body: b"<h1>bad gateway</h1>".to_vec(),
            headers: vec![("x-fault".into(), "yes".into())],
        },
    );
    let responded = get(&standin, "/v0/pipelines/orders").await;
    assert_eq!(responded.status, StatusCode::BAD_GATEWAY);
    assert_eq!(responded.header("content-type"), Some("text/html"));
    assert_eq!(responded.header("x-fault"), Some("yes"));
    assert_eq!(responded.text(), "<h1>bad gateway</h1>");

    standin.set_fault("/v0/pipelines/orders/stats", Fault::Reset);
    let request = Request::get(format!("{}/v0/pipelines/orders/stats", standin.url()))
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert!(client().request(request).await.is_err());
    // A path that only the older fault matches still gets the 502.
    assert_eq!(
        get(&standin, "/v0/pipelines").await.status,
        StatusCode::BAD_GATEWAY
    );

    standin.clear_faults();
    assert_eq!(
        get(&standin, "/v0/pipelines/orders").await.status,
        StatusCode::OK
    );
    standin.shutdown().await;
}

/// Sends a WebSocket handshake on a raw connection and returns the lower-cased head.
async fn handshake(stream: &mut tokio::net::TcpStream, protocols: &str) -> String {
    let handshake = format!(
        "GET /v0/pipelines/orders/query HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {protocols}\r\n\r\n"
    );
    stream.write_all(handshake.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap().to_lowercase()
}

#[tokio::test]
async fn websocket_query_accepts_only_the_v1_subprotocol_and_answers_frames() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::protocol::Role;
    use tokio_tungstenite::tungstenite::Message;

    let standin = start(seeded(&[("orders", SeedStatus::Running)])).await;
    let mut stream = tokio::net::TcpStream::connect(standin.local_addr())
        .await
        .unwrap();
    // What the console sends: the protocol version and the token (base64url of `xyz`).
    let head = handshake(&mut stream, "feldera-ws-v1, feldera-bearer.eHl6").await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(
        head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    assert!(
        head.contains("sec-websocket-protocol: feldera-ws-v1\r\n"),
        "{head}"
    );
    assert!(!head.contains("feldera-bearer"), "{head}");
    assert!(head.contains("x-standin-instance: standin"), "{head}");
    let mut socket =
        tokio_tungstenite::WebSocketStream::from_raw_socket(stream, Role::Client, None).await;
    socket.send(Message::text("SELECT 1")).await.unwrap();
    let Some(Ok(Message::Text(answer))) = socket.next().await else {
        panic!("no text answer");
    };
    let answer: Value = serde_json::from_str(answer.as_str()).unwrap();
    assert_eq!(
        answer,
        json!({"text": "stand-in query answer", "echo": "SELECT 1"})
    );
    socket
        .send(Message::Ping(Bytes::from_static(b"p")))
        .await
        .unwrap();
    assert_eq!(
        socket.next().await.unwrap().unwrap(),
        Message::Pong(Bytes::from_static(b"p"))
    );
    socket.close(None).await.unwrap();
    assert!(matches!(
        socket.next().await,
        Some(Ok(Message::Close(_))) | None
    ));

    // A client that offers no subprotocol gets none; bytes that are no client frame are
    // echoed raw (the gateway's tunnel test sends such bytes).
    let mut stream = tokio::net::TcpStream::connect(standin.local_addr())
        .await
        .unwrap();
    let head = handshake(&mut stream, "other").await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(!head.contains("sec-websocket-protocol"), "{head}");
    stream.write_all(b"echo through the tunnel").await.unwrap();
    let mut echoed = [0u8; 23];
    stream.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"echo through the tunnel");

    let plain = get(
        &standin,
        "/v0/pipelines/orders/query?sql=select%201&format=text",
    )
    .await;
    assert_eq!(plain.status, StatusCode::OK);
    let missing = get(&standin, "/v0/pipelines/orders/query").await;
    assert_eq!(
        missing.text(),
        "Query deserialize error: missing field `sql`"
    );
    standin.shutdown().await;
}

#[tokio::test]
async fn requests_are_recorded_and_every_answer_names_the_instance() {
    let opts = StandinOptions {
        instance: "replica-b".into(),
        non_json_errors: true,
        ..seeded(&[])
    };
    let standin = start(opts).await;
    let unknown = get(&standin, "/v0/pipelines/nope?selector=status").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert!(unknown.body.is_empty());
    assert_eq!(unknown.header("x-standin-instance"), Some("replica-b"));
    let health = get(&standin, "/v0/cluster_healthz").await;
    assert_eq!(health.json()["all_healthy"], true);
    assert_eq!(health.header("x-standin-instance"), Some("replica-b"));
    let config = get(&standin, "/v0/config").await.json();
    assert_eq!(config["version"], "0.337.0");
    assert_eq!(config["edition"], "Enterprise");
    let recorded = standin.requests();
    assert_eq!(recorded.len(), 3);
    assert_eq!(recorded[0].method, Method::GET);
    assert_eq!(
        recorded[0].uri.to_string(),
        "/v0/pipelines/nope?selector=status"
    );
    // Percent-encoded segments are decoded after splitting: `a%2Fb` is one (unknown) name.
    assert_eq!(
        post(&standin, "/v0/pipelines/a%2Fb/%61ctivate")
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(&standin, "/v0/pipelines/a/b/c/d").await.status,
        StatusCode::NOT_FOUND
    );
    standin.clear_requests();
    assert!(standin.requests().is_empty());
    standin.shutdown().await;
}

/// Decodes `data` encoded with the HTTP content coding `coding`.
async fn decode(coding: &str, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match coding {
        "gzip" => GzipDecoder::new(data).read_to_end(&mut out).await,
        "deflate" => ZlibDecoder::new(data).read_to_end(&mut out).await,
        "br" => BrotliDecoder::new(data).read_to_end(&mut out).await,
        "zstd" => ZstdDecoder::new(data).read_to_end(&mut out).await,
        other => panic!("unexpected coding {other}"),
    }
    .unwrap();
    out
}

#[tokio::test]
async fn every_coding_round_trips_to_the_identity_answer() {
    let standin = start(seeded(&[("orders", SeedStatus::Running)])).await;
    let plain = get(&standin, "/v0/pipelines/orders?selector=status").await;
    assert!(plain.header("content-encoding").is_none());
    assert!(plain.header("vary").is_none());
    for (accept, coding) in [
        ("gzip, deflate", "gzip"),
        ("deflate", "deflate"),
        ("gzip, deflate, br, zstd", "br"),
        ("zstd;q=1, br;q=0.5", "zstd"),
    ] {
        let encoded = call(
            &standin,
            Method::GET,
            "/v0/pipelines/orders?selector=status",
            "",
            &[("accept-encoding", accept)],
        )
        .await;
        assert_eq!(encoded.status, StatusCode::OK, "{accept}");
        assert_eq!(encoded.header("content-encoding"), Some(coding), "{accept}");
        assert_eq!(encoded.header("vary"), Some("accept-encoding"));
        assert_eq!(encoded.header("content-type"), Some("application/json"));
        assert!(encoded.header("content-length").is_none(), "{accept}");
        assert_eq!(encoded.header("transfer-encoding"), Some("chunked"));
        assert_ne!(encoded.body, plain.body);
        let decoded: Value = serde_json::from_slice(&decode(coding, &encoded.body).await).unwrap();
        // Nothing of a running seeded pipeline moves, so the two answers are equal.
        assert_eq!(decoded, plain.json(), "{accept}");
    }
    standin.shutdown().await;
}

#[tokio::test]
async fn errors_are_compressed_when_the_client_accepts_it() {
    let standin = start(seeded(&[])).await;
    let gzip = [("accept-encoding", "gzip, deflate")];
    let unknown = call(&standin, Method::GET, "/v0/pipelines/nope", "", &gzip).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.header("content-encoding"), Some("gzip"));
    let body: Value = serde_json::from_slice(&decode("gzip", &unknown.body).await).unwrap();
    assert_eq!(body["error_code"], "UnknownPipelineName");
    assert_eq!(body["details"], json!({"pipeline_name": "nope"}));
    let query = call(
        &standin,
        Method::GET,
        "/v0/pipelines?selector=bogus",
        "",
        &gzip,
    )
    .await;
    assert_eq!(query.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        query.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(query.header("content-encoding"), Some("gzip"));
    let text = decode("gzip", &query.body).await;
    assert!(text.starts_with(b"Query deserialize error: unknown variant `bogus`"));
    standin.shutdown().await;
}

#[tokio::test]
async fn streams_and_empty_answers_are_never_compressed() {
    let standin = start(seeded(&[
        ("orders", SeedStatus::Running),
        ("cold", SeedStatus::Stopped),
    ]))
    .await;
    let accept = "gzip, deflate, br, zstd";
    let request = Request::post(format!("{}/v0/pipelines/orders/egress/v", standin.url()))
        .header("accept-encoding", accept)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = client().request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-encoding"], "identity");
    assert!(response.headers().get("vary").is_none());
    let first = response
        .into_body()
        .frame()
        .await
        .unwrap()
        .unwrap()
        .into_data()
        .unwrap();
    assert!(first.starts_with(br#"{"sequence_number":0,"#));
    let headers = [("accept-encoding", accept)];
    let ingress = call(
        &standin,
        Method::POST,
        "/v0/pipelines/orders/ingress/t",
        "1,2,3",
        &headers,
    )
    .await;
    assert_eq!(ingress.header("content-encoding"), Some("identity"));
    assert!(ingress.json()["token"].is_string());
    let query = call(
        &standin,
        Method::GET,
        "/v0/pipelines/orders/query?sql=select%201&format=json",
        "",
        &headers,
    )
    .await;
    assert_eq!(query.header("content-encoding"), Some("identity"));
    for (method, path) in [
        (Method::DELETE, "/v0/pipelines/cold"),
        (Method::GET, "/v0/no-such-endpoint"),
    ] {
        let empty = call(&standin, method, path, "", &headers).await;
        assert!(empty.body.is_empty(), "{path}");
        assert!(empty.header("content-encoding").is_none(), "{path}");
        assert!(empty.header("vary").is_none(), "{path}");
    }
    standin.shutdown().await;
}

#[tokio::test]
async fn identity_no_header_or_disabled_compression_answer_identity() {
    let standin = start(seeded(&[])).await;
    for headers in [
        &[][..],
        &[("accept-encoding", "identity")][..],
        &[("accept-encoding", "")][..],
        &[("accept-encoding", "*")][..],
        &[("accept-encoding", "compress")][..],
    ] {
        let answer = call(&standin, Method::GET, "/v0/pipelines/nope", "", headers).await;
        assert!(answer.header("content-encoding").is_none(), "{headers:?}");
        assert!(answer.header("vary").is_none(), "{headers:?}");
        assert_eq!(answer.json()["error_code"], "UnknownPipelineName");
    }
    standin.shutdown().await;
    let off = start(StandinOptions {
        compression: false,
        ..seeded(&[])
    })
    .await;
    let answer = call(
        &off,
        Method::GET,
        "/v0/pipelines/nope",
        "",
        &[("accept-encoding", "gzip")],
    )
    .await;
    assert!(answer.header("content-encoding").is_none());
    assert_eq!(answer.json()["error_code"], "UnknownPipelineName");
    let refused = call(
        &off,
        Method::GET,
        "/v0/pipelines",
        "",
        &[("accept-encoding", "identity;q=0")],
    )
    .await;
    assert_eq!(
        refused.status,
        StatusCode::OK,
        "no negotiation at all when off"
    );
    off.shutdown().await;
}

#[tokio::test]
async fn nothing_acceptable_is_406_and_the_request_is_not_handled() {
    let standin = start(seeded(&[])).await;
    let answer = call(
        &standin,
        Method::POST,
        "/v0/pipelines",
        r#"{"name":"p406","program_code":""}"#,
        &[
            ("content-type", "application/json"),
            ("accept-encoding", "gzip;q=0, identity;q=0"),
        ],
    )
    .await;
    assert_eq!(answer.status, StatusCode::NOT_ACCEPTABLE);
    assert_eq!(answer.text(), "br, gzip, deflate, zstd");
    assert_eq!(answer.header("vary"), Some("Accept-Encoding"));
    assert!(answer.header("content-type").is_none());
    assert_eq!(
        get(&standin, "/v0/pipelines/p406").await.status,
        StatusCode::NOT_FOUND
    );
    standin.shutdown().await;
}

#[tokio::test]
async fn api_keys_are_shown_once_listed_fetched_as_an_array_and_deleted() {
    let standin = start(seeded(&[])).await;
    let created = call(
        &standin,
        Method::POST,
        "/v0/api_keys",
        r#"{"name":"ci","role":"write"}"#,
        &JSON,
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert_eq!(created.header("cache-control"), Some("no-cache"));
    let body = created.json();
    let secret = body["api_key"].as_str().unwrap();
    assert_eq!(secret.len(), 135);
    assert!(secret["apikey:".len()..]
        .bytes()
        .all(|b| b.is_ascii_alphanumeric()));
    let again = call(
        &standin,
        Method::POST,
        "/v0/api_keys",
        r#"{"name":"ci"}"#,
        &JSON,
    )
    .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(again.json()["error_code"], "DuplicateName");
    let descr = json!([{"id": body["id"], "name": "ci", "role": "write"}]);
    assert_eq!(get(&standin, "/v0/api_keys").await.json(), descr);
    assert_eq!(get(&standin, "/v0/api_keys/ci").await.json(), descr);
    let deleted = call(&standin, Method::DELETE, "/v0/api_keys/ci", "", &[]).await;
    assert_eq!(deleted.status, StatusCode::OK);
    assert!(deleted.body.is_empty());
    let gone = call(&standin, Method::DELETE, "/v0/api_keys/ci", "", &[]).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert_eq!(
        gone.json(),
        json!({"message": "Unknown API key 'ci'", "error_code": "UnknownApiKey", "details": {"name": "ci"}})
    );
    standin.shutdown().await;
}

#[tokio::test]
async fn json_bodies_need_a_json_content_type_before_anything_else() {
    let standin = start(seeded(&[])).await;
    let body = r#"{"name":"p","program_code":""}"#;
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/jsonx"),
        Some("json"),
    ] {
        let headers: Vec<(&str, &str)> = content_type
            .map(|c| ("content-type", c))
            .into_iter()
            .collect();
        let answer = call(&standin, Method::POST, "/v0/pipelines", body, &headers).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{content_type:?}");
        assert_eq!(
            answer.header("content-type"),
            Some("text/plain; charset=utf-8")
        );
        assert_eq!(answer.text(), "Content type error");
    }
    for content_type in [
        "application/json; charset=utf-8",
        "application/merge-patch+json",
    ] {
        let answer = call(
            &standin,
            Method::PUT,
            "/v0/pipelines/p",
            body,
            &[("content-type", content_type)],
        )
        .await;
        assert!(
            answer.status.is_success(),
            "{content_type}: {}",
            answer.text()
        );
    }
    let array = call(&standin, Method::PUT, "/v0/pipelines/p", "[]", &JSON).await;
    assert_eq!(
        array.text(),
        "Json deserialize error: invalid type: sequence, expected struct PostPutPipelineInternal at line 1 column 0"
    );
    standin.shutdown().await;
}

#[tokio::test]
async fn the_oss_edition_refuses_activate_and_unforced_stop_as_enterprise_features() {
    let standin = start(StandinOptions {
        edition: Edition::Oss,
        ..seeded(&[("orders", SeedStatus::Running)])
    })
    .await;
    assert_eq!(
        get(&standin, "/v0/config").await.json()["edition"],
        "Open source"
    );
    let s3 = json!({
        "message": "Cannot use enterprise-only feature (start from object store (S3)) in Feldera community edition.",
        "error_code": "EnterpriseFeature",
        "details": {"feature": "start from object store (S3)"},
    });
    for path in [
        "/v0/pipelines/orders/activate",
        "/v0/pipelines/orders/activate?initial=standby",
        "/v0/pipelines/nope/activate?foo=bar",
        "/v0/pipelines/_bad_/activate",
        "/v0/pipelines/orders/%61ctivate",
    ] {
        let answer = post(&standin, path).await;
        assert_eq!(answer.status, StatusCode::NOT_IMPLEMENTED, "{path}");
        assert_eq!(answer.json(), s3, "{path}");
    }
    let bad = post(&standin, "/v0/pipelines/nope/activate?initial=Running").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad
        .text()
        .starts_with("Query deserialize error: unknown variant `Running`"));
    for path in [
        "/v0/pipelines/orders/stop",
        "/v0/pipelines/nope/stop?force=false",
    ] {
        let answer = post(&standin, path).await;
        assert_eq!(answer.status, StatusCode::NOT_IMPLEMENTED, "{path}");
        assert_eq!(
            answer.json()["details"],
            json!({"feature": "stop?force=false"})
        );
        assert_eq!(
            answer.json()["message"],
            "Cannot use enterprise-only feature (stop?force=false) in Feldera community edition."
        );
    }
    let forced = post(&standin, "/v0/pipelines/orders/stop?force=true").await;
    assert_eq!(forced.status, StatusCode::ACCEPTED);
    assert_eq!(forced.text(), r#""Pipeline is forcefully stopping""#);
    let missing = post(&standin, "/v0/pipelines/nope/stop?force=true").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    standin.shutdown().await;

    let enterprise = start(seeded(&[("orders", SeedStatus::Running)])).await;
    assert_eq!(
        get(&enterprise, "/v0/config").await.json()["edition"],
        "Enterprise"
    );
    let suspended = post(&enterprise, "/v0/pipelines/orders/stop").await;
    assert_eq!(suspended.status, StatusCode::ACCEPTED);
    assert_eq!(suspended.text(), r#""Pipeline is suspending""#);
    enterprise.shutdown().await;
}

#[tokio::test]
async fn the_console_page_answers_every_get_outside_v0_with_caching_headers() {
    let standin = start(StandinOptions {
        console_authentication: Some(
            json!({"generic_oidc": {"issuer": "https://idp.test/", "client_id": "feldera-console", "extra_oidc_scopes": []}}),
        ),
        ..seeded(&[("orders", SeedStatus::Running)])
    })
    .await;
    let index = get(&standin, "/").await;
    assert_eq!(index.status, StatusCode::OK);
    assert_eq!(index.header("content-type"), Some("text/html"));
    assert!(
        index.header("cache-control").is_none(),
        "revalidated every time"
    );
    let etag = index.header("etag").unwrap().to_owned();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    for id in ["state", "auth", "token", "pipelines", "error", "ws"] {
        assert!(index.text().contains(&format!("id=\"{id}\"")), "{id}");
    }
    assert!(index.text().contains("src=\"/_app/console.js\""));
    for path in [
        "/pipelines/orders/",
        "/index.html",
        "/no-such-path",
        "/healthz",
    ] {
        let method = if path == "/healthz" {
            Method::HEAD
        } else {
            Method::GET
        };
        let page = call(&standin, method.clone(), path, "", &[]).await;
        assert_eq!(page.status, StatusCode::OK, "{method} {path}");
        assert_eq!(page.header("etag"), Some(etag.as_str()), "{path}");
        if method == Method::GET {
            assert_eq!(page.body, index.body, "{path}");
        }
    }
    let script = get(&standin, "/_app/console.js").await;
    assert_eq!(script.status, StatusCode::OK);
    assert_eq!(
        script.header("content-type"),
        Some("application/javascript")
    );
    assert_eq!(
        script.header("cache-control"),
        Some("public, max-age=86400")
    );
    assert!(script.text().contains("feldera-bearer."));
    let script_etag = script.header("etag").unwrap().to_owned();
    assert_ne!(script_etag, etag);
    let revalidated = call(
        &standin,
        Method::GET,
        "/_app/console.js",
        "",
        &[("if-none-match", &format!("W/{script_etag}"))],
    )
    .await;
    assert_eq!(revalidated.status, StatusCode::NOT_MODIFIED);
    assert!(revalidated.body.is_empty());
    assert_eq!(revalidated.header("etag"), Some(script_etag.as_str()));
    let changed = call(&standin, Method::GET, "/", "", &[("if-match", "\"other\"")]).await;
    assert_eq!(changed.status, StatusCode::PRECONDITION_FAILED);
    let head = call(&standin, Method::HEAD, "/pipelines/orders/", "", &[]).await;
    assert_eq!(head.status, StatusCode::OK);
    assert!(head.body.is_empty());
    assert_eq!(
        head.header("content-length"),
        Some(index.body.len().to_string().as_str())
    );
    let gzip = call(
        &standin,
        Method::GET,
        "/",
        "",
        &[("accept-encoding", "gzip")],
    )
    .await;
    assert_eq!(gzip.header("content-encoding"), Some("gzip"));
    assert_eq!(decode("gzip", &gzip.body).await, index.body.to_vec());
    let refused = call(&standin, Method::POST, "/pipelines/orders/", "", &[]).await;
    assert_eq!(refused.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(refused.header("allow"), Some("GET, HEAD"));
    assert_eq!(refused.text(), "This resource only supports GET and HEAD.");
    assert_eq!(get(&standin, "/.env").await.status, StatusCode::BAD_REQUEST);
    let auth = get(&standin, "/config/authentication").await;
    assert_eq!(auth.json()["generic_oidc"]["client_id"], "feldera-console");
    assert_eq!(
        get(&standin, "/config/other").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(get(&standin, "/v0/no-such-endpoint").await.body.len(), 0);
    standin.shutdown().await;

    let without = start(StandinOptions {
        web_console: false,
        ..seeded(&[])
    })
    .await;
    let missing = get(&without, "/").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.text(), "Not found");
    assert!(missing.header("content-type").is_none());
    assert_eq!(
        get(&without, "/config/authentication").await.json(),
        json!({})
    );
    without.shutdown().await;
}
