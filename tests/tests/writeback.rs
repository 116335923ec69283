//! Write-back to Qoo10, end to end: commands of each kind accepted and rejected, on a write-back
//! shop and a read-only one; the OMS-edit path; the same command twice; a lost answer and a
//! fetcher killed between Qoo10's answer and the record; many shops polling and writing at once.
//! "Exactly once" is counted in the sandbox's request log: calls that changed an order.

use std::time::{Duration, Instant};

use chrono::{Duration as Days, NaiveDateTime, Utc};
use e2e::{Deployment, Sandbox};
use serde_json::{Value, json};

const WB: &str = "wb-shop";
const RO: &str = "ro-shop";

fn now_jst() -> NaiveDateTime {
    Utc::now().naive_utc() + Days::hours(9)
}

/// A date `days` after today in JST, as the CLI and commands take it.
fn jst_date(days: i64) -> String {
    (now_jst() + Days::days(days)).date().to_string()
}

fn line(shop: &str, no: u64, status: u8) -> Value {
    let ordered = now_jst() - Days::hours(30);
    let t = |t: NaiveDateTime| t.format("%Y-%m-%d %H:%M:%S").to_string();
    json!({
        "shop": shop, "order_no": no, "pack_no": no + 100_000, "status": status,
        "order_date": t(ordered), "payment_date": t(ordered + Days::minutes(3)),
        "buyer": "見本 花子", "buyer_kana": "ミホン ハナコ", "receiver": "見本 花子", "receiver_kana": "ミホン ハナコ",
        "zip_code": "150-0000", "addr1": "東京都渋谷区", "addr2": "見本町1-2-3",
        "item_code": format!("I{no}"), "seller_item_code": format!("SKU-{no}"), "item_title": "緑茶 ティーバッグ 100包",
        "unit_price": "1280", "quantity": 1, "payment_method": "クレジットカード",
        "shipping_date": if status >= 4 { Value::String(t(ordered + Days::hours(20))) } else { Value::Null },
    })
}

fn shop_toml(id: &str, writeback: bool) -> String {
    format!(
        "[[shops]]\nid = \"{id}\"\nuser_id = \"u-{id}\"\napi_key = \"k-{id}\"\npassword = \"p-{id}\"\n\
         lookback_days = 7\nwriteback = {writeback}\n\n"
    )
}

/// A sandbox holding `shops` (id, writeback) and `lines`, and a deployment polling them.
async fn setup(shops: &[(&str, bool)], lines: Vec<Value>, qoo10_extra: &str) -> anyhow::Result<(Sandbox, Deployment)> {
    let sandbox = Sandbox::start(&["--shops", "0"]).await?;
    let mut config = String::new();
    for (id, writeback) in shops {
        let shop = json!({"id": id, "user_id": format!("u-{id}"), "api_key": format!("k-{id}"), "password": format!("p-{id}")});
        sandbox.post_json("/_sandbox/shops", &shop).await?;
        config.push_str(&shop_toml(id, *writeback));
    }
    sandbox.put_json("/_sandbox/orders", &Value::Array(lines)).await?;
    let dep = Deployment::new(&format!(
        "[qoo10]\nbase_url = \"{}\"\nrequests_per_second = 20\nglobal_requests_per_second = 100\n{qoo10_extra}\n\n\
         {config}[alerts]\n",
        sandbox.base_url()
    ))
    .await?;
    Ok((sandbox, dep))
}

/// Sandbox requests of write methods as (method, changed).
async fn writes(sandbox: &Sandbox) -> anyhow::Result<Vec<(String, bool)>> {
    let log = sandbox.get_json("/_sandbox/requests").await?;
    let rows = log.as_array().cloned().unwrap_or_default();
    Ok(rows
        .iter()
        .filter(|r| r["method"].as_str().is_some_and(|m| m.contains(".Set")))
        .map(|r| (r["method"].as_str().unwrap_or_default().to_owned(), r["changed"] == json!(true)))
        .collect())
}

