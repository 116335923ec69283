//! Which recent order lines and carts are already stored, as 4-byte fingerprints: lets the sink
//! skip the ClickHouse lookups (latest row, cart lines) for lines and carts it has never written,
//! which is every line of a first poll and most of a busy shop's new orders.
//!
//! Only lines **ordered within the last [`RECENT_DAYS`]** are held: what the sink loads at start
//! and keeps in memory follows the recent order volume, not the years of history behind it
//! (docs/benchmark.md, "history"). For an older line the answer is always "may be stored", so
//! its lookups run: they are keyed lookups (`orders` by `(shop_id, order_no)`, `order_carts` by
//! `(shop_id, pack_no)`), one query per batch, and such lines are rare at steady state (late
//! changes of old orders, which the fetcher follows for their whole life).
//!
//! A fingerprint collision only costs a lookup that finds nothing; a miss is impossible: a line
//! ordered within the window was either loaded at start (every line stored with such an
//! `ordered_at`) or added once ClickHouse confirmed it, and [`Known::forget_before`] forgets only
//! lines older than the window. `ordered_at` never changes for a line (Qoo10's `orderDate`, on
//! order and claim rows alike), and a cart's lines share it, so a cart is judged by the line in
//! hand with a day of slack. This is why one sink owns a set of shops (ARCHITECTURE.md): another
//! writer's lines would be unknown here.

use std::collections::{BTreeMap, HashSet};
use std::hash::{Hash, Hasher};

/// How far back (by order date) the fingerprints reach.
pub const RECENT_DAYS: u32 = 14;
/// A cart's lines are ordered at the same instant; a day of slack keeps a cart whose lines
/// straddle the window's edge (or midnight) out of the fingerprints' verdict.
const CART_SLACK_S: u32 = 86_400;

/// Fingerprints by the UTC day of the line's order date: a line is looked for in its own day
/// only, and forgetting a day lets go of its set at once. Four bytes a fingerprint (about 7.5
/// with the table's slack): a collision rate of one in 4 billion per entry costs a lookup now and
/// then, which is all a collision can cost.
#[derive(Debug, Default)]
pub struct Known {
    lines: BTreeMap<u32, HashSet<u32>>,
    packs: BTreeMap<u32, HashSet<u32>>,
    /// Lines ordered before this instant (seconds) are not held.
    since: u32,
}

fn fingerprint(shop: &str, number: u64, what: u8) -> u32 {
    // DefaultHasher::new() has fixed keys: the same value in every run.
    let mut h = std::hash::DefaultHasher::new();
    (shop, number, what).hash(&mut h);
    h.finish() as u32
}

fn day(at: u32) -> u32 {
    at / 86_400
}

/// The first instant (seconds) of the window that ends at `now_s`.
pub fn window_start(now_s: i64) -> u32 {
    u32::try_from(now_s - i64::from(RECENT_DAYS) * 86_400).unwrap_or(0)
}

impl Known {
    /// An empty set that answers for lines ordered from `since` (seconds) on: the caller loads
    /// every stored line ordered since then.
    pub fn since(since: u32) -> Known {
        Known { since, ..Known::default() }
    }

    pub fn add(&mut self, shop: &str, order_no: u64, pack_no: u64, ordered_at: u32) {
        if ordered_at < self.since {
            return;
        }
        self.lines.entry(day(ordered_at)).or_default().insert(fingerprint(shop, order_no, 0));
        self.packs.entry(day(ordered_at)).or_default().insert(fingerprint(shop, pack_no, 1));
    }

    /// False only for a line never stored.
    pub fn may_have_line(&self, shop: &str, order_no: u64, ordered_at: u32) -> bool {
        ordered_at < self.since
            || self.lines.get(&day(ordered_at)).is_some_and(|d| d.contains(&fingerprint(shop, order_no, 0)))
    }

