//! A real `redis-server` child process on a free port, without persistence, killed on drop.
//!
//! `redis-server` missing is a failure, not a skip: CI must install it. Standalone (it uses
//! nothing else of `support`), so `benches/ratelimit.rs` includes just this file. Clusters and
//! Sentinels (`redis_cluster`, `redis_sentinel`) are made of these processes.

use std::ffi::OsString;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` child process without persistence; killed on drop.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts one on a free port (retrying on a port taken meanwhile). Panics when
    /// `redis-server` is not installed.
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    /// [`RedisServer::start`] with more command-line options (`["--replicaof", …]`).
    pub fn start_with(options: &[&str]) -> RedisServer {
        for _ in 0..5 {
            if let Some(server) = Self::launch(free_port(), &[], options) {
                return server;
            }
        }
        panic!("could not start redis-server on a free port after 5 tries");
    }

    /// Starts one on `port`; `None` when it exits at once (port taken) or does not answer
    /// `PING` within 10 s.
    pub fn start_on(port: u16) -> Option<RedisServer> {
        Self::launch(port, &[], &[])
    }

    /// `redis-server [leading…] --port <port> --bind 127.0.0.1 --save "" --appendonly no
    /// [options…]` (`leading`: a configuration file, which must come first); `None` when it
    /// exits at once or does not answer `PING` within 10 s.
    pub fn launch(port: u16, leading: &[OsString], options: &[&str]) -> Option<RedisServer> {
        let child = Command::new("redis-server")
            .args(leading)
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
            .args(options)
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
        self.query::<String>(&redis::cmd("PING")).is_ok()
    }

    /// Sends one command to this server (a fresh connection, 2 s timeouts).
    pub fn query<T: redis::FromRedisValue>(&self, command: &redis::Cmd) -> redis::RedisResult<T> {
        let mut connection = redis::Client::open(self.url())?
            .get_connection_with_timeout(Duration::from_millis(200))?;
        connection.set_read_timeout(Some(Duration::from_secs(2)))?;
        command.query(&mut connection)
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

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("local address").port()
}
