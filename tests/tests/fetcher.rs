//! The fetcher against a misbehaving QAPI: faults, expired keys, refused credentials, rate
//! limits with many shops, unchanged re-polls, restarts, and the `check` / `backfill` commands.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use chrono::Utc;
use e2e::{Deployment, Sandbox};
use serde_json::{Value, json};

fn shop_toml(id: &str, n: u32, password: &str, extra: &str) -> String {
    format!(
        "[[shops]]\nid = \"{id}\"\nuser_id = \"sandbox-seller-{n}\"\napi_key = \"sandbox-api-key-{n}\"\npassword = \"{password}\"\n\
         statuses = [1, 2, 3, 4, 5]\nlookback_days = 7\n{extra}\n"
    )
}

fn qoo10_toml(sandbox: &Sandbox, extra: &str) -> String {
    format!(
        "[qoo10]\nbase_url = \"{}\"\nrequests_per_second = 50\nglobal_requests_per_second = 200\n{extra}\n",
        sandbox.base_url()
    )
}

/// Order numbers of every raw row stored for this deployment.
async fn raw_order_numbers(dep: &Deployment) -> anyhow::Result<BTreeSet<u64>> {
    let mut out = BTreeSet::new();
    for m in dep.stream_messages("QOO10_RAW").await? {
        let v: Value = serde_json::from_slice(&m.payload)?;
        let row = &v["row"];
        let no = row.get("orderNo").or_else(|| row.get("OrderNo")).and_then(Value::as_u64).expect("order number");
        out.insert(no);
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_transient_fault_is_retried_and_nothing_is_lost() -> anyhow::Result<()> {
    let sandbox = Sandbox::start(&["--shops", "1", "--orders", "40"]).await?;
    let shop = shop_toml("s", 1, "sandbox-password-1", "claims = false");
    let clean = Deployment::new(&format!("{}{shop}", qoo10_toml(&sandbox, ""))).await?;
    clean.run_ok("fetcher", &["--once"])?;
    let expected = raw_order_numbers(&clean).await?;
    assert!(expected.len() > 10, "the sandbox has orders in the window");

    let faults = [
        json!({"kind": "status", "code": 503, "count": 1}),
        json!({"kind": "status", "code": 502, "count": 1}),
        json!({"kind": "timeout", "seconds": 3, "count": 1}),
        json!({"kind": "html", "count": 1}),
        json!({"kind": "garbage", "count": 1}),
        json!({"kind": "rate_limit", "seconds": 1, "count": 1}),
        json!({"kind": "latency", "ms": 300, "count": 2}),
    ];
    for f in &faults {
        let mut f = f.clone();
        f["method"] = json!("ShippingBasic.GetShippingInfo_v3");
        sandbox.post_json("/_sandbox/faults", &f).await?;
    }
    let faulty =
        Deployment::new(&format!("{}{shop}", qoo10_toml(&sandbox, "timeout = \"1s\"\nretry_budget = \"60s\""))).await?;
    let out = faulty.run_ok("fetcher", &["--once"])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(raw_order_numbers(&faulty).await?, expected, "same rows as without faults");

    let log = sandbox.get_json("/_sandbox/requests").await?;
    let injected: Vec<&str> = log.as_array().unwrap().iter().filter_map(|r| r["fault"].as_str()).collect();
    assert_eq!(injected.len(), 8, "every fault was served: {injected:?}");
    // Each failure is logged once, with the shop and the method.
    assert_eq!(stderr.matches("QAPI call failed; retrying").count(), 6, "{stderr}");
    assert!(stderr.contains("shop=s") && stderr.contains("ShippingBasic.GetShippingInfo_v3"), "{stderr}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_key_is_renewed_once_and_the_call_retried() -> anyhow::Result<()> {
    let sandbox = Sandbox::start(&["--shops", "1", "--orders", "20"]).await?;
    sandbox
        .post_json(
            "/_sandbox/faults",
            &json!({"kind": "expire_key", "count": 1, "method": "ShippingBasic.GetShippingInfo_v3"}),
        )
        .await?;
    let dep = Deployment::new(&format!("{}{}", qoo10_toml(&sandbox, ""), shop_toml("s", 1, "sandbox-password-1", "")))
        .await?;
    dep.run_ok("fetcher", &["--once"])?;
    let log = sandbox.get_json("/_sandbox/requests").await?;
    let log = log.as_array().unwrap();
    let certs = log.iter().filter(|r| r["method"].as_str().unwrap().contains("CreateCertificationKey")).count();
    assert_eq!(certs, 2, "one key at start, one after -90004");
    assert_eq!(log.iter().filter(|r| r["code"] == json!(-90004)).count(), 1);
    assert!(dep.stream_messages("ALERTS").await?.is_empty(), "a renewed key is no credentials problem");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_credentials_open_one_alert_and_recovery_resolves_it() -> anyhow::Result<()> {
    let sandbox = Sandbox::start(&["--shops", "2", "--orders", "10"]).await?;
    let bad = format!(
        "{}{}{}",
        qoo10_toml(&sandbox, ""),
        shop_toml("good", 1, "sandbox-password-1", "claims = false"),
        shop_toml("s", 2, "changed-in-qsm", "claims = false")
    );
    let dep = Deployment::new(&bad).await?;
    for _ in 0..2 {
        let out = dep.run("fetcher", &["--once"], Duration::from_secs(60))?;
        assert_eq!(out.status.code(), Some(1));
    }
    let alerts = dep.stream_messages("ALERTS").await?;
    assert_eq!(alerts.len(), 1, "opened once, not once per poll");
    assert_eq!(alerts[0].subject.as_str(), format!("{}.alerts.credentials_invalid.s", dep.prefix));
    let open: Value = serde_json::from_slice(&alerts[0].payload)?;
    assert_eq!(
        (open["kind"].as_str(), open["state"].as_str(), open["shop_id"].as_str()),
        (Some("credentials_invalid"), Some("open"), Some("s"))
    );
    assert!(open["message_ja"].as_str().unwrap().contains("認証情報がQoo10に拒否されました"), "{open}");
    assert!(open["message"].as_str().unwrap().contains("-10001"), "{open}");
    assert!(!open.to_string().contains("changed-in-qsm"), "no secret in the alert");

    // The seller fixes the password: the next poll succeeds and resolves the same alert.
    let fixed = bad.replace("changed-in-qsm", "sandbox-password-2");
    std::fs::write(&dep.config_path, std::fs::read_to_string(&dep.config_path)?.replace(&bad, &fixed))?;
    dep.run_ok("fetcher", &["--once"])?;
    let alerts = dep.stream_messages("ALERTS").await?;
    assert_eq!(alerts.len(), 2);
    let resolved: Value = serde_json::from_slice(&alerts[1].payload)?;
    assert_eq!(resolved["state"], json!("resolved"));
    assert_eq!(resolved["alert_id"], open["alert_id"]);
    assert!(resolved["version"].as_u64() > open["version"].as_u64());
    let schema = e2e::schema_violations("alert.schema.json", &[alerts[0].payload.as_ref(), alerts[1].payload.as_ref()]);
    assert_eq!(schema, Vec::<String>::new());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn limits_hold_for_500_shops_with_injected_5xx() -> anyhow::Result<()> {
    let (per_shop, global) = (5, 100);
    let sandbox = Sandbox::start(&[
        "--shops",
        "500",
        "--orders",
        "4",
        "--rate-limit-per-shop",
        &per_shop.to_string(),
        "--rate-limit-global",
        &global.to_string(),
    ])
    .await?;
    sandbox.post_json("/_sandbox/faults", &json!({"kind": "status", "code": 503, "count": 200})).await?;
    let mut config = format!(
        "[qoo10]\nbase_url = \"{}\"\nrequests_per_second = {per_shop}\nglobal_requests_per_second = {global}\n\n\
         [fetcher]\nmax_concurrent_shops = 500\n\n",
        sandbox.base_url()
    );
    for n in 1..=500 {
        config.push_str(&format!(
            "[[shops]]\nid = \"shop-{n}\"\nuser_id = \"sandbox-seller-{n}\"\napi_key = \"sandbox-api-key-{n}\"\n\
             password = \"sandbox-password-{n}\"\nstatuses = [2, 3]\nlookback_days = 3\nclaims = false\n"
        ));
    }
    let dep = Deployment::new(&config).await?;
    let started = Instant::now();
    dep.run_ok("fetcher", &["--once"])?;
    let elapsed = started.elapsed();
    let stats = sandbox.get_json("/_sandbox/stats").await?;
    println!("500 shops, 503 on the first 200 requests: {stats} in {elapsed:?}");
    assert_eq!(stats["violations"], json!(0), "{stats}");
    assert!(stats["max_requests_in_a_second"].as_u64().unwrap() <= global, "{stats}");
    assert!(stats["max_requests_of_one_shop_in_a_second"].as_u64().unwrap() <= per_shop, "{stats}");
    assert_eq!(
        stats["requests"],
        json!(500 * 4 + 200),
        "a certification and three calls per shop (2 and 3 by order date, 2–3 by payment date), plus the retried 503s"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_polls_of_an_unchanged_sandbox_publish_each_row_once() -> anyhow::Result<()> {
    let sandbox = Sandbox::start(&["--shops", "2", "--orders", "60"]).await?;
    let dep = Deployment::new(&format!(
        "{}{}{}",
        qoo10_toml(&sandbox, ""),
        shop_toml("a", 1, "sandbox-password-1", ""),
        shop_toml("b", 2, "sandbox-password-2", "")
    ))
    .await?;
    dep.run_ok("fetcher", &["--once"])?;
    let after_one = dep.stream_messages("QOO10_RAW").await?.len();
    // Counted by a plain subscriber: a re-send inside the duplicate window shows here.
    let tap = dep.tap(schemas::subjects::Stream::Raw).await?;
    for _ in 0..9 {
        dep.run_ok("fetcher", &["--once"])?;
    }
    let after_ten = dep.stream_messages("QOO10_RAW").await?.len();
    println!("raw messages after 1 poll: {after_one}, after 10 polls: {after_ten}, re-sent: {}", tap.count());
    assert_eq!((after_ten, tap.count()), (after_one, 0), "nine more polls of unchanged orders publish nothing");

    // Every poll reported what it saw, call by call, and ended with one closing summary. A first
    // import makes 18 calls (statuses 1–3, 4 and 5 by order date, 4 by ship date, 2–3 by
    // payment date, 5 by delivered date, 12 claim calls); the polls right after it make the 5
    // of every interval (the slower families are not due yet).
    let summaries: Vec<Value> =
        dep.stream_messages("QOO10_POLLS").await?.iter().map(|m| serde_json::from_slice(&m.payload).unwrap()).collect();
    let polls: std::collections::BTreeSet<&str> = summaries.iter().filter_map(|s| s["poll_id"].as_str()).collect();
    assert_eq!(polls.len(), 20);
    assert_eq!(summaries.iter().filter(|s| s["last_in_poll"] == json!(true)).count(), 20);
    assert_eq!(summaries.len(), 2 * (18 + 1) + 9 * 2 * (5 + 1), "{summaries:#?}");
    // A row may come back from several calls (by order date and by payment date, say); it is
    // published once.
    let seen: BTreeSet<(String, u64)> = summaries
        .iter()
        .take(19 * 2)
        .flat_map(|s| {
            let kind = s["kind"].as_str().unwrap_or_default().to_owned();
            s["order_nos"].as_array().unwrap().iter().map(move |n| (kind.clone(), n.as_u64().unwrap()))
        })
        .collect();
    let published: BTreeSet<(String, u64)> = dep
        .stream_messages("QOO10_RAW")
        .await?
        .iter()
        .map(|m| {
            let v: Value = serde_json::from_slice(&m.payload).unwrap();
            let no = v["row"]["OrderNo"].as_u64().or(v["row"]["orderNo"].as_u64()).unwrap();
            (v["kind"].as_str().unwrap().to_owned(), no)
        })
        .collect();
    assert_eq!((seen.len(), &seen), (after_one, &published), "the first poll's summaries list every row it published");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_resumes_without_a_burst() -> anyhow::Result<()> {
    let sandbox = Sandbox::start(&["--shops", "1", "--orders", "10"]).await?;
    let dep = Deployment::new(&format!(
        "{}{}",
        qoo10_toml(&sandbox, ""),
        shop_toml("s", 1, "sandbox-password-1", "interval = \"10m\"\nclaims = false")
    ))
    .await?;
    let first = dep.spawn("fetcher", &[])?;
    let deadline = Instant::now() + Duration::from_secs(30);
    // The state is saved right after the poll's last summary: wait until it says it succeeded.
    while !dep
        .stream_messages("QOO10_FETCH_STATE")
        .await?
        .iter()
        .any(|m| serde_json::from_slice::<serde_json::Value>(&m.payload).is_ok_and(|v| !v["last_success"].is_null()))
    {
        assert!(Instant::now() < deadline, "the first poll's state was not saved");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut first = first;
    assert_eq!(first.terminate()?, Some(0));
    let before = sandbox.get_json("/_sandbox/requests").await?.as_array().unwrap().len();
    // The restarted fetcher holds the shop (ready) and has scheduled its next poll: one that
    // ignored the interval would poll now, within milliseconds of becoming ready.
    let second = dep.spawn("fetcher", &[])?;
    second.wait_readyz(200, Duration::from_secs(30)).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = sandbox.get_json("/_sandbox/requests").await?.as_array().unwrap().len();
    drop(second);
    assert_eq!(after, before, "the restarted fetcher waits out the 10 minute interval");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn check_and_backfill_commands() -> anyhow::Result<()> {
    let sandbox = Sandbox::start(&["--shops", "2", "--orders", "30"]).await?;
    let dep = Deployment::new(&format!(
        "{}{}{}",
        qoo10_toml(&sandbox, ""),
        shop_toml("ok", 1, "sandbox-password-1", ""),
        shop_toml("bad", 2, "old-password", "")
    ))
    .await?;
    let out = dep.run("fetcher", &["check", "--shop", "ok"], Duration::from_secs(30))?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("ready to be polled"), "{text}");
    let out = dep.run("fetcher", &["check", "--shop", "bad"], Duration::from_secs(30))?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1));
    assert!(text.contains("does not know this QSM login ID / password") && text.contains("id = \"bad\""), "{text}");
    assert!(!text.contains("old-password"));
    std::fs::write(
        &dep.config_path,
        std::fs::read_to_string(&dep.config_path)?.replace("sandbox-api-key-2", "revoked-key"),
    )?;
    let out = dep.run("fetcher", &["check", "--shop", "bad"], Duration::from_secs(30))?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("does not recognise the API key (-90001") && text.contains("API・FTP・QSM権限"), "{text}");
    assert!(!text.contains("revoked-key"));

    // The sandbox's clock and life cycle, seen through the fetcher: a ship date set in QSM moves
    // an order from 2 to 3.
    let orders = sandbox.get_json("/_sandbox/orders?shop=sandbox-1").await?;
    let mut new = orders.as_array().unwrap()[0].clone();
    let no = 1_019_999_999;
    let ship_date = (Utc::now() + chrono::Duration::days(17)).date_naive().to_string();
    let ordered =
        (Utc::now() + chrono::Duration::hours(9) - chrono::Duration::hours(2)).format("%Y-%m-%d %H:%M:%S").to_string();
    for (k, v) in [
        ("order_no", json!(no)),
        ("pack_no", json!(819_999_999u64)),
        ("status", json!(2)),
        ("claim_status", json!(0)),
        ("order_date", json!(ordered)),
        ("payment_date", json!(ordered)),
        ("est_ship_date", Value::Null),
        ("hold", json!(true)),
    ] {
        new[k] = v;
    }
    sandbox.put_json("/_sandbox/orders", &json!([new])).await?;
    sandbox.post_json(&format!("/_sandbox/orders/sandbox-1/{no}/set_ship_date"), &json!({"date": ship_date})).await?;
    let raw_before = dep.stream_messages("QOO10_RAW").await?.len();
    dep.run_ok("fetcher", &["--once", "--shop", "ok"])?;
    let raw = dep.stream_messages("QOO10_RAW").await?;
    let moved: Vec<Value> = raw[raw_before..]
        .iter()
        .map(|m| serde_json::from_slice::<Value>(&m.payload).unwrap())
        .filter(|v| v["row"]["OrderNo"] == json!(no))
        .collect();
    assert_eq!(moved.len(), 1, "exactly the changed order is re-published");
    assert_eq!(moved[0]["row"]["ShippingStatus"], json!("Seller confirm(3)"));
    assert_eq!(moved[0]["row"]["EstimatedShippingDate"], json!(ship_date));

    let out = dep.run_ok("fetcher", &["backfill", "--shop", "ok", "--from", "2025-11-01", "--to", "2026-11-30"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("5 windows") && text.contains("85 calls"), "{text}");
    let log = sandbox.get_json("/_sandbox/requests").await?;
    let requests = log.as_array().unwrap();
    assert!(!requests.is_empty() && requests.iter().all(|r| r["code"] != json!(-10003)), "no window over 90 days");
    Ok(())
}

/// A key without a method's permission (`-90003`) is a state the seller must act on, not a
/// poll failing silently: the poll goes on without the method, `credentials_invalid` names it,
/// and nothing is called vanished meanwhile. A key nearing its first birthday warns 30 days
/// ahead (`credentials_expiring`); both reach `alerts` and resolve when their cause ends.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_method_is_named_and_an_ageing_key_is_warned_of() -> anyhow::Result<()> {
    let sandbox = Sandbox::start(&["--shops", "1", "--orders", "30"]).await?;
    let claims = "ShippingBasic.GetClaimInfo_V3";
    let shop = |denied: &[&str]| {
        json!({"id": "sandbox-1", "user_id": "sandbox-seller-1", "api_key": "sandbox-api-key-1",
               "password": "sandbox-password-1", "denied_methods": denied})
    };
    sandbox.post_json("/_sandbox/shops", &shop(&[claims])).await?;
    let issued = (Utc::now() + chrono::Duration::hours(9) - chrono::Duration::days(340)).date_naive();
    let config = format!(
        "{}{}",
        qoo10_toml(&sandbox, ""),
        shop_toml("s", 1, "sandbox-password-1", &format!("api_key_issued_on = \"{issued}\""))
    );
    let dep = Deployment::new(&config).await?;
    dep.run_pipeline_once()?;
    let alerts = "SELECT kind, state, visitParamExtractString(details, 'method') FROM alerts FINAL WHERE order_no = 0 ORDER BY kind";
    let row = |k: &str, s: &str, m: &str| vec![k.to_owned(), s.to_owned(), m.to_owned()];
    assert_eq!(
        dep.query(alerts).await?,
        vec![row("credentials_expiring", "open", ""), row("credentials_invalid", "open", claims)]
    );
    assert!(dep.count("SELECT count() FROM orders").await > 0, "the orders still come in");
    let summaries = dep.stream_messages("QOO10_POLLS").await?;
    let last: Value = serde_json::from_slice(&summaries.last().unwrap().payload)?;
    assert_eq!((last["last_in_poll"].clone(), last["refused_methods"].clone()), (json!(true), json!([claims])));
    let expiring = dep.query("SELECT message_ja FROM alerts FINAL WHERE kind = 'credentials_expiring'").await?;
    let expiry = issued.checked_add_months(chrono::Months::new(12)).unwrap();
    assert!(expiring[0][0].contains(&format!("{expiry} に発行から1年")), "{expiring:?}");

    // Orders gone from the shop meanwhile are not accused: the poll could not see claims.
    sandbox.delete_json("/_sandbox/orders").await?;
    dep.run_pipeline_once()?;
    assert_eq!(dep.count("SELECT count() FROM alerts WHERE kind = 'order_vanished'").await, 0);

    // Qoo10 grants the permission, the seller renews the key: both resolve.
    sandbox.post_json("/_sandbox/shops", &shop(&[])).await?;
    let today = (Utc::now() + chrono::Duration::hours(9)).date_naive();
    let renewed = config.replace(&issued.to_string(), &today.to_string());
    std::fs::write(&dep.config_path, std::fs::read_to_string(&dep.config_path)?.replace(&config, &renewed))?;
    dep.run_pipeline_once()?;
    assert_eq!(
        dep.query(alerts).await?,
        vec![row("credentials_expiring", "resolved", ""), row("credentials_invalid", "resolved", claims)]
    );
    let payloads: Vec<Vec<u8>> = dep.stream_messages("ALERTS").await?.iter().map(|m| m.payload.to_vec()).collect();
    let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
    assert_eq!(e2e::schema_violations("alert.schema.json", &refs), Vec::<String>::new());
    Ok(())
}

/// nats-server 2.12+ allows a stream 1,000 consumers unless it says otherwise, and the fetcher
/// reads each shop's commands through a durable of its own: shop 1,001 was refused ("maximum
/// consumers limit reached") until `QOO10_COMMANDS` said how many it may have.
#[tokio::test(flavor = "multi_thread")]
async fn the_commands_of_1200_shops_each_get_their_consumer_and_others_none() -> anyhow::Result<()> {
    let dep = Deployment::new("").await?;
    let mut nats = schemas::config::NatsConfig::default();
    (nats.url, nats.subject_prefix) = (dep.servers.nats_url.clone(), dep.prefix.clone());
    let (_, js) = runtime::nats::connect_jetstream(&nats, "consumers-test").await?;
    let made = futures::future::join_all((1..=1_200).map(|n| {
        let (js, nats) = (js.clone(), nats.clone());
        async move { fetcher::writeback::consumer(&js, &nats, &format!("shop-{n}")).await.map(|_| ()) }
    }))
    .await;
    let refused: Vec<String> = made.into_iter().filter_map(|r| r.err().map(|e| e.to_string())).collect();
    assert!(refused.is_empty(), "{} of 1,200 refused, e.g. {:?}", refused.len(), refused.first());
    // A shop never sent a command needs no consumer: the poll asks the stream first.
    let sink = fetcher::poll::Sink::new(js.clone(), schemas::subjects::Namespace::from_config(&nats));
    assert!(!fetcher::writeback::any_command(&sink, "shop-7").await?);
    js.publish(sink.ns.command_results("shop-7"), "{}".into()).await?.await?;
    assert!(!fetcher::writeback::any_command(&sink, "shop-7").await?, "a result is not a command");
    js.publish(sink.ns.commands("shop-7"), "{}".into()).await?.await?;
    assert!(fetcher::writeback::any_command(&sink, "shop-7").await?);
    assert!(!fetcher::writeback::any_command(&sink, "shop-8").await?);
    Ok(())
}
