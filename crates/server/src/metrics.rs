//! Prometheus metrics at `/metrics` on a listener of their own (`metrics_listen`,
//! loopback by default): figures about the server that only its operators should see.
//!
//! The `metrics` crate's macros record into one process-wide recorder
//! (`metrics-exporter-prometheus`, without its HTTP server: `/metrics` is served here
//! with axum like the rest). Until the recorder is installed — metrics disabled — every
//! macro is a no-op. Histograms have fixed buckets, and `run_upkeep` drains the samples
//! every few seconds, so memory stays bounded whatever the load. Labels take only a few
//! fixed values (transport, outcome, kind), never anything a client chooses.

use std::sync::OnceLock;
use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub const CONNECTIONS_OPENED: &str = "salon_connections_opened_total";
pub const CONNECTIONS_OPEN: &str = "salon_connections_open";
pub const LOGINS: &str = "salon_logins_total";
pub const CLUSTER_BUS_LOST: &str = "salon_cluster_bus_lost_total";
pub const CLUSTER_BUS_MISSED: &str = "salon_cluster_bus_missed_total";
pub const CLUSTER_CAUGHT_UP: &str = "salon_cluster_caught_up_total";
pub const CLUSTER_BUS_PUBLISHED: &str = "salon_cluster_bus_published_total";
pub const CLUSTER_BUS_RECEIVED: &str = "salon_cluster_bus_received_total";
pub const CLUSTER_MEMBERSHIP_RECHECKED: &str = "salon_cluster_membership_rechecked_total";
pub const CLUSTER_MEMBERSHIP_OVERTAKEN: &str = "salon_cluster_membership_overtaken_total";
pub const CLUSTER_REVOKED_ON_USE: &str = "salon_cluster_revoked_on_use_total";
pub const MESSAGES_ACCEPTED: &str = "salon_messages_accepted_total";
pub const COMMIT_BATCH_SIZE: &str = "salon_commit_batch_size";
pub const COMMIT_SECONDS: &str = "salon_commit_seconds";
pub const FANOUT_SECONDS: &str = "salon_fanout_seconds";
pub const OUTBOUND_WAIT_SECONDS: &str = "salon_outbound_wait_seconds";
pub const SLOW_CONSUMER_DISCONNECTIONS: &str = "salon_slow_consumer_disconnections_total";
pub const RATE_LIMITED: &str = "salon_rate_limited_requests_total";
pub const DATABASE_ERRORS: &str = "salon_database_errors_total";
pub const BUILD_INFO: &str = "salon_build_info";
pub const OUTBOUND_QUEUE_FRAMES_MAX: &str = "salon_outbound_queue_frames_max";
pub const OUTBOUND_QUEUE_BYTES_TOTAL: &str = "salon_outbound_queue_bytes_total";

