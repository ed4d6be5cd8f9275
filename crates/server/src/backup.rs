//! `salon backup FILE`: a consistent copy of the embedded SQLite database, taken while
//! the server runs and accepts messages.
//!
//! It opens a connection of its own to the same database file (never creating it) and
//! runs `VACUUM INTO`: one read transaction, so the copy is the database as of one
//! commit; in WAL mode it neither blocks the server's writes nor waits for them. The
//! target is created first, empty, with `O_EXCL` and mode `0600` (it holds password
//! hashes and private messages), so an existing file is never overwritten and the copy
//! is never readable by others, even for a moment. Then the attached files the copy
//! names (stored by content hash under `files_dir`, written once and never changed) are
//! copied into `FILE.files/`, laid out the same way: the backup is the database and its
//! files as of one commit. PostgreSQL and MariaDB have their own tools (`pg_dump`,
//! `mariadb-dump`/`mariabackup`); see docs/OPERATIONS.md.

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
    #[error("copying the attached files into {0} failed: {1}")]
    Files(PathBuf, std::io::Error),
}

/// What a backup wrote.
#[derive(Debug)]
pub struct Written {
    /// The database copy's size in bytes.
    pub bytes: u64,
    /// Where the attached files went (`FILE.files`), if the copy names any.
    pub files_dir: Option<PathBuf>,
    /// Files copied, and their bytes.
    pub files: usize,
    pub file_bytes: u64,
    /// Files the copy names that were gone by the time they were copied: removed because
    /// their messages were deleted after the copy was taken.
    pub gone: usize,
}

/// Copies the configured SQLite database into `target` (a new file, `0600`), then the
/// attached files it names into `target` + `.files` (a new directory, `0700`). On
/// failure nothing partial is left.
pub async fn backup(config: &Config, target: &Path) -> Result<Written, BackupError> {
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
    let bytes = std::fs::metadata(target)
        .map_err(|e| BackupError::Create(target.into(), e))?
        .len();
    match copy_files(config, target).await {
        Ok((files_dir, files, file_bytes, gone)) => Ok(Written {
            bytes,
            files_dir,
            files,
            file_bytes,
            gone,
        }),
        Err(e) => {
            let _ = std::fs::remove_file(target);
            Err(e)
        }
    }
}

/// The directory next to `target` that holds its files.
pub fn files_dir_of(target: &Path) -> PathBuf {
    let mut name = target.as_os_str().to_owned();
    name.push(".files");
    PathBuf::from(name)
}

/// Copies every blob the database copy at `target` names (files and their previews) from
/// the configured files directory into [`files_dir_of`]`(target)`, created only if there
/// is one: that directory (if any), the files copied, their bytes, and those gone.
async fn copy_files(
    config: &Config,
    target: &Path,
) -> Result<(Option<PathBuf>, usize, u64, usize), BackupError> {
    let mut conn = SqliteConnectOptions::new()
        .filename(target)
        .read_only(true)
        .connect()
        .await?;
    let names: Result<Vec<String>, sqlx::Error> = sqlx::query_scalar(
        "SELECT sha256 FROM files UNION SELECT preview_sha256 FROM files \
         WHERE preview_sha256 IS NOT NULL",
    )
    .fetch_all(&mut conn)
    .await;
    let _ = conn.close().await;
    let names = names?;
    if names.is_empty() {
        return Ok((None, 0, 0, 0));
    }
    let into = files_dir_of(target);
    let blobs = crate::blobs::Blobs::at(config.files_dir());
    let work = into.clone();
    let (files, bytes, gone) =
        tokio::task::spawn_blocking(move || copy_blobs(&blobs, &names, &work))
            .await
            .map_err(|e| BackupError::Files(into.clone(), std::io::Error::other(e)))??;
    Ok((Some(into), files, bytes, gone))
}

/// [`copy_files`]' copying, into `into` (a new directory); on failure it is removed.
fn copy_blobs(
    blobs: &crate::blobs::Blobs,
    names: &[String],
    into: &Path,
) -> Result<(usize, u64, usize), BackupError> {
    if into.exists() {
        return Err(BackupError::Exists(into.into()));
    }
    crate::files::create_private_dir(into).map_err(|e| BackupError::Create(into.into(), e))?;
    let (mut files, mut bytes, mut gone) = (0, 0, 0);
    for sha in names {
        match blobs.copy_to(sha, into) {
            Ok(Some(n)) => {
                files += 1;
                bytes += n;
            }
            Ok(None) => gone += 1,
            Err(e) => {
                let _ = std::fs::remove_dir_all(into);
                return Err(BackupError::Files(into.into(), e));
            }
        }
    }
    Ok((files, bytes, gone))
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
