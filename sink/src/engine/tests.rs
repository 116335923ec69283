//! The engine's invariants (ARCHITECTURE.md), checked without NATS or ClickHouse: what a plan
//! decides for given input and lookups, and what applying it changes.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use schemas::alert::AlertState;
use schemas::dlq::Reason;
use schemas::edit::{Change, EDIT_SCHEMA_VERSION, OmsEdit};
use schemas::poll::PollSummary;
use schemas::raw::{RawQuery, RowKind};
use schemas::status::StatusMap;

use super::orders::{Merged, Parsed};
use super::{Engine, Expectations, Plan};
use crate::alerts::Thresholds;
use crate::keys::LineKey;
use crate::known::Known;
use crate::open::OpenAlerts;
use crate::rows::OrderRow;

fn now() -> DateTime<Utc> {
    "2026-11-29T03:00:00Z".parse().unwrap()
}

fn engine() -> Engine {
    Engine::new(
        StatusMap::default(),
        Thresholds::default(),
        OpenAlerts::default(),
        Expectations::default(),
        Known::default(),
    )
}

/// An order line version (version in microseconds).
fn line(order_no: u64, qoo10_status: u8, version: u64) -> OrderRow {
    OrderRow {
        order_no,
        pack_no: 800 + order_no,
        qoo10_status,
        item_title: "緑茶".into(),
        quantity: 2,
        ordered_at: 1_795_000_000,
        paid_at: Some(1_795_000_100),
        version,
        source_kind: "order".into(),
        source_method: "m".into(),
        ..OrderRow::empty("s")
    }
}

fn days(y: i32, m: u32, d: u32) -> Option<u16> {
    u16::try_from(schemas::time::epoch_day(chrono::NaiveDate::from_ymd_opt(y, m, d).unwrap())).ok()
}

/// One message of a batch as the consumer hands it to the engine (claim rows by `source_kind`).
fn item(i: usize, row: OrderRow, cart_claims: Vec<u64>) -> (usize, String, Result<Parsed, Reason>) {
    let kind = if row.source_kind == "claim" { RowKind::Claim } else { RowKind::Order };
    (i, row.shop_id.clone(), Ok(Parsed { row, contact: None, kind, cart_claims }))
}

/// The latest stored rows of the lines a batch looks up.
fn latest_of(b: &super::orders::OrderBatch, stored: &HashMap<LineKey, Vec<OrderRow>>) -> HashMap<LineKey, OrderRow> {
    b.lookups.iter().filter_map(|k| Some((k.clone(), stored.get(k)?.last()?.clone()))).collect()
}

/// The four steps of a batch, with `stored` standing for ClickHouse.
fn batch(e: &Engine, rows: Vec<OrderRow>, stored: &HashMap<LineKey, Vec<OrderRow>>) -> (Plan, Merged) {
    let items = rows.into_iter().enumerate().map(|(i, row)| item(i, row, Vec::new())).collect();
    let b = e.order_batch(items);
    let latest = latest_of(&b, stored);
    let mut m = e.merge(b, latest);
    let late = m.late_lines();
    if !late.is_empty() {
        e.fold_in_late(&mut m, late.iter().filter_map(|k| Some((k.clone(), stored.get(k)?.clone()))).collect());
    }
    (e.evaluate(&m, &[], now()), m)
}

/// Applies a plan and records what it stored, as the consumer does once all is durable.
fn commit(e: &mut Engine, plan: Plan, m: &Merged, stored: &mut HashMap<LineKey, Vec<OrderRow>>) {
    e.apply(plan.delta);
    for o in &m.orders {
        let versions = stored.entry(LineKey::new(&o.shop_id, o.order_no)).or_default();
        versions.retain(|v| v.version != o.version);
        versions.push(o.as_ref().clone());
        versions.sort_by_key(|v| v.version);
    }
}

fn kinds(plan: &Plan) -> Vec<(String, AlertState)> {
    let mut k: Vec<_> = plan.transitions.iter().map(|a| (a.kind.as_str().to_owned(), a.state)).collect();
    k.sort_by(|a, b| a.0.cmp(&b.0));
    k
}

