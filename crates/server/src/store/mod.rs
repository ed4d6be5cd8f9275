//! Storage: the only module that talks to the database (R21).
//!
//! One [`Store`] serves SQLite, PostgreSQL and MySQL/MariaDB through sqlx's runtime-chosen
//! `Any` driver. Queries are written once, with `?` placeholders, in portable SQL; the only
//! dialect-specific pieces are contained in [`dialect`]: the migrations directory, the
//! placeholder syntax for PostgreSQL, and SQLite's connection pragmas. Every value is bound
//! as a parameter — no SQL is ever built from client input.
//!
//! Columns are BIGINT/TEXT only (times as UTC milliseconds, booleans as 0/1) because those
//! decode identically through the `Any` driver on all three backends.

mod conn;
mod dialect;

use crate::names;

use std::collections::HashSet;
use std::time::Duration;

use salon_proto::{AuditEntry, DirectMessage, JoinPolicy, JoinRequest, RoomMessage, Status};
use sqlx::any::{AnyPoolOptions, AnyQueryResult, AnyRow};
use sqlx::{AnyPool, Row};

use conn::{Conn, Tx, Q};
pub use dialect::Dialect;

/// Storage failures. Whether the client sees `unavailable` or `internal` is decided by
/// [`StoreError::is_unavailable`].
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported database URL {0:?}: use sqlite://, postgres:// or mysql://")]
    UnsupportedUrl(String),
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// A database call took longer than the database timeout; its connection was closed.
    #[error("the database did not answer within {0:?}")]
    Timeout(Duration),
    /// COMMIT was sent but its answer never came (a timeout, a lost connection): the
    /// transaction may or may not have been applied.
    #[error("the outcome of a commit is unknown: {0}")]
    CommitUnknown(Box<StoreError>),
    /// The invitation presented with a registration is unknown, used or expired (nothing
    /// was stored).
    #[error("the invitation is unknown, used or expired")]
    InvalidInvite,
    /// The row changed between a check and the transaction acting on it; nothing was
    /// changed.
    #[error("the row changed meanwhile")]
    Conflict,
}

impl StoreError {
    /// True when the trouble is the database's (unreachable, timed out, out of space,
    /// read-only, overloaded…), not a bug in our query: the client is told `unavailable`
    /// and may retry. False for real bugs (`internal`).
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Sqlx(e) => match e {
                sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed
                | sqlx::Error::Protocol(_) => true,
                sqlx::Error::Database(d) => dialect::is_transient(d.as_ref()),
                _ => false,
            },
            StoreError::Timeout(_) | StoreError::CommitUnknown(_) => true,
            StoreError::Migrate(_)
            | StoreError::UnsupportedUrl(_)
            | StoreError::Corrupt(_)
            | StoreError::InvalidInvite
            | StoreError::Conflict => false,
        }
    }

    /// True when a change may or may not have been applied (see
    /// [`StoreError::CommitUnknown`]).
    pub fn is_outcome_unknown(&self) -> bool {
        matches!(self, StoreError::CommitUnknown(_))
    }

    /// Whether this error, coming from a COMMIT, leaves its outcome unknown: no answer
    /// (timeout), or the connection was lost. An error the database answered with means
    /// it did not commit; SQLite is in-process, so its errors are always answers.
    fn leaves_commit_unknown(&self) -> bool {
        match self {
            StoreError::Timeout(_) => true,
            StoreError::Sqlx(e) => match e {
                sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::Protocol(_)
                | sqlx::Error::WorkerCrashed => true,
                sqlx::Error::Database(d) => dialect::is_connection_lost(d.as_ref()),
                _ => false,
            },
            _ => false,
        }
    }

    /// A transaction the database aborted to break a deadlock or a serialization
    /// conflict (MySQL/MariaDB 1213, PostgreSQL 40P01/40001): nothing was committed and
    /// running it again is safe.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Sqlx(e) => e
                .as_database_error()
                .and_then(|d| d.code())
                .is_some_and(|code| matches!(code.as_ref(), "40001" | "40P01")),
            _ => false,
        }
    }

    pub fn is_unique_violation(&self) -> bool {
        match self {
            StoreError::Sqlx(e) => e
                .as_database_error()
                .is_some_and(|d| d.is_unique_violation()),
            _ => false,
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

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

/// A room or private channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomRow {
    pub id: i64,
    pub name: String,
    pub policy: JoinPolicy,
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
}

/// A message already stored under an author's idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyedMessage {
    pub id: i64,
    pub created_at: i64,
    /// The room (room messages) or the recipient (private messages).
    pub target: i64,
    pub body: String,
}

