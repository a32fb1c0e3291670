//! Upstream error bodies the manager compressed (it does whenever the client sends
//! `Accept-Encoding`): judged after decoding, passed through still encoded when they conform,
//! rewritten as plain JSON when they do not, and never quoted as binary.

use feldera_standin::Fault;
use serde_json::json;

use crate::support::*;

const CONFORMING: &[u8] = br#"{"message":"Unknown pipeline name 'nope'","error_code":"UnknownPipelineName","details":{"pipeline_name":"nope"}}"#;

fn encoded(status: u16, content_type: &str, coding: &str, body: Vec<u8>) -> Fault {
    Fault::Respond {
        status,
        content_type: Some(content_type.into()),
        body,
        headers: vec![
            ("content-encoding".into(), coding.into()),
            ("vary".into(), "accept-encoding".into()),
        ],
    }
}

#[tokio::test]
async fn conforming_compressed_error_passes_byte_for_byte_still_encoded() {
    let (gw, upstream) = pair().await;
    for coding in ["gzip", "deflate", "br", "zstd"] {
        let body = encode(coding, CONFORMING).await;
        upstream.set_fault(
            "/v0/pipelines/nope",
            encoded(404, "application/json", coding, body.clone()),
        );
        let reply = send(
            "GET",
            &format!("{}/v0/pipelines/nope", gw.url()),
            &[("accept-encoding", "gzip, deflate, br, zstd")],
            b"",
        )
        .await;
        assert_eq!(reply.status, 404, "{coding}");
        assert_eq!(
            &reply.body[..],
            &body[..],
            "{coding}: the same encoded bytes"
        );
        assert_eq!(reply.header("content-encoding"), Some(coding));
        assert_eq!(reply.header("x-error-source"), None, "{coding}");
        let decoded: serde_json::Value =
            serde_json::from_slice(&decode(coding, &reply.body).await).unwrap();
        assert_eq!(decoded["error_code"], "UnknownPipelineName");
    }
}

#[tokio::test]
async fn non_conforming_compressed_error_is_rewritten_as_plain_json() {
    let (gw, upstream) = pair().await;
    let cases: [(u16, &str, &[u8], &str); 3] = [
        (
            401,
            "text/plain",
            br#"{"error_code":"AuthenticationFailed","message":"Unauthorized API key"}"#,
            "AuthenticationFailed",
        ),
        (
            400,
            "text/plain; charset=utf-8",
            b"Query deserialize error: unknown variant `Running`",
            "UpstreamError",
        ),
        (
            403,
            "application/json",
            br#"{"message":"This endpoint has no access-control classification and is denied","error_code":"InsufficientPermissions"}"#,
            "InsufficientPermissions",
        ),
    ];
    for coding in ["gzip", "br"] {
        for (status, content_type, body, code) in cases {
            upstream.set_fault(
                "/v0/pipelines/orders",
                encoded(status, content_type, coding, encode(coding, body).await),
            );
            let reply = send(
                "GET",
                &format!("{}/v0/pipelines/orders", gw.url()),
                &[("accept-encoding", "gzip, deflate")],
                b"",
            )
            .await;
            let details = reply.error(status, code);
            assert_eq!(reply.header("content-encoding"), None, "{coding} {code}");
            assert_eq!(reply.header("vary"), Some("accept-encoding"), "kept");
            assert_eq!(reply.header("x-error-source"), Some("upstream"));
            assert_eq!(
                reply.header("content-length"),
                Some(reply.body.len().to_string().as_str()),
                "content-length describes the new body"
            );
            if code == "UpstreamError" {
                assert_eq!(
                    details,
                    json!({"upstream_status": 400, "body": "Query deserialize error: unknown variant `Running`"})
                );
            } else {
                assert_eq!(details, json!({}));
            }
        }
    }
}

#[tokio::test]
async fn stacked_codings_are_undone_in_reverse_order() {
    let (gw, upstream) = pair().await;
    let body = encode("br", &encode("gzip", b"<html>boom</html>").await).await;
    upstream.set_fault(
        "/v0/pipelines/orders",
        encoded(500, "text/html", "gzip, br", body),
    );
    let reply = get(&format!("{}/v0/pipelines/orders", gw.url())).await;
    let details = reply.error(500, "UpstreamError");
    assert_eq!(
        details,
        json!({"upstream_status": 500, "body": "<html>boom</html>"})
    );
    assert_eq!(reply.header("content-encoding"), None);
}

