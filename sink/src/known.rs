//! Which order lines and carts are already stored, as 8-byte fingerprints: lets the sink skip
//! the ClickHouse lookups (latest row, cart lines) for lines and carts it has never written, which
//! is every line of a first poll and most of a busy shop's new orders. The cart lookup scans
//! `order_versions` (not keyed by cart), so skipping it is what keeps throughput flat as the
//! tables grow.
//!
//! A fingerprint collision only costs a lookup that finds nothing; a miss is impossible, because
//! every line is added once ClickHouse confirmed it and all stored lines are loaded at start.
//! This is why one sink owns a set of shops (ARCHITECTURE.md): another writer's lines would be
//! unknown here.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};

#[derive(Debug, Default)]
pub struct Known {
    lines: HashSet<u64>,
    packs: HashSet<u64>,
}

fn fingerprint(shop: &str, number: u64, what: u8) -> u64 {
    // DefaultHasher::new() has fixed keys: the same value in every run.
    let mut h = std::hash::DefaultHasher::new();
    (shop, number, what).hash(&mut h);
    h.finish()
}

impl Known {
    pub fn add(&mut self, shop: &str, order_no: u64, pack_no: u64) {
        self.lines.insert(fingerprint(shop, order_no, 0));
        self.packs.insert(fingerprint(shop, pack_no, 1));
    }

    /// False only for a line never stored.
    pub fn may_have_line(&self, shop: &str, order_no: u64) -> bool {
        self.lines.contains(&fingerprint(shop, order_no, 0))
    }

    /// False only for a cart with no line stored.
    pub fn may_have_pack(&self, shop: &str, pack_no: u64) -> bool {
        self.packs.contains(&fingerprint(shop, pack_no, 1))
    }

    pub fn lines(&self) -> usize {
        self.lines.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_carts_are_told_apart() {
        let mut k = Known::default();
        k.add("a", 1, 7);
        assert!(k.may_have_line("a", 1) && k.may_have_pack("a", 7));
        assert!(!k.may_have_line("b", 1) && !k.may_have_line("a", 7) && !k.may_have_pack("a", 1));
        k.add("a", 1, 7);
        assert_eq!(k.lines(), 1);
    }
}
