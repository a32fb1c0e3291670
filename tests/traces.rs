//! Traces and logs, end to end: the gateway binary with `[tracing]` exports to a real OTLP/HTTP
//! receiver in this test (which decodes the protobuf with `opentelemetry-proto`), in front of
//! an echo upstream that shows which `traceparent` the manager saw. Asserted: the span tree
//! (request → auth, ratelimit, upstream), its attributes, a client's trace continued and a
//! malformed one replaced, spans dropped (and counted) rather than waited for when the
//! collector hangs, the access line's trace and span ids, and that no credential ever reaches
//! the log or a span. With tracing off, the client's `traceparent` reaches the manager as sent.

pub mod support;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;
use pipeline_gateway::auth::apikey;
use prost::Message;
use serde_json::Value;
use support::{echo_upstream, eventually, send, GatewayProcess};
use tokio::net::TcpListener;

const KEY: &str = "apikey:loaderloaderloaderloaderloaderloaderloaderloaderloaderloaderloaderloaderloaderloaderloaderloaderloaderloaderloaderloader12345678";
const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

/// What the OTLP receiver got: every span, and every export's raw bytes.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Span>>>,
    raw: Arc<Mutex<Vec<u8>>>,
}

impl Collector {
    fn spans_of(&self, trace_id: &str) -> Vec<Span> {
        self.spans
            .lock()
            .unwrap()
            .iter()
            .filter(|s| hex(&s.trace_id) == trace_id)
            .cloned()
            .collect()
    }
}

/// An OTLP/HTTP receiver: `POST /v1/traces` with an `ExportTraceServiceRequest` body.
async fn collector() -> (SocketAddr, Collector) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let collected = Collector::default();
    let kept = collected.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let kept = kept.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |request: http::Request<hyper::body::Incoming>| {
                        let kept = kept.clone();
                        async move {
                            assert_eq!(request.uri().path(), "/v1/traces");
                            assert_eq!(request.headers()["content-type"], "application/x-protobuf");
                            let body = request.into_body().collect().await.unwrap().to_bytes();
                            let export = ExportTraceServiceRequest::decode(body.clone()).unwrap();
                            kept.raw.lock().unwrap().extend_from_slice(&body);
                            let mut spans = kept.spans.lock().unwrap();
                            for resource in export.resource_spans {
                                let service = resource
                                    .resource
                                    .iter()
                                    .flat_map(|r| r.attributes.iter())
                                    .find(|a| a.key == "service.name")
                                    .and_then(|a| text(a.value.as_ref()?.value.as_ref()?));
                                assert_eq!(service.as_deref(), Some("gateway-under-test"));
                                for scope in resource.scope_spans {
                                    spans.extend(scope.spans);
                                }
                            }
                            Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::new())))
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, collected)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(value: &AnyValue) -> Option<String> {
    Some(match value {
        AnyValue::StringValue(s) => s.clone(),
        AnyValue::IntValue(i) => i.to_string(),
        AnyValue::BoolValue(b) => b.to_string(),
        AnyValue::DoubleValue(d) => d.to_string(),
        _ => return None,
    })
}

fn attributes(span: &Span) -> HashMap<String, String> {
    span.attributes
        .iter()
        .filter_map(|a| Some((a.key.clone(), text(a.value.as_ref()?.value.as_ref()?)?)))
        .collect()
}

fn named<'a>(spans: &'a [Span], name: &str) -> Vec<&'a Span> {
    spans.iter().filter(|s| s.name == name).collect()
}

/// A gateway with an API key, both rate-limit stages and `tracing` (or none), in front of
/// `upstream`.
fn config(upstream: SocketAddr, tracing: &str, admin: Option<u16>) -> String {
    let admin = admin.map_or(String::new(), |port| {
        format!("[admin]\nlisten = \"127.0.0.1:{port}\"\n")
    });
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
{admin}
[[upstreams]]
name = "primary"
endpoints = ["http://{upstream}"]

[[routes]]
pipelines = ["*"]
upstream = "primary"
default = true

[[auth.api_keys]]
name = "loader"
sha256 = "{hash}"
role = "write"
tenant = "acme"

[rate_limit]
principal = {{ rate = "1000/s", burst = 1000 }}
client_ip = {{ rate = "1000/s", burst = 1000 }}

{tracing}
"#,
        hash = apikey::hash(KEY)
    )
}

