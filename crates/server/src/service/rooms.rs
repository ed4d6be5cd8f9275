//! Rooms and private channels: the in-memory directory, membership (join, leave, channel
//! creation) and the per-user membership lock.

use std::collections::HashSet;
use std::sync::Arc;

use salon_proto::{args, ErrorBody, ErrorCode, Event, JoinPolicy, Reply, RoomInfo};

use crate::accounts;
use crate::live::{room_info, Identity};
use crate::live::{Audience, Message};
use crate::store::{fold, RoomRow};

use super::*;

impl Service {
    /// Serialises changes to one user's memberships (see `membership_locks`).
    pub(crate) async fn lock_memberships(&self, user: i64) -> tokio::sync::OwnedMutexGuard<()> {
        self.membership_locks.lock(user).await
    }

    /// Every room visible to an online user, with their state in it.
    pub(crate) fn rooms_of(&self, user: i64) -> Vec<RoomInfo> {
        let (member, pending) = self.live.hub().room_states(user).unwrap_or_default();
        let dir = self.live.directory();
        dir.order
            .iter()
            .filter_map(|id| dir.by_id.get(id))
            .filter(|room| room.policy != JoinPolicy::Private || member.contains(&room.id))
            .map(|room| room_info(room, &member, &pending))
            .collect()
    }

    /// A room by name, as `user` may see it: private channels of which they are not a
    /// member do not exist for them.
    pub(crate) fn room_for(&self, user: &Identity, name: &str) -> Result<Arc<RoomRow>> {
        let dir = self.live.directory();
        let room = dir
            .by_key
            .get(&fold(name))
            .and_then(|id| dir.by_id.get(id))
            .filter(|r| r.policy != JoinPolicy::Private || self.live.hub().is_member(user.id, r.id))
            .cloned();
        room.ok_or_else(|| {
            ErrorBody::new(
                ErrorCode::NoSuchRoom,
                format!("there is no room named {name:?}"),
            )
            .with_field("room")
            .into()
        })
    }

    pub(crate) fn info_for(&self, user: i64, room: &RoomRow) -> RoomInfo {
        let (member, pending) = self.live.hub().room_states(user).unwrap_or_default();
        room_info(room, &member, &pending)
    }

    /// Tells a room's members that someone joined or left it (a discreet line in the
    /// room; not stored).
    /// Tells a room's members that `user` joined or left it: change `id`, as recorded
    /// with the change (`Store::add_member`).
    pub(crate) fn notice_member(
        &self,
        room: &RoomRow,
        (user, alias): (String, String),
        joined: bool,
        id: i64,
    ) {
        self.tell(
            Audience::Room(room.id),
            Event::RoomMember {
                room: room.name.clone(),
                user,
                alias,
                joined,
                id: Some(id),
            },
        );
    }

    /// Tells a user's other sessions that their relation to a room changed.
    pub(crate) fn tell_membership(&self, user: i64, room: &RoomRow, reason: Option<String>) {
        let info = self.info_for(user, room);
        self.tell(
            Audience::User(user),
            Event::Membership { room: info, reason },
        );
    }

