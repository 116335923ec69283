//! Canonical orders → ClickHouse rows, and how a new version merges with the stored one. Pure.
//!
//! Each source kind owns its fields. A shipping-info row (`source.kind = order`) says everything
//! about the order line except its claim; a claim row says only the claim. So:
//! - an order row keeps the claim status already stored (Qoo10's order API never reports claims);
//! - a claim row keeps every stored order field and replaces the claim status.
//!
//! The canonical status is recomputed from both with the configured [`StatusMap`]: a claim
//! overrides the shipping status.

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use schemas::order::CanonicalOrder;
use schemas::raw::RowKind;
use schemas::status::StatusMap;
use serde::{Deserialize, Serialize};

/// A row of `orders` and `order_versions`, in column order (RowBinary is positional).
/// `Decimal(18,2)` travels as its scaled `Int64`, `DateTime` as `UInt32` seconds, `Date` as
/// `UInt16` days since 1970-01-01.
#[derive(Debug, Clone, PartialEq, Eq, clickhouse::Row, Serialize, Deserialize)]
pub struct OrderRow {
    pub shop_id: String,
    pub order_no: u64,
    pub pack_no: u64,
    pub status: String,
    pub qoo10_status: u8,
    pub claim_status: u8,
    pub item_code: String,
    pub seller_item_code: String,
    pub item_title: String,
    pub option_text: String,
    pub option_code: String,
    pub quantity: u32,
    pub order_price: i64,
    pub discount: i64,
    pub total: i64,
    pub settle_price: i64,
    pub shipping_rate: i64,
    pub currency: String,
    pub ordered_at: u32,
    pub paid_at: Option<u32>,
    pub estimated_ship_date: Option<u16>,
    pub shipped_at: Option<u32>,
    pub delivered_at: Option<u32>,
    pub carrier: String,
    pub tracking_no: String,
    pub payment_method: String,
    pub version: u64,
    pub fetched_at: u32,
    pub source_kind: String,
    pub source_method: String,
    pub raw_seq: u64,
    pub option_price: i64,
    pub seller_discount: i64,
    pub cart_discount_seller: i64,
    pub cart_discount_qoo10: i64,
    pub refund_quantity: u32,
    pub refund_amount: i64,
    pub available_ship_date: Option<u16>,
    pub available_send_type: u8,
    /// 1: fetched by the shop's first import (what it shows is not a change).
    pub first_import: u8,
    /// 1: a line new to the pipeline in a cart an earlier complete poll already showed.
    pub new_in_known_cart: u8,
}

impl OrderRow {
    /// A row with only the shop set (everything else zero or empty): the base of placeholders
    /// and test fixtures.
    pub fn empty(shop: &str) -> Self {
        OrderRow {
            shop_id: shop.to_owned(),
            order_no: 0,
            pack_no: 0,
            status: String::new(),
            qoo10_status: 0,
            claim_status: 0,
            item_code: String::new(),
            seller_item_code: String::new(),
            item_title: String::new(),
            option_text: String::new(),
            option_code: String::new(),
            quantity: 0,
            order_price: 0,
            discount: 0,
            total: 0,
            settle_price: 0,
            shipping_rate: 0,
            currency: String::new(),
            ordered_at: 0,
            paid_at: None,
            estimated_ship_date: None,
            shipped_at: None,
            delivered_at: None,
            carrier: String::new(),
            tracking_no: String::new(),
            payment_method: String::new(),
            version: 0,
            fetched_at: 0,
            source_kind: String::new(),
            source_method: String::new(),
            raw_seq: 0,
            option_price: 0,
            seller_discount: 0,
            cart_discount_seller: 0,
            cart_discount_qoo10: 0,
            refund_quantity: 0,
            refund_amount: 0,
            available_ship_date: None,
            available_send_type: 0,
            first_import: 0,
            new_in_known_cart: 0,
        }
    }
}

