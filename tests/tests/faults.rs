//! The fault suite: one sandbox workload (two polls of three shops, the sandbox clock moved
//! between them so orders are paid, dated, shipped and cancelled), run once cleanly and once
//! under each fault. The final state must be identical: `orders FINAL`, `order_versions FINAL`,
//! `alerts FINAL`, `order_contacts FINAL`, `oms_expectations FINAL`, the dead letters and the
//! messages on `alerts.>`; nothing lost, nothing doubled, no alert opened twice, and (where no
//! process dies between publishing and acknowledging) every alert transition seen once by a
//! plain subscriber.
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
    TwoSinksActiveKilled,
    RollingRestart,
    Poison,
    ClockSteps,
}

impl Fault {
    /// A process killed, or NATS lost, between publishing an alert and acknowledging what raised
    /// it: publishing again is then unavoidable (the stream's duplicate window absorbs it, a
    /// plain subscriber sees it twice). Every other run must publish each transition once.
    fn may_republish(self) -> bool {
        matches!(self, Fault::KillSink | Fault::TwoSinksActiveKilled | Fault::RestartNats | Fault::ClusterNodeKilled)
    }

    /// No insert can be sent again after an unclear answer (a kill, NATS lost before an ack,
    /// ClickHouse gone mid-insert): then not even the physical rows, read without `FINAL`, may
    /// hold a version twice. (Where one can, `ReplacingMergeTree` folds the repeat: `FINAL`.)
    fn inserts_exactly_once(self) -> bool {
        !self.may_republish() && self != Fault::ClickHouseOutage
    }
}

/// What a run leaves behind, without what legitimately differs between runs (fetch times and
/// the versions, alert ids and stream sequences derived from them).
#[derive(Debug, PartialEq)]
struct Snapshot {
    orders: Vec<Vec<String>>,
    versions: Vec<Vec<String>>,
    alerts: Vec<Vec<String>>,
    /// `order_contacts FINAL` without version and fetch time.
    contacts: Vec<Vec<String>>,
    /// `oms_expectations FINAL` without version and time.
    expectations: Vec<Vec<String>>,
    /// (subject, `Dlq-Error`) of every dead letter.
    dead_letters: Vec<(String, String)>,
    /// (kind, shop, order, state) → messages on `alerts.>`.
    alert_messages: BTreeMap<String, usize>,
}

/// The sandbox's "now" (JST), the same for every run of this process: 40 hours ago, on the
/// hour, so that after the 36 hours the workload advances it the world still lies in every
/// stage's past. The fetcher follows the sandbox's clock (its `Date`), so the windows it asks
/// for are the same in every run, whatever the machine's load or the hour of the run.
fn now() -> &'static str {
    static NOW: OnceLock<String> = OnceLock::new();
    NOW.get_or_init(|| (chrono::Utc::now() + chrono::Duration::hours(9 - 40)).format("%Y-%m-%d %H:00:00").to_string())
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

/// The columns of `order_contacts` but its version and fetch time.
fn contact_columns() -> &'static str {
    "shop_id, order_no, pack_no, buyer_name, buyer_kana, buyer_tel, buyer_mobile, buyer_email, receiver_name, \
     receiver_kana, receiver_tel, receiver_mobile, zip_code, address, address1, address2, country, ordered_at"
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

/// What one run starts: its NATS node(s), sandbox, private ClickHouse if any, and deployment.
struct Setup {
    nodes: Vec<NatsNode>,
    sandbox: Sandbox,
    clickhouse: Option<ClickHouseNode>,
    dep: Deployment,
}

