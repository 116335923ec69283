//! Hostile input on every input subject (`qoo10.raw.<shop>`, `orders.<shop>`, `oms.edits.<shop>`):
//! malformed JSON, invalid UTF-8, wrong types, oversized payloads, unknown statuses, zero and
//! negative quantities, absurd dates, another shop than the subject's, fetch times from the
//! future, and the same order (or edit) twice with conflicting content.
//! Each must become exactly one dead letter with a reason that names the problem, while the
//! running services keep running and count them.

use std::time::Duration;

use async_nats::HeaderMap;
use e2e::{Deployment, Sandbox};
use serde_json::{Value, json};

const SHOP: &str = "h";

struct Input {
    id: &'static str,
    subject: String,
    payload: Vec<u8>,
    /// The stage that must dead-letter it, and what its reason must say.
    stage: &'static str,
    reason: &'static str,
}

fn raw_envelope(row: Value, fetched_at: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "schema_version": 1, "shop": SHOP, "kind": "order", "method": "ShippingBasic.GetShippingInfo_v2",
        "query": {"status": 2, "from": "20261101", "to": "20261129", "condition": 1},
        "fetched_at": fetched_at, "row": row
    }))
    .unwrap()
}

fn raw_row(order_no: u64, qty: Value, status: &str, date: &str) -> Value {
    json!({"orderNo": order_no, "packNo": order_no + 5000, "shippingStatus": status, "orderDate": date, "orderQty": qty,
           "itemCode": "1000000001", "itemTitle": "テスト商品", "orderPrice": "1000", "total": "1000"})
}

