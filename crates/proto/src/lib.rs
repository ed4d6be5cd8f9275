//! Salon's native wire protocol, shared by the server and every client.
//!
//! This is the most abstract crate of the workspace: it knows nothing of sockets or storage.
//! A frame is one JSON object — one per line on TCP, one per text message on WebSocket.
//!
//! * Client → server: [`Request`] `{"id":1,"cmd":"send","args":{...}}`. Every request gets
//!   exactly one reply carrying the same id (`re`).
//! * Server → client: [`ServerFrame`] — `hello` at connect, `ok`/`error` replies, pushed
//!   `event`s, and `closing` just before the server closes the connection. The `data` of
//!   an `ok` is the command's [`Reply`], whose type the command table declares ([`Call`]).
//!
//! Everything serialised here is a **stable wire format**: names of commands, fields, error
//! codes and enum values may gain members but never change meaning. `docs/PROTOCOL.md`
//! documents each with an example.

#[macro_use]
mod names;
mod command;
mod error;
pub mod reply;
mod types;

pub use command::args;
pub use command::{cmd, Access, Call, Command, DecodeError, RateClass, Reply, Request};
pub use error::{CloseCode, ErrorBody, ErrorCode};
pub use types::*;

use serde::{Deserialize, Serialize};

/// Protocol version announced in `hello`. Bumped only for incompatible changes.
pub const PROTOCOL_VERSION: u32 = 1;

/// Everything the server sends. Stable wire format (`type` tag).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// First frame on every connection.
    Hello(Hello),
    /// Successful reply to request `re`; `data` depends on the command.
    Ok {
        re: u64,
        #[serde(default)]
        data: serde_json::Value,
    },
    /// Failed reply to request `re`, or (with `re` absent) an error about a frame that
    /// could not be read as a request at all.
    Error {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        re: Option<u64>,
        #[serde(flatten)]
        error: ErrorBody,
    },
    /// Something happened that the client did not ask about.
    Event(Event),
    /// Last frame before the server closes the connection, saying why.
    Closing {
        code: CloseCode,
        message: String,
        /// For `kicked`: when the kick ends (ms since the Unix epoch, UTC).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        until: Option<i64>,
    },
}

impl ServerFrame {
    /// Encodes as one newline-terminated JSON line (the TCP framing; WebSocket drops the
    /// newline).
    pub fn to_line(&self) -> Vec<u8> {
        encode_line(self)
    }
}

/// Serialises any frame as one JSON line. Serialising these types cannot fail (no maps
/// with non-string keys, no failing `Serialize` impls), so an error here is a bug.
pub fn encode_line<T: Serialize + ?Sized>(frame: &T) -> Vec<u8> {
    let mut out = serde_json::to_vec(frame).expect("wire types always serialise");
    out.push(b'\n');
    // The buffer grew by doubling: a large frame (a history page) may hold up to twice
    // its length. Frames are kept in outbound queues whose budget counts their length,
    // so what they hold must be their length (small frames are left alone: cheap).
    if out.capacity() - out.len() > SLACK_KEPT {
        out.shrink_to_fit();
    }
    out
}

/// Unused capacity an encoded frame may keep (see [`encode_line`]).
const SLACK_KEPT: usize = 4096;

/// Encodes a successful reply without first building a `serde_json::Value`.
pub fn encode_ok<T: Serialize + ?Sized>(re: u64, data: &T) -> Vec<u8> {
    #[derive(Serialize)]
    struct OkFrame<'a, T: ?Sized> {
        #[serde(rename = "type")]
        kind: &'static str,
        re: u64,
        data: &'a T,
    }
    encode_line(&OkFrame {
        kind: "ok",
        re,
        data,
    })
}

/// Encodes an error reply.
pub fn encode_error(re: Option<u64>, error: ErrorBody) -> Vec<u8> {
    encode_line(&ServerFrame::Error { re, error })
}

/// Sent once at connect: the protocol version and the limits the client must respect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol: u32,
    pub server: String,
    /// Largest frame the server reads, in bytes, not counting its terminator (`\n` or
    /// `\r\n` on TCP; WebSocket messages have none). A larger one closes the connection
    /// (`frame_too_large`).
    pub max_frame_bytes: usize,
    /// Longest message text accepted, in characters.
    pub max_message_chars: usize,
    /// How accounts are created on this server (clients show what applies).
    #[serde(default)]
    pub registration: RegistrationMode,
}

/// Longest idempotency key (`key` of `send` and `direct`), in characters.
pub const MAX_MESSAGE_KEY_CHARS: usize = 64;

/// The rule for an idempotency key: 1 to [`MAX_MESSAGE_KEY_CHARS`] printable ASCII
/// characters, space excluded (`!` to `~`). A random 128-bit value in hex or base64, a
/// UUID, or a device id plus a counter all fit.
pub fn valid_message_key(key: &str) -> bool {
    (1..=MAX_MESSAGE_KEY_CHARS).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic())
}
