//! Property tests: whatever JSON arrives, the normalizer answers with a canonical order or an
//! error naming a field, and never panics.

use normalizer::normalize::normalize;
use proptest::prelude::*;
use schemas::raw::{RawEnvelope, RawQuery, RowKind};
use schemas::status::StatusMap;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

const KEYS: &[&str] = &[
    "orderNo",
    "OrderNo",
    "packNo",
    "shippingStatus",
    "ShippingStatus",
    "orderDate",
    "PaymentDate",
    "EstShippingDate",
    "EstimatedShippingDate",
    "ShippingDate",
    "DeliveredDate",
    "orderQty",
    "orderPrice",
    "discount",
    "total",
    "SettlePrice",
    "ShippingRate",
    "claimStatus",
    "paymentAmount",
    "option",
    "buyer",
    "Currency",
    "TrackingNo",
];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| json!(f)),
        ".{0,30}".prop_map(Value::String),
        prop::sample::select(vec![
            "On request(2)",
            "Delivere(5)",
            "(9)",
            "2026-11-20 21:14:03",
            "2026-11-20",
            "",
            "1980.0000",
            "-1",
            "0",
            "1e400",
            "9999-99-99",
            "2026-02-30 25:61:61",
            "３"
        ])
        .prop_map(|s| json!(s)),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((".{0,8}", inner), 0..6).prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// Objects whose keys are mostly the ones the normalizer looks for.
fn row() -> impl Strategy<Value = Value> {
    prop::collection::vec((prop::sample::select(KEYS), json_value()), 0..20).prop_map(|kv| {
        let mut m = Map::new();
        for (k, v) in kv {
            m.insert(k.to_owned(), v);
        }
        Value::Object(m)
    })
}

fn envelope(kind: RowKind, row: &Value) -> RawEnvelope {
    RawEnvelope {
        schema_version: 1,
        shop: "s".into(),
        kind,
        method: "m".into(),
        query: RawQuery { status: 2, from: "20261101".into(), to: "20261129".into(), condition: 1 },
        fetched_at: "2026-11-29T00:00:00Z".parse().unwrap(),
        row: RawValue::from_string(row.to_string()).unwrap(),
        cart_claims: Vec::new(),
        first_import: false,
        new_in_known_cart: false,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn any_row_gives_an_order_or_a_named_field(row in row(), claim in any::<bool>()) {
        let kind = if claim { RowKind::Claim } else { RowKind::Order };
        match normalize(&envelope(kind, &row), 1, &StatusMap::default()) {
            Ok(o) => {
                prop_assert!(o.quantity > 0);
                prop_assert!(o.order_no > 0 && o.pack_no > 0);
                prop_assert!(schemas::status::is_canonical(o.status.as_str()));
            }
            Err(e) => prop_assert!(!e.field.is_empty() && !e.problem.is_empty()),
        }
    }

    #[test]
    fn any_json_value_as_row_never_panics(v in json_value()) {
        let _ = normalize(&envelope(RowKind::Order, &v), 1, &StatusMap::default());
    }

    /// Bytes near a real envelope (a few of them overwritten): those that still parse reach the
    /// normalizer (`the_byte_property_reaches_the_normalizer` counts how often: random bytes
    /// alone almost never parse, and this body then never ran).
    #[test]
    fn damaged_envelope_bytes_never_panic(bytes in damaged_envelope()) {
        if let Ok(env) = serde_json::from_slice::<RawEnvelope>(&bytes) {
            let _ = normalize(&env, 1, &StatusMap::default());
        }
    }
}

/// A real envelope's bytes with up to three of them overwritten.
fn damaged_envelope() -> impl Strategy<Value = Vec<u8>> {
    let edits = prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4);
    (row(), any::<bool>(), edits).prop_map(|(row, claim, edits)| {
        let kind = if claim { RowKind::Claim } else { RowKind::Order };
        let mut bytes = serde_json::to_vec(&envelope(kind, &row)).expect("an envelope serializes");
        for (at, byte) in edits {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        bytes
    })
}

#[test]
fn the_byte_property_reaches_the_normalizer() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = damaged_envelope();
    let parsed = (0..1_000)
        .filter(|_| {
            let bytes = strategy.new_tree(&mut runner).expect("a value").current();
            serde_json::from_slice::<RawEnvelope>(&bytes).is_ok()
        })
        .count();
    assert!(parsed > 200, "only {parsed} of 1,000 cases reached the normalizer");
}

