//! The built gateway binary as a child process (`pipeline-gateway --config <file> run`), for
//! tests that must rule out sharing memory between two gateways.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

/// The built gateway binary, running `--config <file>`; killed on drop.
pub struct GatewayProcess {
    pub addr: SocketAddr,
    child: Child,
    _config: tempfile::NamedTempFile,
}

impl GatewayProcess {
    /// Writes `config_text` to a temporary file, starts the binary on it with JSON logs, and
    /// returns once the log says where it listens.
    pub fn start(config_text: &str) -> GatewayProcess {
        let mut config = tempfile::NamedTempFile::new().expect("temporary file");
        config
            .write_all(config_text.as_bytes())
            .expect("write configuration");
        let mut child = Command::new(env!("CARGO_BIN_EXE_pipeline-gateway"))
            .args(["--log-format", "json", "--config"])
            .arg(config.path())
            .arg("run")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the gateway binary");
        let stderr = child.stderr.take().expect("piped stderr");
        let mut lines = BufReader::new(stderr).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("gateway exited before listening")
                .expect("read the gateway's log");
            if let Some(rest) = line.split("\"local_addr\":\"").nth(1) {
                let addr = rest.split('"').next().unwrap_or_default();
                break addr.parse().expect("local_addr is an address");
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
