//! Catching up from the database (issue 16): a node that may have missed bus messages
//! (NATS went away, its subscription lagged and the client dropped some, another node's
//! sequence jumped, or that node died or restarted with some still queued) reads the
//! room and private messages stored since then, by id, and hands its sessions those they
//! did not get live. Exactly once: the live path and the catch-up both go through one
//! bounded record of the message ids this node delivered ([`Seen`]).
//!
//! What is covered, in this order:
//! - the memberships of the users connected here (reloaded first, so caught-up messages
//!   reach members only), with a `membership` event for each room whose relation to the
//!   user changed;
//! - revocations: a session whose token was deleted before it expired (kick, ban,
//!   password change or reset) is closed, with the reason its sanctions give;
//! - room messages and private messages (as they are stored now), exactly once;
//! - edits, deletions and reactions (added or taken back), of any message, from the
//!   `message_changes` record the nodes of a cluster write, as the message is when read
//!   (some may be told twice: applying them again changes nothing), but not over what
//!   was applied live since the read ([`ChangeWindow`]).
//!
//! - joins and leaves (`member_changes`): the `room_member` notices, exactly once (the
//!   live notice carries the change's id, recorded with the delivered ids);
//! - read states: the users connected here whose read state changed (`read_changes`)
//!   are told it again, as at login;
//! - administrators' broadcasts (stored in the audit log before they are told), exactly
//!   once (the same record of delivered ids).
//!
//! Not replayed: statuses (the presence view resynchronises on its own: `view.rs`) and
//! typing (docs/CLUSTER.md).
//!
//! Lifetimes: one [`CatchUp`] per cluster node, shared by the bus (`NatsBus::publish`), the
//! subscriber task, the NATS client's event callback and the catch-up task, which lives
//! as long as the process.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use salon_proto::{CloseCode, Event, SanctionKind};
use tokio::sync::Notify;

use super::bus::{Audience, Message};
use super::outbound::CloseReason;
use super::{room_info, Live};
use crate::clock::SharedClock;
use crate::store::{ChangeReach, RoomRow, Store};
use crate::{ids, lock};

/// Node numbers a bus message can carry (ids have 4 bits of node: `ids.rs`).
const NODES: usize = 16;

/// Messages read from the database at a time.
const PAGE: u32 = 256;

/// How long ago a node may have published the last of its own heartbeats it took back
/// from its subscription while it counts as current (`CatchUp::current`). A node
/// publishes one every second (`nats::HEARTBEAT`) and takes it back within a round trip
/// through NATS: longer than this, the node is behind on what the others published, or
/// cut off.
pub(super) const STALE_AFTER: Duration = Duration::from_secs(2);

/// How often a node that is not current, with no catch-up running, makes the registry
/// of its connected users what the database says (`CatchUp::recheck_while_behind`).
const BEHIND_RECHECK: Duration = Duration::from_secs(2);

/// How often the recheck task looks whether the node is current (atomic loads only): the
/// first recheck comes within this of the node ceasing to be current, not within
/// [`BEHIND_RECHECK`].
const BEHIND_LOOK: Duration = Duration::from_millis(250);

/// How far the clocks of two nodes may disagree (NTP keeps them far closer). Part of the
/// margin a catch-up goes back by, with the longest a commit may take.
const CLOCK_SKEW_MS: i64 = 5_000;

/// Keys a change window holds at most; more, and it no longer holds any catch-up back.
const WINDOW_MAX: usize = 16_384;

/// What an edit, deletion or reaction event changes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum ChangeKey {
    Edit(i64),
    Delete(i64),
    /// Message, emoji, user.
    Reaction(i64, String, String),
}

impl ChangeKey {
    fn of(event: &Event) -> Option<ChangeKey> {
        match event {
            Event::Edited { id, .. } => Some(ChangeKey::Edit(*id)),
            Event::Deleted { id, .. } => Some(ChangeKey::Delete(*id)),
            Event::Reaction {
                id, emoji, user, ..
            } => Some(ChangeKey::Reaction(*id, emoji.clone(), user.clone())),
            _ => None,
        }
    }
}

/// The edits, deletions and reactions this node applied live while the catch-up reads
/// and tells a page of `message_changes`. The page tells each change as the message was
/// when it was read; one applied live after the read began may be newer, and telling
/// the page's state after it would undo it on the sessions (a reaction taken back shown
/// again). So a page does not tell what was applied live since it was read, for the same
/// message and edit, deletion or reaction (and nothing more of a message deleted since,
/// but its deletion). Held only while a page is read and told; at most [`WINDOW_MAX`]
/// keys, beyond which the window holds nothing back (each change is then told, as
/// before the window existed).
#[derive(Debug, Default)]
pub(super) struct ChangeWindow(Mutex<Option<Window>>);

#[derive(Debug, Default)]
struct Window {
    live: HashSet<ChangeKey>,
    full: bool,
}

/// An open [`ChangeWindow`], closed when dropped (also if the catch-up is dropped
/// while it reads).
pub(super) struct Opened<'a>(&'a ChangeWindow);

