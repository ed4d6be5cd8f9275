//! One session's bounded outbound queue and close signal ([`Outbound`], [`Control`]):
//! filled by handlers, the message writer and the fan-out, drained by the session's one
//! writer task. Bounded in frames and in bytes; a consumer that cannot keep up is cut off
//! with a reason.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use salon_proto::{CloseCode, ErrorBody, Event, Reply};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::lock;
use crate::protocol::{SharedEvent, WireFormat};

pub use super::hub::SessionId;

/// Why and how a session is being closed.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CloseReason {
    /// `None`: the peer went away; there is nobody to tell.
    pub code: Option<CloseCode>,
    pub message: String,
    /// Write what is already queued before the closing frame (false for a slow consumer,
    /// whose queue is the problem).
    pub drain: bool,
    /// For a kick: when it ends (ms since the Unix epoch), sent in the `closing` frame.
    pub until: Option<i64>,
}

/// One session's outbound queue and close signal, shared by its handles (held by the hub
/// and by handlers) and its writer task (the only consumer).
///
/// The queue is a `VecDeque` behind a short `std::sync::Mutex` rather than a tokio
/// channel: tokio's bounded channel allocates a 32-slot block per channel up front (over
/// 1 KiB), which an idle connection never needs; this one allocates nothing until the
/// first frame and gives back what a burst grew.
///
/// Bounded twice: in frames (`capacity`) and in bytes (`max_bytes`). The byte count
/// covers every frame accepted and not yet written to the socket: frames waiting here
/// and frames the writer has taken but not finished writing ([`Control::written`]
/// gives them back). So one connection never holds more than `max_bytes` of outbound
/// data, however large its frames (a history page of escaped text is 100 times a chat
/// line).
#[derive(Debug)]
pub struct Control {
    /// Set once, at close: the writer checks it for every write, and
    /// `CancellationToken::is_cancelled` takes a lock.
    closed: std::sync::atomic::AtomicBool,
    token: CancellationToken,
    reason: Mutex<Option<CloseReason>>,
    queue: Mutex<Queue>,
    capacity: usize,
    max_bytes: usize,
    /// Frames were queued (the writer waits on it).
    ready: Notify,
    /// Frames were taken (a reply waiting for room waits on it).
    space: Notify,
    /// How this session reads: typed items queued here are encoded with it.
    format: &'static dyn WireFormat,
}

/// A burst can grow a queue; once drained, keep at most this much of it.
const QUEUE_KEEP: usize = 16;

enum Pushed {
    Queued,
    Full,
}

#[derive(Debug, Default)]
struct Queue {
    frames: VecDeque<Bytes>,
    /// Bytes of the frames queued plus those taken by the writer and not yet written.
    bytes: usize,
    /// When the oldest frame waiting was queued (for the queue-wait metric); `None`
    /// while the queue is empty. One clock read per burst, not per frame.
    since: Option<std::time::Instant>,
}

impl Control {
    /// Frames and bytes queued or being written now (for the metrics).
    pub fn queued(&self) -> (usize, usize) {
        let queue = lock(&self.queue);
        (queue.frames.len(), queue.bytes)
    }

    fn new(capacity: usize, max_bytes: usize, format: &'static dyn WireFormat) -> Control {
        Control {
            closed: std::sync::atomic::AtomicBool::new(false),
            token: CancellationToken::new(),
            reason: Mutex::new(None),
            queue: Mutex::new(Queue::default()),
            capacity,
            max_bytes,
            ready: Notify::new(),
            space: Notify::new(),
            format,
        }
    }

    /// The first reason given wins; later ones are ignored.
    pub fn close(&self, reason: CloseReason) {
        let mut slot = lock(&self.reason);
        if slot.is_none() {
            *slot = Some(reason);
        }
        drop(slot);
        self.closed
            .store(true, std::sync::atomic::Ordering::Release);
        self.token.cancel();
        // The writer waits for frames; closing must wake it as well.
        self.ready.notify_one();
    }

    pub fn reason(&self) -> Option<CloseReason> {
        lock(&self.reason).clone()
    }

    pub async fn closed(&self) {
        self.token.cancelled().await
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(std::sync::atomic::Ordering::Acquire)
    }

    fn try_push(&self, frame: Bytes) -> Pushed {
        let mut queue = lock(&self.queue);
        // One frame larger than the whole budget still goes through when nothing else is
        // pending, so that a large reply cannot wait forever.
        let over_budget = queue.bytes > 0 && queue.bytes + frame.len() > self.max_bytes;
        if queue.frames.len() >= self.capacity || over_budget {
            return Pushed::Full;
        }
        queue.bytes += frame.len();
        if queue.frames.is_empty() {
            queue.since = Some(std::time::Instant::now());
        }
        queue.frames.push_back(frame);
        drop(queue);
        self.ready.notify_one();
        Pushed::Queued
    }

    /// Waits until frames are queued, then moves up to `max` of them into `out`; returns
    /// at once, possibly with nothing, if the session is closed. (The writer task is the
    /// only caller.)
    pub async fn take(&self, out: &mut Vec<Bytes>, max: usize) -> Option<std::time::Instant> {
        loop {
            let (n, since) = self.take_timed(out, max);
            if n > 0 || self.is_closed() {
                return since;
            }
            // A push between the check and here leaves a permit: no wake-up is lost.
            self.ready.notified().await;
        }
    }

