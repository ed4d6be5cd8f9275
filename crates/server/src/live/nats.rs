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
//! message is counted and dropped from the bus only: what it announced is already stored,
//! and catching up from the database is the next step of issue 16 (see docs/CLUSTER.md).

use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::bus::{Bus, Message};
use super::Live;
use crate::config::ClusterConfig;

/// Messages waiting for the NATS client, at most.
const PUBLISH_QUEUE: usize = 65_536;

/// What travels on the subject: the message and the node it comes from.
#[derive(Serialize)]
struct Outgoing<'a> {
    node: u16,
    message: &'a Message,
}

#[derive(Deserialize)]
struct Incoming {
    node: u16,
    message: Message,
}

/// The bus of a node in a cluster.
pub struct NatsBus {
    live: Arc<Live>,
    node: u16,
    queue: mpsc::Sender<Bytes>,
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
    pub async fn start(
        live: Arc<Live>,
        node: u16,
        cluster: &ClusterConfig,
    ) -> Result<Arc<NatsBus>, NatsError> {
        let mut options = async_nats::ConnectOptions::new()
            .name(format!("salon-{}-node-{node}", cluster.name))
            .retry_on_initial_connect()
            .max_reconnects(None);
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
        tokio::spawn(async move {
            while let Some(call) = callers.next().await {
                if let Some(reply) = call.reply {
                    let _ = answerer.publish(reply, me.clone()).await;
                }
            }
        });

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
                match publisher.publish(out_subject.clone(), payload).await {
                    Ok(()) => metrics::counter!(crate::metrics::CLUSTER_BUS_PUBLISHED).increment(1),
                    Err(e) => {
                        metrics::counter!(crate::metrics::CLUSTER_BUS_LOST).increment(1);
                        tracing::warn!(error = %e, "a bus message could not be handed to NATS");
                    }
                }
            }
        });
        let applier = live.clone();
        tokio::spawn(async move {
            while let Some(delivery) = subscriber.next().await {
                match serde_json::from_slice::<Incoming>(&delivery.payload) {
                    Ok(incoming) if incoming.node == node => {
                        metrics::counter!(crate::metrics::CLUSTER_BUS_RECEIVED, "from" => "this_node")
                            .increment(1)
                    }
                    Ok(incoming) => {
                        metrics::counter!(crate::metrics::CLUSTER_BUS_RECEIVED, "from" => "other_nodes")
                            .increment(1);
                        applier.apply(from_elsewhere(incoming.message))
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "an unreadable message on the cluster bus")
                    }
                }
            }
            tracing::warn!("the cluster bus subscription ended");
        });
        Ok(Arc::new(NatsBus { live, node, queue }))
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
        let wire = serde_json::to_vec(&Outgoing {
            node: self.node,
            message: &message,
        });
        self.live.apply(message);
        match wire {
            Ok(bytes) => {
                if self.queue.try_send(Bytes::from(bytes)).is_err() {
                    metrics::counter!(crate::metrics::CLUSTER_BUS_LOST).increment(1);
                    tracing::warn!(
                        "the cluster bus queue is full: a message reaches this node only"
                    );
                }
            }
            Err(e) => tracing::error!(error = %e, "a bus message could not be encoded"),
        }
    }
}
