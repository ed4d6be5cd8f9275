//! The provisioning API: what tools outside the server (the load generator's set-up,
//! bulk imports) may write straight into the database, before or beside a running
//! server, without knowing how it is stored. What it writes is what the server would
//! have written: accounts follow the registration rules, ids come from the tool's
//! reserved node ([`OfflineTool`]), so they never collide with a running server's.
//!
//! A running server caches its rooms and memberships, so only writes it reads again
//! (accounts and session tokens, at login or `resume`; stored messages, in history) are
//! offered here.

use std::time::Duration;

use crate::accounts::{self, HashError};
use crate::clock::{Clock, SystemClock};
use crate::ids::IdGenerator;
use crate::store::{fold, NewRoomMessage, NewUser, Store, StoreError};
use crate::{names, open_store, Config};

pub use crate::ids::OfflineTool;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Hash(#[from] HashError),
    /// A field the registration rules refuse.
    #[error("account {username:?}: {message}")]
    Invalid { username: String, message: String },
    #[error("no room or channel named {0:?}")]
    UnknownRoom(String),
}

/// An account to create, with the fields registration asks for (R1).
#[derive(Debug, Clone)]
pub struct NewAccount {
    pub username: String,
    pub alias: String,
    pub first_name: String,
    pub last_name: String,
}

/// An account created, with a session token that logs it in (`resume`).
#[derive(Debug, Clone)]
pub struct Provisioned {
    pub id: i64,
    /// As stored (normalised as registration does).
    pub username: String,
    pub token: String,
}

/// An open database and the id generator of one offline tool. Close it when done: the
/// connection pool is its own.
pub struct Provisioner {
    store: Store,
    ids: IdGenerator,
}

impl Provisioner {
    /// Opens the database `config` names, creating or upgrading its schema as the server
    /// would, to write as `tool`.
    pub async fn open(config: &Config, tool: OfflineTool) -> Result<Provisioner> {
        Ok(Provisioner {
            store: open_store(config).await?,
            ids: tool.ids(),
        })
    }

    /// Creates `accounts`, all with `password`, each with one session token valid for
    /// `token_ttl`, in one transaction: all or none (a name taken, or looking like one
    /// taken, fails the batch). The password is hashed once for all of them, so thousands
    /// of accounts cost one Argon2 hash, not thousands. Each account joins the rooms
    /// everyone is in, as at registration. Returned in the order given.
    pub async fn create_accounts(
        &self,
        accounts: Vec<NewAccount>,
        password: &str,
        token_ttl: Duration,
    ) -> Result<Vec<Provisioned>> {
        if accounts.is_empty() {
            return Ok(Vec::new());
        }
        let now = SystemClock.now_ms();
        let mut users = Vec::with_capacity(accounts.len());
        for a in accounts {
            users.push(checked(a, password, self.ids.next(now), now)?);
        }
        let password_hash = accounts::hash_password(password.to_owned()).await?;
        let expires_at =
            now.saturating_add(i64::try_from(token_ttl.as_millis()).unwrap_or(i64::MAX));
        let mut tokens = Vec::with_capacity(users.len());
        let mut created = Vec::with_capacity(users.len());
        for user in &mut users {
            user.password_hash.clone_from(&password_hash);
            let (token, token_hash) = accounts::new_session_token();
            tokens.push((token_hash, user.id, expires_at));
            created.push(Provisioned {
                id: user.id,
                username: user.username.clone(),
                token,
            });
        }
        self.store.import_users(&users, &tokens).await?;
        Ok(created)
    }

    /// Stores `bodies` as messages of `author` in the room or channel named `room`, in one
    /// transaction, stamped now. Bodies are stored as given, without the protocol's text
    /// rules: this reproduces data stored before a rule existed (control characters, for
    /// the history-amplification workload).
    pub async fn seed_room_messages(
        &self,
        room: &str,
        author: i64,
        bodies: Vec<String>,
    ) -> Result<()> {
        let key = fold(room);
        let room_id = self
            .store
            .rooms()
            .await?
            .into_iter()
            .find(|r| fold(&r.name) == key)
            .ok_or_else(|| Error::UnknownRoom(room.to_owned()))?
            .id;
        let now = SystemClock.now_ms();
        let rows: Vec<NewRoomMessage> = bodies
            .into_iter()
            .map(|body| NewRoomMessage {
                id: self.ids.next(now),
                room_id,
                author_id: author,
                body,
                created_at: now,
                key: None,
                reply_to: None,
                mention_room: false,
                mentions: Vec::new(),
                attachments: Vec::new(),
            })
            .collect();
        let rows: Vec<&NewRoomMessage> = rows.iter().collect();
        self.store.insert_messages(&rows, &[]).await?;
        Ok(())
    }

