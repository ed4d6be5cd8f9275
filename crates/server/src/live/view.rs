//! The cluster-wide presence view (issue 16): for each user present somewhere, the nodes
//! where they have a session that counts for presence, and their status. One node is the
//! same code with only itself in it ([`super::LocalBus`]); in a cluster every node holds
//! the same view, built from facts each node publishes about itself.
//!
//! **Facts.** A node publishes `Message::NodePresence` when a user's first session that
//! counts for presence comes to it (`present: true`) and when the last one goes. Each
//! node is the only writer of its own bit per user and NATS keeps one publisher's order,
//! so applying facts is a set union/difference that converges whatever the interleaving
//! between nodes. A user is online while their set of nodes is not empty: others are told
//! only when it becomes non-empty (online) or empty (offline).
//!
//! **Statuses** are ordered by a [`Stamp`] (a Lamport counter per user, then the node):
//! a change made after another was seen always wins, two made at once are settled by the
//! node id, so every node keeps the same one.
//!
//! **Other nodes' state.** Each node counts the facts it publishes (per boot) and sends
//! the count in its heartbeats. A receiver that sees an unknown node, a new boot id, or a
//! gap in the count asks that node for a snapshot of its present users, keeping the
//! node's facts that arrive meanwhile (bounded) to replay those after the snapshot's
//! count. A node not heard for [`NODE_EXPIRY`] is expired: its users' presence on it is
//! removed. Everything here is synchronous and pure (time is a parameter), so the merge
//! logic is unit-tested below; `live/nats.rs` does the talking.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use salon_proto::{Status, UserPresence};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::hub::UserId;

pub type NodeId = u16;

/// A node not heard (heartbeat or any bus message) for this long is taken for dead: its
/// users' presence on it is removed, and those with no other node go offline. Heartbeats
/// are sent every second (`live/nats.rs`), so this allows four lost in a row.
pub const NODE_EXPIRY: Duration = Duration::from_secs(5);

/// How long a snapshot asked for may take before it is asked again.
pub const SNAPSHOT_RETRY: Duration = Duration::from_secs(2);

/// Facts of one node kept while its snapshot is awaited, at most. Past that the snapshot
/// will be too old to be completed by them: they are dropped and it is asked again.
pub const SYNC_BUFFER_MAX: usize = 65_536;

/// Statuses of users not (yet) in the view kept while a snapshot is awaited, at most: a
/// status can overtake the snapshot that brings its user.
pub const EARLY_STATUSES_MAX: usize = 4_096;

/// The order of status changes: a Lamport counter per user, then the node that made it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Stamp {
    pub seq: u64,
    pub node: NodeId,
}

/// One user's presence as a fact or a snapshot entry carries it: who they are (to tell
/// others), and their status with its stamp.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Present {
    pub user: UserId,
    pub username: String,
    pub alias: String,
    pub status: Status,
    pub stamp: Stamp,
}

/// A change others must be told of: `user` came online, went offline, or changed status.
/// `store`: whether this node writes it to the database (one node does per change: the
/// one that made it, or every node when a dead node's users are removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub user: UserId,
    pub presence: UserPresence,
    pub store: bool,
}

#[derive(Debug)]
struct UserView {
    username: String,
    alias: String,
    status: Status,
    stamp: Stamp,
    /// Never empty: a user present nowhere is removed.
    nodes: BTreeSet<NodeId>,
}

impl UserView {
    fn presence(&self) -> UserPresence {
        UserPresence {
            username: self.username.clone(),
            alias: self.alias.clone(),
            status: self.status,
        }
    }
}

/// What this node knows of another node.
#[derive(Debug)]
struct NodeState {
    boot: u64,
    /// Count of facts applied from this boot: `None` until a snapshot came.
    facts: Option<u64>,
    /// Facts that came while a snapshot is awaited (count, present, who), in order.
    buffer: Vec<(u64, bool, Present)>,
    /// More facts came than the buffer holds: the next snapshot must be asked again.
    overflowed: bool,
    /// When the snapshot awaited was asked for (`None`: none is).
    asked: Option<Instant>,
    heard: Instant,
}

