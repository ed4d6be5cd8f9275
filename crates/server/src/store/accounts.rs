//! Accounts: the `users` table (profiles, password hashes, approval, last status).
//! Registration also records the names' look-alike keys (`name_skeletons`), consumes an
//! invitation (`invites`) and files the new account in every `everyone` room
//! (`memberships`), all in its own transaction.

use salon_proto::{AccountRequest, Status};

use super::stored;
use super::{flag, fold, names, retrying, Result, Store, StoreError};

/// An account as stored.
#[derive(Debug, Clone)]
pub struct UserRow {
    pub id: i64,
    pub username: String,
    pub alias: String,
    pub first_name: String,
    pub last_name: String,
    pub password_hash: String,
    pub is_admin: bool,
    /// False while the account waits for an administrator's approval: it cannot log in.
    pub approved: bool,
    pub status: Status,
}

/// A new account.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub id: i64,
    pub username: String,
    pub alias: String,
    pub first_name: String,
    pub last_name: String,
    pub password_hash: String,
    pub is_admin: bool,
    pub created_at: i64,
}

/// The columns of a [`UserRecord`], from `users u`: one list for every query that reads
/// an account, so they cannot drift apart.
macro_rules! user_columns {
    () => {
        "u.id, u.username, u.alias, u.first_name, u.last_name, u.password_hash, \
         u.is_admin, u.approved, u.status"
    };
}
pub(super) use user_columns;

/// A `users` row as the database gives it (see [`user_columns`]).
#[derive(sqlx::FromRow)]
pub(super) struct UserRecord {
    id: i64,
    username: String,
    alias: String,
    first_name: String,
    last_name: String,
    password_hash: String,
    is_admin: i64,
    approved: i64,
    status: String,
}

impl TryFrom<UserRecord> for UserRow {
    type Error = StoreError;

    fn try_from(r: UserRecord) -> Result<UserRow> {
        let status: Status = stored(r.status, &format!("users.status of user {}", r.id))?;
        Ok(UserRow {
            id: r.id,
            username: r.username,
            alias: r.alias,
            first_name: r.first_name,
            last_name: r.last_name,
            password_hash: r.password_hash,
            is_admin: flag(r.is_admin),
            approved: flag(r.approved),
            status,
        })
    }
}

#[derive(sqlx::FromRow)]
struct NamesRecord {
    id: i64,
    username: String,
    alias: String,
}

/// One account as the administrators' list shows it ([`Store::account_listing`]).
#[derive(Debug, Clone)]
pub struct AccountListingRow {
    pub id: i64,
    pub username: String,
    pub username_key: String,
    pub alias: String,
    pub first_name: String,
    pub last_name: String,
    pub is_admin: bool,
    pub approved: bool,
    pub created_at: i64,
}

#[derive(sqlx::FromRow)]
struct AccountListingRecord {
    id: i64,
    username: String,
    username_key: String,
    alias: String,
    first_name: String,
    last_name: String,
    is_admin: i64,
    approved: i64,
    created_at: i64,
}

#[derive(sqlx::FromRow)]
struct AccountRequestRecord {
    username: String,
    alias: String,
    first_name: String,
    last_name: String,
    created_at: i64,
}

impl Store {
    /// Inserts the account and makes it a member of every `everyone` room (R7), in one
    /// transaction.
    pub async fn create_user(&self, user: &NewUser) -> Result<()> {
        self.import_users(std::slice::from_ref(user), &[]).await
    }

    /// Registers one account in one transaction: waiting for approval unless `approved`,
    /// and consuming `invite` (the hash of an invitation code, valid at `now`) when given;
    /// an invitation that cannot be used fails everything with
    /// [`StoreError::InvalidInvite`].
    pub async fn register_user(
        &self,
        user: &NewUser,
        approved: bool,
        invite: Option<(&str, i64)>,
    ) -> Result<()> {
        self.import_users_with(std::slice::from_ref(user), &[], approved, invite)
            .await
    }

