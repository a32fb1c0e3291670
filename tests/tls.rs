//! TLS termination over real sockets: a test CA and certificates made at test time (rcgen),
//! the gateway on `[server.tls]` in front of the stand-in manager, clients with rustls, curl
//! and openssl. Covers ALPN (h2 and http/1.1), streaming and WebSockets over TLS, refused
//! protocol versions, SNI, plain HTTP on the TLS port, stalled handshakes, certificate
//! rotation (and a broken new pair), and client certificates as a credential.

pub mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use feldera_standin::Standin;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use pipeline_gateway::config::Config;
use pipeline_gateway::tls::HandshakeResult;
use pipeline_gateway::Gateway;
use support::pki::{self, Pair, TestCa, Validity};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

/// How long one step may take before the test fails (a deadline, not a measurement).
const DEADLINE: Duration = Duration::from_secs(10);

const AUTH_OFF: &str = "[auth]\nmode = \"off\"\n";

/// A gateway on TLS in front of a stand-in, with its PKI in a temporary directory.
struct Fixture {
    dir: tempfile::TempDir,
    ca: TestCa,
    gw: Gateway,
    _standin: Standin,
    standin_url: String,
}

fn config_text(upstream: &str, dir: &Path, tls_extra: &str, rest: &str) -> String {
    let dir = dir.display();
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
[server.tls]
cert = "{dir}/cert.pem"
key = "{dir}/key.pem"
watch_interval = "100ms"
{tls_extra}
[[upstreams]]
name = "primary"
endpoints = ["{upstream}"]
connect_timeout = "1s"
request_timeout = "5s"
[[routes]]
pipelines = ["*"]
upstream = "primary"
default = true
{rest}
"#
    )
}

impl Fixture {
    async fn start(tls_extra: &str, rest: &str) -> Fixture {
        Fixture::start_in(tempfile::tempdir().expect("tempdir"), tls_extra, rest).await
    }

