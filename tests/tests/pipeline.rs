//! Sandbox → fetcher → NATS → normalizer → NATS → sink → ClickHouse, asserting exact rows.

use chrono::{Duration, NaiveDate, NaiveDateTime, Utc};
use e2e::{Deployment, Sandbox};
use serde_json::{Value, json};

const SHOP: &str = "e2e-shop";

/// Today in Japan, computed here independently of the pipeline's own time code.
fn today_jst() -> NaiveDate {
    (Utc::now().naive_utc() + Duration::hours(9)).date()
}

fn at(days_ago: i64, hms: &str) -> NaiveDateTime {
    let d = today_jst() - Duration::days(days_ago);
    NaiveDateTime::parse_from_str(&format!("{d} {hms}"), "%Y-%m-%d %H:%M:%S").unwrap()
}

fn jst(t: NaiveDateTime) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// What ClickHouse shows for a JST wall-clock time stored as an instant (UTC).
fn utc(t: NaiveDateTime) -> String {
    (t - Duration::hours(9)).format("%Y-%m-%d %H:%M:%S").to_string()
}

fn order(no: u64, pack: u64, status: u8, ordered: NaiveDateTime, title: &str, price: &str, qty: u32) -> Value {
    json!({
        "shop": SHOP, "order_no": no, "pack_no": pack, "status": status, "claim_status": 0,
        "order_date": jst(ordered),
        "payment_date": if status >= 2 { Value::String(jst(ordered + Duration::minutes(2))) } else { Value::Null },
        "buyer": "見本 花子", "buyer_kana": "ミホン ハナコ", "buyer_mobile": "+81-90-0000-0001",
        "buyer_email": "buyer@example.invalid", "receiver": "見本 花子", "receiver_kana": "ミホン ハナコ",
        "zip_code": "150-0000", "addr1": "東京都渋谷区", "addr2": "見本町1-2-3",
        "item_code": format!("10000{no}"), "seller_item_code": format!("SKU-{no}"), "item_title": title,
        "option": "色:藍 / サイズ:大", "option_code": "", "unit_price": price, "quantity": qty,
        "discount": "0", "shipping_rate": "0", "payment_method": "クレジットカード",
    })
}

struct World {
    orders: Vec<Value>,
}

fn world() -> World {
    let mut a = order(5001, 7001, 2, at(2, "21:14:03"), "緑茶 ティーバッグ 100包", "1280", 2);
    a["discount"] = json!("128");
    let mut b = order(5002, 7001, 2, at(2, "21:14:03"), "湯呑み 有田焼", "2980", 1);
    b["numbers_as_strings"] = json!(true);
    let mut c = order(5003, 7002, 3, at(3, "08:02:00"), "柚子石鹸 3個セット", "990", 3);
    c["est_ship_date"] = json!((today_jst() + Duration::days(1)).to_string());
    let mut d = order(5004, 7003, 4, at(4, "00:30:00"), "今治タオル", "1650", 1);
    d["est_ship_date"] = json!((today_jst() - Duration::days(2)).to_string());
    d["shipping_date"] = json!(jst(at(2, "15:30:00")));
    d["carrier"] = json!("ヤマト運輸");
    d["tracking_no"] = json!("0000-1111-2222");
    let mut e = order(5005, 7004, 5, at(6, "12:00:00"), "靴下 5足組", "1100", 2);
    e["est_ship_date"] = json!((today_jst() - Duration::days(5)).to_string());
    e["shipping_date"] = json!(jst(at(5, "10:00:00")));
    e["delivered_date"] = json!(jst(at(4, "18:45:00")));
    e["carrier"] = json!("佐川急便");
    e["tracking_no"] = json!("9999");
    let f = order(5006, 7005, 1, at(1, "23:59:59"), "新潟県産コシヒカリ 5kg", "3480", 1);
    // Cancelled: gone from shipping info, present in claims.
    let mut g = order(5007, 7006, 2, at(3, "09:00:00"), "曲げわっぱ 弁当箱", "4200", 1);
    g["claim_status"] = json!(3);
    g["claim_request_date"] = json!(jst(at(1, "08:55:00")));
    g["claim_done_date"] = json!(jst(at(1, "09:10:00")));
    // Cancel requested: still in shipping info, and in claims.
    let mut h = order(5008, 7007, 3, at(5, "10:00:00"), "若狭塗 箸 5膳セット", "2750", 1);
    h["claim_status"] = json!(1);
    h["claim_request_date"] = json!(jst(at(1, "11:00:00")));
    // Outside the 7-day look-back.
    let i = order(5009, 7008, 5, at(20, "10:00:00"), "ビタミンC 美容液", "3300", 1);
    World { orders: vec![a, b, c, d, e, f, g, h, i] }
}

