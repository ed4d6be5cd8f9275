//! The TLS handshake of an accepted connection (both listeners, when `[tls]` is
//! configured): it comes after the connection's permit, so a handshake flood is bounded
//! by the connection limits, and before any byte of the protocol. A client speaking
//! plaintext gets one plaintext answer saying the port speaks TLS.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

use super::{answer_and_close, Shared};

/// The first byte of a TLS record carrying a handshake message (a ClientHello).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// The TLS handshake of an accepted connection, within `tls_handshake_timeout_ms`. A
/// client speaking plaintext gets one plaintext answer saying so (`plaintext_answer`)
/// and is closed; a failed or slow handshake is closed. `None`: closed.
pub(super) async fn tls_handshake(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: &tokio_rustls::TlsAcceptor,
    limit: Duration,
    plaintext_answer: &[u8],
) -> Option<Box<tokio_rustls::server::TlsStream<TcpStream>>> {
    enum Outcome {
        Done(Box<tokio_rustls::server::TlsStream<TcpStream>>),
        Plaintext(TcpStream),
        Failed(String),
    }
    let outcome = tokio::time::timeout(limit, async move {
        let mut first = [0u8; 1];
        match stream.peek(&mut first).await {
            Ok(0) => return Outcome::Failed("closed before the handshake".into()),
            Err(e) => return Outcome::Failed(e.to_string()),
            Ok(_) => {}
        }
        if first[0] != TLS_HANDSHAKE_RECORD {
            return Outcome::Plaintext(stream);
        }
        match acceptor.accept(stream).await {
            Ok(tls) => Outcome::Done(Box::new(tls)),
            Err(e) => Outcome::Failed(e.to_string()),
        }
    })
    .await;
    match outcome {
        Ok(Outcome::Done(tls)) => Some(tls),
        Ok(Outcome::Plaintext(mut stream)) => {
            tracing::debug!(%peer, "plaintext on a TLS port; told so and closed");
            answer_and_close(&mut stream, plaintext_answer).await;
            None
        }
        Ok(Outcome::Failed(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            None
        }
    }
}

pub(super) fn tls_timeout(shared: &Shared) -> Duration {
    Duration::from_millis(shared.service.config.limits.tls_handshake_timeout_ms)
}
