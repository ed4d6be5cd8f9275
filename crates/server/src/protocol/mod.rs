//! The protocol seam: what a wire format must provide for the session loop to serve it
//! (model: rumqttd's `Protocol` trait, used as `Network<P: Protocol>`; ergo's per-class
//! message cache). Handlers, the hub and the message writer deal in typed requests,
//! replies and events; a [`Protocol`] decodes requests and a [`WireFormat`] encodes what
//! the server sends. The native JSON protocol ([`native::Native`]) is one implementation.
//!
//! Encode once per format: an event for many sessions travels as a [`SharedEvent`], which
//! keeps one encoding per wire format, made by the first session of that format that
//! queues it and shared (as reference-counted `Bytes`) by every other. A queue's budget
//! is in bytes, so an item is encoded when it is queued: its size is known from then on.

pub mod native;

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use salon_proto::{CloseCode, ErrorBody, Event, Hello, Reply, Request};

/// How many wire formats one server can serve at once: the slots of a
/// [`SharedEvent`]'s cache. The native protocol takes slot 0.
pub const MAX_FORMATS: usize = 4;

/// Encodes what the server sends in one wire format. Object-safe: every outbound queue
/// holds its session's format, so that whoever queues a typed item (a handler, the
/// fan-out, the message writer) encodes it the way that session reads.
pub trait WireFormat: Send + Sync + std::fmt::Debug + 'static {
    /// This format's slot in [`SharedEvent`]'s cache: below [`MAX_FORMATS`], and unique
    /// among the formats of one server.
    fn slot(&self) -> usize;
    /// The first frame of a connection.
    fn encode_hello(&self, hello: &Hello) -> Bytes;
    /// A successful reply to request `re`.
    fn encode_reply(&self, re: u64, reply: &Reply) -> Bytes;
    /// A failed reply to request `re` (`None`: a frame that was not a request at all).
    fn encode_error(&self, re: Option<u64>, error: &ErrorBody) -> Bytes;
    /// An event pushed to the client.
    fn encode_event(&self, event: &Event) -> Bytes;
    /// The last frame before the server closes the connection.
    fn encode_closing(&self, code: CloseCode, message: &str, until: Option<i64>) -> Bytes;
    /// The keep-alive probe sent to a silent session, on transports without a ping of
    /// their own (a WebSocket writer sends a Ping frame instead: [`WireFormat::is_probe`]).
    fn probe(&self) -> Bytes;
    /// Whether a queued frame is [`WireFormat::probe`].
    fn is_probe(&self, frame: &[u8]) -> bool;
}

/// Why a frame could not be decoded: the request id when it could be read, and the
/// error to answer.
#[derive(Debug)]
pub struct DecodeFailure {
    pub re: Option<u64>,
    pub error: ErrorBody,
}

/// A wire protocol as the session loop serves it: its [`WireFormat`] for what is sent,
/// and how a received frame (one line, one WebSocket message: the transport frames it)
/// becomes a typed request.
pub trait Protocol: WireFormat {
    /// Decodes one frame into a request, or says what to answer.
    fn decode(&self, frame: &[u8]) -> Result<Request, DecodeFailure>;
}

/// An event for many sessions, with one encoding per wire format, made on first use.
#[derive(Debug)]
pub struct SharedEvent {
    event: Event,
    encoded: [OnceLock<Bytes>; MAX_FORMATS],
}

impl SharedEvent {
    pub fn new(event: Event) -> Arc<SharedEvent> {
        Arc::new(SharedEvent {
            event,
            encoded: Default::default(),
        })
    }

    /// The event in `format`, encoded by the first caller of that format.
    pub fn encoded(&self, format: &dyn WireFormat) -> Bytes {
        self.encoded[format.slot()]
            .get_or_init(|| format.encode_event(&self.event))
            .clone()
    }
}

#[cfg(test)]
mod tests;
