//! Replays the real manager's captured answers against a fresh stand-in and compares.
//!
//! Both captures (`src/testdata/manager-oss-0.337.json` and `manager-oss-0.337-more.json`,
//! copies of `captured/`) come from the open-source manager 0.337.0 without its SQL compiler
//! and with authentication off, sent in order without `Accept-Encoding`. Each file is replayed
//! in order against a fresh stand-in playing that build: [`Edition::Oss`],
//! [`Compiler::Absent`], no compression, no web console (the captured build had none), and a
//! lifecycle delay of zero so that every compilation has ended at the next look (the capture
//! caught one pipeline mid-compilation, which the normaliser below absorbs).
//!
//! Compared per exchange: status; `content-type`, `retry-after` and `allow`; a JSON body after
//! [`normalise`] (the whole value, key order included, so `error_code`, `message` and
//! `details` are exact); any other body byte for byte. The newer capture does not hold its
//! request bodies (its labels describe them); [`request_body`] rebuilds each one so that it
//! produces the captured answer, e.g. the same column in a serde error.
//!
//! Exchanges the stand-in cannot match are listed in [`EXCEPTIONS`] with the reason; the test
//! fails when a listed one starts matching (so the list stays honest) and when any other one
//! differs.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use feldera_standin::{Compiler, Edition, SeedPipeline, SeedStatus, Standin, StandinOptions};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

const OLDER: &str = include_str!("../src/testdata/manager-oss-0.337.json");
const NEWER: &str = include_str!("../src/testdata/manager-oss-0.337-more.json");

/// Exchanges of the newer capture (by label) that the stand-in does not answer like the
/// captured manager, and why. Empty today: every one of the 81 matches.
const EXCEPTIONS: &[(&str, &str)] = &[];

