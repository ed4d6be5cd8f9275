//! Everyday messaging (issue 13) beside the messages themselves: finding a message by id,
//! edits and deletions, reactions, mentions, threads, read state and notification
//! levels (`reactions`, `mentions`, `direct_reads`, and the `memberships.last_read` and
//! `memberships.notify` columns).

use std::collections::HashMap;

use salon_proto::{
    AuditEntry, DirectMessage, NotifyLevel, Reaction, ReadState, RoomMessage, REACTION_USERS_SHOWN,
    UNREAD_COUNT_MAX,
};

use super::conn::Q;
use super::messages::{
    direct_columns, direct_joins, room_columns, DirectRecord, RoomMessageRecord, Window,
};
use super::{stored, Result, Scalar, Store, Tx};

/// Where a count is read: the pool (a login's read state) or the writer's transaction
/// (the read state after a change, which must see that change).
enum Exec<'a> {
    Pool(&'a Store),
    Tx(&'a mut Tx),
}

impl Exec<'_> {
    async fn scalar(&mut self, q: Q<'_>) -> Result<i64> {
        match self {
            Exec::Pool(store) => store.fetch_scalar(q).await,
            Exec::Tx(tx) => Ok(tx
                .fetch_optional_as::<Scalar<i64>>(q)
                .await?
                .map_or(0, |s| s.scalar)),
        }
    }
}

/// A stored message: where it is, and whose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub id: i64,
    pub place: LocatedIn,
    pub author_id: i64,
    pub author: String,
    pub alias: String,
    pub body: String,
    pub deleted: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocatedIn {
    Room(i64),
    /// A private message to this user (its author is the sender).
    Direct {
        recipient: i64,
        recipient_name: String,
    },
}

impl Located {
    pub fn is_direct(&self) -> bool {
        matches!(self.place, LocatedIn::Direct { .. })
    }
}

#[derive(sqlx::FromRow)]
struct LocatedRecord {
    id: i64,
    place: i64,
    author_id: i64,
    username: String,
    alias: String,
    body: String,
    deleted_at: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct LocatedDirectRecord {
    #[sqlx(flatten)]
    located: LocatedRecord,
    recipient_name: String,
}

/// What adding a reaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reacted {
    Added,
    /// The user had already reacted with this emoji.
    Already,
    /// The message already has the most different emoji allowed.
    TooMany,
    /// The message is gone (deleted meanwhile).
    Gone,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(kind: &str) -> ChangeRecord {
        ChangeRecord {
            id: 9,
            kind: kind.into(),
            message_id: 70,
            emoji: Some("👍".into()),
            room_id: 2,
            room_name: "Blabla".into(),
            sender_id: 0,
            recipient_id: 0,
            sender: String::new(),
            recipient: String::new(),
            body: "now".into(),
            edited_at: 5,
            deleted_at: 0,
            username: "alice".into(),
            alias: "Alice".into(),
            present: i64::from(kind == "react"),
        }
    }

    #[test]
    fn a_recorded_change_reads_back_as_the_event_told_live() {
        use salon_proto::Event;
        let edit = change("edit").into_change().unwrap();
        assert_eq!(edit.reach, ChangeReach::Room(2));
        assert!(matches!(
            edit.event,
            Event::Edited { id: 70, ref text, edited: 5, ref place } if text == "now" && place.room.as_deref() == Some("Blabla")
        ));
        let unreact = change("unreact").into_change().unwrap();
        assert!(
            matches!(unreact.event, Event::Reaction { added: false, ref user, .. } if user == "alice")
        );
        // A reaction change tells the reaction as it is now: an addition taken back
        // since reads as taken back, and the other way round.
        let taken_back = ChangeRecord {
            present: 0,
            ..change("react")
        };
        assert!(matches!(
            taken_back.into_change().unwrap().event,
            Event::Reaction { added: false, .. }
        ));
        let added_again = ChangeRecord {
            present: 1,
            ..change("unreact")
        };
        assert!(matches!(
            added_again.into_change().unwrap().event,
            Event::Reaction { added: true, .. }
        ));
        // Deleted since: its edits and reactions are not told, its deletion is.
        let gone = |kind: &str| ChangeRecord {
            deleted_at: 8,
            ..change(kind)
        };
        assert_eq!(gone("edit").into_change(), None);
        assert_eq!(gone("react").into_change(), None);
        assert!(matches!(
            gone("delete").into_change().unwrap().event,
            Event::Deleted { id: 70, .. }
        ));
        // A deletion recorded while the row says otherwise (cannot be), or the message
        // gone from both tables: nothing.
        assert_eq!(change("delete").into_change(), None);
        let nowhere = ChangeRecord {
            room_id: 0,
            ..change("edit")
        };
        assert_eq!(nowhere.into_change(), None);
        // A private message: told to both users, named from and to.
        let direct = ChangeRecord {
            room_id: 0,
            sender_id: 3,
            recipient_id: 4,
            sender: "bob".into(),
            recipient: "carol".into(),
            ..change("react")
        }
        .into_change()
        .unwrap();
        assert_eq!(direct.reach, ChangeReach::Pair(3, 4));
        assert!(matches!(
            direct.event,
            Event::Reaction { added: true, ref place, .. }
                if place.from.as_deref() == Some("bob") && place.to.as_deref() == Some("carol") && place.room.is_none()
        ));
    }

    #[test]
    fn in_lists_have_few_shapes() {
        let ids: Vec<i64> = (1..=200).collect();
        let lists = in_lists(&ids);
        assert_eq!(lists.iter().map(Vec::len).collect::<Vec<_>>(), [128, 128]);
        assert_eq!(lists[1][..72], ids[128..]);
        assert!(lists[1][72..].iter().all(|id| *id == 129));
        assert_eq!(in_lists(&[7]), [vec![7; 4]]);
        assert!(in_lists(&[]).is_empty());
    }
}