impl Drop for Opened<'_> {
    fn drop(&mut self) {
        *lock(&self.0 .0) = None;
    }
}

impl ChangeWindow {
    /// Opens the window: what is applied from now on is remembered until the returned
    /// guard is dropped.
    pub(super) fn open(&self) -> Opened<'_> {
        *lock(&self.0) = Some(Window::default());
        Opened(self)
    }

    /// `event` was applied live.
    pub(super) fn saw(&self, event: &Event) {
        let Some(key) = ChangeKey::of(event) else {
            return;
        };
        if let Some(window) = lock(&self.0).as_mut() {
            if window.live.len() >= WINDOW_MAX {
                window.full = true;
            } else {
                window.live.insert(key);
            }
        }
    }

    /// Tells `event` with `tell`, unless a change of the same thing, or the message's
    /// deletion, was applied live since the window opened; whether it was told. The
    /// window stays locked while it is told, so a live change applied meanwhile is
    /// applied after it (`Live::apply` takes the window's lock first).
    pub(super) fn tell_unless_overtaken(&self, event: Event, tell: impl FnOnce(Event)) -> bool {
        let guard = lock(&self.0);
        let overtaken = guard.as_ref().filter(|w| !w.full).is_some_and(|window| {
            let live = |key: ChangeKey| window.live.contains(&key);
            match ChangeKey::of(&event) {
                Some(ChangeKey::Delete(_)) | None => false,
                Some(key @ (ChangeKey::Edit(id) | ChangeKey::Reaction(id, ..))) => {
                    live(key) || live(ChangeKey::Delete(id))
                }
            }
        });
        if !overtaken {
            tell(event);
        }
        !overtaken
    }

    /// Whether the catch-up would tell `event` now.
    #[cfg(test)]
    fn tells(&self, event: &Event) -> bool {
        self.tell_unless_overtaken(event.clone(), |_| {})
    }
}

/// The ids of the room and private messages this node delivered to its sessions, live or
/// caught up: the most recent `cluster.delivered_ids_max` (131,072 by default: about
/// 3 MB), in the order delivered. A catch-up can start no earlier than the newest id it
/// forgot; a node that must go back further closes its sessions instead (`resync`),
/// since it could not tell what they already have.
#[derive(Debug)]
pub(super) struct Seen {
    ids: HashSet<i64>,
    order: VecDeque<i64>,
    max: usize,
    /// The largest id forgotten: whether an id at or below it was delivered is unknown.
    horizon: i64,
}

impl Seen {
    pub(super) fn new(max: usize) -> Seen {
        Seen {
            ids: HashSet::new(),
            order: VecDeque::new(),
            max: max.max(1),
            horizon: 0,
        }
    }

    /// Records `id` as delivered: true the first time (deliver it), false after.
    pub(super) fn first(&mut self, id: i64) -> bool {
        if !self.ids.insert(id) {
            return false;
        }
        self.order.push_back(id);
        while self.order.len() > self.max {
            if let Some(old) = self.order.pop_front() {
                self.ids.remove(&old);
                self.horizon = self.horizon.max(old);
            }
        }
        true
    }

    /// The largest id forgotten (0: none).
    pub(super) fn horizon(&self) -> i64 {
        self.horizon
    }
}

#[derive(Debug, Clone, Copy)]
struct Heard {
    boot: u64,
    seq: u64,
    /// When it was published (the publisher's clock).
    at: i64,
}

/// The last message heard from each other node: its boot (a random number per start),
/// its sequence number in that boot, and when it was published.
#[derive(Debug, Default)]
pub(super) struct Senders([Option<Heard>; NODES]);

impl Senders {
    /// Records message `seq` of `node`'s boot `boot`, published at `at`. When messages
    /// before it may be missing (a jump in the sequence, or a new boot: the previous one
    /// may have died with messages it had stored and acknowledged still in its queue for
    /// NATS), returns when the last one heard was published: this node is whole up to
    /// then. The first message heard from a node is never a gap: nothing it sent before
    /// concerned this node's sessions, which did not exist yet.
    pub(super) fn receive(&mut self, node: u16, boot: u64, seq: u64, at: i64) -> Option<i64> {
        let slot = self.0.get_mut(usize::from(node))?;
        let heard = Heard { boot, seq, at };
        match *slot {
            None => {
                *slot = Some(heard);
                None
            }
            Some(last) if last.boot == boot => {
                if seq <= last.seq {
                    return None; // a repeat, or older: nothing new missing
                }
                *slot = Some(heard);
                (seq > last.seq + 1).then_some(last.at)
            }
            Some(last) => {
                *slot = Some(heard);
                Some(last.at)
            }
        }
    }

    /// `node` stopped cleanly, having published everything: its next boot is heard as
    /// a first one (not a gap).
    pub(super) fn forget(&mut self, node: u16) {
        if let Some(slot) = self.0.get_mut(usize::from(node)) {
            *slot = None;
        }
    }

    /// When the last message heard from `node` was published, if any was.
    pub(super) fn last_at(&self, node: u16) -> Option<i64> {
        self.0.get(usize::from(node))?.map(|heard| heard.at)
    }
}

