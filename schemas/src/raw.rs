//! `QOO10_RAW`: one Qoo10 row exactly as received, in an envelope that says where it came from.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

pub const RAW_SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RowKind {
    Order,
    Claim,
}

impl RowKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RowKind::Order => "order",
            RowKind::Claim => "claim",
        }
    }
}

/// The query that produced a row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawQuery {
    /// ShippingStat (orders) or ClaimStat (claims) asked for; for orders, 0 asks v3 for
    /// statuses 1–3 at once.
    pub status: u8,
    /// Window start and end as sent (`yyyyMMdd` for whole JST days, or `yyyyMMddHHmmss`).
    pub from: String,
    pub to: String,
    /// The date the window is about: see [`condition`].
    pub condition: u8,
}

/// `search_condition` / `SearchCondition`: which date a window is about. Shipping calls and
/// claim calls number them differently.
pub mod condition {
    /// Shipping and claim calls: the order date.
    pub const ORDER_DATE: u8 = 1;
    /// Shipping calls: the payment date.
    pub const PAYMENT_DATE: u8 = 2;
    /// Shipping calls: the ship date (→ 4).
    pub const SHIP_DATE: u8 = 3;
    /// Shipping calls: the delivered date (→ 5).
    pub const DELIVERED_DATE: u8 = 4;
    /// Claim calls: the date the claim was requested.
    pub const CLAIM_REQUESTED: u8 = 2;
    /// Claim calls: the date the cancellation or refund was completed.
    pub const CLAIM_DONE: u8 = 3;
}

impl RawQuery {
    /// The shipping statuses a shipping call asked for (`0` = 1–3).
    pub fn shipping_statuses(&self) -> Vec<u8> {
        if self.status == 0 { vec![1, 2, 3] } else { vec![self.status] }
    }

    /// The window as instants, both ends included: `yyyyMMdd` is a whole JST day (the end day's
    /// last second included), `yyyyMMddHHmmss` a JST time. `None` when either end is neither.
    pub fn span(&self) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        Some((instant(&self.from, false)?, instant(&self.to, true)?))
    }
}

fn instant(text: &str, end: bool) -> Option<DateTime<Utc>> {
    use chrono::{NaiveDate, NaiveDateTime};
    let naive = match text.len() {
        8 => {
            let d = NaiveDate::parse_from_str(text, "%Y%m%d").ok()?;
            if end { d.and_hms_opt(23, 59, 59)? } else { d.and_hms_opt(0, 0, 0)? }
        }
        14 => NaiveDateTime::parse_from_str(text, "%Y%m%d%H%M%S").ok()?,
        _ => return None,
    };
    Some(crate::time::jst_naive_to_utc(naive))
}

/// The message on `qoo10.raw.<shop>`. `row` holds the bytes Qoo10 sent for this row, untouched.
///
/// `R` is how the row is held: owned (`Box<RawValue>`, the default), or borrowed from the message
/// (`&RawValue`) by a reader that is done with the row before the message, as the normalizer is:
/// that spares a copy of every row.
#[derive(Debug, Serialize, Deserialize)]
pub struct RawEnvelope<R = Box<RawValue>> {
    pub schema_version: u32,
    pub shop: String,
    pub kind: RowKind,
    /// The QAPI method, e.g. `ShippingBasic.GetShippingInfo_v3`.
    pub method: String,
    pub query: RawQuery,
    /// When the response holding this row arrived (the version of everything derived from it).
    pub fetched_at: DateTime<Utc>,
    pub row: R,
    /// Claim rows only: the other lines of this row's cart (pack) that the same poll returned
    /// with a claim. The sink needs it to tell "one line of a cart cancelled" from "the whole cart
    /// cancelled" without depending on which of the cart's claims it happened to process first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cart_claims: Vec<u64>,
    /// The shop had no complete poll before this one: what this row shows was already so when
    /// the pipeline first looked, so it is not a change (see "First import" in the contract).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub first_import: bool,
    /// The row's line is new to the fetcher while an earlier complete poll already returned
    /// other lines of its cart: the cart gained a line.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub new_in_known_cart: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_read_as_instants() {
        let q = |from: &str, to: &str| RawQuery { status: 0, from: from.into(), to: to.into(), condition: 1 };
        let (a, b) = q("20261122", "20261129").span().unwrap();
        assert_eq!(
            (a.to_rfc3339(), b.to_rfc3339()),
            ("2026-11-21T15:00:00+00:00".into(), "2026-11-29T14:59:59+00:00".into())
        );
        let (a, _) = q("20261129110000", "20261129123000").span().unwrap();
        assert_eq!(a.to_rfc3339(), "2026-11-29T02:00:00+00:00");
        assert_eq!(q("", "").span(), None);
        assert_eq!(q("", "").shipping_statuses(), vec![1, 2, 3]);
    }

    #[test]
    fn envelope_keeps_row_bytes() {
        let text = r#"{"schema_version":1,"shop":"s","kind":"order","method":"m","query":{"status":2,"from":"20261101","to":"20261129","condition":1},"fetched_at":"2026-11-29T00:00:00Z","row":{"orderNo" : 1 ,"x":"テスト"}}"#;
        let env: RawEnvelope = serde_json::from_str(text).unwrap();
        assert_eq!(env.row.get(), r#"{"orderNo" : 1 ,"x":"テスト"}"#);
        let again = serde_json::to_string(&env).unwrap();
        assert!(again.contains(r#""row":{"orderNo" : 1 ,"x":"テスト"}"#));
        let borrowed: RawEnvelope<&RawValue> = serde_json::from_str(text).unwrap();
        assert_eq!(borrowed.row.get(), env.row.get());
        assert_eq!(serde_json::to_string(&borrowed).unwrap(), again);
    }
}
