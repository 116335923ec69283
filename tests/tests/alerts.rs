//! One scenario per alert kind, driven through the sandbox's control API: the exact messages on
//! `alerts.<kind>.<shop>` and the rows in `alerts FINAL`, from opening to resolution.

use std::time::Duration;

use chrono::{Duration as Days, NaiveDateTime, Utc};
use e2e::{Deployment, Sandbox};
use serde_json::{Value, json};

const SHOP: &str = "alert-shop";

fn now_jst() -> NaiveDateTime {
    Utc::now().naive_utc() + Days::hours(9)
}

fn jst(t: NaiveDateTime) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

fn line(no: u64, pack: u64, status: u8) -> Value {
    let ordered = now_jst() - Days::hours(30);
    json!({
        "shop": SHOP, "order_no": no, "pack_no": pack, "status": status,
        "order_date": jst(ordered),
        "payment_date": if status >= 2 { Value::String(jst(ordered + Days::minutes(3))) } else { Value::Null },
        "buyer": "見本 花子", "buyer_kana": "ミホン ハナコ", "receiver": "見本 花子", "receiver_kana": "ミホン ハナコ",
        "zip_code": "150-0000", "addr1": "東京都渋谷区", "addr2": "見本町1-2-3",
        "item_code": format!("I{no}"), "seller_item_code": format!("SKU-{no}"), "item_title": "緑茶 ティーバッグ 100包",
        "unit_price": "1280", "quantity": 2, "payment_method": "クレジットカード",
    })
}

struct Scenario {
    sandbox: Sandbox,
    dep: Deployment,
    seen: usize,
}

impl Scenario {
    async fn new(lines: Vec<Value>) -> anyhow::Result<Self> {
        let sandbox = Sandbox::start(&["--shops", "0"]).await?;
        sandbox
            .post_json("/_sandbox/shops", &json!({"id": SHOP, "user_id": "u", "api_key": "k", "password": "p"}))
            .await?;
        sandbox.put_json("/_sandbox/orders", &Value::Array(lines)).await?;
        let dep = Deployment::new(&format!(
            "[qoo10]\nbase_url = \"{}\"\nrequests_per_second = 50\nglobal_requests_per_second = 100\n\n\
             [[shops]]\nid = \"{SHOP}\"\nuser_id = \"u\"\napi_key = \"k\"\npassword = \"p\"\nlookback_days = 7\n\n\
             [alerts]\n",
            sandbox.base_url()
        ))
        .await?;
        Ok(Scenario { sandbox, dep, seen: 0 })
    }

    async fn act(&self, order_no: u64, action: &str, body: Value) -> anyhow::Result<()> {
        self.sandbox.post_json(&format!("/_sandbox/orders/{SHOP}/{order_no}/{action}"), &body).await
    }

    /// Runs the pipeline once and returns the alert messages it published, as (subject, body).
    async fn poll(&mut self) -> anyhow::Result<Vec<(String, Value)>> {
        self.dep.run_pipeline_once()?;
        let all = self.dep.stream_messages("ALERTS").await?;
        let new: Vec<(String, Value)> = all[self.seen..]
            .iter()
            .map(|m| (m.subject.to_string(), serde_json::from_slice(&m.payload).unwrap()))
            .collect();
        self.seen = all.len();
        let payloads: Vec<&[u8]> = all.iter().map(|m| m.payload.as_ref()).collect();
        assert_eq!(e2e::schema_violations("alert.schema.json", &payloads), Vec::<String>::new());
        Ok(new)
    }

    /// `alerts FINAL` as (kind, order_no, state) rows.
    async fn table(&self) -> anyhow::Result<Vec<Vec<String>>> {
        self.dep.query("SELECT kind, toString(order_no), state FROM alerts FINAL ORDER BY kind, order_no").await
    }

    fn subject(&self, kind: &str) -> String {
        format!("{}.alerts.{kind}.{SHOP}", self.dep.prefix)
    }
}

fn kinds(msgs: &[(String, Value)]) -> Vec<(String, String, u64)> {
    let mut k: Vec<(String, String, u64)> = msgs
        .iter()
        .map(|(_, v)| {
            (
                v["kind"].as_str().unwrap().to_owned(),
                v["state"].as_str().unwrap().to_owned(),
                v["order_no"].as_u64().unwrap(),
            )
        })
        .collect();
    k.sort();
    k
}

