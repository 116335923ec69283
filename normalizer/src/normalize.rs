//! Raw Qoo10 row → canonical order. Pure: no IO, no clock.
//!
//! One tolerant reader serves every row shape (v2, v3, claim rows): keys match without case, and
//! each canonical field lists the names Qoo10 uses for it. Numbers may be JSON numbers or strings
//! (`"1980.0000"`); empty strings mean "not yet". Anything required that is missing or
//! unparsable is an error naming the field, the value and what was expected: the caller turns it
//! into a dead letter, never into a guess.
//!
//! The hot path makes one pass over the row: each key is classified into a field slot (no
//! allocation), values stay borrowed JSON text until a field is read, and money is parsed from
//! that text straight into a decimal (never through a float).

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use rust_decimal::Decimal;
use schemas::order::{Anomaly, CanonicalOrder, ORDER_SCHEMA_VERSION, Personal, Provenance, version_of};
use schemas::raw::{RawEnvelope, RowKind};
use schemas::status::{StatusMap, parse_status_label};
use schemas::time::{Qoo10Time, jst, parse_qoo10_time};
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// Why a row cannot become a canonical order: the field, its value, what was expected.
pub type NormalizeError = schemas::dlq::FieldError;

fn err(field: &str, problem: impl Into<String>) -> NormalizeError {
    NormalizeError::new(field, problem)
}

/// A value as shown in an error: its JSON text, cut at 60 characters.
fn shown(v: &RawValue) -> String {
    let s = v.get();
    if s.chars().count() > 60 { format!("{}…", s.chars().take(60).collect::<String>()) } else { s.to_owned() }
}

/// The canonical fields a row can feed, as slot numbers.
mod slot {
    pub const ORDER_NO: usize = 0;
    pub const PACK_NO: usize = 1;
    pub const SHIPPING_STATUS: usize = 2;
    pub const CLAIM_STATUS: usize = 3;
    pub const ORDER_DATE: usize = 4;
    pub const PAYMENT_DATE: usize = 5;
    pub const EST_SHIPPING_DATE: usize = 6;
    pub const SHIPPING_DATE: usize = 7;
    pub const DELIVERED_DATE: usize = 8;
    pub const ITEM_CODE: usize = 9;
    pub const SELLER_ITEM_CODE: usize = 10;
    pub const ITEM_TITLE: usize = 11;
    pub const OPTION: usize = 12;
    pub const OPTION_CODE: usize = 13;
    pub const ORDER_QTY: usize = 14;
    pub const ORDER_PRICE: usize = 15;
    pub const DISCOUNT: usize = 16;
    pub const TOTAL: usize = 17;
    pub const PAYMENT_AMOUNT: usize = 18;
    pub const SETTLE_PRICE: usize = 19;
    pub const SHIPPING_RATE: usize = 20;
    pub const CURRENCY: usize = 21;
    pub const DELIVERY_COMPANY: usize = 22;
    pub const TRACKING_NO: usize = 23;
    pub const PAYMENT_METHOD: usize = 24;
    pub const BUYER: usize = 25;
    pub const BUYER_KANA: usize = 26;
    pub const BUYER_TEL: usize = 27;
    pub const BUYER_MOBILE: usize = 28;
    pub const BUYER_EMAIL: usize = 29;
    pub const RECEIVER: usize = 30;
    pub const RECEIVER_KANA: usize = 31;
    pub const RECEIVER_TEL: usize = 32;
    pub const RECEIVER_MOBILE: usize = 33;
    pub const ZIP_CODE: usize = 34;
    pub const ADDRESS: usize = 35;
    pub const ADDRESS1: usize = 36;
    pub const ADDRESS2: usize = 37;
    pub const COUNTRY: usize = 38;
    pub const SELLER_DISCOUNT: usize = 39;
    pub const CART_DISCOUNT_SELLER: usize = 40;
    pub const CART_DISCOUNT_QOO10: usize = 41;
    pub const REFUND_COUNT: usize = 42;
    pub const REFUND_BALANCE: usize = 43;
    pub const AVAILABLE_DATE: usize = 44;
    pub const AVAILABLE_SEND_TYPE: usize = 45;
    pub const COUNT: usize = 46;
}

/// What a key (lower-cased) is: a slot, a key QAPI is known to send that we do not use, or
/// unknown. The list covers v2, v3, claim rows and the single-order API.
enum Class {
    Slot(usize),
    Known,
    Unknown,
}

