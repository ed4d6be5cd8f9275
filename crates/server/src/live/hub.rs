//! The session registry of this node: who is connected, with which sessions, in which
//! rooms (statuses are in the cluster-wide presence view, `view.rs`); and the fan-out of encoded frames to their outbound queues.
//! Read by anyone (`pub`); changed only by the bus handler ([`super::Live`]): its
//! mutators are `pub(super)`.
//!
//! Locking: one `std::sync::Mutex` over [`HubState`], held only for short synchronous
//! sections (lookups and non-blocking pushes), never across `.await`.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use crate::ids::Watermark;
use crate::lock;

use salon_proto::{SessionInfo, Status};

use super::outbound::{CloseReason, Outbound};
use crate::protocol::SharedEvent;

pub type SessionId = u64;
pub type UserId = i64;
pub type RoomId = i64;

/// An authenticated user with at least one session.
#[derive(Debug)]
struct OnlineUser {
    username: String,
    alias: String,
    is_admin: bool,
    /// How many of `sessions` count for presence (not logged in with `presence: false`).
    present: usize,
    sessions: HashMap<SessionId, Outbound>,
    rooms: HashSet<RoomId>,
    pending: HashSet<RoomId>,
    /// Bumped by every change of `rooms` or `pending` (see [`Hub::reconcile`]).
    changes: u64,
}

/// Where and since when a session is connected (for administrators).
#[derive(Debug, Clone)]
pub struct SessionMeta {
    pub address: String,
    pub transport: salon_proto::Transport,
    pub since: i64,
    /// Whether the session counts for its user's presence (false for tools and bots).
    pub presence: bool,
    /// The hash of the session's token and when it expires: a token deleted before it
    /// expires was revoked (`live::catchup` closes its session when this node missed
    /// the revocation).
    pub token: Option<(String, i64)>,
}

#[derive(Debug, Default)]
struct HubState {
    users: HashMap<UserId, OnlineUser>,
    /// Connected sessions of each room's members: the fan-out list.
    room_sessions: HashMap<RoomId, HashMap<SessionId, Outbound>>,
    /// Every authenticated session, for presence and notices.
    sessions: HashMap<SessionId, (UserId, Outbound)>,
    meta: HashMap<SessionId, SessionMeta>,
    /// Per node, the id of the last private message handed to its recipient's sessions
    /// (or found none to hand it to). A session attached when it was `w` receives every
    /// private message `w` does not cover live, and those it covers from its backlog:
    /// exactly once, whichever node made the message (see [`Watermark`]).
    direct_watermark: Watermark,
    /// In a cluster, each session's copy of `direct_watermark` when it attached: a
    /// private message the catch-up delivers late (older than messages from its node
    /// already delivered) is covered by the marks of the sessions attached since, which
    /// have it in their backlog, and is not pushed to them live a second time. `None` on
    /// a single node, where ids from one node always come in order.
    attach_marks: Option<HashMap<SessionId, Watermark>>,
    /// Revocation counters (see [`Revocations`]).
    revoked: Revocations,
}

/// Stripes of the revocation counters: a user's is `id mod REVOCATION_STRIPES`.
const REVOCATION_STRIPES: usize = 32;

/// Counters bumped when a user's sessions are revoked (ban, kick, password change or
/// reset), one per stripe of users. A login takes a copy before checking the user's
/// credentials and sanctions; [`Hub::attach`] refuses it if the user's counter moved
/// meanwhile. A revocation after the attach closes the session itself. So no login
/// racing a revocation survives it (another user of the same stripe only costs a
/// recheck).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Revocations([u64; REVOCATION_STRIPES]);

impl Revocations {
    fn stripe(user: UserId) -> usize {
        user.rem_euclid(REVOCATION_STRIPES as i64) as usize
    }
}

/// Why [`Hub::attach`] refused a session.
#[derive(Debug, PartialEq, Eq)]
pub enum AttachRefused {
    /// The user already has as many sessions as `max_sessions_per_user` allows.
    TooManySessions,
    /// The user's sessions were revoked since the login checked its credentials: check
    /// again.
    Revoked,
}