async fn setup(fault: Fault) -> anyhow::Result<Setup> {
    let nodes = if fault == Fault::ClusterNodeKilled {
        NatsNode::cluster(3).await?
    } else {
        vec![NatsNode::single(&[]).await?]
    };
    let nats_url = nodes.iter().map(NatsNode::url).collect::<Vec<_>>().join(",");
    // A frozen sandbox clock: every run sees the same world at each poll, however long it took.
    let sandbox =
        Sandbox::start(&["--seed", "7", "--shops", "3", "--orders", "250", "--now", now(), "--frozen-clock"]).await?;
    let clickhouse = if fault == Fault::ClickHouseOutage { Some(ClickHouseNode::start(None, "").await?) } else { None };
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
    Ok(Setup { nodes, sandbox, clickhouse, dep })
}

/// The fetcher's clock in each poll: the real one, or for [`Fault::ClockSteps`] a day ahead
/// in poll 1 and three hours behind in poll 2. Before the fetcher followed Qoo10's clock, the
/// day ahead dead-lettered every row of poll 1 ("from the future") and its windows, recorded as
/// ending a day ahead, left the shipments of that day unasked.
fn fetcher_clock(fault: Fault, poll: usize) -> Option<&'static str> {
    match (fault, poll) {
        (Fault::ClockSteps, 1) => Some("+1d"),
        (Fault::ClockSteps, _) => Some("-3h"),
        _ => None,
    }
}

