//! The TLS accept path: from an accepted TCP connection to a TLS stream and the connection's
//! facts, on the connection's own task (the accept loop never waits for a handshake).
//!
//! - The whole of it — the first bytes, the handshake — must finish within
//!   `server.tls.handshake_timeout`; a client that stalls is closed then and counted
//!   (`tls_handshakes_total{result="timeout"}`). Nothing of a failed handshake reaches the
//!   request path.
//! - The first byte is peeked: a TLS connection starts with a handshake record (`0x16`). A
//!   connection starting with an ASCII capital letter is taken for a plain HTTP request: it is
//!   read, answered with a 400 `InvalidRequest` (`details.reason = "plain_http_on_tls_port"`)
//!   and closed, with a log line. Anything else is closed at once.
//! - After the handshake the connection's facts are made: scheme `https`, and the verified
//!   client certificate's identity (`tls::client_certificate`) when one was presented.
//!   rustls verifies it in the handshake; an unverifiable one never gets here.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::context::{ClientCertificate, Connection};
use crate::errors::GatewayError;
use crate::tls::{client_certificate, HandshakeResult, TlsTerminator};

/// The first byte of a TLS record carrying a handshake message.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// How a connection failed to become a TLS stream.
enum Refused {
    PlainHttp,
    Tls(std::io::Error),
}

/// Runs the handshake under the terminator's timeout; the TLS stream and the connection's
/// facts, or `None` (logged and counted) when the connection is not one to serve.
pub async fn accept(
    stream: TcpStream,
    peer: SocketAddr,
    tls: &TlsTerminator,
) -> Option<(TlsStream<TcpStream>, Arc<Connection>)> {
    let timeout = tls.handshake_timeout();
    let outcome = tokio::time::timeout(timeout, handshake(stream, peer, tls)).await;
    let result = match &outcome {
        Ok(Ok(_)) => HandshakeResult::Ok,
        Ok(Err(Refused::PlainHttp)) => HandshakeResult::PlainHttp,
        Ok(Err(Refused::Tls(error))) => {
            tracing::debug!(%peer, %error, "TLS handshake failed");
            HandshakeResult::Failed
        }
        Err(_) => {
            tracing::debug!(%peer, ?timeout, "TLS handshake timed out; connection closed");
            HandshakeResult::Timeout
        }
    };
    tls.metrics().handshake(result);
    match outcome {
        Ok(Ok(accepted)) => Some(accepted),
        _ => None,
    }
}

async fn handshake(
    stream: TcpStream,
    peer: SocketAddr,
    tls: &TlsTerminator,
) -> Result<(TlsStream<TcpStream>, Arc<Connection>), Refused> {
    let mut first = [0u8; 1];
    let read = stream.peek(&mut first).await.map_err(Refused::Tls)?;
    if read == 0 {
        return Err(Refused::Tls(std::io::ErrorKind::UnexpectedEof.into()));
    }
    if first[0] != TLS_HANDSHAKE_RECORD {
        if first[0].is_ascii_uppercase() {
            tracing::info!(%peer, "plain HTTP on the TLS port: answered 400 and closed");
            answer_plain_http(stream).await;
            return Err(Refused::PlainHttp);
        }
        return Err(Refused::Tls(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not a TLS handshake",
        )));
    }
    let stream = TlsAcceptor::from(tls.server_config())
        .accept(stream)
        .await
        .map_err(Refused::Tls)?;
    let certificate: Option<ClientCertificate> = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(client_certificate);
    let connection = Connection::new(peer, "https", certificate);
    Ok((stream, Arc::new(connection)))
}

/// Reads one HTTP/1 request and answers it with the 400, then closes.
async fn answer_plain_http(stream: TcpStream) {
    let service = hyper::service::service_fn(|_request| async {
        Ok::<_, Infallible>(GatewayError::plain_http_on_tls_port().into_response())
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), service)
        .await;
}
