//! Moderation (R3, R8, R15, R18, R19): kicks and bans (and the check of sanctions at
//! login), decisions on join requests, broadcast notices, the shutdown countdown and the
//! audit log every administrative action is recorded in. The server console and `salon
//! admin` send these same commands through a session, so there is one implementation of
//! each whichever way an administrator comes in.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use salon_proto::{
    args, reply, AuditAction, AuditEntry, CloseCode, ErrorBody, ErrorCode, Event, JoinPolicy,
    MemberState, Reply, SanctionKind,
};

use crate::live::{Audience, CloseReason, Identity, Message};
use crate::store::{RoomRow, Sanction};

use super::*;

/// Default kick length (the originals' five minutes).
const DEFAULT_KICK_SECONDS: u64 = 300;
/// Longest kick; longer is a ban.
const MAX_KICK_SECONDS: u64 = 366 * 24 * 3600;
/// Default shutdown countdown (the originals' ten seconds).
const DEFAULT_SHUTDOWN_SECONDS: u32 = 10;
const MAX_SHUTDOWN_SECONDS: u32 = 3600;
const MAX_REASON_CHARS: usize = 500;
/// Audit entries per `audit` request: by default, and at most.
const DEFAULT_AUDIT_ENTRIES: u32 = 50;
const MAX_AUDIT_ENTRIES: u32 = 1000;

/// "4 min 12 s", "2 h 5 min", "45 s".
pub(crate) fn human_duration(ms: i64) -> String {
    let s = (ms.max(0) + 999) / 1000;
    let (h, m, s) = (s / 3600, (s % 3600) / 60, s % 60);
    match (h, m, s) {
        (0, 0, s) => format!("{s} s"),
        (0, m, 0) => format!("{m} min"),
        (0, m, s) => format!("{m} min {s} s"),
        (h, 0, _) => format!("{h} h"),
        (h, m, _) => format!("{h} h {m} min"),
    }
}

/// How a session closed by a kick is told (live, and by a cluster node's catch-up):
/// who kicked, for how long (`ms`), why, and until when.
pub(crate) fn kicked_close(by: &str, ms: i64, reason: &str, until: i64) -> CloseReason {
    CloseReason {
        code: Some(CloseCode::Kicked),
        message: format!(
            "you were kicked by {by} for {}: {reason}",
            human_duration(ms)
        ),
        drain: true,
        until: Some(until),
    }
}

/// How a session closed by a ban is told (live, and by a cluster node's catch-up).
pub(crate) fn banned_close(by: &str, reason: &str) -> CloseReason {
    CloseReason {
        code: Some(CloseCode::Banned),
        message: format!("you were banned by {by}: {reason}"),
        drain: true,
        until: None,
    }
}

pub(super) fn reason_or(reason: Option<String>, default: &str) -> Result<String> {
    let reason = reason.unwrap_or_default().trim().to_owned();
    if reason.chars().count() > MAX_REASON_CHARS {
        return Err(ErrorBody::new(
            ErrorCode::TooLong,
            format!("a reason has at most {MAX_REASON_CHARS} characters"),
        )
        .with_field("reason")
        .into());
    }
    Ok(if reason.is_empty() {
        default.to_owned()
    } else {
        reason
    })
}

impl Service {
    /// Writes one audit entry (R19). A failure is an error for the caller: an action that
    /// cannot be recorded is reported as failed.
    pub(super) async fn record(
        &self,
        actor: &Identity,
        action: AuditAction,
        target: &str,
        reason: &str,
    ) -> Result<i64> {
        let now = self.clock.now_ms();
        let id = self.ids.next(now);
        let entry = AuditEntry {
            ts: now,
            actor: actor.username.clone(),
            action,
            target: target.into(),
            reason: reason.into(),
        };
        self.store.audit(id, &entry).await?;
        tracing::info!(actor = %entry.actor, %action, target, reason, "administrative action");
        Ok(id)
    }

