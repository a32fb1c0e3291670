//! `check-config` reads every file `[server.tls]` names and reports each problem with its key
//! path: unreadable, not PEM, a key that does not match its certificate, an expired or
//! not-yet-valid leaf, a client CA without a certificate; a leaf with less than 14 days left
//! is a warning naming the date, and the configuration stays valid.

pub mod support;

use std::path::Path;
use std::process::{Command, Output};

use support::pki::{self, TestCa, Validity};

fn check(dir: &Path, tls: &str) -> Output {
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:0"
[server.tls]
{tls}
[[upstreams]]
name = "primary"
endpoints = ["http://127.0.0.1:1"]
[[routes]]
upstream = "primary"
default = true
[auth]
mode = "off"
"#
    );
    let path = pki::write(dir, "gateway.toml", &config);
    Command::new(env!("CARGO_BIN_EXE_pipeline-gateway"))
        .args(["check-config", "--config"])
        .arg(path)
        .output()
        .expect("the binary runs")
}

fn files(dir: &Path, cert: &str, key: &str) -> String {
    format!(
        "cert = \"{}\"\nkey = \"{}\"\n",
        dir.join(cert).display(),
        dir.join(key).display()
    )
}

#[test]
fn every_tls_file_problem_is_listed_with_its_key_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let ca = TestCa::new("check CA");
    let good = ca.server(&["localhost"], 1);
    let other = ca.server(&["localhost"], 2);
    let expired = ca.server_valid(
        &["localhost"],
        3,
        Validity {
            from_days: -30,
            to_days: -2,
        },
    );
    let future = ca.server_valid(
        &["localhost"],
        4,
        Validity {
            from_days: 3,
            to_days: 30,
        },
    );
    pki::write(d, "good.pem", &good.cert_pem);
    pki::write(d, "good.key", &good.key_pem);
    pki::write(d, "other.key", &other.key_pem);
    pki::write(d, "expired.pem", &expired.cert_pem);
    pki::write(d, "expired.key", &expired.key_pem);
    pki::write(d, "future.pem", &future.cert_pem);
    pki::write(d, "future.key", &future.key_pem);
    pki::write(d, "garbage.pem", "this is not PEM\n");

    let fine = check(d, &files(d, "good.pem", "good.key"));
    assert!(
        fine.status.success(),
        "{}",
        String::from_utf8_lossy(&fine.stderr)
    );

    let tls = format!(
        "{}[[server.tls.sni]]\nnames = [\"a.example\"]\n{}[[server.tls.sni]]\nnames = [\"b.example\"]\n{}\
         [[server.tls.sni]]\nnames = [\"c.example\"]\n{}[server.tls.client_auth]\nca = \"{}\"\n",
        files(d, "good.pem", "other.key"),
        files(d, "missing.pem", "good.key"),
        files(d, "expired.pem", "expired.key"),
        files(d, "future.pem", "garbage.pem"),
        d.join("garbage.pem").display(),
    );
    let output = check(d, &tls);
    assert!(!output.status.success());
    let text = String::from_utf8_lossy(&output.stderr);
    for (path, message) in [
        ("server.tls.key", "the key does not match the certificate"),
        ("server.tls.sni[0].cert", "cannot read"),
        ("server.tls.sni[1].cert", "the certificate expired on"),
        ("server.tls.sni[2].cert", "is not valid before"),
        ("server.tls.client_auth.ca", "no PEM certificate"),
    ] {
        assert!(
            text.lines()
                .any(|l| l.contains(&format!("{path}: ")) && l.contains(message)),
            "{path}: {message} in\n{text}"
        );
    }
    assert!(text.contains("5 problem(s)"), "{text}");
}

#[test]
fn a_certificate_with_less_than_14_days_left_is_a_warning_naming_the_date() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let ca = TestCa::new("check CA");
    let soon = ca.server_valid(
        &["localhost"],
        5,
        Validity {
            from_days: -80,
            to_days: 10,
        },
    );
    pki::write(d, "soon.pem", &soon.cert_pem);
    pki::write(d, "soon.key", &soon.key_pem);
    let output = check(d, &files(d, "soon.pem", "soon.key"));
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{text}");
    let warning = text
        .lines()
        .find(|l| l.starts_with("warning: server.tls.cert: the certificate expires on "))
        .unwrap_or_else(|| panic!("a warning in\n{text}"));
    // The date, RFC 3339, and the days left.
    assert!(
        warning.contains("T") && warning.contains("Z (in 9 days)"),
        "{warning}"
    );
}
