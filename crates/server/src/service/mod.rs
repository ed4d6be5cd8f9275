//! The domain services: one handler per command, split by domain (`login`: accounts and
//! sessions, `rooms`, `messages`, `presence`, `moderation`, `accounts_admin`: account
//! administration). A frame is decoded, checked against the command table (login needed?
//! admin only? rate class?) and only then handled (`dispatch`). Handlers answer through the
//! session's outbound queue with a reply tagged by the request id, and fan out through the
//! [`Hub`]; they never touch a socket. Only these modules (through [`Store`]) and the
//! message writer reach the database.

mod accounts_admin;
mod dispatch;
mod files;
mod login;
mod messages;
mod messaging;
mod moderation;
pub(crate) use moderation::{banned_close, kicked_close};
mod presence;
mod rooms;
mod search;
mod state;
mod typing;

use dispatch::rate_limited;
pub(crate) use files::{UploadError, SWEEP_SOON};
pub(crate) use login::READ_STATE_CONVERSATIONS;
pub use state::SessionState;
use state::{Backlog, BACKLOG_PAGE, MAX_ACK_IDS};

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use salon_proto::{ErrorBody, ErrorCode, Reply};

use crate::accounts;
use crate::clock::SharedClock;
use crate::config::Config;
use crate::ids::IdGenerator;
use crate::live::{Audience, Bus, Identity, Live, Message, Outbound, SessionId};
use crate::persist::Persist;
use crate::store::{Store, StoreError};
use crate::throttle::{self, Throttle};

/// Why a request failed. Client-facing rejections carry their body; storage and hashing
/// failures are logged once here and shown to the client as `unavailable` or `internal`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Rejected(ErrorBody),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Hash(#[from] accounts::HashError),
}

impl From<ErrorBody> for Error {
    fn from(body: ErrorBody) -> Self {
        Error::Rejected(body)
    }
}

impl Error {
    fn to_body(&self) -> ErrorBody {
        match self {
            Error::Rejected(body) => body.clone(),
            Error::Store(e) if e.is_outcome_unknown() => ErrorBody::new(
                ErrorCode::Unavailable,
                "the database did not confirm the change: it may or may not have been made; \
                 check, and try again if it was not",
            ),
            Error::Store(StoreError::SearchTooLong(bound)) => ErrorBody::new(
                ErrorCode::InvalidRequest,
                format!(
                    "this search matches too much to answer within {} ms: add letters or \
                     words, or search one room",
                    bound.as_millis()
                ),
            )
            .with_field("query"),
            Error::Store(StoreError::Timeout(_)) => ErrorBody::new(
                ErrorCode::Unavailable,
                "the database did not answer in time; try again later",
            ),
            Error::Store(e) if e.is_unavailable() => ErrorBody::new(
                ErrorCode::Unavailable,
                "the database is unavailable; nothing was changed, try again later",
            ),
            Error::Hash(accounts::HashError::Busy) => {
                let mut body = ErrorBody::new(
                    ErrorCode::RateLimited,
                    "the server is busy checking passwords; try again in a second",
                );
                body.retry_after_ms = Some(1000);
                body
            }
            Error::Store(_) | Error::Hash(_) => {
                ErrorBody::new(ErrorCode::Internal, "internal error; it has been logged")
            }
        }
    }
}