/// What [`Hub::attach`] tells the new session.
#[derive(Debug)]
pub struct Attached {
    /// Whether this is the user's first session on this node that counts for presence
    /// (so the user is now present on this node).
    pub first: bool,
    /// Private messages this covers were handed out before this session existed: the
    /// ones not yet acknowledged are its backlog.
    pub direct_watermark: Watermark,
}

/// Who a user is, as the hub needs to know.
#[derive(Debug, Clone)]
pub struct Identity {
    pub id: UserId,
    pub username: String,
    pub alias: String,
    pub is_admin: bool,
}

#[derive(Debug, Default)]
pub struct Hub {
    state: Mutex<HubState>,
}

impl Hub {
    /// Registers a logged-in session, unless the user already has `max_sessions` on this
    /// node (all sessions count, with presence or not). `first` in the result tells
    /// whether it is the user's first session here that counts for presence
    /// (`meta.presence`).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn attach(
        &self,
        who: &Identity,
        rooms: HashSet<RoomId>,
        pending: HashSet<RoomId>,
        outbound: &Outbound,
        meta: SessionMeta,
        max_sessions: usize,
        seen: &Revocations,
    ) -> Result<Attached, AttachRefused> {
        let mut guard = lock(&self.state);
        let state = &mut *guard;
        let stripe = Revocations::stripe(who.id);
        if state.revoked.0[stripe] != seen.0[stripe] {
            return Err(AttachRefused::Revoked);
        }
        let existing = state.users.get(&who.id).map_or(0, |u| u.sessions.len());
        if existing >= max_sessions {
            return Err(AttachRefused::TooManySessions);
        }
        let user = state.users.entry(who.id).or_insert_with(|| OnlineUser {
            username: who.username.clone(),
            alias: who.alias.clone(),
            is_admin: who.is_admin,
            present: 0,
            sessions: HashMap::new(),
            rooms,
            pending,
            changes: 0,
        });
        let first = meta.presence && user.present == 0;
        if meta.presence {
            user.present += 1;
        }
        user.sessions.insert(outbound.id, outbound.clone());
        for room in &user.rooms {
            state
                .room_sessions
                .entry(*room)
                .or_default()
                .insert(outbound.id, outbound.clone());
        }
        state
            .sessions
            .insert(outbound.id, (who.id, outbound.clone()));
        state.meta.insert(outbound.id, meta);
        if let Some(marks) = state.attach_marks.as_mut() {
            marks.insert(outbound.id, state.direct_watermark);
        }
        Ok(Attached {
            first,
            direct_watermark: state.direct_watermark,
        })
    }

    /// Unregisters a session. Returns whether it was the user's last one on this node
    /// that counts for presence.
    pub(super) fn detach(&self, session: SessionId) -> bool {
        let mut guard = lock(&self.state);
        let state = &mut *guard;
        let Some((user_id, _)) = state.sessions.remove(&session) else {
            return false;
        };
        let counted = state.meta.remove(&session).is_none_or(|m| m.presence);
        if let Some(marks) = state.attach_marks.as_mut() {
            marks.remove(&session);
        }
        let Some(user) = state.users.get_mut(&user_id) else {
            return false;
        };
        user.sessions.remove(&session);
        for room in &user.rooms {
            if let Some(list) = state.room_sessions.get_mut(room) {
                list.remove(&session);
                if list.is_empty() {
                    state.room_sessions.remove(room);
                }
            }
        }
        let went_offline = counted && user.present > 0 && {
            user.present -= 1;
            user.present == 0
        };
        if user.sessions.is_empty() {
            state.users.remove(&user_id);
        }
        went_offline
    }

    /// Whether the user has a session here that counts for presence.
    pub fn is_present(&self, user: UserId) -> bool {
        lock(&self.state)
            .users
            .get(&user)
            .is_some_and(|u| u.present > 0)
    }

    pub fn is_member(&self, user: UserId, room: RoomId) -> bool {
        lock(&self.state)
            .users
            .get(&user)
            .is_some_and(|u| u.rooms.contains(&room))
    }

    pub fn is_pending(&self, user: UserId, room: RoomId) -> bool {
        lock(&self.state)
            .users
            .get(&user)
            .is_some_and(|u| u.pending.contains(&room))
    }

    /// The rooms and pending requests of an online user.
    pub fn room_states(&self, user: UserId) -> Option<(HashSet<RoomId>, HashSet<RoomId>)> {
        lock(&self.state)
            .users
            .get(&user)
            .map(|u| (u.rooms.clone(), u.pending.clone()))
    }

    /// Makes an (online) user a member: all their sessions start receiving the room.
    pub(super) fn add_membership(&self, user: UserId, room: RoomId) {
        let mut guard = lock(&self.state);
        let state = &mut *guard;
        if let Some(u) = state.users.get_mut(&user) {
            u.changes += 1;
            u.pending.remove(&room);
            if u.rooms.insert(room) {
                let list = state.room_sessions.entry(room).or_default();
                for (id, out) in &u.sessions {
                    list.insert(*id, out.clone());
                }
            }
        }
    }

    pub(super) fn remove_membership(&self, user: UserId, room: RoomId) {
        let mut guard = lock(&self.state);
        let state = &mut *guard;
        if let Some(u) = state.users.get_mut(&user) {
            u.changes += 1;
            if u.rooms.remove(&room) {
                if let Some(list) = state.room_sessions.get_mut(&room) {
                    for id in u.sessions.keys() {
                        list.remove(id);
                    }
                    if list.is_empty() {
                        state.room_sessions.remove(&room);
                    }
                }
            }
        }
    }

    pub(super) fn set_pending(&self, user: UserId, room: RoomId, pending: bool) {
        if let Some(u) = lock(&self.state).users.get_mut(&user) {
            u.changes += 1;
            if pending {
                u.pending.insert(room);
            } else {
                u.pending.remove(&room);
            }
        }
    }

    /// The users with a session on this node.
    pub(super) fn online_users(&self) -> Vec<UserId> {
        lock(&self.state).users.keys().copied().collect()
    }

    /// How many times an online user's rooms and pending requests changed here: taken
    /// before reading them from the database, for [`Hub::reconcile`].
    pub(super) fn membership_changes(&self, user: UserId) -> Option<u64> {
        lock(&self.state).users.get(&user).map(|u| u.changes)
    }

    /// Makes an online user's rooms and pending requests what the database says (read
    /// after `changes` was taken), unless a bus message changed them meanwhile: then
    /// `None`, and the caller reads again. Otherwise the rooms whose relation to the user
    /// changed (none for a user gone offline). Their sessions join or leave the rooms'
    /// fan-out lists accordingly.
    pub(super) fn reconcile(
        &self,
        user: UserId,
        changes: u64,
        rooms: HashSet<RoomId>,
        pending: HashSet<RoomId>,
    ) -> Option<Vec<RoomId>> {
        let mut guard = lock(&self.state);
        let state = &mut *guard;
        let Some(u) = state.users.get_mut(&user) else {
            return Some(Vec::new());
        };
        if u.changes != changes {
            return None;
        }
        // The rooms whose relation to the user changed: member or not, waiting or not.
        let mut changed: Vec<RoomId> = u
            .rooms
            .symmetric_difference(&rooms)
            .chain(u.pending.symmetric_difference(&pending))
            .copied()
            .collect();
        changed.sort_unstable();
        changed.dedup();
        for room in u.rooms.difference(&rooms) {
            if let Some(list) = state.room_sessions.get_mut(room) {
                for id in u.sessions.keys() {
                    list.remove(id);
                }
                if list.is_empty() {
                    state.room_sessions.remove(room);
                }
            }
        }
        for room in rooms.difference(&u.rooms) {
            let list = state.room_sessions.entry(*room).or_default();
            for (id, out) in &u.sessions {
                list.insert(*id, out.clone());
            }
        }
        u.rooms = rooms;
        u.pending = pending;
        Some(changed)
    }

    /// Whether the user has a session at all, counting for presence or not: what is sent
    /// to them now is received now (private messages, join decisions).
    pub fn is_online(&self, user: UserId) -> bool {
        lock(&self.state).users.contains_key(&user)
    }

    /// Queues `frame` to every connected member of `room`.
    pub(super) fn to_room(&self, room: RoomId, event: &SharedEvent) {
        let state = lock(&self.state);
        if let Some(list) = state.room_sessions.get(&room) {
            for out in list.values() {
                out.push_event(event);
            }
        }
    }

    /// Queues `frame` to every session of `user`.
    pub(super) fn to_user(&self, user: UserId, event: &SharedEvent) {
        let state = lock(&self.state);
        if let Some(u) = state.users.get(&user) {
            for out in u.sessions.values() {
                out.push_event(event);
            }
        }
    }

    /// Hands private message `id` to every session of its recipient and of its sender,
    /// and moves the watermark past it, in one section: a session attaching at the same
    /// time either is served here or finds the message in its backlog, never both.
    pub(super) fn deliver_direct(&self, id: i64, from: UserId, to: UserId, event: &SharedEvent) {
        let mut state = lock(&self.state);
        let marks = state.attach_marks.as_ref();
        for user in [Some(to), (from != to).then_some(from)]
            .into_iter()
            .flatten()
        {
            if let Some(u) = state.users.get(&user) {
                for out in u.sessions.values() {
                    // In its backlog (or delivered before it attached): not again.
                    if marks
                        .and_then(|m| m.get(&out.id))
                        .is_some_and(|mark| mark.covers(id))
                    {
                        continue;
                    }
                    out.push_event(event);
                }
            }
        }
        state.direct_watermark.advance(id);
    }

    /// Keeps each session's watermark when it attached (a cluster node: its catch-up
    /// delivers private messages out of id order; see `HubState::attach_marks`).
    pub(super) fn remember_attach_marks(&self) {
        lock(&self.state)
            .attach_marks
            .get_or_insert_with(HashMap::new);
    }

    /// Queues `frame` to every session of every administrator.
    pub(super) fn to_admins(&self, event: &SharedEvent) {
        let state = lock(&self.state);
        for u in state.users.values().filter(|u| u.is_admin) {
            for out in u.sessions.values() {
                out.push_event(event);
            }
        }
    }

    /// Queues `frame` to every authenticated session.
    pub(super) fn to_all(&self, event: &SharedEvent) {
        let state = lock(&self.state);
        for (_, out) in state.sessions.values() {
            out.push_event(event);
        }
    }

    /// Starts the private-message watermark (see [`Attached::direct_watermark`]) at the
    /// largest stored id of each node, before anyone attaches: everything stored before
    /// this start is backlog.
    pub(super) fn start_direct_watermark(&self, largest: &[i64]) {
        let mut state = lock(&self.state);
        for id in largest {
            state.direct_watermark.advance(*id);
        }
    }

    /// The revocation counters now: taken by a login before it checks anything.
    pub fn revocations(&self) -> Revocations {
        lock(&self.state).revoked
    }

    /// Revokes a user's sessions: every one but `keep` is closed with `reason`, and
    /// logins in progress are refused at attach (see [`Revocations`]). One locked
    /// section, so a session is either closed here or refused at attach.
    pub(super) fn revoke(&self, user: UserId, keep: Option<SessionId>, reason: &CloseReason) {
        let mut state = lock(&self.state);
        let stripe = Revocations::stripe(user);
        state.revoked.0[stripe] = state.revoked.0[stripe].wrapping_add(1);
        if let Some(u) = state.users.get(&user) {
            for (id, session) in &u.sessions {
                if Some(*id) != keep {
                    session.control.close(reason.clone());
                }
            }
        }
    }

    /// Closes these sessions of `user` with `reason`, and refuses the user's logins in
    /// progress as [`Hub::revoke`] does (a revocation this node missed: `live::catchup`).
    pub(super) fn close_sessions(&self, user: UserId, ids: &[SessionId], reason: &CloseReason) {
        let mut state = lock(&self.state);
        let stripe = Revocations::stripe(user);
        state.revoked.0[stripe] = state.revoked.0[stripe].wrapping_add(1);
        if let Some(u) = state.users.get(&user) {
            for id in ids {
                if let Some(session) = u.sessions.get(id) {
                    session.control.close(reason.clone());
                }
            }
        }
    }

    /// Every logged-in session of this node with a token: its id, user, token hash and
    /// when the token expires.
    pub(super) fn session_tokens(&self) -> Vec<(SessionId, UserId, String, i64)> {
        let state = lock(&self.state);
        state
            .meta
            .iter()
            .filter_map(|(id, m)| {
                let (user, _) = state.sessions.get(id)?;
                let (hash, expires) = m.token.clone()?;
                Some((*id, *user, hash, expires))
            })
            .collect()
    }

    /// Closes every logged-in session of this node with `reason` (a node that cannot
    /// tell what its sessions missed: `live::catchup`).
    pub(super) fn close_all(&self, reason: &CloseReason) -> usize {
        let state = lock(&self.state);
        for (_, session) in state.sessions.values() {
            session.control.close(reason.clone());
        }
        state.sessions.len()
    }

    /// Every logged-in session of this node, by username then login time, with the
    /// statuses of the presence view (offline for a user none of whose sessions counts).
    pub fn connected(&self, statuses: &HashMap<UserId, Status>) -> Vec<SessionInfo> {
        let state = lock(&self.state);
        let mut list: Vec<SessionInfo> = state
            .sessions
            .iter()
            .filter_map(|(id, (user, _))| {
                let u = state.users.get(user)?;
                let m = state.meta.get(id)?;
                Some(SessionInfo {
                    username: u.username.clone(),
                    alias: u.alias.clone(),
                    status: match statuses.get(user) {
                        Some(status) if u.present > 0 => *status,
                        _ => Status::Offline,
                    },
                    address: m.address.clone(),
                    transport: m.transport,
                    since: m.since,
                    presence: m.presence,
                    node: None,
                })
            })
            .collect();
        list.sort_by(|a, b| (&a.username, a.since).cmp(&(&b.username, b.since)));
        list
    }
}