fn changing_calls(writes: &[(String, bool)]) -> usize {
    writes.iter().filter(|(_, changed)| *changed).count()
}

/// The sandbox's view of one order.
async fn order(sandbox: &Sandbox, shop: &str, no: u64) -> anyhow::Result<Value> {
    let all = sandbox.get_json(&format!("/_sandbox/orders?shop={shop}")).await?;
    let found = all.as_array().and_then(|a| a.iter().find(|o| o["order_no"] == json!(no)).cloned());
    found.ok_or_else(|| anyhow::anyhow!("order {no} of {shop} not in the sandbox"))
}

/// Results published for `command_id`, in order, as JSON.
async fn results(dep: &Deployment, command_id: &str) -> anyhow::Result<Vec<Value>> {
    let all = dep.stream_messages("QOO10_COMMANDS").await?;
    Ok(all
        .iter()
        .filter(|m| m.subject.contains(".command_results."))
        .filter_map(|m| serde_json::from_slice::<Value>(&m.payload).ok())
        .filter(|v| v["command_id"] == json!(command_id))
        .collect())
}

async fn wait_for<F, Fut>(what: &str, limit: Duration, mut ok: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + limit;
    while !ok().await? {
        anyhow::ensure!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// `fetcher apply …` for `shop`: (exit code, stdout).
fn apply(dep: &Deployment, shop: &str, args: &[&str]) -> anyhow::Result<(Option<i32>, String)> {
    let mut all = vec!["apply", "--shop", shop];
    all.extend_from_slice(args);
    let out = dep.run("fetcher", &all, Duration::from_secs(120))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("p-wb-shop") && !stdout.contains("p-wb-shop"), "a password in the output: {stderr}");
    Ok((out.status.code(), stdout))
}

/// Each of `expected` ("kind shop order state") is among the stored alerts.
async fn assert_alerts(dep: &Deployment, expected: &[String]) -> anyhow::Result<()> {
    let stored = alert_rows(dep).await?;
    for e in expected {
        assert!(stored.contains(e), "{e} in {stored:?}");
    }
    Ok(())
}

async fn alert_rows(dep: &Deployment) -> anyhow::Result<Vec<String>> {
    let rows = dep
        .query("SELECT kind, shop_id, toString(order_no), state FROM alerts FINAL ORDER BY kind, shop_id, order_no")
        .await?;
    Ok(rows.into_iter().map(|r| r.join(" ")).collect())
}

#[tokio::test(flavor = "multi_thread")]
async fn commands_change_qoo10_once_or_say_why_not() -> anyhow::Result<()> {
    let lines = vec![
        line(WB, 9001, 2),
        line(WB, 9002, 2),
        line(WB, 9003, 2),
        line(WB, 9004, 4),
        line(WB, 9005, 2),
        line(RO, 9101, 2),
    ];
    let (sandbox, dep) = setup(&[(WB, true), (RO, false)], lines, "").await?;
    dep.run_pipeline_once()?;
    let before = alert_rows(&dep).await?;
    assert!(before.contains(&format!("ship_date_missing {WB} 9001 open")), "{before:?}");
    assert!(before.contains(&format!("ship_date_missing {RO} 9101 open")), "{before:?}");
    // The alert carries the command that would fix it.
    let alerts = dep.stream_messages("ALERTS").await?;
    let missing: Vec<Value> = alerts
        .iter()
        .filter_map(|m| serde_json::from_slice::<Value>(&m.payload).ok())
        .filter(|v| v["kind"] == json!("ship_date_missing") && v["order_no"] == json!(9001))
        .collect();
    assert!(!missing.is_empty());
    assert_eq!(missing[0]["details"]["command"]["action"], json!("set_ship_date"), "{}", missing[0]);
    assert_eq!(missing[0]["details"]["command"]["order_no"], json!(9001));

    let soon = jst_date(3);
    let (code, out) = apply(&dep, WB, &["--order", "9001", "--ship-date", &soon, "--command-id", "c-ship"])?;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("c-ship order 9001: applied"), "{out}");
    let o = order(&sandbox, WB, 9001).await?;
    assert_eq!(o["status"], json!(3), "配送要請 → 配送準備: {o}");
    // The same command again: its stored result, and no call to Qoo10.
    let calls = writes(&sandbox).await?;
    let (code, out) = apply(&dep, WB, &["--order", "9001", "--ship-date", &soon, "--command-id", "c-ship"])?;
    assert_eq!((code, out.contains("applied")), (Some(0), true), "{out}");
    assert_eq!(writes(&sandbox).await?, calls, "a known command_id calls Qoo10 no more");

    // Rejected before any call: not after today, write-back off, a status that does not allow it.
    let today = jst_date(0);
    let (code, out) = apply(&dep, WB, &["--order", "9002", "--ship-date", &today, "--command-id", "c-today"])?;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("rejected") && out.contains("after today"), "{out}");
    let (code, out) = apply(&dep, RO, &["--order", "9101", "--ship-date", &soon, "--command-id", "c-ro"])?;
    assert!(code == Some(1) && out.contains("rejected") && out.contains("write-back"), "{out}");
    assert_eq!(writes(&sandbox).await?, calls, "rejected commands never reach Qoo10");

    // Tracking: 配送要請 → 配送中; on an order already shipped, Qoo10's -10010.
    let (code, out) = apply(
        &dep,
        WB,
        &["--order", "9003", "--carrier", "佐川急便", "--tracking-no", "1234-5678", "--command-id", "c-track"],
    )?;
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(order(&sandbox, WB, 9003).await?["status"], json!(4));
    let (code, out) = apply(
        &dep,
        WB,
        &["--order", "9004", "--carrier", "佐川急便", "--tracking-no", "999", "--command-id", "c-shipped"],
    )?;
    assert!(code == Some(1) && out.contains("rejected") && out.contains("already shipped"), "{out}");
    // Far in the future: a date Qoo10 refuses (beyond its maximum), named by its code.
    let far = jst_date(60);
    let (code, out) = apply(&dep, WB, &["--order", "9005", "--ship-date", &far, "--command-id", "c-far"])?;
    assert!(code == Some(1) && out.contains("rejected") && out.contains("Qoo10 -10017"), "{out}");

    let all = writes(&sandbox).await?;
    assert_eq!(changing_calls(&all), 2, "one changing call per accepted command: {all:?}");

    // The pipeline's own data shows it after the next poll.
    dep.run_pipeline_once()?;
    assert_alerts(
        &dep,
        &[
            format!("ship_date_missing {WB} 9001 resolved"),
            format!("ship_date_missing {WB} 9003 resolved"),
            format!("ship_date_missing {RO} 9101 open"),
            format!("command_rejected {WB} 9002 open"),
            format!("command_rejected {RO} 9101 open"),
            format!("command_rejected {WB} 9004 open"),
            format!("command_rejected {WB} 9005 open"),
        ],
    )
    .await?;
    let commands = dep
        .query("SELECT command_id, state, toString(qoo10_result_code) FROM commands FINAL ORDER BY command_id")
        .await?;
    let states: Vec<String> = commands.iter().map(|r| r.join(" ")).collect();
    assert_eq!(
        states,
        [
            "c-far rejected -10017",
            "c-ro rejected \\N",
            "c-ship applied 0",
            "c-shipped rejected \\N",
            "c-today rejected \\N",
            "c-track applied 0"
        ],
        "{commands:?}"
    );
    let shipped = dep.query("SELECT status FROM orders FINAL WHERE order_no = 9003").await?;
    assert_eq!(shipped, vec![vec!["shipped".to_owned()]]);

    // Every message on the stream follows the documented shapes.
    let stream = dep.stream_messages("QOO10_COMMANDS").await?;
    let (results, commands): (Vec<_>, Vec<_>) = stream.iter().partition(|m| m.subject.contains(".command_results."));
    assert!(!results.is_empty() && !commands.is_empty());
    let r: Vec<&[u8]> = results.iter().map(|m| m.payload.as_ref()).collect();
    let c: Vec<&[u8]> = commands.iter().map(|m| m.payload.as_ref()).collect();
    assert_eq!(e2e::schema_violations("command-result.schema.json", &r), Vec::<String>::new());
    assert_eq!(e2e::schema_violations("command.schema.json", &c), Vec::<String>::new());
    let payloads: Vec<Vec<u8>> = dep.stream_messages("ALERTS").await?.iter().map(|m| m.payload.to_vec()).collect();
    let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
    assert_eq!(e2e::schema_violations("alert.schema.json", &refs), Vec::<String>::new());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oms_ship_date_edit_is_applied_and_the_alerts_resolve() -> anyhow::Result<()> {
    let (sandbox, dep) = setup(&[(WB, true), (RO, false)], vec![line(WB, 9201, 2), line(RO, 9301, 2)], "").await?;
    dep.run_pipeline_once()?;
    let date = jst_date(4);
    let js = dep.nats().await?;
    for (shop, no, id) in [(WB, 9201, "edit-wb"), (RO, 9301, "edit-ro")] {
        let edit = json!({"schema_version": 1, "edit_id": id, "shop_id": shop, "action": "set_ship_date",
                          "order_no": no, "ship_date": date, "made_at": Utc::now().to_rfc3339()});
        js.publish(format!("{}.oms.edits.{shop}", dep.prefix), serde_json::to_vec(&edit)?.into()).await?.await?;
    }
    // The sink sees the edits (and sends the write-back shop's as a command); the next
    // `fetcher --once` applies it before it polls, and that poll shows Qoo10's new date.
    dep.run_pipeline_once()?;
    let mid = alert_rows(&dep).await?;
    assert!(mid.contains(&format!("qoo10_correction_required {WB} 9201 open")), "{mid:?}");
    let corrections = dep.stream_messages("ALERTS").await?;
    let wb_correction = corrections
        .iter()
        .filter_map(|m| serde_json::from_slice::<Value>(&m.payload).ok())
        .find(|v| v["kind"] == json!("qoo10_correction_required") && v["order_no"] == json!(9201));
    let wb_correction = wb_correction.ok_or_else(|| anyhow::anyhow!("no correction alert for 9201"))?;
    assert_eq!(wb_correction["details"]["command"]["command_id"], json!("edit-wb"), "{wb_correction}");
    dep.run_pipeline_once()?;
    let o = order(&sandbox, WB, 9201).await?;
    assert_eq!(o["status"], json!(3), "{o}");
    assert_alerts(
        &dep,
        &[
            format!("qoo10_correction_required {WB} 9201 resolved"),
            format!("ship_date_missing {WB} 9201 resolved"),
            format!("qoo10_correction_required {RO} 9301 open"),
            format!("ship_date_missing {RO} 9301 open"),
        ],
    )
    .await?;
    assert_eq!(results(&dep, "edit-ro").await?, Vec::<Value>::new(), "a read-only shop's edit is no command");
    let applied = results(&dep, "edit-wb").await?;
    assert!(!applied.is_empty() && applied.iter().all(|r| r["state"] == json!("applied")), "{applied:?}");
    assert_eq!(changing_calls(&writes(&sandbox).await?), 1);
    Ok(())
}

