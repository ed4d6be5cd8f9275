//! The message writer: group commit, then fan-out, then the acknowledgement.
//!
//! Sessions hand accepted messages to one writer task through a bounded queue. The writer
//! takes everything pending (up to `commit_batch_max`), stores it in one transaction, and
//! only after the commit: publishes each message on the bus (which queues it, encoded
//! once per wire format, to every recipient on this node), then acknowledges it to its
//! sender, in the sender's format. So a message is acknowledged or delivered only once it
//! is on disk (R24), the sender never holds the reply before the recipients hold the
//! message, many messages share one fsync, and the order of ids, of commits and of
//! delivery is the same.
//!
//! Exactly once: a message may carry its client's idempotency key. The database holds a
//! unique index on (author, key), so a retry of a message already stored fails its
//! insert; the writer then finds the earlier message and answers with its id and time
//! instead of storing a second one. The happy path costs nothing more: the keys travel in
//! the same multi-row INSERTs.
//!
//! One bad message never fails the others: a batch the database refuses for a reason
//! other than its availability is split until only the failing messages fail.
//!
//! Lifetime: the writer runs until `stop` is cancelled; it then refuses new messages
//! (senders get `shutting_down`) and commits everything already queued before returning.

use std::collections::hash_map::{Entry, HashMap};
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use salon_proto::{
    Accepted, DirectMessage, ErrorBody, ErrorCode, Event, MessageExtra, Quote, Reply, RoomMessage,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::clock::SharedClock;
use crate::ids::IdGenerator;
use crate::live::{Audience, Bus, Identity, Message, Outbound};
use crate::store::{KeyedMessage, NewDirect, NewRoomMessage, RoomRow, Store, StoreError, Tx};

/// Where to send the acknowledgement of a message. While it exists, its session counts
/// one reply still owed ([`InFlight`]).
#[derive(Debug)]
pub struct Ack {
    pub outbound: Outbound,
    pub re: u64,
    /// Held for its `Drop`: the reply is owed until the acknowledgement is gone.
    #[expect(dead_code, reason = "held only to be dropped")]
    pub owed: Owed,
}

/// Replies a session still owes for requests handed to the message writer: logout and a
/// peer's half-close wait for them, so every request gets its one reply.
#[derive(Debug, Default)]
pub struct InFlight {
    count: std::sync::atomic::AtomicUsize,
    settled: tokio::sync::Notify,
}

/// One reply owed; dropping it (once the reply is queued, or the job is dropped) settles it.
#[derive(Debug)]
pub struct Owed(Arc<InFlight>);

impl InFlight {
    pub fn owe(self: &Arc<Self>) -> Owed {
        self.count.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Owed(self.clone())
    }

    /// Resolves once no reply is owed.
    pub async fn settled(&self) {
        loop {
            let notified = self.settled.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.count.load(std::sync::atomic::Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for Owed {
    fn drop(&mut self) {
        if self
            .0
            .count
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel)
            == 1
        {
            self.0.settled.notify_waiters();
        }
    }
}

/// A durable change other than a new message (an edit, a deletion, a reaction, a read
/// marker…), handed to the message writer so that it is committed in the order it was
/// accepted, after the messages accepted with it, then published, then answered, as a
/// message is. It is written beside its handler; the writer needs nothing else.
pub trait Change: Send + std::fmt::Debug + 'static {
    /// Stores the change at time `now`. Whatever it finds (a message deleted meanwhile…)
    /// it keeps for [`Change::stored`]. It is stored in the writer's transaction `tx`, which holds the other changes
    /// of the batch (group commit: one commit for all).
    fn store<'a>(
        &'a mut self,
        store: &'a Store,
        tx: &'a mut Tx,
        now: i64,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), StoreError>> + Send + 'a>>;
    /// Once stored: what to publish on the bus (published before the reply), and the
    /// reply to the request; or the error to answer when the change could not be made.
    fn stored(self: Box<Self>, now: i64) -> Result<(Vec<Message>, Reply), ErrorBody>;
}

/// What a room message carries besides its text, found by its handler.
#[derive(Debug, Default)]
pub struct Extras {
    /// The message it replies to.
    pub reply: Option<Quote>,
    /// Members it mentions: (id, username).
    pub mentions: Vec<(i64, String)>,
    /// `@room`.
    pub mention_room: bool,
    /// Aliases it mentions whose users cannot read the room.
    pub not_notified: Vec<String>,
    /// Files it carries, in order (checked: the author's uploads).
    pub attachments: Vec<salon_proto::Attachment>,
}

/// Work accepted by a handler (authorised, validated), not yet stored.
#[derive(Debug)]
pub enum Job {
    Room {
        room: Arc<RoomRow>,
        author: Identity,
        text: String,
        /// The client's idempotency key (already checked against the rule).
        key: Option<String>,
        /// Reply, mentions (boxed: most messages have none).
        extras: Option<Box<Extras>>,
        ack: Ack,
    },
    Direct {
        from: Identity,
        to: Identity,
        text: String,
        key: Option<String>,
        /// The message it replies to.
        reply: Option<Box<Quote>>,
        /// Files it carries, in order (checked: the sender's uploads).
        attachments: Vec<salon_proto::Attachment>,
        ack: Ack,
    },
    /// Any other durable change (see [`Change`]).
    Change { change: Box<dyn Change>, ack: Ack },
}

/// One message of a batch as the database sees it.
enum Row {
    Room(NewRoomMessage),
    Direct(NewDirect),
}

/// An idempotency key with what it is unique within: room messages of an author, or
/// private messages of a sender.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct KeyRef<'a> {
    direct: bool,
    author: i64,
    key: &'a str,
}

type OwnedKey = (bool, i64, String);

impl KeyRef<'_> {
    fn to_owned_key(&self) -> OwnedKey {
        (self.direct, self.author, self.key.to_owned())
    }
}

