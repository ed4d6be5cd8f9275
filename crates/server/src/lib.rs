//! Salon's server as a library: `run(config, listeners, deps, shutdown)`.
//!
//! The binary binds the listeners and calls [`run`]; tests bind `127.0.0.1:0` and use the
//! same code path. The public surface is deliberately narrow: [`run`] with its
//! [`Config`], [`Listeners`] and [`Deps`] (the clocks), the offline operations
//! ([`open_store`] to migrate, [`admin_create_user`], [`backup`]) and the provisioning API
//! for tools ([`provision`]); [`Store`] stays reachable for tools and tests that inspect
//! what is stored. Everything else is private to the crate.
//!
//! Modules, most abstract first: `config`, `clock`, `ids`, `store` (the only module
//! touching the database, one file per domain), `accounts`, `protocol` (the protocol
//! seam: wire formats encode typed replies and events), `live` (this node's live state
//! behind the bus: registry, outbound queues, presence, room directory), `persist` (the
//! message writer: group commit), `service` (command handlers, one file per domain),
//! `session` (one loop for every transport and protocol), `net` (listeners, TCP,
//! HTTP and WebSocket). ARCHITECTURE.md draws the seams and the lock order.

mod accounts;
pub mod backup;
mod blobs;
mod clock;
mod config;
mod files;
mod ids;
mod live;
mod media;
mod metrics;
mod names;
mod net;
mod persist;
mod protocol;
pub mod provision;
mod search_text;
mod service;
mod session;
mod store;
mod throttle;
mod tls;
mod web;

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use salon_proto::{CloseCode, Event};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use clock::{Clock, ManualClock, SharedClock, SystemClock};
pub use config::{Config, ConfigError, Limits};
/// The fixed per-connection WebSocket buffer bounds, which the stated memory bound of a
/// connection is computed from (docs/LIMITS.md; the load generator checks it).
pub use net::{WS_MAX_WRITE_BUFFER, WS_READ_BUFFER};
pub use store::{Store, StoreError, StoreOptions};

/// How often gathered presence changes are sent (see `Live::flush_presence`).
const PRESENCE_TICK: Duration = Duration::from_millis(100);
/// How often files no message carries are looked for (and at every start).
const FILE_SWEEP_EVERY: Duration = Duration::from_secs(600);

/// How long shutdown waits for sessions to flush and close before giving up on them.
const SESSION_CLOSE_GRACE: Duration = Duration::from_secs(10);

/// What a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// The native protocol over TCP, one JSON frame per line (TLS when configured).
    Native,
    /// HTTP: the web client, health checks and the native protocol over WebSocket
    /// (`/ws`); HTTPS when TLS is configured.
    Http,
    /// Plaintext HTTP that only redirects to HTTPS (on the first `Http` listener's port).
    Redirect,
    /// Prometheus metrics at `/metrics` (`docs/OPERATIONS.md`), plain HTTP.
    Metrics,
}

/// Already-bound listeners, each with what it serves; one accept loop each.
#[derive(Debug, Default)]
pub struct Listeners {
    pub bound: Vec<(Endpoint, TcpListener)>,
    /// In-process connections (the server console): each stream received is served as
    /// one session of the line protocol.
    pub local: Option<tokio::sync::mpsc::Receiver<tokio::io::DuplexStream>>,
}

impl Listeners {
    /// Adds a listener serving `endpoint`.
    pub fn with(mut self, endpoint: Endpoint, listener: TcpListener) -> Listeners {
        self.bound.push((endpoint, listener));
        self
    }

    /// Adds a listener serving `endpoint` if there is one (an optional listener).
    pub fn with_optional(self, endpoint: Endpoint, listener: Option<TcpListener>) -> Listeners {
        match listener {
            Some(listener) => self.with(endpoint, listener),
            None => self,
        }
    }
}

/// What the server depends on that tests may replace.
#[derive(Clone)]
pub struct Deps {
    pub clock: SharedClock,
}

