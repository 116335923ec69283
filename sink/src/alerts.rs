//! The alert rules: what a seller must correct by hand on Qoo10 (or mirror in the OMS). Pure.
//!
//! [`evaluate`] looks at one order line's new version (and the one before it) and says, per alert
//! kind, whether the situation holds now. The engine in `main.rs` turns verdicts into transitions
//! against the open alerts it holds, so each alert opens once and resolves once.
//!
//! An alert's id is `<kind>:<shop>:<order_no>:<version that opened it>`: the same input always
//! yields the same id, so redelivery and restarts cannot open a second one.

use chrono::{DateTime, NaiveDate, Utc};
use schemas::alert::{ALERT_SCHEMA_VERSION, Alert, AlertKind, AlertState, Severity};
use schemas::calendar::BusinessDays;
use serde_json::json;

use crate::rows::{OrderRow, date};

/// Thresholds (from `[alerts]` in pipeline.toml).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Thresholds {
    /// `ship_date_missing` opens once this many business days (JST) have passed since payment.
    pub ship_date_missing_after_business_days: u32,
    /// `ship_date_overdue` opens when the ship date has passed and at least this many business
    /// days (JST) have gone by since (0: the day after).
    pub overdue_grace_business_days: u32,
    /// Business days: JST weekdays that are neither national holidays nor the shop's closing days.
    pub calendar: BusinessDays,
}

impl Thresholds {
    /// Business days after `from` up to and including `to` (0 when `to` is not after `from`).
    pub fn business_days_between(&self, from: NaiveDate, to: NaiveDate) -> u32 {
        self.calendar.between(from, to)
    }
}

/// What a rule says about one kind for one order line now.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The situation holds: open an alert (if none is open) with this text.
    Open(Draft),
    /// The situation is over: resolve the open alert, if any.
    Resolve,
    /// Nothing new: leave things as they are.
    Keep,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Draft {
    pub kind: AlertKind,
    pub severity: Severity,
    pub message: String,
    pub message_ja: String,
    pub details: serde_json::Value,
}

/// What the engine knows besides the two versions.
#[derive(Debug, Clone, Copy)]
pub struct Context {
    pub now: DateTime<Utc>,
    pub today_jst: NaiveDate,
    /// Another line of the same cart is still active (not cancelled).
    pub pack_has_active_sibling: bool,
}

fn fmt_date(d: Option<NaiveDate>) -> String {
    d.map(|d| d.to_string()).unwrap_or_else(|| "(none)".into())
}

fn active(r: &OrderRow) -> bool {
    r.claim_status == 0
}

/// The line has shipped, been delivered, or is under a claim: changes can no longer be mirrored.
fn settled(r: &OrderRow) -> bool {
    r.qoo10_status >= 4 || r.claim_status != 0
}

fn cancelling(r: &OrderRow) -> bool {
    schemas::status::is_cancellation(r.claim_status)
}

/// A version of the shop's first import shows how things were when the pipeline first looked:
/// no change can be told from it (the contract's "First import").
fn first_import(r: &OrderRow) -> bool {
    r.first_import != 0
}

/// Every rule for one new version of an order line, in a fixed order of kinds. `prev` is the
/// stored version before it.
pub fn evaluate(prev: Option<&OrderRow>, row: &OrderRow, ctx: &Context, t: &Thresholds) -> Vec<(AlertKind, Verdict)> {
    vec![
        (AlertKind::ShipDateMissing, ship_date_missing(row, ctx, t)),
        (AlertKind::SkippedNewStatus, skipped_new_status(prev, row)),
        (AlertKind::QuantityChanged, quantity_changed(prev, row)),
        (AlertKind::ShipDateChanged, ship_date_changed(prev, row)),
        (AlertKind::ShipDateOverdue, ship_date_overdue(row, ctx, t)),
        (AlertKind::ItemAdded, item_added(prev, row)),
        (AlertKind::ItemRemoved, item_removed(prev, row, ctx)),
    ]
}

