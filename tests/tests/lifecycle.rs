//! An order followed for its whole life, as real Qoo10 reports it: 40 sandbox days with
//! `lookback_days = 7`, every process's clock moved day by day (`faketime`), the sandbox's with
//! it. Each transition below happens after the line has left the look-back window, and has to
//! reach `orders FINAL`, `order_versions` and the alerts through the call that asks for it by its
//! own date (or, for 2 → 3, which has none, the daily order-date window before the look-back).

use chrono::{Duration, NaiveDate, NaiveDateTime, Utc};
use e2e::{Deployment, Sandbox};
use serde_json::{Value, json};

const SHOP: &str = "sandbox-1";
const DAYS: i64 = 40;

/// The lines followed, by name: (order number, status at day 0, 発送予定日 as a day number).
const A: u64 = 1_099_000_001; // paid, confirmed late (day 15), shipped day 20, delivered day 22
const B: u64 = 1_099_000_002; // due to ship on day 18, shipped late on day 22, delivered day 24
const C: u64 = 1_099_000_003; // shipped day 1, delivered day 3, return requested day 25, returned day 28
const D: u64 = 1_099_000_004; // confirmed, cancel requested on day 12 (a request: its date is set), approved day 13
const E: u64 = 1_099_000_005; // a paid option, shipped day 1, delivered day 2, partially refunded day 30

fn jst(t: NaiveDateTime) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

struct Life {
    start: NaiveDateTime,
}

impl Life {
    fn day(&self, d: i64) -> NaiveDate {
        (self.start + Duration::days(d)).date()
    }

    fn line(&self, no: u64, status: u8, ship_day: Option<i64>) -> Value {
        let ordered = self.start - Duration::hours(3);
        json!({
            "shop": SHOP, "order_no": no, "pack_no": no - 200_000_000, "status": status, "hold": true,
            "order_date": jst(ordered), "payment_date": jst(ordered + Duration::minutes(5)),
            "available_ship_date": self.day(2).to_string(),
            "est_ship_date": ship_day.map(|d| self.day(d).to_string()),
            "buyer": "見本 花子", "buyer_kana": "ミホン ハナコ", "receiver": "見本 花子", "receiver_kana": "ミホン ハナコ",
            "zip_code": "150-0000", "addr1": "東京都渋谷区", "addr2": "見本町1-2-3",
            "item_code": "1000001001", "seller_item_code": "TOWEL-IMA", "item_title": "今治タオル フェイスタオル",
            "option": if no == E { "名入れ刺繍(+699円)" } else { "カラー:ホワイト" },
            "option_price": if no == E { "699" } else { "0" },
            "unit_price": "1650", "quantity": 2, "payment_method": "クレジットカード",
        })
    }

    /// What the buyer, the seller in QSM and Qoo10 do on a day: (line, action, body).
    fn actions(&self, d: i64) -> Vec<(u64, &'static str, Value)> {
        let ship = json!({"carrier": "佐川急便", "tracking_no": format!("T-{d}")});
        match d {
            1 => vec![(C, "ship", ship.clone()), (E, "ship", ship)],
            2 => vec![(E, "deliver", json!({}))],
            3 => vec![(C, "deliver", json!({}))],
            12 => vec![(D, "cancel", json!({}))],
            13 => vec![(D, "approve_cancel", json!({}))],
            15 => vec![(A, "set_ship_date", json!({"date": self.day(18).to_string()}))],
            20 => vec![(A, "ship", ship)],
            22 => vec![(B, "ship", ship), (A, "deliver", json!({}))],
            24 => vec![(B, "deliver", json!({}))],
            25 => vec![(C, "request_return", json!({}))],
            28 => vec![(C, "complete_return", json!({}))],
            30 => vec![(E, "partial_refund", json!({"quantity": 1, "amount": "640"}))],
            _ => Vec::new(),
        }
    }
}

/// Statuses a line went through, in version order, repeats folded.
async fn statuses(dep: &Deployment, no: u64) -> anyhow::Result<Vec<String>> {
    let rows =
        dep.query(&format!("SELECT status FROM order_versions FINAL WHERE order_no = {no} ORDER BY version")).await?;
    let mut out: Vec<String> = Vec::new();
    for r in rows {
        if out.last() != Some(&r[0]) {
            out.push(r[0].clone());
        }
    }
    Ok(out)
}

/// (kind, state) of a line's alerts.
async fn alerts_of(dep: &Deployment, no: u64) -> anyhow::Result<Vec<(String, String)>> {
    let rows = dep.query(&format!("SELECT kind, state FROM alerts FINAL WHERE order_no = {no} ORDER BY kind")).await?;
    Ok(rows.into_iter().map(|r| (r[0].clone(), r[1].clone())).collect())
}