    /// In `dir`, which may hold further files the configuration names.
    async fn start_in(dir: tempfile::TempDir, tls_extra: &str, rest: &str) -> Fixture {
        let ca = TestCa::new("gateway test CA");
        let pair = ca.server(&["localhost", "127.0.0.1"], 1);
        install(dir.path(), &pair);
        pki::write(dir.path(), "ca.pem", &ca.cert_pem);
        let standin = standin("a").await;
        let standin_url = standin.url();
        let text = config_text(&standin_url, dir.path(), tls_extra, rest);
        let config = Config::from_toml(&text).expect("test configuration is valid");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let gw = Gateway::start_on(listener, config)
            .await
            .expect("gateway starts");
        Fixture {
            dir,
            ca,
            gw,
            _standin: standin,
            standin_url,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn client(&self, alpn: &[&str]) -> std::sync::Arc<rustls::ClientConfig> {
        pki::client_config(&self.ca.cert_pem, alpn, None)
    }

    async fn connect(&self, alpn: &[&str]) -> tokio_rustls::client::TlsStream<TcpStream> {
        pki::connect(self.gw.local_addr(), "localhost", self.client(alpn))
            .await
            .expect("TLS handshake")
    }

    fn handshakes(&self, result: HandshakeResult) -> u64 {
        self.gw.process().tls.handshakes(result)
    }
}

/// Writes the serving pair (key first, then the certificate).
fn install(dir: &Path, pair: &Pair) {
    pki::write(dir, "key.pem", &pair.key_pem);
    pki::write(dir, "cert.pem", &pair.cert_pem);
}

fn request(method: &str, path: &str) -> http::Request<Full<Bytes>> {
    http::Request::builder()
        .method(method)
        .uri(format!("https://localhost{path}"))
        .body(Full::new(Bytes::new()))
        .expect("request")
}

#[tokio::test]
async fn activate_works_over_h2_and_http1_chosen_by_alpn() {
    let f = Fixture::start("", AUTH_OFF).await;
    for (offer, chosen) in [
        (&["h2", "http/1.1"][..], "h2"),
        (&["http/1.1"][..], "http/1.1"),
    ] {
        let stream = f.connect(offer).await;
        assert_eq!(pki::alpn(&stream).as_deref(), Some(chosen));
        let reply = pki::send_tls(
            stream,
            request("POST", "/v0/pipelines/orders/activate?initial=Running"),
        )
        .await
        .expect("reply");
        assert_eq!(reply.status, 202, "{chosen}: {}", reply.text());
        // The manager learns the client's scheme.
        let seen = f._standin.requests();
        let last = seen.last().expect("the manager saw the request");
        assert_eq!(
            last.headers
                .get("x-forwarded-proto")
                .and_then(|v| v.to_str().ok()),
            Some("https")
        );
    }
    assert_eq!(f.handshakes(HandshakeResult::Ok), 2);
    assert!(f.gw.url().starts_with("https://"), "{}", f.gw.url());
}

#[tokio::test]
async fn curl_activates_over_https_with_the_test_ca_in_both_protocols() {
    let f = Fixture::start("", AUTH_OFF).await;
    let url = format!(
        "https://localhost:{}/v0/pipelines/orders/activate?initial=Running",
        f.gw.local_addr().port()
    );
    for (flag, version) in [("--http2", "2"), ("--http1.1", "1.1")] {
        let output = tokio::process::Command::new("curl")
            .args(["-sS", "-X", "POST", flag, "--cacert"])
            .arg(f.path("ca.pem"))
            .args(["-w", "\n%{http_code} %{http_version}", &url])
            .output()
            .await
            .expect("curl runs");
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{text} {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(text.ends_with(&format!("202 {version}")), "{flag}: {text}");
    }
}

#[tokio::test]
async fn an_egress_stream_and_a_websocket_work_over_tls() {
    let f = Fixture::start("", AUTH_OFF).await;
    // An endless egress stream over h2: chunks arrive while the manager still sends.
    let stream = f.connect(&["h2"]).await;
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2");
    tokio::spawn(connection);
    let response = timeout(
        DEADLINE,
        sender.send_request(request("POST", "/v0/pipelines/live/egress/v")),
    )
    .await
    .expect("response head in time")
    .expect("response");
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut received = Vec::new();
    while received.iter().filter(|&&b| b == b'\n').count() < 3 {
        let frame = timeout(DEADLINE, body.frame())
            .await
            .expect("a chunk in time")
            .expect("the stream goes on")
            .expect("frame");
        if let Ok(data) = frame.into_data() {
            received.extend_from_slice(&data);
        }
    }
    // A second request on the same h2 connection is not held back by the open stream.
    let reply = timeout(
        DEADLINE,
        sender.send_request(request("GET", "/v0/pipelines/orders")),
    )
    .await
    .expect("an independent stream")
    .expect("response");
    assert_eq!(reply.status(), 200);

    // A WebSocket upgrade over TLS (HTTP/1.1), and bytes through the tunnel.
    let mut stream = f.connect(&["http/1.1"]).await;
    stream
        .write_all(
            b"GET /v0/pipelines/live/query HTTP/1.1\r\nhost: localhost\r\nconnection: Upgrade\r\n\
upgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .await
        .expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        timeout(DEADLINE, stream.read_exact(&mut byte))
            .await
            .expect("head in time")
            .expect("read");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    stream
        .write_all(b"echo through the tunnel")
        .await
        .expect("write");
    let mut echoed = vec![0u8; 23];
    timeout(DEADLINE, stream.read_exact(&mut echoed))
        .await
        .expect("echo in time")
        .expect("read");
    assert_eq!(&echoed, b"echo through the tunnel");
}

#[tokio::test]
async fn tls_1_1_is_refused_and_min_version_1_3_refuses_1_2() {
    let f = Fixture::start("", AUTH_OFF).await;
    let connect = format!("127.0.0.1:{}", f.gw.local_addr().port());
    // SECLEVEL=0 lets openssl itself offer TLS 1.1; the gateway must refuse it.
    let output = tokio::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &connect,
            "-tls1_1",
            "-cipher",
            "DEFAULT@SECLEVEL=0",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("openssl runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!output.status.success(), "{text}");
    // rustls answers a hello offering nothing above TLS 1.1 with an alert, no cipher agreed.
    assert!(text.contains("Cipher is (NONE)"), "{text}");
    assert!(
        text.contains("alert handshake failure") || text.contains("alert protocol version"),
        "{text}"
    );
    let failed = eventually(DEADLINE, async || {
        f.handshakes(HandshakeResult::Failed) == 1
    })
    .await;
    assert!(failed, "the refused handshake is counted");
    assert_eq!(f.handshakes(HandshakeResult::Ok), 0);

    let f = Fixture::start("min_version = \"1.3\"", AUTH_OFF).await;
    let only_1_2 = pki::client_config_versions(
        &f.ca.cert_pem,
        &["http/1.1"],
        None,
        &[&rustls::version::TLS12],
    );
    let refused = pki::connect(f.gw.local_addr(), "localhost", only_1_2).await;
    assert!(refused.is_err(), "a TLS 1.2 client is refused");
    let stream = f.connect(&["http/1.1"]).await;
    assert_eq!(
        stream.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
}

#[tokio::test]
async fn sni_chooses_the_certificate_and_a_wrong_name_fails_verification() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new("sni CA");
    let eu = ca.server(&["eu.feldera.example"], 7);
    let eu_cert = pki::write(dir.path(), "eu.pem", &eu.cert_pem);
    let eu_key = pki::write(dir.path(), "eu.key", &eu.key_pem);
    let f = Fixture::start(
        &format!(
            "[[server.tls.sni]]\nnames = [\"EU.feldera.example\"]\ncert = \"{}\"\nkey = \"{}\"\n",
            eu_cert.display(),
            eu_key.display()
        ),
        AUTH_OFF,
    )
    .await;
    let config = |ca: &TestCa| pki::client_config(&ca.cert_pem, &["http/1.1"], None);
    let stream = pki::connect(f.gw.local_addr(), "eu.feldera.example", config(&ca))
        .await
        .expect("the SNI certificate verifies");
    assert_eq!(pki::peer_serial(&stream), [7]);
    let stream = f.connect(&["http/1.1"]).await;
    assert_eq!(pki::peer_serial(&stream), [1], "the default certificate");
    // Another name gets the default certificate, which does not carry it.
    let error = pki::connect(f.gw.local_addr(), "wrong.example", f.client(&["http/1.1"]))
        .await
        .expect_err("the wrong name does not verify");
    assert!(
        error.to_string().contains("certificate not valid for name"),
        "{error}"
    );
    let failed = eventually(DEADLINE, async || {
        f.handshakes(HandshakeResult::Failed) == 1
    })
    .await;
    assert!(
        failed,
        "the client's alert is counted as a failed handshake"
    );
}

#[tokio::test]
async fn plain_http_to_the_tls_port_gets_a_json_400_and_a_close() {
    let f = Fixture::start("", AUTH_OFF).await;
    let reply = timeout(
        DEADLINE,
        raw(
            f.gw.local_addr(),
            b"GET /v0/pipelines HTTP/1.1\r\nhost: localhost\r\n\r\n",
        ),
    )
    .await
    .expect("an answer, not a hang");
    let details = reply.error(400, "InvalidRequest");
    assert_eq!(details["reason"], "plain_http_on_tls_port");
    assert!(reply.json()["message"]
        .as_str()
        .unwrap_or("")
        .contains("TLS"));
    assert_eq!(f.handshakes(HandshakeResult::PlainHttp), 1);
}

#[tokio::test]
async fn a_stalled_handshake_is_closed_within_the_timeout() {
    let f = Fixture::start("handshake_timeout = \"300ms\"", AUTH_OFF).await;
    // One client sends nothing at all, another the start of a ClientHello and then nothing.
    for first in [&b""[..], &[0x16, 0x03, 0x01][..]] {
        let mut stream = TcpStream::connect(f.gw.local_addr())
            .await
            .expect("connect");
        stream.write_all(first).await.expect("write");
        let mut buffer = [0u8; 64];
        let read = timeout(DEADLINE, stream.read(&mut buffer))
            .await
            .expect("closed by the gateway, not left hanging");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
    assert_eq!(f.handshakes(HandshakeResult::Timeout), 2);
    // The listener was never blocked: a real client is served meanwhile and after.
    let reply = pki::send_tls(f.connect(&["h2"]).await, request("GET", "/v0/pipelines"))
        .await
        .expect("reply");
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn rotation_keeps_open_streams_and_new_connections_see_the_new_serial() {
    let f = Fixture::start("", AUTH_OFF).await;
    let stream = f.connect(&["h2"]).await;
    assert_eq!(pki::peer_serial(&stream), [1]);
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2");
    tokio::spawn(connection);
    let response = sender
        .send_request(request("POST", "/v0/pipelines/live/egress/v"))
        .await
        .expect("response");
    let mut body = response.into_body();
    let mut lines = 0;
    let mut next_chunk = async || {
        let frame = timeout(DEADLINE, body.frame())
            .await
            .expect("a chunk in time")
            .expect("the stream goes on")
            .expect("frame");
        frame
            .into_data()
            .map_or(0, |d| d.iter().filter(|&&b| b == b'\n').count())
    };
    lines += next_chunk().await;

    install(f.dir.path(), &f.ca.server(&["localhost", "127.0.0.1"], 2));
    let rotated = eventually(DEADLINE, async || {
        let stream = f.connect(&["h2"]).await;
        pki::peer_serial(&stream) == [2]
    })
    .await;
    assert!(rotated, "a new connection gets the new certificate");
    let before = lines;
    while lines < before + 3 {
        lines += next_chunk().await;
    }
    // The expiry metric follows the serving certificate.
    let text = f.gw.process().metrics.encode();
    assert!(
        text.contains("tls_cert_expiry_seconds{name=\"default\"}"),
        "{text}"
    );
}

#[tokio::test]
async fn a_broken_new_pair_is_refused_and_the_old_one_stays() {
    let f = Fixture::start("", AUTH_OFF).await;
    let terminator = f.gw.runtime().tls.clone().expect("TLS is on");
    let other = f.ca.server(&["localhost"], 9);
    let cases: [(&str, Pair, &str, &str); 4] = [
        (
            "a key of another certificate",
            Pair {
                cert_pem: f.ca.server(&["localhost"], 3).cert_pem,
                key_pem: other.key_pem.clone(),
            },
            "server.tls.key",
            "does not match",
        ),
        (
            "not PEM",
            Pair {
                cert_pem: "not a certificate".into(),
                key_pem: other.key_pem.clone(),
            },
            "server.tls.cert",
            "no PEM certificate",
        ),
        (
            "an expired certificate",
            f.ca.server_valid(
                &["localhost"],
                4,
                Validity {
                    from_days: -30,
                    to_days: -1,
                },
            ),
            "server.tls.cert",
            "expired on",
        ),
        (
            "a key that is not PEM",
            Pair {
                cert_pem: other.cert_pem.clone(),
                key_pem: "garbage".into(),
            },
            "server.tls.key",
            "not a PEM private key",
        ),
    ];
    for (what, pair, path, message) in cases {
        install(f.dir.path(), &pair);
        let problems = terminator.reload_if_changed().expect_err(what).into_vec();
        assert_eq!(problems.len(), 1, "{what}: {problems:?}");
        assert_eq!(problems[0].path, path, "{what}");
        assert!(
            problems[0].message.contains(message),
            "{what}: {problems:?}"
        );
        // A configuration reload that reads the same files is refused the same way.
        let text = config_text(&f.standin_url, f.dir.path(), "", AUTH_OFF);
        let reload = f.gw.reload(Config::from_toml(&text).expect("config")).await;
        assert!(reload.is_err(), "{what}");
        let stream = f.connect(&["http/1.1"]).await;
        assert_eq!(
            pki::peer_serial(&stream),
            [1],
            "{what}: the old pair serves"
        );
    }
    // Mending the files takes effect with the next configuration reload (SIGHUP and
    // `POST /reload` do this), without waiting for the watcher.
    install(f.dir.path(), &other);
    let text = config_text(&f.standin_url, f.dir.path(), "", AUTH_OFF);
    let reloaded = f.gw.reload(Config::from_toml(&text).expect("config")).await;
    assert!(reloaded.is_ok(), "{reloaded:?}");
    let stream = f.connect(&["http/1.1"]).await;
    assert_eq!(pki::peer_serial(&stream), [9]);
    assert_eq!(
        terminator.reload_if_changed().ok(),
        Some(false),
        "nothing left to load"
    );
}

const CLIENT_AUTH: &str = r#"
[auth]
[[auth.client_certs]]
subject = "CN=etl-loader, O=Acme"
role = "write"
tenant = "acme"
[[auth.client_certs]]
san_uri = "spiffe://acme/dashboard"
role = "read"
tenant = "acme"
"#;

/// A fixture whose client CA file is written before the gateway starts.
async fn with_client_ca(mode: &str) -> (Fixture, TestCa) {
    let clients = TestCa::new("clients CA");
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_path = pki::write(dir.path(), "clients-ca.pem", &clients.cert_pem);
    let f = Fixture::start_in(
        dir,
        &format!(
            "[server.tls.client_auth]\nca = \"{}\"\nmode = \"{mode}\"\n",
            ca_path.display()
        ),
        CLIENT_AUTH,
    )
    .await;
    (f, clients)
}

async fn as_client(f: &Fixture, cert: Option<&Pair>, request: http::Request<Full<Bytes>>) -> Reply {
    let config = pki::client_config(&f.ca.cert_pem, &["h2", "http/1.1"], cert);
    let stream = pki::connect(f.gw.local_addr(), "localhost", config)
        .await
        .expect("handshake");
    pki::send_tls(stream, request).await.expect("reply")
}

#[tokio::test]
async fn a_mapped_client_certificate_is_a_principal_and_an_unmapped_one_is_403() {
    let (f, clients) = with_client_ca("optional").await;
    let loader = clients.client("etl-loader", "Acme", &[], &[]);
    let reply = as_client(
        &f,
        Some(&loader),
        request("POST", "/v0/pipelines/orders/activate?initial=Running"),
    )
    .await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    let seen = f._standin.requests();
    let last = seen.last().expect("forwarded");
    assert_eq!(
        last.headers
            .get("feldera-tenant")
            .and_then(|v| v.to_str().ok()),
        Some("acme"),
        "the certificate's principal acts in its tenant"
    );
    assert!(
        !last
            .headers
            .keys()
            .any(|name| name.as_str().contains("cert")),
        "no certificate is forwarded: {:?}",
        last.headers
    );
    // A SAN URI mapped to `read` may read but not activate.
    let dashboard = clients.client("dashboard", "Acme", &[], &["spiffe://acme/dashboard"]);
    let reply = as_client(&f, Some(&dashboard), request("GET", "/v0/pipelines")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let reply = as_client(
        &f,
        Some(&dashboard),
        request("POST", "/v0/pipelines/orders/activate?initial=Running"),
    )
    .await;
    let details = reply.error(403, "InsufficientPermissions");
    assert_eq!(details["required"], "write");
    assert_eq!(details["actual"], "read");
    // Verified, but no entry maps it.
    let stranger = clients.client("stranger", "Elsewhere", &["stranger.example"], &[]);
    let reply = as_client(&f, Some(&stranger), request("GET", "/v0/pipelines")).await;
    let details = reply.error(403, "InsufficientPermissions");
    assert_eq!(details["reason"], "client_certificate_not_mapped");
    // No certificate (allowed with `optional`) and no bearer: 401.
    let reply = as_client(&f, None, request("GET", "/v0/pipelines")).await;
    let details = reply.error(401, "AuthenticationFailed");
    assert_eq!(details["reason"], "missing_credentials");
    // A bearer credential decides, whatever certificate comes with it.
    let mut with_bearer = request("GET", "/v0/pipelines");
    with_bearer.headers_mut().insert(
        http::header::AUTHORIZATION,
        http::HeaderValue::try_from(format!("Bearer apikey:{}", "x".repeat(128))).expect("header"),
    );
    let reply = as_client(&f, Some(&loader), with_bearer).await;
    let details = reply.error(401, "AuthenticationFailed");
    assert_eq!(details["reason"], "invalid_api_key");
}

/// Whether a client with `cert` gets no answer: the handshake (or, with TLS 1.3, the first
/// read after it) fails.
async fn refused(f: &Fixture, cert: Option<&Pair>) -> bool {
    let config = pki::client_config(&f.ca.cert_pem, &["http/1.1"], cert);
    let Ok(stream) = pki::connect(f.gw.local_addr(), "localhost", config).await else {
        return true;
    };
    timeout(
        DEADLINE,
        pki::send_tls(stream, request("GET", "/v0/pipelines")),
    )
    .await
    .expect("an answer or a close in time")
    .is_err()
}

#[tokio::test]
async fn required_client_auth_fails_the_handshake_without_a_certificate_or_from_another_ca() {
    let (f, clients) = with_client_ca("required").await;
    let stranger_ca = TestCa::new("another CA");
    let forged = stranger_ca.client("etl-loader", "Acme", &[], &[]);
    assert!(refused(&f, None).await, "no certificate");
    assert!(
        refused(&f, Some(&forged)).await,
        "a certificate of another CA"
    );
    let failed = eventually(DEADLINE, async || {
        f.handshakes(HandshakeResult::Failed) == 2
    })
    .await;
    assert!(failed, "both handshakes are counted as failed");
    let loader = clients.client("etl-loader", "Acme", &[], &[]);
    let reply = as_client(&f, Some(&loader), request("GET", "/v0/pipelines")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());

    // With `optional`, a certificate of another CA is refused all the same.
    let (f, _clients) = with_client_ca("optional").await;
    assert!(refused(&f, Some(&forged)).await, "optional: another CA");
}

#[tokio::test]
async fn the_redirect_listener_answers_308_to_the_same_path_over_https() {
    let f = Fixture::start("[[server.redirect]]\nlisten = \"127.0.0.1:0\"\n", AUTH_OFF).await;
    let redirect = f.gw.redirect_addrs()[0];
    let port = f.gw.local_addr().port();
    let reply = raw(
        redirect,
        b"POST /v0/pipelines/orders/activate?initial=Running HTTP/1.1\r\nhost: localhost:1234\r\n\
content-length: 0\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(reply.status, 308);
    assert_eq!(
        reply.header("location"),
        Some(
            format!("https://localhost:{port}/v0/pipelines/orders/activate?initial=Running")
                .as_str()
        )
    );
    assert!(f._standin.requests().is_empty(), "nothing is proxied");
    // curl follows it (keeping the POST) and trusts the test CA.
    let output = tokio::process::Command::new("curl")
        .args(["-sS", "-L", "-X", "POST", "--cacert"])
        .arg(f.path("ca.pem"))
        .args([
            "-w",
            "\n%{http_code} %{url_effective}",
            &format!(
                "http://127.0.0.1:{}/v0/pipelines/orders/activate?initial=Running",
                redirect.port()
            ),
        ])
        .output()
        .await
        .expect("curl runs");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.ends_with(&format!(
            "202 https://127.0.0.1:{port}/v0/pipelines/orders/activate?initial=Running"
        )),
        "{text} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Without a host there is nowhere to send the client.
    let reply = raw(redirect, b"GET /x HTTP/1.0\r\n\r\n").await;
    let details = reply.error(400, "InvalidRequest");
    assert_eq!(details["reason"], "missing_host");
}

#[tokio::test]
async fn a_client_certificate_principal_has_its_own_rate_limit_budget() {
    let clients = TestCa::new("clients CA");
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_path = pki::write(dir.path(), "clients-ca.pem", &clients.cert_pem);
    let f = Fixture::start_in(
        dir,
        &format!("[server.tls.client_auth]\nca = \"{}\"\n", ca_path.display()),
        &format!("{CLIENT_AUTH}[rate_limit]\nprincipal = {{ rate = \"1/h\", burst = 2 }}\n"),
    )
    .await;
    let loader = clients.client("etl-loader", "Acme", &[], &[]);
    let dashboard = clients.client("dashboard", "Acme", &[], &["spiffe://acme/dashboard"]);
    for _ in 0..2 {
        let reply = as_client(&f, Some(&loader), request("GET", "/v0/pipelines")).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    let reply = as_client(&f, Some(&loader), request("GET", "/v0/pipelines")).await;
    let details = reply.error(429, "RateLimitExceeded");
    assert_eq!(details["policy"], "principal", "{details}");
    // Another certificate is another principal, with its own budget.
    let reply = as_client(&f, Some(&dashboard), request("GET", "/v0/pipelines")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
}

#[tokio::test]
async fn the_admin_listener_may_speak_tls_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().display().to_string();
    let f = Fixture::start_in(
        dir,
        "",
        &format!(
            "{AUTH_OFF}[admin]\nlisten = \"127.0.0.1:0\"\n[admin.tls]\ncert = \"{d}/cert.pem\"\n\
             key = \"{d}/key.pem\"\n"
        ),
    )
    .await;
    let admin = f.gw.admin_addr().expect("admin listener");
    let stream = pki::connect(admin, "localhost", f.client(&["http/1.1"]))
        .await
        .expect("TLS handshake with the admin listener");
    let reply = pki::send_tls(stream, request("GET", "/metrics"))
        .await
        .expect("reply");
    assert_eq!(reply.status, 200);
    assert!(
        reply
            .text()
            .contains("pipeline_gateway_tls_handshakes_total{result=\"ok\"} 1"),
        "{}",
        reply.text()
    );
    let reply = raw(admin, b"GET /metrics HTTP/1.1\r\nhost: localhost\r\n\r\n").await;
    assert_eq!(
        reply.error(400, "InvalidRequest")["reason"],
        "plain_http_on_tls_port"
    );
}

#[tokio::test]
async fn sessions_resume_and_survive_a_certificate_reload() {
    let f = Fixture::start("", AUTH_OFF).await;
    let terminator = f.gw.runtime().tls.clone().expect("TLS is on");
    // One client configuration: its session store carries tickets between connections.
    let client = f.client(&["http/1.1"]);
    let resumed = async |expected: bool| {
        let stream = pki::connect(f.gw.local_addr(), "localhost", client.clone())
            .await
            .expect("handshake");
        let kind = stream.get_ref().1.handshake_kind();
        // A whole exchange, so that the server's session tickets are read.
        let reply = pki::send_tls(stream, request("GET", "/v0/pipelines"))
            .await
            .expect("reply");
        assert_eq!(reply.status, 200);
        assert_eq!(
            kind == Some(rustls::HandshakeKind::Resumed),
            expected,
            "{kind:?}"
        );
    };
    resumed(false).await;
    resumed(true).await;
    install(f.dir.path(), &f.ca.server(&["localhost", "127.0.0.1"], 2));
    assert_eq!(terminator.reload_if_changed().ok(), Some(true));
    resumed(true).await;
}
