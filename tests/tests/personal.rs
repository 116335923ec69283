//! Buyers' personal data kept only as long as needed: erased on request from every table and
//! stream (searched afterwards for the buyer's name and phone, finding nothing), and deleted by
//! the sink's daily retention `personal_data_days` after a line settled (the sink's clock moved
//! with `faketime`), while what analysts read stays.

use std::time::Duration;

use e2e::{Deployment, Sandbox};
use serde_json::{Value, json};

const SHOP: &str = "sandbox-1";
const NAME: &str = "消去 花子";
const TEL: &str = "090-7777-1234";
const EMAIL: &str = "erase.me@example.jp";

fn shop_toml(sandbox: &Sandbox, extra: &str) -> String {
    format!(
        "[qoo10]\nbase_url = \"{}\"\nrequests_per_second = 50\n\n[[shops]]\nid = \"{SHOP}\"\nuser_id = \"sandbox-seller-1\"\napi_key = \"sandbox-api-key-1\"\n\
         password = \"sandbox-password-1\"\n{extra}\n",
        sandbox.base_url()
    )
}

/// Lines `nos` of one buyer (NAME, TEL, EMAIL), in `status`, held where they are.
async fn put_buyer(sandbox: &Sandbox, nos: &[u64], status: u8) -> anyhow::Result<()> {
    let orders = sandbox.get_json(&format!("/_sandbox/orders?shop={SHOP}")).await?;
    let template = orders.as_array().and_then(|a| a.first().cloned()).ok_or_else(|| anyhow::anyhow!("no orders"))?;
    let at = |h: i64| (chrono::Utc::now() + chrono::Duration::hours(9 - h)).format("%Y-%m-%d %H:%M:%S").to_string();
    let mut lines = Vec::new();
    for (i, no) in nos.iter().enumerate() {
        let mut l = template.clone();
        for (k, v) in [
            ("order_no", json!(no)),
            ("pack_no", json!(870_000_000u64 + i as u64)),
            ("status", json!(status)),
            ("claim_status", json!(0)),
            ("order_date", json!(at(30))),
            ("payment_date", json!(at(29))),
            ("shipping_date", if status >= 4 { json!(at(20)) } else { Value::Null }),
            ("delivered_date", if status >= 5 { json!(at(2)) } else { Value::Null }),
            ("est_ship_date", json!((chrono::Utc::now() + chrono::Duration::days(2)).date_naive().to_string())),
            ("hold", json!(true)),
            ("buyer", json!(NAME)),
            ("receiver", json!(NAME)),
            ("buyer_tel", json!(TEL)),
            ("receiver_tel", json!(TEL)),
            ("buyer_email", json!(EMAIL)),
        ] {
            l[k] = v;
        }
        lines.push(l);
    }
    sandbox.put_json("/_sandbox/orders", &Value::Array(lines)).await
}

