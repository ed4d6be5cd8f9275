//! Storage: the only module that talks to the database (R21).
//!
//! One [`Store`] serves SQLite, PostgreSQL and MySQL/MariaDB through sqlx's runtime-chosen
//! `Any` driver. Queries are written once, with `?` placeholders, in portable SQL; the only
//! dialect-specific pieces are contained in [`dialect`]: the migrations directory, the
//! placeholder syntax for PostgreSQL, and SQLite's connection pragmas. Every value is bound
//! as a parameter — no SQL is ever built from client input.
//!
//! This file holds the handle itself (connecting, migrating, the error type, the calls
//! every domain shares). Each domain's queries live beside the tables they own, as
//! `impl Store` blocks: [`accounts`] (`users`), [`skeletons`] (`name_skeletons`),
//! [`sessions`] (`session_tokens`), [`invites`], [`rooms`] (`rooms`, `memberships`, `join_requests`),
//! [`messages`] (`messages`, `direct_messages`), [`messaging`] (`reactions`, `mentions`,
//! `direct_reads`, read markers and notification levels), [`moderation`] (`sanctions`,
//! `audit_log`).
//!
//! Columns are BIGINT/TEXT only (times as UTC milliseconds, booleans as 0/1) because those
//! decode identically through the `Any` driver on all three backends. Rows are read by
//! column name into `#[derive(sqlx::FromRow)]` records of those plain types, then
//! converted to domain types; a stored value we do not know is [`StoreError::Corrupt`].

mod accounts;
mod conn;
mod dialect;
mod files;
mod invites;
mod messages;
mod messaging;
mod moderation;
mod rooms;
mod search;
mod sessions;
mod skeletons;

use crate::names;

use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyQueryResult, AnyRow};
use sqlx::{AnyPool, FromRow};

pub use accounts::{NewUser, UserRow};
pub use conn::Tx;
use conn::{Conn, Q};
pub use dialect::Dialect;
pub use files::{FileRow, PendingRemoval};
pub use messages::{quote_of, KeyedMessage, NewDirect, NewRoomMessage, Window};
pub use messaging::{ChangeReach, Located, LocatedIn, Reacted};
pub use moderation::{shutdown_reason, Sanction};
pub use rooms::RoomRow;
pub use search::{Found, SearchQuery, Source, SCOPED_ROOMS_MAX};

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
    /// A stored value this server does not know (a status, a policy, a sanction kind):
    /// written by hand or by another version. Never read as some default.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// A search ran past [`StoreOptions::search_time_max`] and the database stopped it.
    #[error("the search ran longer than {0:?} and was stopped")]
    SearchTooLong(Duration),
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
    /// The database was migrated by a newer version with a migration an older one
    /// cannot run on.
    #[error(
        "the database was migrated by a newer version of Salon (migration {version}, \
         \"{description}\"; this version knows migrations up to {known}) that this \
         version cannot run on: start the newer version, or restore the backup taken \
         before the upgrade"
    )]
    SchemaTooNew {
        version: i64,
        description: String,
        known: i64,
    },
}

/// How the name of a migration that older versions can run on begins, once sqlx has
/// made it a description (`0012_additive_x.sql` → "additive x").
const ADDITIVE: &str = "additive ";

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
            | StoreError::SchemaTooNew { .. }
            | StoreError::UnsupportedUrl(_)
            | StoreError::Corrupt(_)
            | StoreError::InvalidInvite
            | StoreError::SearchTooLong(_)
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

/// Whether `e` says a table does not exist (SQLite: "no such table"; PostgreSQL
/// `42P01`; MySQL and MariaDB `42S02`).
fn undefined_table(e: &sqlx::Error) -> bool {
    e.as_database_error().is_some_and(|d| {
        matches!(d.code().as_deref(), Some("42P01" | "42S02"))
            || d.message().starts_with("no such table")
    })
}

/// One value a query names `scalar` (`SELECT COUNT(*) AS scalar …`).
#[derive(sqlx::FromRow)]
struct Scalar<T> {
    scalar: T,
}