/// Publishes a set_ship_date command as any sender would.
async fn send_ship_date(dep: &Deployment, id: &str, order_no: u64, date: &str) -> anyhow::Result<()> {
    let cmd = json!({"schema_version": 1, "command_id": id, "shop_id": WB, "action": "set_ship_date",
                     "order_no": order_no, "ship_date": date});
    let js = dep.nats().await?;
    js.publish(format!("{}.qoo10.commands.{WB}", dep.prefix), serde_json::to_vec(&cmd)?.into()).await?.await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_answer_and_a_killed_fetcher_change_qoo10_once() -> anyhow::Result<()> {
    let lines = vec![line(WB, 9401, 2), line(WB, 9402, 2)];
    let (sandbox, dep) = setup(&[(WB, true)], lines, "timeout = \"2s\"\nretry_budget = \"20s\"").await?;
    let date = jst_date(2);
    // Qoo10 makes the change, and its answer never arrives; the fetcher reads back and sees it.
    let lost = json!({"kind": "timeout", "method": "ShippingBasic.SetSellerCheckYN_V2", "count": 1, "seconds": 30});
    sandbox.post_json("/_sandbox/faults", &lost).await?;
    let (code, out) = apply(&dep, WB, &["--order", "9401", "--ship-date", &date, "--command-id", "c-lost"])?;
    assert_eq!(code, Some(0), "{out}");
    let calls = writes(&sandbox).await?;
    assert_eq!(changing_calls(&calls), 1, "{calls:?}");

    // kill -9 between Qoo10's answer and the record: the answer is held for a minute, the
    // fetcher dies waiting, and the one that takes over must not call again.
    let held = json!({"kind": "timeout", "method": "ShippingBasic.SetSellerCheckYN_V2", "count": 1, "seconds": 60});
    sandbox.post_json("/_sandbox/faults", &held).await?;
    let config = std::fs::read_to_string(&dep.config_path)?;
    std::fs::write(&dep.config_path, config.replace("timeout = \"2s\"", "timeout = \"90s\""))?;
    let mut first = dep.spawn("fetcher", &[])?;
    send_ship_date(&dep, "c-killed", 9402, &date).await?;
    wait_for("Qoo10 changed order 9402", Duration::from_secs(60), || async {
        Ok(order(&sandbox, WB, 9402).await?["status"] == json!(3))
    })
    .await?;
    first.kill();
    assert!(results(&dep, "c-killed").await?.is_empty(), "killed before the record");
    let _second = dep.spawn("fetcher", &[])?;
    // The shop's lease expires (15 s), then the command is redelivered (ack wait 45 s).
    wait_for("a result for c-killed", Duration::from_secs(120), || async {
        Ok(!results(&dep, "c-killed").await?.is_empty())
    })
    .await?;
    let result = results(&dep, "c-killed").await?;
    assert_eq!(result[0]["state"], json!("applied"), "{result:?}");
    let calls = writes(&sandbox).await?;
    assert_eq!(changing_calls(&calls), 2, "one changing call per command: {calls:?}");
    // And the command sent again is answered from the record.
    send_ship_date(&dep, "c-killed", 9402, &date).await?;
    wait_for("the stored result republished", Duration::from_secs(60), || async {
        Ok(results(&dep, "c-killed").await?.len() >= 2)
    })
    .await?;
    assert_eq!(writes(&sandbox).await?, calls);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn many_shops_polling_and_writing_stay_within_the_rate_limits() -> anyhow::Result<()> {
    let (per_shop, global, shops) = (5u64, 40u64, 30u64);
    let sandbox = Sandbox::start(&[
        "--shops",
        "0",
        "--rate-limit-per-shop",
        &per_shop.to_string(),
        "--rate-limit-global",
        &global.to_string(),
    ])
    .await?;
    let mut config = format!(
        "[qoo10]\nbase_url = \"{}\"\nrequests_per_second = {per_shop}\nglobal_requests_per_second = {global}\n\n\
         [fetcher]\nmax_concurrent_shops = {shops}\n\n",
        sandbox.base_url()
    );
    let mut lines = Vec::new();
    for s in 1..=shops {
        let id = format!("shop-{s}");
        let body = json!({"id": id, "user_id": format!("u-{id}"), "api_key": format!("k-{id}"), "password": format!("p-{id}")});
        sandbox.post_json("/_sandbox/shops", &body).await?;
        config.push_str(&shop_toml(&id, true));
        lines.extend((0..4).map(|n| line(&id, s * 100 + n, 2)));
    }
    sandbox.put_json("/_sandbox/orders", &Value::Array(lines)).await?;
    let dep = Deployment::new(&config).await?;
    let js = dep.nats().await?;
    // As in a running deployment: the streams exist when senders send.
    let cfg = schemas::config::NatsConfig { subject_prefix: dep.prefix.clone(), ..Default::default() };
    runtime::nats::ensure_streams(&js, &cfg).await?;
    let ns = schemas::subjects::Namespace::new(&dep.prefix);
    let date = jst_date(3);
    for s in 1..=shops {
        for n in 0..4 {
            let cmd = json!({"schema_version": 1, "command_id": format!("m-{s}-{n}"), "shop_id": format!("shop-{s}"),
                             "action": "set_ship_date", "order_no": s * 100 + n, "ship_date": date});
            js.publish(ns.commands(&format!("shop-{s}")), serde_json::to_vec(&cmd)?.into()).await?.await?;
        }
    }
    dep.run_ok("fetcher", &["--once"])?;
    dep.run_ok("sink", &["--until-idle"])?;
    let stats = sandbox.get_json("/_sandbox/stats").await?;
    println!("{shops} shops, 4 commands each, then a poll: {stats}");
    assert_eq!(stats["violations"], json!(0), "{stats}");
    assert!(stats["max_requests_in_a_second"].as_u64().unwrap() <= global, "{stats}");
    assert!(stats["max_requests_of_one_shop_in_a_second"].as_u64().unwrap() <= per_shop, "{stats}");
    assert_eq!(changing_calls(&writes(&sandbox).await?), (shops * 4) as usize);
    let states = dep.query("SELECT state, count() FROM commands FINAL GROUP BY state").await?;
    assert_eq!(states, vec![vec!["applied".to_owned(), (shops * 4).to_string()]]);
    let stream = dep.stream_messages("QOO10_COMMANDS").await?;
    let applied = stream
        .iter()
        .filter(|m| m.subject.contains(".command_results."))
        .filter_map(|m| serde_json::from_slice::<Value>(&m.payload).ok())
        .filter(|v| v["state"] == json!("applied"))
        .count();
    assert_eq!(applied, (shops * 4) as usize);
    Ok(())
}

/// Every write call the sandbox received for `order_no` (changed or refused, faults included),
/// and how many of them changed it.
async fn write_calls(sandbox: &Sandbox, order_no: u64) -> anyhow::Result<(usize, usize)> {
    let log = sandbox.get_json("/_sandbox/requests").await?;
    let calls: Vec<Value> = log
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r["method"].as_str().is_some_and(|m| m.contains(".Set")) && r["order_no"] == json!(order_no))
        .collect();
    Ok((calls.len(), calls.iter().filter(|r| r["changed"] == json!(true)).count()))
}

/// The fetcher aborted at `point` of the command protocol (`PIPELINE_CRASH_AT`, as kill -9 there
/// would), then a fetcher taking the shop over: the command ends `applied`, Qoo10 got exactly
/// one call for it (counted whatever its answer), the record ends final, and the message the
/// crashed fetcher held, redelivered, calls nothing.
async fn crash_during_a_command(point: &str, order_no: u64, calls_before_restart: usize) -> anyhow::Result<()> {
    let (sandbox, dep) = setup(&[(WB, true)], vec![line(WB, order_no, 2)], "").await?;
    let (date, id) = (jst_date(2), format!("c-{point}"));
    let args = ["apply", "--shop", WB, "--order", &order_no.to_string(), "--ship-date", &date, "--command-id", &id];
    let out = dep.run_env("fetcher", &args, &[("PIPELINE_CRASH_AT", point)], Duration::from_secs(60))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    anyhow::ensure!(!out.status.success() && stderr.contains("aborting here"), "{point}: not aborted: {stderr}");
    assert_eq!(write_calls(&sandbox, order_no).await?.0, calls_before_restart, "{point}: calls before the restart");
    // A fetcher takes the shop over (the crashed one's lease runs out first); the sender, who
    // got no answer, sends the same command again.
    let _fetcher = dep.spawn("fetcher", &[])?;
    send_ship_date(&dep, &id, order_no, &date).await?;
    let applied = |rs: &[Value]| rs.iter().filter(|r| r["state"] == json!("applied")).count();
    wait_for("the command applied", Duration::from_secs(90), || async { Ok(applied(&results(&dep, &id).await?) > 0) })
        .await?;
    // The message the crashed fetcher held comes back (ack wait 45 s): answered from the record.
    let published_before = results(&dep, &id).await?.len();
    wait_for("the held message redelivered and answered", Duration::from_secs(90), || async {
        Ok(results(&dep, &id).await?.len() > published_before || point == "writeback.result_published")
    })
    .await?;
    let rs = results(&dep, &id).await?;
    assert_eq!(applied(&rs), rs.len(), "{point}: every result says applied: {rs:?}");
    assert_eq!(write_calls(&sandbox, order_no).await?, (1, 1), "{point}: one call, one change");
    assert_eq!(order(&sandbox, WB, order_no).await?["status"], json!(3));
    dep.run_ok("sink", &["--until-idle"])?;
    let stored = dep.query(&format!("SELECT state FROM commands WHERE command_id = '{id}'")).await?;
    anyhow::ensure!(!stored.is_empty() && stored.iter().all(|r| r[0] == "applied"), "{point}: {stored:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_after_the_intent_and_before_the_call_calls_once() -> anyhow::Result<()> {
    crash_during_a_command("writeback.intent_recorded", 9501, 0).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_after_qoo10_answered_and_before_the_record_calls_once() -> anyhow::Result<()> {
    crash_during_a_command("writeback.answered", 9502, 1).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_after_the_record_and_before_the_publish_calls_once() -> anyhow::Result<()> {
    crash_during_a_command("writeback.result_recorded", 9503, 1).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_after_the_publish_and_before_the_ack_calls_once() -> anyhow::Result<()> {
    crash_during_a_command("writeback.result_published", 9504, 1).await
}

/// The race a read-back cannot close: Qoo10 commits the first call only after the fetcher gave
/// up on it and read the line back unchanged. The fetcher then calls again (the guarantee is
/// "at most one change", not "at most one call"), and Qoo10's one-way transition refuses the
/// late first call: two calls, one change, the order confirmed once with the command's date.
#[tokio::test(flavor = "multi_thread")]
async fn a_late_commit_after_the_read_back_is_two_calls_and_one_change() -> anyhow::Result<()> {
    let (sandbox, dep) = setup(&[(WB, true)], vec![line(WB, 9601, 2)], "timeout = \"2s\"").await?;
    // Held 20 s, committed 8 s after it arrived: after the read-back (timeout 2 s, then 4 s).
    let late = json!({"kind": "late_commit", "method": "ShippingBasic.SetSellerCheckYN_V2", "count": 1,
                      "seconds": 20, "ms": 8000});
    sandbox.post_json("/_sandbox/faults", &late).await?;
    let date = jst_date(2);
    let (code, out) = apply(&dep, WB, &["--order", "9601", "--ship-date", &date, "--command-id", "c-late"])?;
    assert_eq!(code, Some(0), "{out}");
    wait_for("the late commit", Duration::from_secs(30), || async {
        let log = sandbox.get_json("/_sandbox/requests").await?;
        Ok(log.as_array().into_iter().flatten().any(|r| r["fault"] == json!("late_commit") && !r["code"].is_null()))
    })
    .await?;
    assert_eq!(write_calls(&sandbox, 9601).await?, (2, 1), "two calls, one change");
    let o = order(&sandbox, WB, 9601).await?;
    assert_eq!((o["status"].clone(), o["est_ship_date"].clone()), (json!(3), json!(date)), "{o}");
    Ok(())
}

/// `failed` is not final: Qoo10 unreachable for every attempt (HTTP 503, three calls, each after
/// a read-back), then the same command sent again is tried again and applied, once.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_command_sent_again_is_applied_once() -> anyhow::Result<()> {
    let (sandbox, dep) = setup(&[(WB, true)], vec![line(WB, 9701, 2)], "timeout = \"2s\"").await?;
    let down = json!({"kind": "status", "code": 503, "method": "ShippingBasic.SetSellerCheckYN_V2", "count": 3});
    sandbox.post_json("/_sandbox/faults", &down).await?;
    let date = jst_date(2);
    let args = ["--order", "9701", "--ship-date", date.as_str(), "--command-id", "c-failed"];
    let (code, out) = apply(&dep, WB, &args)?;
    assert!(code == Some(1) && out.contains("failed"), "{out}");
    assert_eq!(write_calls(&sandbox, 9701).await?, (3, 0));
    let (code, out) = apply(&dep, WB, &args)?;
    assert!(code == Some(0) && out.contains("applied"), "{out}");
    assert_eq!(write_calls(&sandbox, 9701).await?, (4, 1), "tried again, changed once");
    let (code, out) = apply(&dep, WB, &args)?;
    assert!(code == Some(0) && out.contains("applied"), "{out}");
    assert_eq!(write_calls(&sandbox, 9701).await?, (4, 1), "applied is final: no call");
    Ok(())
}

/// A crash after a rejection is recorded and before its alert is published: the command sent
/// again is answered from the record, and `command_rejected` still opens, once (a plain
/// subscriber). Before, the known-command path only republished the result: the alert was lost.
#[tokio::test(flavor = "multi_thread")]
async fn a_crash_after_a_rejection_is_recorded_still_opens_its_alert_once() -> anyhow::Result<()> {
    let (sandbox, dep) = setup(&[(WB, true)], vec![line(WB, 9801, 2)], "").await?;
    let tap = dep.alert_tap().await?;
    let (far, id) = (jst_date(60), "c-far-crash");
    let args = ["apply", "--shop", WB, "--order", "9801", "--ship-date", &far, "--command-id", id];
    let out =
        dep.run_env("fetcher", &args, &[("PIPELINE_CRASH_AT", "writeback.result_recorded")], Duration::from_secs(60))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    anyhow::ensure!(!out.status.success() && stderr.contains("aborting here"), "not aborted: {stderr}");
    let _fetcher = dep.spawn("fetcher", &[])?;
    send_ship_date(&dep, id, 9801, &far).await?;
    wait_for("the rejection published", Duration::from_secs(90), || async {
        Ok(results(&dep, id).await?.iter().any(|r| r["state"] == json!("rejected")))
    })
    .await?;
    let opened = |tap: &e2e::AlertTap| {
        tap.all().iter().filter(|a| a["kind"] == json!("command_rejected") && a["order_no"] == json!(9801)).count()
    };
    wait_for("command_rejected seen", Duration::from_secs(30), || async { Ok(opened(&tap) > 0) }).await?;
    // The held message comes back after the ack wait: answered again, the alert not again.
    wait_for("the held message answered", Duration::from_secs(90), || async {
        Ok(results(&dep, id).await?.len() >= 2)
    })
    .await?;
    assert_eq!(opened(&tap), 1, "opened once: {:?}", tap.all());
    assert_eq!(write_calls(&sandbox, 9801).await?, (1, 0), "Qoo10 refused the one call");
    Ok(())
}
