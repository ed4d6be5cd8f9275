//! Transports: the native protocol over TCP (one JSON frame per line) and over WebSocket
//! (`/ws`, one frame per text message) on the HTTP listener. Both feed the same session
//! loop; a bad connection never takes down a listener.
//!
//! **One accept path.** Both listeners run [`accept_loop`]: every accepted socket gets
//! TCP keep-alive, then a [`Permit`] from [`Admission`] (the server's connection limit
//! and the per-address limit) before anything is read, and holds it for its whole life
//! (an HTTP connection that becomes a WebSocket keeps its permit). A refused connection
//! gets one short answer (`closing{code:"too_many_connections"}` or HTTP 503) and is
//! closed. Accept errors (out of file descriptors) back off with growing sleeps and
//! rate-limited logging.
//!
//! **HTTP** is served by hyper directly (not `axum::serve`) so that reading a request's
//! headers has a deadline (`http_header_timeout_ms`, against slowloris) and the
//! WebSocket handshake too. The WebSocket upgrade is done here with tokio-tungstenite,
//! whose configuration bounds the bytes a client can make the server hold by sending
//! Ping frames without reading the Pongs ([`WS_MAX_WRITE_BUFFER`]).
//!
//! **TLS.** When configured ([`crate::tls`]), both listeners speak TLS only: once the
//! connection has its permit, the TLS handshake runs within `tls_handshake_timeout_ms`,
//! and the session (or hyper) is served on the encrypted stream. A client that opens
//! with anything but a TLS handshake record gets one plaintext answer saying the port
//! speaks TLS (`closing{code:"tls_required"}`, or HTTP 400) and is closed. HTTPS
//! responses carry Strict-Transport-Security. An optional plaintext listener
//! ([`serve_redirect`]) answers every request with a redirect to HTTPS.
//!
//! **Origin.** `/ws` refuses (403, before the upgrade) a handshake whose `Origin` is
//! neither the server's own (the `Host` header's, with the scheme served) nor listed in
//! `allowed_origins`; a handshake without `Origin` (not a browser) is accepted.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use salon_proto::CloseCode;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data as OpData, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;
use tokio_util::codec::{AnyDelimiterCodec, AnyDelimiterCodecError, FramedRead};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::live::CloseReason;
use crate::lock;
use crate::protocol::native::NATIVE;
use crate::protocol::WireFormat;
use crate::service::Service;
use crate::session::{self, FrameWriter, Inbound};
use crate::tls::Tls;

/// Initial read buffer of a line connection, in bytes (tokio-util's default is 8 KiB).
const READ_BUFFER_INITIAL: usize = 512;

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
/// Refused connections lingering at once; beyond that they are closed at once.
const REFUSALS_IN_FLIGHT: usize = 256;

/// Most bytes an HTTP connection buffers (a request's headers must fit; hyper's default
/// is ~400 KiB).
const HTTP_MAX_BUFFER: usize = 64 * 1024;

/// How long an HTTP connection that is not a WebSocket may take to finish its requests
/// in progress once the server stops.
const HTTP_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// WebSocket buffers. Reads go through a buffer of [`WS_READ_BUFFER`] bytes (grown for a
/// larger frame, up to 4 × `max_frame_bytes`). Frames written are gathered up to
/// [`WS_WRITE_BUFFER`] before a write; an outbound message longer than [`WS_FRAGMENT`] is
/// sent as fragments of that size. What the client has not taken yet stays in the
/// write buffer, bounded by [`WS_MAX_WRITE_BUFFER`]: that bounds the Pongs a client
/// sending Pings without reading can make the server hold (further Pongs are coalesced
/// into one), and a write that would go past it fails, which closes the session.
pub const WS_READ_BUFFER: usize = 16 * 1024;
pub const WS_WRITE_BUFFER: usize = 64 * 1024;
pub const WS_FRAGMENT: usize = 64 * 1024;
pub const WS_MAX_WRITE_BUFFER: usize = 256 * 1024;

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

// ----- admission ------------------------------------------------------------------------