/// A row of `order_contacts`.
#[derive(Debug, Clone, PartialEq, Eq, clickhouse::Row, Serialize, Deserialize)]
pub struct ContactRow {
    pub shop_id: String,
    pub order_no: u64,
    pub pack_no: u64,
    pub buyer_name: String,
    pub buyer_kana: String,
    pub buyer_tel: String,
    pub buyer_mobile: String,
    pub buyer_email: String,
    pub receiver_name: String,
    pub receiver_kana: String,
    pub receiver_tel: String,
    pub receiver_mobile: String,
    pub zip_code: String,
    pub address: String,
    pub address1: String,
    pub address2: String,
    pub country: String,
    pub ordered_at: u32,
    pub version: u64,
    pub fetched_at: u32,
}

/// A row of `alerts`.
#[derive(Debug, Clone, PartialEq, Eq, clickhouse::Row, Serialize, Deserialize)]
pub struct AlertRow {
    pub alert_id: String,
    pub kind: String,
    pub shop_id: String,
    pub order_no: u64,
    pub pack_no: u64,
    pub state: String,
    pub severity: String,
    pub message: String,
    pub message_ja: String,
    pub details: String,
    pub opened_at: u32,
    pub updated_at: u32,
    pub version: u64,
}

impl AlertRow {
    /// The row of an alert transition (taking its texts over: no copy of them).
    pub fn from_alert(a: schemas::alert::Alert) -> Self {
        AlertRow {
            state: a.state.as_str().into(),
            details: a.details.to_string(),
            opened_at: u32::try_from(a.opened_at.timestamp()).unwrap_or(0),
            updated_at: u32::try_from(a.updated_at.timestamp()).unwrap_or(0),
            alert_id: a.alert_id,
            kind: a.kind.as_str().into(),
            shop_id: a.shop_id,
            order_no: a.order_no,
            pack_no: a.pack_no,
            severity: a.severity.as_str().into(),
            message: a.message,
            message_ja: a.message_ja,
            version: a.version,
        }
    }

    /// The alert this row stores; `None` for a kind or severity this build does not know (a row
    /// written by another service or a later version).
    pub fn to_alert(&self) -> Option<schemas::alert::Alert> {
        Some(schemas::alert::Alert {
            schema_version: schemas::alert::ALERT_SCHEMA_VERSION,
            alert_id: self.alert_id.clone(),
            kind: schemas::alert::AlertKind::parse(&self.kind)?,
            shop_id: self.shop_id.clone(),
            order_no: self.order_no,
            pack_no: self.pack_no,
            state: if self.state == "open" {
                schemas::alert::AlertState::Open
            } else {
                schemas::alert::AlertState::Resolved
            },
            severity: schemas::alert::Severity::parse(&self.severity)?,
            message: self.message.clone(),
            message_ja: self.message_ja.clone(),
            details: serde_json::from_str(&self.details).unwrap_or_default(),
            opened_at: DateTime::from_timestamp(i64::from(self.opened_at), 0).unwrap_or_default(),
            updated_at: DateTime::from_timestamp(i64::from(self.updated_at), 0).unwrap_or_default(),
            version: self.version,
            acknowledged_at: None,
        })
    }
}

/// A value that does not fit its column.
pub type RowError = schemas::dlq::FieldError;

/// Decimal(18,2) as its scaled integer. Rounds half away from zero to cents.
pub fn money(field: &'static str, d: Option<Decimal>) -> Result<i64, RowError> {
    let d = d.unwrap_or_default();
    // Checked: a value near Decimal's own limit (28 digits) overflows `* 100`.
    let scaled = d
        .round_dp_with_strategy(2, rust_decimal::RoundingStrategy::MidpointAwayFromZero)
        .checked_mul(Decimal::from(100))
        .and_then(|c| c.to_i64())
        .filter(|v| v.unsigned_abs() < 10u64.pow(18))
        .ok_or_else(|| RowError::new(field, format!("{d} does not fit Decimal(18,2)")))?;
    Ok(scaled)
}

pub fn seconds(field: &'static str, t: DateTime<Utc>) -> Result<u32, RowError> {
    u32::try_from(t.timestamp()).map_err(|_| RowError::new(field, format!("{t} is outside DateTime's range")))
}