/// The view. Behind one `Mutex` in [`super::Live`], taken for short sections.
#[derive(Debug)]
pub struct View {
    me: NodeId,
    users: HashMap<UserId, UserView>,
    nodes: HashMap<NodeId, NodeState>,
    /// Statuses that came for users not in the view while some node's snapshot was
    /// awaited: applied if the snapshot (or a fact kept meanwhile) brings the user.
    early: HashMap<UserId, (Status, Stamp)>,
}

impl View {
    pub fn new(me: NodeId) -> View {
        View {
            me,
            users: HashMap::new(),
            nodes: HashMap::new(),
            early: HashMap::new(),
        }
    }

    /// This node's id.
    pub fn me(&self) -> NodeId {
        self.me
    }

    /// The status of a user present somewhere, with its stamp.
    pub fn status(&self, user: UserId) -> Option<(Status, Stamp)> {
        self.users.get(&user).map(|u| (u.status, u.stamp))
    }

    /// Statuses of every user present somewhere.
    pub fn statuses(&self) -> HashMap<UserId, Status> {
        self.users.iter().map(|(id, u)| (*id, u.status)).collect()
    }

    /// Whether `user` is present on `node` in this view.
    pub fn holds(&self, node: NodeId, user: UserId) -> bool {
        self.users
            .get(&user)
            .is_some_and(|u| u.nodes.contains(&node))
    }

    /// The stamp of a status change made now on this node.
    pub fn next_stamp(&self, user: UserId) -> Stamp {
        Stamp {
            seq: self.users.get(&user).map_or(0, |u| u.stamp.seq + 1),
            node: self.me,
        }
    }

    /// What a fact about `user` coming to this node says: their current status if they
    /// are present elsewhere (a new device keeps away or busy), else `preferred`.
    pub fn arriving(&self, user: UserId, preferred: Status) -> (Status, Stamp) {
        self.status(user).unwrap_or((
            preferred,
            Stamp {
                seq: 0,
                node: self.me,
            },
        ))
    }

    /// The users present on this node (its snapshot).
    pub fn own(&self) -> Vec<Present> {
        self.users
            .iter()
            .filter(|(_, u)| u.nodes.contains(&self.me))
            .map(|(id, u)| Present {
                user: *id,
                username: u.username.clone(),
                alias: u.alias.clone(),
                status: u.status,
                stamp: u.stamp,
            })
            .collect()
    }

    /// The other nodes heard and not expired.
    pub fn live_nodes(&self) -> Vec<NodeId> {
        let mut nodes: Vec<NodeId> = self.nodes.keys().copied().collect();
        nodes.sort_unstable();
        nodes
    }

    /// Applies a fact without any counting: this node's own, or every fact on one node.
    pub fn apply_fact(&mut self, node: NodeId, present: bool, who: Present) -> Option<Change> {
        let store = node == self.me;
        if present {
            self.add(node, who, store)
        } else {
            self.remove(node, who.user, store)
        }
    }

    fn add(&mut self, node: NodeId, who: Present, store: bool) -> Option<Change> {
        match self.users.get_mut(&who.user) {
            Some(u) => {
                u.nodes.insert(node);
                // A status the fact knows of and this view not yet: the later one wins.
                if who.stamp > u.stamp {
                    u.stamp = who.stamp;
                    if u.status != who.status {
                        u.status = who.status;
                        return Some(Change {
                            user: who.user,
                            presence: u.presence(),
                            store: false,
                        });
                    }
                }
                None
            }
            None => {
                let (status, stamp) = match self.early.remove(&who.user) {
                    Some((status, stamp)) if stamp > who.stamp => (status, stamp),
                    _ => (who.status, who.stamp),
                };
                let u = UserView {
                    username: who.username,
                    alias: who.alias,
                    status,
                    stamp,
                    nodes: BTreeSet::from([node]),
                };
                let change = Change {
                    user: who.user,
                    presence: u.presence(),
                    store,
                };
                self.users.insert(who.user, u);
                Some(change)
            }
        }
    }

