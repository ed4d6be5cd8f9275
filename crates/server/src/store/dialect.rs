//! Everything that differs between SQLite, PostgreSQL and MySQL/MariaDB, in one place.

use std::borrow::Cow;

use sqlx::migrate::Migrator;
use sqlx::{AnyConnection, Executor};

static SQLITE: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES: Migrator = sqlx::migrate!("migrations/postgres");
static MYSQL: Migrator = sqlx::migrate!("migrations/mysql");

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

    pub(super) fn migrator(self) -> &'static Migrator {
        match self {
            Dialect::Sqlite => &SQLITE,
            Dialect::Postgres => &POSTGRES,
            Dialect::MySql => &MYSQL,
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
/// for each other instead of failing.
pub(super) async fn prepare_connection(
    dialect: Dialect,
    conn: &mut AnyConnection,
) -> Result<(), sqlx::Error> {
    match dialect {
        Dialect::Sqlite => {
            conn.execute("PRAGMA journal_mode = WAL").await?;
            conn.execute("PRAGMA synchronous = FULL").await?;
            conn.execute("PRAGMA foreign_keys = ON").await?;
            conn.execute("PRAGMA busy_timeout = 10000").await?;
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

/// SQLite creates the database file (`mode=rwc`) but not its directory.
pub(super) fn create_sqlite_parent_dir(url: &str) -> Result<(), super::StoreError> {
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let path = path.split('?').next().unwrap_or(path);
    if path.is_empty() || path == ":memory:" {
        return Ok(());
    }
    if let Some(parent) = std::path::Path::new(path).parent() {
        if !parent.as_os_str().is_empty() {
            std::fs::create_dir_all(parent)
                .map_err(|e| super::StoreError::Sqlx(sqlx::Error::Io(e)))?;
        }
    }
    Ok(())
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