fn opt_seconds(field: &'static str, t: Option<DateTime<Utc>>) -> Result<Option<u32>, RowError> {
    t.map(|t| seconds(field, t)).transpose()
}

/// A `Date` column's value (days since 1970-01-01) as a calendar date: the inverse of [`days`].
pub fn date(d: Option<u16>) -> Option<NaiveDate> {
    d.map(|d| schemas::time::from_epoch_day(i64::from(d)))
}

pub fn days(field: &'static str, d: Option<NaiveDate>) -> Result<Option<u16>, RowError> {
    d.map(|d| {
        let n = schemas::time::epoch_day(d);
        u16::try_from(n).map_err(|_| RowError::new(field, format!("{d} is outside Date's range")))
    })
    .transpose()
}

/// The row of this version alone (before merging with what is stored), and its contact row when
/// the order carries personal data.
pub fn rows(o: CanonicalOrder) -> Result<(OrderRow, Option<ContactRow>), RowError> {
    // Fields are moved, not cloned: the sink turns every message into rows and drops the order.
    let ordered_at = seconds("ordered_at", o.ordered_at)?;
    let fetched_at = seconds("fetched_at", o.source.fetched_at)?;
    let contact = o.personal.map(|p| ContactRow {
        shop_id: o.shop_id.clone(),
        order_no: o.order_no,
        pack_no: o.pack_no,
        buyer_name: p.buyer_name,
        buyer_kana: p.buyer_kana,
        buyer_tel: p.buyer_tel,
        buyer_mobile: p.buyer_mobile,
        buyer_email: p.buyer_email,
        receiver_name: p.receiver_name,
        receiver_kana: p.receiver_kana,
        receiver_tel: p.receiver_tel,
        receiver_mobile: p.receiver_mobile,
        zip_code: p.zip_code,
        address: p.address,
        address1: p.address1,
        address2: p.address2,
        country: p.country,
        ordered_at,
        version: o.version,
        fetched_at,
    });
    let row = OrderRow {
        shop_id: o.shop_id,
        order_no: o.order_no,
        pack_no: o.pack_no,
        status: o.status.as_str().to_owned(),
        qoo10_status: o.qoo10_status,
        claim_status: o.claim_status,
        item_code: o.item_code,
        seller_item_code: o.seller_item_code,
        item_title: o.item_title,
        option_text: o.option_text.unwrap_or_default(),
        option_code: o.option_code.unwrap_or_default(),
        quantity: o.quantity,
        order_price: money("order_price", o.order_price)?,
        discount: money("discount", o.discount)?,
        total: money("total", o.total)?,
        settle_price: money("settle_price", o.settle_price)?,
        shipping_rate: money("shipping_rate", o.shipping_rate)?,
        currency: o.currency,
        ordered_at,
        paid_at: opt_seconds("paid_at", o.paid_at)?,
        estimated_ship_date: days("estimated_ship_date", o.estimated_ship_date)?,
        shipped_at: opt_seconds("shipped_at", o.shipped_at)?,
        delivered_at: opt_seconds("delivered_at", o.delivered_at)?,
        carrier: o.carrier,
        tracking_no: o.tracking_no,
        payment_method: o.payment_method.unwrap_or_default(),
        version: o.version,
        fetched_at,
        source_kind: o.source.kind.as_str().to_owned(),
        source_method: o.source.method,
        raw_seq: o.source.raw_seq,
        option_price: money("option_price", o.option_price)?,
        seller_discount: money("seller_discount", o.seller_discount)?,
        cart_discount_seller: money("cart_discount_seller", o.cart_discount_seller)?,
        cart_discount_qoo10: money("cart_discount_qoo10", o.cart_discount_qoo10)?,
        refund_quantity: o.refund_quantity.unwrap_or(0),
        refund_amount: money("refund_amount", o.refund_amount)?,
        available_ship_date: days("available_ship_date", o.available_ship_date)?,
        available_send_type: o.available_send_type.unwrap_or(0),
        first_import: u8::from(o.first_import),
        new_in_known_cart: u8::from(o.new_in_known_cart),
    };
    Ok((row, contact))
}