fn edit(id: &str, body: Value) -> Vec<u8> {
    let mut e = json!({"schema_version": 1, "edit_id": id, "shop_id": SHOP, "made_at": "2026-11-29T01:00:00Z"});
    e.as_object_mut().unwrap().extend(body.as_object().unwrap().clone());
    serde_json::to_vec(&e).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_bad_input_becomes_one_dead_letter_with_a_precise_reason() -> anyhow::Result<()> {
    let sandbox = Sandbox::start(&["--shops", "1", "--orders", "10"]).await?;
    let dep = Deployment::new(&format!(
        "[qoo10]\nbase_url = \"{}\"\nrequests_per_second = 50\n\n[[shops]]\nid = \"{SHOP}\"\nuser_id = \"sandbox-seller-1\"\n\
         api_key = \"sandbox-api-key-1\"\npassword = \"sandbox-password-1\"\nlookback_days = 7\n",
        sandbox.base_url()
    ))
    .await?;
    dep.run_ok("fetcher", &["--once"])?;
    let mut normalizer = dep.spawn("normalizer", &[])?;
    let mut sink = dep.spawn("sink", &[])?;
    dep.wait_drained(Duration::from_secs(60)).await?;
    let good_orders = dep.stream_messages("ORDERS").await?.len();
    assert!(good_orders > 0);
    // A real canonical order to distort.
    let template: Value = serde_json::from_slice(&dep.stream_messages("ORDERS").await?[0].payload)?;
    let order = |order_no: u64, change: &dyn Fn(&mut Value)| {
        let mut o = template.clone();
        o["order_no"] = json!(order_no);
        change(&mut o);
        serde_json::to_vec(&o).unwrap()
    };

    let ns = schemas::subjects::Namespace::new(&dep.prefix);
    let (raw, orders, edits) = (ns.raw(SHOP), ns.orders(SHOP), ns.oms_edits(SHOP));
    let at = "2026-11-29T02:00:00.000001Z";
    let big = "x".repeat(300_000);
    let date = "2026-11-25 10:00:00";
    let i =
        |id, subject: &String, payload, stage, reason| Input { id, subject: subject.clone(), payload, stage, reason };
    let inputs = vec![
        // qoo10.raw.<shop> → the normalizer
        i("raw-malformed", &raw, b"{\"schema_version\":1,".to_vec(), "normalizer", "not a raw envelope"),
        i("raw-utf8", &raw, vec![0xff, 0xfe, 0x7b, 0x22], "normalizer", "not a raw envelope"),
        i("raw-type", &raw, raw_envelope(json!({"orderNo": [1], "packNo": 2}), at), "normalizer", "orderNo"),
        i("raw-big", &raw, raw_envelope(json!({"orderNo": 1, "pad": big}), at), "normalizer", "exceeds"),
        i("raw-status", &raw, raw_envelope(raw_row(9001, json!(1), "Lost(9)", date), at), "normalizer", "code 9"),
        i(
            "raw-qty-0",
            &raw,
            raw_envelope(raw_row(9002, json!(0), "On request(2)", date), at),
            "normalizer",
            "orderQty",
        ),
        i(
            "raw-qty-neg",
            &raw,
            raw_envelope(raw_row(9003, json!(-3), "On request(2)", date), at),
            "normalizer",
            "orderQty",
        ),
        i(
            "raw-date",
            &raw,
            raw_envelope(raw_row(9004, json!(1), "On request(2)", "2380-01-01 00:00:00"), at),
            "normalizer",
            "2000..2100",
        ),
        i(
            "raw-wrong-shop",
            &raw,
            {
                let mut e: Value =
                    serde_json::from_slice(&raw_envelope(raw_row(9005, json!(1), "On request(2)", date), at))?;
                e["shop"] = json!("other-shop");
                serde_json::to_vec(&e)?
            },
            "normalizer",
            "wrong shop",
        ),
        i(
            "raw-future",
            &raw,
            raw_envelope(raw_row(9006, json!(1), "On request(2)", date), "2099-01-01T00:00:00Z"),
            "normalizer",
            "from the future",
        ),
        // orders.<shop> → the sink
        i("ord-wrong-shop", &orders, order(9107, &|o| o["shop_id"] = json!("other-shop")), "sink", "shop_id"),
        i(
            "ord-future",
            &orders,
            order(9108, &|o| {
                o["source"]["fetched_at"] = json!("2099-01-01T00:00:00Z");
                o["version"] = json!(4_070_908_800_000_000u64);
            }),
            "sink",
            "from the future",
        ),
        i("ord-malformed", &orders, b"{\"order_no\":".to_vec(), "sink", "not a canonical order"),
        i("ord-utf8", &orders, vec![0xc3, 0x28, 0x7b], "sink", "not a canonical order"),
        i("ord-type", &orders, order(9101, &|o| o["quantity"] = json!("two")), "sink", "quantity"),
        i("ord-big", &orders, order(9102, &|o| o["item_title"] = json!(big)), "sink", "exceeds"),
        i("ord-status", &orders, order(9103, &|o| o["qoo10_status"] = json!(9)), "sink", "qoo10_status"),
        i("ord-qty-0", &orders, order(9104, &|o| o["quantity"] = json!(0)), "sink", "quantity"),
        i("ord-qty-neg", &orders, order(9105, &|o| o["quantity"] = json!(-1)), "sink", "quantity"),
        i("ord-date", &orders, order(9106, &|o| o["ordered_at"] = json!("2380-01-01T00:00:00Z")), "sink", "ordered_at"),
        // oms.edits.<shop> → the sink
        i("edit-malformed", &edits, b"{\"edit_id\":".to_vec(), "sink", "not an OMS edit"),
        i("edit-utf8", &edits, vec![0xed, 0xa0, 0x80], "sink", "not an OMS edit"),
        i(
            "edit-type",
            &edits,
            edit("t1", json!({"action": "set_quantity", "order_no": 1, "quantity": "three"})),
            "sink",
            "quantity",
        ),
        i(
            "edit-big",
            &edits,
            edit("t2", json!({"action": "add_item", "pack_no": 1, "item_code": big, "quantity": 1})),
            "sink",
            "exceeds",
        ),
        i("edit-action", &edits, edit("t3", json!({"action": "teleport", "order_no": 1})), "sink", "teleport"),
        i(
            "edit-qty-0",
            &edits,
            edit("t4", json!({"action": "set_quantity", "order_no": 1, "quantity": 0})),
            "sink",
            "quantity",
        ),
        i(
            "edit-qty-neg",
            &edits,
            edit("t5", json!({"action": "set_quantity", "order_no": 1, "quantity": -2})),
            "sink",
            "quantity",
        ),
        i(
            "edit-date",
            &edits,
            edit("t6", json!({"action": "set_ship_date", "order_no": 1, "ship_date": "1900-01-01"})),
            "sink",
            "ship_date",
        ),
    ];
    // The same order (or edit) twice with conflicting content: the first stands, the second is a
    // dead letter. Published after the rest, each pair in order.
    let conflicts = vec![
        (
            i("raw-conflict-1", &raw, raw_envelope(raw_row(9201, json!(1), "On request(2)", date), at), "", ""),
            i(
                "raw-conflict-2",
                &raw,
                raw_envelope(raw_row(9201, json!(4), "On request(2)", date), at),
                "sink",
                "conflict",
            ),
        ),
        (
            i("ord-conflict-1", &orders, order(9301, &|o| o["quantity"] = json!(1)), "", ""),
            i("ord-conflict-2", &orders, order(9301, &|o| o["quantity"] = json!(5)), "sink", "conflict"),
        ),
        (
            i(
                "edit-conflict-1",
                &edits,
                edit("c1", json!({"action": "set_quantity", "order_no": 9301, "quantity": 2})),
                "",
                "",
            ),
            i(
                "edit-conflict-2",
                &edits,
                edit("c1", json!({"action": "set_quantity", "order_no": 9301, "quantity": 9})),
                "sink",
                "conflict",
            ),
        ),
    ];

    let js = dep.nats().await?;
    let publish = |input: &Input| {
        let js = js.clone();
        let mut headers = HeaderMap::new();
        headers.insert("X-Test", input.id);
        let (subject, payload) = (input.subject.clone(), input.payload.clone());
        async move { anyhow::Ok(js.publish_with_headers(subject, headers, payload.into()).await?.await.map(|_| ())?) }
    };
    for input in &inputs {
        publish(input).await?;
    }
    for (first, second) in &conflicts {
        publish(first).await?;
        dep.wait_drained(Duration::from_secs(60)).await?;
        publish(second).await?;
    }
    dep.wait_drained(Duration::from_secs(60)).await?;
    normalizer.check_running()?;
    sink.check_running()?;

    let dead = dep.stream_messages("DLQ").await?;
    let expected: Vec<&Input> = inputs.iter().chain(conflicts.iter().map(|(_, second)| second)).collect();
    let mut problems = Vec::new();
    for input in &expected {
        // A raw row's conflict is found by the sink, in the canonical order the normalizer made
        // of it (which does not carry the raw message's headers): matched by its order number.
        let letters: Vec<_> = dead
            .iter()
            .filter(|m| match input.id {
                "raw-conflict-2" => serde_json::from_slice::<Value>(&m.payload)
                    .is_ok_and(|v| v["order_no"] == json!(9201) && m.subject.contains(".dlq.sink.")),
                id => m.headers.get("X-Test").map(|v| v.as_str()) == Some(id),
            })
            .collect();
        let [letter] = letters.as_slice() else {
            problems.push(format!("{}: {} dead letters, expected 1", input.id, letters.len()));
            continue;
        };
        let error = letter.headers.get("Dlq-Error").map(|v| v.as_str().to_owned()).unwrap_or_default();
        let stage = letter.headers.get("Dlq-Stage").map(|v| v.as_str().to_owned()).unwrap_or_default();
        if stage != input.stage || !error.to_lowercase().contains(&input.reason.to_lowercase()) {
            problems.push(format!(
                "{}: stage {stage:?}, reason {error:?}; expected {} / {:?}",
                input.id, input.stage, input.reason
            ));
        }
        // Original bytes, whichever stage refused them (the raw conflict's letter is the
        // normalizer's canonical order, compared by order number above).
        if letter.payload.as_ref() != input.payload.as_slice() && input.id != "raw-conflict-2" {
            problems.push(format!("{}: the dead letter does not keep the original bytes", input.id));
        }
    }
    for (first, _) in &conflicts {
        if dead.iter().any(|m| m.headers.get("X-Test").map(|v| v.as_str()) == Some(first.id)) {
            problems.push(format!("{}: the first of a conflicting pair must stand", first.id));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert_eq!(dead.len(), expected.len(), "nothing else was dead-lettered");
    let stored =
        dep.query("SELECT quantity FROM orders FINAL WHERE order_no IN (9201, 9301) ORDER BY order_no").await?;
    assert_eq!(stored, vec![vec!["1".to_string()], vec!["1".to_string()]], "the first of each conflict stands");

    // The services counted them.
    let metrics = |port: u16| async move {
        let text = e2e::http().get(format!("http://127.0.0.1:{port}/metrics")).send().await?.text().await?;
        let total: f64 = text
            .lines()
            .filter(|l| l.starts_with("dead_letters_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        anyhow::Ok(total)
    };
    let normalizer_dead = expected.iter().filter(|i| i.stage == "normalizer").count() as f64;
    assert_eq!(metrics(normalizer.port).await?, normalizer_dead);
    assert_eq!(metrics(sink.port).await?, expected.len() as f64 - normalizer_dead);
    Ok(())
}