fn k(kind: &str, state: &str, no: u64) -> (String, String, u64) {
    (kind.to_owned(), state.to_owned(), no)
}

fn row(kind: &str, no: u64, state: &str) -> Vec<String> {
    vec![kind.to_owned(), no.to_string(), state.to_owned()]
}

#[tokio::test(flavor = "multi_thread")]
async fn ship_date_missing_opens_once_and_resolves_when_the_date_is_set() -> anyhow::Result<()> {
    let mut s = Scenario::new(vec![line(9001, 8001, 2)]).await?;
    let msgs = s.poll().await?;
    assert_eq!(kinds(&msgs), vec![k("ship_date_missing", "open", 9001)]);
    let (subject, alert) = &msgs[0];
    assert_eq!(subject, &s.subject("ship_date_missing"));
    assert_eq!(
        alert["message_ja"],
        json!(
            "注文 9001 の発送予定日が未設定です。QSMで発送予定日を設定してください（QAPIでも設定できます：ショップでwrite-backを有効にするとパイプラインが設定します）。"
        )
    );
    assert!(
        alert["message"]
            .as_str()
            .unwrap()
            .starts_with("Order 9001 (緑茶 ティーバッグ 100包, cart 8001) has no estimated shipping date")
    );
    assert_eq!((alert["severity"].as_str(), alert["pack_no"].as_u64()), (Some("warning"), Some(8001)));
    assert_eq!(s.table().await?, vec![row("ship_date_missing", 9001, "open")]);

    assert!(s.poll().await?.is_empty(), "a re-poll opens nothing again");
    let out = s.dep.run_ok("sink", &["alerts", "--open", "--shop", SHOP])?;
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    assert!(lines[0].starts_with("STATE") && lines[0].ends_with("WHAT TO DO"), "{table}");
    assert!(lines[1].starts_with("open     ship_date_missing") && lines[1].contains(" 9001 "), "{table}");
    assert!(
        lines[1].ends_with(
            "注文 9001 の発送予定日が未設定です。QSMで発送予定日を設定してください（QAPIでも設定できます：ショップでwrite-backを有効にするとパイプラインが設定します）。"
        ),
        "{table}"
    );

    let date = (now_jst() + Days::days(3)).date().to_string();
    s.act(9001, "set_ship_date", json!({"date": date})).await?;
    let msgs = s.poll().await?;
    assert_eq!(kinds(&msgs), vec![k("ship_date_missing", "resolved", 9001)]);
    assert_eq!(msgs[0].1["alert_id"], alert["alert_id"]);
    // The sink that resolves it is another process: the texts come back from ClickHouse.
    for field in ["message", "message_ja", "severity", "details", "pack_no"] {
        assert_eq!(msgs[0].1[field], alert[field], "the resolution carries the opening's {field}");
    }
    // ClickHouse keeps whole seconds.
    let second = |v: &Value| v.as_str().unwrap_or_default().chars().take(19).collect::<String>();
    assert_eq!(second(&msgs[0].1["opened_at"]), second(&alert["opened_at"]));
    assert_eq!(s.table().await?, vec![row("ship_date_missing", 9001, "resolved")]);
    let stored = s.dep.query("SELECT message_ja FROM alerts FINAL WHERE order_no = 9001").await?;
    assert_eq!(stored[0][0], alert["message_ja"].as_str().unwrap(), "the stored resolution keeps the texts");
    Ok(())
}

/// A line in 配送準備 at the shop's first import is how things were when the pipeline first
/// looked; one first seen in 配送準備 later skipped 配送要請 under the pipeline's eyes.
fn confirmed(no: u64, pack: u64, ship_in_days: i64) -> Value {
    let mut l = line(no, pack, 3);
    l["est_ship_date"] = json!((now_jst() + Days::days(ship_in_days)).date().to_string());
    l
}