impl Default for Deps {
    fn default() -> Self {
        Deps {
            clock: Arc::new(SystemClock),
        }
    }
}

/// An error and its sources on one line, each told once: many errors show their source
/// in their own words too, which a plain walk of the chain would repeat.
pub fn one_line(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = String::new();
    let mut next = Some(error);
    while let Some(e) = next {
        let part = e.to_string();
        if !text.contains(&part) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&part);
        }
        next = e.source();
    }
    text
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot open the database: {0}")]
    Database(#[from] StoreError),
    #[error("cannot create the first administrator: {0}")]
    Admin(String),
    #[error("TLS: {0}")]
    Tls(#[from] tls::TlsError),
    #[error("listener: {0}")]
    Listen(std::io::Error),
    #[error("files directory: {0}")]
    FilesDir(std::io::Error),
    #[error("cluster: {0}")]
    Cluster(#[from] live::NatsError),
}

/// Creates an account directly in the database (`salon admin create-user`), recorded in
/// the audit log with actor `cli`.
pub async fn admin_create_user(
    store: &Store,
    registration: salon_proto::args::Register,
    is_admin: bool,
) -> Result<salon_proto::Account, service::Error> {
    let clock = SystemClock;
    // Never a server's node, so ids made here while one runs cannot collide.
    let ids = ids::OfflineTool::Cli.ids();
    let now = clock.now_ms();
    let account = accounts::create_account(store, &ids, now, registration, is_admin).await?;
    let entry = salon_proto::AuditEntry {
        ts: now,
        actor: "cli".into(),
        action: salon_proto::AuditAction::CreateUser,
        target: account.username.clone(),
        reason: if is_admin {
            "administrator".into()
        } else {
            String::new()
        },
    };
    store.audit(ids.next(now), &entry).await?;
    Ok(account)
}

/// Opens and migrates the configured database.
pub async fn open_store(config: &Config) -> Result<Store, StoreError> {
    let store =
        Store::connect_with(&config.effective_database_url(), &config.store_options()).await?;
    store.migrate().await?;
    // Names stored before their look-alike keys existed get theirs.
    store.backfill_name_skeletons().await?;
    Ok(store)
}

/// Runs the server until `shutdown` resolves, then stops gracefully: no new connections
/// or logins; sessions stop reading; every message already accepted is stored and
/// delivered; clients are told and their queues flushed; the database is closed last.
pub async fn run(
    config: Config,
    listeners: Listeners,
    deps: Deps,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    config.validate()?;
    let config = Arc::new(config);
    let tls = tls::Tls::from_config(&config.tls, &config.data_dir)?;
    if let Some(tls) = &tls {
        tracing::info!(
            cert = %tls.chain_path.display(),
            fingerprint = %tls.current_fingerprint(),
            "TLS on both listeners"
        );
    }
    let store = open_store(&config).await?;
    tracing::info!(database = store.dialect().name(), "database ready");
    let purged = store
        .purge_expired_session_tokens(deps.clock.now_ms())
        .await?;
    if purged > 0 {
        tracing::info!(purged, "expired session tokens removed");
    }

    blobs::Blobs::open(config.files_dir()).map_err(Error::FilesDir)?;

    let mut directory = live::Directory::default();
    for room in store.rooms().await? {
        directory.insert(room);
    }
    let live = Arc::new(live::Live::new(directory, config.node_id));
    live.start_direct_watermark(&store.max_direct_ids().await?);
    let (bus, peers): (Arc<dyn live::Bus>, bool) = if config.cluster.enabled() {
        let bus = live::NatsBus::start(
            live.clone(),
            config.node_id,
            &config.cluster,
            store.clone(),
            deps.clock.clone(),
            config.limits.database_timeout_ms as i64,
        )
        .await
        .map_err(Error::Cluster)?;
        let peers = bus.peers_at_start();
        (bus, peers)
    } else {
        (Arc::new(live::LocalBus::new(live.clone())), false)
    };
    // Nobody is connected yet, whatever was stored before a stop or a crash; unless other
    // nodes of the cluster are live: the statuses are then theirs too, and those of a
    // node that died are set offline by the nodes that see it go (docs/CLUSTER.md).
    if !peers {
        store.reset_statuses().await?;
    }
    let ids = Arc::new(ids::IdGenerator::starting_after(
        config.node_id,
        store.max_generated_id().await?,
    ));
    match accounts::ensure_first_admin(
        &store,
        &ids,
        deps.clock.now_ms(),
        config.admin_password.clone(),
    )
    .await
    {
        Ok(Some(password)) => {
            tracing::warn!("created the first administrator account `admin`");
            // Shown once, on the terminal only, never logged (R2).
            eprintln!(
                "\n  First administrator created: username `admin`, password `{password}`\n  \
                 Change it after logging in (change_password).\n"
            );
        }
        Ok(None) => {}
        Err(e) => return Err(Error::Admin(e.to_string())),
    }
    let (persist, writer) = persist::channel(
        config.limits.persist_queue,
        config.limits.commit_batch_max,
        Duration::from_millis(config.limits.commit_pacing_ms),
        store.clone(),
        bus.clone(),
        ids.clone(),
        deps.clock.clone(),
    );
    let service = Arc::new(service::Service::new(
        config.clone(),
        store.clone(),
        live,
        bus.clone(),
        persist,
        deps.clock.clone(),
        ids,
    ));

    // Files whose messages were deleted, and uploads never attached, while it was down.
    sweep_files(&service).await;

    let stop_writer = CancellationToken::new();
    let writer_task = tokio::spawn(writer.run(stop_writer.clone()));
    let stop_accepting = CancellationToken::new();
    let shared = net::Shared {
        service: service.clone(),
        sessions: TaskTracker::new(),
        admission: net::Admission::new(&config.limits),
        stop_reading: CancellationToken::new(),
        tls: tls.clone(),
        readiness: Default::default(),
    };
    let mut listener_tasks = Vec::new();
    let https_port = listeners
        .bound
        .iter()
        .find(|(endpoint, _)| *endpoint == Endpoint::Http)
        .map(|(_, l)| l.local_addr().map(|a| a.port()))
        .transpose()
        .map_err(Error::Listen)?
        .unwrap_or(443);
    let mut sample_queues = false;
    for (endpoint, listener) in listeners.bound {
        let addr = listener.local_addr().map_err(Error::Listen)?;
        let secure = shared.tls.is_some();
        let what = match endpoint {
            Endpoint::Native if secure => "native protocol (TCP) over TLS",
            Endpoint::Native => "native protocol (TCP)",
            Endpoint::Http if secure => "HTTPS (WebSocket /ws over TLS)",
            Endpoint::Http => "HTTP (WebSocket /ws)",
            Endpoint::Redirect => "plaintext HTTP redirecting to HTTPS",
            Endpoint::Metrics => "metrics (/metrics)",
        };
        let kind = match endpoint {
            Endpoint::Native => net::Kind::Line,
            Endpoint::Http => net::Kind::Http,
            Endpoint::Redirect => net::Kind::Redirect(https_port),
            Endpoint::Metrics => match metrics::install() {
                Some(handle) => {
                    sample_queues = true;
                    tracing::info!(%addr, "{what} listening");
                    listener_tasks.push(tokio::spawn(metrics::serve(
                        listener,
                        handle,
                        stop_accepting.clone(),
                    )));
                    continue;
                }
                None => {
                    tracing::warn!("metrics listener not started: no recorder");
                    continue;
                }
            },
        };
        tracing::info!(%addr, "{what} listening");
        listener_tasks.push(tokio::spawn(net::serve(
            listener,
            kind,
            shared.clone(),
            stop_accepting.clone(),
        )));
    }
    if let Some(tls) = tls {
        listener_tasks.push(tokio::spawn(tls::watch(
            tls,
            Duration::from_millis(config.tls.reload_check_ms),
            stop_accepting.clone(),
        )));
    }
    if let Some(local) = listeners.local {
        listener_tasks.push(tokio::spawn(net::serve_local(
            local,
            shared.clone(),
            stop_accepting.clone(),
        )));
    }
    let housekeeping = {
        let service = service.clone();
        let stop = stop_accepting.clone();
        tokio::spawn(async move {
            let mut prune = tokio::time::interval(Duration::from_secs(60));
            // The start swept already (below, before serving).
            let mut sweep = tokio::time::interval_at(
                tokio::time::Instant::now() + FILE_SWEEP_EVERY,
                FILE_SWEEP_EVERY,
            );
            sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut presence = tokio::time::interval(PRESENCE_TICK);
            presence.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut sample = tokio::time::interval(metrics::SAMPLE_EVERY);
            sample.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // When the files of deleted messages are swept, if a deletion asked.
            let mut sweep_soon: Option<tokio::time::Instant> = None;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = prune.tick() => service.prune_limiters(),
                    _ = service.files.sweep_soon.notified(), if sweep_soon.is_none() => {
                        sweep_soon = Some(tokio::time::Instant::now() + service::SWEEP_SOON);
                    }
                    _ = tokio::time::sleep_until(sweep_soon.unwrap_or_else(tokio::time::Instant::now)),
                        if sweep_soon.is_some() =>
                    {
                        sweep_soon = None;
                        sweep_files(&service).await;
                    }
                    _ = sweep.tick() => {
                        sweep_files(&service).await;
                        if let Err(e) = service.sweep_changes().await {
                            tracing::warn!(error = %e, "message changes sweep failed; next time");
                        }
                    }
                    _ = presence.tick() => service.flush_presence().await,
                    _ = sample.tick(), if sample_queues => {
                        metrics::sample_queues(&service.connections());
                    }
                }
            }
        })
    };

    tokio::select! {
        _ = shutdown => {}
        _ = service.stop_requested() => {}
    }
    tracing::info!("shutting down");
    service.begin_shutdown();
    stop_accepting.cancel();
    let farewell = service.shutdown_message();
    // This node's sessions only: a signal drains one node of a cluster, and a countdown
    // ends on every node by itself.
    service.live.apply(live::Message::Event(
        live::Audience::Everyone,
        Event::Shutdown {
            seconds: 0,
            message: farewell.clone(),
        },
    ));
    shared.stop_reading.cancel();
    // Every message accepted so far is committed and fanned out before anyone is closed.
    stop_writer.cancel();
    let _ = writer_task.await;
    for conn in service.connections() {
        conn.close(CloseCode::Shutdown, farewell.clone(), true);
    }
    shared.sessions.close();
    if tokio::time::timeout(SESSION_CLOSE_GRACE, shared.sessions.wait())
        .await
        .is_err()
    {
        tracing::warn!("some sessions did not close in time");
    }
    for task in listener_tasks {
        let _ = task.await;
    }
    let _ = housekeeping.await;
    // The last presence changes (everyone went offline) are told to the other nodes and
    // stored before closing.
    bus.close().await;
    service.flush_presence().await;
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

// Lock helpers: a poisoned lock (a panic elsewhere while holding it) must not take the
// whole server down; the protected maps stay structurally valid.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn read<T>(m: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn write<T>(m: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|p| p.into_inner())
}

/// Removes the files no message carries any more (`Service::sweep_files`), and says so.
async fn sweep_files(service: &service::Service) {
    match service.sweep_files().await {
        Ok(0) => {}
        Ok(removed) => tracing::info!(removed, "files no message carries removed"),
        Err(e) => tracing::warn!(error = %e, "file sweep failed; it runs again later"),
    }
}
