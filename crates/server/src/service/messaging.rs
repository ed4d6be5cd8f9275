//! Everyday messaging (issue 13): edits, deletions, reactions, replies and threads,
//! mentions, read state and notification levels, and room member lists.
//!
//! Authorization is the server's: a message can be acted on only by someone who can read
//! it (a member of its room, or one of the two users of its conversation); to anyone else
//! it does not exist (`no_such_message`, the same answer as for an unknown id). Durable
//! changes go through the message writer as [`Change`]s: stored, then published, then
//! answered, in the order they were accepted.

use salon_proto::{
    args, reply, AuditAction, AuditEntry, ErrorBody, ErrorCode, Event, NotifyLevel, Place, Quote,
    ReadState, Reply, UserPresence,
};

use crate::live::{Audience, Identity, Message};
use crate::persist::{Change, Extras};
use crate::store::{fold, quote_of, Located, LocatedIn, Reacted, RoomRow, Tx};

use super::messages::page;
use super::*;

/// Distinct `@names` of one message that are looked up; more are plain text.
pub(crate) const MAX_MENTIONS: usize = 32;

/// Code points in one reaction (an emoji with its modifiers and joiners).
const MAX_EMOJI_CHARS: usize = 16;

/// Who sees events about a message.
#[derive(Debug, Clone)]
enum Reach {
    Room(i64),
    /// The two users of a conversation (once if they are the same).
    Pair(i64, i64),
}

impl Reach {
    fn publish(&self, event: Event) -> Vec<Message> {
        match *self {
            Reach::Room(room) => vec![Message::Event(Audience::Room(room), event)],
            Reach::Pair(a, b) if a == b => vec![Message::Event(Audience::User(a), event)],
            Reach::Pair(a, b) => vec![
                Message::Event(Audience::User(a), event.clone()),
                Message::Event(Audience::User(b), event),
            ],
        }
    }
}

/// A message the requester can read, with where events about it go.
struct Readable {
    located: Located,
    reach: Reach,
    place: Place,
}

fn no_such_message(id: i64, field: &str) -> Error {
    ErrorBody::new(
        ErrorCode::NoSuchMessage,
        format!("there is no message {id} that you can read"),
    )
    .with_field(field)
    .into()
}

fn deleted_message(id: i64, field: &str) -> Error {
    ErrorBody::new(
        ErrorCode::NoSuchMessage,
        format!("message {id} was deleted"),
    )
    .with_field(field)
    .into()
}

/// The `@names` of a text, as written, without duplicates (case-insensitively): an `@`
/// at the start or after a character that is not part of a name (so not in an e-mail
/// address), then letters, digits, `.`, `_`, `-`, `'`; a trailing `.`, `-` or `'` is
/// punctuation, not part of the name.
pub(crate) fn mention_names(text: &str) -> Vec<&str> {
    let name_char = |c: char| c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '\'');
    let mut out: Vec<&str> = Vec::new();
    let mut prev: Option<char> = None;
    for (i, c) in text.char_indices() {
        let starts = c == '@' && !prev.is_some_and(|p| name_char(p) || p == '@');
        prev = Some(c);
        if !starts {
            continue;
        }
        let rest = &text[i + 1..];
        let end = rest
            .char_indices()
            .find(|(_, c)| !name_char(*c))
            .map_or(rest.len(), |(j, _)| j);
        let name = rest[..end].trim_end_matches(['.', '-', '\'']);
        if name.is_empty() || out.iter().any(|n| fold(n) == fold(name)) {
            continue;
        }
        out.push(name);
        if out.len() == MAX_MENTIONS {
            break;
        }
    }
    out
}

/// The canonical form of a reaction if it is one emoji (with its skin tone, variation
/// selector or joiners), or why not.
pub(crate) fn check_emoji(emoji: &str) -> Result<&'static str> {
    let invalid = |message: &str| -> Error {
        ErrorBody::new(ErrorCode::InvalidReaction, message)
            .with_field("emoji")
            .into()
    };
    if emoji.chars().count() > MAX_EMOJI_CHARS {
        return Err(invalid("a reaction is one emoji"));
    }
    emojis::get(emoji)
        .map(|e| e.as_str())
        .ok_or_else(|| invalid("a reaction is one emoji"))
}

