//! The fault suite: one sandbox workload (two polls of three shops, the sandbox clock moved
//! between them so orders are paid, dated, shipped and cancelled), run once cleanly and once
//! under each fault. The final state must be identical: `orders FINAL`, `order_versions FINAL`,
//! `alerts FINAL` and the messages on `alerts.>`; nothing lost, nothing doubled, no alert opened
//! twice.
//!
//! Every run has its own nats-server (file storage) so that it can be killed and restarted, or a
//! three-node cluster with three replicas per stream. ClickHouse is the shared server, except
//! in the outage fault: that run has a ClickHouse server of its own, stopped (SIGTERM) for 10 s
//! and started again on its data, since stopping the shared server would fail the other tests
//! running beside this one.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use e2e::{ClickHouseNode, Deployment, NatsNode, Sandbox};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    KillNormalizer,
    KillSink,
    RestartNats,
    ClickHouseOutage,
    SandboxFaults,
    RestartBetweenPolls,
    ClusterNodeKilled,
}

/// What a run leaves behind, without what legitimately differs between runs (fetch times and
/// the versions, alert ids and stream sequences derived from them).
#[derive(Debug, PartialEq)]
struct Snapshot {
    orders: Vec<Vec<String>>,
    versions: Vec<Vec<String>>,
    alerts: Vec<Vec<String>>,
    /// (kind, shop, order, state) → messages on `alerts.>`.
    alert_messages: BTreeMap<String, usize>,
}

/// The sandbox's "now", the same for every run of this process.
fn now() -> &'static str {
    static NOW: OnceLock<String> = OnceLock::new();
    NOW.get_or_init(|| (chrono::Utc::now() + chrono::Duration::hours(9)).format("%Y-%m-%d %H:00:00").to_string())
}

/// The columns of `orders` that do not depend on when a row was fetched.
fn stable_columns() -> String {
    schemas::sql::ORDER_COLUMNS
        .lines()
        .filter_map(|c| c.split_whitespace().next())
        .filter(|c| !["version", "fetched_at", "raw_seq"].contains(c))
        .collect::<Vec<_>>()
        .join(", ")
}

async fn stream_len(dep: &Deployment, base: &str) -> u64 {
    let Ok(js) = dep.nats().await else { return 0 };
    let name = schemas::subjects::Namespace::new(&dep.prefix).stream_named(base);
    match js.get_stream(&name).await {
        Ok(mut s) => s.info().await.map(|i| i.state.messages).unwrap_or(0),
        Err(_) => 0,
    }
}

async fn stored_versions(dep: &Deployment) -> u64 {
    dep.count("SELECT count() FROM order_versions").await
}

