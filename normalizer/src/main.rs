use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use async_nats::jetstream;
use clap::Parser;
use normalizer::normalize::normalize;
use runtime::nats::{Outgoing, consumer_idle, dead_letter, durable_on, fetch_batch, publish_all};
use runtime::service::{Service, Threads};
use runtime::telemetry::{CONSUMER_PENDING, DEAD_LETTERS, Metric, Metrics, REDELIVERIES};
use schemas::dlq::Reason;
use schemas::order::CanonicalOrder;
use schemas::order::order_msg_id;
use schemas::raw::RawEnvelope;
use schemas::status::StatusMap;
use schemas::subjects::{self, Namespace, Stage, Stream};
use serde_json::value::RawValue;

const ORDERS: Metric = Metric::new("normalizer_orders_total", "Canonical orders published, by shop.");

/// Raw payloads larger than this are dead letters (a Qoo10 row is about 1.5 KB).
const MAX_RAW_BYTES: usize = 256 * 1024;
/// How often the lag gauge (`consumer_pending`) is read while working.
const LAG_INTERVAL: Duration = Duration::from_secs(1);

/// Maps raw Qoo10 rows (QOO10_RAW) to canonical orders (ORDERS); what it cannot map goes to
/// dlq.normalizer.<shop> with the reason.
#[derive(Debug, Parser)]
#[command(name = "normalizer", version, about)]
struct Args {
    /// Configuration file (default: $PIPELINE_CONFIG, else ./pipeline.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Print the effective configuration (secrets redacted) and exit.
    #[arg(long)]
    print_config: bool,
    /// Exit 0 once nothing is pending and everything done is durable.
    #[arg(long)]
    until_idle: bool,
}

#[derive(Debug, Default)]
struct Counters {
    orders: u64,
    dead_letters: u64,
    /// Orders whose row held keys the normalizer does not know (kept in the raw stream).
    with_unknown_keys: u64,
    /// Orders whose figures do not add up (see docs/qoo10-money.md).
    with_anomalies: u64,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    runtime::service::main("normalizer", Threads::One, || run(args))
}

async fn run(args: Args) -> anyhow::Result<bool> {
    let Some(config) = runtime::service::config(args.config.as_deref(), args.print_config)? else { return Ok(true) };
    let statuses = config.status_map.clone();
    let service = Service::connect(&config, "normalizer").await?;
    service.serve(&config.normalizer.http_listen, "normalizer.http_listen", None, Default::default()).await?;
    let Service { js, ns, metrics, .. } = service;
    let minute = Duration::from_secs(60);
    let mut consumer = durable_on(&js, &ns, Stream::Raw, subjects::CONSUMER_NORMALIZER, None, minute).await?;
    tracing::info!(until_idle = args.until_idle, destination_status = %config.normalizer.destination_status, "normalizer started");

    let mut counters = Counters::default();
    let shutdown = runtime::stopped();
    tokio::pin!(shutdown);
    // The lag gauge costs a JetStream API round trip: at most once a second, not once a batch.
    let mut lag_read = Instant::now() - LAG_INTERVAL;
    loop {
        let batch = tokio::select! {
            b = fetch_batch(&consumer, config.normalizer.batch_size, Duration::from_millis(500)) => b,
            _ = &mut shutdown => break,
        };
        if batch.is_empty() {
            if args.until_idle && consumer_idle(&mut consumer).await? {
                break;
            }
            continue;
        }
        process_batch(&js, &ns, &statuses, batch, &mut counters, &metrics).await.context("processing a batch")?;
        if lag_read.elapsed() < LAG_INTERVAL {
            continue;
        }
        lag_read = Instant::now();
        if let Ok(info) = consumer.info().await {
            metrics.set(CONSUMER_PENDING, &[("consumer", "normalizer")], info.num_pending as f64);
        }
    }
    tracing::info!(orders = counters.orders, dead_letters = counters.dead_letters, "normalizer stopped");
    Ok(true)
}