    /// Imports many accounts (and, optionally, session tokens for them) in one
    /// transaction: provisioning and the load generator's set-up. Each account becomes a
    /// member of the `everyone` rooms, as with [`Store::create_user`].
    pub async fn import_users(
        &self,
        users: &[NewUser],
        tokens: &[(String, i64, i64)],
    ) -> Result<()> {
        self.import_users_with(users, tokens, true, None).await
    }

    async fn import_users_with(
        &self,
        users: &[NewUser],
        tokens: &[(String, i64, i64)],
        approved: bool,
        invite: Option<(&str, i64)>,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        let body = async {
            if let (Some((hash, now)), Some(user)) = (invite, users.first()) {
                let sql = self.sql(
                    "UPDATE invites SET used_by = ?, used_at = ? \
                     WHERE code_hash = ? AND used_by IS NULL AND expires_at > ?",
                );
                let done = tx
                    .execute(
                        sqlx::query(&sql)
                            .bind(user.id)
                            .bind(now)
                            .bind(hash)
                            .bind(now),
                    )
                    .await?;
                if done.rows_affected() != 1 {
                    return Err(StoreError::InvalidInvite);
                }
            }
            let insert_user = self.sql(
                "INSERT INTO users (id, username, username_key, alias, alias_key, first_name, \
                 last_name, password_hash, is_admin, status, created_at) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'offline', ?)",
            );
            let insert_memberships = self.sql(
                "INSERT INTO memberships (room_id, user_id, joined_at) \
                 SELECT id, ?, ? FROM rooms WHERE policy = 'everyone'",
            );
            let insert_skeleton = self
                .sql("INSERT INTO name_skeletons (scope, skeleton, owner) VALUES ('user', ?, ?)");
            for user in users {
                // One row per distinct key: a second account whose name looks like this
                // one's is refused by the database (unique violation), even in a race.
                let (u, a) = (
                    names::skeleton(&user.username),
                    names::skeleton(&user.alias),
                );
                for sk in [Some(u.as_str()), (a != u).then_some(a.as_str())]
                    .into_iter()
                    .flatten()
                {
                    tx.execute(sqlx::query(&insert_skeleton).bind(sk).bind(user.id))
                        .await?;
                }
                tx.execute(
                    sqlx::query(&insert_user)
                        .bind(user.id)
                        .bind(&user.username)
                        .bind(fold(&user.username))
                        .bind(&user.alias)
                        .bind(fold(&user.alias))
                        .bind(&user.first_name)
                        .bind(&user.last_name)
                        .bind(&user.password_hash)
                        .bind(i64::from(user.is_admin))
                        .bind(user.created_at),
                )
                .await?;
                tx.execute(
                    sqlx::query(&insert_memberships)
                        .bind(user.id)
                        .bind(user.created_at),
                )
                .await?;
                if !approved {
                    let sql = self.sql("UPDATE users SET approved = 0 WHERE id = ?");
                    tx.execute(sqlx::query(&sql).bind(user.id)).await?;
                }
            }
            let insert_token = self.sql(
                "INSERT INTO session_tokens (token_hash, user_id, created_at, expires_at) \
                 VALUES (?, ?, ?, ?)",
            );
            for (hash, user_id, expires_at) in tokens {
                tx.execute(
                    sqlx::query(&insert_token)
                        .bind(hash)
                        .bind(*user_id)
                        .bind(0_i64)
                        .bind(*expires_at),
                )
                .await?;
            }
            Ok::<_, StoreError>(())
        }
        .await;
        tx.finish(body).await
    }

    /// The account whose username or alias folds to `key` (usernames win a tie).
    pub async fn user_by_name(&self, key: &str) -> Result<Option<UserRow>> {
        let sql = self.sql(concat!(
            "SELECT ",
            user_columns!(),
            " FROM users u WHERE u.username_key = ? OR u.alias_key = ? LIMIT 2"
        ));
        let rows: Vec<UserRecord> = self
            .fetch_all_as(sqlx::query(&sql).bind(key).bind(key))
            .await?;
        let mut best = None;
        for row in rows {
            let user = UserRow::try_from(row)?;
            let by_username = fold(&user.username) == key;
            if by_username || best.is_none() {
                best = Some(user);
            }
        }
        Ok(best)
    }