#[tokio::test]
async fn corrupt_or_unknown_coding_is_upstream_error_saying_so() {
    let (gw, upstream) = pair().await;
    let mut cut = encode("gzip", CONFORMING).await;
    cut.truncate(cut.len() / 2);
    for (coding, body) in [
        ("gzip", cut),
        ("compress", b"\x1f\x9d\x90garbage".to_vec()),
        ("br", CONFORMING.to_vec()),
    ] {
        upstream.set_fault(
            "/v0/pipelines/orders",
            encoded(404, "application/json", coding, body),
        );
        let reply = get(&format!("{}/v0/pipelines/orders", gw.url())).await;
        let details = reply.error(404, "UpstreamError");
        assert_eq!(
            details,
            json!({"upstream_status": 404, "content_encoding": coding, "reason": "undecodable body"}),
            "{coding}"
        );
        assert_eq!(reply.header("content-encoding"), None);
    }
}

#[tokio::test]
async fn a_compression_bomb_costs_nothing_and_is_quoted_truncated() {
    let (gw, upstream) = pair().await;
    // 64 MiB of 'a' in a few tens of KiB of gzip: decoding stops at the bound.
    let bomb = encode("gzip", &vec![b'a'; 64 * 1024 * 1024]).await;
    assert!(bomb.len() < 128 * 1024, "{} bytes", bomb.len());
    upstream.set_fault(
        "/v0/pipelines/orders",
        encoded(500, "text/plain", "gzip", bomb),
    );
    let reply = get(&format!("{}/v0/pipelines/orders", gw.url())).await;
    let details = reply.error(500, "UpstreamError");
    assert_eq!(details["truncated"], true);
    assert_eq!(details["content_encoding"], "gzip");
    assert_eq!(details["body"].as_str().unwrap(), "a".repeat(1024));
}

#[tokio::test]
async fn an_error_body_over_the_bound_is_quoted_truncated_not_passed_raw() {
    let (gw, upstream) = pair().await;
    let big = vec![b'z'; 8 * 1024 * 1024];
    upstream.set_fault(
        "/v0/pipelines/orders",
        Fault::Respond {
            status: 500,
            content_type: Some("text/plain".into()),
            body: big,
            headers: vec![],
        },
    );
    let reply = get(&format!("{}/v0/pipelines/orders", gw.url())).await;
    let details = reply.error(500, "UpstreamError");
    assert_eq!(
        details,
        json!({"upstream_status": 500, "body": "z".repeat(1024), "truncated": true})
    );
    assert!(reply.body.len() < 4096, "{} bytes", reply.body.len());
}

/// `reply` with its body decoded from its `Content-Encoding` (as a client library would).
async fn decoded(mut reply: Reply) -> Reply {
    if let Some(coding) = reply.header("content-encoding").map(str::to_owned) {
        if coding != "identity" {
            reply.body = decode(&coding, &reply.body).await.into();
        }
    }
    reply
}

#[tokio::test]
async fn the_managers_own_errors_keep_their_codes_whatever_the_client_accepts() {
    let (gw, _upstream) = pair().await;
    let created = send(
        "POST",
        &format!("{}/v0/pipelines", gw.url()),
        &[("content-type", "application/json")],
        br#"{"name":"fresh","program_code":""}"#,
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.text());
    for accept in [
        None,
        Some("gzip, deflate"),
        Some("br"),
        Some("zstd"),
        Some("identity"),
    ] {
        let headers: Vec<(&str, &str)> =
            accept.map(|a| ("accept-encoding", a)).into_iter().collect();
        let call = |method: &'static str, path: &'static str, body: &'static [u8]| {
            let headers = headers.clone();
            let url = format!("{}{path}", gw.url());
            async move { decoded(send(method, &url, &headers, body).await).await }
        };
        let raw = send(
            "GET",
            &format!("{}/v0/pipelines/nope", gw.url()),
            &headers,
            b"",
        )
        .await;
        // The manager (and the stand-in) compress errors; the conforming one passes as is.
        let expected = match accept {
            Some("gzip, deflate") => Some("gzip"),
            Some("br") => Some("br"),
            Some("zstd") => Some("zstd"),
            _ => None,
        };
        assert_eq!(raw.header("content-encoding"), expected, "{accept:?}");
        let reply = call("GET", "/v0/pipelines/nope", b"").await;
        let details = reply.error(404, "UnknownPipelineName");
        assert_eq!(details, json!({"pipeline_name": "nope"}), "{accept:?}");

        let reply = call("POST", "/v0/pipelines/fresh/pause", b"").await;
        reply.error(503, "PipelineInteractionNotDeployed");
        assert_eq!(reply.header("retry-after"), Some("5"), "{accept:?}");

        // A text/plain 400 of the manager, rewritten: its text quoted, never its bytes.
        let reply = call("GET", "/v0/pipelines?selector=bogus", b"").await;
        let details = reply.error(400, "UpstreamError");
        assert!(
            details["body"]
                .as_str()
                .unwrap()
                .starts_with("Query deserialize error: unknown variant `bogus`"),
            "{accept:?}: {details}"
        );
        assert_eq!(reply.header("content-encoding"), None, "{accept:?}");

        let reply = call("GET", "/v0/no-such-endpoint", b"").await;
        reply.error(404, "UnknownEndpoint");
    }
}
