//! TLS toward managers (`[upstreams.tls]`, issue 9 §4): the stand-in served over real TLS
//! with certificates made at test time. A private CA is trusted when named; an untrusted
//! certificate, a wrong name or a missing client certificate is a connect failure — 502
//! `UpstreamUnavailable` whose reason says TLS — retried on another endpoint and counted
//! towards ejection; new CA files take effect on reload, and with `watch_config` by
//! themselves. `check-config` reads and checks every file.

pub mod support;

use std::path::Path;
use std::time::Duration;

use pipeline_gateway::config::{Config, ConfigError};
use pipeline_gateway::Gateway;
use support::manager_tls::{write, TestCa, TlsStandin};
use support::*;

/// A one-upstream configuration in front of `endpoints`, with `tls` as the body of
/// `[upstreams.tls]` (no section when `None`) and `server` lines appended to `[server]`.
fn config(endpoints: &[String], tls: Option<&str>, server: &str) -> String {
    let endpoints: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
    let tls = tls.map_or(String::new(), |body| format!("[upstreams.tls]\n{body}\n"));
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
{server}

[[upstreams]]
name = "primary"
endpoints = [{endpoints}]
connect_timeout = "2s"
request_timeout = "5s"
{tls}
[[routes]]
pipelines = ["*"]
upstream = "primary"
default = true

[auth]
mode = "off"
"#,
        endpoints = endpoints.join(", ")
    )
}

fn toml_path(path: &Path) -> String {
    format!("\"{}\"", path.display())
}

async fn start(text: &str) -> Gateway {
    gateway(text).await
}

/// `GET /v0/pipelines/orders` through the gateway.
async fn orders(gw: &Gateway) -> Reply {
    get(&format!("{}/v0/pipelines/orders", gw.url())).await
}

#[track_caller]
fn assert_tls_failure(reply: &Reply, reason: &str) {
    let details = reply.error(502, "UpstreamUnavailable");
    assert_eq!(details["upstream"], "primary", "details {details}");
    assert_eq!(details["reason"], reason, "details {details}");
}

#[tokio::test]
async fn a_private_ca_named_in_ca_is_trusted() {
    let ca = TestCa::new("managers CA");
    let manager = TlsStandin::start(&ca.server(&["127.0.0.1"]), None).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = write(dir.path(), "ca.pem", &ca.cert_pem);
    let gw = start(&config(
        &[manager.url()],
        Some(&format!(
            "ca = {}\nwebpki_roots = false",
            toml_path(&ca_file)
        )),
        "",
    ))
    .await;
    let reply = orders(&gw).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["name"], "orders");
    assert_eq!(reply.header("x-standin-instance"), Some("tls"));
    // The manager saw a request with the endpoint as Host, over the TLS connection.
    assert!(manager
        .standin
        .requests()
        .iter()
        .any(|r| r.uri.path() == "/v0/pipelines/orders"));
    // The manager offers h2 and http/1.1; the gateway asks for http/1.1 only.
    assert_eq!(manager.negotiated(), [Some("http/1.1".to_owned())]);
    gw.shutdown().await;
}