impl Service {
    /// The message `id`, wherever it is (`no_such_message` naming `field` if none).
    async fn locate(&self, id: i64, field: &str) -> Result<Located> {
        self.store
            .locate_message(id)
            .await?
            .ok_or_else(|| no_such_message(id, field))
    }

    /// Whether `me` can read a message: a member of its room, or one of its
    /// conversation's two users.
    async fn can_read(&self, me: &Identity, located: &Located) -> Result<bool> {
        Ok(match &located.place {
            LocatedIn::Room(room) => self.is_member(me.id, *room).await?,
            LocatedIn::Direct { recipient, .. } => {
                me.id == located.author_id || me.id == *recipient
            }
        })
    }

    /// A located message with where events about it go.
    fn with_reach(&self, located: Located) -> Readable {
        let (reach, place) = match &located.place {
            LocatedIn::Room(room) => (
                Reach::Room(*room),
                Place {
                    room: self.room_name(*room),
                    ..Place::default()
                },
            ),
            LocatedIn::Direct {
                recipient,
                recipient_name,
            } => (
                Reach::Pair(located.author_id, *recipient),
                Place {
                    room: None,
                    from: Some(located.author.clone()),
                    to: Some(recipient_name.clone()),
                },
            ),
        };
        Readable {
            located,
            reach,
            place,
        }
    }

    /// The message `id` if `me` can read it. Anyone else is told it does not exist.
    async fn readable(&self, me: &Identity, id: i64, field: &str) -> Result<Readable> {
        let located = self.locate(id, field).await?;
        if !self.can_read(me, &located).await? {
            return Err(no_such_message(id, field));
        }
        Ok(self.with_reach(located))
    }

    /// Hands a checked change to the message writer; the reply comes once it is stored.
    async fn submit_change(
        &self,
        s: &mut SessionState,
        re: u64,
        change: impl Change,
    ) -> Result<Done> {
        self.submit(crate::persist::Job::Change {
            change: Box::new(change),
            ack: s.ack(re),
        })
        .await
    }

    fn room_name(&self, room: i64) -> Option<String> {
        self.live
            .directory()
            .by_id
            .get(&room)
            .map(|r| r.name.clone())
    }

    /// The quote of the message a new message replies to: readable by `me`, not deleted,
    /// and in the same room (`room`) or the same conversation (with `peer`).
    pub(crate) async fn reply_quote(
        &self,
        me: &Identity,
        id: i64,
        room: Option<&RoomRow>,
        peer: Option<&Identity>,
    ) -> Result<Quote> {
        let r = self.readable(me, id, "reply_to").await?;
        let same_place = match (&r.located.place, room, peer) {
            (LocatedIn::Room(at), Some(room), _) => *at == room.id,
            (LocatedIn::Direct { recipient, .. }, None, Some(peer)) => {
                let (a, b) = (r.located.author_id, *recipient);
                (a == me.id && b == peer.id) || (a == peer.id && b == me.id)
            }
            _ => false,
        };
        if !same_place {
            return Err(ErrorBody::new(
                ErrorCode::InvalidRequest,
                match room {
                    Some(room) => format!(
                        "message {id} is not in {}: a reply is in the same room as the \
                         message it answers",
                        room.name
                    ),
                    None => format!(
                        "message {id} is not in this conversation: a reply is in the same \
                         conversation as the message it answers"
                    ),
                },
            )
            .with_field("reply_to")
            .into());
        }
        if r.located.deleted {
            return Err(deleted_message(id, "reply_to"));
        }
        Ok(Quote {
            id,
            author: r.located.author,
            alias: r.located.alias,
            text: quote_of(&r.located.body),
            deleted: false,
        })
    }