async fn setup(api_version: &str, url_style: &str) -> anyhow::Result<(Sandbox, Deployment)> {
    let sandbox = Sandbox::start(&["--shops", "0"]).await?;
    sandbox
        .post_json(
            "/_sandbox/shops",
            &json!({"id": SHOP, "user_id": "e2e-seller", "api_key": "e2e-api-key", "password": "e2e-password"}),
        )
        .await?;
    sandbox.put_json("/_sandbox/orders", &Value::Array(world().orders)).await?;
    let deployment = Deployment::new(&format!(
        r#"
[qoo10]
base_url = "{}"
requests_per_second = 50
global_requests_per_second = 100
api_version = "{api_version}"
url_style = "{url_style}"

[[shops]]
id = "{SHOP}"
user_id = "e2e-seller"
api_key = "e2e-api-key"
password = "e2e-password"
statuses = [1, 2, 3, 4, 5]
lookback_days = 7
interval = "30m"
claims = true
"#,
        sandbox.base_url()
    ))
    .await?;
    Ok((sandbox, deployment))
}

const ROWS_SQL: &str = "SELECT order_no, pack_no, status, qoo10_status, claim_status, quantity, \
    toString(order_price), toString(discount), toString(total), toString(ordered_at), toString(paid_at), \
    toString(estimated_ship_date), toString(shipped_at), toString(delivered_at), carrier, tracking_no, item_title, option_text \
    FROM orders FINAL ORDER BY order_no";

