//! Full-text search (issue 14): the `messages_search` and `direct_search` indexes, kept
//! in the writer's transactions (a message is indexed when it is stored, an edit
//! re-indexes it, a deletion takes it out), the searches themselves, and the indexing of
//! messages stored before the index existed (`search_backfill`).
//!
//! Each index holds a message's folded words (`search_text::index_words`) under its id;
//! the engine differs by database (`Dialect`): SQLite FTS5 (a contentless table whose
//! rowid is the message id), PostgreSQL a `tsvector` (`simple` configuration) under a GIN
//! index, MariaDB/MySQL an InnoDB `FULLTEXT` index. Searches always join the message
//! itself, so what is found is checked against what is stored: readable by the user
//! (a membership of its room, or a side of its conversation) and not deleted.

use salon_proto::SearchOrder;

use std::time::Duration;

use super::{Dialect, Result, Store, StoreError, Tx};
use crate::search_text::{index_words, is_prefix};

/// How many of the newest matches a search by relevance ranks: ranking every match of a
/// frequent word would read the whole of its index entries (a million messages: half a
/// second on SQLite); the newest few thousand take milliseconds, and are what a chat
/// search is after.
pub const RELEVANCE_CANDIDATES: i64 = 2_000;

/// Messages indexed per transaction when the server indexes what was stored before the
/// index existed.
const BACKFILL_BATCH: i64 = 2_000;

/// Which messages: room messages or private messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Room,
    Direct,
}

impl Source {
    fn index(self) -> &'static str {
        match self {
            Source::Room => "messages_search",
            Source::Direct => "direct_search",
        }
    }

    fn table(self) -> &'static str {
        match self {
            Source::Room => "messages",
            Source::Direct => "direct_messages",
        }
    }

    fn backfill_key(self, pass: Pass) -> &'static str {
        match (self, pass) {
            (Source::Room, Pass::Backfill) => "room",
            (Source::Direct, Pass::Backfill) => "direct",
            (Source::Room, Pass::Marks) => "room_marks",
            (Source::Direct, Pass::Marks) => "direct_marks",
        }
    }
}

/// What a row of `search_backfill` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// Index messages stored before the index existed (migration 0006).
    Backfill,
    /// Index again the messages indexed before a combining mark belonged to the word it
    /// follows (migration 0012): only those with such a mark changed.
    Marks,
}

/// Who may read a message, as its index row's `scope` says it (SQLite and PostgreSQL;
/// MariaDB/MySQL only join the membership).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scope {
    /// The members of this room.
    Room(i64),
    /// The sender and the recipient.
    Direct(i64, i64),
}

impl Scope {
    fn words(self) -> String {
        match self {
            Scope::Room(room) => room_token(room),
            Scope::Direct(a, b) => format!("{} {}", user_token(a), user_token(b)),
        }
    }
}

fn room_token(room: i64) -> String {
    format!("r{room}")
}

fn user_token(user: i64) -> String {
    format!("u{user}")
}

/// Whether the dialect's index has a `scope`.
fn has_scope(dialect: Dialect) -> bool {
    dialect != Dialect::MySql
}

/// A search asks the index for the rooms' scope only when they are this few: for
/// someone in many rooms the membership join is as selective, and the engine's OR of
/// many lists costs more.
pub const SCOPED_ROOMS_MAX: usize = 32;

/// A message to index: its id, text and scope.
pub(super) struct IndexRow<'a> {
    pub id: i64,
    pub text: &'a str,
    pub scope: Scope,
}

/// The index's insert statement for `rows` rows of (id, words[, scope]), in this dialect.
pub(super) fn insert_statement(dialect: Dialect, source: Source, rows: usize) -> String {
    let (columns, row) = match dialect {
        Dialect::Sqlite => ("rowid, words, scope", "(?, ?, ?)"),
        Dialect::Postgres => (
            "id, words, scope",
            "(?, to_tsvector('simple', ?), to_tsvector('simple', ?))",
        ),
        Dialect::MySql => ("id, words", "(?, ?)"),
    };
    dialect.rewrite(&format!(
        "INSERT INTO {} ({columns}) VALUES {}",
        source.index(),
        vec![row; rows].join(", ")
    ))
}