/// Waits until `measure` reaches `from`, then checks it is still below `to`: the fault lands in
/// the middle of the stream, not before it nor after it.
async fn wait_mid_stream<F, Fut>(what: &str, from: u64, to: u64, mut measure: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = u64>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n = measure().await;
        if n >= from {
            anyhow::ensure!(n < to, "{what}: {n} of {to} already done: the fault would not land mid-stream");
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "{what}: stuck at {n} (waiting for {from})");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn run(fault: Fault) -> anyhow::Result<Snapshot> {
    let mut nodes = if fault == Fault::ClusterNodeKilled {
        NatsNode::cluster(3).await?
    } else {
        vec![NatsNode::single(&[]).await?]
    };
    let nats_url = nodes.iter().map(NatsNode::url).collect::<Vec<_>>().join(",");
    // A frozen sandbox clock: every run sees the same world at each poll, however long it took.
    let sandbox =
        Sandbox::start(&["--seed", "7", "--shops", "3", "--orders", "250", "--now", now(), "--frozen-clock"]).await?;
    let mut clickhouse =
        if fault == Fault::ClickHouseOutage { Some(ClickHouseNode::start(None, "").await?) } else { None };
    let mut shops = String::new();
    for n in 1..=3 {
        shops.push_str(&format!(
            "[[shops]]\nid = \"shop{n}\"\nuser_id = \"sandbox-seller-{n}\"\napi_key = \"sandbox-api-key-{n}\"\n\
             password = \"sandbox-password-{n}\"\nstatuses = [1, 2, 3, 4, 5]\nlookback_days = 7\n\n"
        ));
    }
    let mut dep = Deployment::on_nats(
        &nats_url,
        &format!(
            "[qoo10]\nbase_url = \"{}\"\nrequests_per_second = 50\nglobal_requests_per_second = 200\ntimeout = \"2s\"\n\n\
             [sink]\nbatch_size = 40\n\n[normalizer]\nbatch_size = 40\n\n{shops}",
            sandbox.base_url()
        ),
    )
    .await?;
    let replicas = if fault == Fault::ClusterNodeKilled { 3 } else { 1 };
    dep.add_nats_settings(&format!("stream_replicas = {replicas}"))?;
    if let Some(ch) = &clickhouse {
        dep.on_clickhouse(&ch.url())?;
    }

    if fault == Fault::SandboxFaults {
        for f in [
            serde_json::json!({"kind": "status", "code": 503, "count": 3}),
            serde_json::json!({"kind": "timeout", "seconds": 4, "count": 1}),
            serde_json::json!({"kind": "html", "count": 2}),
            serde_json::json!({"kind": "garbage", "count": 2}),
            serde_json::json!({"kind": "rate_limit", "seconds": 1, "count": 2}),
            serde_json::json!({"kind": "expire_key", "method": "ShippingBasic.GetShippingInfo_v3", "count": 1}),
        ] {
            sandbox.post_json("/_sandbox/faults", &f).await?;
        }
    }
    // Poll 1, then the stages work through it.
    dep.run_ok("fetcher", &["--once"])?;
    if fault == Fault::SandboxFaults {
        let left = sandbox.get_json("/_sandbox/faults").await?;
        anyhow::ensure!(left.as_array().is_some_and(|a| a.is_empty()), "faults not all hit: {left}");
    }
    let raw = stream_len(&dep, "QOO10_RAW").await;
    anyhow::ensure!(raw > 500, "the workload is too small to fault mid-stream: {raw} raw rows");
    let mut normalizer = dep.spawn("normalizer", &[])?;
    let mut sink = dep.spawn("sink", &[])?;
    match fault {
        Fault::KillNormalizer => {
            wait_mid_stream("ORDERS", raw / 5, raw, || stream_len(&dep, "ORDERS")).await?;
            normalizer.kill();
            normalizer = dep.spawn("normalizer", &[])?;
        }
        Fault::KillSink => {
            wait_mid_stream("order_versions", raw / 5, raw, || stored_versions(&dep)).await?;
            sink.kill();
            sink = dep.spawn("sink", &[])?;
        }
        Fault::RestartNats => {
            wait_mid_stream("ORDERS", raw / 5, raw, || stream_len(&dep, "ORDERS")).await?;
            nodes[0].kill();
            tokio::time::sleep(Duration::from_secs(1)).await;
            nodes[0].start()?;
        }
        Fault::ClickHouseOutage => {
            wait_mid_stream("order_versions", 1, raw, || stored_versions(&dep)).await?;
            let ch = clickhouse.as_mut().expect("this run's own ClickHouse");
            ch.stop()?;
            tokio::time::sleep(Duration::from_secs(10)).await;
            ch.start_again().await?;
        }
        Fault::ClusterNodeKilled => {
            // Down from mid-stream of poll 1 until after poll 2.
            wait_mid_stream("ORDERS", raw / 5, raw, || stream_len(&dep, "ORDERS")).await?;
            nodes[0].kill();
        }
        Fault::None | Fault::SandboxFaults | Fault::RestartBetweenPolls => {}
    }
    dep.wait_drained(Duration::from_secs(120)).await?;
    normalizer.check_running()?;
    sink.check_running()?;
    if fault == Fault::RestartBetweenPolls {
        anyhow::ensure!(normalizer.terminate()? == Some(0) && sink.terminate()? == Some(0), "clean stops");
        normalizer = dep.spawn("normalizer", &[])?;
        sink = dep.spawn("sink", &[])?;
    }

    // Poll 2, a day and a half later: orders paid, dated, shipped, delivered, cancelled.
    sandbox.post_json("/_sandbox/advance?hours=36", &serde_json::json!({})).await?;
    dep.run_ok("fetcher", &["--once"])?;
    dep.wait_drained(Duration::from_secs(120)).await?;
    if fault == Fault::ClusterNodeKilled {
        nodes[0].start()?;
        dep.wait_drained(Duration::from_secs(60)).await?;
    }
    normalizer.check_running()?;
    sink.check_running()?;
    anyhow::ensure!(normalizer.terminate()? == Some(0), "normalizer stops cleanly");
    anyhow::ensure!(sink.terminate()? == Some(0), "sink stops cleanly");
    // The time-based rules run on a sweep: one last sweep makes every run's end comparable.
    dep.run_ok("sink", &["--until-idle"])?;
    snapshot(&dep).await
}

async fn snapshot(dep: &Deployment) -> anyhow::Result<Snapshot> {
    let cols = stable_columns();
    let orders = dep.query(&format!("SELECT {cols} FROM orders FINAL ORDER BY shop_id, order_no")).await?;
    let versions =
        dep.query(&format!("SELECT {cols} FROM order_versions FINAL ORDER BY shop_id, order_no, version")).await?;
    let alerts = dep
        .query(
            "SELECT kind, shop_id, order_no, pack_no, state, severity, message_ja FROM alerts FINAL \
             ORDER BY kind, shop_id, order_no, pack_no, state, message_ja",
        )
        .await?;
    let mut alert_messages = BTreeMap::new();
    let mut transitions = BTreeMap::new();
    for m in dep.stream_messages("ALERTS").await? {
        let a: serde_json::Value = serde_json::from_slice(&m.payload)?;
        let key = format!("{} {} {} {}", a["kind"], a["shop_id"], a["order_no"], a["state"]);
        *alert_messages.entry(key).or_insert(0) += 1;
        *transitions.entry(format!("{} {}", a["alert_id"], a["state"])).or_insert(0) += 1;
    }
    let doubled: Vec<_> = transitions.iter().filter(|(_, n)| **n > 1).collect();
    anyhow::ensure!(doubled.is_empty(), "alert transitions published twice: {doubled:?}");
    anyhow::ensure!(!orders.is_empty() && !alerts.is_empty(), "the workload produced no orders or no alerts");
    Ok(Snapshot { orders, versions, alerts, alert_messages })
}

/// The clean run, shared by every fault test of this process.
async fn clean() -> &'static Snapshot {
    static CLEAN: tokio::sync::OnceCell<Snapshot> = tokio::sync::OnceCell::const_new();
    CLEAN.get_or_init(|| async { run(Fault::None).await.expect("the clean run") }).await
}

