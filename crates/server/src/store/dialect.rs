//! Everything that differs between SQLite, PostgreSQL and MySQL/MariaDB, in one place.

use std::borrow::Cow;

use sqlx::error::DatabaseError;
use sqlx::migrate::Migrator;
use sqlx::{AnyConnection, Executor, Row};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
    MySql,
}

impl Dialect {
    pub fn from_url(url: &str) -> Option<Dialect> {
        let scheme = url.split_once(':')?.0;
        Some(match scheme {
            "sqlite" => Dialect::Sqlite,
            "postgres" | "postgresql" => Dialect::Postgres,
            "mysql" | "mariadb" => Dialect::MySql,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Dialect::Sqlite => "sqlite",
            Dialect::Postgres => "postgres",
            Dialect::MySql => "mysql",
        }
    }

    /// This dialect's migrations (their SQL is in the binary once; the value borrows it).
    pub(super) fn migrator(self) -> Migrator {
        match self {
            Dialect::Sqlite => sqlx::migrate!("migrations/sqlite"),
            Dialect::Postgres => sqlx::migrate!("migrations/postgres"),
            Dialect::MySql => sqlx::migrate!("migrations/mysql"),
        }
    }

    /// SQLite has one writer at a time; a few connections serve concurrent readers.
    pub(super) fn pool_size(self) -> u32 {
        match self {
            Dialect::Sqlite => 4,
            Dialect::Postgres | Dialect::MySql => 16,
        }
    }

    /// Queries are written with `?`; PostgreSQL numbers its placeholders (`$1`, `$2`…).
    /// Our SQL never contains `?` inside a literal, so a plain rewrite is exact.
    pub(super) fn placeholders(self, sql: &'static str) -> Cow<'static, str> {
        match self {
            Dialect::Postgres => Cow::Owned(self.rewrite(sql)),
            _ => Cow::Borrowed(sql),
        }
    }

    /// Starts a transaction. SQLite takes the write lock at once (`IMMEDIATE`), so a
    /// transaction never has to upgrade a read lock, which can fail without waiting.
    pub(super) fn begin(self) -> &'static str {
        match self {
            Dialect::Sqlite => "BEGIN IMMEDIATE",
            Dialect::Postgres | Dialect::MySql => "BEGIN",
        }
    }

    /// Inserts or moves forward (never back) a `direct_reads` marker: binds user, peer,
    /// last read.
    pub(super) fn upsert_direct_read(self) -> &'static str {
        match self {
            Dialect::Sqlite | Dialect::Postgres => {
                "INSERT INTO direct_reads (user_id, peer_id, last_read) VALUES (?, ?, ?) \
                 ON CONFLICT (user_id, peer_id) DO UPDATE SET last_read = excluded.last_read \
                 WHERE direct_reads.last_read < excluded.last_read"
            }
            Dialect::MySql => {
                "INSERT INTO direct_reads (user_id, peer_id, last_read) VALUES (?, ?, ?) \
                 ON DUPLICATE KEY UPDATE last_read = GREATEST(last_read, VALUES(last_read))"
            }
        }
    }

    /// `SUM(column)` (0 over no rows) as a 64-bit integer: PostgreSQL and MySQL sum
    /// integers into decimals, which the Any driver does not read.
    pub(super) fn sum_as_integer(self, column: &str) -> String {
        match self {
            Dialect::Sqlite => format!("COALESCE(SUM({column}), 0)"),
            Dialect::Postgres => format!("CAST(COALESCE(SUM({column}), 0) AS BIGINT)"),
            Dialect::MySql => format!("CAST(COALESCE(SUM({column}), 0) AS SIGNED)"),
        }
    }

    pub(super) fn rewrite(self, sql: &str) -> String {
        if self != Dialect::Postgres {
            return sql.to_owned();
        }
        let mut out = String::with_capacity(sql.len() + 16);
        let mut n = 0;
        for c in sql.chars() {
            if c == '?' {
                n += 1;
                out.push('$');
                out.push_str(&n.to_string());
            } else {
                out.push(c);
            }
        }
        out
    }
}

/// Per-connection settings. SQLite: write-ahead log with a full sync at each commit, so a
/// committed message survives a crash or power loss; foreign keys enforced; writers wait
/// for each other (up to the database timeout) instead of failing; and, when configured,
/// a size cap (`max_page_count`: past it, writes fail with `SQLITE_FULL`).
pub(super) async fn prepare_connection(
    dialect: Dialect,
    conn: &mut AnyConnection,
    options: &super::StoreOptions,
) -> Result<(), sqlx::Error> {
    match dialect {
        Dialect::Sqlite => {
            conn.execute("PRAGMA journal_mode = WAL").await?;
            conn.execute("PRAGMA synchronous = FULL").await?;
            conn.execute("PRAGMA foreign_keys = ON").await?;
            let busy = options.timeout.as_millis().clamp(1, 600_000);
            conn.execute(format!("PRAGMA busy_timeout = {busy}").as_str())
                .await?;
            if let Some(mb) = options.sqlite_max_size_mb {
                let page_size: i64 = sqlx::query("PRAGMA page_size")
                    .fetch_one(&mut *conn)
                    .await?
                    .try_get("page_size")?;
                let pages = (mb.saturating_mul(1024 * 1024) / page_size.max(512) as u64).max(1);
                // SQLite never sets it below the database's current size.
                conn.execute(format!("PRAGMA max_page_count = {pages}").as_str())
                    .await?;
            }
        }
        Dialect::MySql => {
            conn.execute("SET NAMES utf8mb4").await?;
            conn.execute("SET time_zone = '+00:00'").await?;
        }
        Dialect::Postgres => {
            conn.execute("SET TIME ZONE 'UTC'").await?;
        }
    }
    Ok(())
}