    /// What a new room message carries: its quote, and whom it mentions. Mentioning
    /// someone who cannot read the room notifies nobody; the author is told.
    pub(crate) async fn room_extras(
        &self,
        me: &Identity,
        room: &RoomRow,
        text: &str,
        reply_to: Option<i64>,
    ) -> Result<Option<Box<Extras>>> {
        let reply = match reply_to {
            Some(id) => Some(self.reply_quote(me, id, Some(room), None).await?),
            None => None,
        };
        let names = if text.contains('@') {
            mention_names(text)
        } else {
            Vec::new()
        };
        if reply.is_none() && names.is_empty() {
            return Ok(None);
        }
        let mut extras = Extras {
            reply,
            ..Extras::default()
        };
        for name in names {
            let key = fold(name);
            if key == "room" {
                extras.mention_room = true;
                continue;
            }
            let Some(user) = self.store.user_by_name(&key).await? else {
                continue; // not a user: just text
            };
            if user.id == me.id || extras.mentions.iter().any(|(id, _)| *id == user.id) {
                continue;
            }
            let member = self.live.hub().is_member(user.id, room.id)
                || self.store.is_member(room.id, user.id).await?;
            if member {
                extras.mentions.push((user.id, user.username));
            } else if !extras.not_notified.contains(&user.alias) {
                extras.not_notified.push(user.alias);
            }
        }
        Ok(Some(Box::new(extras)))
    }

    /// `members`: who is in a room the requester is a member of.
    pub(crate) async fn members(&self, me: &Identity, a: args::Room) -> Result<Done> {
        let room = self.room_for(me, &a.room)?;
        if !self.is_member(me.id, room.id).await? {
            return Err(reject(
                ErrorCode::NotMember,
                format!("only members of {} can list its members", room.name),
            ));
        }
        let statuses = self.live.statuses();
        let users = self
            .store
            .room_members(room.id)
            .await?
            .into_iter()
            .map(|(id, username, alias)| UserPresence {
                username,
                alias,
                status: statuses
                    .get(&id)
                    .copied()
                    .unwrap_or(salon_proto::Status::Offline),
            })
            .collect();
        ok(Reply::Members(reply::Users { users }))
    }

    /// `edit`: the author changes their message's text.
    pub(crate) async fn edit(&self, s: &mut SessionState, re: u64, a: args::Edit) -> Result<Done> {
        let me = user(s.user.as_ref())?;
        let r = self.readable(me, a.id, "id").await?;
        if r.located.author_id != me.id {
            return Err(reject(
                ErrorCode::Forbidden,
                "only its author can edit a message",
            ));
        }
        if r.located.deleted {
            return Err(deleted_message(a.id, "id"));
        }
        self.check_text(&a.text)?;
        let change = EditChange {
            direct: r.located.is_direct(),
            id: a.id,
            text: a.text,
            reach: r.reach,
            place: r.place,
            edited: None,
        };
        self.submit_change(s, re, change).await
    }

    /// `delete`: the author deletes their message; an administrator deletes anyone's,
    /// with a reason that goes to the audit log.
    pub(crate) async fn delete(
        &self,
        s: &mut SessionState,
        re: u64,
        a: args::Delete,
    ) -> Result<Done> {
        let me = user(s.user.as_ref())?.clone();
        let located = self.locate(a.id, "id").await?;
        // Administrators moderate every room, member or not.
        if !me.is_admin && !self.can_read(&me, &located).await? {
            return Err(no_such_message(a.id, "id"));
        }
        let r = self.with_reach(located);
        let audit = if r.located.author_id == me.id {
            None
        } else if me.is_admin {
            let reason = super::moderation::reason_or(a.reason, "")?;
            if reason.is_empty() {
                return Err(ErrorBody::new(
                    ErrorCode::MissingField,
                    "say why you delete someone else's message (`reason`, kept in the audit log)",
                )
                .with_field("reason")
                .into());
            }
            let now = self.clock.now_ms();
            Some((
                self.ids.next(now),
                AuditEntry {
                    ts: now,
                    actor: me.username.clone(),
                    action: AuditAction::DeleteMessage,
                    target: format!("{}#{}", r.located.author, a.id),
                    reason,
                },
            ))
        } else {
            return Err(reject(
                ErrorCode::Forbidden,
                "only its author or an administrator can delete a message",
            ));
        };
        if r.located.deleted {
            return Err(deleted_message(a.id, "id"));
        }
        let change = DeleteChange {
            direct: r.located.is_direct(),
            id: a.id,
            audit,
            reach: r.reach,
            place: r.place,
            done: false,
            sweep_soon: self.files.sweep_soon.clone(),
        };
        self.submit_change(s, re, change).await
    }