/// How the store talks to its database.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Longest any one database call may take (and the longest wait for a connection):
    /// past it the call fails `unavailable` and its connection is closed.
    pub timeout: Duration,
    /// SQLite only: the largest the database file may grow, in MiB (`PRAGMA
    /// max_page_count`); writes past it fail as on a full disk. `None`: unlimited.
    pub sqlite_max_size_mb: Option<u64>,
    /// Whether edits, deletions and reactions are also written to `message_changes`, for
    /// the cluster's catch-up (`live/catchup.rs`): the nodes of a cluster only.
    pub record_changes: bool,
    /// Longest a search statement may run: the database stops it (MariaDB/MySQL's
    /// statement time, PostgreSQL's `statement_timeout`, SQLite's progress handler) and
    /// the search is answered [`StoreError::SearchTooLong`].
    pub search_time_max: Duration,
    /// SQLite only: connections of the searches' own pool (`searches_at_once`), apart
    /// from the writer's.
    pub search_connections: u32,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            timeout: Duration::from_secs(5),
            sqlite_max_size_mb: None,
            record_changes: false,
            search_time_max: Duration::from_secs(2),
            search_connections: 2,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    dialect: Dialect,
    timeout: Duration,
    /// The message writer's statements, built once for this dialect.
    batch: messages::BatchStatements,
    /// See [`StoreOptions::record_changes`].
    record_changes: bool,
    /// What the database's full-text engine indexes (`search.rs`).
    fulltext: search::FullText,
    /// SQLite only: the searches' own connections, native (not through `Any`), so that a
    /// search can be stopped (a progress handler) and never holds one of the writer's.
    searches: Option<sqlx::SqlitePool>,
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
        let fulltext = search::FullText::of(dialect, &pool, options.search_time_max).await;
        let searches = match dialect {
            Dialect::Sqlite => Some(search::sqlite_pool(url, options)?),
            _ => None,
        };
        Ok(Store {
            pool,
            dialect,
            timeout: options.timeout,
            batch: messages::BatchStatements::new(dialect),
            record_changes: options.record_changes,
            fulltext,
            searches,
        })
    }

    /// A connection of the pool, for one call (see `conn.rs`).
    async fn conn(&self) -> Result<Conn> {
        Ok(Conn::new(self.pool.acquire().await?, self.timeout))
    }

    async fn execute(&self, q: Q<'_>) -> Result<AnyQueryResult> {
        self.conn().await?.execute(q).await
    }

    async fn fetch_optional(&self, q: Q<'_>) -> Result<Option<AnyRow>> {
        self.conn().await?.fetch_optional(q).await
    }

    /// Every row, each read by column name into `T`.
    async fn fetch_all_as<T>(&self, q: Q<'_>) -> Result<Vec<T>>
    where
        T: for<'r> FromRow<'r, AnyRow>,
    {
        let rows = self.conn().await?.fetch_all(q).await?;
        rows.iter().map(|r| Ok(T::from_row(r)?)).collect()
    }

    async fn fetch_optional_as<T>(&self, q: Q<'_>) -> Result<Option<T>>
    where
        T: for<'r> FromRow<'r, AnyRow>,
    {
        let row = self.fetch_optional(q).await?;
        Ok(row.map(|r| T::from_row(&r)).transpose()?)
    }

    /// The value of a query that always answers one row, its column named `scalar`.
    async fn fetch_scalar<T>(&self, q: Q<'_>) -> Result<T>
    where
        Scalar<T>: for<'r> FromRow<'r, AnyRow>,
    {
        let row = self
            .fetch_optional_as::<Scalar<T>>(q)
            .await?
            .ok_or(StoreError::Sqlx(sqlx::Error::RowNotFound))?;
        Ok(row.scalar)
    }

    /// Begins a transaction. End it with [`Tx::finish`], which commits, or closes the
    /// connection if anything failed.
    async fn begin(&self) -> Result<Tx> {
        self.conn().await?.begin(self.dialect.begin()).await
    }

    /// A transaction for several changes at once (the message writer's group commit of
    /// edits, deletions, reactions and read markers); end it with [`Store::commit`].
    pub async fn begin_changes(&self) -> Result<Tx> {
        self.begin().await
    }

    /// Commits a transaction from [`Store::begin_changes`].
    pub async fn commit(&self, tx: Tx) -> Result<()> {
        tx.finish(Ok(())).await
    }

    /// Ends a transaction from [`Store::begin_changes`] without committing anything.
    pub async fn abandon(&self, tx: Tx) {
        let _ = tx.finish::<()>(Err(StoreError::Conflict)).await;
    }

    /// A cheap query that reads the schema, answered within `within` (readiness probes).
    pub async fn ping(&self, within: Duration) -> Result<()> {
        let q = sqlx::query("SELECT 1 FROM users WHERE id = 0");
        match tokio::time::timeout(within, self.fetch_optional(q)).await {
            Ok(answer) => answer.map(|_| ()),
            Err(_) => Err(StoreError::Timeout(within)),
        }
    }

    /// Creates or upgrades the schema with this dialect's migrations, then indexes for
    /// search any message stored before the search index existed, or again before its
    /// word rule changed (`search::backfill_search`).
    ///
    /// A database already migrated by a newer version (a cluster half-way through a
    /// rolling upgrade) is served if every migration this version does not know is
    /// additive (its name says so: `NNNN_additive_….sql`, see DEVELOPERS.md), and refused
    /// otherwise, naming the migration.
    pub async fn migrate(&self) -> Result<()> {
        let mut migrator = self.dialect.migrator();
        let known = migrator.iter().map(|m| m.version).max().unwrap_or(0);
        let newer = self.newer_migrations(known).await?;
        if !newer.is_empty() {
            if let Some((version, description)) = newer
                .iter()
                .find(|(_, description)| !description.starts_with(ADDITIVE))
            {
                return Err(StoreError::SchemaTooNew {
                    version: *version,
                    description: description.clone(),
                    known,
                });
            }
            let versions: Vec<i64> = newer.iter().map(|(v, _)| *v).collect();
            tracing::warn!(
                ?versions,
                known,
                "the database has additive migrations of a newer version: running on it \
                 (upgrade this node to the version that made them)"
            );
            migrator.set_ignore_missing(true);
        }
        migrator.run(&self.pool).await?;
        let indexed = self.backfill_search().await?;
        if indexed > 0 {
            tracing::info!(
                indexed,
                "messages stored before search existed, or before its word rule changed, \
                 are now indexed"
            );
        }
        Ok(())
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The migrations applied to the database after `known`, the last this version
    /// has: (version, description). None on a database sqlx has not migrated yet (its
    /// table missing); any other failure to read them is returned.
    async fn newer_migrations(&self, known: i64) -> Result<Vec<(i64, String)>> {
        // sqlx creates the column as TEXT, which MySQL hands over as bytes.
        let sql = self.sql(match self.dialect {
            Dialect::MySql => {
                "SELECT version, CAST(description AS CHAR(255)) FROM _sqlx_migrations \
                 WHERE version > ? ORDER BY version"
            }
            Dialect::Sqlite | Dialect::Postgres => {
                "SELECT version, description FROM _sqlx_migrations WHERE version > ? \
                 ORDER BY version"
            }
        });
        match self
            .fetch_all_as::<(i64, String)>(sqlx::query(&sql).bind(known))
            .await
        {
            Ok(newer) => Ok(newer),
            // A new database: nothing migrated yet.
            Err(StoreError::Sqlx(e)) if undefined_table(&e) => {
                tracing::debug!(error = %e, "no record of applied migrations yet");
                Ok(Vec::new())
            }
            // Anything else (the database away, a timeout) is not "nothing newer": the
            // check that keeps an older node off a newer schema must not be skipped.
            Err(e) => Err(e),
        }
    }

    /// Closes every connection; called last at shutdown.
    pub async fn close(&self) {
        if let Some(searches) = &self.searches {
            searches.close().await;
        }
        self.pool.close().await;
    }

    fn sql(&self, sql: &'static str) -> std::borrow::Cow<'static, str> {
        self.dialect.placeholders(sql)
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

/// A 0/1 column as a boolean (the portable encoding; see the module comment).
fn flag(value: i64) -> bool {
    value != 0
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

/// An enum read back from the name it was stored under (its wire name, see
/// `salon-proto`). A name this version does not know is an error, never silently some
/// other value.
pub(crate) fn stored<T: std::str::FromStr>(name: String, what: &str) -> Result<T> {
    name.parse()
        .map_err(|_| StoreError::Corrupt(format!("{what} {name:?}")))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

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

    /// A migrated store on a fresh SQLite file, and its URL (for a second, raw
    /// connection); the directory lives as long as the returned guard.
    pub(crate) async fn sqlite_store(options: &StoreOptions) -> (Store, String, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let store = Store::connect_with(&url, options).await.unwrap();
        store.migrate().await.unwrap();
        (store, url, dir)
    }

    /// A connection of its own to the same database, for writing what the store never
    /// would, or at moments the store does not choose.
    pub(crate) async fn raw_connection(url: &str) -> sqlx::AnyConnection {
        use sqlx::{Connection, Executor};
        let mut db = sqlx::AnyConnection::connect(url).await.unwrap();
        db.execute("PRAGMA busy_timeout = 10000").await.unwrap();
        db
    }

    #[test]
    fn urls_are_redacted_of_passwords() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("sqlite://x.db"), "sqlite://x.db");
    }
}
