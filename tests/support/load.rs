//! Load for the fault tests: clients sending requests through a gateway while a test breaks
//! something behind it, every answer classified and kept, so that the test can assert the
//! counts — sent, answered 2xx, answered with which typed error, lost.
//!
//! An answer is one of ([`Outcome`]):
//! - `Success`: a 2xx whose body was read to its end;
//! - `Typed`: any other status whose body is the gateway's error schema — `Content-Type:
//!   application/json`, an object of exactly `message` (a string), `error_code` (a string)
//!   and `details`;
//! - `Lost`: what a client cannot use — a transport error (refused, reset, closed mid-body),
//!   no whole answer within [`REQUEST_DEADLINE`], or a non-2xx answer outside the schema.
//!
//! Each [`Record`] keeps the phase the test was in when the request *started*
//! ([`Load::set_phase`]), so a test can say "every request started after the kill succeeded".
//! Clients send back to back over keep-alive connections; nothing sleeps, and tests wait for
//! progress ([`Load::wait_answered`]) with a deadline.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::task::JoinHandle;

use super::eventually;

/// Longest a client waits for a whole answer (headers and body); past it the request is lost.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(10);

/// One request to send.
#[derive(Debug, Clone)]
pub struct Call {
    /// What the test calls this kind of request ("GET", "POST", "jwt", …), for the tally.
    pub label: &'static str,
    pub method: Method,
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
}

impl Call {
    /// `method url` without headers.
    pub fn new(label: &'static str, method: Method, url: String) -> Call {
        Call {
            label,
            method,
            url,
            headers: Vec::new(),
        }
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Call {
        self.headers.push((name, value.into()));
        self
    }
}

/// How one request ended (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Success(u16),
    Typed {
        status: u16,
        code: String,
        details: Value,
    },
    Lost(String),
}

/// One request and its answer.
#[derive(Debug, Clone)]
pub struct Record {
    /// The order in which it was taken by a client.
    pub index: usize,
    pub label: &'static str,
    /// The test's phase when it started.
    pub phase: usize,
    pub outcome: Outcome,
    /// `x-standin-instance` of the answer (which replica served it).
    pub instance: Option<String>,
    pub retry_after: Option<String>,
}

impl Record {
    pub fn is_success(&self) -> bool {
        matches!(self.outcome, Outcome::Success(_))
    }

    pub fn is_lost(&self) -> bool {
        matches!(self.outcome, Outcome::Lost(_))
    }

    /// Whether it was answered `status` with `error_code` `code` in the schema.
    pub fn is_typed(&self, status: u16, code: &str) -> bool {
        matches!(&self.outcome, Outcome::Typed { status: s, code: c, .. } if *s == status && c == code)
    }
}

/// Requests sent and their outcomes.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub records: Vec<Record>,
}

impl Tally {
    pub fn sent(&self) -> usize {
        self.records.len()
    }

    /// The records for which `keep` holds.
    pub fn only(&self, keep: impl Fn(&Record) -> bool) -> Tally {
        Tally {
            records: self.records.iter().filter(|r| keep(r)).cloned().collect(),
        }
    }

    pub fn successes(&self) -> usize {
        self.records.iter().filter(|r| r.is_success()).count()
    }

    /// How many were answered `status` with this `error_code`.
    pub fn typed(&self, status: u16, code: &str) -> usize {
        self.records
            .iter()
            .filter(|r| r.is_typed(status, code))
            .count()
    }

    pub fn lost(&self) -> Vec<&Record> {
        self.records.iter().filter(|r| r.is_lost()).collect()
    }

    /// Records answered with neither 2xx nor one of the `allowed` typed errors (lost ones
    /// included).
    pub fn unexpected(&self, allowed: &[(u16, &str)]) -> Vec<&Record> {
        self.records
            .iter()
            .filter(|r| !r.is_success() && !allowed.iter().any(|(s, c)| r.is_typed(*s, c)))
            .collect()
    }

    /// `sent N: 2xx A, 502 UpstreamUnavailable B, lost 0`.
    pub fn summary(&self) -> String {
        let mut typed: BTreeMap<(u16, &str), usize> = BTreeMap::new();
        for record in &self.records {
            if let Outcome::Typed { status, code, .. } = &record.outcome {
                *typed.entry((*status, code.as_str())).or_default() += 1;
            }
        }
        let mut text = format!("sent {}: 2xx {}", self.sent(), self.successes());
        for ((status, code), count) in typed {
            let _ = write!(text, ", {status} {code} {count}");
        }
        let _ = write!(text, ", lost {}", self.lost().len());
        text
    }
}

/// Clients sending requests until a bound or until stopped (see the module docs).
pub struct Load {
    records: Arc<Mutex<Vec<Record>>>,
    answered: Arc<AtomicUsize>,
    phase: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    clients: Vec<JoinHandle<()>>,
}