    /// `react` (`add`) and `unreact`.
    pub(crate) async fn react(
        &self,
        s: &mut SessionState,
        re: u64,
        a: args::React,
        add: bool,
    ) -> Result<Done> {
        let me = user(s.user.as_ref())?;
        let emoji = check_emoji(&a.emoji)?;
        let r = self.readable(me, a.id, "id").await?;
        if r.located.deleted {
            return Err(deleted_message(a.id, "id"));
        }
        let change = ReactChange {
            direct: r.located.is_direct(),
            id: a.id,
            user: me.clone(),
            emoji,
            add,
            max: self.config.limits.reactions_per_message_max,
            reach: r.reach,
            place: r.place,
            outcome: None,
        };
        self.submit_change(s, re, change).await
    }

    /// `thread`: a message and a page of its replies.
    pub(crate) async fn thread(&self, me: &Identity, a: args::Thread) -> Result<Done> {
        let limit = self.page_limit(a.limit)?;
        let before = a.before.unwrap_or(i64::MAX);
        let r = self.readable(me, a.id, "id").await?;
        let budget = self.page_budget();
        let thread = match (&r.located.place, r.place.room) {
            (LocatedIn::Room(_), Some(room)) => {
                let root = self
                    .store
                    .room_message(a.id, &room, me.id)
                    .await?
                    .ok_or_else(|| no_such_message(a.id, "id"))?;
                let rows = self
                    .store
                    .room_thread(a.id, &room, me.id, before, limit + 1)
                    .await?;
                let p = page(rows, limit, budget, super::messages::room_weight);
                reply::Thread::Room {
                    root,
                    messages: p.messages,
                    more: p.more,
                }
            }
            _ => {
                let root = self
                    .store
                    .direct_message(a.id, me.id)
                    .await?
                    .ok_or_else(|| no_such_message(a.id, "id"))?;
                let rows = self
                    .store
                    .direct_thread(a.id, me.id, before, limit + 1)
                    .await?;
                let p = page(rows, limit, budget, super::messages::direct_weight);
                reply::Thread::Direct {
                    root,
                    messages: p.messages,
                    more: p.more,
                }
            }
        };
        ok(Reply::Thread(thread))
    }

    /// `mark_read`: moves the user's marker in a room or conversation to a message of it.
    pub(crate) async fn mark_read(
        &self,
        s: &mut SessionState,
        re: u64,
        a: args::MarkRead,
    ) -> Result<Done> {
        let me = user(s.user.as_ref())?.clone();
        let target = match (&a.room, &a.with) {
            (Some(room), None) => {
                let room = self.room_for(&me, room)?;
                if !self.is_member(me.id, room.id).await? {
                    return Err(reject(
                        ErrorCode::NotMember,
                        format!("only members of {} can read it", room.name),
                    ));
                }
                ReadTarget::Room {
                    id: room.id,
                    name: room.name.clone(),
                }
            }
            (None, Some(with)) => {
                let peer = self.user_named(with, "with").await?;
                ReadTarget::Direct {
                    peer: peer.id,
                    name: peer.username,
                }
            }
            _ => {
                return Err(reject(
                    ErrorCode::InvalidRequest,
                    "mark_read needs exactly one of `room` and `with`",
                ))
            }
        };
        // The marker names a message of that room or conversation.
        let r = self.readable(&me, a.id, "id").await?;
        let same = match (&target, &r.located.place) {
            (ReadTarget::Room { id, .. }, LocatedIn::Room(at)) => id == at,
            (ReadTarget::Direct { peer, .. }, LocatedIn::Direct { recipient, .. }) => {
                (r.located.author_id == *peer && *recipient == me.id)
                    || (r.located.author_id == me.id && recipient == peer)
            }
            _ => false,
        };
        if !same {
            return Err(ErrorBody::new(
                ErrorCode::InvalidRequest,
                format!("message {} is not in that room or conversation", a.id),
            )
            .with_field("id")
            .into());
        }
        let change = ReadChange {
            user: me.id,
            target,
            action: ReadAction::Mark(a.id),
            state: None,
        };
        self.submit_change(s, re, change).await
    }

