//! Transports: the native protocol over TCP (one JSON frame per line) and over WebSocket
//! (`/ws`, one frame per text message) on the HTTP listener. Both feed the same session
//! loop; a bad connection never takes down a listener. This module is the accept path;
//! beside it, one file per concern: `admission.rs` (the connection limits),
//! `handshake.rs` (TLS on an accepted connection), `line.rs` (the line protocol over TCP
//! and in-process pipes), `http.rs` (hyper, the router, readiness, origins, the redirect
//! to HTTPS) and `ws.rs` (the WebSocket upgrade and transport).
//!
//! **One accept path.** Both listeners run [`accept_loop`]: every accepted socket gets
//! TCP keep-alive, then a [`Permit`] from [`Admission`] (the server's connection limit
//! and the per-address limit) before anything is read, and holds it for its whole life
//! (an HTTP connection that becomes a WebSocket keeps its permit). A refused connection
//! gets one short answer (`closing{code:"too_many_connections"}` or HTTP 503) and is
//! closed. Accept errors (out of file descriptors) back off with growing sleeps and
//! rate-limited logging.
//!
//! **TLS.** When configured ([`crate::tls`]), both listeners speak TLS only: once the
//! connection has its permit, the TLS handshake runs within `tls_handshake_timeout_ms`,
//! and the session (or hyper) is served on the encrypted stream. A client that opens
//! with anything but a TLS handshake record gets one plaintext answer saying the port
//! speaks TLS (`closing{code:"tls_required"}`, or HTTP 400) and is closed. HTTPS
//! responses carry Strict-Transport-Security. An optional plaintext listener
//! ([`Kind::Redirect`]) answers every request with a redirect to HTTPS.

mod admission;
mod files;
mod handshake;
mod http;
mod line;
mod ws;

pub use admission::{Admission, Permit, Refused};
pub use http::{normalize_origin, router};
pub use line::serve_local;
pub use ws::{WS_MAX_WRITE_BUFFER, WS_READ_BUFFER};

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use salon_proto::CloseCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::protocol::native::NATIVE;
use crate::protocol::WireFormat;
use crate::service::Service;
use crate::tls::Tls;
use http::{http_connection, https_or_http, redirect_router};
use line::tcp_session;

/// TCP keep-alive on every accepted socket: first probe after this much silence, then
/// every [`KEEPALIVE_INTERVAL`], [`KEEPALIVE_RETRIES`] times, so a peer that vanished
/// (half-open connection) is detected by the kernel in about 100 s.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_RETRIES: u32 = 4;

/// Accept errors: the first retry waits this long, each next one twice as long, up to
/// [`ACCEPT_BACKOFF_MAX`]; one warning per [`ACCEPT_LOG_EVERY`] at most.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
const ACCEPT_LOG_EVERY: Duration = Duration::from_secs(5);

/// A refused connection gets its answer, then the server reads (and drops) what the
/// client still sends for at most this long, at most [`REFUSAL_DRAIN_BYTES`], so that the
/// close is orderly and the answer is not lost to a reset.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);
const REFUSAL_DRAIN_BYTES: usize = 16 * 1024;

/// What every accepted connection needs.
#[derive(Clone)]
pub struct Shared {
    pub service: Arc<Service>,
    pub sessions: TaskTracker,
    pub admission: Arc<Admission>,
    pub stop_reading: CancellationToken,
    /// TLS on the TCP and HTTP listeners, when configured.
    pub tls: Option<Tls>,
    /// Held by the readiness probe in progress: however often `/readyz` is asked, it
    /// uses at most one database connection at a time.
    pub readiness: Arc<tokio::sync::Mutex<()>>,
}

/// What an accept loop serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The native protocol, one frame per line (TLS when configured).
    Line,
    Http,
    /// Plaintext HTTP that redirects to HTTPS on this port.
    Redirect(u16),
}