/// The connection limits: `max_connections` for the whole server and
/// `max_connections_per_address` for each IP address (except the exempt ones).
pub struct Admission {
    total: Arc<Semaphore>,
    /// Open connections per address; an address leaves the map with its last connection,
    /// so it holds at most `max_connections` entries.
    per_address: Mutex<HashMap<IpAddr, usize>>,
    max_per_address: usize,
    exempt: Vec<IpAddr>,
    /// Refused connections still lingering (see [`REFUSAL_LINGER`]).
    refusals: Arc<Semaphore>,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The server holds `max_connections`.
    Server,
    /// The client's address holds `max_connections_per_address`.
    Address,
}

/// A connection's place, held for its whole life; dropping it frees the place.
pub struct Permit {
    _total: OwnedSemaphorePermit,
    /// The address counted, unless exempt.
    address: Option<IpAddr>,
    admission: Arc<Admission>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(address) = self.address {
            let mut map = lock(&self.admission.per_address);
            if let Some(n) = map.get_mut(&address) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&address);
                }
            }
        }
    }
}

impl Admission {
    pub fn new(limits: &crate::Limits) -> Arc<Admission> {
        Arc::new(Admission {
            total: Arc::new(Semaphore::new(limits.max_connections)),
            per_address: Mutex::new(HashMap::new()),
            max_per_address: limits.max_connections_per_address,
            exempt: limits
                .connection_limit_exempt
                .iter()
                .map(|a| a.to_canonical())
                .collect(),
            refusals: Arc::new(Semaphore::new(REFUSALS_IN_FLIGHT)),
        })
    }

    /// Takes a place for a connection from `address`, or says which limit refuses it.
    pub fn admit(self: &Arc<Self>, address: IpAddr) -> Result<Permit, Refused> {
        let address = address.to_canonical();
        let counted = !self.exempt.contains(&address);
        // The address first: a flood from one address must not take the server's places.
        if counted {
            let mut map = lock(&self.per_address);
            let n = map.entry(address).or_insert(0);
            if *n >= self.max_per_address {
                return Err(Refused::Address);
            }
            *n += 1;
        }
        // From here on, dropping the permit (or this guard) gives the address's place back.
        let total = match self.total.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if counted {
                    let mut map = lock(&self.per_address);
                    if let Some(n) = map.get_mut(&address) {
                        *n -= 1;
                        if *n == 0 {
                            map.remove(&address);
                        }
                    }
                }
                return Err(Refused::Server);
            }
        };
        Ok(Permit {
            _total: total,
            address: counted.then_some(address),
            admission: self.clone(),
        })
    }

    fn refusal_message(&self, why: Refused) -> String {
        match why {
            Refused::Server => {
                "the server has reached its connection limit; try again later".to_owned()
            }
            Refused::Address => format!(
                "too many connections from your address (at most {}); close some and try again",
                self.max_per_address
            ),
        }
    }
}

