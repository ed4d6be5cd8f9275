//! Client commands: one table declares each command's wire name, argument type, reply
//! type, who may use it and its rate class. The server enforces access and rate before
//! any handler runs; clients call commands by type ([`Call`], [`cmd`]).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::{reply, Accepted, Account, ReadState, Welcome};

/// Who may send a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Before login too.
    Public,
    /// Logged-in users.
    User,
    /// Logged-in administrators.
    Admin,
}

/// Which rate limit a command counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateClass {
    /// Login and registration: limited per peer address and per account.
    Auth,
    /// Posting messages: limited per session.
    Message,
    /// Everything else: limited per session, generously.
    Other,
    /// Searches: counted as [`RateClass::Other`] and, since each costs index look-ups,
    /// also limited per user.
    Search,
}

/// One request frame: `{"id":1,"cmd":"send","args":{"room":"Blabla","text":"hi"}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub id: u64,
    #[serde(flatten)]
    pub command: Command,
}

/// Why a frame could not be decoded into a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Not valid UTF-8.
    InvalidUtf8,
    /// Not a JSON object with a numeric `id` and a string `cmd`.
    BadJson(String),
    /// `cmd` is not a known command (the id is known, so the reply can carry it).
    UnknownCommand { id: u64, cmd: String },
    /// The command exists but its `args` do not fit.
    InvalidArgs {
        id: u64,
        cmd: String,
        detail: String,
    },
    /// A string in `args` holds a control character other than tab and newline (NUL,
    /// carriage return, escape…): refused at the edge, before anything is stored.
    InvalidCharacters { id: u64, cmd: String },
}

#[derive(Deserialize)]
struct Envelope<'a> {
    id: u64,
    #[serde(borrow)]
    cmd: std::borrow::Cow<'a, str>,
    #[serde(default, borrow)]
    args: Option<&'a RawValue>,
}

fn decode_args<'a, T: Deserialize<'a>>(args: Option<&'a RawValue>) -> serde_json::Result<T> {
    match args {
        Some(raw) if raw.get() != "null" => serde_json::from_str(raw.get()),
        _ => serde_json::from_str("{}"),
    }
}

/// Whether a JSON text (already parsed once, so well formed) holds a string with a C0
/// control character other than tab and newline. Raw control characters are invalid JSON,
/// so they can only appear escaped: `\u0000`…`\u001f`, `\b`, `\f`, `\r`. One pass over
/// the bytes, no allocation.
fn has_forbidden_control(json: &str) -> bool {
    let bytes = json.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            i += 1;
            continue;
        }
        match bytes.get(i + 1) {
            Some(b'b' | b'f' | b'r') => return true,
            Some(b'u') => {
                let code = bytes
                    .get(i + 2..i + 6)
                    .and_then(|hex| std::str::from_utf8(hex).ok())
                    .and_then(|hex| u32::from_str_radix(hex, 16).ok());
                if code.is_some_and(|c| c < 0x20 && c != 0x09 && c != 0x0a) {
                    return true;
                }
                i += 6;
            }
            _ => i += 2, // \\, \", \/, \n, \t: skip the escaped character
        }
    }
    false
}

impl Request {
    /// Decodes one frame (without its trailing newline).
    pub fn decode(frame: &[u8]) -> Result<Request, DecodeError> {
        let text = std::str::from_utf8(frame).map_err(|_| DecodeError::InvalidUtf8)?;
        let envelope: Envelope<'_> =
            serde_json::from_str(text).map_err(|e| DecodeError::BadJson(e.to_string()))?;
        if envelope
            .args
            .is_some_and(|raw| has_forbidden_control(raw.get()))
        {
            return Err(DecodeError::InvalidCharacters {
                id: envelope.id,
                cmd: envelope.cmd.to_string(),
            });
        }
        let command = Command::decode(&envelope.cmd, envelope.args).map_err(|e| match e {
            None => DecodeError::UnknownCommand {
                id: envelope.id,
                cmd: envelope.cmd.to_string(),
            },
            Some(err) => DecodeError::InvalidArgs {
                id: envelope.id,
                cmd: envelope.cmd.to_string(),
                detail: err.to_string(),
            },
        })?;
        Ok(Request {
            id: envelope.id,
            command,
        })
    }

    /// Encodes as one newline-terminated line.
    pub fn to_line(&self) -> Vec<u8> {
        crate::encode_line(self)
    }
}

