//! Live state of this node, behind the bus: the session registry ([`Hub`]), the
//! cluster-wide presence view ([`view::View`]), presence changes waiting for the next
//! tick, and the room directory. The domain services read it
//! freely, and change it only by publishing on the [`Bus`]; [`Live::apply`], the bus
//! handler, is the only code that changes it (the hub's mutators are private to this
//! module). Attaching and detaching this node's own sessions are local operations of
//! the handler too; what they change for others (presence) is published.
//!
//! Lock order (see ARCHITECTURE.md): the directory's `RwLock`, the view's `Mutex` and
//! the hub's `Mutex` are never held together, nor across `.await`; an outbound queue's lock is taken under the
//! hub's (fan-out) and never the other way round.

mod bus;
pub(crate) mod catchup;
mod hub;
mod nats;
mod outbound;
mod presence;
mod view;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::Duration;

use salon_proto::{Event, JoinPolicy, MemberState, RoomInfo, SessionInfo, Status};

pub use bus::{Audience, Bus, LocalBus, Message};
pub use hub::{
    AttachRefused, Attached, Hub, Identity, Revocations, RoomId, SessionId, SessionMeta, UserId,
};
pub use nats::{NatsBus, NatsError};
pub use outbound::{CloseReason, Control, Outbound};
pub use view::{NodeId, Present};

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
    /// Adds `room`, unless it is known already (the catch-up and a late live
    /// `RoomCreated` may both bring it).
    pub fn insert(&mut self, room: RoomRow) {
        if self.by_id.contains_key(&room.id) {
            return;
        }
        self.by_key.insert(fold(&room.name), room.id);
        self.order.push(room.id);
        self.by_id.insert(room.id, Arc::new(room));
    }
}

/// This node's live state, and the handler of what the bus delivers.
pub struct Live {
    hub: Hub,
    /// Taken while this node compares a user's sessions here with what it last published
    /// about them, and publishes the difference (see [`Live::sync_presence`]).
    presence_turn: Mutex<()>,
    view: Mutex<view::View>,
    presence: presence::Pending,
    directory: RwLock<Directory>,
    countdown: Countdown,
    /// Edits, deletions and reactions applied while the catch-up tells a page of them.
    changes: catchup::ChangeWindow,
}

/// An administrator's shutdown countdown, once one is requested on any node.
#[derive(Default)]
struct Countdown {
    /// Its length in seconds and its message; the first request wins.
    requested: Mutex<Option<(u32, String)>>,
    started: tokio::sync::Notify,
}

impl Default for Live {
    fn default() -> Live {
        Live::new(Directory::default(), 0)
    }
}

impl Live {
    /// The live state of node `node` (its `node_id`).
    pub fn new(directory: Directory, node: NodeId) -> Live {
        Live {
            hub: Hub::default(),
            presence_turn: Mutex::new(()),
            view: Mutex::new(view::View::new(node)),
            presence: presence::Pending::default(),
            directory: RwLock::new(directory),
            countdown: Countdown::default(),
            changes: catchup::ChangeWindow::default(),
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
        if let Message::Event(_, event) = &message {
            self.changes.saw(event);
        }
        self.apply_unwatched(message);
    }

    /// Applies `message` unseen by the catch-up's change window: what the catch-up
    /// itself tells.
    fn apply_unwatched(&self, message: Message) {
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
            Message::Status {
                user,
                status,
                stamp,
            } => {
                let change = crate::lock(&self.view).apply_status(user, status, stamp);
                self.announce(change);
            }
            Message::NodePresence { node, present, who } => {
                let change = crate::lock(&self.view).apply_fact(node, present, who);
                self.announce(change);
            }
            Message::Barrier { .. } | Message::Goodbye { .. } => {}
            Message::Shutdown { seconds, message } => {
                let mut requested = crate::lock(&self.countdown.requested);
                if requested.is_none() {
                    *requested = Some((seconds, message));
                    self.countdown.started.notify_one();
                }
            }
        }
    }

    /// The shutdown countdown requested, if any: its length and message.
    pub fn countdown(&self) -> Option<(u32, String)> {
        crate::lock(&self.countdown.requested).clone()
    }

