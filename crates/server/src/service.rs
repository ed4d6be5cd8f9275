//! The domain services: one handler per command. A frame is decoded, checked against the
//! command table (login needed? admin only? rate class?) and only then handled. Handlers
//! answer through the session's outbound queue with a reply tagged by the request id, and
//! fan out through the [`Hub`]; they never touch a socket. Only this module (through
//! [`Store`]) and the message writer reach the database.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use salon_proto::{
    args, encode_error, encode_ok, Access, Account, Command, DecodeError, ErrorBody, ErrorCode,
    Event, HistoryPage, JoinPolicy, MemberState, RateClass, RegistrationMode, Request, RoomInfo,
    Status, UserPresence, Welcome,
};

use crate::accounts;
use crate::clock::SharedClock;
use crate::config::Config;
use crate::hub::{
    encode_event, AttachRefused, CloseReason, Hub, Identity, Outbound, Revocations, RoomId,
    SessionId,
};
use crate::ids::IdGenerator;
use crate::persist::{Ack, InFlight, Job, Persist};
use crate::store::{fold, RoomRow, Store, StoreError};
use crate::throttle::{self, AccountKey, Refusal, Source, Throttle};

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
            Error::Store(StoreError::Timeout(_)) => ErrorBody::new(
                ErrorCode::Unavailable,
                "the database did not answer in time; try again later",
            ),
            Error::Store(e) if e.is_unavailable() => ErrorBody::new(
                ErrorCode::Unavailable,
                "the database is unavailable; nothing was changed, try again later",
            ),
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

/// A `history` page when `limit` is omitted (or `history_page_max` if smaller).
const DEFAULT_HISTORY_PAGE: u32 = 50;

/// What a handler did with its reply.
pub(crate) enum Done {
    /// Send this reply now.
    Reply(Bytes),
    /// The reply will come later from the message writer, after the commit.
    Deferred,
    /// Send this reply, then close the connection.
    ReplyAndClose(Bytes, salon_proto::CloseCode, &'static str),
}

pub(crate) fn ok<T: serde::Serialize + ?Sized>(re: u64, data: &T) -> Result<Done> {
    Ok(Done::Reply(Bytes::from(encode_ok(re, data))))
}

/// Per-connection state seen by handlers.
pub struct SessionState {
    pub outbound: Outbound,
    pub peer: SocketAddr,
    /// `tcp`, `websocket` or `local` (the server console).
    pub transport: &'static str,
    pub user: Option<Identity>,
    /// Hash of this session's resume token, once logged in.
    token_hash: Option<String>,
    /// Private messages waiting for this user when the session logged in.
    /// `None` once there is nothing (more) to push.
    backlog: Option<Box<Backlog>>,
    /// Replies owed by the message writer to this session's requests.
    /// Made at the first `send`/`direct` (an idle session allocates nothing for it).
    in_flight: std::sync::OnceLock<Arc<InFlight>>,
    /// Whether this session counts for its user's presence (`login`'s `presence`).
    presence: bool,
    messages: DefaultDirectRateLimiter,
    requests: DefaultDirectRateLimiter,
}

impl SessionState {
    /// Whether the session has logged in (or resumed).
    pub fn logged_in(&self) -> bool {
        self.user.is_some()
    }

    /// Where the message writer answers request `re`; the reply is owed until then.
    fn ack(&self, re: u64) -> Ack {
        Ack {
            outbound: self.outbound.clone(),
            re,
            owed: self.in_flight.get_or_init(Arc::default).owe(),
        }
    }

    /// Resolves once every reply owed by the message writer has been queued (bounded:
    /// the writer answers every job, and gives up on a database call after its timeout).
    pub async fn replies_settled(&self) {
        let Some(in_flight) = self.in_flight.get() else {
            return;
        };
        if tokio::time::timeout(SETTLE_MAX, in_flight.settled())
            .await
            .is_err()
        {
            tracing::warn!(peer = %self.peer, "replies still owed after {SETTLE_MAX:?}");
        }
    }
}

/// The longest a closing session waits for the replies the message writer owes it.
const SETTLE_MAX: std::time::Duration = std::time::Duration::from_secs(60);

/// The private messages that were waiting when a session logged in (those with an id up
/// to `up_to`; later ones reach it live), pushed a page at a time.
struct Backlog {
    up_to: i64,
    /// Id of the last message pushed.
    after: i64,
    /// Pushed in the current page and not yet acknowledged.
    outstanding: HashSet<i64>,
}

/// Private messages pushed per backlog page.
const BACKLOG_PAGE: u32 = 100;
/// Most ids one `ack_directs` may carry.
const MAX_ACK_IDS: usize = 256;

/// Where a new session's resume token comes from, and what proved the login.
enum Token {
    /// `login`: a new one. `verified` is the password hash the password was checked
    /// against.
    New { verified: String },
    /// `resume`: the token presented.
    Existing {
        token: String,
        hash: String,
        expires: i64,
    },
}

/// Rooms and private channels by id and by folded name. Small and read on every command,
/// so it lives in memory; the database stays the source of truth.
#[derive(Default)]
pub(crate) struct Directory {
    pub(crate) by_id: HashMap<RoomId, Arc<RoomRow>>,
    pub(crate) by_key: HashMap<String, RoomId>,
    /// Default rooms first (by id), then channels by creation.
    order: Vec<RoomId>,
}

impl Directory {
    fn insert(&mut self, room: RoomRow) {
        self.by_key.insert(fold(&room.name), room.id);
        self.order.push(room.id);
        self.by_id.insert(room.id, Arc::new(room));
    }
}

pub struct Service {
    pub config: Arc<Config>,
    pub store: Store,
    pub hub: Arc<Hub>,
    pub(crate) persist: Persist,
    pub(crate) clock: SharedClock,
    pub(crate) ids: Arc<IdGenerator>,
    pub(crate) directory: RwLock<Directory>,
    pub(crate) auth_by_address: DefaultKeyedRateLimiter<IpAddr>,
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
    /// Cancelled when an administrator's `shutdown` countdown ends; `run` then stops.
    pub(crate) stop_requested: tokio_util::sync::CancellationToken,
    /// One lock per user whose memberships are being changed (join, leave, channel
    /// creation, a decision on their request): the sessions of one user joining at the
    /// same moment are served one after the other, so they see each other's effect.
    /// Entries of users nobody is changing are dropped (bounded by concurrent changes).
    membership_locks: std::sync::Mutex<HashMap<i64, std::sync::Weak<tokio::sync::Mutex<()>>>>,
    /// The administrator's message for that shutdown, repeated in its last event and in
    /// the `closing` frames.
    pub(crate) shutdown_message: std::sync::Mutex<Option<String>>,
}

fn quota_per_second(rate: u32, burst: u32) -> Quota {
    Quota::per_second(NonZeroU32::new(rate).unwrap_or(NonZeroU32::MIN))
        .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN))
}