    /// Refuses a login of a banned or currently kicked account, saying why (R3).
    pub(crate) async fn check_sanctions(&self, user_id: i64) -> Result<()> {
        let now = self.clock.now_ms();
        for imposed in self.store.sanctions_of(user_id).await? {
            let sanction = imposed.sanction;
            match sanction.kind {
                SanctionKind::Ban => {
                    return Err(reject(
                        ErrorCode::Banned,
                        format!("this account is banned: {}", sanction.reason),
                    ))
                }
                SanctionKind::Kick => {
                    let until = sanction.ends_at.unwrap_or(0);
                    if until > now {
                        let mut body = ErrorBody::new(
                            ErrorCode::Kicked,
                            format!(
                                "this account is kicked for another {}: {}",
                                human_duration(until - now),
                                sanction.reason
                            ),
                        );
                        body.until = Some(until);
                        return Err(body.into());
                    }
                }
            }
        }
        Ok(())
    }

    /// The `membership` event telling a requester the decision.
    pub(crate) fn decision_event(
        &self,
        user: i64,
        room: &RoomRow,
        accepted: bool,
        reason: Option<String>,
    ) -> Event {
        let verdict = if accepted { "accepted" } else { "rejected" };
        let reason = match reason {
            Some(r) if !r.is_empty() => {
                format!("your request to join {} was {verdict}: {r}", room.name)
            }
            _ => format!("your request to join {} was {verdict}", room.name),
        };
        let mut info = self.info_for(user, room);
        // A user with no session on this node (in a cluster, connected to another one):
        // this node's registry does not know their rooms, the decision does.
        if self.live.hub().room_states(user).is_none() {
            info.state = if accepted {
                MemberState::Member
            } else {
                MemberState::CanRequest
            };
        }
        Event::Membership {
            room: info,
            reason: Some(reason),
        }
    }

    pub(crate) async fn kick(&self, me: &Identity, a: args::Kick) -> Result<Done> {
        let target = self.user_named(&a.user, "user").await?;
        if target.id == me.id {
            return Err(reject(
                ErrorCode::InvalidRequest,
                "you cannot kick yourself",
            ));
        }
        let seconds = a.seconds.unwrap_or(DEFAULT_KICK_SECONDS);
        if seconds == 0 || seconds > MAX_KICK_SECONDS {
            return Err(ErrorBody::new(
                ErrorCode::InvalidRequest,
                format!(
                    "a kick lasts from 1 s to {}; use ban for longer",
                    human_duration(MAX_KICK_SECONDS as i64 * 1000)
                ),
            )
            .with_field("seconds")
            .into());
        }
        let reason = reason_or(a.reason, "no reason given")?;
        let now = self.clock.now_ms();
        let until = now + seconds as i64 * 1000;
        let sanction = Sanction {
            kind: SanctionKind::Kick,
            ends_at: Some(until),
            reason: reason.clone(),
        };
        self.store
            .set_sanction(target.id, &sanction, &me.username, now)
            .await?;
        // In effect everywhere first (sessions closed, tokens revoked), then recorded.
        let close = kicked_close(&me.alias, seconds as i64 * 1000, &reason, until);
        self.revoke_user(target.id, None, close).await?;
        self.record(
            me,
            AuditAction::Kick,
            &target.username,
            &format!("{} — {reason}", human_duration(seconds as i64 * 1000)),
        )
        .await?;
        ok(Reply::Kick(reply::Kicked {
            user: target.username,
            until,
        }))
    }

    pub(crate) async fn unkick(&self, me: &Identity, a: args::Target) -> Result<Done> {
        let target = self.user_named(&a.user, "user").await?;
        if !self
            .store
            .lift_sanction(target.id, SanctionKind::Kick)
            .await?
        {
            return Err(reject(
                ErrorCode::InvalidRequest,
                format!("{} is not kicked", target.username),
            ));
        }
        self.record(me, AuditAction::Unkick, &target.username, "")
            .await?;
        ok(Reply::Unkick(reply::Empty {}))
    }