fn draft(
    kind: AlertKind,
    severity: Severity,
    message: String,
    message_ja: String,
    details: serde_json::Value,
) -> Verdict {
    Verdict::Open(Draft { kind, severity, message, message_ja, details })
}

/// Paid, waiting in 配送要請 without 発送予定日 (after the configured business days).
fn ship_date_missing(row: &OrderRow, ctx: &Context, t: &Thresholds) -> Verdict {
    let waiting = row.qoo10_status == 2 && active(row) && row.estimated_ship_date.is_none();
    if !waiting {
        return Verdict::Resolve;
    }
    let paid_long_enough = row
        .paid_at
        .and_then(|p| DateTime::from_timestamp(i64::from(p), 0))
        .map(|p| {
            let paid_day = p.with_timezone(&schemas::time::jst()).date_naive();
            t.business_days_between(paid_day, ctx.today_jst) >= t.ship_date_missing_after_business_days
        })
        .unwrap_or(t.ship_date_missing_after_business_days == 0);
    if !paid_long_enough {
        return Verdict::Keep;
    }
    let (no, title) = (row.order_no, &row.item_title);
    draft(
        AlertKind::ShipDateMissing,
        Severity::Warning,
        format!(
            "Order {no} ({title}, cart {}) has no estimated shipping date (発送予定日). Set it in QSM (配送管理 → 発送予定日), \
             or through QAPI (SetSellerCheckYN_V2): the pipeline's write-back sets it where the shop enables it.",
            row.pack_no
        ),
        format!(
            "注文 {no} の発送予定日が未設定です。QSMで発送予定日を設定してください（QAPIでも設定できます：ショップでwrite-backを有効にするとパイプラインが設定します）。"
        ),
        json!({"field": "estimated_ship_date", "qoo10_status": row.qoo10_status, "command": {
            // What write-back would send (ship_date: 発送可能日 when it is ahead, else to fill in).
            "action": "set_ship_date", "order_no": no,
            "ship_date": date(row.available_ship_date).filter(|d| *d > ctx.today_jst).map(|d| d.to_string()),
        }}),
    )
}

/// First seen already in 配送準備 (3), after the shop's first import.
fn skipped_new_status(prev: Option<&OrderRow>, row: &OrderRow) -> Verdict {
    let no = row.order_no;
    match prev {
        None if row.qoo10_status == 3 && active(row) && !first_import(row) => draft(
            AlertKind::SkippedNewStatus,
            Severity::Warning,
            format!(
                "Order {no} ({}) was first seen already in 配送準備 (status 3): its ship date was set before it was imported. \
                 Check that it is in the OMS; an importer that reads only 配送要請 misses it.",
                row.item_title
            ),
            format!(
                "注文 {no} は取込前に発送予定日が設定され、配送準備（ステータス3）で初めて取得されました。\
                 OMSに取り込まれているか確認してください（配送要請だけを取得する設定では取りこぼします）。"
            ),
            json!({"first_seen_status": 3, "estimated_ship_date": fmt_date(date(row.estimated_ship_date))}),
        ),
        _ if settled(row) => Verdict::Resolve,
        _ => Verdict::Keep,
    }
}

/// The quantity differs from the previous version.
fn quantity_changed(prev: Option<&OrderRow>, row: &OrderRow) -> Verdict {
    let (no, title) = (row.order_no, &row.item_title);
    match prev {
        Some(p) if p.quantity != row.quantity && !settled(row) && !first_import(row) => draft(
            AlertKind::QuantityChanged,
            Severity::Warning,
            format!(
                "The quantity of order {no} ({title}) changed from {} to {}. Make both sides agree: change it in the OMS and in QSM.",
                p.quantity, row.quantity
            ),
            format!(
                "注文 {no}（{title}）の数量が {} から {} に変更されました。OMSとQoo10（QSM）の両方で数量を合わせてください。",
                p.quantity, row.quantity
            ),
            json!({"field": "quantity", "from": p.quantity, "to": row.quantity}),
        ),
        _ if settled(row) => Verdict::Resolve,
        _ => Verdict::Keep,
    }
}

