//! The cluster bus (issue 16): the same [`Message`]s as [`super::LocalBus`], applied on
//! this node at once and also published on NATS for every other node of the cluster,
//! whose handler ([`Live::apply`]) applies them there.
//!
//! One subject carries them all, `<cluster>.bus`: a message is published once, whatever
//! the number of nodes or of members, and NATS hands it once to each subscribed node.
//! Each message names the node it comes from; a node skips its own (it applied them when
//! publishing). NATS keeps one publisher's messages in order on a subject, so a node sees
//! another node's changes in the order they were made there (a join before the messages
//! that follow it).
//!
//! Presence across nodes (`view.rs`): every message carries the node's boot id (random
//! per start); presence facts and a heartbeat sent every [`HEARTBEAT`] carry the count of
//! facts the node published in this boot. A receiver asks a node for a snapshot of its
//! present users on `<cluster>.node.<id>.presence` when it does not follow it yet (new
//! node, new boot, a gap in the count); a starting node asks every node at once on
//! `<cluster>.presence`. `connected` asks every node on `<cluster>.connected`. Answers
//! come as pages (each under the NATS payload limit) to the asker's inbox.
//!
//! Publishing never waits: the message goes into a bounded queue that one task drains
//! into the NATS client. When that queue is full (NATS unreachable for a long while), the
//! message is counted and dropped from the bus only: what it announced is already stored.
//!
//! Nothing committed is lost to a connected member for all that: every message carries
//! its node's boot and a sequence number (the heartbeat too, so a loss at the tail is
//! seen within a [`HEARTBEAT`]), so a receiver sees a jump; the NATS client says when it
//! loses its server and when its subscription overflows. Each of those starts a catch-up
//! from the database ([`super::catchup`]), and the live path and the catch-up share one
//! record of what was delivered, so each room or private message reaches a session once.
//!
//! A membership change made here is applied here at once, before NATS has ordered it
//! with the others. One made on another node just before (a join answered there, then a
//! leave here) can still be on its way here: it came first in NATS's order, which every
//! other node follows, so it must not undo this node's newer change when it arrives.
//! Until this node takes its own change back from the subscription, another node's
//! change of the same user's relation to the same room is not applied here
//! (`Numbers::changing`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use salon_proto::SessionInfo;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::bus::{Bus, Message};
use super::catchup::{self, CatchUp};
use super::view::{NodeId, Present};
use super::Live;
use crate::clock::SharedClock;
use crate::config::ClusterConfig;
use crate::lock;
use crate::store::Store;

/// Messages waiting for the NATS client, at most.
const PUBLISH_QUEUE: usize = 65_536;
/// Bytes of messages waiting for the NATS client, at most (a message is at most a few
/// tens of kilobytes: 65,536 of the largest would be more than a gigabyte).
const PUBLISH_QUEUE_BYTES: usize = 64 << 20;

/// How often a node tells the others it is alive (and how many facts and messages it
/// published: a receiver that missed its last ones notices within this time).
pub const HEARTBEAT: Duration = Duration::from_secs(1);

/// How long a starting node gathers the other nodes' snapshots.
const START_GATHER: Duration = Duration::from_millis(300);

/// How long a snapshot asked of one node may take.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(2);

/// How long a barrier waits for the other nodes once it came back to this node
/// (`Bus::settled`): past this, a node that has not applied it has not taken back any of
/// its own messages for longer than `catchup::STALE_AFTER`, so it is not current and
/// checks memberships in the database.
const BARRIER_AFTER_ECHO: Duration =
    catchup::STALE_AFTER.saturating_add(Duration::from_millis(500));

/// How long a barrier waits at most, when it does not even come back to this node (cut
/// off from NATS): the others take it for dead after `view::NODE_EXPIRY` and catch up
/// memberships from the database.
const BARRIER_MAX: Duration = super::view::NODE_EXPIRY;

/// How long `connected` waits for the other nodes' sessions.
const CONNECTED_WAIT: Duration = Duration::from_secs(1);

/// Most bytes one page of an answer carries (NATS refuses payloads over its
/// `max_payload`, 1 MB by default; a page stays under half of it).
const PAGE_BYTES_MAX: usize = 256 * 1024;

/// Most bytes one gathering accepts, all pages of all nodes together.
const GATHER_BYTES_MAX: usize = 64 * 1024 * 1024;

/// What travels on the bus subject: the node it comes from, that node's boot (random per
/// start), the message's number in that boot (1, 2, 3…, heartbeats included: a receiver
/// sees a jump), when it was published (the node's clock), and the message (none in a
/// heartbeat). `facts` is the count of presence facts the node has published in this
/// boot, carried by a fact (its number) and by a heartbeat; other messages do not carry
/// it. Written by [`envelope`].
#[derive(Deserialize)]
struct Incoming {
    node: NodeId,
    boot: u64,
    seq: u64,
    at: i64,
    #[serde(default)]
    facts: Option<u64>,
    #[serde(default)]
    message: Option<Message>,
}

/// A barrier waiting: the nodes yet to answer, whom to tell when none is left, and whom
/// to tell when this node takes the barrier back from its own subscription (it reached
/// NATS, and every node's subscription, in order).
struct Barrier {
    waiting: HashSet<NodeId>,
    answered: Option<tokio::sync::oneshot::Sender<()>>,
    echoed: Option<tokio::sync::oneshot::Sender<()>>,
}

/// A barrier published and waited for (`Bus::settled`, `Bus::published`): told when every
/// node in its set answered and when it came back to this node. Dropped (answered, timed
/// out, or the request given up), it leaves `Shared::barriers`.
struct PendingBarrier<'a> {
    shared: &'a Shared,
    token: u64,
    answered: tokio::sync::oneshot::Receiver<()>,
    came_back: tokio::sync::oneshot::Receiver<()>,
}

impl<'a> PendingBarrier<'a> {
    /// Registers a barrier waiting for `nodes` and publishes it.
    fn publish(shared: &'a Shared, nodes: HashSet<NodeId>) -> PendingBarrier<'a> {
        let token = shared
            .next_barrier
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (answered, all_answered) = tokio::sync::oneshot::channel();
        let (echoed, came_back) = tokio::sync::oneshot::channel();
        lock(&shared.barriers).insert(
            token,
            Barrier {
                waiting: nodes,
                answered: Some(answered),
                echoed: Some(echoed),
            },
        );
        shared.hand_over(Some(&Message::Barrier {
            node: shared.node,
            token,
        }));
        PendingBarrier {
            shared,
            token,
            answered: all_answered,
            came_back,
        }
    }
}

impl Drop for PendingBarrier<'_> {
    fn drop(&mut self) {
        lock(&self.shared.barriers).remove(&self.token);
    }
}

