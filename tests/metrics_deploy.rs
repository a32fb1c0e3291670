//! The checked-in monitoring files stay true to the gateway: `deploy/grafana/pipeline-gateway.json`
//! parses as a dashboard and every metric its queries use exists in a live `/metrics`;
//! `deploy/prometheus/alerts.yml` passes `promtool check rules` and names only metrics that
//! exist too.
//!
//! Known pending: `pipeline_gateway_tls_handshakes_total` and
//! `pipeline_gateway_tls_cert_expiry_seconds` are registered by the TLS listener (another
//! piece of work); until it lands they may be absent from `/metrics`, and only they.
//!
//! Without `promtool` (Debian package `prometheus`) the rules check skips loudly; under
//! `PIPELINE_GATEWAY_REQUIRE_TOOLS=1` (set by `.ci/run`, which installs it) it fails.

pub mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use serde_json::Value;
use support::keys::{key_sources, TestKey};
use support::{closed_port, config_for, gateway, get, standin};

/// Metrics other work registers; allowed to be missing until it lands.
const PENDING: [&str; 2] = [
    "pipeline_gateway_tls_handshakes_total",
    "pipeline_gateway_tls_cert_expiry_seconds",
];

fn repo_file(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// Every `pipeline_gateway_…` name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("pipeline_gateway_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

/// The sample names a `/metrics` text can have: every family's (`# TYPE`) with the suffixes
/// of its type, so a family without series yet still counts.
fn exposed(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                "info" => &["_info"],
                _ => &[""],
            };
            for suffix in suffixes {
                names.insert(format!("{name}{suffix}"));
            }
        } else if !line.starts_with('#') {
            if let Some(name) = line.split(['{', ' ']).next() {
                names.insert(name.to_owned());
            }
        }
    }
    names
}

/// A live gateway's `/metrics`, with a JWT issuer and rate limits in a Redis (that is not
/// there: a closed port, so decisions fall back to `local`) configured so that every family
/// is there.
async fn live_metrics() -> BTreeSet<String> {
    let manager = standin("a").await;
    let no_redis = closed_port().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let key = TestKey::es256("k1");
    let extra = format!(
        "[[auth.jwt]]\nissuer = \"https://idp.example/\"\naudiences = [\"feldera-api\"]\nalgorithms = [\"ES256\"]\n{}\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\
         [rate_limit]\nprincipal = {{ rate = \"10/s\", burst = 10 }}\n\
         [rate_limit.redis]\nurl = \"redis://127.0.0.1:{no_redis}\"\non_error = \"local\"\n",
        key_sources(&[&key], dir.path())
    );
    let text = config_for(&manager.url(), "").replace("mode = \"off\"\n", "") + &extra;
    let gw = gateway(&text).await;
    let answer = get(&format!("{}/v0/pipelines", gw.url())).await;
    answer.error(401, "AuthenticationFailed");
    let admin = gw.admin_addr().expect("admin listener");
    let metrics = get(&format!("http://{admin}/metrics")).await.text();
    gw.shutdown().await;
    exposed(&metrics)
}

fn missing(used: &BTreeSet<String>, live: &BTreeSet<String>) -> Vec<String> {
    used.iter()
        .filter(|name| !live.contains(*name) && !PENDING.contains(&name.as_str()))
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_queries_exists() {
    let dashboard: Value = serde_json::from_str(&repo_file("deploy/grafana/pipeline-gateway.json"))
        .expect("the dashboard is JSON");
    assert_eq!(dashboard["uid"], "pipeline-gateway");
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut used = BTreeSet::new();
    for panel in panels {
        let targets = panel["targets"].as_array().expect("every panel queries");
        assert!(!targets.is_empty(), "{}", panel["title"]);
        for target in targets {
            let expr = target["expr"].as_str().expect("a PromQL expr");
            let names = metric_names(expr);
            assert!(!names.is_empty(), "{expr}");
            used.extend(names);
        }
    }
    // The sections the dashboard must have.
    let titles: Vec<&str> = panels.iter().filter_map(|p| p["title"].as_str()).collect();
    for wanted in [
        "Traffic",
        "Errors by error_code",
        "Latency percentiles",
        "Authentication failures",
        "Rate-limited",
        "Upstream endpoints available",
        "Redis fallbacks",
    ] {
        assert!(
            titles.iter().any(|t| t.starts_with(wanted)),
            "{wanted}: {titles:?}"
        );
    }
    let live = live_metrics().await;
    assert_eq!(
        missing(&used, &live),
        Vec::<String>::new(),
        "live: {live:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_alert_rules_pass_promtool_and_name_live_metrics() {
    let rules = repo_file("deploy/prometheus/alerts.yml");
    for alert in [
        "PipelineGatewayHighErrorRatio",
        "PipelineGatewayUpstreamAllDown",
        "PipelineGatewayJwksStale",
        "PipelineGatewayCertificateExpiring",
        "PipelineGatewayReloadFailing",
    ] {
        assert!(rules.contains(&format!("alert: {alert}")), "{alert}");
    }
    let live = live_metrics().await;
    assert_eq!(
        missing(&metric_names(&rules), &live),
        Vec::<String>::new(),
        "live: {live:?}"
    );
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus/alerts.yml");
    match Command::new("promtool")
        .arg("check")
        .arg("rules")
        .arg(&path)
        .output()
    {
        Ok(output) => assert!(
            output.status.success(),
            "promtool check rules:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
        Err(error) => {
            assert!(
                std::env::var_os("PIPELINE_GATEWAY_REQUIRE_TOOLS").is_none(),
                "promtool is required here: {error}"
            );
            eprintln!(
                "SKIPPED: promtool check rules ({error}); install the Debian package `prometheus`"
            );
        }
    }
}

#[test]
fn metric_names_are_found_in_promql() {
    let names = metric_names(
        "sum by (le) (rate(pipeline_gateway_request_duration_seconds_bucket{a=\"b\"}[5m])) / pipeline_gateway_x",
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        [
            "pipeline_gateway_request_duration_seconds_bucket",
            "pipeline_gateway_x"
        ]
    );
}