    pub async fn set_password_hash(&self, user_id: i64, hash: &str) -> Result<()> {
        let sql = self.sql("UPDATE users SET password_hash = ? WHERE id = ?");
        self.execute(sqlx::query(&sql).bind(hash).bind(user_id))
            .await?;
        Ok(())
    }

    /// [`Store::set_password_hash`] in a transaction of the message writer (its tests'
    /// stand-in for a change).
    #[cfg(test)]
    pub(crate) async fn set_password_hash_in(
        &self,
        tx: &mut super::Tx,
        user_id: i64,
        hash: &str,
    ) -> Result<()> {
        let sql = self.sql("UPDATE users SET password_hash = ? WHERE id = ?");
        tx.execute(sqlx::query(&sql).bind(hash).bind(user_id))
            .await?;
        Ok(())
    }

    /// Whether an account may log in (not waiting for an administrator's approval). A
    /// login reads `UserRow::approved` instead, from the query that found the account.
    pub async fn is_approved(&self, user_id: i64) -> Result<bool> {
        let sql = self.sql("SELECT approved AS scalar FROM users WHERE id = ?");
        let approved: Option<super::Scalar<i64>> = self
            .fetch_optional_as(sqlx::query(&sql).bind(user_id))
            .await?;
        Ok(approved.is_some_and(|a| flag(a.scalar)))
    }

