//! A batch of canonical order versions, in four pure steps with lookups between them:
//!
//! 1. [`Engine::order_batch`]: which messages are bad (dead letters), which lines may be stored
//!    already (to look up), which messages may still have to be dead-lettered with their bytes;
//! 2. [`Engine::merge`], given the latest stored rows: each version merged onto the one before
//!    it in version order, a redelivered older version set aside as late, conflicting content
//!    dead-lettered (the first stands);
//! 3. [`Engine::fold_in_late`], given the late lines' history: their chains rebuilt as if the
//!    versions had come in order;
//! 4. [`Engine::evaluate`], given the lines of the carts concerned: the alert rules on every
//!    change, the OMS edits it satisfies, the `order_vanished` it ends.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use schemas::alert::{Alert, AlertKind};
use schemas::dlq::{FieldError, Reason};
use schemas::order::CanonicalOrder;
use schemas::raw::RowKind;

use super::{Delta, Engine, Pending, Plan, expectation_row, line_of, transitions_of};
use crate::alerts::{self, Context, Verdict};
use crate::edits;
use crate::keys::{AlertKey, CartKey, LineKey};
use crate::rows::{self, ContactRow, OrderRow, merge, rechain, same_content};
use crate::store::{ExpectationRow, PackLine};

/// A canonical order as the sink keeps it while the batch is written: its rows, and the two
/// things of the order the rows do not carry.
#[derive(Debug)]
pub struct Parsed {
    pub row: OrderRow,
    pub contact: Option<ContactRow>,
    pub kind: RowKind,
    pub cart_claims: Vec<u64>,
}

impl Parsed {
    pub fn of(mut o: CanonicalOrder) -> Result<Parsed, FieldError> {
        let (kind, cart_claims) = (o.source.kind, std::mem::take(&mut o.cart_claims));
        let (row, contact) = rows::rows(o)?;
        Ok(Parsed { row, contact, kind, cart_claims })
    }
}

/// A message of the batch that is a dead letter: its index in the batch, its shop, why.
pub type Dead = (usize, String, Reason);

/// One version of a line: what was stored before it (if anything), and what it became.
pub type Change = (Option<Arc<OrderRow>>, Arc<OrderRow>);

/// Step 1's result.
#[derive(Debug)]
pub struct OrderBatch {
    good: Vec<(usize, Parsed)>,
    pub dead: Vec<Dead>,
    /// Lines that may be stored already: their latest rows are to be looked up.
    pub lookups: Vec<LineKey>,
    /// Messages that may still turn out to conflict, whose original bytes must be kept.
    pub keep_payload: HashSet<usize>,
}

/// Steps 2 and 3's result: what is written, what it changed.
#[derive(Debug, Default)]
pub struct Merged {
    pub orders: Vec<Arc<OrderRow>>,
    pub contacts: Vec<ContactRow>,
    pub changes: Vec<Change>,
    /// Messages written (acknowledged once the rows are durable).
    pub written: Vec<usize>,
    pub dead: Vec<Dead>,
    late: Vec<OrderRow>,
    latest: HashMap<LineKey, Arc<OrderRow>>,
    cart_claims: HashMap<LineKey, Vec<u64>>,
}

impl Merged {
    /// Lines with a version older than the stored one (their history is to be read).
    pub fn late_lines(&self) -> Vec<LineKey> {
        let mut keys: Vec<LineKey> = self.late.iter().map(line_of).collect();
        keys.sort();
        keys.dedup();
        keys
    }
}

