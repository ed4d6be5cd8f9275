//! Account administration (R4, registration modes): an administrator resets a password,
//! approves or rejects an account waiting for approval, makes and revokes invitations, and
//! creates accounts. Each action is recorded in the audit log (`moderation.rs`).

use salon_proto::{args, reply, AuditAction, CloseCode, ErrorBody, ErrorCode, Event, Reply};

use crate::accounts;
use crate::live::{Audience, CloseReason, Identity, SessionId};

use super::moderation::reason_or;
use super::*;

/// How long an invitation is valid by default, and at most, in hours.
const DEFAULT_INVITE_HOURS: u32 = 72;
const MAX_INVITE_HOURS: u32 = 720;

impl Service {
    /// `session` is the administrator's own (kept if they reset their own password).
    pub(crate) async fn reset_password(
        &self,
        me: &Identity,
        session: (SessionId, Option<&str>),
        a: args::ResetPassword,
        _slot: accounts::HashSlot,
    ) -> Result<Done> {
        let target = self.user_named(&a.user, "user").await?;
        let (password, generated) = match a.password {
            Some(p) => (p, false),
            None => (accounts::generate_password(), true),
        };
        accounts::check_password(&password, &target.username, &target.alias)?;
        let hash = accounts::hash_password(password.clone()).await?;
        self.store.set_password_hash(target.id, &hash).await?;
        self.revoke_user(
            target.id,
            (target.id == me.id).then_some(session),
            CloseReason {
                code: Some(CloseCode::PasswordChanged),
                message: format!(
                    "your password was reset by {}; log in with the new one",
                    me.alias
                ),
                drain: true,
                until: None,
            },
        )
        .await?;
        self.record(me, AuditAction::ResetPassword, &target.username, "")
            .await?;
        ok(Reply::ResetPassword(reply::PasswordReset {
            user: target.username,
            password: generated.then_some(password),
        }))
    }

    /// Approves (`reason` = None) or rejects a waiting account (registration = approval).
    pub(crate) async fn decide_account(
        &self,
        me: &Identity,
        user: String,
        reason: Option<String>,
    ) -> Result<Done> {
        let target = self.user_named(&user, "user").await?;
        let approved = reason.is_none();
        let done = if approved {
            self.store.approve_account(target.id).await?
        } else {
            self.store.reject_account(target.id).await?
        };
        if !done {
            return Err(ErrorBody::new(
                ErrorCode::InvalidRequest,
                format!("{} is not waiting for approval", target.username),
            )
            .with_field("user")
            .into());
        }
        let reason = match reason {
            Some(r) => reason_or(Some(r), "")?,
            None => String::new(),
        };
        let action = if approved {
            AuditAction::ApproveAccount
        } else {
            AuditAction::RejectAccount
        };
        self.record(me, action, &target.username, &reason).await?;
        self.tell(
            Audience::Admins,
            Event::AccountRequestDecided {
                user: target.username.clone(),
                approved,
                by: me.username.clone(),
            },
        );
        let decided = reply::AccountDecided {
            user: target.username,
        };
        ok(if approved {
            Reply::ApproveAccount(decided)
        } else {
            Reply::RejectAccount(decided)
        })
    }

    /// A single-use invitation code; only its hash is stored, so it is shown once.
    pub(crate) async fn create_invite(&self, me: &Identity, a: args::CreateInvite) -> Result<Done> {
        let hours = a.hours.unwrap_or(DEFAULT_INVITE_HOURS);
        if hours == 0 || hours > MAX_INVITE_HOURS {
            return Err(ErrorBody::new(
                ErrorCode::InvalidRequest,
                format!("an invitation is valid from 1 to {MAX_INVITE_HOURS} hours"),
            )
            .with_field("hours")
            .into());
        }
        let now = self.clock.now_ms();
        let expires_at = now + i64::from(hours) * 3_600_000;
        let (code, hash) = accounts::new_session_token();
        let id = self.ids.next(now);
        self.store
            .create_invite(id, &hash, me.id, now, expires_at)
            .await?;
        self.record(
            me,
            AuditAction::CreateInvite,
            &id.to_string(),
            &format!("{hours} h"),
        )
        .await?;
        ok(Reply::CreateInvite(reply::Invitation {
            id,
            code,
            expires_at,
        }))
    }

    pub(crate) async fn revoke_invite(&self, me: &Identity, a: args::InviteId) -> Result<Done> {
        if !self.store.revoke_invite(a.id).await? {
            return Err(ErrorBody::new(
                ErrorCode::InvalidRequest,
                format!("there is no unused invitation {}", a.id),
            )
            .with_field("id")
            .into());
        }
        self.record(me, AuditAction::RevokeInvite, &a.id.to_string(), "")
            .await?;
        ok(Reply::RevokeInvite(reply::Empty {}))
    }

    /// An account made by an administrator, whatever the registration mode; its password
    /// is generated when not given, and then returned once.
    pub(crate) async fn create_account_by_admin(
        &self,
        me: &Identity,
        a: args::CreateAccount,
    ) -> Result<Done> {
        let generated = a.password.is_none();
        let password = a.password.unwrap_or_else(accounts::generate_password);
        let registration = args::Register {
            username: a.username,
            alias: a.alias,
            first_name: a.first_name,
            last_name: a.last_name,
            password: password.clone(),
            invite: None,
        };
        let account = accounts::create_account(
            &self.store,
            &self.ids,
            self.clock.now_ms(),
            registration,
            a.admin,
        )
        .await?;
        self.record(
            me,
            AuditAction::CreateUser,
            &account.username,
            if a.admin { "administrator" } else { "" },
        )
        .await?;
        ok(Reply::CreateAccount(reply::AccountCreated {
            account,
            password: generated.then_some(password),
        }))
    }
}
