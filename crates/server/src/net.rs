//! Transports: the native protocol over TCP (one JSON frame per line) and over WebSocket
//! (`/ws`, one frame per text message) on the HTTP listener. Both feed the same session
//! loop; a bad connection never takes down a listener.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use salon_proto::{CloseCode, ServerFrame};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::codec::{AnyDelimiterCodec, AnyDelimiterCodecError, FramedRead};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::hub::CloseReason;
use crate::service::Service;
use crate::session::{self, FrameWriter, Inbound};

/// Initial read buffer of a line connection, in bytes (tokio-util's default is 8 KiB).
const READ_BUFFER_INITIAL: usize = 512;

/// What every accepted connection needs.
#[derive(Clone)]
pub struct Shared {
    pub service: Arc<Service>,
    pub sessions: TaskTracker,
    pub connections: Arc<Semaphore>,
    pub stop_reading: CancellationToken,
}

impl Shared {
    fn admit(&self) -> Option<OwnedSemaphorePermit> {
        self.connections.clone().try_acquire_owned().ok()
    }
}

fn refusal_line() -> Vec<u8> {
    ServerFrame::Closing {
        code: CloseCode::TooManyConnections,
        message: "the server has reached its connection limit; try again later".into(),
        until: None,
    }
    .to_line()
}

// ----- TCP ------------------------------------------------------------------------------

pub async fn serve_tcp(listener: TcpListener, shared: Shared, stop_accepting: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            _ = stop_accepting.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let shared = shared.clone();
                shared
                    .sessions
                    .clone()
                    .spawn(tcp_session(stream, peer, shared));
            }
            Err(e) => {
                // Usually out of file descriptors: wait instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn tcp_session(mut stream: TcpStream, peer: SocketAddr, shared: Shared) {
    let Some(_permit) = shared.admit() else {
        let _ = stream.write_all(&refusal_line()).await;
        return;
    };
    let _ = stream.set_nodelay(true);
    let (read, write) = stream.into_split();
    line_session(read, write, peer, "tcp", shared).await;
}

/// In-process connections (the server console): the same line protocol over an
/// in-memory pipe. The sender side is held by whoever opens such connections.
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
            line_session(read, write, peer, "local", shared).await;
        });
    }
}

/// A session speaking newline-delimited JSON over any byte stream.
async fn line_session<R, W>(
    read: R,
    write: W,
    peer: SocketAddr,
    transport: &'static str,
    shared: Shared,
) where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let max = shared.service.config.limits.max_frame_bytes;
    let codec = AnyDelimiterCodec::new_with_max_length(b"\n".to_vec(), Vec::new(), max);
    // A small initial buffer: most connections are idle most of the time, and it grows
    // on demand up to `max_frame_bytes`.
    let frames = FramedRead::with_capacity(read, codec, READ_BUFFER_INITIAL).filter_map(|item| {
        std::future::ready(match item {
            Ok(line) => {
                let line = trim_cr(line);
                // Blank lines are harmless keep-alives.
                (!line.is_empty()).then_some(Inbound::Frame(line))
            }
            Err(AnyDelimiterCodecError::MaxChunkLengthExceeded) => Some(Inbound::TooLarge),
            Err(AnyDelimiterCodecError::Io(_)) => Some(Inbound::Closed),
        })
    });
    let writer = LineWriter { half: write };
    session::run(
        shared.service,
        peer,
        transport,
        Box::pin(frames),
        writer,
        shared.stop_reading,
    )
    .await;
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
        .merge(crate::web::routes())
        .with_state(shared)
}

pub async fn serve_http(listener: TcpListener, shared: Shared, stop_accepting: CancellationToken) {
    let app = router(shared).into_make_service_with_connect_info::<SocketAddr>();
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(stop_accepting.cancelled_owned())
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "HTTP listener failed");
    }
}

async fn ws_upgrade(
    ws: WebSocketUpgrade,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    State(shared): State<Shared>,
) -> Response {
    let Some(permit) = shared.admit() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the server has reached its connection limit; try again later",
        )
            .into_response();
    };
    let max = shared.service.config.limits.max_frame_bytes;
    // The hard WebSocket ceiling sits above our limit so that an oversized frame is read
    // and answered with our own `frame_too_large` reason rather than a transport error.
    ws.max_message_size(max.saturating_mul(4))
        .max_frame_size(max.saturating_mul(4))
        .on_upgrade(move |socket| {
            let tracker = shared.sessions.clone();
            tracker.track_future(ws_session(socket, peer, shared, permit))
        })
}

async fn ws_session(
    socket: WebSocket,
    peer: SocketAddr,
    shared: Shared,
    _permit: OwnedSemaphorePermit,
) {
    let max = shared.service.config.limits.max_frame_bytes;
    let (sink, stream) = socket.split();
    let frames = stream.filter_map(move |msg| {
        std::future::ready(match msg {
            Ok(Message::Text(text)) => Some(sized(Bytes::from(text), max)),
            Ok(Message::Binary(data)) => Some(sized(data, max)),
            Ok(Message::Ping(_) | Message::Pong(_)) => None,
            Ok(Message::Close(_)) | Err(_) => Some(Inbound::Closed),
        })
    });
    session::run(
        shared.service,
        peer,
        "websocket",
        Box::pin(frames),
        WsWriter { sink },
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
    sink: SplitSink<WebSocket, Message>,
}

impl FrameWriter for WsWriter {
    async fn write_frames(&mut self, frames: &[Bytes]) -> io::Result<()> {
        for frame in frames {
            let body = frame.slice(..frame.len().saturating_sub(1)); // drop the newline
            let text = Utf8Bytes::try_from(body)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            self.sink
                .feed(Message::Text(text))
                .await
                .map_err(io::Error::other)?;
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
            // RFC 6455 codes: 1009 message too big, 1001 going away, 1008 policy.
            let ws_code = match code {
                CloseCode::FrameTooLarge => 1009,
                CloseCode::Shutdown => 1001,
                CloseCode::Logout => 1000,
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
                    code: ws_code,
                    reason: Utf8Bytes::from(reason),
                })))
                .await;
        }
        let _ = self.sink.close().await;
    }
}