/// The two tables of messages a catch-up reads, in this order.
#[derive(Debug, Clone, Copy)]
enum Table {
    Rooms,
    Directs,
}

/// A node's catch-up state (see the module's documentation).
pub(super) struct CatchUp {
    live: Arc<Live>,
    store: Store,
    clock: SharedClock,
    /// How far before the last moment it was whole a catch-up starts: clock skew between
    /// nodes plus the longest a commit may take (a message's id is made before its
    /// commit, and it is published after).
    margin_ms: i64,
    seen: Mutex<Seen>,
    /// How many ids `seen` holds.
    remembered: usize,
    /// Where catch-ups start at the earliest: past every id made before the last
    /// `resync` (the sessions since then loaded history at login).
    after_resync: AtomicI64,
    senders: Mutex<Senders>,
    /// The time since which this node may have missed bus messages (margin taken off);
    /// `None` while it is whole.
    missed_since: Mutex<Option<i64>>,
    /// When the last message this node took from its subscription was published (its
    /// own included: they come back), or when it started.
    last_at: AtomicI64,
    /// When the last of this node's own heartbeats it took back from the subscription was
    /// published (milliseconds since `epoch`, a monotonic clock), or when it started.
    own_back_ms: AtomicU64,
    epoch: Instant,
    /// A replay is running: the registry may not hold what it reads yet.
    replaying: AtomicBool,
    connected: AtomicBool,
    /// Wakes the catch-up task: something was missed, or NATS is back.
    wake: Notify,
}

impl CatchUp {
    pub(super) fn new(
        live: Arc<Live>,
        store: Store,
        clock: SharedClock,
        commit_max_ms: i64,
        remembered: usize,
    ) -> CatchUp {
        let now = clock.now_ms();
        CatchUp {
            live,
            store,
            clock,
            margin_ms: CLOCK_SKEW_MS + commit_max_ms,
            seen: Mutex::new(Seen::new(remembered)),
            remembered,
            after_resync: AtomicI64::new(0),
            senders: Mutex::default(),
            missed_since: Mutex::new(None),
            last_at: AtomicI64::new(now),
            own_back_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            replaying: AtomicBool::new(false),
            connected: AtomicBool::new(true),
            wake: Notify::new(),
        }
    }

    pub(super) fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Whether `message` is to be applied: true unless it is a room or private message
    /// this node already delivered (which it records).
    pub(super) fn fresh(&self, message: &Message) -> bool {
        match message {
            Message::Event(Audience::Room(_), Event::Message(m)) => lock(&self.seen).first(m.id),
            Message::Direct { id, .. } => lock(&self.seen).first(*id),
            Message::Event(Audience::Everyone, Event::Notice { id: Some(id), .. })
            | Message::Event(Audience::Room(_), Event::RoomMember { id: Some(id), .. }) => {
                lock(&self.seen).first(*id)
            }
            _ => true,
        }
    }

    /// A message taken from the subscription: message `seq` of `node`'s boot `boot`,
    /// published at `at`; `own` when this node sent it.
    pub(super) fn heard(&self, node: u16, boot: u64, seq: u64, at: i64, own: bool) {
        self.last_at.store(at, Ordering::Relaxed);
        if own {
            return;
        }
        let gap = lock(&self.senders).receive(node, boot, seq, at);
        if let Some(whole_until) = gap {
            tracing::warn!(node, seq, "bus messages from another node were missed");
            self.missed(whole_until, "gap");
        }
    }

    /// Whether this node holds every change the others published until
    /// [`STALE_AFTER`] ago: connected, nothing missed waiting to be caught up, no
    /// catch-up running, and one of its own heartbeats published within that time taken
    /// back from the subscription. A message another node published before that
    /// heartbeat reached NATS reached this node before it (one server keeps one order),
    /// so was applied here. While not current, what the registry says may be behind: a
    /// membership it shows is checked in the database (`Service::is_member`).
    pub(super) fn current(&self) -> bool {
        let back = Duration::from_millis(self.own_back_ms.load(Ordering::Relaxed));
        self.connected.load(Ordering::SeqCst)
            && !self.replaying.load(Ordering::SeqCst)
            && self.epoch.elapsed().saturating_sub(back) <= STALE_AFTER
            && lock(&self.missed_since).is_none()
    }

