use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream::{self, AckKind};
use backon::{ExponentialBuilder, Retryable};
use clap::Parser;
use runtime::nats::{consumer_idle, durable_consumer, fetch_batch, publish_dead_letter};
use schemas::config::PipelineConfig;
use schemas::order::CanonicalOrder;
use schemas::status::StatusMap;
use schemas::subjects::{self, Namespace};
use sink::rows::{ContactRow, OrderRow, contact_row, merge, order_row};
use sink::store::Store;

/// Writes canonical orders (ORDERS) to ClickHouse in batches; acknowledges a message only after
/// ClickHouse confirmed every insert it caused.
#[derive(Debug, Parser)]
#[command(name = "sink", version, about)]
struct Args {
    /// Configuration file (default: $PIPELINE_CONFIG, else ./pipeline.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Exit 0 once nothing is pending and everything written is durable.
    #[arg(long)]
    until_idle: bool,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    runtime::init_tracing();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    match rt.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sink: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

struct Sink {
    js: jetstream::Context,
    ns: Namespace,
    store: Store,
    statuses: StatusMap,
    rows_written: u64,
    dead_letters: u64,
}

async fn run(args: Args) -> anyhow::Result<()> {
    let config = PipelineConfig::load(args.config.as_deref())?;
    let ns = Namespace::from_config(&config.nats);
    let store = Store::new(&config.clickhouse);
    let applied = store.migrate().await.context("ClickHouse migrations")?;
    let client = runtime::nats::connect(&config.nats, "sink").await?;
    let js = jetstream::new(client);
    runtime::nats::ensure_streams(&js, &config.nats).await?;
    let mut consumer = durable_consumer(
        &js,
        &ns.stream(subjects::STREAM_ORDERS),
        subjects::CONSUMER_SINK,
        ns.stream_subjects(subjects::STREAM_ORDERS),
        Duration::from_secs(60),
    )
    .await?;
    tracing::info!(database = %config.clickhouse.database, migrations_applied = ?applied, until_idle = args.until_idle, "sink started");

    let mut sink = Sink { js, ns, store, statuses: config.normalizer.status_map(), rows_written: 0, dead_letters: 0 };
    let shutdown = runtime::shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        // One fetch waits up to flush_interval: a batch is written at least that often.
        let batch = tokio::select! {
            b = fetch_batch(&consumer, config.sink.batch_size, config.sink.flush_interval) => b?,
            _ = &mut shutdown => break,
        };
        if batch.is_empty() {
            if args.until_idle && consumer_idle(&mut consumer).await? {
                break;
            }
            continue;
        }
        sink.process(batch).await?;
    }
    tracing::info!(rows_written = sink.rows_written, dead_letters = sink.dead_letters, "sink stopped");
    Ok(())
}

impl Sink {
    async fn process(&mut self, batch: Vec<jetstream::Message>) -> anyhow::Result<()> {
        let mut good: Vec<(jetstream::Message, CanonicalOrder)> = Vec::with_capacity(batch.len());
        let mut dead: Vec<(jetstream::Message, String, String)> = Vec::new();
        for msg in batch {
            match serde_json::from_slice::<CanonicalOrder>(&msg.payload) {
                Ok(o) if o.schema_version == schemas::order::ORDER_SCHEMA_VERSION => good.push((msg, o)),
                Ok(o) => {
                    let reason =
                        format!("schema_version {} is not {}", o.schema_version, schemas::order::ORDER_SCHEMA_VERSION);
                    dead.push((msg, o.shop_id, reason));
                }
                Err(e) => {
                    let shop = Namespace::shop_of(&msg.subject).to_owned();
                    dead.push((msg, shop, format!("not a canonical order: {e}")));
                }
            }
        }

        // Rows, merged in stream order with what is stored (or earlier in this batch).
        let keys: Vec<(String, u64)> = good.iter().map(|(_, o)| (o.shop_id.clone(), o.order_no)).collect();
        let mut latest: HashMap<(String, u64), OrderRow> = if keys.is_empty() {
            HashMap::new()
        } else {
            let held: Vec<&jetstream::Message> = good.iter().map(|(m, _)| m).collect();
            retry_forever("read latest orders", &held, || self.store.latest(&keys)).await
        };
        let mut orders: Vec<OrderRow> = Vec::with_capacity(good.len());
        let mut contacts: Vec<ContactRow> = Vec::new();
        let mut written: Vec<jetstream::Message> = Vec::with_capacity(good.len());
        for (msg, o) in good {
            let converted =
                order_row(&o).and_then(|r| Ok((r, o.personal.as_ref().map(|p| contact_row(&o, p)).transpose()?)));
            match converted {
                Ok((row, contact)) => {
                    let key = (o.shop_id.clone(), o.order_no);
                    let merged = merge(latest.get(&key), row, o.source.kind, &self.statuses);
                    if latest.get(&key).is_none_or(|s| s.version <= merged.version) {
                        latest.insert(key, merged.clone());
                    }
                    orders.push(merged);
                    contacts.extend(contact);
                    written.push(msg);
                }
                Err(e) => dead.push((msg, o.shop_id.clone(), e.to_string())),
            }
        }

        if !orders.is_empty() || !contacts.is_empty() {
            let held: Vec<&jetstream::Message> = written.iter().collect();
            retry_forever("insert", &held, || self.store.write(&orders, &contacts)).await;
        }
        for msg in &written {
            msg.ack().await.map_err(|e| anyhow::anyhow!("ack: {e}"))?;
        }
        self.rows_written += orders.len() as u64;

        for (msg, shop, reason) in dead {
            tracing::warn!(shop = %shop, reason = %reason, "dead letter");
            let published =
                match publish_dead_letter(&self.js, &self.ns, subjects::STAGE_SINK, &shop, &msg, &reason).await {
                    Ok(f) => f.await.is_ok(),
                    Err(_) => false,
                };
            if published {
                self.dead_letters += 1;
                msg.ack().await.map_err(|e| anyhow::anyhow!("ack: {e}"))?;
            } else {
                let _ = msg.ack_with(AckKind::Nak(Some(Duration::from_secs(1)))).await;
            }
        }
        Ok(())
    }
}

/// Retries a ClickHouse operation until it succeeds, with exponential backoff (capped at 30 s).
/// Meanwhile the batch's messages are kept unacknowledged and told "in progress", so JetStream
/// neither redelivers them nor sends more: memory stays bounded by one batch during an outage.
async fn retry_forever<T, F, Fut>(op: &str, held: &[&jetstream::Message], f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, sink::store::StoreError>>,
{
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(30))
        .with_jitter()
        .with_max_times(usize::MAX);
    f.retry(backoff)
        .sleep(tokio::time::sleep)
        .notify(|e, delay| {
            tracing::warn!(op, error = %e, retry_in_ms = delay.as_millis() as u64, held = held.len(), "ClickHouse failed; retrying");
            for m in held {
                let m = (*m).clone();
                tokio::spawn(async move {
                    let _ = m.ack_with(AckKind::Progress).await;
                });
            }
        })
        .await
        .expect("retried without limit")
}
