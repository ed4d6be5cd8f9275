//! One session loop for every transport. A transport provides a stream of [`Inbound`]
//! frames and a [`FrameWriter`]; the loop reads and handles requests in order, and a
//! separate writer task — the only one writing to the connection — drains everything
//! pending in the session's bounded outbound queue into one write.
//!
//! Lifetimes: the session task owns the read side and the [`SessionState`]; the writer
//! task owns the queue's receiver and the write side. The session ends when the peer
//! goes away or when anyone closes the session's [`Control`] with a reason; the writer
//! then writes what the reason allows (all pending frames, then a `closing` frame) and
//! closes the connection.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use salon_proto::{CloseCode, ErrorBody, ErrorCode, Hello, PROTOCOL_VERSION};
use tokio_util::sync::CancellationToken;

use crate::live::{CloseReason, Control, Outbound};
use crate::protocol::Protocol;
use crate::service::Service;

/// Most frames written in one go by the writer task.
const WRITE_BATCH_FRAMES: usize = 256;

/// What a transport reads.
#[derive(Debug)]
pub enum Inbound {
    /// One frame, without its line terminator.
    Frame(Bytes),
    /// A sign of life that asks for nothing: a blank line, a WebSocket Pong.
    KeepAlive,
    /// A frame longer than `max_frame_bytes`.
    TooLarge,
    /// A WebSocket text message that is not UTF-8 (the stream cannot go on).
    InvalidUtf8,
    /// The peer closed the connection (or it broke).
    Closed,
}

/// The login and idle timeouts of one session (not for in-process connections). Kept
/// small: every idle connection carries one. Its timer is first set to the login
/// deadline, then, once logged in, to half the idle timeout after the last frame heard.
struct Watchdog {
    /// When the last frame (or sign of life) was received.
    heard: Instant,
    /// A probe was sent since then.
    probed: bool,
}

impl Watchdog {
    /// Called when its timer fires: closes the session, or probes it, and returns when
    /// to look again.
    fn check(&mut self, logged_in: bool, limits: &crate::Limits, outbound: &Outbound) -> Instant {
        let now = Instant::now();
        if !logged_in {
            // The timer is only ever set to the login deadline before a login.
            outbound.close(
                CloseCode::LoginTimeout,
                format!(
                    "you did not log in within {} s",
                    limits.login_timeout_ms as f64 / 1000.0
                ),
                true,
            );
            return now + Duration::from_secs(3600);
        }
        let idle = Duration::from_millis(limits.idle_timeout_ms);
        let silent = now.saturating_duration_since(self.heard);
        if silent >= idle {
            outbound.close(
                CloseCode::IdleTimeout,
                format!(
                    "nothing received from you for {} s (not even an answer to the ping event)",
                    idle.as_secs_f64()
                ),
                true,
            );
            now + idle
        } else if silent >= idle / 2 {
            if !self.probed {
                self.probed = true;
                outbound.push(outbound.control.format().probe());
            }
            self.heard + idle
        } else {
            self.heard + idle / 2
        }
    }
}

/// The write side of a transport.
pub trait FrameWriter: Send + 'static {
    /// Writes newline-terminated frames, as one write where the transport allows.
    fn write_frames(&mut self, frames: &[Bytes]) -> impl Future<Output = io::Result<()>> + Send;
    /// Closes the connection (a WebSocket sends its close frame with the reason).
    fn close(&mut self, reason: Option<&CloseReason>) -> impl Future<Output = ()> + Send;
}