impl Engine {
    /// Step 1: `items` are (index in the batch, subject's shop, the message read as an order).
    pub fn order_batch(&self, items: Vec<(usize, String, Result<Parsed, Reason>)>) -> OrderBatch {
        let mut good = Vec::with_capacity(items.len());
        let mut dead = Vec::new();
        for (i, shop, parsed) in items {
            match parsed {
                Ok(p) => good.push((i, p)),
                Err(reason) => dead.push((i, shop, reason)),
            }
        }
        let mut seen: HashMap<(&str, u64), usize> = HashMap::with_capacity(good.len());
        for (_, p) in &good {
            *seen.entry((p.row.shop_id.as_str(), p.row.order_no)).or_default() += 1;
        }
        let (mut lookups, mut keep_payload) = (Vec::new(), HashSet::new());
        for (i, p) in &good {
            let stored = self.known.may_have_line(&p.row.shop_id, p.row.order_no, p.row.ordered_at);
            if stored {
                lookups.push(line_of(&p.row));
            }
            if stored || seen[&(p.row.shop_id.as_str(), p.row.order_no)] > 1 {
                keep_payload.insert(*i);
            }
        }
        OrderBatch { good, dead, lookups, keep_payload }
    }

    /// Step 2: the versions merged, in version order, onto the latest stored rows.
    pub fn merge(&self, batch: OrderBatch, stored: HashMap<LineKey, OrderRow>) -> Merged {
        let OrderBatch { mut good, dead, .. } = batch;
        let mut m = Merged { dead, ..Merged::default() };
        m.latest = stored.into_iter().map(|(k, r)| (k, Arc::new(r))).collect();
        // Versions of one line in version order, whatever order JetStream delivered them in.
        good.sort_by_key(|(_, p)| p.row.version);
        for (_, p) in good.iter_mut().filter(|(_, p)| !p.cart_claims.is_empty()) {
            m.cart_claims.insert(line_of(&p.row), std::mem::take(&mut p.cart_claims));
        }
        for (i, Parsed { row, contact, kind, .. }) in good {
            let key = line_of(&row);
            let prev = m.latest.get(&key).cloned();
            if prev.as_ref().is_some_and(|s| s.version > row.version) {
                // Older than what is stored (redelivered after newer ones): folded in by step 3.
                m.late.push(row);
                m.contacts.extend(contact);
                m.written.push(i);
                continue;
            }
            if let Some(stored) = prev.as_ref().filter(|s| s.version == row.version)
                && !same_content(stored, &row)
            {
                let detail = format!(
                    "order {} version {} is already stored with different content; the first stands",
                    row.order_no, row.version
                );
                m.dead.push((i, row.shop_id, Reason::Conflict(detail)));
                continue;
            }
            let merged = Arc::new(merge(prev.as_deref(), row, kind, &self.statuses));
            // A late redelivery of older data changes nothing and raises nothing.
            if prev.as_ref().is_none_or(|s| s.version < merged.version) {
                m.latest.insert(key, Arc::clone(&merged));
                m.changes.push((prev, Arc::clone(&merged)));
            }
            m.orders.push(merged);
            m.contacts.extend(contact);
            m.written.push(i);
        }
        m
    }

    /// Step 3: each late line's history rebuilt in version order ([`rechain`]) with what
    /// changed written again under the same versions, and every step of the rebuilt chain from
    /// the first one the history lacks evaluated, so that alerts are those of in-order delivery.
    /// Returns how many lines were rebuilt.
    pub fn fold_in_late(&self, m: &mut Merged, mut history: HashMap<LineKey, Vec<OrderRow>>) -> u64 {
        let mut by_line: HashMap<LineKey, Vec<OrderRow>> = HashMap::new();
        for row in std::mem::take(&mut m.late) {
            by_line.entry(line_of(&row)).or_default().push(row);
        }
        let mut rebuilt = 0;
        for (key, rows) in by_line {
            let same_line = |o: &OrderRow| o.shop_id == key.shop && o.order_no == key.order_no;
            let stored = history.remove(&key).unwrap_or_default();
            let mut versions: std::collections::BTreeMap<u64, OrderRow> =
                stored.iter().map(|r| (r.version, r.clone())).collect();
            for o in m.orders.iter().filter(|o| same_line(o)) {
                versions.insert(o.version, OrderRow::clone(o));
            }
            // A version already in the history may still be missing from what was built on it
            // (a crash between the two tables' inserts): the chain is rebuilt either way, and
            // only what differs from the stored history is written.
            for r in rows {
                versions.entry(r.version).or_insert(r);
            }
            let chain = rechain(versions.into_values().collect(), &self.statuses);
            if chain.iter().all(|r| stored.contains(r)) {
                continue; // a redelivery: the history already is what in-order delivery gives
            }
            rebuilt += 1;
            m.orders.retain(|o| !same_line(o));
            m.orders.extend(chain.iter().filter(|r| !stored.contains(r)).cloned().map(Arc::new));
            m.changes.retain(|(_, c)| !same_line(c));
            let first_new = chain.iter().position(|r| !stored.contains(r)).unwrap_or(chain.len());
            let mut before = first_new.checked_sub(1).map(|i| Arc::new(chain[i].clone()));
            for r in &chain[first_new..] {
                let r = Arc::new(r.clone());
                m.changes.push((before.take(), Arc::clone(&r)));
                before = Some(r);
            }
            // The last step's row is the chain's end: the line's latest state.
            m.latest.insert(key, before.expect("the chain holds the late version"));
        }
        rebuilt
    }