/// What a search looks for, for one user.
#[derive(Debug, Clone)]
pub struct SearchQuery {
    /// Who searches: only what they can read is found.
    pub me: i64,
    /// The folded terms, each matched as a word prefix; all must match (not empty).
    pub terms: Vec<String>,
    /// Only this room (room messages).
    pub room: Option<i64>,
    /// Only the conversation with this user (private messages).
    pub peer: Option<i64>,
    /// The rooms the user is a member of, when they are few enough for the index to be
    /// asked for them ([`SCOPED_ROOMS_MAX`]); `None`: the membership join alone.
    pub rooms: Option<Vec<i64>>,
    pub author: Option<i64>,
    /// Sent at or after / before (ms).
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub order: SearchOrder,
    /// Newest first: only ids below this.
    pub before_id: Option<i64>,
    /// How many rows, from the first (relevance: the page's end).
    pub limit: u32,
}

/// A message a search found, before its snippet is made.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Found {
    pub id: i64,
    /// The room's name (room messages).
    #[sqlx(default)]
    pub room: Option<String>,
    pub author: String,
    pub alias: String,
    /// The recipient's username (private messages).
    #[sqlx(default)]
    pub recipient: Option<String>,
    pub body: String,
    pub created_at: i64,
    pub edited_at: Option<i64>,
    /// Higher is more relevant (relevance order only).
    #[sqlx(default)]
    pub score: f64,
}

/// A value bound to a search statement, in the order its `?`s appear.
enum Bind {
    Int(i64),
    Text(String),
}

/// The engine's query text for `terms`: each a word prefix, all required. The terms are
/// letters and digits only (folded), so nothing in them is syntax.
/// A one-character term is a whole word (`search_text::is_prefix`).
/// On SQLite, the scope tokens are part of the same query (`scope` column), ORed.
fn match_text(dialect: Dialect, terms: &[String], scope: &[String]) -> String {
    let star = |t: &String, mark: &'static str| if is_prefix(t) { mark } else { "" };
    match dialect {
        Dialect::Sqlite => {
            let words = terms
                .iter()
                .map(|t| format!("\"{t}\"{}", star(t, "*")))
                .collect::<Vec<_>>()
                .join(" ");
            if scope.is_empty() {
                format!("words : ({words})")
            } else {
                format!("words : ({words}) AND scope : ({})", scope.join(" OR "))
            }
        }
        Dialect::Postgres => terms
            .iter()
            .map(|t| format!("{t}{}", star(t, ":*")))
            .collect::<Vec<_>>()
            .join(" & "),
        // Words InnoDB does not index (shorter than its minimum token size) are left out
        // of the search before (`Store::shortest_indexed_word`).
        Dialect::MySql => terms
            .iter()
            .map(|t| format!("+{t}{}", star(t, "*")))
            .collect::<Vec<_>>()
            .join(" "),
    }
}

/// What a database's full-text engine indexes, read once at connection.
#[derive(Debug, Clone, Copy)]
pub(super) struct FullText {
    /// Words shorter than this are not in the index (InnoDB's
    /// `innodb_ft_min_token_size`); 1 where every word is.
    min_word: usize,
    /// MariaDB (`SET STATEMENT max_statement_time`) rather than MySQL (an optimizer hint).
    mariadb: bool,
    /// The longest a search statement may run on MariaDB/MySQL, which stop it themselves
    /// (`max_statement_time`, `MAX_EXECUTION_TIME`; `search_time_max_ms`): InnoDB's
    /// FULLTEXT index expands a prefix to every word it starts, across every message,
    /// before the scope is applied. A search still running at this bound is answered
    /// [`StoreError::SearchTooLong`] instead of holding a connection and a core.
    time_max: Duration,
}

impl FullText {
    pub(super) async fn of(dialect: Dialect, pool: &sqlx::AnyPool, time_max: Duration) -> FullText {
        let mut fulltext = FullText {
            min_word: 1,
            mariadb: false,
            time_max,
        };
        if dialect == Dialect::MySql {
            // InnoDB's default when the variable cannot be read.
            fulltext.min_word = 3;
            match sqlx::query_as::<_, (i64, String)>(
                "SELECT CAST(@@innodb_ft_min_token_size AS SIGNED), VERSION()",
            )
            .fetch_one(pool)
            .await
            {
                Ok((min, version)) => {
                    fulltext.min_word = usize::try_from(min.clamp(1, 84)).unwrap_or(3);
                    fulltext.mariadb = version.contains("MariaDB");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not read innodb_ft_min_token_size; taken as 3")
                }
            }
        }
        fulltext
    }
}

