//! An OMS edit (`oms.edits.<shop>`) becoming an expectation of Qoo10's data: met at once when
//! Qoo10 already shows it (and the change alert Qoo10's side raised is settled), else pending
//! with `qoo10_correction_required` until a version of the line shows it.

use chrono::{DateTime, Utc};
use schemas::alert::Alert;
use schemas::dlq::Reason;
use schemas::edit::OmsEdit;

use super::{Delta, Engine, Pending, Plan, expectation_row};
use crate::alerts;
use crate::edits;
use crate::keys::{AlertKey, ExpectationKey};
use crate::rows::OrderRow;

impl Engine {
    /// The edit a message carries, or why it is a dead letter. The same edit id again is a
    /// redelivery, or conflicting content (the first stands).
    pub fn read_edit(&self, payload: &[u8], subject_shop: &str) -> Result<OmsEdit, Reason> {
        let e = crate::input::edit(payload, subject_shop)?;
        match self.expectations.values().find(|(known, _)| known.edit_id == e.edit_id) {
            Some((known, _)) if *known != e => Err(Reason::Conflict(format!(
                "edit {} was already received with different content; the first stands",
                e.edit_id
            ))),
            _ => Ok(e),
        }
    }

    /// `rows`: Qoo10's latest data for what the edit is about (the line, or the cart's lines);
    /// `version`: the edit message's stream sequence.
    pub fn evaluate_edit(&self, edit: &OmsEdit, rows: &[OrderRow], version: u64, now: DateTime<Utc>) -> Plan {
        let shop = &edit.shop_id;
        let key = ExpectationKey { shop: shop.clone(), edit_key: edit.key() };
        let mut pending = Pending::new(&self.open);
        let mut transitions = Vec::new();
        let mut delta = Delta::default();
        // A newer edit of the same thing replaces the expectation: close the old alert.
        transitions
            .extend(pending.close(&AlertKey::edit(shop, &edit.key())).map(|o| alerts::resolve(&o, o.version, now)));
        let satisfied = rows.iter().find(|r| edits::satisfied_by(edit, r) == Some(true));
        if let Some(line) = satisfied {
            // The OMS now agrees with what Qoo10 already shows: the change alert Qoo10's side
            // raised (e.g. quantity_changed) is settled on both sides.
            let change = AlertKey::order(edits::predicted_kind(edit), shop, line.order_no);
            transitions.extend(pending.close(&change).map(|o| alerts::resolve(&o, o.version, now)));
            delta.expectations_met.push(key);
        } else {
            let alert = correction_alert(edit, rows, version, now);
            pending.open(AlertKey::edit(shop, &edit.key()), &alert);
            transitions.push(alert);
            delta.expectations_added.push((key, (edit.clone(), version)));
        }
        delta.alerts = pending.into_changes();
        let state = if satisfied.is_some() { "matched" } else { "pending" };
        Plan { transitions, expectations: vec![expectation_row(edit, state, version)], delta }
    }
}

/// `qoo10_correction_required` for an edit Qoo10 does not show yet; its id names the edit.
fn correction_alert(edit: &OmsEdit, rows: &[OrderRow], version: u64, now: DateTime<Utc>) -> Alert {
    let current = rows.iter().find(|r| edits::satisfied_by(edit, r).is_some());
    let draft = edits::correction(edit, current);
    let (order_no, pack_no) = edits::target(edit);
    Alert {
        alert_id: format!("qoo10_correction_required:{}:{}:{}", edit.shop_id, edit.key(), edit.edit_id),
        order_no: order_no.unwrap_or(0),
        pack_no: current.map(|r| r.pack_no).or(pack_no).unwrap_or(0),
        version: u64::try_from(edit.made_at.timestamp_micros()).unwrap_or(version),
        ..alerts::open(&draft, &OrderRow::empty(&edit.shop_id), 0, now)
    }
}