#[cfg(test)]
mod tests {
    use super::super::presence::PRESENCE_LIST_MAX;
    use super::super::Live;
    use super::*;
    use crate::protocol::native::NATIVE;
    use bytes::Bytes;
    use salon_proto::{CloseCode, Event, ServerFrame, UserPresence};

    fn meta() -> SessionMeta {
        SessionMeta {
            address: "127.0.0.1:1".into(),
            transport: salon_proto::Transport::Tcp,
            since: 0,
            presence: true,
            token: None,
        }
    }

    fn who(id: UserId) -> Identity {
        Identity {
            id,
            username: format!("u{id}"),
            alias: format!("U{id}"),
            is_admin: false,
        }
    }

    #[tokio::test]
    async fn a_full_queue_disconnects_only_that_session_as_slow_consumer() {
        let hub = Hub::default();
        let slow = Outbound::new(1, 2, 1 << 20, &NATIVE);
        let fast = Outbound::new(2, 16, 1 << 20, &NATIVE);
        let rooms: HashSet<_> = [10].into();
        hub.attach(
            &who(1),
            rooms.clone(),
            HashSet::new(),
            &slow,
            meta(),
            16,
            &Revocations::default(),
        )
        .unwrap();
        hub.attach(
            &who(2),
            rooms,
            HashSet::new(),
            &fast,
            meta(),
            16,
            &Revocations::default(),
        )
        .unwrap();
        for i in 0..3 {
            hub.to_room(
                10,
                &SharedEvent::new(Event::Notice {
                    from: "a".into(),
                    from_alias: "A".into(),
                    text: format!("m{i}"),
                    ts: 0,
                    id: None,
                }),
            );
        }
        assert!(slow.control.is_closed());
        assert_eq!(
            slow.control.reason().unwrap().code,
            Some(CloseCode::SlowConsumer)
        );
        assert!(!fast.control.is_closed());
        let mut got = Vec::new();
        fast.control.take(&mut got, 10).await;
        let texts: Vec<String> = got
            .iter()
            .map(|frame| match serde_json::from_slice(frame).unwrap() {
                ServerFrame::Event(Event::Notice { text, .. }) => text,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(texts, ["m0", "m1", "m2"]);
    }

    #[tokio::test]
    async fn a_late_private_message_is_not_pushed_to_a_session_whose_backlog_has_it() {
        let hub = Hub::default();
        hub.remember_attach_marks();
        let direct = |id: i64| {
            SharedEvent::new(Event::Notice {
                from: "a".into(),
                from_alias: "A".into(),
                text: format!("d{id}"),
                ts: 0,
                id: Some(id),
            })
        };
        let attach = |out: &Outbound| {
            hub.attach(
                &who(2),
                HashSet::new(),
                HashSet::new(),
                out,
                meta(),
                16,
                &Revocations::default(),
            )
            .unwrap()
        };
        // Ids 5 and 9 of one node: 9 is delivered live first, then bob's second session
        // attaches (its backlog covers up to 9), then 5 arrives late (a catch-up).
        let (first, second) = (
            Outbound::new(1, 16, 1 << 20, &NATIVE),
            Outbound::new(2, 16, 1 << 20, &NATIVE),
        );
        attach(&first);
        hub.deliver_direct(9, 1, 2, &direct(9));
        let attached = attach(&second);
        assert!(attached.direct_watermark.covers(5));
        hub.deliver_direct(5, 1, 2, &direct(5));
        // A newer one reaches both.
        hub.deliver_direct(12, 1, 2, &direct(12));
        let texts = |out: &Outbound| {
            let (out, mut got) = (out.clone(), Vec::new());
            async move {
                out.control.take(&mut got, 10).await;
                got.iter()
                    .map(|frame| match serde_json::from_slice(frame).unwrap() {
                        ServerFrame::Event(Event::Notice { text, .. }) => text,
                        other => panic!("{other:?}"),
                    })
                    .collect::<Vec<String>>()
            }
        };
        assert_eq!(texts(&first).await, ["d9", "d5", "d12"]);
        assert_eq!(texts(&second).await, ["d12"]);
    }

    #[tokio::test]
    async fn the_queue_is_bounded_in_bytes_until_they_are_written() {
        let out = Outbound::new(1, 1024, 100, &NATIVE);
        assert!(out.push(Bytes::from(vec![b'a'; 60])));
        // Taken by the writer but not yet written: still counted.
        let mut taken = Vec::new();
        out.control.take_now(&mut taken, 10);
        assert_eq!(out.control.pending_bytes(), 60);
        // A reply waits for room instead of exceeding the budget...
        let reply = out.reply(Bytes::from(vec![b'b'; 60]));
        tokio::pin!(reply);
        assert!(futures_util::poll!(reply.as_mut()).is_pending());
        out.control.written(60);
        reply.await;
        assert_eq!(out.control.pending_bytes(), 60);
        // ...while a pushed event over the budget cuts the session as a slow consumer.
        assert!(!out.push(Bytes::from(vec![b'c'; 41])));
        assert_eq!(
            out.control.reason().unwrap().code,
            Some(CloseCode::SlowConsumer)
        );
        // One frame larger than the whole budget passes when nothing else is pending.
        let big = Outbound::new(2, 1024, 100, &NATIVE);
        assert!(big.push(Bytes::from(vec![b'd'; 1000])));
    }

    #[tokio::test]
    async fn presence_changes_are_sent_gathered_once_per_tick_latest_per_user() {
        let hub = Live::default();
        let watcher = Outbound::new(9, 16, 1 << 20, &NATIVE);
        hub.attach(
            &who(9),
            HashSet::new(),
            HashSet::new(),
            &watcher,
            meta(),
            16,
            &Revocations::default(),
        )
        .unwrap();
        let p = |name: &str, status| UserPresence {
            username: name.into(),
            alias: name.into(),
            status,
        };
        let arrive = |id: UserId, name: &str| {
            let identity = Identity {
                id,
                username: name.into(),
                alias: name.into(),
                is_admin: false,
            };
            hub.apply(hub.presence_fact(&identity, Status::Online, true));
        };
        arrive(1, "u1");
        arrive(2, "u2");
        hub.apply(hub.status_change(1, Status::Away));
        assert_eq!(hub.flush_presence().len(), 2);
        assert!(hub.flush_presence().is_empty(), "nothing new: nothing sent");
        let mut frames = Vec::new();
        watcher.control.take_now(&mut frames, 10);
        assert_eq!(frames.len(), 1);
        let frame: ServerFrame = serde_json::from_slice(&frames[0]).unwrap();
        assert_eq!(
            frame,
            ServerFrame::Event(Event::Presence {
                users: vec![p("u1", Status::Away), p("u2", Status::Online)],
                refresh: false,
            })
        );

        // A wave: more changes than one event lists → a refresh hint instead.
        for i in 0..(PRESENCE_LIST_MAX as i64 + 1) {
            arrive(100 + i, &format!("w{i}"));
        }
        hub.flush_presence();
        let mut frames = Vec::new();
        watcher.control.take_now(&mut frames, 10);
        assert_eq!(
            std::str::from_utf8(&frames[0]).unwrap(),
            "{\"type\":\"event\",\"event\":\"presence\",\"users\":[],\"refresh\":true}\n"
        );
    }

    #[test]
    fn a_login_and_a_logout_racing_leave_the_view_as_the_registry_is() {
        use super::super::LocalBus;
        let live = std::sync::Arc::new(Live::default());
        let bus = LocalBus::new(live.clone());
        let attach = |out: &Outbound| {
            live.attach(
                &who(7),
                HashSet::new(),
                HashSet::new(),
                out,
                meta(),
                16,
                &Revocations::default(),
            )
            .unwrap()
            .first
        };
        // Session 1 logs out while session 2 logs in: the registry sees 1 leave (last)
        // then 2 come (first), but 2's publication runs before 1's.
        let one = Outbound::new(1, 4, 1 << 20, &NATIVE);
        let two = Outbound::new(2, 4, 1 << 20, &NATIVE);
        assert!(attach(&one));
        live.sync_presence(&who(7), &bus);
        assert!(live.detach(1), "the last one");
        assert!(attach(&two), "the first one again");
        live.sync_presence(&who(7), &bus); // 2's
        live.sync_presence(&who(7), &bus); // 1's, late
        assert_eq!(
            live.status_of(7),
            Some(Status::Online),
            "present: 2 is here"
        );
        assert!(live.detach(2));
        live.sync_presence(&who(7), &bus);
        assert_eq!(live.status_of(7), None);
    }

    #[test]
    fn reconciling_memberships_moves_the_sessions_unless_a_change_came_first() {
        let hub = Hub::default();
        let out = Outbound::new(1, 16, 1 << 20, &NATIVE);
        hub.attach(
            &who(5),
            [1, 2].into(),
            HashSet::new(),
            &out,
            meta(),
            16,
            &Revocations::default(),
        )
        .unwrap();
        let notice = || {
            SharedEvent::new(Event::Notice {
                from: "a".into(),
                from_alias: "A".into(),
                text: "n".into(),
                ts: 0,
                id: None,
            })
        };
        let changes = hub.membership_changes(5).unwrap();
        // A join arrives on the bus after the database was read: that read is stale.
        hub.add_membership(5, 9);
        assert_eq!(hub.reconcile(5, changes, [2, 3].into(), [4].into()), None);
        assert!(hub.is_member(5, 1) && hub.is_member(5, 9));
        // Read again: left 1 and 9, joined 3 elsewhere, a request for 4 pending.
        let changes = hub.membership_changes(5).unwrap();
        assert_eq!(
            hub.reconcile(5, changes, [2, 3].into(), [4].into()),
            Some(vec![1, 3, 4, 9]),
            "each room whose relation changed, once"
        );
        assert!(!hub.is_member(5, 1) && !hub.is_member(5, 9));
        assert!(hub.is_member(5, 2) && hub.is_member(5, 3) && hub.is_pending(5, 4));
        for room in [1, 9] {
            hub.to_room(room, &notice());
        }
        let mut frames = Vec::new();
        out.control.take_now(&mut frames, 10);
        assert!(frames.is_empty(), "no longer in rooms 1 and 9");
        hub.to_room(3, &notice());
        out.control.take_now(&mut frames, 10);
        assert_eq!(frames.len(), 1, "in room 3 now");
        assert_eq!(
            hub.reconcile(6, 0, HashSet::new(), HashSet::new()),
            Some(Vec::new()),
            "offline: done"
        );
    }

    #[test]
    fn presence_goes_offline_only_with_the_last_session() {
        let hub = Hub::default();
        let a = Outbound::new(1, 4, 1 << 20, &NATIVE);
        let b = Outbound::new(2, 4, 1 << 20, &NATIVE);
        assert!(
            hub.attach(
                &who(7),
                HashSet::new(),
                HashSet::new(),
                &a,
                meta(),
                16,
                &Revocations::default(),
            )
            .unwrap()
            .first
        );
        assert!(
            !hub.attach(
                &who(7),
                HashSet::new(),
                HashSet::new(),
                &b,
                meta(),
                2,
                &Revocations::default(),
            )
            .unwrap()
            .first
        );
        let c = Outbound::new(3, 4, 1 << 20, &NATIVE);
        assert!(
            hub.attach(
                &who(7),
                HashSet::new(),
                HashSet::new(),
                &c,
                meta(),
                2,
                &Revocations::default(),
            )
            .is_err(),
            "a third session over a cap of two"
        );
        assert!(!hub.detach(1));
        assert!(hub.detach(2), "the last one");
        assert!(!hub.is_online(7));
    }

    #[test]
    fn sessions_without_presence_never_change_it() {
        let hub = Hub::default();
        let quiet = SessionMeta {
            presence: false,
            ..meta()
        };
        let tool = Outbound::new(1, 4, 1 << 20, &NATIVE);
        let attach = |out: &Outbound, meta: SessionMeta| {
            hub.attach(
                &who(7),
                HashSet::new(),
                HashSet::new(),
                out,
                meta,
                16,
                &Revocations::default(),
            )
            .unwrap()
            .first
        };
        // A tool alone: listed for administrators, offline for everyone else.
        assert!(!attach(&tool, quiet.clone()));
        assert!(hub.is_online(7), "it receives what is sent to the user");
        // Offline in the list, whatever the view says of the user's other nodes.
        let listed = hub.connected(&HashMap::from([(7, Status::Busy)]));
        assert_eq!(
            (listed.len(), listed[0].status, listed[0].presence),
            (1, Status::Offline, false)
        );
        // A real device comes and goes: online, then offline, whatever the tool does.
        let laptop = Outbound::new(2, 4, 1 << 20, &NATIVE);
        assert!(attach(&laptop, meta()));
        let tool2 = Outbound::new(3, 4, 1 << 20, &NATIVE);
        assert!(!attach(&tool2, quiet));
        assert!(!hub.detach(3));
        assert!(hub.detach(2));
        assert!(!hub.detach(1));
        assert!(hub.connected(&HashMap::new()).is_empty());
    }
}
