//! Pipeline names, activate's `initial`, canonical paths: rejected at the edge, in Feldera's
//! words, without an upstream trip; accepted spellings forwarded in the server's spelling.

use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn name_of_63_bytes_is_forwarded_and_64_bytes_is_too_long_name() {
    let (gw, upstream) = pair().await;
    let ok = "a".repeat(63);
    let reply = post(&format!("{}/v0/pipelines/{ok}/activate", gw.url())).await;
    // Forwarded: the stand-in does not know it.
    reply.error(404, "UnknownPipelineName");
    assert_eq!(
        reply.header("x-error-source"),
        None,
        "upstream's own JSON passes"
    );

    let long = "a".repeat(64);
    let reply = post(&format!("{}/v0/pipelines/{long}/activate", gw.url())).await;
    let details = reply.error(400, "TooLongName");
    assert_eq!(details, json!({"name": long, "length": 64, "maximum": 63}));
    assert_eq!(
        reply.json()["message"],
        format!("Name '{long}' is longer (64) than maximum allowed (63)")
    );
    assert_eq!(reply.header("x-error-source"), Some("gateway"));
    assert_eq!(
        upstream.requests().len(),
        1,
        "only the valid name went upstream"
    );
}

#[tokio::test]
async fn names_with_bad_first_or_last_character_do_not_match_the_pattern() {
    let (gw, upstream) = pair().await;
    for name in [
        "-orders", "orders-", "_orders", "orders_", "or.ders", "or~ders",
    ] {
        let reply = get(&format!("{}/v0/pipelines/{name}", gw.url())).await;
        let details = reply.error(400, "NameDoesNotMatchPattern");
        assert_eq!(details["name"], name);
        assert_eq!(
            details["pattern"],
            "^([A-Za-z0-9][-A-Za-z0-9_]*)?[A-Za-z0-9]$"
        );
    }
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn encoded_unicode_and_slashes_in_names_are_invalid_paths() {
    let (gw, upstream) = pair().await;
    for (path, reason) in [
        ("/v0/pipelines/caf%C3%A9/activate", "percent-encoding"),
        ("/v0/pipelines/a%2Fb/activate", "percent-encoding"),
        ("/v0/pipelines/a%2fb/stats", "percent-encoding"),
    ] {
        let reply = post(&format!("{}{path}", gw.url())).await;
        let details = reply.error(400, "InvalidPath");
        assert_eq!(details["reason"], reason, "{path}");
    }
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn encoded_path_bypass_attempts_never_reach_the_upstream() {
    let (gw, upstream) = pair().await;
    for path in [
        "/v0/pipelines/orders/%61ctivate?initial=standby",
        "/v0/pipelines/orders/activat%65",
        "/v0/pipelines/orders/./activate?initial=foo",
        "/v0/pipelines/x/../orders/activate?initial=foo",
        "/v0/pipelines/orders//activate",
        "/v0/pipelines/orders/activate/",
        "/v0/pipelines/orders;x=1/activate",
    ] {
        let request = format!(
            "POST {path} HTTP/1.1\r\nhost: gw\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        );
        let reply = raw(gw.local_addr(), request.as_bytes()).await;
        reply.error(400, "InvalidPath");
    }
    let reply = raw(
        gw.local_addr(),
        b"POST /v0/pipelines/orders\\activate HTTP/1.1\r\nhost: gw\r\nconnection: close\r\n\r\n",
    )
    .await;
    // hyper itself refuses a backslash in the request target (empty 400); either way the
    // request never reaches the upstream.
    assert_eq!(reply.status, 400);
    assert!(upstream.requests().is_empty(), "{:?}", upstream.requests());
}

#[tokio::test]
async fn accepted_initial_spellings_are_forwarded_lowercase() {
    let (gw, upstream) = pair().await;
    for (query, forwarded) in [
        ("", None),
        ("?initial=running", Some("initial=running")),
        ("?initial=paused", Some("initial=paused")),
        ("?initial=Running", Some("initial=running")),
        ("?initial=PAUSED", Some("initial=paused")),
    ] {
        upstream.clear_requests();
        let reply = post(&format!("{}/v0/pipelines/live/activate{query}", gw.url())).await;
        assert_eq!(reply.status, 202, "{query}: {}", reply.text());
        let seen = upstream.requests();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].uri.query(), forwarded, "{query}");
        assert_eq!(seen[0].uri.path(), "/v0/pipelines/live/activate");
    }
}

#[tokio::test]
async fn other_initial_values_are_invalid_activate_status() {
    let (gw, upstream) = pair().await;
    for (query, value) in [
        ("initial=standby", json!("standby")),
        ("initial=foo", json!("foo")),
        ("initial=", json!("")),
        (
            "initial=running&initial=paused",
            json!(["running", "paused"]),
        ),
    ] {
        let reply = post(&format!(
            "{}/v0/pipelines/orders/activate?{query}",
            gw.url()
        ))
        .await;
        let details = reply.error(400, "InvalidActivateStatus");
        assert_eq!(
            details,
            json!({"initial": value, "allowed": ["running", "paused"]}),
            "{query}"
        );
    }
    let reply = post(&format!(
        "{}/v0/pipelines/orders/activate?initial=running&force=true",
        gw.url()
    ))
    .await;
    let details = reply.error(400, "InvalidQueryParameter");
    assert_eq!(details["parameter"], "force");
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn activate_with_another_method_is_405_with_allow_post() {
    let (gw, upstream) = pair().await;
    for method in ["GET", "PUT", "DELETE"] {
        let reply = send(
            method,
            &format!("{}/v0/pipelines/orders/activate", gw.url()),
            &[],
            b"",
        )
        .await;
        let details = reply.error(405, "MethodNotAllowed");
        assert_eq!(reply.header("allow"), Some("POST"));
        assert_eq!(details["method"], method);
    }
    assert!(upstream.requests().is_empty());
}