/// 発送予定日 moved.
fn ship_date_changed(prev: Option<&OrderRow>, row: &OrderRow) -> Verdict {
    let (no, title) = (row.order_no, &row.item_title);
    match prev {
        Some(p)
            if p.estimated_ship_date.is_some()
                && row.estimated_ship_date.is_some()
                && p.estimated_ship_date != row.estimated_ship_date
                && !settled(row)
                && !first_import(row) =>
        {
            let (from, to) = (fmt_date(date(p.estimated_ship_date)), fmt_date(date(row.estimated_ship_date)));
            draft(
                AlertKind::ShipDateChanged,
                Severity::Info,
                format!(
                    "The estimated shipping date of order {no} ({title}) moved from {from} to {to}. Inform the buyer and update the OMS."
                ),
                format!("注文 {no} の発送予定日が {from} から {to} に変更されました。購入者とOMSに反映してください。"),
                json!({"field": "estimated_ship_date", "from": from, "to": to}),
            )
        }
        _ if settled(row) => Verdict::Resolve,
        _ => Verdict::Keep,
    }
}

/// In 配送準備, 発送予定日 (JST) has passed, no tracking number.
fn ship_date_overdue(row: &OrderRow, ctx: &Context, t: &Thresholds) -> Verdict {
    let overdue = date(row.estimated_ship_date).is_some_and(|d| {
        d < ctx.today_jst && t.business_days_between(d, ctx.today_jst) >= t.overdue_grace_business_days
    });
    if !(row.qoo10_status == 3 && active(row) && overdue && row.tracking_no.is_empty()) {
        return Verdict::Resolve;
    }
    let (no, title, d) = (row.order_no, &row.item_title, fmt_date(date(row.estimated_ship_date)));
    draft(
        AlertKind::ShipDateOverdue,
        Severity::Critical,
        format!(
            "Order {no} ({title}) was due to ship on {d} (JST) and has no tracking number. Ship it and register the tracking number, \
             or update 発送予定日 in QSM."
        ),
        format!(
            "注文 {no} の発送予定日 {d} を過ぎましたが、送り状番号が登録されていません。発送して送り状番号を登録するか、QSMで発送予定日を更新してください。"
        ),
        json!({"field": "estimated_ship_date", "estimated_ship_date": d, "today_jst": ctx.today_jst.to_string()}),
    )
}

/// A line new to the pipeline in a cart an earlier complete poll already showed (the fetcher's
/// evidence, not the time between sightings).
fn item_added(prev: Option<&OrderRow>, row: &OrderRow) -> Verdict {
    let (no, title) = (row.order_no, &row.item_title);
    match prev {
        None if row.new_in_known_cart != 0 && !settled(row) && !first_import(row) => draft(
            AlertKind::ItemAdded,
            Severity::Warning,
            format!(
                "Cart {} gained a line: order {no}, {title} × {}. Add it in the OMS as well.",
                row.pack_no, row.quantity
            ),
            format!(
                "カート {} に商品が追加されました（注文 {no}、{title} × {}）。OMSにも追加してください。",
                row.pack_no, row.quantity
            ),
            json!({"pack_no": row.pack_no, "item_code": row.item_code, "quantity": row.quantity}),
        ),
        _ if settled(row) && !cancelling(row) => Verdict::Resolve,
        _ => Verdict::Keep,
    }
}

