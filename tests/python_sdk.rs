//! Feldera's own Python SDK as a client of the gateway (tests/e2e/sdk_client.py).
//!
//! Runs when `python3 -c "import feldera"` works. Otherwise it says clearly that it skips —
//! unless `PIPELINE_GATEWAY_REQUIRE_SDK=1` (set by `.ci/run`), which turns the skip into a
//! failure.

mod common;

use std::process::Command;

use common::*;
use pipeline_gateway::standin::{SeedPipeline, SeedStatus};

fn sdk_available() -> bool {
    let importable = Command::new("python3")
        .args(["-c", "import feldera"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !importable {
        if std::env::var("PIPELINE_GATEWAY_REQUIRE_SDK").as_deref() == Ok("1") {
            panic!(
                "PIPELINE_GATEWAY_REQUIRE_SDK=1 but the feldera SDK is not importable: \
                 pip install -r tests/e2e/requirements.txt"
            );
        }
        eprintln!(
            "SKIPPED: Feldera's Python SDK is not installed \
             (pip install -r tests/e2e/requirements.txt)"
        );
    }
    importable
}

/// Runs the SDK script against `url` and asserts that every selected check passed.
pub fn run_sdk(url: &str, api_key: Option<&str>, checks: &str) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/sdk_client.py");
    let mut command = Command::new("python3");
    command
        .arg(script)
        .env("FELDERA_HOST", url)
        .env("SDK_CHECKS", checks)
        .env_remove("FELDERA_API_KEY");
    if let Some(key) = api_key {
        command.env("FELDERA_API_KEY", key);
    }
    let output = command.output().expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("{stdout}{stderr}");
    assert!(
        output.status.success(),
        "SDK checks failed:\n{stdout}\n{stderr}"
    );
    assert!(!stdout.contains("FAIL"), "{stdout}");
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
}

fn with_fresh_pipeline() -> pipeline_gateway::standin::StandinOptions {
    let mut options = seeded();
    options.seed.push(SeedPipeline {
        name: "fresh".into(),
        status: SeedStatus::Stopped,
    });
    options
}

#[tokio::test(flavor = "multi_thread")]
async fn sdk_activates_a_standby_pipeline_and_sees_name_errors_through_the_gateway() {
    if !sdk_available() {
        return;
    }
    let upstream = standin_with(with_fresh_pipeline()).await;
    let gw = gateway(&config_for(&upstream.url(), "")).await;
    let url = gw.url();
    tokio::task::spawn_blocking(move || {
        run_sdk(
            &url,
            None,
            "standby_pipeline_activates_to_running,bad_name_is_rejected_with_feldera_error",
        )
    })
    .await
    .expect("SDK run");
    let seen: Vec<String> = upstream
        .requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.uri))
        .collect();
    assert!(
        seen.iter()
            .any(|r| r == "POST /v0/pipelines/fresh/activate"),
        "{seen:?}"
    );
    assert!(
        !seen.iter().any(|r| r.contains("-bad-")),
        "the bad name never reached the manager: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sdk_backs_off_on_429_and_then_succeeds() {
    if !sdk_available() {
        return;
    }
    let upstream = standin("a").await;
    let gw = gateway(&config_for(
        &upstream.url(),
        "[admin]\nlisten = \"127.0.0.1:0\"\n[rate_limit]\nprincipal = { rate = \"1/s\", burst = 1 }\n",
    ))
    .await;
    let url = gw.url();
    tokio::task::spawn_blocking(move || run_sdk(&url, None, "backs_off_on_429_and_then_succeeds"))
        .await
        .expect("SDK run");
    let admin = gw.admin_addr().expect("admin listener");
    let metrics = get(&format!("http://{admin}/metrics")).await.text();
    let rejected: u64 = metrics
        .lines()
        .filter(|l| {
            l.starts_with("pipeline_gateway_requests_total") && l.contains("status=\"429\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(
        rejected >= 2,
        "the SDK met 429s and retried: {rejected}\n{metrics}"
    );
}
