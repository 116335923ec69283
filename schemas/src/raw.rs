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
    /// ShippingStat (orders) or ClaimStat (claims) asked for.
    pub status: u8,
    /// Window start and end as sent (`yyyyMMdd`, JST).
    pub from: String,
    pub to: String,
    /// search_condition (1 = order date).
    pub condition: u8,
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
