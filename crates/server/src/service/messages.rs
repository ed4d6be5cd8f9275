//! Messages and history: posting to rooms and private conversations (through the message
//! writer), history pages bounded in bytes, conversations, and the offline backlog of
//! private messages with its acknowledgements.

use salon_proto::{args, ErrorBody, ErrorCode, Event, HistoryPage, Reply};

use crate::live::Identity;
use crate::persist::Job;
use crate::store::{fold, Window};

use super::*;

/// A `history` page when `limit` is omitted (or `history_page_max` if smaller).
pub(crate) const DEFAULT_HISTORY_PAGE: u32 = 50;

impl Service {
    /// Pushes the next page of the session's backlog of private messages, if the
    /// previous page has been acknowledged: never faster than the client takes them.
    pub(crate) async fn push_backlog(&self, s: &mut SessionState) -> Result<()> {
        let Some(user) = s.user.as_ref().map(|u| u.id) else {
            return Ok(());
        };
        let Some(backlog) = s.backlog.as_mut() else {
            return Ok(());
        };
        if !backlog.outstanding.is_empty() {
            return Ok(());
        }
        let page = self
            .store
            .undelivered_directs(user, backlog.after, &backlog.up_to, BACKLOG_PAGE)
            .await?;
        let last_page = page.len() < BACKLOG_PAGE as usize;
        for dm in page {
            backlog.after = dm.id;
            backlog.outstanding.insert(dm.id);
            s.outbound.send_event(&Event::Direct(dm)).await;
        }
        if last_page {
            s.backlog = None;
        }
        Ok(())
    }

    /// Records private messages as received; the next backlog page follows once the
    /// current one is acknowledged.
    pub(crate) async fn ack_directs(
        &self,
        s: &mut SessionState,
        a: args::AckDirects,
    ) -> Result<Done> {
        let me = user(s.user.as_ref())?.id;
        if a.ids.len() > MAX_ACK_IDS {
            return Err(ErrorBody::new(
                ErrorCode::InvalidRequest,
                format!("acknowledge at most {MAX_ACK_IDS} messages at a time"),
            )
            .with_field("ids")
            .into());
        }
        if !s.presence {
            // A tool's session: the user has not read them (see `establish`).
            return ok(Reply::AckDirects(salon_proto::reply::Empty {}));
        }
        self.store.mark_delivered(me, &a.ids).await?;
        if let Some(backlog) = s.backlog.as_mut() {
            for id in &a.ids {
                backlog.outstanding.remove(id);
            }
        }
        self.push_backlog(s).await?;
        ok(Reply::AckDirects(salon_proto::reply::Empty {}))
    }

    /// A message's text: not empty unless it carries files (`with_files`), not too long.
    pub(crate) fn check_text(&self, text: &str) -> Result<()> {
        self.check_body(text, false)
    }

    pub(crate) fn check_body(&self, text: &str, with_files: bool) -> Result<()> {
        if text.trim().is_empty() && !with_files {
            return Err(reject(ErrorCode::EmptyMessage, "a message cannot be empty"));
        }
        let max = self.config.limits.max_message_chars;
        if text.chars().count() > max {
            return Err(reject(
                ErrorCode::MessageTooLong,
                format!("a message has at most {max} characters"),
            ));
        }
        Ok(())
    }

    pub(crate) async fn send(&self, s: &mut SessionState, re: u64, a: args::Send) -> Result<Done> {
        let me = user(s.user.as_ref())?;
        let room = self.room_for(me, &a.room)?;
        if !self.is_member(me.id, room.id).await? {
            return Err(reject(
                ErrorCode::NotMember,
                format!("only members of {} can post in it", room.name),
            ));
        }
        self.check_body(&a.text, !a.attachments.is_empty())?;
        check_key(a.key.as_deref())?;
        let attachments = self.attachable(me, &a.attachments).await?;
        let mut extras = self.room_extras(me, &room, &a.text, a.reply_to).await?;
        if !attachments.is_empty() {
            extras.get_or_insert_with(Default::default).attachments = attachments;
        }
        let job = Job::Room {
            room,
            author: me.clone(),
            text: a.text,
            key: a.key,
            extras,
            ack: s.ack(re),
        };
        self.submit(job).await
    }

