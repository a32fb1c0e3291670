//! Feldera's own CLI, `fda` (crate `fda`, version 0.349.0), as a client of the gateway.
//!
//! Each test starts a seeded stand-in manager and a gateway in front of it with auth off, and
//! runs the real `fda` binary against the gateway only: `fda` attaches credentials only to
//! `https://` hosts, so the authenticated case runs against the gateway's TLS listener
//! (`--tls-cert` with the test CA, `--auth apikey:…`: the key is sent and checked). Every
//! `fda` run is killed after [`FDA_DEADLINE`], so a hang fails the test instead of hanging CI.
//! Assertions cover the exit status, what `fda` prints, and what the stand-in received.
//!
//! `fda` is found by `support::tools::fda()`: without it the tests skip loudly, and with
//! `PIPELINE_GATEWAY_REQUIRE_TOOLS=1` (set by `.ci/run`) they fail.

pub mod support;

use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use feldera_standin::{SeedPipeline, SeedStatus, Standin, StandinOptions};
use pipeline_gateway::Gateway;
use support::*;
use tokio::io::AsyncWriteExt;

/// How long one `fda` command may take before it is killed and the test fails.
const FDA_DEADLINE: Duration = Duration::from_secs(60);

const PROGRAM: &str = "CREATE TABLE orders_in (id BIGINT NOT NULL, amount DECIMAL(10, 2));\n\
                       CREATE MATERIALIZED VIEW totals AS SELECT SUM(amount) AS total FROM orders_in;\n";

/// `fda` pointed at one host, with none of the caller's `FELDERA_*` settings.
struct Fda {
    program: PathBuf,
    host: String,
    /// Global options before the command (`--tls-cert …`, `--auth …`).
    options: Vec<String>,
}

