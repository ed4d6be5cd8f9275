//! `search`: full-text search over what the user can read (issue 14): the rooms they are
//! a member of and their own private conversations, never anything else (the store's
//! queries join the membership or the conversation; `store::search`). Results are paged,
//! newest first (by id: a cursor) or by relevance (by position, up to
//! [`RELEVANCE_WINDOW`]), each with a snippet highlighting the matched words.

use salon_proto::{
    args, reply, ErrorBody, ErrorCode, Fragment, Place, Reply, SearchHit, SearchOrder,
};

use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::live::Identity;
use crate::search_text::{query_terms, snippet, MAX_QUERY_CHARS, MAX_TERMS};
use crate::store::{Found, SearchQuery, Source, SCOPED_ROOMS_MAX};

use super::*;

/// A page of results when `limit` is omitted, and the largest page.
const DEFAULT_PAGE: u32 = 20;
const MAX_PAGE: u32 = 50;

/// Results by relevance stop after this many (each page ranks from the first): past
/// them, a narrower search is better than another page.
pub(crate) const RELEVANCE_WINDOW: u32 = 200;

fn invalid(field: &str, message: impl Into<String>) -> Error {
    ErrorBody::new(ErrorCode::InvalidRequest, message)
        .with_field(field)
        .into()
}

/// Where the next page starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cursor {
    /// Newest first: below this id.
    Before(i64),
    /// By relevance: after this many results.
    Skip(u32),
}

impl Cursor {
    fn parse(text: &str) -> Option<Cursor> {
        let (kind, value) = text.split_at_checked(1)?;
        match kind {
            "i" => value.parse().ok().map(Cursor::Before),
            "o" => value.parse().ok().map(Cursor::Skip),
            _ => None,
        }
    }

    fn text(self) -> String {
        match self {
            Cursor::Before(id) => format!("i{id}"),
            Cursor::Skip(n) => format!("o{n}"),
        }
    }
}

/// Searches running at once: one per user (all their sessions take turns), and at most
/// `searches_at_once` on this node. A search's cost is the engine's, and a prefix that
/// starts many distinct words can make one take a second or more (an attacker can plant
/// such words); without this bound, one user's sessions searching in a loop could hold
/// every database connection, and the message writer would wait behind them. With it,
/// one user holds at most one connection, and all searches together at most
/// `searches_at_once` (the default leaves SQLite's other connections to the writer and
/// to everything else). A search waits for its turn at most `database_timeout_ms`, then
/// is answered `rate_limited`. What waits is bounded by the sessions: each runs one
/// request at a time.
pub(crate) struct SearchTurns {
    all: Arc<Semaphore>,
    users: UserLocks,
    wait: Duration,
}

/// A search's turn, held while it runs.
pub(crate) struct SearchTurn {
    _all: OwnedSemaphorePermit,
    _mine: tokio::sync::OwnedMutexGuard<()>,
}

impl SearchTurns {
    pub(crate) fn new(at_once: usize, wait: Duration) -> SearchTurns {
        SearchTurns {
            all: Arc::new(Semaphore::new(at_once.max(1))),
            users: UserLocks::default(),
            wait,
        }
    }

    /// `user`'s turn, once no other search of theirs runs and fewer than
    /// `searches_at_once` do; `None` when it did not come within the wait.
    pub(crate) async fn turn(&self, user: i64) -> Option<SearchTurn> {
        tokio::time::timeout(self.wait, async {
            let mine = self.users.lock(user).await;
            let all = self.all.clone().acquire_owned().await.ok()?;
            Some(SearchTurn {
                _all: all,
                _mine: mine,
            })
        })
        .await
        .ok()
        .flatten()
    }
}