/// Where NAME or TEL still appears: "table t" or "stream S #seq".
async fn traces(dep: &Deployment) -> anyhow::Result<Vec<String>> {
    let mut found = Vec::new();
    let digits: String = TEL.chars().filter(char::is_ascii_digit).collect();
    let holds =
        |text: &str| text.contains(NAME) || text.contains(TEL) || text.contains(&digits) || text.contains(EMAIL);
    for t in dep.query("SHOW TABLES").await? {
        let rows = dep.query(&format!("SELECT * FROM {}", t[0])).await?;
        if rows.iter().any(|r| r.iter().any(|c| holds(c))) {
            found.push(format!("table {}", t[0]));
        }
    }
    for stream in schemas::subjects::Stream::ALL {
        for m in dep.stream_messages(stream.base()).await? {
            let headers = format!("{:?}", m.headers);
            if holds(&String::from_utf8_lossy(&m.payload)) || holds(&headers) {
                found.push(format!("stream {} #{}", stream.base(), m.sequence));
            }
        }
    }
    Ok(found)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_erasure_leaves_no_trace_of_the_buyer_in_any_table_or_stream() -> anyhow::Result<()> {
    let sandbox = Sandbox::start(&["--shops", "1", "--orders", "30"]).await?;
    put_buyer(&sandbox, &[1_077_000_001, 1_077_000_002], 3).await?;
    let dep = Deployment::new(&shop_toml(&sandbox, "")).await?;
    dep.run_ok("fetcher", &["--once"])?;
    // A row of the same buyer that the normalizer refuses: its copy in the DLQ holds her data.
    let js = dep.nats().await?;
    let ns = schemas::subjects::Namespace::new(&dep.prefix);
    let bad = json!({"schema_version": 1, "shop": SHOP, "kind": "order", "method": "m",
        "query": {"status": 2, "from": "20261101", "to": "20261129", "condition": 1},
        "fetched_at": chrono::Utc::now().to_rfc3339(),
        "row": {"orderNo": 1_077_000_003u64, "packNo": 2, "shippingStatus": "On request(2)", "orderDate": "2026-11-20 10:00:00",
                "orderQty": -3, "buyer": NAME, "buyerTel": TEL}});
    js.publish(ns.raw(SHOP), serde_json::to_vec(&bad)?.into()).await?.await?;
    dep.run_ok("normalizer", &["--until-idle"])?;
    dep.run_ok("sink", &["--until-idle"])?;
    let before = traces(&dep).await?;
    for place in ["table order_contacts", "stream QOO10_RAW", "stream ORDERS", "stream DLQ"] {
        assert!(before.iter().any(|t| t.starts_with(place)), "the buyer is in {place} before: {before:?}");
    }
    let others = dep.count("SELECT count() FROM order_contacts").await;

    let out = dep.run_ok("sink", &["erase", "--shop", SHOP, "--buyer-tel", TEL, "--by", "dpo@example.jp"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    assert!(text.contains("orders 1077000001, 1077000002"), "{text}");
    let after = traces(&dep).await?;
    assert_eq!(after, Vec::<String>::new(), "the buyer's name or phone is still somewhere");
    assert!(dep.count("SELECT count() FROM order_contacts").await > 0, "other buyers' contacts stay");
    assert!(dep.count("SELECT count() FROM order_contacts").await < others);
    assert_eq!(
        dep.count("SELECT count() FROM orders FINAL WHERE order_no IN (1077000001, 1077000002)").await,
        2,
        "the analysts' rows stay"
    );
    let recorded = dep.query("SELECT order_no, requested_by, request FROM erasures ORDER BY order_no").await?;
    assert_eq!(
        recorded,
        vec![
            vec!["1077000001".to_owned(), "dpo@example.jp".into(), "buyer_tel".into()],
            vec!["1077000002".to_owned(), "dpo@example.jp".into(), "buyer_tel".into()]
        ]
    );
    // Again: nothing left, nothing removed, recorded as asked.
    let out = dep.run_ok("sink", &["erase", "--shop", SHOP, "--buyer-tel", TEL, "--by", "dpo@example.jp"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("orders none found") && text.contains("0 rows deleted"), "{text}");
    assert!(!text.contains(": 1 messages") && text.matches(": 0 messages").count() == 3, "{text}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn personal_data_goes_personal_data_days_after_a_line_settles() -> anyhow::Result<()> {
    let sandbox = Sandbox::start(&["--shops", "1", "--orders", "10", "--days", "1"]).await?;
    put_buyer(&sandbox, &[1_088_000_001], 5).await?; // delivered
    put_buyer(&sandbox, &[1_088_000_002], 3).await?; // never settles
    let dep =
        Deployment::new(&format!("[fetcher]\nfollow_days = 10\n\n{}", shop_toml(&sandbox, "personal_data_days = 3")))
            .await?;
    dep.run_pipeline_once()?;
    let contacts = |no: u64| {
        let dep = &dep;
        async move { dep.count(&format!("SELECT count() FROM order_contacts WHERE order_no = {no}")).await }
    };
    assert!(contacts(1_088_000_001).await > 0 && contacts(1_088_000_002).await > 0);
    let stored = dep.query("SELECT count(), sum(quantity), toString(sum(total)) FROM orders FINAL").await?;
    // The streams that carry personal data keep a message no longer than the shortest period.
    let js = dep.nats().await?;
    let ns = schemas::subjects::Namespace::new(&dep.prefix);
    for s in [schemas::subjects::Stream::Raw, schemas::subjects::Stream::Orders, schemas::subjects::Stream::Dlq] {
        let mut stream = js.get_stream(ns.stream(s)).await?;
        assert_eq!(stream.info().await?.config.max_age, Duration::from_secs(3 * 86_400), "{}", s.base());
    }
    // The sink's daily retention at its start, two days on (kept), four days on (the delivered
    // line, settled when it was fetched, is past its 3 days), 14 days on (the open line, ordered
    // yesterday, is past 10 days of following and 3 more).
    dep.run_ok_at("sink", &["--until-idle"], 2)?;
    assert!(contacts(1_088_000_001).await > 0, "kept within personal_data_days");
    dep.run_ok_at("sink", &["--until-idle"], 4)?;
    assert_eq!(contacts(1_088_000_001).await, 0, "the settled line's personal data is gone");
    assert!(contacts(1_088_000_002).await > 0, "the open line is still followed");
    dep.run_ok_at("sink", &["--until-idle"], 14)?;
    assert_eq!(contacts(1_088_000_002).await, 0, "the line never settled is gone after following ended");
    assert_eq!(
        dep.query("SELECT count(), sum(quantity), toString(sum(total)) FROM orders FINAL").await?,
        stored,
        "amounts, statuses and items stay"
    );
    Ok(())
}
