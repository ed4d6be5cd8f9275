//! Error codes and close reasons. Stable wire format: a code, once published, keeps its
//! meaning; clients switch on the code, never on the message.

use serde::{Deserialize, Serialize};
use strum::{EnumIter, EnumString, IntoStaticStr};

/// Stable machine-readable error code of an `error` reply.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    EnumIter,
    EnumString,
    IntoStaticStr,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum ErrorCode {
    // Frame and request shape.
    /// The frame is not a JSON object of the request shape.
    BadJson,
    /// The frame is not valid UTF-8.
    InvalidUtf8,
    /// `cmd` names no command.
    UnknownCommand,
    /// Arguments of the wrong type or shape.
    InvalidRequest,
    // Session state.
    /// The command needs a logged-in session.
    NotAuthenticated,
    /// `login` on a session that is already logged in.
    AlreadyAuthenticated,
    /// Only an administrator (or, for a message, its author) may do this.
    Forbidden,
    /// Too many requests of this kind; `retry_after_ms` says when to retry.
    RateLimited,
    // Registration fields (each carries `field`).
    MissingField,
    InvalidCharacters,
    TooShort,
    TooLong,
    WeakPassword,
    UsernameTaken,
    AliasTaken,
    // Login.
    /// Wrong login or password; deliberately does not say which.
    InvalidCredentials,
    /// The account is banned.
    Banned,
    /// The account is kicked until `until` (ms since the Unix epoch).
    Kicked,
    /// The account waits for an administrator's approval.
    PendingApproval,
    /// Registration is closed on this server: an administrator creates accounts.
    RegistrationClosed,
    /// The invitation code is unknown, used or expired.
    InvalidInvite,
    /// The account already has `max_sessions_per_user` sessions open.
    TooManySessions,
    // Rooms, users, messages.
    NoSuchRoom,
    NoSuchUser,
    NotMember,
    AlreadyMember,
    RequestPending,
    CannotLeave,
    NameTaken,
    EmptyMessage,
    MessageTooLong,
    /// No message has this id, or the user cannot read it (`field`: which id).
    NoSuchMessage,
    /// Not an emoji, or too long.
    InvalidReaction,
    /// The message has as many different reactions as the server allows.
    TooManyReactions,
    /// A file id in `attachments` is unknown, not the sender's upload, or removed
    /// (`field`: `attachments`).
    NoSuchFile,
    // Server state.
    /// The database cannot be reached; nothing was changed. Retry later.
    Unavailable,
    /// The server is shutting down and accepts nothing new.
    ShuttingDown,
    /// A bug on the server; the detail is in the server's log.
    Internal,
    /// A code this client version does not know.
    #[serde(other)]
    Unknown,
}

wire_names!(ErrorCode, CloseCode);

/// The body of an `error` frame: a stable code, a message safe to show a user, and
/// optional details.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
    /// For field validation errors: which request field is wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// For `rate_limited`: how long to wait before retrying.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
    /// For `kicked`: when the kick ends (ms since the Unix epoch, UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<i64>,
}

impl ErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorBody {
            code,
            message: message.into(),
            field: None,
            retry_after_ms: None,
            until: None,
        }
    }

    pub fn with_field(mut self, field: &str) -> Self {
        self.field = Some(field.to_owned());
        self
    }
}

impl std::fmt::Display for ErrorBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)?;
        if let Some(field) = &self.field {
            write!(f, " (field {field})")?;
        }
        Ok(())
    }
}

/// Why the server is closing a connection (the `closing` frame). Stable wire format.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    EnumIter,
    EnumString,
    IntoStaticStr,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum CloseCode {
    /// The client asked to log out.
    Logout,
    /// A frame was larger than `max_frame_bytes`.
    FrameTooLarge,
    /// The client did not read its frames fast enough; its outbound queue overflowed.
    SlowConsumer,
    /// The server is stopping.
    Shutdown,
    /// An administrator kicked the account.
    Kicked,
    /// An administrator banned the account.
    Banned,
    /// The account's password was changed (from another session) or reset by an
    /// administrator: log in again with the new one.
    PasswordChanged,
    /// The server already holds its maximum number of connections, or the client's
    /// address holds its own maximum (the message says which).
    TooManyConnections,
    /// The connection did not log in within `login_timeout_ms`.
    LoginTimeout,
    /// Nothing was received for `idle_timeout_ms`, not even an answer to the server's
    /// keep-alive probe.
    IdleTimeout,
    /// A WebSocket text message was not valid UTF-8 (after the `invalid_utf8` error).
    InvalidUtf8,
    /// The port speaks TLS and the client sent plaintext; sent in plaintext, once,
    /// instead of a TLS handshake.
    TlsRequired,
    /// This server missed part of what the cluster sent while its link to the other
    /// nodes was down, more than it can sort out alone: reconnect, and load history
    /// again (nothing stored is lost; it was not all delivered live).
    Resync,
    #[serde(other)]
    Unknown,
}