/// SQLite creates the database file (`mode=rwc`) but not its directory. The directory is
/// created `0700` and the database file `0600` before SQLite opens it (SQLite gives its
/// `-wal` and `-shm` files the database file's mode), whatever the umask; an existing
/// database and its `-wal`/`-shm` are made `0600` too.
pub(super) fn create_sqlite_parent_dir(url: &str) -> Result<(), super::StoreError> {
    let io = |e| super::StoreError::Sqlx(sqlx::Error::Io(e));
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let path = path.split('?').next().unwrap_or(path);
    if path.is_empty() || path == ":memory:" {
        return Ok(());
    }
    let db = std::path::Path::new(path);
    if let Some(parent) = db.parent() {
        if !parent.as_os_str().is_empty() {
            crate::files::create_private_dir(parent).map_err(io)?;
        }
    }
    if !db.exists() {
        crate::files::write_private(db, b"").map_err(io)?;
    }
    for suffix in ["", "-wal", "-shm"] {
        let file = std::path::PathBuf::from(format!("{path}{suffix}"));
        if file.exists() {
            crate::files::restrict_file(&file).map_err(io)?;
        }
    }
    Ok(())
}

/// Whether a database's error means trouble with the database itself (unreachable,
/// overloaded, out of space, read-only, shutting down, …) rather than a bug in our query:
/// the client is then told `unavailable`, and may retry. Each backend's codes are listed
/// explicitly; anything else (constraint violations, SQL errors, bad data) is `internal`.
pub(super) fn is_transient(e: &dyn DatabaseError) -> bool {
    if let Some(e) = e.try_downcast_ref::<sqlx::sqlite::SqliteError>() {
        // The extended result code; its low byte is the primary code.
        let code = e.code().and_then(|c| c.parse::<i32>().ok()).unwrap_or(0) & 0xff;
        return matches!(
            code,
            3 // PERM
            | 5 // BUSY
            | 6 // LOCKED
            | 7 // NOMEM
            | 8 // READONLY
            | 9 // INTERRUPT
            | 10 // IOERR
            | 11 // CORRUPT
            | 13 // FULL
            | 14 // CANTOPEN
            | 15 // PROTOCOL (locking protocol)
            | 26 // NOTADB
        );
    }
    if let Some(e) = e.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
        let code = e.code();
        let class = code.get(..2).unwrap_or("");
        return matches!(
            class,
            "08" // connection exception
            | "28" // invalid authorization (credentials changed)
            | "3D" // invalid catalog name (the database is gone)
            | "40" // transaction rollback: serialization failure, deadlock
            | "53" // insufficient resources: disk full, out of memory, too many connections
            | "55" // object not in prerequisite state: lock not available
            | "57" // operator intervention: shutdown, statement timeout, cannot connect now
            | "58" // system error: I/O error
            | "XX" // internal error, data corrupted
        ) || code == "25006"; // read-only transaction (a standby)
    }
    if let Some(e) = e.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
        let class = e.code().and_then(|c| c.get(..2)).unwrap_or("");
        return matches!(class, "08" | "40")
            || matches!(
                e.number(),
                1021 // disk full
                | 1030 // error from the storage engine (e.g. errno 28, no space)
                | 1037 | 1038 | 1041 // out of memory, out of resources
                | 1040 | 1203 | 1226 // too many connections, user limits
                | 1044 | 1045 | 1049 // access denied, unknown database
                | 1053 | 1077 | 1078 | 1079 | 1080 // server shutdown
                | 1114 // table full
                | 1135 // cannot create a thread
                | 1152
                    ..=1161 // aborted connection, network read/write errors
                | 1180 | 1181 // error during COMMIT / ROLLBACK
                | 1205 | 1213 // lock wait timeout, deadlock
                | 1290 | 1792 | 1836 // read-only
                | 1317 // query interrupted
                | 1637 // too many active transactions
                | 1927 // connection killed (MariaDB)
                | 1969 // statement timeout (MariaDB)
                | 2002 | 2003 | 2006 | 2013 | 2055 // cannot connect, gone away, lost connection
                | 3024 // statement timeout (MySQL)
                | 4031 // disconnected by the server for inactivity (MySQL)
            );
    }
    false
}

/// Whether a database's error says the connection itself was lost or ended. After
/// COMMIT was sent, that leaves the commit's outcome unknown.
pub(super) fn is_connection_lost(e: &dyn DatabaseError) -> bool {
    if let Some(e) = e.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
        let code = e.code();
        return code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03");
    }
    if let Some(e) = e.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
        return e.code().is_some_and(|c| c.starts_with("08"))
            || matches!(e.number(), 1053 | 1927 | 2006 | 2013 | 2055 | 4031);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_placeholders_are_numbered() {
        assert_eq!(Dialect::Postgres.rewrite("SELECT ? , ?"), "SELECT $1 , $2");
        assert_eq!(Dialect::MySql.rewrite("SELECT ?"), "SELECT ?");
    }
}
