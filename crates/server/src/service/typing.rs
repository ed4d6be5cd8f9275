//! Typing indicators: ephemeral, never stored. A session that says it is typing in a room
//! (or to someone) has it forwarded to the room's members (or to that user) at most once
//! per [`TYPING_EVERY_MS`] for one place, and at most once per [`TYPING_FLOOR_MS`] across
//! places, so that one request never fans out more often than that whatever a client
//! sends. Clients show it for [`TYPING_SHOWN_MS`] unless it is renewed or a message from
//! its author arrives first, so it expires by itself.

use salon_proto::{args, ErrorCode, Event, Reply};

use crate::live::Audience;
use crate::store::fold;

use super::*;

/// Least time between two forwarded indicators of one session for one place.
pub(crate) const TYPING_EVERY_MS: i64 = 3_000;
/// Least time between two forwarded indicators of one session, whatever the places.
pub(crate) const TYPING_FLOOR_MS: i64 = 1_000;
/// How long a client shows an indicator (longer than the interval, so that one typing
/// steadily is shown without a gap).
pub(crate) const TYPING_SHOWN_MS: u32 = 5_000;

/// Where a session says it is typing.
enum Place<'a> {
    Room(&'a str),
    With(&'a str),
}

impl Service {
    pub(crate) async fn typing(&self, s: &mut SessionState, a: args::Typing) -> Result<Done> {
        let me = user(s.user.as_ref())?.clone();
        let (place, key) = match (&a.room, &a.with) {
            (Some(room), None) => (Place::Room(room), format!("room:{}", fold(room))),
            (None, Some(with)) => (Place::With(with), format!("user:{}", fold(with))),
            _ => {
                return Err(reject(
                    ErrorCode::InvalidRequest,
                    "typing needs exactly one of `room` and `with`",
                ))
            }
        };
        let now = self.clock.now_ms();
        let since_last = |s: &SessionState| {
            s.typing
                .as_deref()
                .map(|(last, at)| (last == &key, now - at))
        };
        // The same place again, too soon: answered, not forwarded, and checked before any
        // look-up (it was checked when forwarded), so that a key held down costs nothing.
        if let Some((true, elapsed)) = since_last(s) {
            if elapsed < TYPING_EVERY_MS {
                return ok(Reply::Typing(salon_proto::reply::Empty {}));
            }
        }
        let (to, room) = match place {
            Place::Room(room) => {
                let room = self.room_for(&me, room)?;
                if !self.is_member(me.id, room.id).await? {
                    return Err(reject(
                        ErrorCode::NotMember,
                        format!("only members of {} can type in it", room.name),
                    ));
                }
                (Audience::Room(room.id), Some(room.name.clone()))
            }
            Place::With(with) => (
                Audience::User(self.user_named(with, "with").await?.id),
                None,
            ),
        };
        // Another place, too soon after the last one forwarded: checked, not forwarded.
        if let Some((false, elapsed)) = since_last(s) {
            if elapsed < TYPING_FLOOR_MS {
                return ok(Reply::Typing(salon_proto::reply::Empty {}));
            }
        }
        // Only a place that exists is kept: its key is as short as a name.
        s.typing = Some(Box::new((key, now)));
        self.tell(
            to,
            Event::Typing {
                room,
                user: me.username,
                alias: me.alias,
                expires_ms: TYPING_SHOWN_MS,
            },
        );
        ok(Reply::Typing(salon_proto::reply::Empty {}))
    }
}