/// One line of a cart with other active lines is being cancelled.
fn item_removed(prev: Option<&OrderRow>, row: &OrderRow, ctx: &Context) -> Verdict {
    let newly_cancelling = cancelling(row) && prev.is_none_or(|p| !cancelling(p));
    if !(newly_cancelling && ctx.pack_has_active_sibling && !first_import(row)) {
        return Verdict::Keep;
    }
    let (no, title) = (row.order_no, &row.item_title);
    draft(
        AlertKind::ItemRemoved,
        Severity::Warning,
        format!(
            "Cart {} lost a line: order {no}, {title} × {} is cancelled on Qoo10 while the rest of the cart stays. Remove it in the OMS as well.",
            row.pack_no, row.quantity
        ),
        format!(
            "カート {} から商品が削除されました（注文 {no}、{title} × {} がキャンセル）。OMSからも削除してください。",
            row.pack_no, row.quantity
        ),
        json!({"pack_no": row.pack_no, "item_code": row.item_code, "claim_status": row.claim_status}),
    )
}

/// Qoo10's Japanese name of a shipping status (as QSM shows it).
pub fn status_ja(code: u8) -> &'static str {
    match code {
        1 => "配送待ち（入金待ち）",
        2 => "配送要請",
        3 => "配送準備",
        4 => "配送中",
        5 => "配送完了",
        _ => "不明",
    }
}

/// The lines a complete poll should have seen but did not, and no claim explains.
///
/// `known` are the stored lines in the polled statuses and window that were stored *before* the
/// poll began (a line stored later was seen later, so it did not vanish); `seen` and `claimed`
/// are every order number the poll's shipping and claim calls returned.
pub fn vanished<'a>(
    known: &'a [OrderRow],
    seen: &std::collections::HashSet<u64>,
    claimed: &std::collections::HashSet<u64>,
) -> Vec<(&'a OrderRow, Draft)> {
    known
        .iter()
        .filter(|r| r.claim_status == 0 && !seen.contains(&r.order_no) && !claimed.contains(&r.order_no))
        .map(|r| {
            let (no, title, label) = (r.order_no, &r.item_title, status_ja(r.qoo10_status));
            (
                r,
                Draft {
                    kind: AlertKind::OrderVanished,
                    severity: Severity::Critical,
                    message: format!(
                        "Order {no} ({title}) is no longer returned by Qoo10 in status {} ({label}) and no claim explains it. \
                         Check in QSM whether it was cancelled; if this shop does not fetch every status, it may have moved to one it does not fetch.",
                        r.qoo10_status
                    ),
                    message_ja: format!(
                        "注文 {no}（{title}）がQoo10の「{label}」の一覧から消えましたが、キャンセル等のクレームは見つかりません。\
                         QSMでキャンセルされていないか確認してください（取得対象外のステータスに移った可能性もあります）。"
                    ),
                    details: json!({"last_status": r.qoo10_status, "last_seen_version": r.version}),
                },
            )
        })
        .collect()
}

/// A new alert from a draft, its id fixed by the version that opened it.
///
/// `version` is the version that opens it, and names it: the row's own for a change it brought,
/// a later one when time or a poll opens it on an unchanged row (so an alert that opens again
/// after resolving is a new alert, never hidden under its old resolution).
pub fn open(draft: &Draft, row: &OrderRow, version: u64, now: DateTime<Utc>) -> Alert {
    Alert {
        schema_version: ALERT_SCHEMA_VERSION,
        alert_id: format!("{}:{}:{}:{}", draft.kind, row.shop_id, row.order_no, version),
        kind: draft.kind,
        shop_id: row.shop_id.clone(),
        order_no: row.order_no,
        pack_no: row.pack_no,
        state: AlertState::Open,
        severity: draft.severity,
        message: draft.message.clone(),
        message_ja: draft.message_ja.clone(),
        details: with_clock(&draft.details, row),
        opened_at: now,
        updated_at: now,
        version,
        acknowledged_at: None,
    }
}