/// A JSON value that keeps the order of object keys (the stand-in's `serde_json` sorts them).
#[derive(Clone, Debug, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Number(String),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Json, D::Error> {
        struct JsonVisitor;
        impl<'de> Visitor<'de> for JsonVisitor {
            type Value = Json;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_unit<E>(self) -> Result<Json, E> {
                Ok(Json::Null)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
                Ok(Json::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
                Ok(Json::Number(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
                Ok(Json::Number(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Json, E> {
                Ok(Json::Number(v.to_string()))
            }
            fn visit_str<E>(self, v: &str) -> Result<Json, E> {
                Ok(Json::String(v.to_owned()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Json::Array(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Json::Object(entries))
            }
        }
        deserializer.deserialize_any(JsonVisitor)
    }
}

fn parse(text: &str) -> Json {
    serde_json::from_str(text).expect("valid JSON")
}

/// A capture file, read with key order kept.
#[derive(serde::Deserialize)]
struct Capture {
    exchanges: Vec<Exchange>,
}

#[derive(serde::Deserialize)]
struct Exchange {
    /// Newer capture only.
    label: Option<String>,
    request: String,
    /// Older capture only.
    request_body: Option<String>,
    status: u16,
    headers: BTreeMap<String, String>,
    body_json: Option<Json>,
    body_text: Option<String>,
}

fn capture(text: &str) -> Capture {
    serde_json::from_str(text).expect("a capture file")
}

fn is_uuid(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() == 36
        && bytes.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

fn is_timestamp(text: &str) -> bool {
    humantime::parse_rfc3339_weak(text.trim_end_matches('Z')).is_ok() && text.ends_with('Z')
}

fn is_api_key(text: &str) -> bool {
    text.strip_prefix("apikey:")
        .is_some_and(|rest| rest.len() == 128 && rest.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// What differs by nature between two runs becomes a placeholder: ids, timestamps, API key
/// secrets, the build (`build_info`, `revision`), and how far compilation has got
/// (`program_status`, `refresh_version`, `program_error.system_error`). Everything else,
/// key order included, must be equal.
fn normalise(value: Json) -> Json {
    let placeholder = |text: &str| Json::String(text.to_owned());
    match value {
        Json::String(text) if is_uuid(&text) => placeholder("<uuid>"),
        Json::String(text) if is_timestamp(&text) => placeholder("<timestamp>"),
        Json::String(text) if is_api_key(&text) => placeholder("<api key>"),
        Json::Array(items) => Json::Array(items.into_iter().map(normalise).collect()),
        Json::Object(entries) => Json::Object(
            entries
                .into_iter()
                .map(|(key, value)| {
                    let value = match key.as_str() {
                        "build_info" => match value {
                            Json::Object(fields) => Json::Object(
                                fields
                                    .into_iter()
                                    .map(|(k, _)| (k, placeholder("<build>")))
                                    .collect(),
                            ),
                            other => other,
                        },
                        "revision" | "runtime_revision" => placeholder("<build>"),
                        "program_status" => placeholder("<compilation progress>"),
                        "refresh_version" => placeholder("<compilation progress>"),
                        "system_error" => placeholder("<compilation progress>"),
                        _ => normalise(value),
                    };
                    (key, value)
                })
                .collect(),
        ),
        other => other,
    }
}

/// The request body (and whether it is sent as `application/json`) that the newer capture's
/// label describes.
fn request_body(label: &str) -> Option<(&'static str, bool)> {
    const PROGRAM: &str = r#"{"name":"cmp1","program_code":"CREATE TABLE t (x INT);"}"#;
    let body = match label {
        "create p1" | "create p1 again (duplicate)" => (PROGRAM, true),
        "create bad.name" => (r#"{"name":"bad.name","program_code":""}"#, true),
        "create 64-char name" => (
            r#"{"name":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","program_code":""}"#,
            true,
        ),
        "create empty name" => (r#"{"name":"","program_code":""}"#, true),
        "create bad JSON" => ("{not json", true),
        // `missing field `program_code` at line 1 column 19`: the closing brace is column 19.
        "create missing program_code" => (r#"{"name":"cmp-miss"}"#, true),
        "create without content-type" => (PROGRAM, false),
        "PUT p2 (creates)" => (
            r#"{"name":"cmp2","program_code":"CREATE TABLE t (x INT);"}"#,
            true,
        ),
        "PUT p2 (updates)" => (
            r#"{"name":"cmp2","description":"d","program_code":"CREATE TABLE t (x INT);"}"#,
            true,
        ),
        "PUT nonexisting with other name" => (r#"{"name":"cmp-other","program_code":""}"#, true),
        "PUT bad JSON" => ("[]", true),
        "PATCH p1 description" => (r#"{"description":"patched"}"#, true),
        "PATCH unknown" => (r#"{"description":"x"}"#, true),
        "ingress p1 (not deployed)" => ("1\n", false),
        "api_keys create" | "api_keys create duplicate" => (r#"{"name":"key1"}"#, true),
        "api_keys create bad JSON" => ("{", true),
        _ => return None,
    };
    Some(body)
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

async fn send(standin: &Standin, method: &str, path: &str, body: Option<(&str, bool)>) -> Answer {
    let mut request = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).expect("method"))
        .uri(format!("{}{path}", standin.url()));
    if let Some((_, true)) = body {
        request = request.header("content-type", "application/json");
    }
    let body = body.map_or(Bytes::new(), |(text, _)| Bytes::from(text.to_owned()));
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let response = client
        .request(request.body(Full::new(body)).expect("request"))
        .await
        .expect("the stand-in answers");
    let (parts, body) = response.into_parts();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.expect("body").to_bytes(),
    }
}

/// Why `answer` differs from the captured `exchange`, or `None` when it matches.
fn difference(exchange: &Exchange, answer: &Answer) -> Option<String> {
    if answer.status.as_u16() != exchange.status {
        return Some(format!(
            "status {} instead of {}",
            answer.status, exchange.status
        ));
    }
    for name in ["content-type", "retry-after", "allow"] {
        let ours = answer.headers.get(name).and_then(|v| v.to_str().ok());
        let theirs = exchange.headers.get(name).map(String::as_str);
        if ours != theirs {
            return Some(format!("{name} {ours:?} instead of {theirs:?}"));
        }
    }
    let text = String::from_utf8_lossy(&answer.body);
    let Some(theirs) = exchange.body_json.clone() else {
        let want = exchange.body_text.as_deref().unwrap_or_default();
        return (text != want).then(|| format!("body {text:?} instead of {want:?}"));
    };
    let theirs = normalise(theirs);
    let ours = match serde_json::from_str::<Json>(&text) {
        Ok(json) => normalise(json),
        Err(_) => return Some(format!("body {text:?} is not JSON")),
    };
    (ours != theirs).then(|| format!("body\n  ours:   {ours:?}\n  theirs: {theirs:?}"))
}

/// The stand-in as the captured manager was: open source, no SQL compiler, no compression,
/// no web console, nothing transitional.
fn captured_build(seed: Vec<SeedPipeline>) -> StandinOptions {
    StandinOptions {
        seed,
        lifecycle_delay: Duration::ZERO,
        edition: Edition::Oss,
        compiler: Compiler::Absent,
        compression: false,
        web_console: false,
        ..StandinOptions::default()
    }
}

async fn start(options: StandinOptions) -> Standin {
    Standin::bind("127.0.0.1:0".parse().expect("address"), options)
        .await
        .expect("the stand-in binds")
}

#[tokio::test]
async fn the_newer_capture_is_replayed_in_order_and_only_the_listed_exceptions_differ() {
    let exchanges = capture(NEWER).exchanges;
    assert_eq!(exchanges.len(), 81);
    let standin = start(captured_build(Vec::new())).await;
    let mut differing = Vec::new();
    for exchange in &exchanges {
        let label = exchange.label.as_deref().expect("label");
        let request = exchange.request.as_str();
        let (method, path) = request.split_once(' ').expect("METHOD PATH");
        let answer = send(&standin, method, path, request_body(label)).await;
        if let Some(why) = difference(exchange, &answer) {
            differing.push((label, request, why));
        }
    }
    standin.shutdown().await;
    let matched = exchanges.len() - differing.len();
    eprintln!("{matched} of {} captured exchanges match", exchanges.len());
    let unexpected: Vec<_> = differing
        .iter()
        .filter(|(label, _, _)| !EXCEPTIONS.iter().any(|(listed, _)| listed == label))
        .collect();
    assert!(
        unexpected.is_empty(),
        "exchanges that differ from the capture:\n{}",
        unexpected
            .iter()
            .map(|(label, request, why)| format!("- {label} ({request}): {why}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let now_matching: Vec<_> = EXCEPTIONS
        .iter()
        .filter(|(label, _)| !differing.iter().any(|(l, _, _)| l == label))
        .collect();
    assert!(
        now_matching.is_empty(),
        "listed as exceptions but matching now (remove them): {now_matching:?}"
    );
}

#[tokio::test]
async fn the_older_capture_is_replayed_in_order_and_every_exchange_matches() {
    let exchanges = capture(OLDER).exchanges;
    // That run's manager held `orders`, created before the capture began.
    let standin = start(captured_build(vec![SeedPipeline {
        name: "orders".into(),
        status: SeedStatus::Stopped,
    }]))
    .await;
    let mut differing = Vec::new();
    for exchange in &exchanges {
        let request = exchange.request.as_str();
        let (method, path) = request.split_once(' ').expect("METHOD PATH");
        let body = exchange.request_body.as_deref().map(|body| (body, true));
        let answer = send(&standin, method, path, body).await;
        if let Some(why) = difference(exchange, &answer) {
            differing.push(format!("- {request}: {why}"));
        }
    }
    standin.shutdown().await;
    assert!(differing.is_empty(), "{}", differing.join("\n"));
}

#[test]
fn the_normaliser_keeps_key_order_and_replaces_only_what_differs_by_nature() {
    let a = normalise(parse(
        r#"{"id":"01a23671-f187-7a70-967b-0c1fef72dd3a","at":"2026-12-02T11:09:26.791492Z","n":1,"program_status":"Pending"}"#,
    ));
    let b = normalise(parse(
        r#"{"id":"9c5e0f6a-1111-4222-8333-444455556666","at":"2027-01-01T00:00:00.000001Z","n":1,"program_status":"SystemError"}"#,
    ));
    assert_eq!(a, b);
    let reordered = normalise(parse(
        r#"{"n":1,"id":"01a23671-f187-7a70-967b-0c1fef72dd3a"}"#,
    ));
    let ordered = normalise(parse(
        r#"{"id":"01a23671-f187-7a70-967b-0c1fef72dd3a","n":1}"#,
    ));
    assert_ne!(reordered, ordered, "key order counts");
    assert_ne!(
        normalise(parse(r#"{"error_code":"EmptyName","details":{}}"#)),
        normalise(parse(r#"{"error_code":"EmptyName","details":null}"#))
    );
}
