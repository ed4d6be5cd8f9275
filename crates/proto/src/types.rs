//! Data carried by replies and events. Stable wire format.

use serde::{Deserialize, Serialize};
use strum::{EnumIter, EnumString, IntoStaticStr};

/// A user's presence status (R16). Stable wire format.
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
pub enum Status {
    Online,
    Away,
    Busy,
    Offline,
}

/// How a user becomes a member of a room (R7, R11). Stable wire format.
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
pub enum JoinPolicy {
    /// Every account is a member from registration and cannot leave (Général).
    Everyone,
    /// Anyone may join and leave freely (Blabla).
    Open,
    /// Users request; an administrator accepts or rejects (Comptabilité, …).
    Request,
    /// A user-created private channel: members are chosen by its creator; invisible to
    /// everybody else.
    Private,
}

/// The requesting user's relation to a room. Stable wire format.
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
pub enum MemberState {
    Member,
    /// A join request is waiting for an administrator.
    Pending,
    /// Not a member; `join` makes one a member at once.
    CanJoin,
    /// Not a member; `join` files a request.
    CanRequest,
    /// Not a member and cannot become one (a private channel one has left).
    None,
}

/// A room as one user sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomInfo {
    pub name: String,
    pub policy: JoinPolicy,
    pub state: MemberState,
}

/// A user and their presence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserPresence {
    pub username: String,
    pub alias: String,
    pub status: Status,
}

/// The logged-in user's own account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub username: String,
    pub alias: String,
    pub first_name: String,
    pub last_name: String,
    pub is_admin: bool,
    pub status: Status,
    /// Registered while registration needs an administrator's approval: the account
    /// cannot log in until approved.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pending_approval: bool,
}

/// One account in the administrators' list (`accounts`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountEntry {
    #[serde(flatten)]
    pub account: Account,
    pub created_at: i64,
    /// How many sessions the account has open now.
    pub sessions: u32,
    /// Its ban and kick in force, if any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sanctions: Vec<SanctionInfo>,
}

/// How accounts come to exist (the server's `registration` setting). Stable wire format.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
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
pub enum RegistrationMode {
    /// Anyone who reaches the server registers and logs in at once.
    #[default]
    Open,
    /// Anyone registers; an administrator approves the account before it can log in.
    Approval,
    /// Registration needs a single-use invitation code from an administrator.
    Invite,
    /// Only administrators create accounts (`create_account`).
    Closed,
}

/// An account waiting for an administrator's approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountRequest {
    pub username: String,
    pub alias: String,
    pub first_name: String,
    pub last_name: String,
    pub requested_at: i64,
}

/// An invitation not yet used (its code is shown once, when created).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteInfo {
    pub id: i64,
    /// The administrator who created it.
    pub by: String,
    pub created_at: i64,
    pub expires_at: i64,
}

/// A stored room message (R12).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomMessage {
    /// Unique, and increasing in the order the server accepted messages.
    pub id: i64,
    pub room: String,
    /// Author's username.
    pub author: String,
    /// Author's display alias.
    pub alias: String,
    /// The author's text as written (Markdown is rendered by clients); empty once deleted.
    pub text: String,
    /// Server time of acceptance, ms since the Unix epoch (UTC).
    pub ts: i64,
    #[serde(flatten)]
    pub extra: MessageExtra,
    /// Usernames of the room's members mentioned by `@alias` (as sent; an edit does not
    /// change them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mentions: Vec<String>,
    /// `@room`: every member is mentioned.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mention_room: bool,
}

/// A stored private message (R13).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectMessage {
    pub id: i64,
    /// Sender's username and alias.
    pub from: String,
    pub from_alias: String,
    /// Recipient's username.
    pub to: String,
    /// Empty once deleted.
    pub text: String,
    pub ts: i64,
    #[serde(flatten)]
    pub extra: MessageExtra,
}

