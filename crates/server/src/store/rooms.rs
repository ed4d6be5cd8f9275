//! Rooms and who is in them: the `rooms` table (rooms and private channels, R6, R7,
//! R11), `memberships` (R10) and `join_requests` with their decisions (R8). A channel's
//! name also gets its look-alike key in `name_skeletons`.

use std::collections::{HashMap, HashSet};

use salon_proto::{JoinPolicy, JoinRequest};

use super::stored;
use super::{fold, names, retrying, Result, Scalar, Store, StoreError};

/// A room or private channel.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RoomRow {
    pub id: i64,
    pub name: String,
    pub policy: JoinPolicy,
}

/// A join or leave recorded for a cluster's catch-up (`member_changes`): `id` is the
/// id its live `room_member` notice carried.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MemberChangeRow {
    pub id: i64,
    pub room_id: i64,
    pub username: String,
    pub alias: String,
    pub joined: i64,
}

/// A decision on a join request the requester has not been told about yet.
#[derive(Debug, Clone)]
pub struct UntoldDecision {
    pub room_id: i64,
    pub accepted: bool,
    pub reason: Option<String>,
}

#[derive(sqlx::FromRow)]
struct RoomRecord {
    id: i64,
    name: String,
    policy: String,
}

impl TryFrom<RoomRecord> for RoomRow {
    type Error = StoreError;

    fn try_from(r: RoomRecord) -> Result<RoomRow> {
        let policy: JoinPolicy = stored(r.policy, "room policy")?;
        Ok(RoomRow {
            id: r.id,
            name: r.name,
            policy,
        })
    }
}

/// A room's id and name, for rooms whose name has no look-alike key yet.
#[derive(sqlx::FromRow)]
pub(super) struct RoomNameRecord {
    pub(super) id: i64,
    pub(super) name: String,
}

#[derive(sqlx::FromRow)]
struct JoinRequestRecord {
    username: String,
    alias: String,
    room_name: String,
    requested_at: i64,
}

#[derive(sqlx::FromRow)]
struct DecisionRecord {
    room_id: i64,
    state: String,
    reason: Option<String>,
}

impl TryFrom<DecisionRecord> for UntoldDecision {
    type Error = StoreError;

    fn try_from(r: DecisionRecord) -> Result<UntoldDecision> {
        let accepted = match r.state.as_str() {
            "accepted" => true,
            "rejected" => false,
            other => return Err(StoreError::Corrupt(format!("join request state {other:?}"))),
        };
        Ok(UntoldDecision {
            room_id: r.room_id,
            accepted,
            reason: r.reason,
        })
    }
}

impl Store {
    /// Every room and private channel.
    pub async fn rooms(&self) -> Result<Vec<RoomRow>> {
        let rows: Vec<RoomRecord> = self
            .fetch_all_as(sqlx::query(
                "SELECT id, name, policy FROM rooms ORDER BY id",
            ))
            .await?;
        rows.into_iter().map(RoomRow::try_from).collect()
    }

    /// The rooms and private channels whose id is `from` or larger: those created since
    /// a time, with [`crate::ids::floor_at`] (read through the primary key).
    pub async fn rooms_from(&self, from: i64) -> Result<Vec<RoomRow>> {
        let sql = self.sql("SELECT id, name, policy FROM rooms WHERE id >= ? ORDER BY id");
        let rows: Vec<RoomRecord> = self.fetch_all_as(sqlx::query(&sql).bind(from)).await?;
        rows.into_iter().map(RoomRow::try_from).collect()
    }

    /// Rooms stored before `name_skeletons` existed (see
    /// [`Store::backfill_name_skeletons`]).
    pub(super) async fn rooms_without_skeleton(&self) -> Result<Vec<RoomNameRecord>> {
        self.fetch_all_as(sqlx::query(
            "SELECT r.id, r.name FROM rooms r WHERE NOT EXISTS \
             (SELECT 1 FROM name_skeletons s WHERE s.scope = 'room' AND s.owner = r.id) \
             ORDER BY r.id",
        ))
        .await
    }

