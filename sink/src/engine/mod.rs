//! The alert engine: what a batch of orders, a complete poll, an OMS edit or the passing of
//! time means for the seller. Synchronous and pure: no NATS, no ClickHouse, no clock.
//!
//! Each step takes what arrived plus what the engine must look up (stored rows, cart lines),
//! and returns a [`Plan`]: the alert transitions to publish and store, the expectation rows to
//! store, and a [`Delta`] of the engine's own state. The consumer (`crate::consumer`) commits the
//! plan in the documented order (alerts and expectations before rows, publish before store,
//! acknowledge last) and only then [`Engine::apply`]s the delta: a plan whose commit fails
//! leaves the engine as it was, and the redelivered input makes the same plan again.
//!
//! - [`orders`]: a batch of canonical order versions (merging, late versions, rules, cart
//!   context, OMS edits they satisfy);
//! - [`polls`]: `order_vanished` from a complete poll's summaries;
//! - [`edits`]: an OMS edit becoming an expectation;
//! - [`Engine::sweep`]: rules that depend on time alone (overdue ship dates, grace periods).

pub mod edits;
pub mod orders;
pub mod polls;

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use schemas::alert::Alert;
use schemas::edit::OmsEdit;
use schemas::status::StatusMap;

use crate::alerts::{self, Context, Thresholds, Verdict};
use crate::keys::{AlertKey, ExpectationKey, LineKey, Subject};
use crate::known::Known;
use crate::open::{AlertChanges, OpenAlerts, Pending};
use crate::rows::OrderRow;
use crate::store::ExpectationRow;

/// Pending OMS edits: the edit, and the version it was stored with.
pub type Expectations = HashMap<ExpectationKey, (OmsEdit, u64)>;

/// What the sink holds between messages.
#[derive(Debug)]
pub struct Engine {
    pub statuses: StatusMap,
    pub thresholds: Thresholds,
    open: OpenAlerts,
    expectations: Expectations,
    /// Lines and carts already stored: the lookups for others are skipped.
    known: Known,
}

/// What one step decided, to be made durable before [`Engine::apply`].
#[derive(Debug, Default)]
pub struct Plan {
    /// Alert transitions, in order; a resolution of an alert held without its texts is to be
    /// completed from ClickHouse (`open::needs_texts`) before it is published.
    pub transitions: Vec<Alert>,
    pub expectations: Vec<ExpectationRow>,
    pub delta: Delta,
}

/// Changes of the engine's state that a plan implies.
#[derive(Debug, Default)]
pub struct Delta {
    alerts: AlertChanges,
    expectations_met: Vec<ExpectationKey>,
    expectations_added: Vec<(ExpectationKey, (OmsEdit, u64))>,
    /// Lines now stored: (shop, order, cart, ordered_at).
    stored: Vec<(String, u64, u64, u32)>,
}

impl Engine {
    pub fn new(
        statuses: StatusMap,
        thresholds: Thresholds,
        open: OpenAlerts,
        expectations: Expectations,
        known: Known,
    ) -> Self {
        Engine { statuses, thresholds, open, expectations, known }
    }

    pub fn open_alerts(&self) -> &OpenAlerts {
        &self.open
    }

    pub fn known(&self) -> &Known {
        &self.known
    }

    /// What a committed plan changed: applied once it is durable.
    pub fn apply(&mut self, delta: Delta) {
        self.open.apply(delta.alerts);
        for key in delta.expectations_met {
            self.expectations.remove(&key);
        }
        self.expectations.extend(delta.expectations_added);
        for (shop, order_no, pack_no, ordered_at) in delta.stored {
            self.known.add(&shop, order_no, pack_no, ordered_at);
        }
    }

    /// Step 1 of [`Engine::settle`]: the order lines behind alerts open for longer than
    /// [`SETTLE_AFTER_DAYS`], whose latest rows are to be read.
    pub fn settle_candidates(&self, now: DateTime<Utc>) -> Vec<LineKey> {
        let mut lines: Vec<LineKey> = self
            .open
            .order_alerts_before(settle_cutoff(now))
            .into_iter()
            .filter_map(|k| match k.subject {
                Subject::Order(n) => Some(LineKey::new(&k.shop, n)),
                Subject::Edit(_) => None,
            })
            .collect();
        lines.sort();
        lines.dedup();
        lines
    }