fn quota_per_minute(n: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN))
}

fn quota_per_hour(n: u32) -> Quota {
    Quota::per_hour(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN))
}

impl Service {
    pub async fn new(
        config: Arc<Config>,
        store: Store,
        hub: Arc<Hub>,
        persist: Persist,
        clock: SharedClock,
        ids: Arc<IdGenerator>,
    ) -> Result<Service, StoreError> {
        let mut directory = Directory::default();
        for room in store.rooms().await? {
            directory.insert(room);
        }
        let limits = &config.limits;
        Ok(Service {
            auth_by_address: RateLimiter::keyed(quota_per_minute(
                limits.auth_attempts_per_minute_per_address,
            )),
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
            hub,
            persist,
            clock,
            ids,
            directory: RwLock::new(directory),
            next_session: AtomicU64::new(1),
            shutting_down: AtomicBool::new(false),
            connections: Default::default(),
            stop_requested: Default::default(),
            membership_locks: Default::default(),
            shutdown_message: Default::default(),
        })
    }

    /// Opens a connection's state and registers it for shutdown.
    pub fn open_session(
        &self,
        outbound: Outbound,
        peer: SocketAddr,
        transport: &'static str,
    ) -> SessionState {
        let limits = &self.config.limits;
        crate::lock(&self.connections).insert(outbound.id, outbound.clone());
        SessionState {
            outbound,
            peer,
            transport,
            user: None,
            token_hash: None,
            backlog: None,
            in_flight: std::sync::OnceLock::new(),
            presence: true,
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

    /// Serialises changes to one user's memberships (see `membership_locks`).
    pub(crate) async fn lock_memberships(&self, user: i64) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = crate::lock(&self.membership_locks);
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

    pub fn next_session_id(&self) -> SessionId {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }

    /// Forgets a connection: the user goes offline if it was their last session.
    pub async fn close_session(&self, session: &SessionState) {
        crate::lock(&self.connections).remove(&session.outbound.id);
        let Some(user) = &session.user else { return };
        if let Some(presence) = self.hub.detach(session.outbound.id) {
            self.announce(user.id, presence);
        }
    }

    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    /// Whether the server is stopping (an administrator's countdown, or a signal).
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Resolves when an administrator's shutdown countdown has ended.
    pub async fn stop_requested(&self) {
        self.stop_requested.cancelled().await
    }

    /// What clients are told when the server stops: the administrator's message if one
    /// requested the stop, otherwise a generic one.
    pub fn shutdown_message(&self) -> String {
        crate::lock(&self.shutdown_message)
            .clone()
            .unwrap_or_else(|| "the server is stopping".into())
    }

    /// Every open connection (logged in or not).
    pub fn connections(&self) -> Vec<Outbound> {
        crate::lock(&self.connections).values().cloned().collect()
    }

    /// Forgets rate-limiter entries of addresses and accounts not seen lately.
    pub fn prune_limiters(&self) {
        self.auth_by_address.retain_recent();
        self.register_by_address.retain_recent();
        self.throttle.prune(self.clock.now_ms());
    }

    /// Presence changes are sent and stored on the next tick ([`Service::flush_presence`]).
    pub(crate) fn announce(&self, user: i64, presence: UserPresence) {
        self.hub.queue_presence(user, presence);
    }

    /// Sends the presence changes gathered since the last tick and stores them in one
    /// transaction (a status is not worth an fsync per login).
    pub async fn flush_presence(&self) {
        let changes = self.hub.flush_presence();
        if changes.is_empty() {
            return;
        }
        if let Err(e) = self.store.set_statuses(&changes).await {
            tracing::warn!(error = %e, count = changes.len(), "could not store statuses");
        }
    }

    // ----- dispatch -------------------------------------------------------------------

    /// Handles one inbound frame; the reply (or error) is queued on the session.
    pub async fn handle_frame(&self, s: &mut SessionState, frame: &[u8]) {
        let request = match Request::decode(frame) {
            Ok(r) => r,
            Err(e) => {
                let (re, body) = decode_error_body(e);
                s.outbound.reply(Bytes::from(encode_error(re, body))).await;
                return;
            }
        };
        let re = request.id;
        match self.dispatch(s, request).await {
            Ok(Done::Reply(bytes)) => s.outbound.reply(bytes).await,
            Ok(Done::Deferred) => {}
            Ok(Done::ReplyAndClose(bytes, code, message)) => {
                s.outbound.reply(bytes).await;
                s.outbound.close(code, message, true);
            }
            Err(e) => {
                if !matches!(e, Error::Rejected(_)) {
                    tracing::error!(error = %e, peer = %s.peer, "request failed");
                }
                if matches!(e, Error::Store(_)) {
                    metrics::counter!(crate::metrics::DATABASE_ERRORS).increment(1);
                }
                let body = e.to_body();
                if body.code == ErrorCode::RateLimited {
                    metrics::counter!(crate::metrics::RATE_LIMITED).increment(1);
                }
                s.outbound
                    .reply(Bytes::from(encode_error(Some(re), body)))
                    .await;
            }
        }
    }

    async fn dispatch(&self, s: &mut SessionState, request: Request) -> Result<Done> {
        let command = request.command;
        let re = request.id;
        // The command table's cross-cutting checks, before any handler runs.
        match (command.access(), &s.user) {
            (Access::Public, _) => {}
            (Access::User, Some(_)) => {}
            (Access::Admin, Some(u)) if u.is_admin => {}
            (Access::Admin, Some(_)) => {
                return Err(reject(
                    ErrorCode::Forbidden,
                    format!("`{}` is for administrators only", command.name()),
                ))
            }
            (_, None) => {
                return Err(reject(
                    ErrorCode::NotAuthenticated,
                    format!("log in before using `{}`", command.name()),
                ))
            }
        }
        self.check_rate(s, command.rate_class())?;

        let me = s.user.clone();
        let me = me.as_ref();
        match command {
            Command::Ping(_) => ok(re, &serde_json::json!({})),
            Command::Register(a) => self.register(s, re, a).await,
            Command::Login(a) => {
                let done = self.login(s, re, a).await;
                let outcome = match &done {
                    Ok(_) => "succeeded",
                    Err(Error::Rejected(b)) if b.code == ErrorCode::InvalidCredentials => "failed",
                    Err(_) => "refused",
                };
                metrics::counter!(crate::metrics::LOGINS, "outcome" => outcome).increment(1);
                done
            }
            Command::Resume(a) => self.resume(s, re, a).await,
            Command::Logout(_) => {
                // Requests sent before the logout get their replies first.
                s.replies_settled().await;
                if let Some(hash) = s.token_hash.take() {
                    self.store.delete_session_token(&hash).await?;
                }
                Ok(Done::ReplyAndClose(
                    Bytes::from(encode_ok(re, &serde_json::json!({}))),
                    salon_proto::CloseCode::Logout,
                    "logged out",
                ))
            }
            Command::ChangePassword(a) => self.change_password(s, re, a).await,
            Command::Rooms(_) => ok(
                re,
                &serde_json::json!({ "rooms": self.rooms_of(user(me)?.id) }),
            ),
            Command::Join(a) => self.join(s, re, a).await,
            Command::Leave(a) => self.leave(s, re, a).await,
            Command::Send(a) => self.send(s, re, a).await,
            Command::Direct(a) => self.direct(s, re, a).await,
            Command::AckDirects(a) => self.ack_directs(s, re, a).await,
            Command::History(a) => self.history(user(me)?, re, a).await,
            Command::Who(_) => self.who(re).await,
            Command::Conversations(_) => self.conversations(user(me)?, re).await,
            Command::SetStatus(a) => {
                if !s.presence {
                    return Err(ErrorBody::new(
                        ErrorCode::InvalidRequest,
                        "this session was logged in with presence: false; it cannot set a status",
                    )
                    .with_field("status")
                    .into());
                }
                self.set_status(user(me)?, re, a).await
            }
            Command::CreateChannel(a) => self.create_channel(s, re, a).await,
            Command::Connected(_) => {
                ok(re, &serde_json::json!({ "sessions": self.hub.connected() }))
            }
            Command::Kick(a) => self.kick(user(me)?, re, a).await,
            Command::Unkick(a) => self.unkick(user(me)?, re, a).await,
            Command::Ban(a) => self.ban(user(me)?, re, a).await,
            Command::Unban(a) => self.unban(user(me)?, re, a).await,
            Command::Sanctions(_) => {
                let now = self.clock.now_ms();
                let sanctions = self.store.current_sanctions(now).await?;
                ok(re, &serde_json::json!({ "sanctions": sanctions }))
            }
            Command::Requests(_) => ok(
                re,
                &serde_json::json!({ "requests": self.store.pending_requests().await? }),
            ),
            Command::Accept(a) => self.decide(user(me)?, re, a, true).await,
            Command::Reject(a) => self.decide(user(me)?, re, a, false).await,
            Command::Broadcast(a) => self.broadcast(user(me)?, re, a).await,
            Command::Shutdown(a) => self.shutdown(user(me)?, re, a).await,
            Command::ResetPassword(a) => {
                let slot = self.hash_slot(Source::of(s.peer, s.transport))?;
                let session = (s.outbound.id, s.token_hash.as_deref());
                self.reset_password(user(me)?, session, re, a, slot).await
            }
            Command::Audit(a) => self.audit_log(re, a).await,
            Command::AccountRequests(_) => ok(
                re,
                &serde_json::json!({ "accounts": self.store.account_requests().await? }),
            ),
            Command::ApproveAccount(a) => self.decide_account(user(me)?, re, a.user, None).await,
            Command::RejectAccount(a) => {
                let reason = Some(a.reason.unwrap_or_default());
                self.decide_account(user(me)?, re, a.user, reason).await
            }
            Command::CreateInvite(a) => self.create_invite(user(me)?, re, a).await,
            Command::Invites(_) => ok(
                re,
                &serde_json::json!({ "invites": self.store.invites(self.clock.now_ms()).await? }),
            ),
            Command::RevokeInvite(a) => self.revoke_invite(user(me)?, re, a).await,
            Command::CreateAccount(a) => {
                let _slot = self.hash_slot(Source::of(s.peer, s.transport))?;
                self.create_account_by_admin(user(me)?, re, a).await
            }
        }
    }

    fn check_rate(&self, s: &SessionState, class: RateClass) -> Result<()> {
        let verdict = match class {
            RateClass::Auth => self.auth_by_address.check_key(&s.peer.ip()),
            RateClass::Message => s.messages.check(),
            RateClass::Other => s.requests.check(),
        };
        verdict.map_err(|not_until| rate_limited(not_until, None))
    }

    // ----- accounts -------------------------------------------------------------------

    async fn register(&self, s: &SessionState, re: u64, a: args::Register) -> Result<Done> {
        // Each answer tells whether a name is taken: limited like guessing.
        self.register_by_address
            .check_key(&throttle::network_of(s.peer.ip()))
            .map_err(|not_until| {
                rate_limited(not_until, Some("too many registrations from your address"))
            })?;
        self.register_everywhere.check().map_err(|not_until| {
            rate_limited(not_until, Some("too many registrations right now"))
        })?;
        let admission =
            match self.config.registration {
                RegistrationMode::Open => accounts::Admission::default(),
                RegistrationMode::Approval => accounts::Admission {
                    pending: true,
                    invite: None,
                },
                RegistrationMode::Invite => {
                    let code = a.invite.clone().unwrap_or_default();
                    if code.trim().is_empty() {
                        return Err(ErrorBody::new(
                            ErrorCode::InvalidInvite,
                            "registration on this server needs an invitation from an administrator",
                        )
                        .with_field("invite")
                        .into());
                    }
                    accounts::Admission {
                        pending: false,
                        invite: Some(code),
                    }
                }
                RegistrationMode::Closed => return Err(reject(
                    ErrorCode::RegistrationClosed,
                    "registration is closed on this server: ask an administrator for an account",
                )),
            };
        let _slot = self.hash_slot(Source::of(s.peer, s.transport))?;
        let now = self.clock.now_ms();
        let account =
            accounts::create_account_as(&self.store, &self.ids, now, a, false, admission).await?;
        if account.pending_approval {
            tracing::info!(user = %account.username, "account waiting for approval");
            self.hub.to_admins(&encode_event(Event::AccountRequest(
                salon_proto::AccountRequest {
                    username: account.username.clone(),
                    alias: account.alias.clone(),
                    first_name: account.first_name.clone(),
                    last_name: account.last_name.clone(),
                    requested_at: now,
                },
            )));
        }
        ok(re, &account)
    }

    fn check_can_log_in(&self, s: &SessionState) -> Result<()> {
        if s.user.is_some() {
            return Err(reject(
                ErrorCode::AlreadyAuthenticated,
                "this session is already logged in",
            ));
        }
        if self.shutting_down.load(Ordering::SeqCst) {
            return Err(reject(
                ErrorCode::ShuttingDown,
                "the server is shutting down",
            ));
        }
        Ok(())
    }

    async fn resume(&self, s: &mut SessionState, re: u64, a: args::Resume) -> Result<Done> {
        self.check_can_log_in(s)?;
        // Taken before the token is looked up (see `establish`).
        let seen = self.hub.revocations();
        let hash = accounts::session_token_hash(&a.token);
        let Some((user, expires)) = self
            .store
            .user_by_session_token(&hash, self.clock.now_ms())
            .await?
        else {
            return Err(reject(
                ErrorCode::InvalidCredentials,
                "this session token is unknown, expired or revoked; log in again",
            ));
        };
        let token = Token::Existing {
            token: a.token,
            hash,
            expires,
        };
        self.establish(s, re, user, token, a.presence.unwrap_or(true), seen)
            .await
    }

    async fn login(&self, s: &mut SessionState, re: u64, a: args::Login) -> Result<Done> {
        self.check_can_log_in(s)?;
        if a.login.is_empty() || a.password.is_empty() {
            let field = if a.login.is_empty() {
                "login"
            } else {
                "password"
            };
            return Err(
                ErrorBody::new(ErrorCode::MissingField, format!("{field} is required"))
                    .with_field(field)
                    .into(),
            );
        }
        // Taken before the password hash is read (see `establish`).
        let seen = self.hub.revocations();
        let key = fold(&a.login);
        // No username or alias starts or ends with a space: such a login names no
        // account (whatever the database's collation would match), and is answered
        // like any unknown one.
        let found = if a.login.trim() == a.login {
            self.store.user_by_name(&key).await?
        } else {
            None
        };
        let account = found
            .as_ref()
            .map_or_else(|| self.throttle.unknown(&key), |u| AccountKey::Id(u.id));
        let hash = found.as_ref().map(|u| u.password_hash.clone());
        let verified = self.check_password(s, account, a.password, hash).await?;
        let user = match found {
            Some(user) if verified => user,
            _ => {
                tracing::info!(peer = %s.peer, "failed login");
                return Err(reject(
                    ErrorCode::InvalidCredentials,
                    "wrong login or password",
                ));
            }
        };
        let token = Token::New {
            verified: user.password_hash.clone(),
        };
        self.establish(s, re, user, token, a.presence.unwrap_or(true), seen)
            .await
    }

    /// Makes `s` a logged-in session of `user`: sanctions checked, a token (stored just
    /// before the attach, deleted again if the login is refused), live state unless a
    /// revocation came since `seen` (then everything is checked again), presence (unless
    /// the session asked not to count for it), the welcome reply, then the first page of
    /// private messages waiting for the user. After the welcome reply has gone, a failure
    /// is logged, never answered: every request gets exactly one reply.
    #[allow(clippy::too_many_arguments)]
    async fn establish(
        &self,
        s: &mut SessionState,
        re: u64,
        user: crate::store::UserRow,
        proof: Token,
        presence: bool,
        seen: Revocations,
    ) -> Result<Done> {
        let identity = Identity {
            id: user.id,
            username: user.username.clone(),
            alias: user.alias.clone(),
            is_admin: user.is_admin,
        };
        let max = self.config.limits.max_sessions_per_user;
        let mut seen = seen;
        let mut rechecks = 0;
        // Sanctions checked, then attached only if no revocation (ban, kick, password
        // change or reset) came since `seen` was taken, before the credentials were
        // checked; one that comes later closes the session (see `hub::Revocations`).
        // An account waiting for approval cannot log in (checked after the password, so
        // it tells nothing to a guesser).
        if !user.approved {
            return Err(reject(
                ErrorCode::PendingApproval,
                "your account is waiting for an administrator's approval",
            ));
        }
        let (attached, token, token_hash, token_expires) = loop {
            self.check_sanctions(user.id).await?;
            let (rooms, pending) = self.store.room_states(user.id).await?;
            // A new token is stored before the attach, so that a revocation that comes
            // after the attach finds it and deletes it.
            let (token_now, hash_now, expires_now, created) = match &proof {
                Token::Existing {
                    token,
                    hash,
                    expires,
                } => (token.clone(), hash.clone(), *expires, false),
                Token::New { .. } => {
                    let (token, hash) = accounts::new_session_token();
                    let now = self.clock.now_ms();
                    let expires = now + i64::from(self.config.limits.session_ttl_hours) * 3_600_000;
                    self.store
                        .create_session_token(&hash, user.id, now, expires)
                        .await?;
                    (token, hash, expires, true)
                }
            };
            let meta = crate::hub::SessionMeta {
                address: s.peer.to_string(),
                transport: s.transport,
                since: self.clock.now_ms(),
                presence,
            };
            let refused = match self.hub.attach(
                &identity,
                Status::Online,
                rooms,
                pending,
                &s.outbound,
                meta,
                max,
                &seen,
            ) {
                Ok(attached) => break (attached, token_now, hash_now, expires_now),
                Err(refused) => refused,
            };
            if created {
                self.forget_token(&hash_now).await;
            }
            if refused == AttachRefused::TooManySessions {
                return Err(reject(
                    ErrorCode::TooManySessions,
                    format!("this account already has {max} sessions open; log out of one first"),
                ));
            }
            // Revoked meanwhile: check the credentials again (they may be what changed),
            // then the sanctions at the top of the loop.
            rechecks += 1;
            if rechecks > 3 {
                let mut body = ErrorBody::new(
                    ErrorCode::RateLimited,
                    "this account is being changed by an administrator; try again",
                );
                body.retry_after_ms = Some(100);
                return Err(body.into());
            }
            seen = self.hub.revocations();
            if !self.still_valid(&user, &proof).await? {
                return Err(reject(
                    ErrorCode::InvalidCredentials,
                    match proof {
                        Token::New { .. } => "wrong login or password",
                        Token::Existing { .. } => {
                            "this session token is unknown, expired or revoked; log in again"
                        }
                    },
                ));
            }
        };
        // Attached: a failure from here on detaches the session again before answering.
        let waiting = match self
            .store
            .count_undelivered(user.id, attached.direct_watermark)
            .await
        {
            Ok(waiting) => waiting,
            Err(e) => {
                self.hub.detach(s.outbound.id);
                if matches!(proof, Token::New { .. }) {
                    self.forget_token(&token_hash).await;
                }
                return Err(e.into());
            }
        };
        if let Some(presence) = attached.presence {
            self.announce(user.id, presence);
        }
        // Where the account logs in from is not delayed by others' failures.
        self.throttle.trust(
            user.id,
            Source::of(s.peer, s.transport),
            self.clock.now_ms(),
        );
        s.user = Some(identity);
        s.token_hash = Some(token_hash);
        // A session without presence (a tool: `salon admin`, a bot) is not where the
        // user reads: it gets no backlog, and its acknowledgements do not count.
        s.backlog = (presence && waiting > 0).then(|| {
            Box::new(Backlog {
                up_to: attached.direct_watermark,
                after: 0,
                outstanding: HashSet::new(),
            })
        });
        let status = self.hub.status_of(user.id).unwrap_or(Status::Offline);
        s.presence = presence;
        let welcome = Welcome {
            account: Account {
                username: user.username,
                alias: user.alias,
                first_name: user.first_name,
                last_name: user.last_name,
                is_admin: user.is_admin,
                // As others see the user: kept from another device (away, busy), or
                // offline if only sessions without presence are connected.
                status,
                pending_approval: false,
            },
            rooms: self.rooms_of(user.id),
            offline_directs: if presence { waiting } else { 0 },
            token,
            token_expires,
        };
        s.outbound.reply(Bytes::from(encode_ok(re, &welcome))).await;
        if let Err(e) = self.after_welcome(s, user.id, user.is_admin).await {
            tracing::warn!(error = %e, peer = %s.peer, "could not send what waited for a login");
        }
        Ok(Done::Deferred)
    }

    /// What follows a welcome: private messages waiting (R13), join decisions taken while
    /// offline (R8), and for administrators the requests waiting for them.
    async fn after_welcome(&self, s: &mut SessionState, user: i64, is_admin: bool) -> Result<()> {
        self.push_backlog(s).await?;
        for decision in self.store.take_untold_decisions(user).await? {
            let room = crate::read(&self.directory)
                .by_id
                .get(&decision.room_id)
                .cloned();
            if let Some(room) = room {
                let event = self.decision_event(user, &room, decision.accepted, decision.reason);
                s.outbound.reply(event).await;
            }
        }
        if is_admin {
            for request in self.store.pending_requests().await? {
                s.outbound
                    .reply(encode_event(Event::JoinRequest(request)))
                    .await;
            }
            for account in self.store.account_requests().await? {
                s.outbound
                    .reply(encode_event(Event::AccountRequest(account)))
                    .await;
            }
        }
        Ok(())
    }

    /// Pushes the next page of the session's backlog of private messages, if the
    /// previous page has been acknowledged: never faster than the client takes them.
    async fn push_backlog(&self, s: &mut SessionState) -> Result<()> {
        let Some(user) = s.user.as_ref().map(|u| u.id) else {
            return Ok(());
        };
        let Some(backlog) = s.backlog.as_mut() else {
            return Ok(());
        };
        if !backlog.outstanding.is_empty() {
            return Ok(());
        }
        let page = self
            .store
            .undelivered_directs(user, backlog.after, backlog.up_to, BACKLOG_PAGE)
            .await?;
        let last_page = page.len() < BACKLOG_PAGE as usize;
        for dm in page {
            backlog.after = dm.id;
            backlog.outstanding.insert(dm.id);
            s.outbound.reply(encode_event(Event::Direct(dm))).await;
        }
        if last_page {
            s.backlog = None;
        }
        Ok(())
    }

    /// Records private messages as received; the next backlog page follows once the
    /// current one is acknowledged.
    async fn ack_directs(
        &self,
        s: &mut SessionState,
        re: u64,
        a: args::AckDirects,
    ) -> Result<Done> {
        let me = user(s.user.as_ref())?.id;
        if a.ids.len() > MAX_ACK_IDS {
            return Err(ErrorBody::new(
                ErrorCode::InvalidRequest,
                format!("acknowledge at most {MAX_ACK_IDS} messages at a time"),
            )
            .with_field("ids")
            .into());
        }
        if !s.presence {
            // A tool's session: the user has not read them (see `establish`).
            return ok(re, &serde_json::json!({}));
        }
        self.store.mark_delivered(me, &a.ids).await?;
        if let Some(backlog) = s.backlog.as_mut() {
            for id in &a.ids {
                backlog.outstanding.remove(id);
            }
        }
        self.push_backlog(s).await?;
        ok(re, &serde_json::json!({}))
    }

    async fn change_password(
        &self,
        s: &SessionState,
        re: u64,
        a: args::ChangePassword,
    ) -> Result<Done> {
        let me = user(s.user.as_ref())?;
        let user = self
            .store
            .user_by_name(&fold(&me.username))
            .await?
            .ok_or_else(|| reject(ErrorCode::Internal, "account vanished"))?;
        // The new password's rules first: a refused one costs no guess.
        accounts::check_password(&a.new_password, &user.username, &user.alias)
            .map_err(|e| e.with_field("new_password"))?;
        // Guesses of the old password are throttled like logins (per account).
        let (verified, _slot) = self
            .check_password_holding(
                s,
                AccountKey::Id(user.id),
                a.old_password,
                Some(user.password_hash),
            )
            .await?;
        if !verified {
            return Err(
                ErrorBody::new(ErrorCode::InvalidCredentials, "the old password is wrong")
                    .with_field("old_password")
                    .into(),
            );
        }
        let hash = accounts::hash_password(a.new_password).await?;
        self.store.set_password_hash(user.id, &hash).await?;
        // Other devices must log in again with the new password: now.
        self.revoke_user(
            user.id,
            Some((s.outbound.id, s.token_hash.as_deref())),
            CloseReason {
                code: Some(salon_proto::CloseCode::PasswordChanged),
                message: "your password was changed from another session; log in again with \
                          the new one"
                    .into(),
                drain: true,
                until: None,
            },
        )
        .await?;
        ok(re, &serde_json::json!({}))
    }

    /// Whether what proved a login still holds: the password hash it was checked
    /// against is still the account's, or the session token still exists.
    async fn still_valid(&self, user: &crate::store::UserRow, token: &Token) -> Result<bool> {
        Ok(match token {
            Token::New { verified } => self
                .store
                .user_by_name(&fold(&user.username))
                .await?
                .is_some_and(|u| u.id == user.id && &u.password_hash == verified),
            Token::Existing { hash, .. } => self
                .store
                .user_by_session_token(hash, self.clock.now_ms())
                .await?
                .is_some_and(|(u, _)| u.id == user.id),
        })
    }

    /// Deletes a token made for a login that did not happen.
    async fn forget_token(&self, hash: &str) {
        if let Err(e) = self.store.delete_session_token(hash).await {
            tracing::warn!(error = %e, "could not delete the token of a refused login");
        }
    }

    /// Makes a change to a user's standing take effect everywhere now (a ban, a kick, a
    /// password change or reset): every session but `keep` (the one that changed its own
    /// password) is closed with `reason`, logins in progress are refused, and every token
    /// but `keep`'s is revoked. The tokens are deleted before the sessions are closed,
    /// for a `resume` racing it, and again after, for a `login` that stored its new token
    /// meanwhile and was closed at once (see `hub::Revocations`). The sessions are
    /// closed even when the database is not there to delete the tokens.
    pub(crate) async fn revoke_user(
        &self,
        user: i64,
        keep: Option<(SessionId, Option<&str>)>,
        reason: CloseReason,
    ) -> Result<()> {
        let keep_token = keep.and_then(|(_, token)| token);
        let before = self.store.delete_session_tokens_of(user, keep_token).await;
        self.hub
            .revoke(user, keep.map(|(session, _)| session), &reason);
        let after = self.store.delete_session_tokens_of(user, keep_token).await;
        before?;
        after?;
        Ok(())
    }

    /// Checks a password guess against `hash` (`None`: no such account, checked against
    /// a dummy) within the guessing throttle and the bound on pending hashes.
    async fn check_password(
        &self,
        s: &SessionState,
        account: AccountKey,
        password: String,
        hash: Option<String>,
    ) -> Result<bool> {
        Ok(self
            .check_password_holding(s, account, password, hash)
            .await?
            .0)
    }

    /// [`Service::check_password`], keeping the hashing slot for a hash that follows.
    async fn check_password_holding(
        &self,
        s: &SessionState,
        account: AccountKey,
        password: String,
        hash: Option<String>,
    ) -> Result<(bool, accounts::HashSlot)> {
        let source = Source::of(s.peer, s.transport);
        let now = self.clock.now_ms();
        let attempt = self
            .throttle
            .begin(account, source, now)
            .map_err(guessing_limited)?;
        let slot = self
            .hash_slot(source)
            .inspect_err(|_| self.throttle.cancel(attempt, now))?;
        match accounts::verify_password(password, hash).await {
            Ok(true) => {
                self.throttle.succeeded(attempt, self.clock.now_ms());
                Ok((true, slot))
            }
            Ok(false) => {
                tracing::info!(peer = %s.peer, "failed password check");
                Ok((false, slot))
            }
            Err(e) => {
                self.throttle.cancel(attempt, now);
                Err(e.into())
            }
        }
    }

    /// A slot for one request's password hashing, or `rate_limited` at once.
    pub(crate) fn hash_slot(&self, source: Source) -> Result<accounts::HashSlot> {
        self.hash_slots
            .try_acquire(source.local)
            .map_err(|wait_ms| {
                let mut body = ErrorBody::new(
                    ErrorCode::RateLimited,
                    format!("the server is busy checking passwords; try again in {wait_ms} ms"),
                );
                body.retry_after_ms = Some(wait_ms);
                Error::Rejected(body)
            })
    }

    // ----- rooms ----------------------------------------------------------------------

    /// Every room visible to an online user, with their state in it.
    fn rooms_of(&self, user: i64) -> Vec<RoomInfo> {
        let (member, pending) = self.hub.room_states(user).unwrap_or_default();
        let dir = crate::read(&self.directory);
        dir.order
            .iter()
            .filter_map(|id| dir.by_id.get(id))
            .filter(|room| room.policy != JoinPolicy::Private || member.contains(&room.id))
            .map(|room| room_info(room, &member, &pending))
            .collect()
    }

    /// A room by name, as `user` may see it: private channels of which they are not a
    /// member do not exist for them.
    pub(crate) fn room_for(&self, user: &Identity, name: &str) -> Result<Arc<RoomRow>> {
        let dir = crate::read(&self.directory);
        let room = dir
            .by_key
            .get(&fold(name))
            .and_then(|id| dir.by_id.get(id))
            .filter(|r| r.policy != JoinPolicy::Private || self.hub.is_member(user.id, r.id))
            .cloned();
        room.ok_or_else(|| {
            ErrorBody::new(
                ErrorCode::NoSuchRoom,
                format!("there is no room named {name:?}"),
            )
            .with_field("room")
            .into()
        })
    }

    pub(crate) fn info_for(&self, user: i64, room: &RoomRow) -> RoomInfo {
        let (member, pending) = self.hub.room_states(user).unwrap_or_default();
        room_info(room, &member, &pending)
    }

    /// Tells a user's other sessions that their relation to a room changed.
    pub(crate) fn tell_membership(&self, user: i64, room: &RoomRow, reason: Option<String>) {
        let info = self.info_for(user, room);
        self.hub.to_user(
            user,
            &encode_event(Event::Membership { room: info, reason }),
        );
    }

    async fn join(&self, s: &mut SessionState, re: u64, a: args::Room) -> Result<Done> {
        let me = user(s.user.as_ref())?;
        let _serial = self.lock_memberships(me.id).await;
        let room = self.room_for(me, &a.room)?;
        if self.hub.is_member(me.id, room.id) {
            return Err(reject(
                ErrorCode::AlreadyMember,
                format!("you are already a member of {}", room.name),
            ));
        }
        let now = self.clock.now_ms();
        match room.policy {
            JoinPolicy::Everyone | JoinPolicy::Open => {
                self.store.add_member(room.id, me.id, now).await?;
                self.hub.add_membership(me.id, room.id);
            }
            JoinPolicy::Request => {
                if self.hub.is_pending(me.id, room.id) {
                    return Err(reject(
                        ErrorCode::RequestPending,
                        format!(
                            "your request to join {} is waiting for an administrator",
                            room.name
                        ),
                    ));
                }
                self.store.request_join(room.id, me.id, now).await?;
                self.hub.set_pending(me.id, room.id, true);
                self.hub.to_admins(&encode_event(Event::JoinRequest(
                    salon_proto::JoinRequest {
                        user: me.username.clone(),
                        alias: me.alias.clone(),
                        room: room.name.clone(),
                        requested_at: now,
                    },
                )));
                tracing::info!(user = %me.username, room = %room.name, "join requested");
            }
            // Only reachable by members, handled above.
            JoinPolicy::Private => {
                return Err(reject(ErrorCode::NoSuchRoom, "no such room"));
            }
        }
        self.tell_membership(me.id, &room, None);
        ok(
            re,
            &serde_json::json!({ "room": self.info_for(me.id, &room) }),
        )
    }

    async fn leave(&self, s: &mut SessionState, re: u64, a: args::Room) -> Result<Done> {
        let me = user(s.user.as_ref())?;
        let _serial = self.lock_memberships(me.id).await;
        let room = self.room_for(me, &a.room)?;
        if self.hub.is_pending(me.id, room.id) {
            self.store.withdraw_request(room.id, me.id).await?;
            self.hub.set_pending(me.id, room.id, false);
        } else if !self.hub.is_member(me.id, room.id) {
            return Err(reject(
                ErrorCode::NotMember,
                format!("you are not a member of {}", room.name),
            ));
        } else if room.policy == JoinPolicy::Everyone {
            return Err(reject(
                ErrorCode::CannotLeave,
                format!("everyone is a member of {}; it cannot be left", room.name),
            ));
        } else {
            self.store.remove_member(room.id, me.id).await?;
            self.hub.remove_membership(me.id, room.id);
        }
        let info = self.info_for(me.id, &room);
        self.hub.to_user(
            me.id,
            &encode_event(Event::Membership {
                room: info.clone(),
                reason: None,
            }),
        );
        ok(re, &serde_json::json!({ "room": info }))
    }

    async fn create_channel(
        &self,
        s: &mut SessionState,
        re: u64,
        a: args::CreateChannel,
    ) -> Result<Done> {
        const MAX_MEMBERS: usize = 500;
        let me = user(s.user.as_ref())?.clone();
        let mut a = a;
        a.name = crate::names::normalize(&a.name);
        accounts::check_room_name(&a.name)?;
        // A name that looks like a room the creator can see (same look-alike key) is
        // taken; the database refuses the others (`name_skeletons`).
        let skeleton = crate::names::skeleton(&a.name);
        let resembled = {
            let dir = crate::read(&self.directory);
            dir.by_id
                .values()
                .filter(|r| r.policy != JoinPolicy::Private || self.hub.is_member(me.id, r.id))
                .find(|r| crate::names::skeleton(&r.name) == skeleton)
                .map(|r| r.name.clone())
        };
        if let Some(existing) = resembled {
            let message = if fold(&existing) == fold(&a.name) {
                format!("a room or channel named {existing:?} already exists")
            } else {
                format!("{:?} looks too much like the room {existing:?}", a.name)
            };
            return Err(ErrorBody::new(ErrorCode::NameTaken, message)
                .with_field("name")
                .into());
        }
        if a.members.len() > MAX_MEMBERS {
            return Err(ErrorBody::new(
                ErrorCode::TooLong,
                format!("a channel is created with at most {MAX_MEMBERS} members"),
            )
            .with_field("members")
            .into());
        }
        let mut members = vec![me.id];
        let mut seen: HashSet<i64> = [me.id].into();
        for name in &a.members {
            let u = self.user_named(name, "members").await?;
            if seen.insert(u.id) {
                members.push(u.id);
            }
        }
        let now = self.clock.now_ms();
        let room = RoomRow {
            id: self.ids.next(now),
            name: a.name,
            policy: JoinPolicy::Private,
        };
        match self.store.create_channel(&room, me.id, &members, now).await {
            Err(e) if e.is_unique_violation() => {
                return Err(ErrorBody::new(
                    ErrorCode::InvalidRequest,
                    "a channel cannot be created under this name; choose another",
                )
                .with_field("name")
                .into())
            }
            other => other?,
        }
        crate::write(&self.directory).insert(room.clone());
        for member in &members {
            self.hub.add_membership(*member, room.id);
            let reason = (*member != me.id).then(|| format!("{} added you", me.alias));
            self.tell_membership(*member, &room, reason);
        }
        tracing::info!(channel = %room.name, creator = %me.username, members = members.len(), "private channel created");
        ok(
            re,
            &serde_json::json!({ "room": self.info_for(me.id, &room) }),
        )
    }

    // ----- messages -------------------------------------------------------------------

    fn check_text(&self, text: &str) -> Result<()> {
        if text.trim().is_empty() {
            return Err(reject(ErrorCode::EmptyMessage, "a message cannot be empty"));
        }
        let max = self.config.limits.max_message_chars;
        if text.chars().count() > max {
            return Err(reject(
                ErrorCode::MessageTooLong,
                format!("a message has at most {max} characters"),
            ));
        }
        Ok(())
    }

    async fn send(&self, s: &mut SessionState, re: u64, a: args::Send) -> Result<Done> {
        let me = user(s.user.as_ref())?;
        let room = self.room_for(me, &a.room)?;
        if !self.hub.is_member(me.id, room.id) {
            return Err(reject(
                ErrorCode::NotMember,
                format!("only members of {} can post in it", room.name),
            ));
        }
        self.check_text(&a.text)?;
        check_key(a.key.as_deref())?;
        let job = Job::Room {
            room,
            author: me.clone(),
            text: a.text,
            key: a.key,
            ack: s.ack(re),
        };
        self.submit(job).await
    }

    async fn direct(&self, s: &mut SessionState, re: u64, a: args::Direct) -> Result<Done> {
        let me = user(s.user.as_ref())?;
        self.check_text(&a.text)?;
        check_key(a.key.as_deref())?;
        let to = self.user_named(&a.to, "to").await?;
        let job = Job::Direct {
            from: me.clone(),
            to,
            text: a.text,
            key: a.key,
            ack: s.ack(re),
        };
        self.submit(job).await
    }

    async fn submit(&self, job: Job) -> Result<Done> {
        match self.persist.submit(job).await {
            Ok(()) => Ok(Done::Deferred),
            Err(_) => Err(reject(
                ErrorCode::ShuttingDown,
                "the server is shutting down; the message was not stored",
            )),
        }
    }

    pub(crate) async fn user_named(&self, name: &str, field: &str) -> Result<Identity> {
        let u = self.store.user_by_name(&fold(name)).await?.ok_or_else(|| {
            Error::from(
                ErrorBody::new(ErrorCode::NoSuchUser, format!("there is no user {name:?}"))
                    .with_field(field),
            )
        })?;
        Ok(Identity {
            id: u.id,
            username: u.username,
            alias: u.alias,
            is_admin: u.is_admin,
        })
    }

    async fn history(&self, me: &Identity, re: u64, a: args::History) -> Result<Done> {
        let max = self.config.limits.history_page_max;
        let limit = match a.limit {
            None => DEFAULT_HISTORY_PAGE.min(max),
            Some(n) if (1..=max).contains(&n) => n,
            Some(n) => {
                return Err(ErrorBody::new(
                    ErrorCode::InvalidRequest,
                    format!("limit must be from 1 to {max}, not {n}"),
                )
                .with_field("limit")
                .into())
            }
        };
        let before = a.before.unwrap_or(i64::MAX);
        match (&a.room, &a.with) {
            (Some(room), None) => {
                let room = self.room_for(me, room)?;
                if !self.hub.is_member(me.id, room.id) {
                    return Err(reject(
                        ErrorCode::NotMember,
                        format!("only members of {} can read it", room.name),
                    ));
                }
                let rows = self.store.room_history(&room, before, limit + 1).await?;
                ok(re, &page(rows, limit, self.page_budget(), |m| &m.text))
            }
            (None, Some(with)) => {
                let other = self.user_named(with, "with").await?;
                let rows = self
                    .store
                    .direct_history(me.id, other.id, before, limit + 1)
                    .await?;
                ok(re, &page(rows, limit, self.page_budget(), |m| &m.text))
            }
            _ => Err(reject(
                ErrorCode::InvalidRequest,
                "history needs exactly one of `room` and `with`",
            )),
        }
    }

    /// Bytes a history page may take on the wire: half the session's outbound budget, so
    /// that a page always fits and pipelined `history` requests cannot make the server
    /// hold more than the budget per connection.
    fn page_budget(&self) -> usize {
        self.config.limits.outbound_queue_bytes / 2
    }

    async fn conversations(&self, me: &Identity, re: u64) -> Result<Done> {
        const MAX_CONVERSATIONS: u32 = 200;
        let list: Vec<salon_proto::Conversation> = self
            .store
            .conversations(me.id, MAX_CONVERSATIONS)
            .await?
            .into_iter()
            .map(|(last, alias)| salon_proto::Conversation {
                with: if last.from == me.username {
                    last.to.clone()
                } else {
                    last.from.clone()
                },
                alias,
                last,
            })
            .collect();
        ok(re, &serde_json::json!({ "conversations": list }))
    }

    // ----- presence -------------------------------------------------------------------

    async fn who(&self, re: u64) -> Result<Done> {
        let statuses = self.hub.statuses();
        let users: Vec<UserPresence> = self
            .store
            .list_users()
            .await?
            .into_iter()
            .map(|(id, username, alias)| UserPresence {
                username,
                alias,
                status: statuses.get(&id).copied().unwrap_or(Status::Offline),
            })
            .collect();
        ok(re, &serde_json::json!({ "users": users }))
    }

    async fn set_status(&self, me: &Identity, re: u64, a: args::SetStatus) -> Result<Done> {
        if a.status == Status::Offline {
            return Err(ErrorBody::new(
                ErrorCode::InvalidRequest,
                "offline is set by disconnecting; choose online, away or busy",
            )
            .with_field("status")
            .into());
        }
        if let Some(presence) = self.hub.set_status(me.id, a.status) {
            self.announce(me.id, presence);
        }
        ok(re, &serde_json::json!({ "status": a.status }))
    }
}

/// The `rate_limited` answer to a guess the throttle did not let through. It reads the
/// same whether or not the login names an account.
fn guessing_limited(refusal: Refusal) -> Error {
    let wait_ms = refusal.retry_after_ms().max(1);
    let wait = crate::admin::human_duration(wait_ms as i64);
    let message = match refusal {
        Refusal::Source { .. } => format!(
            "too many failed attempts for this account from your address; try again in {wait}"
        ),
        Refusal::Account { .. } => format!(
            "too many failed attempts for this account from new addresses; try again in {wait} \
             (addresses it logged in from before are not delayed)"
        ),
    };
    let mut body = ErrorBody::new(ErrorCode::RateLimited, message);
    body.retry_after_ms = Some(wait_ms);
    Error::Rejected(body)
}

/// The `rate_limited` rejection, with how long to wait; `message` says which limit.
fn rate_limited(
    not_until: governor::NotUntil<governor::clock::QuantaInstant>,
    message: Option<&str>,
) -> Error {
    let wait_ms = (not_until
        .wait_time_from(DefaultClock::default().now())
        .as_millis()
        .max(1)) as u64;
    let mut body = ErrorBody::new(
        ErrorCode::RateLimited,
        match message {
            None => format!("too many requests; retry in {wait_ms} ms"),
            Some(m) => format!(
                "{m}; try again in {}",
                crate::admin::human_duration(wait_ms as i64)
            ),
        },
    );
    body.retry_after_ms = Some(wait_ms);
    Error::Rejected(body)
}

fn user(me: Option<&Identity>) -> Result<&Identity> {
    me.ok_or_else(|| reject(ErrorCode::NotAuthenticated, "log in first"))
}

fn room_info(room: &RoomRow, member: &HashSet<i64>, pending: &HashSet<i64>) -> RoomInfo {
    let state = if member.contains(&room.id) {
        MemberState::Member
    } else if pending.contains(&room.id) {
        MemberState::Pending
    } else {
        match room.policy {
            JoinPolicy::Everyone | JoinPolicy::Open => MemberState::CanJoin,
            JoinPolicy::Request => MemberState::CanRequest,
            JoinPolicy::Private => MemberState::None,
        }
    };
    RoomInfo {
        name: room.name.clone(),
        policy: room.policy,
        state,
    }
}

/// `rows` is newest first with possibly one extra row; returns the page oldest first.
/// The page also stops before its encoded size would pass `budget` bytes (at least one
/// message is always returned); `more` then says there is more to page through.
fn page<M>(
    mut rows: Vec<M>,
    limit: u32,
    budget: usize,
    text: impl Fn(&M) -> &str,
) -> HistoryPage<M> {
    let mut keep = rows.len().min(limit as usize);
    let mut used = 0;
    for (i, row) in rows.iter().take(keep).enumerate() {
        used += wire_len(text(row)) + MESSAGE_OVERHEAD;
        if used > budget && i > 0 {
            keep = i;
            break;
        }
    }
    let more = rows.len() > keep;
    rows.truncate(keep);
    rows.reverse();
    HistoryPage {
        messages: rows,
        more,
    }
}

/// Room for a message's other fields (ids, names, time) in a history page, in bytes.
const MESSAGE_OVERHEAD: usize = 256;

/// Bytes a text takes inside a JSON string: control characters are escaped as `\uXXXX`
/// (or `\n`, `\t`), quotes and backslashes doubled.
fn wire_len(text: &str) -> usize {
    text.bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\n' | b'\t' => 2,
            0..=0x1f => 6,
            _ => 1,
        })
        .sum()
}