/// A raw message's canonical order, or the shop and the reason it is a dead letter.
fn canonical(msg: &jetstream::Message, seq: u64, statuses: &StatusMap) -> Result<CanonicalOrder, (String, Reason)> {
    let subject_shop = || Namespace::shop_of(&msg.subject).to_owned();
    if msg.payload.len() > MAX_RAW_BYTES {
        return Err((subject_shop(), Reason::Oversized { bytes: msg.payload.len(), limit: MAX_RAW_BYTES }));
    }
    // The row stays borrowed from the payload (no copy): the order is built before the message
    // is let go.
    let env = serde_json::from_slice::<RawEnvelope<&RawValue>>(&msg.payload)
        .map_err(|e| (subject_shop(), Reason::Unreadable { what: "a raw envelope", detail: e.to_string() }))?;
    normalize(&env, seq, statuses).map_err(|e| (env.shop.clone(), Reason::Field(e)))
}

/// Publishes every message's outcome (order or dead letter), waits for all publish
/// acknowledgements, and only then acknowledges the originals. A message whose outcome could not
/// be published is not acknowledged; JetStream redelivers it.
async fn process_batch(
    js: &jetstream::Context,
    ns: &Namespace,
    statuses: &StatusMap,
    batch: Vec<jetstream::Message>,
    counters: &mut Counters,
    metrics: &Metrics,
) -> anyhow::Result<()> {
    // Each message's outcome: its canonical order, or its dead letter.
    let mut outgoing: Vec<Outgoing> = Vec::with_capacity(batch.len());
    let mut is_order: Vec<bool> = Vec::with_capacity(batch.len());
    for msg in &batch {
        let info = msg.info().ok();
        let seq = info.as_ref().map_or(0, |i| i.stream_sequence);
        if info.is_some_and(|i| i.delivered > 1) {
            metrics.inc(REDELIVERIES, &[("consumer", "normalizer")]);
        }
        let outcome = canonical(msg, seq, statuses);
        match outcome {
            Ok(order) => {
                if !order.source.unknown_keys.is_empty() {
                    counters.with_unknown_keys += 1;
                    tracing::debug!(shop = %order.shop_id, order_no = order.order_no, keys = ?order.source.unknown_keys, "unknown keys");
                }
                if !order.anomalies.is_empty() {
                    counters.with_anomalies += 1;
                    tracing::warn!(shop = %order.shop_id, order_no = order.order_no, anomalies = ?order.anomalies, "figures do not add up");
                }
                // A canonical order is about the raw row's size.
                let id = order_msg_id(&order.shop_id, order.order_no, order.version, seq);
                outgoing.push(Outgoing::json_with_id(ns.orders(&order.shop_id), &id, &order, msg.payload.len() + 256));
                is_order.push(true);
            }
            Err((shop, reason)) => {
                tracing::warn!(shop = %shop, stream_seq = seq, reason = %reason, "dead letter");
                metrics.inc(DEAD_LETTERS, &[("stage", "normalizer"), ("reason", &reason.label())]);
                outgoing.push(dead_letter(ns, Stage::Normalizer, &shop, msg, &reason));
                is_order.push(false);
            }
        }
    }
    // Published with their acknowledgements pipelined: publishes lost in a reconnect cost one
    // ack timeout for the batch, not one per message.
    let outcomes = publish_all(js, outgoing).await;
    // Orders per shop, counted here and added to the metric once per shop and batch.
    let mut per_shop: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    for ((msg, is_order), outcome) in batch.into_iter().zip(is_order).zip(outcomes) {
        if let Err(e) = outcome {
            tracing::warn!(error = %e, "publish not acknowledged; JetStream will redeliver the message");
            let _ = msg.ack_with(jetstream::AckKind::Nak(Some(Duration::from_secs(1)))).await;
            continue;
        }
        if is_order {
            counters.orders += 1;
            let shop = Namespace::shop_of(&msg.subject);
            match per_shop.get_mut(shop) {
                Some(n) => *n += 1,
                None => {
                    per_shop.insert(shop.to_owned(), 1);
                }
            }
        } else {
            counters.dead_letters += 1;
        }
        runtime::nats::ack(&msg).await;
    }
    for (shop, n) in &per_shop {
        metrics.add(ORDERS, &[("shop", shop)], *n as f64);
    }
    Ok(())
}
