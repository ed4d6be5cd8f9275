//! Presence changes gathered between ticks: the latest per user, sent to every session as
//! one `presence` event per tick (so a wave of logins costs every session a few frames,
//! not one per login) and then stored.

use std::collections::HashMap;
use std::sync::Mutex;

use salon_proto::{Event, Status, UserPresence};

use super::hub::UserId;
use crate::lock;

/// Most users one `presence` event lists; more changes at once send a refresh hint.
pub const PRESENCE_LIST_MAX: usize = 50;

/// Presence changes not yet sent: the latest per user, and whether this node stores it
/// (in a cluster one node stores each change: `live/view.rs`).
#[derive(Debug, Default)]
pub(super) struct Pending(Mutex<HashMap<UserId, (UserPresence, bool)>>);

impl Pending {
    /// Queues a change; it replaces an earlier one of the same user not yet sent.
    pub(super) fn queue(&self, user: UserId, presence: UserPresence, store: bool) {
        lock(&self.0).insert(user, (presence, store));
    }

    /// Takes every queued change: the event to send to every session, and the statuses
    /// to store. `None` when nothing changed.
    pub(super) fn take(&self) -> Option<(Event, Vec<(UserId, Status)>)> {
        let (changes, stored): (Vec<UserPresence>, Vec<(UserId, Status)>) = {
            let mut pending = lock(&self.0);
            if pending.is_empty() {
                return None;
            }
            let mut changes = Vec::with_capacity(pending.len());
            let mut stored = Vec::new();
            for (id, (p, store)) in pending.drain() {
                if store {
                    stored.push((id, p.status));
                }
                changes.push(p);
            }
            (changes, stored)
        };
        // Listing every change to every session is quadratic in a login wave; past a
        // handful, a short "refresh" hint costs each session a few bytes instead.
        let event = if changes.len() > PRESENCE_LIST_MAX {
            Event::Presence {
                users: Vec::new(),
                refresh: true,
            }
        } else {
            let mut users = changes;
            users.sort_by(|a, b| a.username.cmp(&b.username));
            Event::Presence {
                users,
                refresh: false,
            }
        };
        Some((event, stored))
    }
}
