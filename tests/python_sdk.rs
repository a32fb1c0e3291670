//! Feldera's own Python SDK as a client of the gateway (tests/e2e/sdk_client.py).
//!
//! Runs when `python3 -c "import feldera"` works. Otherwise it says clearly that it skips —
//! unless `PIPELINE_GATEWAY_REQUIRE_SDK=1` (set by `.ci/run`), which turns the skip into a
//! failure.

pub mod support;

use std::process::Command;

use feldera_standin::{Edition, SeedPipeline, SeedStatus, StandinOptions};
use pipeline_gateway::auth::apikey;
use serde_json::json;
use support::keys::{jwks, TestKey};
use support::*;

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
    run_sdk_trusting(url, api_key, checks, None)
}

/// [`run_sdk`] over https, the SDK trusting the CA in the file `ca` (`requests_verify`).
pub fn run_sdk_trusting(
    url: &str,
    api_key: Option<&str>,
    checks: &str,
    ca: Option<&std::path::Path>,
) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/sdk_client.py");
    let mut command = Command::new("python3");
    command
        .arg(script)
        .env("FELDERA_HOST", url)
        .env("SDK_CHECKS", checks)
        .env_remove("FELDERA_API_KEY")
        .env_remove("FELDERA_CA");
    if let Some(key) = api_key {
        command.env("FELDERA_API_KEY", key);
    }
    if let Some(ca) = ca {
        command.env("FELDERA_CA", ca);
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

fn with_fresh_pipeline() -> feldera_standin::StandinOptions {
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
            l.starts_with("pipeline_gateway_requests_total")
                && l.contains("error_code=\"RateLimitExceeded\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(
        rejected >= 2,
        "the SDK met 429s and retried: {rejected}\n{metrics}"
    );
}

/// The manager behind the gateway wants its own key; clients hold the gateway's keys.
const MANAGER_KEY_ENV: &str = "PIPELINE_GATEWAY_TEST_MANAGER_KEY";

fn alnum_key(seed: u8) -> String {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let body: String = (0..128usize)
        .map(|i| alphabet[(i * 7 + seed as usize) % alphabet.len()] as char)
        .collect();
    format!("apikey:{body}")
}

/// A gateway with auth on (an API key `sdk` and a JWT issuer) in front of a stand-in that
/// itself requires the manager's key, which the gateway substitutes (`credentials =
/// "replace"`).
async fn authenticated_pair(
    dir: &std::path::Path,
    client_key: &str,
    signer: &TestKey,
) -> (pipeline_gateway::Gateway, feldera_standin::Standin) {
    authenticated_pair_with(dir, client_key, signer, Edition::Enterprise).await
}

async fn authenticated_pair_with(
    dir: &std::path::Path,
    client_key: &str,
    signer: &TestKey,
    edition: Edition,
) -> (pipeline_gateway::Gateway, feldera_standin::Standin) {
    authenticated_pair_tls(dir, client_key, signer, edition, "").await
}

/// [`authenticated_pair_with`] with `tls` (a `[server.tls]` section, or nothing).
async fn authenticated_pair_tls(
    dir: &std::path::Path,
    client_key: &str,
    signer: &TestKey,
    edition: Edition,
    tls: &str,
) -> (pipeline_gateway::Gateway, feldera_standin::Standin) {
    let manager_key = alnum_key(3);
    // SAFETY of the test: the variable is only read by gateways built in this file.
    std::env::set_var(MANAGER_KEY_ENV, &manager_key);
    let upstream = standin_with(StandinOptions {
        require_api_key: Some(manager_key),
        edition,
        ..with_fresh_pipeline()
    })
    .await;
    let jwks_file = dir.join("jwks.json");
    std::fs::write(&jwks_file, jwks(&[signer]).to_string()).expect("write jwks");
    let toml = format!(
        r#"
[server]
listen = "127.0.0.1:0"
{tls}
[[upstreams]]
name = "primary"
endpoints = ["{url}"]
credentials = "replace"
bearer_env = "{MANAGER_KEY_ENV}"

[[routes]]
pipelines = ["*"]
upstream = "primary"
default = true

[[auth.api_keys]]
name = "sdk"
sha256 = "{hash}"
role = "write"

[[auth.jwt]]
issuer = "https://idp.test/"
audiences = ["feldera-api"]
algorithms = ["RS256"]
jwks_file = "{jwks}"
role_claim = "feldera_role"
"#,
        url = upstream.url(),
        hash = apikey::hash(client_key),
        jwks = jwks_file.display(),
    );
    (gateway(&toml).await, upstream)
}

#[tokio::test(flavor = "multi_thread")]
async fn sdk_reaches_running_with_an_api_key_and_with_a_jwt() {
    if !sdk_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let client_key = alnum_key(11);
    let signer = TestKey::rs256("sdk-key-1");
    let (gw, upstream) = authenticated_pair(dir.path(), &client_key, &signer).await;
    let url = gw.url();
    let key = client_key.clone();
    tokio::task::spawn_blocking(move || {
        run_sdk(
            &url,
            Some(&key),
            "standby_pipeline_activates_to_running,bad_name_is_rejected_with_feldera_error",
        )
    })
    .await
    .expect("SDK run with an API key");
    // The manager saw its own key, never the client's.
    let seen = upstream.requests();
    assert!(!seen.is_empty());
    for request in &seen {
        let authorization = request
            .headers
            .get("authorization")
            .map(|v| v.to_str().unwrap_or(""));
        assert_ne!(authorization, Some(format!("Bearer {client_key}").as_str()));
    }

    // The same flow with a JWT (a second pipeline run: reset `fresh` by asking for another
    // gateway and stand-in).
    let (gw, _upstream) = authenticated_pair(dir.path(), &client_key, &signer).await;
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 600;
    let token = signer.token(&json!({
        "iss": "https://idp.test/",
        "aud": "feldera-api",
        "sub": "sdk-user",
        "exp": exp,
        "feldera_role": "write",
    }));
    let url = gw.url();
    tokio::task::spawn_blocking(move || {
        run_sdk(&url, Some(&token), "standby_pipeline_activates_to_running")
    })
    .await
    .expect("SDK run with a JWT");
}

#[tokio::test(flavor = "multi_thread")]
async fn sdk_defaults_see_the_managers_own_error_codes_in_both_editions() {
    if !sdk_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let client_key = alnum_key(11);
    let signer = TestKey::rs256("sdk-key-1");
    let token = signer.token(&json!({
        "iss": "https://idp.test/",
        "aud": "feldera-api",
        "sub": "sdk-user",
        "exp": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs()
            + 600,
        "feldera_role": "write",
    }));
    for edition in [Edition::Enterprise, Edition::Oss] {
        let (gw, upstream) =
            authenticated_pair_with(dir.path(), &client_key, &signer, edition).await;
        let checks = match edition {
            Edition::Oss => {
                "manager_errors_keep_their_codes,activate_is_an_enterprise_feature_on_oss"
            }
            Edition::Enterprise => "manager_errors_keep_their_codes",
        };
        for credential in [client_key.clone(), token.clone()] {
            let url = gw.url();
            tokio::task::spawn_blocking(move || run_sdk(&url, Some(&credential), checks))
                .await
                .expect("SDK run");
        }
        // The SDK asked for compressed answers, and the manager compressed its errors.
        let seen = upstream.requests();
        assert!(
            seen.iter().all(|r| r
                .headers
                .get("accept-encoding")
                .is_some_and(|v| v.to_str().unwrap_or("").contains("gzip"))),
            "every request carried the SDK's Accept-Encoding"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sdk_without_a_credential_sees_authentication_failed() {
    if !sdk_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let signer = TestKey::rs256("sdk-key-1");
    let (gw, upstream) = authenticated_pair(dir.path(), &alnum_key(11), &signer).await;
    let url = gw.url();
    tokio::task::spawn_blocking(move || run_sdk(&url, None, "unauthenticated_is_rejected"))
        .await
        .expect("SDK run");
    assert!(
        upstream.requests().is_empty(),
        "nothing reached the manager"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sdk_over_https_trusts_the_test_ca_with_an_api_key_and_a_jwt() {
    if !sdk_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = support::pki::TestCa::new("sdk test CA");
    let pair = ca.server(&["localhost", "127.0.0.1"], 1);
    let ca_path = support::pki::write(dir.path(), "ca.pem", &ca.cert_pem);
    let cert = support::pki::write(dir.path(), "cert.pem", &pair.cert_pem);
    let key = support::pki::write(dir.path(), "key.pem", &pair.key_pem);
    let tls = format!(
        "[server.tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        cert.display(),
        key.display()
    );
    let client_key = alnum_key(11);
    let signer = TestKey::rs256("sdk-key-1");
    let token = signer.token(&json!({
        "iss": "https://idp.test/",
        "aud": "feldera-api",
        "sub": "sdk-user",
        "exp": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs()
            + 600,
        "feldera_role": "write",
    }));
    for credential in [client_key.clone(), token] {
        // A fresh pair per credential: each run takes `fresh` from Stopped to Running.
        let (gw, _upstream) =
            authenticated_pair_tls(dir.path(), &client_key, &signer, Edition::Enterprise, &tls)
                .await;
        let url = gw.url();
        assert!(url.starts_with("https://"), "{url}");
        let ca = ca_path.clone();
        tokio::task::spawn_blocking(move || {
            run_sdk_trusting(
                &url,
                Some(&credential),
                "standby_pipeline_activates_to_running,bad_name_is_rejected_with_feldera_error",
                Some(&ca),
            )
        })
        .await
        .expect("SDK run over https");
        // Without a credential, over the same https: the gateway's 401.
        let url = gw.url();
        let ca = ca_path.clone();
        tokio::task::spawn_blocking(move || {
            run_sdk_trusting(&url, None, "unauthenticated_is_rejected", Some(&ca))
        })
        .await
        .expect("SDK run without a credential");
    }
}