/// The numbers a node gives what it publishes, under one lock (see `Shared::numbers`).
#[derive(Default)]
struct Numbers {
    /// The last sequence number given (every bus message and heartbeat).
    seq: u64,
    /// The count of presence facts published.
    facts: u64,
    /// The heartbeats published and not taken back yet (number and when), the oldest
    /// first; at most [`HEARTBEATS_PENDING`] (older ones are forgotten: the node is not
    /// current anyway).
    heartbeats: VecDeque<(u64, std::time::Instant)>,
    /// This node said goodbye: it publishes nothing more.
    gone: bool,
    /// This node's membership changes queued for NATS and not taken back yet: for each
    /// user, room and part of their relation to it, the last one's number and when it
    /// was queued. Another node's change of the same thing that arrives meanwhile came
    /// before it in NATS's order (and so, on every other node, is undone by it): it is
    /// not applied here. An entry goes when its message, or any later heartbeat, comes
    /// back (NATS keeps one publisher's order: a change not back by then was lost with
    /// the connection, and every node catches up memberships from the database).
    /// Bounded by the changes made while nothing comes back (a node cut off); past
    /// [`CHANGING_PRUNE_AT`], those older than [`BARRIER_MAX`] are dropped.
    changing: HashMap<Changed, (u64, Instant)>,
}

/// What a membership message changes: whose relation to which room, and which part of
/// it (member or not, waiting for a decision or not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Changed {
    user: super::hub::UserId,
    room: super::hub::RoomId,
    waiting: bool,
}

impl Changed {
    fn of(message: &Message) -> Option<Changed> {
        match *message {
            Message::Joined { user, room } | Message::Left { user, room } => Some(Changed {
                user,
                room,
                waiting: false,
            }),
            Message::Pending { user, room, .. } => Some(Changed {
                user,
                room,
                waiting: true,
            }),
            _ => None,
        }
    }
}

/// Entries of `Numbers::changing` above which those older than [`BARRIER_MAX`] are
/// dropped (a node cut off while its users change rooms).
const CHANGING_PRUNE_AT: usize = 4_096;

/// Heartbeats remembered until they come back: a minute of them.
const HEARTBEATS_PENDING: usize = 64;

/// One page of a node's answer (a presence snapshot or its sessions).
#[derive(Deserialize)]
struct Page<T> {
    node: NodeId,
    boot: u64,
    facts: u64,
    last: bool,
    items: Vec<T>,
}

/// Subjects of one cluster.
#[derive(Clone)]
struct Subjects {
    bus: String,
    /// This node's snapshot, asked by one node.
    own_presence: String,
    /// Where the other nodes tell this one they applied its barriers.
    own_barrier: String,
    /// Every node's snapshot, asked by a starting node.
    all_presence: String,
    connected: String,
    cluster: String,
}

impl Subjects {
    fn new(cluster: &str, node: NodeId) -> Subjects {
        Subjects {
            bus: format!("{cluster}.bus"),
            own_presence: format!("{cluster}.node.{node}.presence"),
            own_barrier: format!("{cluster}.node.{node}.barrier"),
            all_presence: format!("{cluster}.presence"),
            connected: format!("{cluster}.connected"),
            cluster: cluster.to_owned(),
        }
    }

    fn barrier_of(&self, node: NodeId) -> String {
        format!("{}.node.{node}.barrier", self.cluster)
    }

    fn presence_of(&self, node: NodeId) -> String {
        format!("{}.node.{node}.presence", self.cluster)
    }
}

/// The sending end of the queue of bus messages waiting for the NATS client: bounded in
/// messages and in bytes ([`PUBLISH_QUEUE`], [`PUBLISH_QUEUE_BYTES`]).
struct PublishQueue {
    sender: mpsc::Sender<Bytes>,
    bytes: Arc<std::sync::atomic::AtomicUsize>,
    max_bytes: usize,
}

/// The receiving end of a [`PublishQueue`]: what it takes no longer counts.
struct Published {
    receiver: mpsc::Receiver<Bytes>,
    bytes: Arc<std::sync::atomic::AtomicUsize>,
}

fn publish_queue(messages: usize, max_bytes: usize) -> (PublishQueue, Published) {
    let (sender, receiver) = mpsc::channel(messages);
    let bytes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    (
        PublishQueue {
            sender,
            bytes: bytes.clone(),
            max_bytes,
        },
        Published { receiver, bytes },
    )
}

impl PublishQueue {
    /// Queues `wire` if both bounds leave room for it; false if not (nothing queued).
    /// Called under `Shared::numbers` (one caller at a time).
    fn offer(&self, wire: Vec<u8>) -> bool {
        use std::sync::atomic::Ordering;
        let size = wire.len();
        let queued = self.bytes.load(Ordering::Relaxed) + size <= self.max_bytes
            && self.sender.try_send(Bytes::from(wire)).is_ok();
        if queued {
            self.bytes.fetch_add(size, Ordering::Relaxed);
        }
        queued
    }
}

impl Published {
    async fn recv(&mut self) -> Option<Bytes> {
        let payload = self.receiver.recv().await?;
        self.taken(&payload);
        Some(payload)
    }

    fn try_recv(&mut self) -> Option<Bytes> {
        let payload = self.receiver.try_recv().ok()?;
        self.taken(&payload);
        Some(payload)
    }

    fn taken(&self, payload: &Bytes) {
        self.bytes
            .fetch_sub(payload.len(), std::sync::atomic::Ordering::Relaxed);
    }
}

/// The part of the bus its tasks share.
struct Shared {
    live: Arc<Live>,
    node: NodeId,
    boot: u64,
    client: async_nats::Client,
    subjects: Subjects,
    queue: PublishQueue,
    /// The numbers given in this boot. Held while a message is numbered and queued (so
    /// the queue holds them in order: one queued out of order would look like a gap), a
    /// fact also applied here, and while a snapshot reads the fact count, so that a
    /// count matches exactly the facts queued before it (lock tier 1, above the view's).
    numbers: Mutex<Numbers>,
    page_bytes: usize,
    catch_up: Arc<CatchUp>,
    /// Barriers waiting for the other nodes or for their own echo, by token. Bounded by
    /// the requests in progress that wait for one (leaves, joins and other membership
    /// changes, revocations: one per session at a time), each removed within
    /// `BARRIER_MAX`.
    barriers: Mutex<HashMap<u64, Barrier>>,
    next_barrier: std::sync::atomic::AtomicU64,
    stop: CancellationToken,
}