/// Alerts open once and resolve once: a redelivered batch raises nothing again.
#[test]
fn a_redelivered_batch_raises_nothing_twice() {
    let (mut e, mut stored) = (engine(), HashMap::new());
    let (plan, m) = batch(&e, vec![line(1, 2, 10)], &stored);
    assert_eq!(kinds(&plan), vec![("ship_date_missing".into(), AlertState::Open)]);
    commit(&mut e, plan, &m, &mut stored);
    let (again, _) = batch(&e, vec![line(1, 2, 10)], &stored);
    assert!(again.transitions.is_empty(), "{:?}", again.transitions);
}

/// Arrival order does not matter: a late first version raises what in-order delivery raises.
#[test]
fn a_late_first_version_raises_what_in_order_delivery_raises() {
    let mut v1 = line(1, 3, 10);
    v1.estimated_ship_date = days(2026, 11, 25);
    let v2 = OrderRow { qoo10_status: 4, tracking_no: "T".into(), shipped_at: Some(1_795_900_000), ..v1.clone() };
    let v2 = OrderRow { version: 20, ..v2 };
    let in_order = {
        let (mut e, mut stored) = (engine(), HashMap::new());
        let (p1, m1) = batch(&e, vec![v1.clone()], &stored);
        let mut all = kinds(&p1);
        commit(&mut e, p1, &m1, &mut stored);
        all.extend(kinds(&batch(&e, vec![v2.clone()], &stored).0));
        all
    };
    let (mut e, mut stored) = (engine(), HashMap::new());
    let (p2, m2) = batch(&e, vec![v2], &stored);
    let mut reversed = kinds(&p2);
    commit(&mut e, p2, &m2, &mut stored);
    let (p1, m1) = batch(&e, vec![v1], &stored);
    reversed.extend(kinds(&p1));
    let written: Vec<u64> = m1.orders.iter().map(|o| o.version).collect();
    assert_eq!(written, [10], "the late version is written; the rest of the chain is already so");
    let sorted = |mut v: Vec<(String, AlertState)>| {
        v.sort_by(|a, b| (&a.0, a.1 == AlertState::Open).cmp(&(&b.0, b.1 == AlertState::Open)));
        v
    };
    assert_eq!(sorted(reversed), sorted(in_order.clone()));
    assert!(in_order.contains(&("ship_date_overdue".into(), AlertState::Open)), "{in_order:?}");
}

/// A second message with the same line and version but other content is a dead letter; the
/// first stands.
#[test]
fn conflicting_content_is_a_dead_letter() {
    let e = engine();
    let other = OrderRow { quantity: 5, ..line(1, 2, 10) };
    let (_, m) = batch(&e, vec![line(1, 2, 10), other], &HashMap::new());
    assert_eq!(m.orders.len(), 1);
    assert!(matches!(&m.dead[..], [(1, _, Reason::Conflict(_))]), "{:?}", m.dead);
}

fn summary(condition: u8, status: u8, order_nos: Vec<u64>, refused: Vec<String>) -> PollSummary {
    PollSummary {
        schema_version: 1,
        shop: "s".into(),
        poll_id: "s:1".into(),
        kind: RowKind::Order,
        method: "m".into(),
        query: RawQuery { status, from: "20261122".into(), to: "20261129".into(), condition },
        fetched_at: now(),
        order_nos,
        rows: 0,
        last_in_poll: false,
        refused_methods: refused,
    }
}

/// Vanished means unseen by a call that covers the line: by order date, in a complete poll.
#[test]
fn vanished_is_judged_from_covering_calls_only() {
    let e = engine();
    let known = vec![line(1, 2, 10), line(2, 3, 10)];
    let by_ship_date = super::polls::coverage(&[summary(3, 4, vec![], vec![])]);
    assert!(by_ship_date.windows.is_empty(), "a call by ship date covers nobody");
    let covered = super::polls::coverage(&[summary(1, 0, vec![1], vec![])]);
    assert_eq!(covered.windows[0].0, vec![1, 2, 3], "status 0 covers 1–3");
    let plan = e.evaluate_poll(&covered, known.clone(), now());
    let vanished: Vec<u64> = plan.transitions.iter().map(|a| a.order_no).collect();
    assert_eq!(vanished, [2]);
    let refused = super::polls::coverage(&[summary(1, 0, vec![1], vec!["ShippingBasic.GetClaimInfo_V3".into()])]);
    assert!(refused.windows.is_empty(), "a poll that skipped a refused method accuses nobody");
}