async fn run(fault: Fault) -> anyhow::Result<Snapshot> {
    let Setup { mut nodes, sandbox, mut clickhouse, dep } = setup(fault).await?;
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
    let tap = dep.alert_tap().await?;
    // Poll 1 and two OMS edits, then the stages work through them.
    dep.run_ok_shifted("fetcher", &["--once"], fetcher_clock(fault, 1))?;
    if fault == Fault::SandboxFaults {
        let left = sandbox.get_json("/_sandbox/faults").await?;
        anyhow::ensure!(left.as_array().is_some_and(|a| a.is_empty()), "faults not all hit: {left}");
    }
    publish_oms_edits(&dep, &sandbox).await?;
    let raw = stream_len(&dep, "QOO10_RAW").await;
    anyhow::ensure!(raw > 500, "the workload is too small to fault mid-stream: {raw} raw rows");
    let mut normalizer = dep.spawn("normalizer", &[])?;
    let mut sink = dep.spawn("sink", &[])?;
    let mut second = if fault == Fault::TwoSinksActiveKilled { Some(dep.spawn("sink", &[])?) } else { None };
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
        Fault::TwoSinksActiveKilled => {
            let other = second.take().expect("the second sink");
            let active = e2e::the_active(&[&sink, &other], Duration::from_secs(30)).await?;
            wait_mid_stream("order_versions", raw / 5, raw, || stored_versions(&dep)).await?;
            let (mut killed, survivor) = if active == 0 { (sink, other) } else { (other, sink) };
            killed.kill();
            sink = survivor;
        }
        Fault::RollingRestart => {
            wait_mid_stream("order_versions", raw / 5, raw, || stored_versions(&dep)).await?;
            let new = dep.spawn("sink", &[])?;
            new.wait_readyz(503, Duration::from_secs(10)).await?;
            anyhow::ensure!(sink.terminate()? == Some(0), "the old sink stops cleanly");
            sink = new;
            sink.wait_readyz(200, Duration::from_secs(30)).await?;
        }
        Fault::Poison => {
            wait_mid_stream("ORDERS", raw / 5, raw, || stream_len(&dep, "ORDERS")).await?;
            publish_poison(&dep).await?;
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
        Fault::None | Fault::SandboxFaults | Fault::RestartBetweenPolls | Fault::ClockSteps => {}
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
    dep.run_ok_shifted("fetcher", &["--once"], fetcher_clock(fault, 2))?;
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
    let snap = snapshot(&dep).await?;
    // As a plain subscriber sees it, not through the stream's duplicate window: on every fault
    // it saw every transition the stream holds and no other; and where nothing can be sent
    // again, each once.
    let key = |a: &serde_json::Value| format!("{} {}", a["alert_id"], a["state"]);
    let tapped: std::collections::BTreeSet<String> = tap.all().iter().map(key).collect();
    let mut stored = std::collections::BTreeSet::new();
    for m in dep.stream_messages("ALERTS").await? {
        stored.insert(key(&serde_json::from_slice(&m.payload)?));
    }
    anyhow::ensure!(!tapped.is_empty(), "{fault:?}: the tap saw no alert");
    anyhow::ensure!(tapped == stored, "{fault:?}: a plain subscriber saw other transitions than the stream holds");
    if !fault.may_republish() {
        anyhow::ensure!(tap.repeated().is_empty(), "{fault:?}: published twice: {:?}", tap.repeated());
    }
    if fault.inserts_exactly_once() {
        physical_doubles(&dep, fault).await?;
    }
    qoo10_truth(&sandbox, &dep, fault).await?;
    Ok(snap)
}

/// No (key, version) twice in the physical rows of `orders`, `order_versions` and `alerts`.
async fn physical_doubles(dep: &Deployment, fault: Fault) -> anyhow::Result<()> {
    for (table, key) in [
        ("orders", "shop_id, order_no, version"),
        ("order_versions", "shop_id, order_no, version"),
        ("alerts", "alert_id, version"),
    ] {
        let n = dep
            .count(&format!(
                "SELECT count() FROM (SELECT {key}, count() AS n FROM {table} GROUP BY {key} HAVING n > 1)"
            ))
            .await;
        anyhow::ensure!(n == 0, "{fault:?}: {n} rows of {table} stored twice (read without FINAL)");
    }
    Ok(())
}

/// Against Qoo10's own truth, not only a clean run (a loss present in both would pass that):
/// every line the sandbox holds with a date within the first import's look-back is in
/// `orders FINAL`, with the status its shipping status and claim map to, and its quantity.
async fn qoo10_truth(sandbox: &Sandbox, dep: &Deployment, fault: Fault) -> anyhow::Result<()> {
    let start = chrono::NaiveDateTime::parse_from_str(now(), "%Y-%m-%d %H:%M:%S")?;
    let from = start.date() - chrono::Duration::days(7);
    let map = schemas::status::StatusMap::default();
    let mut truth = std::collections::BTreeSet::new();
    for n in 1..=3 {
        for o in sandbox.get_json(&format!("/_sandbox/orders?shop=sandbox-{n}")).await?.as_array().into_iter().flatten()
        {
            // A line is asked for by each of its dates (ordered, paid, shipped, delivered, claimed):
            // the first import reaches it if any of them is within the look-back.
            let dates = [
                "order_date",
                "payment_date",
                "shipping_date",
                "delivered_date",
                "claim_request_date",
                "claim_done_date",
            ];
            let latest = dates
                .iter()
                .filter_map(|k| o[*k].as_str())
                .filter_map(|t| chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S").ok())
                .max();
            if latest.is_none_or(|t| t.date() < from) {
                continue;
            }
            let code = |k: &str| o[k].as_u64().and_then(|c| u8::try_from(c).ok());
            let status = map.canonical(code("status"), code("claim_status").unwrap_or(0));
            let status = status.map(|s| s.as_str()).unwrap_or("unmapped");
            truth.insert(format!("shop{n} {} {status} {}", o["order_no"], o["quantity"]));
        }
    }
    let rows = dep.query("SELECT shop_id, toString(order_no), status, toString(quantity) FROM orders FINAL").await?;
    let stored: std::collections::BTreeSet<String> = rows.iter().map(|r| r.join(" ")).collect();
    let missing: Vec<_> = truth.difference(&stored).take(5).collect();
    let extra: Vec<_> = stored.difference(&truth).take(5).collect();
    anyhow::ensure!(truth.len() > 100, "the sandbox's truth is too small to mean much: {}", truth.len());
    anyhow::ensure!(
        missing.is_empty() && extra.is_empty(),
        "{fault:?}: orders FINAL is not what Qoo10 holds ({} lines): missing {missing:?}, extra {extra:?}",
        truth.len()
    );
    Ok(())
}

/// Two OMS edits on the first two orders of shop1, the same in every run: a quantity and an
/// estimated shipping date that Qoo10 does not show, so both stay pending.
async fn publish_oms_edits(dep: &Deployment, sandbox: &Sandbox) -> anyhow::Result<()> {
    let orders = sandbox.get_json("/_sandbox/orders?shop=sandbox-1").await?;
    let mut orders: Vec<&serde_json::Value> = orders.as_array().into_iter().flatten().collect();
    orders.sort_by_key(|o| o["order_no"].as_u64());
    anyhow::ensure!(orders.len() >= 2, "shop1 has orders");
    let made_at =
        chrono::NaiveDateTime::parse_from_str(now(), "%Y-%m-%d %H:%M:%S")?.and_utc() - chrono::Duration::hours(9);
    let ship_date = (made_at + chrono::Duration::days(5)).date_naive().to_string();
    let edits = [
        serde_json::json!({"schema_version": 1, "edit_id": "fault-e1", "shop_id": "shop1", "action": "set_quantity",
            "order_no": orders[0]["order_no"], "quantity": orders[0]["quantity"].as_u64().unwrap_or(1) + 1,
            "made_at": made_at.to_rfc3339()}),
        serde_json::json!({"schema_version": 1, "edit_id": "fault-e2", "shop_id": "shop1", "action": "set_ship_date",
            "order_no": orders[1]["order_no"], "ship_date": ship_date, "made_at": made_at.to_rfc3339()}),
    ];
    let js = dep.nats().await?;
    let subject = schemas::subjects::Namespace::new(&dep.prefix).oms_edits("shop1");
    for e in edits {
        js.publish(subject.clone(), serde_json::to_vec(&e)?.into()).await?.await?;
    }
    Ok(())
}

/// The poison of [`Fault::Poison`] and the stage that must dead-letter it.
const POISON: [(&str, &str); 5] = [
    ("normalizer", "wrong shop"),
    ("normalizer", "from the future"),
    ("normalizer", "not a raw envelope"),
    ("sink", "from the future"),
    ("sink", "not an OMS edit"),
];

/// One message of each kind of poison, mid-stream: real messages of this run distorted (another
/// shop in the envelope, fetched decades ahead), bytes that are not JSON, and a broken edit.
async fn publish_poison(dep: &Deployment) -> anyhow::Result<()> {
    let ns = schemas::subjects::Namespace::new(&dep.prefix);
    let raw: serde_json::Value = serde_json::from_slice(&dep.stream_messages("QOO10_RAW").await?[0].payload)?;
    let order: serde_json::Value = serde_json::from_slice(&dep.stream_messages("ORDERS").await?[0].payload)?;
    let shop = raw["shop"].as_str().unwrap_or("shop1").to_owned();
    // Another shop than the subject's (the first raw message may be of either shop).
    let mut wrong_shop = raw.clone();
    wrong_shop["shop"] = serde_json::json!(if shop == "shop2" { "shop1" } else { "shop2" });
    let mut future_raw = raw.clone();
    future_raw["fetched_at"] = serde_json::json!("2099-01-01T00:00:00Z");
    let mut future_order = order.clone();
    future_order["source"]["fetched_at"] = serde_json::json!("2099-01-01T00:00:00Z");
    future_order["version"] = serde_json::json!(4_070_908_800_000_000u64);
    let js = dep.nats().await?;
    for (subject, payload) in [
        (ns.raw(&shop), serde_json::to_vec(&wrong_shop)?),
        (ns.raw(&shop), serde_json::to_vec(&future_raw)?),
        (ns.raw(&shop), vec![0xff, 0xfe, 0x7b]),
        (ns.orders(order["shop_id"].as_str().unwrap_or("shop1")), serde_json::to_vec(&future_order)?),
        (ns.oms_edits(&shop), b"{\"edit_id\":".to_vec()),
    ] {
        js.publish(subject, payload.into()).await?.await?;
    }
    Ok(())
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
    let contacts = dep
        .query(&format!("SELECT {} FROM order_contacts FINAL ORDER BY shop_id, order_no", contact_columns()))
        .await?;
    let expectations = dep
        .query("SELECT shop_id, edit_key, edit_id, edit, state FROM oms_expectations FINAL ORDER BY shop_id, edit_key")
        .await?;
    let mut dead_letters: Vec<(String, String)> = Vec::new();
    for m in dep.stream_messages("DLQ").await? {
        let error = m.headers.get("Dlq-Error").map(|v| v.as_str().to_owned()).unwrap_or_default();
        dead_letters.push((m.subject.to_string(), error));
    }
    dead_letters.sort();
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
    anyhow::ensure!(!contacts.is_empty() && expectations.len() == 2, "contacts stored, both OMS edits expected");
    Ok(Snapshot { orders, versions, alerts, contacts, expectations, dead_letters, alert_messages })
}

/// The clean run, shared by every fault test of this process.
async fn clean() -> &'static Snapshot {
    static CLEAN: tokio::sync::OnceCell<Snapshot> = tokio::sync::OnceCell::const_new();
    CLEAN.get_or_init(|| async { run(Fault::None).await.expect("the clean run") }).await
}

/// The dead letters of a poisoned run beyond the clean run's: one per poison message, each from
/// the stage and with the reason [`POISON`] names.
fn check_poison(clean: &Snapshot, faulted: &mut Snapshot) -> anyhow::Result<()> {
    let extra: Vec<(String, String)> =
        faulted.dead_letters.iter().filter(|d| !clean.dead_letters.contains(d)).cloned().collect();
    let mut left = extra.clone();
    for (stage, reason) in POISON {
        let found = left
            .iter()
            .position(|(subject, error)| subject.contains(&format!(".dlq.{stage}.")) && error.contains(reason));
        let Some(i) = found else { anyhow::bail!("no {stage} dead letter saying {reason:?} in {extra:?}") };
        left.remove(i);
    }
    anyhow::ensure!(left.is_empty(), "dead letters beyond the poison: {left:?}");
    faulted.dead_letters.retain(|d| clean.dead_letters.contains(d));
    Ok(())
}

async fn same_as_clean(fault: Fault) -> anyhow::Result<()> {
    let mut faulted = run(fault).await?;
    let clean = clean().await;
    if fault == Fault::Poison {
        check_poison(clean, &mut faulted)?;
    }
    for (what, a, b) in [
        ("orders FINAL", &clean.orders, &faulted.orders),
        ("order_versions FINAL", &clean.versions, &faulted.versions),
        ("alerts FINAL", &clean.alerts, &faulted.alerts),
        ("order_contacts FINAL", &clean.contacts, &faulted.contacts),
        ("oms_expectations FINAL", &clean.expectations, &faulted.expectations),
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
        clean.dead_letters == faulted.dead_letters,
        "{fault:?}: dead letters differ:\nclean   {:?}\nfaulted {:?}",
        clean.dead_letters,
        faulted.dead_letters
    );
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

#[tokio::test(flavor = "multi_thread")]
async fn two_sinks_at_once_and_the_active_one_killed_9_mid_stream() -> anyhow::Result<()> {
    same_as_clean(Fault::TwoSinksActiveKilled).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rolling_restart_starts_the_new_sink_before_the_old_one_stops() -> anyhow::Result<()> {
    same_as_clean(Fault::RollingRestart).await
}

#[tokio::test(flavor = "multi_thread")]
async fn one_poison_message_of_each_kind_mid_stream() -> anyhow::Result<()> {
    same_as_clean(Fault::Poison).await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_fetchers_clock_stepped_forward_then_back() -> anyhow::Result<()> {
    same_as_clean(Fault::ClockSteps).await
}