/// The bus of a node in a cluster.
pub struct NatsBus {
    shared: Arc<Shared>,
    /// Whether another live node answered at start (stored statuses are theirs too).
    peers_at_start: bool,
    publisher: Mutex<Option<JoinHandle<()>>>,
}

/// Why the cluster bus could not start.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error("cannot reach NATS at {urls}: {source}")]
    Connect {
        urls: String,
        #[source]
        source: async_nats::ConnectError,
    },
    #[error("cannot read the NATS credentials or TLS file {path}: {source}")]
    Credentials {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "NATS at {urls} refused this node's connection: {reason} (check cluster.nats_tls_ca, \
         nats_tls_cert, nats_tls_key and the credentials)"
    )]
    Refused { urls: String, reason: String },
    #[error("cannot subscribe to {subject} on NATS: {message}")]
    Subscribe { subject: String, message: String },
    #[error(
        "node_id {node} is already used by a live node of cluster {cluster} ({by}): \
         give each node its own node_id"
    )]
    NodeTaken {
        node: u16,
        cluster: String,
        by: String,
    },
}

/// How long a starting node waits for a live node with its `node_id` to answer.
const NODE_CHECK_WAIT: Duration = Duration::from_millis(500);
/// How long a stopping node tries to hand its last bus messages to NATS.
const LAST_WORDS_WAIT: Duration = Duration::from_secs(2);

async fn subscribe(
    client: &async_nats::Client,
    subject: &str,
) -> Result<async_nats::Subscriber, NatsError> {
    client
        .subscribe(subject.to_owned())
        .await
        .map_err(|e| NatsError::Subscribe {
            subject: subject.to_owned(),
            message: e.to_string(),
        })
}