#[derive(sqlx::FromRow)]
struct ReactionRecord {
    message_id: i64,
    emoji: String,
    username: String,
    n: i64,
}

#[derive(sqlx::FromRow)]
struct MineRecord {
    message_id: i64,
    emoji: String,
}

#[derive(sqlx::FromRow)]
struct MentionRecord {
    message_id: i64,
    username: String,
}

/// A change of a stored message read back from `message_changes`: the event, and the
/// room it was told in or the two users of the conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredChange {
    pub id: i64,
    pub reach: ChangeReach,
    pub event: salon_proto::Event,
}

/// Where a [`StoredChange`] is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeReach {
    Room(i64),
    /// Sender, recipient.
    Pair(i64, i64),
}

#[derive(sqlx::FromRow)]
struct ChangeRecord {
    id: i64,
    kind: String,
    message_id: i64,
    emoji: Option<String>,
    room_id: i64,
    room_name: String,
    sender_id: i64,
    recipient_id: i64,
    sender: String,
    recipient: String,
    body: String,
    edited_at: i64,
    deleted_at: i64,
    username: String,
    alias: String,
    /// For a reaction change: 1 when that reaction is there now.
    present: i64,
}

impl ChangeRecord {
    /// The event, or `None` when the message is gone or the change no longer shows.
    fn into_change(self) -> Option<StoredChange> {
        use salon_proto::{Event, Place};
        let (reach, place) = if self.room_id != 0 {
            let place = Place {
                room: Some(self.room_name),
                ..Place::default()
            };
            (ChangeReach::Room(self.room_id), place)
        } else if self.sender_id != 0 {
            let place = Place {
                room: None,
                from: Some(self.sender),
                to: Some(self.recipient),
            };
            (ChangeReach::Pair(self.sender_id, self.recipient_id), place)
        } else {
            return None;
        };
        let deleted = self.deleted_at != 0;
        let event = match self.kind.as_str() {
            "delete" if deleted => Event::Deleted {
                id: self.message_id,
                place,
            },
            "edit" if !deleted => Event::Edited {
                id: self.message_id,
                place,
                text: self.body,
                edited: self.edited_at,
            },
            "react" | "unreact" if !deleted && !self.username.is_empty() => Event::Reaction {
                id: self.message_id,
                place,
                emoji: self.emoji?,
                user: self.username,
                alias: self.alias,
                // As it is now, whatever this change did: an older change told after a
                // newer one (two nodes' commits out of order) cannot show a reaction
                // taken back since, nor hide one added since.
                added: self.present != 0,
            },
            _ => return None,
        };
        Some(StoredChange {
            id: self.id,
            reach,
            event,
        })
    }
}

/// A change of a stored message, as `message_changes` records it.
#[derive(Debug, Clone, Copy)]
enum Changed<'a> {
    Edit,
    Delete,
    React { user: i64, emoji: &'a str },
    Unreact { user: i64, emoji: &'a str },
}

#[derive(sqlx::FromRow)]
struct EmojiRecord {
    emoji: String,
}

#[derive(sqlx::FromRow)]
struct MembershipReadRecord {
    room_id: i64,
    name: String,
    last_read: i64,
    joined_at: i64,
    notify: String,
}

#[derive(sqlx::FromRow)]
struct MemberRecord {
    id: i64,
    username: String,
    alias: String,
}

#[derive(sqlx::FromRow)]
struct PeerRecord {
    peer_id: i64,
    username: String,
}

/// Sizes of the `IN (…)` lists of page look-ups: a list is padded (with its first id
/// again) to the next size, so that only these few statement shapes are ever prepared and
/// cached per connection, whatever the page size.
const IN_SIZES: [usize; 4] = [4, 16, 64, 128];

/// `ids` cut into lists of the sizes of [`IN_SIZES`], each padded to its size.
pub(super) fn in_lists(ids: &[i64]) -> Vec<Vec<i64>> {
    ids.chunks(IN_SIZES[IN_SIZES.len() - 1])
        .map(|chunk| {
            let size = IN_SIZES
                .iter()
                .copied()
                .find(|n| *n >= chunk.len())
                .unwrap_or(chunk.len());
            let mut list = chunk.to_vec();
            list.resize(size, chunk[0]);
            list
        })
        .collect()
}

/// `?, ?, …` for `n` values.
pub(super) fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

fn capped(n: i64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX).min(UNREAD_COUNT_MAX)
}

impl Store {
    /// The message with this id, room or private, if any.
    pub async fn locate_message(&self, id: i64) -> Result<Option<Located>> {
        let sql = self.sql(
            "SELECT m.id, m.room_id AS place, m.author_id, u.username, u.alias, m.body, \
             m.deleted_at FROM messages m JOIN users u ON u.id = m.author_id WHERE m.id = ?",
        );
        if let Some(r) = self
            .fetch_optional_as::<LocatedRecord>(sqlx::query(&sql).bind(id))
            .await?
        {
            return Ok(Some(Located {
                id: r.id,
                place: LocatedIn::Room(r.place),
                author_id: r.author_id,
                author: r.username,
                alias: r.alias,
                body: r.body,
                deleted: r.deleted_at.is_some(),
            }));
        }
        let sql = self.sql(
            "SELECT d.id, d.recipient_id AS place, d.sender_id AS author_id, u.username, \
             u.alias, d.body, d.deleted_at, ru.username AS recipient_name \
             FROM direct_messages d JOIN users u ON u.id = d.sender_id \
             JOIN users ru ON ru.id = d.recipient_id WHERE d.id = ?",
        );
        Ok(self
            .fetch_optional_as::<LocatedDirectRecord>(sqlx::query(&sql).bind(id))
            .await?
            .map(
                |LocatedDirectRecord {
                     located: r,
                     recipient_name,
                 }| Located {
                    id: r.id,
                    place: LocatedIn::Direct {
                        recipient: r.place,
                        recipient_name,
                    },
                    author_id: r.author_id,
                    author: r.username,
                    alias: r.alias,
                    body: r.body,
                    deleted: r.deleted_at.is_some(),
                },
            ))
    }

