//! Live state of this node, behind the bus: the session registry ([`Hub`]), presence
//! changes waiting for the next tick, and the room directory. The domain services read it
//! freely, and change it only by publishing on the [`Bus`]; [`Live::apply`], the bus
//! handler, is the only code that changes it (the hub's mutators are private to this
//! module). Attaching and detaching this node's own sessions are local operations of
//! the handler too; what they change for others (presence) is published.
//!
//! Lock order (see ARCHITECTURE.md): the directory's `RwLock` and the hub's `Mutex` are
//! never held together, nor across `.await`; an outbound queue's lock is taken under the
//! hub's (fan-out) and never the other way round.

mod bus;
mod catchup;
mod hub;
mod nats;
mod outbound;
mod presence;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use salon_proto::{Status, UserPresence};

pub use bus::{Audience, Bus, LocalBus, Message};
pub use hub::{
    AttachRefused, Attached, Hub, Identity, Revocations, RoomId, SessionId, SessionMeta, UserId,
};
pub use nats::{NatsBus, NatsError};
pub use outbound::{CloseReason, Control, Outbound};

use crate::protocol::SharedEvent;
use crate::store::{fold, RoomRow};

/// Rooms and private channels by id and by folded name. Small and read on every command,
/// so it lives in memory; the database stays the source of truth.
#[derive(Default)]
pub struct Directory {
    pub by_id: HashMap<RoomId, Arc<RoomRow>>,
    pub by_key: HashMap<String, RoomId>,
    /// Default rooms first (by id), then channels by creation.
    pub order: Vec<RoomId>,
}

impl Directory {
    pub fn insert(&mut self, room: RoomRow) {
        self.by_key.insert(fold(&room.name), room.id);
        self.order.push(room.id);
        self.by_id.insert(room.id, Arc::new(room));
    }
}

/// This node's live state, and the handler of what the bus delivers.
#[derive(Default)]
pub struct Live {
    hub: Hub,
    presence: presence::Pending,
    directory: RwLock<Directory>,
}

impl Live {
    pub fn new(directory: Directory) -> Live {
        Live {
            directory: RwLock::new(directory),
            ..Live::default()
        }
    }

    /// The registry, for reading.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// The room directory, for reading (a short, synchronous section).
    pub fn directory(&self) -> RwLockReadGuard<'_, Directory> {
        crate::read(&self.directory)
    }

    /// Applies one bus message to this node.
    pub fn apply(&self, message: Message) {
        match message {
            Message::Event(audience, event) => {
                let event = SharedEvent::new(event);
                let frame = &event;
                match audience {
                    Audience::Room(room) => self.hub.to_room(room, frame),
                    Audience::User(user) => self.hub.to_user(user, frame),
                    Audience::Admins => self.hub.to_admins(frame),
                    Audience::Everyone => self.hub.to_all(frame),
                }
            }
            Message::Direct {
                id,
                from,
                to,
                event,
            } => self
                .hub
                .deliver_direct(id, from, to, &SharedEvent::new(event)),
            Message::Joined { user, room } => self.hub.add_membership(user, room),
            Message::Left { user, room } => self.hub.remove_membership(user, room),
            Message::Pending {
                user,
                room,
                pending,
            } => self.hub.set_pending(user, room, pending),
            Message::RoomCreated(room) => crate::write(&self.directory).insert(room),
            Message::Revoke { user, keep, reason } => self.hub.revoke(user, keep, &reason),
            Message::Status { user, status } => {
                if let Some(presence) = self.hub.set_status(user, status) {
                    self.presence.queue(user, presence);
                }
            }
            Message::Presence { user, presence } => self.presence.queue(user, presence),
        }
    }

    /// Registers one of this node's sessions (see [`Hub::attach`]).
    #[allow(clippy::too_many_arguments)]
    pub fn attach(
        &self,
        who: &Identity,
        preferred: Status,
        rooms: HashSet<RoomId>,
        pending: HashSet<RoomId>,
        outbound: &Outbound,
        meta: SessionMeta,
        max_sessions: usize,
        seen: &Revocations,
    ) -> Result<Attached, AttachRefused> {
        self.hub.attach(
            who,
            preferred,
            rooms,
            pending,
            outbound,
            meta,
            max_sessions,
            seen,
        )
    }

    /// Unregisters one of this node's sessions (see [`Hub::detach`]).
    pub fn detach(&self, session: SessionId) -> Option<UserPresence> {
        self.hub.detach(session)
    }

    /// Starts the private-message watermark (see [`Hub::start_direct_watermark`]).
    pub fn start_direct_watermark(&self, id: i64) {
        self.hub.start_direct_watermark(id);
    }

    /// Sends the presence changes gathered since the last tick to every session of this
    /// node, as one event encoded once, and returns them (for storing).
    pub fn flush_presence(&self) -> Vec<(UserId, Status)> {
        let Some((event, stored)) = self.presence.take() else {
            return Vec::new();
        };
        self.hub.to_all(&SharedEvent::new(event));
        stored
    }
}