/// What room and private messages share beyond their text: the message replied to, the
/// replies, the last edit, the deletion and the reactions. Each is omitted on the wire
/// when it has nothing to say.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageExtra {
    /// The message this one replies to (in the same room or conversation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<Quote>,
    /// How many messages reply to this one (its thread: `thread`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub replies: u32,
    /// When the text was last edited (ms since the Unix epoch, UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edited: Option<i64>,
    /// Deleted: `text` is empty; clients show a tombstone ("message deleted").
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    /// Reactions, in the order each emoji was first used.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reactions: Vec<Reaction>,
    /// Files it carries, in the order the sender gave them (none once deleted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Attachment>,
}

/// A file a message carries. Its bytes are fetched over HTTP with the session token:
/// `GET /api/files/{id}`, and `GET /api/files/{id}/preview` when `preview` is true.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub id: i64,
    /// Its display name as uploaded, sanitised (no path, no control characters).
    pub name: String,
    /// Bytes, as stored (an image is stored re-encoded).
    pub size: u64,
    /// The type sniffed from its content, never taken from the upload.
    pub mime: String,
    /// Whether it is an image with a thumbnail to show inline.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub preview: bool,
    /// An image's size in pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The message a reply answers, as the reply shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quote {
    pub id: i64,
    /// Its author's username and alias.
    pub author: String,
    pub alias: String,
    /// The beginning of its current text (at most [`QUOTE_CHARS`] characters); empty when
    /// it was deleted.
    pub text: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
}

/// Characters of the original kept in a reply's [`Quote`].
pub const QUOTE_CHARS: usize = 120;

/// One emoji's reactions to a message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reaction {
    pub emoji: String,
    /// How many users reacted with it.
    pub count: u32,
    /// Who did (usernames), the first [`REACTION_USERS_SHOWN`] in the order they did.
    pub users: Vec<String>,
    /// Whether the requesting user is one of them (in `history` and `thread`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mine: bool,
}

/// Users named per emoji in a message's reactions (the count counts them all).
pub const REACTION_USERS_SHOWN: usize = 20;

/// Where a message is, in events about it: a room, or the private conversation between
/// `from` (its author) and `to`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Place {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

/// How much a room's messages notify a user (`set_notify`). Stable wire format and
/// storage format (`memberships.notify`).
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
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
pub enum NotifyLevel {
    /// Every message notifies.
    #[default]
    All,
    /// Only messages mentioning the user (or `@room`).
    Mentions,
    /// Nothing notifies; unread counts still count.
    None,
}

/// The order of search results (`search`). Stable wire format.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
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
pub enum SearchOrder {
    /// The newest first.
    #[default]
    Newest,
    /// The best matches first (how often and how rarely the words occur).
    Relevance,
}

impl SearchOrder {
    pub(crate) fn is_newest(&self) -> bool {
        *self == SearchOrder::Newest
    }
}

/// One message a search found, where it is (`room`, or `from` and `to` for a private
/// message), who wrote it, when, and a snippet of its text around the matched words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchHit {
    pub id: i64,
    #[serde(flatten)]
    pub place: Place,
    /// The author's username and alias.
    pub author: String,
    pub alias: String,
    pub ts: i64,
    /// When it was last edited, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edited: Option<i64>,
    /// About 180 characters of the text around the first matched word, in pieces:
    /// the matched words have `hit`; "…" marks text left out at either end.
    pub snippet: Vec<Fragment>,
}

/// A piece of a search snippet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fragment {
    pub text: String,
    /// A matched word.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hit: bool,
}

/// A user's read state in one room (`room`) or private conversation (`with`, the other
/// user's username): the last message read, and how many messages after it are unread
/// (never the user's own) and mention the user. Counts stop at [`UNREAD_COUNT_MAX`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadState {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub with: Option<String>,
    /// Id of the last message read; 0 when none was.
    pub last_read: i64,
    pub unread: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub mentions: u32,
    /// Rooms only: the user's notification level there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<NotifyLevel>,
}

/// Unread and mention counts stop here: a client shows "999+".
pub const UNREAD_COUNT_MAX: u32 = 1000;

/// One of the user's private conversations (reply to `conversations`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conversation {
    /// The other user's username and alias.
    pub with: String,
    pub alias: String,
    /// The latest message, either way.
    pub last: DirectMessage,
}