// ----- the accept loop ------------------------------------------------------------------

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
async fn answer_and_close(stream: &mut TcpStream, answer: &[u8]) {
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

// ----- TLS ------------------------------------------------------------------------------

/// The first byte of a TLS record carrying a handshake message (a ClientHello).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// The TLS handshake of an accepted connection, within `tls_handshake_timeout_ms`. A
/// client speaking plaintext gets one plaintext answer saying so (`plaintext_answer`)
/// and is closed; a failed or slow handshake is closed. `None`: closed.
async fn tls_handshake(
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

fn tls_timeout(shared: &Shared) -> Duration {
    Duration::from_millis(shared.service.config.limits.tls_handshake_timeout_ms)
}

// ----- TCP ------------------------------------------------------------------------------

async fn tcp_session(stream: TcpStream, peer: SocketAddr, shared: Shared, _permit: Permit) {
    let _ = stream.set_nodelay(true);
    match shared.tls.clone() {
        None => {
            let (read, write) = stream.into_split();
            line_session(read, write, peer, salon_proto::Transport::Tcp, shared).await;
        }
        Some(tls) => {
            let answer = NATIVE.encode_closing(
                CloseCode::TlsRequired,
                "this port speaks TLS: connect with TLS (e.g. salon admin --tls)",
                None,
            );
            let limit = tls_timeout(&shared);
            let Some(stream) = tls_handshake(stream, peer, &tls.line, limit, &answer).await else {
                return;
            };
            let (read, write) = tokio::io::split(stream);
            line_session(read, write, peer, salon_proto::Transport::Tcp, shared).await;
        }
    }
}

/// In-process connections (the server console): the same line protocol over an
/// in-memory pipe. The sender side is held by whoever opens such connections. They take
/// no place in the connection limits and have no login or idle timeout.
pub async fn serve_local(
    mut incoming: mpsc::Receiver<DuplexStream>,
    shared: Shared,
    stop_accepting: CancellationToken,
) {
    let peer = SocketAddr::from(([127, 0, 0, 1], 0));
    loop {
        let stream = tokio::select! {
            _ = stop_accepting.cancelled() => break,
            stream = incoming.recv() => match stream {
                Some(stream) => stream,
                None => break,
            },
        };
        let shared = shared.clone();
        shared.sessions.clone().spawn(async move {
            let (read, write) = tokio::io::split(stream);
            line_session(read, write, peer, salon_proto::Transport::Local, shared).await;
        });
    }
}

/// A session speaking newline-delimited JSON over any byte stream.
async fn line_session<R, W>(
    read: R,
    write: W,
    peer: SocketAddr,
    transport: salon_proto::Transport,
    shared: Shared,
) where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let max = shared.service.config.limits.max_frame_bytes;
    // One byte more than the limit for a `\r` before the `\n`: the limit counts the frame
    // without its terminator, whichever it is (checked once the `\r` is trimmed).
    let codec = AnyDelimiterCodec::new_with_max_length(b"\n".to_vec(), Vec::new(), max + 1);
    // A small initial buffer: most connections are idle most of the time, and it grows
    // on demand up to `max_frame_bytes`.
    let frames =
        FramedRead::with_capacity(read, codec, READ_BUFFER_INITIAL).map(move |item| match item {
            Ok(line) => line_frame(trim_cr(line), max),
            Err(AnyDelimiterCodecError::MaxChunkLengthExceeded) => Inbound::TooLarge,
            Err(AnyDelimiterCodecError::Io(_)) => Inbound::Closed,
        });
    let writer = LineWriter { half: write };
    session::run(
        &NATIVE,
        shared.service,
        peer,
        transport,
        Box::pin(frames),
        writer,
        shared.stop_reading,
    )
    .await;
}

/// One line without its terminator: a frame, too large, or blank (empty or only spaces
/// and tabs: a harmless keep-alive, ignored).
fn line_frame(line: Bytes, max: usize) -> Inbound {
    if line.len() > max {
        Inbound::TooLarge
    } else if line.iter().all(|b| matches!(b, b' ' | b'\t')) {
        Inbound::KeepAlive
    } else {
        Inbound::Frame(line)
    }
}

fn trim_cr(line: Bytes) -> Bytes {
    match line.last() {
        Some(b'\r') => line.slice(..line.len() - 1),
        _ => line,
    }
}

struct LineWriter<W> {
    half: W,
}

impl<W: AsyncWrite + Unpin + Send + 'static> FrameWriter for LineWriter<W> {
    /// One vectored write of all the frames, straight from the shared buffers: no copy,
    /// and no per-connection write buffer to keep.
    async fn write_frames(&mut self, frames: &[Bytes]) -> io::Result<()> {
        let mut slices: Vec<io::IoSlice<'_>> = frames.iter().map(|f| io::IoSlice::new(f)).collect();
        let mut pending = &mut slices[..];
        while !pending.is_empty() {
            let n = self.half.write_vectored(pending).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            io::IoSlice::advance_slices(&mut pending, n);
        }
        Ok(())
    }

    async fn close(&mut self, _reason: Option<&CloseReason>) {
        let _ = self.half.shutdown().await;
    }
}