fn classify(lower: &str) -> Class {
    use slot::*;
    Class::Slot(match lower {
        "orderno" => ORDER_NO,
        "packno" => PACK_NO,
        "shippingstatus" => SHIPPING_STATUS,
        "claimstatus" => CLAIM_STATUS,
        "orderdate" => ORDER_DATE,
        "paymentdate" => PAYMENT_DATE,
        "estshippingdate" | "estimatedshippingdate" => EST_SHIPPING_DATE,
        "shippingdate" => SHIPPING_DATE,
        "delivereddate" => DELIVERED_DATE,
        "itemcode" | "itemno" => ITEM_CODE,
        "selleritemcode" => SELLER_ITEM_CODE,
        "itemtitle" => ITEM_TITLE,
        "option" => OPTION,
        "optioncode" => OPTION_CODE,
        "orderqty" => ORDER_QTY,
        "orderprice" => ORDER_PRICE,
        "discount" => DISCOUNT,
        "total" => TOTAL,
        "paymentamount" => PAYMENT_AMOUNT,
        "settleprice" => SETTLE_PRICE,
        "shippingrate" => SHIPPING_RATE,
        "currency" => CURRENCY,
        "deliverycompany" => DELIVERY_COMPANY,
        "trackingno" => TRACKING_NO,
        "paymentmethod" => PAYMENT_METHOD,
        "buyer" => BUYER,
        "buyer_gata" | "buyerkana" => BUYER_KANA,
        "buyertel" => BUYER_TEL,
        "buyermobile" => BUYER_MOBILE,
        "buyeremail" => BUYER_EMAIL,
        "receiver" => RECEIVER,
        "receiver_gata" | "receiverkana" => RECEIVER_KANA,
        "receivertel" => RECEIVER_TEL,
        "receivermobile" => RECEIVER_MOBILE,
        "zipcode" => ZIP_CODE,
        "shippingaddr" | "shippingaddress" => ADDRESS,
        "addr1" | "address1" => ADDRESS1,
        "addr2" | "address2" => ADDRESS2,
        "shippingcountry" => COUNTRY,
        "sellerdiscount" => SELLER_DISCOUNT,
        "cart_discount_seller" | "cartdiscountseller" => CART_DISCOUNT_SELLER,
        "cart_discount_qoo10" | "cartdiscountqoo10" => CART_DISCOUNT_QOO10,
        "nrpartrefundcnt" => REFUND_COUNT,
        "nrpartrefundbalance" => REFUND_BALANCE,
        "availableshippingdate" => AVAILABLE_DATE,
        "availablesendtype" => AVAILABLE_SEND_TYPE,
        "sellerid"
        | "hopedate"
        | "desireddeliverydate"
        | "sendername"
        | "sendertel"
        | "sendernation"
        | "senderzipcode"
        | "senderaddr"
        | "senderaddress"
        | "shippingway"
        | "shippingmsg"
        | "shippingmessage"
        | "relatedorder"
        | "shippingratetype"
        | "vouchercode"
        | "packingno"
        | "sellerdeliveryno"
        | "paymentnation"
        | "gift"
        | "cod_price"
        | "branchname"
        | "overseaconsignment"
        | "overseaconsignment_receiver"
        | "overseaconsignment_country"
        | "overseaconsignment_zipcode"
        | "overseaconsignment_addr1"
        | "overseaconsignment_addr2"
        | "ordertype"
        | "material"
        | "cancelrefunddate"
        | "reason"
        | "requestdate"
        | "deliverycompanyreturn"
        | "trackingnoreturn"
        | "pickupaddress"
        | "paymentreturnshipping"
        | "itemcondition"
        | "codcancelprice"
        | "codqrefundprice"
        | "codcancelrelatedorder"
        | "nrdutytarget"
        | "nrsoltype" => {
            return Class::Known;
        }
        _ => return Class::Unknown,
    })
}

/// A JSON object key, borrowed from the input unless it held escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// One pass over a row object: classified keys, values still as JSON text.
struct Row<'a> {
    slots: [Option<(Cow<'a, str>, &'a RawValue)>; slot::COUNT],
    unknown: Vec<String>,
}

impl<'de> Deserialize<'de> for Row<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Row<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut row = Row { slots: [const { None }; slot::COUNT], unknown: Vec::new() };
                let mut buf = [0u8; 48];
                while let Some((Key(key), value)) = map.next_entry::<Key<'de>, &'de RawValue>()? {
                    let class = if key.len() <= buf.len() {
                        let lower = &mut buf[..key.len()];
                        lower.copy_from_slice(key.as_bytes());
                        lower.make_ascii_lowercase();
                        // ASCII lower-casing keeps UTF-8 valid.
                        std::str::from_utf8(lower).map_or(Class::Unknown, classify)
                    } else {
                        Class::Unknown
                    };
                    match class {
                        Class::Slot(i) => row.slots[i] = Some((key, value)),
                        Class::Known => {}
                        Class::Unknown => row.unknown.push(key.into_owned()),
                    }
                }
                Ok(row)
            }
        }
        d.deserialize_map(V)
    }
}

/// The JSON text of a number, or of a string's content (unescaped; borrowed when it has no
/// escapes, which is nearly always: Japanese text arrives as plain UTF-8).
fn scalar_text(v: &RawValue) -> Option<Cow<'_, str>> {
    let t = v.get();
    match t.as_bytes().first() {
        Some(b'"') => {
            let inner = &t[1..t.len() - 1];
            if inner.contains('\\') {
                serde_json::from_str::<String>(t).ok().map(Cow::Owned)
            } else {
                Some(Cow::Borrowed(inner))
            }
        }
        Some(b'-' | b'0'..=b'9') => Some(Cow::Borrowed(t)),
        _ => None,
    }
}