    /// Step 2: resolves every open alert about a line that has been terminal (delivered,
    /// cancelled, returned, refunded) for [`SETTLE_AFTER_DAYS`]: nothing is left to correct on
    /// Qoo10, and the fetcher no longer follows the line, so no new version would ever end it.
    /// Alerts on lines still open stay open (and shown and counted) however old they are.
    pub fn settle(&self, latest: &HashMap<LineKey, OrderRow>, now: DateTime<Utc>) -> Plan {
        let cutoff = settle_cutoff(now);
        let mut pending = Pending::new(&self.open);
        let mut transitions = Vec::new();
        for key in self.open.order_alerts_before(cutoff) {
            let Subject::Order(n) = key.subject else { continue };
            let Some(row) = latest.get(&LineKey::new(&key.shop, n)) else { continue };
            if schemas::status::is_terminal(row.qoo10_status, row.claim_status) && row.version < cutoff {
                transitions.extend(pending.close(&key).map(|open| alerts::resolve(&open, row.version, now)));
            }
        }
        Plan { transitions, delta: Delta { alerts: pending.into_changes(), ..Delta::default() }, ..Plan::default() }
    }

    /// Lets go of the fingerprints of lines ordered before the recent window (crate::known).
    pub fn forget_old_lines(&mut self, now: DateTime<Utc>) {
        self.known.forget_before(crate::known::window_start(now.timestamp()));
    }

    /// Time-dependent rules on the sweep's lines (`Store::active_lines`), evaluated on the same
    /// version on both sides: only conditions that depend on time can change.
    pub fn sweep(&self, rows: &[OrderRow], now: DateTime<Utc>) -> Plan {
        let ctx = Context { now, today_jst: schemas::time::today_jst(now), pack_has_active_sibling: false };
        let mut pending = Pending::new(&self.open);
        let mut transitions = Vec::new();
        // An alert that time opens on an unchanged row is named by the day it opened (JST), not
        // by the row's version: it may have opened and resolved under that version before.
        let today = schemas::time::jst_naive_to_utc(ctx.today_jst.and_hms_opt(0, 0, 0).expect("midnight"));
        let day = u64::try_from(today.timestamp_micros()).unwrap_or(0);
        for row in rows {
            let verdicts = alerts::evaluate(Some(row), row, &ctx, &self.thresholds);
            transitions.extend(transitions_of(&mut pending, verdicts, row, row.version.max(day), now));
        }
        Plan { transitions, delta: Delta { alerts: pending.into_changes(), ..Delta::default() }, ..Plan::default() }
    }
}

/// An alert about a line that has been terminal this long resolves (see [`Engine::settle`]).
pub const SETTLE_AFTER_DAYS: i64 = 30;

/// The version (µs) before which an alert or a terminal row counts as settled.
fn settle_cutoff(now: DateTime<Utc>) -> u64 {
    u64::try_from((now - chrono::Duration::days(SETTLE_AFTER_DAYS)).timestamp_micros()).unwrap_or(0)
}

/// Verdicts → transitions against the open alerts as the plan sees them.
fn transitions_of(
    pending: &mut Pending<'_>,
    verdicts: Vec<(schemas::alert::AlertKind, Verdict)>,
    row: &OrderRow,
    version: u64,
    now: DateTime<Utc>,
) -> Vec<Alert> {
    let mut out = Vec::new();
    for (kind, verdict) in verdicts {
        let key = AlertKey::order(kind, &row.shop_id, row.order_no);
        match verdict {
            Verdict::Open(draft) if !pending.contains(&key) => {
                let alert = alerts::open(&draft, row, version, now);
                pending.open(key, &alert);
                out.push(alert);
            }
            Verdict::Resolve => out.extend(pending.close(&key).map(|open| alerts::resolve(&open, row.version, now))),
            _ => {}
        }
    }
    out
}

/// The row of an expectation in `oms_expectations`.
pub fn expectation_row(edit: &OmsEdit, state: &str, version: u64) -> ExpectationRow {
    ExpectationRow {
        shop_id: edit.shop_id.clone(),
        edit_key: edit.key(),
        edit_id: edit.edit_id.clone(),
        edit: serde_json::to_string(edit).expect("edit serializes"),
        state: state.to_owned(),
        made_at: u32::try_from(edit.made_at.timestamp()).unwrap_or(0),
        version,
    }
}

/// The key of an order line's row.
pub fn line_of(row: &OrderRow) -> LineKey {
    LineKey::new(&row.shop_id, row.order_no)
}

#[cfg(test)]
pub(crate) mod tests;
