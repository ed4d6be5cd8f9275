//! Messages: the `messages` table (room messages, R12) and `direct_messages` (private
//! messages and whether their recipient acknowledged them, R13): group-commit inserts,
//! look-ups by idempotency key, history pages (R14) and the undelivered backlog.

use salon_proto::{DirectMessage, MessageExtra, Quote, RoomMessage, QUOTE_CHARS};

use super::search::{self, IndexRow, Scope, Source};
use super::{multi_insert, retrying, Dialect, Result, Store, StoreError};
use crate::ids::Watermark;

/// The node that made `d.id` (`ids::node_of`, in SQL: the same bits on every backend).
macro_rules! node_of_id {
    () => {
        "((d.id >> 8) & 15)"
    };
}

/// `d.id` is covered by a [`Watermark`] bound as its 16 marks (`Watermark::covers`).
macro_rules! covered_by_watermark {
    () => {
        concat!(
            "d.id <= CASE ",
            node_of_id!(),
            " WHEN 0 THEN ? WHEN 1 THEN ? WHEN 2 THEN ? WHEN 3 THEN ? WHEN 4 THEN ? \
             WHEN 5 THEN ? WHEN 6 THEN ? WHEN 7 THEN ? WHEN 8 THEN ? WHEN 9 THEN ? \
             WHEN 10 THEN ? WHEN 11 THEN ? WHEN 12 THEN ? WHEN 13 THEN ? WHEN 14 THEN ? \
             ELSE ? END"
        )
    };
}

/// A room message about to be stored.
#[derive(Debug, Clone)]
pub struct NewRoomMessage {
    pub id: i64,
    pub room_id: i64,
    pub author_id: i64,
    pub body: String,
    pub created_at: i64,
    /// The client's idempotency key: unique per author among room messages.
    pub key: Option<String>,
    /// The message this one replies to (checked: in the same room).
    pub reply_to: Option<i64>,
    /// `@room`.
    pub mention_room: bool,
    /// Members mentioned by `@alias`.
    pub mentions: Vec<i64>,
    /// Files it carries, in order (checked: the author's uploads).
    pub attachments: Vec<i64>,
}

/// A private message about to be stored.
#[derive(Debug, Clone)]
pub struct NewDirect {
    pub id: i64,
    pub sender_id: i64,
    pub recipient_id: i64,
    pub body: String,
    pub created_at: i64,
    /// The client's idempotency key: unique per sender among private messages.
    pub key: Option<String>,
    /// The message this one replies to (checked: in the same conversation).
    pub reply_to: Option<i64>,
    /// Files it carries, in order (checked: the sender's uploads).
    pub attachments: Vec<i64>,
}

/// Which side of a message id a history page is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// Messages with a smaller id, newest first.
    Before(i64),
    /// Messages with a larger id, oldest first (a page forward, e.g. the context after a
    /// message a search found).
    After(i64),
}

impl Window {
    pub(super) fn id(self) -> i64 {
        match self {
            Window::Before(id) | Window::After(id) => id,
        }
    }
}

/// A message already stored under an author's idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct KeyedMessage {
    pub id: i64,
    pub created_at: i64,
    /// The room (room messages) or the recipient (private messages).
    pub target: i64,
    pub body: String,
    /// Set once it was edited: its text (and files) may no longer be what was sent.
    pub edited_at: Option<i64>,
    /// Set once it was deleted.
    pub deleted_at: Option<i64>,
    /// The files it carries, in order (none once it is deleted).
    #[sqlx(skip)]
    pub files: Vec<i64>,
}

/// Largest rows per multi-row statement; batches are cut into these sizes so that only a
/// few statement shapes exist (each prepared once per connection).
const CHUNKS: [usize; 4] = [64, 16, 4, 1];

/// The writer's statements, one per chunk size, built once for the store's dialect.
#[derive(Debug, Clone)]
pub(super) struct BatchStatements {
    room_inserts: [String; 4],
    direct_inserts: [String; 4],
    mention_inserts: [String; 4],
    ack_updates: [String; 4],
    /// The search indexes' inserts (`store::search`).
    pub(super) room_index: [String; 4],
    pub(super) direct_index: [String; 4],
}

