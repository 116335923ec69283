//! Atomic batch publish (runtime::batch) against the real server: each message stored once, in
//! order, seen once by a plain subscriber; a batch holding repeats refused whole and published
//! again one by one, its repeats dropped per message. On a server before 2.12 the same calls go
//! one by one and the same outcomes hold.

use std::time::{Duration, Instant};

use e2e::Deployment;
use runtime::batch::{PublishMode, publish_many};
use runtime::nats::Outgoing;
use schemas::config::NatsConfig;
use schemas::subjects::{Namespace, Stream};

fn order(ns: &Namespace, n: u64) -> Outgoing {
    let body = serde_json::json!({"order_no": n, "shop_id": format!("shop{}", n % 7), "text": "x".repeat(1200)});
    Outgoing::json_with_id(ns.orders(&format!("shop{}", n % 7)), &format!("order-{n}"), &body, 1400)
}

/// Everything the tap saw before a marker published now (one publisher: the server delivers its
/// messages in order), markers left out.
async fn seen_by(tap: &e2e::Tap, js: &async_nats::jetstream::Context, ns: &Namespace) -> anyhow::Result<Vec<u64>> {
    let marker = MARKER + tap.all().len() as u64;
    publish_many(js, PublishMode::OneByOne, vec![order(ns, marker)]).await.remove(0)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !tap.all().iter().any(|v| v["order_no"].as_u64() == Some(marker)) {
        anyhow::ensure!(Instant::now() < deadline, "the tap never saw marker {marker}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(tap.all().iter().filter_map(|v| v["order_no"].as_u64()).filter(|n| *n < MARKER).collect())
}

const MARKER: u64 = 1_000_000;

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_is_stored_once_and_its_repeats_are_dropped_per_message() -> anyhow::Result<()> {
    let dep = Deployment::new("").await?;
    let mut cfg = NatsConfig::default();
    (cfg.url, cfg.subject_prefix) = (dep.servers.nats_url.clone(), dep.prefix.clone());
    let (client, js) = runtime::nats::connect_jetstream(&cfg, "batch-test").await?;
    let ns = Namespace::from_config(&cfg);
    let mode = PublishMode::for_server(&client);
    let tap = dep.tap(Stream::Orders).await?;

    // 2,500 messages: two full batches and a part one.
    let first: Vec<Outgoing> = (1..=2_500).map(|n| order(&ns, n)).collect();
    let acks = publish_many(&js, mode, first).await;
    let seqs: Vec<u64> = acks
        .iter()
        .map(|a| a.as_ref().map(|a| a.sequence).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()
        .map_err(anyhow::Error::msg)?;
    assert_eq!(seqs, (1..=2_500).collect::<Vec<u64>>(), "each message its own sequence, in order");
    assert!(acks.iter().all(|a| a.as_ref().is_ok_and(|a| !a.duplicate)));
    let seen = seen_by(&tap, &js, &ns).await?;
    assert_eq!(seen, (1..=2_500).collect::<Vec<u64>>(), "a plain subscriber saw each message once, in order");

    // 100 repeats and 10 new ones in one call: the batch is refused for its repeats and published
    // again one by one; only the new ones are stored.
    let again: Vec<Outgoing> = (2_401..=2_510).map(|n| order(&ns, n)).collect();
    let acks = publish_many(&js, mode, again).await;
    assert_eq!(acks.len(), 110);
    let duplicates = acks.iter().filter(|a| a.as_ref().is_ok_and(|a| a.duplicate)).count();
    assert_eq!(duplicates, 100, "the repeats are reported as duplicates");
    assert!(acks.iter().all(|a| a.is_ok()));
    let seen = seen_by(&tap, &js, &ns).await?;
    let times = if mode == PublishMode::Atomic { 2 } else { 1 };
    assert_eq!(seen.len(), 2_500 + times * 110, "a refused batch is seen when staged and when published again");
    let messages = dep.stream_messages("ORDERS").await?;
    let first = messages.first().map(|m| m.headers.clone()).unwrap_or_default();
    let id = first.get(async_nats::header::NATS_MESSAGE_ID).map(|v| v.to_string());
    assert_eq!(id.as_deref(), Some("order-1"), "a batched message keeps its own id");
    // (Stored beside it: Nats-Batch-Id and Nats-Batch-Sequence, and Nats-Batch-Commit on a batch's last.)
    let stored: Vec<u64> = messages
        .iter()
        .map(|m| serde_json::from_slice::<serde_json::Value>(&m.payload).map(|v| v["order_no"].as_u64().unwrap_or(0)))
        .collect::<Result<Vec<u64>, _>>()?
        .into_iter()
        .filter(|n| *n < MARKER)
        .collect();
    assert_eq!(stored, (1..=2_510).collect::<Vec<u64>>(), "every order stored exactly once");

    // What may be a repeat goes one by one: a plain subscriber sees each repeat once more, not twice.
    let before = seen_by(&tap, &js, &ns).await?.len();
    let repeat: Vec<Outgoing> = (2_501..=2_510).map(|n| order(&ns, n)).collect();
    let acks = publish_many(&js, mode.unless_repeating(true), repeat).await;
    assert!(acks.iter().all(|a| a.as_ref().is_ok_and(|a| a.duplicate)));
    assert_eq!(seen_by(&tap, &js, &ns).await?.len() - before, 10);
    eprintln!("server {}: {mode:?}", client.server_info().version);
    Ok(())
}