// ----- HTTP + WebSocket -----------------------------------------------------------------

pub fn router(shared: Shared) -> Router {
    Router::new()
        .route("/ws", get(ws_upgrade))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .merge(crate::web::routes())
        .with_state(shared)
}

/// How long `/readyz` waits for the database (capped by the database timeout).
const READINESS_TIMEOUT: Duration = Duration::from_secs(2);

/// `/readyz`: `200 ready` when the server is not shutting down and the database answers
/// a cheap query within [`READINESS_TIMEOUT`]; otherwise `503` with the reason.
async fn readyz(State(shared): State<Shared>) -> (StatusCode, &'static str) {
    let service = &shared.service;
    if service.is_shutting_down() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n");
    }
    let limit = READINESS_TIMEOUT.min(
        Duration::from_millis(service.config.limits.database_timeout_ms)
            .max(Duration::from_millis(1)),
    );
    let probe = async {
        let _one_at_a_time = shared.readiness.lock().await;
        service.store.ping(limit).await
    };
    match tokio::time::timeout(limit, probe).await {
        Ok(Ok(())) if !service.is_shutting_down() => (StatusCode::OK, "ready\n"),
        Ok(Ok(())) => (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n"),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness probe: the database did not answer");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n")
        }
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n"),
    }
}

/// The connection's permit, in every request's extensions: `/ws` takes it into the
/// WebSocket session; otherwise it is dropped with the connection.
#[derive(Clone)]
struct PermitSlot(Arc<Mutex<Option<Permit>>>);

/// Whether the request came over TLS (in every request's extensions).
#[derive(Clone, Copy)]
struct Secure(bool);

/// An accepted HTTP connection: the TLS handshake first when TLS is on.
async fn https_or_http(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Shared,
    permit: Permit,
    router: Router,
    stop: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    match shared.tls.clone() {
        None => http_connection(stream, peer, shared, permit, router, stop, false).await,
        Some(tls) => {
            let message = "This port speaks HTTPS: use https:// (and wss:// for /ws).\n";
            let answer = format!(
                "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\n\
                 content-length: {}\r\nconnection: close\r\n\r\n{message}",
                message.len()
            );
            let limit = tls_timeout(&shared);
            let Some(stream) =
                tls_handshake(stream, peer, &tls.http, limit, answer.as_bytes()).await
            else {
                return;
            };
            http_connection(stream, peer, shared, permit, router, stop, true).await
        }
    }
}

/// Serves one HTTP/1.1 connection until it closes, upgrades to a WebSocket, or the
/// server stops.
async fn http_connection<S>(
    stream: S,
    peer: SocketAddr,
    shared: Shared,
    permit: Permit,
    router: Router,
    stop: CancellationToken,
    secure: bool,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let slot = PermitSlot(Arc::new(Mutex::new(Some(permit))));
    let inner = TowerToHyperService::new(router);
    let hsts = match shared.service.config.tls.hsts_max_age_secs {
        0 => None,
        age => HeaderValue::from_str(&format!("max-age={age}")).ok(),
    }
    .filter(|_| secure);
    let service =
        hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            request.extensions_mut().insert(slot.clone());
            request.extensions_mut().insert(Secure(secure));
            let response = hyper::service::Service::call(&inner, request);
            let hsts = hsts.clone();
            async move {
                let mut response = response.await?;
                if let Some(hsts) = hsts {
                    response
                        .headers_mut()
                        .insert(header::STRICT_TRANSPORT_SECURITY, hsts);
                }
                Ok::<_, std::convert::Infallible>(response)
            }
        });
    let timeout = Duration::from_millis(shared.service.config.limits.http_header_timeout_ms);
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .max_buf_size(HTTP_MAX_BUFFER)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = stop.cancelled() => {
            // Requests in progress finish; an idle keep-alive connection closes now.
            connection.as_mut().graceful_shutdown();
            match tokio::time::timeout(HTTP_SHUTDOWN_GRACE, connection).await {
                Ok(result) => result,
                Err(_) => return,
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "HTTP connection ended");
    }
}