/// An alert that opens again after it resolved is a new alert (a new id, a version above its
/// resolution), never hidden under the old one's resolution in `alerts FINAL`.
#[test]
fn an_alert_that_opens_again_is_a_new_alert() {
    let mut e = engine();
    let known = vec![line(2, 3, 10)];
    let poll = |hours: i64, seen: Vec<u64>| {
        let at = now() + chrono::Duration::hours(hours);
        let id = format!("s:{}", at.timestamp_micros());
        super::polls::coverage(&[PollSummary { poll_id: id, fetched_at: at, ..summary(1, 0, seen, vec![]) }])
    };
    let first = e.evaluate_poll(&poll(0, vec![]), known.clone(), now());
    let opened = first.transitions[0].clone();
    e.apply(first.delta);
    let back = e.evaluate_poll(&poll(1, vec![2]), known.clone(), now());
    let resolved = back.transitions[0].clone();
    assert_eq!((resolved.alert_id.as_str(), resolved.state), (opened.alert_id.as_str(), AlertState::Resolved));
    e.apply(back.delta);
    let again = e.evaluate_poll(&poll(2, vec![]), known, now());
    let reopened = &again.transitions[0];
    assert_eq!(reopened.state, AlertState::Open);
    assert_ne!(reopened.alert_id, opened.alert_id, "a new alert");
    assert!(reopened.version > resolved.version, "above the old one's resolution");
}

/// An OMS edit Qoo10 does not show opens qoo10_correction_required; the version that shows it
/// resolves it, and the change alert it predicted is not raised.
#[test]
fn an_edit_waits_for_qoo10_and_its_predicted_change_is_not_raised() {
    let (mut e, mut stored) = (engine(), HashMap::new());
    let (p, m) = batch(&e, vec![line(1, 3, 10)], &stored);
    commit(&mut e, p, &m, &mut stored);
    let edit = OmsEdit {
        schema_version: EDIT_SCHEMA_VERSION,
        edit_id: "e1".into(),
        shop_id: "s".into(),
        change: Change::SetQuantity { order_no: 1, quantity: 3 },
        made_at: now(),
    };
    let plan = e.evaluate_edit(&edit, &stored[&LineKey::new("s", 1)], 7, now());
    assert_eq!(kinds(&plan), vec![("qoo10_correction_required".into(), AlertState::Open)]);
    assert_eq!(plan.expectations[0].state, "pending");
    e.apply(plan.delta);
    let (p, _) = batch(&e, vec![OrderRow { quantity: 3, ..line(1, 3, 20) }], &stored);
    assert_eq!(kinds(&p), vec![("qoo10_correction_required".into(), AlertState::Resolved)], "no quantity_changed");
    assert_eq!(p.expectations[0].state, "matched");
}