/// Reply to `login`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    pub account: Account,
    /// Every room visible to the user, with the user's state in it (R10).
    pub rooms: Vec<RoomInfo>,
    /// How many private messages received while offline (or pushed earlier but never
    /// acknowledged) are waiting: they follow as `direct` events, a page at a time, each
    /// page after the client acknowledged the previous one (`ack_directs`).
    pub offline_directs: u32,
    /// Resumes this session later without the password (`resume`); keep it secret. Revoked
    /// by `logout` and by a password change.
    pub token: String,
    /// When the token stops working (ms since the Unix epoch, UTC).
    pub token_expires: i64,
    /// The user's read state in each of their rooms, and in each conversation with
    /// unread messages. Kept live by `read` events.
    #[serde(default)]
    pub read_state: Vec<ReadState>,
    /// The largest file `POST /api/files` stores, in bytes (`limits.upload_max_bytes`):
    /// a client refuses a larger one before sending it. Absent from older servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_max_bytes: Option<u64>,
}

/// Reply to `send` and `direct`: the message is durably stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    pub id: i64,
    pub ts: i64,
    /// Aliases the message mentions whose users cannot read the room: they were not
    /// notified.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_notified: Vec<String>,
}

/// Reply to `history`: one page, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryPage<M> {
    pub messages: Vec<M>,
    /// Whether older messages exist before this page (`before` = first id of this page).
    pub more: bool,
}

/// Pushed events. Stable wire format (`event` tag).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A message in a room the user is a member of.
    Message(RoomMessage),
    /// A private message to or from the user (also the user's own, for their other
    /// devices).
    Direct(DirectMessage),
    /// Users' statuses changed. Changes are gathered for a short while (100 ms) and sent
    /// together, each user once with their latest status, so that a wave of logins costs
    /// every session a few frames rather than one per login. When more users changed at
    /// once than one event lists (a wave of logins), `refresh` is true and `users` empty:
    /// a client showing presence fetches `who` again.
    Presence {
        users: Vec<UserPresence>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        refresh: bool,
    },
    /// The user's own relation to a room changed (joined from another device, request
    /// decided, added to a private channel, left).
    Membership {
        room: RoomInfo,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// The server is stopping in `seconds` (sent once a second during a countdown, and
    /// with 0 just before sessions are closed).
    Shutdown { seconds: u32, message: String },
    /// To administrators: a user asked to join a request-only room (also sent at an
    /// administrator's login for every pending request).
    JoinRequest(JoinRequest),
    /// To administrators: a join request was decided (by any administrator, from any
    /// way in), so every panel can drop it.
    JoinRequestDecided {
        user: String,
        room: String,
        accepted: bool,
        /// The deciding administrator's username.
        by: String,
    },
    /// To administrators: an account registered while registration needs approval (also
    /// sent at an administrator's login for every account waiting).
    AccountRequest(AccountRequest),
    /// To administrators: an account request was decided, so every panel drops it.
    AccountRequestDecided {
        user: String,
        approved: bool,
        by: String,
    },
    /// Someone is typing: in `room` (a room the user is a member of; the user's own
    /// sessions get their own typing too, and ignore it), or, without `room`, to the user
    /// in their private conversation with `user`. Never stored. Show it for
    /// `expires_ms`, unless it is renewed or a message from `user` arrives first.
    Typing {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        room: Option<String>,
        user: String,
        alias: String,
        expires_ms: u32,
    },
    /// A message's text was edited by its author (to the members of its room, or the two
    /// users of its conversation). Never sent before the message itself.
    Edited {
        id: i64,
        #[serde(flatten)]
        place: Place,
        text: String,
        edited: i64,
    },
    /// A message was deleted (by its author, or by an administrator): show a tombstone.
    Deleted {
        id: i64,
        #[serde(flatten)]
        place: Place,
    },
    /// `user` added (`added`) or removed a reaction to a message.
    Reaction {
        id: i64,
        #[serde(flatten)]
        place: Place,
        emoji: String,
        user: String,
        alias: String,
        added: bool,
    },
    /// To the user's own sessions: their read state in a room or conversation changed
    /// (read on another device, a notification level set).
    Read(ReadState),
    /// To a room's members: `user` joined (`joined`) or left it. Not in history.
    RoomMember {
        room: String,
        user: String,
        alias: String,
        joined: bool,
        /// The change's id (servers since issue 16; absent from older ones): what a
        /// cluster node that missed it on its bus tells again after an outage is
        /// recognised by it, so each session is told a join or leave once.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<i64>,
    },
    /// Keep-alive probe (line protocol only; WebSocket uses a Ping frame): nothing was
    /// received from this logged-in session for half of `idle_timeout_ms`. The client
    /// answers with any frame (the `ping` command, or a blank line); without one by the
    /// full timeout the server closes with `idle_timeout`.
    Ping,
    /// A notice from an administrator to every connected user: `from` is their username
    /// and `from_alias` their alias, as in `direct`.
    Notice {
        from: String,
        #[serde(default)]
        from_alias: String,
        text: String,
        ts: i64,
        /// The broadcast's id (servers since issue 16; absent from older ones): what a
        /// cluster node that missed it on its bus tells again after an outage is
        /// recognised by it, so each session is told a broadcast once.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<i64>,
    },
}