    /// Moves up to `max` queued frames into `out` without waiting. Their bytes still
    /// count against the budget until the writer reports them [`Control::written`].
    pub fn take_now(&self, out: &mut Vec<Bytes>, max: usize) -> usize {
        self.take_timed(out, max).0
    }

    /// [`Control::take_now`], also saying when the oldest frame taken was queued.
    pub fn take_timed(
        &self,
        out: &mut Vec<Bytes>,
        max: usize,
    ) -> (usize, Option<std::time::Instant>) {
        let mut queue = lock(&self.queue);
        let n = queue.frames.len().min(max);
        out.extend(queue.frames.drain(..n));
        let since = if n > 0 { queue.since } else { None };
        // Frames left behind wait from now on, as far as the next batch can tell.
        queue.since = (!queue.frames.is_empty()).then(std::time::Instant::now);
        if queue.frames.is_empty() && queue.frames.capacity() > QUEUE_KEEP {
            queue.frames.shrink_to(QUEUE_KEEP);
        }
        drop(queue);
        if n > 0 {
            self.space.notify_one();
        }
        (n, since)
    }

    /// The writer finished writing frames of `bytes` bytes in all: room for more.
    pub fn written(&self, bytes: usize) {
        let mut queue = lock(&self.queue);
        queue.bytes = queue.bytes.saturating_sub(bytes);
        drop(queue);
        self.space.notify_one();
    }

    /// Bytes accepted for this session and not yet written to its socket.
    #[cfg(test)]
    pub fn pending_bytes(&self) -> usize {
        lock(&self.queue).bytes
    }

    /// The session's wire format.
    pub fn format(&self) -> &'static dyn WireFormat {
        self.format
    }
}

/// A handle on one session's outbound queue. Cloned freely (hub, handlers, the message
/// writer); the session's writer task drains it.
#[derive(Debug, Clone)]
pub struct Outbound {
    pub id: SessionId,
    pub control: Arc<Control>,
}

impl Outbound {
    /// A queue of at most `capacity` frames and `max_bytes` bytes not yet written, for a
    /// session that reads `format`.
    pub fn new(
        id: SessionId,
        capacity: usize,
        max_bytes: usize,
        format: &'static dyn WireFormat,
    ) -> Outbound {
        Outbound {
            id,
            control: Arc::new(Control::new(capacity, max_bytes, format)),
        }
    }

    /// Queues a frame without waiting. A full queue means the client is not reading fast
    /// enough: it is disconnected as a slow consumer rather than slowing anyone else.
    pub fn push(&self, frame: Bytes) -> bool {
        if self.control.is_closed() {
            return false;
        }
        match self.control.try_push(frame) {
            Pushed::Queued => true,
            Pushed::Full => {
                metrics::counter!(crate::metrics::SLOW_CONSUMER_DISCONNECTIONS).increment(1);
                self.control.close(CloseReason {
                    code: Some(CloseCode::SlowConsumer),
                    message: "you were disconnected because you did not read your messages \
                              fast enough"
                        .into(),
                    drain: false,
                    until: None,
                });
                false
            }
        }
    }

    /// Queues an event shared by many sessions, in this session's format (encoded by the
    /// first session of that format), without waiting (see [`Outbound::push`]).
    pub fn push_event(&self, event: &SharedEvent) -> bool {
        self.push(event.encoded(self.control.format))
    }

    /// Queues an event for this session alone, waiting for room (see [`Outbound::reply`]).
    pub async fn send_event(&self, event: &Event) {
        self.reply(self.control.format.encode_event(event)).await
    }

    /// Queues the reply to request `re`, waiting for room.
    pub async fn reply_ok(&self, re: u64, reply: &Reply) {
        self.reply(self.control.format.encode_reply(re, reply))
            .await
    }

    /// Queues the reply to request `re` without waiting (the message writer, which must
    /// not wait for one slow client; a full queue cuts it off as for an event).
    pub fn push_reply(&self, re: u64, reply: &Reply) -> bool {
        self.push(self.control.format.encode_reply(re, reply))
    }

    /// Queues an error answer to request `re` (`None`: to a frame that was not a
    /// request), waiting for room.
    pub async fn reply_error(&self, re: Option<u64>, error: &ErrorBody) {
        self.reply(self.control.format.encode_error(re, error))
            .await
    }

    /// Queues a reply to this session's own request, waiting for room: a client that
    /// pipelines requests is slowed down (its reads pause) rather than cut off, and what
    /// it can make the server hold stays within the queue's byte budget.
    pub async fn reply(&self, frame: Bytes) {
        loop {
            if self.control.is_closed() {
                return;
            }
            if let Pushed::Queued = self.control.try_push(frame.clone()) {
                return;
            }
            tokio::select! {
                _ = self.control.space.notified() => {}
                _ = self.control.closed() => return,
            }
        }
    }

    /// Closes the session with `reason` (its code, message and a kick's end).
    pub fn close_with(&self, reason: CloseReason) {
        self.control.close(reason);
    }

    pub fn close(&self, code: CloseCode, message: impl Into<String>, drain: bool) {
        self.control.close(CloseReason {
            code: Some(code),
            message: message.into(),
            drain,
            until: None,
        });
    }
}
