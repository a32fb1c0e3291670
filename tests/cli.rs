//! The binary's commands: `check-config` lists every problem with its key path; the shipped
//! configurations are valid; SIGHUP reloads; two processes share one port.

use std::process::Command;

fn gateway() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pipeline-gateway"))
}

#[test]
fn shipped_configurations_are_valid() {
    for file in ["config/gateway.toml", "config/demo.toml"] {
        let path = format!("{}/{file}", env!("CARGO_MANIFEST_DIR"));
        let output = gateway()
            .args(["check-config", "--config", &path])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn check_config_lists_every_problem_with_its_key_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        r#"
[server]
max_header_bytes = 10

[[upstreams]]
name = "primary"
endpoints = ["http://127.0.0.1:1"]
credentials = "replace"
bearer_env = "PIPELINE_GATEWAY_TEST_NEVER_SET"

[[routes]]
pipelines = ["prod-*"]
upstream = "primary"

[[routes]]
pipelines = ["*"]
upstream = "eu"
default = true

[[auth.jwt]]
issuer = "https://idp.example/"
audiences = ["feldera-api"]
algorithms = ["RS256"]
jwks_file = "/nonexistent/jwks.json"
"#,
    )
    .unwrap();
    let output = gateway()
        .args(["check-config", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("2 problem(s)"), "{stderr}");
    assert!(
        stderr.contains("server.max_header_bytes: 10 is outside 1024..=262144"),
        "{stderr}"
    );
    assert!(
        stderr.contains("routes[1].upstream: unknown upstream \"eu\""),
        "{stderr}"
    );
    // Once the file is consistent, what it names outside itself is read and checked too.
    let fixed = std::fs::read_to_string(&path)
        .unwrap()
        .replace("max_header_bytes = 10", "max_header_bytes = 4096")
        .replace("upstream = \"eu\"", "upstream = \"primary\"");
    std::fs::write(&path, fixed).unwrap();
    let output = gateway()
        .args(["check-config", "--config", path.to_str().unwrap()])
        .env_remove("PIPELINE_GATEWAY_TEST_NEVER_SET")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("2 problem(s)"), "{stderr}");
    assert!(
        stderr.contains(
            "upstreams[0].bearer_env: environment variable PIPELINE_GATEWAY_TEST_NEVER_SET is not set"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("auth.jwt[0].jwks_file: cannot read /nonexistent/jwks.json"),
        "{stderr}"
    );
}

#[test]
fn a_value_that_does_not_parse_is_reported_with_its_key_path_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[[upstreams]]\nname = \"primary\"\nendpoints = [\"ftp://127.0.0.1:1\"]\n",
    )
    .unwrap();
    let output = gateway()
        .args(["check-config", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "upstreams[0].endpoints[0]: \"ftp://127.0.0.1:1\": the scheme must be http or https (line 3,"
        ),
        "{stderr}"
    );
}

#[test]
fn unknown_keys_and_syntax_errors_are_reported_with_their_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("typo.toml");
    std::fs::write(&path, "[server]\nlisten = \"127.0.0.1:0\"\nmax_body = 1\n").unwrap();
    let output = gateway()
        .args(["check-config", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unknown field `max_body`"), "{stderr}");
    assert!(stderr.contains("line 3"), "{stderr}");
}

#[test]
fn sighup_reloads_the_configuration_file_and_a_broken_one_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    let config = |tag: &str| {
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
             [[upstreams]]\nname = \"{tag}\"\nendpoints = [\"http://127.0.0.1:9\"]\n\
             [[routes]]\nupstream = \"{tag}\"\ndefault = true\n[auth]\nmode = \"off\"\n"
        )
    };
    std::fs::write(&path, config("first")).unwrap();
    let gateway = Running::start(&path);
    let pid = gateway.child.id() as i32;
    gateway.wait_for("pipeline-gateway listening");
    std::fs::write(&path, config("second")).unwrap();
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(pid, libc::SIGHUP) };
    gateway.wait_for("configuration reloaded");
    std::fs::write(&path, "not toml").unwrap();
    unsafe { libc::kill(pid, libc::SIGHUP) };
    let refusal = gateway.wait_for("configuration not reloaded");
    assert!(refusal.contains("line 1"), "{refusal}");
    gateway.stop();
}

/// A gateway process with its JSON log lines on a channel.
struct Running {
    child: std::process::Child,
    logged: std::sync::mpsc::Receiver<String>,
}

impl Running {
    fn start(config: &std::path::Path) -> Running {
        use std::io::{BufRead, BufReader};
        let mut child = gateway()
            .args(["--log-format", "json", "run", "--config"])
            .arg(config)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let (sender, logged) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        Running { child, logged }
    }

    fn wait_for(&self, needle: &str) -> String {
        use std::time::{Duration, Instant};
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(line) = self.logged.recv_timeout(Duration::from_millis(100)) {
                if line.contains(needle) {
                    return line;
                }
            }
        }
        let rest: Vec<String> = self.logged.try_iter().collect();
        panic!("the gateway never logged {needle:?}; then: {rest:?}");
    }

    fn stop(mut self) {
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        assert!(status.success(), "{status:?}");
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The upstream name in a 502 from a gateway whose only upstream is a closed port: which
/// process answered.
fn answered_by(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .write_all(b"GET /v0/pipelines HTTP/1.1\r\nhost: gw\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 502 "), "{answer}");
    let body = &answer[answer.find("\r\n\r\n").unwrap() + 4..];
    let json: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(json["error_code"], "UpstreamUnavailable", "{json}");
    json["details"]["upstream"].as_str().unwrap().to_string()
}

/// Two gateway processes on one port (SO_REUSEPORT): the second starts instead of failing
/// with EADDRINUSE, the kernel spreads new connections over both, and when one stops the
/// other takes every connection.
#[test]
fn two_processes_share_one_port() {
    let dir = tempfile::tempdir().unwrap();
    let config = |tag: &str, listen: &str| {
        format!(
            "[server]\nlisten = \"{listen}\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
             [[upstreams]]\nname = \"{tag}\"\nendpoints = [\"http://127.0.0.1:9\"]\n\
             [[routes]]\nupstream = \"{tag}\"\ndefault = true\n[auth]\nmode = \"off\"\n"
        )
    };
    let first_path = dir.path().join("first.toml");
    std::fs::write(&first_path, config("first", "127.0.0.1:0")).unwrap();
    let first = Running::start(&first_path);
    let line = first.wait_for("pipeline-gateway listening");
    let line: serde_json::Value = serde_json::from_str(&line).unwrap();
    let addr = line["fields"]["local_addr"]
        .as_str()
        .or(line["local_addr"].as_str())
        .unwrap_or_else(|| panic!("no local_addr in {line}"))
        .to_string();
    let second_path = dir.path().join("second.toml");
    std::fs::write(&second_path, config("second", &addr)).unwrap();
    let second = Running::start(&second_path);
    second.wait_for("pipeline-gateway listening");

    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..64 {
        seen.insert(answered_by(&addr));
        if seen.len() == 2 {
            break;
        }
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        ["first", "second"],
        "both processes take connections on the shared port"
    );
    first.stop();
    for _ in 0..8 {
        assert_eq!(answered_by(&addr), "second");
    }
    second.stop();
}