    pub(crate) async fn ban(&self, me: &Identity, a: args::Ban) -> Result<Done> {
        let target = self.user_named(&a.user, "user").await?;
        if target.id == me.id {
            return Err(reject(ErrorCode::InvalidRequest, "you cannot ban yourself"));
        }
        let reason = reason_or(a.reason, "no reason given")?;
        let now = self.clock.now_ms();
        let sanction = Sanction {
            kind: SanctionKind::Ban,
            ends_at: None,
            reason: reason.clone(),
        };
        self.store
            .set_sanction(target.id, &sanction, &me.username, now)
            .await?;
        self.revoke_user(target.id, None, banned_close(&me.alias, &reason))
            .await?;
        self.record(me, AuditAction::Ban, &target.username, &reason)
            .await?;
        ok(Reply::Ban(reply::Empty {}))
    }

    pub(crate) async fn unban(&self, me: &Identity, a: args::Target) -> Result<Done> {
        let target = self.user_named(&a.user, "user").await?;
        if !self
            .store
            .lift_sanction(target.id, SanctionKind::Ban)
            .await?
        {
            return Err(reject(
                ErrorCode::InvalidRequest,
                format!("{} is not banned", target.username),
            ));
        }
        self.record(me, AuditAction::Unban, &target.username, "")
            .await?;
        ok(Reply::Unban(reply::Empty {}))
    }

    /// Accepts or rejects a pending join request (R8).
    pub(crate) async fn decide(
        &self,
        me: &Identity,
        a: args::Decide,
        accepted: bool,
    ) -> Result<Done> {
        let target = self.user_named(&a.user, "user").await?;
        let _serial = self.lock_memberships(target.id).await;
        // A private channel the administrator is not in does not exist for them.
        let room: Arc<RoomRow> = self.room_for(me, &a.room)?;
        if room.policy != JoinPolicy::Request {
            let how = match room.policy {
                JoinPolicy::Everyone => "everyone is a member",
                JoinPolicy::Open => "anyone joins it freely",
                JoinPolicy::Private | JoinPolicy::Request => "its creator chooses its members",
            };
            return Err(ErrorBody::new(
                ErrorCode::InvalidRequest,
                format!("{} does not take join requests: {how}", room.name),
            )
            .with_field("room")
            .into());
        }
        let reason = Some(reason_or(a.reason, "")?).filter(|r| !r.is_empty());
        // Connected here, or present on another node (which is told on the bus).
        let online =
            self.live.hub().is_online(target.id) || self.live.status_of(target.id).is_some();
        let now = self.clock.now_ms();
        let change = self.ids.next(now);
        let decided = self
            .store
            .decide_request(
                room.id,
                target.id,
                accepted,
                me.id,
                reason.as_deref(),
                online,
                now,
                change,
            )
            .await?;
        if !decided {
            return Err(reject(
                ErrorCode::InvalidRequest,
                format!(
                    "{} has no pending request for {}",
                    target.username, room.name
                ),
            ));
        }
        let action = if accepted {
            AuditAction::Accept
        } else {
            AuditAction::Reject
        };
        self.record(
            me,
            action,
            &format!("{}@{}", target.username, room.name),
            reason.as_deref().unwrap_or(""),
        )
        .await?;
        if accepted {
            self.bus.publish(Message::Joined {
                user: target.id,
                room: room.id,
            });
            let who = (target.username.clone(), target.alias.clone());
            self.notice_member(&room, who, true, change);
        } else {
            self.bus.publish(Message::Pending {
                user: target.id,
                room: room.id,
                pending: false,
            });
        }
        // Before the answer: a change made next on another node comes after it everywhere.
        self.bus.published().await;
        self.tell(
            Audience::Admins,
            Event::JoinRequestDecided {
                user: target.username.clone(),
                room: room.name.clone(),
                accepted,
                by: me.username.clone(),
            },
        );
        // Told now if online, on whichever node (the bus carries it there); otherwise at
        // next login (the row stays `notified = 0`).
        if online {
            let event = self.decision_event(target.id, &room, accepted, reason);
            self.tell(Audience::User(target.id), event);
        }
        ok(if accepted {
            Reply::Accept(reply::Empty {})
        } else {
            Reply::Reject(reply::Empty {})
        })
    }