impl BatchStatements {
    pub(super) fn new(dialect: Dialect) -> BatchStatements {
        BatchStatements {
            room_inserts: CHUNKS.map(|n| {
                dialect.rewrite(&multi_insert(
                    "messages (id, room_id, author_id, body, created_at, client_key, reply_to, \
                     mention_room)",
                    8,
                    n,
                ))
            }),
            direct_inserts: CHUNKS.map(|n| {
                dialect.rewrite(&multi_insert(
                    "direct_messages (id, sender_id, recipient_id, user_lo, user_hi, body, \
                     created_at, client_key, reply_to)",
                    9,
                    n,
                ))
            }),
            mention_inserts: CHUNKS
                .map(|n| dialect.rewrite(&multi_insert("mentions (user_id, message_id)", 2, n))),
            room_index: CHUNKS.map(|n| search::insert_statement(dialect, Source::Room, n)),
            direct_index: CHUNKS.map(|n| search::insert_statement(dialect, Source::Direct, n)),
            ack_updates: CHUNKS.map(|n| {
                dialect.rewrite(&format!(
                    "UPDATE direct_messages SET delivered = 1 \
                     WHERE recipient_id = ? AND delivered = 0 AND id IN ({})",
                    vec!["?"; n].join(", ")
                ))
            }),
        }
    }
}

/// The largest chunk size that fits `remaining`: (index into [`CHUNKS`], size).
pub(super) fn chunk_for(remaining: usize) -> (usize, usize) {
    CHUNKS
        .iter()
        .enumerate()
        .find(|(_, n)| **n <= remaining)
        .map_or((CHUNKS.len() - 1, 1), |(i, n)| (i, *n))
}

/// A private message with its sender's and recipient's names (`users s`, `users r`) and
/// its extras (see [`ExtraRecord`]).
#[derive(sqlx::FromRow)]
pub(super) struct DirectRecord {
    id: i64,
    pub(super) sender_id: i64,
    pub(super) recipient_id: i64,
    sender: String,
    sender_alias: String,
    recipient: String,
    body: String,
    created_at: i64,
    #[sqlx(flatten)]
    extra: ExtraRecord,
}

impl From<DirectRecord> for DirectMessage {
    fn from(r: DirectRecord) -> DirectMessage {
        DirectMessage {
            id: r.id,
            from: r.sender,
            from_alias: r.sender_alias,
            to: r.recipient,
            text: r.body,
            ts: r.created_at,
            extra: r.extra.into(),
        }
    }
}

/// What a message row says beyond its text: its edit and deletion times, the message it
/// replies to (`q`, by `qu`) with its reply count. Reactions and mentions are read
/// apart, for a whole page at once (`store::messaging`).
#[derive(sqlx::FromRow)]
pub(super) struct ExtraRecord {
    edited_at: Option<i64>,
    deleted_at: Option<i64>,
    reply_to: Option<i64>,
    replies: i64,
    reaction_rows: i64,
    attachment_rows: i64,
    quote_body: Option<String>,
    quote_author: Option<String>,
    quote_alias: Option<String>,
    quote_deleted: Option<i64>,
}

impl ExtraRecord {
    /// Whether the page look-up of reactions has anything to find for this message (a
    /// deletion removed a message's reactions).
    fn has_reactions(&self) -> bool {
        self.reaction_rows > 0 && self.deleted_at.is_none()
    }

    /// Whether it carries files to look up (a deletion removed them).
    pub(super) fn has_attachments(&self) -> bool {
        self.attachment_rows > 0 && self.deleted_at.is_none()
    }
}

impl From<ExtraRecord> for MessageExtra {
    fn from(r: ExtraRecord) -> MessageExtra {
        let reply_to = match (r.reply_to, r.quote_author, r.quote_alias) {
            (Some(id), Some(author), Some(alias)) => Some(Quote {
                id,
                author,
                alias,
                text: r.quote_body.map(|body| quote_of(&body)).unwrap_or_default(),
                deleted: r.quote_deleted.is_some(),
            }),
            _ => None,
        };
        MessageExtra {
            reply_to,
            replies: u32::try_from(r.replies).unwrap_or(u32::MAX),
            edited: r.edited_at,
            deleted: r.deleted_at.is_some(),
            // Filled in by the page look-up (`store::messaging`).
            reactions: Vec::new(),
            attachments: Vec::new(),
        }
    }
}