/// The connection settings every attempt uses: credentials and TLS (docs/CLUSTER.md).
async fn connect_options(cluster: &ClusterConfig) -> Result<async_nats::ConnectOptions, NatsError> {
    let mut options = async_nats::ConnectOptions::new();
    if let Some(path) = &cluster.nats_credentials {
        options =
            options
                .credentials_file(path)
                .await
                .map_err(|source| NatsError::Credentials {
                    path: path.display().to_string(),
                    source,
                })?;
    }
    if let (Some(user), Some(password)) = (&cluster.nats_user, &cluster.nats_password) {
        options = options.user_and_password(user.clone(), password.clone());
    }
    if let Some(token) = &cluster.nats_token {
        options = options.token(token.clone());
    }
    // TLS: the files are read at each connection by the client, so a file that cannot be
    // read is refused here, once, rather than retried for ever.
    for path in [
        &cluster.nats_tls_ca,
        &cluster.nats_tls_cert,
        &cluster.nats_tls_key,
    ]
    .into_iter()
    .flatten()
    {
        std::fs::File::open(path).map_err(|source| NatsError::Credentials {
            path: path.display().to_string(),
            source,
        })?;
    }
    if let Some(ca) = &cluster.nats_tls_ca {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let (Some(cert), Some(key)) = (&cluster.nats_tls_cert, &cluster.nats_tls_key) {
        options = options
            .add_client_certificate(cert.clone(), key.clone())
            .require_tls(true);
    }
    Ok(options)
}

/// How long the first attempt at start waits for NATS.
const FIRST_ATTEMPT_WAIT: Duration = Duration::from_secs(5);

/// One attempt to reach NATS, before the client that retries for ever: a configuration
/// NATS refuses (a certificate it does not accept or that does not verify, wrong
/// credentials) stops the start with its reason; NATS unreachable is logged with the
/// reason and left to the retries (it may be starting too).
async fn first_attempt(cluster: &ClusterConfig, urls: &str) -> Result<(), NatsError> {
    use async_nats::ConnectErrorKind as Kind;
    let attempt = connect_options(cluster)
        .await?
        .connection_timeout(FIRST_ATTEMPT_WAIT)
        .connect(cluster.nats_urls.as_slice())
        .await;
    match attempt {
        Ok(client) => {
            let _ = client.drain().await;
            Ok(())
        }
        Err(e) => {
            let refused = match tls_refusal(&e) {
                Some(tls) => Some(format!("the TLS handshake failed: {tls}")),
                None => matches!(
                    e.kind(),
                    Kind::Tls | Kind::Authentication | Kind::AuthorizationViolation
                )
                .then(|| crate::one_line(&e)),
            };
            match refused {
                Some(reason) => Err(NatsError::Refused {
                    urls: urls.to_owned(),
                    reason,
                }),
                None => {
                    tracing::warn!(
                        urls,
                        error = %crate::one_line(&e),
                        "cannot reach NATS yet; retrying until it answers"
                    );
                    Ok(())
                }
            }
        }
    }
}

/// How the TLS handshake failed, if it did, somewhere in `error`'s sources (a
/// certificate that does not verify, one the server refused): the client reports it as
/// an I/O error.
fn tls_refusal(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next = Some(error);
    while let Some(e) = next {
        let inner = e
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
            .map(|inner| inner as &(dyn std::error::Error + 'static));
        if let Some(tls) = [Some(e), inner]
            .into_iter()
            .flatten()
            .find_map(|e| e.downcast_ref::<rustls::Error>())
        {
            return Some(tls.to_string());
        }
        next = e.source();
    }
    None
}

impl NatsBus {
    /// Connects to NATS, subscribes to the cluster's subjects, gathers the other nodes'
    /// presence and starts the tasks that publish, apply, answer, catch up and send
    /// heartbeats. Waits for the first connection, so that a node never serves without
    /// its bus; later outages are retried for ever by the client.
    ///
    /// `store` and `clock` serve the catch-up; `commit_max_ms` is the longest a commit
    /// may take (the database timeout), part of how far back a catch-up goes.
    pub async fn start(
        live: Arc<Live>,
        node: u16,
        cluster: &ClusterConfig,
        store: Store,
        clock: SharedClock,
        commit_max_ms: i64,
    ) -> Result<Arc<NatsBus>, NatsError> {
        let catch_up = Arc::new(CatchUp::new(
            live.clone(),
            store,
            clock,
            commit_max_ms,
            cluster.delivered_ids_max,
        ));
        live.hub.remember_attach_marks();
        let events = catch_up.clone();
        let urls = cluster.nats_urls.join(",");
        first_attempt(cluster, &urls).await?;
        let options = connect_options(cluster)
            .await?
            .name(format!("salon-{}-node-{node}", cluster.name))
            .retry_on_initial_connect()
            .max_reconnects(None)
            .subscription_capacity(cluster.nats_pending_max.max(1))
            .event_callback(move |event| {
                events.on_event(event);
                async {}
            });
        let client = options
            .connect(cluster.nats_urls.as_slice())
            .await
            .map_err(|source| NatsError::Connect {
                urls: urls.clone(),
                source,
            })?;
        // `node_id` is part of every id a node makes: refuse to start beside a live node
        // that has it. Each node answers on `<cluster>.node.<id>` while it runs.
        let identity = format!("{}.node.{node}", cluster.name);
        // No responders (nobody has it) or no answer in time: the id is free. Asked once
        // connected (with NATS not there yet, the question would wait in the client
        // until the timeout and read as "free").
        let _ = client.flush().await;
        let asked = client.request(identity.clone(), Bytes::new());
        if let Ok(Ok(answer)) = tokio::time::timeout(NODE_CHECK_WAIT, asked).await {
            return Err(NatsError::NodeTaken {
                node,
                cluster: cluster.name.clone(),
                by: String::from_utf8_lossy(&answer.payload).into_owned(),
            });
        }
        let stop = CancellationToken::new();
        let callers = subscribe(&client, &identity).await?;
        let me = Bytes::from(format!(
            "process {} started at {}",
            std::process::id(),
            humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        ));
        answer_each(callers, stop.clone(), {
            let client = client.clone();
            move |reply| {
                let (client, me) = (client.clone(), me.clone());
                async move {
                    let _ = client.publish(reply, me).await;
                }
            }
        });

        let subjects = Subjects::new(&cluster.name, node);
        let subscriber = subscribe(&client, &subjects.bus).await?;
        let (queue, waiting) = publish_queue(PUBLISH_QUEUE, PUBLISH_QUEUE_BYTES);
        let page_bytes = (client.server_info().max_payload / 2).clamp(1024, PAGE_BYTES_MAX);
        let shared = Arc::new(Shared {
            live,
            node,
            boot: rand::random(),
            client: client.clone(),
            subjects: subjects.clone(),
            queue,
            numbers: Mutex::new(Numbers::default()),
            page_bytes,
            catch_up: catch_up.clone(),
            barriers: Mutex::new(HashMap::new()),
            next_barrier: std::sync::atomic::AtomicU64::new(1),
            stop: stop.clone(),
        });
        let mut answers = subscribe(&client, &subjects.own_barrier).await?;
        tokio::spawn(stop.clone().run_until_cancelled_owned({
            let shared = shared.clone();
            async move {
                while let Some(answer) = answers.next().await {
                    match serde_json::from_slice::<(NodeId, u64)>(&answer.payload) {
                        Ok((node, token)) => shared.barrier_answered(node, token),
                        Err(e) => tracing::warn!(error = %e, "an unreadable barrier answer"),
                    }
                }
            }
        }));
        for subject in [&subjects.own_presence, &subjects.all_presence] {
            let callers = subscribe(&client, subject).await?;
            let shared = shared.clone();
            answer_each(callers, stop.clone(), move |reply| {
                let shared = shared.clone();
                async move { shared.answer_snapshot(reply).await }
            });
        }
        let callers = subscribe(&client, &subjects.connected).await?;
        answer_each(callers, stop.clone(), {
            let shared = shared.clone();
            move |reply| {
                let shared = shared.clone();
                async move { shared.answer_sessions(reply).await }
            }
        });
        // Every node's messages from now on reach this one before it serves anyone.
        let _ = client.flush().await;
        // A room created between reading the directory and subscribing was heard by
        // nobody here: read them again, now that the bus brings every later one.
        if let Err(error) = catch_up.reconcile_rooms().await {
            tracing::warn!(%error, "the rooms could not be read again after subscribing");
        }
        tracing::info!(node, nats = %urls, subject = %subjects.bus, "cluster bus connected");

        let publisher = tokio::spawn(publish_queued(
            client.clone(),
            subjects.bus.clone(),
            waiting,
            stop.clone(),
        ));
        tokio::spawn(shared.clone().apply_incoming(subscriber));
        // Statuses are not replayed from the database and not counted as presence
        // facts are: one lost on the bus is found in the other nodes' snapshots, asked
        // for after every catch-up.
        let resync_presence = {
            let shared = Arc::downgrade(&shared);
            move || {
                let Some(shared) = shared.upgrade() else {
                    return;
                };
                for node in shared.live.live_nodes() {
                    tokio::spawn(shared.clone().sync_with(node));
                }
            }
        };
        tokio::spawn(
            stop.clone()
                .run_until_cancelled_owned(catch_up.clone().run(client.clone(), resync_presence)),
        );
        tokio::spawn(
            stop.clone()
                .run_until_cancelled_owned(catch_up.recheck_while_behind()),
        );
        // What every live node holds now; facts that come meanwhile are kept by the view
        // and replayed after each node's snapshot.
        let peers = shared.gather_snapshots().await;
        tokio::spawn(shared.clone().heartbeats());
        Ok(Arc::new(NatsBus {
            shared,
            peers_at_start: peers > 0,
            publisher: Mutex::new(Some(publisher)),
        }))
    }

    /// Whether another live node answered when this one started: the statuses stored in
    /// the database are then partly theirs, and are not reset (`lib.rs`).
    pub fn peers_at_start(&self) -> bool {
        self.peers_at_start
    }
}

/// Answers each request of `callers` with `answer(reply subject)`, one at a time, until
/// `stop`.
fn answer_each<F, Fut>(mut callers: async_nats::Subscriber, stop: CancellationToken, answer: F)
where
    F: Fn(async_nats::Subject) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        loop {
            let call = tokio::select! {
                _ = stop.cancelled() => break,
                call = callers.next() => call,
            };
            let Some(call) = call else { break };
            if let Some(reply) = call.reply {
                answer(reply).await;
            }
        }
    });
}

