//! Fencing: an instance that lost its lease while it stood still (SIGSTOP, as in a long GC pause
//! or a frozen VM) and then runs on writes nothing, publishes nothing and calls nothing, while the
//! instance that took over works. Counted where a double would show: rows without `FINAL`, a
//! plain NATS subscriber, the paused process's own metrics, and the sandbox's request log per
//! certification key. Also the two compare-and-sets the leases and command records rest on,
//! against a real NATS server.

use std::time::{Duration, Instant};

use e2e::{Deployment, Sandbox, the_active};
use serde_json::{Value, json};

fn config(sandbox: &Sandbox, shops: u32, extra: &str) -> String {
    let mut c = format!(
        "[qoo10]\nbase_url = \"{}\"\nrequests_per_second = 50\nglobal_requests_per_second = 200\n\n\
         [sink]\nbatch_size = 20\n\n",
        sandbox.base_url()
    );
    for i in 1..=shops {
        c.push_str(&format!(
            "[[shops]]\nid = \"shop{i}\"\nuser_id = \"sandbox-seller-{i}\"\napi_key = \"sandbox-api-key-{i}\"\n\
             password = \"sandbox-password-{i}\"\nlookback_days = 7\n{extra}\n"
        ));
    }
    c
}

/// New work: the sandbox a day and a half on, polled once and normalized.
async fn more_work(dep: &Deployment, sandbox: &Sandbox, hours: u32) -> anyhow::Result<()> {
    sandbox.post_json(&format!("/_sandbox/advance?hours={hours}"), &json!({})).await?;
    dep.run_ok("fetcher", &["--once"])?;
    dep.run_ok("normalizer", &["--until-idle"])?;
    dep.wait_drained(Duration::from_secs(120)).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sink_paused_past_its_lease_and_resumed_writes_and_publishes_nothing() -> anyhow::Result<()> {
    // Three days back: the 60 hours it is moved on stay in every stage's past (the fetcher follows
    // the sandbox's clock, and a stage dead-letters rows fetched in its future).
    let start = (chrono::Utc::now() + chrono::Duration::hours(9 - 72)).format("%Y-%m-%d %H:%M:%S").to_string();
    let sandbox = Sandbox::start(&["--shops", "2", "--orders", "120", "--frozen-clock", "--now", &start]).await?;
    let dep = Deployment::new(&config(&sandbox, 2, "")).await?;
    let tap = dep.alert_tap().await?;
    let (a, b) = (dep.spawn("sink", &[])?, dep.spawn("sink", &[])?);
    let active = the_active(&[&a, &b], Duration::from_secs(30)).await?;
    let (old, new) = if active == 0 { (&a, &b) } else { (&b, &a) };
    dep.run_ok("fetcher", &["--once"])?;
    dep.run_ok("normalizer", &["--until-idle"])?;
    dep.wait_drained(Duration::from_secs(120)).await?;
    let (batches, transitions) = (old.metric("clickhouse_batches_total").await?, old.metric("alerts_total").await?);
    anyhow::ensure!(batches > 0.0 && transitions > 0.0, "the active sink worked: {batches} batches");

    old.pause()?;
    let paused_at = Instant::now();
    new.wait_readyz(200, Duration::from_secs(40)).await?;
    println!("taken over {:?} after the pause", paused_at.elapsed());
    more_work(&dep, &sandbox, 36).await?;
    old.resume()?;
    let body = old.wait_readyz(503, Duration::from_secs(30)).await?;
    assert!(body.contains("standby"), "the resumed sink knows it lost the lease: {body}");
    // Work arriving after the resume, which the old sink's consumer could still be handed.
    more_work(&dep, &sandbox, 24).await?;
    assert_eq!(old.metric("clickhouse_batches_total").await?, batches, "no batch written after the pause");
    assert_eq!(old.metric("alerts_total").await?, transitions, "no alert raised after the pause");
    let worked = new.metric("clickhouse_batches_total").await?;
    let versions = dep.count("SELECT count() FROM order_versions").await;
    assert!(worked > 0.0, "the new holder worked: {worked} batches, {versions} versions");
    let doubled = dep
        .count(
            "SELECT count() FROM (SELECT shop_id, order_no, version, count() AS n FROM order_versions \
             GROUP BY shop_id, order_no, version HAVING n > 1)",
        )
        .await;
    assert_eq!(doubled, 0, "a version stored twice (rows read without FINAL)");
    let alerts_doubled = dep
        .count(
            "SELECT count() FROM (SELECT alert_id, version, count() AS n FROM alerts \
             GROUP BY alert_id, version HAVING n > 1)",
        )
        .await;
    assert_eq!(alerts_doubled, 0, "an alert transition stored twice");
    assert!(!tap.all().is_empty(), "alerts were raised");
    assert_eq!(tap.repeated(), Vec::<(String, usize)>::new(), "a plain subscriber saw a transition twice");
    Ok(())
}

/// Requests in the sandbox's log as (key fingerprint, at_ms, method).
async fn requests(sandbox: &Sandbox) -> anyhow::Result<Vec<(String, i64, String)>> {
    let log = sandbox.get_json("/_sandbox/requests").await?;
    Ok(log
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let text = |k: &str| r[k].as_str().unwrap_or_default().to_owned();
            (text("key"), r["at_ms"].as_i64().unwrap_or(0), text("method"))
        })
        .collect())
}

