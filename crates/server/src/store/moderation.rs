//! Moderation: the `sanctions` table (kicks and bans, R18) and the `audit_log` of
//! administrative actions (R19).

use salon_proto::{AuditEntry, SanctionInfo};

use super::conn::Q;
use super::stored;
use super::{Result, Store, StoreError};

/// One audit entry (R19), stored on its own (`Store::audit`) or in a transaction with
/// what it records (`Store::delete_message`).
pub(super) const AUDIT_INSERT: &str =
    "INSERT INTO audit_log (id, ts, actor, action, target, reason) VALUES (?, ?, ?, ?, ?, ?)";

/// [`AUDIT_INSERT`] (as the dialect writes it: `sql`) with entry `id`'s values.
pub(super) fn audit_insert<'q>(sql: &'q str, id: i64, entry: &'q AuditEntry) -> Q<'q> {
    sqlx::query(sql)
        .bind(id)
        .bind(entry.ts)
        .bind(&entry.actor)
        .bind(entry.action.as_str())
        .bind(&entry.target)
        .bind(&entry.reason)
}

/// A kick or a ban. Stable storage format (`kind`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sanction {
    pub kind: SanctionKind,
    /// When a kick ends; `None` for bans.
    pub ends_at: Option<i64>,
    pub reason: String,
}

pub use salon_proto::SanctionKind;

/// A sanction as stored, with who imposed it and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imposed {
    pub sanction: Sanction,
    /// The administrator's alias (their username if the account is gone).
    pub by: String,
    pub since: i64,
}

#[derive(sqlx::FromRow)]
struct SanctionRecord {
    kind: String,
    ends_at: Option<i64>,
    reason: String,
    by_alias: String,
    created_at: i64,
}

/// A current sanction with the username it applies to.
#[derive(sqlx::FromRow)]
struct SanctionInfoRecord {
    username: String,
    kind: String,
    ends_at: Option<i64>,
    reason: String,
    created_by: String,
    created_at: i64,
}

#[derive(sqlx::FromRow)]
struct AuditRecord {
    ts: i64,
    actor: String,
    action: String,
    target: String,
    reason: String,
}

impl Store {
    pub async fn sanctions_of(&self, user_id: i64) -> Result<Vec<Imposed>> {
        let sql = self.sql(
            "SELECT s.kind, s.ends_at, s.reason, COALESCE(u.alias, s.created_by) AS by_alias, \
             s.created_at FROM sanctions s LEFT JOIN users u ON u.username = s.created_by \
             WHERE s.user_id = ?",
        );
        let rows: Vec<SanctionRecord> = self.fetch_all_as(sqlx::query(&sql).bind(user_id)).await?;
        rows.into_iter()
            .map(|r| {
                Ok(Imposed {
                    sanction: Sanction {
                        kind: stored(r.kind, "sanction")?,
                        ends_at: r.ends_at,
                        reason: r.reason,
                    },
                    by: r.by_alias,
                    since: r.created_at,
                })
            })
            .collect()
    }

    /// Sets (or replaces) a user's kick or ban.
    pub async fn set_sanction(
        &self,
        user_id: i64,
        sanction: &Sanction,
        by: &str,
        now: i64,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        let body = async {
            let sql = self.sql("DELETE FROM sanctions WHERE user_id = ? AND kind = ?");
            tx.execute(sqlx::query(&sql).bind(user_id).bind(sanction.kind.as_str()))
                .await?;
            let sql = self.sql(
                "INSERT INTO sanctions (user_id, kind, ends_at, reason, created_by, created_at) \
                 VALUES (?, ?, ?, ?, ?, ?)",
            );
            tx.execute(
                sqlx::query(&sql)
                    .bind(user_id)
                    .bind(sanction.kind.as_str())
                    .bind(sanction.ends_at)
                    .bind(&sanction.reason)
                    .bind(by)
                    .bind(now),
            )
            .await?;
            Ok::<_, StoreError>(())
        }
        .await;
        tx.finish(body).await
    }

    /// Every ban and every kick not yet over at `now`, newest first.
    pub async fn current_sanctions(&self, now: i64) -> Result<Vec<SanctionInfo>> {
        let sql = self.sql(
            "SELECT u.username, s.kind, s.ends_at, s.reason, s.created_by, s.created_at \
             FROM sanctions s JOIN users u ON u.id = s.user_id \
             WHERE s.kind = 'ban' OR s.ends_at > ? ORDER BY s.created_at DESC",
        );
        let rows: Vec<SanctionInfoRecord> = self.fetch_all_as(sqlx::query(&sql).bind(now)).await?;
        rows.into_iter()
            .map(|r| {
                Ok(SanctionInfo {
                    user: r.username,
                    kind: stored(r.kind, "sanction")?,
                    until: r.ends_at,
                    reason: r.reason,
                    by: r.created_by,
                    since: r.created_at,
                })
            })
            .collect()
    }