/// Hands queued payloads to NATS, in order. At `stop`, what is queued already is still
/// handed over (a stopping node's last presence facts) and flushed, for at most
/// [`LAST_WORDS_WAIT`]: with NATS away the client's own queue fills, and a node told to
/// stop must not wait for NATS to return (what the others then miss of it they catch up
/// from the database when they take it for gone).
async fn publish_queued(
    client: async_nats::Client,
    subject: String,
    mut waiting: Published,
    stop: CancellationToken,
) {
    loop {
        let payload = tokio::select! {
            biased;
            payload = waiting.recv() => payload,
            _ = stop.cancelled() => None,
        };
        let Some(payload) = payload else { break };
        let handed = tokio::select! {
            biased;
            handed = client.publish(subject.clone(), payload) => handed,
            _ = stop.cancelled() => break,
        };
        if let Err(e) = handed {
            metrics::counter!(crate::metrics::CLUSTER_BUS_LOST).increment(1);
            tracing::warn!(error = %e, "a bus message could not be handed to NATS");
        }
    }
    let last_words = async {
        while let Some(payload) = waiting.try_recv() {
            let _ = client.publish(subject.clone(), payload).await;
        }
        let _ = client.flush().await;
    };
    if tokio::time::timeout(LAST_WORDS_WAIT, last_words)
        .await
        .is_err()
    {
        tracing::warn!("stopping without NATS: the last bus messages were not all handed over");
    }
}

impl Shared {
    /// Numbers `message` (a heartbeat when `None`) and queues it for NATS, without
    /// waiting; a presence fact is also counted and applied here in the same section.
    /// Returns whether this node applies it (a presence fact is applied here already).
    fn hand_over(&self, message: Option<&Message>) -> bool {
        let body = match message.map(serde_json::to_vec).transpose() {
            Ok(body) => body,
            Err(e) => {
                tracing::error!(error = %e, "a bus message could not be encoded");
                return true;
            }
        };
        let fact = matches!(message, Some(Message::NodePresence { .. }));
        let at = self.catch_up.now_ms();
        let mut numbers = lock(&self.numbers);
        if numbers.gone {
            return true; // applied here only
        }
        numbers.gone = matches!(message, Some(Message::Goodbye { .. }));
        numbers.seq += 1;
        if fact {
            numbers.facts += 1;
        }
        let facts = (fact || message.is_none()).then_some(numbers.facts);
        if message.is_none() {
            if numbers.heartbeats.len() == HEARTBEATS_PENDING {
                numbers.heartbeats.pop_front();
            }
            let seq = numbers.seq;
            numbers
                .heartbeats
                .push_back((seq, std::time::Instant::now()));
        }
        let wire = envelope(
            self.node,
            self.boot,
            numbers.seq,
            at,
            facts,
            body.as_deref(),
        );
        if fact {
            if let Some(message) = message {
                self.live.apply(message.clone());
            }
        }
        let queued = self.queue.offer(wire);
        if let Some(changed) = message.and_then(Changed::of).filter(|_| queued) {
            let now = Instant::now();
            if numbers.changing.len() >= CHANGING_PRUNE_AT {
                numbers
                    .changing
                    .retain(|_, (_, at)| now.duration_since(*at) < BARRIER_MAX);
            }
            let seq = numbers.seq;
            numbers.changing.insert(changed, (seq, now));
        }
        if queued {
            metrics::counter!(crate::metrics::CLUSTER_BUS_PUBLISHED, "kind" => kind(message))
                .increment(1);
        } else if message.is_some() {
            drop(numbers);
            metrics::counter!(crate::metrics::CLUSTER_BUS_LOST).increment(1);
            tracing::warn!(
                "the cluster bus queue is full: a message reaches this node only \
                 (the others catch up from the database)"
            );
        }
        !fact
    }

    /// Applies what other nodes publish, until `stop`.
    async fn apply_incoming(self: Arc<Self>, mut subscriber: async_nats::Subscriber) {
        loop {
            let delivery = tokio::select! {
                _ = self.stop.cancelled() => return,
                delivery = subscriber.next() => delivery,
            };
            let Some(delivery) = delivery else { break };
            match serde_json::from_slice::<Incoming>(&delivery.payload) {
                // No node has such an id (the configuration refuses it): not one of ours,
                // and not to be given a place in the presence view or the catch-up's
                // records.
                Ok(incoming) if incoming.node > crate::ids::MAX_SERVER_NODE => {
                    tracing::warn!(
                        node = incoming.node,
                        "a bus message from an impossible node id"
                    );
                }
                Ok(incoming) => self.apply_one(incoming),
                Err(e) => tracing::warn!(error = %e, "an unreadable message on the cluster bus"),
            }
        }
        tracing::warn!("the cluster bus subscription ended");
    }

    fn apply_one(self: &Arc<Self>, incoming: Incoming) {
        let from = incoming.node;
        metrics::counter!(
            crate::metrics::CLUSTER_BUS_RECEIVED,
            "from" => if from == self.node { "this_node" } else { "other_nodes" },
            "kind" => kind(incoming.message.as_ref())
        )
        .increment(1);
        self.catch_up.heard(
            from,
            incoming.boot,
            incoming.seq,
            incoming.at,
            from == self.node && incoming.boot == self.boot,
        );
        if from == self.node {
            if incoming.boot == self.boot {
                self.own_back(incoming.seq, incoming.message.as_ref());
            }
            if incoming.boot != self.boot {
                tracing::error!(
                    node = from,
                    "another process publishes with this node's node_id: give each node its own"
                );
            }
            return;
        }
        let now = Instant::now();
        let live = &self.live;
        let mut ask = live.with_view(|v| v.heard(from, incoming.boot, now));
        let changed = incoming.message.as_ref().and_then(Changed::of);
        match (incoming.message, incoming.facts) {
            (None, Some(count)) => {
                ask |= live.with_view(|v| (v.heartbeat(from, count, now), Vec::new()));
            }
            (Some(Message::NodePresence { present, who, .. }), Some(count)) => {
                ask |= live.with_view(|v| {
                    let (change, ask) = v.fact(from, count, present, who, now);
                    (ask, change.into_iter().collect())
                });
            }
            // Every message `node` published before this one is applied: tell it.
            (Some(Message::Barrier { node, token }), _) => {
                let (client, subject) = (self.client.clone(), self.subjects.barrier_of(node));
                let answer = Bytes::from(format!("[{},{token}]", self.node));
                tokio::spawn(async move {
                    let _ = client.publish(subject, answer).await;
                });
            }
            (Some(Message::Goodbye { .. }), _) => {
                tracing::info!(node = from, "node stopped cleanly");
                self.catch_up.departed(from);
                live.with_view(|v| ((), v.departed(from)));
                self.forget_in_barriers(from);
                return;
            }
            // A membership change this node made after it (see `Numbers::changing`)
            // stands. Checked and applied in one section: one made here meanwhile is
            // either seen, or applied after it.
            (Some(message), _) if changed.is_some() => {
                let numbers = lock(&self.numbers);
                if changed.is_some_and(|c| numbers.changing.contains_key(&c)) {
                    metrics::counter!(crate::metrics::CLUSTER_MEMBERSHIP_OVERTAKEN).increment(1);
                    tracing::debug!(
                        node = from,
                        "a membership change overtaken by a newer one made here"
                    );
                } else {
                    live.apply(message);
                }
            }
            // A room or private message already caught up from the database is not
            // delivered again.
            (Some(message), _) => {
                if self.catch_up.fresh(&message) {
                    live.apply(from_elsewhere(message))
                }
            }
            (None, None) => {}
        }
        if ask {
            tokio::spawn(self.clone().sync_with(from));
        }
    }

