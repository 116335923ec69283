//! The small ways a stage could hang or fail for ever, each against a real server: a lookup too
//! large for one query, a ClickHouse that stops answering, a held batch outliving `ack_wait`.

use std::time::{Duration, Instant};

use e2e::Deployment;
use schemas::config::ClickHouseConfig;
use sink::store::Store;

fn store_of(dep: &Deployment, timeout: Duration) -> Store {
    let cfg = ClickHouseConfig {
        url: dep.servers.clickhouse_url.clone(),
        database: dep.database.clone(),
        timeout,
        ..Default::default()
    };
    Store::new(&cfg)
}

/// An alert id as long as real ones get: a long shop id, a real order number, a version in µs.
fn alert_id(n: u64) -> String {
    format!("ship_date_missing:{SHOP}:{}:1764374400123456", 1_090_000_000 + n)
}

const SHOP: &str = "a-shop-with-a-long-name-2026";

fn alert(n: u64) -> schemas::alert::Alert {
    serde_json::from_value(serde_json::json!({
        "schema_version": 1, "alert_id": alert_id(n), "kind": "ship_date_missing",
        "shop_id": SHOP, "order_no": 1_090_000_000 + n, "pack_no": n, "state": "open", "severity": "warning",
        "message": "a message of a realistic length, about as long as the real ones are", "message_ja": "発送予定日",
        "details": {}, "opened_at": "2026-11-29T00:00:00Z", "updated_at": "2026-11-29T00:00:00Z", "version": 1764374400123456u64
    }))
    .expect("alert")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_texts_of_5000_alerts_are_read_back_in_queries_clickhouse_accepts() -> anyhow::Result<()> {
    let dep = Deployment::new("").await?;
    let store = store_of(&dep, Duration::from_secs(60));
    store.migrate().await?;
    let rows: Vec<_> = (1..=5000).map(|n| sink::rows::AlertRow::from_alert(alert(n))).collect();
    store.write_alerts(&rows).await?;
    // One IN list of 5,000 such ids is about 390 KB of SQL, more than ClickHouse's 256 KB
    // max_query_size: resolving a first import's alerts at once failed on it.
    let ids: Vec<String> = (1..=5000).map(alert_id).collect();
    let back = store.alerts_by_id(&ids).await?;
    assert_eq!(back.len(), 5000);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_clickhouse_that_stops_answering_times_out_and_is_retried() -> anyhow::Result<()> {
    // Accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = silent.local_addr()?;
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = silent.accept().await {
            held.push(conn);
        }
    });
    let cfg = ClickHouseConfig { url: format!("http://{addr}"), timeout: Duration::from_secs(2), ..Default::default() };
    let started = Instant::now();
    let e = Store::new(&cfg).ping().await.expect_err("nothing answers");
    assert!(started.elapsed() < Duration::from_secs(6), "{:?}", started.elapsed());
    assert!(e.is_transient(), "a timeout is waited out: {e}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_held_longer_than_ack_wait_is_not_redelivered() -> anyhow::Result<()> {
    use schemas::subjects::{Namespace, Stream};
    let dep = Deployment::new("").await?;
    let js = dep.nats().await?;
    let cfg = schemas::config::NatsConfig { subject_prefix: dep.prefix.clone(), ..Default::default() };
    runtime::nats::ensure_streams(&js, &cfg).await?;
    let ns = Namespace::new(&dep.prefix);
    let ack_wait = Duration::from_secs(2);
    let consumer = runtime::nats::durable_on(&js, &ns, Stream::Orders, "slow", None, ack_wait).await?;
    js.publish(ns.orders("s"), "{}".into()).await?.await?;
    let batch = runtime::nats::fetch_batch(&consumer, 10, Duration::from_secs(2)).await;
    assert_eq!(batch.len(), 1);
    // An insert taking three times ack_wait, with progress told every half second.
    let held: Vec<&async_nats::jetstream::Message> = batch.iter().collect();
    runtime::nats::with_progress(&held, Duration::from_millis(500), tokio::time::sleep(3 * ack_wait)).await;
    let again = runtime::nats::fetch_batch(&consumer, 10, Duration::from_millis(500)).await;
    assert!(again.is_empty(), "redelivered while held");
    runtime::nats::ack(&batch[0]).await;
    let info = js.get_stream(ns.stream(Stream::Orders)).await?.consumer_info("slow").await?;
    assert_eq!((info.num_redelivered, info.num_ack_pending), (0, 0), "{info:?}");
    Ok(())
}
