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
//! Publishing never waits: the message goes into a bounded queue that one task drains
//! into the NATS client. When that queue is full (NATS unreachable for a long while), the
//! message is counted and dropped from the bus only: what it announced is already stored.
//!
//! Nothing committed is lost to a connected member for all that: every message carries
//! its node's boot (a random number per start) and a sequence number, so a receiver sees
//! a jump; the NATS client says when it loses its server and when its subscription
//! overflows. Each of those starts a catch-up from the database ([`super::catchup`]),
//! and the live path and the catch-up share one record of what was delivered, so each
//! room or private message reaches a session once.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::bus::{Bus, Message};
use super::catchup::CatchUp;
use super::Live;
use crate::clock::SharedClock;
use crate::config::ClusterConfig;
use crate::store::Store;

/// Messages waiting for the NATS client, at most.
const PUBLISH_QUEUE: usize = 65_536;

/// How often a node sends a tick (a numbered message with nothing in it), so that the
/// others notice within this time that they missed its last messages, even when it then
/// goes quiet.
const TICK: std::time::Duration = std::time::Duration::from_secs(1);

/// What travels on the subject: the message (none in a tick), the node it comes from,
/// that node's boot, the message's number in that boot (1, 2, 3…: a receiver sees a
/// jump), and when it was published (the node's clock). Written by
/// [`NatsBus::hand_over`] in this order, the message last.
#[derive(Deserialize)]
struct Incoming {
    node: u16,
    boot: u64,
    seq: u64,
    at: i64,
    message: Option<Message>,
}

/// The bus of a node in a cluster.
pub struct NatsBus {
    live: Arc<Live>,
    node: u16,
    boot: u64,
    /// The last sequence number given, and the queue to NATS, together: a number is
    /// given as its message is queued, so the queue holds them in order (a message
    /// queued out of order would look like a gap to the others).
    queue: std::sync::Mutex<(u64, mpsc::Sender<Bytes>)>,
    catch_up: Arc<CatchUp>,
    /// Cancelled when the bus is dropped (the server stopped): ends the tasks that answer
    /// on the node's subject, apply what other nodes send and catch up, which hold the
    /// NATS client and the store. (The publishing task ends with the queue.)
    stop: CancellationToken,
}

impl Drop for NatsBus {
    fn drop(&mut self) {
        self.stop.cancel();
    }
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
    #[error("cannot read the NATS credentials file {path}: {source}")]
    Credentials {
        path: String,
        #[source]
        source: std::io::Error,
    },
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
const NODE_CHECK_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

impl NatsBus {
    /// Connects to NATS, subscribes to the cluster's subject and starts the tasks that
    /// publish and apply. Waits for the first connection, so that a node never serves
    /// without its bus; later outages are retried for ever by the client.
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
        let events = catch_up.clone();
        let mut options = async_nats::ConnectOptions::new()
            .name(format!("salon-{}-node-{node}", cluster.name))
            .retry_on_initial_connect()
            .max_reconnects(None)
            .subscription_capacity(cluster.nats_pending_max.max(1))
            .event_callback(move |event| {
                events.on_event(event);
                async {}
            });
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
        let urls = cluster.nats_urls.join(",");
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
        // No responders (nobody has it) or no answer in time: the id is free.
        let asked = client.request(identity.clone(), Bytes::new());
        if let Ok(Ok(answer)) = tokio::time::timeout(NODE_CHECK_WAIT, asked).await {
            return Err(NatsError::NodeTaken {
                node,
                cluster: cluster.name.clone(),
                by: String::from_utf8_lossy(&answer.payload).into_owned(),
            });
        }
        let mut callers =
            client
                .subscribe(identity.clone())
                .await
                .map_err(|e| NatsError::Subscribe {
                    subject: identity.clone(),
                    message: e.to_string(),
                })?;
        let answerer = client.clone();
        let me = Bytes::from(format!(
            "process {} started at {}",
            std::process::id(),
            humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        ));
        let stop = CancellationToken::new();
        tokio::spawn(stop.clone().run_until_cancelled_owned(async move {
            while let Some(call) = callers.next().await {
                if let Some(reply) = call.reply {
                    let _ = answerer.publish(reply, me.clone()).await;
                }
            }
        }));

        let subject = format!("{}.bus", cluster.name);
        let mut subscriber =
            client
                .subscribe(subject.clone())
                .await
                .map_err(|e| NatsError::Subscribe {
                    subject: subject.clone(),
                    message: e.to_string(),
                })?;
        // Every node's messages from now on reach this one before it serves anyone.
        let _ = client.flush().await;
        tracing::info!(node, nats = %urls, %subject, "cluster bus connected");