    /// `node` applied barrier `token`.
    fn barrier_answered(&self, node: NodeId, token: u64) {
        let mut barriers = lock(&self.barriers);
        if let Some(barrier) = barriers.get_mut(&token) {
            barrier.waiting.remove(&node);
            if barrier.waiting.is_empty() {
                if let Some(tell) = barrier.answered.take() {
                    let _ = tell.send(());
                }
            }
        }
    }

    /// `node` said goodbye: no barrier waits for it any more.
    fn forget_in_barriers(&self, node: NodeId) {
        for barrier in lock(&self.barriers).values_mut() {
            if barrier.waiting.remove(&node) && barrier.waiting.is_empty() {
                if let Some(tell) = barrier.answered.take() {
                    let _ = tell.send(());
                }
            }
        }
    }

    /// This node took back its own message `seq` (`message`, none: a heartbeat).
    fn own_back(&self, seq: u64, message: Option<&Message>) {
        match message {
            Some(Message::Barrier { token, .. }) => self.barrier_echoed(*token),
            Some(message) => {
                if Changed::of(message).is_some() {
                    lock(&self.numbers)
                        .changing
                        .retain(|_, (changed, _)| *changed > seq);
                }
            }
            None => {
                let mut numbers = lock(&self.numbers);
                numbers.changing.retain(|_, (changed, _)| *changed > seq);
                let mut published = None;
                while numbers.heartbeats.front().is_some_and(|(s, _)| *s <= seq) {
                    published = numbers.heartbeats.pop_front().filter(|(s, _)| *s == seq);
                }
                drop(numbers);
                if let Some((_, at)) = published {
                    self.catch_up.own_heartbeat_back(at);
                }
            }
        }
    }

    /// This node took its own barrier `token` back from the subscription.
    fn barrier_echoed(&self, token: u64) {
        if let Some(tell) = lock(&self.barriers)
            .get_mut(&token)
            .and_then(|b| b.echoed.take())
        {
            let _ = tell.send(());
        }
    }

    /// Asks `node` for its snapshot and applies it (again while the view asks for it).
    async fn sync_with(self: Arc<Self>, node: NodeId) {
        for _ in 0..3 {
            let pages = gather::<Present>(
                &self.client,
                self.subjects.presence_of(node),
                SNAPSHOT_WAIT,
                Some(&HashSet::from([node])),
                self.node,
            )
            .await;
            let Some(answer) = pages.into_iter().find(|a| a.node == node && a.done) else {
                tracing::warn!(node, "no presence snapshot from node; asked again later");
                return;
            };
            let again = self.live.with_view(|v| {
                v.snapshot(
                    node,
                    answer.boot,
                    answer.facts,
                    answer.items,
                    Instant::now(),
                )
            });
            if !again {
                tracing::debug!(node, "presence of node in step");
                return;
            }
        }
    }

    /// Gathers every live node's snapshot (at start). Returns how many answered.
    async fn gather_snapshots(&self) -> usize {
        let answers = gather::<Present>(
            &self.client,
            self.subjects.all_presence.clone(),
            START_GATHER,
            None,
            self.node,
        )
        .await;
        let mut peers = 0;
        for answer in answers.into_iter().filter(|a| a.done) {
            peers += 1;
            self.live.with_view(|v| {
                let (_again, changes) = v.snapshot(
                    answer.node,
                    answer.boot,
                    answer.facts,
                    answer.items,
                    Instant::now(),
                );
                ((), changes)
            });
        }
        tracing::info!(peers, "presence gathered from the live nodes");
        peers
    }

    /// Sends this node's present users, with the count of facts they reflect.
    async fn answer_snapshot(&self, reply: async_nats::Subject) {
        let (facts, users) = {
            let numbers = lock(&self.numbers);
            (
                numbers.facts,
                self.live.with_view(|v| (v.own(), Vec::new())),
            )
        };
        self.answer_pages(reply, facts, &users).await;
    }

    /// Sends this node's sessions.
    async fn answer_sessions(&self, reply: async_nats::Subject) {
        let sessions = self.own_sessions();
        self.answer_pages(reply, 0, &sessions).await;
    }

    fn own_sessions(&self) -> Vec<SessionInfo> {
        let mut sessions = self.live.connected();
        for s in &mut sessions {
            s.node = Some(self.node);
        }
        sessions
    }

    /// Sends `items` to `reply` in pages of at most `page_bytes` (one item larger than
    /// that still goes, alone).
    async fn answer_pages<T: Serialize>(
        &self,
        reply: async_nats::Subject,
        facts: u64,
        items: &[T],
    ) {
        for page in pages(self.node, self.boot, facts, items, self.page_bytes) {
            if let Err(e) = self.client.publish(reply.clone(), page).await {
                tracing::warn!(error = %e, "an answer page could not be sent");
                return;
            }
        }
        let _ = self.client.flush().await;
    }