fn is_string(v: &RawValue) -> bool {
    v.get().starts_with('"')
}

/// `null`, and the `[]` / `{}` that XML-to-JSON converters make of an empty element.
fn is_null(v: &RawValue) -> bool {
    matches!(v.get(), "null" | "[]" | "{}")
}

impl<'a> Row<'a> {
    fn get(&self, slot: usize) -> Option<(&str, &'a RawValue)> {
        self.slots[slot].as_ref().map(|(k, v)| (k.as_ref(), *v))
    }

    /// Text, or "" when absent, null or not a scalar. Numbers are accepted as their text.
    fn text(&self, slot: usize) -> String {
        match self.get(slot).and_then(|(_, v)| scalar_text(v)) {
            Some(t) => t.trim().to_owned(),
            None => String::new(),
        }
    }

    fn opt_text(&self, slot: usize) -> Option<String> {
        self.get(slot).map(|_| self.text(slot))
    }

    fn required_u64(&self, slot: usize, name: &str) -> Result<u64, NormalizeError> {
        let (key, v) = self.get(slot).ok_or_else(|| err(name, "missing"))?;
        match scalar_text(v).and_then(|t| t.trim().parse::<u64>().ok()) {
            Some(n) if n > 0 => Ok(n),
            _ => Err(err(key, format!("value {} is not a positive integer", shown(v)))),
        }
    }

    fn decimal(&self, slot: usize) -> Result<Option<Decimal>, NormalizeError> {
        let Some((key, v)) = self.get(slot) else {
            return Ok(None);
        };
        if is_null(v) {
            return Ok(None);
        }
        let bad = || err(key, format!("value {} is not a decimal number", shown(v)));
        let text = scalar_text(v).ok_or_else(|| err(key, format!("value {} is not a number", shown(v))))?;
        let text = text.trim();
        if text.is_empty() && is_string(v) {
            return Ok(Some(Decimal::ZERO));
        }
        let text: Cow<'_, str> =
            if text.contains(',') { Cow::Owned(text.replace(',', "")) } else { Cow::Borrowed(text) };
        Decimal::from_str(&text)
            .or_else(|_| Decimal::from_scientific(&text))
            .map(|d| Some(d.normalize()))
            .map_err(|_| bad())
    }

    /// A Qoo10 date/time field. `None` for absent, null or empty.
    fn time(&self, slot: usize) -> Result<Option<Qoo10Time>, NormalizeError> {
        let Some((key, v)) = self.get(slot) else {
            return Ok(None);
        };
        if is_null(v) {
            return Ok(None);
        }
        if !is_string(v) {
            return Err(err(key, format!("value {} is not a date string", shown(v))));
        }
        let text = scalar_text(v).unwrap_or_default();
        match parse_qoo10_time(&text) {
            Some(Qoo10Time::Empty) => Ok(None),
            Some(t) => check_plausible(key, v, t).map(Some),
            None => Err(err(key, format!("value {} is not a date (YYYY-MM-DD[ HH:MM[:SS]], JST)", shown(v)))),
        }
    }

    fn instant(&self, slot: usize) -> Result<Option<DateTime<Utc>>, NormalizeError> {
        Ok(self.time(slot)?.map(|t| match t {
            Qoo10Time::Instant(i) => i,
            Qoo10Time::Date(d) => schemas::time::jst_naive_to_utc(d.and_hms_opt(0, 0, 0).expect("midnight exists")),
            Qoo10Time::Empty => unreachable!("empty is None"),
        }))
    }

    fn date(&self, slot: usize) -> Result<Option<NaiveDate>, NormalizeError> {
        Ok(self.time(slot)?.map(|t| match t {
            Qoo10Time::Date(d) => d,
            Qoo10Time::Instant(i) => i.with_timezone(&jst()).date_naive(),
            Qoo10Time::Empty => unreachable!("empty is None"),
        }))
    }
}

/// Qoo10 did not exist before 2000; a date past 2100 is a corrupted value.
fn check_plausible(key: &str, v: &RawValue, t: Qoo10Time) -> Result<Qoo10Time, NormalizeError> {
    let year = match t {
        Qoo10Time::Date(d) => d.year(),
        Qoo10Time::Instant(i) => i.year(),
        Qoo10Time::Empty => return Ok(t),
    };
    if (2000..=2100).contains(&year) {
        Ok(t)
    } else {
        Err(err(key, format!("value {} is outside 2000..2100", shown(v))))
    }
}

