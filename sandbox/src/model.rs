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
    /// Unit price (tax included, JPY).
    pub unit_price: Decimal,
    pub quantity: u32,
    #[serde(default)]
    pub discount: Decimal,
    #[serde(default)]
    pub shipping_rate: Decimal,
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
}

impl Order {
    /// `orderPrice × orderQty − discount`: the rule checked on real data (see the reference, §7).
    pub fn total(&self) -> Decimal {
        self.unit_price * Decimal::from(self.quantity) - self.discount
    }

    /// Roughly what Qoo10 pays the seller (90 % of the total, one decimal).
    pub fn settle_price(&self) -> Decimal {
        (self.total() * Decimal::new(9, 1)).round_dp(1)
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