    /// Every `HEARTBEAT`: tells the others this node is alive (with its fact count), and
    /// expires the nodes not heard for `view::NODE_EXPIRY`.
    async fn heartbeats(self: Arc<Self>) {
        let mut tick = tokio::time::interval(HEARTBEAT);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            self.hand_over(None);
            let dead = self.live.with_view(|v| v.expire(Instant::now()));
            for node in dead {
                tracing::warn!(
                    node,
                    "node not heard for too long: its users' presence is removed"
                );
                self.catch_up.gone(node);
            }
        }
    }
}

/// The payload of bus message `seq` of `node`'s boot `boot`, published at `at`, with the
/// fact count `facts` if it carries one: `body` is the message's JSON (none: a
/// heartbeat). Read back as [`Incoming`].
fn envelope(
    node: NodeId,
    boot: u64,
    seq: u64,
    at: i64,
    facts: Option<u64>,
    body: Option<&[u8]>,
) -> Vec<u8> {
    let facts = facts.map(|n| format!("\"facts\":{n},")).unwrap_or_default();
    let head =
        format!("{{\"node\":{node},\"boot\":{boot},\"seq\":{seq},\"at\":{at},{facts}\"message\":");
    let body = body.unwrap_or(b"null");
    let mut wire = Vec::with_capacity(head.len() + body.len() + 1);
    wire.extend_from_slice(head.as_bytes());
    wire.extend_from_slice(body);
    wire.push(b'}');
    wire
}

/// `items` as the pages of one answer: each a [`Page`] whose items take at most
/// `page_bytes` (an item larger than that goes alone); the last one says so. At least one
/// page, empty when there is nothing to send.
fn pages<T: Serialize>(
    node: NodeId,
    boot: u64,
    facts: u64,
    items: &[T],
    page_bytes: usize,
) -> Vec<Bytes> {
    let mut encoded = Vec::with_capacity(items.len());
    for item in items {
        match serde_json::to_vec(item) {
            Ok(bytes) => encoded.push(bytes),
            Err(e) => tracing::error!(error = %e, "an answer item could not be encoded"),
        }
    }
    let mut pages = Vec::new();
    let mut start = 0;
    loop {
        let mut end = start;
        let mut size = 0;
        while end < encoded.len() && (end == start || size + encoded[end].len() < page_bytes) {
            size += encoded[end].len() + 1;
            end += 1;
        }
        let last = end >= encoded.len();
        let mut page = format!(
            "{{\"node\":{node},\"boot\":{boot},\"facts\":{facts},\"last\":{last},\"items\":["
        )
        .into_bytes();
        for (i, item) in encoded[start..end].iter().enumerate() {
            if i > 0 {
                page.push(b',');
            }
            page.extend_from_slice(item);
        }
        page.extend_from_slice(b"]}");
        pages.push(Bytes::from(page));
        if last {
            return pages;
        }
        start = end;
    }
}

/// One node's answer to a gathering.
struct Answer<T> {
    node: NodeId,
    boot: u64,
    facts: u64,
    items: Vec<T>,
    /// Its last page came.
    done: bool,
}

/// Asks every node listening on `subject` and gathers their pages until `wait` is over,
/// or every node of `expected` has sent its last page. This node's own answer is skipped.
async fn gather<T: DeserializeOwned>(
    client: &async_nats::Client,
    subject: String,
    wait: Duration,
    expected: Option<&HashSet<NodeId>>,
    me: NodeId,
) -> Vec<Answer<T>> {
    // From the start: with NATS away, the client takes no command (subscribing, asking)
    // until it is back, and the asker must not wait for that.
    let deadline = Instant::now() + wait;
    let inbox = client.new_inbox();
    let asked = async {
        let pages = client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| format!("cannot subscribe to an inbox: {e}"))?;
        client
            .publish_with_reply(subject, inbox, Bytes::new())
            .await
            .map_err(|e| e.to_string())?;
        client.flush().await.map_err(|e| e.to_string())?;
        Ok::<_, String>(pages)
    };
    let mut pages = match tokio::time::timeout_at(deadline, asked).await {
        Ok(Ok(pages)) => pages,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot ask the other nodes");
            return Vec::new();
        }
        Err(_) => {
            tracing::warn!("cannot ask the other nodes: NATS does not answer");
            return Vec::new();
        }
    };
    let mut answers: HashMap<NodeId, Answer<T>> = HashMap::new();
    let mut bytes = 0;
    loop {
        if let Some(expected) = expected {
            if expected
                .iter()
                .all(|n| answers.get(n).is_some_and(|a| a.done))
            {
                break;
            }
        }
        let Ok(Some(message)) = tokio::time::timeout_at(deadline, pages.next()).await else {
            break;
        };
        bytes += message.payload.len();
        if bytes > GATHER_BYTES_MAX {
            tracing::warn!("answers from the other nodes over {GATHER_BYTES_MAX} bytes: cut");
            break;
        }
        let page: Page<T> = match serde_json::from_slice(&message.payload) {
            Ok(page) => page,
            Err(e) => {
                tracing::warn!(error = %e, "an unreadable answer page");
                continue;
            }
        };
        if page.node == me {
            continue;
        }
        let answer = answers.entry(page.node).or_insert_with(|| Answer {
            node: page.node,
            boot: page.boot,
            facts: page.facts,
            items: Vec::new(),
            done: false,
        });
        if answer.boot != page.boot || answer.done {
            continue;
        }
        answer.items.extend(page.items);
        answer.done = page.last;
    }
    let _ = pages.unsubscribe().await;
    answers.into_values().collect()
}

/// What a bus message is, for the metrics: one room message per `room_message` (the
/// cluster bench checks one publish per room message), a heartbeat, or anything else.
fn kind(message: Option<&Message>) -> &'static str {
    match message {
        None => "heartbeat",
        Some(Message::Event(super::Audience::Room(_), salon_proto::Event::Message(_))) => {
            "room_message"
        }
        Some(_) => "other",
    }
}

/// A message from another node, as this node applies it: session ids are per node, so the
/// session a revocation spares is not one of this node's.
fn from_elsewhere(message: Message) -> Message {
    match message {
        Message::Revoke { user, reason, .. } => Message::Revoke {
            user,
            keep: None,
            reason,
        },
        other => other,
    }
}

impl Bus for NatsBus {
    fn publish(&self, message: Message) {
        let shared = &self.shared;
        // A fact is counted, applied and queued in one section (see `Shared::numbers`).
        // Another message is recorded as delivered before it is applied, so a catch-up
        // that read it from the database between its commit and now does not deliver it
        // twice (nor it twice after one).
        if shared.hand_over(Some(&message)) && shared.catch_up.fresh(&message) {
            shared.live.apply(message);
        }
    }