async fn same_as_clean(fault: Fault) -> anyhow::Result<()> {
    let faulted = run(fault).await?;
    let clean = clean().await;
    for (what, a, b) in [
        ("orders FINAL", &clean.orders, &faulted.orders),
        ("order_versions FINAL", &clean.versions, &faulted.versions),
        ("alerts FINAL", &clean.alerts, &faulted.alerts),
    ] {
        let missing: Vec<_> = a.iter().filter(|r| !b.contains(r)).take(3).collect();
        let extra: Vec<_> = b.iter().filter(|r| !a.contains(r)).take(3).collect();
        anyhow::ensure!(
            a == b,
            "{fault:?}: {what} differs ({} rows clean, {} faulted); missing {missing:?}; extra {extra:?}",
            a.len(),
            b.len()
        );
    }
    anyhow::ensure!(
        clean.alert_messages == faulted.alert_messages,
        "{fault:?}: messages on alerts.> differ:\nclean   {:?}\nfaulted {:?}",
        clean.alert_messages,
        faulted.alert_messages
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_clean_run_is_reproducible() -> anyhow::Result<()> {
    // The comparison means something only if two clean runs agree.
    same_as_clean(Fault::None).await
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_of_the_normalizer_mid_stream() -> anyhow::Result<()> {
    same_as_clean(Fault::KillNormalizer).await
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_of_the_sink_mid_stream() -> anyhow::Result<()> {
    same_as_clean(Fault::KillSink).await
}

#[tokio::test(flavor = "multi_thread")]
async fn nats_server_killed_and_restarted_mid_stream() -> anyhow::Result<()> {
    same_as_clean(Fault::RestartNats).await
}

#[tokio::test(flavor = "multi_thread")]
async fn clickhouse_stopped_for_10_s_mid_stream_and_restarted() -> anyhow::Result<()> {
    same_as_clean(Fault::ClickHouseOutage).await
}

#[tokio::test(flavor = "multi_thread")]
async fn qoo10_5xx_timeouts_html_garbage_429_and_an_expired_key() -> anyhow::Result<()> {
    same_as_clean(Fault::SandboxFaults).await
}

#[tokio::test(flavor = "multi_thread")]
async fn every_service_restarted_between_two_polls() -> anyhow::Result<()> {
    same_as_clean(Fault::RestartBetweenPolls).await
}

#[tokio::test(flavor = "multi_thread")]
async fn one_node_of_a_three_node_cluster_killed_mid_stream() -> anyhow::Result<()> {
    same_as_clean(Fault::ClusterNodeKilled).await
}
