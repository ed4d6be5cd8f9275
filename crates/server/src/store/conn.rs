//! How the store uses its connections: every call is bounded by the database timeout, and
//! a connection goes back to the pool only in a known state. After any error, a timeout,
//! a cancelled call or a transaction that did not end cleanly, the connection is closed
//! and the pool opens a fresh one when needed.
//!
//! Why: a failed `COMMIT` can leave a connection's transaction state unknown. SQLite
//! rolls back by itself on some errors (`SQLITE_FULL`, `SQLITE_IOERR`) and not on others
//! (`SQLITE_BUSY`); sqlx's own transaction guard then fails its `ROLLBACK` and believes a
//! transaction is still open, so later "commits" on that pooled connection only release
//! savepoints of a transaction that is never committed. A statement cut by a timeout may
//! still be running. Closing the connection ends whatever it was doing (the database
//! rolls back what was not committed); a new connection starts clean. Transactions are
//! therefore plain `BEGIN` / `COMMIT` statements on a connection the store owns, not
//! sqlx's `Transaction`.

use std::future::Future;
use std::time::Duration;

use sqlx::any::{AnyArguments, AnyQueryResult, AnyRow};
use sqlx::pool::PoolConnection;
use sqlx::query::Query;
use sqlx::{Any, Executor};

use super::{Result, StoreError};

pub(super) type Q<'q> = Query<'q, Any, AnyArguments<'q>>;

/// A pooled connection held for one call or one transaction. It returns to the pool on
/// drop only when `clean`; otherwise it is closed.
pub(super) struct Conn {
    conn: Option<PoolConnection<Any>>,
    timeout: Duration,
    /// Set only when the last call succeeded outside a transaction, or the transaction
    /// committed. A call in flight (a cancelled future) leaves it unset.
    clean: bool,
    /// Between `BEGIN` and a successful `COMMIT`.
    in_tx: bool,
}

impl Conn {
    pub(super) fn new(conn: PoolConnection<Any>, timeout: Duration) -> Conn {
        Conn {
            conn: Some(conn),
            timeout,
            clean: true,
            in_tx: false,
        }
    }

    fn raw(&mut self) -> &mut PoolConnection<Any> {
        // Taken only by `discard`, which consumes the guard.
        self.conn
            .as_mut()
            .expect("a Conn is used only before it is discarded")
    }

    pub(super) async fn execute(&mut self, q: Q<'_>) -> Result<AnyQueryResult> {
        self.clean = false;
        let timeout = self.timeout;
        let done = timed(timeout, q.execute(&mut **self.raw())).await?;
        self.clean = !self.in_tx;
        Ok(done)
    }

    pub(super) async fn fetch_all(&mut self, q: Q<'_>) -> Result<Vec<AnyRow>> {
        self.clean = false;
        let timeout = self.timeout;
        let rows = timed(timeout, q.fetch_all(&mut **self.raw())).await?;
        self.clean = !self.in_tx;
        Ok(rows)
    }

    pub(super) async fn fetch_optional(&mut self, q: Q<'_>) -> Result<Option<AnyRow>> {
        self.clean = false;
        let timeout = self.timeout;
        let row = timed(timeout, q.fetch_optional(&mut **self.raw())).await?;
        self.clean = !self.in_tx;
        Ok(row)
    }

    async fn statement(&mut self, sql: &'static str) -> Result<()> {
        let timeout = self.timeout;
        timed(timeout, (&mut **self.raw()).execute(sql)).await?;
        Ok(())
    }

    /// Starts a transaction on this connection.
    pub(super) async fn begin(mut self, sql: &'static str) -> Result<Tx> {
        self.clean = false;
        self.in_tx = true;
        self.statement(sql).await?;
        Ok(Tx { conn: self })
    }

    /// Closes the connection now (bounded by the timeout), so that whatever it held (a
    /// transaction, SQLite's write lock) is released before the caller answers anyone.
    async fn discard(mut self) {
        self.clean = false;
        if let Some(conn) = self.conn.take() {
            let timeout = self.timeout;
            if let Ok(Err(e)) = tokio::time::timeout(timeout, conn.close()).await {
                tracing::debug!(error = %e, "closing a discarded database connection failed");
            }
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if !self.clean {
            if let Some(conn) = self.conn.as_mut() {
                conn.close_on_drop();
            }
        }
    }
}

/// An open transaction. End it with [`Tx::finish`]; dropped any other way (an early
/// return, a cancelled future), its connection is closed and the database rolls it back.
pub struct Tx {
    conn: Conn,
}

impl Tx {
    pub(super) async fn execute(&mut self, q: Q<'_>) -> Result<AnyQueryResult> {
        self.conn.execute(q).await
    }

    /// Every row, each read by column name into `T`.
    pub(super) async fn fetch_all_as<T>(&mut self, q: Q<'_>) -> Result<Vec<T>>
    where
        T: for<'r> sqlx::FromRow<'r, AnyRow>,
    {
        let rows = self.conn.fetch_all(q).await?;
        rows.iter().map(|r| Ok(T::from_row(r)?)).collect()
    }

    /// The row, if any, read by column name into `T`.
    pub(super) async fn fetch_optional_as<T>(&mut self, q: Q<'_>) -> Result<Option<T>>
    where
        T: for<'r> sqlx::FromRow<'r, AnyRow>,
    {
        let row = self.conn.fetch_optional(q).await?;
        Ok(row.map(|r| T::from_row(&r)).transpose()?)
    }

    /// Commits if `body` succeeded and returns its value. On any error (of the body, or of
    /// the commit) the connection is closed, never returned to the pool. A commit whose
    /// answer never came (a timeout, a lost connection) is [`StoreError::CommitUnknown`]:
    /// it may or may not have been applied.
    pub(super) async fn finish<T>(mut self, body: Result<T>) -> Result<T> {
        let value = match body {
            Ok(value) => value,
            Err(e) => {
                self.conn.discard().await;
                return Err(e);
            }
        };
        match self.conn.statement("COMMIT").await {
            Ok(()) => {
                self.conn.in_tx = false;
                self.conn.clean = true;
                Ok(value)
            }
            Err(e) => {
                self.conn.discard().await;
                Err(if e.leaves_commit_unknown() {
                    StoreError::CommitUnknown(Box::new(e))
                } else {
                    e
                })
            }
        }
    }
}

/// Runs one database call within `timeout`.
async fn timed<T>(
    timeout: Duration,
    call: impl Future<Output = Result<T, sqlx::Error>>,
) -> Result<T> {
    match tokio::time::timeout(timeout, call).await {
        Ok(done) => Ok(done?),
        Err(_) => Err(StoreError::Timeout(timeout)),
    }
}