    /// This node took back one of its own heartbeats, published at `published`.
    pub(super) fn own_heartbeat_back(&self, published: Instant) {
        let ms = published.saturating_duration_since(self.epoch).as_millis();
        self.own_back_ms
            .fetch_max(u64::try_from(ms).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// `node` said goodbye (it stopped cleanly, everything it published came before).
    pub(super) fn departed(&self, node: u16) {
        lock(&self.senders).forget(node);
    }

    /// `node` was taken for dead (not heard for `view::NODE_EXPIRY`): a node killed may
    /// have stored and acknowledged messages whose bus messages died in its queue, so
    /// catch up from the last message heard from it (or, if none was, from the last
    /// taken from the subscription).
    pub(super) fn gone(&self, node: u16) {
        let heard = lock(&self.senders).last_at(node);
        let whole_until = heard.unwrap_or_else(|| self.last_at.load(Ordering::Relaxed));
        self.missed(whole_until, "node_gone");
    }

    /// What the NATS client tells of its connection.
    pub(super) fn on_event(&self, event: async_nats::Event) {
        match event {
            async_nats::Event::Disconnected => {
                tracing::warn!("the cluster bus lost NATS");
                self.connected.store(false, Ordering::SeqCst);
                self.missed(self.last_at.load(Ordering::Relaxed), "disconnected");
            }
            async_nats::Event::Connected => {
                self.connected.store(true, Ordering::SeqCst);
                self.wake.notify_one();
            }
            async_nats::Event::SlowConsumer(_) => {
                // The client dropped messages for this node's subscription: newer than
                // the last one taken from it.
                self.missed(self.last_at.load(Ordering::Relaxed), "slow_consumer");
            }
            other => tracing::warn!(event = %other, "cluster bus"),
        }
    }

    /// This node was whole until `whole_until` (a publisher's time): catch up from
    /// there, less the margin.
    fn missed(&self, whole_until: i64, why: &'static str) {
        metrics::counter!(crate::metrics::CLUSTER_BUS_MISSED, "why" => why).increment(1);
        self.mark(whole_until.saturating_sub(self.margin_ms));
        self.wake.notify_one();
    }

    /// Something since `since` may be missing (the earliest such time is kept).
    fn mark(&self, since: i64) {
        let mut missed = lock(&self.missed_since);
        *missed = Some(missed.map_or(since, |s| s.min(since)));
    }

    /// The catch-up task: whenever something was missed and NATS is there, makes sure the
    /// subscription is live again (`flush`: every message published from now on reaches
    /// this node), then replays from the database.
    pub(super) async fn run(
        self: Arc<Self>,
        client: async_nats::Client,
        caught_up: impl Fn() + Send + 'static,
    ) {
        loop {
            self.wake.notified().await;
            if !self.connected.load(Ordering::SeqCst) {
                continue; // `Connected` wakes it again
            }
            // Set before `missed_since` is emptied: the node never looks current between.
            self.replaying.store(true, Ordering::SeqCst);
            let Some(since) = lock(&self.missed_since).take() else {
                self.replaying.store(false, Ordering::SeqCst);
                continue;
            };
            let replayed = match client.flush().await {
                Ok(()) => self.replay(since).await,
                Err(e) => Err(e.to_string()),
            };
            match replayed {
                Ok(delivered) => {
                    metrics::counter!(crate::metrics::CLUSTER_CAUGHT_UP).increment(delivered);
                    tracing::info!(delivered, since, "cluster bus caught up from the database");
                    caught_up();
                }
                Err(error) => {
                    tracing::warn!(%error, "catching up from the database failed; trying again");
                    self.mark(since);
                    self.replaying.store(false, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    self.wake.notify_one();
                    continue;
                }
            }
            self.replaying.store(false, Ordering::SeqCst);
        }
    }

    /// While this node is not current (cut from NATS, or behind on its subscription)
    /// and no catch-up runs, at once (within [`BEHIND_LOOK`]) and then every
    /// [`BEHIND_RECHECK`]: makes the memberships of the users connected here what the
    /// database says, and closes the sessions whose token was revoked elsewhere, as a
    /// catch-up does first; before them, adds the rooms created since it may have
    /// stopped hearing the bus. Without it, what a node missed held until the bus came
    /// back: a user who left a room on another node still received, on a session here,
    /// the messages this node's own users sent to it, a banned user's idle session here
    /// stayed open, and a private channel created elsewhere was `no_such_room` here for
    /// its members, for the whole outage. The costs, while not current only: one read
    /// of the rooms made since then (through the primary key), two per 128 users
    /// connected here and one of their tokens per 128, each time.
    pub(super) async fn recheck_while_behind(self: Arc<Self>) {
        let mut tick = tokio::time::interval(BEHIND_LOOK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        // When the last recheck ran; `None` while current (the next one runs at once).
        let mut last: Option<Instant> = None;
        loop {
            tick.tick().await;
            if self.current() {
                last = None;
                continue;
            }
            if self.replaying.load(Ordering::SeqCst)
                || last.is_some_and(|at| at.elapsed() < BEHIND_RECHECK)
            {
                continue;
            }
            last = Some(Instant::now());
            let since = lock(&self.missed_since).unwrap_or_else(|| {
                self.last_at
                    .load(Ordering::Relaxed)
                    .saturating_sub(self.margin_ms)
            });
            let checked = async {
                self.add_rooms_from(ids::floor_at(since)).await?;
                self.reconcile_memberships().await?;
                self.close_revoked().await
            }
            .await;
            match checked {
                Ok(()) => failing = false,
                // Once per failing streak: the database may be away for as long.
                Err(error) if !failing => {
                    failing = true;
                    tracing::warn!(%error, "rechecking memberships while behind failed");
                }
                Err(error) => tracing::debug!(%error, "rechecking memberships while behind failed"),
            }
        }
    }

    /// Delivers to this node's sessions every room and private message stored since
    /// `since` that it has not delivered yet, in id order, a page at a time. Returns how
    /// many it delivered. When `since` is older than what [`Seen`] remembers, or there
    /// is more to deliver than half of it (what it delivers would push out ids that late
    /// live copies may still repeat), closes every session instead (`resync`): they
    /// reload history.
    async fn replay(&self, since: i64) -> Result<u64, String> {
        let from = ids::floor_at(since).max(self.after_resync.load(Ordering::SeqCst));
        // First, whichever way this goes: the sessions that log in again after a
        // `resync` name the rooms created meanwhile too (room lookups have no database
        // fallback).
        self.reconcile_rooms().await?;
        if from <= lock(&self.seen).horizon() {
            self.resync(since).await;
            return Ok(0);
        }
        self.reconcile_memberships().await?;
        self.close_revoked().await?;
        let budget = (self.remembered / 2) as u64;
        let mut delivered = 0;
        for table in [Table::Rooms, Table::Directs] {
            let mut after = from - 1;
            loop {
                let page = self.page(table, after).await?;
                let full = page.len() == PAGE as usize;
                for (id, message) in page {
                    after = id;
                    let Some(message) = message else {
                        continue; // a room this node never heard of has no member here
                    };
                    if !lock(&self.seen).first(id) {
                        continue;
                    }
                    self.live.apply(message);
                    delivered += 1;
                }
                if delivered > budget {
                    self.resync(since).await;
                    return Ok(delivered);
                }
                if !full {
                    break;
                }
            }
        }
        if !self.replay_changes(since, budget).await? || !self.replay_joins(since, budget).await? {
            self.resync(since).await;
            return Ok(delivered);
        }
        self.replay_reads(since).await?;
        self.replay_broadcasts(from).await?;
        self.replay_shutdown(from).await?;
        Ok(delivered)
    }

    /// The next [`PAGE`] messages of `table` after id `after`, in id order, each with its
    /// id and the bus message that delivers it (`None`: a room this node never heard of).
    async fn page(&self, table: Table, after: i64) -> Result<Vec<(i64, Option<Message>)>, String> {
        Ok(match table {
            Table::Rooms => {
                let page = self
                    .store
                    .room_messages_after(after, PAGE)
                    .await
                    .map_err(|e| e.to_string())?;
                let directory = self.live.directory();
                page.into_iter()
                    .map(|(room, mut message)| {
                        let id = message.id;
                        let named = directory.by_id.get(&room).map(|r| {
                            message.room = r.name.clone();
                            Message::Event(Audience::Room(room), Event::Message(message))
                        });
                        (id, named)
                    })
                    .collect()
            }
            Table::Directs => self
                .store
                .directs_after(after, PAGE)
                .await
                .map_err(|e| e.to_string())?
                .into_iter()
                .map(|(from, to, message)| {
                    let id = message.id;
                    let event = Event::Direct(message);
                    (
                        id,
                        Some(Message::Direct {
                            id,
                            from,
                            to,
                            event,
                        }),
                    )
                })
                .collect(),
        })
    }

    /// Tells this node's sessions the administrators' broadcasts stored (in the audit
    /// log, before they are told) with an id from `from` that they were not told yet
    /// (the same record of delivered ids as messages).
    async fn replay_broadcasts(&self, from: i64) -> Result<(), String> {
        let mut after = from - 1;
        loop {
            let page = self
                .store
                .broadcasts_after(after, PAGE)
                .await
                .map_err(|e| e.to_string())?;
            let full = page.len() == PAGE as usize;
            for (id, ts, actor, alias, text) in page {
                after = id;
                if !lock(&self.seen).first(id) {
                    continue;
                }
                self.live.apply(Message::Event(
                    Audience::Everyone,
                    Event::Notice {
                        from: actor,
                        from_alias: alias,
                        text,
                        ts,
                        id: Some(id),
                    },
                ));
            }
            if !full {
                return Ok(());
            }
        }
    }

    /// A shutdown command given on another node since `from` (the audit log, written
    /// before the countdown is published): this node follows it, for what is left of
    /// its countdown (at once if it is over). One it heard already is not started again
    /// (`Live::apply` follows the first countdown only).
    async fn replay_shutdown(&self, from: i64) -> Result<(), String> {
        let Some((ts, seconds, message)) = self
            .store
            .shutdown_after(from - 1)
            .await
            .map_err(|e| e.to_string())?
        else {
            return Ok(());
        };
        let elapsed = u32::try_from((self.now_ms() - ts).max(0) / 1000).unwrap_or(u32::MAX);
        tracing::warn!(
            seconds,
            "a shutdown command given while this node did not hear the bus"
        );
        self.live.apply(Message::Shutdown {
            seconds: seconds.saturating_sub(elapsed),
            message,
        });
        Ok(())
    }

    /// Tells the users connected here whose read state changed since `since` (a
    /// `mark_read` or `set_notify` on another node, `read_changes`) their read state
    /// again: one `read` event per room and conversation (at most
    /// [`READ_STATE_CONVERSATIONS`] conversations), as at login. The client applies it
    /// as it stands (unread counts, notification level).
    async fn replay_reads(&self, since: i64) -> Result<(), String> {
        let online = self.live.hub.online_users();
        if online.is_empty() {
            return Ok(());
        }
        let changed = self
            .store
            .read_changed_among(since, &online)
            .await
            .map_err(|e| e.to_string())?;
        for user in changed {
            let states = self
                .store
                .read_states(user, crate::service::READ_STATE_CONVERSATIONS)
                .await
                .map_err(|e| e.to_string())?;
            for state in states {
                self.live
                    .apply(Message::Event(Audience::User(user), Event::Read(state)));
            }
        }
        Ok(())
    }

    /// Tells this node's sessions the edits, deletions and reactions made since `since`
    /// (`message_changes`), in the order they were made, to the room's members or the
    /// two users of the conversation. Some were told live already: applying one twice
    /// changes nothing (the protocol says so of these events). False, having told some,
    /// when there are more than `budget`: the sessions are better off reloading history.
    async fn replay_changes(&self, since: i64, budget: u64) -> Result<bool, String> {
        let mut after = 0;
        let mut told = 0u64;
        let mut overtaken = 0u64;
        loop {
            if told > budget {
                return Ok(false);
            }
            // Opened before the read: what is applied live from now on may be newer
            // than what the read finds (`ChangeWindow`).
            let window = &self.live.changes;
            let opened = window.open();
            let (page, last) = self
                .store
                .changes_after(since, after, PAGE)
                .await
                .map_err(|e| e.to_string())?;
            for change in page {
                told += 1;
                let live = &self.live;
                let tell = |event: Event| match change.reach {
                    ChangeReach::Room(room) => {
                        live.apply_unwatched(Message::Event(Audience::Room(room), event))
                    }
                    ChangeReach::Pair(a, b) => {
                        if a != b {
                            live.apply_unwatched(Message::Event(Audience::User(b), event.clone()));
                        }
                        live.apply_unwatched(Message::Event(Audience::User(a), event));
                    }
                };
                if !window.tell_unless_overtaken(change.event, tell) {
                    overtaken += 1;
                }
            }
            drop(opened);
            match last {
                Some(last) => after = last,
                None => break,
            }
        }
        if told > 0 {
            tracing::info!(
                told,
                overtaken,
                since,
                "message changes caught up from the database"
            );
        }
        Ok(true)
    }

    /// Tells the rooms' members here who joined or left since `since` (`member_changes`:
    /// joins, leaves and accepted requests), in the order they were made, each once (the
    /// same record of delivered ids: the live notice carries the change's id). False,
    /// having told none, when there are more than `budget`.
    async fn replay_joins(&self, since: i64, budget: u64) -> Result<bool, String> {
        let limit = u32::try_from(budget.saturating_add(1)).unwrap_or(u32::MAX);
        let changes = self
            .store
            .member_changes_since(since, limit)
            .await
            .map_err(|e| e.to_string())?;
        if changes.len() as u64 > budget {
            return Ok(false);
        }
        let mut told = 0;
        for change in changes {
            let Some(room) = self.live.directory().by_id.get(&change.room_id).cloned() else {
                continue; // a room this node never heard of has no member here
            };
            if !lock(&self.seen).first(change.id) {
                continue;
            }
            told += 1;
            self.live.apply(Message::Event(
                Audience::Room(room.id),
                Event::RoomMember {
                    room: room.name.clone(),
                    user: change.username,
                    alias: change.alias,
                    joined: change.joined != 0,
                    id: Some(change.id),
                },
            ));
        }
        if told > 0 {
            tracing::info!(told, since, "joins and leaves caught up from the database");
        }
        Ok(true)
    }

    /// Closes the sessions here whose token was deleted before it expired: a kick, a ban
    /// or a password change or reset this node missed (the token is deleted before the
    /// revocation is published: `Service::revoke_user`). The reason says which, from the
    /// user's sanctions. One read of the tokens per 128 users connected here.
    async fn close_revoked(&self) -> Result<(), String> {
        let tokens = self.live.hub.session_tokens();
        if tokens.is_empty() {
            return Ok(());
        }
        let mut users: Vec<i64> = tokens.iter().map(|t| t.1).collect();
        users.sort_unstable();
        users.dedup();
        let existing = self
            .store
            .session_tokens_of(&users)
            .await
            .map_err(|e| e.to_string())?;
        let now = self.clock.now_ms();
        let mut revoked: HashMap<i64, Vec<u64>> = HashMap::new();
        for (session, user, hash, expires) in tokens {
            if expires > now && !existing.contains(&hash) {
                revoked.entry(user).or_default().push(session);
            }
        }
        for (user, sessions) in revoked {
            let reason = revoked_reason(&self.store, user, now)
                .await
                .map_err(|e| e.to_string())?;
            tracing::info!(
                user,
                sessions = sessions.len(),
                "closing sessions revoked while cut off"
            );
            self.live.hub.close_sessions(user, &sessions, &reason);
        }
        Ok(())
    }

    /// Adds to this node's directory the rooms created while it did not hear the bus
    /// (cut from NATS, or starting: the directory is read before the subscription):
    /// before its memberships and messages are caught up, which name them.
    pub(super) async fn reconcile_rooms(&self) -> Result<(), String> {
        let rooms = self.store.rooms().await.map_err(|e| e.to_string())?;
        self.add_missing_rooms(rooms);
        Ok(())
    }

    /// [`CatchUp::reconcile_rooms`] for the rooms whose id is `from` or larger only:
    /// while behind, the rooms made since this node may have stopped hearing the bus.
    async fn add_rooms_from(&self, from: i64) -> Result<(), String> {
        let rooms = self
            .store
            .rooms_from(from)
            .await
            .map_err(|e| e.to_string())?;
        self.add_missing_rooms(rooms);
        Ok(())
    }

    fn add_missing_rooms(&self, rooms: Vec<RoomRow>) {
        let missing: Vec<RoomRow> = {
            let directory = self.live.directory();
            rooms
                .into_iter()
                .filter(|room| !directory.by_id.contains_key(&room.id))
                .collect()
        };
        for room in missing {
            tracing::info!(room = %room.name, "a room created while this node did not hear the bus");
            self.live.apply(Message::RoomCreated(room));
        }
    }

    /// Makes the rooms and pending requests of every user connected here what the
    /// database says: joins and leaves announced while this node missed the bus would
    /// otherwise leave them out of a room they joined, or in one they left (where the
    /// messages caught up next would reach them). Read for all of them at once (two
    /// queries per 128 users); the users whose rooms a bus message changed meanwhile are
    /// read again (three rounds at most, then left to the bus).
    async fn reconcile_memberships(&self) -> Result<(), String> {
        let hub = &self.live.hub;
        let mut users = hub.online_users();
        for round in 0..3 {
            if users.is_empty() {
                break;
            }
            if round > 0 {
                tracing::debug!(
                    users = users.len(),
                    "memberships changed while being reconciled"
                );
            }
            let changes: Vec<(i64, u64)> = users
                .iter()
                .filter_map(|u| Some((*u, hub.membership_changes(*u)?)))
                .collect();
            let ids: Vec<i64> = changes.iter().map(|c| c.0).collect();
            let mut states = self
                .store
                .room_states_of(&ids)
                .await
                .map_err(|e| e.to_string())?;
            users.clear();
            for (user, changed_count) in changes {
                let (rooms, pending) = states.remove(&user).unwrap_or_default();
                let (member, waiting) = (rooms.clone(), pending.clone());
                let Some(changed) = hub.reconcile(user, changed_count, rooms, pending) else {
                    users.push(user); // read again
                    continue;
                };
                // The `membership` events the user's sessions here missed.
                for room in changed {
                    let Some(row) = self.live.directory().by_id.get(&room).cloned() else {
                        continue;
                    };
                    self.live.apply(Message::Event(
                        Audience::User(user),
                        Event::Membership {
                            room: room_info(&row, &member, &waiting),
                            reason: None,
                        },
                    ));
                }
            }
        }
        Ok(())
    }

    /// Closes every session of this node with `resync`: it cannot tell what they missed.
    /// Later catch-ups start past every id made so far (and past what [`Seen`] forgot):
    /// the sessions then are new and load history at login, which has all of those
    /// committed by then; one committed later is published later, when the bus is
    /// whole again (a catch-up runs once NATS is back).
    async fn resync(&self, since: i64) {
        let made = self.store.max_generated_id().await.unwrap_or(0);
        let horizon = lock(&self.seen).horizon();
        self.after_resync
            .fetch_max(made.max(horizon) + 1, Ordering::SeqCst);
        let closed = self.live.hub.close_all(&CloseReason {
            code: Some(CloseCode::Resync),
            message: "this server lost its link to the others for too long: \
                      reconnect and load history again"
                .into(),
            drain: true,
            until: None,
        });
        tracing::warn!(
            closed,
            since,
            "too much missed to catch up: sessions closed"
        );
    }
}

/// Why `user`'s sessions were revoked (their tokens deleted before they expired): a ban,
/// a kick still running, or else their password was changed or reset.
pub(crate) async fn revoked_reason(
    store: &Store,
    user: i64,
    now: i64,
) -> Result<CloseReason, crate::store::StoreError> {
    let sanctions = store.sanctions_of(user).await?;
    let ban = sanctions
        .iter()
        .find(|s| s.sanction.kind == SanctionKind::Ban);
    let kick = sanctions.iter().find(|s| {
        s.sanction.kind == SanctionKind::Kick && s.sanction.ends_at.is_some_and(|t| t > now)
    });
    // The words of the live close (service/moderation.rs), from what is stored.
    Ok(match (ban, kick) {
        (Some(ban), _) => crate::service::banned_close(&ban.by, &ban.sanction.reason),
        (None, Some(kick)) => {
            let until = kick.sanction.ends_at.unwrap_or(now);
            crate::service::kicked_close(&kick.by, until - kick.since, &kick.sanction.reason, until)
        }
        (None, None) => CloseReason {
            code: Some(CloseCode::PasswordChanged),
            message: "your password was changed or reset; log in again".into(),
            drain: true,
            until: None,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reaction(id: i64, emoji: &str, user: &str, added: bool) -> Event {
        Event::Reaction {
            id,
            place: salon_proto::Place {
                room: Some("Général".into()),
                ..Default::default()
            },
            emoji: emoji.into(),
            user: user.into(),
            alias: user.into(),
            added,
        }
    }

    fn edited(id: i64, text: &str) -> Event {
        Event::Edited {
            id,
            place: salon_proto::Place::default(),
            text: text.into(),
            edited: 1,
        }
    }

    fn deleted(id: i64) -> Event {
        Event::Deleted {
            id,
            place: salon_proto::Place::default(),
        }
    }

    #[test]
    fn a_page_does_not_tell_what_was_applied_live_since_it_was_read() {
        let live = Live::default();
        let window = &live.changes;
        let apply = |event: Event| live.apply(Message::Event(Audience::Room(1), event));
        // Closed: nothing is remembered, everything told.
        apply(reaction(7, "👍", "bob", true));
        assert!(window.tells(&reaction(7, "👍", "bob", false)));

        let opened = window.open();
        apply(reaction(7, "👍", "bob", true));
        apply(edited(8, "newer"));
        // The page read before them holds older states of these: not told.
        assert!(!window.tells(&reaction(7, "👍", "bob", false)));
        assert!(!window.tells(&edited(8, "older")));
        // Other reactions, and other things of the same messages, are told.
        assert!(window.tells(&reaction(7, "👍", "carol", true)));
        assert!(window.tells(&reaction(7, "🎉", "bob", true)));
        assert!(window.tells(&reaction(8, "👍", "bob", true)));
        assert!(window.tells(&edited(7, "text")));
        assert!(window.tells(&deleted(8)));
        // After a deletion applied live, only the deletion of that message is told.
        apply(deleted(9));
        assert!(!window.tells(&edited(9, "older")));
        assert!(!window.tells(&reaction(9, "👍", "bob", true)));
        assert!(window.tells(&deleted(9)));
        // What the catch-up tells itself is not remembered as live.
        live.apply_unwatched(Message::Event(Audience::Room(1), edited(10, "caught up")));
        assert!(window.tells(&edited(10, "again")));

        drop(opened);
        assert!(window.tells(&reaction(7, "👍", "bob", false)));
    }

    #[test]
    fn a_full_change_window_holds_nothing_back() {
        let window = ChangeWindow::default();
        let _opened = window.open();
        for id in 0..WINDOW_MAX as i64 {
            window.saw(&edited(id, "x"));
        }
        assert!(!window.tells(&edited(0, "older")));
        window.saw(&edited(-1, "one too many"));
        assert!(window.tells(&edited(0, "older")));
        assert!(window.tells(&edited(-1, "older")));
    }

    #[test]
    fn an_id_is_delivered_once_and_the_record_is_bounded() {
        let mut seen = Seen::new(3);
        assert!(seen.first(10));
        assert!(!seen.first(10), "the second time: already delivered");
        assert!(seen.first(12));
        assert!(seen.first(11));
        assert_eq!(seen.horizon(), 0, "nothing forgotten yet");
        assert!(seen.first(13));
        // The oldest delivered (10) is forgotten: the horizon says so.
        assert_eq!(seen.horizon(), 10);
        assert_eq!(seen.ids.len(), 3);
        assert!(!seen.first(12) && !seen.first(11) && !seen.first(13));
        assert!(seen.first(14));
        assert_eq!(
            seen.horizon(),
            12,
            "forgotten in delivery order, horizon the max"
        );
        assert_eq!((seen.ids.len(), seen.order.len()), (3, 3));
    }

    #[test]
    fn a_jump_in_a_nodes_sequence_is_a_gap_since_its_last_message() {
        let mut senders = Senders::default();
        assert_eq!(
            senders.receive(2, 7, 40, 1_000),
            None,
            "first heard: no gap"
        );
        assert_eq!(senders.receive(2, 7, 41, 1_010), None);
        assert_eq!(senders.receive(2, 7, 41, 1_010), None, "a repeat");
        assert_eq!(
            senders.receive(2, 7, 44, 1_050),
            Some(1_010),
            "42, 43 missed"
        );
        assert_eq!(
            senders.receive(2, 7, 43, 1_040),
            None,
            "older: nothing more"
        );
        assert_eq!(senders.receive(2, 7, 45, 1_060), None);
        // Another node's numbers are its own.
        assert_eq!(senders.receive(3, 1, 9, 1_070), None);
        // Node 2 restarted: its last boot may have died with messages unpublished, so a
        // new boot is a gap since the last message heard, even from its first message.
        assert_eq!(senders.receive(2, 8, 1, 2_000), Some(1_060));
        assert_eq!(senders.receive(2, 9, 5, 3_000), Some(2_000));
        assert_eq!(senders.last_at(2), Some(3_000));
        assert_eq!(senders.last_at(4), None, "never heard");
        // A node number no id can carry is ignored.
        assert_eq!(senders.receive(99, 1, 5, 3_000), None);
    }
}