impl Row {
    fn id(&self) -> i64 {
        match self {
            Row::Room(m) => m.id,
            Row::Direct(d) => d.id,
        }
    }

    /// The room (room messages) or the recipient (private messages).
    fn target(&self) -> i64 {
        match self {
            Row::Room(m) => m.room_id,
            Row::Direct(d) => d.recipient_id,
        }
    }

    fn body(&self) -> &str {
        match self {
            Row::Room(m) => &m.body,
            Row::Direct(d) => &d.body,
        }
    }

    fn files(&self) -> &[i64] {
        match self {
            Row::Room(m) => &m.attachments,
            Row::Direct(d) => &d.attachments,
        }
    }

    fn into_body(self) -> String {
        match self {
            Row::Room(m) => m.body,
            Row::Direct(d) => d.body,
        }
    }

    fn key_ref(&self) -> Option<KeyRef<'_>> {
        match self {
            Row::Room(m) => m.key.as_deref().map(|key| KeyRef {
                direct: false,
                author: m.author_id,
                key,
            }),
            Row::Direct(d) => d.key.as_deref().map(|key| KeyRef {
                direct: true,
                author: d.sender_id,
                key,
            }),
        }
    }
}

/// What became of one message of a batch.
#[derive(Debug, Clone)]
enum Outcome {
    Pending,
    /// Committed now.
    Stored,
    /// A retry: the same message was stored earlier under the same key, with this id and
    /// time. `deliver` when that was by a commit whose outcome was unknown, so it was never
    /// delivered.
    Earlier {
        id: i64,
        ts: i64,
        deliver: bool,
    },
    /// The key was already used by its author for a different message.
    KeyReused,
    Failed(ErrorBody),
}

impl Outcome {
    /// This outcome if `row` is the same message as the one stored (same room or
    /// recipient, same text, same files), else `KeyReused`.
    fn if_same(self, row: &Row, target: i64, body: &str, files: &[i64]) -> Outcome {
        if row.target() == target && row.body() == body && row.files() == files {
            self
        } else {
            Outcome::KeyReused
        }
    }

    /// [`Outcome::if_same`] against a stored message. One edited or deleted since no
    /// longer shows what was sent: the same room or recipient is enough (a retry arriving
    /// after an edit from another device is still a retry).
    fn if_same_as_stored(self, row: &Row, earlier: &KeyedMessage) -> Outcome {
        if earlier.edited_at.is_none() && earlier.deleted_at.is_none() {
            self.if_same(row, earlier.target, &earlier.body, &earlier.files)
        } else if row.target() == earlier.target {
            self
        } else {
            Outcome::KeyReused
        }
    }
}

/// The keys of messages whose commit had an unknown outcome (the database never
/// answered the COMMIT). If such a message was stored after all, its retry finds it, and
/// it is delivered then, since it never was. Bounded: the oldest keys are forgotten (their
/// retries are still answered with the stored message, only not delivered live; they are
/// in the history).
#[derive(Default)]
struct Unconfirmed {
    order: VecDeque<OwnedKey>,
    keys: HashSet<OwnedKey>,
}

const UNCONFIRMED_MAX: usize = 16_384;