    /// False only for a cart with no line stored (`ordered_at`: the line in hand's; the cart's
    /// other lines are looked for on that day and the days either side).
    pub fn may_have_pack(&self, shop: &str, pack_no: u64, ordered_at: u32) -> bool {
        if ordered_at < self.since.saturating_add(CART_SLACK_S) {
            return true;
        }
        let fp = fingerprint(shop, pack_no, 1);
        let d = day(ordered_at);
        self.packs.range(d.saturating_sub(1)..=d + 1).any(|(_, set)| set.contains(&fp))
    }

    /// Moves the window's start to `since` (later only) and forgets what is now outside it: the
    /// set stays the size of the window, however long the sink runs. Days are forgotten whole,
    /// so the window starts at the day of `since`.
    pub fn forget_before(&mut self, since: u32) {
        let since = day(since) * 86_400;
        if since <= self.since {
            return;
        }
        self.since = since;
        self.lines = self.lines.split_off(&day(since));
        self.packs = self.packs.split_off(&day(since));
    }

    pub fn lines(&self) -> usize {
        self.lines.values().map(HashSet::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u32 = 86_400;

    #[test]
    fn lines_and_carts_are_told_apart() {
        let mut k = Known::since(10 * DAY);
        k.add("a", 1, 7, 20 * DAY);
        let at = 20 * DAY;
        assert!(k.may_have_line("a", 1, at) && k.may_have_pack("a", 7, at));
        assert!(!k.may_have_line("b", 1, at) && !k.may_have_line("a", 7, at) && !k.may_have_pack("a", 1, at));
        k.add("a", 1, 7, at);
        assert_eq!(k.lines(), 1);
    }

    #[test]
    fn lines_older_than_the_window_may_always_be_stored() {
        let mut k = Known::since(10 * DAY);
        k.add("a", 1, 7, 9 * DAY);
        assert_eq!(k.lines(), 0, "not held");
        assert!(k.may_have_line("a", 2, 9 * DAY), "older than the window: looked up");
        assert!(k.may_have_pack("a", 8, 10 * DAY + 3600), "within a day of the edge: looked up");
        assert!(!k.may_have_line("a", 2, 10 * DAY) && !k.may_have_pack("a", 8, 12 * DAY));
    }

    #[test]
    fn moving_the_window_forgets_old_lines_and_keeps_answers_true() {
        let mut k = Known::since(10 * DAY);
        k.add("a", 1, 7, 11 * DAY);
        k.add("a", 2, 8, 15 * DAY);
        k.forget_before(12 * DAY + 3600);
        assert_eq!(k.lines(), 1);
        assert!(k.may_have_line("a", 1, 11 * DAY), "forgotten, so looked up again");
        assert!(k.may_have_line("a", 2, 15 * DAY) && !k.may_have_line("a", 3, 15 * DAY));
        k.forget_before(5 * DAY);
        assert!(k.may_have_line("a", 1, 11 * DAY), "the window never moves back");
    }

    /// The window's edges: a line ordered at its first instant is held; a cart is found from
    /// a line ordered the day before or after; the window is RECENT_DAYS long.
    #[test]
    fn edges_of_the_window() {
        assert_eq!(window_start(i64::from(30 * DAY) + 5), 16 * DAY + 5);
        assert_eq!(window_start(5), 0, "before the epoch's window: from 0");
        let mut k = Known::since(10 * DAY);
        k.add("a", 1, 7, 10 * DAY);
        assert_eq!(k.lines(), 1, "ordered at the window's first instant: held");
        assert!(k.may_have_line("a", 1, 10 * DAY));
        k.add("a", 2, 8, 13 * DAY);
        assert!(k.may_have_pack("a", 8, 12 * DAY) && k.may_have_pack("a", 8, 14 * DAY), "a day either side");
        assert!(!k.may_have_pack("a", 8, 15 * DAY), "two days off: another cart");
        assert!(!k.may_have_pack("a", 9, 11 * DAY), "a day past the edge's slack: answered");
    }
}