/// The redirect listener's only answer: `308` to the same host and path over HTTPS.
fn redirect_router(https_port: u16) -> Router {
    Router::new().fallback(move |headers: HeaderMap, uri: axum::http::Uri| async move {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .and_then(host_without_port);
        let Some(host) = host else {
            return (
                StatusCode::BAD_REQUEST,
                "this address redirects to HTTPS; a Host header is needed\n",
            )
                .into_response();
        };
        let port = if https_port == 443 {
            String::new()
        } else {
            format!(":{https_port}")
        };
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        match HeaderValue::from_str(&format!("https://{host}{port}{path}")) {
            Ok(location) => {
                let mut response = StatusCode::PERMANENT_REDIRECT.into_response();
                response.headers_mut().insert(header::LOCATION, location);
                response
            }
            Err(_) => (StatusCode::BAD_REQUEST, "bad request\n").into_response(),
        }
    })
}

/// `host[:port]` → `host` (IPv6 in brackets kept), if it is a plain host name or address.
fn host_without_port(host: &str) -> Option<&str> {
    let valid = |h: &str| {
        !h.is_empty()
            && h.len() <= 255
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
    };
    let name = if host.starts_with('[') {
        &host[..host.find(']')? + 1]
    } else {
        host.split(':').next()?
    };
    valid(name).then_some(name)
}

/// `scheme://host[:port]`, lower-case, without the scheme's default port or a trailing
/// `/`; `None` if it is not such an origin (e.g. `null`, or one with a path).
pub fn normalize_origin(origin: &str) -> Option<String> {
    let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
    let (scheme, rest) = origin.split_once("://")?;
    let default_port = match scheme {
        "http" => ":80",
        "https" => ":443",
        _ => return None,
    };
    let name = host_without_port(rest)?;
    let port = &rest[name.len()..];
    if !(port.is_empty()
        || (port.len() > 1
            && port.starts_with(':')
            && port[1..].bytes().all(|b| b.is_ascii_digit())))
    {
        return None;
    }
    let port = if port == default_port { "" } else { port };
    Some(format!("{scheme}://{name}{port}"))
}

/// Whether a WebSocket handshake's `Origin` may open a session: the server's own origin
/// (`Host` with the scheme served) or one listed in `allowed_origins`.
fn origin_allowed(
    origin: &HeaderValue,
    host: Option<&HeaderValue>,
    secure: bool,
    allowed: &[String],
) -> bool {
    let Some(origin) = origin.to_str().ok().and_then(normalize_origin) else {
        return false;
    };
    let scheme = if secure { "https" } else { "http" };
    let own = host
        .and_then(|h| h.to_str().ok())
        .and_then(|h| normalize_origin(&format!("{scheme}://{h}")));
    own.as_deref() == Some(origin.as_str())
        || allowed
            .iter()
            .any(|a| normalize_origin(a).as_deref() == Some(origin.as_str()))
}

