//! `QOO10_RAW`: one Qoo10 row exactly as received, in an envelope that says where it came from.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

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
#[derive(Debug, Serialize, Deserialize)]
pub struct RawEnvelope {
    pub schema_version: u32,
    pub shop: String,
    pub kind: RowKind,
    /// The QAPI method, e.g. `ShippingBasic.GetShippingInfo_v3`.
    pub method: String,
    pub query: RawQuery,
    /// When the response holding this row arrived (the version of everything derived from it).
    pub fetched_at: DateTime<Utc>,
    pub row: Box<RawValue>,
}

/// `Nats-Msg-Id` of a raw row: the same shop, kind and row bytes give the same id, so
/// re-publishing unchanged content within the stream's duplicate window stores nothing.
pub fn raw_msg_id(shop: &str, kind: RowKind, order_no: Option<u64>, row: &RawValue) -> String {
    let digest = Sha256::digest(row.get().as_bytes());
    let order = order_no.map(|n| n.to_string()).unwrap_or_else(|| "-".into());
    format!("raw:{shop}:{}:{order}:{}", kind.as_str(), hex::encode(&digest[..12]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msg_id_depends_on_content_only() {
        let a = RawValue::from_string(r#"{"orderNo":1,"orderQty":1}"#.into()).unwrap();
        let b = RawValue::from_string(r#"{"orderNo":1,"orderQty":2}"#.into()).unwrap();
        let id = raw_msg_id("s", RowKind::Order, Some(1), &a);
        assert_eq!(id, raw_msg_id("s", RowKind::Order, Some(1), &a));
        assert_ne!(id, raw_msg_id("s", RowKind::Order, Some(1), &b));
        assert_ne!(id, raw_msg_id("t", RowKind::Order, Some(1), &a));
        assert!(id.starts_with("raw:s:order:1:"));
    }

    #[test]
    fn envelope_keeps_row_bytes() {
        let text = r#"{"schema_version":1,"shop":"s","kind":"order","method":"m","query":{"status":2,"from":"20261101","to":"20261129","condition":1},"fetched_at":"2026-11-29T00:00:00Z","row":{"orderNo" : 1 ,"x":"テスト"}}"#;
        let env: RawEnvelope = serde_json::from_str(text).unwrap();
        assert_eq!(env.row.get(), r#"{"orderNo" : 1 ,"x":"テスト"}"#);
        let again = serde_json::to_string(&env).unwrap();
        assert!(again.contains(r#""row":{"orderNo" : 1 ,"x":"テスト"}"#));
    }
}