async fn wait_until<F, Fut>(what: &str, limit: Duration, mut ok: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + limit;
    while !ok().await? {
        anyhow::ensure!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fetcher_paused_past_its_lease_and_resumed_calls_qoo10_no_more() -> anyhow::Result<()> {
    let sandbox = Sandbox::start(&["--shops", "1", "--orders", "40"]).await?;
    let dep = Deployment::new(&config(&sandbox, 1, "interval = \"2s\"\nwriteback = true")).await?;
    let old = dep.spawn("fetcher", &[])?;
    old.wait_readyz(200, Duration::from_secs(30)).await?;
    // Its certification: the key every call of this process carries.
    wait_until("the first fetcher polled", Duration::from_secs(30), || async {
        Ok(requests(&sandbox).await?.iter().any(|r| r.2.ends_with("GetShippingInfo_v3")))
    })
    .await?;
    let new = dep.spawn("fetcher", &[])?;
    new.wait_readyz(503, Duration::from_secs(10)).await?;
    let published = old.metric("fetcher_published_total").await?;
    anyhow::ensure!(published > 0.0, "the first fetcher published");

    old.pause()?;
    let paused_ms = chrono::Utc::now().timestamp_millis();
    new.wait_readyz(200, Duration::from_secs(40)).await?;
    // The new holder's calls carry its own certification key.
    let polled_by_new = |rs: &[(String, i64, String)]| -> std::collections::BTreeSet<String> {
        rs.iter().filter(|r| r.1 > paused_ms && r.2.ends_with("GetShippingInfo_v3")).map(|r| r.0.clone()).collect()
    };
    wait_until("the new holder polled", Duration::from_secs(30), || async {
        Ok(!polled_by_new(&requests(&sandbox).await?).is_empty())
    })
    .await?;
    let new_keys: std::collections::BTreeSet<String> = polled_by_new(&requests(&sandbox).await?);
    old.resume()?;
    let resumed_ms = chrono::Utc::now().timestamp_millis();
    let body = old.wait_readyz(503, Duration::from_secs(30)).await?;
    assert!(body.contains("standby"), "{body}");
    // The new holder polls (every 2 s) and applies a command; the old one does neither.
    let orders = sandbox.get_json("/_sandbox/orders?shop=sandbox-1").await?;
    let mut line = orders.as_array().and_then(|a| a.first().cloned()).ok_or_else(|| anyhow::anyhow!("no orders"))?;
    let no = 1_029_999_999u64;
    let paid = (chrono::Utc::now() + chrono::Duration::hours(8)).format("%Y-%m-%d %H:%M:%S").to_string();
    for (k, v) in [
        ("order_no", json!(no)),
        ("pack_no", json!(829_999_999u64)),
        ("status", json!(2)),
        ("claim_status", json!(0)),
        ("order_date", json!(paid)),
        ("payment_date", json!(paid)),
        ("est_ship_date", Value::Null),
        ("hold", json!(true)),
    ] {
        line[k] = v;
    }
    sandbox.put_json("/_sandbox/orders", &json!([line])).await?;
    let date = (chrono::Utc::now() + chrono::Duration::hours(9) + chrono::Duration::days(2)).date_naive().to_string();
    let cmd = json!({"schema_version": 1, "command_id": "fenced-1", "shop_id": "shop1", "action": "set_ship_date",
                     "order_no": no, "ship_date": date});
    let js = dep.nats().await?;
    js.publish(format!("{}.qoo10.commands.shop1", dep.prefix), serde_json::to_vec(&cmd)?.into()).await?.await?;
    wait_until("the command applied by the new holder", Duration::from_secs(60), || async {
        Ok(sandbox
            .get_json("/_sandbox/orders?shop=sandbox-1")
            .await?
            .as_array()
            .into_iter()
            .flatten()
            .any(|o| o["order_no"] == json!(no) && o["status"] == json!(3)))
    })
    .await?;
    wait_until("three polls by the new holder after the resume", Duration::from_secs(60), || async {
        let after = requests(&sandbox).await?;
        let polls = after
            .iter()
            .filter(|r| r.1 > resumed_ms && new_keys.contains(&r.0) && r.2.ends_with("GetShippingInfo_v3"))
            .count();
        Ok(polls >= 3)
    })
    .await?;
    // After the resume, every call is the new holder's: its key, and no new certification.
    let others: Vec<_> =
        requests(&sandbox).await?.into_iter().filter(|r| r.1 > resumed_ms && !new_keys.contains(&r.0)).collect();
    assert_eq!(others, Vec::new(), "calls after the resume by another than the new holder");
    assert_eq!(old.metric("fetcher_published_total").await?, published, "nothing published after the pause");
    Ok(())
}

/// What both compare-and-sets run on: this deployment's streams on the shared server.
async fn streams(dep: &Deployment) -> anyhow::Result<(async_nats::jetstream::Context, schemas::subjects::Namespace)> {
    let js = dep.nats().await?;
    let cfg = schemas::config::NatsConfig { subject_prefix: dep.prefix.clone(), ..Default::default() };
    runtime::nats::ensure_streams(&js, &cfg).await?;
    Ok((js, schemas::subjects::Namespace::new(&dep.prefix)))
}

#[tokio::test(flavor = "multi_thread")]
async fn two_instances_claiming_one_lease_at_once_end_with_one_holder() -> anyhow::Result<()> {
    let dep = Deployment::new("").await?;
    let (js, ns) = streams(&dep).await?;
    for round in 0..5 {
        let (a, b) = (
            runtime::lease::Leases::start(js.clone(), ns.clone(), "test").await?,
            runtime::lease::Leases::start(js.clone(), ns.clone(), "test").await?,
        );
        let name = format!("race-{round}");
        let (got_a, got_b) = tokio::join!(a.acquire(&name), b.acquire(&name));
        assert!(got_a? ^ got_b?, "round {round}: exactly one claim wins");
        assert!(a.holds(&name) ^ b.holds(&name), "round {round}: exactly one holds");
        let winner = if a.holds(&name) { &a } else { &b };
        let loser = if a.holds(&name) { &b } else { &a };
        assert!(!loser.acquire(&name).await?, "a live holder's lease is not taken");
        winner.release(&name).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !loser.acquire(&name).await? {
            anyhow::ensure!(Instant::now() < deadline, "round {round}: a released lease is taken");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(loser.holds(&name) && !winner.holds(&name));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_command_record_written_over_a_stale_sequence_is_raced() -> anyhow::Result<()> {
    use fetcher::writeback::record::{self, Record, RecordError};
    let dep = Deployment::new("").await?;
    let (js, ns) = streams(&dep).await?;
    let sink = fetcher::poll::Sink::new(js, ns);
    let command: schemas::command::Command = serde_json::from_value(json!({
        "schema_version": 1, "command_id": "raced-1", "shop_id": "shop1", "action": "set_ship_date",
        "order_no": 1, "ship_date": "2030-01-02"}))?;
    let intent = Record { command, requested_at: chrono::Utc::now(), sending: true, result: None };
    let first = record::save(&sink, "shop1", &intent, 0).await?;
    // A second writer that read the record before the first wrote it.
    match record::save(&sink, "shop1", &intent, 0).await {
        Err(RecordError::Raced(id)) => assert_eq!(id, "raced-1"),
        other => anyhow::bail!("a stale write must be raced: {other:?}"),
    }
    let stored = record::load(&sink, "shop1", "raced-1").await?;
    assert_eq!(stored.seq, first, "the first write stands");
    assert!(record::save(&sink, "shop1", &intent, first).await? > first, "a write naming it succeeds");
    Ok(())
}