/// `GET /ws`: the WebSocket handshake (RFC 6455), then the session on the upgraded
/// connection, which keeps the HTTP connection's permit.
async fn ws_upgrade(State(shared): State<Shared>, mut request: Request) -> Response {
    let headers = request.headers();
    if let Some(origin) = headers.get(header::ORIGIN) {
        let secure = request.extensions().get::<Secure>().is_some_and(|s| s.0);
        let allowed = &shared.service.config.allowed_origins;
        if !origin_allowed(origin, headers.get(header::HOST), secure, allowed) {
            return (
                StatusCode::FORBIDDEN,
                "this page's origin may not open the WebSocket (not the server's own origin, \
                 nor in allowed_origins)\n",
            )
                .into_response();
        }
    }
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    if !has_token(header::CONNECTION, "upgrade") || !has_token(header::UPGRADE, "websocket") {
        return (
            StatusCode::BAD_REQUEST,
            "this endpoint speaks WebSocket only (Connection: upgrade, Upgrade: websocket)",
        )
            .into_response();
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        let mut response = (
            StatusCode::UPGRADE_REQUIRED,
            "unsupported WebSocket version; use 13",
        )
            .into_response();
        response.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return response;
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return (StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key").into_response();
    };
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let peer = match request.extensions().get::<ConnectInfo<SocketAddr>>() {
        Some(ConnectInfo(peer)) => *peer,
        None => SocketAddr::from(([0, 0, 0, 0], 0)),
    };
    let permit = request
        .extensions()
        .get::<PermitSlot>()
        .and_then(|slot| lock(&slot.0).take());
    let Some(permit) = permit else {
        // Only a connection accepted by `accept_loop` has one.
        return (StatusCode::SERVICE_UNAVAILABLE, "no connection slot").into_response();
    };
    let on_upgrade = hyper::upgrade::on(&mut request);
    let handshake = Duration::from_millis(shared.service.config.limits.http_header_timeout_ms);
    let tracker = shared.sessions.clone();
    tracker.spawn(async move {
        // The handshake completes once this response is written and hyper hands over
        // the connection; bounded like the request's headers.
        let upgraded = match tokio::time::timeout(handshake, on_upgrade).await {
            Ok(Ok(upgraded)) => upgraded,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "WebSocket upgrade failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "WebSocket handshake timed out");
                return;
            }
        };
        let max = shared.service.config.limits.max_frame_bytes;
        let socket = WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            Role::Server,
            Some(ws_config(max)),
        )
        .await;
        ws_session(socket, peer, shared, permit).await;
    });
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let h: &mut HeaderMap = response.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(accept) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    response
}

fn ws_config(max_frame_bytes: usize) -> WebSocketConfig {
    // The hard ceiling on what is read sits above our limit so that an oversized frame
    // is read and answered with our own `frame_too_large` reason.
    let ceiling = max_frame_bytes.saturating_mul(4);
    WebSocketConfig::default()
        .read_buffer_size(WS_READ_BUFFER)
        .write_buffer_size(WS_WRITE_BUFFER)
        .max_write_buffer_size(WS_MAX_WRITE_BUFFER)
        .max_message_size(Some(ceiling))
        .max_frame_size(Some(ceiling))
}

type Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

async fn ws_session(socket: Ws, peer: SocketAddr, shared: Shared, _permit: Permit) {
    let max = shared.service.config.limits.max_frame_bytes;
    let (sink, stream) = socket.split();
    let frames = stream.filter_map(move |msg| {
        std::future::ready(match msg {
            Ok(Message::Text(text)) => Some(sized(Bytes::from(text), max)),
            Ok(Message::Binary(data)) => Some(sized(data, max)),
            // The answer to the server's probe (or any Pong): the client is alive.
            Ok(Message::Pong(_)) => Some(Inbound::KeepAlive),
            // tungstenite answers Pings itself (within the write buffer's bound). A Ping
            // is not taken as a sign of life: a client that sends Pings and never reads
            // does not answer the probe and is closed at the idle timeout.
            Ok(Message::Ping(_) | Message::Frame(_)) => None,
            Ok(Message::Close(_)) => Some(Inbound::Closed),
            Err(tungstenite::Error::Utf8(_)) => Some(Inbound::InvalidUtf8),
            Err(tungstenite::Error::Capacity(_)) => Some(Inbound::TooLarge),
            Err(_) => Some(Inbound::Closed),
        })
    });
    session::run(
        &NATIVE,
        shared.service,
        peer,
        salon_proto::Transport::Websocket,
        Box::pin(frames),
        WsWriter {
            sink,
            format: &NATIVE,
        },
        shared.stop_reading,
    )
    .await;
}

fn sized(frame: Bytes, max: usize) -> Inbound {
    if frame.len() > max {
        Inbound::TooLarge
    } else {
        Inbound::Frame(frame)
    }
}

struct WsWriter {
    sink: SplitSink<Ws, Message>,
    /// To recognise the keep-alive probe, sent as a Ping frame instead.
    format: &'static dyn WireFormat,
}

