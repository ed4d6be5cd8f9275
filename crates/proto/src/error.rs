//! Error codes and close reasons. Stable wire format: a code, once published, keeps its
//! meaning; clients switch on the code, never on the message.

use serde::{Deserialize, Serialize};

/// Stable machine-readable error code of an `error` reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
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
    /// Only an administrator may do this.
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

impl ErrorCode {
    /// The snake_case wire name (the same string serde writes).
    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(code, _)| *code == self)
            .map_or("unknown", |(_, name)| name)
    }

    const ALL: &'static [(ErrorCode, &'static str)] = &[
        (ErrorCode::BadJson, "bad_json"),
        (ErrorCode::InvalidUtf8, "invalid_utf8"),
        (ErrorCode::UnknownCommand, "unknown_command"),
        (ErrorCode::InvalidRequest, "invalid_request"),
        (ErrorCode::NotAuthenticated, "not_authenticated"),
        (ErrorCode::AlreadyAuthenticated, "already_authenticated"),
        (ErrorCode::Forbidden, "forbidden"),
        (ErrorCode::RateLimited, "rate_limited"),
        (ErrorCode::MissingField, "missing_field"),
        (ErrorCode::InvalidCharacters, "invalid_characters"),
        (ErrorCode::TooShort, "too_short"),
        (ErrorCode::TooLong, "too_long"),
        (ErrorCode::WeakPassword, "weak_password"),
        (ErrorCode::UsernameTaken, "username_taken"),
        (ErrorCode::AliasTaken, "alias_taken"),
        (ErrorCode::InvalidCredentials, "invalid_credentials"),
        (ErrorCode::Banned, "banned"),
        (ErrorCode::Kicked, "kicked"),
        (ErrorCode::PendingApproval, "pending_approval"),
        (ErrorCode::RegistrationClosed, "registration_closed"),
        (ErrorCode::InvalidInvite, "invalid_invite"),
        (ErrorCode::TooManySessions, "too_many_sessions"),
        (ErrorCode::NoSuchRoom, "no_such_room"),
        (ErrorCode::NoSuchUser, "no_such_user"),
        (ErrorCode::NotMember, "not_member"),
        (ErrorCode::AlreadyMember, "already_member"),
        (ErrorCode::RequestPending, "request_pending"),
        (ErrorCode::CannotLeave, "cannot_leave"),
        (ErrorCode::NameTaken, "name_taken"),
        (ErrorCode::EmptyMessage, "empty_message"),
        (ErrorCode::MessageTooLong, "message_too_long"),
        (ErrorCode::Unavailable, "unavailable"),
        (ErrorCode::ShuttingDown, "shutting_down"),
        (ErrorCode::Internal, "internal"),
        (ErrorCode::Unknown, "unknown"),
    ];
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
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
    #[serde(other)]
    Unknown,
}

#[cfg(test)]
impl ErrorCode {
    pub(crate) fn all_for_tests() -> &'static [(ErrorCode, &'static str)] {
        Self::ALL
    }
}
