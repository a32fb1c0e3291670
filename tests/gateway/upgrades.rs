//! Protocol upgrades cannot carry requests around the stack: only a WebSocket upgrade on the
//! manager's WebSocket endpoint (`query`) becomes a tunnel; `Upgrade` anywhere else is
//! stripped, and an upstream `101` nobody asked for is a 502, never a tunnel.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

/// An upstream that answers every request with `101 Switching Protocols` (to `protocol`) and
/// then records every byte it receives on the connection.
async fn upgrading_upstream(protocol: &'static str) -> (SocketAddr, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Arc::new(Mutex::new(Vec::new()));
    let log = received.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut buffer = [0u8; 4096];
                let mut answered = false;
                loop {
                    let n = match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    log.lock().unwrap().extend_from_slice(&buffer[..n]);
                    if !answered {
                        answered = true;
                        let head = format!(
                            "HTTP/1.1 101 Switching Protocols\r\nupgrade: {protocol}\r\n\
                             connection: upgrade\r\nsec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
                        );
                        if stream.write_all(head.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, received)
}

async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read_exact(&mut byte).await.is_err() {
            break;
        }
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).to_lowercase()
}

const SMUGGLED: &[u8] = b"DELETE /v0/pipelines/victim HTTP/1.1\r\nhost: manager\r\n\r\n";

#[tokio::test]
async fn h2c_and_websocket_upgrades_off_the_websocket_endpoint_are_stripped() {
    let (gw, upstream) = pair().await;
    for (path, upgrade) in [
        ("/v0/pipelines", "h2c"),
        ("/v0/pipelines/orders", "websocket"),
        ("/v0/pipelines/orders/logs", "websocket"),
        // The WebSocket endpoint, but not to a WebSocket.
        ("/v0/pipelines/live/query", "h2c"),
        ("/v0/pipelines/live/query", "websocket, h2c"),
    ] {
        let request = format!(
            "GET {path} HTTP/1.1\r\nhost: gw\r\nconnection: Upgrade, HTTP2-Settings\r\n\
             upgrade: {upgrade}\r\nhttp2-settings: AAMAAABkAAQAAP__\r\n\
             sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             connection: close\r\n\r\n"
        );
        let reply = raw(gw.local_addr(), request.as_bytes()).await;
        assert_ne!(reply.status, 101, "{path} {upgrade}: no upgrade");
        let seen = upstream.requests();
        let last = seen.last().expect("the request reached the manager");
        assert_eq!(last.uri.path(), path);
        for header in ["upgrade", "http2-settings", "connection"] {
            assert!(
                last.headers.get(header).is_none(),
                "{path} {upgrade}: {header} stripped: {:?}",
                last.headers
            );
        }
    }
}

#[tokio::test]
async fn an_unasked_for_101_is_502_and_nothing_is_tunnelled() {
    let (addr, received) = upgrading_upstream("websocket").await;
    let gw = gateway(&config_for(&format!("http://{addr}"), "")).await;
    let mut stream = TcpStream::connect(gw.local_addr()).await.unwrap();
    // A plain request, then (as if a tunnel were open) a request the stack never checked.
    stream
        .write_all(b"GET /v0/pipelines HTTP/1.1\r\nhost: gw\r\nconnection: Upgrade\r\nupgrade: h2c\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut stream).await;
    assert!(head.starts_with("http/1.1 502"), "{head}");
    let _ = stream.write_all(SMUGGLED).await;
    let _ = stream.write_all(SMUGGLED).await;
    drop(stream);
    // The error body is in the schema.
    let reply = get(&format!("{}/v0/pipelines", gw.url())).await;
    let details = reply.error(502, "UpstreamUnavailable");
    assert_eq!(details["reason"], "unexpected protocol upgrade");
    let text = String::from_utf8_lossy(&received.lock().unwrap()).into_owned();
    assert!(
        !text.contains("DELETE"),
        "smuggled bytes reached the upstream: {text}"
    );
}

#[tokio::test]
async fn a_101_to_another_protocol_than_websocket_is_502_even_on_query() {
    let (addr, received) = upgrading_upstream("h2c").await;
    let gw = gateway(&config_for(&format!("http://{addr}"), "")).await;
    let mut stream = TcpStream::connect(gw.local_addr()).await.unwrap();
    stream
        .write_all(
            b"GET /v0/pipelines/live/query HTTP/1.1\r\nhost: gw\r\nconnection: Upgrade\r\n\
upgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .await
        .unwrap();
    let head = read_head(&mut stream).await;
    assert!(head.starts_with("http/1.1 502"), "{head}");
    let _ = stream.write_all(SMUGGLED).await;
    drop(stream);
    let reply = get(&format!("{}/v0/pipelines/live/query", gw.url())).await;
    let details = reply.error(502, "UpstreamUnavailable");
    assert_eq!(details["reason"], "unexpected protocol upgrade");
    let text = String::from_utf8_lossy(&received.lock().unwrap()).into_owned();
    assert!(!text.contains("DELETE"), "{text}");
}

#[tokio::test]
async fn upgrade_on_a_delete_never_opens_a_tunnel_with_auth_on() {
    let upstream = standin("a").await;
    let key = "apikey:".to_owned() + &"r".repeat(128);
    let hash = pipeline_gateway::auth::apikey::hash(&key);
    let gw = gateway(&config_for(&upstream.url(), "").replace(
        "[auth]\nmode = \"off\"",
        &format!(
            "[auth]\n[[auth.api_keys]]\nname = \"reader\"\nsha256 = \"{hash}\"\nrole = \"read\""
        ),
    ))
    .await;
    // A read key may not delete: the upgrade header changes nothing about that.
    let request = format!(
        "DELETE /v0/pipelines/orders HTTP/1.1\r\nhost: gw\r\nauthorization: Bearer {key}\r\n\
         connection: Upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\n\
         sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nconnection: close\r\n\r\n"
    );
    let reply = raw(gw.local_addr(), request.as_bytes()).await;
    let details = reply.error(403, "InsufficientPermissions");
    assert_eq!(details["required"], "write");
    assert!(upstream.requests().is_empty());
}