/// The database stopped a search statement at `search_time_max`: MariaDB's
/// `max_statement_time` (error 1969; 188, "interrupted", when InnoDB's full-text search
/// was the part running), MySQL's `MAX_EXECUTION_TIME` (3024), PostgreSQL's
/// `statement_timeout` (57014, `query_canceled`) or SQLite's progress handler
/// (`SQLITE_INTERRUPT`, 9).
fn statement_time_exceeded(e: &dyn sqlx::error::DatabaseError) -> bool {
    if let Some(e) = e.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
        return matches!(e.number(), 188 | 1969 | 3024);
    }
    if e.try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
        .is_some()
    {
        return e.code().as_deref() == Some("57014");
    }
    if e.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
        return e.code().as_deref() == Some("9");
    }
    false
}

/// Virtual-machine steps between two looks at a SQLite search's time: a few hundred
/// microseconds of work.
const PROGRESS_STEPS: i32 = 10_000;

/// The searches' own pool on SQLite: `search_connections` connections that cannot write
/// (`query_only`), opened when first needed.
pub(super) fn sqlite_pool(url: &str, options: &super::StoreOptions) -> Result<sqlx::SqlitePool> {
    use std::str::FromStr;
    let connect = sqlx::sqlite::SqliteConnectOptions::from_str(url)?
        .pragma("query_only", "ON")
        .busy_timeout(options.timeout);
    Ok(sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(options.search_connections.max(1))
        .acquire_timeout(options.timeout)
        .connect_lazy_with(connect))
}

/// A search statement with its binds, through `Any`.
fn any_query(sql: &str, binds: Vec<Bind>) -> super::Q<'_> {
    let mut query = sqlx::query(sql);
    for bind in binds {
        query = match bind {
            Bind::Int(v) => query.bind(v),
            Bind::Text(v) => query.bind(v),
        };
    }
    query
}

impl Store {
    /// Words shorter than this (in characters) are not in the full-text index: InnoDB's
    /// `innodb_ft_min_token_size` on MariaDB/MySQL, 1 on SQLite and PostgreSQL.
    pub fn shortest_indexed_word(&self) -> usize {
        self.fulltext.min_word
    }