impl Service {
    pub(crate) async fn search(&self, me: &Identity, a: args::Search) -> Result<Done> {
        if a.query.chars().count() > MAX_QUERY_CHARS {
            return Err(invalid(
                "query",
                format!("a search has at most {MAX_QUERY_CHARS} characters"),
            ));
        }
        let mut terms = query_terms(&a.query);
        if terms.is_empty() {
            return Err(invalid(
                "query",
                "a search needs at least one word (letters or digits)",
            ));
        }
        if terms.len() > MAX_TERMS {
            return Err(invalid(
                "query",
                format!("a search has at most {MAX_TERMS} words"),
            ));
        }
        let limit = match a.limit {
            None => DEFAULT_PAGE,
            Some(n) if (1..=MAX_PAGE).contains(&n) => n,
            Some(n) => {
                return Err(invalid(
                    "limit",
                    format!("limit must be from 1 to {MAX_PAGE}, not {n}"),
                ))
            }
        };
        let cursor =
            match a.cursor.as_deref() {
                None => None,
                Some(text) => match (Cursor::parse(text), a.order) {
                    (Some(c @ Cursor::Before(_)), SearchOrder::Newest)
                    | (Some(c @ Cursor::Skip(_)), SearchOrder::Relevance) => Some(c),
                    _ => return Err(invalid(
                        "cursor",
                        "this is not the cursor of a page of this search; start again without it",
                    )),
                },
            };
        let skip = match cursor {
            Some(Cursor::Skip(n)) => n,
            _ => 0,
        };
        if a.order == SearchOrder::Relevance && skip.saturating_add(limit) > RELEVANCE_WINDOW {
            return Err(invalid(
                "cursor",
                format!(
                    "results by relevance stop at {RELEVANCE_WINDOW}; narrow the search \
                     or sort by date"
                ),
            ));
        }
        let (room, peer) = match (&a.room, &a.with) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "with",
                    "search one room or one conversation, not both",
                ))
            }
            (Some(name), None) => {
                let room = self.room_for(me, name)?;
                if !self.is_member(me.id, room.id).await? {
                    return Err(reject(
                        ErrorCode::NotMember,
                        format!("only members of {} can search it", room.name),
                    ));
                }
                (Some(room.id), None)
            }
            (None, Some(with)) => (None, Some(self.user_named(with, "with").await?.id)),
            (None, None) => (None, None),
        };
        let author = match &a.author {
            Some(name) => Some(self.user_named(name, "author").await?.id),
            None => None,
        };
        // Words the engine does not index (InnoDB: shorter than its minimum token size)
        // cannot be found; as prefixes they would make it expand every word they start,
        // across every message. They are left out; a search of nothing else is refused.
        let shortest = self.store.shortest_indexed_word();
        if shortest > 1 {
            terms.retain(|t| t.chars().count() >= shortest);
            if terms.is_empty() {
                return Err(invalid(
                    "query",
                    format!(
                        "this server's search finds words of {shortest} letters or more: \
                         type at least {shortest} letters"
                    ),
                ));
            }
        }
        // The index is asked for the rooms' scope when the user is in few of them.
        let rooms = match room {
            Some(room) => Some(vec![room]),
            None => self
                .live
                .hub()
                .room_states(me.id)
                .map(|(rooms, _)| rooms.into_iter().collect::<Vec<_>>())
                .filter(|rooms| rooms.len() <= SCOPED_ROOMS_MAX),
        };
        let query = SearchQuery {
            me: me.id,
            terms,
            room,
            peer,
            rooms,
            author,
            since: a.since,
            until: a.until,
            order: a.order,
            before_id: match cursor {
                Some(Cursor::Before(id)) => Some(id),
                _ => None,
            },
            // One more than the page tells whether there is a next one.
            limit: skip + limit + 1,
        };
        let Some(_turn) = self.search_turns.turn(me.id).await else {
            let mut body = ErrorBody::new(
                ErrorCode::RateLimited,
                "too many searches are running on the server; try again in a second",
            );
            body.retry_after_ms = Some(1000);
            return Err(Error::Rejected(body));
        };
        let mut found: Vec<Found> = Vec::new();
        if peer.is_none() {
            found.extend(self.store.search(Source::Room, &query).await?);
        }
        if room.is_none() {
            found.extend(self.store.search(Source::Direct, &query).await?);
        }
        match a.order {
            SearchOrder::Newest => found.sort_by_key(|f| std::cmp::Reverse(f.id)),
            SearchOrder::Relevance => {
                found.sort_by(|x, y| y.score.total_cmp(&x.score).then_with(|| y.id.cmp(&x.id)))
            }
        }
        let more = found.len() > (skip + limit) as usize;
        let page: Vec<Found> = found
            .into_iter()
            .skip(skip as usize)
            .take(limit as usize)
            .collect();
        let next = match (more, a.order, page.last()) {
            (true, SearchOrder::Newest, Some(last)) => Some(Cursor::Before(last.id).text()),
            (true, SearchOrder::Relevance, _) if skip + limit < RELEVANCE_WINDOW => {
                Some(Cursor::Skip(skip + limit).text())
            }
            _ => None,
        };
        let hits = page.into_iter().map(|f| hit(f, &query.terms)).collect();
        ok(Reply::Search(reply::Search { hits, next }))
    }
}

fn hit(f: Found, terms: &[String]) -> SearchHit {
    let place = match f.room {
        Some(room) => Place {
            room: Some(room),
            ..Place::default()
        },
        None => Place {
            from: Some(f.author.clone()),
            to: f.recipient,
            ..Place::default()
        },
    };
    SearchHit {
        id: f.id,
        place,
        author: f.author,
        alias: f.alias,
        ts: f.created_at,
        edited: f.edited_at,
        snippet: snippet(&f.body, terms)
            .into_iter()
            .map(|p| Fragment {
                text: p.text,
                hit: p.hit,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_search_per_user_and_no_more_than_the_bound_run_at_once() {
        let turns = SearchTurns::new(2, Duration::from_millis(200));
        let alice = turns.turn(1).await.expect("alice's first search");
        // Alice's second search (another session) waits for her first: past the wait,
        // it is refused, while bob's goes.
        assert!(turns.turn(1).await.is_none());
        let bob = turns.turn(2).await.expect("bob's search");
        // Two run: carol waits for one of them.
        assert!(turns.turn(3).await.is_none());
        let waiting = tokio::spawn({
            let turns = Arc::new(turns);
            let for_carol = turns.clone();
            async move { (for_carol.turn(3).await.is_some(), turns) }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(alice);
        let (carol_went, turns) = waiting.await.unwrap();
        assert!(carol_went, "carol's search goes once alice's ends");
        drop(bob);
        // Nothing is kept for users with no search running or waiting.
        assert_eq!(turns.users.users(), 0);
        let again = turns.turn(1).await.expect("alice searches again");
        assert_eq!(turns.users.users(), 1);
        drop(again);
        assert_eq!(turns.users.users(), 0);
    }

    #[test]
    fn cursors_read_back_what_they_wrote_and_nothing_else() {
        for c in [Cursor::Before(42), Cursor::Skip(20)] {
            assert_eq!(Cursor::parse(&c.text()), Some(c));
        }
        for bad in ["", "x1", "i", "o-1", "é", "i1.5"] {
            assert_eq!(Cursor::parse(bad), None, "{bad}");
        }
    }
}