/// Logs a recurring failure at most once per period, with how many were not logged.
struct Throttled {
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttled {
    fn warn(&mut self, error: &io::Error) {
        if self.last.is_some_and(|t| t.elapsed() < ACCEPT_LOG_EVERY) {
            self.suppressed += 1;
            return;
        }
        tracing::warn!(
            error = %error,
            suppressed = self.suppressed,
            "accept failed (out of file descriptors?); backing off"
        );
        self.last = Some(Instant::now());
        self.suppressed = 0;
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Shared,
    stop_accepting: CancellationToken,
    kind: Kind,
) {
    let router = match kind {
        Kind::Redirect(port) => redirect_router(port),
        _ => router(shared.clone()),
    };
    let mut backoff = Duration::ZERO;
    let mut log = Throttled {
        last: None,
        suppressed: 0,
    };
    loop {
        let accepted = tokio::select! {
            _ = stop_accepting.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Usually out of file descriptors: wait, longer each time, instead of
                // spinning (and logging) once per failed accept.
                log.warn(&e);
                backoff = (backoff * 2).clamp(ACCEPT_BACKOFF_MIN, ACCEPT_BACKOFF_MAX);
                tokio::select! {
                    _ = stop_accepting.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => continue,
                }
            }
        };
        backoff = Duration::ZERO;
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(KEEPALIVE_IDLE)
            .with_interval(KEEPALIVE_INTERVAL)
            .with_retries(KEEPALIVE_RETRIES);
        let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
        let permit = match shared.admission.admit(peer.ip()) {
            Ok(p) => p,
            Err(why) => {
                refuse(stream, kind, &shared.admission, why);
                continue;
            }
        };
        let tracker = shared.sessions.clone();
        match kind {
            Kind::Line => {
                tracker.spawn(tcp_session(stream, peer, shared.clone(), permit));
            }
            Kind::Http => {
                tracker.spawn(https_or_http(
                    stream,
                    peer,
                    shared.clone(),
                    permit,
                    router.clone(),
                    stop_accepting.clone(),
                ));
            }
            Kind::Redirect(_) => {
                tracker.spawn(http_connection(
                    stream,
                    peer,
                    shared.clone(),
                    permit,
                    router.clone(),
                    stop_accepting.clone(),
                    false,
                ));
            }
        }
    }
}

/// Answers a refused connection and closes it, in a task of its own (bounded in time
/// and in number).
fn refuse(stream: TcpStream, kind: Kind, admission: &Admission, why: Refused) {
    let message = admission.refusal_message(why);
    let answer = match kind {
        Kind::Line => NATIVE
            .encode_closing(CloseCode::TooManyConnections, &message, None)
            .to_vec(),
        Kind::Http | Kind::Redirect(_) => format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n\
             content-length: {}\r\nretry-after: 10\r\nconnection: close\r\n\r\n{message}\n",
            message.len() + 1
        )
        .into_bytes(),
    };
    let Ok(slot) = admission.refusals.clone().try_acquire_owned() else {
        // Too many lingering already: try once without waiting, then close.
        let _ = stream.try_write(&answer);
        return;
    };
    tokio::spawn(async move {
        let _slot = slot;
        let mut stream = stream;
        answer_and_close(&mut stream, &answer).await;
    });
}

/// Writes `answer`, closes the sending side and reads (at most `REFUSAL_DRAIN_BYTES`)
/// until the peer closes, all within `REFUSAL_LINGER`: closing with unread input would
/// reset the connection and could lose the answer.
pub(super) async fn answer_and_close(stream: &mut TcpStream, answer: &[u8]) {
    let _ = tokio::time::timeout(REFUSAL_LINGER, async {
        stream.write_all(answer).await?;
        stream.shutdown().await?;
        let mut buf = [0u8; 1024];
        let mut drained = 0;
        while drained < REFUSAL_DRAIN_BYTES {
            match stream.read(&mut buf).await? {
                0 => break,
                n => drained += n,
            }
        }
        io::Result::Ok(())
    })
    .await;
}

/// Accepts connections on `listener` until `stop_accepting`, serving each as `kind`.
pub async fn serve(
    listener: TcpListener,
    kind: Kind,
    shared: Shared,
    stop_accepting: CancellationToken,
) {
    accept_loop(listener, shared, stop_accepting, kind).await
}
