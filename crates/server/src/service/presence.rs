//! Presence: statuses set by users and by their sessions coming and going (on any node of
//! a cluster: `live/view.rs`), gathered and sent once per tick, and `who`.

use salon_proto::{args, ErrorBody, ErrorCode, Reply, Status, UserPresence};

use crate::live::Identity;

use super::*;

impl Service {
    /// Sends the presence changes gathered since the last tick and stores them in one
    /// transaction (a status is not worth an fsync per login).
    pub async fn flush_presence(&self) {
        let changes = self.live.flush_presence();
        if changes.is_empty() {
            return;
        }
        if let Err(e) = self.store.set_statuses(&changes).await {
            tracing::warn!(error = %e, count = changes.len(), "could not store statuses");
        }
    }

    pub(crate) async fn who(&self) -> Result<Done> {
        let statuses = self.live.statuses();
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
        ok(Reply::Who(salon_proto::reply::Users { users }))
    }

    pub(crate) async fn set_status(&self, me: &Identity, a: args::SetStatus) -> Result<Done> {
        if a.status == Status::Offline {
            return Err(ErrorBody::new(
                ErrorCode::InvalidRequest,
                "offline is set by disconnecting; choose online, away or busy",
            )
            .with_field("status")
            .into());
        }
        self.bus.publish(self.live.status_change(me.id, a.status));
        ok(Reply::SetStatus(salon_proto::reply::NewStatus {
            status: a.status,
        }))
    }
}