impl Load {
    /// `clients` clients sending `make(0)`, `make(1)`, … between them: exactly `total`
    /// requests when `total` is `Some`, else until [`Load::finish`].
    pub fn start(
        clients: usize,
        total: Option<usize>,
        make: impl Fn(usize) -> Call + Send + Sync + 'static,
    ) -> Load {
        let client: Client<HttpConnector, Full<Bytes>> =
            Client::builder(TokioExecutor::new()).build_http();
        let make = Arc::new(make);
        let next = Arc::new(AtomicUsize::new(0));
        let load = Load {
            records: Arc::default(),
            answered: Arc::default(),
            phase: Arc::default(),
            stop: Arc::default(),
            clients: Vec::new(),
        };
        let tasks = (0..clients)
            .map(|_| {
                let (client, make, next) = (client.clone(), make.clone(), next.clone());
                let (records, answered) = (load.records.clone(), load.answered.clone());
                let (phase, stop) = (load.phase.clone(), load.stop.clone());
                tokio::spawn(async move {
                    loop {
                        if total.is_none() && stop.load(Ordering::SeqCst) {
                            return;
                        }
                        let index = next.fetch_add(1, Ordering::SeqCst);
                        if total.is_some_and(|total| index >= total) {
                            return;
                        }
                        let call = make(index);
                        let started_in = phase.load(Ordering::SeqCst);
                        let (outcome, instance, retry_after) = send(&client, &call).await;
                        records.lock().unwrap().push(Record {
                            index,
                            label: call.label,
                            phase: started_in,
                            outcome,
                            instance,
                            retry_after,
                        });
                        answered.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        Load {
            clients: tasks,
            ..load
        }
    }

    /// Requests answered (or lost) so far.
    pub fn answered(&self) -> usize {
        self.answered.load(Ordering::SeqCst)
    }

    /// Waits until `count` requests have been answered, at most `deadline`; whether they were.
    pub async fn wait_answered(&self, count: usize, deadline: Duration) -> bool {
        eventually(deadline, async || self.answered() >= count).await
    }

    /// The phase requests starting from now are recorded in.
    pub fn set_phase(&self, phase: usize) {
        self.phase.store(phase, Ordering::SeqCst);
    }

    /// Stops an unbounded load (a bounded one sends all its requests), waits for every
    /// client, and returns every record in the order the requests were taken.
    pub async fn finish(self) -> Tally {
        self.stop.store(true, Ordering::SeqCst);
        for client in self.clients {
            client.await.expect("a load client panicked");
        }
        let mut records = std::mem::take(&mut *self.records.lock().unwrap());
        records.sort_by_key(|r| r.index);
        Tally { records }
    }
}

/// Sends `call` and classifies its answer; also returns `x-standin-instance` and
/// `Retry-After`.
async fn send(
    client: &Client<HttpConnector, Full<Bytes>>,
    call: &Call,
) -> (Outcome, Option<String>, Option<String>) {
    let mut builder = http::Request::builder()
        .method(call.method.clone())
        .uri(&call.url);
    for (name, value) in &call.headers {
        builder = builder.header(*name, value);
    }
    let request = builder.body(Full::new(Bytes::new())).expect("request");
    let exchange = async {
        let response = client.request(request).await.map_err(|e| describe(&e))?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        Ok::<_, String>((parts, body))
    };
    let (parts, body) = match tokio::time::timeout(REQUEST_DEADLINE, exchange).await {
        Err(_) => {
            return (
                Outcome::Lost(format!("no answer within {REQUEST_DEADLINE:?}")),
                None,
                None,
            )
        }
        Ok(Err(error)) => return (Outcome::Lost(error), None, None),
        Ok(Ok(answer)) => answer,
    };
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    (
        classify(parts.status, &parts.headers, &body),
        header("x-standin-instance"),
        header("retry-after"),
    )
}

/// An error with its causes, `outer: inner: …`.
pub fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    text
}

/// The outcome of a whole answer (see the module docs).
pub fn classify(status: http::StatusCode, headers: &http::HeaderMap, body: &[u8]) -> Outcome {
    if status.is_success() {
        return Outcome::Success(status.as_u16());
    }
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    match in_schema(content_type, body) {
        Some((code, details)) => Outcome::Typed {
            status: status.as_u16(),
            code,
            details,
        },
        None => Outcome::Lost(format!(
            "{status} outside the error schema: {:?}",
            String::from_utf8_lossy(body)
        )),
    }
}

/// `(error_code, details)` of a body in the error schema.
fn in_schema(content_type: Option<&str>, body: &[u8]) -> Option<(String, Value)> {
    if content_type != Some("application/json") {
        return None;
    }
    let value: Value = serde_json::from_slice(body).ok()?;
    let object = value.as_object()?;
    if object.len() != 3 || !object.get("message")?.is_string() {
        return None;
    }
    let code = object.get("error_code")?.as_str()?.to_owned();
    Some((code, object.get("details")?.clone()))
}
