//! `ORDERS`: the canonical order line, one message per new version.
//!
//! Field names are stable; changes are additive. A breaking change bumps [`ORDER_SCHEMA_VERSION`]
//! and is documented in `schemas/README.md`. The JSON Schema is `schemas/order.schema.json`.

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::dlq::FieldError;
use crate::raw::RowKind;

pub const ORDER_SCHEMA_VERSION: u32 = 1;

/// One Qoo10 order line (one `orderNo`) in canonical form.
///
/// Money is decimal, serialized as a string (`"1280.00"`), never a float. Optional money and
/// text fields are `null` when the source row does not carry them (claim rows carry no prices):
/// `null` means "unknown here", not zero, and the sink keeps the last known value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CanonicalOrder {
    pub schema_version: u32,
    pub shop_id: String,
    pub order_no: u64,
    /// Cart number: the lines paid together, shipped together.
    pub pack_no: u64,
    pub status: crate::status::Status,
    /// Qoo10 ShippingStat (1..5); 0 when the source row did not say (claim rows).
    pub qoo10_status: u8,
    /// Qoo10 ClaimStat; 0 = no claim.
    pub claim_status: u8,
    pub item_code: String,
    pub seller_item_code: String,
    pub item_title: String,
    pub option_text: Option<String>,
    pub option_code: Option<String>,
    pub quantity: u32,
    /// Unit price (Qoo10 `orderPrice`).
    #[serde(with = "rust_decimal::serde::str_option")]
    pub order_price: Option<Decimal>,
    #[serde(with = "rust_decimal::serde::str_option")]
    pub discount: Option<Decimal>,
    /// Line total after discount (Qoo10 `total`; `paymentAmount` on claim rows).
    #[serde(with = "rust_decimal::serde::str_option")]
    pub total: Option<Decimal>,
    #[serde(with = "rust_decimal::serde::str_option")]
    pub settle_price: Option<Decimal>,
    #[serde(with = "rust_decimal::serde::str_option")]
    pub shipping_rate: Option<Decimal>,
    pub currency: String,
    pub ordered_at: DateTime<Utc>,
    pub paid_at: Option<DateTime<Utc>>,
    /// 発送予定日, a JST calendar date.
    pub estimated_ship_date: Option<NaiveDate>,
    pub shipped_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub carrier: String,
    pub tracking_no: String,
    pub payment_method: Option<String>,
    /// The line's paid-option surcharge: `total + discount − order_price × quantity`. Qoo10's
    /// `total` includes it, its `orderPrice` does not (docs/qoo10-money.md). `null` when a
    /// figure it is made of is missing (claim rows).
    #[serde(default, with = "rust_decimal::serde::str_option")]
    pub option_price: Option<Decimal>,
    /// Qoo10 `SellerDiscount`.
    #[serde(default, with = "rust_decimal::serde::str_option")]
    pub seller_discount: Option<Decimal>,
    /// Cart-level discounts (`Cart_Discount_Seller` / `CartDiscountSeller`, and the Qoo10-funded
    /// `Cart_Discount_Qoo10` / `CartDiscountQoo10`), as reported on the line: not inside `total`.
    #[serde(default, with = "rust_decimal::serde::str_option")]
    pub cart_discount_seller: Option<Decimal>,
    #[serde(default, with = "rust_decimal::serde::str_option")]
    pub cart_discount_qoo10: Option<Decimal>,
    /// A partial refund (claim 15): the units refunded (`nrPartRefundCnt`) and the amount
    /// (`nrPartRefundBalance`).
    #[serde(default)]
    pub refund_quantity: Option<u32>,
    #[serde(default, with = "rust_decimal::serde::str_option")]
    pub refund_amount: Option<Decimal>,
    /// 発送可能日 (v3 `AvailableShippingDate`): where Qoo10's delay penalty counts from.
    #[serde(default)]
    pub available_ship_date: Option<NaiveDate>,
    /// v3 `AvailableSendType`: 0 normal, 1 reserved (≥ 4 days), 2 release date, 3 same day.
    #[serde(default)]
    pub available_send_type: Option<u8>,
    /// Fetched by the shop's first import: what this version shows is not a change.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub first_import: bool,
    /// A line new to the pipeline in a cart that an earlier complete poll already showed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub new_in_known_cart: bool,
    /// Strictly increases with fetch order for one order line: a late redelivery of older data
    /// can never replace newer data (microseconds of `source.fetched_at`).
    pub version: u64,
    pub source: Provenance,
    /// Buyer and recipient personal data, kept apart so analytics tables never hold it.
    pub personal: Option<Personal>,
    /// Inconsistencies found in Qoo10's own figures (e.g. `total_mismatch`). The order is kept
    /// as Qoo10 sent it; these say what a human should look at.
    #[serde(default)]
    pub anomalies: Vec<Anomaly>,
    /// Claim rows only: the other lines of the cart that the same poll returned with a claim
    /// (see `RawEnvelope::cart_claims`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cart_claims: Vec<u64>,
}