/// The draft's details plus what the alert center's penalty clock reads (`crate::center::urgency`):
/// `paid_at` (UTC) and `ship_by`, the JST date the order must ship by (発送予定日, else 発送可能日).
fn with_clock(details: &serde_json::Value, row: &OrderRow) -> serde_json::Value {
    let mut details = details.clone();
    if let serde_json::Value::Object(m) = &mut details {
        if let Some(paid) = row.paid_at.and_then(|t| DateTime::from_timestamp(i64::from(t), 0)) {
            m.insert("paid_at".into(), json!(paid.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)));
        }
        if let Some(d) = crate::rows::date(row.estimated_ship_date.or(row.available_ship_date)) {
            m.insert("ship_by".into(), json!(d.to_string()));
        }
    }
    details
}

/// The resolution of an open alert, caused by version `by_version` of the order line.
pub fn resolve(open: &Alert, by_version: u64, now: DateTime<Utc>) -> Alert {
    Alert { state: AlertState::Resolved, updated_at: now, version: by_version.max(open.version + 1), ..open.clone() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(qoo10: u8, claim: u8) -> OrderRow {
        OrderRow {
            order_no: 1090000101,
            pack_no: 890000101,
            qoo10_status: qoo10,
            claim_status: claim,
            item_code: "1000000555".into(),
            seller_item_code: "TEA".into(),
            item_title: "緑茶".into(),
            quantity: 2,
            order_price: 128000,
            total: 256000,
            currency: "JPY".into(),
            ordered_at: 1_795_000_000,
            paid_at: Some(1_795_000_100),
            version: 1_795_900_000_000_000,
            fetched_at: 1_795_900_000,
            source_kind: "order".into(),
            source_method: "m".into(),
            raw_seq: 1,
            ..OrderRow::empty("s")
        }
    }

    fn ctx() -> Context {
        Context {
            now: DateTime::from_timestamp(1_795_900_000, 0).unwrap(),
            today_jst: NaiveDate::from_ymd_opt(2026, 11, 29).unwrap(),
            pack_has_active_sibling: false,
        }
    }

    fn days(y: i32, m: u32, d: u32) -> Option<u16> {
        Some((NaiveDate::from_ymd_opt(y, m, d).unwrap() - NaiveDate::from_ymd_opt(1970, 1, 1).unwrap()).num_days()
            as u16)
    }

    /// The kinds a set of verdicts opens.
    fn opened(v: &[(AlertKind, Verdict)]) -> Vec<&'static str> {
        v.iter().filter_map(|(_, v)| if let Verdict::Open(d) = v { Some(d.kind.as_str()) } else { None }).collect()
    }

    fn verdict(v: &[(AlertKind, Verdict)], kind_index: usize) -> &Verdict {
        &v[kind_index].1
    }

    const MISSING: usize = 0;
    const SKIPPED: usize = 1;
    const QUANTITY: usize = 2;
    const DATE_CHANGED: usize = 3;
    const OVERDUE: usize = 4;
    const ADDED: usize = 5;
    const REMOVED: usize = 6;

    #[test]
    fn kinds_are_tagged_in_order() {
        let v = evaluate(None, &row(2, 0), &ctx(), &Thresholds::default());
        let kinds: Vec<&str> = v.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "ship_date_missing",
                "skipped_new_status",
                "quantity_changed",
                "ship_date_changed",
                "ship_date_overdue",
                "item_added",
                "item_removed"
            ]
        );
        for (k, v) in &v {
            if let Verdict::Open(d) = v {
                assert_eq!(d.kind, *k);
            }
        }
    }

    #[test]
    fn table_of_situations() {
        let t = Thresholds::default();
        let c = ctx();
        let new_order = row(2, 0);
        let mut confirmed = row(3, 0);
        confirmed.estimated_ship_date = days(2026, 12, 2);
        let mut late = confirmed.clone();
        late.estimated_ship_date = days(2026, 11, 27);
        let mut shipped = late.clone();
        shipped.qoo10_status = 4;
        shipped.tracking_no = "T".into();
        let mut more = new_order.clone();
        more.quantity = 3;
        let mut moved = confirmed.clone();
        moved.estimated_ship_date = days(2026, 12, 5);

        let cases: Vec<(&str, Option<&OrderRow>, &OrderRow, Vec<&str>)> = vec![
            ("new order without ship date", None, &new_order, vec!["ship_date_missing"]),
            ("first seen in status 3", None, &confirmed, vec!["skipped_new_status"]),
            ("2 → 3 with a date: nothing", Some(&new_order), &confirmed, vec![]),
            ("quantity 2 → 3", Some(&new_order), &more, vec!["ship_date_missing", "quantity_changed"]),
            ("ship date moved", Some(&confirmed), &moved, vec!["ship_date_changed"]),
            ("ship date passed, no tracking", Some(&confirmed), &late, vec!["ship_date_changed", "ship_date_overdue"]),
            ("shipped: nothing", Some(&late), &shipped, vec![]),
            ("first seen late in status 3", None, &late, vec!["skipped_new_status", "ship_date_overdue"]),
        ];
        for (name, prev, r, want) in cases {
            assert_eq!(opened(&evaluate(prev, r, &c, &t)), want, "{name}");
        }
    }

    #[test]
    fn what_resolves_what() {
        let (t, c) = (Thresholds::default(), ctx());
        let new_order = row(2, 0);
        let mut confirmed = row(3, 0);
        confirmed.estimated_ship_date = days(2026, 12, 2);
        let v = evaluate(Some(&new_order), &confirmed, &c, &t);
        assert_eq!(verdict(&v, MISSING), &Verdict::Resolve, "a ship date ends ship_date_missing");
        assert_eq!(verdict(&v, OVERDUE), &Verdict::Resolve);
        assert_eq!(verdict(&v, QUANTITY), &Verdict::Keep, "an open quantity alert waits for the order to settle");
        let mut shipped = confirmed.clone();
        shipped.qoo10_status = 4;
        let v = evaluate(Some(&confirmed), &shipped, &c, &t);
        for k in [SKIPPED, QUANTITY, DATE_CHANGED, ADDED] {
            assert_eq!(verdict(&v, k), &Verdict::Resolve, "shipping settles kind #{k}");
        }
        let cancelled = row(2, 3);
        let v = evaluate(Some(&new_order), &cancelled, &c, &t);
        assert_eq!(verdict(&v, MISSING), &Verdict::Resolve, "a cancelled order needs no ship date");
    }

    #[test]
    fn grace_periods_come_from_config() {
        // today_jst is Sunday 2026-11-29.
        let c = ctx();
        let t = Thresholds {
            ship_date_missing_after_business_days: 3,
            overdue_grace_business_days: 1,
            ..Thresholds::default()
        };
        let mut long_ago = row(2, 0);
        long_ago.paid_at = Some(1_795_000_000); // 2026-11-18 (Wed) JST: 8 business days ago
        assert_eq!(opened(&evaluate(None, &long_ago, &c, &t)), vec!["ship_date_missing"]);
        let mut wednesday = row(2, 0);
        wednesday.paid_at = Some(1_795_900_000 - 4 * 86_400); // Wed 2026-11-25: Thu, Fri = 2 business days
        assert_eq!(verdict(&evaluate(None, &wednesday, &c, &t), MISSING), &Verdict::Keep, "within 3 business days");
        let closed = BusinessDays { closed: vec![NaiveDate::from_ymd_opt(2026, 11, 27).unwrap()] };
        let with_holiday = Thresholds { calendar: closed, ..t.clone() };
        assert_eq!(with_holiday.business_days_between(NaiveDate::from_ymd_opt(2026, 11, 25).unwrap(), c.today_jst), 1);
        // 2026-11-23 (Mon) is 勤労感謝の日: Fri 11-20 → Tue 11-24 is one business day.
        let (fri, tue) =
            (NaiveDate::from_ymd_opt(2026, 11, 20).unwrap(), NaiveDate::from_ymd_opt(2026, 11, 24).unwrap());
        assert_eq!(t.business_days_between(fri, tue), 1, "national holidays are built in");
        let mut late = row(3, 0);
        late.estimated_ship_date = days(2026, 11, 27); // Friday: only Sat and Sun have passed
        assert_eq!(verdict(&evaluate(Some(&late), &late, &c, &t), OVERDUE), &Verdict::Resolve, "0 business days late");
        late.estimated_ship_date = days(2026, 11, 25); // Wednesday: Thu and Fri have passed
        assert_eq!(
            opened(&evaluate(Some(&late), &late, &c, &t)),
            vec!["ship_date_overdue"],
            "2 business days ≥ 1 of grace"
        );
    }

    #[test]
    fn cart_lines_added_and_removed() {
        let t = Thresholds::default();
        let mut c = ctx();
        let line = OrderRow { new_in_known_cart: 1, ..row(2, 0) };
        let v = evaluate(None, &line, &c, &t);
        assert!(opened(&v).contains(&"item_added"));
        assert!(
            !opened(&evaluate(None, &row(2, 0), &c, &t)).contains(&"item_added"),
            "a cart first seen in this poll is new, not changed"
        );

        c.pack_has_active_sibling = true;
        let cancelled = row(2, 1);
        assert_eq!(opened(&evaluate(Some(&line), &cancelled, &c, &t)), vec!["item_removed"]);
        assert_eq!(verdict(&evaluate(Some(&cancelled), &cancelled, &c, &t), REMOVED), &Verdict::Keep, "opens once");
        c.pack_has_active_sibling = false;
        assert!(
            !opened(&evaluate(Some(&line), &cancelled, &c, &t)).contains(&"item_removed"),
            "a whole-cart cancellation removes no item"
        );
    }

    /// Lines present at the shop's first import open no change alert; state alerts open as ever.
    #[test]
    fn a_first_import_raises_no_change_alerts() {
        let (t, mut c) = (Thresholds::default(), ctx());
        c.pack_has_active_sibling = true;
        let mut confirmed = OrderRow { first_import: 1, ..row(3, 0) };
        confirmed.estimated_ship_date = days(2026, 11, 27);
        assert_eq!(opened(&evaluate(None, &confirmed, &c, &t)), vec!["ship_date_overdue"], "overdue is a state");
        let cancelled = OrderRow { first_import: 1, ..row(2, 1) };
        assert!(opened(&evaluate(None, &cancelled, &c, &t)).is_empty(), "no item_removed at first sight");
        let more = OrderRow { first_import: 1, quantity: 5, ..row(2, 0) };
        assert_eq!(opened(&evaluate(Some(&row(2, 0)), &more, &c, &t)), vec!["ship_date_missing"]);
        let added = OrderRow { first_import: 1, new_in_known_cart: 1, ..row(2, 0) };
        assert!(!opened(&evaluate(None, &added, &c, &t)).contains(&"item_added"));
    }

    #[test]
    fn vanished_means_unseen_and_unclaimed() {
        use std::collections::HashSet;
        let mut a = row(2, 0);
        a.order_no = 1;
        let mut b = row(2, 0);
        b.order_no = 2;
        let mut c = row(3, 0);
        c.order_no = 3;
        let mut d = row(2, 1);
        d.order_no = 4;
        let known = vec![a, b, c, d];
        let seen: HashSet<u64> = [1].into();
        let claimed: HashSet<u64> = [2].into();
        let v = vanished(&known, &seen, &claimed);
        let nos: Vec<u64> = v.iter().map(|(r, _)| r.order_no).collect();
        assert_eq!(nos, [3], "1 was seen, 2 has a claim, 4 is already under a claim");
        assert!(v[0].1.message_ja.contains("「配送準備」の一覧から消えました"), "{}", v[0].1.message_ja);
    }

    #[test]
    fn ids_are_fixed_by_the_opening_version() {
        let r = row(2, 0);
        let v = evaluate(None, &r, &ctx(), &Thresholds::default());
        let Verdict::Open(d) = &v[MISSING].1 else { panic!() };
        let a = open(d, &r, r.version, ctx().now);
        assert_eq!(a.alert_id, "ship_date_missing:s:1090000101:1795900000000000");
        assert_eq!(a, open(d, &r, r.version, ctx().now));
        assert!(
            a.message_ja.starts_with("注文 1090000101 の発送予定日が未設定です。QSMで発送予定日を設定してください")
        );
        assert!(
            a.message_ja.contains("QAPIでも設定できます") && a.message.contains("SetSellerCheckYN_V2"),
            "{}",
            a.message
        );
        let done = resolve(&a, r.version + 5, ctx().now);
        assert_eq!(
            (done.state, done.alert_id.as_str(), done.version),
            (AlertState::Resolved, a.alert_id.as_str(), r.version + 5)
        );
    }

    /// Edges of the rules: unpaid orders wait unless the threshold is 0; a ship date due today
    /// is not overdue; an unchanged or cancelling line keeps its change alerts.
    #[test]
    fn edges_of_the_rules() {
        let c = ctx();
        let unpaid = OrderRow { paid_at: None, ..row(2, 0) };
        let waits = Thresholds { ship_date_missing_after_business_days: 1, ..Thresholds::default() };
        assert_eq!(verdict(&evaluate(None, &unpaid, &c, &waits), MISSING), &Verdict::Keep);
        assert_eq!(opened(&evaluate(None, &unpaid, &c, &Thresholds::default())), vec!["ship_date_missing"]);
        let t = Thresholds::default();
        let today = OrderRow { estimated_ship_date: days(2026, 11, 29), ..row(3, 0) };
        assert_eq!(verdict(&evaluate(Some(&today), &today, &c, &t), OVERDUE), &Verdict::Resolve, "due today");
        let same = evaluate(Some(&today), &today, &c, &t);
        assert_eq!(verdict(&same, DATE_CHANGED), &Verdict::Keep, "unchanged: an open change alert stays");
        assert_eq!(verdict(&same, ADDED), &Verdict::Keep);
        let cancelling = row(3, 1);
        assert_eq!(verdict(&evaluate(Some(&today), &cancelling, &c, &t), ADDED), &Verdict::Keep, "cancelling");
        assert_eq!(verdict(&evaluate(Some(&today), &row(3, 4), &c, &t), ADDED), &Verdict::Resolve, "returning");
    }

    /// Texts name the dates; alerts carry the penalty clock's fields;
    /// a resolution is dated now, above its opening.
    #[test]
    fn texts_clock_and_resolution() {
        let (c, t) = (ctx(), Thresholds::default());
        let dated = OrderRow { estimated_ship_date: days(2026, 12, 2), ..row(3, 0) };
        let before = OrderRow { estimated_ship_date: days(2026, 12, 5), ..row(3, 0) };
        let Verdict::Open(d) = verdict(&evaluate(Some(&before), &dated, &c, &t), DATE_CHANGED).clone() else {
            panic!("ship_date_changed opens")
        };
        assert!(d.message.contains("from 2026-12-05 to 2026-12-02"), "{}", d.message);
        let a = open(&d, &dated, 5, c.now);
        assert_eq!(a.details["paid_at"], "2026-11-18T11:08:20Z");
        assert_eq!(a.details["ship_by"], "2026-12-02");
        let later = c.now + chrono::Duration::hours(1);
        let r = resolve(&a, 3, later);
        assert_eq!((r.state, r.version, r.updated_at, r.opened_at), (AlertState::Resolved, 6, later, c.now));
        assert_eq!(resolve(&a, 10, later).version, 10);
        let names: Vec<&str> = (0..=6).map(status_ja).collect();
        assert_eq!(names, ["不明", "配送待ち（入金待ち）", "配送要請", "配送準備", "配送中", "配送完了", "不明"]);
    }
}