pub(crate) fn reject(code: ErrorCode, message: impl Into<String>) -> Error {
    Error::Rejected(ErrorBody::new(code, message))
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a handler did with its reply.
pub(crate) enum Done {
    /// Send this reply now.
    Reply(Reply),
    /// The reply will come later from the message writer, after the commit.
    Deferred,
    /// Send this reply, then close the connection.
    ReplyAndClose(Reply, salon_proto::CloseCode, &'static str),
}

pub(crate) fn ok(reply: Reply) -> Result<Done> {
    Ok(Done::Reply(reply))
}

pub struct Service {
    pub config: Arc<Config>,
    pub store: Store,
    /// This node's live state, read directly; changed only through `bus`.
    pub live: Arc<Live>,
    /// Where every delivery and change of live state is published.
    pub bus: Arc<dyn Bus>,
    pub(crate) persist: Persist,
    pub(crate) clock: SharedClock,
    pub(crate) ids: Arc<IdGenerator>,
    pub(crate) auth_by_address: DefaultKeyedRateLimiter<IpAddr>,
    /// Searches per user (`searches_per_second`), whatever the number of sessions.
    pub(crate) searches_by_user: DefaultKeyedRateLimiter<i64>,
    /// Messages per user (`messages_per_second`), all their sessions together: each
    /// session has its own limit too, and one account may have `max_sessions_per_user`.
    pub(crate) messages_by_user: DefaultKeyedRateLimiter<i64>,
    /// Private channels created per user (`channels_per_hour_per_user`).
    pub(crate) channels_by_user: DefaultKeyedRateLimiter<i64>,
    /// Join requests per user (`join_requests_per_hour_per_user`): each is told to every
    /// administrator.
    pub(crate) join_requests_by_user: DefaultKeyedRateLimiter<i64>,
    /// Searches running at once: one per user, `searches_at_once` on the node.
    pub(crate) search_turns: search::SearchTurns,
    /// Password guessing: per account and source, and per account (`throttle.rs`).
    pub(crate) throttle: Throttle,
    /// The bound on password hashes waiting or running.
    pub(crate) hash_slots: accounts::HashSlots,
    /// Registrations per address (an IPv6 /64) and from everywhere: each answer says
    /// whether a name is taken.
    pub(crate) register_by_address: DefaultKeyedRateLimiter<IpAddr>,
    pub(crate) register_everywhere: DefaultDirectRateLimiter,
    pub(crate) next_session: AtomicU64,
    pub(crate) shutting_down: AtomicBool,
    /// Every open connection, logged in or not, so that shutdown can close them all.
    pub(crate) connections: std::sync::Mutex<HashMap<SessionId, Outbound>>,
    /// One lock per user whose memberships are being changed (join, leave, channel
    /// creation, a decision on their request): the sessions of one user joining at the
    /// same moment are served one after the other, so they see each other's effect.
    /// Entries of users nobody is changing are dropped (bounded by concurrent changes).
    pub(crate) membership_locks: UserLocks,
    /// Attached files: their directory and the bound on image decoding.
    pub(crate) files: files::Files,
}

pub(crate) fn quota_per_second(rate: u32, burst: u32) -> Quota {
    Quota::per_second(NonZeroU32::new(rate).unwrap_or(NonZeroU32::MIN))
        .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN))
}

pub(crate) fn quota_per_minute(n: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN))
}

pub(crate) fn quota_per_hour(n: u32) -> Quota {
    Quota::per_hour(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN))
}

/// One async lock per user, made when first asked for and gone with its last holder or
/// waiter: the map keeps weak references only, pruned when a user is added, so it holds
/// at most one live entry per holder or waiter.
#[derive(Default)]
pub(crate) struct UserLocks(
    std::sync::Mutex<HashMap<i64, std::sync::Weak<tokio::sync::Mutex<()>>>>,
);

impl UserLocks {
    /// Waits until `user`'s lock is free and takes it.
    pub(crate) async fn lock(&self, user: i64) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = crate::lock(&self.0);
            match locks.get(&user).and_then(std::sync::Weak::upgrade) {
                Some(lock) => lock,
                None => {
                    locks.retain(|_, weak| weak.strong_count() > 0);
                    let lock = Arc::new(tokio::sync::Mutex::new(()));
                    locks.insert(user, Arc::downgrade(&lock));
                    lock
                }
            }
        };
        lock.lock_owned().await
    }

    /// Users whose lock someone holds or waits for.
    #[cfg(test)]
    pub(crate) fn users(&self) -> usize {
        crate::lock(&self.0)
            .values()
            .filter(|weak| weak.strong_count() > 0)
            .count()
    }
}

impl Service {
    /// Whether `user` is a member of `room`. This node's registry answers at once; in a
    /// cluster a "no" is checked in the database, which another node's join changes
    /// before its bus message arrives here (after a `join` answered on node A, a `send`
    /// on node B succeeds). A "yes" is checked there too while this node is not current
    /// on the bus (`Bus::current`): a `leave` answered on A holds on B even when B lags.
    pub(crate) async fn is_member(&self, user: i64, room: i64) -> Result<bool> {
        let cached = self.live.hub().is_member(user, room);
        if !self.config.cluster.enabled() || (cached && self.bus.current()) {
            return Ok(cached);
        }
        if cached {
            metrics::counter!(crate::metrics::CLUSTER_MEMBERSHIP_RECHECKED).increment(1);
        }
        Ok(self.store.is_member(room, user).await?)
    }