macro_rules! commands {
    ($( $(#[$doc:meta])* $name:literal => $variant:ident($args:ty) -> $reply:ty, $access:ident, $rate:ident; )*) => {
        /// Every client command. Stable wire format (`cmd` + `args`).
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "cmd", content = "args")]
        pub enum Command {
            $( $(#[$doc])* #[serde(rename = $name)] $variant($args), )*
        }

        impl Command {
            /// All command names, in table order.
            pub const NAMES: &'static [&'static str] = &[$($name),*];

            /// The wire name.
            pub fn name(&self) -> &'static str {
                match self { $(Command::$variant(_) => $name,)* }
            }

            /// Who may send it.
            pub fn access(&self) -> Access {
                match self { $(Command::$variant(_) => Access::$access,)* }
            }

            /// Which rate limit it counts against.
            pub fn rate_class(&self) -> RateClass {
                match self { $(Command::$variant(_) => RateClass::$rate,)* }
            }

            /// `Err(None)`: unknown name; `Err(Some(e))`: arguments do not fit.
            fn decode(name: &str, args: Option<&RawValue>) -> Result<Command, Option<serde_json::Error>> {
                match name {
                    $($name => decode_args(args).map(Command::$variant).map_err(Some),)*
                    _ => Err(None),
                }
            }
        }

        /// The reply to any command: the `data` of its `ok` frame, one variant per command
        /// holding the type the table declares. Serialised as that data alone (no tag):
        /// the request id says which command it answers.
        #[derive(Debug, Clone, PartialEq, Serialize)]
        #[serde(untagged)]
        pub enum Reply {
            $( $(#[$doc])* $variant($reply), )*
        }

        impl Reply {
            /// The wire name of the command this answers.
            pub fn name(&self) -> &'static str {
                match self { $(Reply::$variant(_) => $name,)* }
            }

            /// Reads the `data` of a reply to the command named `command`.
            pub fn decode(command: &str, data: serde_json::Value) -> serde_json::Result<Reply> {
                match command {
                    $($name => serde_json::from_value(data).map(Reply::$variant),)*
                    _ => Err(<serde_json::Error as serde::de::Error>::custom(
                        format_args!("no command is named {command:?}"),
                    )),
                }
            }
        }

        /// One marker type per command, implementing [`Call`]: what a client calls it
        /// with, and what it answers. `cmd::Join` is `join`.
        pub mod cmd {
            use super::*;

            $(
                $(#[$doc])*
                #[derive(Debug, Clone, Copy, PartialEq, Eq)]
                pub struct $variant;

                impl Call for $variant {
                    const NAME: &'static str = $name;
                    type Args = $args;
                    type Reply = $reply;

                    fn command(args: $args) -> Command {
                        Command::$variant(args)
                    }

                    fn reply(reply: $reply) -> Reply {
                        Reply::$variant(reply)
                    }
                }
            )*
        }
    };
}

/// A command as a type: its arguments and its reply, from the `commands!` table, so that
/// a call is checked at compile time (`client.call::<cmd::Kick>(args)` returns
/// [`reply::Kicked`]).
pub trait Call {
    /// The wire name.
    const NAME: &'static str;
    type Args: Serialize + DeserializeOwned;
    type Reply: Serialize + DeserializeOwned;

    /// The command with these arguments.
    fn command(args: Self::Args) -> Command;

    /// The reply as the one type every handler can return.
    fn reply(reply: Self::Reply) -> Reply;
}

commands! {
    /// Keep-alive; replies `{}`.
    "ping" => Ping(args::Empty) -> reply::Empty, Public, Other;
    /// Create an account (R1).
    "register" => Register(args::Register) -> Account, Public, Auth;
    /// Log in with username or alias (R3).
    "login" => Login(args::Login) -> Welcome, Public, Auth;
    /// Log in again with the token from an earlier `login` (reconnecting clients).
    "resume" => Resume(args::Resume) -> Welcome, Public, Auth;
    /// End the session and revoke its token; the server replies then closes the connection.
    "logout" => Logout(args::Empty) -> reply::Empty, User, Other;
    /// Change one's own password (R4).
    "change_password" => ChangePassword(args::ChangePassword) -> reply::Empty, User, Auth;
    /// Rooms visible to the user with their state (R6, R7, R10).
    "rooms" => Rooms(args::Empty) -> reply::Rooms, User, Other;
    /// Join an open room or request a request-only one (R7, R8).
    "join" => Join(args::Room) -> reply::Room, User, Other;
    /// Leave a room, or withdraw a pending request (R9).
    "leave" => Leave(args::Room) -> reply::Room, User, Other;
    /// Post in a room (R12).
    "send" => Send(args::Send) -> Accepted, User, Message;
    /// Send a private message (R13).
    "direct" => Direct(args::Direct) -> Accepted, User, Message;
    /// Acknowledges private messages received (live or from the offline backlog): only
    /// then are they recorded as delivered; the next backlog page follows the ack.
    "ack_directs" => AckDirects(args::AckDirects) -> reply::Empty, User, Other;
    /// A page of a room's or conversation's history (R14).
    "history" => History(args::History) -> reply::History, User, Other;
    /// The user's private conversations, the latest first, each with its last message.
    "conversations" => Conversations(args::Empty) -> reply::Conversations, User, Other;
    /// Every user with their status (R16).
    "who" => Who(args::Empty) -> reply::Users, User, Other;
    /// Set one's own status (R16).
    "set_status" => SetStatus(args::SetStatus) -> reply::NewStatus, User, Other;
    /// Create a private channel with chosen members (R11).
    "create_channel" => CreateChannel(args::CreateChannel) -> reply::Room, User, Other;
    /// Tell the other members of a room, or the other user of a private conversation, that
    /// one is typing. Ephemeral: never stored; forwarded at most once per 3 s per session
    /// and place (more often is answered but not forwarded).
    "typing" => Typing(args::Typing) -> reply::Empty, User, Other;
    /// The members of a room the user is a member of, with their status (for mention
    /// completion and member lists).
    "members" => Members(args::Room) -> reply::Users, User, Other;
    /// Change the text of one's own message; members see the new text live.
    "edit" => Edit(args::Edit) -> reply::Edited, User, Message;
    /// Delete one's own message (an administrator: anyone's, audited with the reason): its
    /// text is erased, a tombstone stays.
    "delete" => Delete(args::Delete) -> reply::Empty, User, Message;
    /// React to a message with an emoji (again with the same one: no change).
    "react" => React(args::React) -> reply::Empty, User, Message;
    /// Take one's reaction back.
    "unreact" => Unreact(args::React) -> reply::Empty, User, Message;
    /// A message and a page of its replies.
    "thread" => Thread(args::Thread) -> reply::Thread, User, Other;
    /// Mark a room or conversation read up to a message; every session of the user gets
    /// the new read state (`read` event).
    "mark_read" => MarkRead(args::MarkRead) -> ReadState, User, Message;
    /// Choose how much a room notifies: all messages, mentions only, or none.
    "set_notify" => SetNotify(args::SetNotify) -> ReadState, User, Message;
    /// Full-text search over the messages the user can read (the rooms they are a member
    /// of, their own private conversations): newest first or by relevance, paged.
    "search" => Search(args::Search) -> reply::Search, User, Search;
    // Administration (R15, R17–R19): the same commands as the console and `salon admin`.
    /// Every connected session: user, address, transport, since when.
    "connected" => Connected(args::Empty) -> reply::Sessions, Admin, Other;
    /// Disconnect a user now and refuse their logins for a while (default 5 minutes).
    "kick" => Kick(args::Kick) -> reply::Kicked, Admin, Other;
    /// Lift a kick early.
    "unkick" => Unkick(args::Target) -> reply::Empty, Admin, Other;
    /// Disconnect a user and refuse their logins until unbanned; nothing is deleted.
    "ban" => Ban(args::Ban) -> reply::Empty, Admin, Other;
    /// Lift a ban.
    "unban" => Unban(args::Target) -> reply::Empty, Admin, Other;
    /// Current kicks and bans, newest first.
    "sanctions" => Sanctions(args::Empty) -> reply::Sanctions, Admin, Other;
    /// Every account (connected or not), found by name and paged, with its status and
    /// current sanctions: the administration panel's list of users.
    "accounts" => Accounts(args::Accounts) -> reply::AccountList, Admin, Other;
    /// Pending join requests, oldest first.
    "requests" => Requests(args::Empty) -> reply::JoinRequests, Admin, Other;
    /// Accept a join request: the user becomes a member at once.
    "accept" => Accept(args::Decide) -> reply::Empty, Admin, Other;
    /// Reject a join request; the user may ask again later.
    "reject" => Reject(args::Decide) -> reply::Empty, Admin, Other;
    /// A notice to every connected user.
    "broadcast" => Broadcast(args::Broadcast) -> reply::Empty, Admin, Other;
    /// Stop the server after a countdown seen by every client (the originals' KILL).
    "shutdown" => Shutdown(args::Shutdown) -> reply::Countdown, Admin, Other;
    /// Set a new password for a user (generated if not given); their tokens are revoked.
    "reset_password" => ResetPassword(args::ResetPassword) -> reply::PasswordReset, Admin, Auth;
    /// Accounts waiting for approval (registration = approval), oldest first.
    "account_requests" => AccountRequests(args::Empty) -> reply::AccountRequests, Admin, Other;
    /// Approve a waiting account: it can log in from now on.
    "approve_account" => ApproveAccount(args::Target) -> reply::AccountDecided, Admin, Other;
    /// Refuse a waiting account: it is deleted, and its names are free again.
    "reject_account" => RejectAccount(args::Ban) -> reply::AccountDecided, Admin, Other;
    /// A single-use invitation code (registration = invite), valid `hours` (default 72).
    "create_invite" => CreateInvite(args::CreateInvite) -> reply::Invitation, Admin, Other;
    /// Invitations not yet used nor expired.
    "invites" => Invites(args::Empty) -> reply::Invites, Admin, Other;
    /// Withdraw an invitation before it is used.
    "revoke_invite" => RevokeInvite(args::InviteId) -> reply::Empty, Admin, Other;
    /// Create an account directly (any registration mode; the way in when it is closed).
    "create_account" => CreateAccount(args::CreateAccount) -> reply::AccountCreated, Admin, Auth;
    /// The latest administrative actions, newest first.
    "audit" => Audit(args::Audit) -> reply::AuditLog, Admin, Other;
}

/// Argument types, one per command shape.
pub mod args {
    use serde::{Deserialize, Serialize};

    use crate::Status;

    /// No arguments; `args` may be omitted.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Empty {}

    /// Missing fields read as empty strings so that the server can answer
    /// `missing_field` naming the field, rather than a generic shape error.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(default)]
    pub struct Register {
        pub username: String,
        pub alias: String,
        pub first_name: String,
        pub last_name: String,
        pub password: String,
        /// Registration = invite: the invitation code.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub invite: Option<String>,
    }

    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    pub struct CreateInvite {
        /// How long the code is valid, in hours (default 72, at most 720).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub hours: Option<u32>,
    }

    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    pub struct InviteId {
        pub id: i64,
    }

    /// An account made by an administrator: the registration fields, the password
    /// generated when omitted (and returned once), and whether it is an administrator.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(default)]
    pub struct CreateAccount {
        pub username: String,
        pub alias: String,
        pub first_name: String,
        pub last_name: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub password: Option<String>,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        pub admin: bool,
    }

    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(default)]
    pub struct Login {
        /// Username or alias.
        pub login: String,
        pub password: String,
        /// `Some(false)`: this session does not count for presence (a bot, `salon admin`,
        /// the console): logging it in or out never makes the user appear online or
        /// offline to others. Omitted = true.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub presence: Option<bool>,
    }

    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(default)]
    pub struct Resume {
        pub token: String,
        /// As for [`Login::presence`].
        #[serde(skip_serializing_if = "Option::is_none")]
        pub presence: Option<bool>,
    }

    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(default)]
    pub struct ChangePassword {
        pub old_password: String,
        pub new_password: String,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Room {
        pub room: String,
    }

    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Send {
        pub room: String,
        pub text: String,
        /// Idempotency key chosen by the client (1–64 printable ASCII characters, no
        /// space; see [`crate::valid_message_key`]): a retry with the same key returns
        /// the message already stored instead of storing a second one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub key: Option<String>,
        /// The id of the message this one replies to, in the same room.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub reply_to: Option<i64>,
        /// Files to attach (ids from `POST /api/files`, uploaded by the sender), in
        /// order; with at least one, `text` may be empty.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub attachments: Vec<i64>,
    }

    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Direct {
        /// Recipient's username or alias.
        pub to: String,
        pub text: String,
        /// Idempotency key, as for [`Send::key`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub key: Option<String>,
        /// The id of the message this one replies to, in the same conversation.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub reply_to: Option<i64>,
        /// Files to attach (ids from `POST /api/files`, uploaded by the sender), in
        /// order; with at least one, `text` may be empty.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub attachments: Vec<i64>,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Edit {
        pub id: i64,
        pub text: String,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Delete {
        pub id: i64,
        /// Why (recorded in the audit log when an administrator deletes someone else's
        /// message).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub reason: Option<String>,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct React {
        pub id: i64,
        /// One emoji (a single Unicode emoji, with its modifiers).
        pub emoji: String,
    }

    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Thread {
        /// The message whose replies are listed.
        pub id: i64,
        /// Only replies with a smaller id; omitted = the newest page.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub before: Option<i64>,
        /// Page size, as for [`History::limit`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub limit: Option<u32>,
    }

    /// A full-text search. Every word must match, as the start of a word of the message,
    /// whatever the accents and case. At most one of `room` and `with`; neither searches
    /// every room the user is a member of and every conversation of theirs.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Search {
        pub query: String,
        /// Only this room (the user must be a member).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub room: Option<String>,
        /// Only the private conversation with this user (username or alias).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub with: Option<String>,
        /// Only messages by this user (username or alias).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub author: Option<String>,
        /// Only messages sent at or after this time (ms since the Unix epoch, UTC).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub since: Option<i64>,
        /// Only messages sent before this time (ms since the Unix epoch, UTC).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub until: Option<i64>,
        /// `newest` (the default) or `relevance`.
        #[serde(default, skip_serializing_if = "crate::SearchOrder::is_newest")]
        pub order: crate::SearchOrder,
        /// Page size, 1 to 50 (default 20).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub limit: Option<u32>,
        /// The `next` of the previous page, to get the page after it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub cursor: Option<String>,
    }

    /// Exactly one of `room` and `with`.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    pub struct MarkRead {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub room: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub with: Option<String>,
        /// The last message read; a marker never moves back.
        pub id: i64,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct SetNotify {
        pub room: String,
        pub level: crate::NotifyLevel,
    }

    /// Ids of `direct` events addressed to this user that the client has received.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    pub struct AckDirects {
        pub ids: Vec<i64>,
    }

    /// Exactly one of `room` and `with`.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    pub struct History {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub room: Option<String>,
        /// The other user of a private conversation (username or alias).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub with: Option<String>,
        /// Only messages with a smaller id; omitted = the newest page.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub before: Option<i64>,
        /// Instead of `before`: the page of messages just after this id, oldest first
        /// (`more`: newer messages follow it). With `before` = an id + 1 it opens a
        /// conversation around a message (a search result).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub after: Option<i64>,
        /// Page size, 1 to the server's `history_page_max` (default 50); outside that
        /// range the request is refused (`invalid_request`, field `limit`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub limit: Option<u32>,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct SetStatus {
        pub status: Status,
    }

    /// A user named by username or alias.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Target {
        pub user: String,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Kick {
        pub user: String,
        /// How long logins are refused, in seconds (default 300).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub seconds: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub reason: Option<String>,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Ban {
        pub user: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub reason: Option<String>,
    }

    /// A decision on `user`'s request to join `room`.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Decide {
        pub user: String,
        pub room: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub reason: Option<String>,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Broadcast {
        pub text: String,
    }

    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Shutdown {
        /// Countdown in seconds (default 10).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub seconds: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub message: Option<String>,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct ResetPassword {
        pub user: String,
        /// The new password; omitted = the server generates one and returns it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub password: Option<String>,
    }

    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Audit {
        /// How many entries, 1–1000 (default 50); outside that range the request is
        /// refused (`invalid_request`, field `limit`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub limit: Option<u32>,
    }

    /// `accounts`: a page of the accounts whose names match `query`.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Accounts {
        /// Words that must all appear in the username, alias, first or last name, ignoring
        /// case and accents (at most 100 characters); omitted or blank = every account.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub query: Option<String>,
        /// The `next` of the previous page.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub cursor: Option<String>,
        /// Accounts per page, 1–100 (default 50).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub limit: Option<u32>,
    }

    /// Exactly one of `room` and `with`.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Typing {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub room: Option<String>,
        /// The other user of a private conversation (username or alias).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub with: Option<String>,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct CreateChannel {
        pub name: String,
        /// Usernames or aliases of the other members; the creator is always a member.
        #[serde(default)]
        pub members: Vec<String>,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trips_through_the_wire_form() {
        let req = Request {
            id: 7,
            command: Command::Send(args::Send {
                room: "Général".into(),
                text: "bonjour".into(),
                key: None,
                reply_to: None,
                attachments: vec![],
            }),
        };
        let line = req.to_line();
        assert_eq!(
            std::str::from_utf8(&line).unwrap(),
            "{\"id\":7,\"cmd\":\"send\",\"args\":{\"room\":\"Général\",\"text\":\"bonjour\"}}\n"
        );
        assert_eq!(Request::decode(line.trim_ascii_end()).unwrap(), req);
    }

    #[test]
    fn args_may_be_omitted_for_commands_without_arguments() {
        let req = Request::decode(br#"{"id":1,"cmd":"who"}"#).unwrap();
        assert_eq!(req.command, Command::Who(args::Empty {}));
        let req = Request::decode(br#"{"id":1,"cmd":"rooms","args":null}"#).unwrap();
        assert_eq!(req.command, Command::Rooms(args::Empty {}));
    }

    #[test]
    fn decode_errors_are_classified() {
        assert_eq!(Request::decode(b"\xff\xfe"), Err(DecodeError::InvalidUtf8));
        assert!(matches!(
            Request::decode(b"{"),
            Err(DecodeError::BadJson(_))
        ));
        assert!(matches!(
            Request::decode(b"[1]"),
            Err(DecodeError::BadJson(_))
        ));
        assert!(matches!(
            Request::decode(br#"{"cmd":"who"}"#),
            Err(DecodeError::BadJson(_))
        ));
        assert_eq!(
            Request::decode(br#"{"id":3,"cmd":"fly"}"#),
            Err(DecodeError::UnknownCommand {
                id: 3,
                cmd: "fly".into()
            })
        );
        match Request::decode(br#"{"id":4,"cmd":"send","args":{"room":"x"}}"#) {
            Err(DecodeError::InvalidArgs { id: 4, detail, .. }) => {
                assert!(detail.contains("text"), "{detail}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn control_characters_other_than_tab_and_newline_are_refused_in_args() {
        for bad in [
            r"\u0000",
            r"\u001b",
            r"\r",
            r"\b",
            r"\f",
            r"\u001F",
            r"a\\\u0007",
        ] {
            let frame = format!(r#"{{"id":5,"cmd":"send","args":{{"room":"x","text":"{bad}"}}}}"#);
            assert_eq!(
                Request::decode(frame.as_bytes()),
                Err(DecodeError::InvalidCharacters {
                    id: 5,
                    cmd: "send".into()
                }),
                "{frame}"
            );
        }
        // Tab, newline, an escaped backslash followed by the letters u0000, and ordinary
        // text are fine.
        for good in [r"a\tb\nc", r"\\u0000", r"\u0020\u00e9", r#"\"quoted\""#] {
            let frame = format!(r#"{{"id":5,"cmd":"send","args":{{"room":"x","text":"{good}"}}}}"#);
            assert!(Request::decode(frame.as_bytes()).is_ok(), "{frame}");
        }
    }

    #[test]
    fn attachments_are_optional_and_round_trip() {
        let req = Request::decode(
            br#"{"id":6,"cmd":"send","args":{"room":"x","text":"","attachments":[41,42]}}"#,
        )
        .unwrap();
        assert_eq!(
            req.command,
            Command::Send(args::Send {
                room: "x".into(),
                text: String::new(),
                attachments: vec![41, 42],
                ..Default::default()
            })
        );
        assert_eq!(Request::decode(&req.to_line()).unwrap(), req);
        let plain =
            Request::decode(br#"{"id":6,"cmd":"direct","args":{"to":"b","text":"t"}}"#).unwrap();
        assert!(!String::from_utf8(plain.to_line())
            .unwrap()
            .contains("attachments"));
    }

    #[test]
    fn a_message_key_is_optional_and_round_trips() {
        let req = Request::decode(
            br#"{"id":5,"cmd":"direct","args":{"to":"bob","text":"hi","key":"k-1"}}"#,
        )
        .unwrap();
        assert_eq!(
            req.command,
            Command::Direct(args::Direct {
                to: "bob".into(),
                text: "hi".into(),
                key: Some("k-1".into()),
                reply_to: None,
                attachments: vec![],
            })
        );
        assert!(String::from_utf8(req.to_line())
            .unwrap()
            .contains("\"key\":\"k-1\""));
        assert!(crate::valid_message_key("0123456789abcdef0123456789abcdef"));
        assert!(crate::valid_message_key(&"~".repeat(64)));
        for bad in ["", " ", "a b", "clé", "tab\t", &"k".repeat(65)] {
            assert!(!crate::valid_message_key(bad), "{bad:?}");
        }
    }

    #[test]
    fn every_command_name_is_unique() {
        let mut names = Command::NAMES.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Command::NAMES.len());
    }
}
