//! Talking to a gateway (or any server) as a client: [`send`] and its shorthands with hyper's
//! client, [`raw`] bytes over a plain socket for requests hyper would not build, and the
//! [`Reply`] they all return, read in full, with [`Reply::error`] asserting the gateway's error
//! schema.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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

/// Parses one whole HTTP/1.1 response (a chunked body is de-chunked).
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