/// What one `fda` run did.
struct FdaRun {
    command: String,
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl FdaRun {
    /// Asserts exit 0 and returns stdout.
    #[track_caller]
    fn success(&self) -> &str {
        assert!(self.status.success(), "{self}");
        &self.stdout
    }

    /// Asserts a non-zero exit and returns stderr.
    #[track_caller]
    fn failure(&self) -> &str {
        assert!(!self.status.success(), "expected a failure: {self}");
        &self.stderr
    }
}

impl std::fmt::Display for FdaRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` exited with {}\n--- stdout\n{}\n--- stderr\n{}",
            self.command, self.status, self.stdout, self.stderr
        )
    }
}

impl Fda {
    /// `None` when `fda` is not installed (and tools are not required).
    fn at(host: &str) -> Option<Fda> {
        Fda::with_options(host, &[])
    }

    /// `fda --host <host> <options…>`.
    fn with_options(host: &str, options: &[&str]) -> Option<Fda> {
        Some(Fda {
            program: support::tools::fda()?,
            host: host.to_owned(),
            options: options.iter().map(|o| o.to_string()).collect(),
        })
    }

    async fn run(&self, args: &[&str]) -> FdaRun {
        self.run_with_stdin(args, None).await
    }

    /// Runs `fda --host <host> <args>`, feeding `stdin` if given (else an empty stdin, so a
    /// prompt could never wait for a terminal), and kills it after [`FDA_DEADLINE`].
    async fn run_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> FdaRun {
        let command = format!(
            "fda --host {} {} {}",
            self.host,
            self.options.join(" "),
            args.join(" ")
        );
        let mut process = tokio::process::Command::new(&self.program);
        process
            .arg("--host")
            .arg(&self.host)
            .args(&self.options)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("FELDERA_") {
                process.env_remove(name);
            }
        }
        let mut child = process
            .spawn()
            .unwrap_or_else(|e| panic!("`{command}` could not start: {e}"));
        let mut input = child.stdin.take().expect("piped stdin");
        if let Some(text) = stdin {
            input
                .write_all(text.as_bytes())
                .await
                .expect("write fda's stdin");
        }
        drop(input);
        // On the deadline the future is dropped, and with it the child: `kill_on_drop` kills it.
        let output = tokio::time::timeout(FDA_DEADLINE, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("`{command}` did not finish within {FDA_DEADLINE:?}"))
            .unwrap_or_else(|e| panic!("`{command}`: {e}"));
        let run = FdaRun {
            command,
            status: output.status,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        };
        eprintln!("{run}");
        run
    }
}

/// The rows of a table `fda` printed in text format (`│ a │ b │` or `| a | b |`), each as its
/// trimmed cells; border and separator lines are left out.
fn table_rows(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .map(str::trim)
        .filter(|line| line.starts_with('│') || line.starts_with('|'))
        .map(|line| {
            line.split(['│', '|'])
                .map(str::trim)
                .filter(|cell| !cell.is_empty())
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter(|cells| !cells.is_empty())
        .collect()
}

/// The value in the row whose first cell is `key` (`fda status` prints one field a row).
#[track_caller]
fn field<'a>(rows: &'a [Vec<String>], key: &str) -> &'a str {
    rows.iter()
        .find(|row| row.first().is_some_and(|k| k == key))
        .and_then(|row| row.get(1))
        .unwrap_or_else(|| panic!("no row {key:?} in {rows:?}"))
}

/// `METHOD path?query` of every request the stand-in received.
fn seen(upstream: &Standin) -> Vec<String> {
    let seen: Vec<String> = upstream
        .requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.uri))
        .collect();
    eprintln!("the stand-in received: {seen:#?}");
    seen
}

/// The seeded stand-in plus `old`, a stopped pipeline, behind a gateway with auth off.
async fn gateway_and_standin() -> (Gateway, Standin) {
    let mut options: StandinOptions = seeded();
    options.seed.push(SeedPipeline {
        name: "old".into(),
        status: SeedStatus::Stopped,
    });
    let upstream = standin_with(options).await;
    let gw = gateway(&config_for(&upstream.url(), "")).await;
    (gw, upstream)
}

#[tokio::test(flavor = "multi_thread")]
async fn fda_lists_the_managers_pipelines_with_their_status() {
    let (gw, upstream) = gateway_and_standin().await;
    let Some(fda) = Fda::at(&gw.url()) else {
        return;
    };

    let run = fda.run(&["pipelines"]).await;
    let rows = table_rows(run.success());
    assert_eq!(rows[0], ["name", "status"], "header row: {run}");
    let mut listed: Vec<(&str, &str)> = rows[1..]
        .iter()
        .map(|row| (row[0].as_str(), row[1].as_str()))
        .collect();
    listed.sort_unstable();
    assert_eq!(
        listed,
        [
            ("billing", "Standby"),
            ("live", "Running"),
            ("old", "Stopped"),
            ("orders", "Standby"),
            ("prod-eu", "Standby"),
        ],
        "{run}"
    );
    assert_eq!(seen(&upstream), ["GET /v0/pipelines"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn fda_creates_a_pipeline_from_a_file_and_from_stdin_and_reads_the_program_back() {
    let (gw, upstream) = gateway_and_standin().await;
    let Some(fda) = Fda::at(&gw.url()) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let sql = dir.path().join("program.sql");
    std::fs::write(&sql, PROGRAM).expect("write program.sql");

    let run = fda
        .run(&["create", "fresh", sql.to_str().expect("UTF-8 path")])
        .await;
    assert_eq!(run.success().trim(), "Pipeline created successfully.");
    let run = fda
        .run_with_stdin(&["create", "piped", "--stdin"], Some(PROGRAM))
        .await;
    assert_eq!(run.success().trim(), "Pipeline created successfully.");

    for name in ["fresh", "piped"] {
        let run = fda.run(&["program", "get", name]).await;
        assert_eq!(run.success().trim(), PROGRAM.trim(), "program of {name}");
        let run = fda.run(&["status", name]).await;
        let rows = table_rows(run.success());
        assert_eq!(field(&rows, "deployment_status"), "Stopped", "{run}");
        assert_eq!(
            field(&rows, "deployment_desired_status"),
            "Stopped",
            "{run}"
        );
    }

    // A second create under the same name: the manager's 409 DuplicateName, in its words.
    let run = fda
        .run(&["create", "fresh", sql.to_str().expect("UTF-8 path")])
        .await;
    assert!(
        run.failure()
            .contains("An entity with this name already exists"),
        "{run}"
    );

    assert_eq!(
        seen(&upstream),
        [
            "POST /v0/pipelines",
            "POST /v0/pipelines",
            "GET /v0/pipelines/fresh",
            "GET /v0/pipelines/fresh?selector=status",
            "GET /v0/pipelines/piped",
            "GET /v0/pipelines/piped?selector=status",
            "POST /v0/pipelines",
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn fda_status_of_a_missing_pipeline_prints_unknown_pipeline_name_and_fails() {
    let (gw, upstream) = gateway_and_standin().await;
    let Some(fda) = Fda::at(&gw.url()) else {
        return;
    };

    let run = fda.run(&["status", "nope"]).await;
    assert_eq!(run.status.code(), Some(1), "{run}");
    assert_eq!(
        run.failure().trim(),
        "Unknown pipeline name 'nope'",
        "{run}"
    );
    assert_eq!(run.stdout, "", "{run}");
    // The manager's own 404 reached fda.
    assert_eq!(seen(&upstream), ["GET /v0/pipelines/nope?selector=status"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn fda_status_shows_a_running_pipeline() {
    let (gw, upstream) = gateway_and_standin().await;
    let Some(fda) = Fda::at(&gw.url()) else {
        return;
    };

    let run = fda.run(&["status", "live"]).await;
    let rows = table_rows(run.success());
    assert_eq!(field(&rows, "deployment_status"), "Running", "{run}");
    assert_eq!(
        field(&rows, "deployment_desired_status"),
        "Running",
        "{run}"
    );
    assert_eq!(field(&rows, "program_status"), "Success", "{run}");
    assert_eq!(seen(&upstream), ["GET /v0/pipelines/live?selector=status"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn fda_sees_the_gateways_name_refusal_and_the_manager_never_does() {
    let (gw, upstream) = gateway_and_standin().await;
    let Some(fda) = Fda::at(&gw.url()) else {
        return;
    };

    let run = fda.run(&["status", "bad.name"]).await;
    assert_eq!(run.status.code(), Some(1), "{run}");
    assert!(
        run.failure()
            .contains("Name 'bad.name' should be non-empty and only contain"),
        "the manager's create-time message, from the gateway: {run}"
    );
    assert_eq!(
        seen(&upstream),
        Vec::<String>::new(),
        "the bad name never reached the manager"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn fda_deletes_stopped_pipelines_without_a_prompt_and_not_a_running_one() {
    let (gw, upstream) = gateway_and_standin().await;
    let Some(fda) = Fda::at(&gw.url()) else {
        return;
    };

    let run = fda.run(&["create", "fresh"]).await;
    assert_eq!(run.success().trim(), "Pipeline created successfully.");
    for name in ["fresh", "old"] {
        let run = fda.run(&["delete", name]).await;
        assert_eq!(run.success().trim(), "Pipeline deleted successfully.");
        let run = fda.run(&["status", name]).await;
        assert_eq!(
            run.failure().trim(),
            format!("Unknown pipeline name '{name}'"),
            "{name} is gone"
        );
    }

    // The manager refuses to delete a running pipeline; fda says why and fails.
    let run = fda.run(&["delete", "live"]).await;
    assert_eq!(run.status.code(), Some(1), "{run}");
    assert!(
        run.failure()
            .contains("Cannot delete a pipeline which is not fully stopped"),
        "{run}"
    );
    let run = fda.run(&["status", "live"]).await;
    assert_eq!(
        field(&table_rows(run.success()), "deployment_status"),
        "Running"
    );

    assert_eq!(
        seen(&upstream),
        [
            "POST /v0/pipelines",
            "DELETE /v0/pipelines/fresh",
            "GET /v0/pipelines/fresh?selector=status",
            "DELETE /v0/pipelines/old",
            "GET /v0/pipelines/old?selector=status",
            "DELETE /v0/pipelines/live",
            "GET /v0/pipelines/live?selector=status",
        ]
    );
}

/// The seeded stand-in (plus `old`, stopped) behind a gateway on TLS with authentication on
/// and one API key (`ci`, role `write`); the CA file to trust.
async fn tls_gateway_and_standin(dir: &std::path::Path, key: &str) -> (Gateway, Standin, PathBuf) {
    let mut options: StandinOptions = seeded();
    options.seed.push(SeedPipeline {
        name: "old".into(),
        status: SeedStatus::Stopped,
    });
    let upstream = standin_with(options).await;
    let ca = support::pki::TestCa::new("fda test CA");
    let pair = ca.server(&["localhost", "127.0.0.1"], 1);
    let ca_path = support::pki::write(dir, "ca.pem", &ca.cert_pem);
    let cert = support::pki::write(dir, "cert.pem", &pair.cert_pem);
    let key_path = support::pki::write(dir, "key.pem", &pair.key_pem);
    let toml = format!(
        r#"
[server]
listen = "127.0.0.1:0"
[server.tls]
cert = "{cert}"
key = "{key_path}"
[[upstreams]]
name = "primary"
endpoints = ["{url}"]
[[routes]]
pipelines = ["*"]
upstream = "primary"
default = true
[[auth.api_keys]]
name = "ci"
sha256 = "{hash}"
role = "write"
"#,
        cert = cert.display(),
        key_path = key_path.display(),
        url = upstream.url(),
        hash = pipeline_gateway::auth::apikey::hash(key),
    );
    (gateway(&toml).await, upstream, ca_path)
}

/// A well-formed API key made of `c`.
fn api_key(c: char) -> String {
    format!("apikey:{}", c.to_string().repeat(128))
}

#[tokio::test(flavor = "multi_thread")]
async fn fda_over_https_sends_its_api_key_and_lists_shows_and_starts_pipelines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = api_key('k');
    let (gw, upstream, ca) = tls_gateway_and_standin(dir.path(), &key).await;
    let host = format!("https://localhost:{}", gw.local_addr().port());
    let ca = ca.to_str().expect("UTF-8 path").to_owned();
    let auth = format!("--auth={key}");
    let Some(fda) = Fda::with_options(&host, &["--tls-cert", &ca, &auth]) else {
        return;
    };

    let run = fda.run(&["pipelines"]).await;
    let rows = table_rows(run.success());
    assert!(
        !run.stderr.contains("not added to the request"),
        "over https fda sends its credentials: {run}"
    );
    assert_eq!(rows[0], ["name", "status"], "{run}");
    assert!(
        rows.iter().any(|r| r[0] == "old" && r[1] == "Stopped"),
        "{run}"
    );

    let run = fda.run(&["status", "live"]).await;
    assert_eq!(
        field(&table_rows(run.success()), "deployment_status"),
        "Running",
        "{run}"
    );

    let run = fda.run(&["start", "old"]).await;
    run.success();
    let running = eventually(Duration::from_secs(30), async || {
        let run = fda.run(&["status", "old"]).await;
        run.status.success() && field(&table_rows(&run.stdout), "deployment_status") == "Running"
    })
    .await;
    assert!(running, "`fda start` took `old` to Running");
    // Every request reached the manager authenticated by the gateway (auth is on: without the
    // key each would have been a 401 that never left the gateway).
    let received = seen(&upstream);
    assert!(
        received.contains(&"GET /v0/pipelines".to_owned()),
        "{received:?}"
    );
    assert!(
        received
            .iter()
            .any(|r| r.starts_with("POST /v0/pipelines/old/start")),
        "{received:?}"
    );

    // A wrong key is sent too, and refused by the gateway: the manager never sees it.
    upstream.clear_requests();
    let wrong = format!("--auth={}", api_key('w'));
    let Some(fda) = Fda::with_options(&host, &["--tls-cert", &ca, &wrong]) else {
        return;
    };
    let run = fda.run(&["pipelines"]).await;
    assert!(run.failure().contains("Unauthorized API key"), "{run}");
    assert_eq!(seen(&upstream), Vec::<String>::new());
}
