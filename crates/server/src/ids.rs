//! Identifiers made by the server, not the database, so that a batch of messages can be
//! inserted in one statement on every backend (no `RETURNING` needed) and so that ids from
//! several server nodes never collide.
//!
//! Layout (53 bits, so that every id is exact as a JavaScript number — JSON clients in
//! browsers read them as doubles): 41 bits of milliseconds since 2024-01-01 UTC (69
//! years), 4 bits of node id (14 server nodes, `node_id` 0–13, and the offline tools), 8 bits of sequence (256 ids per
//! millisecond per node; a larger burst borrows the next millisecond, so ids stay unique
//! and increasing and merely run ahead of the clock for a moment). Ids from one generator
//! strictly increase, even if the clock steps back, so message ids give the order of
//! acceptance.

use std::sync::atomic::{AtomicI64, Ordering};

const EPOCH_MS: i64 = 1_704_067_200_000; // 2024-01-01T00:00:00Z
const NODE_BITS: u32 = 4;
const SEQ_BITS: u32 = 8;
const SEQ_MASK: i64 = (1 << SEQ_BITS) - 1;

#[derive(Debug)]
pub struct IdGenerator {
    node: i64,
    last: AtomicI64,
}

impl IdGenerator {
    pub fn new(node: u16) -> Self {
        IdGenerator {
            node: i64::from(node) & ((1 << NODE_BITS) - 1),
            last: AtomicI64::new(0),
        }
    }

    /// A generator for `node` whose ids are all larger than `largest`, the largest id
    /// already stored (by any node): a clock that went back across a restart cannot make
    /// it repeat an id. It starts past the millisecond of `largest`, in its own node's
    /// range (continuing `largest + 1` could carry another node's number).
    pub fn starting_after(node: u16, largest: i64) -> Self {
        let ids = IdGenerator::new(node);
        let ms = largest.max(0) >> (NODE_BITS + SEQ_BITS);
        ids.last.store(
            (ms << (NODE_BITS + SEQ_BITS)) | (ids.node << SEQ_BITS) | SEQ_MASK,
            Ordering::Relaxed,
        );
        ids
    }

    /// The next id for a message accepted at `now_ms`.
    pub fn next(&self, now_ms: i64) -> i64 {
        let slot = |ms: i64| (ms << (NODE_BITS + SEQ_BITS)) | (self.node << SEQ_BITS);
        let fresh = slot((now_ms - EPOCH_MS).max(0));
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            let candidate = if fresh > last {
                fresh
            } else if (last & SEQ_MASK) == SEQ_MASK {
                // Sequence exhausted within this millisecond: borrow the next one.
                slot((last >> (NODE_BITS + SEQ_BITS)) + 1)
            } else {
                last + 1
            };
            match self.last.compare_exchange_weak(
                last,
                candidate,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return candidate,
                Err(actual) => last = actual,
            }
        }
    }
}

/// How many node numbers an id can carry (servers and offline tools).
pub const NODE_SLOTS: usize = 1 << NODE_BITS;

/// The node that made `id`.
pub fn node_of(id: i64) -> usize {
    ((id >> SEQ_BITS) & ((1 << NODE_BITS) - 1)) as usize
}

/// Per node that makes ids, the largest id of a kind (private messages) handed out so
/// far. One node's ids increase and reach another node in order (the bus keeps one
/// publisher's order), so "handed out" is exactly "id at most the mark of its node",
/// whatever the clocks of the nodes: a mark over all nodes at once (the largest id)
/// would wrongly cover a slower node's message still on its way.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Watermark(pub [i64; NODE_SLOTS]);

impl Watermark {
    /// Moves the mark of `id`'s node past `id`.
    pub fn advance(&mut self, id: i64) {
        let mark = &mut self.0[node_of(id)];
        *mark = (*mark).max(id);
    }

    /// Whether `id` was handed out by the time of this mark.
    pub fn covers(&self, id: i64) -> bool {
        id <= self.0[node_of(id)]
    }
}

/// The smallest id any node makes at `ms` (ms since the Unix epoch) or later: ids begin
/// with their millisecond, so "every message accepted since `ms`" is "every id from this
/// one" (a burst that borrowed later milliseconds only makes ids larger).
pub fn floor_at(ms: i64) -> i64 {
    (ms - EPOCH_MS).max(0) << (NODE_BITS + SEQ_BITS)
}