    /// Indexes stored messages, in the writer's transaction.
    pub(super) async fn index_messages(
        &self,
        tx: &mut Tx,
        source: Source,
        rows: &[IndexRow<'_>],
    ) -> Result<()> {
        let statements = match source {
            Source::Room => &self.batch.room_index,
            Source::Direct => &self.batch.direct_index,
        };
        let scoped = has_scope(self.dialect);
        let words: Vec<(i64, String, String)> = rows
            .iter()
            .map(|r| {
                let scope = if scoped {
                    r.scope.words()
                } else {
                    String::new()
                };
                (r.id, index_words(r.text), scope)
            })
            .collect();
        let mut rest = &words[..];
        while !rest.is_empty() {
            let (i, n) = super::messages::chunk_for(rest.len());
            let mut q = sqlx::query(&statements[i]);
            for (id, words, scope) in &rest[..n] {
                q = q.bind(*id).bind(words.as_str());
                if scoped {
                    q = q.bind(scope.as_str());
                }
            }
            tx.execute(q).await?;
            rest = &rest[n..];
        }
        Ok(())
    }

    /// Takes a message out of its index (a deletion, or before re-indexing an edit).
    pub(super) async fn unindex_message(&self, tx: &mut Tx, source: Source, id: i64) -> Result<()> {
        let key = match self.dialect {
            Dialect::Sqlite => "rowid",
            Dialect::Postgres | Dialect::MySql => "id",
        };
        let sql = self
            .dialect
            .rewrite(&format!("DELETE FROM {} WHERE {key} = ?", source.index()));
        tx.execute(sqlx::query(&sql).bind(id)).await?;
        Ok(())
    }

    /// Indexes an edited message's new text (in the edit's transaction).
    pub(super) async fn reindex_message(
        &self,
        tx: &mut Tx,
        source: Source,
        id: i64,
        text: &str,
    ) -> Result<()> {
        self.unindex_message(tx, source, id).await?;
        let scope = match source {
            Source::Room => {
                let sql = self.sql("SELECT room_id FROM messages WHERE id = ?");
                let row: Option<(i64,)> = tx.fetch_optional_as(sqlx::query(&sql).bind(id)).await?;
                row.map(|(room,)| Scope::Room(room))
            }
            Source::Direct => {
                let sql =
                    self.sql("SELECT sender_id, recipient_id FROM direct_messages WHERE id = ?");
                let row: Option<(i64, i64)> =
                    tx.fetch_optional_as(sqlx::query(&sql).bind(id)).await?;
                row.map(|(a, b)| Scope::Direct(a, b))
            }
        };
        match scope {
            Some(scope) => {
                self.index_messages(tx, source, &[IndexRow { id, text, scope }])
                    .await
            }
            None => Ok(()),
        }
    }

    /// Up to `q.limit` messages of `source` matching `q` that `q.me` can read, newest
    /// first, or the most relevant of the `RELEVANCE_CANDIDATES` newest.
    ///
    /// One statement: an inner query walks the index newest first (each engine can walk
    /// its ids backwards), keeping rows whose message is readable and matches the
    /// filters, up to the page (newest first) or the candidates (relevance, ranked by
    /// the outer query); the outer query reads the messages of what it kept. On SQLite
    /// the joins are `CROSS JOIN`s, which fix that order (index first), whatever the
    /// planner would guess without statistics.
    pub async fn search(&self, source: Source, q: &SearchQuery) -> Result<Vec<Found>> {
        let d = self.dialect;
        let join = match d {
            Dialect::Sqlite => " CROSS JOIN ",
            Dialect::Postgres | Dialect::MySql => " JOIN ",
        };
        // Who may read what the index is asked for, when it is selective.
        let scope: Vec<String> = match (source, has_scope(d)) {
            (_, false) => Vec::new(),
            (Source::Direct, true) => vec![user_token(q.me)],
            (Source::Room, true) => q
                .rooms
                .iter()
                .flatten()
                .map(|room| room_token(*room))
                .collect(),
        };
        let text = match_text(d, &q.terms, &scope);
        let index = source.index();
        let table = source.table();
        // The index row's id, the engine's match condition and relevance score.
        let (id, from_index, matches, score) = match d {
            Dialect::Sqlite => (
                format!("{index}.rowid"),
                index.to_owned(),
                format!("{index} MATCH ?"),
                // The scope's words do not count for relevance.
                format!("-bm25({index}, 1.0, 0.0)"),
            ),
            Dialect::Postgres => (
                "s.id".to_owned(),
                format!("{index} s"),
                "s.words @@ to_tsquery('simple', ?)".to_owned(),
                "CAST(ts_rank(s.words, to_tsquery('simple', ?)) AS DOUBLE PRECISION)".to_owned(),
            ),
            Dialect::MySql => (
                "s.id".to_owned(),
                format!("{index} s"),
                "MATCH (s.words) AGAINST (? IN BOOLEAN MODE)".to_owned(),
                "MATCH (s.words) AGAINST (? IN BOOLEAN MODE)".to_owned(),
            ),
        };
        let relevance = q.order == SearchOrder::Relevance;
        let mut binds: Vec<Bind> = Vec::new();

        // The inner query: ids (and scores) of readable matches, newest first.
        let mut inner = format!("SELECT {id} AS id");
        if relevance {
            inner.push_str(&format!(", {score} AS score"));
            if d != Dialect::Sqlite {
                binds.push(Bind::Text(text.clone()));
            }
        }
        inner.push_str(&format!(" FROM {from_index}{join}{table} m ON m.id = {id}"));
        if source == Source::Room {
            inner.push_str(&format!(
                "{join}memberships mb ON mb.room_id = m.room_id AND mb.user_id = ?"
            ));
            binds.push(Bind::Int(q.me));
        }
        inner.push_str(&format!(" WHERE {matches} AND m.deleted_at IS NULL"));
        binds.push(Bind::Text(text));
        if d == Dialect::Postgres && !scope.is_empty() {
            inner.push_str(" AND s.scope @@ to_tsquery('simple', ?)");
            binds.push(Bind::Text(scope.join(" | ")));
        }
        match source {
            Source::Room => {
                if let Some(room) = q.room {
                    inner.push_str(" AND m.room_id = ?");
                    binds.push(Bind::Int(room));
                }
                if let Some(author) = q.author {
                    inner.push_str(" AND m.author_id = ?");
                    binds.push(Bind::Int(author));
                }
            }
            Source::Direct => {
                inner.push_str(" AND (m.sender_id = ? OR m.recipient_id = ?)");
                binds.push(Bind::Int(q.me));
                binds.push(Bind::Int(q.me));
                if let Some(peer) = q.peer {
                    inner.push_str(" AND m.user_lo = ? AND m.user_hi = ?");
                    binds.push(Bind::Int(q.me.min(peer)));
                    binds.push(Bind::Int(q.me.max(peer)));
                }
                if let Some(author) = q.author {
                    inner.push_str(" AND m.sender_id = ?");
                    binds.push(Bind::Int(author));
                }
            }
        }
        if let Some(since) = q.since {
            inner.push_str(" AND m.created_at >= ?");
            binds.push(Bind::Int(since));
        }
        if let Some(until) = q.until {
            inner.push_str(" AND m.created_at < ?");
            binds.push(Bind::Int(until));
        }
        if let (Some(before), false) = (q.before_id, relevance) {
            inner.push_str(&format!(" AND {id} < ?"));
            binds.push(Bind::Int(before));
        }
        inner.push_str(&format!(" ORDER BY {id} DESC LIMIT ?"));
        binds.push(Bind::Int(if relevance {
            RELEVANCE_CANDIDATES
        } else {
            i64::from(q.limit)
        }));

        // The outer query: the messages, with their room or users.
        let (columns, joins) = match source {
            Source::Room => (
                "m.id, r.name AS room, u.username AS author, u.alias AS alias, m.body, \
                 m.created_at, m.edited_at",
                format!(
                    "{join}messages m ON m.id = w.id{join}rooms r ON r.id = m.room_id\
                     {join}users u ON u.id = m.author_id"
                ),
            ),
            Source::Direct => (
                "m.id, u.username AS author, u.alias AS alias, t.username AS recipient, \
                 m.body, m.created_at, m.edited_at",
                format!(
                    "{join}direct_messages m ON m.id = w.id{join}users u ON u.id = m.sender_id\
                     {join}users t ON t.id = m.recipient_id"
                ),
            ),
        };
        let order = if relevance {
            "w.score DESC, m.id DESC"
        } else {
            "m.id DESC"
        };
        let score_column = if relevance { ", w.score AS score" } else { "" };
        let bounded = match d {
            Dialect::MySql if self.fulltext.mariadb => format!(
                "SET STATEMENT max_statement_time = {:.3} FOR SELECT",
                self.fulltext.time_max.as_secs_f64()
            ),
            Dialect::MySql => format!(
                "SELECT /*+ MAX_EXECUTION_TIME({}) */",
                self.fulltext.time_max.as_millis().max(1)
            ),
            _ => "SELECT".to_owned(),
        };
        let sql = d.rewrite(&format!(
            "{bounded} {columns}{score_column} FROM ({inner}) w{joins} ORDER BY {order} LIMIT ?"
        ));
        binds.push(Bind::Int(i64::from(q.limit)));
        let found = match (d, &self.searches) {
            (Dialect::Sqlite, Some(pool)) => self.search_sqlite(pool, &sql, binds).await,
            (Dialect::Postgres, _) => self.search_postgres(&sql, binds).await,
            _ => self.fetch_all_as(any_query(&sql, binds)).await,
        };
        found.map_err(|e| match e {
            StoreError::Sqlx(sqlx::Error::Database(db)) if statement_time_exceeded(&*db) => {
                StoreError::SearchTooLong(self.fulltext.time_max)
            }
            e => e,
        })
    }

    /// Runs a search statement on PostgreSQL, stopped by the database after
    /// `search_time_max` (`statement_timeout`, for this transaction only).
    async fn search_postgres(&self, sql: &str, binds: Vec<Bind>) -> Result<Vec<Found>> {
        let mut tx = self.begin().await?;
        let ms = self.fulltext.time_max.as_millis().max(1);
        let body = async {
            let set = format!("SET LOCAL statement_timeout = {ms}");
            tx.execute(sqlx::query(&set)).await?;
            tx.fetch_all_as(any_query(sql, binds)).await
        }
        .await;
        tx.finish(body).await
    }

    /// Runs a search statement on SQLite, on the searches' own connection, stopped after
    /// `search_time_max` by a progress handler (SQLite calls it every few thousand
    /// virtual-machine steps; past the time it answers "interrupt").
    async fn search_sqlite(
        &self,
        pool: &sqlx::SqlitePool,
        sql: &str,
        binds: Vec<Bind>,
    ) -> Result<Vec<Found>> {
        let run = async {
            let mut conn = pool.acquire().await?;
            let deadline = std::time::Instant::now() + self.fulltext.time_max;
            conn.lock_handle()
                .await?
                .set_progress_handler(PROGRESS_STEPS, move || std::time::Instant::now() < deadline);
            let mut query = sqlx::query_as::<sqlx::Sqlite, Found>(sql);
            for bind in binds {
                query = match bind {
                    Bind::Int(v) => query.bind(v),
                    Bind::Text(v) => query.bind(v),
                };
            }
            let found = query.fetch_all(&mut *conn).await;
            match found {
                Ok(found) => {
                    conn.lock_handle().await?.remove_progress_handler();
                    Ok(found)
                }
                Err(e) => {
                    // Not reused: a connection after an error starts clean.
                    conn.close_on_drop();
                    Err(e)
                }
            }
        };
        // The handler stops the statement first; this bounds the wait for a connection
        // and anything the handler cannot see.
        match tokio::time::timeout(self.timeout, run).await {
            Ok(found) => Ok(found?),
            Err(_) => Err(StoreError::Timeout(self.timeout)),
        }
    }

    /// Indexes, in batches, the messages stored before the index existed (after the
    /// migration that made it), then indexes again those stored before the word rule
    /// changed whose words it changed (migration 0012: a text with a combining mark);
    /// returns how many it indexed. Each batch is one transaction that also moves
    /// `search_backfill` on, so an interrupted run resumes. Messages stored since each
    /// migration were indexed by the writer; this runs when the database is migrated,
    /// before the server serves. (In a cluster upgraded node by node, an older node may
    /// edit a message between a batch's read and its transaction: that message is then
    /// found by its earlier words until its next edit.)
    pub async fn backfill_search(&self) -> Result<u64> {
        let mut total = 0u64;
        for pass in [Pass::Backfill, Pass::Marks] {
            for source in [Source::Room, Source::Direct] {
                total += self.backfill_pass(source, pass).await?;
            }
        }
        Ok(total)
    }

    async fn backfill_pass(&self, source: Source, pass: Pass) -> Result<u64> {
        let key = source.backfill_key(pass);
        let mut total = 0u64;
        loop {
            let sql = self.sql("SELECT after_id, up_to FROM search_backfill WHERE source = ?");
            let range: Option<(i64, i64)> =
                self.fetch_optional_as(sqlx::query(&sql).bind(key)).await?;
            let Some((after, up_to)) = range else { break };
            let who = match source {
                Source::Room => "room_id AS a, room_id AS b",
                Source::Direct => "sender_id AS a, recipient_id AS b",
            };
            let sql = self.dialect.rewrite(&format!(
                "SELECT id, body, {who} FROM {} \
                 WHERE id > ? AND id <= ? AND deleted_at IS NULL ORDER BY id LIMIT ?",
                source.table()
            ));
            let rows: Vec<(i64, String, i64, i64)> = self
                .fetch_all_as(
                    sqlx::query(&sql)
                        .bind(after)
                        .bind(up_to)
                        .bind(BACKFILL_BATCH),
                )
                .await?;
            let last = rows.last().map(|(id, ..)| *id);
            let index: Vec<IndexRow<'_>> = rows
                .iter()
                .filter(|(_, body, ..)| {
                    pass == Pass::Backfill || crate::search_text::has_combining_mark(body)
                })
                .map(|(id, body, a, b)| IndexRow {
                    id: *id,
                    text: body,
                    scope: match source {
                        Source::Room => Scope::Room(*a),
                        Source::Direct => Scope::Direct(*a, *b),
                    },
                })
                .collect();
            let mut tx = self.begin().await?;
            let body = async {
                match last {
                    Some(last) => {
                        if pass == Pass::Marks {
                            for row in &index {
                                self.unindex_message(&mut tx, source, row.id).await?;
                            }
                        }
                        self.index_messages(&mut tx, source, &index).await?;
                        let sql =
                            self.sql("UPDATE search_backfill SET after_id = ? WHERE source = ?");
                        tx.execute(sqlx::query(&sql).bind(last).bind(key)).await?;
                    }
                    None => {
                        let sql = self.sql("DELETE FROM search_backfill WHERE source = ?");
                        tx.execute(sqlx::query(&sql).bind(key)).await?;
                    }
                }
                Ok(())
            }
            .await;
            tx.finish(body).await?;
            if last.is_none() {
                break;
            }
            total += index.len() as u64;
            tracing::info!(
                indexed = total,
                pass = key,
                "indexing stored messages for search"
            );
        }
        Ok(total)
    }
}