/// Alerts about lines terminal for a month resolve; alerts on lines still open stay open,
/// however old (they are still to be acted on, shown and counted).
#[test]
fn alerts_on_lines_settled_for_a_month_resolve_and_others_stay() {
    use crate::alerts::{Draft, open};
    use crate::keys::AlertKey;
    use schemas::alert::{AlertKind, Severity};
    let micros = |at: &str| u64::try_from(at.parse::<DateTime<Utc>>().unwrap().timestamp_micros()).unwrap();
    let (old, recent) = (micros("2026-09-01T00:00:00Z"), micros("2026-11-20T00:00:00Z"));
    let mut alerts = OpenAlerts::default();
    let draft = |kind| Draft {
        kind,
        severity: Severity::Warning,
        message: "m".into(),
        message_ja: "m".into(),
        details: serde_json::json!({}),
    };
    for (kind, order_no, opened) in [
        (AlertKind::ItemRemoved, 1, old),
        (AlertKind::OrderVanished, 2, old),
        (AlertKind::ItemRemoved, 3, old),
        (AlertKind::CommandRejected, 4, recent),
    ] {
        let a = open(&draft(kind), &line(order_no, 2, opened), opened, now());
        alerts.insert(AlertKey::order(kind, "s", order_no), &a);
    }
    let e = Engine::new(StatusMap::default(), Thresholds::default(), alerts, Expectations::default(), Known::default());
    let candidates = e.settle_candidates(now());
    assert_eq!(candidates.iter().map(|k| k.order_no).collect::<Vec<_>>(), vec![1, 2, 3], "opened a month ago");
    let latest: HashMap<LineKey, OrderRow> = [
        (1, OrderRow { claim_status: 3, ..line(1, 2, old + 1) }), // cancelled in September
        (2, line(2, 3, old)),                                     // still 配送準備: stays open
        (3, OrderRow { claim_status: 3, ..line(3, 2, recent) }),  // cancelled a week ago
    ]
    .into_iter()
    .map(|(n, r)| (LineKey::new("s", n), r))
    .collect();
    let plan = e.settle(&latest, now());
    let resolved: Vec<(u64, AlertState)> = plan.transitions.iter().map(|a| (a.order_no, a.state)).collect();
    assert_eq!(resolved, vec![(1, AlertState::Resolved)]);
}

// ---- Carts, batches and late versions: the engine's decisions line by line (each test names
// the rule it pins; docs/testing.md, "Mutation testing", lists what they were written against).

use crate::store::PackLine;

/// `line` in cart 900.
fn in_cart(order_no: u64, qoo10_status: u8, version: u64) -> OrderRow {
    OrderRow { pack_no: 900, ..line(order_no, qoo10_status, version) }
}

/// A batch as the consumer runs it: rows with the claims of their cart in the same poll, the
/// cart lines of `carts_to_read` read from `stored`.
fn batch_in(e: &Engine, rows: Vec<(OrderRow, Vec<u64>)>, stored: &HashMap<LineKey, Vec<OrderRow>>) -> (Plan, Merged) {
    let items = rows.into_iter().enumerate().map(|(i, (row, cart_claims))| item(i, row, cart_claims)).collect();
    let b = e.order_batch(items);
    let latest = latest_of(&b, stored);
    let m = e.merge(b, latest);
    let carts = e.carts_to_read(&m);
    let lines: Vec<PackLine> = stored
        .values()
        .filter_map(|v| v.last())
        .filter(|r| carts.iter().any(|c| c.shop == r.shop_id && c.pack_no == r.pack_no))
        .map(|r| PackLine {
            shop_id: r.shop_id.clone(),
            pack_no: r.pack_no,
            order_no: r.order_no,
            claim_status: r.claim_status,
        })
        .collect();
    (e.evaluate(&m, &lines, now()), m)
}

fn opened(plan: &Plan, kind: &str) -> Vec<u64> {
    plan.transitions
        .iter()
        .filter(|a| a.kind.as_str() == kind && a.state == AlertState::Open)
        .map(|a| a.order_no)
        .collect()
}

fn resolved(plan: &Plan, kind: &str) -> Vec<u64> {
    let resolved = plan.transitions.iter().filter(|a| a.kind.as_str() == kind && a.state == AlertState::Resolved);
    resolved.map(|a| a.order_no).collect()
}

/// Two lines of cart 900 stored, both 配送準備 with a ship date (no alert of their own).
fn stored_cart(e: &mut Engine, sibling_claim: u8) -> HashMap<LineKey, Vec<OrderRow>> {
    let mut stored = HashMap::new();
    let ready =
        |n, claim| OrderRow { estimated_ship_date: days(2026, 12, 20), claim_status: claim, ..in_cart(n, 3, 10) };
    let (p, m) = batch_in(e, vec![(ready(1, 0), vec![]), (ready(2, sibling_claim), vec![])], &stored);
    commit(e, p, &m, &mut stored);
    stored
}

fn cancelled(order_no: u64, version: u64) -> OrderRow {
    let row = in_cart(order_no, 3, version);
    OrderRow { claim_status: 1, estimated_ship_date: days(2026, 12, 20), source_kind: "claim".into(), ..row }
}

