//! From a frame to a reply: decode, the command table's access and rate checks, then the
//! handler; errors become their stable code and a safe message.

use governor::clock::{Clock as _, DefaultClock};
use salon_proto::{Access, Command, ErrorBody, ErrorCode, RateClass, Reply, Request};

use crate::throttle::Source;

use super::*;

impl Service {
    /// Handles one request; the reply (or error) is queued on the session.
    pub async fn handle(&self, s: &mut SessionState, request: Request) {
        let re = request.id;
        match self.dispatch(s, request).await {
            Ok(Done::Reply(reply)) => s.outbound.reply_ok(re, &reply).await,
            Ok(Done::Deferred) => {}
            Ok(Done::ReplyAndClose(reply, code, message)) => {
                s.outbound.reply_ok(re, &reply).await;
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
                s.outbound.reply_error(Some(re), &body).await;
            }
        }
    }

    /// On a cluster node that is not current on the bus (`Bus::current`), a kick, a ban
    /// or a password change made on another node may not have reached this session yet:
    /// its token is checked in the database first. A token deleted before it expired
    /// closes the session, with the reason the sanctions give, as the revocation would
    /// have. (A token that expired on its own changes nothing, as on a single node.)
    async fn not_revoked_elsewhere(&self, s: &mut SessionState) -> Result<()> {
        let now = self.clock.now_ms();
        let (Some(hash), Some(me)) = (s.token_hash.as_deref(), s.user.as_ref()) else {
            return Ok(());
        };
        if s.token_expires <= now || self.store.user_by_session_token(hash, now).await?.is_some() {
            return Ok(());
        }
        let reason = crate::live::catchup::revoked_reason(&self.store, me.id, now).await?;
        metrics::counter!(crate::metrics::CLUSTER_REVOKED_ON_USE).increment(1);
        let message = reason.message.clone();
        s.outbound.close_with(reason);
        Err(reject(ErrorCode::NotAuthenticated, message))
    }