/// Which of a new account's names look like existing ones, and the existing name each
/// resembles. Usernames and aliases share one namespace, compared by their skeletons
/// ([`crate::names::skeleton`]), so that "log in with username or alias" (R3) always
/// names one account and no name can pass for another.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct NameClash {
    pub username: Option<String>,
    pub alias: Option<String>,
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

/// A decision on a join request the requester has not been told about yet.
#[derive(Debug, Clone)]
pub struct UntoldDecision {
    pub room_id: i64,
    pub accepted: bool,
    pub reason: Option<String>,
}

/// Largest rows per multi-row INSERT; batches are cut into these sizes so that only a
/// few statement shapes exist (each prepared once per connection).
const INSERT_CHUNKS: [usize; 4] = [64, 16, 4, 1];

/// How the store talks to its database.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Longest any one database call may take (and the longest wait for a connection):
    /// past it the call fails `unavailable` and its connection is closed.
    pub timeout: Duration,
    /// SQLite only: the largest the database file may grow, in MiB (`PRAGMA
    /// max_page_count`); writes past it fail as on a full disk. `None`: unlimited.
    pub sqlite_max_size_mb: Option<u64>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            timeout: Duration::from_secs(5),
            sqlite_max_size_mb: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    dialect: Dialect,
    timeout: Duration,
    room_inserts: [String; 4],
    direct_inserts: [String; 4],
    ack_updates: [String; 4],
}

impl Store {
    /// Connects with the default options (creating the SQLite file and its directory if
    /// needed). Does not migrate.
    pub async fn connect(url: &str) -> Result<Store> {
        Store::connect_with(url, &StoreOptions::default()).await
    }