/// A line cancelled while a stored sibling stays active raises item_removed; not when the
/// sibling is cancelled already, nor when the sibling is claimed in the same poll.
#[test]
fn item_removed_needs_a_stored_sibling_still_active() {
    let mut e = engine();
    let stored = stored_cart(&mut e, 0);
    let (p, _) = batch_in(&e, vec![(cancelled(1, 20), vec![])], &stored);
    assert_eq!(opened(&p, "item_removed"), [1]);
    let (p, _) = batch_in(&e, vec![(cancelled(1, 20), vec![2])], &stored);
    assert_eq!(opened(&p, "item_removed"), [0u64; 0], "the sibling is claimed in the same poll");
    let mut e = engine();
    let stored = stored_cart(&mut e, 3);
    let (p, _) = batch_in(&e, vec![(cancelled(1, 20), vec![])], &stored);
    assert_eq!(opened(&p, "item_removed"), [0u64; 0], "the sibling is cancelled already");
    let new_sibling = OrderRow { estimated_ship_date: days(2026, 12, 20), ..in_cart(3, 3, 20) };
    let (p, _) = batch_in(&e, vec![(cancelled(1, 20), vec![]), (new_sibling, vec![])], &stored);
    assert_eq!(opened(&p, "item_removed"), [1], "a sibling new in this batch, beside stored ones");
}

/// Siblings first seen in the same batch count as the cart's rest, whatever their claim.
#[test]
fn item_removed_counts_siblings_new_in_the_same_batch() {
    let e = engine();
    let active = OrderRow { estimated_ship_date: days(2026, 12, 20), ..in_cart(2, 3, 10) };
    let (p, _) = batch_in(&e, vec![(cancelled(1, 10), vec![]), (active.clone(), vec![])], &HashMap::new());
    assert_eq!(opened(&p, "item_removed"), [1]);
    let (p, _) = batch_in(&e, vec![(cancelled(1, 10), vec![2]), (active, vec![])], &HashMap::new());
    assert_eq!(opened(&p, "item_removed"), [0u64; 0], "claimed in the same poll");
    let both = vec![(cancelled(1, 10), vec![]), (cancelled(2, 10), vec![])];
    let (p, _) = batch_in(&e, both, &HashMap::new());
    assert_eq!(opened(&p, "item_removed"), [0u64; 0], "the whole cart is cancelled");
    let other_cart = OrderRow { pack_no: 901, ..cancelled(1, 10) };
    let (p, _) = batch_in(&e, vec![(other_cart, vec![]), (in_cart(2, 3, 10), vec![])], &HashMap::new());
    assert_eq!(opened(&p, "item_removed"), [0u64; 0], "another cart's line is no sibling");
}

/// A shipped sibling settles the cart: item_removed resolves (only in that cart, only on
/// shipping, status 4 on).
#[test]
fn a_shipped_sibling_resolves_item_removed_of_its_cart() {
    let mut e = engine();
    let mut stored = stored_cart(&mut e, 0);
    let (p, m) = batch_in(&e, vec![(cancelled(1, 20), vec![])], &stored);
    commit(&mut e, p, &m, &mut stored);
    let sibling =
        |status, pack_no| OrderRow { pack_no, estimated_ship_date: days(2026, 12, 20), ..line(2, status, 30) };
    let (p, _) = batch_in(&e, vec![(sibling(3, 900), vec![])], &stored);
    assert_eq!(resolved(&p, "item_removed"), [0u64; 0], "still 配送準備");
    let (p, _) = batch_in(&e, vec![(OrderRow { order_no: 7, ..sibling(4, 901) }, vec![])], &stored);
    assert_eq!(resolved(&p, "item_removed"), [0u64; 0], "another cart shipped");
    let (p, _) = batch_in(&e, vec![(OrderRow { tracking_no: "T".into(), ..sibling(4, 900) }, vec![])], &stored);
    assert_eq!(resolved(&p, "item_removed"), [1]);
}

