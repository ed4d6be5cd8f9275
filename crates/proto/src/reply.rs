//! Reply data, one type per reply shape: the `data` of an `ok` frame. The `commands!`
//! table (`command.rs`) names each command's type; replies that are a bare record
//! ([`crate::Account`], [`crate::Welcome`], [`crate::Accepted`]) live with the other
//! shared types. Stable wire format: `docs/PROTOCOL.md` shows each one.

use serde::{Deserialize, Serialize};

use crate::{
    Account, AccountEntry, AccountRequest, AuditEntry, Conversation, DirectMessage, HistoryPage,
    InviteInfo, JoinRequest, RoomInfo, RoomMessage, SanctionInfo, SearchHit, SessionInfo, Status,
    UserPresence,
};

/// `{}`: done, nothing to tell.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

/// `rooms`: every room visible to the user, default rooms first, then their channels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rooms {
    pub rooms: Vec<RoomInfo>,
}

/// `join`, `leave`, `create_channel`: the room as the user now sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Room {
    pub room: RoomInfo,
}

/// `history`: a page of a room's messages or of a private conversation, as asked.
///
/// Serialised as the page alone. Read back without the request at hand, an empty page
/// reads as [`History::Room`]; a client that knows what it asked for decodes the page
/// type directly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum History {
    Room(HistoryPage<RoomMessage>),
    Direct(HistoryPage<DirectMessage>),
}

/// `edit`: when the edit was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Edited {
    pub id: i64,
    pub edited: i64,
}

/// `thread`: the message, and a page of its replies (oldest first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Thread {
    Room {
        root: RoomMessage,
        messages: Vec<RoomMessage>,
        more: bool,
    },
    Direct {
        root: DirectMessage,
        messages: Vec<DirectMessage>,
        more: bool,
    },
}

/// `search`: a page of results, and the `cursor` of the next page when there is one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Search {
    pub hits: Vec<SearchHit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// `conversations`: the latest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conversations {
    pub conversations: Vec<Conversation>,
}

/// `who`: every user, by username.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Users {
    pub users: Vec<UserPresence>,
}

/// `set_status`: the status now in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewStatus {
    pub status: Status,
}

/// `connected`: every logged-in session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sessions {
    pub sessions: Vec<SessionInfo>,
}

/// `kick`: who, by username, and until when (ms since the Unix epoch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kicked {
    pub user: String,
    pub until: i64,
}

/// `sanctions`: current kicks and bans, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sanctions {
    pub sanctions: Vec<SanctionInfo>,
}

/// `accounts`: one page of the matching accounts, by username.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountList {
    pub accounts: Vec<AccountEntry>,
    /// How many accounts match the query in all (every page).
    pub total: u32,
    /// The `cursor` of the next page; absent on the last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// `requests`: pending join requests, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequests {
    pub requests: Vec<JoinRequest>,
}

/// `shutdown`: the countdown started, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Countdown {
    pub seconds: u32,
}

/// `reset_password`: whose (username), and the new password when the server generated
/// it (shown this once).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasswordReset {
    pub user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

/// `audit`: the latest administrative actions, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditLog {
    pub entries: Vec<AuditEntry>,
}

/// `account_requests`: accounts waiting for approval, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountRequests {
    pub accounts: Vec<AccountRequest>,
}

/// `approve_account`, `reject_account`: whose account (username).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountDecided {
    pub user: String,
}

/// `create_invite`: the code, shown only here (the server keeps a hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invitation {
    pub id: i64,
    pub code: String,
    pub expires_at: i64,
}

/// `invites`: invitations neither used nor expired, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invites {
    pub invites: Vec<InviteInfo>,
}

