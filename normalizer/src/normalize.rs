//! Raw Qoo10 row → canonical order. Pure: no IO, no clock.
//!
//! One tolerant reader serves every row shape (v2, v3, claim rows): keys match without case, and
//! each canonical field lists the names Qoo10 uses for it. Numbers may be JSON numbers or strings
//! (`"1980.0000"`); empty strings mean "not yet". Anything required that is missing or
//! unparsable is an error naming the field, the value and what was expected: the caller turns it
//! into a dead letter, never into a guess.

use std::str::FromStr;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use rust_decimal::Decimal;
use schemas::order::{
    Anomaly, CanonicalOrder, ORDER_SCHEMA_VERSION, Personal, Provenance, version_of,
};
use schemas::raw::{RawEnvelope, RowKind};
use schemas::status::{StatusMap, parse_status_label};
use schemas::time::{Qoo10Time, jst, parse_qoo10_time};
use serde_json::{Map, Value};

/// Why a row cannot become a canonical order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}`: {problem}")]
pub struct NormalizeError {
    pub field: String,
    pub problem: String,
}

fn err(field: &str, problem: impl Into<String>) -> NormalizeError {
    NormalizeError {
        field: field.to_owned(),
        problem: problem.into(),
    }
}

fn shown(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 60 {
        format!("{}…", s.chars().take(60).collect::<String>())
    } else {
        s
    }
}

/// A row whose keys are looked up without case, by any of several names.
struct Row<'a>(&'a Map<String, Value>);

impl<'a> Row<'a> {
    fn get(&self, names: &[&str]) -> Option<(&'a str, &'a Value)> {
        names.iter().find_map(|n| {
            self.0
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(n))
                .map(|(k, v)| (k.as_str(), v))
        })
    }

    /// Text, or "" when absent or null. Numbers are accepted as their text.
    fn text(&self, names: &[&str]) -> String {
        match self.get(names).map(|(_, v)| v) {
            Some(Value::String(s)) => s.trim().to_owned(),
            Some(Value::Number(n)) => n.to_string(),
            _ => String::new(),
        }
    }

    fn opt_text(&self, names: &[&str]) -> Option<String> {
        self.get(names).map(|_| self.text(names))
    }

    fn required_u64(&self, names: &[&str]) -> Result<u64, NormalizeError> {
        let (key, v) = self.get(names).ok_or_else(|| err(names[0], "missing"))?;
        let parsed = match v {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse::<u64>().ok(),
            _ => None,
        };
        match parsed {
            Some(n) if n > 0 => Ok(n),
            _ => Err(err(
                key,
                format!("value {} is not a positive integer", shown(v)),
            )),
        }
    }

    fn decimal(&self, names: &[&str]) -> Result<Option<Decimal>, NormalizeError> {
        let Some((key, v)) = self.get(names) else {
            return Ok(None);
        };
        let text = match v {
            Value::Number(n) => n.to_string(),
            Value::String(s) if s.trim().is_empty() => return Ok(Some(Decimal::ZERO)),
            Value::String(s) => s.trim().replace(',', ""),
            Value::Null => return Ok(None),
            other => return Err(err(key, format!("value {} is not a number", shown(other)))),
        };
        Decimal::from_str(&text)
            .or_else(|_| Decimal::from_scientific(&text))
            .map(|d| Some(d.normalize()))
            .map_err(|_| err(key, format!("value {} is not a decimal number", shown(v))))
    }

    /// A Qoo10 date/time field. `None` for absent or empty.
    fn time(&self, names: &[&str]) -> Result<Option<Qoo10Time>, NormalizeError> {
        let Some((key, v)) = self.get(names) else {
            return Ok(None);
        };
        match v {
            Value::Null => Ok(None),
            Value::String(s) => match parse_qoo10_time(s) {
                Some(Qoo10Time::Empty) => Ok(None),
                Some(t) => check_plausible(key, v, t).map(Some),
                None => Err(err(
                    key,
                    format!(
                        "value {} is not a date (YYYY-MM-DD[ HH:MM[:SS]], JST)",
                        shown(v)
                    ),
                )),
            },
            other => Err(err(
                key,
                format!("value {} is not a date string", shown(other)),
            )),
        }
    }

    fn instant(&self, names: &[&str]) -> Result<Option<DateTime<Utc>>, NormalizeError> {
        Ok(self.time(names)?.map(|t| match t {
            Qoo10Time::Instant(i) => i,
            Qoo10Time::Date(d) => {
                schemas::time::jst_naive_to_utc(d.and_hms_opt(0, 0, 0).expect("midnight exists"))
            }
            Qoo10Time::Empty => unreachable!("empty is None"),
        }))
    }

    fn date(&self, names: &[&str]) -> Result<Option<NaiveDate>, NormalizeError> {
        Ok(self.time(names)?.map(|t| match t {
            Qoo10Time::Date(d) => d,
            Qoo10Time::Instant(i) => i.with_timezone(&jst()).date_naive(),
            Qoo10Time::Empty => unreachable!("empty is None"),
        }))
    }
}

