//! Look-alike keys of names: the `name_skeletons` table. Usernames and aliases share the
//! scope `user`, rooms and channels have `room`; one row per key, so the database itself
//! refuses a second name that looks like the first. Rows are written with the account
//! (`Store::register_user`) or the channel (`Store::create_channel`) they name.

use super::{names, Result, Store};

/// Which of a new account's names look like existing ones, and the existing name each
/// resembles. Usernames and aliases share one namespace, compared by their skeletons
/// ([`crate::names::skeleton`]), so that "log in with username or alias" (R3) always
/// names one account and no name can pass for another.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct NameClash {
    pub username: Option<String>,
    pub alias: Option<String>,
}

/// An account's id and names.
#[derive(sqlx::FromRow)]
struct OwnerRecord {
    id: i64,
    username: String,
    alias: String,
}

impl Store {
    pub async fn name_clash(&self, username: &str, alias: &str) -> Result<NameClash> {
        let (u, a) = (names::skeleton(username), names::skeleton(alias));
        let sql = self.sql(
            "SELECT u.id, u.username, u.alias FROM name_skeletons s \
             JOIN users u ON u.id = s.owner \
             WHERE s.scope = 'user' AND s.skeleton IN (?, ?)",
        );
        let owners: Vec<OwnerRecord> = self
            .fetch_all_as(sqlx::query(&sql).bind(u.as_str()).bind(a.as_str()))
            .await?;
        let mut clash = NameClash::default();
        for theirs in owners {
            let (sk_u, sk_a) = (
                names::skeleton(&theirs.username),
                names::skeleton(&theirs.alias),
            );
            for (mine, slot) in [(&u, &mut clash.username), (&a, &mut clash.alias)] {
                // Which of their names it resembles: the username unless only the alias does.
                if slot.is_none() && *mine == sk_u {
                    *slot = Some(theirs.username.clone());
                } else if slot.is_none() && *mine == sk_a {
                    *slot = Some(theirs.alias.clone());
                }
            }
        }
        Ok(clash)
    }

    /// Records the skeletons of names that have none yet (accounts and rooms stored before
    /// `name_skeletons` existed). A name that resembles one already recorded keeps working
    /// but is reported: its owner should be renamed.
    pub async fn backfill_name_skeletons(&self) -> Result<()> {
        let users: Vec<OwnerRecord> = self
            .fetch_all_as(sqlx::query(
                "SELECT u.id, u.username, u.alias FROM users u WHERE NOT EXISTS \
                 (SELECT 1 FROM name_skeletons s WHERE s.scope = 'user' AND s.owner = u.id) \
                 ORDER BY u.id",
            ))
            .await?;
        for user in &users {
            for name in [&user.username, &user.alias] {
                self.record_skeleton("user", name, user.id).await?;
            }
        }
        for room in self.rooms_without_skeleton().await? {
            self.record_skeleton("room", &room.name, room.id).await?;
        }
        Ok(())
    }

    async fn record_skeleton(&self, scope: &str, name: &str, owner: i64) -> Result<()> {
        let sql = self.sql("INSERT INTO name_skeletons (scope, skeleton, owner) VALUES (?, ?, ?)");
        let done = self
            .execute(
                sqlx::query(&sql)
                    .bind(scope)
                    .bind(names::skeleton(name))
                    .bind(owner),
            )
            .await;
        match done {
            Ok(_) => Ok(()),
            Err(e) if e.is_unique_violation() => {
                tracing::warn!(scope, name, owner, "this name resembles another one");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}