    pub(crate) async fn dispatch(&self, s: &mut SessionState, request: Request) -> Result<Done> {
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
        if s.logged_in() && self.config.cluster.enabled() && !self.bus.current() {
            self.not_revoked_elsewhere(s).await?;
        }

        let me = s.user.clone();
        let me = me.as_ref();
        match command {
            Command::Ping(_) => ok(Reply::Ping(salon_proto::reply::Empty {})),
            Command::Register(a) => self.register(s, a).await,
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
                    Reply::Logout(salon_proto::reply::Empty {}),
                    salon_proto::CloseCode::Logout,
                    "logged out",
                ))
            }
            Command::ChangePassword(a) => self.change_password(s, a).await,
            Command::Rooms(_) => ok(Reply::Rooms(salon_proto::reply::Rooms {
                rooms: self.rooms_of(user(me)?.id),
            })),
            Command::Join(a) => self.join(s, a).await,
            Command::Leave(a) => self.leave(s, a).await,
            Command::Send(a) => self.send(s, re, a).await,
            Command::Direct(a) => self.direct(s, re, a).await,
            Command::AckDirects(a) => self.ack_directs(s, a).await,
            Command::History(a) => self.history(user(me)?, a).await,
            Command::Who(_) => self.who().await,
            Command::Conversations(_) => self.conversations(user(me)?).await,
            Command::SetStatus(a) => {
                if !s.presence {
                    return Err(ErrorBody::new(
                        ErrorCode::InvalidRequest,
                        "this session was logged in with presence: false; it cannot set a status",
                    )
                    .with_field("status")
                    .into());
                }
                self.set_status(user(me)?, a).await
            }
            Command::Typing(a) => self.typing(s, a).await,
            Command::Members(a) => self.members(user(me)?, a).await,
            Command::Edit(a) => self.edit(s, re, a).await,
            Command::Delete(a) => self.delete(s, re, a).await,
            Command::React(a) => self.react(s, re, a, true).await,
            Command::Unreact(a) => self.react(s, re, a, false).await,
            Command::Thread(a) => self.thread(user(me)?, a).await,
            Command::Search(a) => self.search(user(me)?, a).await,
            Command::MarkRead(a) => self.mark_read(s, re, a).await,
            Command::SetNotify(a) => self.set_notify(s, re, a).await,
            Command::CreateChannel(a) => self.create_channel(s, a).await,
            Command::Connected(_) => {
                let sessions = self.bus.sessions().await;
                ok(Reply::Connected(salon_proto::reply::Sessions { sessions }))
            }
            Command::Kick(a) => self.kick(user(me)?, a).await,
            Command::Unkick(a) => self.unkick(user(me)?, a).await,
            Command::Ban(a) => self.ban(user(me)?, a).await,
            Command::Unban(a) => self.unban(user(me)?, a).await,
            Command::Sanctions(_) => {
                let now = self.clock.now_ms();
                let sanctions = self.store.current_sanctions(now).await?;
                ok(Reply::Sanctions(salon_proto::reply::Sanctions {
                    sanctions,
                }))
            }
            Command::Accounts(a) => self.accounts(a).await,
            Command::Requests(_) => ok(Reply::Requests(salon_proto::reply::JoinRequests {
                requests: self.store.pending_requests().await?,
            })),
            Command::Accept(a) => self.decide(user(me)?, a, true).await,
            Command::Reject(a) => self.decide(user(me)?, a, false).await,
            Command::Broadcast(a) => self.broadcast(user(me)?, a).await,
            Command::Shutdown(a) => self.shutdown(user(me)?, a).await,
            Command::ResetPassword(a) => {
                let slot = self.hash_slot(Source::of(s.peer, s.transport))?;
                let session = (s.outbound.id, s.token_hash.as_deref());
                self.reset_password(user(me)?, session, a, slot).await
            }
            Command::Audit(a) => self.audit_log(a).await,
            Command::AccountRequests(_) => ok(Reply::AccountRequests(
                salon_proto::reply::AccountRequests {
                    accounts: self.store.account_requests().await?,
                },
            )),
            Command::ApproveAccount(a) => self.decide_account(user(me)?, a.user, None).await,
            Command::RejectAccount(a) => {
                let reason = Some(a.reason.unwrap_or_default());
                self.decide_account(user(me)?, a.user, reason).await
            }
            Command::CreateInvite(a) => self.create_invite(user(me)?, a).await,
            Command::Invites(_) => ok(Reply::Invites(salon_proto::reply::Invites {
                invites: self.store.invites(self.clock.now_ms()).await?,
            })),
            Command::RevokeInvite(a) => self.revoke_invite(user(me)?, a).await,
            Command::CreateAccount(a) => {
                let _slot = self.hash_slot(Source::of(s.peer, s.transport))?;
                self.create_account_by_admin(user(me)?, a).await
            }
        }
    }

    pub(crate) fn check_rate(&self, s: &SessionState, class: RateClass) -> Result<()> {
        let verdict = match class {
            RateClass::Auth => self.auth_by_address.check_key(&s.peer.ip()),
            RateClass::Message => s.messages.check().and_then(|()| match &s.user {
                Some(me) => self.messages_by_user.check_key(&me.id),
                None => Ok(()),
            }),
            RateClass::Other => s.requests.check(),
            RateClass::Search => s.requests.check().and_then(|()| {
                let user = s.user.as_ref().map_or(0, |u| u.id);
                self.searches_by_user.check_key(&user)
            }),
        };
        verdict.map_err(|not_until| rate_limited(not_until, None))
    }
}

/// The `rate_limited` rejection, with how long to wait; `message` says which limit.
pub(crate) fn rate_limited(
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
                super::moderation::human_duration(wait_ms as i64)
            ),
        },
    );
    body.retry_after_ms = Some(wait_ms);
    Error::Rejected(body)
}
