//! The mapping, table-tested on fixtures and hand-made rows.

use super::*;
use std::str::FromStr;

use chrono::NaiveDate;
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
    assert_eq!((o.option_price, o.cart_discount_seller, o.cart_discount_qoo10), (dec("1398"), dec("300"), dec("200")));
    assert_eq!((o.available_ship_date, o.available_send_type), (NaiveDate::from_ymd_opt(2026, 12, 20), Some(1)));
    assert_eq!((o.refund_quantity, o.refund_amount), (None, None));
    let c = norm(
        RowKind::Claim,
        raw(r#"{"orderNo":1,"packNo":2,"orderDate":"2026-11-20","orderQty":2,"claimStatus":"15","paymentAmount":4698,
            "nrPartRefundCnt":1,"nrPartRefundBalance":"1650.0000"}"#),
    )
    .unwrap();
    assert_eq!((c.status.as_str(), c.refund_quantity, c.refund_amount), ("partially_refunded", Some(1), dec("1650")));
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

/// A blank ClaimStatus string on an order row is "no claim"; a number that is no claim code is
/// refused naming the field.
#[test]
fn a_blank_claim_status_is_no_claim() {
    let with = |claim: &str| {
        norm(
            RowKind::Order,
            raw(&format!(
                r#"{{"orderNo":1,"packNo":2,"shippingStatus":"On request(2)","orderDate":"2026-11-20","orderQty":1,"ClaimStatus":{claim}}}"#
            )),
        )
    };
    assert_eq!(with(r#"" ""#).unwrap().claim_status, 0);
    let e = with("300").unwrap_err();
    assert_eq!((e.field.as_str(), e.problem.as_str()), ("ClaimStatus", "value 300 is not a claim code"));
}