/// The sandbox's realistic rows (paid options, discounts, cart discounts, partial refunds, v2
/// and v3 shapes, numbers as strings) never raise a false `total_mismatch`, and every paid
/// option comes out as the line's `option_price`.
#[test]
fn the_realistic_generator_raises_no_false_total_mismatch() {
    let now = chrono::NaiveDateTime::parse_from_str("2026-11-29 12:00:00", "%Y-%m-%d %H:%M:%S").unwrap();
    let orders = sandbox::generate::orders(7, 1, "s", 5_000, 40, now);
    let mut with_options = 0;
    for o in &orders {
        for (kind, row) in [
            (RowKind::Order, sandbox::render::v2_row(o, "seller", &[o.order_no])),
            (RowKind::Order, sandbox::render::v3_row(o, "seller", &[o.order_no])),
            (RowKind::Claim, sandbox::render::claim_row(o)),
        ] {
            if kind == RowKind::Claim && o.claim_status == 0 {
                continue;
            }
            let c = normalize(&envelope(kind, &row), 1, &StatusMap::default()).expect("a realistic row normalizes");
            assert!(c.anomalies.is_empty(), "{}: {:?}", o.order_no, c.anomalies);
            if kind == RowKind::Order {
                let expected = o.option_price * rust_decimal::Decimal::from(o.quantity);
                assert_eq!(c.option_price, Some(expected), "{}", o.order_no);
                with_options += usize::from(!expected.is_zero());
            }
        }
    }
    assert!(with_options > 100, "only {with_options} rows had a paid option");
}

/// Numbers at and beyond every limit (Decimal's 28 digits, Decimal(18,2)'s 10^16, i64, u32) in
/// any amount or quantity field of a real row.
fn extreme_number() -> impl Strategy<Value = Value> {
    let digits = (1usize..=40, any::<bool>(), any::<bool>()).prop_map(|(n, negative, string)| {
        let text = format!("{}{}", if negative { "-" } else { "" }, "9".repeat(n));
        if string { json!(text) } else { serde_json::from_str::<Value>(&text).unwrap_or(json!(text)) }
    });
    prop_oneof![
        digits,
        Just(json!("79228162514264337593543950335")),
        Just(json!("-79228162514264337593543950335")),
        Just(json!("123456789012345678901234567")),
        Just(json!("1e28")),
        Just(json!("9999999999999999.99")),
        Just(json!(u64::MAX)),
        Just(json!(i64::MIN)),
        Just(json!("4294967296")),
    ]
}

const AMOUNTS: &[&str] = &[
    "OrderPrice",
    "OrderQty",
    "Discount",
    "Total",
    "SettlePrice",
    "ShippingRate",
    "SellerDiscount",
    "CartDiscountSeller",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    /// A 27-digit price once panicked the normalizer (`price * quantity`), which restarted and
    /// panicked again until the message was dropped. Now: an order, or an error naming the field.
    #[test]
    fn extreme_amounts_give_an_order_or_an_error_naming_the_field(
        key in prop::sample::select(AMOUNTS),
        value in extreme_number(),
        seed in 0u64..200,
    ) {
        let now = chrono::NaiveDateTime::parse_from_str("2026-11-29 12:00:00", "%Y-%m-%d %H:%M:%S").unwrap();
        let o = sandbox::generate::orders(seed, 1, "s", 1, 5, now).remove(0);
        let mut row = sandbox::render::v3_row(&o, "seller", &[o.order_no]);
        row[key] = value.clone();
        match normalize(&envelope(RowKind::Order, &row), 1, &StatusMap::default()) {
            Ok(order) => {
                for (field, amount) in [("total", order.total), ("order_price", order.order_price), ("option_price", order.option_price)] {
                    prop_assert!(amount.is_none_or(schemas::order::money_in_range), "{field} {amount:?} out of range");
                }
            }
            // The field itself, or the surcharge it makes (a derived amount, named as stored).
            Err(e) => prop_assert!(e.field == key || e.field == "option_price", "{} = {}: {}: {}", key, value, e.field, e.problem),
        }
    }
}
