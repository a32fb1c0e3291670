//! The stand-in manager as a child process (`pipeline-gateway stand-in`), for tests that must
//! take a manager away the way an operating system does: [`StandinProcess::kill`] sends
//! SIGKILL, so every socket it holds is closed by the kernel, mid-request, with nothing said
//! (an in-process stand-in can only shut down politely).
//!
//! It is the built binary's own `stand-in` command on `127.0.0.1:0`; the address is read from
//! the line it prints on stdout. Faults ([`feldera_standin::Fault`]) cannot be set on it: use
//! an in-process [`super::standin`] for those.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

/// What the stand-in prints once it listens, before its URL.
const LISTENING: &str = "stand-in pipeline manager listening on http://";

/// A stand-in child process; killed (SIGKILL) on drop.
pub struct StandinProcess {
    pub addr: SocketAddr,
    child: Option<Child>,
}

impl StandinProcess {
    /// Starts one answering `x-standin-instance: <instance>`, with `seeds` (`NAME[:STATUS]`,
    /// as `--seed` takes them) and 20 ms lifecycle transitions; returns once it listens.
    pub fn start(instance: &str, seeds: &[&str]) -> StandinProcess {
        let mut command = Command::new(env!("CARGO_BIN_EXE_pipeline-gateway"));
        command.args([
            "stand-in",
            "--listen",
            "127.0.0.1:0",
            "--instance",
            instance,
            "--lifecycle-delay",
            "20ms",
        ]);
        for seed in seeds {
            command.args(["--seed", seed]);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the stand-in binary");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("the stand-in exited before listening")
                .expect("read the stand-in's output");
            if let Some(rest) = line.strip_prefix(LISTENING) {
                break rest
                    .trim()
                    .parse()
                    .expect("the stand-in prints its address");
            }
        };
        // Keep reading its output so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        StandinProcess {
            addr,
            child: Some(child),
        }
    }

    /// `http://IP:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Kills it with SIGKILL and waits until it is gone (its sockets closed by the kernel).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for StandinProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