    pub(crate) async fn direct(
        &self,
        s: &mut SessionState,
        re: u64,
        a: args::Direct,
    ) -> Result<Done> {
        let me = user(s.user.as_ref())?;
        self.check_body(&a.text, !a.attachments.is_empty())?;
        check_key(a.key.as_deref())?;
        let attachments = self.attachable(me, &a.attachments).await?;
        let to = self.user_named(&a.to, "to").await?;
        let reply = match a.reply_to {
            Some(id) => Some(Box::new(self.reply_quote(me, id, None, Some(&to)).await?)),
            None => None,
        };
        let job = Job::Direct {
            from: me.clone(),
            to,
            text: a.text,
            key: a.key,
            reply,
            attachments,
            ack: s.ack(re),
        };
        self.submit(job).await
    }

    pub(crate) async fn submit(&self, job: Job) -> Result<Done> {
        match self.persist.submit(job).await {
            Ok(()) => Ok(Done::Deferred),
            Err(_) => Err(reject(
                ErrorCode::ShuttingDown,
                "the server is shutting down; the message was not stored",
            )),
        }
    }

    pub(crate) async fn user_named(&self, name: &str, field: &str) -> Result<Identity> {
        let u = self.store.user_by_name(&fold(name)).await?.ok_or_else(|| {
            Error::from(
                ErrorBody::new(ErrorCode::NoSuchUser, format!("there is no user {name:?}"))
                    .with_field(field),
            )
        })?;
        Ok(Identity {
            id: u.id,
            username: u.username,
            alias: u.alias,
            is_admin: u.is_admin,
        })
    }

    /// A page size asked for (`history`, `thread`): 1 to `history_page_max`; omitted,
    /// [`DEFAULT_HISTORY_PAGE`] (or the maximum, if smaller).
    pub(crate) fn page_limit(&self, limit: Option<u32>) -> Result<u32> {
        let max = self.config.limits.history_page_max;
        match limit {
            None => Ok(DEFAULT_HISTORY_PAGE.min(max)),
            Some(n) if (1..=max).contains(&n) => Ok(n),
            Some(n) => Err(ErrorBody::new(
                ErrorCode::InvalidRequest,
                format!("limit must be from 1 to {max}, not {n}"),
            )
            .with_field("limit")
            .into()),
        }
    }

    pub(crate) async fn history(&self, me: &Identity, a: args::History) -> Result<Done> {
        let limit = self.page_limit(a.limit)?;
        let before = a.before.unwrap_or(i64::MAX);
        if a.before.is_some() && a.after.is_some() {
            return Err(ErrorBody::new(
                ErrorCode::InvalidRequest,
                "history takes `before` or `after`, not both",
            )
            .with_field("after")
            .into());
        }
        let window = match a.after {
            Some(after) => Window::After(after),
            None => Window::Before(before),
        };
        match (&a.room, &a.with) {
            (Some(room), None) => {
                let room = self.room_for(me, room)?;
                if !self.is_member(me.id, room.id).await? {
                    return Err(reject(
                        ErrorCode::NotMember,
                        format!("only members of {} can read it", room.name),
                    ));
                }
                let rows = self
                    .store
                    .room_history(&room, me.id, window, limit + 1)
                    .await?;
                let page = forward(
                    page(rows, limit, self.page_budget(), room_weight),
                    a.after.is_some(),
                );
                ok(Reply::History(salon_proto::reply::History::Room(page)))
            }
            (None, Some(with)) => {
                let other = self.user_named(with, "with").await?;
                let rows = self
                    .store
                    .direct_history(me.id, other.id, window, limit + 1)
                    .await?;
                let page = forward(
                    page(rows, limit, self.page_budget(), direct_weight),
                    a.after.is_some(),
                );
                ok(Reply::History(salon_proto::reply::History::Direct(page)))
            }
            _ => Err(reject(
                ErrorCode::InvalidRequest,
                "history needs exactly one of `room` and `with`",
            )),
        }
    }

