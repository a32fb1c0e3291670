//! `run --workers N`: per-core runtimes, each accepting on its own `SO_REUSEPORT` listener,
//! all serving one snapshot. The real binary, with the stand-in manager (a child process) as
//! its upstream: the local rate limiter admits exactly its burst across the cores, requests
//! through every worker reach the manager over the shared pool, and SIGTERM drains every
//! worker and ends the process cleanly.

pub mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use support::StandinProcess;

/// A gateway process with `--workers N`; killed on drop.
struct Workers {
    child: Child,
    addr: SocketAddr,
    listening: serde_json::Value,
    _config: tempfile::NamedTempFile,
}

impl Workers {
    fn start(workers: usize, config_text: &str) -> Workers {
        let mut config = tempfile::NamedTempFile::new().unwrap();
        config.write_all(config_text.as_bytes()).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_pipeline-gateway"))
            .args(["--log-format", "json", "--workers", &workers.to_string()])
            .arg("--config")
            .arg(config.path())
            .arg("run")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let listening = loop {
            let line = lines
                .next()
                .expect("the gateway exited before listening")
                .unwrap();
            if line.contains("pipeline-gateway listening") {
                break serde_json::from_str::<serde_json::Value>(&line).unwrap();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        let fields = &listening["fields"];
        let addr = fields["local_addr"].as_str().unwrap().parse().unwrap();
        Workers {
            child,
            addr,
            listening,
            _config: config,
        }
    }

    /// The names of the process's threads (`/proc/PID/task/*/comm`).
    fn thread_names(&self) -> Vec<String> {
        let tasks = format!("/proc/{}/task", self.child.id());
        let mut names: Vec<String> = std::fs::read_dir(tasks)
            .unwrap()
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
            .map(|name| name.trim().to_owned())
            .collect();
        names.sort();
        names
    }

    /// One request on a new connection: (status, JSON body).
    fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let mut stream = std::net::TcpStream::connect(self.addr).unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nhost: gw\r\nconnection: close\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        let status = answer[9..12].parse().unwrap();
        let body = &answer[answer.find("\r\n\r\n").unwrap() + 4..];
        (status, serde_json::from_str(body).unwrap_or_default())
    }

    /// SIGTERM, and the exit status.
    fn stop(mut self) -> std::process::ExitStatus {
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait().unwrap()
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(manager: SocketAddr, extra: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nshutdown_grace = \"2s\"\n\
         [[upstreams]]\nname = \"manager\"\nendpoints = [\"http://{manager}\"]\n\
         [[routes]]\nupstream = \"manager\"\ndefault = true\n[auth]\nmode = \"off\"\n{extra}"
    )
}

#[test]
fn the_local_limiter_admits_exactly_the_burst_across_two_workers() {
    let manager = StandinProcess::start("m0", &["orders"]);
    let gateway = Workers::start(
        2,
        &config(
            manager.addr,
            "[rate_limit]\nclient_ip = { rate = \"1/h\", burst = 12 }\n",
        ),
    );
    assert_eq!(gateway.listening["fields"]["workers"], 2);
    // A thread names itself once it runs: poll with a deadline.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let threads = gateway.thread_names();
        if threads
            .iter()
            .any(|name| name.starts_with("gateway-worker"))
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a second runtime's thread: {threads:?}"
        );
        std::thread::yield_now();
    }
    // Every request on a new connection: the kernel spreads them over both listeners.
    let answers: Vec<(u16, serde_json::Value)> = (0..40)
        .map(|_| gateway.get("/v0/pipelines/orders"))
        .collect();
    let admitted = answers.iter().filter(|(status, _)| *status == 200).count();
    assert_eq!(admitted, 12, "exactly the burst, whichever core took it");
    for (status, body) in answers.iter().filter(|(status, _)| *status != 200) {
        assert_eq!(*status, 429, "{body}");
        assert_eq!(body["error_code"], "RateLimitExceeded", "{body}");
        assert_eq!(body["details"]["policy"], "client_ip", "{body}");
        assert_eq!(body["details"]["limit"], 12, "{body}");
    }
    assert_eq!(
        answers
            .iter()
            .filter(|(status, _)| *status == 200)
            .map(|(_, body)| body["name"].as_str().unwrap_or_default())
            .collect::<Vec<_>>(),
        vec!["orders"; 12],
        "admitted requests reached the manager"
    );
    assert!(gateway.stop().success());
}

#[test]
fn every_worker_proxies_over_the_shared_pool_and_sigterm_drains_them_all() {
    let manager = StandinProcess::start("m0", &["orders"]);
    let gateway = Workers::start(3, &config(manager.addr, ""));
    assert_eq!(gateway.listening["fields"]["workers"], 3);
    for _ in 0..60 {
        let (status, body) = gateway.get("/v0/pipelines/orders");
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["name"], "orders", "{body}");
    }
    // An unknown pipeline is the manager's 404, passed through in Feldera's error shape.
    let (status, body) = gateway.get("/v0/pipelines/missing");
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error_code"], "UnknownPipelineName", "{body}");
    assert!(gateway.stop().success());
}
