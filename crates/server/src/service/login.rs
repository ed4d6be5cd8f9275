//! Accounts and sessions: registration, login and resume (with the guessing throttle and
//! the bound on password hashing), password changes and revocation.

use std::collections::HashSet;

use salon_proto::{
    args, Account, ErrorBody, ErrorCode, Event, RegistrationMode, Reply, Status, Welcome,
};

use crate::accounts;
use crate::live::{AttachRefused, CloseReason, Identity, Revocations, SessionId};
use crate::live::{Audience, Message};
use crate::store::fold;
use crate::throttle::{self, AccountKey, Refusal, Source};

use super::*;

/// Where a new session's resume token comes from, and what proved the login.
pub(crate) enum Token {
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

/// Conversations with unread messages listed in a login's read state, at most (also
/// what a cluster's catch-up tells a user again: `live/catchup.rs`).
pub(crate) const READ_STATE_CONVERSATIONS: u32 = 200;

impl Service {
    pub(crate) async fn register(&self, s: &SessionState, a: args::Register) -> Result<Done> {
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
            self.tell(
                Audience::Admins,
                Event::AccountRequest(salon_proto::AccountRequest {
                    username: account.username.clone(),
                    alias: account.alias.clone(),
                    first_name: account.first_name.clone(),
                    last_name: account.last_name.clone(),
                    requested_at: now,
                }),
            );
        }
        ok(Reply::Register(account))
    }

    pub(crate) fn check_can_log_in(&self, s: &SessionState) -> Result<()> {
        if s.user.is_some() {
            return Err(reject(
                ErrorCode::AlreadyAuthenticated,
                "this session is already logged in",
            ));
        }
        if self.is_shutting_down() {
            return Err(reject(
                ErrorCode::ShuttingDown,
                "the server is shutting down",
            ));
        }
        Ok(())
    }

    pub(crate) async fn resume(
        &self,
        s: &mut SessionState,
        re: u64,
        a: args::Resume,
    ) -> Result<Done> {
        self.check_can_log_in(s)?;
        // Taken before the token is looked up (see `establish`).
        let seen = self.live.hub().revocations();
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

    pub(crate) async fn login(
        &self,
        s: &mut SessionState,
        re: u64,
        a: args::Login,
    ) -> Result<Done> {
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
        let seen = self.live.hub().revocations();
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
    pub(crate) async fn establish(
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
            let meta = crate::live::SessionMeta {
                address: s.peer.to_string(),
                transport: s.transport,
                since: self.clock.now_ms(),
                presence,
                token: Some((hash_now.clone(), expires_now)),
            };
            let refused =
                match self
                    .live
                    .attach(&identity, rooms, pending, &s.outbound, meta, max, &seen)
                {
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
            seen = self.live.hub().revocations();
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
        let counts = async {
            let waiting = self
                .store
                .count_undelivered(user.id, &attached.direct_watermark)
                .await?;
            let read_state = self
                .store
                .read_states(user.id, READ_STATE_CONVERSATIONS)
                .await?;
            Ok::<_, crate::store::StoreError>((waiting, read_state))
        };
        let (waiting, read_state) = match counts.await {
            Ok(counts) => counts,
            Err(e) => {
                if self.live.detach(s.outbound.id) {
                    self.live.sync_presence(&identity, &*self.bus);
                }
                if matches!(proof, Token::New { .. }) {
                    self.forget_token(&token_hash).await;
                }
                return Err(e.into());
            }
        };
        if attached.first {
            // Present on this node now: every node's view learns it (online to others
            // if it is the user's first node).
            self.live.sync_presence(&identity, &*self.bus);
        }
        // Where the account logs in from is not delayed by others' failures.
        self.throttle.trust(
            user.id,
            Source::of(s.peer, s.transport),
            self.clock.now_ms(),
        );
        s.user = Some(identity);
        s.token_hash = Some(token_hash);
        s.token_expires = token_expires;
        // A session without presence (a tool: `salon admin`, a bot) is not where the
        // user reads: it gets no backlog, and its acknowledgements do not count.
        s.backlog = (presence && waiting > 0).then(|| {
            Box::new(Backlog {
                up_to: attached.direct_watermark,
                after: 0,
                outstanding: HashSet::new(),
            })
        });
        let status = self.live.status_of(user.id).unwrap_or(Status::Offline);
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
            read_state,
            offline_directs: if presence { waiting } else { 0 },
            token,
            token_expires,
            upload_max_bytes: Some(self.config.limits.upload_max_bytes),
        };
        let reply = match proof {
            Token::New { .. } => Reply::Login(welcome),
            Token::Existing { .. } => Reply::Resume(welcome),
        };
        s.outbound.reply_ok(re, &reply).await;
        if let Err(e) = self.after_welcome(s, user.id, user.is_admin).await {
            tracing::warn!(error = %e, peer = %s.peer, "could not send what waited for a login");
        }
        Ok(Done::Deferred)
    }

    /// What follows a welcome: private messages waiting (R13), join decisions taken while
    /// offline (R8), and for administrators the requests waiting for them.
    pub(crate) async fn after_welcome(
        &self,
        s: &mut SessionState,
        user: i64,
        is_admin: bool,
    ) -> Result<()> {
        self.push_backlog(s).await?;
        for decision in self.store.take_untold_decisions(user).await? {
            let room = self.live.directory().by_id.get(&decision.room_id).cloned();
            if let Some(room) = room {
                let event = self.decision_event(user, &room, decision.accepted, decision.reason);
                s.outbound.send_event(&event).await;
            }
        }
        if is_admin {
            for request in self.store.pending_requests().await? {
                s.outbound.send_event(&Event::JoinRequest(request)).await;
            }
            for account in self.store.account_requests().await? {
                s.outbound.send_event(&Event::AccountRequest(account)).await;
            }
        }
        Ok(())
    }

    pub(crate) async fn change_password(
        &self,
        s: &SessionState,
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
        ok(Reply::ChangePassword(salon_proto::reply::Empty {}))
    }

    /// Whether what proved a login still holds: the password hash it was checked
    /// against is still the account's, or the session token still exists.
    pub(crate) async fn still_valid(
        &self,
        user: &crate::store::UserRow,
        token: &Token,
    ) -> Result<bool> {
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
    pub(crate) async fn forget_token(&self, hash: &str) {
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
        self.bus.publish(Message::Revoke {
            user,
            keep: keep.map(|(session, _)| session),
            reason,
        });
        // In a cluster, answered once every node has closed the user's sessions there.
        self.bus.settled().await;
        let after = self.store.delete_session_tokens_of(user, keep_token).await;
        before?;
        after?;
        Ok(())
    }

    /// Checks a password guess against `hash` (`None`: no such account, checked against
    /// a dummy) within the guessing throttle and the bound on pending hashes.
    pub(crate) async fn check_password(
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
    pub(crate) async fn check_password_holding(
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
}

/// The `rate_limited` answer to a guess the throttle did not let through. It reads the
/// same whether or not the login names an account.
pub(crate) fn guessing_limited(refusal: Refusal) -> Error {
    let wait_ms = refusal.retry_after_ms().max(1);
    let wait = super::moderation::human_duration(wait_ms as i64);
    let message = match refusal {
        Refusal::Source { .. } => format!(
            "too many failed or simultaneous password attempts for this account from your \
             address; try again in {wait}"
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