impl WsWriter {
    async fn feed(&mut self, message: Message) -> io::Result<()> {
        self.sink.feed(message).await.map_err(io::Error::other)
    }
}

impl FrameWriter for WsWriter {
    async fn write_frames(&mut self, frames: &[Bytes]) -> io::Result<()> {
        for frame in frames {
            if self.format.is_probe(frame) {
                // The keep-alive probe is a Ping frame on WebSocket; browsers answer it.
                self.feed(Message::Ping(Bytes::new())).await?;
                continue;
            }
            let body = frame.slice(..frame.len().saturating_sub(1)); // drop the newline
            if body.len() <= WS_FRAGMENT {
                let text = Utf8Bytes::try_from(body)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                self.feed(Message::Text(text)).await?;
                continue;
            }
            // A long message goes out in fragments, so that the write buffer's bound
            // holds whatever the size of a frame. (Frames are serde_json's output: valid
            // UTF-8; a fragment may end inside a character, which WebSocket allows.)
            let mut start = 0;
            while start < body.len() {
                let end = (start + WS_FRAGMENT).min(body.len());
                let opcode = if start == 0 {
                    OpCode::Data(OpData::Text)
                } else {
                    OpCode::Data(OpData::Continue)
                };
                let fragment = Frame::message(body.slice(start..end), opcode, end == body.len());
                self.feed(Message::Frame(fragment)).await?;
                start = end;
            }
        }
        self.sink.flush().await.map_err(io::Error::other)
    }

    async fn close(&mut self, reason: Option<&CloseReason>) {
        if let Some(CloseReason {
            code: Some(code),
            message,
            ..
        }) = reason
        {
            // RFC 6455 codes: 1009 message too big, 1001 going away, 1007 invalid data,
            // 1008 policy.
            let ws_code: u16 = match code {
                CloseCode::FrameTooLarge => 1009,
                CloseCode::Shutdown => 1001,
                CloseCode::Logout => 1000,
                CloseCode::InvalidUtf8 => 1007,
                _ => 1008,
            };
            // A close reason is limited to 123 bytes.
            let mut reason = message.clone();
            while reason.len() > 123 {
                reason.pop();
            }
            let _ = self
                .sink
                .send(Message::Close(Some(CloseFrame {
                    code: ws_code.into(),
                    reason: Utf8Bytes::from(reason),
                })))
                .await;
        }
        let _ = self.sink.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blank_line_is_a_keepalive_and_the_limit_excludes_the_terminator() {
        assert!(matches!(
            line_frame(Bytes::from_static(b" \t  "), 10),
            Inbound::KeepAlive
        ));
        assert!(matches!(line_frame(Bytes::new(), 10), Inbound::KeepAlive));
        assert!(matches!(
            line_frame(trim_cr(Bytes::from_static(b"0123456789\r")), 10),
            Inbound::Frame(f) if f.len() == 10
        ));
        assert!(matches!(
            line_frame(Bytes::from_static(b"0123456789A"), 10),
            Inbound::TooLarge
        ));
    }

    #[test]
    fn the_per_address_limit_counts_each_address_and_spares_the_exempt() {
        let limits = crate::Limits {
            max_connections: 5,
            max_connections_per_address: 2,
            connection_limit_exempt: vec!["10.0.0.5".parse().unwrap()],
            ..crate::Limits::default()
        };
        let admission = Admission::new(&limits);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "::ffff:127.0.0.2".parse().unwrap();
        let proxy: IpAddr = "10.0.0.5".parse().unwrap();
        let first = admission.admit(a).unwrap();
        let _second = admission.admit(a).unwrap();
        assert_eq!(admission.admit(a).err(), Some(Refused::Address));
        drop(first);
        let _third = admission.admit(a).unwrap();
        let _b = admission.admit(b).unwrap();
        let _p1 = admission.admit(proxy).unwrap();
        let _p2 = admission.admit(proxy).unwrap();
        assert_eq!(admission.admit(proxy).err(), Some(Refused::Server));
        assert_eq!(lock(&admission.per_address).len(), 2, "exempt not counted");
    }
}