/// Qoo10 did not exist before 2000; a date past 2100 is a corrupted value.
fn check_plausible(key: &str, v: &Value, t: Qoo10Time) -> Result<Qoo10Time, NormalizeError> {
    let year = match t {
        Qoo10Time::Date(d) => d.year(),
        Qoo10Time::Instant(i) => i.year(),
        Qoo10Time::Empty => return Ok(t),
    };
    if (2000..=2100).contains(&year) {
        Ok(t)
    } else {
        Err(err(
            key,
            format!("value {} is outside 2000..2100", shown(v)),
        ))
    }
}

/// Every key QAPI is known to send in order and claim rows (v2, v3, claim, single-order API),
/// lower-cased. Anything else is counted in `source.unknown_keys`; the raw stream keeps it.
const KNOWN_KEYS: &[&str] = &[
    "orderno",
    "packno",
    "shippingstatus",
    "sellerid",
    "orderdate",
    "paymentdate",
    "estshippingdate",
    "estimatedshippingdate",
    "shippingdate",
    "delivereddate",
    "buyer",
    "buyer_gata",
    "buyerkana",
    "buyertel",
    "buyermobile",
    "buyeremail",
    "itemcode",
    "itemno",
    "selleritemcode",
    "itemtitle",
    "option",
    "optioncode",
    "orderprice",
    "orderqty",
    "discount",
    "total",
    "receiver",
    "receiver_gata",
    "receiverkana",
    "shippingcountry",
    "zipcode",
    "shippingaddr",
    "shippingaddress",
    "addr1",
    "addr2",
    "address1",
    "address2",
    "receivertel",
    "receivermobile",
    "hopedate",
    "desireddeliverydate",
    "sendername",
    "sendertel",
    "sendernation",
    "senderzipcode",
    "senderaddr",
    "senderaddress",
    "shippingway",
    "shippingmsg",
    "shippingmessage",
    "paymentmethod",
    "sellerdiscount",
    "currency",
    "shippingrate",
    "relatedorder",
    "shippingratetype",
    "deliverycompany",
    "trackingno",
    "vouchercode",
    "packingno",
    "sellerdeliveryno",
    "paymentnation",
    "gift",
    "cod_price",
    "cart_discount_seller",
    "cart_discount_qoo10",
    "cartdiscountseller",
    "cartdiscountqoo10",
    "settleprice",
    "branchname",
    "overseaconsignment",
    "overseaconsignment_receiver",
    "overseaconsignment_country",
    "overseaconsignment_zipcode",
    "overseaconsignment_addr1",
    "overseaconsignment_addr2",
    "ordertype",
    "material",
    "availablesendtype",
    "availableshippingdate",
    "claimstatus",
    "cancelrefunddate",
    "reason",
    "requestdate",
    "paymentamount",
    "deliverycompanyreturn",
    "trackingnoreturn",
    "pickupaddress",
    "paymentreturnshipping",
    "itemcondition",
    "codcancelprice",
    "codqrefundprice",
    "codcancelrelatedorder",
    "nrdutytarget",
    "nrsoltype",
    "nrpartrefundcnt",
    "nrpartrefundbalance",
];

fn unknown_keys(map: &Map<String, Value>) -> Vec<String> {
    map.keys()
        .filter(|k| !KNOWN_KEYS.contains(&k.to_ascii_lowercase().as_str()))
        .cloned()
        .collect()
}

/// Checks Qoo10's figures against each other. `orderPrice` is the **unit** price: on 1,994 real
/// rows `total = orderPrice × orderQty − discount` held for every row (see
/// docs/qoo10-money.md); a row where it does not hold is flagged, never dropped or corrected.
fn anomalies(o: &CanonicalOrder) -> Vec<Anomaly> {
    let mut out = Vec::new();
    if let (Some(price), Some(total)) = (o.order_price, o.total) {
        let discount = o.discount.unwrap_or_default();
        let expected = price * Decimal::from(o.quantity) - discount;
        if expected != total {
            out.push(Anomaly {
                code: "total_mismatch".into(),
                detail: format!("orderPrice {price} × orderQty {} − discount {discount} = {expected}, but total is {total}", o.quantity),
            });
        }
    }
    if !o.currency.is_empty() && o.currency != "JPY" {
        out.push(Anomaly {
            code: "currency_not_jpy".into(),
            detail: format!("currency is {}", o.currency),
        });
    }
    out
}