fn tracing_to(collector: SocketAddr) -> String {
    format!(
        "[tracing]\notlp_endpoint = \"http://{collector}\"\nservice_name = \"gateway-under-test\"\n\
         sample_ratio = 0.0\nexport_interval = \"50ms\"\n"
    )
}

/// The access-log lines of the process, parsed.
fn access_lines(gateway: &GatewayProcess) -> Vec<Value> {
    gateway
        .log()
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["target"] == "access")
        .collect()
}

/// A sampled client trace is kept even with `sample_ratio = 0`, continued by the gateway's
/// request span, and reaches the manager as the upstream span's context.
#[tokio::test]
async fn a_sampled_client_trace_is_continued_through_auth_ratelimit_and_upstream_spans() {
    let (otlp, collected) = collector().await;
    let upstream = echo_upstream().await;
    let gateway = GatewayProcess::start(&config(upstream, &tracing_to(otlp), None));
    let traceparent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let reply = send(
        "GET",
        &format!("{}/v0/pipelines/p1", gateway.url()),
        &[
            ("authorization", &format!("Bearer {KEY}")),
            ("traceparent", &traceparent),
            ("tracestate", "vendor=opaque"),
        ],
        b"",
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = reply.json()["headers"].clone();
    let sent_up = seen["traceparent"]
        .as_str()
        .expect("the manager saw a traceparent");
    let parts: Vec<&str> = sent_up.split('-').collect();
    assert_eq!(parts.len(), 4, "{sent_up}");
    assert_eq!(parts[1], CLIENT_TRACE, "same trace as the client's");
    assert_ne!(
        parts[2], CLIENT_SPAN,
        "the gateway's span, not the client's"
    );
    assert_eq!(parts[3], "01");
    assert_eq!(seen["tracestate"], "vendor=opaque");

    assert!(
        eventually(Duration::from_secs(10), async || {
            collected.spans_of(CLIENT_TRACE).len() >= 5
        })
        .await,
        "spans exported: {:?}",
        collected.spans_of(CLIENT_TRACE)
    );
    let spans = collected.spans_of(CLIENT_TRACE);
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    let [request] = named(&spans, "GET pipeline.get")[..] else {
        panic!("one request span: {names:?}");
    };
    assert_eq!(request.kind, SpanKind::Server as i32);
    assert_eq!(hex(&request.parent_span_id), CLIENT_SPAN);
    let [auth] = named(&spans, "auth")[..] else {
        panic!("one auth span: {names:?}");
    };
    let limits = named(&spans, "ratelimit");
    assert_eq!(limits.len(), 2, "client_ip and principal stages: {names:?}");
    let [upstream_span] = named(&spans, "GET primary")[..] else {
        panic!("one upstream span: {names:?}");
    };
    for child in limits.iter().copied().chain([auth, upstream_span]) {
        assert_eq!(child.parent_span_id, request.span_id, "{}", child.name);
    }
    assert_eq!(upstream_span.kind, SpanKind::Client as i32);
    assert_eq!(
        hex(&upstream_span.span_id),
        parts[2],
        "the manager's parent"
    );

    let attrs = attributes(request);
    for (key, value) in [
        ("http.request.method", "GET"),
        ("url.path", "/v0/pipelines/p1"),
        ("url.scheme", "http"),
        ("http.response.status_code", "200"),
        ("server.address", "127.0.0.1"),
        ("client.address", "127.0.0.1"),
        ("network.protocol.version", "1.1"),
        ("feldera.pipeline", "p1"),
        ("feldera.endpoint", "pipeline.get"),
        ("gateway.route", "routes[0]"),
        ("gateway.upstream", "primary"),
        ("enduser.id", "key:loader"),
    ] {
        assert_eq!(
            attrs.get(key).map(String::as_str),
            Some(value),
            "{key}: {attrs:?}"
        );
    }
    assert!(!attrs.contains_key("error.type"), "{attrs:?}");
    let attrs = attributes(auth);
    assert_eq!(attrs["auth.jwks_fetch"], "false", "{attrs:?}");
    let stages: Vec<String> = limits
        .iter()
        .map(|s| {
            let a = attributes(s);
            assert_eq!(a["ratelimit.backend"], "local");
            assert_eq!(a["ratelimit.outcome"], "allow");
            format!("{}:{}", a["ratelimit.stage"], a["ratelimit.policy"])
        })
        .collect();
    assert!(
        stages.contains(&"client_ip:client_ip".to_owned()),
        "{stages:?}"
    );
    assert!(
        stages.contains(&"principal:principal".to_owned()),
        "{stages:?}"
    );
    let attrs = attributes(upstream_span);
    assert_eq!(attrs["gateway.upstream"], "primary");
    assert_eq!(attrs["server.address"], upstream.to_string());
    assert_eq!(attrs["gateway.retries"], "0");
    assert_eq!(attrs["http.response.status_code"], "200");

    // The access line carries the request span's ids and the facts the span has.
    // The gateway's log reaches the test through a pipe: wait for the line.
    let mut lines = Vec::new();
    let written = eventually(Duration::from_secs(5), async || {
        lines = access_lines(&gateway);
        lines
            .iter()
            .any(|l| l["fields"]["trace_id"] == CLIENT_TRACE)
    })
    .await;
    assert!(written, "no access line with the trace id");
    let line = lines
        .iter()
        .find(|l| l["fields"]["trace_id"] == CLIENT_TRACE)
        .unwrap_or_else(|| panic!("an access line with the trace id: {lines:?}"));
    let fields = &line["fields"];
    assert_eq!(fields["span_id"], hex(&request.span_id));
    assert_eq!(fields["principal"], "key:loader");
    assert_eq!(fields["tenant"], "acme");
    assert_eq!(fields["route"], "routes[0]");
    assert_eq!(fields["upstream"], "primary");
    assert_eq!(fields["upstream_endpoint"], upstream.to_string());
    assert_eq!(fields["retries"], 0);
    assert_eq!(fields["bytes_in"], 0);
    assert!(
        fields["bytes_out"].as_u64().is_some_and(|n| n > 0),
        "{fields}"
    );
    assert!(fields["duration_us"].is_u64(), "{fields}");
}

/// A malformed `traceparent` is not continued: the gateway starts a trace of its own (the
/// request span has no parent) and the manager sees that one. A refusal carries its
/// `error_code` as `error.type` and has no upstream span.
#[tokio::test]
async fn a_malformed_traceparent_is_replaced_and_a_refusal_is_typed() {
    let (otlp, collected) = collector().await;
    let upstream = echo_upstream().await;
    let tracing = tracing_to(otlp).replace("sample_ratio = 0.0", "sample_ratio = 1.0");
    let gateway = GatewayProcess::start(&config(upstream, &tracing, None));
    let forged = "00-4bf92f3577b34da6a3ce929d0e0e47zz-00f067aa0ba902b7-01";
    let reply = send(
        "GET",
        &format!("{}/v0/pipelines/p2", gateway.url()),
        &[
            ("authorization", &format!("Bearer {KEY}")),
            ("traceparent", forged),
            ("tracestate", "forged=1"),
        ],
        b"",
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = reply.json()["headers"].clone();
    let sent_up = seen["traceparent"].as_str().expect("a traceparent");
    assert_ne!(sent_up, forged);
    let trace_id = sent_up.split('-').nth(1).expect("a trace id").to_owned();
    assert_eq!(trace_id.len(), 32);
    assert!(seen.get("tracestate").is_none(), "{seen}");
    assert!(
        eventually(Duration::from_secs(10), async || {
            collected.spans_of(&trace_id).len() >= 5
        })
        .await
    );
    let spans = collected.spans_of(&trace_id);
    let [request] = named(&spans, "GET pipeline.get")[..] else {
        panic!("one request span: {spans:?}");
    };
    assert!(
        request.parent_span_id.is_empty(),
        "a new trace has no parent"
    );

    // A key the gateway does not know: 401, typed on the span, nothing sent upstream.
    let wrong = KEY.replace("5678", "9999");
    let reply = send(
        "GET",
        &format!("{}/v0/pipelines/p3", gateway.url()),
        &[("authorization", &format!("Bearer {wrong}"))],
        b"",
    )
    .await;
    let details = reply.error(401, reply.json()["error_code"].as_str().unwrap_or("?"));
    assert_eq!(details["reason"], "invalid_api_key");
    let code = reply.json()["error_code"].as_str().unwrap().to_owned();
    let mut lines = Vec::new();
    let written = eventually(Duration::from_secs(5), async || {
        lines = access_lines(&gateway);
        lines
            .iter()
            .any(|l| l["fields"]["path"] == "/v0/pipelines/p3")
    })
    .await;
    assert!(written, "no access line for the refusal");
    let line = lines
        .iter()
        .find(|l| l["fields"]["path"] == "/v0/pipelines/p3")
        .unwrap_or_else(|| panic!("the refusal's access line: {lines:?}"));
    let refused = line["fields"]["trace_id"].as_str().unwrap().to_owned();
    assert_eq!(line["fields"]["error_code"], code.as_str());
    assert_eq!(line["fields"]["upstream"], "-");
    assert!(
        eventually(Duration::from_secs(10), async || {
            collected.spans_of(&refused).len() >= 3
        })
        .await
    );
    let spans = collected.spans_of(&refused);
    let [request] = named(&spans, "GET pipeline.get")[..] else {
        panic!("one request span: {spans:?}");
    };
    let attrs = attributes(request);
    assert_eq!(attrs["error.type"], code, "{attrs:?}");
    assert_eq!(attrs["http.response.status_code"], "401");
    assert!(!attrs.contains_key("enduser.id"), "{attrs:?}");
    let [auth] = named(&spans, "auth")[..] else {
        panic!("one auth span: {spans:?}");
    };
    assert_eq!(attributes(auth)["error.type"], code);
    assert!(
        named(&spans, "GET primary").is_empty(),
        "never sent upstream"
    );
    // Neither key, in any form, is in what was exported.
    let raw = collected.raw.lock().unwrap().clone();
    for secret in [KEY, wrong.as_str(), &KEY[7..]] {
        assert!(
            !raw.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "a credential was exported"
        );
    }
}

/// A collector that accepts and never answers holds the exporter: finished spans beyond the
/// queue are dropped and counted, and requests are answered as if nothing happened.
#[tokio::test]
async fn spans_beyond_a_full_queue_are_dropped_and_counted_not_waited_for() {
    let hanging = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hanging_addr = hanging.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = hanging.accept().await {
            held.push(stream);
        }
    });
    let admin_port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let upstream = echo_upstream().await;
    let tracing = format!(
        "[tracing]\notlp_endpoint = \"http://{hanging_addr}\"\nqueue_size = 2\n\
         export_interval = \"10ms\"\nexport_timeout = \"60s\"\n"
    );
    let gateway = GatewayProcess::start(&config(upstream, &tracing, Some(admin_port)));
    for i in 0..10 {
        let reply = send(
            "GET",
            &format!("{}/v0/pipelines/p{i}", gateway.url()),
            &[("authorization", &format!("Bearer {KEY}"))],
            b"",
        )
        .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    let metrics = format!("http://127.0.0.1:{admin_port}/metrics");
    let mut dropped = 0;
    assert!(
        eventually(Duration::from_secs(10), async || {
            let text = support::get(&metrics).await.text();
            dropped = support::metric(&text, "pipeline_gateway_trace_spans_dropped_total");
            // 10 requests × 5 spans; at most the queue (2) and the one export in flight wait.
            dropped >= 10 * 5 - 2 - 2
        })
        .await,
        "dropped {dropped}"
    );
}

/// With tracing off, the gateway takes no part in traces: the client's `traceparent` and
/// `tracestate` reach the manager as sent (correlation), and the access line carries the
/// client's trace id.
#[tokio::test]
async fn with_tracing_off_the_clients_trace_context_passes_unchanged() {
    let upstream = echo_upstream().await;
    let gateway = GatewayProcess::start(&config(upstream, "", None));
    let traceparent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let reply = send(
        "GET",
        &format!("{}/v0/pipelines/p1", gateway.url()),
        &[
            ("authorization", &format!("Bearer {KEY}")),
            ("traceparent", &traceparent),
            ("tracestate", "vendor=opaque"),
        ],
        b"",
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = reply.json()["headers"].clone();
    assert_eq!(seen["traceparent"], traceparent.as_str());
    assert_eq!(seen["tracestate"], "vendor=opaque");
    let mut lines = Vec::new();
    assert!(
        eventually(Duration::from_secs(5), async || {
            lines = access_lines(&gateway);
            !lines.is_empty()
        })
        .await
    );
    assert_eq!(lines[0]["fields"]["trace_id"], CLIENT_TRACE);
    assert_eq!(lines[0]["fields"]["span_id"], "-");
}

/// A request of the credentials test: URL, headers, expected status.
type Case = (String, Vec<(&'static str, String)>, u16);

/// Bearer tokens and API keys — accepted, refused, in `Authorization`, `X-Api-Key` or the
/// query — never appear in the log, even at debug level.
#[tokio::test]
async fn credentials_never_reach_the_log() {
    let upstream = echo_upstream().await;
    let gateway =
        GatewayProcess::start_with_env(&config(upstream, "", None), &[("RUST_LOG", "debug")]);
    let jwt = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.eyJzdWIiOiJtYWxsb3J5In0.c2lnbmF0dXJlc2VjcmV0";
    let wrong = KEY.replace("5678", "9999");
    let url = gateway.url();
    let cases: Vec<Case> = vec![
        (
            format!("{url}/v0/pipelines/p1"),
            vec![("authorization", format!("Bearer {KEY}"))],
            200,
        ),
        (
            format!("{url}/v0/pipelines/p1"),
            vec![("authorization", format!("Bearer {wrong}"))],
            401,
        ),
        (
            format!("{url}/v0/pipelines/p1"),
            vec![("authorization", format!("Bearer {jwt}"))],
            401,
        ),
        (
            format!("{url}/v0/pipelines/p1"),
            vec![
                ("authorization", format!("Bearer {KEY}")),
                ("x-api-key", wrong.clone()),
            ],
            200,
        ),
        (
            format!("{url}/v0/pipelines/p1?api_key={}", &wrong[7..]),
            vec![("authorization", format!("Bearer {KEY}"))],
            200,
        ),
    ];
    for (url, headers, status) in &cases {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let reply = send("GET", url, &headers, b"").await;
        assert_eq!(reply.status.as_u16(), *status, "{url}: {}", reply.text());
    }
    let mut log = Vec::new();
    assert!(
        eventually(Duration::from_secs(5), async || {
            log = gateway.log();
            access_lines(&gateway).len() >= cases.len()
        })
        .await,
        "{log:?}"
    );
    let text = log.join("\n");
    for secret in [
        KEY,
        &KEY[7..],
        wrong.as_str(),
        &wrong[7..],
        jwt,
        "c2lnbmF0dXJlc2VjcmV0",
    ] {
        assert!(!text.contains(secret), "a credential is in the log: {text}");
    }
    assert!(text.contains("key:loader"), "the principal's name is");
}

/// A JWT's auth span says whether the verified-token cache answered: the first request
/// verifies the signature (`auth.cache_hit = false`), the second is a hit; `enduser.id` is
/// the principal's name, never the token.
#[tokio::test]
async fn the_auth_span_tells_a_token_cache_hit_from_a_verification() {
    let (otlp, collected) = collector().await;
    let upstream = echo_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let key = support::keys::TestKey::hs256("k1");
    let sources = support::keys::key_sources(&[&key], dir.path());
    let text = config(upstream, &tracing_to(otlp), None).replace(
        "[rate_limit]",
        &format!(
            "[[auth.jwt]]\nissuer = \"https://idp.example.com/\"\naudiences = [\"feldera-api\"]\n\
             algorithms = [\"HS256\"]\n{sources}\nrole_claim = \"feldera_role\"\n\n[rate_limit]"
        ),
    );
    let gateway = GatewayProcess::start(&text);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let token = key.token(&serde_json::json!({
        "iss": "https://idp.example.com/", "sub": "ada", "aud": "feldera-api",
        "exp": now + 600, "feldera_role": "write",
    }));
    let mut trace_ids = Vec::new();
    for (i, span) in ["0000000000000001", "0000000000000002"].iter().enumerate() {
        let trace_id = format!("{:032x}", 0xabc0 + i);
        let reply = send(
            "GET",
            &format!("{}/v0/pipelines/p1", gateway.url()),
            &[
                ("authorization", &format!("Bearer {token}")),
                ("traceparent", &format!("00-{trace_id}-{span}-01")),
            ],
            b"",
        )
        .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        trace_ids.push(trace_id);
    }
    let mut hits = Vec::new();
    for trace_id in &trace_ids {
        assert!(
            eventually(Duration::from_secs(10), async || {
                collected.spans_of(trace_id).len() >= 5
            })
            .await
        );
        let spans = collected.spans_of(trace_id);
        let [auth] = named(&spans, "auth")[..] else {
            panic!("one auth span: {spans:?}");
        };
        let attrs = attributes(auth);
        assert_eq!(attrs["auth.jwks_fetch"], "false");
        hits.push(attrs["auth.cache_hit"].clone());
        let [request] = named(&spans, "GET pipeline.get")[..] else {
            panic!("one request span: {spans:?}");
        };
        assert_eq!(
            attributes(request)["enduser.id"],
            "jwt:https://idp.example.com/#ada"
        );
    }
    assert_eq!(hits, ["false", "true"]);
    let raw = collected.raw.lock().unwrap().clone();
    assert!(!raw.windows(token.len()).any(|w| w == token.as_bytes()));
}

/// `[log] access_fields` chooses the access line's fields, and nothing else is on it.
#[tokio::test]
async fn access_fields_choose_what_the_access_line_carries() {
    let upstream = echo_upstream().await;
    let text = format!(
        "{}\n[log]\naccess_fields = [\"status\", \"principal\", \"retries\"]\n",
        config(upstream, "", None)
    );
    let gateway = GatewayProcess::start(&text);
    let reply = send(
        "GET",
        &format!("{}/v0/pipelines/p1", gateway.url()),
        &[("authorization", &format!("Bearer {KEY}"))],
        b"",
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let mut lines = Vec::new();
    assert!(
        eventually(Duration::from_secs(5), async || {
            lines = access_lines(&gateway);
            !lines.is_empty()
        })
        .await
    );
    assert_eq!(
        lines[0]["fields"],
        serde_json::json!({ "status": 200, "principal": "key:loader", "retries": 0 })
    );
}

/// A collector that refuses connections: each failed export is one warning, and its spans
/// are counted as lost; requests are answered as usual.
#[tokio::test]
async fn a_failed_export_is_warned_about_and_its_spans_counted() {
    let admin_port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let upstream = echo_upstream().await;
    let tracing = format!(
        "[tracing]\notlp_endpoint = \"http://127.0.0.1:{}\"\nexport_interval = \"10ms\"\n",
        support::closed_port().await
    );
    let gateway = GatewayProcess::start(&config(upstream, &tracing, Some(admin_port)));
    let reply = send(
        "GET",
        &format!("{}/v0/pipelines/p1", gateway.url()),
        &[("authorization", &format!("Bearer {KEY}"))],
        b"",
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let metrics = format!("http://127.0.0.1:{admin_port}/metrics");
    let mut dropped = 0;
    assert!(
        eventually(Duration::from_secs(10), async || {
            let text = support::get(&metrics).await.text();
            dropped = support::metric(&text, "pipeline_gateway_trace_spans_dropped_total");
            dropped == 5
        })
        .await,
        "dropped {dropped}"
    );
    let warnings: Vec<String> = gateway
        .log()
        .into_iter()
        .filter(|line| line.contains("an export failed"))
        .collect();
    assert!(!warnings.is_empty());
    assert!(warnings[0].contains("\"level\":\"WARN\""), "{warnings:?}");
}

/// `protocol = "grpc"` is refused by check-config, with the reason.
#[test]
fn check_config_refuses_grpc_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("grpc.toml");
    let upstream: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let tracing = "[tracing]\notlp_endpoint = \"http://127.0.0.1:4317\"\nprotocol = \"grpc\"\n";
    std::fs::write(&path, config(upstream, tracing, None)).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_pipeline-gateway"))
        .args(["check-config", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("1 problem(s)"), "{stderr}");
    assert!(
        stderr.contains("tracing.protocol: \"grpc\" is not supported: OTLP/gRPC would build tonic"),
        "{stderr}"
    );
}
