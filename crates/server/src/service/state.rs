//! What the server keeps per connection: who is logged in, rate limiters, the private-message
//! backlog being pushed, and the replies the message writer still owes.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

use governor::DefaultDirectRateLimiter;

use crate::live::{Identity, Outbound};
use crate::persist::{Ack, InFlight};

/// Per-connection state seen by handlers.
pub struct SessionState {
    pub outbound: Outbound,
    pub peer: SocketAddr,
    pub transport: salon_proto::Transport,
    pub user: Option<Identity>,
    /// Hash of this session's resume token, once logged in.
    pub(crate) token_hash: Option<String>,
    /// When that token expires.
    pub(crate) token_expires: i64,
    /// Private messages waiting for this user when the session logged in.
    /// `None` once there is nothing (more) to push.
    pub(crate) backlog: Option<Box<Backlog>>,
    /// Replies owed by the message writer to this session's requests.
    /// Made at the first `send`/`direct` (an idle session allocates nothing for it).
    pub(crate) in_flight: std::sync::OnceLock<Arc<InFlight>>,
    /// Whether this session counts for its user's presence (`login`'s `presence`).
    pub(crate) presence: bool,
    /// Where this session last said it was typing, and when it was forwarded (boxed:
    /// an idle session pays one pointer).
    pub(crate) typing: Option<Box<(String, i64)>>,
    pub(crate) messages: DefaultDirectRateLimiter,
    pub(crate) requests: DefaultDirectRateLimiter,
}

impl SessionState {
    /// Whether the session has logged in (or resumed).
    pub fn logged_in(&self) -> bool {
        self.user.is_some()
    }

    /// Where the message writer answers request `re`; the reply is owed until then.
    pub(crate) fn ack(&self, re: u64) -> Ack {
        Ack {
            outbound: self.outbound.clone(),
            re,
            owed: self.in_flight.get_or_init(Arc::default).owe(),
        }
    }

    /// Resolves once every reply owed by the message writer has been queued (bounded:
    /// the writer answers every job, and gives up on a database call after its timeout).
    pub async fn replies_settled(&self) {
        let Some(in_flight) = self.in_flight.get() else {
            return;
        };
        if tokio::time::timeout(SETTLE_MAX, in_flight.settled())
            .await
            .is_err()
        {
            tracing::warn!(peer = %self.peer, "replies still owed after {SETTLE_MAX:?}");
        }
    }
}

/// The longest a closing session waits for the replies the message writer owes it.
pub(crate) const SETTLE_MAX: std::time::Duration = std::time::Duration::from_secs(60);

/// The private messages that were waiting when a session logged in (those `up_to`
/// covers; later ones reach it live), pushed a page at a time.
pub(crate) struct Backlog {
    pub(crate) up_to: crate::ids::Watermark,
    /// Id of the last message pushed.
    pub(crate) after: i64,
    /// Pushed in the current page and not yet acknowledged.
    pub(crate) outstanding: HashSet<i64>,
}

/// Private messages pushed per backlog page.
pub(crate) const BACKLOG_PAGE: u32 = 100;
/// Most ids one `ack_directs` may carry.
pub(crate) const MAX_ACK_IDS: usize = 256;