fn expected_rows() -> Vec<Vec<String>> {
    let n = "\\N".to_string();
    let paid = |t: NaiveDateTime| utc(t + Duration::minutes(2));
    let date = |days: i64| (today_jst() + Duration::days(days)).to_string();
    let opt = "色:藍 / サイズ:大";
    let row = |v: Vec<String>| v;
    vec![
        row(vec!["5001", "7001", "new", "2", "0", "2", "1280.00", "128.00", "2432.00"]
            .into_iter()
            .map(String::from)
            .chain([
                utc(at(2, "21:14:03")),
                paid(at(2, "21:14:03")),
                n.clone(),
                n.clone(),
                n.clone(),
                "".into(),
                "".into(),
                "緑茶 ティーバッグ 100包".into(),
                opt.into(),
            ])
            .collect()),
        row(vec!["5002", "7001", "new", "2", "0", "1", "2980.00", "0.00", "2980.00"]
            .into_iter()
            .map(String::from)
            .chain([
                utc(at(2, "21:14:03")),
                paid(at(2, "21:14:03")),
                n.clone(),
                n.clone(),
                n.clone(),
                "".into(),
                "".into(),
                "湯呑み 有田焼".into(),
                opt.into(),
            ])
            .collect()),
        row(vec!["5003", "7002", "awaiting_shipment", "3", "0", "3", "990.00", "0.00", "2970.00"]
            .into_iter()
            .map(String::from)
            .chain([
                utc(at(3, "08:02:00")),
                paid(at(3, "08:02:00")),
                date(1),
                n.clone(),
                n.clone(),
                "".into(),
                "".into(),
                "柚子石鹸 3個セット".into(),
                opt.into(),
            ])
            .collect()),
        row(vec!["5004", "7003", "shipped", "4", "0", "1", "1650.00", "0.00", "1650.00"]
            .into_iter()
            .map(String::from)
            .chain([
                utc(at(4, "00:30:00")),
                paid(at(4, "00:30:00")),
                date(-2),
                utc(at(2, "15:30:00")),
                n.clone(),
                "ヤマト運輸".into(),
                "0000-1111-2222".into(),
                "今治タオル".into(),
                opt.into(),
            ])
            .collect()),
        row(vec!["5005", "7004", "delivered", "5", "0", "2", "1100.00", "0.00", "2200.00"]
            .into_iter()
            .map(String::from)
            .chain([
                utc(at(6, "12:00:00")),
                paid(at(6, "12:00:00")),
                date(-5),
                utc(at(5, "10:00:00")),
                utc(at(4, "18:45:00")),
                "佐川急便".into(),
                "9999".into(),
                "靴下 5足組".into(),
                opt.into(),
            ])
            .collect()),
        row(vec!["5006", "7005", "awaiting_payment", "1", "0", "1", "3480.00", "0.00", "3480.00"]
            .into_iter()
            .map(String::from)
            .chain([
                utc(at(1, "23:59:59")),
                n.clone(),
                n.clone(),
                n.clone(),
                n.clone(),
                "".into(),
                "".into(),
                "新潟県産コシヒカリ 5kg".into(),
                opt.into(),
            ])
            .collect()),
        // Seen only through the claim API: the claim row carries no unit price or option.
        row(vec!["5007", "7006", "cancelled", "0", "3", "1", "0.00", "0.00", "4200.00"]
            .into_iter()
            .map(String::from)
            .chain([
                utc(at(3, "09:00:00")),
                paid(at(3, "09:00:00")),
                n.clone(),
                n.clone(),
                n.clone(),
                "".into(),
                "".into(),
                "曲げわっぱ 弁当箱".into(),
                "".into(),
            ])
            .collect()),
        // Shipping info and claim merged: order fields kept, claim overrides the status.
        row(vec!["5008", "7007", "cancel_requested", "3", "1", "1", "2750.00", "0.00", "2750.00"]
            .into_iter()
            .map(String::from)
            .chain([
                utc(at(5, "10:00:00")),
                paid(at(5, "10:00:00")),
                n.clone(),
                n.clone(),
                n.clone(),
                "".into(),
                "".into(),
                "若狭塗 箸 5膳セット".into(),
                opt.into(),
            ])
            .collect()),
    ]
}