/// Carts are read for new lines and claimed lines whose cart may be stored, once each.
#[test]
fn carts_are_read_for_new_and_claimed_lines_only() {
    let mut e = engine();
    let stored = stored_cart(&mut e, 0);
    let carts = |rows: Vec<OrderRow>| {
        let b = e.order_batch(rows.into_iter().enumerate().map(|(i, row)| item(i, row, vec![])).collect());
        let latest = latest_of(&b, &stored);
        e.carts_to_read(&e.merge(b, latest)).into_iter().map(|c| c.pack_no).collect::<Vec<_>>()
    };
    let changed = OrderRow { estimated_ship_date: days(2026, 12, 21), ..in_cart(1, 3, 20) };
    assert_eq!(carts(vec![changed]), [0u64; 0], "a changed line without a claim");
    assert_eq!(carts(vec![cancelled(1, 20)]), [900], "a claimed line");
    assert_eq!(carts(vec![in_cart(3, 2, 20), in_cart(4, 2, 20)]), [900], "new lines in a stored cart, read once");
    assert_eq!(carts(vec![OrderRow { pack_no: 950, ..line(5, 2, 20) }]), [0u64; 0], "a cart never stored");
}

/// Payloads are kept for lines that may conflict: stored ones (looked up) and lines twice in
/// the batch; a batch's parse failures stay dead letters.
#[test]
fn a_batch_keeps_payloads_only_where_a_conflict_is_possible() {
    let mut e = engine();
    let _ = stored_cart(&mut e, 0);
    let b = e.order_batch(vec![
        item(0, in_cart(1, 3, 20), vec![]),
        item(1, line(5, 2, 10), vec![]),
        item(2, line(6, 2, 10), vec![]),
        item(3, line(6, 2, 11), vec![]),
        (4, "s".to_owned(), Err(Reason::Conflict("x".into()))),
    ]);
    let mut keep: Vec<usize> = b.keep_payload.iter().copied().collect();
    keep.sort();
    assert_eq!(keep, [0, 2, 3]);
    assert_eq!(b.lookups, [LineKey::new("s", 1)]);
    let m = e.merge(b, HashMap::new());
    assert_eq!(m.dead.iter().map(|d| d.0).collect::<Vec<_>>(), [4]);
}

/// A redelivered version changes nothing; a new version resolves what it ends and opens no
/// alert that is open already.
#[test]
fn a_new_version_resolves_what_it_ends_and_reopens_nothing() {
    let (mut e, mut stored) = (engine(), HashMap::new());
    let (p, m) = batch(&e, vec![line(1, 2, 10)], &stored);
    commit(&mut e, p, &m, &mut stored);
    let (_, m) = batch(&e, vec![line(1, 2, 10)], &stored);
    assert!(m.changes.is_empty(), "a redelivery is no change");
    let (p, _) = batch(&e, vec![OrderRow { paid_at: Some(1_795_000_200), ..line(1, 2, 20) }], &stored);
    assert!(p.transitions.is_empty(), "ship_date_missing is open already: {:?}", p.transitions);
    let dated = OrderRow { estimated_ship_date: days(2026, 12, 20), ..line(1, 3, 20) };
    let (p, _) = batch(&e, vec![dated], &stored);
    assert_eq!(resolved(&p, "ship_date_missing"), [1]);
}

