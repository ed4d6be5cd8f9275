//! The bus between the domain services and live state. Every delivery (to a room, a
//! user, the administrators, everyone), every membership change, room creation,
//! revocation (disconnect, kick, ban, password change) and presence change is a
//! [`Message`] published on the [`Bus`]; the bus hands it to each node's handler
//! ([`Live::apply`]), which changes that node's registry and fans out to its sessions.
//!
//! [`LocalBus`] is the one-node implementation: it applies each message at once, in the
//! caller's thread, with no copy and no external service, which keeps today's speed. A
//! cluster implementation (NATS) publishes the same messages to every node (model:
//! centrifuge's `Broker` with its memory implementation and `BrokerEventHandler`).

use std::sync::Arc;

use futures_util::future::BoxFuture;
use salon_proto::{Event, SessionInfo, Status};

use super::hub::{RoomId, SessionId, UserId};
use super::outbound::CloseReason;
use super::view::{NodeId, Present, Stamp};
use super::Live;
use crate::store::RoomRow;

/// Who an event is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Audience {
    /// Every connected member of a room.
    Room(RoomId),
    /// Every session of one user.
    User(UserId),
    /// Every session of every administrator.
    Admins,
    /// Every logged-in session.
    Everyone,
}

/// Something that changes live state or reaches sessions. Plain data (the cluster bus
/// serialises it).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum Message {
    /// An event for an audience.
    Event(Audience, Event),
    /// Stored private message `id`, for the sessions of its recipient and its sender; it
    /// also moves the private-message watermark (see `Hub::deliver_direct`).
    Direct {
        id: i64,
        from: UserId,
        to: UserId,
        event: Event,
    },
    /// `user` became a member of `room` (a pending request, if any, is gone).
    Joined { user: UserId, room: RoomId },
    /// `user` is no longer a member of `room`.
    Left { user: UserId, room: RoomId },
    /// `user`'s request to join `room` is now waiting (`true`) or gone (`false`).
    Pending {
        user: UserId,
        room: RoomId,
        pending: bool,
    },
    /// A room or private channel was created (and stored).
    RoomCreated(RoomRow),
    /// Every session of `user` but `keep` is closed with `reason`, and logins in progress
    /// are refused (see `hub::Revocations`).
    Revoke {
        user: UserId,
        keep: Option<SessionId>,
        reason: CloseReason,
    },
    /// An administrator's shutdown: every node counts down `seconds` on its own sessions
    /// with `message`, refusing logins, then stops (see `Live::count_down`). The first
    /// one a node receives wins.
    Shutdown { seconds: u32, message: String },
    /// Nothing to apply: in a cluster, each node that applies it tells `node` so, which
    /// then knows that every message it published before reached that node
    /// (`Bus::settled`).
    Barrier { node: u16, token: u64 },
    /// Nothing to apply: in a cluster, `node` stops cleanly (SIGTERM or shutdown) and
    /// everything it published came before. The others forget it at once: its next
    /// start is not a gap to catch up from, and no barrier waits for it.
    Goodbye { node: u16 },
    /// `user` chose a status (ordered by `stamp`: `live/view.rs`).
    Status {
        user: UserId,
        status: Status,
        stamp: Stamp,
    },
    /// `who` got (`present`) or lost their presence on `node`: their first session there
    /// that counts for presence came, or the last one went. Every node's presence view
    /// applies it; a user is online while present on any node.
    NodePresence {
        node: NodeId,
        present: bool,
        who: Present,
    },
}

/// Where the domain publishes. Publishing never waits: a message is applied (locally) or
/// handed on (cluster) before `publish` returns.
pub trait Bus: Send + Sync + 'static {
    fn publish(&self, message: Message);

    /// Every node's sessions, each with its node in a cluster (for `connected`).
    fn sessions(&self) -> BoxFuture<'_, Vec<SessionInfo>>;

    /// Resolves once every live node has applied what this node published so far (at
    /// once on a single node), or once a node that has not answered can no longer count
    /// as current (see [`Bus::current`]). A `leave` waits for it, so that once its answer
    /// arrives no node accepts a message from the user into that room any more.
    fn settled(&self) -> BoxFuture<'_, ()> {
        Box::pin(std::future::ready(()))
    }

    /// Resolves once what this node published so far reached the other nodes' way (in a
    /// cluster: came back through this node's own subscription, so NATS holds it before
    /// anything published after; at once on a single node), or after a bound (this node
    /// cut off). A membership change waits for it before its answer, so that one made
    /// next, on another node, can never reach a third node before it.
    fn published(&self) -> BoxFuture<'_, ()> {
        Box::pin(std::future::ready(()))
    }

    /// Whether this node's registry holds every change the other nodes published until
    /// a moment ago (always on a single node). A cluster node that is cut off, catching
    /// up, or behind on its subscription is not current: the memberships its registry
    /// shows are then checked in the database.
    fn current(&self) -> bool {
        true
    }

    /// Stops the bus's tasks once what was published is handed on (at shutdown, after
    /// the last sessions closed).
    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(std::future::ready(()))
    }
}

/// The bus of a single node: every message is applied to this node's live state at once.
pub struct LocalBus {
    live: Arc<Live>,
}

impl LocalBus {
    pub fn new(live: Arc<Live>) -> LocalBus {
        LocalBus { live }
    }
}

impl Bus for LocalBus {
    fn publish(&self, message: Message) {
        self.live.apply(message);
    }

    fn sessions(&self) -> BoxFuture<'_, Vec<SessionInfo>> {
        Box::pin(std::future::ready(self.live.connected()))
    }
}