    pub fn new(
        config: Arc<Config>,
        store: Store,
        live: Arc<Live>,
        bus: Arc<dyn Bus>,
        persist: Persist,
        clock: SharedClock,
        ids: Arc<IdGenerator>,
    ) -> Service {
        let limits = &config.limits;
        Service {
            files: files::Files::new(crate::blobs::Blobs::at(config.files_dir())),
            auth_by_address: RateLimiter::keyed(quota_per_minute(
                limits.auth_attempts_per_minute_per_address,
            )),
            searches_by_user: RateLimiter::keyed(quota_per_second(
                limits.searches_per_second,
                limits.search_burst,
            )),
            messages_by_user: RateLimiter::keyed(quota_per_second(
                limits.messages_per_second,
                limits.message_burst,
            )),
            channels_by_user: RateLimiter::keyed(quota_per_hour(limits.channels_per_hour_per_user)),
            join_requests_by_user: RateLimiter::keyed(quota_per_hour(
                limits.join_requests_per_hour_per_user,
            )),
            search_turns: search::SearchTurns::new(
                limits.searches_at_once,
                std::time::Duration::from_millis(limits.database_timeout_ms),
            ),
            throttle: Throttle::new(throttle::Settings {
                free_failures: limits.login_failures_before_delay,
                max_delay_ms: (limits.login_delay_max_secs.min(i64::MAX as u64 / 1000) * 1000)
                    as i64,
                failures_per_hour: limits.login_failures_per_hour_per_account,
                trust_ms: i64::from(limits.session_ttl_hours) * 3_600_000,
            }),
            hash_slots: accounts::HashSlots::new(limits.max_pending_password_hashes),
            register_by_address: RateLimiter::keyed(quota_per_hour(
                limits.registrations_per_hour_per_address,
            )),
            register_everywhere: RateLimiter::direct(quota_per_minute(
                limits.registrations_per_minute,
            )),
            config,
            store,
            live,
            bus,
            persist,
            clock,
            ids,
            next_session: AtomicU64::new(1),
            shutting_down: AtomicBool::new(false),
            connections: Default::default(),
            membership_locks: Default::default(),
        }
    }

    /// Publishes `event` for `to` on the bus.
    pub(crate) fn tell(&self, to: Audience, event: salon_proto::Event) {
        self.bus.publish(Message::Event(to, event));
    }

    /// Opens a connection's state and registers it for shutdown.
    pub fn open_session(
        &self,
        outbound: Outbound,
        peer: SocketAddr,
        transport: salon_proto::Transport,
    ) -> SessionState {
        let limits = &self.config.limits;
        crate::lock(&self.connections).insert(outbound.id, outbound.clone());
        SessionState {
            outbound,
            peer,
            transport,
            user: None,
            token_hash: None,
            token_expires: 0,
            backlog: None,
            in_flight: std::sync::OnceLock::new(),
            presence: true,
            typing: None,
            messages: RateLimiter::direct(quota_per_second(
                limits.messages_per_second,
                limits.message_burst,
            )),
            requests: RateLimiter::direct(quota_per_second(
                limits.requests_per_second,
                limits.request_burst,
            )),
        }
    }

    pub fn next_session_id(&self) -> SessionId {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }

    /// Forgets a connection: the user goes offline if it was their last session.
    pub async fn close_session(&self, session: &SessionState) {
        crate::lock(&self.connections).remove(&session.outbound.id);
        let Some(user) = &session.user else { return };
        if self.live.detach(session.outbound.id) {
            // The user's last session here that counts for presence: offline to others
            // if no other node holds one.
            self.live.sync_presence(user, &*self.bus);
        }
    }

    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    /// Whether this node is stopping: an administrator's countdown (on any node of a
    /// cluster), a signal, or a `shutdown` command being recorded here.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst) || self.live.countdown().is_some()
    }

    /// Runs an administrator's shutdown countdown on this node's sessions once one is
    /// requested (by a `shutdown` command on any node), and resolves when it has ended.
    pub async fn stop_requested(&self) {
        self.live.count_down().await
    }

    /// What clients are told when the server stops: the administrator's message if one
    /// requested the stop, otherwise a generic one.
    pub fn shutdown_message(&self) -> String {
        self.live
            .countdown()
            .map(|(_, message)| message)
            .unwrap_or_else(|| "the server is stopping".into())
    }

    /// Every open connection (logged in or not).
    pub fn connections(&self) -> Vec<Outbound> {
        crate::lock(&self.connections).values().cloned().collect()
    }

    /// Forgets rate-limiter entries of addresses and accounts not seen lately.
    pub fn prune_limiters(&self) {
        self.auth_by_address.retain_recent();
        self.searches_by_user.retain_recent();
        self.messages_by_user.retain_recent();
        self.channels_by_user.retain_recent();
        self.join_requests_by_user.retain_recent();
        self.register_by_address.retain_recent();
        self.throttle.prune(self.clock.now_ms());
    }

    /// Removes the records of changes (`message_changes` and `read_changes`, kept by the
    /// nodes of a cluster for their catch-up) older than [`CHANGES_KEPT_MS`]: a node that missed
    /// more than that closes its sessions to resync long before.
    pub async fn sweep_changes(&self) -> Result<u64> {
        if !self.config.cluster.enabled() {
            return Ok(0);
        }
        let before = self.clock.now_ms() - CHANGES_KEPT_MS;
        Ok(self.store.purge_change_records(before).await?)
    }
}

/// How long changes of stored messages are kept for a cluster's catch-up: a day.
pub const CHANGES_KEPT_MS: i64 = 24 * 3_600 * 1_000;

pub(crate) fn user(me: Option<&Identity>) -> Result<&Identity> {
    me.ok_or_else(|| reject(ErrorCode::NotAuthenticated, "log in first"))
}