    /// Bytes a history page may take on the wire: half the session's outbound budget, so
    /// that a page always fits and pipelined `history` requests cannot make the server
    /// hold more than the budget per connection.
    pub(crate) fn page_budget(&self) -> usize {
        self.config.limits.outbound_queue_bytes / 2
    }

    pub(crate) async fn conversations(&self, me: &Identity) -> Result<Done> {
        const MAX_CONVERSATIONS: u32 = 200;
        let list: Vec<salon_proto::Conversation> = self
            .store
            .conversations(me.id, MAX_CONVERSATIONS)
            .await?
            .into_iter()
            .map(|(last, alias)| salon_proto::Conversation {
                with: if last.from == me.username {
                    last.to.clone()
                } else {
                    last.from.clone()
                },
                alias,
                last,
            })
            .collect();
        ok(Reply::Conversations(salon_proto::reply::Conversations {
            conversations: list,
        }))
    }
}

/// `rows` is newest first with possibly one extra row; returns the page oldest first.
/// The page also stops before its encoded size would pass `budget` bytes (at least one
/// message is always returned); `more` then says there is more to page through.
pub(crate) fn page<M>(
    mut rows: Vec<M>,
    limit: u32,
    budget: usize,
    weight: impl Fn(&M) -> usize,
) -> HistoryPage<M> {
    let mut keep = rows.len().min(limit as usize);
    let mut used = 0;
    for (i, row) in rows.iter().take(keep).enumerate() {
        used += weight(row) + MESSAGE_OVERHEAD;
        if used > budget && i > 0 {
            keep = i;
            break;
        }
    }
    let more = rows.len() > keep;
    rows.truncate(keep);
    rows.reverse();
    HistoryPage {
        messages: rows,
        more,
    }
}

/// A page read forward (`after`) came oldest first and [`page`] reversed it: put it back
/// in time order (its `more` then says newer messages follow).
fn forward<M>(mut page: HistoryPage<M>, after: bool) -> HistoryPage<M> {
    if after {
        page.messages.reverse();
    }
    page
}

/// Room for a message's other fields (ids, names, time) in a history page, in bytes.
pub(crate) const MESSAGE_OVERHEAD: usize = 256;

/// Bytes a message's text, quote, reactions and mentions take on the wire, about
/// (each name and emoji counted with room for its quotes and separators).
fn extra_weight(extra: &salon_proto::MessageExtra) -> usize {
    let quote = extra.reply_to.as_ref().map_or(0, |q| {
        wire_len(&q.text) + q.author.len() + q.alias.len() + 64
    });
    let reactions: usize = extra
        .reactions
        .iter()
        .map(|r| r.emoji.len() + 48 + r.users.iter().map(|u| u.len() + 3).sum::<usize>())
        .sum();
    let files: usize = extra
        .attachments
        .iter()
        .map(|a| wire_len(&a.name) + a.mime.len() + 128)
        .sum();
    quote + reactions + files
}

pub(crate) fn room_weight(m: &salon_proto::RoomMessage) -> usize {
    wire_len(&m.text)
        + extra_weight(&m.extra)
        + m.mentions.iter().map(|u| u.len() + 3).sum::<usize>()
}

pub(crate) fn direct_weight(m: &salon_proto::DirectMessage) -> usize {
    wire_len(&m.text) + extra_weight(&m.extra)
}

/// Bytes a text takes inside a JSON string: control characters are escaped as `\uXXXX`
/// (or `\n`, `\t`), quotes and backslashes doubled.
pub(crate) fn wire_len(text: &str) -> usize {
    text.bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\n' | b'\t' => 2,
            0..=0x1f => 6,
            _ => 1,
        })
        .sum()
}

/// An idempotency key must follow [`salon_proto::valid_message_key`].
pub(crate) fn check_key(key: Option<&str>) -> Result<()> {
    match key {
        Some(key) if !salon_proto::valid_message_key(key) => Err(Error::from(
            ErrorBody::new(
                ErrorCode::InvalidRequest,
                format!(
                    "a key is 1 to {} printable ASCII characters without spaces",
                    salon_proto::MAX_MESSAGE_KEY_CHARS
                ),
            )
            .with_field("key"),
        )),
        _ => Ok(()),
    }
}
