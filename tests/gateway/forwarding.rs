//! Routing to managers, load balancing, and what the request and response look like on the
//! other side of the gateway.

use std::collections::HashMap;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

#[tokio::test]
async fn pipelines_are_routed_by_glob_to_two_managers_and_the_rest_to_the_default() {
    let eu = standin("eu").await;
    let other = standin("other").await;
    let toml = format!(
        r#"
[server]
listen = "127.0.0.1:0"
[auth]
mode = "off"
[[upstreams]]
name = "eu"
endpoints = ["{}"]
[[upstreams]]
name = "other"
endpoints = ["{}"]
[[routes]]
pipelines = ["prod-*", "billing"]
upstream = "eu"
[[routes]]
pipelines = ["*"]
upstream = "other"
default = true
"#,
        eu.url(),
        other.url()
    );
    let gw = gateway(&toml).await;
    for (path, instance) in [
        ("/v0/pipelines/prod-eu", "eu"),
        ("/v0/pipelines/billing", "eu"),
        ("/v0/pipelines/orders", "other"),
        ("/v0/pipelines", "other"),
        ("/healthz", "other"),
    ] {
        let reply = get(&format!("{}{path}", gw.url())).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text());
        assert_eq!(reply.header("x-standin-instance"), Some(instance), "{path}");
    }
}

#[tokio::test]
async fn requests_are_balanced_over_two_endpoints() {
    let a = standin("a").await;
    let b = standin("b").await;
    let toml = config_for(&a.url(), "").replace(
        &format!("endpoints = [\"{}\"]", a.url()),
        &format!("endpoints = [\"{}\", \"{}\"]", a.url(), b.url()),
    );
    let gw = gateway(&toml).await;
    let mut seen: HashMap<String, usize> = HashMap::new();
    for _ in 0..10 {
        let reply = get(&format!("{}/v0/pipelines/orders", gw.url())).await;
        assert_eq!(reply.status, 200);
        *seen
            .entry(reply.header("x-standin-instance").unwrap().to_owned())
            .or_default() += 1;
    }
    assert_eq!(seen.get("a"), Some(&5), "{seen:?}");
    assert_eq!(seen.get("b"), Some(&5), "{seen:?}");
}

#[tokio::test]
async fn a_request_without_body_is_retried_on_the_other_endpoint_when_one_is_down() {
    let a = standin("a").await;
    let port = closed_port().await;
    let toml = config_for(&a.url(), "").replace(
        &format!("endpoints = [\"{}\"]", a.url()),
        &format!("endpoints = [\"http://127.0.0.1:{port}\", \"{}\"]", a.url()),
    );
    let gw = gateway(&toml).await;
    for _ in 0..4 {
        let reply = get(&format!("{}/v0/pipelines/orders", gw.url())).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.header("x-standin-instance"), Some("a"));
    }
}

#[tokio::test]
async fn forwarded_headers_are_set_and_hop_by_hop_headers_stripped() {
    let (gw, upstream) = pair().await;
    let reply = send(
        "GET",
        &format!("{}/v0/pipelines/orders", gw.url()),
        &[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
            ("connection", "x-private"),
            ("x-private", "secret"),
            ("te", "trailers"),
            ("x-request-id", "client-chosen-id.1"),
        ],
        b"",
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-request-id"), Some("client-chosen-id.1"));
    let seen = upstream.requests();
    let headers = &seen[0].headers;
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert_eq!(
        headers["x-forwarded-host"],
        gw.local_addr().to_string().as_str()
    );
    assert_eq!(headers["x-request-id"], "client-chosen-id.1");
    assert!(headers.get("x-private").is_none());
    assert!(headers.get("te").is_none());
}

#[tokio::test]
async fn request_id_is_generated_when_absent_or_unacceptable() {
    let (gw, upstream) = pair().await;
    let reply = send(
        "GET",
        &format!("{}/v0/pipelines", gw.url()),
        &[("x-request-id", "has spaces")],
        b"",
    )
    .await;
    let id = reply.header("x-request-id").unwrap().to_owned();
    assert_ne!(id, "has spaces");
    assert_eq!(upstream.requests()[0].headers["x-request-id"], id.as_str());
    let other = get(&format!("{}/v0/pipelines", gw.url())).await;
    assert_ne!(other.header("x-request-id").unwrap(), id);
}

#[tokio::test]
async fn credentials_pass_strip_and_replace_are_observed_at_the_manager() {
    // SAFETY of the test: the variable name is unique to this test.
    std::env::set_var("PIPELINE_GATEWAY_TEST_REPLACE_KEY", "apikey:gateway-own");
    // A manager with authentication on: it accepts only the gateway's own key.
    let upstream = standin_with(feldera_standin::StandinOptions {
        require_api_key: Some("apikey:gateway-own".into()),
        ..seeded()
    })
    .await;
    for (mode, seen_by_manager, status, code) in [
        (
            "pass",
            Some("Bearer client-token"),
            401,
            Some("AuthenticationFailed"),
        ),
        ("strip", None, 401, Some("AuthenticationFailed")),
        ("replace", Some("Bearer apikey:gateway-own"), 200, None),
    ] {
        let extra = if mode == "replace" {
            "credentials = \"replace\"\nbearer_env = \"PIPELINE_GATEWAY_TEST_REPLACE_KEY\""
                .to_owned()
        } else {
            format!("credentials = \"{mode}\"")
        };
        let toml = config_for(&upstream.url(), "").replace(
            "request_timeout = \"5s\"",
            &format!("request_timeout = \"5s\"\n{extra}"),
        );
        let gw = gateway(&toml).await;
        upstream.clear_requests();
        let reply = send(
            "GET",
            &format!("{}/v0/pipelines", gw.url()),
            &[("authorization", "Bearer client-token")],
            b"",
        )
        .await;
        match code {
            Some(code) => {
                reply.error(status, code);
                assert_eq!(reply.header("x-error-source"), Some("upstream"), "{mode}");
            }
            None => assert_eq!(reply.status, status, "{mode}: {}", reply.text()),
        }
        let seen = upstream.requests();
        assert_eq!(
            seen[0]
                .headers
                .get("authorization")
                .map(|v| v.to_str().unwrap()),
            seen_by_manager,
            "{mode}"
        );
    }
}

#[tokio::test]
async fn websocket_upgrade_on_query_passes_through() {
    let (gw, _upstream) = pair().await;
    let mut stream = TcpStream::connect(gw.local_addr()).await.unwrap();
    stream
        .write_all(
            b"GET /v0/pipelines/live/query HTTP/1.1\r\nhost: gw\r\nconnection: Upgrade\r\n\
upgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(
        head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    stream.write_all(b"echo through the tunnel").await.unwrap();
    let mut echoed = vec![0u8; 23];
    stream.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"echo through the tunnel");
}

#[tokio::test]
async fn http2_clients_are_served_on_the_same_port() {
    let (gw, _upstream) = pair().await;
    let client: hyper_util::client::legacy::Client<_, http_body_util::Full<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build_http();
    let response = client
        .get(format!("{}/v0/pipelines/orders", gw.url()).parse().unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), http::Version::HTTP_2);
}