        let (queue, mut waiting) = mpsc::channel::<Bytes>(PUBLISH_QUEUE);
        let publisher = client.clone();
        let out_subject = subject.clone();
        tokio::spawn(async move {
            while let Some(payload) = waiting.recv().await {
                if let Err(e) = publisher.publish(out_subject.clone(), payload).await {
                    metrics::counter!(crate::metrics::CLUSTER_BUS_LOST).increment(1);
                    tracing::warn!(error = %e, "a bus message could not be handed to NATS");
                }
            }
        });
        tokio::spawn(
            stop.clone()
                .run_until_cancelled_owned(catch_up.clone().run(client.clone())),
        );
        let applier = live.clone();
        let receiver = catch_up.clone();
        tokio::spawn(stop.clone().run_until_cancelled_owned(async move {
            while let Some(delivery) = subscriber.next().await {
                match serde_json::from_slice::<Incoming>(&delivery.payload) {
                    Ok(incoming) => {
                        let own = incoming.node == node;
                        receiver.heard(
                            incoming.node,
                            incoming.boot,
                            incoming.seq,
                            incoming.at,
                            own,
                        );
                        // Its own were applied when published; a room or private
                        // message already caught up from the database is not again.
                        match incoming.message {
                            Some(message) if !own && receiver.fresh(&message) => {
                                applier.apply(from_elsewhere(message))
                            }
                            _ => {}
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "an unreadable message on the cluster bus")
                    }
                }
            }
            tracing::warn!("the cluster bus subscription ended");
        }));
        use rand::RngCore;
        let bus = Arc::new(NatsBus {
            live,
            node,
            boot: rand::rngs::OsRng.next_u64(),
            queue: std::sync::Mutex::new((0, queue)),
            catch_up,
            stop,
        });
        let ticking = Arc::downgrade(&bus);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(TICK);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                // Until the bus is dropped (the server stopped).
                let Some(bus) = ticking.upgrade() else { break };
                bus.hand_over(None);
            }
        });
        Ok(bus)
    }

    /// Numbers `message` (a tick when `None`) and queues it for NATS, without waiting.
    fn hand_over(&self, message: Option<&Message>) {
        let body = match message.map(serde_json::to_vec).transpose() {
            Ok(body) => body,
            Err(e) => {
                tracing::error!(error = %e, "a bus message could not be encoded");
                return;
            }
        };
        let at = self.catch_up.now_ms();
        let mut queue = crate::lock(&self.queue);
        let (seq, sender) = &mut *queue;
        *seq += 1;
        let wire = envelope(self.node, self.boot, *seq, at, body.as_deref());
        if sender.try_send(Bytes::from(wire)).is_err() && message.is_some() {
            drop(queue);
            metrics::counter!(crate::metrics::CLUSTER_BUS_LOST).increment(1);
            tracing::warn!(
                "the cluster bus queue is full: a message reaches this node only \
                 (the others catch up from the database)"
            );
        }
    }
}

/// The payload of bus message `seq` of `node`'s boot `boot`, published at `at`: `body` is
/// the message's JSON (none: a tick). Read back as [`Incoming`].
fn envelope(node: u16, boot: u64, seq: u64, at: i64, body: Option<&[u8]>) -> Vec<u8> {
    let head = format!("{{\"node\":{node},\"boot\":{boot},\"seq\":{seq},\"at\":{at},\"message\":");
    let body = body.unwrap_or(b"null");
    let mut wire = Vec::with_capacity(head.len() + body.len() + 1);
    wire.extend_from_slice(head.as_bytes());
    wire.extend_from_slice(body);
    wire.push(b'}');
    wire
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
        self.hand_over(Some(&message));
        // Recorded as delivered, so a catch-up that read it from the database between its
        // commit and now does not deliver it twice (nor it twice after one).
        if self.catch_up.fresh(&message) {
            self.live.apply(message);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_envelope_reads_back_with_its_numbers_and_message() {
        let message = Message::Joined { user: 7, room: 2 };
        let body = serde_json::to_vec(&message).unwrap();
        let wire = envelope(3, u64::MAX, 42, 1_700_000_000_000, Some(&body));
        let read: Incoming = serde_json::from_slice(&wire).unwrap();
        assert_eq!(
            (read.node, read.boot, read.seq, read.at),
            (3, u64::MAX, 42, 1_700_000_000_000)
        );
        assert!(matches!(
            read.message,
            Some(Message::Joined { user: 7, room: 2 })
        ));
        let tick: Incoming = serde_json::from_slice(&envelope(3, 1, 43, -5, None)).unwrap();
        assert!(tick.message.is_none());
        assert_eq!((tick.seq, tick.at), (43, -5));
    }
}