    fn remove(&mut self, node: NodeId, user: UserId, store: bool) -> Option<Change> {
        let u = self.users.get_mut(&user)?;
        if !u.nodes.remove(&node) || !u.nodes.is_empty() {
            return None;
        }
        let u = self.users.remove(&user)?;
        Some(Change {
            user,
            presence: UserPresence {
                status: Status::Offline,
                ..u.presence()
            },
            store,
        })
    }

    /// A status chosen by a user (on any node). Applied if it is later than the one held.
    pub fn apply_status(&mut self, user: UserId, status: Status, stamp: Stamp) -> Option<Change> {
        let Some(u) = self.users.get_mut(&user) else {
            let syncing = self.nodes.values().any(|n| n.asked.is_some());
            if syncing && self.early.len() < EARLY_STATUSES_MAX {
                let kept = self.early.entry(user).or_insert((status, stamp));
                if stamp >= kept.1 {
                    *kept = (status, stamp);
                }
            }
            return None;
        };
        if stamp < u.stamp {
            return None;
        }
        u.stamp = stamp;
        if u.status == status {
            return None;
        }
        u.status = status;
        Some(Change {
            user,
            presence: u.presence(),
            store: stamp.node == self.me,
        })
    }

    /// Any bus message or heartbeat from `node` (of boot `boot`). Returns whether its
    /// snapshot should be asked for now (an unknown node, a new boot, or one awaited for
    /// too long), with the changes a new boot makes (its previous users removed).
    pub fn heard(&mut self, node: NodeId, boot: u64, now: Instant) -> (bool, Vec<Change>) {
        if node == self.me {
            return (false, Vec::new());
        }
        let mut changes = Vec::new();
        match self.nodes.get_mut(&node) {
            Some(state) if state.boot == boot => state.heard = now,
            Some(_) => {
                // Restarted: what it held before is gone (its sessions died with it).
                changes = self.drop_node(node);
                self.nodes.insert(node, NodeState::waiting(boot, now));
            }
            None => {
                self.nodes.insert(node, NodeState::waiting(boot, now));
            }
        }
        (self.should_ask(node, now), changes)
    }

    /// Whether the snapshot of a node waiting for one should be asked now; marks it asked.
    fn should_ask(&mut self, node: NodeId, now: Instant) -> bool {
        let Some(state) = self.nodes.get_mut(&node) else {
            return false;
        };
        let waiting = state.facts.is_none() || state.overflowed;
        let due = state
            .asked
            .is_none_or(|asked| now.duration_since(asked) >= SNAPSHOT_RETRY);
        if (waiting || state.asked.is_some()) && due {
            state.asked = Some(now);
            return true;
        }
        false
    }

    /// A heartbeat's count of the facts `node` published: a gap means one was missed.
    /// Returns whether to ask for its snapshot.
    pub fn heartbeat(&mut self, node: NodeId, facts: u64, now: Instant) -> bool {
        let Some(state) = self.nodes.get_mut(&node) else {
            return false;
        };
        if let Some(known) = state.facts {
            if known != facts && state.asked.is_none() {
                state.facts = None;
                return self.should_ask(node, now);
            }
        }
        false
    }

    /// Fact number `count` from `node` (counted per boot by its publisher). Applied in
    /// order; kept for later while a snapshot is awaited; a gap asks for a snapshot.
    /// Returns the change and whether to ask for the snapshot.
    pub fn fact(
        &mut self,
        node: NodeId,
        count: u64,
        present: bool,
        who: Present,
        now: Instant,
    ) -> (Option<Change>, bool) {
        let Some(state) = self.nodes.get_mut(&node) else {
            return (None, false);
        };
        match state.facts {
            Some(known) if state.asked.is_none() && count == known + 1 => {
                state.facts = Some(count);
                (self.apply_fact(node, present, who), false)
            }
            Some(known) if state.asked.is_none() && count <= known => (None, false),
            _ => {
                if state.buffer.len() >= SYNC_BUFFER_MAX {
                    state.buffer.clear();
                    state.overflowed = true;
                } else if !state.overflowed {
                    state.buffer.push((count, present, who));
                }
                // A gap while in step: the snapshot is needed.
                if state.asked.is_none() {
                    state.facts = None;
                }
                (None, self.should_ask(node, now))
            }
        }
    }

