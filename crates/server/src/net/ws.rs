//! The WebSocket transport: the upgrade of `GET /ws` (RFC 6455, done here with
//! tokio-tungstenite after the origin check) and the session on the upgraded connection,
//! one native frame per text message. The configuration bounds the bytes a client can
//! make the server hold by sending Ping frames without reading the Pongs
//! ([`WS_MAX_WRITE_BUFFER`]); long messages go out in fragments so that bound holds.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use salon_proto::CloseCode;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data as OpData, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

use crate::live::CloseReason;
use crate::lock;
use crate::protocol::native::NATIVE;
use crate::protocol::WireFormat;
use crate::session::{self, FrameWriter, Inbound};

use super::http::{origin_allowed, PermitSlot, Secure};
use super::{Permit, Shared};

/// WebSocket buffers. Reads go through a buffer of [`WS_READ_BUFFER`] bytes (grown for a
/// larger frame, up to 4 × `max_frame_bytes`). Frames written are gathered up to
/// `WS_WRITE_BUFFER` before a write; an outbound message longer than `WS_FRAGMENT` is
/// sent as fragments of that size. What the client has not taken yet stays in the
/// write buffer, bounded by [`WS_MAX_WRITE_BUFFER`]: that bounds the Pongs a client
/// sending Pings without reading can make the server hold (further Pongs are coalesced
/// into one), and a write that would go past it fails, which closes the session.
pub const WS_READ_BUFFER: usize = 16 * 1024;
pub const WS_WRITE_BUFFER: usize = 64 * 1024;
pub const WS_FRAGMENT: usize = 64 * 1024;
pub const WS_MAX_WRITE_BUFFER: usize = 256 * 1024;

/// `GET /ws`: the WebSocket handshake (RFC 6455), then the session on the upgraded
/// connection, which keeps the HTTP connection's permit.
pub(super) async fn ws_upgrade(State(shared): State<Shared>, mut request: Request) -> Response {
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
