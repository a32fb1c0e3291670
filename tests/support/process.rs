//! The built gateway binary as a child process (`pipeline-gateway --config <file> run`), for
//! tests that must rule out sharing memory between two gateways.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

/// The built gateway binary, running `--config <file>`; killed on drop.
pub struct GatewayProcess {
    pub addr: SocketAddr,
    /// Every line it has logged so far (JSON).
    log: Arc<Mutex<Vec<String>>>,
    child: Child,
    _config: tempfile::NamedTempFile,
}

impl GatewayProcess {
    /// Writes `config_text` to a temporary file, starts the binary on it with JSON logs, and
    /// returns once the log says where it listens.
    pub fn start(config_text: &str) -> GatewayProcess {
        GatewayProcess::start_with_env(config_text, &[])
    }

    /// [`GatewayProcess::start`] with these environment variables (`RUST_LOG`, …).
    pub fn start_with_env(config_text: &str, env: &[(&str, &str)]) -> GatewayProcess {
        let mut config = tempfile::NamedTempFile::new().expect("temporary file");
        config
            .write_all(config_text.as_bytes())
            .expect("write configuration");
        let mut child = Command::new(env!("CARGO_BIN_EXE_pipeline-gateway"))
            .args(["--log-format", "json", "--config"])
            .arg(config.path())
            .arg("run")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the gateway binary");
        let stderr = child.stderr.take().expect("piped stderr");
        let mut lines = BufReader::new(stderr).lines();
        let log = Arc::new(Mutex::new(Vec::new()));
        let addr = loop {
            let line = lines
                .next()
                .expect("gateway exited before listening")
                .expect("read the gateway's log");
            log.lock().unwrap().push(line.clone());
            if let Some(rest) = line.split("\"local_addr\":\"").nth(1) {
                let addr = rest.split('"').next().unwrap_or_default();
                break addr.parse().expect("local_addr is an address");
            }
        };
        // Keep draining its log (and keeping it) so it never blocks on a full pipe.
        let kept = log.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                kept.lock().unwrap().push(line);
            }
        });
        GatewayProcess {
            addr,
            log,
            child,
            _config: config,
        }
    }

    /// The lines it has logged so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// `http://IP:PORT` of its listener.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