/// The beginning of a message's text, as a reply quotes it.
pub fn quote_of(text: &str) -> String {
    match text.char_indices().nth(QUOTE_CHARS) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// The columns of a [`DirectRecord`], for every query that reads private messages, and
/// the joins they need after `FROM direct_messages d`.
macro_rules! direct_columns {
    () => {
        "d.id, d.sender_id, d.recipient_id, s.username AS sender, s.alias AS sender_alias, r.username AS recipient, \
         d.body, d.created_at, d.edited_at, d.deleted_at, d.reply_to, \
         (SELECT COUNT(*) FROM direct_messages dr WHERE dr.reply_to = d.id) AS replies, \
         (SELECT COUNT(*) FROM reactions rx WHERE rx.message_id = d.id) AS reaction_rows, \
         (SELECT COUNT(*) FROM attachments ax WHERE ax.message_id = d.id) AS attachment_rows, \
         q.body AS quote_body, qu.username AS quote_author, qu.alias AS quote_alias, \
         q.deleted_at AS quote_deleted"
    };
}
macro_rules! direct_joins {
    () => {
        " FROM direct_messages d \
         JOIN users s ON s.id = d.sender_id JOIN users r ON r.id = d.recipient_id \
         LEFT JOIN direct_messages q ON q.id = d.reply_to \
         LEFT JOIN users qu ON qu.id = q.sender_id "
    };
}
pub(super) use {direct_columns, direct_joins};

/// The columns of a [`RoomMessageRecord`] and their joins (after `SELECT`).
macro_rules! room_columns {
    () => {
        "m.id, m.room_id, u.username, u.alias, m.body, m.created_at, m.mention_room, \
         m.edited_at, m.deleted_at, m.reply_to, \
         (SELECT COUNT(*) FROM messages mr WHERE mr.reply_to = m.id) AS replies, \
         (SELECT COUNT(*) FROM reactions rx WHERE rx.message_id = m.id) AS reaction_rows, \
         (SELECT COUNT(*) FROM attachments ax WHERE ax.message_id = m.id) AS attachment_rows, \
         (SELECT COUNT(*) FROM mentions mx WHERE mx.message_id = m.id) AS mention_rows, \
         q.body AS quote_body, qu.username AS quote_author, qu.alias AS quote_alias, \
         q.deleted_at AS quote_deleted \
         FROM messages m JOIN users u ON u.id = m.author_id \
         LEFT JOIN messages q ON q.id = m.reply_to \
         LEFT JOIN users qu ON qu.id = q.author_id "
    };
}
pub(super) use room_columns;

/// The last message of a conversation and the other user's alias.
#[derive(sqlx::FromRow)]
struct ConversationRecord {
    #[sqlx(flatten)]
    last: DirectRecord,
    peer_alias: String,
}

#[derive(sqlx::FromRow)]
pub(super) struct RoomMessageRecord {
    id: i64,
    pub(super) room_id: i64,
    username: String,
    alias: String,
    body: String,
    created_at: i64,
    mention_room: i64,
    mention_rows: i64,
    #[sqlx(flatten)]
    extra: ExtraRecord,
}

impl RoomMessageRecord {
    pub(super) fn into_message(self, room: String) -> RoomMessage {
        RoomMessage {
            id: self.id,
            room,
            author: self.username,
            alias: self.alias,
            text: self.body,
            ts: self.created_at,
            extra: self.extra.into(),
            // Filled in by the page look-up (`store::messaging`).
            mentions: Vec::new(),
            mention_room: super::flag(self.mention_room),
        }
    }

    /// Whether it carries files to look up.
    pub(super) fn has_attachments(&self) -> bool {
        self.extra.has_attachments()
    }

    /// Its id, and whether it has reactions and mentions to look up.
    pub(super) fn lookups(&self) -> (i64, bool, bool) {
        let live = self.extra.deleted_at.is_none();
        (
            self.id,
            self.extra.has_reactions(),
            live && self.mention_rows > 0,
        )
    }
}

impl DirectRecord {
    /// Whether it carries files to look up.
    pub(super) fn has_attachments(&self) -> bool {
        self.extra.has_attachments()
    }

    /// Its id, and whether it has reactions to look up.
    pub(super) fn lookups(&self) -> (i64, bool) {
        (self.id, self.extra.has_reactions())
    }
}

impl Store {
    /// Stores a batch of messages in one transaction (group commit): all or none. A key
    /// already used by the same author (room messages) or sender (private messages) fails
    /// the batch with a unique violation; see [`Store::room_message_by_key`].
    pub async fn insert_messages(
        &self,
        rooms: &[&NewRoomMessage],
        directs: &[&NewDirect],
    ) -> Result<()> {
        retrying(|| self.insert_messages_once(rooms, directs)).await
    }

    async fn insert_messages_once(
        &self,
        rooms: &[&NewRoomMessage],
        directs: &[&NewDirect],
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        let body = async {
            let mut rest = rooms;
            while !rest.is_empty() {
                let (i, n) = chunk_for(rest.len());
                let mut q = sqlx::query(&self.batch.room_inserts[i]);
                for m in &rest[..n] {
                    q = q
                        .bind(m.id)
                        .bind(m.room_id)
                        .bind(m.author_id)
                        .bind(&m.body)
                        .bind(m.created_at)
                        .bind(m.key.as_deref())
                        .bind(m.reply_to)
                        .bind(i64::from(m.mention_room));
                }
                tx.execute(q).await?;
                rest = &rest[n..];
            }
            // Mentions are rare: only messages with some cost a statement.
            let mentions: Vec<(i64, i64)> = rooms
                .iter()
                .flat_map(|m| m.mentions.iter().map(|user| (*user, m.id)))
                .collect();
            let mut rest = &mentions[..];
            while !rest.is_empty() {
                let (i, n) = chunk_for(rest.len());
                let mut q = sqlx::query(&self.batch.mention_inserts[i]);
                for (user, message) in &rest[..n] {
                    q = q.bind(*user).bind(*message);
                }
                tx.execute(q).await?;
                rest = &rest[n..];
            }
            let mut rest = directs;
            while !rest.is_empty() {
                let (i, n) = chunk_for(rest.len());
                let mut q = sqlx::query(&self.batch.direct_inserts[i]);
                for d in &rest[..n] {
                    q = q
                        .bind(d.id)
                        .bind(d.sender_id)
                        .bind(d.recipient_id)
                        .bind(d.sender_id.min(d.recipient_id))
                        .bind(d.sender_id.max(d.recipient_id))
                        .bind(&d.body)
                        .bind(d.created_at)
                        .bind(d.key.as_deref())
                        .bind(d.reply_to);
                }
                tx.execute(q).await?;
                rest = &rest[n..];
            }
            // The search indexes, in the same transaction: what is acknowledged is found.
            if !rooms.is_empty() {
                let rows: Vec<IndexRow<'_>> = rooms
                    .iter()
                    .map(|m| IndexRow {
                        id: m.id,
                        text: &m.body,
                        scope: Scope::Room(m.room_id),
                    })
                    .collect();
                self.index_messages(&mut tx, Source::Room, &rows).await?;
            }
            if !directs.is_empty() {
                let rows: Vec<IndexRow<'_>> = directs
                    .iter()
                    .map(|d| IndexRow {
                        id: d.id,
                        text: &d.body,
                        scope: Scope::Direct(d.sender_id, d.recipient_id),
                    })
                    .collect();
                self.index_messages(&mut tx, Source::Direct, &rows).await?;
            }
            // Files are rarer still: a batch without any costs no statement.
            let attached: super::files::AttachmentRows<'_> = rooms
                .iter()
                .map(|m| (m.id, &m.attachments[..]))
                .chain(directs.iter().map(|d| (d.id, &d.attachments[..])))
                .filter(|(_, files)| !files.is_empty())
                .collect();
            if !attached.is_empty() {
                // Every message of a batch has the batch's time.
                let now = rooms
                    .first()
                    .map(|m| m.created_at)
                    .or(directs.first().map(|d| d.created_at))
                    .unwrap_or(0);
                self.insert_attachments(&mut tx, &attached, now).await?;
            }
            Ok::<_, StoreError>(())
        }
        .await;
        tx.finish(body).await
    }

    /// The room message an author already stored under `key`, if any.
    pub async fn room_message_by_key(
        &self,
        author: i64,
        key: &str,
    ) -> Result<Option<KeyedMessage>> {
        let sql = self.sql(
            "SELECT id, created_at, room_id AS target, body, edited_at, deleted_at FROM messages \
             WHERE author_id = ? AND client_key = ?",
        );
        let found = self
            .fetch_optional_as(sqlx::query(&sql).bind(author).bind(key))
            .await?;
        self.with_files(found).await
    }

    /// `found` with the files it carries.
    async fn with_files(&self, found: Option<KeyedMessage>) -> Result<Option<KeyedMessage>> {
        let Some(mut found) = found else {
            return Ok(None);
        };
        let sql =
            self.sql("SELECT file_id FROM attachments WHERE message_id = ? ORDER BY position");
        let files: Vec<(i64,)> = self.fetch_all_as(sqlx::query(&sql).bind(found.id)).await?;
        found.files = files.into_iter().map(|(f,)| f).collect();
        Ok(Some(found))
    }

    /// The private message a sender already stored under `key`, if any.
    pub async fn direct_by_key(&self, sender: i64, key: &str) -> Result<Option<KeyedMessage>> {
        let sql = self.sql(
            "SELECT id, created_at, recipient_id AS target, body, edited_at, deleted_at \
             FROM direct_messages WHERE sender_id = ? AND client_key = ?",
        );
        let found = self
            .fetch_optional_as(sqlx::query(&sql).bind(sender).bind(key))
            .await?;
        self.with_files(found).await
    }

    /// Up to `limit` private messages between two users on one side of an id: newest
    /// first before it, oldest first after it.
    pub async fn direct_history(
        &self,
        a: i64,
        b: i64,
        window: Window,
        limit: u32,
    ) -> Result<Vec<DirectMessage>> {
        let sql = match window {
            Window::Before(_) => self.sql(concat!(
                "SELECT ",
                direct_columns!(),
                direct_joins!(),
                "WHERE d.user_lo = ? AND d.user_hi = ? AND d.id < ? ORDER BY d.id DESC LIMIT ?"
            )),
            Window::After(_) => self.sql(concat!(
                "SELECT ",
                direct_columns!(),
                direct_joins!(),
                "WHERE d.user_lo = ? AND d.user_hi = ? AND d.id > ? ORDER BY d.id LIMIT ?"
            )),
        };
        let rows: Vec<DirectRecord> = self
            .fetch_all_as(
                sqlx::query(&sql)
                    .bind(a.min(b))
                    .bind(a.max(b))
                    .bind(window.id())
                    .bind(i64::from(limit)),
            )
            .await?;
        self.direct_messages(rows, a).await
    }

    /// A user's conversations, the latest first: the last message of each, and the
    /// other user's alias.
    pub async fn conversations(
        &self,
        user: i64,
        limit: u32,
    ) -> Result<Vec<(DirectMessage, String)>> {
        let sql = self.sql(concat!(
            "SELECT ",
            direct_columns!(),
            ", CASE WHEN d.sender_id = ? THEN r.alias ELSE s.alias END AS peer_alias",
            direct_joins!(),
            "WHERE d.id IN (SELECT MAX(id) FROM direct_messages \
                            WHERE user_lo = ? OR user_hi = ? GROUP BY user_lo, user_hi) \
             ORDER BY d.id DESC LIMIT ?"
        ));
        let rows: Vec<ConversationRecord> = self
            .fetch_all_as(
                sqlx::query(&sql)
                    .bind(user)
                    .bind(user)
                    .bind(user)
                    .bind(i64::from(limit)),
            )
            .await?;
        let (last, aliases): (Vec<DirectRecord>, Vec<String>) =
            rows.into_iter().map(|r| (r.last, r.peer_alias)).unzip();
        let last = self.direct_messages(last, user).await?;
        Ok(last.into_iter().zip(aliases).collect())
    }

    /// Up to `limit` private messages to `recipient` not yet acknowledged, with
    /// `after < id` and covered by `up_to`, oldest first.
    pub async fn undelivered_directs(
        &self,
        recipient: i64,
        after: i64,
        up_to: &Watermark,
        limit: u32,
    ) -> Result<Vec<DirectMessage>> {
        let sql = self.sql(concat!(
            "SELECT ",
            direct_columns!(),
            direct_joins!(),
            "WHERE d.recipient_id = ? AND d.delivered = 0 AND d.id > ? AND ",
            covered_by_watermark!(),
            " ORDER BY d.id LIMIT ?"
        ));
        let mut query = sqlx::query(&sql).bind(recipient).bind(after);
        for mark in up_to.0 {
            query = query.bind(mark);
        }
        let rows: Vec<DirectRecord> = self.fetch_all_as(query.bind(i64::from(limit))).await?;
        self.direct_messages(rows, recipient).await
    }

    /// How many private messages to `recipient` covered by `up_to` are not yet
    /// acknowledged.
    pub async fn count_undelivered(&self, recipient: i64, up_to: &Watermark) -> Result<u32> {
        let sql = self.sql(concat!(
            "SELECT COUNT(*) AS scalar FROM direct_messages d \
             WHERE d.recipient_id = ? AND d.delivered = 0 AND ",
            covered_by_watermark!()
        ));
        let mut query = sqlx::query(&sql).bind(recipient);
        for mark in up_to.0 {
            query = query.bind(mark);
        }
        let count: i64 = self.fetch_scalar(query).await?;
        Ok(u32::try_from(count).unwrap_or(u32::MAX))
    }

    /// Records that `recipient` received these private messages (ids of messages to
    /// someone else are ignored).
    pub async fn mark_delivered(&self, recipient: i64, ids: &[i64]) -> Result<()> {
        let mut rest = ids;
        while !rest.is_empty() {
            let (i, n) = chunk_for(rest.len());
            let mut q = sqlx::query(&self.batch.ack_updates[i]).bind(recipient);
            for id in &rest[..n] {
                q = q.bind(*id);
            }
            self.execute(q).await?;
            rest = &rest[n..];
        }
        Ok(())
    }

    /// The largest private message id stored (0 if none).
    /// The largest id the id generators made, in every table that takes theirs: a
    /// starting server's generator continues above it.
    pub async fn max_generated_id(&self) -> Result<i64> {
        let max: Option<i64> = self
            .fetch_scalar(sqlx::query(
                "SELECT MAX(m) AS scalar FROM (\
                 SELECT MAX(id) AS m FROM messages UNION ALL \
                 SELECT MAX(id) AS m FROM direct_messages UNION ALL \
                 SELECT MAX(id) AS m FROM users UNION ALL \
                 SELECT MAX(id) AS m FROM rooms UNION ALL \
                 SELECT MAX(id) AS m FROM audit_log UNION ALL \
                 SELECT MAX(id) AS m FROM invites UNION ALL \
                 SELECT MAX(id) AS m FROM files UNION ALL \
                 SELECT MAX(id) AS m FROM member_changes) generated",
            ))
            .await?;
        Ok(max.unwrap_or(0))
    }

    /// The largest private message id made by each node that made one.
    pub async fn max_direct_ids(&self) -> Result<Vec<i64>> {
        #[derive(sqlx::FromRow)]
        struct Largest {
            m: i64,
        }
        let rows: Vec<Largest> = self
            .fetch_all_as(sqlx::query(concat!(
                "SELECT MAX(d.id) AS m FROM direct_messages d GROUP BY ",
                node_of_id!()
            )))
            .await?;
        Ok(rows.into_iter().map(|row| row.m).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{sqlite_store, user};
    use super::*;
    use crate::store::{RoomRow, StoreOptions};
    use salon_proto::JoinPolicy;

    #[test]
    fn chunks_cover_any_batch_with_few_statement_shapes() {
        let mut remaining = 87;
        let mut sizes = vec![];
        while remaining > 0 {
            let (_, n) = chunk_for(remaining);
            sizes.push(n);
            remaining -= n;
        }
        assert_eq!(sizes, vec![64, 16, 4, 1, 1, 1]);
    }

    #[tokio::test]
    async fn a_full_database_is_unavailable_and_a_broken_constraint_is_a_bug() {
        let options = StoreOptions {
            sqlite_max_size_mb: Some(1),
            ..StoreOptions::default()
        };
        let (store, _url, _dir) = sqlite_store(&options).await;
        store.create_user(&user(1, "alice")).await.unwrap();

        let e = store.create_user(&user(2, "alice")).await.unwrap_err();
        assert!(e.is_unique_violation() && !e.is_unavailable(), "{e}");

        let body = "x".repeat(3000);
        let mut n = 0;
        let full = loop {
            n += 1;
            assert!(n < 1000, "never full");
            let m = NewRoomMessage {
                id: n,
                room_id: 1,
                author_id: 1,
                body: body.clone(),
                created_at: 0,
                key: None,
                reply_to: None,
                mention_room: false,
                mentions: vec![],
                attachments: vec![],
            };
            if let Err(e) = store.insert_messages(&[&m], &[]).await {
                break e;
            }
        };
        assert!(full.is_unavailable(), "{full}");
        assert!(
            !full.is_outcome_unknown(),
            "SQLite answered: nothing was stored"
        );
        // Reads still work, and every write that succeeded is there.
        let room = RoomRow {
            id: 1,
            name: "Général".into(),
            policy: JoinPolicy::Everyone,
        };
        let stored = store
            .room_history(&room, 1, Window::Before(i64::MAX), 2000)
            .await
            .unwrap();
        assert_eq!(stored.len() as i64, n - 1);
    }
}