    /// The carts whose lines step 4 needs: of new lines and lines with a claim (rare at steady
    /// state), when a line of the cart may be stored.
    pub fn carts_to_read(&self, m: &Merged) -> Vec<CartKey> {
        let mut carts: Vec<CartKey> = m
            .changes
            .iter()
            .filter(|(prev, row)| prev.is_none() || row.claim_status != 0)
            .filter(|(_, row)| self.known.may_have_pack(&row.shop_id, row.pack_no, row.ordered_at))
            .map(|(_, row)| CartKey { shop: row.shop_id.clone(), pack_no: row.pack_no })
            .collect();
        carts.sort();
        carts.dedup();
        carts
    }

    /// Step 4: the transitions these changes cause, the expectations they meet, the lines they
    /// store.
    pub fn evaluate(&self, m: &Merged, lines: &[PackLine], now: DateTime<Utc>) -> Plan {
        let today_jst = schemas::time::today_jst(now);
        let mut pending = Pending::new(&self.open);
        let mut met: HashSet<crate::keys::ExpectationKey> = HashSet::new();
        let mut plan = Plan::default();
        let carts = Carts::of(m, lines);
        for (prev, row) in &m.changes {
            let active_sibling = carts.active_sibling(m, row);
            let ctx = Context { now, today_jst, pack_has_active_sibling: active_sibling };
            let mut verdicts = alerts::evaluate(prev.as_deref(), row, &ctx, &self.thresholds);
            let (resolved, rows) = self.satisfy_edits(&mut pending, &mut met, row, &mut verdicts, now);
            plan.transitions.extend(resolved);
            plan.expectations.extend(rows);
            plan.transitions.extend(transitions_of(&mut pending, verdicts, row, row.version, now));
            plan.transitions.extend(settled_cart(&mut pending, row, now));
            // A new version means Qoo10 returned the line again (or a claim for it).
            let vanished = AlertKey::order(AlertKind::OrderVanished, &row.shop_id, row.order_no);
            plan.transitions.extend(pending.close(&vanished).map(|open| alerts::resolve(&open, row.version, now)));
        }
        plan.delta = Delta {
            alerts: pending.into_changes(),
            expectations_met: met.into_iter().collect(),
            stored: m.orders.iter().map(|o| (o.shop_id.clone(), o.order_no, o.pack_no, o.ordered_at)).collect(),
            ..Delta::default()
        };
        plan
    }