/// Turns one raw envelope (and its stream sequence) into a canonical order.
pub fn normalize(
    env: &RawEnvelope,
    raw_seq: u64,
    statuses: &StatusMap,
) -> Result<CanonicalOrder, NormalizeError> {
    let map: Map<String, Value> = serde_json::from_str(env.row.get())
        .map_err(|e| err("row", format!("is not a JSON object: {e}")))?;
    let row = Row(&map);

    let order_no = row.required_u64(&["orderNo"])?;
    let pack_no = row.required_u64(&["packNo"])?;
    let ordered_at = row
        .instant(&["orderDate"])?
        .ok_or_else(|| err("orderDate", "missing or empty"))?;

    let claim_status = match row.get(&["claimStatus"]) {
        None => 0,
        Some((_, Value::String(s))) if s.trim().is_empty() => 0,
        Some((key, v)) => {
            let code = match v {
                Value::Number(n) => n.as_u64(),
                Value::String(s) => s.trim().parse::<u64>().ok(),
                _ => None,
            };
            code.and_then(|c| u8::try_from(c).ok())
                .ok_or_else(|| err(key, format!("value {} is not a claim code", shown(v))))?
        }
    };
    let (qoo10_status, label) = match (env.kind, row.get(&["shippingStatus"])) {
        (RowKind::Claim, _) => (0, claim_status.to_string()),
        (RowKind::Order, None) => return Err(err("shippingStatus", "missing")),
        (RowKind::Order, Some((key, v))) => {
            let text = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                other => {
                    return Err(err(
                        key,
                        format!("value {} is not a status label", shown(other)),
                    ));
                }
            };
            let code = parse_status_label(&text).ok_or_else(|| {
                err(
                    key,
                    format!(
                        "value {} is not a status label like \"On request(2)\"",
                        shown(v)
                    ),
                )
            })?;
            (code, text)
        }
    };
    if env.kind == RowKind::Claim && claim_status == 0 {
        return Err(err("claimStatus", "missing on a claim row"));
    }
    let shipping = (qoo10_status != 0).then_some(qoo10_status);
    let status = statuses.canonical(shipping, claim_status).ok_or_else(|| {
        if claim_status != 0 {
            err(
                "claimStatus",
                format!("code {claim_status} is not in the status mapping"),
            )
        } else {
            err(
                "shippingStatus",
                format!("code {qoo10_status} is not in the status mapping"),
            )
        }
    })?;

    let quantity = match row.get(&["orderQty"]) {
        None => return Err(err("orderQty", "missing")),
        Some((key, v)) => {
            let q = match v {
                Value::Number(n) => n
                    .as_i64()
                    .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
                Value::String(s) => {
                    let t = s.trim();
                    t.parse::<i64>().ok().or_else(|| {
                        Decimal::from_str(t)
                            .ok()
                            .filter(|d| d.fract().is_zero())
                            .and_then(|d| i64::try_from(d).ok())
                    })
                }
                _ => None,
            };
            match q {
                Some(q) if q > 0 && q <= i64::from(u32::MAX) => q as u32,
                _ => {
                    return Err(err(
                        key,
                        format!("value {} is not a positive whole quantity", shown(v)),
                    ));
                }
            }
        }
    };

    let is_claim = env.kind == RowKind::Claim;
    let personal = (!is_claim).then(|| Personal {
        buyer_name: row.text(&["buyer"]),
        buyer_kana: row.text(&["buyer_gata", "BuyerKana"]),
        buyer_tel: row.text(&["buyerTel"]),
        buyer_mobile: row.text(&["buyerMobile"]),
        buyer_email: row.text(&["buyerEmail"]),
        receiver_name: row.text(&["receiver"]),
        receiver_kana: row.text(&["receiver_gata", "ReceiverKana"]),
        receiver_tel: row.text(&["receiverTel"]),
        receiver_mobile: row.text(&["receiverMobile"]),
        zip_code: row.text(&["zipCode"]),
        address: row.text(&["shippingAddr", "ShippingAddress"]),
        address1: row.text(&["Addr1", "Address1"]),
        address2: row.text(&["Addr2", "Address2"]),
        country: row.text(&["shippingCountry"]),
    });

    let mut order = CanonicalOrder {
        schema_version: ORDER_SCHEMA_VERSION,
        shop_id: env.shop.clone(),
        order_no,
        pack_no,
        status: status.to_owned(),
        qoo10_status,
        claim_status,
        item_code: row.text(&["itemCode", "ItemNo"]),
        seller_item_code: row.text(&["sellerItemCode"]),
        item_title: row.text(&["itemTitle"]),
        option_text: row.opt_text(&["option"]),
        option_code: row.opt_text(&["optionCode"]),
        quantity,
        order_price: row.decimal(&["orderPrice"])?,
        discount: row.decimal(&["discount"])?,
        total: row.decimal(&["total", "paymentAmount"])?,
        settle_price: row.decimal(&["SettlePrice"])?,
        shipping_rate: row.decimal(&["ShippingRate"])?,
        currency: row.text(&["Currency"]),
        ordered_at,
        paid_at: row.instant(&["PaymentDate"])?,
        estimated_ship_date: if is_claim {
            None
        } else {
            row.date(&["EstShippingDate", "EstimatedShippingDate"])?
        },
        shipped_at: row.instant(&["ShippingDate"])?,
        delivered_at: row.instant(&["DeliveredDate"])?,
        carrier: row.text(&["DeliveryCompany"]),
        tracking_no: row.text(&["TrackingNo"]),
        payment_method: row.opt_text(&["PaymentMethod"]),
        version: version_of(env.fetched_at),
        source: Provenance {
            kind: env.kind,
            method: env.method.clone(),
            fetched_at: env.fetched_at,
            raw_seq,
            qoo10_label: label,
            unknown_keys: unknown_keys(&map),
        },
        personal,
        anomalies: Vec::new(),
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
            query: RawQuery {
                status: 2,
                from: "20261101".into(),
                to: "20261129".into(),
                condition: 1,
            },
            fetched_at: "2026-11-29T00:00:00.000123Z".parse().unwrap(),
            row,
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
        assert_eq!(
            (a.order_no, a.pack_no, b.order_no, b.pack_no),
            (1090000101, 890000101, 1090000102, 890000101)
        );
        assert_eq!(
            (a.status.as_str(), a.qoo10_status, a.claim_status),
            ("new", 2, 0)
        );
        assert_eq!(a.quantity, 2);
        assert_eq!(
            (a.order_price, a.discount, a.total),
            (dec("1280"), dec("128"), dec("2432"))
        );
        assert_eq!(a.settle_price, dec("2150.4"));
        // Numbers as strings: "2980.0000" and "1".
        assert_eq!((b.order_price, b.quantity), (dec("2980"), 1));
        // JST wall clock → UTC instant.
        assert_eq!(a.ordered_at.to_rfc3339(), "2026-11-20T12:14:03+00:00");
        assert_eq!(a.paid_at.unwrap().to_rfc3339(), "2026-11-20T12:15:40+00:00");
        assert_eq!(
            (a.estimated_ship_date, a.shipped_at, a.delivered_at),
            (None, None, None)
        );
        assert_eq!(a.option_text.as_deref(), Some("容量:100包"));
        assert_eq!(a.item_title, "緑茶 ティーバッグ 100包");
        assert_eq!(a.currency, "JPY");
        assert_eq!(a.version, 1_795_910_400_000_123);
        assert_eq!(a.source.raw_seq, 42);
        assert_eq!(a.source.qoo10_label, "On request(2)");
        let p = a.personal.unwrap();
        assert_eq!(
            (
                p.buyer_name.as_str(),
                p.buyer_kana.as_str(),
                p.zip_code.as_str()
            ),
            ("見本 花子", "ミホン ハナコ", "150-0000")
        );
        assert_eq!(p.address1, "東京都渋谷区");
    }

    #[test]
    fn v2_status3_date_without_seconds_and_ship_date() {
        let o = norm(
            RowKind::Order,
            fixture("shipping_info_v2_status3.json").remove(0),
        )
        .unwrap();
        assert_eq!(o.status, "awaiting_shipment");
        assert_eq!(o.ordered_at.to_rfc3339(), "2026-11-20T23:02:00+00:00");
        assert_eq!(o.estimated_ship_date, NaiveDate::from_ymd_opt(2026, 11, 25));
        assert_eq!(o.shipping_rate, dec("600"));
        assert_eq!(o.option_text.as_deref(), Some(""));
    }

    #[test]
    fn v3_pascal_case_shipped() {
        let o = norm(
            RowKind::Order,
            fixture("shipping_info_v3_status4.json").remove(0),
        )
        .unwrap();
        assert_eq!(
            (o.order_no, o.pack_no, o.status.as_str(), o.qoo10_status),
            (1090000301, 890000301, "shipped", 4)
        );
        assert_eq!(o.item_code, "1000000888");
        assert_eq!(o.estimated_ship_date, NaiveDate::from_ymd_opt(2026, 11, 20));
        assert_eq!(
            o.shipped_at.unwrap().to_rfc3339(),
            "2026-11-20T06:30:00+00:00"
        );
        assert_eq!(
            (o.carrier.as_str(), o.tracking_no.as_str()),
            ("ヤマト運輸", "0000-1111-2222")
        );
        assert_eq!((o.quantity, o.total), (3, dec("2970")));
        let p = o.personal.unwrap();
        assert_eq!(
            (p.buyer_kana.as_str(), p.address.as_str()),
            ("レイ ジロウ", "北海道札幌市中央区 例1条2丁目")
        );
    }

    #[test]
    fn claim_row_overrides_status_and_carries_no_prices() {
        let o = norm(
            RowKind::Claim,
            fixture("claim_info_v3_cancelled.json").remove(0),
        )
        .unwrap();
        assert_eq!(
            (o.status.as_str(), o.claim_status, o.qoo10_status),
            ("cancelled", 3, 0)
        );
        assert_eq!(
            (
                o.order_price,
                o.discount,
                o.settle_price,
                o.option_text.clone()
            ),
            (None, None, None, None)
        );
        assert_eq!(o.total, dec("1280"));
        assert!(
            o.personal.is_none(),
            "claim rows never overwrite personal data"
        );
    }

    #[test]
    fn destination_status_is_configurable() {
        let rows = fixture("shipping_info_v2_status2.json");
        let o = normalize(
            &envelope(RowKind::Order, rows[0].clone()),
            1,
            &StatusMap::with_destination("awaiting_shipment"),
        )
        .unwrap();
        assert_eq!(o.status, "awaiting_shipment");
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
        let e = norm(RowKind::Claim, raw(r#"{"orderNo":1,"packNo":2,"orderDate":"2026-11-20","orderQty":1,"claimStatus":"7"}"#)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "field `claimStatus`: code 7 is not in the status mapping"
        );
    }

    #[test]
    fn fixtures_have_no_unknown_keys_and_add_up() {
        for f in [
            "shipping_info_v2_status2.json",
            "shipping_info_v2_status3.json",
            "shipping_info_v3_status4.json",
        ] {
            for row in fixture(f) {
                let o = norm(RowKind::Order, row).unwrap();
                assert!(
                    o.source.unknown_keys.is_empty(),
                    "{f}: {:?}",
                    o.source.unknown_keys
                );
                assert!(o.anomalies.is_empty(), "{f}: {:?}", o.anomalies);
            }
        }
        let o = norm(
            RowKind::Claim,
            fixture("claim_info_v3_cancelled.json").remove(0),
        )
        .unwrap();
        assert!(
            o.source.unknown_keys.is_empty(),
            "{:?}",
            o.source.unknown_keys
        );
    }

    #[test]
    fn inconsistent_money_is_flagged_not_dropped() {
        let o = norm(
            RowKind::Order,
            raw(r#"{"orderNo":1,"packNo":2,"shippingStatus":"On request(2)","orderDate":"2026-11-20","orderQty":2,"orderPrice":1000,"discount":100,"total":2000,"Currency":"USD","NewField":1}"#),
        )
        .unwrap();
        let codes: Vec<&str> = o.anomalies.iter().map(|a| a.code.as_str()).collect();
        assert_eq!(codes, ["total_mismatch", "currency_not_jpy"]);
        assert_eq!(
            o.anomalies[0].detail,
            "orderPrice 1000 × orderQty 2 − discount 100 = 1900, but total is 2000"
        );
        assert_eq!(o.source.unknown_keys, ["NewField"]);
    }

    #[test]
    fn keys_match_without_case() {
        let o = norm(
            RowKind::Order,
            raw(r#"{"ORDERNO":"7","packno":8,"ShippingStatus":"Delivere(5)","orderdate":"2026/11/20 10:00","ORDERQTY":"2","orderprice":1e3}"#),
        )
        .unwrap();
        assert_eq!(
            (o.order_no, o.pack_no, o.status.as_str(), o.quantity),
            (7, 8, "delivered", 2)
        );
        assert_eq!(o.order_price, dec("1000"));
    }
}