    /// Accounts waiting for approval, oldest first.
    pub async fn account_requests(&self) -> Result<Vec<AccountRequest>> {
        let rows: Vec<AccountRequestRecord> = self
            .fetch_all_as(sqlx::query(
                "SELECT username, alias, first_name, last_name, created_at FROM users \
                 WHERE approved = 0 ORDER BY created_at, id",
            ))
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| AccountRequest {
                username: r.username,
                alias: r.alias,
                first_name: r.first_name,
                last_name: r.last_name,
                requested_at: r.created_at,
            })
            .collect())
    }

    /// Approves a waiting account; false if it was not waiting.
    pub async fn approve_account(&self, user_id: i64) -> Result<bool> {
        let sql = self.sql("UPDATE users SET approved = 1 WHERE id = ? AND approved = 0");
        let done = self.execute(sqlx::query(&sql).bind(user_id)).await?;
        Ok(done.rows_affected() == 1)
    }

    /// Deletes a waiting account (it never logged in: its memberships and names go with
    /// it); false if it was not waiting.
    pub async fn reject_account(&self, user_id: i64) -> Result<bool> {
        if self.is_approved(user_id).await? {
            return Ok(false);
        }
        let mut tx = self.begin().await?;
        let body = async {
            for sql in [
                "DELETE FROM memberships WHERE user_id = ?",
                "DELETE FROM join_requests WHERE user_id = ?",
                "DELETE FROM name_skeletons WHERE scope = 'user' AND owner = ?",
            ] {
                tx.execute(sqlx::query(&self.sql(sql)).bind(user_id))
                    .await?;
            }
            let sql = self.sql("DELETE FROM users WHERE id = ? AND approved = 0");
            let done = tx.execute(sqlx::query(&sql).bind(user_id)).await?;
            // Approved (or gone) meanwhile: roll everything back.
            if done.rows_affected() != 1 {
                return Err(StoreError::Conflict);
            }
            Ok(true)
        }
        .await;
        match tx.finish(body).await {
            Err(StoreError::Conflict) => Ok(false),
            other => other,
        }
    }

    /// Marks every account offline (at start: nobody is connected yet).
    pub async fn reset_statuses(&self) -> Result<()> {
        self.execute(sqlx::query(
            "UPDATE users SET status = 'offline' WHERE status <> 'offline'",
        ))
        .await?;
        Ok(())
    }

    /// Stores users' current statuses, in one transaction.
    pub async fn set_statuses(&self, statuses: &[(i64, Status)]) -> Result<()> {
        // In user order: nodes of a cluster storing some of the same users (those of a
        // node that died) lock their rows in one order, and never deadlock each other.
        let mut statuses = statuses.to_vec();
        statuses.sort_unstable_by_key(|(user, _)| *user);
        retrying(|| self.set_statuses_once(&statuses)).await
    }

    async fn set_statuses_once(&self, statuses: &[(i64, Status)]) -> Result<()> {
        let mut tx = self.begin().await?;
        let body = async {
            let sql = self.sql("UPDATE users SET status = ? WHERE id = ?");
            for (user_id, status) in statuses {
                tx.execute(sqlx::query(&sql).bind(status.as_str()).bind(*user_id))
                    .await?;
            }
            Ok::<_, StoreError>(())
        }
        .await;
        tx.finish(body).await
    }

    /// Every account: (id, username, alias), by username.
    pub async fn list_users(&self) -> Result<Vec<(i64, String, String)>> {
        let rows: Vec<NamesRecord> = self
            .fetch_all_as(sqlx::query(
                "SELECT id, username, alias FROM users ORDER BY username_key",
            ))
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| (r.id, r.username, r.alias))
            .collect())
    }

    /// Every account with what the administrators' list shows, by username key (the
    /// same size as `who`'s list: one row per account).
    pub async fn account_listing(&self) -> Result<Vec<AccountListingRow>> {
        let rows: Vec<AccountListingRecord> = self
            .fetch_all_as(sqlx::query(
                "SELECT id, username, username_key, alias, first_name, last_name, is_admin, \
                 approved, created_at FROM users ORDER BY username_key",
            ))
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| AccountListingRow {
                id: r.id,
                username: r.username,
                username_key: r.username_key,
                alias: r.alias,
                first_name: r.first_name,
                last_name: r.last_name,
                is_admin: flag(r.is_admin),
                approved: flag(r.approved),
                created_at: r.created_at,
            })
            .collect())
    }

    /// Whether any administrator account exists (R5: the first one is made at start).
    pub async fn admin_exists(&self) -> Result<bool> {
        let admins: i64 = self
            .fetch_scalar(sqlx::query(
                "SELECT COUNT(*) AS scalar FROM users WHERE is_admin = 1",
            ))
            .await?;
        Ok(admins > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{raw_connection, sqlite_store, user};
    use super::*;
    use crate::store::StoreOptions;

    #[tokio::test]
    async fn an_unknown_stored_status_is_an_error_not_online() {
        let (store, url, _dir) = sqlite_store(&StoreOptions::default()).await;
        store.create_user(&user(7, "alice")).await.unwrap();
        let found = store.user_by_name("alice").await.unwrap().unwrap();
        assert_eq!(found.status, Status::Offline);
        assert!(found.approved);

        let mut db = raw_connection(&url).await;
        sqlx::query("UPDATE users SET status = 'dancing' WHERE id = 7")
            .execute(&mut db)
            .await
            .unwrap();
        let e = store.user_by_name("alice").await.unwrap_err();
        assert!(
            matches!(&e, StoreError::Corrupt(what) if what.contains("dancing")),
            "{e}"
        );
        assert!(!e.is_unavailable(), "a bad value is a bug to look at: {e}");
    }

    #[tokio::test]
    async fn the_user_row_says_whether_the_account_is_approved() {
        let (store, _url, _dir) = sqlite_store(&StoreOptions::default()).await;
        store
            .register_user(&user(8, "waiting"), false, None)
            .await
            .unwrap();
        let found = store.user_by_name("waiting").await.unwrap().unwrap();
        assert!(!found.approved);
        assert!(store.approve_account(8).await.unwrap());
        assert!(
            store
                .user_by_name("waiting")
                .await
                .unwrap()
                .unwrap()
                .approved
        );
    }
}