/// Runs a session until it ends. `stop_reading` is cancelled at shutdown: the session
/// then reads nothing more and waits for the server to close it (after pending messages
/// are stored and delivered).
pub async fn run<P, R, W>(
    protocol: &'static P,
    service: Arc<Service>,
    peer: SocketAddr,
    transport: salon_proto::Transport,
    mut inbound: R,
    writer: W,
    stop_reading: CancellationToken,
) where
    P: Protocol,
    R: Stream<Item = Inbound> + Unpin + Send,
    W: FrameWriter,
{
    let limits = &service.config.limits;
    let outbound = Outbound::new(
        service.next_session_id(),
        limits.outbound_queue_frames,
        limits.outbound_queue_bytes,
        protocol,
    );
    let grace = Duration::from_millis(limits.close_grace_ms);
    let writer_task = tokio::spawn(write_loop(outbound.control.clone(), writer, grace));
    outbound.push(protocol.encode_hello(&Hello {
        protocol: PROTOCOL_VERSION,
        server: concat!("salon/", env!("CARGO_PKG_VERSION")).into(),
        max_frame_bytes: limits.max_frame_bytes,
        max_message_chars: limits.max_message_chars,
        registration: service.config.registration,
    }));
    let mut state = service.open_session(outbound.clone(), peer, transport);
    let _counted = crate::metrics::ConnectionGauge::open(transport);
    tracing::debug!(%peer, session = outbound.id, "session opened");

    let mut reading = true;
    // The in-process console is exempt from the login and idle timeouts.
    let watched = transport != salon_proto::Transport::Local;
    let mut watchdog = Watchdog {
        heard: Instant::now(),
        probed: false,
    };
    let timer = tokio::time::sleep(Duration::from_millis(limits.login_timeout_ms));
    tokio::pin!(timer);
    loop {
        tokio::select! {
            biased;
            _ = outbound.control.closed() => break,
            _ = stop_reading.cancelled(), if reading => reading = false,
            _ = &mut timer, if watched && reading => {
                let next = watchdog.check(state.logged_in(), limits, &outbound);
                timer.as_mut().reset(next);
            }
            item = inbound.next(), if reading => {
                watchdog.heard = Instant::now();
                watchdog.probed = false;
                match item {
                    // Boxed: the handlers' state machine is large and exists only while
                    // a request is being handled, not in every idle session.
                    Some(Inbound::Frame(frame)) => {
                        let was_in = state.logged_in();
                        // Boxed, decoding included: what a request needs while it is
                        // handled exists only then, not in every idle session's task.
                        let (service, session) = (&*service, &mut state);
                        Box::pin(async move {
                            match protocol.decode(&frame) {
                                Ok(request) => service.handle(session, request).await,
                                Err(failure) => {
                                    session.outbound.reply_error(failure.re, &failure.error).await
                                }
                            }
                        })
                        .await;
                        if !was_in && state.logged_in() {
                            // From now on the idle timeout applies.
                            let half = Duration::from_millis(limits.idle_timeout_ms / 2);
                            timer.as_mut().reset(watchdog.heard + half);
                        }
                    }
                    Some(Inbound::KeepAlive) => {}
                    Some(Inbound::TooLarge) => outbound.close(
                        CloseCode::FrameTooLarge,
                        format!("a frame may have at most {} bytes", limits.max_frame_bytes),
                        true,
                    ),
                    Some(Inbound::InvalidUtf8) => {
                        Box::pin(outbound.reply_error(
                            None,
                            &ErrorBody::new(
                                ErrorCode::InvalidUtf8,
                                "a WebSocket text message must be valid UTF-8",
                            ),
                        ))
                        .await;
                        outbound.close(
                            CloseCode::InvalidUtf8,
                            "a WebSocket text message was not valid UTF-8",
                            true,
                        );
                    }
                    Some(Inbound::Closed) | None => {
                        // The peer may only have closed its sending side: what it asked
                        // before still gets its replies.
                        state.replies_settled().await;
                        outbound.control.close(CloseReason {
                            code: None,
                            message: "peer closed".into(),
                            drain: true,
                            until: None,
                        })
                    }
                }
            }
        }
    }
    service.close_session(&state).await;
    drop(state);
    if let Some(reason) = outbound.control.reason() {
        tracing::debug!(%peer, session = outbound.id, code = ?reason.code, "session closed: {}", reason.message);
    }
    let _ = writer_task.await;
}

/// Resolves when the write in progress must be abandoned: the session was closed and the
/// write did not finish within the grace period. A draining close (a timeout, a
/// shutdown) gives it the grace period too: a peer that does not read cannot hold a
/// closed connection open (the write would never finish).
async fn aborted(control: &Control, grace: Duration) {
    control.closed().await;
    // A consumer that is merely slow may still take the rest of this write and then
    // the closing frame that says why it is cut off.
    tokio::time::sleep(grace).await;
}

async fn write_loop<W: FrameWriter>(control: Arc<Control>, mut writer: W, grace: Duration) {
    // Grows with the first bursts; idle connections keep it empty.
    let mut batch = Vec::new();
    loop {
        // Returns with frames, or when the session is closed (closing wakes it too), so
        // the hot path never re-arms a wait on the close signal.
        let queued_at = control.take(&mut batch, WRITE_BATCH_FRAMES).await;
        if control.is_closed() {
            break;
        }
        let written = tokio::select! {
            // The write first: when it completes at once (the usual case), the abort
            // branch is never even polled.
            biased;
            r = writer.write_frames(&batch) => r,
            _ = aborted(&control, grace) => {
                // Closing may write too (a WebSocket close frame, TLS close_notify).
                let _ = tokio::time::timeout(grace, writer.close(control.reason().as_ref())).await;
                return;
            }
        };
        control.written(batch.iter().map(Bytes::len).sum());
        if let (Some(at), Ok(())) = (queued_at, &written) {
            metrics::histogram!(crate::metrics::OUTBOUND_WAIT_SECONDS)
                .record(at.elapsed().as_secs_f64());
        }
        batch.clear();
        if batch.capacity() > 16 {
            batch.shrink_to(16); // what a burst grew, an idle connection gives back
        }
        if written.is_err() {
            control.close(CloseReason {
                code: None,
                message: "write failed".into(),
                drain: false,
                until: None,
            });
            return;
        }
    }
    // Frames taken but not written are written now only if the reason allows draining.
    if !control.reason().is_some_and(|r| r.drain) {
        batch.clear();
    }
    let reason = control.reason();
    let finish = async {
        if let Some(reason) = &reason {
            if reason.drain {
                while control.take_now(&mut batch, usize::MAX) > 0 {}
            }
            if let Some(code) = reason.code {
                batch.push(
                    control
                        .format()
                        .encode_closing(code, &reason.message, reason.until),
                );
            }
            if reason.code.is_some() || reason.drain {
                let _ = writer.write_frames(&batch).await;
            }
        }
        writer.close(reason.as_ref()).await;
    };
    let _ = tokio::time::timeout(grace, finish).await;
}
