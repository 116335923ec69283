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

/// The four steps of a batch, with `stored` standing for ClickHouse.
fn batch(e: &Engine, rows: Vec<OrderRow>, stored: &HashMap<LineKey, Vec<OrderRow>>) -> (Plan, Merged) {
    let items = rows
        .into_iter()
        .enumerate()
        .map(|(i, row)| {
            (i, row.shop_id.clone(), Ok(Parsed { row, contact: None, kind: RowKind::Order, cart_claims: Vec::new() }))
        })
        .collect();
    let b = e.order_batch(items);
    let latest = b.lookups.iter().filter_map(|k| Some((k.clone(), stored.get(k)?.last()?.clone()))).collect();
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