/// `create_account`: the account, and its password when the server generated it (shown
/// this once).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountCreated {
    pub account: Account,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{
        Attachment, AuditAction, JoinPolicy, MemberState, MessageExtra, NotifyLevel, Quote,
        Reaction, ReadState, Reply, SanctionKind, Transport, Welcome,
    };

    fn account() -> Account {
        Account {
            username: "alice".into(),
            alias: "Alice".into(),
            first_name: "Alice".into(),
            last_name: "Martin".into(),
            is_admin: false,
            status: Status::Offline,
            pending_approval: false,
        }
    }

    fn room(state: MemberState) -> RoomInfo {
        RoomInfo {
            name: "Blabla".into(),
            policy: JoinPolicy::Open,
            state,
        }
    }

    fn direct() -> DirectMessage {
        DirectMessage {
            id: 9,
            from: "alice".into(),
            from_alias: "Alice".into(),
            to: "bob".into(),
            text: "hi".into(),
            ts: 2,
            ..DirectMessage::default()
        }
    }

    /// One representative reply per command, with the `data` docs/PROTOCOL.md shows.
    fn examples() -> Vec<(Reply, serde_json::Value)> {
        let account_json = json!({"username":"alice","alias":"Alice","first_name":"Alice",
            "last_name":"Martin","is_admin":false,"status":"offline"});
        let welcome = Welcome {
            account: account(),
            rooms: vec![room(MemberState::CanJoin)],
            offline_directs: 2,
            token: "9f1c".into(),
            token_expires: 7,
            upload_max_bytes: Some(25_000_000),
            read_state: vec![ReadState {
                room: Some("Blabla".into()),
                last_read: 3,
                unread: 5,
                mentions: 1,
                notify: Some(NotifyLevel::Mentions),
                ..ReadState::default()
            }],
        };
        let welcome_json = json!({"account":account_json,
            "rooms":[{"name":"Blabla","policy":"open","state":"can_join"}],
            "offline_directs":2,"token":"9f1c","token_expires":7,
            "read_state":[{"room":"Blabla","last_read":3,"unread":5,"mentions":1,
                "notify":"mentions"}],"upload_max_bytes":25000000});
        let read_state = ReadState {
            with: Some("bob".into()),
            last_read: 9,
            unread: 0,
            ..ReadState::default()
        };
        let read_json = json!({"with":"bob","last_read":9,"unread":0});
        let room_json = json!({"room":{"name":"Blabla","policy":"open","state":"member"}});
        let accepted = crate::Accepted {
            id: 1,
            ts: 2,
            not_notified: vec![],
        };
        vec![
            (Reply::Ping(Empty {}), json!({})),
            (Reply::Register(account()), account_json.clone()),
            (Reply::Login(welcome.clone()), welcome_json.clone()),
            (Reply::Resume(welcome), welcome_json),
            (Reply::Logout(Empty {}), json!({})),
            (Reply::ChangePassword(Empty {}), json!({})),
            (Reply::Typing(Empty {}), json!({})),
            (
                Reply::Rooms(Rooms {
                    rooms: vec![room(MemberState::Pending)],
                }),
                json!({"rooms":[{"name":"Blabla","policy":"open","state":"pending"}]}),
            ),
            (
                Reply::Join(Room {
                    room: room(MemberState::Member),
                }),
                room_json.clone(),
            ),
            (
                Reply::Leave(Room {
                    room: room(MemberState::Member),
                }),
                room_json.clone(),
            ),
            (
                Reply::Send(crate::Accepted {
                    not_notified: vec!["Dora".into()],
                    ..accepted.clone()
                }),
                json!({"id":1,"ts":2,"not_notified":["Dora"]}),
            ),
            (Reply::Direct(accepted), json!({"id":1,"ts":2})),
            (Reply::AckDirects(Empty {}), json!({})),
            (
                Reply::History(History::Room(HistoryPage {
                    messages: vec![RoomMessage {
                        id: 3,
                        room: "Général".into(),
                        author: "alice".into(),
                        alias: "Alice".into(),
                        text: "bonjour @Bob".into(),
                        ts: 4,
                        extra: MessageExtra {
                            reply_to: Some(Quote {
                                id: 2,
                                author: "bob".into(),
                                alias: "Bob".into(),
                                text: "salut".into(),
                                deleted: false,
                            }),
                            replies: 1,
                            edited: Some(5),
                            deleted: false,
                            reactions: vec![Reaction {
                                emoji: "👍".into(),
                                count: 1,
                                users: vec!["bob".into()],
                                mine: false,
                            }],
                            attachments: vec![Attachment {
                                id: 7,
                                name: "plan.png".into(),
                                size: 1234,
                                mime: "image/png".into(),
                                preview: true,
                                width: Some(640),
                                height: Some(480),
                            }],
                        },
                        mentions: vec!["bob".into()],
                        mention_room: false,
                    }],
                    more: true,
                })),
                json!({"messages":[{"id":3,"room":"Général","author":"alice","alias":"Alice",
                    "text":"bonjour @Bob","ts":4,
                    "reply_to":{"id":2,"author":"bob","alias":"Bob","text":"salut"},
                    "replies":1,"edited":5,"reactions":[{"emoji":"👍","count":1,"users":["bob"]}],
                    "attachments":[{"id":7,"name":"plan.png","size":1234,"mime":"image/png",
                    "preview":true,"width":640,"height":480}],
                    "mentions":["bob"]}],"more":true}),
            ),
            (
                Reply::Edit(Edited { id: 3, edited: 5 }),
                json!({"id":3,"edited":5}),
            ),
            (
                Reply::Search(Search {
                    hits: vec![
                        SearchHit {
                            id: 12,
                            place: crate::Place {
                                room: Some("Général".into()),
                                ..crate::Place::default()
                            },
                            author: "bob".into(),
                            alias: "Bob".into(),
                            ts: 4,
                            edited: None,
                            snippet: vec![
                                crate::Fragment {
                                    text: "…le lien du ".into(),
                                    hit: false,
                                },
                                crate::Fragment {
                                    text: "planning".into(),
                                    hit: true,
                                },
                            ],
                        },
                        SearchHit {
                            id: 11,
                            place: crate::Place {
                                from: Some("alice".into()),
                                to: Some("bob".into()),
                                ..crate::Place::default()
                            },
                            author: "alice".into(),
                            alias: "Alice".into(),
                            ts: 3,
                            edited: Some(5),
                            snippet: vec![crate::Fragment {
                                text: "Planning".into(),
                                hit: true,
                            }],
                        },
                    ],
                    next: Some("i11".into()),
                }),
                json!({"hits":[
                    {"id":12,"room":"Général","author":"bob","alias":"Bob","ts":4,
                     "snippet":[{"text":"…le lien du "},{"text":"planning","hit":true}]},
                    {"id":11,"from":"alice","to":"bob","author":"alice","alias":"Alice","ts":3,
                     "edited":5,"snippet":[{"text":"Planning","hit":true}]}],
                    "next":"i11"}),
            ),
            (Reply::Delete(Empty {}), json!({})),
            (Reply::React(Empty {}), json!({})),
            (Reply::Unreact(Empty {}), json!({})),
            (
                Reply::Thread(Thread::Direct {
                    root: direct(),
                    messages: vec![DirectMessage {
                        id: 10,
                        text: String::new(),
                        extra: MessageExtra {
                            deleted: true,
                            ..MessageExtra::default()
                        },
                        ..direct()
                    }],
                    more: false,
                }),
                json!({"root":{"id":9,"from":"alice","from_alias":"Alice","to":"bob",
                    "text":"hi","ts":2},"messages":[{"id":10,"from":"alice",
                    "from_alias":"Alice","to":"bob","text":"","ts":2,"deleted":true}],
                    "more":false}),
            ),
            (Reply::MarkRead(read_state.clone()), read_json.clone()),
            (Reply::SetNotify(read_state), read_json),
            (
                Reply::Conversations(Conversations {
                    conversations: vec![Conversation {
                        with: "bob".into(),
                        alias: "Bob".into(),
                        last: direct(),
                    }],
                }),
                json!({"conversations":[{"with":"bob","alias":"Bob","last":{"id":9,
                    "from":"alice","from_alias":"Alice","to":"bob","text":"hi","ts":2}}]}),
            ),
            (
                Reply::Who(Users {
                    users: vec![UserPresence {
                        username: "dora".into(),
                        alias: "Dora".into(),
                        status: Status::Offline,
                    }],
                }),
                json!({"users":[{"username":"dora","alias":"Dora","status":"offline"}]}),
            ),
            (
                Reply::Members(Users {
                    users: vec![UserPresence {
                        username: "bob".into(),
                        alias: "Bob".into(),
                        status: Status::Online,
                    }],
                }),
                json!({"users":[{"username":"bob","alias":"Bob","status":"online"}]}),
            ),
            (
                Reply::SetStatus(NewStatus {
                    status: Status::Away,
                }),
                json!({"status":"away"}),
            ),
            (
                Reply::CreateChannel(Room {
                    room: room(MemberState::Member),
                }),
                room_json,
            ),
            (
                Reply::Connected(Sessions {
                    sessions: vec![
                        SessionInfo {
                            username: "alice".into(),
                            alias: "Alice".into(),
                            status: Status::Online,
                            address: "127.0.0.1:5000".into(),
                            transport: Transport::Websocket,
                            since: 5,
                            presence: false,
                            node: None,
                        },
                        SessionInfo {
                            username: "bob".into(),
                            alias: "Bob".into(),
                            status: Status::Away,
                            address: "127.0.0.1:5001".into(),
                            transport: Transport::Tcp,
                            since: 6,
                            presence: true,
                            node: Some(2),
                        },
                    ],
                }),
                json!({"sessions":[{"username":"alice","alias":"Alice","status":"online",
                    "address":"127.0.0.1:5000","transport":"websocket","since":5,
                    "presence":false},
                    {"username":"bob","alias":"Bob","status":"away",
                    "address":"127.0.0.1:5001","transport":"tcp","since":6,
                    "presence":true,"node":2}]}),
            ),
            (
                Reply::Kick(Kicked {
                    user: "bob".into(),
                    until: 6,
                }),
                json!({"user":"bob","until":6}),
            ),
            (Reply::Unkick(Empty {}), json!({})),
            (Reply::Ban(Empty {}), json!({})),
            (Reply::Unban(Empty {}), json!({})),
            (
                Reply::Sanctions(Sanctions {
                    sanctions: vec![
                        SanctionInfo {
                            user: "bob".into(),
                            kind: SanctionKind::Kick,
                            until: Some(6),
                            reason: "flood".into(),
                            by: "admin".into(),
                            since: 1,
                        },
                        SanctionInfo {
                            user: "eve".into(),
                            kind: SanctionKind::Ban,
                            until: None,
                            reason: "spam".into(),
                            by: "admin".into(),
                            since: 1,
                        },
                    ],
                }),
                json!({"sanctions":[
                    {"user":"bob","kind":"kick","until":6,"reason":"flood","by":"admin","since":1},
                    {"user":"eve","kind":"ban","reason":"spam","by":"admin","since":1}]}),
            ),
            (
                Reply::Requests(JoinRequests {
                    requests: vec![JoinRequest {
                        user: "alice".into(),
                        alias: "Alice".into(),
                        room: "Informatique".into(),
                        requested_at: 8,
                    }],
                }),
                json!({"requests":[{"user":"alice","alias":"Alice","room":"Informatique",
                    "requested_at":8}]}),
            ),
            (Reply::Accept(Empty {}), json!({})),
            (Reply::Reject(Empty {}), json!({})),
            (Reply::Broadcast(Empty {}), json!({})),
            (
                Reply::Shutdown(Countdown { seconds: 10 }),
                json!({"seconds":10}),
            ),
            (
                Reply::ResetPassword(PasswordReset {
                    user: "bob".into(),
                    password: Some("s3cret".into()),
                }),
                json!({"user":"bob","password":"s3cret"}),
            ),
            (
                Reply::Accounts(AccountList {
                    accounts: vec![AccountEntry {
                        account: Account {
                            username: "eve".into(),
                            alias: "Eve".into(),
                            first_name: "Ève".into(),
                            last_name: "Roy".into(),
                            is_admin: false,
                            status: Status::Offline,
                            pending_approval: false,
                        },
                        created_at: 2,
                        sessions: 0,
                        sanctions: vec![SanctionInfo {
                            user: "eve".into(),
                            kind: SanctionKind::Ban,
                            until: None,
                            reason: "spam".into(),
                            by: "admin".into(),
                            since: 1,
                        }],
                    }],
                    total: 31,
                    next: Some("eve".into()),
                }),
                json!({"accounts":[{"username":"eve","alias":"Eve","first_name":"Ève",
                    "last_name":"Roy","is_admin":false,"status":"offline","created_at":2,
                    "sessions":0,"sanctions":[{"user":"eve","kind":"ban","reason":"spam",
                    "by":"admin","since":1}]}],"total":31,"next":"eve"}),
            ),
            (
                Reply::AccountRequests(AccountRequests {
                    accounts: vec![AccountRequest {
                        username: "carol".into(),
                        alias: "Carol".into(),
                        first_name: "Carol".into(),
                        last_name: "Roy".into(),
                        requested_at: 3,
                    }],
                }),
                json!({"accounts":[{"username":"carol","alias":"Carol","first_name":"Carol",
                    "last_name":"Roy","requested_at":3}]}),
            ),
            (
                Reply::ApproveAccount(AccountDecided {
                    user: "carol".into(),
                }),
                json!({"user":"carol"}),
            ),
            (
                Reply::RejectAccount(AccountDecided {
                    user: "carol".into(),
                }),
                json!({"user":"carol"}),
            ),
            (
                Reply::CreateInvite(Invitation {
                    id: 11,
                    code: "c0de".into(),
                    expires_at: 12,
                }),
                json!({"id":11,"code":"c0de","expires_at":12}),
            ),
            (
                Reply::Invites(Invites {
                    invites: vec![InviteInfo {
                        id: 11,
                        by: "admin".into(),
                        created_at: 10,
                        expires_at: 12,
                    }],
                }),
                json!({"invites":[{"id":11,"by":"admin","created_at":10,"expires_at":12}]}),
            ),
            (Reply::RevokeInvite(Empty {}), json!({})),
            (
                Reply::CreateAccount(AccountCreated {
                    account: account(),
                    password: Some("generated".into()),
                }),
                json!({"account":account_json,"password":"generated"}),
            ),
            (
                Reply::Audit(AuditLog {
                    entries: vec![AuditEntry {
                        ts: 1,
                        actor: "admin".into(),
                        action: AuditAction::Accept,
                        target: "alice@Informatique".into(),
                        reason: String::new(),
                    }],
                }),
                json!({"entries":[{"ts":1,"actor":"admin","action":"accept",
                    "target":"alice@Informatique","reason":""}]}),
            ),
        ]
    }

    #[test]
    fn every_reply_has_its_documented_shape_and_reads_back() {
        let examples = examples();
        let mut named: Vec<&str> = examples.iter().map(|(r, _)| r.name()).collect();
        named.sort_unstable();
        let mut all = crate::Command::NAMES.to_vec();
        all.sort_unstable();
        assert_eq!(named, all, "one example per command");
        for (reply, shape) in examples {
            let name = reply.name();
            assert_eq!(serde_json::to_value(&reply).unwrap(), shape, "{name}");
            assert_eq!(Reply::decode(name, shape).unwrap(), reply, "{name}");
        }
    }

    #[test]
    fn optional_fields_are_left_out_when_absent() {
        let reset = PasswordReset {
            user: "bob".into(),
            password: None,
        };
        assert_eq!(serde_json::to_value(&reset).unwrap(), json!({"user":"bob"}));
        let created = Reply::CreateAccount(AccountCreated {
            account: account(),
            password: None,
        });
        assert!(serde_json::to_value(&created)
            .unwrap()
            .get("password")
            .is_none());
        let page = json!({"messages":[direct()],"more":false});
        assert!(matches!(
            Reply::decode("history", page).unwrap(),
            Reply::History(History::Direct(_))
        ));
        assert!(Reply::decode("fly", json!({})).is_err());
    }

    #[test]
    fn a_call_is_typed_by_its_command() {
        use crate::{args, cmd, Call, Command};
        assert_eq!(cmd::Kick::NAME, "kick");
        let command = cmd::Join::command(args::Room {
            room: "Blabla".into(),
        });
        assert_eq!(command.name(), cmd::Join::NAME);
        assert!(matches!(command, Command::Join(_)));
        let reply = cmd::Shutdown::reply(Countdown { seconds: 3 });
        assert_eq!(reply.name(), "shutdown");
    }
}
