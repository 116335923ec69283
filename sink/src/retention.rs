//! When a line's personal data expires, decided without IO: `personal_data_days` after the line
//! settled (delivered, cancelled, returned, refunded), or, for a line never settled, after its
//! order date plus `follow_days` plus `personal_data_days`.
//!
//! A line settles with the first version after its last open one (one that is not terminal):
//! a line delivered, then returned, settles when it is returned; one delivered and then refunded
//! in part settled when delivered (both are terminal). The sink's daily retention reads the
//! versions of the lines that still hold personal data and are old enough to expire, and
//! deletes the personal data of those that have (`Store::expire_personal`).

use std::collections::HashMap;

/// One version of a line, as retention needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clickhouse::Row, serde::Deserialize)]
pub struct LineVersion {
    pub version: u64,
    /// When the version was fetched (seconds since the epoch).
    pub fetched_at: u32,
    pub qoo10_status: u8,
    pub claim_status: u8,
}

const DAY: u32 = 86_400;

/// When the line settled, if it has: the fetch time of the first version after its last open
/// one, when its latest version is terminal. `versions` in any order.
pub fn settled_at(versions: &[LineVersion]) -> Option<u32> {
    let terminal = |v: &LineVersion| schemas::status::is_terminal(v.qoo10_status, v.claim_status);
    let latest = versions.iter().max_by_key(|v| v.version)?;
    if !terminal(latest) {
        return None;
    }
    let last_open = versions.iter().filter(|v| !terminal(v)).map(|v| v.version).max();
    versions.iter().filter(|v| last_open.is_none_or(|o| v.version > o)).map(|v| v.fetched_at).min()
}

/// When the line's personal data expires (seconds since the epoch).
pub fn expires_at(ordered_at: u32, versions: &[LineVersion], days: u32, follow_days: u32) -> u32 {
    let keep = days.saturating_mul(DAY);
    match settled_at(versions) {
        Some(settled) => settled.saturating_add(keep),
        None => ordered_at.saturating_add(follow_days.saturating_mul(DAY)).saturating_add(keep),
    }
}

/// Each shop's `personal_data_days`.
#[derive(Debug, Clone)]
pub struct Policy {
    pub days: HashMap<String, u32>,
    /// For a shop not (or no longer) configured.
    pub default_days: u32,
    pub follow_days: u32,
}

impl Policy {
    pub fn of(config: &schemas::config::PipelineConfig) -> Policy {
        Policy {
            days: config.shops.iter().map(|s| (s.id.clone(), s.personal_data_days)).collect(),
            default_days: 90,
            follow_days: config.fetcher.follow_days,
        }
    }

    pub fn days(&self, shop: &str) -> u32 {
        self.days.get(shop).copied().unwrap_or(self.default_days)
    }

    /// No line ordered after this (seconds) can have expired by `now`: a line settles after it
    /// is ordered, so it expires `personal_data_days` after its order date at the earliest.
    pub fn ordered_before(&self, now: u32) -> u32 {
        let shortest = self.days.values().copied().chain([self.default_days]).min().unwrap_or(self.default_days);
        now.saturating_sub(shortest.saturating_mul(DAY))
    }

    pub fn expired(&self, shop: &str, ordered_at: u32, versions: &[LineVersion], now: u32) -> bool {
        expires_at(ordered_at, versions, self.days(shop), self.follow_days) <= now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(version: u64, day: u32, qoo10_status: u8, claim_status: u8) -> LineVersion {
        LineVersion { version, fetched_at: day * DAY, qoo10_status, claim_status }
    }

    #[test]
    fn a_line_settles_with_its_first_version_after_the_last_open_one() {
        // Paid (2) day 1, shipped (4) day 3, delivered (5) day 5.
        assert_eq!(settled_at(&[v(1, 1, 2, 0), v(2, 3, 4, 0), v(3, 5, 5, 0)]), Some(5 * DAY));
        // Delivered day 5, a return requested (4) day 8, returned (6) day 12: settled day 12.
        let returned = [v(1, 1, 2, 0), v(2, 5, 5, 0), v(3, 8, 5, 4), v(4, 12, 5, 6)];
        assert_eq!(settled_at(&returned), Some(12 * DAY));
        // Delivered day 5, refunded in part day 9: both terminal, settled day 5.
        assert_eq!(settled_at(&[v(2, 5, 5, 0), v(1, 1, 3, 0), v(3, 9, 5, 15)]), Some(5 * DAY), "any order");
        // Cancelled at once (claim 3) in the first version seen.
        assert_eq!(settled_at(&[v(1, 2, 2, 3)]), Some(2 * DAY));
        assert_eq!(settled_at(&[v(1, 1, 2, 0), v(2, 3, 4, 0)]), None, "shipped, not delivered");
        assert_eq!(settled_at(&[]), None);
    }

    #[test]
    fn personal_data_expires_days_after_settling_or_after_following_ends() {
        let delivered = [v(1, 1, 2, 0), v(2, 5, 5, 0)];
        assert_eq!(expires_at(0, &delivered, 90, 365), 95 * DAY);
        assert_eq!(expires_at(0, &delivered, 7, 365), 12 * DAY, "a shop's shorter period");
        let open = [v(1, 1, 3, 0)];
        assert_eq!(expires_at(DAY, &open, 90, 365), (1 + 365 + 90) * DAY, "never settled");
        let policy =
            Policy { days: [("short".to_owned(), 7)].into_iter().collect(), default_days: 90, follow_days: 365 };
        assert!(policy.expired("short", 0, &delivered, 12 * DAY));
        assert!(!policy.expired("short", 0, &delivered, 12 * DAY - 1));
        assert!(!policy.expired("other", 0, &delivered, 12 * DAY), "another shop keeps 90 days");
        assert_eq!(policy.ordered_before(100 * DAY), 93 * DAY, "the shortest period bounds the candidates");
    }
}