fn kind(k: &str, state: &str) -> (String, String) {
    (k.to_owned(), state.to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_followed_lines_every_transition_is_fetched_long_after_the_look_back() -> anyhow::Result<()> {
    // The sandbox's clock starts now and moves a day at a time, as the processes' clocks do
    // (they also run on with real time, minutes in all: well inside the windows' overlap).
    let real = Utc::now().naive_utc() + Duration::hours(9);
    let life = Life { start: NaiveDateTime::parse_from_str(&jst(real), "%Y-%m-%d %H:%M:%S")? };
    let now = jst(life.start);
    let sandbox =
        Sandbox::start(&["--shops", "1", "--orders", "80", "--days", "10", "--frozen-clock", "--now", &now]).await?;
    let lines = vec![
        life.line(A, 2, None),
        life.line(B, 3, Some(18)),
        life.line(C, 3, Some(1)),
        life.line(D, 3, Some(20)),
        life.line(E, 3, Some(1)),
    ];
    sandbox.put_json("/_sandbox/orders", &Value::Array(lines)).await?;
    let dep = Deployment::new(&format!(
        "[qoo10]\nbase_url = \"{}\"\nrequests_per_second = 50\nglobal_requests_per_second = 100\n\n\
         [[shops]]\nid = \"{SHOP}\"\nuser_id = \"sandbox-seller-1\"\napi_key = \"sandbox-api-key-1\"\n\
         password = \"sandbox-password-1\"\nlookback_days = 7\n",
        sandbox.base_url()
    ))
    .await?;

    for d in 0..=DAYS {
        if d > 0 {
            sandbox.post_json("/_sandbox/advance?hours=24", &json!({})).await?;
        }
        for (no, action, body) in life.actions(d) {
            sandbox.post_json(&format!("/_sandbox/orders/{SHOP}/{no}/{action}"), &body).await?;
        }
        dep.run_pipeline_once_at(d)?;
        match d {
            // The state alerts of the first import; no change alerts for what was already so.
            0 => {
                assert_eq!(alerts_of(&dep, A).await?, vec![kind("ship_date_missing", "open")]);
                for no in [B, C, D, E] {
                    assert_eq!(
                        alerts_of(&dep, no).await?,
                        vec![],
                        "{no} was first seen in 配送準備 at the first import"
                    );
                }
            }
            // B's 発送予定日 (day 18) has passed without a tracking number.
            19 => assert_eq!(alerts_of(&dep, B).await?, vec![kind("ship_date_overdue", "open")]),
            _ => {}
        }
    }

    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(
        statuses(&dep, A).await?,
        s(&["new", "awaiting_shipment", "shipped", "delivered"]),
        "confirmed on day 15"
    );
    assert_eq!(statuses(&dep, B).await?, s(&["awaiting_shipment", "shipped", "delivered"]));
    assert_eq!(
        statuses(&dep, C).await?,
        s(&["awaiting_shipment", "shipped", "delivered", "return_requested", "returned"])
    );
    assert_eq!(statuses(&dep, D).await?, s(&["awaiting_shipment", "cancel_requested", "cancelled"]));
    assert_eq!(statuses(&dep, E).await?, s(&["awaiting_shipment", "shipped", "delivered", "partially_refunded"]));

    // A partial refund keeps the line's money and says how much went back.
    assert_eq!(
        dep.query(&format!(
            "SELECT status, toString(total), toString(option_price), refund_quantity, toString(refund_amount), \
             toString(available_ship_date) FROM orders FINAL WHERE order_no = {E}"
        ))
        .await?,
        vec![vec![
            "partially_refunded".to_owned(),
            "4698.00".into(),
            "1398.00".into(),
            "1".into(),
            "640.00".into(),
            life.day(2).to_string()
        ]]
    );

    // Alerts opened and resolved; none that means nothing.
    assert_eq!(
        alerts_of(&dep, A).await?,
        vec![kind("ship_date_missing", "resolved"), kind("ship_date_overdue", "resolved")]
    );
    assert_eq!(alerts_of(&dep, B).await?, vec![kind("ship_date_overdue", "resolved")]);
    for no in [C, D, E] {
        assert_eq!(alerts_of(&dep, no).await?, vec![], "{no}");
    }
    let vanished = dep.query("SELECT toString(order_no) FROM alerts FINAL WHERE kind = 'order_vanished'").await?;
    assert!(vanished.is_empty(), "nothing vanished: every line's absence had a reason the poll saw: {vanished:?}");
    let skipped = dep.count("SELECT count() FROM alerts FINAL WHERE kind = 'skipped_new_status'").await;
    println!("skipped_new_status over 40 days of the realistic shop: {skipped}");

    // The realistic generator's lines (paid options, discounts, cart discounts, refunds, made to
    // order) raise no total_mismatch; and some carry a paid option.
    let orders = dep.stream_messages("ORDERS").await?;
    let parsed: Vec<Value> = orders.iter().map(|m| serde_json::from_slice(&m.payload)).collect::<Result<_, _>>()?;
    assert!(parsed.len() > 100, "{} canonical orders", parsed.len());
    let mismatched: Vec<&Value> = parsed
        .iter()
        .filter(|o| o["anomalies"].as_array().is_some_and(|a| a.iter().any(|x| x["code"] == json!("total_mismatch"))))
        .collect();
    assert!(mismatched.is_empty(), "{mismatched:#?}");
    assert!(parsed.iter().any(|o| o["option_price"].as_str().is_some_and(|p| p != "0" && p != "0.00")));
    let payloads: Vec<&[u8]> = orders.iter().map(|m| m.payload.as_ref()).collect();
    assert_eq!(e2e::schema_violations("order.schema.json", &payloads), Vec::<String>::new());
    let raw = dep.stream_messages("QOO10_RAW").await?;
    let payloads: Vec<&[u8]> = raw.iter().map(|m| m.payload.as_ref()).collect();
    assert_eq!(e2e::schema_violations("raw.schema.json", &payloads), Vec::<String>::new());
    Ok(())
}
