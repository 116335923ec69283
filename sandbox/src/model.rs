//! The sandbox's world: shops with credentials, and order lines as Qoo10 holds them.
//!
//! Times are JST wall-clock values (`NaiveDateTime`), as Qoo10 keeps them.

use chrono::{NaiveDate, NaiveDateTime};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Shop {
    /// The id a pipeline config would give this shop (`[a-z0-9_-]`).
    pub id: String,
    /// QSM login ID.
    pub user_id: String,
    pub api_key: String,
    pub password: String,
    /// Methods this shop's key has no permission for: QAPI answers `-90003` "You are not
    /// authorized for this." (e.g. `ShippingBasic.GetClaimInfo_V3`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub denied_methods: Vec<String>,
}

/// One order line (one orderNo). Serialized as-is by the control API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub shop: String,
    pub order_no: u64,
    pub pack_no: u64,
    /// ShippingStat 1..5.
    pub status: u8,
    /// ClaimStat; 0 = none. Completed cancellations (3, 16) hide the order from shipping info.
    #[serde(default)]
    pub claim_status: u8,
    #[serde(with = "jst_time")]
    pub order_date: NaiveDateTime,
    #[serde(default, with = "jst_time_opt")]
    pub payment_date: Option<NaiveDateTime>,
    #[serde(default)]
    pub est_ship_date: Option<NaiveDate>,
    /// 発送可能日 (v3 `AvailableShippingDate`): set at payment, from the item's lead time; the
    /// date Qoo10's delay penalty counts from. Not always the seller's 発送予定日.
    #[serde(default)]
    pub available_ship_date: Option<NaiveDate>,
    /// Days from payment to 発送可能日: 0 for a normal item (2 days), e.g. 30 for made to order.
    #[serde(default)]
    pub lead_days: u32,
    #[serde(default, with = "jst_time_opt")]
    pub shipping_date: Option<NaiveDateTime>,
    #[serde(default, with = "jst_time_opt")]
    pub delivered_date: Option<NaiveDateTime>,
    #[serde(default, with = "jst_time_opt")]
    pub claim_request_date: Option<NaiveDateTime>,
    #[serde(default, with = "jst_time_opt")]
    pub claim_done_date: Option<NaiveDateTime>,
    #[serde(default)]
    pub claim_reason: String,
    pub buyer: String,
    pub buyer_kana: String,
    #[serde(default)]
    pub buyer_tel: String,
    #[serde(default)]
    pub buyer_mobile: String,
    #[serde(default)]
    pub buyer_email: String,
    pub receiver: String,
    pub receiver_kana: String,
    #[serde(default)]
    pub receiver_tel: String,
    #[serde(default)]
    pub receiver_mobile: String,
    pub zip_code: String,
    pub addr1: String,
    pub addr2: String,
    pub item_code: String,
    pub seller_item_code: String,
    pub item_title: String,
    #[serde(default)]
    pub option: String,
    #[serde(default)]
    pub option_code: String,
    /// Unit price (tax included, JPY), without the option's surcharge.
    pub unit_price: Decimal,
    /// The paid option's surcharge per unit (`カラー:金(+699円)`): in `total`, not in `orderPrice`.
    #[serde(default)]
    pub option_price: Decimal,
    pub quantity: u32,
    #[serde(default)]
    pub discount: Decimal,
    #[serde(default)]
    pub shipping_rate: Decimal,
    /// Cart-level discounts (seller- and Qoo10-funded), reported alike on every line of the cart;
    /// not inside `total`.
    #[serde(default)]
    pub cart_discount_seller: Decimal,
    #[serde(default)]
    pub cart_discount_qoo10: Decimal,
    /// A partial refund (claim 15): units and amount refunded.
    #[serde(default)]
    pub refund_quantity: u32,
    #[serde(default)]
    pub refund_amount: Decimal,
    pub payment_method: String,
    #[serde(default)]
    pub carrier: String,
    #[serde(default)]
    pub tracking_no: String,
    #[serde(default)]
    pub message: String,
    /// Render money as strings with four decimals (`"2980.0000"`), as some responses do.
    #[serde(default)]
    pub numbers_as_strings: bool,
    /// The sandbox's clock leaves this line alone: only the control API moves it.
    #[serde(default)]
    pub hold: bool,
}

impl Order {
    /// Qoo10's `total`: item price × quantity + paid options − discount (the reference, §11.2).
    pub fn total(&self) -> Decimal {
        (self.unit_price + self.option_price) * Decimal::from(self.quantity) - self.discount
    }

    /// The available date for a payment at `paid`: 2 days for a normal item, else the lead time.
    pub fn available_after(&self, paid: NaiveDateTime) -> NaiveDate {
        (paid + chrono::Duration::days(i64::from(self.lead_days.max(2)))).date()
    }

    /// Roughly what Qoo10 pays the seller (90 % of the total, one decimal).
    pub fn settle_price(&self) -> Decimal {
        (self.total() * Decimal::new(9, 1)).round_dp(1)
    }

    /// v3 `AvailableSendType`: 1 (reserved, 4 days or more) for a made-to-order line, else 0.
    pub fn available_send_type(&self) -> u8 {
        u8::from(self.lead_days >= 4)
    }

    /// Hidden from GetShippingInfo: a completed cancellation.
    pub fn cancelled(&self) -> bool {
        matches!(self.claim_status, 3 | 16)
    }
}

pub mod jst_time {
    use chrono::NaiveDateTime;
    use serde::{Deserialize, Deserializer, Serializer};

    pub const FORMAT: &str = "%Y-%m-%d %H:%M:%S";

    pub fn serialize<S: Serializer>(t: &NaiveDateTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.format(FORMAT).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<NaiveDateTime, D::Error> {
        let text = String::deserialize(d)?;
        NaiveDateTime::parse_from_str(&text, FORMAT).map_err(serde::de::Error::custom)
    }
}

pub mod jst_time_opt {
    use chrono::NaiveDateTime;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Option<NaiveDateTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => super::jst_time::serialize(t, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<NaiveDateTime>, D::Error> {
        let text = Option::<String>::deserialize(d)?;
        match text.as_deref() {
            None | Some("") => Ok(None),
            Some(t) => {
                NaiveDateTime::parse_from_str(t, super::jst_time::FORMAT).map(Some).map_err(serde::de::Error::custom)
            }
        }
    }
}
