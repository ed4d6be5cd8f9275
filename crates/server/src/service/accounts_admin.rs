//! Account administration (R4, registration modes): an administrator resets a password,
//! approves or rejects an account waiting for approval, makes and revokes invitations, and
//! creates accounts. Each action is recorded in the audit log (`moderation.rs`).

use salon_proto::{
    args, reply, Account, AccountEntry, AuditAction, CloseCode, ErrorBody, ErrorCode, Event, Reply,
    SanctionInfo, Status,
};

use crate::accounts;
use crate::live::{Audience, CloseReason, Identity, SessionId};
use crate::search_text;

use super::moderation::reason_or;
use super::*;

/// Accounts per page of `accounts`: by default, and at most.
const DEFAULT_ACCOUNTS_PAGE: u32 = 50;
const MAX_ACCOUNTS_PAGE: u32 = 100;

/// The longest `accounts` query, in characters.
const MAX_ACCOUNTS_QUERY_CHARS: usize = 100;

/// How long an invitation is valid by default, and at most, in hours.
const DEFAULT_INVITE_HOURS: u32 = 72;
const MAX_INVITE_HOURS: u32 = 720;

impl Service {
    /// `accounts`: every account whose names hold all the query's words (folded as search
    /// folds them: "elodie" finds "Élodie"), a page at a time by username. The whole list
    /// is read, as `who` does: one row per account.
    pub(crate) async fn accounts(&self, a: args::Accounts) -> Result<Done> {
        let limit = a.limit.unwrap_or(DEFAULT_ACCOUNTS_PAGE);
        if !(1..=MAX_ACCOUNTS_PAGE).contains(&limit) {
            return Err(ErrorBody::new(
                ErrorCode::InvalidRequest,
                format!("limit goes from 1 to {MAX_ACCOUNTS_PAGE}"),
            )
            .with_field("limit")
            .into());
        }
        let query = a.query.unwrap_or_default();
        if query.chars().count() > MAX_ACCOUNTS_QUERY_CHARS {
            return Err(ErrorBody::new(
                ErrorCode::TooLong,
                format!("a search has at most {MAX_ACCOUNTS_QUERY_CHARS} characters"),
            )
            .with_field("query")
            .into());
        }
        let folded = search_text::index_words(&query);
        let words: Vec<&str> = folded.split(' ').filter(|w| !w.is_empty()).collect();
        let matching: Vec<_> = self
            .store
            .account_listing()
            .await?
            .into_iter()
            .filter(|r| {
                words.is_empty() || {
                    let names = search_text::index_words(&format!(
                        "{} {} {} {}",
                        r.username, r.alias, r.first_name, r.last_name
                    ));
                    words.iter().all(|w| names.contains(w))
                }
            })
            .collect();
        let total = u32::try_from(matching.len()).unwrap_or(u32::MAX);
        let start = match &a.cursor {
            Some(after) => matching.partition_point(|r| r.username_key.as_str() <= after.as_str()),
            None => 0,
        };
        let page = &matching[start..];
        let next =
            (page.len() > limit as usize).then(|| page[limit as usize - 1].username_key.clone());
        let page = &page[..page.len().min(limit as usize)];
        let statuses = self.live.statuses();
        // Every node's sessions (one node: this one's), counted per user.
        let mut sessions: std::collections::HashMap<String, u32> = std::collections::HashMap::new();
        for info in self.bus.sessions().await {
            *sessions.entry(info.username).or_default() += 1;
        }
        let mut sanctions = self.store.current_sanctions(self.clock.now_ms()).await?;
        let accounts = page
            .iter()
            .map(|r| {
                let status = statuses.get(&r.id).copied().unwrap_or(Status::Offline);
                let sessions = sessions.get(&r.username).copied().unwrap_or(0);
                let theirs: Vec<SanctionInfo> =
                    sanctions.extract_if(.., |s| s.user == r.username).collect();
                AccountEntry {
                    account: Account {
                        username: r.username.clone(),
                        alias: r.alias.clone(),
                        first_name: r.first_name.clone(),
                        last_name: r.last_name.clone(),
                        is_admin: r.is_admin,
                        status,
                        pending_approval: !r.approved,
                    },
                    created_at: r.created_at,
                    sessions,
                    sanctions: theirs,
                }
            })
            .collect();
        ok(Reply::Accounts(reply::AccountList {
            accounts,
            total,
            next,
        }))
    }

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