/// Merges a new version with the latest stored row of the same order line (see module docs).
/// A claim row owns the claim and its refund; what marks a version (first import, new in a known
/// cart) is the version's own.
pub fn merge(stored: Option<&OrderRow>, incoming: OrderRow, kind: RowKind, statuses: &StatusMap) -> OrderRow {
    let mut row = match (kind, stored) {
        (RowKind::Order, Some(s)) => OrderRow {
            claim_status: s.claim_status,
            refund_quantity: s.refund_quantity,
            refund_amount: s.refund_amount,
            ..incoming
        },
        (RowKind::Claim, Some(s)) => OrderRow {
            claim_status: incoming.claim_status,
            refund_quantity: incoming.refund_quantity,
            refund_amount: incoming.refund_amount,
            first_import: incoming.first_import,
            new_in_known_cart: incoming.new_in_known_cart,
            version: incoming.version,
            fetched_at: incoming.fetched_at,
            source_kind: incoming.source_kind,
            source_method: incoming.source_method,
            raw_seq: incoming.raw_seq,
            ..s.clone()
        },
        (_, None) => incoming,
    };
    let shipping = (row.qoo10_status != 0).then_some(row.qoo10_status);
    if let Some(status) = statuses.canonical(shipping, row.claim_status) {
        row.status = status.as_str().to_owned();
    }
    row
}

/// Whether `incoming` holds what `stored` (the same line and version) already holds: true for a
/// redelivery or a duplicate of the same row, false for conflicting content.
pub fn same_content(stored: &OrderRow, incoming: &OrderRow) -> bool {
    if stored.source_kind != incoming.source_kind {
        return false;
    }
    if incoming.source_kind == RowKind::Claim.as_str() {
        return (stored.claim_status, stored.refund_quantity, stored.refund_amount)
            == (incoming.claim_status, incoming.refund_quantity, incoming.refund_amount);
    }
    // The stored row may carry a claim merged from an earlier version, and its own raw sequence.
    OrderRow {
        claim_status: stored.claim_status,
        refund_quantity: stored.refund_quantity,
        refund_amount: stored.refund_amount,
        status: stored.status.clone(),
        raw_seq: stored.raw_seq,
        ..incoming.clone()
    } == *stored
}

