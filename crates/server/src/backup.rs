//! `salon backup FILE`: a consistent copy of the embedded SQLite database, taken while
//! the server runs and accepts messages.
//!
//! It opens a connection of its own to the same database file (never creating it) and
//! runs `VACUUM INTO`: one read transaction, so the copy is the database as of one
//! commit; in WAL mode it neither blocks the server's writes nor waits for them. The
//! target is created first, empty, with `O_EXCL` and mode `0600` (it holds password
//! hashes and private messages), so an existing file is never overwritten and the copy
//! is never readable by others, even for a moment. PostgreSQL and MariaDB have their own
//! tools (`pg_dump`, `mariadb-dump`/`mariabackup`); see docs/OPERATIONS.md.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection};

use crate::store::Dialect;
use crate::Config;

/// Why a backup was not made.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(
        "`salon backup` copies the embedded SQLite database only; this server uses {0}: \
         use its own tools (PostgreSQL: pg_dump; MariaDB/MySQL: mariadb-dump or \
         mariabackup), see docs/OPERATIONS.md"
    )]
    NotSqlite(&'static str),
    #[error("unsupported database URL: use sqlite://, postgres:// or mysql://")]
    UnsupportedUrl,
    #[error("no database at {0} (check --data-dir / --database-url)")]
    NoDatabase(PathBuf),
    #[error("{0} already exists; a backup never overwrites a file")]
    Exists(PathBuf),
    #[error("cannot create {0}: {1}")]
    Create(PathBuf, std::io::Error),
    #[error("the copy failed: {0}")]
    Database(#[from] sqlx::Error),
}

/// Copies the configured SQLite database into `target` (a new file, `0600`); returns its
/// size in bytes. On failure the partial target is removed.
pub async fn backup(config: &Config, target: &Path) -> Result<u64, BackupError> {
    let url = config.effective_database_url();
    match Dialect::from_url(&url) {
        Some(Dialect::Sqlite) => {}
        Some(other) => return Err(BackupError::NotSqlite(other.name())),
        None => return Err(BackupError::UnsupportedUrl),
    }
    let options = SqliteConnectOptions::from_str(&url)?
        .create_if_missing(false)
        .busy_timeout(Duration::from_millis(config.limits.database_timeout_ms));
    let source = options.get_filename().to_owned();
    if !source.is_file() {
        return Err(BackupError::NoDatabase(source));
    }
    create_empty_private(target)?;
    let result = async {
        let mut conn = options.connect().await?;
        let copied = sqlx::query("VACUUM INTO ?")
            .bind(target.to_string_lossy().into_owned())
            .execute(&mut conn)
            .await;
        let _ = conn.close().await;
        copied.map(|_| ())
    }
    .await;
    if let Err(e) = result {
        let _ = std::fs::remove_file(target);
        return Err(e.into());
    }
    // VACUUM INTO writes the file in place; make sure of its mode whatever SQLite did.
    crate::files::restrict_file(target).map_err(|e| BackupError::Create(target.into(), e))?;
    let size = std::fs::metadata(target)
        .map_err(|e| BackupError::Create(target.into(), e))?
        .len();
    Ok(size)
}

/// Creates `path` empty and owner-only, refusing an existing file (`O_EXCL`).
fn create_empty_private(path: &Path) -> Result<(), BackupError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => crate::files::restrict_file(path).map_err(|e| BackupError::Create(path.into(), e)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            Err(BackupError::Exists(path.into()))
        }
        Err(e) => Err(BackupError::Create(path.into(), e)),
    }
}