    /// `set_notify`: the user's notification level in a room.
    pub(crate) async fn set_notify(
        &self,
        s: &mut SessionState,
        re: u64,
        a: args::SetNotify,
    ) -> Result<Done> {
        let me = user(s.user.as_ref())?;
        let room = self.room_for(me, &a.room)?;
        if !self.is_member(me.id, room.id).await? {
            return Err(reject(
                ErrorCode::NotMember,
                format!("only members of {} can choose its notifications", room.name),
            ));
        }
        let change = ReadChange {
            user: me.id,
            target: ReadTarget::Room {
                id: room.id,
                name: room.name.clone(),
            },
            action: ReadAction::Notify(a.level),
            state: None,
        };
        self.submit_change(s, re, change).await
    }
}

type Stored<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = std::result::Result<(), StoreError>> + Send + 'a>,
>;

/// An edit, once checked.
#[derive(Debug)]
struct EditChange {
    direct: bool,
    id: i64,
    text: String,
    reach: Reach,
    place: Place,
    /// The stamp stored, once stored; `None`: the message was deleted meanwhile.
    edited: Option<i64>,
}

impl Change for EditChange {
    fn store<'a>(&'a mut self, store: &'a Store, tx: &'a mut Tx, now: i64) -> Stored<'a> {
        Box::pin(async move {
            self.edited = store
                .edit_message(tx, self.direct, self.id, &self.text, now)
                .await?;
            Ok(())
        })
    }

    fn stored(self: Box<Self>, _now: i64) -> std::result::Result<(Vec<Message>, Reply), ErrorBody> {
        let Some(edited) = self.edited else {
            return Err(deleted_message(self.id, "id").to_body());
        };
        let event = Event::Edited {
            id: self.id,
            place: self.place,
            text: self.text,
            edited,
        };
        Ok((
            self.reach.publish(event),
            Reply::Edit(reply::Edited {
                id: self.id,
                edited,
            }),
        ))
    }
}

/// A deletion, once checked.
#[derive(Debug)]
struct DeleteChange {
    direct: bool,
    id: i64,
    audit: Option<(i64, AuditEntry)>,
    reach: Reach,
    place: Place,
    done: bool,
    /// Told once the deletion is stored (`Files::sweep_soon`).
    sweep_soon: Arc<tokio::sync::Notify>,
}

impl Change for DeleteChange {
    fn store<'a>(&'a mut self, store: &'a Store, tx: &'a mut Tx, now: i64) -> Stored<'a> {
        Box::pin(async move {
            let audit = self.audit.as_ref().map(|(id, entry)| (*id, entry));
            self.done = store
                .delete_message(tx, self.direct, self.id, now, audit)
                .await?;
            Ok(())
        })
    }

    fn stored(self: Box<Self>, _now: i64) -> std::result::Result<(Vec<Message>, Reply), ErrorBody> {
        if !self.done {
            return Err(deleted_message(self.id, "id").to_body());
        }
        // Its files, if it had any, are no longer carried by it: swept soon, so their
        // uploader's quota has them back.
        self.sweep_soon.notify_one();
        let event = Event::Deleted {
            id: self.id,
            place: self.place,
        };
        Ok((self.reach.publish(event), Reply::Delete(reply::Empty {})))
    }
}

/// A reaction added or taken back, once checked.
#[derive(Debug)]
struct ReactChange {
    direct: bool,
    id: i64,
    user: Identity,
    emoji: &'static str,
    add: bool,
    max: u32,
    reach: Reach,
    place: Place,
    /// Whether something changed (`Added`), or why not.
    outcome: Option<Reacted>,
}

impl Change for ReactChange {
    fn store<'a>(&'a mut self, store: &'a Store, tx: &'a mut Tx, now: i64) -> Stored<'a> {
        Box::pin(async move {
            self.outcome = Some(if self.add {
                store
                    .add_reaction(
                        tx,
                        self.direct,
                        self.id,
                        self.user.id,
                        self.emoji,
                        now,
                        self.max,
                    )
                    .await?
            } else if store
                .remove_reaction(tx, self.direct, self.id, self.user.id, self.emoji, now)
                .await?
            {
                Reacted::Added
            } else {
                Reacted::Already
            });
            Ok(())
        })
    }

    fn stored(self: Box<Self>, _now: i64) -> std::result::Result<(Vec<Message>, Reply), ErrorBody> {
        let done = if self.add {
            Reply::React(reply::Empty {})
        } else {
            Reply::Unreact(reply::Empty {})
        };
        match self.outcome {
            Some(Reacted::Added) => {
                let event = Event::Reaction {
                    id: self.id,
                    place: self.place,
                    emoji: self.emoji.to_owned(),
                    user: self.user.username,
                    alias: self.user.alias,
                    added: self.add,
                };
                Ok((self.reach.publish(event), done))
            }
            // Already so: nothing changed, nothing to tell.
            Some(Reacted::Already) | None => Ok((Vec::new(), done)),
            Some(Reacted::TooMany) => Err(ErrorBody::new(
                ErrorCode::TooManyReactions,
                format!("a message has at most {} different reactions", self.max),
            )
            .with_field("emoji")),
            Some(Reacted::Gone) => Err(deleted_message(self.id, "id").to_body()),
        }
    }
}