    /// The snapshot of `node`'s present users at its fact count `facts`: replaces what
    /// this view held for that node, then the facts kept meanwhile that come after it are
    /// applied. Returns whether to ask again (the facts kept had a gap or overflowed) and
    /// the changes.
    pub fn snapshot(
        &mut self,
        node: NodeId,
        boot: u64,
        facts: u64,
        users: Vec<Present>,
        now: Instant,
    ) -> (bool, Vec<Change>) {
        if node == self.me {
            return (false, Vec::new());
        }
        let state = self
            .nodes
            .entry(node)
            .or_insert_with(|| NodeState::waiting(boot, now));
        if state.boot != boot {
            // From a boot this view no longer follows (it restarted since, or this is
            // an old answer): the next heartbeat settles it.
            return (false, Vec::new());
        }
        if state.overflowed {
            state.overflowed = false;
            state.facts = None;
            state.asked = None;
            return (self.should_ask(node, now), Vec::new());
        }
        if state.asked.is_none() && state.facts.is_some_and(|known| known > facts) {
            return (false, Vec::new()); // older than what is applied already
        }
        state.heard = now;
        state.asked = None;
        state.facts = Some(facts);
        let buffer = std::mem::take(&mut state.buffer);

        let mut changes = Vec::new();
        let listed: std::collections::HashSet<UserId> = users.iter().map(|p| p.user).collect();
        let gone: Vec<UserId> = self
            .users
            .iter()
            .filter(|(id, u)| u.nodes.contains(&node) && !listed.contains(id))
            .map(|(id, _)| *id)
            .collect();
        for user in gone {
            changes.extend(self.remove(node, user, false));
        }
        for who in users {
            changes.extend(self.add(node, who, false));
        }
        let mut gap = false;
        for (count, present, who) in buffer {
            let Some(state) = self.nodes.get_mut(&node) else {
                break;
            };
            let known = state.facts.unwrap_or(facts);
            if count <= known {
                continue;
            }
            if count != known + 1 || gap {
                gap = true;
                continue;
            }
            state.facts = Some(count);
            changes.extend(self.apply_fact(node, present, who));
        }
        if gap {
            if let Some(state) = self.nodes.get_mut(&node) {
                state.facts = None;
            }
            return (self.should_ask(node, now), changes);
        }
        if self.nodes.values().all(|n| n.asked.is_none()) {
            self.early.clear();
        }
        (false, changes)
    }

    /// `node` stopped cleanly: it is forgotten at once, with its users' presence there
    /// (its sessions' own offline facts came before; this removes what a lost one left).
    pub fn departed(&mut self, node: NodeId) -> Vec<Change> {
        if node == self.me || self.nodes.remove(&node).is_none() {
            return Vec::new();
        }
        self.drop_node(node)
    }

    /// Removes the nodes not heard for `NODE_EXPIRY`, and their users' presence there
    /// (stored by every node: the node that held them cannot). Returns the nodes expired
    /// and the changes.
    pub fn expire(&mut self, now: Instant) -> (Vec<NodeId>, Vec<Change>) {
        let dead: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(_, s)| now.duration_since(s.heard) >= NODE_EXPIRY)
            .map(|(n, _)| *n)
            .collect();
        let mut changes = Vec::new();
        for node in &dead {
            changes.extend(self.drop_node(*node));
            self.nodes.remove(node);
        }
        (dead, changes)
    }

    /// Removes every user's presence on `node` (dead or restarted): the offline changes,
    /// stored by this node.
    fn drop_node(&mut self, node: NodeId) -> Vec<Change> {
        let held: Vec<UserId> = self
            .users
            .iter()
            .filter(|(_, u)| u.nodes.contains(&node))
            .map(|(id, _)| *id)
            .collect();
        held.into_iter()
            .filter_map(|user| self.remove(node, user, true))
            .collect()
    }
}