    /// Closes the database connections.
    pub async fn close(self) {
        self.store.close().await;
    }
}

/// The account as registration would store it (names normalised, every field checked),
/// its password hash still to fill in.
fn checked(a: NewAccount, password: &str, id: i64, now: i64) -> Result<NewUser> {
    let (username, alias) = (names::normalize(&a.username), names::normalize(&a.alias));
    let refused = accounts::check_username(&username)
        .and_then(|()| accounts::check_alias(&alias))
        .and_then(|()| accounts::check_name("first_name", &a.first_name))
        .and_then(|()| accounts::check_name("last_name", &a.last_name))
        .and_then(|()| accounts::check_password(password, &username, &alias));
    if let Err(e) = refused {
        return Err(Error::Invalid {
            username,
            message: e.message,
        });
    }
    Ok(NewUser {
        id,
        username,
        alias,
        first_name: a.first_name,
        last_name: a.last_name,
        password_hash: String::new(),
        is_admin: false,
        created_at: now,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(name: &str) -> NewAccount {
        NewAccount {
            username: name.into(),
            alias: name.to_uppercase(),
            first_name: "Load".into(),
            last_name: "Test".into(),
        }
    }

    async fn provisioner(dir: &tempfile::TempDir) -> Provisioner {
        let config = Config {
            database_url: Some(format!(
                "sqlite://{}?mode=rwc",
                dir.path().join("p.db").display()
            )),
            ..Config::default()
        };
        Provisioner::open(&config, OfflineTool::Bench)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn accounts_get_working_tokens_and_seeded_messages_are_history() {
        let dir = tempfile::tempdir().unwrap();
        let p = provisioner(&dir).await;
        let made = p
            .create_accounts(
                vec![account("load1"), account("load2")],
                "a long enough passphrase",
                Duration::from_secs(3600),
            )
            .await
            .unwrap();
        assert_eq!(made.len(), 2);
        assert_eq!(made[0].username, "load1");
        let now = SystemClock.now_ms();
        for m in &made {
            let hash = accounts::session_token_hash(&m.token);
            let (user, _) = p
                .store
                .user_by_session_token(&hash, now)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                (user.id, user.username.as_str()),
                (m.id, m.username.as_str())
            );
            assert!(accounts::verify_password(
                "a long enough passphrase".into(),
                Some(user.password_hash)
            )
            .await
            .unwrap());
            // Made on the tool's node, never a server's.
            assert_eq!((m.id >> 8) & 0xf, i64::from(OfflineTool::Bench.node()));
        }

        p.seed_room_messages("général", made[0].id, vec!["\u{1}one".into(), "two".into()])
            .await
            .unwrap();
        let general = p.store.rooms().await.unwrap().remove(0);
        let history = p
            .store
            .room_history(&general, 0, crate::store::Window::Before(i64::MAX), 10)
            .await
            .unwrap();
        assert_eq!(history.len(), 2);
        assert!(matches!(
            p.seed_room_messages("nowhere", made[0].id, vec!["x".into()])
                .await,
            Err(Error::UnknownRoom(_))
        ));
        p.close().await;
    }

    #[tokio::test]
    async fn what_registration_refuses_is_refused_and_a_failed_batch_stores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = provisioner(&dir).await;
        let refused = p
            .create_accounts(
                vec![account("fine"), account("not fine!")],
                "a long enough passphrase",
                Duration::from_secs(60),
            )
            .await;
        assert!(matches!(refused, Err(Error::Invalid { .. })), "{refused:?}");
        assert!(p.store.user_by_name("fine").await.unwrap().is_none());
        // A name looking like a taken one fails the whole batch in the database.
        p.create_accounts(
            vec![account("taken")],
            "a long enough passphrase",
            Duration::ZERO,
        )
        .await
        .unwrap();
        let clash = p
            .create_accounts(
                vec![account("other"), account("TAKEN")],
                "a long enough passphrase",
                Duration::ZERO,
            )
            .await;
        assert!(matches!(clash, Err(Error::Store(_))), "{clash:?}");
        assert!(p.store.user_by_name("other").await.unwrap().is_none());
        p.close().await;
    }
}