    /// Whether `user` is a member of `room` (online or not).
    pub async fn is_member(&self, room: i64, user: i64) -> Result<bool> {
        let sql = self
            .sql("SELECT COUNT(*) AS scalar FROM memberships WHERE room_id = ? AND user_id = ?");
        let n: i64 = self
            .fetch_scalar(sqlx::query(&sql).bind(room).bind(user))
            .await?;
        Ok(n > 0)
    }

    /// How many rooms and channels each of `users` is a member of (those in none are
    /// left out).
    pub async fn membership_counts(&self, users: &[i64]) -> Result<HashMap<i64, i64>> {
        let mut out = HashMap::new();
        for chunk in users.chunks(128) {
            let sql = self.dialect.rewrite(&format!(
                "SELECT user_id, COUNT(*) AS n FROM memberships WHERE user_id IN ({}) \
                 GROUP BY user_id",
                vec!["?"; chunk.len()].join(", ")
            ));
            let mut q = sqlx::query(&sql);
            for id in chunk {
                q = q.bind(*id);
            }
            let rows: Vec<(i64, i64)> = self.fetch_all_as(q).await?;
            out.extend(rows);
        }
        Ok(out)
    }

    /// The members of a room: (username, alias, id), by alias.
    pub async fn room_members(&self, room: i64) -> Result<Vec<(i64, String, String)>> {
        let sql = self.sql(
            "SELECT u.id, u.username, u.alias FROM memberships mb \
             JOIN users u ON u.id = mb.user_id WHERE mb.room_id = ? ORDER BY u.alias_key",
        );
        let rows: Vec<MemberRecord> = self.fetch_all_as(sqlx::query(&sql).bind(room)).await?;
        Ok(rows
            .into_iter()
            .map(|r| (r.id, r.username, r.alias))
            .collect())
    }

    /// Replaces a message's text, in the writer's transaction, and returns its new
    /// `edited` stamp; `None` if it was deleted meanwhile. The stamp is `now`, or one
    /// more than the last edit's when that is not earlier (two edits in the same
    /// millisecond, or a cluster node whose clock is behind the one that made the last):
    /// each edit of a message has a later stamp than the one before, so a client that
    /// keeps the latest-stamped text (PROTOCOL.md, `edited`) keeps the latest edit.
    pub async fn edit_message(
        &self,
        tx: &mut Tx,
        direct: bool,
        id: i64,
        text: &str,
        now: i64,
    ) -> Result<Option<i64>> {
        let sql = if direct {
            self.sql(
                "UPDATE direct_messages SET body = ?, \
                 edited_at = CASE WHEN edited_at >= ? THEN edited_at + 1 ELSE ? END \
                 WHERE id = ? AND deleted_at IS NULL",
            )
        } else {
            self.sql(
                "UPDATE messages SET body = ?, \
                 edited_at = CASE WHEN edited_at >= ? THEN edited_at + 1 ELSE ? END \
                 WHERE id = ? AND deleted_at IS NULL",
            )
        };
        let done = tx
            .execute(sqlx::query(&sql).bind(text).bind(now).bind(now).bind(id))
            .await?;
        if done.rows_affected() != 1 {
            return Ok(None);
        }
        let sql = if direct {
            self.sql("SELECT edited_at FROM direct_messages WHERE id = ?")
        } else {
            self.sql("SELECT edited_at FROM messages WHERE id = ?")
        };
        let row: Option<(i64,)> = tx.fetch_optional_as(sqlx::query(&sql).bind(id)).await?;
        let edited = row.map_or(now, |(edited,)| edited);
        self.reindex_message(tx, source_of(direct), id, text)
            .await?;
        self.record_change(tx, Changed::Edit, direct, id, now)
            .await?;
        Ok(Some(edited))
    }

    /// Deletes a message, in the writer's transaction: its text is erased (the row stays,
    /// a tombstone), with its reactions and mentions, and the audit entry when an
    /// administrator deleted someone else's. False if it was already deleted.
    pub async fn delete_message(
        &self,
        tx: &mut Tx,
        direct: bool,
        id: i64,
        now: i64,
        audit: Option<(i64, &AuditEntry)>,
    ) -> Result<bool> {
        let sql = if direct {
            self.sql(
                "UPDATE direct_messages SET body = '', deleted_at = ? \
                 WHERE id = ? AND deleted_at IS NULL",
            )
        } else {
            self.sql(
                "UPDATE messages SET body = '', deleted_at = ? \
                 WHERE id = ? AND deleted_at IS NULL",
            )
        };
        let done = tx.execute(sqlx::query(&sql).bind(now).bind(id)).await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        self.unindex_message(tx, source_of(direct), id).await?;
        let sql = self.sql("DELETE FROM reactions WHERE message_id = ?");
        tx.execute(sqlx::query(&sql).bind(id)).await?;
        let sql = self.sql("DELETE FROM mentions WHERE message_id = ?");
        tx.execute(sqlx::query(&sql).bind(id)).await?;
        self.detach_files(tx, id).await?;
        self.record_change(tx, Changed::Delete, direct, id, now)
            .await?;
        if let Some((audit_id, entry)) = audit {
            let sql = self.sql(super::moderation::AUDIT_INSERT);
            tx.execute(super::moderation::audit_insert(&sql, audit_id, entry))
                .await?;
        }
        Ok(true)
    }