    /// Connects (creating the SQLite file and its directory if needed). Does not migrate.
    pub async fn connect_with(url: &str, options: &StoreOptions) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let dialect =
            Dialect::from_url(url).ok_or_else(|| StoreError::UnsupportedUrl(redact(url)))?;
        if dialect == Dialect::Sqlite {
            dialect::create_sqlite_parent_dir(url)?;
        } else if options.sqlite_max_size_mb.is_some() {
            tracing::warn!(
                "sqlite_max_size_mb applies to the embedded SQLite database only; ignored"
            );
        }
        let prepare = options.clone();
        let pool = AnyPoolOptions::new()
            .max_connections(dialect.pool_size())
            .acquire_timeout(options.timeout)
            .after_connect(move |conn, _meta| {
                let prepare = prepare.clone();
                Box::pin(async move { dialect::prepare_connection(dialect, conn, &prepare).await })
            })
            .connect(url)
            .await?;
        let room_inserts = INSERT_CHUNKS.map(|n| {
            dialect.rewrite(&multi_insert(
                "messages (id, room_id, author_id, body, created_at, client_key)",
                6,
                n,
            ))
        });
        let direct_inserts = INSERT_CHUNKS.map(|n| {
            dialect.rewrite(&multi_insert(
                "direct_messages (id, sender_id, recipient_id, user_lo, user_hi, body, created_at, client_key)",
                8,
                n,
            ))
        });
        let ack_updates = INSERT_CHUNKS.map(|n| {
            dialect.rewrite(&format!(
                "UPDATE direct_messages SET delivered = 1 \
                 WHERE recipient_id = ? AND delivered = 0 AND id IN ({})",
                vec!["?"; n].join(", ")
            ))
        });
        Ok(Store {
            pool,
            dialect,
            timeout: options.timeout,
            room_inserts,
            direct_inserts,
            ack_updates,
        })
    }

    /// A connection of the pool, for one call (see `conn.rs`).
    async fn conn(&self) -> Result<Conn> {
        Ok(Conn::new(self.pool.acquire().await?, self.timeout))
    }

    async fn execute(&self, q: Q<'_>) -> Result<AnyQueryResult> {
        self.conn().await?.execute(q).await
    }

    async fn fetch_all(&self, q: Q<'_>) -> Result<Vec<AnyRow>> {
        self.conn().await?.fetch_all(q).await
    }

    async fn fetch_optional(&self, q: Q<'_>) -> Result<Option<AnyRow>> {
        self.conn().await?.fetch_optional(q).await
    }

    async fn fetch_one(&self, q: Q<'_>) -> Result<AnyRow> {
        self.fetch_optional(q)
            .await?
            .ok_or(StoreError::Sqlx(sqlx::Error::RowNotFound))
    }

    /// Begins a transaction. End it with [`Tx::finish`], which commits, or closes the
    /// connection if anything failed.
    async fn begin(&self) -> Result<Tx> {
        self.conn().await?.begin(self.dialect.begin()).await
    }

    /// A cheap query that reads the schema, answered within `within` (readiness probes).
    pub async fn ping(&self, within: Duration) -> Result<()> {
        let q = sqlx::query("SELECT 1 FROM users WHERE id = 0");
        match tokio::time::timeout(within, self.fetch_optional(q)).await {
            Ok(answer) => answer.map(|_| ()),
            Err(_) => Err(StoreError::Timeout(within)),
        }
    }

    /// Creates or upgrades the schema with this dialect's migrations.
    pub async fn migrate(&self) -> Result<()> {
        self.dialect.migrator().run(&self.pool).await?;
        Ok(())
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Closes every connection; called last at shutdown.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    fn sql(&self, sql: &'static str) -> std::borrow::Cow<'static, str> {
        self.dialect.placeholders(sql)
    }

    // ----- accounts -------------------------------------------------------------------

    pub async fn name_clash(&self, username: &str, alias: &str) -> Result<NameClash> {
        let (u, a) = (names::skeleton(username), names::skeleton(alias));
        let sql = self.sql(
            "SELECT s.skeleton, u.username, u.alias FROM name_skeletons s \
             JOIN users u ON u.id = s.owner \
             WHERE s.scope = 'user' AND s.skeleton IN (?, ?)",
        );
        let rows = self
            .fetch_all(sqlx::query(&sql).bind(u.as_str()).bind(a.as_str()))
            .await?;
        let mut clash = NameClash::default();
        for row in rows {
            let (theirs_u, theirs_a): (String, String) = (row.try_get(1)?, row.try_get(2)?);
            let (sk_u, sk_a) = (names::skeleton(&theirs_u), names::skeleton(&theirs_a));
            for (mine, slot) in [(&u, &mut clash.username), (&a, &mut clash.alias)] {
                // Which of their names it resembles: the username unless only the alias does.
                if slot.is_none() && *mine == sk_u {
                    *slot = Some(theirs_u.clone());
                } else if slot.is_none() && *mine == sk_a {
                    *slot = Some(theirs_a.clone());
                }
            }
        }
        Ok(clash)
    }

    /// Records the skeletons of names that have none yet (accounts and rooms stored before
    /// `name_skeletons` existed). A name that resembles one already recorded keeps working
    /// but is reported: its owner should be renamed.
    pub async fn backfill_name_skeletons(&self) -> Result<()> {
        let users = self
            .fetch_all(sqlx::query(
                "SELECT u.id, u.username, u.alias FROM users u WHERE NOT EXISTS \
                 (SELECT 1 FROM name_skeletons s WHERE s.scope = 'user' AND s.owner = u.id) \
                 ORDER BY u.id",
            ))
            .await?;
        for row in &users {
            let (id, username, alias): (i64, String, String) =
                (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
            for name in [&username, &alias] {
                self.record_skeleton("user", name, id).await?;
            }
        }
        let rooms = self
            .fetch_all(sqlx::query(
                "SELECT r.id, r.name FROM rooms r WHERE NOT EXISTS \
                 (SELECT 1 FROM name_skeletons s WHERE s.scope = 'room' AND s.owner = r.id) \
                 ORDER BY r.id",
            ))
            .await?;
        for row in &rooms {
            let (id, name): (i64, String) = (row.try_get(0)?, row.try_get(1)?);
            self.record_skeleton("room", &name, id).await?;
        }
        Ok(())
    }

    async fn record_skeleton(&self, scope: &str, name: &str, owner: i64) -> Result<()> {
        let sql = self.sql("INSERT INTO name_skeletons (scope, skeleton, owner) VALUES (?, ?, ?)");
        let done = self
            .execute(
                sqlx::query(&sql)
                    .bind(scope)
                    .bind(names::skeleton(name))
                    .bind(owner),
            )
            .await;
        match done {
            Ok(_) => Ok(()),
            Err(e) if e.is_unique_violation() => {
                tracing::warn!(scope, name, owner, "this name resembles another one");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

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
        let sql = self.sql(
            "SELECT id, username, alias, first_name, last_name, password_hash, is_admin, \
             status FROM users WHERE username_key = ? OR alias_key = ? LIMIT 2",
        );
        let rows = self
            .fetch_all(sqlx::query(&sql).bind(key).bind(key))
            .await?;
        let mut best = None;
        for row in rows {
            let user = user_row(&row)?;
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

    /// Whether an account may log in (not waiting for an administrator's approval).
    pub async fn is_approved(&self, user_id: i64) -> Result<bool> {
        let sql = self.sql("SELECT approved FROM users WHERE id = ?");
        let row = self.fetch_optional(sqlx::query(&sql).bind(user_id)).await?;
        Ok(match row {
            Some(row) => row.try_get::<i64, _>(0)? != 0,
            None => false,
        })
    }

    /// Accounts waiting for approval, oldest first.
    pub async fn account_requests(&self) -> Result<Vec<salon_proto::AccountRequest>> {
        let rows = self
            .fetch_all(sqlx::query(
                "SELECT username, alias, first_name, last_name, created_at FROM users \
                 WHERE approved = 0 ORDER BY created_at, id",
            ))
            .await?;
        rows.iter()
            .map(|r| {
                Ok(salon_proto::AccountRequest {
                    username: r.try_get(0)?,
                    alias: r.try_get(1)?,
                    first_name: r.try_get(2)?,
                    last_name: r.try_get(3)?,
                    requested_at: r.try_get(4)?,
                })
            })
            .collect()
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
    pub async fn invites(&self, now: i64) -> Result<Vec<salon_proto::InviteInfo>> {
        let sql = self.sql(
            "SELECT i.id, u.username, i.created_at, i.expires_at FROM invites i \
             JOIN users u ON u.id = i.created_by \
             WHERE i.used_by IS NULL AND i.expires_at > ? ORDER BY i.id DESC",
        );
        let rows = self.fetch_all(sqlx::query(&sql).bind(now)).await?;
        rows.iter()
            .map(|r| {
                Ok(salon_proto::InviteInfo {
                    id: r.try_get(0)?,
                    by: r.try_get(1)?,
                    created_at: r.try_get(2)?,
                    expires_at: r.try_get(3)?,
                })
            })
            .collect()
    }

    /// Withdraws an unused invitation; false if there was none.
    pub async fn revoke_invite(&self, id: i64) -> Result<bool> {
        let sql = self.sql("DELETE FROM invites WHERE id = ? AND used_by IS NULL");
        let done = self.execute(sqlx::query(&sql).bind(id)).await?;
        Ok(done.rows_affected() == 1)
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
        retrying(|| self.set_statuses_once(statuses)).await
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
        let rows = self
            .fetch_all(sqlx::query(
                "SELECT id, username, alias FROM users ORDER BY username_key",
            ))
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect()
    }

    /// Whether any administrator account exists (R5: the first one is made at start).
    pub async fn admin_exists(&self) -> Result<bool> {
        let row = self
            .fetch_one(sqlx::query("SELECT COUNT(*) FROM users WHERE is_admin = 1"))
            .await?;
        Ok(row.try_get::<i64, _>(0)? > 0)
    }

    // ----- sanctions and audit ----------------------------------------------------------

    pub async fn sanctions_of(&self, user_id: i64) -> Result<Vec<Sanction>> {
        let sql = self.sql("SELECT kind, ends_at, reason FROM sanctions WHERE user_id = ?");
        let rows = self.fetch_all(sqlx::query(&sql).bind(user_id)).await?;
        rows.iter()
            .map(|r| {
                Ok(Sanction {
                    kind: stored(r.try_get(0)?, "sanction")?,
                    ends_at: r.try_get(1)?,
                    reason: r.try_get(2)?,
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
    pub async fn current_sanctions(&self, now: i64) -> Result<Vec<salon_proto::SanctionInfo>> {
        let sql = self.sql(
            "SELECT u.username, s.kind, s.ends_at, s.reason, s.created_by, s.created_at \
             FROM sanctions s JOIN users u ON u.id = s.user_id \
             WHERE s.kind = 'ban' OR s.ends_at > ? ORDER BY s.created_at DESC",
        );
        let rows = self.fetch_all(sqlx::query(&sql).bind(now)).await?;
        rows.iter()
            .map(|r| {
                Ok(salon_proto::SanctionInfo {
                    user: r.try_get(0)?,
                    kind: stored(r.try_get(1)?, "sanction")?,
                    until: r.try_get(2)?,
                    reason: r.try_get(3)?,
                    by: r.try_get(4)?,
                    since: r.try_get(5)?,
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
        let sql = self.sql(
            "INSERT INTO audit_log (id, ts, actor, action, target, reason) \
             VALUES (?, ?, ?, ?, ?, ?)",
        );
        self.execute(
            sqlx::query(&sql)
                .bind(id)
                .bind(entry.ts)
                .bind(&entry.actor)
                .bind(entry.action.as_str())
                .bind(&entry.target)
                .bind(&entry.reason),
        )
        .await?;
        Ok(())
    }

    /// The latest audit entries, newest first.
    pub async fn audit_log(&self, limit: u32) -> Result<Vec<AuditEntry>> {
        let sql = self.sql(
            "SELECT ts, actor, action, target, reason FROM audit_log ORDER BY id DESC LIMIT ?",
        );
        let rows = self
            .fetch_all(sqlx::query(&sql).bind(i64::from(limit)))
            .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditEntry {
                    ts: r.try_get(0)?,
                    actor: r.try_get(1)?,
                    action: stored(r.try_get(2)?, "audit action")?,
                    target: r.try_get(3)?,
                    reason: r.try_get(4)?,
                })
            })
            .collect()
    }

    // ----- join requests --------------------------------------------------------------

    /// Pending join requests, oldest first.
    pub async fn pending_requests(&self) -> Result<Vec<JoinRequest>> {
        let rows = self
            .fetch_all(sqlx::query(
                "SELECT u.username, u.alias, r.name, j.requested_at FROM join_requests j \
             JOIN users u ON u.id = j.user_id JOIN rooms r ON r.id = j.room_id \
             WHERE j.state = 'pending' ORDER BY j.requested_at, u.username_key",
            ))
            .await?;
        rows.iter()
            .map(|r| {
                Ok(JoinRequest {
                    user: r.try_get(0)?,
                    alias: r.try_get(1)?,
                    room: r.try_get(2)?,
                    requested_at: r.try_get(3)?,
                })
            })
            .collect()
    }

    /// Decides a pending request (and makes the user a member if accepted), in one
    /// transaction. False if there was no pending request.
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
            }
            Ok::<_, StoreError>(true)
        }
        .await;
        tx.finish(body).await
    }

    /// Decisions on a user's requests they have not been told about, and marks them told.
    pub async fn take_untold_decisions(&self, user_id: i64) -> Result<Vec<UntoldDecision>> {
        let sql = self.sql(
            "SELECT room_id, state, reason FROM join_requests \
             WHERE user_id = ? AND state <> 'pending' AND notified = 0",
        );
        let rows = self.fetch_all(sqlx::query(&sql).bind(user_id)).await?;
        let decisions = rows
            .iter()
            .map(|r| {
                Ok(UntoldDecision {
                    room_id: r.try_get(0)?,
                    accepted: r.try_get::<String, _>(1)? == "accepted",
                    reason: r.try_get(2)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if !decisions.is_empty() {
            // Exactly the decisions read: one taken meanwhile is told next time.
            let sql = self.sql(
                "UPDATE join_requests SET notified = 1 \
                 WHERE room_id = ? AND user_id = ? AND state = ? AND notified = 0",
            );
            let mut tx = self.begin().await?;
            let body = async {
                for d in &decisions {
                    let state = if d.accepted { "accepted" } else { "rejected" };
                    tx.execute(sqlx::query(&sql).bind(d.room_id).bind(user_id).bind(state))
                        .await?;
                }
                Ok::<_, StoreError>(())
            }
            .await;
            tx.finish(body).await?;
        }
        Ok(decisions)
    }

    /// The largest private message id stored (0 if none).
    pub async fn max_direct_id(&self) -> Result<i64> {
        let row = self
            .fetch_one(sqlx::query("SELECT MAX(id) FROM direct_messages"))
            .await?;
        Ok(row.try_get::<Option<i64>, _>(0)?.unwrap_or(0))
    }

    // ----- session tokens -------------------------------------------------------------

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
        let sql = self.sql(
            "SELECT u.id, u.username, u.alias, u.first_name, u.last_name, u.password_hash, \
             u.is_admin, u.status, t.expires_at FROM session_tokens t \
             JOIN users u ON u.id = t.user_id WHERE t.token_hash = ? AND t.expires_at > ?",
        );
        let row = self
            .fetch_optional(sqlx::query(&sql).bind(hash).bind(now))
            .await?;
        row.map(|r| Ok((user_row(&r)?, r.try_get(8)?))).transpose()
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

    pub async fn purge_expired_session_tokens(&self, now: i64) -> Result<u64> {
        let sql = self.sql("DELETE FROM session_tokens WHERE expires_at <= ?");
        let done = self.execute(sqlx::query(&sql).bind(now)).await?;
        Ok(done.rows_affected())
    }

    // ----- rooms ----------------------------------------------------------------------

    /// Every room and private channel.
    pub async fn rooms(&self) -> Result<Vec<RoomRow>> {
        let rows = self
            .fetch_all(sqlx::query(
                "SELECT id, name, policy FROM rooms ORDER BY id",
            ))
            .await?;
        rows.iter().map(room_row).collect()
    }

    /// The rooms a user is a member of, and those they have a pending request for.
    pub async fn room_states(&self, user_id: i64) -> Result<(HashSet<i64>, HashSet<i64>)> {
        let sql = self.sql("SELECT room_id FROM memberships WHERE user_id = ?");
        let member = self
            .fetch_all(sqlx::query(&sql).bind(user_id))
            .await?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
        let sql =
            self.sql("SELECT room_id FROM join_requests WHERE user_id = ? AND state = 'pending'");
        let pending = self
            .fetch_all(sqlx::query(&sql).bind(user_id))
            .await?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
        Ok((member, pending))
    }

    pub async fn add_member(&self, room_id: i64, user_id: i64, now: i64) -> Result<()> {
        let sql =
            self.sql("INSERT INTO memberships (room_id, user_id, joined_at) VALUES (?, ?, ?)");
        let done = self
            .execute(sqlx::query(&sql).bind(room_id).bind(user_id).bind(now))
            .await;
        match done {
            Ok(_) => Ok(()),
            // Joining twice (two devices at once) is not an error.
            Err(e) if e.is_unique_violation() => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub async fn remove_member(&self, room_id: i64, user_id: i64) -> Result<()> {
        let sql = self.sql("DELETE FROM memberships WHERE room_id = ? AND user_id = ?");
        self.execute(sqlx::query(&sql).bind(room_id).bind(user_id))
            .await?;
        Ok(())
    }

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

    // ----- messages -------------------------------------------------------------------

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
                let mut q = sqlx::query(&self.room_inserts[i]);
                for m in &rest[..n] {
                    q = q
                        .bind(m.id)
                        .bind(m.room_id)
                        .bind(m.author_id)
                        .bind(&m.body)
                        .bind(m.created_at)
                        .bind(m.key.as_deref());
                }
                tx.execute(q).await?;
                rest = &rest[n..];
            }
            let mut rest = directs;
            while !rest.is_empty() {
                let (i, n) = chunk_for(rest.len());
                let mut q = sqlx::query(&self.direct_inserts[i]);
                for d in &rest[..n] {
                    q = q
                        .bind(d.id)
                        .bind(d.sender_id)
                        .bind(d.recipient_id)
                        .bind(d.sender_id.min(d.recipient_id))
                        .bind(d.sender_id.max(d.recipient_id))
                        .bind(&d.body)
                        .bind(d.created_at)
                        .bind(d.key.as_deref());
                }
                tx.execute(q).await?;
                rest = &rest[n..];
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
            "SELECT id, created_at, room_id, body FROM messages \
             WHERE author_id = ? AND client_key = ?",
        );
        let row = self
            .fetch_optional(sqlx::query(&sql).bind(author).bind(key))
            .await?;
        row.map(|r| keyed_row(&r)).transpose()
    }

    /// The private message a sender already stored under `key`, if any.
    pub async fn direct_by_key(&self, sender: i64, key: &str) -> Result<Option<KeyedMessage>> {
        let sql = self.sql(
            "SELECT id, created_at, recipient_id, body FROM direct_messages \
             WHERE sender_id = ? AND client_key = ?",
        );
        let row = self
            .fetch_optional(sqlx::query(&sql).bind(sender).bind(key))
            .await?;
        row.map(|r| keyed_row(&r)).transpose()
    }

    /// Up to `limit` messages of a room with id < `before`, newest first.
    pub async fn room_history(
        &self,
        room: &RoomRow,
        before: i64,
        limit: u32,
    ) -> Result<Vec<RoomMessage>> {
        let sql = self.sql(
            "SELECT m.id, u.username, u.alias, m.body, m.created_at \
             FROM messages m JOIN users u ON u.id = m.author_id \
             WHERE m.room_id = ? AND m.id < ? ORDER BY m.id DESC LIMIT ?",
        );
        let rows = self
            .fetch_all(
                sqlx::query(&sql)
                    .bind(room.id)
                    .bind(before)
                    .bind(i64::from(limit)),
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(RoomMessage {
                    id: r.try_get(0)?,
                    room: room.name.clone(),
                    author: r.try_get(1)?,
                    alias: r.try_get(2)?,
                    text: r.try_get(3)?,
                    ts: r.try_get(4)?,
                })
            })
            .collect()
    }

    /// Up to `limit` private messages between two users with id < `before`, newest first.
    pub async fn direct_history(
        &self,
        a: i64,
        b: i64,
        before: i64,
        limit: u32,
    ) -> Result<Vec<DirectMessage>> {
        let sql = self.sql(
            "SELECT d.id, s.username, s.alias, r.username, d.body, d.created_at \
             FROM direct_messages d \
             JOIN users s ON s.id = d.sender_id JOIN users r ON r.id = d.recipient_id \
             WHERE d.user_lo = ? AND d.user_hi = ? AND d.id < ? ORDER BY d.id DESC LIMIT ?",
        );
        let rows = self
            .fetch_all(
                sqlx::query(&sql)
                    .bind(a.min(b))
                    .bind(a.max(b))
                    .bind(before)
                    .bind(i64::from(limit)),
            )
            .await?;
        rows.iter().map(direct_row).collect()
    }

    /// A user's conversations, the latest first: the last message of each, and the
    /// other user's alias.
    pub async fn conversations(
        &self,
        user: i64,
        limit: u32,
    ) -> Result<Vec<(DirectMessage, String)>> {
        let sql = self.sql(
            "SELECT d.id, s.username, s.alias, r.username, d.body, d.created_at, \
             CASE WHEN d.sender_id = ? THEN r.alias ELSE s.alias END \
             FROM direct_messages d \
             JOIN users s ON s.id = d.sender_id JOIN users r ON r.id = d.recipient_id \
             WHERE d.id IN (SELECT MAX(id) FROM direct_messages \
                            WHERE user_lo = ? OR user_hi = ? GROUP BY user_lo, user_hi) \
             ORDER BY d.id DESC LIMIT ?",
        );
        let rows = self
            .fetch_all(
                sqlx::query(&sql)
                    .bind(user)
                    .bind(user)
                    .bind(user)
                    .bind(i64::from(limit)),
            )
            .await?;
        rows.iter()
            .map(|r| Ok((direct_row(r)?, r.try_get(6)?)))
            .collect()
    }

    /// Up to `limit` private messages to `recipient` not yet acknowledged, with
    /// `after < id <= up_to`, oldest first.
    pub async fn undelivered_directs(
        &self,
        recipient: i64,
        after: i64,
        up_to: i64,
        limit: u32,
    ) -> Result<Vec<DirectMessage>> {
        let sql = self.sql(
            "SELECT d.id, s.username, s.alias, r.username, d.body, d.created_at \
             FROM direct_messages d \
             JOIN users s ON s.id = d.sender_id JOIN users r ON r.id = d.recipient_id \
             WHERE d.recipient_id = ? AND d.delivered = 0 AND d.id > ? AND d.id <= ? \
             ORDER BY d.id LIMIT ?",
        );
        let rows = self
            .fetch_all(
                sqlx::query(&sql)
                    .bind(recipient)
                    .bind(after)
                    .bind(up_to)
                    .bind(i64::from(limit)),
            )
            .await?;
        rows.iter().map(direct_row).collect()
    }

    /// How many private messages to `recipient` with id <= `up_to` are not yet
    /// acknowledged.
    pub async fn count_undelivered(&self, recipient: i64, up_to: i64) -> Result<u32> {
        let sql = self.sql(
            "SELECT COUNT(*) FROM direct_messages \
             WHERE recipient_id = ? AND delivered = 0 AND id <= ?",
        );
        let row = self
            .fetch_one(sqlx::query(&sql).bind(recipient).bind(up_to))
            .await?;
        Ok(u32::try_from(row.try_get::<i64, _>(0)?).unwrap_or(u32::MAX))
    }

    /// Records that `recipient` received these private messages (ids of messages to
    /// someone else are ignored).
    pub async fn mark_delivered(&self, recipient: i64, ids: &[i64]) -> Result<()> {
        let mut rest = ids;
        while !rest.is_empty() {
            let (i, n) = chunk_for(rest.len());
            let mut q = sqlx::query(&self.ack_updates[i]).bind(recipient);
            for id in &rest[..n] {
                q = q.bind(*id);
            }
            self.execute(q).await?;
            rest = &rest[n..];
        }
        Ok(())
    }
}

/// Runs a transaction again (up to three more times, with a short pause) when the
/// database aborted it as a deadlock victim. InnoDB can pick a message batch (whose
/// foreign-key checks share-lock `users` rows) against a status update (which locks them
/// exclusively); the batch must not fail for that.
async fn retrying<T, F, Fut>(mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut tries = 0;
    loop {
        match attempt().await {
            Err(e) if e.is_retryable() && tries < 3 => {
                tries += 1;
                tracing::debug!(error = %e, tries, "transaction aborted by the database; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(5 * tries)).await;
            }
            other => return other,
        }
    }
}

/// Case-insensitive key of a name (usernames, aliases, room names).
pub fn fold(name: &str) -> String {
    names::normalize(name).to_lowercase()
}

fn redact(url: &str) -> String {
    // Never echo a password embedded in a URL.
    match url.split_once('@') {
        Some((head, tail)) => match head.rsplit_once(':') {
            Some((user, _)) if user.contains("//") => format!("{user}:***@{tail}"),
            _ => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

fn multi_insert(table_and_columns: &str, columns: usize, rows: usize) -> String {
    let row = format!("({})", vec!["?"; columns].join(", "));
    format!(
        "INSERT INTO {table_and_columns} VALUES {}",
        vec![row.as_str(); rows].join(", ")
    )
}

/// The largest chunk size that fits `remaining`: (index into INSERT_CHUNKS, size).
fn chunk_for(remaining: usize) -> (usize, usize) {
    INSERT_CHUNKS
        .iter()
        .enumerate()
        .find(|(_, n)| **n <= remaining)
        .map_or((INSERT_CHUNKS.len() - 1, 1), |(i, n)| (i, *n))
}

/// An enum read back from the name it was stored under (the wire name, see `salon-proto`).
/// A name this version does not know is an error, never silently some other value.
fn stored<T: std::str::FromStr>(name: String, what: &str) -> Result<T> {
    name.parse()
        .map_err(|_| StoreError::Corrupt(format!("{what} {name:?}")))
}

fn user_row(row: &AnyRow) -> Result<UserRow> {
    Ok(UserRow {
        id: row.try_get(0)?,
        username: row.try_get(1)?,
        alias: row.try_get(2)?,
        first_name: row.try_get(3)?,
        last_name: row.try_get(4)?,
        password_hash: row.try_get(5)?,
        is_admin: row.try_get::<i64, _>(6)? != 0,
        status: stored(row.try_get(7)?, "status")?,
    })
}

fn room_row(row: &AnyRow) -> Result<RoomRow> {
    Ok(RoomRow {
        id: row.try_get(0)?,
        name: row.try_get(1)?,
        policy: stored(row.try_get(2)?, "room policy")?,
    })
}

fn keyed_row(r: &AnyRow) -> Result<KeyedMessage> {
    Ok(KeyedMessage {
        id: r.try_get(0)?,
        created_at: r.try_get(1)?,
        target: r.try_get(2)?,
        body: r.try_get(3)?,
    })
}

fn direct_row(r: &AnyRow) -> Result<DirectMessage> {
    Ok(DirectMessage {
        id: r.try_get(0)?,
        from: r.try_get(1)?,
        from_alias: r.try_get(2)?,
        to: r.try_get(3)?,
        text: r.try_get(4)?,
        ts: r.try_get(5)?,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

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

    /// A plain account for tests below the protocol (also used by the writer's tests).
    pub(crate) fn user(id: i64, name: &str) -> NewUser {
        NewUser {
            id,
            username: name.into(),
            alias: name.into(),
            first_name: "T".into(),
            last_name: "U".into(),
            password_hash: "x".into(),
            is_admin: false,
            created_at: 0,
        }
    }

    #[tokio::test]
    async fn a_full_database_is_unavailable_and_a_broken_constraint_is_a_bug() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let options = StoreOptions {
            sqlite_max_size_mb: Some(1),
            ..StoreOptions::default()
        };
        let store = Store::connect_with(&url, &options).await.unwrap();
        store.migrate().await.unwrap();
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
        let stored = store.room_history(&room, i64::MAX, 2000).await.unwrap();
        assert_eq!(stored.len() as i64, n - 1);
    }

    #[test]
    fn urls_are_redacted_of_passwords() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("sqlite://x.db"), "sqlite://x.db");
    }
}