    /// The rooms a user is a member of, and those they have a pending request for.
    pub async fn room_states(&self, user_id: i64) -> Result<(HashSet<i64>, HashSet<i64>)> {
        let sql = self.sql("SELECT room_id AS scalar FROM memberships WHERE user_id = ?");
        let member: Vec<Scalar<i64>> = self.fetch_all_as(sqlx::query(&sql).bind(user_id)).await?;
        let sql = self.sql(
            "SELECT room_id AS scalar FROM join_requests WHERE user_id = ? AND state = 'pending'",
        );
        let pending: Vec<Scalar<i64>> = self.fetch_all_as(sqlx::query(&sql).bind(user_id)).await?;
        Ok((
            member.into_iter().map(|r| r.scalar).collect(),
            pending.into_iter().map(|r| r.scalar).collect(),
        ))
    }

    /// [`Store::room_states`] of several users at once: two queries per 128 users. A user
    /// with neither rooms nor requests is absent.
    pub async fn room_states_of(
        &self,
        users: &[i64],
    ) -> Result<HashMap<i64, (HashSet<i64>, HashSet<i64>)>> {
        let mut out: HashMap<i64, (HashSet<i64>, HashSet<i64>)> = HashMap::new();
        for list in super::messaging::in_lists(users) {
            let marks = super::messaging::placeholders(list.len());
            for pending in [false, true] {
                let sql = self.dialect.rewrite(&if pending {
                    format!(
                        "SELECT user_id, room_id FROM join_requests \
                         WHERE state = 'pending' AND user_id IN ({marks})"
                    )
                } else {
                    format!("SELECT user_id, room_id FROM memberships WHERE user_id IN ({marks})")
                });
                let mut q = sqlx::query(&sql);
                for id in &list {
                    q = q.bind(*id);
                }
                let rows: Vec<UserRoomRecord> = self.fetch_all_as(q).await?;
                for r in rows {
                    let (member, waiting) = out.entry(r.user_id).or_default();
                    if pending { waiting } else { member }.insert(r.room_id);
                }
            }
        }
        Ok(out)
    }