#[tokio::test]
async fn without_the_private_ca_the_handshake_fails_with_502_saying_tls() {
    let ca = TestCa::new("managers CA");
    let manager = TlsStandin::start(&ca.server(&["127.0.0.1"]), None).await;
    // Only the public roots: the private CA is unknown.
    let gw = start(&config(&[manager.url()], None, "")).await;
    let reply = orders(&gw).await;
    assert_tls_failure(
        &reply,
        "TLS handshake failed: the manager's certificate is not signed by a trusted CA",
    );
    assert!(manager.standin.requests().is_empty(), "nothing reached it");
    // The endpoint's last error, for operators, says the same.
    let status = gw.runtime().upstreams[0].status();
    assert_eq!(
        status["endpoints"][0]["last_error"]["reason"],
        "TLS handshake failed: the manager's certificate is not signed by a trusted CA"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn a_ca_from_another_authority_does_not_help() {
    let ca = TestCa::new("managers CA");
    let other = TestCa::new("someone else");
    let manager = TlsStandin::start(&ca.server(&["127.0.0.1"]), None).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = write(dir.path(), "ca.pem", &other.cert_pem);
    let gw = start(&config(
        &[manager.url()],
        Some(&format!("ca = {}", toml_path(&ca_file))),
        "",
    ))
    .await;
    assert_tls_failure(
        &orders(&gw).await,
        "TLS handshake failed: the manager's certificate is not signed by a trusted CA",
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn mtls_required_by_the_manager_works_with_the_client_certificate() {
    let ca = TestCa::new("managers CA");
    let clients = TestCa::new("gateway clients CA");
    let manager = TlsStandin::start(&ca.server(&["127.0.0.1"]), Some(&clients)).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = write(dir.path(), "ca.pem", &ca.cert_pem);
    let client = clients.client("pipeline-gateway");
    let cert = write(dir.path(), "client.pem", &client.cert_pem);
    let key = write(dir.path(), "client-key.pem", &client.key_pem);
    let gw = start(&config(
        &[manager.url()],
        Some(&format!(
            "ca = {}\nclient_cert = {}\nclient_key = {}",
            toml_path(&ca_file),
            toml_path(&cert),
            toml_path(&key)
        )),
        "",
    ))
    .await;
    let reply = orders(&gw).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["name"], "orders");
    gw.shutdown().await;
}

#[tokio::test]
async fn mtls_required_by_the_manager_without_a_client_certificate_is_502_saying_tls() {
    let ca = TestCa::new("managers CA");
    let clients = TestCa::new("gateway clients CA");
    let manager = TlsStandin::start(&ca.server(&["127.0.0.1"]), Some(&clients)).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = write(dir.path(), "ca.pem", &ca.cert_pem);
    let gw = start(&config(
        &[manager.url()],
        Some(&format!("ca = {}", toml_path(&ca_file))),
        "",
    ))
    .await;
    assert_tls_failure(
        &orders(&gw).await,
        "TLS handshake failed: the manager requires a client certificate",
    );
    assert!(manager.standin.requests().is_empty(), "nothing reached it");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_client_certificate_from_a_ca_the_manager_does_not_trust_is_502_saying_tls() {
    let ca = TestCa::new("managers CA");
    let clients = TestCa::new("gateway clients CA");
    let stranger = TestCa::new("not the clients CA");
    let manager = TlsStandin::start(&ca.server(&["127.0.0.1"]), Some(&clients)).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = write(dir.path(), "ca.pem", &ca.cert_pem);
    let client = stranger.client("pipeline-gateway");
    let cert = write(dir.path(), "client.pem", &client.cert_pem);
    let key = write(dir.path(), "client-key.pem", &client.key_pem);
    let gw = start(&config(
        &[manager.url()],
        Some(&format!(
            "ca = {}\nclient_cert = {}\nclient_key = {}",
            toml_path(&ca_file),
            toml_path(&cert),
            toml_path(&key)
        )),
        "",
    ))
    .await;
    assert_tls_failure(
        &orders(&gw).await,
        "TLS handshake failed: the manager refused the gateway's client certificate",
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn a_certificate_for_another_name_is_502_and_server_name_fixes_it() {
    let ca = TestCa::new("managers CA");
    // The certificate names the service, not the address the gateway dials.
    let manager = TlsStandin::start(&ca.server(&["manager.feldera.test"]), None).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = write(dir.path(), "ca.pem", &ca.cert_pem);
    let gw = start(&config(
        &[manager.url()],
        Some(&format!("ca = {}", toml_path(&ca_file))),
        "",
    ))
    .await;
    assert_tls_failure(
        &orders(&gw).await,
        "TLS handshake failed: the manager's certificate is not valid for its name",
    );
    gw.shutdown().await;

    let gw = start(&config(
        &[manager.url()],
        Some(&format!(
            "ca = {}\nserver_name = \"manager.feldera.test\"",
            toml_path(&ca_file)
        )),
        "",
    ))
    .await;
    let reply = orders(&gw).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    // server_name is verified too: another name still fails.
    gw.shutdown().await;
    let gw = start(&config(
        &[manager.url()],
        Some(&format!(
            "ca = {}\nserver_name = \"other.feldera.test\"",
            toml_path(&ca_file)
        )),
        "",
    ))
    .await;
    assert_tls_failure(
        &orders(&gw).await,
        "TLS handshake failed: the manager's certificate is not valid for its name",
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn a_tls_failure_is_retried_on_another_endpoint_and_ejects_the_bad_one() {
    let ca = TestCa::new("managers CA");
    let wrong = TlsStandin::start(&ca.server(&["elsewhere.test"]), None).await;
    let right = TlsStandin::start(&ca.server(&["127.0.0.1"]), None).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = write(dir.path(), "ca.pem", &ca.cert_pem);
    // A long ejection, so that it is still on when the test looks.
    let text = config(
        &[wrong.url(), right.url()],
        Some(&format!("ca = {}", toml_path(&ca_file))),
        "",
    )
    .replace(
        "request_timeout = \"5s\"",
        "request_timeout = \"5s\"\n[upstreams.outlier]\nbase_ejection = \"5m\"\nmax_ejection = \"10m\"",
    );
    let gw = start(&text).await;
    // Round robin starts at either endpoint; every request is answered by the right one.
    for _ in 0..4 {
        let reply = orders(&gw).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    let status = gw.runtime().upstreams[0].status();
    let bad = &status["endpoints"][0];
    assert_eq!(
        bad["last_error"]["reason"],
        "TLS handshake failed: the manager's certificate is not valid for its name",
        "{status}"
    );
    assert_eq!(bad["available"], false, "ejected: {status}");
    assert!(wrong.standin.requests().is_empty());
    gw.shutdown().await;
}

#[tokio::test]
async fn an_h2_only_manager_fails_the_handshake_since_the_gateway_offers_http1_only() {
    let ca = TestCa::new("managers CA");
    let manager = TlsStandin::start_offering(&ca.server(&["127.0.0.1"]), None, &["h2"]).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = write(dir.path(), "ca.pem", &ca.cert_pem);
    let gw = start(&config(
        &[manager.url()],
        Some(&format!("ca = {}", toml_path(&ca_file))),
        "",
    ))
    .await;
    assert_tls_failure(
        &orders(&gw).await,
        "TLS handshake failed: the manager does not offer http/1.1 (ALPN)",
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn an_https_endpoint_that_speaks_plain_http_is_502_saying_so() {
    let plain = standin("plain").await;
    let url = format!("https://{}", plain.local_addr());
    let gw = start(&config(&[url], None, "")).await;
    assert_tls_failure(
        &orders(&gw).await,
        "TLS handshake failed: the endpoint does not speak TLS",
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn a_manager_that_never_finishes_the_handshake_is_a_connect_timeout() {
    // Accepts TCP and says nothing: the TLS handshake is within connect_timeout.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", silent.local_addr().unwrap());
    let holding = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            open.push(stream);
        }
    });
    let text =
        config(&[url], None, "").replace("connect_timeout = \"2s\"", "connect_timeout = \"300ms\"");
    let gw = start(&text).await;
    let details = orders(&gw).await.error(502, "UpstreamUnavailable");
    assert_eq!(details["reason"], "connect timed out", "{details}");
    holding.abort();
    gw.shutdown().await;
}

#[tokio::test]
async fn a_reload_reads_a_new_ca_file_even_when_the_configuration_is_the_same() {
    let old_ca = TestCa::new("managers CA 2025");
    let new_ca = TestCa::new("managers CA 2026");
    let manager = TlsStandin::start(&old_ca.server(&["127.0.0.1"]), None).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = write(dir.path(), "ca.pem", &old_ca.cert_pem);
    let text = config(
        &[manager.url()],
        Some(&format!(
            "ca = {}\nwebpki_roots = false",
            toml_path(&ca_file)
        )),
        "",
    );
    let path = write(dir.path(), "gateway.toml", &text);
    let gw = Gateway::start_from(Config::from_toml(&text).unwrap(), Some(path))
        .await
        .unwrap();
    assert_eq!(orders(&gw).await.status, 200);

    // The manager rotates to the new CA (and closes its connections): not trusted yet.
    manager.set(&new_ca.server(&["127.0.0.1"]), None);
    assert_tls_failure(
        &orders(&gw).await,
        "TLS handshake failed: the manager's certificate is not signed by a trusted CA",
    );

    // The operator puts the new CA in the same file and reloads the same configuration.
    write(dir.path(), "ca.pem", &new_ca.cert_pem);
    gw.reload_file().await.expect("reloaded");
    let reply = orders(&gw).await;
    assert_eq!(reply.status, 200, "{}", reply.text());

    // A broken CA file fails the reload and keeps the running settings.
    write(dir.path(), "ca.pem", "not a certificate");
    let problems = gw
        .reload_file()
        .await
        .expect_err("a broken CA file is refused");
    assert!(
        problems
            .iter()
            .any(|p| p.path == "upstreams[0].tls.ca" && p.message.contains("no PEM certificate")),
        "{problems}"
    );
    assert_eq!(orders(&gw).await.status, 200);
    gw.shutdown().await;
}

#[tokio::test]
async fn with_watch_config_a_changed_ca_file_is_taken_by_itself() {
    let old_ca = TestCa::new("managers CA 2025");
    let new_ca = TestCa::new("managers CA 2026");
    let manager = TlsStandin::start(&old_ca.server(&["127.0.0.1"]), None).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = write(dir.path(), "ca.pem", &old_ca.cert_pem);
    let gw = start(&config(
        &[manager.url()],
        Some(&format!(
            "ca = {}\nwebpki_roots = false",
            toml_path(&ca_file)
        )),
        "watch_config = true",
    ))
    .await;
    assert_eq!(orders(&gw).await.status, 200);
    manager.set(&new_ca.server(&["127.0.0.1"]), None);
    write(dir.path(), "ca.pem", &new_ca.cert_pem);
    let taken = eventually(Duration::from_secs(10), async || {
        orders(&gw).await.status == 200
    })
    .await;
    assert!(taken, "the new CA file was taken without a reload");
    assert_eq!(
        gw.process().reloads.count(true),
        0,
        "no configuration reload"
    );
    gw.shutdown().await;
}

/// `check-config`'s verdict on a configuration file: every problem as `path: message`.
fn check(text: &str, dir: &Path) -> Vec<String> {
    let path = write(dir, "gateway.toml", text);
    match pipeline_gateway::check_config(&path) {
        Ok(_) => Vec::new(),
        Err(ConfigError::Invalid(problems)) => problems
            .iter()
            .map(|p| format!("{}: {}", p.path, p.message))
            .collect(),
        Err(ConfigError::Parse(problem)) => vec![format!("{}: {}", problem.path, problem.message)],
        Err(other) => vec![other.to_string()],
    }
}

#[test]
fn check_config_reads_and_checks_every_tls_file() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("managers CA");
    let clients = TestCa::new("clients CA");
    let one = clients.client("one");
    let two = clients.client("two");
    let ca_file = write(dir.path(), "ca.pem", &ca.cert_pem);
    let cert = write(dir.path(), "one.pem", &one.cert_pem);
    let key = write(dir.path(), "one-key.pem", &one.key_pem);
    let other_key = write(dir.path(), "two-key.pem", &two.key_pem);
    let garbage = write(dir.path(), "garbage.pem", "hello");
    let missing = dir.path().join("missing.pem");
    let https = ["https://manager-0.feldera.test:8080".to_owned()];
    let tls = |body: String| config(&https, Some(&body), "");

    let fine = format!(
        "ca = {}\nclient_cert = {}\nclient_key = {}",
        toml_path(&ca_file),
        toml_path(&cert),
        toml_path(&key)
    );
    assert_eq!(check(&tls(fine), dir.path()), Vec::<String>::new());

    let unreadable = check(&tls(format!("ca = {}", toml_path(&missing))), dir.path());
    assert_eq!(unreadable.len(), 1, "{unreadable:?}");
    assert!(
        unreadable[0].starts_with("upstreams[0].tls.ca: cannot read"),
        "{unreadable:?}"
    );

    let not_pem = check(&tls(format!("ca = {}", toml_path(&garbage))), dir.path());
    assert_eq!(
        not_pem,
        ["upstreams[0].tls.ca: no PEM certificate (-----BEGIN CERTIFICATE-----) in the file"]
    );

    let key_not_pem = check(
        &tls(format!(
            "client_cert = {}\nclient_key = {}",
            toml_path(&cert),
            toml_path(&garbage)
        )),
        dir.path(),
    );
    assert_eq!(key_not_pem.len(), 1, "{key_not_pem:?}");
    assert!(
        key_not_pem[0].starts_with("upstreams[0].tls.client_key: ")
            && key_not_pem[0].contains("no PEM private key"),
        "{key_not_pem:?}"
    );

    let mismatch = check(
        &tls(format!(
            "client_cert = {}\nclient_key = {}",
            toml_path(&cert),
            toml_path(&other_key)
        )),
        dir.path(),
    );
    assert_eq!(
        mismatch,
        ["upstreams[0].tls.client_key: does not match client_cert (the key of another certificate)"]
    );

    let half = check(
        &tls(format!("client_cert = {}", toml_path(&cert))),
        dir.path(),
    );
    assert_eq!(
        half,
        ["upstreams[0].tls.client_key: client_cert needs client_key (the certificate's private key)"]
    );

    let no_roots = check(&tls("webpki_roots = false".into()), dir.path());
    assert_eq!(
        no_roots,
        ["upstreams[0].tls.webpki_roots: webpki_roots = false needs ca (otherwise no certificate could be trusted)"]
    );

    let bad_name = check(&tls("server_name = \"not a name\"".into()), dir.path());
    assert_eq!(
        bad_name,
        ["upstreams[0].tls.server_name: \"not a name\" is not a DNS name or an IP address"]
    );

    // No switch to skip verification: an unknown key is refused.
    let skip = check(&tls("insecure_skip_verify = true".into()), dir.path());
    assert_eq!(skip.len(), 1, "{skip:?}");
    assert!(
        skip[0].starts_with("upstreams[0].tls") && skip[0].contains("insecure_skip_verify"),
        "{skip:?}"
    );

    // [upstreams.tls] on a plain-http endpoint would not apply: an error.
    let plain = config(
        &["http://manager-0.feldera.test:8080".to_owned()],
        Some(&format!("ca = {}", toml_path(&ca_file))),
        "",
    );
    assert_eq!(
        check(&plain, dir.path()),
        ["upstreams[0].tls: http://manager-0.feldera.test:8080 is plain http: [upstreams.tls] applies to https:// endpoints only, so every endpoint of this upstream must be https://"]
    );
}