    pub(crate) async fn join(&self, s: &mut SessionState, a: args::Room) -> Result<Done> {
        let me = user(s.user.as_ref())?;
        let _serial = self.lock_memberships(me.id).await;
        let room = self.room_for(me, &a.room)?;
        if self.is_member(me.id, room.id).await? {
            return Err(reject(
                ErrorCode::AlreadyMember,
                format!("you are already a member of {}", room.name),
            ));
        }
        let max = self.config.limits.rooms_per_user_max;
        let counts = self.store.membership_counts(&[me.id]).await?;
        if counts.get(&me.id).is_some_and(|n| *n >= max as i64) {
            return Err(rooms_full(max));
        }
        let now = self.clock.now_ms();
        match room.policy {
            JoinPolicy::Everyone | JoinPolicy::Open => {
                let change = self.ids.next(now);
                if !self.store.add_member(room.id, me.id, now, change).await? {
                    // Joined at the same moment on another node: that join is told.
                    return Err(reject(
                        ErrorCode::AlreadyMember,
                        format!("you are already a member of {}", room.name),
                    ));
                }
                self.bus.publish(Message::Joined {
                    user: me.id,
                    room: room.id,
                });
                // Before the answer: a leave made next on another node comes after it
                // everywhere.
                self.bus.published().await;
                let who = (me.username.clone(), me.alias.clone());
                self.notice_member(&room, who, true, change);
            }
            JoinPolicy::Request => {
                if self.live.hub().is_pending(me.id, room.id) {
                    return Err(reject(
                        ErrorCode::RequestPending,
                        format!(
                            "your request to join {} is waiting for an administrator",
                            room.name
                        ),
                    ));
                }
                // A request and its withdrawal, again and again, would tell every
                // administrator each time.
                if let Err(not_until) = self.join_requests_by_user.check_key(&me.id) {
                    return Err(super::dispatch::rate_limited(
                        not_until,
                        Some("you have asked to join rooms as often as one may in an hour"),
                    ));
                }
                self.store.request_join(room.id, me.id, now).await?;
                self.bus.publish(Message::Pending {
                    user: me.id,
                    room: room.id,
                    pending: true,
                });
                self.bus.published().await;
                self.tell(
                    Audience::Admins,
                    Event::JoinRequest(salon_proto::JoinRequest {
                        user: me.username.clone(),
                        alias: me.alias.clone(),
                        room: room.name.clone(),
                        requested_at: now,
                    }),
                );
                tracing::info!(user = %me.username, room = %room.name, "join requested");
            }
            // Only reachable by members, handled above.
            JoinPolicy::Private => {
                return Err(reject(ErrorCode::NoSuchRoom, "no such room"));
            }
        }
        self.tell_membership(me.id, &room, None);
        ok(Reply::Join(salon_proto::reply::Room {
            room: self.info_for(me.id, &room),
        }))
    }

    pub(crate) async fn leave(&self, s: &mut SessionState, a: args::Room) -> Result<Done> {
        let me = user(s.user.as_ref())?;
        let _serial = self.lock_memberships(me.id).await;
        let room = self.room_for(me, &a.room)?;
        if self.live.hub().is_pending(me.id, room.id) {
            self.store.withdraw_request(room.id, me.id).await?;
            self.bus.publish(Message::Pending {
                user: me.id,
                room: room.id,
                pending: false,
            });
            self.bus.published().await;
        } else if !self.is_member(me.id, room.id).await? {
            return Err(reject(
                ErrorCode::NotMember,
                format!("you are not a member of {}", room.name),
            ));
        } else if room.policy == JoinPolicy::Everyone {
            return Err(reject(
                ErrorCode::CannotLeave,
                format!("everyone is a member of {}; it cannot be left", room.name),
            ));
        } else {
            let now = self.clock.now_ms();
            let change = self.ids.next(now);
            self.store
                .remove_member(room.id, me.id, now, change)
                .await?;
            self.bus.publish(Message::Left {
                user: me.id,
                room: room.id,
            });
            // Every node has applied it before the answer: the user's sessions elsewhere
            // can no longer post there.
            self.bus.settled().await;
            let who = (me.username.clone(), me.alias.clone());
            self.notice_member(&room, who, false, change);
        }
        let info = self.info_for(me.id, &room);
        self.tell(
            Audience::User(me.id),
            Event::Membership {
                room: info.clone(),
                reason: None,
            },
        );
        ok(Reply::Leave(salon_proto::reply::Room { room: info }))
    }