async fn end_to_end(api_version: &str, url_style: &str) -> anyhow::Result<()> {
    let (sandbox, dep) = setup(api_version, url_style).await?;
    dep.run_pipeline_once()?;

    assert_eq!(dep.query(ROWS_SQL).await?, expected_rows());
    // Every published message matches its JSON Schema.
    let orders = dep.stream_messages("ORDERS").await?;
    let raw = dep.stream_messages("QOO10_RAW").await?;
    assert_eq!((orders.len(), raw.len()), (9, 9), "7 shipping rows (5007 vanished, 5009 is too old) + 2 claim rows");
    let payloads: Vec<&[u8]> = orders.iter().map(|m| m.payload.as_ref()).collect();
    assert_eq!(e2e::schema_violations("order.schema.json", &payloads), Vec::<String>::new());
    let payloads: Vec<&[u8]> = raw.iter().map(|m| m.payload.as_ref()).collect();
    assert_eq!(e2e::schema_violations("raw.schema.json", &payloads), Vec::<String>::new());
    // Pack grouping: the two lines of cart 7001.
    assert_eq!(
        dep.query("SELECT pack_no, count() FROM orders FINAL WHERE pack_no = 7001 GROUP BY pack_no").await?,
        vec![vec!["7001", "2"]]
    );
    // Analytics views (they must work on ClickHouse 18.16 and current releases).
    assert_eq!(
        dep.query("SELECT status, order_lines, carts, toString(total) FROM orders_by_status WHERE status IN ('new', 'cancelled') ORDER BY status").await?,
        vec![vec!["cancelled", "1", "1", "4200.00"], vec!["new", "2", "1", "5412.00"]]
    );
    let day = (today_jst() - Duration::days(2)).to_string();
    assert_eq!(
        dep.query(&format!("SELECT item_code, order_lines, units, toString(sales) FROM daily_sales WHERE day_jst = '{day}' ORDER BY item_code")).await?,
        vec![vec!["100005001", "1", "2", "2432.00"], vec!["100005002", "1", "1", "2980.00"]]
    );
    // Every query documented for analysts runs on this server.
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/sql.md"))?;
    let queries: Vec<&str> = doc.split("```sql").skip(1).map(|b| b.split("```").next().unwrap_or("")).collect();
    assert!(queries.len() >= 8, "docs/sql.md has its queries");
    for q in queries {
        dep.query(&q.replace("qoo10.", &format!("{}.", dep.database)))
            .await
            .map_err(|e| anyhow::anyhow!("docs/sql.md query failed: {e}"))?;
    }
    // Personal data lives in order_contacts only.
    assert_eq!(
        dep.query("SELECT buyer_name, buyer_kana, zip_code, address1 FROM order_contacts FINAL WHERE order_no = 5001")
            .await?,
        vec![vec!["見本 花子", "ミホン ハナコ", "150-0000", "東京都渋谷区"]]
    );
    // Retention: personal data of orders older than 4 days goes; the orders stay.
    // Which of the 7 contacts (shipping rows; claim rows carry none) were ordered over 4 days ago
    // depends on the hour the test runs, so count them from the same times.
    let boundary = Utc::now().naive_utc() + Duration::hours(9) - Duration::days(4);
    let placed = [
        at(2, "21:14:03"),
        at(2, "21:14:03"),
        at(3, "08:02:00"),
        at(4, "00:30:00"),
        at(6, "12:00:00"),
        at(1, "23:59:59"),
        at(5, "10:00:00"),
    ];
    let old = placed.iter().filter(|t| **t < boundary).count();
    let out = dep.run_ok("sink", &["retention", "--contacts-days", "4", "--dry-run"])?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains(&format!("order_contacts: {old} rows")), "{text}");
    dep.run_ok("sink", &["retention", "--contacts-days", "4"])?;
    let left = (placed.len() - old).to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while dep.query("SELECT count() FROM order_contacts").await? != vec![vec![left.clone()]] {
        assert!(std::time::Instant::now() < deadline, "the retention mutation did not complete");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(dep.query("SELECT count() FROM orders FINAL").await?, vec![vec!["8"]]);
    let columns: Vec<String> = dep.query("DESCRIBE TABLE orders").await?.into_iter().map(|r| r[0].clone()).collect();
    assert!(
        !columns.is_empty()
            && columns.iter().all(|c| !c.contains("buyer") && !c.contains("receiver") && !c.contains("zip")),
        "{columns:?}"
    );

    // Re-polling unchanged orders publishes nothing and changes nothing: counted by a plain
    // subscriber (a re-send inside the stream's duplicate window would not show in the stream)
    // and by rows read without FINAL.
    let raw_before = dep.stream_messages("QOO10_RAW").await?.len();
    let raw_tap = dep.tap(schemas::subjects::Stream::Raw).await?;
    let versions_before = dep.query("SELECT count() FROM order_versions").await?;
    dep.run_pipeline_once()?;
    assert_eq!(raw_tap.count(), 0, "unchanged rows were re-published");
    assert_eq!(dep.query("SELECT count() FROM order_versions").await?, versions_before);
    assert_eq!(dep.query(ROWS_SQL).await?, expected_rows());

    // A quantity change on Qoo10 becomes exactly one new version.
    let mut orders = world().orders;
    orders[0]["quantity"] = json!(3);
    sandbox.put_json("/_sandbox/orders", &Value::Array(vec![orders[0].clone()])).await?;
    dep.run_pipeline_once()?;
    assert_eq!(raw_tap.count(), 1, "one changed row, published once");
    assert_eq!(dep.stream_messages("QOO10_RAW").await?.len(), raw_before + 1);
    assert_eq!(
        dep.query("SELECT quantity, toString(total) FROM orders FINAL WHERE order_no = 5001").await?,
        vec![vec!["3", "3712.00"]]
    );
    assert_eq!(
        dep.query("SELECT quantity FROM order_versions FINAL WHERE order_no = 5001 ORDER BY version").await?,
        vec![vec!["2"], vec!["3"]]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn v3_path_style_end_to_end() -> anyhow::Result<()> {
    end_to_end("v3", "path").await
}

#[tokio::test(flavor = "multi_thread")]
async fn v2_query_style_end_to_end() -> anyhow::Result<()> {
    end_to_end("v2", "query").await
}

/// async-nats lets one JetStream context wait for at most 5,000 publish acknowledgements, and a
/// publish beyond that waits, without a timeout, until one of them is awaited. A fetcher poll
/// whose response holds more new rows than that, and a sink batch raising more alerts than that,
/// must still finish (both hung before `runtime::nats::publish_all`), with every row and alert
/// stored once.
#[tokio::test(flavor = "multi_thread")]
async fn a_poll_and_a_batch_beyond_five_thousand_publishes_in_flight_finish() -> anyhow::Result<()> {
    let sandbox = Sandbox::start(&[
        "--shops",
        "1",
        "--orders",
        "12000",
        "--days",
        "2",
        // Frozen at the real "now" (no date written here: a fixed one expires with the look-back).
        "--frozen-clock",
    ])
    .await?;
    let dep = Deployment::new(&format!(
        "[qoo10]\nbase_url = \"{}\"\nrequests_per_second = 50\n\n[sink]\nbatch_size = 20000\n\n\
         [[shops]]\nid = \"big\"\nuser_id = \"sandbox-seller-1\"\napi_key = \"sandbox-api-key-1\"\n\
         password = \"sandbox-password-1\"\nstatuses = [1, 2, 3, 4, 5]\nlookback_days = 7\n",
        sandbox.base_url()
    ))
    .await?;
    let limit = std::time::Duration::from_secs(90);
    for (name, arg) in [("fetcher", "--once"), ("normalizer", "--until-idle"), ("sink", "--until-idle")] {
        let out = dep.run(name, &[arg], limit)?;
        anyhow::ensure!(out.status.success(), "{name} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    // The sandbox's 12,000 lines (and their claims) came in 17 responses: the largest ones hold
    // thousands of rows each.
    let raw = dep.stream_messages("QOO10_RAW").await?.len() as u64;
    assert!(raw > 12_000, "raw rows published: {raw}");
    assert_eq!(dep.count("SELECT count() FROM order_versions").await, raw);
    let transitions = dep.stream_messages("ALERTS").await?;
    let ids: std::collections::BTreeSet<String> = transitions
        .iter()
        .map(|m| {
            serde_json::from_slice::<Value>(&m.payload).map(|a| a["alert_id"].as_str().unwrap_or_default().to_owned())
        })
        .collect::<Result<_, _>>()?;
    println!("raw rows {raw}, alert transitions {}, alerts {}", transitions.len(), ids.len());
    assert!(
        transitions.len() > 5_000,
        "a batch of {raw} orders made {} transitions, too few to test",
        transitions.len()
    );
    // One row per alert (an alert opened and resolved within the batch is two transitions).
    assert_eq!(dep.count("SELECT count() FROM alerts FINAL").await, ids.len() as u64);
    Ok(())
}
