//! Helpers of the black-box auth and rate-limit tests: test keys and tokens ([`keys`]), a
//! tiny upstream answering 200, a real `redis-server` on a free port, gateways in this process
//! or as child processes.
//!
//! `redis-server` missing is a failure, not a skip: CI must install it.

#![allow(dead_code)]

pub mod browser;
pub mod keys;
pub mod tools;

use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener as StdListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use pipeline_gateway::config::Config;
use pipeline_gateway::Gateway;
use tokio::net::TcpListener;

/// Starts an upstream on a free port that answers every request with 200 and a JSON body
/// (`/v0/config` gets a minimal server configuration, everything else `[]`).
pub async fn start_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let service = service_fn(
                    |request: http::Request<hyper::body::Incoming>| async move {
                        let body = if request.uri().path() == "/v0/config" {
                            r#"{"version":"0.0.0","edition":"Open source","telemetry":"","revision":"test"}"#
                        } else {
                            "[]"
                        };
                        Ok::<_, Infallible>(
                            http::Response::builder()
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from_static(body.as_bytes())))
                                .unwrap(),
                        )
                    },
                );
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// The configuration text of a gateway in front of `upstream`, plus `extra` TOML.
pub fn config_text(listen: &str, upstream: SocketAddr, extra: &str) -> String {
    format!(
        r#"
[server]
listen = "{listen}"

[auth]
mode = "off"

[[upstreams]]
name = "manager"
endpoints = ["http://{upstream}"]

[[routes]]
default = true
upstream = "manager"

[[routes]]
pipelines = ["*"]
upstream = "manager"

{extra}
"#
    )
}

/// A gateway in this process.
pub async fn start_gateway(upstream: SocketAddr, extra: &str) -> Gateway {
    let config = Config::from_toml(&config_text("127.0.0.1:0", upstream, extra)).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    Gateway::start_on(listener, config).await.unwrap()
}

fn free_port() -> u16 {
    let listener = StdListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A `redis-server` child process without persistence; killed on drop.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts one on a free port (retrying on a port taken meanwhile). Panics when
    /// `redis-server` is not installed.
    pub fn start() -> RedisServer {
        for _ in 0..5 {
            let port = free_port();
            if let Some(server) = Self::start_on(port) {
                return server;
            }
        }
        panic!("could not start redis-server on a free port after 5 tries");
    }

    /// Starts one on `port`; `None` when it exits at once (port taken) or never answers.
    pub fn start_on(port: u16) -> Option<RedisServer> {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "redis-server is required for these tests (apt-get install redis-server): {e}"
                )
            });
        let mut server = RedisServer {
            port,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(child) = server.child.as_mut() {
                if let Ok(Some(_)) = child.try_wait() {
                    return None;
                }
            }
            if server.ping() {
                return Some(server);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn ping(&self) -> bool {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
            .is_ok()
    }

    /// Kills the server (SIGKILL) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The built gateway binary, running `--config <file>`; killed on drop.
pub struct GatewayProcess {
    pub addr: SocketAddr,
    child: Child,
    _config: tempfile::NamedTempFile,
}

impl GatewayProcess {
    pub fn start(config_text: &str) -> GatewayProcess {
        let mut config = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut config, config_text.as_bytes()).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_pipeline-gateway"))
            .args(["--log-format", "json", "--config"])
            .arg(config.path())
            .arg("run")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("gateway exited before listening")
                .unwrap();
            if let Some(rest) = line.split("\"local_addr\":\"").nth(1) {
                break rest.split('"').next().unwrap().parse().unwrap();
            }
        };
        // Keep draining its log so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        GatewayProcess {
            addr,
            child,
            _config: config,
        }
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One plain HTTP/1.1 GET; returns the status and headers.
pub async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> http::Response<Bytes> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut builder = http::Request::builder()
        .uri(path)
        .header("host", addr.to_string());
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder.body(http_body_util::Empty::<Bytes>::new()).unwrap();
    let response = sender.send_request(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let bytes = http_body_util::BodyExt::collect(body)
        .await
        .unwrap()
        .to_bytes();
    http::Response::from_parts(parts, bytes)
}