/// A pending request to join a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    pub user: String,
    pub alias: String,
    pub room: String,
    pub requested_at: i64,
}

/// One connected session, as administrators see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    pub username: String,
    pub alias: String,
    pub status: Status,
    /// Peer address `ip:port`.
    pub address: String,
    pub transport: Transport,
    /// Login time, ms since the Unix epoch.
    pub since: i64,
    /// False for a session logged in with `presence: false` (a bot, `salon admin`, the
    /// console): it never makes its user appear online or offline.
    #[serde(default = "crate::types::yes")]
    pub presence: bool,
    /// The cluster node the session is connected to (`node_id`); absent on a server that
    /// is not part of a cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<u16>,
}

pub(crate) fn yes() -> bool {
    true
}

/// A current kick or ban (reply to `sanctions`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SanctionInfo {
    pub user: String,
    pub kind: SanctionKind,
    /// When a kick ends (ms since the Unix epoch); absent for bans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<i64>,
    pub reason: String,
    /// The administrator who imposed it.
    pub by: String,
    pub since: i64,
}

/// One administrative action (R19).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub ts: i64,
    /// Who did it (an administrator's username, or `console` / `cli` for offline tools).
    pub actor: String,
    pub action: AuditAction,
    /// The user (or `user@room` for join decisions); empty when there is none.
    pub target: String,
    #[serde(default)]
    pub reason: String,
}

/// How a session reached the server. Stable wire format (`connected`) and metrics label.
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
pub enum Transport {
    /// The line protocol on the TCP listener.
    Tcp,
    /// A WebSocket on the HTTP listener.
    Websocket,
    /// The server console's in-process pipe.
    Local,
    /// A transport this client version does not know.
    #[serde(other)]
    Unknown,
}

/// A kick or a ban. Stable wire format (`sanctions`) and storage format (`sanctions.kind`).
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
pub enum SanctionKind {
    /// Logins refused until a time.
    Kick,
    /// Logins refused until lifted.
    Ban,
}

/// What an administrative action was (R19). Stable wire format (`audit`) and storage
/// format (`audit_log.action`): named after the command, except `create_user`
/// (`create_account`, the console's `adduser` and `salon admin create-user`).
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
pub enum AuditAction {
    Kick,
    Unkick,
    Ban,
    Unban,
    /// A join request accepted (target `user@room`).
    Accept,
    /// A join request rejected (target `user@room`).
    Reject,
    Broadcast,
    Shutdown,
    ResetPassword,
    CreateUser,
    ApproveAccount,
    RejectAccount,
    /// Target: the invitation's id.
    CreateInvite,
    /// Target: the invitation's id.
    RevokeInvite,
    /// An administrator deleted someone else's message (target: the author, `#id`).
    DeleteMessage,
    /// An action this version does not know (written by a newer server).
    #[serde(other)]
    Unknown,
}

wire_names!(
    Status,
    JoinPolicy,
    MemberState,
    RegistrationMode,
    Transport,
    SanctionKind,
    AuditAction,
    NotifyLevel,
    SearchOrder,
);
