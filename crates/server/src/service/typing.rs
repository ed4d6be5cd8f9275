//! Typing indicators: ephemeral, never stored. A session that says it is typing in a room
//! (or to someone) has it forwarded to the room's members (or to that user) at most once
//! per [`TYPING_EVERY_MS`] for one place; clients show it for [`TYPING_SHOWN_MS`] unless it
//! is renewed or a message from its author arrives first, so it expires by itself.

use salon_proto::{args, ErrorCode, Event, Reply};

use crate::live::Audience;
use crate::store::fold;

use super::*;

/// Least time between two forwarded indicators of one session for one place.
pub(crate) const TYPING_EVERY_MS: i64 = 3_000;
/// How long a client shows an indicator (longer than the interval, so that one typing
/// steadily is shown without a gap).
pub(crate) const TYPING_SHOWN_MS: u32 = 5_000;

impl Service {
    pub(crate) async fn typing(&self, s: &mut SessionState, a: args::Typing) -> Result<Done> {
        let me = user(s.user.as_ref())?.clone();
        let place = match (&a.room, &a.with) {
            (Some(room), None) => format!("room:{}", fold(room)),
            (None, Some(with)) => format!("user:{}", fold(with)),
            _ => {
                return Err(reject(
                    ErrorCode::InvalidRequest,
                    "typing needs exactly one of `room` and `with`",
                ))
            }
        };
        let now = self.clock.now_ms();
        // Said again within the interval, for the same place: answered, not forwarded
        // (checked before any look-up, so that a key held down costs nothing).
        if s.typing
            .as_deref()
            .is_some_and(|(last, at)| *last == place && now - at < TYPING_EVERY_MS)
        {
            return ok(Reply::Typing(salon_proto::reply::Empty {}));
        }
        let to = match (&a.room, &a.with) {
            (Some(room), _) => {
                let room = self.room_for(&me, room)?;
                if !self.live.hub().is_member(me.id, room.id) {
                    return Err(reject(
                        ErrorCode::NotMember,
                        format!("only members of {} can type in it", room.name),
                    ));
                }
                (Audience::Room(room.id), Some(room.name.clone()))
            }
            (None, Some(with)) => {
                let other = self.user_named(with, "with").await?;
                (Audience::User(other.id), None)
            }
            (None, None) => unreachable!("checked above"),
        };
        s.typing = Some(Box::new((place, now)));
        self.tell(
            to.0,
            Event::Typing {
                room: to.1,
                user: me.username,
                alias: me.alias,
                expires_ms: TYPING_SHOWN_MS,
            },
        );
        ok(Reply::Typing(salon_proto::reply::Empty {}))
    }
}