#[tokio::test(flavor = "multi_thread")]
async fn skipped_new_status_and_overdue_then_shipping_resolves_both() -> anyhow::Result<()> {
    let mut s = Scenario::new(vec![confirmed(9100, 8100, 2)]).await?;
    assert!(s.poll().await?.is_empty(), "a first import opens no skipped_new_status");
    let (late, fine) = (confirmed(9101, 8101, -2), confirmed(9102, 8102, 2));
    s.sandbox.put_json("/_sandbox/orders", &json!([late, fine])).await?;
    let msgs = s.poll().await?;
    assert_eq!(
        kinds(&msgs),
        vec![
            k("ship_date_overdue", "open", 9101),
            k("skipped_new_status", "open", 9101),
            k("skipped_new_status", "open", 9102)
        ]
    );
    let overdue = &msgs.iter().find(|(_, v)| v["kind"] == json!("ship_date_overdue")).unwrap().1;
    let d = (now_jst() - Days::days(2)).date();
    assert_eq!(
        overdue["message_ja"],
        json!(format!(
            "注文 9101 の発送予定日 {d} を過ぎましたが、送り状番号が登録されていません。発送して送り状番号を登録するか、QSMで発送予定日を更新してください。"
        ))
    );
    assert_eq!(overdue["severity"], json!("critical"));
    let skipped =
        &msgs.iter().find(|(_, v)| v["kind"] == json!("skipped_new_status") && v["order_no"] == json!(9102)).unwrap().1;
    assert!(
        skipped["message_ja"]
            .as_str()
            .unwrap()
            .starts_with("注文 9102 は取込前に発送予定日が設定され、配送準備（ステータス3）で初めて取得されました。")
    );

    s.act(9101, "ship", json!({"carrier": "ヤマト運輸", "tracking_no": "1234-5678"})).await?;
    let msgs = s.poll().await?;
    assert_eq!(kinds(&msgs), vec![k("ship_date_overdue", "resolved", 9101), k("skipped_new_status", "resolved", 9101)]);
    assert_eq!(
        s.table().await?,
        vec![
            row("ship_date_overdue", 9101, "resolved"),
            row("skipped_new_status", 9101, "resolved"),
            row("skipped_new_status", 9102, "open")
        ]
    );
    Ok(())
}

