//! Shared test support: start stand-ins and gateways on 127.0.0.1:0, send requests, read
//! JSON errors. Everything is real: sockets, the stand-in manager as upstream, hyper clients.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use feldera_standin::{SeedPipeline, SeedStatus, Standin, StandinOptions};
use http::{HeaderMap, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use pipeline_gateway::config::Config;
use pipeline_gateway::Gateway;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A stand-in with a few pipelines: `orders` and `billing` in Standby, `live` Running.
pub async fn standin(instance: &str) -> Standin {
    standin_with(StandinOptions {
        instance: instance.to_owned(),
        ..seeded()
    })
    .await
}

pub fn seeded() -> StandinOptions {
    StandinOptions {
        seed: vec![
            SeedPipeline {
                name: "orders".into(),
                status: SeedStatus::Standby,
            },
            SeedPipeline {
                name: "billing".into(),
                status: SeedStatus::Standby,
            },
            SeedPipeline {
                name: "prod-eu".into(),
                status: SeedStatus::Standby,
            },
            SeedPipeline {
                name: "live".into(),
                status: SeedStatus::Running,
            },
        ],
        lifecycle_delay: Duration::from_millis(20),
        ..StandinOptions::default()
    }
}

pub async fn standin_with(options: StandinOptions) -> Standin {
    Standin::bind(SocketAddr::from(([127, 0, 0, 1], 0)), options)
        .await
        .expect("stand-in binds")
}

/// A one-upstream configuration in front of `url`, plus `extra` TOML.
pub fn config_for(url: &str, extra: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"

[[upstreams]]
name = "primary"
endpoints = ["{url}"]
connect_timeout = "1s"
request_timeout = "5s"

[[routes]]
pipelines = ["*"]
upstream = "primary"
default = true

[auth]
mode = "off"
{extra}
"#
    )
}

pub async fn gateway(toml: &str) -> Gateway {
    let config = Config::from_toml(toml).expect("test configuration is valid");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    Gateway::start_on(listener, config)
        .await
        .expect("gateway starts")
}

/// A gateway in front of a fresh seeded stand-in.
pub async fn pair() -> (Gateway, Standin) {
    let upstream = standin("a").await;
    let gw = gateway(&config_for(&upstream.url(), "")).await;
    (gw, upstream)
}

/// A response, read in full.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts an error in the schema with this status and code; returns `details`.
    #[track_caller]
    pub fn error(&self, status: u16, code: &str) -> Value {
        assert_eq!(self.status.as_u16(), status, "status; body {}", self.text());
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "content-type"
        );
        let body = self.json();
        assert_eq!(body["error_code"], code, "error_code; body {body}");
        assert!(body["message"].is_string(), "message; body {body}");
        let object = body.as_object().expect("object");
        assert!(
            object.contains_key("details"),
            "details present; body {body}"
        );
        assert_eq!(
            object.len(),
            3,
            "exactly message, error_code, details: {body}"
        );
        body["details"].clone()
    }
}

/// Sends a request with hyper's client.
pub async fn send(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut builder = http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder
        .body(Full::new(Bytes::copy_from_slice(body)))
        .expect("request");
    let response = client.request(request).await.expect("response");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

pub async fn get(url: &str) -> Reply {
    send("GET", url, &[], b"").await
}

pub async fn post(url: &str) -> Reply {
    send("POST", url, &[], b"").await
}

/// Sends raw bytes (for requests hyper's client would not build) and reads the whole
/// response; the request should carry `Connection: close`.
pub async fn raw(addr: SocketAddr, request: &[u8]) -> Reply {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).await.expect("read");
    parse_raw(&bytes)
}

pub fn parse_raw(bytes: &[u8]) -> Reply {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(head) = response.parse(bytes).expect("HTTP response") else {
        panic!("incomplete response: {:?}", String::from_utf8_lossy(bytes))
    };
    let status = StatusCode::from_u16(response.code.expect("code")).expect("status");
    let mut map = HeaderMap::new();
    for h in response.headers.iter() {
        map.append(
            http::HeaderName::from_bytes(h.name.as_bytes()).expect("name"),
            http::HeaderValue::from_bytes(h.value).expect("value"),
        );
    }
    let mut body = bytes[head..].to_vec();
    if map
        .get("transfer-encoding")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"chunked"))
    {
        body = dechunk(&body);
    }
    Reply {
        status,
        headers: map,
        body: Bytes::from(body),
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(line_end) = data.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size = usize::from_str_radix(
            std::str::from_utf8(&data[..line_end]).unwrap_or("0").trim(),
            16,
        )
        .unwrap_or(0);
        if size == 0 {
            return out;
        }
        let start = line_end + 2;
        out.extend_from_slice(&data[start..start + size]);
        data = &data[start + size + 2..];
    }
}

/// Polls `condition` until it holds or `deadline` passes.
pub async fn eventually(deadline: Duration, mut condition: impl AsyncFnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if condition().await {
            return true;
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// Resident set size of this process, in bytes.
pub fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// A port on 127.0.0.1 where nothing listens.
pub async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    port
}

/// `bytes` encoded with `coding` (`gzip`, `deflate`, `br`, `zstd`), as a manager would send.
pub async fn encode(coding: &str, bytes: &[u8]) -> Vec<u8> {
    use async_compression::tokio::bufread::{BrotliEncoder, GzipEncoder, ZlibEncoder, ZstdEncoder};
    let mut out = Vec::new();
    let read = match coding {
        "gzip" => GzipEncoder::new(bytes).read_to_end(&mut out).await,
        "deflate" => ZlibEncoder::new(bytes).read_to_end(&mut out).await,
        "br" => BrotliEncoder::new(bytes).read_to_end(&mut out).await,
        "zstd" => ZstdEncoder::new(bytes).read_to_end(&mut out).await,
        other => panic!("no encoder for {other}"),
    };
    read.expect("encoding in memory");
    out
}

/// `bytes` decoded from `coding`.
pub async fn decode(coding: &str, bytes: &[u8]) -> Vec<u8> {
    use async_compression::tokio::bufread::{BrotliDecoder, GzipDecoder, ZlibDecoder, ZstdDecoder};
    let mut out = Vec::new();
    let read = match coding {
        "gzip" => GzipDecoder::new(bytes).read_to_end(&mut out).await,
        "deflate" => ZlibDecoder::new(bytes).read_to_end(&mut out).await,
        "br" => BrotliDecoder::new(bytes).read_to_end(&mut out).await,
        "zstd" => ZstdDecoder::new(bytes).read_to_end(&mut out).await,
        other => panic!("no decoder for {other}"),
    };
    read.expect("decoding in memory");
    out
}