/// An idempotency key must follow [`salon_proto::valid_message_key`].
fn check_key(key: Option<&str>) -> Result<()> {
    match key {
        Some(key) if !salon_proto::valid_message_key(key) => Err(Error::from(
            ErrorBody::new(
                ErrorCode::InvalidRequest,
                format!(
                    "a key is 1 to {} printable ASCII characters without spaces",
                    salon_proto::MAX_MESSAGE_KEY_CHARS
                ),
            )
            .with_field("key"),
        )),
        _ => Ok(()),
    }
}

fn decode_error_body(e: DecodeError) -> (Option<u64>, ErrorBody) {
    match e {
        DecodeError::InvalidUtf8 => (
            None,
            ErrorBody::new(ErrorCode::InvalidUtf8, "the frame is not valid UTF-8"),
        ),
        DecodeError::BadJson(detail) => (
            None,
            ErrorBody::new(
                ErrorCode::BadJson,
                format!(
                    "the frame is not a request object {{\"id\":<number>,\"cmd\":<string>,\
                     \"args\":{{…}}}}: {detail}"
                ),
            ),
        ),
        DecodeError::UnknownCommand { id, cmd } => (
            Some(id),
            ErrorBody::new(
                ErrorCode::UnknownCommand,
                format!(
                    "unknown command {cmd:?}; known commands: {}",
                    Command::NAMES.join(", ")
                ),
            ),
        ),
        DecodeError::InvalidCharacters { id, cmd } => (
            Some(id),
            ErrorBody::new(
                ErrorCode::InvalidCharacters,
                format!(
                    "the arguments of `{cmd}` hold a control character; only tab and newline \
                     are allowed in text"
                ),
            ),
        ),
        DecodeError::InvalidArgs { id, cmd, detail } => (
            Some(id),
            ErrorBody::new(
                ErrorCode::InvalidRequest,
                format!("invalid arguments for `{cmd}`: {detail}"),
            ),
        ),
    }
}