/// A redelivery after a crash can bring a line's first version after its second. The sink folds
/// the late version into the line's history and raises what in-order delivery raises: the same
/// two versions, newest first, to a second deployment's sink give the same `alerts FINAL` and
/// the same transitions on `alerts.>` as the in-order run (the first version still opens
/// `skipped_new_status` and `ship_date_overdue`, the second resolves them).
#[tokio::test(flavor = "multi_thread")]
async fn a_late_first_version_raises_what_in_order_delivery_raises() -> anyhow::Result<()> {
    let mut s = Scenario::new(vec![confirmed(9100, 8100, 2)]).await?;
    s.poll().await?; // the first import
    s.sandbox.put_json("/_sandbox/orders", &json!([confirmed(9101, 8101, -2)])).await?;
    let mut in_order = s.poll().await?;
    s.act(9101, "ship", json!({"carrier": "ヤマト運輸", "tracking_no": "1234-5678"})).await?;
    in_order.extend(s.poll().await?);
    assert_eq!(in_order.len(), 4, "two alerts opened and resolved: {in_order:?}");
    let versions: Vec<_> = s
        .dep
        .stream_messages("ORDERS")
        .await?
        .into_iter()
        .filter(|m| serde_json::from_slice::<Value>(&m.payload).is_ok_and(|o| o["order_no"] == json!(9101)))
        .collect();
    assert_eq!(versions.len(), 2, "one message per version");

    let other = Deployment::new("").await?;
    other.run_ok("normalizer", &["--until-idle"])?; // creates the streams
    let js = other.nats().await?;
    for m in versions.iter().rev() {
        let subject = m.subject.replacen(&s.dep.prefix, &other.prefix, 1);
        js.publish_with_headers(subject, m.headers.clone(), m.payload.clone()).await?.await?;
        other.run_ok("sink", &["--until-idle"])?;
    }
    let table =
        "SELECT kind, toString(order_no), state FROM alerts FINAL WHERE order_no = 9101 ORDER BY kind, order_no";
    assert_eq!(other.query(table).await?, s.dep.query(table).await?);
    let reversed: Vec<(String, Value)> = other
        .stream_messages("ALERTS")
        .await?
        .iter()
        .map(|m| (m.subject.to_string(), serde_json::from_slice(&m.payload).unwrap()))
        .collect();
    assert_eq!(kinds(&reversed), kinds(&in_order));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn quantity_and_ship_date_changes_are_reported_with_from_and_to() -> anyhow::Result<()> {
    let mut a = line(9201, 8201, 2);
    a["est_ship_date"] = Value::Null;
    let mut s = Scenario::new(vec![a]).await?;
    let first = (now_jst() + Days::days(2)).date().to_string();
    s.act(9201, "set_ship_date", json!({"date": first})).await?;
    assert!(s.poll().await?.is_empty(), "first seen in 3 at the first import: nothing");
    s.act(9201, "quantity", json!({"quantity": 5})).await?;
    let msgs = s.poll().await?;
    assert_eq!(kinds(&msgs), vec![k("quantity_changed", "open", 9201)]);
    assert_eq!(
        msgs[0].1["message_ja"],
        json!(
            "注文 9201（緑茶 ティーバッグ 100包）の数量が 2 から 5 に変更されました。OMSとQoo10（QSM）の両方で数量を合わせてください。"
        )
    );
    let details = &msgs[0].1["details"];
    assert_eq!((&details["field"], &details["from"], &details["to"]), (&json!("quantity"), &json!(2), &json!(5)));
    assert!(
        details["paid_at"].is_string() && details["ship_by"] == json!(first),
        "the penalty clock's dates: {details}"
    );

    let second = (now_jst() + Days::days(4)).date().to_string();
    s.act(9201, "set_ship_date", json!({"date": second})).await?;
    let msgs = s.poll().await?;
    assert_eq!(kinds(&msgs), vec![k("ship_date_changed", "open", 9201)]);
    assert_eq!(
        msgs[0].1["message_ja"],
        json!(format!(
            "注文 9201 の発送予定日が {first} から {second} に変更されました。購入者とOMSに反映してください。"
        ))
    );
    assert_eq!(msgs[0].1["severity"], json!("info"));

    s.act(9201, "ship", json!({})).await?;
    let msgs = s.poll().await?;
    assert_eq!(kinds(&msgs), vec![k("quantity_changed", "resolved", 9201), k("ship_date_changed", "resolved", 9201)]);
    let table = s.table().await?;
    assert!(!table.is_empty() && table.iter().all(|r| r[2] == "resolved"), "{table:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn cart_lines_added_and_removed() -> anyhow::Result<()> {
    let mut s = Scenario::new(vec![line(9301, 8301, 2), line(9302, 8301, 2), line(9401, 8401, 2)]).await?;
    let msgs = s.poll().await?;
    assert!(
        !msgs.is_empty() && kinds(&msgs).iter().all(|(kind, _, _)| kind == "ship_date_missing"),
        "a new cart is not a changed cart: {msgs:?}"
    );

    // An earlier complete poll showed cart 8301: a line new to it is an added item, however soon.
    s.sandbox.put_json("/_sandbox/orders", &json!([line(9303, 8301, 2)])).await?;
    s.act(9302, "claim", json!({"claim_status": 1})).await?;
    s.act(9401, "cancel", json!({})).await?;
    let msgs = s.poll().await?;
    let got: Vec<_> = kinds(&msgs).into_iter().filter(|(kind, _, _)| kind.starts_with("item_")).collect();
    assert_eq!(
        got,
        vec![k("item_added", "open", 9303), k("item_removed", "open", 9302)],
        "a whole-cart cancellation (9401) removes no item"
    );
    let added = &msgs.iter().find(|(_, v)| v["kind"] == json!("item_added")).unwrap().1;
    assert_eq!(
        added["message_ja"],
        json!(
            "カート 8301 に商品が追加されました（注文 9303、緑茶 ティーバッグ 100包 × 2）。OMSにも追加してください。"
        )
    );
    let removed = &msgs.iter().find(|(_, v)| v["kind"] == json!("item_removed")).unwrap().1;
    assert_eq!(
        removed["message_ja"],
        json!(
            "カート 8301 から商品が削除されました（注文 9302、緑茶 ティーバッグ 100包 × 2 がキャンセル）。OMSからも削除してください。"
        )
    );

    // The OMS reports the same removal: both sides agree, the alert resolves (and no correction
    // is needed, Qoo10 already shows it).
    let edit = json!({"schema_version": 1, "edit_id": "rm-9302", "shop_id": SHOP, "action": "remove_item", "order_no": 9302, "made_at": Utc::now().to_rfc3339()});
    s.dep
        .nats()
        .await?
        .publish(format!("{}.oms.edits.{SHOP}", s.dep.prefix), serde_json::to_vec(&edit)?.into())
        .await?
        .await?;
    let msgs = s.poll().await?;
    assert_eq!(kinds(&msgs), vec![k("item_removed", "resolved", 9302)]);
    // The cart ships: the added line's alert is settled too.
    for no in [9301, 9303] {
        s.act(no, "set_ship_date", json!({"date": (now_jst() + Days::days(1)).date().to_string()})).await?;
        s.act(no, "ship", json!({})).await?;
    }
    let msgs = s.poll().await?;
    assert!(kinds(&msgs).contains(&k("item_added", "resolved", 9303)), "{:?}", kinds(&msgs));
    let items: Vec<_> = s.table().await?.into_iter().filter(|r| r[0].starts_with("item_")).collect();
    assert!(!items.is_empty() && items.iter().all(|r| r[2] == "resolved"), "{items:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn fetcher_alerts_are_recorded_and_replaying_orders_raises_nothing_twice() -> anyhow::Result<()> {
    let mut s = Scenario::new(vec![line(9501, 8501, 2)]).await?;
    s.poll().await?;
    // The fetcher's credentials_invalid lands in the alerts table too.
    s.sandbox
        .post_json("/_sandbox/shops", &json!({"id": SHOP, "user_id": "u", "api_key": "k", "password": "changed"}))
        .await?;
    assert_eq!(s.dep.run("fetcher", &["--once"], Duration::from_secs(60))?.status.code(), Some(1));
    s.dep.run_ok("sink", &["--until-idle"])?;
    assert_eq!(s.table().await?, vec![row("credentials_invalid", 0, "open"), row("ship_date_missing", 9501, "open")]);

    // Replay: the sink's consumer is deleted, so it re-reads all of ORDERS from the start.
    let alerts_before = s.dep.stream_messages("ALERTS").await?.len();
    let tap = s.dep.alert_tap().await?;
    let alert_rows = s.dep.query("SELECT count() FROM alerts").await?;
    let orders_before = s.dep.query("SELECT count(), sum(quantity) FROM orders FINAL").await?;
    let js = s.dep.nats().await?;
    let stream = js.get_stream(schemas::subjects::Namespace::new(&s.dep.prefix).stream_named("ORDERS")).await?;
    stream.delete_consumer("sink").await?;
    s.dep.run_ok("sink", &["--until-idle"])?;
    assert_eq!(s.dep.stream_messages("ALERTS").await?.len(), alerts_before, "no alert published twice");
    assert_eq!(tap.all(), Vec::<Value>::new(), "a plain subscriber saw the replay publish");
    assert_eq!(s.dep.query("SELECT count() FROM alerts").await?, alert_rows, "alert rows written again (no FINAL)");
    assert_eq!(s.dep.query("SELECT count(), sum(quantity) FROM orders FINAL").await?, orders_before);
    assert_eq!(s.dep.query("SELECT count() FROM alerts FINAL").await?, vec![vec!["2"]]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn order_vanished_from_a_complete_poll_and_back_again() -> anyhow::Result<()> {
    let mut s = Scenario::new(vec![line(9601, 8601, 2), line(9602, 8602, 2), line(9603, 8603, 2)]).await?;
    s.poll().await?;

    // A failed poll says nothing about what it did not see.
    s.sandbox.delete_json(&format!("/_sandbox/orders/{SHOP}/9601")).await?;
    s.sandbox
        .post_json(
            "/_sandbox/faults",
            &json!({"kind": "status", "code": 500, "method": "ShippingBasic.GetClaimInfo_V3"}),
        )
        .await?;
    let config = std::fs::read_to_string(&s.dep.config_path)?;
    std::fs::write(
        &s.dep.config_path,
        config
            .replace("global_requests_per_second = 100\n", "global_requests_per_second = 100\nretry_budget = \"1s\"\n"),
    )?;
    let out = s.dep.run("fetcher", &["--once"], Duration::from_secs(60))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("poll failed") && stderr.contains("HTTP 500"), "{stderr}");
    s.dep.run_ok("normalizer", &["--until-idle"])?;
    s.dep.run_ok("sink", &["--until-idle"])?;
    let after_failure = s.dep.stream_messages("ALERTS").await?.len();
    assert_eq!(after_failure, s.seen, "no alert from a failed poll");
    s.sandbox.delete_json("/_sandbox/faults").await?;

    // 9601 is gone from 配送要請; 9602 is cancelled (gone too, but its claim explains it).
    s.act(9602, "cancel", json!({})).await?;
    let msgs = s.poll().await?;
    let got: Vec<_> = kinds(&msgs).into_iter().filter(|(kind, _, _)| kind == "order_vanished").collect();
    assert_eq!(got, vec![k("order_vanished", "open", 9601)]);
    let v = &msgs.iter().find(|(_, v)| v["kind"] == json!("order_vanished")).unwrap().1;
    assert_eq!(
        v["message_ja"],
        json!(
            "注文 9601（緑茶 ティーバッグ 100包）がQoo10の「配送要請」の一覧から消えましたが、キャンセル等のクレームは見つかりません。QSMでキャンセルされていないか確認してください（取得対象外のステータスに移った可能性もあります）。"
        )
    );
    assert_eq!(v["severity"], json!("critical"));
    assert!(s.poll().await?.is_empty(), "still gone: nothing new");

    // It comes back unchanged: the poll summary sees it and resolves the alert.
    s.sandbox.put_json("/_sandbox/orders", &json!([line(9601, 8601, 2)])).await?;
    let msgs = s.poll().await?;
    assert_eq!(kinds(&msgs), vec![k("order_vanished", "resolved", 9601)]);
    assert!(s.table().await?.contains(&row("order_vanished", 9601, "resolved")));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn oms_edits_require_a_qoo10_correction_until_qoo10_matches() -> anyhow::Result<()> {
    let mut s = Scenario::new(vec![line(9701, 8701, 2), line(9704, 8701, 2), line(9702, 8702, 2)]).await?;
    s.poll().await?;
    let date = (now_jst() + Days::days(5)).date().to_string();
    let made_at = Utc::now().to_rfc3339();
    let edits = [
        json!({"schema_version": 1, "edit_id": "e1", "shop_id": SHOP, "action": "set_quantity", "order_no": 9701, "quantity": 3, "made_at": made_at}),
        json!({"schema_version": 1, "edit_id": "e2", "shop_id": SHOP, "action": "set_ship_date", "order_no": 9702, "ship_date": date, "made_at": made_at}),
        json!({"schema_version": 1, "edit_id": "e3", "shop_id": SHOP, "action": "add_item", "pack_no": 8701, "item_code": "SKU-9703", "quantity": 1, "made_at": made_at}),
        json!({"schema_version": 1, "edit_id": "e4", "shop_id": SHOP, "action": "remove_item", "order_no": 9704, "made_at": made_at}),
        json!({"schema_version": 1, "edit_id": "bad", "shop_id": SHOP, "action": "set_quantity", "order_no": 9701, "made_at": made_at}),
    ];
    let payloads: Vec<Vec<u8>> = edits.iter().map(|e| serde_json::to_vec(e).unwrap()).collect();
    let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
    let violations = e2e::schema_violations("oms-edit.schema.json", &refs);
    assert_eq!(violations.len(), 1, "only the last edit breaks the documented format: {violations:?}");
    let js = s.dep.nats().await?;
    for p in &payloads {
        js.publish(format!("{}.oms.edits.{SHOP}", s.dep.prefix), p.clone().into()).await?.await?;
    }
    let msgs = s.poll().await?;
    let corrections: Vec<_> =
        kinds(&msgs).into_iter().filter(|(kind, _, _)| kind == "qoo10_correction_required").collect();
    assert_eq!(corrections.len(), 4, "{msgs:?}");
    let quantity = &msgs.iter().find(|(_, v)| v["details"]["edit_id"] == json!("e1")).unwrap().1;
    assert_eq!(
        quantity["message_ja"],
        json!("OMSで注文 9701 の数量が 3 に変更されましたが、Qoo10では 2 です。QSMでも同じ変更をしてください。")
    );
    let ship = &msgs.iter().find(|(_, v)| v["details"]["edit_id"] == json!("e2")).unwrap().1;
    assert_eq!(
        ship["message_ja"],
        json!(format!(
            "OMSで注文 9702 の発送予定日が {date} に設定されましたが、Qoo10では 未設定 です。QSMで発送予定日を設定してください（QAPIでも設定できます：ショップでwrite-backを有効にするとパイプラインが設定します）。"
        ))
    );
    let dead = s.dep.stream_messages("DLQ").await?;
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0].headers.get("Dlq-Error").unwrap().as_str().contains("missing field `quantity`"),
        "{:?}",
        dead[0].headers
    );
    assert_eq!(dead[0].subject.as_str(), format!("{}.dlq.sink.{SHOP}", s.dep.prefix));

    // The seller makes the same changes in QSM.
    s.act(9701, "quantity", json!({"quantity": 3})).await?;
    s.act(9702, "set_ship_date", json!({"date": date})).await?;
    let mut added = line(9703, 8701, 2);
    added["quantity"] = json!(1);
    s.sandbox.put_json("/_sandbox/orders", &json!([added])).await?;
    s.act(9704, "claim", json!({"claim_status": 1})).await?;
    let msgs = s.poll().await?;
    let got = kinds(&msgs);
    assert_eq!(
        got.iter().filter(|(kind, state, _)| kind == "qoo10_correction_required" && state == "resolved").count(),
        4,
        "{got:?}"
    );
    for predicted in ["quantity_changed", "item_added", "item_removed", "ship_date_changed"] {
        assert!(
            got.iter().all(|(kind, _, _)| kind != predicted),
            "the seller did what the OMS said: no {predicted}: {got:?}"
        );
    }
    assert_eq!(
        s.dep.query("SELECT state, count() FROM oms_expectations FINAL GROUP BY state").await?,
        vec![vec!["matched", "4"]]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn alerts_reach_a_webhook_with_retries_and_a_dead_webhook_blocks_nothing() -> anyhow::Result<()> {
    let (url, bodies) = e2e::webhook_receiver(|n| if n <= 1 { "500 Internal Server Error" } else { "200 OK" }).await?;
    let mut s = Scenario::new(vec![line(9801, 8801, 2)]).await?;
    let config = std::fs::read_to_string(&s.dep.config_path)?;
    std::fs::write(
        &s.dep.config_path,
        config.replace("[alerts]\n", &format!("[alerts]\nwebhook_url = \"{url}\"\nwebhook_mode = \"each\"\n")),
    )?;
    let msgs = s.poll().await?;
    assert_eq!(kinds(&msgs), vec![k("ship_date_missing", "open", 9801)]);
    let got: Vec<String> = bodies.lock().unwrap().iter().map(|(_, b)| b.clone()).collect();
    assert_eq!(got.len(), 2, "one failed attempt, one retry: {got:?}");
    let body: Value = serde_json::from_str(&got[1])?;
    let text = body["text"].as_str().unwrap();
    assert!(
        text.starts_with("[🔔 open] ship_date_missing — alert-shop order 9801\n注文 9801 の発送予定日が未設定です。"),
        "{text}"
    );

    // A webhook nobody answers: the pipeline goes on, alerts are stored all the same.
    let dead = format!("http://127.0.0.1:{}/hook", e2e::free_port());
    let config = std::fs::read_to_string(&s.dep.config_path)?;
    std::fs::write(&s.dep.config_path, config.replace(&url, &dead))?;
    s.act(9801, "set_ship_date", json!({"date": (now_jst() + Days::days(2)).date().to_string()})).await?;
    let started = std::time::Instant::now();
    let msgs = s.poll().await?;
    assert_eq!(kinds(&msgs), vec![k("ship_date_missing", "resolved", 9801)]);
    assert!(started.elapsed() < Duration::from_secs(40), "{:?}", started.elapsed());
    assert_eq!(s.table().await?, vec![row("ship_date_missing", 9801, "resolved")]);
    Ok(())
}
