//! The message writer: group commit, then fan-out.
//!
//! Sessions hand accepted messages to one writer task through a bounded queue. The writer
//! takes everything pending (up to `commit_batch_max`), stores it in one transaction, and
//! only after the commit assigns nothing more but: encodes each message once, queues it to
//! the recipients through the [`Hub`], and acknowledges it to its sender. So a message is
//! acknowledged or delivered only once it is on disk (R24), many messages share one
//! fsync, and the order of ids, of commits and of delivery is the same.
//!
//! Lifetime: the writer runs until `stop` is cancelled; it then refuses new messages
//! (senders get `shutting_down`) and commits everything already queued before returning.

use std::sync::Arc;

use bytes::Bytes;
use salon_proto::{
    encode_error, encode_ok, Accepted, DirectMessage, ErrorBody, ErrorCode, Event, RoomMessage,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::clock::SharedClock;
use crate::hub::{encode_event, Hub, Identity, Outbound};
use crate::ids::IdGenerator;
use crate::store::{NewDirect, NewRoomMessage, RoomRow, Store};

/// Where to send the acknowledgement of a message. While it exists, its session counts
/// one reply still owed ([`InFlight`]).
#[derive(Debug)]
pub struct Ack {
    pub outbound: Outbound,
    pub re: u64,
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

/// A message accepted by a handler (authorised, validated), not yet stored.
#[derive(Debug)]
pub enum Job {
    Room {
        room: Arc<RoomRow>,
        author: Identity,
        text: String,
        ack: Ack,
    },
    Direct {
        from: Identity,
        to: Identity,
        text: String,
        ack: Ack,
    },
}

impl Job {
    fn ack(&self) -> &Ack {
        match self {
            Job::Room { ack, .. } | Job::Direct { ack, .. } => ack,
        }
    }
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
    hub: Arc<Hub>,
    ids: Arc<IdGenerator>,
    clock: SharedClock,
    batch_max: usize,
    /// Least time between the starts of two commits while busy.
    pacing: std::time::Duration,
}

/// A commit of at least this many messages means the server is busy: the next commit is
/// paced.
const PACING_THRESHOLD: usize = 8;

pub fn channel(
    capacity: usize,
    batch_max: usize,
    pacing: std::time::Duration,
    store: Store,
    hub: Arc<Hub>,
    ids: Arc<IdGenerator>,
    clock: SharedClock,
) -> (Persist, Writer) {
    let (tx, rx) = mpsc::channel(capacity);
    (
        Persist { tx },
        Writer {
            rx,
            store,
            hub,
            ids,
            clock,
            batch_max,
            pacing,
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

    async fn commit(&mut self, jobs: &mut Vec<Job>) {
        let now = self.clock.now_ms();
        let mut rooms = Vec::new();
        let mut directs = Vec::new();
        let mut ids = Vec::with_capacity(jobs.len());
        for job in jobs.iter() {
            let id = self.ids.next(now);
            ids.push(id);
            match job {
                Job::Room {
                    room, author, text, ..
                } => rooms.push(NewRoomMessage {
                    id,
                    room_id: room.id,
                    author_id: author.id,
                    body: text.clone(),
                    created_at: now,
                }),
                Job::Direct { from, to, text, .. } => directs.push(NewDirect {
                    id,
                    sender_id: from.id,
                    recipient_id: to.id,
                    body: text.clone(),
                    created_at: now,
                    // Recorded only when the recipient acknowledges it (`ack_directs`).
                    delivered: false,
                }),
            }
        }
        let started = std::time::Instant::now();
        let stored = self.store.insert_messages(&rooms, &directs).await;
        let committed = started.elapsed();
        if let Err(e) = stored {
            // Nothing was acknowledged, so nothing accepted is lost: every sender is told
            // its message was not stored.
            tracing::error!(error = %e, batch = jobs.len(), "storing a message batch failed");
            let body = if e.is_unavailable() {
                ErrorBody::new(
                    ErrorCode::Unavailable,
                    "the database is unavailable; your message was not stored, send it again \
                     later",
                )
            } else {
                ErrorBody::new(ErrorCode::Internal, "your message could not be stored")
            };
            for job in jobs.drain(..) {
                let ack = job.ack();
                ack.outbound
                    .push(Bytes::from(encode_error(Some(ack.re), body.clone())));
            }
            return;
        }
        let batch = jobs.len();
        for (job, id) in jobs.drain(..).zip(ids) {
            match job {
                Job::Room {
                    room,
                    author,
                    text,
                    ack,
                } => {
                    let frame = encode_event(Event::Message(RoomMessage {
                        id,
                        room: room.name.clone(),
                        author: author.username,
                        alias: author.alias,
                        text,
                        ts: now,
                    }));
                    ack_ok(&ack, id, now);
                    self.hub.to_room(room.id, &frame);
                }
                Job::Direct {
                    from,
                    to,
                    text,
                    ack,
                } => {
                    let frame = encode_event(Event::Direct(DirectMessage {
                        id,
                        from: from.username,
                        from_alias: from.alias,
                        to: to.username,
                        text,
                        ts: now,
                    }));
                    ack_ok(&ack, id, now);
                    self.hub.deliver_direct(id, from.id, to.id, &frame);
                }
            }
        }
        tracing::trace!(
            batch,
            commit_us = committed.as_micros() as u64,
            fanout_us = (started.elapsed() - committed).as_micros() as u64,
            "batch stored and delivered"
        );
    }
}

fn ack_ok(ack: &Ack, id: i64, ts: i64) {
    ack.outbound
        .push(Bytes::from(encode_ok(ack.re, &Accepted { id, ts })));
}