    /// Adds `user`'s reaction to a message, in the writer's transaction, unless the
    /// message would then have more than `max_emoji` different emoji.
    #[allow(clippy::too_many_arguments)]
    pub async fn add_reaction(
        &self,
        tx: &mut Tx,
        direct: bool,
        message: i64,
        user: i64,
        emoji: &str,
        now: i64,
        max_emoji: u32,
    ) -> Result<Reacted> {
        // The emoji already used on it (at most `max_emoji`), and whether this user's is
        // one of them.
        let sql = self.sql("SELECT emoji FROM reactions WHERE message_id = ? GROUP BY emoji");
        let used: Vec<EmojiRecord> = tx.fetch_all_as(sqlx::query(&sql).bind(message)).await?;
        let sql = self.sql(
            "SELECT COUNT(*) AS scalar FROM reactions \
             WHERE message_id = ? AND user_id = ? AND emoji = ?",
        );
        let mine: Vec<Scalar<i64>> = tx
            .fetch_all_as(sqlx::query(&sql).bind(message).bind(user).bind(emoji))
            .await?;
        if mine.first().is_some_and(|c| c.scalar > 0) {
            return Ok(Reacted::Already);
        }
        if !used.iter().any(|u| u.emoji == emoji) && used.len() >= max_emoji as usize {
            return Ok(Reacted::TooMany);
        }
        // Only on a message still there.
        let sql = if direct {
            self.sql(
                "INSERT INTO reactions (message_id, user_id, emoji, created_at) \
                 SELECT id, ?, ?, ? FROM direct_messages WHERE id = ? AND deleted_at IS NULL",
            )
        } else {
            self.sql(
                "INSERT INTO reactions (message_id, user_id, emoji, created_at) \
                 SELECT id, ?, ?, ? FROM messages WHERE id = ? AND deleted_at IS NULL",
            )
        };
        let done = tx
            .execute(
                sqlx::query(&sql)
                    .bind(user)
                    .bind(emoji)
                    .bind(now)
                    .bind(message),
            )
            .await?;
        if done.rows_affected() != 1 {
            return Ok(Reacted::Gone);
        }
        let change = Changed::React { user, emoji };
        self.record_change(tx, change, direct, message, now).await?;
        Ok(Reacted::Added)
    }

    /// Takes `user`'s reaction back, in the writer's transaction. False if there was none.
    pub async fn remove_reaction(
        &self,
        tx: &mut Tx,
        direct: bool,
        message: i64,
        user: i64,
        emoji: &str,
        now: i64,
    ) -> Result<bool> {
        let sql =
            self.sql("DELETE FROM reactions WHERE message_id = ? AND user_id = ? AND emoji = ?");
        let done = tx
            .execute(sqlx::query(&sql).bind(message).bind(user).bind(emoji))
            .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        let change = Changed::Unreact { user, emoji };
        self.record_change(tx, change, direct, message, now).await?;
        Ok(true)
    }

    /// Writes a change of a stored message to `message_changes`, in the writer's
    /// transaction, when this store records them (the nodes of a cluster: see
    /// [`super::StoreOptions::record_changes`]).
    async fn record_change(
        &self,
        tx: &mut Tx,
        change: Changed<'_>,
        direct: bool,
        message: i64,
        now: i64,
    ) -> Result<()> {
        if !self.record_changes {
            return Ok(());
        }
        let (kind, user, emoji) = match change {
            Changed::Edit => ("edit", None, None),
            Changed::Delete => ("delete", None, None),
            Changed::React { user, emoji } => ("react", Some(user), Some(emoji)),
            Changed::Unreact { user, emoji } => ("unreact", Some(user), Some(emoji)),
        };
        let sql = self.sql(
            "INSERT INTO message_changes (at, message_id, direct, kind, user_id, emoji) \
             VALUES (?, ?, ?, ?, ?, ?)",
        );
        tx.execute(
            sqlx::query(&sql)
                .bind(now)
                .bind(message)
                .bind(i64::from(direct))
                .bind(kind)
                .bind(user)
                .bind(emoji),
        )
        .await?;
        Ok(())
    }

    /// The reactions to these messages: per emoji, the count and the first users (at most
    /// [`REACTION_USERS_SHOWN`]), and whether `me` is one of them.
    async fn reactions_for(&self, ids: &[i64], me: i64) -> Result<HashMap<i64, Vec<Reaction>>> {
        let mut out: HashMap<i64, Vec<Reaction>> = HashMap::new();
        for list in in_lists(ids) {
            self.reactions_into(&list, me, &mut out).await?;
        }
        Ok(out)
    }

    async fn reactions_into(
        &self,
        ids: &[i64],
        me: i64,
        out: &mut HashMap<i64, Vec<Reaction>>,
    ) -> Result<()> {
        let sql = self.dialect.rewrite(&format!(
            "SELECT message_id, emoji, username, n FROM (\
               SELECT r.message_id, r.emoji, u.username, \
                 ROW_NUMBER() OVER (PARTITION BY r.message_id, r.emoji \
                                    ORDER BY r.created_at, r.user_id) AS rn, \
                 COUNT(*) OVER (PARTITION BY r.message_id, r.emoji) AS n, \
                 MIN(r.created_at) OVER (PARTITION BY r.message_id, r.emoji) AS first_at \
               FROM reactions r JOIN users u ON u.id = r.user_id \
               WHERE r.message_id IN ({})) x \
             WHERE rn <= {REACTION_USERS_SHOWN} ORDER BY message_id, first_at, emoji, rn",
            placeholders(ids.len())
        ));
        let mut q = sqlx::query(&sql);
        for id in ids {
            q = q.bind(*id);
        }
        let rows: Vec<ReactionRecord> = self.fetch_all_as(q).await?;
        for r in rows {
            let list = out.entry(r.message_id).or_default();
            match list.last_mut() {
                Some(last) if last.emoji == r.emoji => last.users.push(r.username),
                _ => list.push(Reaction {
                    emoji: r.emoji,
                    count: u32::try_from(r.n).unwrap_or(u32::MAX),
                    users: vec![r.username],
                    mine: false,
                }),
            }
        }
        let sql = self.dialect.rewrite(&format!(
            "SELECT message_id, emoji FROM reactions WHERE user_id = ? AND message_id IN ({})",
            placeholders(ids.len())
        ));
        let mut q = sqlx::query(&sql).bind(me);
        for id in ids {
            q = q.bind(*id);
        }
        let mine: Vec<MineRecord> = self.fetch_all_as(q).await?;
        for m in mine {
            if let Some(reaction) = out
                .get_mut(&m.message_id)
                .and_then(|list| list.iter_mut().find(|r| r.emoji == m.emoji))
            {
                reaction.mine = true;
            }
        }
        Ok(())
    }