/// A late version folded in rebuilds only its own line: the other lines of the batch are
/// written as they came, and the count says one line was rebuilt.
#[test]
fn a_late_version_rebuilds_its_line_only() {
    let (mut e, mut stored) = (engine(), HashMap::new());
    let v1 = OrderRow { estimated_ship_date: days(2026, 12, 20), ..line(1, 3, 10) };
    let v2 = OrderRow { tracking_no: "T".into(), ..OrderRow { qoo10_status: 4, version: 20, ..v1.clone() } };
    let (p, m) = batch(&e, vec![v2], &stored);
    commit(&mut e, p, &m, &mut stored);
    let items = [v1.clone(), line(2, 2, 10), OrderRow { order_no: 1, shop_id: "t".into(), ..v1 }];
    let b = e.order_batch(items.into_iter().enumerate().map(|(i, row)| item(i, row, vec![])).collect());
    let latest = latest_of(&b, &stored);
    let mut m = e.merge(b, latest);
    let history = m.late_lines().iter().filter_map(|k| Some((k.clone(), stored.get(k)?.clone()))).collect();
    assert_eq!(e.fold_in_late(&mut m, history), 1);
    let mut written: Vec<(String, u64, u64)> =
        m.orders.iter().map(|o| (o.shop_id.clone(), o.order_no, o.version)).collect();
    written.sort();
    assert_eq!(written, [("s".into(), 1, 10), ("s".into(), 2, 10), ("t".into(), 1, 10)]);
    let plan = e.evaluate(&m, &[], now());
    assert_eq!(opened(&plan, "ship_date_missing"), [2], "the other lines' changes are evaluated too");
    commit(&mut e, plan, &m, &mut stored);
    let (_, m) = batch(&e, vec![OrderRow { estimated_ship_date: days(2026, 12, 20), ..line(1, 3, 10) }], &stored);
    assert!(m.orders.is_empty(), "the late version again: the history already holds it");
}

fn quantity_edit(id: &str, shop: &str, quantity: u32) -> OmsEdit {
    OmsEdit {
        schema_version: EDIT_SCHEMA_VERSION,
        edit_id: id.into(),
        shop_id: shop.into(),
        change: Change::SetQuantity { order_no: 1, quantity },
        made_at: now(),
    }
}

/// An edit pending in the engine: the same edit again is read as is, other content under its id
/// is a conflict; the correction alert names the edit, its line and cart, and the edit's time.
#[test]
fn an_edit_is_read_against_the_pending_ones_and_its_alert_names_it() {
    let (mut e, mut stored) = (engine(), HashMap::new());
    let (p, m) = batch(&e, vec![line(1, 3, 10)], &stored);
    commit(&mut e, p, &m, &mut stored);
    let edit = quantity_edit("e1", "s", 3);
    let plan = e.evaluate_edit(&edit, &stored[&LineKey::new("s", 1)], 7, now());
    let alert = &plan.transitions[0];
    assert_eq!(alert.alert_id, "qoo10_correction_required:s:quantity:1:e1");
    assert_eq!((alert.order_no, alert.pack_no), (1, 801));
    assert_eq!(alert.version, u64::try_from(now().timestamp_micros()).unwrap());
    e.apply(plan.delta);
    let payload = |edit: &OmsEdit| serde_json::to_vec(edit).unwrap();
    assert_eq!(e.read_edit(&payload(&edit), "s").expect("the same edit"), edit);
    let other = quantity_edit("e1", "s", 4);
    assert!(matches!(e.read_edit(&payload(&other), "s"), Err(Reason::Conflict(_))));
    assert!(e.read_edit(&payload(&quantity_edit("e2", "s", 4)), "s").is_ok(), "another edit");
}

/// A version satisfies only its own shop's edits, each once; the other alerts it raises stand.
#[test]
fn a_version_satisfies_its_own_shops_edits_and_raises_its_other_alerts() {
    let (mut e, mut stored) = (engine(), HashMap::new());
    let v1 = OrderRow { estimated_ship_date: days(2026, 12, 20), ..line(1, 3, 10) };
    let (p, m) = batch(&e, vec![v1.clone()], &stored);
    commit(&mut e, p, &m, &mut stored);
    let plan = e.evaluate_edit(&quantity_edit("e1", "s", 3), &stored[&LineKey::new("s", 1)], 7, now());
    e.apply(plan.delta);
    let elsewhere = OrderRow { shop_id: "t".into(), quantity: 3, ..v1.clone() };
    let (p, _) = batch(&e, vec![elsewhere], &stored);
    assert!(p.expectations.is_empty(), "another shop's line satisfies nothing");
    // Quantity as the OMS set it, and the ship date moved into the past: overdue opens.
    let v2 = OrderRow { quantity: 3, estimated_ship_date: days(2026, 11, 20), version: 20, ..v1.clone() };
    let v3 = OrderRow { version: 30, ..v2.clone() };
    let (p, _) = batch(&e, vec![v2.clone()], &stored);
    assert_eq!(opened(&p, "ship_date_overdue"), [1], "the version that satisfies the edit raises its others");
    let (p, m) = batch(&e, vec![v2, v3], &stored);
    assert_eq!(p.expectations.len(), 1, "matched once: {:?}", p.expectations);
    assert_eq!(resolved(&p, "qoo10_correction_required"), [1]);
    assert!(opened(&p, "quantity_changed").is_empty(), "the change the edit predicted");
    commit(&mut e, p, &m, &mut stored);
    let (p, _) = batch(&e, vec![OrderRow { version: 40, quantity: 3, ..v1 }], &stored);
    assert!(p.expectations.is_empty(), "met: not matched again");
}