/// Something in a row that does not add up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anomaly {
    /// Stable code: `total_mismatch`, `currency_not_jpy`.
    pub code: String,
    /// Human-readable details with the figures involved.
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    pub kind: RowKind,
    pub method: String,
    pub fetched_at: DateTime<Utc>,
    /// Sequence of the raw message in `QOO10_RAW`.
    pub raw_seq: u64,
    /// Qoo10's status label as sent (`"On request(2)"`), or the claim code.
    pub qoo10_label: String,
    /// Keys of the row that the normalizer does not know (kept verbatim in the raw stream).
    #[serde(default)]
    pub unknown_keys: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Personal {
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
}

/// `Nats-Msg-Id` of a canonical order version: redelivery of the same raw message (same stream
/// sequence) republishes the same id, which JetStream drops within its duplicate window. Another
/// raw message for the same line and version (a duplicate, or conflicting content) gets its own
/// id, so the sink sees it and can tell the two apart instead of JetStream dropping it unseen.
pub fn order_msg_id(shop: &str, order_no: u64, version: u64, raw_seq: u64) -> String {
    format!("order:{shop}:{order_no}:{version}:{raw_seq}")
}

/// Years a Qoo10 date may fall in: Qoo10 did not exist before 2000; past 2100 is corruption.
pub const PLAUSIBLE_YEARS: std::ops::RangeInclusive<i32> = 2000..=2100;

/// Amounts are stored as `Decimal(18,2)`: below 10^16 yen either way. Every stage checks an
/// amount against it where it enters (a row's field, an order from NATS), so that no later sum
/// or product overflows (`rust_decimal`'s operators panic on overflow) and the dead letter names
/// the field instead of a stage crashing on it.
pub fn money_in_range(d: Decimal) -> bool {
    d.abs() < Decimal::from(10_000_000_000_000_000i64)
}

/// [`money_in_range`] as a reason naming the field.
pub fn check_money(field: &str, d: Option<Decimal>) -> Result<(), FieldError> {
    match d {
        Some(d) if !money_in_range(d) => {
            Err(FieldError::new(field, format!("{d} is beyond what Decimal(18,2) holds (less than 10^16 either way)")))
        }
        _ => Ok(()),
    }
}

impl CanonicalOrder {
    /// Checks what the types cannot, for orders arriving from outside the normalizer (anyone may
    /// publish on `orders.<shop>`); the reason names the field.
    pub fn validate(&self, subject_shop: &str) -> Result<(), FieldError> {
        use chrono::Datelike;
        let bad = |field: &str, problem: String| Err(FieldError::new(field, problem));
        if self.schema_version != ORDER_SCHEMA_VERSION {
            return bad("schema_version", format!("{} is not {ORDER_SCHEMA_VERSION}", self.schema_version));
        }
        if self.shop_id != subject_shop {
            return bad("shop_id", format!("{:?} does not match the subject's shop {subject_shop:?}", self.shop_id));
        }
        if self.order_no == 0 {
            return bad("order_no", "must be a positive integer".into());
        }
        if self.quantity == 0 {
            return bad("quantity", "must be at least 1".into());
        }
        if self.qoo10_status > 5 {
            return bad("qoo10_status", format!("{} is not a Qoo10 shipping status (0-5)", self.qoo10_status));
        }
        if self.claim_status != 0 && !crate::status::CLAIM_STATUS_CODES.contains(&self.claim_status) {
            return bad("claim_status", format!("{} is not a Qoo10 claim status", self.claim_status));
        }
        let instants = [
            ("ordered_at", Some(self.ordered_at)),
            ("paid_at", self.paid_at),
            ("shipped_at", self.shipped_at),
            ("delivered_at", self.delivered_at),
        ];
        for (field, t) in instants {
            if let Some(t) = t.filter(|t| !PLAUSIBLE_YEARS.contains(&t.year())) {
                return bad(field, format!("{t} is outside 2000..2100"));
            }
        }
        if let Some(d) = self.estimated_ship_date.filter(|d| !PLAUSIBLE_YEARS.contains(&d.year())) {
            return bad("estimated_ship_date", format!("{d} is outside 2000..2100"));
        }
        let amounts = [
            ("order_price", self.order_price),
            ("discount", self.discount),
            ("total", self.total),
            ("settle_price", self.settle_price),
            ("shipping_rate", self.shipping_rate),
            ("option_price", self.option_price),
            ("seller_discount", self.seller_discount),
            ("cart_discount_seller", self.cart_discount_seller),
            ("cart_discount_qoo10", self.cart_discount_qoo10),
            ("refund_amount", self.refund_amount),
        ];
        for (field, d) in amounts {
            check_money(field, d)?;
        }
        Ok(())
    }
}

/// The version of data fetched at `fetched_at`.
pub fn version_of(fetched_at: DateTime<Utc>) -> u64 {
    u64::try_from(fetched_at.timestamp_micros()).unwrap_or(0)
}
