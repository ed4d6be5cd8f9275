//! Resumable sessions: the `session_tokens` table (hashes of tokens, never the tokens),
//! read together with the account they resume.

use super::accounts::{user_columns, UserRecord};
use super::{Result, Store, UserRow};

/// An account found by one of its tokens, and when that token expires.
#[derive(sqlx::FromRow)]
struct TokenRecord {
    #[sqlx(flatten)]
    user: UserRecord,
    expires_at: i64,
}

impl Store {
    pub async fn create_session_token(
        &self,
        hash: &str,
        user_id: i64,
        now: i64,
        expires_at: i64,
    ) -> Result<()> {
        let sql = self.sql(
            "INSERT INTO session_tokens (token_hash, user_id, created_at, expires_at) \
             VALUES (?, ?, ?, ?)",
        );
        self.execute(
            sqlx::query(&sql)
                .bind(hash)
                .bind(user_id)
                .bind(now)
                .bind(expires_at),
        )
        .await?;
        Ok(())
    }

    /// The account of a token that has not expired, with the token's expiry.
    pub async fn user_by_session_token(
        &self,
        hash: &str,
        now: i64,
    ) -> Result<Option<(UserRow, i64)>> {
        let sql = self.sql(concat!(
            "SELECT ",
            user_columns!(),
            ", t.expires_at FROM session_tokens t \
             JOIN users u ON u.id = t.user_id WHERE t.token_hash = ? AND t.expires_at > ?"
        ));
        let found: Option<TokenRecord> = self
            .fetch_optional_as(sqlx::query(&sql).bind(hash).bind(now))
            .await?;
        found
            .map(|r| Ok((UserRow::try_from(r.user)?, r.expires_at)))
            .transpose()
    }

    pub async fn delete_session_token(&self, hash: &str) -> Result<()> {
        let sql = self.sql("DELETE FROM session_tokens WHERE token_hash = ?");
        self.execute(sqlx::query(&sql).bind(hash)).await?;
        Ok(())
    }

    /// Revokes every token of a user but `keep` (the session changing its password).
    pub async fn delete_session_tokens_of(&self, user_id: i64, keep: Option<&str>) -> Result<()> {
        let sql = self.sql("DELETE FROM session_tokens WHERE user_id = ? AND token_hash <> ?");
        self.execute(sqlx::query(&sql).bind(user_id).bind(keep.unwrap_or("")))
            .await?;
        Ok(())
    }

    /// Which of these users' tokens exist (their hashes), expired or not.
    pub async fn session_tokens_of(
        &self,
        users: &[i64],
    ) -> Result<std::collections::HashSet<String>> {
        let mut out = std::collections::HashSet::new();
        for list in super::messaging::in_lists(users) {
            let sql = self.dialect.rewrite(&format!(
                "SELECT token_hash FROM session_tokens WHERE user_id IN ({})",
                super::messaging::placeholders(list.len())
            ));
            let mut q = sqlx::query(&sql);
            for id in &list {
                q = q.bind(*id);
            }
            let rows: Vec<TokenHashRecord> = self.fetch_all_as(q).await?;
            out.extend(rows.into_iter().map(|r| r.token_hash));
        }
        Ok(out)
    }

    pub async fn purge_expired_session_tokens(&self, now: i64) -> Result<u64> {
        let sql = self.sql("DELETE FROM session_tokens WHERE expires_at <= ?");
        let done = self.execute(sqlx::query(&sql).bind(now)).await?;
        Ok(done.rows_affected())
    }
}

#[derive(sqlx::FromRow)]
struct TokenHashRecord {
    token_hash: String,
}