impl NodeState {
    fn waiting(boot: u64, now: Instant) -> NodeState {
        NodeState {
            boot,
            facts: None,
            buffer: Vec::new(),
            overflowed: false,
            asked: None,
            heard: now,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(user: UserId, status: Status, stamp: Stamp) -> Present {
        Present {
            user,
            username: format!("u{user}"),
            alias: format!("U{user}"),
            status,
            stamp,
        }
    }

    fn at(seq: u64, node: NodeId) -> Stamp {
        Stamp { seq, node }
    }

    fn statuses(changes: &[Change]) -> Vec<(UserId, Status)> {
        let mut list: Vec<_> = changes
            .iter()
            .map(|c| (c.user, c.presence.status))
            .collect();
        list.sort_by_key(|(user, _)| *user);
        list
    }

    #[test]
    fn a_user_is_online_while_any_node_holds_them() {
        let mut view = View::new(3);
        let first = view.apply_fact(1, true, who(7, Status::Online, at(0, 1)));
        assert_eq!(
            first.map(|c| (c.presence.status, c.store)),
            Some((Status::Online, false))
        );
        assert!(view
            .apply_fact(2, true, who(7, Status::Online, at(0, 2)))
            .is_none());
        assert!(view
            .apply_fact(1, false, who(7, Status::Online, at(0, 1)))
            .is_none());
        assert_eq!(view.statuses().get(&7), Some(&Status::Online));
        let last = view.apply_fact(2, false, who(7, Status::Online, at(0, 2)));
        assert_eq!(last.map(|c| c.presence.status), Some(Status::Offline));
        assert!(view.statuses().is_empty());
        // A second "absent" from a node that held nothing changes nothing.
        assert!(view
            .apply_fact(2, false, who(7, Status::Online, at(0, 2)))
            .is_none());
    }

    #[test]
    fn this_nodes_own_changes_are_the_ones_it_stores() {
        let mut view = View::new(1);
        let c = view
            .apply_fact(1, true, who(7, Status::Online, at(0, 1)))
            .unwrap();
        assert!(c.store);
        let stamp = view.next_stamp(7);
        assert_eq!(stamp, at(1, 1));
        assert!(view.apply_status(7, Status::Busy, stamp).unwrap().store);
        assert!(!view.apply_status(7, Status::Away, at(2, 2)).unwrap().store);
    }

    #[test]
    fn concurrent_statuses_settle_the_same_on_every_node() {
        // Node 1 and node 2 both change user 7's status after seeing seq 0.
        let busy = (Status::Busy, at(1, 1));
        let away = (Status::Away, at(1, 2));
        let mut a = View::new(1);
        let mut b = View::new(2);
        for v in [&mut a, &mut b] {
            v.apply_fact(1, true, who(7, Status::Online, at(0, 1)));
        }
        a.apply_status(7, busy.0, busy.1);
        a.apply_status(7, away.0, away.1);
        b.apply_status(7, away.0, away.1);
        b.apply_status(7, busy.0, busy.1);
        assert_eq!(a.status(7), b.status(7));
        assert_eq!(a.status(7), Some(away));
        // A change made after both were seen wins everywhere.
        let later = a.next_stamp(7);
        assert_eq!(later, at(2, 1));
        b.apply_status(7, Status::Online, later);
        assert_eq!(b.status(7), Some((Status::Online, later)));
    }

    #[test]
    fn a_new_device_keeps_the_status_chosen_elsewhere() {
        let mut view = View::new(2);
        view.apply_fact(1, true, who(7, Status::Online, at(0, 1)));
        view.apply_status(7, Status::Away, at(1, 1));
        assert_eq!(view.arriving(7, Status::Online), (Status::Away, at(1, 1)));
        assert_eq!(view.arriving(8, Status::Online), (Status::Online, at(0, 2)));
        // A fact carrying an older status does not undo the newer one.
        assert!(view
            .apply_fact(2, true, who(7, Status::Online, at(0, 2)))
            .is_none());
        assert_eq!(view.status(7), Some((Status::Away, at(1, 1))));
    }

    #[test]
    fn facts_apply_in_order_and_a_gap_asks_for_a_snapshot() {
        let t = Instant::now();
        let mut view = View::new(3);
        assert_eq!(view.heard(1, 42, t), (true, Vec::new()), "unknown: ask");
        assert!(!view.heard(1, 42, t).0, "asked already");
        // Facts while the snapshot is awaited are kept, not applied.
        let (c, ask) = view.fact(1, 5, true, who(8, Status::Online, at(0, 1)), t);
        assert!(c.is_none() && !ask);
        // The snapshot at count 4 lists user 7; fact 5 (user 8) is replayed after it.
        let (again, changes) = view.snapshot(1, 42, 4, vec![who(7, Status::Busy, at(3, 1))], t);
        assert!(!again);
        assert_eq!(statuses(&changes), [(7, Status::Busy), (8, Status::Online)]);
        assert!(changes.iter().all(|c| !c.store), "node 1 stored them");
        // In step: fact 6 applies; 6 again is ignored; 8 is a gap.
        let (c, ask) = view.fact(1, 6, false, who(8, Status::Online, at(0, 1)), t);
        assert_eq!(c.map(|c| c.presence.status), Some(Status::Offline));
        assert!(!ask);
        assert_eq!(
            view.fact(1, 6, true, who(8, Status::Online, at(0, 1)), t),
            (None, false)
        );
        let (c, ask) = view.fact(1, 8, true, who(9, Status::Online, at(0, 1)), t);
        assert!(c.is_none() && ask, "fact 7 was missed");
        // Its snapshot at 7 says user 7 left and user 10 came; fact 8 follows it.
        let (again, changes) = view.snapshot(1, 42, 7, vec![who(10, Status::Online, at(0, 1))], t);
        assert!(!again);
        assert_eq!(
            statuses(&changes),
            [
                (7, Status::Offline),
                (9, Status::Online),
                (10, Status::Online)
            ]
        );
        let mut online: Vec<_> = view.statuses().into_keys().collect();
        online.sort();
        assert_eq!(online, [9, 10]);
    }

    #[test]
    fn a_status_that_overtakes_the_snapshot_bringing_its_user_is_kept() {
        let t = Instant::now();
        let mut view = View::new(3);
        view.heard(1, 42, t);
        // Node 1's user 7 chose busy after node 1 took its snapshot, which says online.
        assert!(view.apply_status(7, Status::Busy, at(1, 1)).is_none());
        let (_, changes) = view.snapshot(1, 42, 1, vec![who(7, Status::Online, at(0, 1))], t);
        assert_eq!(statuses(&changes), [(7, Status::Busy)]);
        // Nothing awaited any more: nothing is kept.
        assert!(view.apply_status(8, Status::Busy, at(1, 1)).is_none());
        view.apply_fact(1, true, who(8, Status::Online, at(0, 1)));
        assert_eq!(view.status(8), Some((Status::Online, at(0, 1))));
    }

    #[test]
    fn a_heartbeat_with_another_count_asks_for_a_snapshot() {
        let t = Instant::now();
        let mut view = View::new(3);
        view.heard(1, 42, t);
        view.snapshot(1, 42, 2, Vec::new(), t);
        assert!(!view.heartbeat(1, 2, t), "in step");
        assert!(view.heartbeat(1, 3, t), "fact 3 never came");
        assert!(!view.heartbeat(1, 3, t), "asked already");
        // Asked again if the answer does not come.
        assert!(!view.heard(1, 42, t + Duration::from_millis(500)).0);
        assert!(view.heard(1, 42, t + SNAPSHOT_RETRY).0);
    }

    /// Node 3's view of nodes 1 (boot 42: users 7 and 8) and 2 (boot 50: user 8), both
    /// heard at `t`; user 8 has `status8`.
    fn two_nodes_sharing_user_8(t: Instant, status8: Status) -> View {
        let mut view = View::new(3);
        view.heard(1, 42, t);
        view.heard(2, 50, t);
        view.snapshot(
            1,
            42,
            0,
            vec![who(7, Status::Online, at(0, 1)), who(8, status8, at(1, 1))],
            t,
        );
        view.snapshot(2, 50, 0, vec![who(8, status8, at(1, 1))], t);
        view
    }

    #[test]
    fn a_restarted_node_loses_what_it_held_and_others_keep_theirs() {
        let t = Instant::now();
        let mut view = two_nodes_sharing_user_8(t, Status::Away);
        let (ask, changes) = view.heard(1, 43, t);
        assert!(ask);
        // 7 was only on node 1: offline, stored here; 8 is still on node 2.
        assert_eq!(statuses(&changes), [(7, Status::Offline)]);
        assert!(changes[0].store);
        assert_eq!(view.statuses().get(&8), Some(&Status::Away));
        // An answer from the old boot is ignored.
        let (_, changes) = view.snapshot(1, 42, 9, vec![who(7, Status::Online, at(0, 1))], t);
        assert!(changes.is_empty());
    }

    #[test]
    fn a_node_that_says_goodbye_is_forgotten_at_once_with_its_users() {
        let t = Instant::now();
        let mut view = two_nodes_sharing_user_8(t, Status::Online);
        let changes = view.departed(1);
        assert_eq!(statuses(&changes), [(7, Status::Offline)]);
        assert_eq!(view.statuses().get(&8), Some(&Status::Online));
        assert_eq!(view.live_nodes(), [2]);
        // Never expired later (node 2, still heard, neither); its next boot is heard as
        // a new node (its snapshot asked).
        view.heard(2, 50, t + Duration::from_secs(4));
        assert_eq!(view.expire(t + NODE_EXPIRY), (Vec::new(), Vec::new()));
        let (ask, changes) = view.heard(1, 43, t + NODE_EXPIRY);
        assert!(ask && changes.is_empty());
        // Saying goodbye twice, or for this node itself, changes nothing.
        assert!(view.departed(5).is_empty() && view.departed(3).is_empty());
    }

    #[test]
    fn a_node_not_heard_for_the_bound_is_expired_with_its_users() {
        let t = Instant::now();
        let mut view = two_nodes_sharing_user_8(t, Status::Online);
        view.apply_fact(3, true, who(6, Status::Online, at(0, 3)));
        view.heard(2, 50, t + Duration::from_secs(3));
        assert_eq!(
            view.expire(t + Duration::from_secs(4)),
            (Vec::new(), Vec::new())
        );
        let (dead, changes) = view.expire(t + NODE_EXPIRY);
        assert_eq!(dead, [1]);
        assert_eq!(statuses(&changes), [(7, Status::Offline)]);
        let mut online: Vec<_> = view.statuses().into_keys().collect();
        online.sort();
        assert_eq!(online, [6, 8], "this node's own users never expire");
        assert_eq!(view.live_nodes(), [2]);
    }

    #[test]
    fn too_many_facts_while_waiting_ask_for_the_snapshot_again() {
        let t = Instant::now();
        let mut view = View::new(3);
        view.heard(1, 42, t);
        for count in 1..=(SYNC_BUFFER_MAX as u64 + 1) {
            view.fact(
                1,
                count,
                true,
                who(count as i64, Status::Online, at(0, 1)),
                t,
            );
        }
        let (again, changes) = view.snapshot(1, 42, 0, Vec::new(), t);
        assert!(changes.is_empty());
        assert!(again);
    }
}