impl Unconfirmed {
    fn insert(&mut self, key: OwnedKey) {
        if self.keys.insert(key.clone()) {
            self.order.push_back(key);
        }
        while self.order.len() > UNCONFIRMED_MAX {
            if let Some(old) = self.order.pop_front() {
                self.keys.remove(&old);
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    fn remove(&mut self, key: &OwnedKey) -> bool {
        // Left in `order`; it ages out from there harmlessly.
        self.keys.remove(key)
    }
}

/// The answer to a message the database could not take. When the database never
/// answered the COMMIT, the message may be stored or not: the client is told so, and that
/// a retry with the same key is safe.
fn unavailable_body(e: &StoreError, keyed: bool) -> ErrorBody {
    let message = match (e.is_outcome_unknown(), keyed) {
        (false, _) => {
            "the database is unavailable; your message was not stored, send it again later"
        }
        (true, true) => {
            "the database did not confirm the commit: your message may or may not be stored; \
             send it again with the same key, it will be stored only once"
        }
        (true, false) => {
            "the database did not confirm the commit: your message may or may not be stored \
             (send it with a key to make retries safe)"
        }
    };
    ErrorBody::new(ErrorCode::Unavailable, message)
}

/// The answer to a change (an edit, a reaction…) the database could not take.
fn change_unavailable_body(e: &StoreError) -> ErrorBody {
    ErrorBody::new(
        ErrorCode::Unavailable,
        if e.is_outcome_unknown() {
            "the database did not confirm the change: it may or may not have been made; \
             check, and try again if it was not"
        } else {
            "the database is unavailable; nothing was changed, try again later"
        },
    )
}

fn internal_body() -> ErrorBody {
    ErrorBody::new(ErrorCode::Internal, "your message could not be stored")
}

/// The handlers' side of the writer queue.
#[derive(Debug, Clone)]
pub struct Persist {
    tx: mpsc::Sender<Job>,
}

impl Persist {
    /// Queues a message, waiting while the queue is full. Gives the job back if the
    /// writer has stopped (shutdown).
    pub async fn submit(&self, job: Job) -> Result<(), Job> {
        self.tx.send(job).await.map_err(|e| e.0)
    }
}

pub struct Writer {
    rx: mpsc::Receiver<Job>,
    store: Store,
    bus: Arc<dyn Bus>,
    ids: Arc<IdGenerator>,
    clock: SharedClock,
    batch_max: usize,
    /// Least time between the starts of two commits while busy.
    pacing: std::time::Duration,
    unconfirmed: Unconfirmed,
}

/// A commit of at least this many messages means the server is busy: the next commit is
/// paced.
const PACING_THRESHOLD: usize = 8;

pub fn channel(
    capacity: usize,
    batch_max: usize,
    pacing: std::time::Duration,
    store: Store,
    bus: Arc<dyn Bus>,
    ids: Arc<IdGenerator>,
    clock: SharedClock,
) -> (Persist, Writer) {
    let (tx, rx) = mpsc::channel(capacity);
    (
        Persist { tx },
        Writer {
            rx,
            store,
            bus,
            ids,
            clock,
            batch_max,
            pacing,
            unconfirmed: Unconfirmed::default(),
        },
    )
}

impl Writer {
    pub async fn run(mut self, stop: CancellationToken) {
        let mut jobs = Vec::with_capacity(self.batch_max);
        let mut stopping = false;
        let mut busy = false;
        let mut last_start: Option<tokio::time::Instant> = None;
        loop {
            let n = tokio::select! {
                n = self.rx.recv_many(&mut jobs, self.batch_max) => n,
                _ = stop.cancelled(), if !stopping => {
                    // No new messages; what is queued is still committed below.
                    self.rx.close();
                    stopping = true;
                    continue;
                }
            };
            if n == 0 {
                break; // closed and drained
            }
            // Under load, gather for a moment before committing: fewer, fuller commits
            // mean fewer writes to every recipient (see docs/BENCHMARKS.md). A quiet
            // server commits at once.
            // (A full batch never waits: there is nothing more to gather into it.)
            if busy && !stopping && jobs.len() < self.batch_max {
                if let Some(at) = last_start.map(|t| t + self.pacing) {
                    tokio::time::sleep_until(at).await;
                }
                while jobs.len() < self.batch_max {
                    match self.rx.try_recv() {
                        Ok(job) => jobs.push(job),
                        Err(_) => break,
                    }
                }
            }
            busy = jobs.len() >= PACING_THRESHOLD;
            last_start = Some(tokio::time::Instant::now());
            self.commit(&mut jobs).await;
        }
        tracing::debug!("message writer drained and stopped");
    }

    /// Commits a batch: its messages in one transaction, then its other changes together
    /// in a second one, in the order they were accepted.
    async fn commit(&mut self, jobs: &mut Vec<Job>) {
        // Messages only (the usual batch): no sorting, no allocation.
        let changes: Vec<Job> = if jobs.iter().any(|job| matches!(job, Job::Change { .. })) {
            let (messages, changes) = jobs
                .drain(..)
                .partition(|job| !matches!(job, Job::Change { .. }));
            *jobs = messages;
            changes
        } else {
            Vec::new()
        };
        if !jobs.is_empty() {
            self.commit_messages(jobs).await;
        }
        if !changes.is_empty() {
            let changes = changes
                .into_iter()
                .filter_map(|job| match job {
                    Job::Change { change, ack } => Some((change, ack)),
                    _ => None,
                })
                .collect();
            self.commit_changes(changes).await;
        }
    }

    /// Stores changes in one transaction (group commit), then publishes what each says
    /// and answers each, in order. A batch the database refuses for a reason other than
    /// its availability is stored again one change at a time, so that one bad change
    /// never fails the others.
    async fn commit_changes(&self, mut changes: Vec<(Box<dyn Change>, Ack)>) {
        let now = self.clock.now_ms();
        let mut tries = 0;
        let outcome = loop {
            match self.store_changes(&mut changes, now).await {
                // A deadlock victim (InnoDB) is run again, as message batches are.
                Err(e) if e.is_retryable() && tries < 3 => {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(5 * tries)).await;
                }
                other => break other,
            }
        };
        match outcome {
            Ok(()) => {
                for (change, ack) in changes {
                    match change.stored(now) {
                        Ok((messages, reply)) => {
                            for message in messages {
                                self.bus.publish(message);
                            }
                            ack.answer(&reply);
                        }
                        Err(body) => ack_error(&ack, body),
                    }
                }
            }
            Err(e) if e.is_unavailable() => {
                tracing::warn!(error = %e, changes = changes.len(), "changes could not be stored");
                metrics::counter!(crate::metrics::DATABASE_ERRORS).increment(1);
                let body = change_unavailable_body(&e);
                for (_, ack) in changes {
                    ack_error(&ack, body.clone());
                }
            }
            Err(e) if changes.len() > 1 => {
                tracing::warn!(error = %e, changes = changes.len(), "a batch of changes failed; storing them one at a time");
                for change in changes {
                    Box::pin(self.commit_changes(vec![change])).await;
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "a change could not be stored");
                for (_, ack) in changes {
                    ack_error(
                        &ack,
                        ErrorBody::new(ErrorCode::Internal, "the change could not be stored"),
                    );
                }
            }
        }
    }

    async fn store_changes(
        &self,
        changes: &mut [(Box<dyn Change>, Ack)],
        now: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.store.begin_changes().await?;
        for (change, _) in changes.iter_mut() {
            if let Err(e) = change.store(&self.store, &mut tx, now).await {
                self.store.abandon(tx).await;
                return Err(e);
            }
        }
        self.store.commit(tx).await
    }

    async fn commit_messages(&mut self, jobs: &mut Vec<Job>) {
        let now = self.clock.now_ms();
        // The rows take each job's text and key; the job keeps where it goes and whom to
        // answer.
        let rows: Vec<Row> = jobs
            .iter_mut()
            .map(|job| {
                let id = self.ids.next(now);
                match job {
                    Job::Room {
                        room,
                        author,
                        text,
                        key,
                        extras,
                        ..
                    } => Row::Room(NewRoomMessage {
                        id,
                        room_id: room.id,
                        author_id: author.id,
                        body: std::mem::take(text),
                        created_at: now,
                        key: key.take(),
                        reply_to: extras.as_ref().and_then(|e| e.reply.as_ref()).map(|q| q.id),
                        mention_room: extras.as_ref().is_some_and(|e| e.mention_room),
                        mentions: extras
                            .as_ref()
                            .map(|e| e.mentions.iter().map(|(id, _)| *id).collect())
                            .unwrap_or_default(),
                        attachments: extras
                            .as_ref()
                            .map(|e| e.attachments.iter().map(|a| a.id).collect())
                            .unwrap_or_default(),
                    }),
                    Job::Direct {
                        from,
                        to,
                        text,
                        key,
                        reply,
                        attachments,
                        ..
                    } => Row::Direct(NewDirect {
                        id,
                        sender_id: from.id,
                        recipient_id: to.id,
                        body: std::mem::take(text),
                        created_at: now,
                        key: key.take(),
                        reply_to: reply.as_ref().map(|q| q.id),
                        attachments: attachments.iter().map(|a| a.id).collect(),
                    }),
                    Job::Change { .. } => unreachable!("changes are committed apart (`commit`)"),
                }
            })
            .collect();
        // The same key twice in one batch (a retry that caught up with its original):
        // only the first is stored; the others follow its outcome.
        let mut follows: Vec<Option<usize>> = vec![None; rows.len()];
        {
            let mut first: HashMap<KeyRef<'_>, usize> = HashMap::new();
            for (i, row) in rows.iter().enumerate() {
                if let Some(key) = row.key_ref() {
                    match first.entry(key) {
                        Entry::Occupied(leader) => follows[i] = Some(*leader.get()),
                        Entry::Vacant(slot) => {
                            slot.insert(i);
                        }
                    }
                }
            }
        }
        let leaders: Vec<usize> = (0..rows.len()).filter(|&i| follows[i].is_none()).collect();
        let started = std::time::Instant::now();
        let mut outcomes: Vec<Outcome> = vec![Outcome::Pending; rows.len()];
        self.store(&rows, leaders, &mut outcomes).await;
        let committed = started.elapsed();
        metrics::histogram!(crate::metrics::COMMIT_SECONDS).record(committed.as_secs_f64());
        metrics::histogram!(crate::metrics::COMMIT_BATCH_SIZE).record(rows.len() as f64);
        for (i, leader) in follows.iter().enumerate() {
            if let Some(leader) = *leader {
                outcomes[i] = match &outcomes[leader] {
                    Outcome::Stored => Outcome::Earlier {
                        id: rows[leader].id(),
                        ts: now,
                        deliver: false,
                    }
                    .if_same(
                        &rows[i],
                        rows[leader].target(),
                        rows[leader].body(),
                        rows[leader].files(),
                    ),
                    Outcome::Earlier { id, ts, .. } => Outcome::Earlier {
                        id: *id,
                        ts: *ts,
                        deliver: false,
                    }
                    .if_same(
                        &rows[i],
                        rows[leader].target(),
                        rows[leader].body(),
                        rows[leader].files(),
                    ),
                    other => other.clone(),
                };
            }
        }

        let batch = jobs.len();
        for ((job, row), outcome) in jobs.drain(..).zip(rows).zip(outcomes) {
            // Fan out first, then acknowledge: once the sender holds the reply, every
            // recipient connected here already has the message queued.
            let ack = match outcome {
                Outcome::Stored => {
                    let kind = match &job {
                        Job::Room { .. } => "room",
                        Job::Direct { .. } => "direct",
                        Job::Change { .. } => "change",
                    };
                    metrics::counter!(crate::metrics::MESSAGES_ACCEPTED, "kind" => kind)
                        .increment(1);
                    let id = row.id();
                    let reply = accepted(&job, id, now);
                    let ack = self.deliver(job, id, now, row.into_body());
                    ack.answer(&reply);
                    continue;
                }
                Outcome::Earlier { id, ts, deliver } => {
                    let reply = accepted(&job, id, ts);
                    let ack = if deliver {
                        self.deliver(job, id, ts, row.into_body())
                    } else {
                        job.into_ack()
                    };
                    ack.answer(&reply);
                    continue;
                }
                outcome => (job.into_ack(), outcome),
            };
            let (ack, outcome) = ack;
            let ack = &ack;
            match outcome {
                Outcome::Stored | Outcome::Earlier { .. } => {}
                Outcome::KeyReused => ack_error(
                    ack,
                    ErrorBody::new(
                        ErrorCode::InvalidRequest,
                        "this key was already used for another message: use a new key for \
                         each new message",
                    )
                    .with_field("key"),
                ),
                Outcome::Failed(body) => {
                    if body.code == ErrorCode::Unavailable {
                        metrics::counter!(crate::metrics::DATABASE_ERRORS).increment(1);
                    }
                    ack_error(ack, body)
                }
                Outcome::Pending => {
                    // Every row is resolved by `store`; answer rather than stay silent.
                    tracing::error!("a message batch left a message unresolved");
                    ack_error(ack, internal_body());
                }
            }
        }
        let fanout = started.elapsed().saturating_sub(committed);
        metrics::histogram!(crate::metrics::FANOUT_SECONDS).record(fanout.as_secs_f64());
        tracing::trace!(
            batch,
            commit_us = committed.as_micros() as u64,
            fanout_us = fanout.as_micros() as u64,
            "batch stored and delivered"
        );
    }

    /// Stores the rows `leaders` (indices into `rows`) and records each one's outcome.
    /// Normally one transaction. When it fails for a reason other than the database's
    /// availability (a key already used, a row the database refuses), the failing
    /// messages are found and only they fail: keyed messages are first looked up (a retry
    /// of a message stored earlier), then the batch is split in halves until each failure
    /// is a single message. A database that is unavailable fails everything at once.
    async fn store(&mut self, rows: &[Row], leaders: Vec<usize>, outcomes: &mut [Outcome]) {
        // (messages, whether their keys were already looked up)
        let mut parts = vec![(leaders, false)];
        while let Some((part, looked_up)) = parts.pop() {
            if part.is_empty() {
                continue;
            }
            let rooms: Vec<&NewRoomMessage> = part
                .iter()
                .filter_map(|&i| match &rows[i] {
                    Row::Room(m) => Some(m),
                    Row::Direct(_) => None,
                })
                .collect();
            let directs: Vec<&NewDirect> = part
                .iter()
                .filter_map(|&i| match &rows[i] {
                    Row::Direct(d) => Some(d),
                    Row::Room(_) => None,
                })
                .collect();
            let e = match self.store.insert_messages(&rooms, &directs).await {
                Ok(()) => {
                    for &i in &part {
                        outcomes[i] = Outcome::Stored;
                        // A retry of a message whose commit was in doubt and in fact did
                        // not happen: stored and delivered now, so never again.
                        if !self.unconfirmed.is_empty() {
                            if let Some(key) = rows[i].key_ref() {
                                self.unconfirmed.remove(&key.to_owned_key());
                            }
                        }
                    }
                    continue;
                }
                Err(e) => e,
            };
            if e.is_unavailable() {
                tracing::error!(error = %e, batch = part.len(), "storing a message batch failed");
                for &i in &part {
                    let key = rows[i].key_ref();
                    if e.is_outcome_unknown() {
                        if let Some(key) = &key {
                            self.unconfirmed.insert(key.to_owned_key());
                        }
                    }
                    outcomes[i] = Outcome::Failed(unavailable_body(&e, key.is_some()));
                }
                continue;
            }
            if !looked_up && e.is_unique_violation() {
                // Probably retries of messages stored earlier: find them, store the rest.
                let mut rest = Vec::with_capacity(part.len());
                for &i in &part {
                    match self.earlier(&rows[i]).await {
                        Ok(Some(found)) => outcomes[i] = found,
                        Ok(None) => rest.push(i),
                        Err(e) => {
                            tracing::error!(error = %e, "looking up a message by its key failed");
                            // It may have been stored before: only the key can tell.
                            outcomes[i] = Outcome::Failed(if e.is_unavailable() {
                                ErrorBody::new(
                                    ErrorCode::Unavailable,
                                    "the database is unavailable; send your message again \
                                     later with the same key",
                                )
                            } else {
                                internal_body()
                            })
                        }
                    }
                }
                parts.push((rest, true));
                continue;
            }
            if part.len() == 1 {
                tracing::error!(error = %e, "storing a message failed");
                outcomes[part[0]] = Outcome::Failed(internal_body());
                continue;
            }
            tracing::warn!(error = %e, batch = part.len(), "a message batch failed; finding the failing messages");
            let half = part.len() / 2;
            let (first, second) = part.split_at(half);
            // The first half is stored first (a stack).
            parts.push((second.to_vec(), looked_up));
            parts.push((first.to_vec(), looked_up));
        }
    }

    /// The outcome for a message whose key its author already used, if they did: the
    /// earlier message (a retry) or `KeyReused` (another message under the same key).
    async fn earlier(&mut self, row: &Row) -> Result<Option<Outcome>, StoreError> {
        let found = match row {
            Row::Room(m) => match &m.key {
                Some(key) => self.store.room_message_by_key(m.author_id, key).await?,
                None => None,
            },
            Row::Direct(d) => match &d.key {
                Some(key) => self.store.direct_by_key(d.sender_id, key).await?,
                None => None,
            },
        };
        Ok(found.map(|earlier| {
            tracing::debug!(
                id = earlier.id,
                "a message sent again with its key was already stored"
            );
            // Stored by a commit whose outcome was unknown: never delivered, so now (not
            // once deleted: its readers were told of no message).
            let deliver = row
                .key_ref()
                .is_some_and(|key| self.unconfirmed.remove(&key.to_owned_key()))
                && earlier.deleted_at.is_none();
            Outcome::Earlier {
                id: earlier.id,
                ts: earlier.created_at,
                deliver,
            }
            .if_same_as_stored(row, &earlier)
        }))
    }

    /// Sends a stored message to its recipients.
    /// Publishes a stored message to its recipients; returns the job's acknowledgement,
    /// still owed.
    fn deliver(&self, job: Job, id: i64, ts: i64, text: String) -> Ack {
        match job {
            Job::Room {
                room,
                author,
                ack,
                extras,
                ..
            } => {
                let (reply_to, mentions, mention_room, attachments) = match extras {
                    Some(extras) => {
                        let Extras {
                            reply,
                            mentions,
                            mention_room,
                            attachments,
                            ..
                        } = *extras;
                        let names = mentions.into_iter().map(|(_, name)| name).collect();
                        (reply, names, mention_room, attachments)
                    }
                    None => (None, Vec::new(), false, Vec::new()),
                };
                let event = Event::Message(RoomMessage {
                    id,
                    room: room.name.clone(),
                    author: author.username,
                    alias: author.alias,
                    text,
                    ts,
                    extra: MessageExtra {
                        reply_to,
                        attachments,
                        ..MessageExtra::default()
                    },
                    mentions,
                    mention_room,
                });
                self.bus
                    .publish(Message::Event(Audience::Room(room.id), event));
                ack
            }
            // Changes publish their own messages (`Writer::apply`).
            Job::Change { ack, .. } => ack,
            Job::Direct {
                from,
                to,
                ack,
                reply,
                attachments,
                ..
            } => {
                let event = Event::Direct(DirectMessage {
                    id,
                    from: from.username,
                    from_alias: from.alias,
                    to: to.username,
                    text,
                    ts,
                    extra: MessageExtra {
                        reply_to: reply.map(|q| *q),
                        attachments,
                        ..MessageExtra::default()
                    },
                });
                self.bus.publish(Message::Direct {
                    id,
                    from: from.id,
                    to: to.id,
                    event,
                });
                ack
            }
        }
    }
}

impl Ack {
    /// Answers the request (without waiting: a full queue cuts its session off).
    fn answer(self, reply: &Reply) {
        self.outbound.push_reply(self.re, reply);
    }
}

/// The reply to a message job: stored as `id` at `ts`.
fn accepted(job: &Job, id: i64, ts: i64) -> Reply {
    match job {
        Job::Direct { .. } => Reply::Direct(Accepted {
            id,
            ts,
            not_notified: Vec::new(),
        }),
        Job::Room { extras, .. } => Reply::Send(Accepted {
            id,
            ts,
            not_notified: extras
                .as_ref()
                .map(|e| e.not_notified.clone())
                .unwrap_or_default(),
        }),
        Job::Change { .. } => Reply::Send(Accepted {
            id,
            ts,
            not_notified: Vec::new(),
        }),
    }
}

impl Job {
    /// The acknowledgement owed for this job, without delivering it.
    fn into_ack(self) -> Ack {
        match self {
            Job::Room { ack, .. } | Job::Direct { ack, .. } | Job::Change { ack, .. } => ack,
        }
    }
}

fn ack_error(ack: &Ack, body: ErrorBody) {
    ack.outbound.push(
        ack.outbound
            .control
            .format()
            .encode_error(Some(ack.re), &body),
    );
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use salon_proto::ServerFrame;

    use super::*;
    use crate::clock::ManualClock;
    use crate::live::{Live, LocalBus, SessionMeta};
    use crate::protocol::native::NATIVE;

    const GENERAL: i64 = 1;

    struct Fixture {
        _dir: tempfile::TempDir,
        store: Store,
        live: Arc<Live>,
        writer: Writer,
        room: Arc<RoomRow>,
    }

    fn who(id: i64, name: &str) -> Identity {
        Identity {
            id,
            username: name.into(),
            alias: name.into(),
            is_admin: false,
        }
    }

    /// A writer on a fresh SQLite database with users alice (1001) and bob (1002).
    async fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let store = Store::connect(&url).await.unwrap();
        store.migrate().await.unwrap();
        for (id, name) in [(1001, "alice"), (1002, "bob")] {
            store
                .create_user(&crate::store::tests::user(id, name))
                .await
                .unwrap();
        }
        let live = Arc::new(Live::default());
        let (_persist, writer) = channel(
            64,
            64,
            std::time::Duration::ZERO,
            store.clone(),
            Arc::new(LocalBus::new(live.clone())),
            Arc::new(IdGenerator::new(0)),
            Arc::new(ManualClock::new(1_700_000_000_000)),
        );
        let room = Arc::new(RoomRow {
            id: GENERAL,
            name: "Général".into(),
            policy: salon_proto::JoinPolicy::Everyone,
        });
        Fixture {
            _dir: dir,
            store,
            live,
            writer,
            room,
        }
    }

    fn post(
        f: &Fixture,
        author: Identity,
        text: &str,
        key: Option<&str>,
        out: &Outbound,
        re: u64,
    ) -> Job {
        Job::Room {
            room: f.room.clone(),
            author,
            text: text.into(),
            key: key.map(Into::into),
            extras: None,
            ack: Ack {
                outbound: out.clone(),
                re,
                owed: Arc::<InFlight>::default().owe(),
            },
        }
    }

    fn frames(out: &Outbound) -> Vec<ServerFrame> {
        let mut got = Vec::new();
        out.control.take_now(&mut got, 1000);
        got.iter()
            .map(|b| serde_json::from_slice(b).unwrap())
            .collect()
    }

    /// A reply: Ok((id, ts)) or Err((code, field)).
    type Answer = Result<(i64, i64), (ErrorCode, Option<String>)>;

    /// The replies by request id.
    fn replies(out: &Outbound) -> HashMap<u64, Answer> {
        frames(out)
            .into_iter()
            .filter_map(|f| match f {
                ServerFrame::Ok { re, data } => Some((
                    re,
                    Ok((data["id"].as_i64().unwrap(), data["ts"].as_i64().unwrap())),
                )),
                ServerFrame::Error {
                    re: Some(re),
                    error,
                } => Some((re, Err((error.code, error.field)))),
                _ => None,
            })
            .collect()
    }

    async fn history(f: &Fixture) -> Vec<(i64, String)> {
        let mut page = f
            .store
            .room_history(&f.room, 0, crate::store::Window::Before(i64::MAX), 100)
            .await
            .unwrap();
        page.reverse();
        page.into_iter().map(|m| (m.id, m.text)).collect()
    }

    /// Bob's session, a member of Général, to count deliveries.
    fn listener(f: &Fixture) -> Outbound {
        let out = Outbound::new(77, 1000, 1 << 20, &NATIVE);
        f.live
            .attach(
                &who(1002, "bob"),
                HashSet::from([GENERAL]),
                HashSet::new(),
                &out,
                SessionMeta {
                    address: "127.0.0.1:1".into(),
                    transport: salon_proto::Transport::Tcp,
                    since: 0,
                    presence: true,
                    token: None,
                },
                16,
                &crate::live::Revocations::default(),
            )
            .unwrap();
        out
    }

    fn delivered(out: &Outbound) -> Vec<String> {
        frames(out)
            .into_iter()
            .filter_map(|f| match f {
                ServerFrame::Event(Event::Message(m)) => Some(m.text),
                _ => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn one_message_the_database_refuses_fails_alone_in_its_batch() {
        let mut f = fixture().await;
        let bob_sees = listener(&f);
        let out = Outbound::new(1, 100, 1 << 20, &NATIVE);
        // User 999 does not exist: its row breaks a foreign key, as any row the database
        // refuses would.
        let mut jobs = vec![
            post(&f, who(1001, "alice"), "first", None, &out, 1),
            post(&f, who(999, "ghost"), "refused", Some("g"), &out, 2),
            post(&f, who(1002, "bob"), "second", Some("b"), &out, 3),
            post(&f, who(1001, "alice"), "third", None, &out, 4),
        ];
        f.writer.commit(&mut jobs).await;
        let r = replies(&out);
        assert!(r[&1].is_ok() && r[&3].is_ok() && r[&4].is_ok(), "{r:?}");
        assert_eq!(r[&2], Err((ErrorCode::Internal, None)));
        let stored = history(&f).await;
        assert_eq!(
            stored.iter().map(|(_, t)| t.as_str()).collect::<Vec<_>>(),
            ["first", "second", "third"]
        );
        assert_eq!(stored[0].0, r[&1].clone().unwrap().0);
        assert_eq!(delivered(&bob_sees), ["first", "second", "third"]);
        // The writer goes on normally.
        let mut jobs = vec![post(&f, who(1001, "alice"), "fourth", None, &out, 5)];
        f.writer.commit(&mut jobs).await;
        assert!(replies(&out)[&5].is_ok());
    }

    #[tokio::test]
    async fn a_key_used_twice_stores_one_message_in_one_batch_and_across_batches() {
        let mut f = fixture().await;
        let bob_sees = listener(&f);
        let out = Outbound::new(1, 100, 1 << 20, &NATIVE);
        let alice = || who(1001, "alice");
        let mut jobs = vec![
            post(&f, alice(), "hello", Some("K"), &out, 1),
            // Another author's key is theirs alone.
            post(&f, who(1002, "bob"), "hi", Some("K"), &out, 2),
            // A retry that caught up with its original, in the same batch.
            post(&f, alice(), "hello", Some("K"), &out, 3),
            // The same key for a different message: refused, not silently merged.
            post(&f, alice(), "something else", Some("K"), &out, 4),
            post(&f, alice(), "unkeyed", None, &out, 5),
        ];
        f.writer.commit(&mut jobs).await;
        let r = replies(&out);
        let original = r[&1].clone().unwrap();
        assert_eq!(r[&3], Ok(original));
        assert_ne!(r[&2].clone().unwrap().0, original.0);
        assert_eq!(r[&4], Err((ErrorCode::InvalidRequest, Some("key".into()))));
        assert!(r[&5].is_ok());

        // A later batch: the retry conflicts in the database and gets the original.
        let mut jobs = vec![
            post(&f, who(1002, "bob"), "new one", Some("K2"), &out, 6),
            post(&f, alice(), "hello", Some("K"), &out, 7),
            post(&f, alice(), "other", Some("K"), &out, 8),
            post(&f, alice(), "fresh", Some("K3"), &out, 9),
        ];
        f.writer.commit(&mut jobs).await;
        let r = replies(&out);
        assert_eq!(r[&7], Ok(original), "{r:?}");
        assert_eq!(r[&8], Err((ErrorCode::InvalidRequest, Some("key".into()))));
        assert!(r[&6].is_ok() && r[&9].is_ok());

        let texts: Vec<String> = history(&f).await.into_iter().map(|(_, t)| t).collect();
        assert_eq!(texts, ["hello", "hi", "unkeyed", "new one", "fresh"]);
        assert_eq!(delivered(&bob_sees), texts, "each message delivered once");

        // Keys of room messages and of private messages are separate.
        let mut jobs = vec![Job::Direct {
            from: alice(),
            to: who(1002, "bob"),
            text: "private".into(),
            key: Some("K".into()),
            reply: None,
            attachments: Vec::new(),
            ack: Ack {
                outbound: out.clone(),
                re: 10,
                owed: Arc::<InFlight>::default().owe(),
            },
        }];
        f.writer.commit(&mut jobs).await;
        assert!(replies(&out)[&10].is_ok());
    }

    /// A change for the tests: sets alice's password hash, then tells bob.
    #[derive(Debug)]
    struct SetHash(&'static str);

    impl Change for SetHash {
        fn store<'a>(
            &'a mut self,
            store: &'a Store,
            tx: &'a mut Tx,
            _now: i64,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), StoreError>> + Send + 'a>>
        {
            Box::pin(async move {
                if self.0.is_empty() {
                    return Err(StoreError::Conflict);
                }
                store.set_password_hash_in(tx, 1001, self.0).await
            })
        }

        fn stored(self: Box<Self>, now: i64) -> Result<(Vec<Message>, Reply), ErrorBody> {
            let notice = Event::Notice {
                from: "alice".into(),
                from_alias: "alice".into(),
                text: format!("hash {}", self.0),
                ts: now,
                id: None,
            };
            Ok((
                vec![Message::Event(Audience::User(1002), notice)],
                Reply::Ping(salon_proto::reply::Empty {}),
            ))
        }
    }

    #[tokio::test]
    async fn a_change_is_stored_after_the_messages_before_it_then_published_then_answered() {
        let mut f = fixture().await;
        let bob_sees = listener(&f);
        let out = Outbound::new(1, 1000, 1 << 20, &NATIVE);
        let change = |hash: &'static str, re| Job::Change {
            change: Box::new(SetHash(hash)),
            ack: Ack {
                outbound: out.clone(),
                re,
                owed: Arc::<InFlight>::default().owe(),
            },
        };
        let mut jobs = vec![
            change("first", 1),
            post(&f, who(1001, "alice"), "after the change", None, &out, 2),
            change("", 3),
        ];
        f.writer.commit(&mut jobs).await;
        let stored = f.store.user_by_name("alice").await.unwrap().unwrap();
        assert_eq!(stored.password_hash, "first");
        // Bob got the message and the change's notice; the one that failed told nobody.
        let bob: Vec<String> = frames(&bob_sees)
            .into_iter()
            .filter_map(|frame| match frame {
                ServerFrame::Event(Event::Message(m)) => Some(m.text),
                ServerFrame::Event(Event::Notice { text, .. }) => Some(text),
                _ => None,
            })
            .collect();
        assert_eq!(bob, ["after the change", "hash first"]);
        let answers: Vec<(u64, bool)> = frames(&out)
            .into_iter()
            .filter_map(|frame| match frame {
                ServerFrame::Ok { re, .. } => Some((re, true)),
                ServerFrame::Error { re: Some(re), .. } => Some((re, false)),
                _ => None,
            })
            .collect();
        // The message's batch commits first; then the changes, in order, each answered.
        assert_eq!(answers, [(2, true), (1, true), (3, false)]);
    }
}