/// The largest node number a server may take. The ones above are reserved for the tools
/// that write ids into the database while a server may be running ([`OfflineTool`]), so
/// that their ids can never collide with a server's.
pub const MAX_SERVER_NODE: u16 = 13;

/// The tools that make ids outside any server, each with its reserved node number: the
/// one place those numbers are written down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfflineTool {
    /// `salon admin create-user`.
    Cli,
    /// The load generator's set-up (`salon bench`).
    Bench,
}

impl OfflineTool {
    pub const ALL: [OfflineTool; 2] = [OfflineTool::Cli, OfflineTool::Bench];

    /// Its node number, above `MAX_SERVER_NODE`.
    pub const fn node(self) -> u16 {
        match self {
            OfflineTool::Cli => 14,
            OfflineTool::Bench => 15,
        }
    }

    /// A generator of this tool's ids.
    pub fn ids(self) -> IdGenerator {
        IdGenerator::new(self.node())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watermark_covers_each_nodes_ids_up_to_its_own_mark() {
        let fast = IdGenerator::new(2);
        let slow = IdGenerator::new(5);
        let ahead = fast.next(EPOCH_MS + 10_000);
        let behind = slow.next(EPOCH_MS + 1_000);
        assert_eq!((node_of(ahead), node_of(behind)), (2, 5));
        let mut mark = Watermark::default();
        mark.advance(ahead);
        // The slow node's message has a smaller id but was not handed out yet.
        assert!(mark.covers(ahead) && !mark.covers(behind));
        mark.advance(behind);
        assert!(mark.covers(behind));
        assert!(!mark.covers(slow.next(EPOCH_MS + 1_000)));
    }

    #[test]
    fn ids_strictly_increase_even_when_the_clock_steps_back() {
        let ids = IdGenerator::new(3);
        let mut prev = 0;
        for now in [EPOCH_MS + 10, EPOCH_MS + 10, EPOCH_MS + 5, EPOCH_MS + 11] {
            let id = ids.next(now);
            assert!(id > prev);
            prev = id;
        }
    }

    #[test]
    fn a_generator_started_after_a_stored_id_never_goes_below_it() {
        // Ids stored by node 5, the last one in the future of this node's clock (the
        // clock went back across a restart).
        let other = IdGenerator::new(5);
        let largest = other.next(EPOCH_MS + 1_000);
        let ids = IdGenerator::starting_after(2, largest);
        let first = ids.next(EPOCH_MS + 10);
        assert!(first > largest);
        assert_eq!((first >> SEQ_BITS) & ((1 << NODE_BITS) - 1), 2, "own node");
        assert!(ids.next(EPOCH_MS + 2_000) > first);
        assert!(IdGenerator::starting_after(0, 0).next(EPOCH_MS) > 0);
    }

    #[test]
    fn sequence_overflow_moves_to_the_next_millisecond_keeping_the_node() {
        let ids = IdGenerator::new(5);
        assert!(
            ids.next(EPOCH_MS + (1 << 41) - 1) < 1 << 53,
            "exact in a JavaScript number"
        );
        let ids = IdGenerator::new(5);
        let now = EPOCH_MS + 1000;
        let mut prev = 0;
        for _ in 0..(SEQ_MASK + 10) {
            let id = ids.next(now);
            assert!(id > prev);
            assert_eq!((id >> SEQ_BITS) & ((1 << NODE_BITS) - 1), 5);
            prev = id;
        }
    }

    #[test]
    fn the_floor_of_a_time_is_below_every_id_made_then_or_later() {
        let ids = IdGenerator::new(13);
        let at = EPOCH_MS + 5_000;
        assert!(floor_at(at) <= ids.next(at));
        assert!(floor_at(at) > IdGenerator::new(13).next(at - 1));
        assert_eq!(floor_at(0), 0, "before the epoch: everything");
    }

    #[test]
    fn offline_tools_have_distinct_nodes_no_server_can_take() {
        let nodes: Vec<u16> = OfflineTool::ALL.iter().map(|t| t.node()).collect();
        for (i, node) in nodes.iter().enumerate() {
            assert!(*node > MAX_SERVER_NODE && *node < 1 << NODE_BITS);
            assert!(!nodes[..i].contains(node));
        }
    }
}