/// The sweep opens what time alone opens, named by the day (JST) it opened, and its delta keeps
/// it open: the next sweep raises nothing.
#[test]
fn the_sweep_opens_what_time_opens_once() {
    let mut e = engine();
    let due = OrderRow { estimated_ship_date: days(2026, 11, 20), ..line(1, 3, 10) };
    let waiting = OrderRow { estimated_ship_date: days(2026, 12, 20), ..line(2, 3, 10) };
    let plan = e.sweep(&[due.clone(), waiting], now());
    assert_eq!(opened(&plan, "ship_date_overdue"), [1]);
    let midnight_jst: DateTime<Utc> = "2026-11-28T15:00:00Z".parse().unwrap();
    assert_eq!(plan.transitions[0].version, u64::try_from(midnight_jst.timestamp_micros()).unwrap());
    e.apply(plan.delta);
    assert!(e.open_alerts().contains_key(&crate::keys::AlertKey::order(
        schemas::alert::AlertKind::ShipDateOverdue,
        "s",
        1
    )));
    assert!(e.sweep(std::slice::from_ref(&due), now()).transitions.is_empty(), "open already");
    let shipped = OrderRow { tracking_no: "T".into(), ..due };
    assert_eq!(resolved(&e.sweep(&[shipped], now()), "ship_date_overdue"), [1]);
}

/// Settling resolves for good (its delta applied) and only rows terminal before the cutoff;
/// old fingerprints are let go of.
#[test]
fn settling_is_applied_and_old_fingerprints_go() {
    use crate::keys::AlertKey;
    use schemas::alert::AlertKind;
    let (mut e, mut stored) = (engine(), HashMap::new());
    let cutoff = u64::try_from((now() - chrono::Duration::days(super::SETTLE_AFTER_DAYS)).timestamp_micros()).unwrap();
    let (p, m) = batch(&e, vec![line(1, 2, cutoff - 10), line(2, 2, cutoff - 10)], &stored);
    commit(&mut e, p, &m, &mut stored);
    let key = |n| AlertKey::order(AlertKind::ShipDateMissing, "s", n);
    assert!(e.open_alerts().contains_key(&key(1)) && e.open_alerts().contains_key(&key(2)));
    let latest: HashMap<LineKey, OrderRow> = [
        (LineKey::new("s", 1), OrderRow { claim_status: 3, ..line(1, 2, cutoff - 1) }),
        (LineKey::new("s", 2), OrderRow { claim_status: 3, ..line(2, 2, cutoff) }),
    ]
    .into();
    let plan = e.settle(&latest, now());
    assert_eq!(resolved(&plan, "ship_date_missing"), [1], "line 2 turned terminal at the cutoff itself");
    e.apply(plan.delta);
    assert!(!e.open_alerts().contains_key(&key(1)) && e.open_alerts().contains_key(&key(2)));
    let ordered_at = line(1, 2, 0).ordered_at;
    assert!(!e.known().may_have_line("s", 3, ordered_at), "never stored");
    e.forget_old_lines(now() + chrono::Duration::days(60));
    assert!(e.known().may_have_line("s", 3, ordered_at), "older than the window: may be stored");
}

#[test]
fn a_poll_id_names_when_it_started() {
    assert_eq!(super::polls::poll_started("shop:a:1795910400000000"), 1_795_910_400_000_000);
    assert_eq!(super::polls::poll_started("no-time"), 0);
}