    /// Makes `user_id` a member of `room_id`; `change` is the id of the `room_member`
    /// notice that tells it (recorded for a cluster's catch-up: `MemberChangeRow`).
    /// False, and nothing changed or recorded, if they were a member already (a join made
    /// at the same moment elsewhere: two nodes, or the web client and another device).
    pub async fn add_member(
        &self,
        room_id: i64,
        user_id: i64,
        now: i64,
        change: i64,
    ) -> Result<bool> {
        let mut tx = self.begin().await?;
        let body = async {
            let sql =
                self.sql("INSERT INTO memberships (room_id, user_id, joined_at) VALUES (?, ?, ?)");
            tx.execute(sqlx::query(&sql).bind(room_id).bind(user_id).bind(now))
                .await?;
            self.record_member_change(&mut tx, change, now, room_id, user_id, true)
                .await
        }
        .await;
        match tx.finish(body).await {
            Ok(()) => Ok(true),
            Err(e) if e.is_unique_violation() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Ends `user_id`'s membership of `room_id`; `change` as for [`Store::add_member`].
    pub async fn remove_member(
        &self,
        room_id: i64,
        user_id: i64,
        now: i64,
        change: i64,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        let body = async {
            let sql = self.sql("DELETE FROM memberships WHERE room_id = ? AND user_id = ?");
            let done = tx
                .execute(sqlx::query(&sql).bind(room_id).bind(user_id))
                .await?;
            if done.rows_affected() > 0 {
                self.record_member_change(&mut tx, change, now, room_id, user_id, false)
                    .await?;
            }
            Ok(())
        }
        .await;
        tx.finish(body).await
    }

    /// Records, in the change's transaction, that `user_id` joined or left `room_id`,
    /// when this store records changes (the nodes of a cluster: see
    /// [`super::StoreOptions::record_changes`]).
    async fn record_member_change(
        &self,
        tx: &mut super::Tx,
        id: i64,
        at: i64,
        room_id: i64,
        user_id: i64,
        joined: bool,
    ) -> Result<()> {
        if !self.record_changes {
            return Ok(());
        }
        let sql = self.sql(
            "INSERT INTO member_changes (id, at, room_id, user_id, joined) VALUES (?, ?, ?, ?, ?)",
        );
        tx.execute(
            sqlx::query(&sql)
                .bind(id)
                .bind(at)
                .bind(room_id)
                .bind(user_id)
                .bind(i64::from(joined)),
        )
        .await?;
        Ok(())
    }

    /// At most `limit` joins and leaves recorded at or after `since` (ms), in the order
    /// they were made, with who (`member_changes`, the nodes of a cluster only).
    pub async fn member_changes_since(
        &self,
        since: i64,
        limit: u32,
    ) -> Result<Vec<MemberChangeRow>> {
        let sql = self.sql(
            "SELECT c.id, c.room_id, u.username, u.alias, c.joined FROM member_changes c \
             JOIN users u ON u.id = c.user_id WHERE c.at >= ? ORDER BY c.at, c.id LIMIT ?",
        );
        self.fetch_all_as(sqlx::query(&sql).bind(since).bind(i64::from(limit)))
            .await
    }

    /// Creates a private channel with its members (R11), in one transaction.
    pub async fn create_channel(
        &self,
        room: &RoomRow,
        creator: i64,
        members: &[i64],
        now: i64,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        let body = async {
            let sql = self.sql(
                "INSERT INTO rooms (id, name, name_key, policy, created_by, created_at) \
                 VALUES (?, ?, ?, ?, ?, ?)",
            );
            tx.execute(
                sqlx::query(&sql)
                    .bind(room.id)
                    .bind(&room.name)
                    .bind(fold(&room.name))
                    .bind(room.policy.as_str())
                    .bind(creator)
                    .bind(now),
            )
            .await?;
            let sql = self
                .sql("INSERT INTO name_skeletons (scope, skeleton, owner) VALUES ('room', ?, ?)");
            tx.execute(
                sqlx::query(&sql)
                    .bind(names::skeleton(&room.name))
                    .bind(room.id),
            )
            .await?;
            let sql =
                self.sql("INSERT INTO memberships (room_id, user_id, joined_at) VALUES (?, ?, ?)");
            for member in members {
                tx.execute(sqlx::query(&sql).bind(room.id).bind(*member).bind(now))
                    .await?;
            }
            Ok::<_, StoreError>(())
        }
        .await;
        tx.finish(body).await
    }

    // ----- join requests --------------------------------------------------------------

    /// Files (or re-files, after a rejection) a pending join request (R8).
    pub async fn request_join(&self, room_id: i64, user_id: i64, now: i64) -> Result<()> {
        let mut tx = self.begin().await?;
        let body = async {
            let sql = self.sql("DELETE FROM join_requests WHERE room_id = ? AND user_id = ?");
            tx.execute(sqlx::query(&sql).bind(room_id).bind(user_id))
                .await?;
            let sql = self.sql(
                "INSERT INTO join_requests (room_id, user_id, state, requested_at, notified) \
                 VALUES (?, ?, 'pending', ?, 0)",
            );
            tx.execute(sqlx::query(&sql).bind(room_id).bind(user_id).bind(now))
                .await?;
            Ok::<_, StoreError>(())
        }
        .await;
        tx.finish(body).await
    }

    /// Withdraws a pending request; false if there was none.
    pub async fn withdraw_request(&self, room_id: i64, user_id: i64) -> Result<bool> {
        let sql = self.sql(
            "DELETE FROM join_requests WHERE room_id = ? AND user_id = ? AND state = 'pending'",
        );
        let done = self
            .execute(sqlx::query(&sql).bind(room_id).bind(user_id))
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Pending join requests, oldest first.
    pub async fn pending_requests(&self) -> Result<Vec<JoinRequest>> {
        let rows: Vec<JoinRequestRecord> = self
            .fetch_all_as(sqlx::query(
                "SELECT u.username, u.alias, r.name AS room_name, j.requested_at \
                 FROM join_requests j \
                 JOIN users u ON u.id = j.user_id JOIN rooms r ON r.id = j.room_id \
                 WHERE j.state = 'pending' ORDER BY j.requested_at, u.username_key",
            ))
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| JoinRequest {
                user: r.username,
                alias: r.alias,
                room: r.room_name,
                requested_at: r.requested_at,
            })
            .collect())
    }

    /// Decides a pending request (and makes the user a member if accepted, `change`
    /// as for [`Store::add_member`]), in one transaction. False if there was no pending
    /// request.
    #[allow(clippy::too_many_arguments)]
    pub async fn decide_request(
        &self,
        room_id: i64,
        user_id: i64,
        accepted: bool,
        by: i64,
        reason: Option<&str>,
        told: bool,
        now: i64,
        change: i64,
    ) -> Result<bool> {
        let mut tx = self.begin().await?;
        let body = async {
            let sql = self.sql(
                "UPDATE join_requests SET state = ?, decided_at = ?, decided_by = ?, reason = ?, \
                 notified = ? WHERE room_id = ? AND user_id = ? AND state = 'pending'",
            );
            let done = tx
                .execute(
                    sqlx::query(&sql)
                        .bind(if accepted { "accepted" } else { "rejected" })
                        .bind(now)
                        .bind(by)
                        .bind(reason)
                        .bind(i64::from(told))
                        .bind(room_id)
                        .bind(user_id),
                )
                .await?;
            if done.rows_affected() == 0 {
                return Ok(false);
            }
            if accepted {
                let sql = self
                    .sql("INSERT INTO memberships (room_id, user_id, joined_at) VALUES (?, ?, ?)");
                tx.execute(sqlx::query(&sql).bind(room_id).bind(user_id).bind(now))
                    .await?;
                self.record_member_change(&mut tx, change, now, room_id, user_id, true)
                    .await?;
            }
            Ok::<_, StoreError>(true)
        }
        .await;
        tx.finish(body).await
    }

    /// Decisions on a user's requests they have not been told about, and marks them told.
    /// Exactly the decisions returned are marked: one taken meanwhile stays untold, for the
    /// next login.
    pub async fn take_untold_decisions(&self, user_id: i64) -> Result<Vec<UntoldDecision>> {
        // Most logins have none: find that out without taking SQLite's write lock.
        let sql = self.sql(
            "SELECT room_id AS scalar FROM join_requests \
             WHERE user_id = ? AND state <> 'pending' AND notified = 0",
        );
        let any: Vec<Scalar<i64>> = self.fetch_all_as(sqlx::query(&sql).bind(user_id)).await?;
        if any.is_empty() {
            return Ok(Vec::new());
        }
        retrying(|| self.take_untold_decisions_once(user_id)).await
    }

    /// Claims the untold decisions first (`notified = 2`, seen only inside this
    /// transaction), then reads what it claimed and marks it told. Reading first would let
    /// a decision taken between the read and the update (a request filed again and
    /// decided again) be marked told without having been read. The claim locks the rows it
    /// took on every backend until the commit, and nothing else ever writes 2.
    async fn take_untold_decisions_once(&self, user_id: i64) -> Result<Vec<UntoldDecision>> {
        let mut tx = self.begin().await?;
        let body = async {
            let sql = self.sql(
                "UPDATE join_requests SET notified = 2 \
                 WHERE user_id = ? AND state <> 'pending' AND notified = 0",
            );
            let claimed = tx.execute(sqlx::query(&sql).bind(user_id)).await?;
            if claimed.rows_affected() == 0 {
                return Ok(Vec::new());
            }
            let sql = self.sql(
                "SELECT room_id, state, reason FROM join_requests \
                 WHERE user_id = ? AND notified = 2 ORDER BY room_id",
            );
            let rows: Vec<DecisionRecord> =
                tx.fetch_all_as(sqlx::query(&sql).bind(user_id)).await?;
            let sql = self
                .sql("UPDATE join_requests SET notified = 1 WHERE user_id = ? AND notified = 2");
            tx.execute(sqlx::query(&sql).bind(user_id)).await?;
            rows.into_iter().map(UntoldDecision::try_from).collect()
        }
        .await;
        tx.finish(body).await
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{raw_connection, sqlite_store, user};
    use crate::store::StoreOptions;
    use sqlx::Executor;

    /// Comptabilité: a room joined by request (migration `0001_core`).
    const BY_REQUEST: i64 = 3;

    #[tokio::test]
    async fn a_decision_taken_while_decisions_are_being_told_is_not_lost() {
        let (store, url, _dir) = sqlite_store(&StoreOptions::default()).await;
        store.create_user(&user(1, "admin")).await.unwrap();
        store.create_user(&user(2, "bob")).await.unwrap();
        store.request_join(BY_REQUEST, 2, 10).await.unwrap();
        assert!(store
            .decide_request(BY_REQUEST, 2, false, 1, Some("first"), false, 11, 90)
            .await
            .unwrap());

        // Another connection holds the write lock while bob's decisions are being taken
        // (a read does not wait for it, a write does)…
        let mut db = raw_connection(&url).await;
        db.execute("BEGIN IMMEDIATE").await.unwrap();
        let taking = tokio::spawn({
            let store = store.clone();
            async move { store.take_untold_decisions(2).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        // …and meanwhile bob asks again and is refused again, for another reason.
        db.execute("DELETE FROM join_requests WHERE room_id = 3 AND user_id = 2")
            .await
            .unwrap();
        db.execute(
            "INSERT INTO join_requests (room_id, user_id, state, requested_at, decided_at, \
             decided_by, reason, notified) VALUES (3, 2, 'rejected', 12, 13, 1, 'second', 0)",
        )
        .await
        .unwrap();
        db.execute("COMMIT").await.unwrap();

        let told = taking.await.unwrap().unwrap();
        let later = store.take_untold_decisions(2).await.unwrap();
        let reasons: Vec<_> = told
            .iter()
            .chain(&later)
            .filter_map(|d| d.reason.as_deref())
            .collect();
        assert!(
            reasons.contains(&"second"),
            "the second decision was marked told without being told: {reasons:?}"
        );
        assert!(store.take_untold_decisions(2).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn joining_a_room_one_is_a_member_of_changes_and_records_nothing() {
        let options = StoreOptions {
            record_changes: true,
            ..StoreOptions::default()
        };
        let (store, _url, _dir) = sqlite_store(&options).await;
        store.create_user(&user(2, "bob")).await.unwrap();
        assert!(store.add_member(BY_REQUEST, 2, 10, 100).await.unwrap());
        assert!(!store.add_member(BY_REQUEST, 2, 11, 101).await.unwrap());
        let changes = store.member_changes_since(0, 10).await.unwrap();
        let ids: Vec<i64> = changes.iter().map(|c| c.id).collect();
        assert_eq!(ids, [100], "one join, recorded once");
        assert!(store.is_member(BY_REQUEST, 2).await.unwrap());
    }

    #[tokio::test]
    async fn untold_decisions_are_told_once() {
        let (store, _url, _dir) = sqlite_store(&StoreOptions::default()).await;
        store.create_user(&user(1, "admin")).await.unwrap();
        store.create_user(&user(2, "bob")).await.unwrap();
        for room in [3, 4] {
            store.request_join(room, 2, 10).await.unwrap();
        }
        store
            .decide_request(3, 2, true, 1, None, false, 11, 91)
            .await
            .unwrap();
        store
            .decide_request(4, 2, false, 1, Some("no"), false, 11, 92)
            .await
            .unwrap();
        let told = store.take_untold_decisions(2).await.unwrap();
        let told: Vec<_> = told
            .iter()
            .map(|d| (d.room_id, d.accepted, d.reason.as_deref()))
            .collect();
        assert_eq!(told, [(3, true, None), (4, false, Some("no"))]);
        assert!(store.take_untold_decisions(2).await.unwrap().is_empty());
    }
}

#[derive(sqlx::FromRow)]
struct UserRoomRecord {
    user_id: i64,
    room_id: i64,
}