    /// Lifts a kick or ban; false if there was none.
    pub async fn lift_sanction(&self, user_id: i64, kind: SanctionKind) -> Result<bool> {
        let sql = self.sql("DELETE FROM sanctions WHERE user_id = ? AND kind = ?");
        let done = self
            .execute(sqlx::query(&sql).bind(user_id).bind(kind.as_str()))
            .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn audit(&self, id: i64, entry: &AuditEntry) -> Result<()> {
        let sql = self.sql(AUDIT_INSERT);
        self.execute(audit_insert(&sql, id, entry)).await?;
        Ok(())
    }

    /// Up to `limit` administrators' broadcasts with an id above `after` (ids begin with
    /// their millisecond), in id order: id, when, the administrator's username and alias
    /// (their username if the account is gone), and the text (a cluster's catch-up tells
    /// them again: `live/catchup.rs`).
    pub async fn broadcasts_after(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<(i64, i64, String, String, String)>> {
        let sql = self.sql(
            "SELECT a.id, a.ts, a.actor, COALESCE(u.alias, a.actor) AS alias, a.reason \
             FROM audit_log a LEFT JOIN users u ON u.username = a.actor \
             WHERE a.id > ? AND a.action = ? ORDER BY a.id LIMIT ?",
        );
        let rows: Vec<BroadcastRecord> = self
            .fetch_all_as(
                sqlx::query(&sql)
                    .bind(after)
                    .bind(salon_proto::AuditAction::Broadcast.as_str())
                    .bind(i64::from(limit)),
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| (r.id, r.ts, r.actor, r.alias, r.reason))
            .collect())
    }

    /// The first shutdown command recorded with an id above `after`, if any: when, and
    /// its countdown's length and message (a cluster's catch-up follows one it missed).
    pub async fn shutdown_after(&self, after: i64) -> Result<Option<(i64, u32, String)>> {
        let sql = self.sql(
            "SELECT a.id, a.ts, a.reason FROM audit_log a \
             WHERE a.id > ? AND a.action = ? ORDER BY a.id LIMIT 1",
        );
        let row: Option<(i64, i64, String)> = self
            .fetch_optional_as(
                sqlx::query(&sql)
                    .bind(after)
                    .bind(salon_proto::AuditAction::Shutdown.as_str()),
            )
            .await?;
        Ok(
            row.map(|(id, ts, reason)| match read_shutdown_reason(&reason) {
                Some((seconds, message)) => (ts, seconds, message),
                // Written by another version in a form this one cannot read: the shutdown
                // was still ordered, so it is followed at once rather than missed.
                None => {
                    tracing::warn!(
                        audit_id = id,
                        reason,
                        "unreadable shutdown record: followed at once"
                    );
                    (ts, 0, reason)
                }
            }),
        )
    }

    /// The latest audit entries, newest first.
    pub async fn audit_log(&self, limit: u32) -> Result<Vec<AuditEntry>> {
        let sql = self.sql(
            "SELECT ts, actor, action, target, reason FROM audit_log ORDER BY id DESC LIMIT ?",
        );
        let rows: Vec<AuditRecord> = self
            .fetch_all_as(sqlx::query(&sql).bind(i64::from(limit)))
            .await?;
        rows.into_iter()
            .map(|r| {
                Ok(AuditEntry {
                    ts: r.ts,
                    actor: r.actor,
                    action: stored(r.action, "audit action")?,
                    target: r.target,
                    reason: r.reason,
                })
            })
            .collect()
    }
}

/// How a shutdown command is recorded in the audit log's `reason`.
pub fn shutdown_reason(seconds: u32, message: &str) -> String {
    format!("in {seconds} s — {message}")
}

/// [`shutdown_reason`] read back.
fn read_shutdown_reason(reason: &str) -> Option<(u32, String)> {
    let (seconds, message) = reason.strip_prefix("in ")?.split_once(" s — ")?;
    Some((seconds.parse().ok()?, message.to_owned()))
}

#[derive(sqlx::FromRow)]
struct BroadcastRecord {
    id: i64,
    ts: i64,
    actor: String,
    alias: String,
    reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shutdown_record_reads_back_whatever_its_message() {
        for message in [
            "",
            "Back at 18:15",
            "in 5 s — a message that quotes the format",
            "été\n",
        ] {
            for seconds in [0, 1, 3600, u32::MAX] {
                let reason = shutdown_reason(seconds, message);
                assert_eq!(
                    read_shutdown_reason(&reason),
                    Some((seconds, message.to_owned())),
                    "{reason}"
                );
            }
        }
        assert_eq!(read_shutdown_reason("shutdown"), None);
        assert_eq!(read_shutdown_reason("in x s — m"), None);
    }
}