    /// OMS edits this version satisfies: their alerts resolved, the change alert they predicted
    /// not raised, the expectation rows marked `matched`.
    fn satisfy_edits(
        &self,
        pending: &mut Pending<'_>,
        met: &mut HashSet<crate::keys::ExpectationKey>,
        row: &OrderRow,
        verdicts: &mut Vec<(AlertKind, Verdict)>,
        now: DateTime<Utc>,
    ) -> (Vec<Alert>, Vec<ExpectationRow>) {
        let (mut alerts_out, mut rows) = (Vec::new(), Vec::new());
        let satisfied: Vec<_> = self
            .expectations
            .iter()
            .filter(|(key, (edit, _))| {
                key.shop == row.shop_id && !met.contains(*key) && edits::satisfied_by(edit, row) == Some(true)
            })
            .collect();
        for (key, (edit, _)) in satisfied {
            met.insert(key.clone());
            let predicted = edits::predicted_kind(edit);
            verdicts.retain(|(kind, v)| !(*kind == predicted && matches!(v, Verdict::Open(_))));
            let open = pending.close(&AlertKey::edit(&key.shop, &key.edit_key));
            alerts_out.extend(open.map(|open| alerts::resolve(&open, row.version, now)));
            rows.push(expectation_row(edit, "matched", row.version));
        }
        (alerts_out, rows)
    }
}

/// The cart lines step 4 looks at, indexed by cart: the stored ones read for this batch, and
/// the batch's own latest rows (a lookup per change, not a scan of the batch: a scan made a
/// first import's batch of 5,000 quadratic).
struct Carts<'a> {
    stored: HashMap<(&'a str, u64), Vec<&'a PackLine>>,
    in_batch: HashMap<(&'a str, u64), Vec<&'a OrderRow>>,
}

impl<'a> Carts<'a> {
    fn of(m: &'a Merged, lines: &'a [PackLine]) -> Carts<'a> {
        let mut stored: HashMap<(&str, u64), Vec<&PackLine>> = HashMap::new();
        for l in lines {
            stored.entry((l.shop_id.as_str(), l.pack_no)).or_default().push(l);
        }
        let mut in_batch: HashMap<(&str, u64), Vec<&OrderRow>> = HashMap::new();
        for l in m.latest.values() {
            in_batch.entry((l.shop_id.as_str(), l.pack_no)).or_default().push(l);
        }
        Carts { stored, in_batch }
    }

    /// Whether another line of the row's cart is still active. A sibling with a claim in the
    /// same poll is not "the rest of the cart", whether or not its claim has been processed yet;
    /// siblings first seen in this very batch count too, or the verdict would depend on where
    /// JetStream cut the batches.
    fn active_sibling(&self, m: &Merged, row: &OrderRow) -> bool {
        let cart = (row.shop_id.as_str(), row.pack_no);
        let claimed = m.cart_claims.get(&line_of(row));
        let claimed_too = |order_no: u64| claimed.is_some_and(|c| c.contains(&order_no));
        let stored = self.stored.get(&cart).map(Vec::as_slice).unwrap_or_default();
        let stored_sibling = stored.iter().filter(|l| l.order_no != row.order_no).any(|l| {
            let claim = m.latest.get(&LineKey::new(&l.shop_id, l.order_no)).map_or(l.claim_status, |r| r.claim_status);
            claim == 0 && !claimed_too(l.order_no)
        });
        let in_batch = self.in_batch.get(&cart).map(Vec::as_slice).unwrap_or_default();
        stored_sibling
            || in_batch.iter().any(|l| {
                l.order_no != row.order_no
                    && l.claim_status == 0
                    && !claimed_too(l.order_no)
                    && !stored.iter().any(|s| s.order_no == l.order_no)
            })
    }
}

/// A shipped line settles its cart: a removed sibling can no longer be mirrored.
fn settled_cart(pending: &mut Pending<'_>, row: &OrderRow, now: DateTime<Utc>) -> Vec<Alert> {
    if row.qoo10_status < 4 {
        return Vec::new();
    }
    let removed: Vec<AlertKey> = pending
        .of(AlertKind::ItemRemoved, &row.shop_id)
        .into_iter()
        .filter(|(_, pack_no)| *pack_no == row.pack_no)
        .map(|(k, _)| k)
        .collect();
    removed.iter().filter_map(|k| pending.close(k)).map(|open| alerts::resolve(&open, row.version, now)).collect()
}