#[derive(Debug)]
enum ReadTarget {
    Room { id: i64, name: String },
    Direct { peer: i64, name: String },
}

#[derive(Debug)]
enum ReadAction {
    Mark(i64),
    Notify(NotifyLevel),
}

/// A read marker moved or a notification level chosen; every session of the user is told
/// the new read state.
#[derive(Debug)]
struct ReadChange {
    user: i64,
    target: ReadTarget,
    action: ReadAction,
    state: Option<ReadState>,
}

impl Change for ReadChange {
    fn store<'a>(&'a mut self, store: &'a Store, tx: &'a mut Tx, now: i64) -> Stored<'a> {
        Box::pin(async move {
            // For a cluster's catch-up: this user's sessions on a node that missed the
            // `read` event are told their read state again.
            store.record_read_change(tx, self.user, now).await?;
            match (&self.target, &self.action) {
                (ReadTarget::Room { id, name }, action) => {
                    let member = match action {
                        ReadAction::Mark(message) => {
                            store.mark_room_read(tx, *id, self.user, *message).await?
                        }
                        ReadAction::Notify(level) => {
                            store.set_notify(tx, *id, self.user, *level).await?
                        }
                    };
                    if member {
                        self.state = store.room_read_state(tx, *id, name, self.user).await?;
                    }
                }
                (ReadTarget::Direct { peer, name }, ReadAction::Mark(message)) => {
                    store
                        .mark_direct_read(tx, self.user, *peer, *message)
                        .await?;
                    self.state = Some(store.direct_read_state(tx, self.user, *peer, name).await?);
                }
                (ReadTarget::Direct { .. }, ReadAction::Notify(_)) => {}
            }
            Ok(())
        })
    }

    fn stored(self: Box<Self>, _now: i64) -> std::result::Result<(Vec<Message>, Reply), ErrorBody> {
        let Some(state) = self.state else {
            return Err(ErrorBody::new(
                ErrorCode::NotMember,
                "you are no longer a member of this room",
            ));
        };
        let reply = match self.action {
            ReadAction::Mark(_) => Reply::MarkRead(state.clone()),
            ReadAction::Notify(_) => Reply::SetNotify(state.clone()),
        };
        Ok((
            vec![Message::Event(
                Audience::User(self.user),
                Event::Read(state),
            )],
            reply,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mentions_are_names_after_an_at_sign_not_addresses() {
        assert_eq!(
            mention_names("hi @bob and @Chloé-M, cc @room. mail bob@example.com @bob"),
            ["bob", "Chloé-M", "room"]
        );
        assert_eq!(
            mention_names("@@bob (@anne) @ alone @o'neil's"),
            ["anne", "o'neil's"]
        );
        assert_eq!(mention_names("@bob... @BOB"), ["bob"]);
        let many: String = (0..50).map(|i| format!("@u{i} ")).collect();
        assert_eq!(mention_names(&many).len(), MAX_MENTIONS);
    }

    #[test]
    fn a_reaction_is_one_emoji() {
        assert_eq!(check_emoji("👍").ok(), Some("👍"));
        assert_eq!(check_emoji("👍🏽").ok(), Some("👍🏽"));
        // The unqualified heart is the same reaction as the fully qualified one.
        assert_eq!(
            check_emoji("\u{2764}").ok(),
            check_emoji("\u{2764}\u{fe0f}").ok()
        );
        for bad in ["", "a", "👍👍", ":+1:", "<b>", &"👍".repeat(20)] {
            assert!(check_emoji(bad).is_err(), "{bad:?}");
        }
    }
}
