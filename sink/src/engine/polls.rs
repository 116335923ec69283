//! `order_vanished` from a complete poll. Only a call by order date returns every line of its
//! statuses and window: a call by ship date says nothing of the orders that did not ship. A poll
//! that skipped a refused method (claims, say) cannot explain a line's absence, and accuses
//! nobody.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use schemas::alert::AlertKind;
use schemas::poll::PollSummary;
use schemas::raw::{RowKind, condition};

use super::{Delta, Engine, Pending, Plan};
use crate::alerts;
use crate::keys::{AlertKey, Subject};
use crate::rows::OrderRow;

/// What a complete poll saw, and which lines it covered.
#[derive(Debug)]
pub struct Coverage {
    pub shop: String,
    seen: HashSet<u64>,
    claimed: HashSet<u64>,
    /// (statuses, from, to) of each call by order date: the lines to look up.
    pub windows: Vec<(Vec<u8>, DateTime<Utc>, DateTime<Utc>)>,
    /// Lines stored from this version on were seen after the poll began: never vanished.
    pub started_version: u64,
}

/// What a complete poll's summaries say (`summaries` is never empty).
pub fn coverage(summaries: &[PollSummary]) -> Coverage {
    let (mut seen, mut claimed, mut windows) = (HashSet::new(), HashSet::new(), Vec::new());
    for s in summaries {
        match s.kind {
            RowKind::Order => {
                seen.extend(s.order_nos.iter().copied());
                if let (condition::ORDER_DATE, Some((from, to))) = (s.query.condition, s.query.span()) {
                    windows.push((s.query.shipping_statuses(), from, to));
                }
            }
            RowKind::Claim => claimed.extend(s.order_nos.iter().copied()),
        }
    }
    if summaries.iter().any(|s| !s.refused_methods.is_empty()) {
        windows.clear();
    }
    let started = summaries.iter().map(|s| s.fetched_at).min().unwrap_or_default();
    let started_version = u64::try_from(started.timestamp_micros()).unwrap_or(0);
    Coverage { shop: summaries[0].shop.clone(), seen, claimed, windows, started_version }
}

/// When a poll started (the micros in `<shop>:<micros>`).
pub fn poll_started(poll_id: &str) -> u64 {
    poll_id.rsplit(':').next().and_then(|t| t.parse().ok()).unwrap_or(0)
}

impl Engine {
    /// Opens `order_vanished` for the covered lines (`known`: active, stored before the poll
    /// began, in a window's statuses) the poll did not return and no claim explains; resolves
    /// it for lines it returned again.
    pub fn evaluate_poll(&self, cov: &Coverage, mut known: Vec<OrderRow>, now: DateTime<Utc>) -> Plan {
        known.sort_by_key(|r| r.order_no);
        known.dedup_by_key(|r| r.order_no);
        let mut pending = Pending::new(&self.open);
        let mut transitions = Vec::new();
        for (row, draft) in alerts::vanished(&known, &cov.seen, &cov.claimed) {
            let key = AlertKey::order(AlertKind::OrderVanished, &cov.shop, row.order_no);
            if !pending.contains(&key) {
                // Named by the poll that found it gone: it may have vanished and come back before.
                let alert = alerts::open(&draft, row, row.version.max(cov.started_version), now);
                pending.open(key, &alert);
                transitions.push(alert);
            }
        }
        let back: Vec<AlertKey> = pending
            .of(AlertKind::OrderVanished, &cov.shop)
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| matches!(k.subject, Subject::Order(no) if cov.seen.contains(&no) || cov.claimed.contains(&no)))
            .collect();
        for key in back {
            transitions.extend(pending.close(&key).map(|open| alerts::resolve(&open, cov.started_version, now)));
        }
        Plan { transitions, delta: Delta { alerts: pending.into_changes(), ..Delta::default() }, ..Plan::default() }
    }
}