    fn sessions(&self) -> BoxFuture<'_, Vec<SessionInfo>> {
        Box::pin(async move {
            let shared = &self.shared;
            let expected: HashSet<NodeId> = shared.live.live_nodes().into_iter().collect();
            let mut sessions = shared.own_sessions();
            let answers = gather::<SessionInfo>(
                &shared.client,
                shared.subjects.connected.clone(),
                CONNECTED_WAIT,
                Some(&expected),
                shared.node,
            )
            .await;
            for answer in answers {
                if !answer.done {
                    tracing::warn!(node = answer.node, "part of a node's sessions missing");
                }
                sessions.extend(answer.items.into_iter().map(|mut s| {
                    s.node = Some(answer.node);
                    s
                }));
            }
            sessions.sort_by(|a, b| {
                (&a.username, a.since, a.node).cmp(&(&b.username, b.since, b.node))
            });
            sessions
        })
    }

    fn settled(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let shared = &self.shared;
            let others: HashSet<NodeId> = shared
                .live
                .live_nodes()
                .into_iter()
                .filter(|n| *n != shared.node)
                .collect();
            if others.is_empty() {
                return;
            }
            let mut barrier = PendingBarrier::publish(shared, others);
            // Every node answered; or, once it came back here, a node that has not
            // answered within `BARRIER_AFTER_ECHO` is no longer current.
            let (all_answered, came_back) = (&mut barrier.answered, &mut barrier.came_back);
            let no_longer_current = async {
                if came_back.await.is_ok() {
                    tokio::time::sleep(BARRIER_AFTER_ECHO).await;
                } else {
                    std::future::pending::<()>().await;
                }
            };
            let waited = tokio::time::timeout(BARRIER_MAX, async {
                tokio::select! {
                    _ = all_answered => true,
                    () = no_longer_current => false,
                }
            })
            .await;
            if waited != Ok(true) {
                tracing::warn!(
                    "a node did not confirm a barrier in time; answering anyway (it checks \
                     memberships in the database until it catches up)"
                );
            }
        })
    }

    fn published(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            // No node to wait for: only for the barrier to come back here (the other
            // nodes answer it all the same, and the answers are ignored).
            let mut barrier = PendingBarrier::publish(&self.shared, HashSet::new());
            if tokio::time::timeout(BARRIER_MAX, &mut barrier.came_back)
                .await
                .is_err()
            {
                tracing::warn!("a membership change did not come back from NATS in time");
            }
        })
    }

    fn current(&self) -> bool {
        self.shared.catch_up.current()
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            // Last in the queue, after the last presence facts: handed to NATS and
            // flushed before the publisher stops.
            self.shared.hand_over(Some(&Message::Goodbye {
                node: self.shared.node,
            }));
            self.shared.stop.cancel();
            let publisher = lock(&self.publisher).take();
            if let Some(publisher) = publisher {
                let _ = publisher.await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::view::Stamp;
    use salon_proto::Status;

    #[test]
    fn an_envelope_reads_back_with_its_numbers_and_message() {
        let message = Message::Joined { user: 7, room: 2 };
        let body = serde_json::to_vec(&message).unwrap();
        let wire = envelope(3, u64::MAX, 42, 1_700_000_000_000, None, Some(&body));
        let read: Incoming = serde_json::from_slice(&wire).unwrap();
        assert_eq!(
            (read.node, read.boot, read.seq, read.at, read.facts),
            (3, u64::MAX, 42, 1_700_000_000_000, None)
        );
        assert!(matches!(
            read.message,
            Some(Message::Joined { user: 7, room: 2 })
        ));
        let beat: Incoming =
            serde_json::from_slice(&envelope(3, 1, 43, -5, Some(9), None)).unwrap();
        assert!(beat.message.is_none());
        assert_eq!((beat.seq, beat.at, beat.facts), (43, -5, Some(9)));
    }

    #[tokio::test]
    async fn the_publish_queue_holds_no_more_than_its_bytes_nor_its_messages() {
        let (queue, mut published) = publish_queue(4, 100);
        assert!(queue.offer(vec![1; 60]));
        // 60 + 60 would pass the 100 bytes: refused, and nothing of it counted.
        assert!(!queue.offer(vec![2; 60]));
        assert!(queue.offer(vec![3; 40]));
        assert!(!queue.offer(vec![4; 1]));
        // What the publishing task takes no longer counts.
        assert_eq!(published.recv().await.unwrap().len(), 60);
        assert!(queue.offer(vec![5; 30]));
        assert!(queue.offer(vec![6; 30]));
        // Four messages held (40, 30, 30 and this one): the count bound.
        assert!(queue.offer(Vec::new()));
        assert!(!queue.offer(Vec::new()));
        let sizes: Vec<usize> = std::iter::from_fn(|| published.try_recv())
            .map(|b| b.len())
            .collect();
        assert_eq!(sizes, [40, 30, 30, 0]);
        assert!(queue.offer(vec![7; 100]));
    }

    #[test]
    fn an_answer_is_cut_into_pages_under_the_bound_and_read_back_whole() {
        let users: Vec<Present> = (0..500)
            .map(|i| Present {
                user: i,
                username: format!("user{i}"),
                alias: format!("User number {i}"),
                status: Status::Away,
                stamp: Stamp { seq: 2, node: 1 },
            })
            .collect();
        let cut = pages(1, 99, 7, &users, 4096);
        assert!(cut.len() > 5, "{} pages", cut.len());
        let mut back = Vec::new();
        for (i, page) in cut.iter().enumerate() {
            assert!(page.len() <= 4096 + 100, "page {i}: {} bytes", page.len());
            let page: Page<Present> = serde_json::from_slice(page).unwrap();
            assert_eq!((page.node, page.boot, page.facts), (1, 99, 7));
            assert_eq!(page.last, i == cut.len() - 1);
            back.extend(page.items);
        }
        assert_eq!(back, users);
        // Nothing to send is still one (last) page.
        let empty = pages::<Present>(1, 99, 0, &[], 4096);
        let page: Page<Present> = serde_json::from_slice(&empty[0]).unwrap();
        assert!(empty.len() == 1 && page.last && page.items.is_empty());
    }
}