    pub(crate) async fn create_channel(
        &self,
        s: &mut SessionState,
        a: args::CreateChannel,
    ) -> Result<Done> {
        const MAX_MEMBERS: usize = 500;
        let me = user(s.user.as_ref())?.clone();
        let mut a = a;
        a.name = crate::names::normalize(&a.name);
        accounts::check_room_name(&a.name)?;
        // A name that looks like a room the creator can see (same look-alike key) is
        // taken; the database refuses the others (`name_skeletons`).
        let skeleton = crate::names::skeleton(&a.name);
        let resembled = {
            let dir = self.live.directory();
            dir.by_id
                .values()
                .filter(|r| {
                    r.policy != JoinPolicy::Private || self.live.hub().is_member(me.id, r.id)
                })
                .find(|r| crate::names::skeleton(&r.name) == skeleton)
                .map(|r| r.name.clone())
        };
        if let Some(existing) = resembled {
            let message = if fold(&existing) == fold(&a.name) {
                format!("a room or channel named {existing:?} already exists")
            } else {
                format!("{:?} looks too much like the room {existing:?}", a.name)
            };
            return Err(ErrorBody::new(ErrorCode::NameTaken, message)
                .with_field("name")
                .into());
        }
        if a.members.len() > MAX_MEMBERS {
            return Err(ErrorBody::new(
                ErrorCode::TooLong,
                format!("a channel is created with at most {MAX_MEMBERS} members"),
            )
            .with_field("members")
            .into());
        }
        let mut members = vec![me.id];
        let mut names = vec![me.username.clone()];
        let mut seen: HashSet<i64> = [me.id].into();
        for name in &a.members {
            let u = self.user_named(name, "members").await?;
            if seen.insert(u.id) {
                members.push(u.id);
                names.push(u.username);
            }
        }
        let max = self.config.limits.rooms_per_user_max;
        let counts = self.store.membership_counts(&members).await?;
        let full = |id: &i64| counts.get(id).is_some_and(|n| *n >= max as i64);
        if let Some(i) = members.iter().position(full) {
            return Err(if i == 0 {
                rooms_full(max)
            } else {
                ErrorBody::new(
                    ErrorCode::InvalidRequest,
                    format!(
                        "{} is in as many rooms and channels as one may be ({max})",
                        names[i]
                    ),
                )
                .with_field("members")
                .into()
            });
        }
        // Counted only for a channel about to be made (a refused name costs nothing).
        if let Err(not_until) = self.channels_by_user.check_key(&me.id) {
            return Err(super::dispatch::rate_limited(
                not_until,
                Some("you have created as many channels as one may in an hour"),
            ));
        }
        let now = self.clock.now_ms();
        let room = RoomRow {
            id: self.ids.next(now),
            name: a.name,
            policy: JoinPolicy::Private,
        };
        match self.store.create_channel(&room, me.id, &members, now).await {
            Err(e) if e.is_unique_violation() => {
                return Err(ErrorBody::new(
                    ErrorCode::InvalidRequest,
                    "a channel cannot be created under this name; choose another",
                )
                .with_field("name")
                .into())
            }
            other => other?,
        }
        self.bus.publish(Message::RoomCreated(room.clone()));
        for member in &members {
            self.bus.publish(Message::Joined {
                user: *member,
                room: room.id,
            });
            let reason = (*member != me.id).then(|| format!("{} added you", me.alias));
            self.tell_membership(*member, &room, reason);
        }
        // Answered once every node knows the channel and its members (as a leave is): a
        // member's session on another node may use it as soon as the creator has the
        // answer. (A node that lags longer than that learns of it from its recheck while
        // behind, within about 2.5 s, or at its catch-up: room lookups have no database
        // fallback.)
        self.bus.settled().await;
        tracing::info!(channel = %room.name, creator = %me.username, members = members.len(), "private channel created");
        ok(Reply::CreateChannel(salon_proto::reply::Room {
            room: self.info_for(me.id, &room),
        }))
    }
}

/// The refusal of a join or a channel to someone in `rooms_per_user_max` rooms already.
fn rooms_full(max: usize) -> Error {
    ErrorBody::new(
        ErrorCode::InvalidRequest,
        format!("you are in as many rooms and channels as one may be ({max}): leave one first"),
    )
    .into()
}
