//! The binary's commands: `check-config` lists every problem with its key path; the shipped
//! configurations are valid.

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
    use std::io::{BufRead, BufReader};
    use std::time::{Duration, Instant};

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
    let mut child = gateway()
        .args([
            "--log-format",
            "json",
            "run",
            "--config",
            path.to_str().unwrap(),
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let (sender, logged) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if sender.send(line).is_err() {
                return;
            }
        }
    });
    let wait_for = |needle: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(line) = logged.recv_timeout(Duration::from_millis(100)) {
                if line.contains(needle) {
                    return line;
                }
            }
        }
        let rest: Vec<String> = logged.try_iter().collect();
        panic!("the gateway never logged {needle:?}; then: {rest:?}");
    };
    wait_for("pipeline-gateway listening");
    std::fs::write(&path, config("second")).unwrap();
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(pid, libc::SIGHUP) };
    wait_for("configuration reloaded");
    std::fs::write(&path, "not toml").unwrap();
    unsafe { libc::kill(pid, libc::SIGHUP) };
    let refusal = wait_for("configuration not reloaded");
    assert!(refusal.contains("line 1"), "{refusal}");
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}