    /// Waits for a shutdown countdown to be requested, tells this node's sessions each
    /// second of it, and returns when it has ended (the node then stops). Each node runs
    /// its own, so the service stops even if the node that was asked dies meanwhile.
    pub async fn count_down(&self) {
        let (seconds, message) = loop {
            let requested = self.countdown();
            if let Some(requested) = requested {
                break requested;
            }
            self.countdown.started.notified().await;
        };
        for left in (1..=seconds).rev() {
            self.hub.to_all(&SharedEvent::new(Event::Shutdown {
                seconds: left,
                message: message.clone(),
            }));
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Queues presence changes for the next tick (the view's lock is released).
    fn announce(&self, changes: impl IntoIterator<Item = view::Change>) {
        for change in changes {
            self.presence
                .queue(change.user, change.presence, change.store);
        }
    }

    /// Publishes on `bus` whether `who` is present on this node, if that differs from
    /// what this node last published (which its own view holds: a node applies its own
    /// facts as it publishes them). Called after a session of theirs attached or
    /// detached. Comparing with the registry in turn, rather than publishing what one
    /// attach or detach saw, keeps a login and a logout racing on two sessions of the same
    /// user from publishing their facts in the wrong order: the last fact published is
    /// always what the registry holds.
    pub fn sync_presence(&self, who: &Identity, bus: &dyn Bus) {
        let _turn = crate::lock(&self.presence_turn);
        let here = self.hub.is_present(who.id);
        let told = {
            let view = crate::lock(&self.view);
            view.holds(view.me(), who.id)
        };
        if here != told {
            bus.publish(self.presence_fact(who, Status::Online, here));
        }
    }

    /// The fact this node publishes when `who` gets (`present`) or loses their presence
    /// here: with their current status if present elsewhere, else `preferred`.
    fn presence_fact(&self, who: &Identity, preferred: Status, present: bool) -> Message {
        let view = crate::lock(&self.view);
        let (status, stamp) = view.arriving(who.id, preferred);
        Message::NodePresence {
            node: view.me(),
            present,
            who: Present {
                user: who.id,
                username: who.username.clone(),
                alias: who.alias.clone(),
                status,
                stamp,
            },
        }
    }

    /// The message of a status chosen on this node by `user`, ordered after every one
    /// this node has seen.
    pub fn status_change(&self, user: UserId, status: Status) -> Message {
        let stamp = crate::lock(&self.view).next_stamp(user);
        Message::Status {
            user,
            status,
            stamp,
        }
    }

    /// Status of one user as others see it (`None` when they are present on no node).
    pub fn status_of(&self, user: UserId) -> Option<Status> {
        crate::lock(&self.view)
            .status(user)
            .map(|(status, _)| status)
    }

    /// Status of every user present on some node, by user id.
    pub fn statuses(&self) -> HashMap<UserId, Status> {
        crate::lock(&self.view).statuses()
    }

    /// This node's sessions (for `connected`), with the statuses of the view.
    pub fn connected(&self) -> Vec<SessionInfo> {
        let statuses = self.statuses();
        self.hub.connected(&statuses)
    }

    /// Changes the view under its lock (the cluster bus: other nodes' facts, snapshots,
    /// heartbeats, expiry), then queues the changes it made for the next tick.
    pub(crate) fn with_view<T>(
        &self,
        f: impl FnOnce(&mut view::View) -> (T, Vec<view::Change>),
    ) -> T {
        let (out, changes) = f(&mut crate::lock(&self.view));
        self.announce(changes);
        out
    }

    /// The other nodes the presence view takes for live.
    pub(crate) fn live_nodes(&self) -> Vec<view::NodeId> {
        crate::lock(&self.view).live_nodes()
    }

    /// Registers one of this node's sessions (see [`Hub::attach`]).
    #[allow(clippy::too_many_arguments)]
    pub fn attach(
        &self,
        who: &Identity,
        rooms: HashSet<RoomId>,
        pending: HashSet<RoomId>,
        outbound: &Outbound,
        meta: SessionMeta,
        max_sessions: usize,
        seen: &Revocations,
    ) -> Result<Attached, AttachRefused> {
        self.hub
            .attach(who, rooms, pending, outbound, meta, max_sessions, seen)
    }

    /// Unregisters one of this node's sessions (see [`Hub::detach`]): whether it was the
    /// user's last one here that counts for presence.
    pub fn detach(&self, session: SessionId) -> bool {
        self.hub.detach(session)
    }

    /// Starts the private-message watermark (see [`Hub::start_direct_watermark`]).
    pub fn start_direct_watermark(&self, largest: &[i64]) {
        self.hub.start_direct_watermark(largest);
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

/// What `user` (member of `member`, waiting for `pending`) is to `room`.
pub fn room_info(room: &RoomRow, member: &HashSet<i64>, pending: &HashSet<i64>) -> RoomInfo {
    let state = if member.contains(&room.id) {
        MemberState::Member
    } else if pending.contains(&room.id) {
        MemberState::Pending
    } else {
        match room.policy {
            JoinPolicy::Everyone | JoinPolicy::Open => MemberState::CanJoin,
            JoinPolicy::Request => MemberState::CanRequest,
            JoinPolicy::Private => MemberState::None,
        }
    };
    RoomInfo {
        name: room.name.clone(),
        policy: room.policy,
        state,
    }
}