/// A line's versions rebuilt in version order, each merged onto the one before, as if they had
/// arrived in order: what a version that arrived late (after a crash, a NAK) is folded in with.
/// Each row's kind is its `source_kind`.
pub fn rechain(mut versions: Vec<OrderRow>, statuses: &StatusMap) -> Vec<OrderRow> {
    versions.sort_by_key(|r| r.version);
    let mut out: Vec<OrderRow> = Vec::with_capacity(versions.len());
    for v in versions {
        let kind = if v.source_kind == RowKind::Claim.as_str() { RowKind::Claim } else { RowKind::Order };
        let merged = merge(out.last(), v, kind, statuses);
        out.push(merged);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_duplicate_is_the_same_content_and_a_conflict_is_not() {
        let m = StatusMap::default();
        let stored = merge(Some(&row("claim", 0, 1, 5)), row("order", 2, 0, 10), RowKind::Order, &m);
        let again = OrderRow { raw_seq: 99, ..row("order", 2, 0, 10) };
        assert!(same_content(&stored, &again), "a redelivery from another raw message");
        let conflicting = OrderRow { quantity: 4, ..row("order", 2, 0, 10) };
        assert!(!same_content(&stored, &conflicting));
        let claim = merge(Some(&stored), row("claim", 0, 3, 20), RowKind::Claim, &m);
        assert!(same_content(&claim, &row("claim", 0, 3, 20)));
        assert!(!same_content(&claim, &row("claim", 0, 1, 20)));
    }

    #[test]
    fn a_late_version_is_folded_in_as_if_it_had_come_in_order() {
        let m = StatusMap::default();
        let order = row("order", 3, 0, 10);
        let claim = row("claim", 0, 1, 20);
        let in_order = merge(Some(&merge(None, order.clone(), RowKind::Order, &m)), claim.clone(), RowKind::Claim, &m);
        // The claim came first (stored alone), the order row after it.
        let claim_alone = merge(None, claim, RowKind::Claim, &m);
        assert_ne!(claim_alone, in_order, "stored alone, the claim lacks the order's fields");
        let chain = rechain(vec![claim_alone, order], &m);
        assert_eq!(chain.len(), 2);
        assert_eq!(chain[1], in_order);
        assert_eq!((chain[1].qoo10_status, chain[1].claim_status, chain[1].order_price), (3, 1, 128000));
    }

    fn row(kind: &str, qoo10: u8, claim: u8, version: u64) -> OrderRow {
        OrderRow {
            order_no: 1,
            pack_no: 2,
            qoo10_status: qoo10,
            claim_status: claim,
            item_code: "i".into(),
            seller_item_code: "sku".into(),
            item_title: "t".into(),
            option_text: if kind == "order" { "色:藍".into() } else { String::new() },
            quantity: 1,
            order_price: if kind == "order" { 128000 } else { 0 },
            total: 128000,
            currency: "JPY".into(),
            ordered_at: 1,
            version,
            source_kind: kind.into(),
            source_method: "m".into(),
            raw_seq: version,
            ..OrderRow::empty("s")
        }
    }

    #[test]
    fn money_is_scaled_and_bounded() {
        assert_eq!(money("x", Some(Decimal::new(21504, 1))).unwrap(), 215040);
        assert_eq!(money("x", Some(Decimal::new(1005, 3))).unwrap(), 101, "1.005 rounds half away from zero");
        assert_eq!(money("x", None).unwrap(), 0);
        assert!(money("x", Some(Decimal::from(10i64.pow(17)))).is_err());
        for extreme in [Decimal::MAX, Decimal::MIN, Decimal::from_str_exact("123456789012345678901234567").unwrap()] {
            let e = money("total", Some(extreme)).expect_err("beyond Decimal(18,2)");
            assert_eq!(e.field, "total", "{e:?}");
        }
    }

    #[test]
    fn dates_and_times() {
        assert_eq!(days("d", NaiveDate::from_ymd_opt(1970, 1, 2)).unwrap(), Some(1));
        assert_eq!(days("d", NaiveDate::from_ymd_opt(2026, 11, 25)).unwrap(), Some(20_782));
        assert!(seconds("t", "1960-01-01T00:00:00Z".parse().unwrap()).is_err());
    }

    #[test]
    fn claim_keeps_order_fields_and_overrides_status() {
        let m = StatusMap::default();
        let stored = merge(None, row("order", 2, 0, 10), RowKind::Order, &m);
        assert_eq!(stored.status, "new");
        let merged = merge(Some(&stored), row("claim", 0, 3, 20), RowKind::Claim, &m);
        assert_eq!((merged.status.as_str(), merged.qoo10_status, merged.claim_status), ("cancelled", 2, 3));
        assert_eq!((merged.order_price, merged.option_text.as_str(), merged.version), (128000, "色:藍", 20));
    }

    #[test]
    fn order_keeps_claim() {
        let m = StatusMap::default();
        let stored = merge(None, row("claim", 0, 1, 10), RowKind::Claim, &m);
        assert_eq!(stored.status, "cancel_requested");
        let merged = merge(Some(&stored), row("order", 3, 0, 20), RowKind::Order, &m);
        assert_eq!((merged.status.as_str(), merged.qoo10_status, merged.claim_status), ("cancel_requested", 3, 1));
        assert_eq!(merged.order_price, 128000);
    }

    #[test]
    fn a_partial_refund_is_the_claims_and_survives_later_order_rows() {
        let m = StatusMap::default();
        let stored = merge(None, OrderRow { option_price: 69900, ..row("order", 5, 0, 10) }, RowKind::Order, &m);
        let refund = OrderRow { refund_quantity: 1, refund_amount: 50000, ..row("claim", 0, 15, 20) };
        let merged = merge(Some(&stored), refund.clone(), RowKind::Claim, &m);
        assert_eq!(
            (merged.status.as_str(), merged.refund_quantity, merged.refund_amount),
            ("partially_refunded", 1, 50000)
        );
        assert_eq!(merged.option_price, 69900, "the claim keeps the order's money");
        assert!(same_content(&merged, &refund));
        assert!(!same_content(&merged, &OrderRow { refund_amount: 1, ..refund }));
        let later = merge(Some(&merged), row("order", 5, 0, 30), RowKind::Order, &m);
        assert_eq!(
            (later.refund_quantity, later.refund_amount, later.status.as_str()),
            (1, 50000, "partially_refunded")
        );
    }

    #[test]
    fn claim_without_stored_row_stands_alone() {
        let m = StatusMap::default();
        let r = merge(None, row("claim", 0, 3, 10), RowKind::Claim, &m);
        assert_eq!((r.status.as_str(), r.qoo10_status), ("cancelled", 0));
    }

    /// The claim's version marks are its own (first import, new in a known cart, where it came
    /// from); an order row redelivered after a refund is the same content.
    #[test]
    fn a_claim_brings_its_own_marks_and_a_refund_is_no_conflict() {
        let m = StatusMap::default();
        let stored = merge(None, row("order", 3, 0, 10), RowKind::Order, &m);
        let claim = OrderRow {
            first_import: 1,
            new_in_known_cart: 1,
            fetched_at: 77,
            source_method: "claims".into(),
            refund_quantity: 1,
            refund_amount: 500,
            ..row("claim", 0, 15, 20)
        };
        let merged = merge(Some(&stored), claim, RowKind::Claim, &m);
        let marks = (merged.first_import, merged.new_in_known_cart, merged.fetched_at, merged.source_method.as_str());
        assert_eq!(marks, (1, 1, 77, "claims"));
        assert_eq!(merged.raw_seq, 20);
        let later = merge(Some(&merged), row("order", 4, 0, 30), RowKind::Order, &m);
        assert!(same_content(&later, &row("order", 4, 0, 30)), "the order row again, after a refund");
    }

    /// An alert row reads back as the alert it stored, open or resolved; a kind this build does
    /// not know reads as none.
    #[test]
    fn an_alert_row_reads_back_as_its_alert() {
        let alert: schemas::alert::Alert = serde_json::from_value(serde_json::json!({
            "schema_version": 1, "alert_id": "item_added:s:1:1", "kind": "item_added", "shop_id": "s",
            "order_no": 1, "pack_no": 7, "state": "open", "severity": "warning", "message": "m",
            "message_ja": "m", "details": {"a": 1}, "opened_at": "2026-11-29T00:00:00Z",
            "updated_at": "2026-11-29T01:00:00Z", "version": 1
        }))
        .expect("alert");
        for state in [schemas::alert::AlertState::Open, schemas::alert::AlertState::Resolved] {
            let a = schemas::alert::Alert { state, ..alert.clone() };
            assert_eq!(AlertRow::from_alert(a.clone()).to_alert(), Some(a));
        }
        let unknown = AlertRow { kind: "later_kind".into(), ..AlertRow::from_alert(alert) };
        assert_eq!(unknown.to_alert(), None);
    }

    #[test]
    fn money_stops_at_eighteen_digits_and_times_are_seconds() {
        assert_eq!(money("x", Some(Decimal::new(999_999_999_999_999_999, 2))).unwrap(), 999_999_999_999_999_999);
        assert!(money("x", Some(Decimal::from(10i64.pow(16)))).is_err(), "10^18 cents");
        let t: DateTime<Utc> = "2026-11-29T00:00:00Z".parse().unwrap();
        assert_eq!(opt_seconds("t", Some(t)).unwrap(), Some(1_795_910_400));
        assert_eq!(opt_seconds("t", None).unwrap(), None);
    }
}