/// The paid-option surcharge of a line: Qoo10's `total` is item price × quantity + paid options
/// − discount, and `orderPrice` is the unit price without the options (docs/qoo10-money.md).
fn option_price(
    price: Option<Decimal>,
    quantity: u32,
    discount: Option<Decimal>,
    total: Option<Decimal>,
) -> Option<Decimal> {
    Some(total? + discount.unwrap_or_default() - price? * Decimal::from(quantity))
}

/// Checks Qoo10's figures against each other. `total_mismatch` is for a total that no paid
/// option explains: one below `orderPrice × orderQty − discount`, or one that leaves a surcharge
/// of a fraction of a yen. The order is kept as Qoo10 sent it: flagged, never dropped or
/// corrected.
fn anomalies(o: &CanonicalOrder) -> Vec<Anomaly> {
    let mut out = Vec::new();
    if let (Some(price), Some(total), Some(surcharge)) = (o.order_price, o.total, o.option_price)
        && (surcharge.is_sign_negative() && !surcharge.is_zero() || !surcharge.fract().is_zero())
    {
        let discount = o.discount.unwrap_or_default();
        let expected = price * Decimal::from(o.quantity) - discount;
        out.push(Anomaly {
            code: "total_mismatch".into(),
            detail: format!(
                "orderPrice {price} × orderQty {} − discount {discount} = {expected}, but total is {total}: \
                 no paid option explains a difference of {surcharge}",
                o.quantity
            ),
        });
    }
    if !o.currency.is_empty() && o.currency != "JPY" {
        out.push(Anomaly { code: "currency_not_jpy".into(), detail: format!("currency is {}", o.currency) });
    }
    out
}

/// A small whole number (a count, a code) from a number or a string; `None` when absent, null
/// or empty.
fn small_number(row: &Row<'_>, slot: usize) -> Result<Option<u32>, NormalizeError> {
    let Some((key, v)) = row.get(slot) else { return Ok(None) };
    if is_null(v) {
        return Ok(None);
    }
    match scalar_text(v).map(|t| t.trim().to_owned()) {
        Some(t) if t.is_empty() => Ok(None),
        Some(t) => t
            .parse::<u32>()
            .ok()
            .or_else(|| Decimal::from_str(&t).ok().filter(|d| d.fract().is_zero()).and_then(|d| u32::try_from(d).ok()))
            .map(Some)
            .ok_or_else(|| err(key, format!("value {} is not a whole number", shown(v)))),
        None => Err(err(key, format!("value {} is not a number", shown(v)))),
    }
}

/// A whole, positive quantity from a number or a string (`2`, `"2"`, `"2.0000"`).
fn quantity(row: &Row<'_>) -> Result<u32, NormalizeError> {
    let (key, v) = row.get(slot::ORDER_QTY).ok_or_else(|| err("orderQty", "missing"))?;
    let q = scalar_text(v).and_then(|t| {
        let t = t.trim();
        t.parse::<i64>().ok().or_else(|| {
            Decimal::from_str(t)
                .or_else(|_| Decimal::from_scientific(t))
                .ok()
                .filter(|d| d.fract().is_zero())
                .and_then(|d| i64::try_from(d).ok())
        })
    });
    match q {
        Some(q) if q > 0 && q <= i64::from(u32::MAX) => Ok(q as u32),
        _ => Err(err(key, format!("value {} is not a positive whole quantity", shown(v)))),
    }
}

