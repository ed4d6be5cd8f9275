//! Invitations (registration = invite): the `invites` table. Only a hash of each code is
//! stored; a registration consumes its invitation in its own transaction
//! (`Store::register_user`).

use salon_proto::InviteInfo;

use super::{Result, Store};

/// An unused invitation and the username of the administrator who made it.
#[derive(sqlx::FromRow)]
struct InviteRecord {
    id: i64,
    username: String,
    created_at: i64,
    expires_at: i64,
}

impl Store {
    pub async fn create_invite(
        &self,
        id: i64,
        code_hash: &str,
        by: i64,
        now: i64,
        expires_at: i64,
    ) -> Result<()> {
        let sql = self.sql(
            "INSERT INTO invites (id, code_hash, created_by, created_at, expires_at) \
             VALUES (?, ?, ?, ?, ?)",
        );
        self.execute(
            sqlx::query(&sql)
                .bind(id)
                .bind(code_hash)
                .bind(by)
                .bind(now)
                .bind(expires_at),
        )
        .await?;
        Ok(())
    }

    /// Invitations neither used nor expired at `now`, newest first.
    pub async fn invites(&self, now: i64) -> Result<Vec<InviteInfo>> {
        let sql = self.sql(
            "SELECT i.id, u.username, i.created_at, i.expires_at FROM invites i \
             JOIN users u ON u.id = i.created_by \
             WHERE i.used_by IS NULL AND i.expires_at > ? ORDER BY i.id DESC",
        );
        let rows: Vec<InviteRecord> = self.fetch_all_as(sqlx::query(&sql).bind(now)).await?;
        Ok(rows
            .into_iter()
            .map(|r| InviteInfo {
                id: r.id,
                by: r.username,
                created_at: r.created_at,
                expires_at: r.expires_at,
            })
            .collect())
    }

    /// Withdraws an unused invitation; false if there was none.
    pub async fn revoke_invite(&self, id: i64) -> Result<bool> {
        let sql = self.sql("DELETE FROM invites WHERE id = ? AND used_by IS NULL");
        let done = self.execute(sqlx::query(&sql).bind(id)).await?;
        Ok(done.rows_affected() == 1)
    }
}