    pub(crate) async fn broadcast(&self, me: &Identity, a: args::Broadcast) -> Result<Done> {
        let text = a.text.trim();
        if text.is_empty() {
            return Err(reject(ErrorCode::EmptyMessage, "a notice cannot be empty"));
        }
        let max = self.config.limits.max_message_chars;
        if text.chars().count() > max {
            return Err(reject(
                ErrorCode::MessageTooLong,
                format!("a notice has at most {max} characters"),
            ));
        }
        // Stored (the audit log) before it is told: a cluster node that misses it on the
        // bus tells it from there (`live/catchup.rs`).
        let id = self.record(me, AuditAction::Broadcast, "", text).await?;
        self.tell(
            Audience::Everyone,
            Event::Notice {
                from: me.username.clone(),
                from_alias: me.alias.clone(),
                text: text.to_owned(),
                ts: self.clock.now_ms(),
                id: Some(id),
            },
        );
        ok(Reply::Broadcast(reply::Empty {}))
    }

    /// Starts the countdown (R18 KILL): logins are refused from now; every client sees
    /// each second; at zero the server stops gracefully.
    pub(crate) async fn shutdown(&self, me: &Identity, a: args::Shutdown) -> Result<Done> {
        let seconds = a.seconds.unwrap_or(DEFAULT_SHUTDOWN_SECONDS);
        if seconds > MAX_SHUTDOWN_SECONDS {
            return Err(ErrorBody::new(
                ErrorCode::InvalidRequest,
                format!("the countdown is at most {MAX_SHUTDOWN_SECONDS} s"),
            )
            .with_field("seconds")
            .into());
        }
        let message = reason_or(a.message, "").map_err(|_| {
            ErrorBody::new(
                ErrorCode::TooLong,
                format!("a shutdown message has at most {MAX_REASON_CHARS} characters"),
            )
            .with_field("message")
        })?;
        let message = if message.is_empty() {
            format!("the server is stopping (requested by {})", me.alias)
        } else {
            message
        };
        // This node refuses logins from here on; every node does once the bus has
        // carried the countdown.
        if self.is_shutting_down() || self.shutting_down.swap(true, Ordering::SeqCst) {
            return Err(reject(
                ErrorCode::ShuttingDown,
                "the server is already shutting down",
            ));
        }
        let recorded = self
            .record(
                me,
                AuditAction::Shutdown,
                "",
                &crate::store::shutdown_reason(seconds, &message),
            )
            .await;
        if let Err(e) = recorded {
            // Not started after all: logins are accepted again.
            self.shutting_down.store(false, Ordering::SeqCst);
            return Err(e);
        }
        // Every node (this one at once) counts down its own sessions and stops: the
        // command stops the whole service (see `Live::count_down`).
        self.bus.publish(Message::Shutdown { seconds, message });
        ok(Reply::Shutdown(reply::Countdown { seconds }))
    }

    pub(crate) async fn audit_log(&self, a: args::Audit) -> Result<Done> {
        let limit = match a.limit {
            None => DEFAULT_AUDIT_ENTRIES,
            Some(n) if (1..=MAX_AUDIT_ENTRIES).contains(&n) => n,
            Some(n) => {
                return Err(ErrorBody::new(
                    ErrorCode::InvalidRequest,
                    format!("limit must be from 1 to {MAX_AUDIT_ENTRIES}, not {n}"),
                )
                .with_field("limit")
                .into())
            }
        };
        let entries = self.store.audit_log(limit).await?;
        ok(Reply::Audit(reply::AuditLog { entries }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_duration(45_000), "45 s");
        assert_eq!(human_duration(300_000), "5 min");
        assert_eq!(human_duration(252_000), "4 min 12 s");
        assert_eq!(human_duration(7_500_000), "2 h 5 min");
        assert_eq!(human_duration(1), "1 s");
    }
}