/// Turns one raw envelope (and its stream sequence) into a canonical order.
pub fn normalize<R: std::ops::Deref<Target = RawValue>>(
    env: &RawEnvelope<R>,
    raw_seq: u64,
    statuses: &StatusMap,
) -> Result<CanonicalOrder, NormalizeError> {
    use slot::*;
    let row: Row<'_> =
        serde_json::from_str(env.row.get()).map_err(|e| err("row", format!("is not a JSON object: {e}")))?;

    let order_no = row.required_u64(ORDER_NO, "orderNo")?;
    let pack_no = row.required_u64(PACK_NO, "packNo")?;
    let ordered_at = row.instant(ORDER_DATE)?.ok_or_else(|| err("orderDate", "missing or empty"))?;

    let claim_status = match row.get(CLAIM_STATUS) {
        None => 0,
        Some((_, v)) if is_string(v) && scalar_text(v).is_some_and(|t| t.trim().is_empty()) => 0,
        Some((key, v)) => scalar_text(v)
            .and_then(|t| t.trim().parse::<u8>().ok())
            .ok_or_else(|| err(key, format!("value {} is not a claim code", shown(v))))?,
    };
    let (qoo10_status, label) = match (env.kind, row.get(SHIPPING_STATUS)) {
        (RowKind::Claim, _) => (0, claim_status.to_string()),
        (RowKind::Order, None) => return Err(err("shippingStatus", "missing")),
        (RowKind::Order, Some((key, v))) => {
            let text = scalar_text(v).ok_or_else(|| err(key, format!("value {} is not a status label", shown(v))))?;
            let code = parse_status_label(&text)
                .ok_or_else(|| err(key, format!("value {} is not a status label like \"On request(2)\"", shown(v))))?;
            (code, text.into_owned())
        }
    };
    if env.kind == RowKind::Claim && claim_status == 0 {
        return Err(err("claimStatus", "missing on a claim row"));
    }
    let shipping = (qoo10_status != 0).then_some(qoo10_status);
    let status = statuses.canonical(shipping, claim_status).ok_or_else(|| {
        if claim_status != 0 {
            err("claimStatus", format!("code {claim_status} is not in the status mapping"))
        } else {
            err("shippingStatus", format!("code {qoo10_status} is not in the status mapping"))
        }
    })?;
    let quantity = quantity(&row)?;

    let is_claim = env.kind == RowKind::Claim;
    let personal = (!is_claim).then(|| Personal {
        buyer_name: row.text(BUYER),
        buyer_kana: row.text(BUYER_KANA),
        buyer_tel: row.text(BUYER_TEL),
        buyer_mobile: row.text(BUYER_MOBILE),
        buyer_email: row.text(BUYER_EMAIL),
        receiver_name: row.text(RECEIVER),
        receiver_kana: row.text(RECEIVER_KANA),
        receiver_tel: row.text(RECEIVER_TEL),
        receiver_mobile: row.text(RECEIVER_MOBILE),
        zip_code: row.text(ZIP_CODE),
        address: row.text(ADDRESS),
        address1: row.text(ADDRESS1),
        address2: row.text(ADDRESS2),
        country: row.text(COUNTRY),
    });
    let total = match row.decimal(TOTAL)? {
        Some(t) => Some(t),
        None => row.decimal(PAYMENT_AMOUNT)?,
    };
    let (order_price, discount) = (row.decimal(ORDER_PRICE)?, row.decimal(DISCOUNT)?);
    // Only a partial refund (claim 15) says how much was refunded.
    let partial = claim_status == 15;
    let refund_quantity = if partial { small_number(&row, REFUND_COUNT)? } else { None };
    let refund_amount = if partial { row.decimal(REFUND_BALANCE)? } else { None };

    let mut order = CanonicalOrder {
        schema_version: ORDER_SCHEMA_VERSION,
        shop_id: env.shop.clone(),
        order_no,
        pack_no,
        status,
        qoo10_status,
        claim_status,
        item_code: row.text(ITEM_CODE),
        seller_item_code: row.text(SELLER_ITEM_CODE),
        item_title: row.text(ITEM_TITLE),
        option_text: row.opt_text(OPTION),
        option_code: row.opt_text(OPTION_CODE),
        quantity,
        order_price,
        discount,
        total,
        settle_price: row.decimal(SETTLE_PRICE)?,
        shipping_rate: row.decimal(SHIPPING_RATE)?,
        currency: row.text(CURRENCY),
        ordered_at,
        paid_at: row.instant(PAYMENT_DATE)?,
        estimated_ship_date: if is_claim { None } else { row.date(EST_SHIPPING_DATE)? },
        shipped_at: row.instant(SHIPPING_DATE)?,
        delivered_at: row.instant(DELIVERED_DATE)?,
        carrier: row.text(DELIVERY_COMPANY),
        tracking_no: row.text(TRACKING_NO),
        payment_method: row.opt_text(PAYMENT_METHOD),
        option_price: if is_claim { None } else { option_price(order_price, quantity, discount, total) },
        seller_discount: row.decimal(SELLER_DISCOUNT)?,
        cart_discount_seller: row.decimal(CART_DISCOUNT_SELLER)?,
        cart_discount_qoo10: row.decimal(CART_DISCOUNT_QOO10)?,
        refund_quantity,
        refund_amount,
        available_ship_date: row.date(AVAILABLE_DATE)?,
        available_send_type: small_number(&row, AVAILABLE_SEND_TYPE)?.map(|n| n.min(255) as u8),
        first_import: env.first_import,
        new_in_known_cart: env.new_in_known_cart,
        version: version_of(env.fetched_at),
        source: Provenance {
            kind: env.kind,
            method: env.method.clone(),
            fetched_at: env.fetched_at,
            raw_seq,
            qoo10_label: label,
            unknown_keys: row.unknown,
        },
        personal,
        anomalies: Vec::new(),
        cart_claims: if is_claim { env.cart_claims.clone() } else { Vec::new() },
    };
    order.anomalies = anomalies(&order);
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::raw::RawQuery;
    use serde_json::value::RawValue;

    fn fixture(name: &str) -> Vec<Box<RawValue>> {
        let path = format!("{}/../fixtures/qoo10/{name}", env!("CARGO_MANIFEST_DIR"));
        let body = std::fs::read(&path).unwrap();
        match schemas::qapi::parse_response(&body).unwrap().object {
            schemas::qapi::ResultObject::Rows(r) => r,
            other => panic!("{other:?}"),
        }
    }

    fn envelope(kind: RowKind, row: Box<RawValue>) -> RawEnvelope {
        RawEnvelope {
            schema_version: 1,
            shop: "sample-shop".into(),
            kind,
            method: "ShippingBasic.GetShippingInfo_v2".into(),
            query: RawQuery { status: 2, from: "20261101".into(), to: "20261129".into(), condition: 1 },
            fetched_at: "2026-11-29T00:00:00.000123Z".parse().unwrap(),
            row,
            cart_claims: Vec::new(),
            first_import: false,
            new_in_known_cart: false,
        }
    }

    fn norm(kind: RowKind, row: Box<RawValue>) -> Result<CanonicalOrder, NormalizeError> {
        normalize(&envelope(kind, row), 42, &StatusMap::default())
    }

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_owned()).unwrap()
    }

    fn dec(s: &str) -> Option<Decimal> {
        Some(Decimal::from_str(s).unwrap())
    }

    #[test]
    fn v2_status2_pack_of_two_lines() {
        let rows = fixture("shipping_info_v2_status2.json");
        let a = norm(RowKind::Order, rows[0].clone()).unwrap();
        let b = norm(RowKind::Order, rows[1].clone()).unwrap();
        assert_eq!((a.order_no, a.pack_no, b.order_no, b.pack_no), (1090000101, 890000101, 1090000102, 890000101));
        assert_eq!((a.status.as_str(), a.qoo10_status, a.claim_status), ("new", 2, 0));
        assert_eq!(a.quantity, 2);
        assert_eq!((a.order_price, a.discount, a.total), (dec("1280"), dec("128"), dec("2432")));
        assert_eq!(a.settle_price, dec("2150.4"));
        // Numbers as strings: "2980.0000" and "1".
        assert_eq!((b.order_price, b.quantity), (dec("2980"), 1));
        // JST wall clock → UTC instant.
        assert_eq!(a.ordered_at.to_rfc3339(), "2026-11-20T12:14:03+00:00");
        assert_eq!(a.paid_at.unwrap().to_rfc3339(), "2026-11-20T12:15:40+00:00");
        assert_eq!((a.estimated_ship_date, a.shipped_at, a.delivered_at), (None, None, None));
        assert_eq!(a.option_text.as_deref(), Some("容量:100包"));
        assert_eq!(a.item_title, "緑茶 ティーバッグ 100包");
        assert_eq!(a.currency, "JPY");
        assert_eq!(a.version, 1_795_910_400_000_123);
        assert_eq!(a.source.raw_seq, 42);
        assert_eq!(a.source.qoo10_label, "On request(2)");
        let p = a.personal.unwrap();
        assert_eq!(
            (p.buyer_name.as_str(), p.buyer_kana.as_str(), p.zip_code.as_str()),
            ("見本 花子", "ミホン ハナコ", "150-0000")
        );
        assert_eq!(p.address1, "東京都渋谷区");
    }

    #[test]
    fn v2_status3_date_without_seconds_and_ship_date() {
        let o = norm(RowKind::Order, fixture("shipping_info_v2_status3.json").remove(0)).unwrap();
        assert_eq!(o.status.as_str(), "awaiting_shipment");
        assert_eq!(o.ordered_at.to_rfc3339(), "2026-11-20T23:02:00+00:00");
        assert_eq!(o.estimated_ship_date, NaiveDate::from_ymd_opt(2026, 11, 25));
        assert_eq!(o.shipping_rate, dec("600"));
        assert_eq!(o.option_text.as_deref(), Some(""));
    }

    #[test]
    fn v3_pascal_case_shipped() {
        let o = norm(RowKind::Order, fixture("shipping_info_v3_status4.json").remove(0)).unwrap();
        assert_eq!((o.order_no, o.pack_no, o.status.as_str(), o.qoo10_status), (1090000301, 890000301, "shipped", 4));
        assert_eq!(o.item_code, "1000000888");
        assert_eq!(o.estimated_ship_date, NaiveDate::from_ymd_opt(2026, 11, 20));
        assert_eq!(o.shipped_at.unwrap().to_rfc3339(), "2026-11-20T06:30:00+00:00");
        assert_eq!((o.carrier.as_str(), o.tracking_no.as_str()), ("ヤマト運輸", "0000-1111-2222"));
        assert_eq!((o.quantity, o.total), (3, dec("2970")));
        let p = o.personal.unwrap();
        assert_eq!((p.buyer_kana.as_str(), p.address.as_str()), ("レイ ジロウ", "北海道札幌市中央区 例1条2丁目"));
    }

    #[test]
    fn claim_row_overrides_status_and_carries_no_prices() {
        let o = norm(RowKind::Claim, fixture("claim_info_v3_cancelled.json").remove(0)).unwrap();
        assert_eq!((o.status.as_str(), o.claim_status, o.qoo10_status), ("cancelled", 3, 0));
        assert_eq!((o.order_price, o.discount, o.settle_price, o.option_text.clone()), (None, None, None, None));
        assert_eq!(o.total, dec("1280"));
        assert!(o.personal.is_none(), "claim rows never overwrite personal data");
    }

    #[test]
    fn destination_status_is_configurable() {
        let rows = fixture("shipping_info_v2_status2.json");
        let o = normalize(
            &envelope(RowKind::Order, rows[0].clone()),
            1,
            &StatusMap::with_destination(schemas::status::Status::AwaitingShipment),
        )
        .unwrap();
        assert_eq!(o.status.as_str(), "awaiting_shipment");
    }

    #[test]
    fn bad_rows_say_which_field_and_why() {
        let base = r#""packNo":2,"shippingStatus":"On request(2)","orderDate":"2026-11-20 21:14:03","orderQty":1"#;
        let cases = [
            (format!("{{{base}}}"), "orderNo", "missing"),
            (format!(r#"{{"orderNo":"abc",{base}}}"#), "orderNo", "not a positive integer"),
            (format!(r#"{{"orderNo":-5,{base}}}"#), "orderNo", "not a positive integer"),
            (r#"{"orderNo":1,"packNo":2,"shippingStatus":"On request(9)","orderDate":"2026-11-20","orderQty":1}"#.into(), "shippingStatus", "code 9"),
            (r#"{"orderNo":1,"packNo":2,"shippingStatus":"weird","orderDate":"2026-11-20","orderQty":1}"#.into(), "shippingStatus", "not a status label"),
            (r#"{"orderNo":1,"packNo":2,"shippingStatus":"On request(2)","orderDate":"","orderQty":1}"#.into(), "orderDate", "missing or empty"),
            (r#"{"orderNo":1,"packNo":2,"shippingStatus":"On request(2)","orderDate":"1900-01-01","orderQty":1}"#.into(), "orderDate", "outside"),
            (r#"{"orderNo":1,"packNo":2,"shippingStatus":"On request(2)","orderDate":"2026-11-20","orderQty":0}"#.into(), "orderQty", "positive whole"),
            (r#"{"orderNo":1,"packNo":2,"shippingStatus":"On request(2)","orderDate":"2026-11-20","orderQty":"-1"}"#.into(), "orderQty", "positive whole"),
            (r#"{"orderNo":1,"packNo":2,"shippingStatus":"On request(2)","orderDate":"2026-11-20","orderQty":1,"orderPrice":"12x"}"#.into(), "orderPrice", "not a decimal"),
            (r#"[1,2]"#.into(), "row", "not a JSON object"),
        ];
        for (row, field, problem) in cases {
            let e = norm(RowKind::Order, raw(&row)).unwrap_err();
            assert_eq!(e.field, field, "{row}: {e}");
            assert!(e.problem.contains(problem), "{row}: {e}");
        }
        let e = norm(
            RowKind::Claim,
            raw(r#"{"orderNo":1,"packNo":2,"orderDate":"2026-11-20","orderQty":1,"claimStatus":"7"}"#),
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "field `claimStatus`: code 7 is not in the status mapping");
    }

    #[test]
    fn fixtures_have_no_unknown_keys_and_add_up() {
        for f in ["shipping_info_v2_status2.json", "shipping_info_v2_status3.json", "shipping_info_v3_status4.json"] {
            for row in fixture(f) {
                let o = norm(RowKind::Order, row).unwrap();
                assert!(o.source.unknown_keys.is_empty(), "{f}: {:?}", o.source.unknown_keys);
                assert!(o.anomalies.is_empty(), "{f}: {:?}", o.anomalies);
            }
        }
        let o = norm(RowKind::Claim, fixture("claim_info_v3_cancelled.json").remove(0)).unwrap();
        assert!(o.source.unknown_keys.is_empty(), "{:?}", o.source.unknown_keys);
    }

    #[test]
    fn inconsistent_money_is_flagged_not_dropped() {
        let o = norm(
            RowKind::Order,
            raw(r#"{"orderNo":1,"packNo":2,"shippingStatus":"On request(2)","orderDate":"2026-11-20","orderQty":2,"orderPrice":1000,"discount":100,"total":2000,"Currency":"USD","NewField":1}"#),
        )
        .unwrap();
        let codes: Vec<&str> = o.anomalies.iter().map(|a| a.code.as_str()).collect();
        assert_eq!(codes, ["currency_not_jpy"], "a total 100 above the item price is a paid option");
        assert_eq!(o.option_price, dec("100"));
        assert_eq!(o.source.unknown_keys, ["NewField"]);
        let o = norm(
            RowKind::Order,
            raw(r#"{"orderNo":1,"packNo":2,"shippingStatus":"On request(2)","orderDate":"2026-11-20","orderQty":2,"orderPrice":1000,"discount":100,"total":1800}"#),
        )
        .unwrap();
        assert_eq!(o.anomalies[0].code, "total_mismatch", "below the price: no option explains it");
        assert_eq!(
            o.anomalies[0].detail,
            "orderPrice 1000 × orderQty 2 − discount 100 = 1900, but total is 1800: no paid option explains a difference of -100"
        );
        let o = norm(
            RowKind::Order,
            raw(r#"{"orderNo":1,"packNo":2,"shippingStatus":"On request(2)","orderDate":"2026-11-20","orderQty":1,"orderPrice":1000,"total":1000.5}"#),
        )
        .unwrap();
        assert_eq!(o.anomalies.len(), 1, "a surcharge of half a yen is no option price");
    }

    #[test]
    fn money_of_paid_options_cart_discounts_and_partial_refunds() {
        let o = norm(
            RowKind::Order,
            raw(r#"{"OrderNo":1,"PackNo":2,"ShippingStatus":"On request(2)","OrderDate":"2026-11-20","OrderQty":2,
                "OrderPrice":1650,"Discount":0,"Total":4698,"Option":"名入れ刺繍(+699円)","SellerDiscount":0,
                "CartDiscountSeller":"300.0000","CartDiscountQoo10":200,"AvailableSendType":"1","AvailableShippingDate":"2026-12-20"}"#),
        )
        .unwrap();
        assert!(o.anomalies.is_empty(), "{:?}", o.anomalies);
        assert_eq!(
            (o.option_price, o.cart_discount_seller, o.cart_discount_qoo10),
            (dec("1398"), dec("300"), dec("200"))
        );
        assert_eq!((o.available_ship_date, o.available_send_type), (NaiveDate::from_ymd_opt(2026, 12, 20), Some(1)));
        assert_eq!((o.refund_quantity, o.refund_amount), (None, None));
        let c = norm(
            RowKind::Claim,
            raw(r#"{"orderNo":1,"packNo":2,"orderDate":"2026-11-20","orderQty":2,"claimStatus":"15","paymentAmount":4698,
                "nrPartRefundCnt":1,"nrPartRefundBalance":"1650.0000"}"#),
        )
        .unwrap();
        assert_eq!(
            (c.status.as_str(), c.refund_quantity, c.refund_amount),
            ("partially_refunded", Some(1), dec("1650"))
        );
        assert_eq!(c.option_price, None, "a claim row carries no unit price");
        let e = norm(
            RowKind::Claim,
            raw(
                r#"{"orderNo":1,"packNo":2,"orderDate":"2026-11-20","orderQty":2,"claimStatus":"15","nrPartRefundCnt":"x"}"#,
            ),
        );
        assert_eq!(e.unwrap_err().field, "nrPartRefundCnt");
    }

    #[test]
    fn single_order_api_row_carries_its_claim() {
        // GetShippingAndClaimInfoByOrderNo_V2: shipping fields and the claim flattened, other casing.
        let o = norm(
            RowKind::Order,
            raw(r#"{"orderNo":11,"packNo":12,"shippingStatus":"On delivery(4)","orderDate":"2026-11-20 10:00:00","orderQty":1,
                "orderPrice":500,"total":500,"deliveryCompany":"日本郵便","trackingNo":"T-1","shippingDate":"2026-11-21 09:00:00",
                "paymentNation":"JP","currency":"JPY","claimStatus":"4","reason":"サイズ違い","requestDate":"2026-11-22 10:00:00"}"#),
        )
        .unwrap();
        assert_eq!((o.status.as_str(), o.qoo10_status, o.claim_status), ("return_requested", 4, 4));
        assert_eq!((o.carrier.as_str(), o.tracking_no.as_str(), o.currency.as_str()), ("日本郵便", "T-1", "JPY"));
        assert!(o.source.unknown_keys.is_empty());
    }

    #[test]
    fn xml_style_empty_elements_are_empty() {
        let o = norm(
            RowKind::Order,
            raw(r#"{"orderNo":1,"packNo":2,"shippingStatus":"On request(2)","orderDate":"2026-11-20","orderQty":1,"EstShippingDate":[],"TrackingNo":{},"discount":[]}"#),
        )
        .unwrap();
        assert_eq!((o.estimated_ship_date, o.tracking_no.as_str(), o.discount), (None, "", None));
    }

    #[test]
    fn keys_match_without_case() {
        let o = norm(
            RowKind::Order,
            raw(r#"{"ORDERNO":"7","packno":8,"ShippingStatus":"Delivere(5)","orderdate":"2026/11/20 10:00","ORDERQTY":"2","orderprice":1e3}"#),
        )
        .unwrap();
        assert_eq!((o.order_no, o.pack_no, o.status.as_str(), o.quantity), (7, 8, "delivered", 2));
        assert_eq!(o.order_price, dec("1000"));
        // Escapes in keys and values are honoured.
        let o = norm(
            RowKind::Order,
            raw(r#"{"order\u004eo":1,"packNo":2,"shippingStatus":"On request(2)","orderDate":"2026-11-20","orderQty":1,"itemTitle":"\u7dd1\u8336 \"A\""}"#),
        )
        .unwrap();
        assert_eq!((o.order_no, o.item_title.as_str()), (1, "緑茶 \"A\""));
    }
}