/// How often the outbound queues are sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// How often histogram samples are folded into their buckets.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder once (later calls return the same handle).
/// `None` if another recorder was installed first.
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let built = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(COMMIT_BATCH_SIZE.into()),
                    &[
                        1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
                    ],
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(COMMIT_SECONDS.into()),
                        &[
                            0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                            2.5, 5.0,
                        ],
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(FANOUT_SECONDS.into()),
                        &[
                            0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01,
                            0.025, 0.05, 0.1, 0.25,
                        ],
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(OUTBOUND_WAIT_SECONDS.into()),
                        &[
                            0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01,
                            0.025, 0.05, 0.1, 0.25, 1.0, 5.0,
                        ],
                    )
                })
                .and_then(|b| b.install_recorder());
            match built {
                Ok(handle) => {
                    describe();
                    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
                    Some(handle)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics unavailable");
                    None
                }
            }
        })
        .clone()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        CONNECTIONS_OPENED,
        "Connections opened, by transport (tcp, websocket, local)."
    );
    describe_gauge!(CONNECTIONS_OPEN, "Connections open now, by transport.");
    describe_counter!(
        CLUSTER_BUS_LOST,
        "Cluster bus messages this node could not hand to NATS (its queue full or the client refusing): they reached this node's sessions only."
    );
    describe_counter!(
        CLUSTER_BUS_MISSED,
        "Times this node found it may have missed cluster bus messages, by why: disconnected (from NATS), slow_consumer (its subscription overflowed), gap (another node's sequence jumped, or it started a new boot), node_gone (another node taken for dead). Each starts a catch-up from the database."
    );
    describe_counter!(
        CLUSTER_CAUGHT_UP,
        "Room and private messages this node delivered from the database after missing them on the cluster bus."
    );
    describe_counter!(
        CLUSTER_BUS_PUBLISHED,
        "Cluster bus messages this node handed to NATS (one per bus message, whatever the number of nodes or members), by kind: room_message, heartbeat, other."
    );
    describe_counter!(
        CLUSTER_BUS_RECEIVED,
        "Cluster bus messages NATS delivered to this node, by origin (from=other_nodes: applied here; from=this_node: its own, not applied again) and kind (room_message, heartbeat, other)."
    );
    describe_counter!(
        CLUSTER_MEMBERSHIP_RECHECKED,
        "Memberships this node's registry showed that were checked in the database because the node was not current on the cluster bus (cut off, catching up, or more than 2 s behind)."
    );
    describe_counter!(
        CLUSTER_MEMBERSHIP_OVERTAKEN,
        "Membership changes from another node not applied here because this node had made a newer change of the same user's relation to the same room (it came later in the bus's order)."
    );
    describe_counter!(
        CLUSTER_REVOKED_ON_USE,
        "Sessions this node closed at their next command because their token had been revoked elsewhere (kick, ban, password change) while the node was not current on the cluster bus."
    );
    describe_counter!(LOGINS, "Password logins by outcome: succeeded, failed (wrong login or password), refused (anything else: sanctions, throttling, shutdown, limits).");
    describe_counter!(
        MESSAGES_ACCEPTED,
        "Messages stored and acknowledged, by kind (room, direct)."
    );
    describe_histogram!(COMMIT_BATCH_SIZE, Unit::Count, "Messages per group commit.");
    describe_histogram!(
        COMMIT_SECONDS,
        Unit::Seconds,
        "Time to store one group commit."
    );
    describe_histogram!(FANOUT_SECONDS, Unit::Seconds, "From a group commit's end until its messages and acknowledgements are in every recipient's outbound queue.");
    describe_histogram!(OUTBOUND_WAIT_SECONDS, Unit::Seconds, "From a frame's arrival in a session's outbound queue until the write that carried it completed (the oldest frame of each write): with salon_fanout_seconds, the delivery latency from commit to socket write.");
    describe_counter!(
        SLOW_CONSUMER_DISCONNECTIONS,
        "Connections closed because their outbound queue was full."
    );
    describe_counter!(RATE_LIMITED, "Requests refused with rate_limited.");
    describe_counter!(
        DATABASE_ERRORS,
        "Requests and commits that failed because of the database."
    );
    describe_gauge!(BUILD_INFO, "Always 1; the version is a label.");
    describe_gauge!(
        OUTBOUND_QUEUE_FRAMES_MAX,
        "Frames waiting in the fullest outbound queue (sampled every second)."
    );
    describe_gauge!(
        OUTBOUND_QUEUE_BYTES_TOTAL,
        Unit::Bytes,
        "Bytes waiting in all outbound queues together (sampled every second)."
    );
}

/// Samples the outbound queues of `connections`: the deepest, and all bytes together.
pub fn sample_queues(connections: &[crate::live::Outbound]) {
    let (mut deepest, mut bytes) = (0usize, 0usize);
    for c in connections {
        let (f, b) = c.control.queued();
        deepest = deepest.max(f);
        bytes += b;
    }
    metrics::gauge!(OUTBOUND_QUEUE_FRAMES_MAX).set(deepest as f64);
    metrics::gauge!(OUTBOUND_QUEUE_BYTES_TOTAL).set(bytes as f64);
}

/// Counts one connection open while it lives.
pub struct ConnectionGauge(&'static str);

impl ConnectionGauge {
    pub fn open(transport: salon_proto::Transport) -> ConnectionGauge {
        let transport = transport.as_str();
        metrics::counter!(CONNECTIONS_OPENED, "transport" => transport).increment(1);
        metrics::gauge!(CONNECTIONS_OPEN, "transport" => transport).increment(1.0);
        ConnectionGauge(transport)
    }
}

impl Drop for ConnectionGauge {
    fn drop(&mut self) {
        metrics::gauge!(CONNECTIONS_OPEN, "transport" => self.0).decrement(1.0);
    }
}

/// Serves `/metrics` on `listener` until `stop`.
pub async fn serve(listener: TcpListener, handle: PrometheusHandle, stop: CancellationToken) {
    let upkeep = {
        let (handle, stop) = (handle.clone(), stop.clone());
        tokio::spawn(async move {
            let mut every = tokio::time::interval(UPKEEP_EVERY);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = every.tick() => handle.run_upkeep(),
                }
            }
        })
    };
    let router = Router::new().route(
        "/metrics",
        get(move || {
            let handle = handle.clone();
            async move {
                (
                    StatusCode::OK,
                    [(
                        header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    handle.render(),
                )
            }
        }),
    );
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(stop.clone().cancelled_owned())
        .await;
    if let Err(e) = served {
        tracing::warn!(error = %e, "metrics listener stopped");
    }
    let _ = upkeep.await;
}