    /// The members each of these room messages mentions (usernames).
    async fn mentions_for(&self, ids: &[i64]) -> Result<HashMap<i64, Vec<String>>> {
        let mut out: HashMap<i64, Vec<String>> = HashMap::new();
        for list in in_lists(ids) {
            let sql = self.dialect.rewrite(&format!(
                "SELECT x.message_id, u.username FROM mentions x JOIN users u ON u.id = x.user_id \
                 WHERE x.message_id IN ({}) ORDER BY x.message_id, u.username",
                placeholders(list.len())
            ));
            let mut q = sqlx::query(&sql);
            for id in &list {
                q = q.bind(*id);
            }
            let rows: Vec<MentionRecord> = self.fetch_all_as(q).await?;
            for r in rows {
                out.entry(r.message_id).or_default().push(r.username);
            }
        }
        Ok(out)
    }

    /// Room message rows as `me` sees them, with their reactions and mentions. Only
    /// messages whose row counted some are looked up (most have none: a page of plain
    /// messages costs no query more).
    async fn room_messages(
        &self,
        rows: Vec<RoomMessageRecord>,
        room: &str,
        me: i64,
    ) -> Result<Vec<RoomMessage>> {
        let with_files: Vec<i64> = rows
            .iter()
            .filter(|r| r.has_attachments())
            .map(|r| r.lookups().0)
            .collect();
        let mut files = self.attachments_for(&with_files).await?;
        let (mut with_reactions, mut with_mentions) = (Vec::new(), Vec::new());
        for (id, reactions, mentions) in rows.iter().map(RoomMessageRecord::lookups) {
            if reactions {
                with_reactions.push(id);
            }
            if mentions {
                with_mentions.push(id);
            }
        }
        let mut reactions = self.reactions_for(&with_reactions, me).await?;
        let mut mentions = self.mentions_for(&with_mentions).await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let mut m = r.into_message(room.to_owned());
                m.extra.reactions = reactions.remove(&m.id).unwrap_or_default();
                m.extra.attachments = files.remove(&m.id).unwrap_or_default();
                m.mentions = mentions.remove(&m.id).unwrap_or_default();
                m
            })
            .collect())
    }

    /// Private message rows as `me` sees them, with their reactions.
    pub(super) async fn direct_messages(
        &self,
        rows: Vec<DirectRecord>,
        me: i64,
    ) -> Result<Vec<DirectMessage>> {
        let with_reactions: Vec<i64> = rows
            .iter()
            .map(DirectRecord::lookups)
            .filter_map(|(id, reactions)| reactions.then_some(id))
            .collect();
        let mut reactions = self.reactions_for(&with_reactions, me).await?;
        let with_files: Vec<i64> = rows
            .iter()
            .filter(|r| r.has_attachments())
            .map(|r| r.lookups().0)
            .collect();
        let mut files = self.attachments_for(&with_files).await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let mut m = DirectMessage::from(r);
                m.extra.reactions = reactions.remove(&m.id).unwrap_or_default();
                m.extra.attachments = files.remove(&m.id).unwrap_or_default();
                m
            })
            .collect())
    }

    /// Up to `limit` messages of room `room` that `sql` selects (its `?`s: `key`, then
    /// the id they are below, then the limit), as `me` sees them.
    async fn room_page(
        &self,
        sql: &str,
        key: i64,
        before: i64,
        limit: u32,
        room: &str,
        me: i64,
    ) -> Result<Vec<RoomMessage>> {
        let rows: Vec<RoomMessageRecord> = self
            .fetch_all_as(
                sqlx::query(sql)
                    .bind(key)
                    .bind(before)
                    .bind(i64::from(limit)),
            )
            .await?;
        self.room_messages(rows, room, me).await
    }

    /// One room message with everything `me` sees of it.
    pub async fn room_message(&self, id: i64, room: &str, me: i64) -> Result<Option<RoomMessage>> {
        let sql = self.sql(concat!("SELECT ", room_columns!(), "WHERE m.id = ?"));
        let rows: Vec<RoomMessageRecord> = self
            .fetch_optional_as(sqlx::query(&sql).bind(id))
            .await?
            .into_iter()
            .collect();
        Ok(self.room_messages(rows, room, me).await?.pop())
    }

    /// Up to `limit` room messages of every room with an id above `after`, oldest first,
    /// each with its room's id (and an empty `room`: the caller names it), as nobody in
    /// particular sees them (no reaction is `mine`): a node's catch-up after it missed
    /// bus messages (`live::catchup`). A range of the primary key.
    pub async fn room_messages_after(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<(i64, RoomMessage)>> {
        let sql = self.sql(concat!(
            "SELECT ",
            room_columns!(),
            "WHERE m.id > ? ORDER BY m.id LIMIT ?"
        ));
        let rows: Vec<RoomMessageRecord> = self
            .fetch_all_as(sqlx::query(&sql).bind(after).bind(i64::from(limit)))
            .await?;
        let rooms: Vec<i64> = rows.iter().map(|r| r.room_id).collect();
        let messages = self.room_messages(rows, "", 0).await?;
        Ok(rooms.into_iter().zip(messages).collect())
    }

    /// Up to `limit` private messages of every conversation with an id above `after`,
    /// oldest first, each with its sender's and recipient's ids, as the sender sees them
    /// (the same catch-up).
    pub async fn directs_after(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<(i64, i64, DirectMessage)>> {
        let sql = self.sql(concat!(
            "SELECT ",
            direct_columns!(),
            direct_joins!(),
            "WHERE d.id > ? ORDER BY d.id LIMIT ?"
        ));
        let rows: Vec<DirectRecord> = self
            .fetch_all_as(sqlx::query(&sql).bind(after).bind(i64::from(limit)))
            .await?;
        let pairs: Vec<(i64, i64)> = rows.iter().map(|r| (r.sender_id, r.recipient_id)).collect();
        let messages = self.direct_messages(rows, 0).await?;
        Ok(pairs
            .into_iter()
            .zip(messages)
            .map(|((from, to), m)| (from, to, m))
            .collect())
    }

    /// Removes the changes recorded before `before` (ms), of messages, of read states
    /// and of memberships; returns how many.
    pub async fn purge_change_records(&self, before: i64) -> Result<u64> {
        let mut removed = 0;
        for table in ["message_changes", "read_changes", "member_changes"] {
            let sql = self
                .dialect
                .rewrite(&format!("DELETE FROM {table} WHERE at < ?"));
            removed += self
                .execute(sqlx::query(&sql).bind(before))
                .await?
                .rows_affected();
        }
        Ok(removed)
    }

    /// Records, in the writer's transaction, that `user`'s read state changed, when this
    /// store records changes (the nodes of a cluster: see
    /// [`super::StoreOptions::record_changes`]).
    pub async fn record_read_change(&self, tx: &mut Tx, user: i64, now: i64) -> Result<()> {
        if !self.record_changes {
            return Ok(());
        }
        let sql = self.sql("INSERT INTO read_changes (at, user_id) VALUES (?, ?)");
        tx.execute(sqlx::query(&sql).bind(now).bind(user)).await?;
        Ok(())
    }

    /// The users among `users` whose read state changed at or after `since` (ms).
    pub async fn read_changed_among(&self, since: i64, users: &[i64]) -> Result<Vec<i64>> {
        let mut changed = Vec::new();
        for list in in_lists(users) {
            let sql = self.dialect.rewrite(&format!(
                "SELECT DISTINCT user_id AS scalar FROM read_changes \
                 WHERE at >= ? AND user_id IN ({})",
                placeholders(list.len())
            ));
            let mut q = sqlx::query(&sql).bind(since);
            for id in &list {
                q = q.bind(*id);
            }
            let rows: Vec<super::Scalar<i64>> = self.fetch_all_as(q).await?;
            changed.extend(rows.into_iter().map(|r| r.scalar));
        }
        changed.sort_unstable();
        Ok(changed)
    }

    /// Up to `limit` changes of stored messages (`message_changes`) made at or after
    /// `since` (ms) with an id above `after`, in id order, each as the event the live
    /// path sent and where it went (`live/catchup.rs`). An edit shows the text as it is
    /// now, a reaction whether it is there now; an edit or reaction of a message deleted
    /// since is left out (its deletion follows). Returns the last id read, for the next
    /// page.
    pub async fn changes_after(
        &self,
        since: i64,
        after: i64,
        limit: u32,
    ) -> Result<(Vec<StoredChange>, Option<i64>)> {
        let sql = self.sql(
            "SELECT c.id, c.kind, c.message_id, c.emoji, \
               COALESCE(m.room_id, 0) AS room_id, COALESCE(r.name, '') AS room_name, \
               COALESCE(d.sender_id, 0) AS sender_id, COALESCE(d.recipient_id, 0) AS recipient_id, \
               COALESCE(s.username, '') AS sender, COALESCE(t.username, '') AS recipient, \
               COALESCE(m.body, d.body, '') AS body, \
               COALESCE(m.edited_at, d.edited_at, 0) AS edited_at, \
               COALESCE(m.deleted_at, d.deleted_at, 0) AS deleted_at, \
               COALESCE(u.username, '') AS username, COALESCE(u.alias, '') AS alias, \
               CASE WHEN EXISTS (SELECT 1 FROM reactions x WHERE x.message_id = c.message_id \
                 AND x.emoji = c.emoji AND x.user_id = c.user_id) THEN 1 ELSE 0 END AS present \
             FROM message_changes c \
             LEFT JOIN messages m ON c.direct = 0 AND m.id = c.message_id \
             LEFT JOIN rooms r ON r.id = m.room_id \
             LEFT JOIN direct_messages d ON c.direct = 1 AND d.id = c.message_id \
             LEFT JOIN users s ON s.id = d.sender_id \
             LEFT JOIN users t ON t.id = d.recipient_id \
             LEFT JOIN users u ON u.id = c.user_id \
             WHERE c.at >= ? AND c.id > ? ORDER BY c.id LIMIT ?",
        );
        let rows: Vec<ChangeRecord> = self
            .fetch_all_as(
                sqlx::query(&sql)
                    .bind(since)
                    .bind(after)
                    .bind(i64::from(limit)),
            )
            .await?;
        let last = rows.last().map(|r| r.id);
        let changes = rows
            .into_iter()
            .filter_map(ChangeRecord::into_change)
            .collect();
        Ok((changes, last))
    }

    /// Up to `limit` messages of a room on one side of an id (newest first before it,
    /// oldest first after it), with their reactions (`mine` for user `me`) and mentions.
    pub async fn room_history(
        &self,
        room: &super::RoomRow,
        me: i64,
        window: Window,
        limit: u32,
    ) -> Result<Vec<RoomMessage>> {
        let sql = match window {
            Window::Before(_) => self.sql(concat!(
                "SELECT ",
                room_columns!(),
                "WHERE m.room_id = ? AND m.id < ? ORDER BY m.id DESC LIMIT ?"
            )),
            Window::After(_) => self.sql(concat!(
                "SELECT ",
                room_columns!(),
                "WHERE m.room_id = ? AND m.id > ? ORDER BY m.id LIMIT ?"
            )),
        };
        self.room_page(&sql, room.id, window.id(), limit, &room.name, me)
            .await
    }

    /// Up to `limit` replies to room message `root` with id < `before`, newest first.
    pub async fn room_thread(
        &self,
        root: i64,
        room: &str,
        me: i64,
        before: i64,
        limit: u32,
    ) -> Result<Vec<RoomMessage>> {
        let sql = self.sql(concat!(
            "SELECT ",
            room_columns!(),
            "WHERE m.reply_to = ? AND m.id < ? ORDER BY m.id DESC LIMIT ?"
        ));
        self.room_page(&sql, root, before, limit, room, me).await
    }

    /// Up to `limit` private messages that `sql` selects (its `?`s: `key`, then the id
    /// they are below, then the limit), as `me` sees them.
    async fn direct_page(
        &self,
        sql: &str,
        key: i64,
        before: i64,
        limit: u32,
        me: i64,
    ) -> Result<Vec<DirectMessage>> {
        let rows: Vec<DirectRecord> = self
            .fetch_all_as(
                sqlx::query(sql)
                    .bind(key)
                    .bind(before)
                    .bind(i64::from(limit)),
            )
            .await?;
        self.direct_messages(rows, me).await
    }

    /// One private message with everything `me` sees of it.
    pub async fn direct_message(&self, id: i64, me: i64) -> Result<Option<DirectMessage>> {
        let sql = self.sql(concat!(
            "SELECT ",
            direct_columns!(),
            direct_joins!(),
            "WHERE d.id = ?"
        ));
        let rows: Vec<DirectRecord> = self
            .fetch_optional_as(sqlx::query(&sql).bind(id))
            .await?
            .into_iter()
            .collect();
        Ok(self.direct_messages(rows, me).await?.pop())
    }

    /// Up to `limit` replies to private message `root` with id < `before`, newest first.
    pub async fn direct_thread(
        &self,
        root: i64,
        me: i64,
        before: i64,
        limit: u32,
    ) -> Result<Vec<DirectMessage>> {
        let sql = self.sql(concat!(
            "SELECT ",
            direct_columns!(),
            direct_joins!(),
            "WHERE d.reply_to = ? AND d.id < ? ORDER BY d.id DESC LIMIT ?"
        ));
        self.direct_page(&sql, root, before, limit, me).await
    }

    /// Moves a member's read marker forward to `id` (never back), in the writer's
    /// transaction. False if `user` is not a member of the room.
    pub async fn mark_room_read(&self, tx: &mut Tx, room: i64, user: i64, id: i64) -> Result<bool> {
        let sql = self.sql(
            "UPDATE memberships SET last_read = CASE WHEN last_read < ? THEN ? ELSE last_read END \
             WHERE room_id = ? AND user_id = ?",
        );
        let done = tx
            .execute(sqlx::query(&sql).bind(id).bind(id).bind(room).bind(user))
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Moves `user`'s read marker in their conversation with `peer` forward to `id`, in
    /// the writer's transaction.
    pub async fn mark_direct_read(&self, tx: &mut Tx, user: i64, peer: i64, id: i64) -> Result<()> {
        let sql = self.dialect.rewrite(self.dialect.upsert_direct_read());
        tx.execute(sqlx::query(&sql).bind(user).bind(peer).bind(id))
            .await?;
        Ok(())
    }

    /// Sets a member's notification level in a room, in the writer's transaction. False
    /// if not a member.
    pub async fn set_notify(
        &self,
        tx: &mut Tx,
        room: i64,
        user: i64,
        level: NotifyLevel,
    ) -> Result<bool> {
        let sql = self.sql("UPDATE memberships SET notify = ? WHERE room_id = ? AND user_id = ?");
        let done = tx
            .execute(sqlx::query(&sql).bind(level.as_str()).bind(room).bind(user))
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// A member's read state in one room, read in the writer's transaction (after its
    /// change); `None` if not a member.
    pub async fn room_read_state(
        &self,
        tx: &mut Tx,
        room: i64,
        room_name: &str,
        user: i64,
    ) -> Result<Option<ReadState>> {
        let sql = self.sql(
            "SELECT mb.room_id, r.name, mb.last_read, mb.joined_at, mb.notify \
             FROM memberships mb JOIN rooms r ON r.id = mb.room_id \
             WHERE mb.room_id = ? AND mb.user_id = ?",
        );
        let Some(record) = tx
            .fetch_optional_as::<MembershipReadRecord>(sqlx::query(&sql).bind(room).bind(user))
            .await?
        else {
            return Ok(None);
        };
        let mut state = self.count_room(Exec::Tx(tx), record, user).await?;
        state.room = Some(room_name.to_owned());
        Ok(Some(state))
    }

    /// Unread and mention counts after a member's marker. Messages from before they
    /// joined never count, nor their own, nor deleted ones.
    async fn count_room(
        &self,
        mut exec: Exec<'_>,
        r: MembershipReadRecord,
        user: i64,
    ) -> Result<ReadState> {
        let sql = self.dialect.rewrite(&format!(
            "SELECT COUNT(*) AS scalar FROM (SELECT m.id FROM messages m \
             WHERE m.room_id = ? AND m.id > ? AND m.created_at >= ? AND m.author_id <> ? \
             AND m.deleted_at IS NULL LIMIT {UNREAD_COUNT_MAX}) unread"
        ));
        let unread: i64 = exec
            .scalar(
                sqlx::query(&sql)
                    .bind(r.room_id)
                    .bind(r.last_read)
                    .bind(r.joined_at)
                    .bind(user),
            )
            .await?;
        let mut mentions = 0;
        if unread > 0 {
            let sql = self.dialect.rewrite(&format!(
                "SELECT COUNT(*) AS scalar FROM (SELECT m.id FROM mentions x \
                 JOIN messages m ON m.id = x.message_id \
                 WHERE x.user_id = ? AND x.message_id > ? AND m.room_id = ? \
                 AND m.created_at >= ? AND m.deleted_at IS NULL LIMIT {UNREAD_COUNT_MAX}) named"
            ));
            let named: i64 = exec
                .scalar(
                    sqlx::query(&sql)
                        .bind(user)
                        .bind(r.last_read)
                        .bind(r.room_id)
                        .bind(r.joined_at),
                )
                .await?;
            let sql = self.dialect.rewrite(&format!(
                "SELECT COUNT(*) AS scalar FROM (SELECT m.id FROM messages m \
                 WHERE m.room_id = ? AND m.mention_room = 1 AND m.id > ? AND m.created_at >= ? \
                 AND m.author_id <> ? AND m.deleted_at IS NULL AND NOT EXISTS \
                 (SELECT 1 FROM mentions x WHERE x.user_id = ? AND x.message_id = m.id) \
                 LIMIT {UNREAD_COUNT_MAX}) everyone"
            ));
            let everyone: i64 = exec
                .scalar(
                    sqlx::query(&sql)
                        .bind(r.room_id)
                        .bind(r.last_read)
                        .bind(r.joined_at)
                        .bind(user)
                        .bind(user),
                )
                .await?;
            mentions = capped(named + everyone);
        }
        Ok(ReadState {
            room: Some(r.name),
            with: None,
            last_read: r.last_read,
            unread: capped(unread),
            mentions,
            notify: Some(stored(r.notify, "notification level")?),
        })
    }

    /// A user's read state in their conversation with `peer` (username `peer_name`), read
    /// in the writer's transaction.
    pub async fn direct_read_state(
        &self,
        tx: &mut Tx,
        user: i64,
        peer: i64,
        peer_name: &str,
    ) -> Result<ReadState> {
        self.count_direct(Exec::Tx(tx), user, peer, peer_name).await
    }

    async fn count_direct(
        &self,
        mut exec: Exec<'_>,
        user: i64,
        peer: i64,
        peer_name: &str,
    ) -> Result<ReadState> {
        let sql = self.sql(
            "SELECT COALESCE(MAX(last_read), 0) AS scalar FROM direct_reads \
             WHERE user_id = ? AND peer_id = ?",
        );
        let last_read: i64 = exec.scalar(sqlx::query(&sql).bind(user).bind(peer)).await?;
        let sql = self.dialect.rewrite(&format!(
            "SELECT COUNT(*) AS scalar FROM (SELECT d.id FROM direct_messages d \
             WHERE d.user_lo = ? AND d.user_hi = ? AND d.sender_id = ? AND d.id > ? \
             AND d.deleted_at IS NULL LIMIT {UNREAD_COUNT_MAX}) unread"
        ));
        let unread: i64 = exec
            .scalar(
                sqlx::query(&sql)
                    .bind(user.min(peer))
                    .bind(user.max(peer))
                    .bind(peer)
                    .bind(last_read),
            )
            .await?;
        Ok(ReadState {
            room: None,
            with: Some(peer_name.to_owned()),
            last_read,
            unread: capped(unread),
            mentions: 0,
            notify: None,
        })
    }

    /// A user's read state in each of their rooms, and in each conversation with unread
    /// messages (at most `max_conversations`).
    pub async fn read_states(&self, user: i64, max_conversations: u32) -> Result<Vec<ReadState>> {
        let sql = self.sql(
            "SELECT mb.room_id, r.name, mb.last_read, mb.joined_at, mb.notify \
             FROM memberships mb JOIN rooms r ON r.id = mb.room_id WHERE mb.user_id = ? \
             ORDER BY mb.room_id",
        );
        let rooms: Vec<MembershipReadRecord> =
            self.fetch_all_as(sqlx::query(&sql).bind(user)).await?;
        let mut states = Vec::with_capacity(rooms.len());
        for r in rooms {
            states.push(self.count_room(Exec::Pool(self), r, user).await?);
        }
        let sql = self.sql(
            "SELECT DISTINCT d.sender_id AS peer_id, s.username FROM direct_messages d \
             JOIN users s ON s.id = d.sender_id \
             LEFT JOIN direct_reads dr ON dr.user_id = d.recipient_id AND dr.peer_id = d.sender_id \
             WHERE d.recipient_id = ? AND d.id > COALESCE(dr.last_read, 0) \
             AND d.deleted_at IS NULL LIMIT ?",
        );
        let peers: Vec<PeerRecord> = self
            .fetch_all_as(
                sqlx::query(&sql)
                    .bind(user)
                    .bind(i64::from(max_conversations)),
            )
            .await?;
        for p in peers {
            let state = self
                .count_direct(Exec::Pool(self), user, p.peer_id, &p.username)
                .await?;
            if state.unread > 0 {
                states.push(state);
            }
        }
        Ok(states)
    }
}

/// The search index of room (`false`) or private (`true`) messages.
fn source_of(direct: bool) -> super::search::Source {
    if direct {
        super::search::Source::Direct
    } else {
        super::search::Source::Room
    }
}
