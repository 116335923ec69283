//! The sink's IO around the engine: its consumers, the lookups each engine step needs, and the
//! commit of each plan in the documented order: alerts (published, then stored) and
//! expectations before rows, acknowledgements last, and the engine's state changed only after
//! all of that is durable.
//!
//! - [`orders`]: batches of `orders.<shop>`;
//! - [`side`]: the low-volume consumers (poll summaries, OMS edits, the fetcher's alerts) and
//!   the time-dependent sweep;
//! - [`commit`]: plans made durable, dead letters, retries while a batch is held.

mod commit;
mod orders;
mod side;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind, consumer::PullConsumer};
use runtime::nats::{consumer_drained, consumer_idle, durable_on, fetch_batch};
use runtime::telemetry::{CONSUMER_PENDING, Metrics};
use schemas::alert::AlertKind;
use schemas::config::PipelineConfig;
use schemas::edit::OmsEdit;
use schemas::poll::PollSummary;
use schemas::subjects::{CONSUMER_SINK, Namespace, Stream};

pub use commit::at_start;

use crate::alerts::Thresholds;
use crate::engine::{Engine, Expectations};
use crate::keys::ExpectationKey;
use crate::store::Store;
use crate::webhook::Webhook;

/// How long a backlog on ORDERS may hold back the sink's other consumers: each empty fetch
/// costs a round trip that nats-server 2.9 holds for its expiry (about 50 ms); polling all three
/// after every full batch had taken 155 ms of a 345 ms cycle.
const SIDE_INTERVAL: Duration = Duration::from_secs(1);

/// The sink's durable consumers.
#[derive(Debug)]
pub struct Consumers {
    orders: PullConsumer,
    /// Poll summaries: a poll's are held unacknowledged until its closing one arrives, so
    /// `ack_wait` covers a whole poll.
    polls: PullConsumer,
    edits: PullConsumer,
    /// Alerts other services raise, one consumer per kind.
    external: Vec<PullConsumer>,
}

/// What the sink did, for the log line at the end.
#[derive(Debug, Default)]
struct Stats {
    rows_written: u64,
    dead_letters: u64,
    alerts_opened: u64,
    alerts_resolved: u64,
}

/// The engine and everything it talks to.
#[derive(Debug)]
pub struct Consumer {
    engine: Engine,
    js: jetstream::Context,
    ns: Namespace,
    store: Store,
    metrics: std::sync::Arc<Metrics>,
    webhook: Option<Webhook>,
    /// Summaries of polls not yet complete, with their messages (acknowledged once evaluated).
    polls: HashMap<String, (Vec<jetstream::Message>, Vec<PollSummary>)>,
    stats: Stats,
}

/// The durable consumer of each alert kind raised by another service.
fn external_durable(kind: AlertKind) -> String {
    match kind {
        // The name this consumer had before it had company.
        AlertKind::CredentialsInvalid => "sink-alerts".into(),
        other => format!("sink-alerts-{}", other.as_str().replace('_', "-")),
    }
}

impl Consumer {
    /// The consumers, then the engine's state read from ClickHouse. `None` when the service was
    /// asked to stop meanwhile.
    pub async fn start(
        config: &PipelineConfig,
        js: jetstream::Context,
        store: Store,
        metrics: std::sync::Arc<Metrics>,
    ) -> anyhow::Result<Option<(Consumer, Consumers)>> {
        let ns = Namespace::from_config(&config.nats);
        let minute = Duration::from_secs(60);
        let orders = durable_on(&js, &ns, Stream::Orders, CONSUMER_SINK, None, minute).await?;
        let mut external = Vec::new();
        for kind in AlertKind::ALL.into_iter().filter(|k| k.from_fetcher()) {
            let filter = Some(ns.alerts(kind.as_str(), "*"));
            external.push(durable_on(&js, &ns, Stream::Alerts, &external_durable(kind), filter, minute).await?);
        }
        let polls = durable_on(&js, &ns, Stream::Polls, "sink-polls", None, Duration::from_secs(600)).await?;
        let edits = durable_on(&js, &ns, Stream::OmsEdits, "sink-edits", None, minute).await?;
        let Some(open) = at_start("read open alerts", || store.load_open_alerts()).await? else { return Ok(None) };
        let Some(pending) = at_start("read expectations", || store.pending_expectations()).await? else {
            return Ok(None);
        };
        let Some(known) = at_start("read stored lines", || store.load_known()).await? else { return Ok(None) };
        let expectations: Expectations = pending
            .into_iter()
            .filter_map(|r| {
                let edit = serde_json::from_str::<OmsEdit>(&r.edit).ok()?;
                Some((ExpectationKey { shop: r.shop_id.clone(), edit_key: r.edit_key.clone() }, (edit, r.version)))
            })
            .collect();
        let engine = Engine::new(config.status_map.clone(), thresholds(config), open, expectations, known);
        tracing::info!(database = %config.clickhouse.database, open_alerts = engine.open_alerts().len(), "sink started");
        let webhook = config.alerts.webhook().cloned().map(|url| Webhook::start(url, 10_000, metrics.clone()));
        let consumer =
            Consumer { engine, js, ns, store, metrics, webhook, polls: HashMap::new(), stats: Stats::default() };
        Ok(Some((consumer, Consumers { orders, polls, edits, external })))
    }

    /// Works until stopped, or (`until_idle`) until nothing is pending and all is durable.
    pub async fn run(mut self, mut c: Consumers, config: &PipelineConfig, until_idle: bool) -> anyhow::Result<()> {
        let shutdown = runtime::stopped();
        tokio::pin!(shutdown);
        let sweep_every = config.alerts.sweep_interval;
        let (mut last_sweep, mut last_side) = (Instant::now() - sweep_every, Instant::now() - SIDE_INTERVAL);
        while !runtime::shutting_down() {
            if last_sweep.elapsed() >= sweep_every {
                if let Err(e) = self.sweep().await {
                    if !runtime::shutting_down() {
                        return Err(e);
                    }
                    break;
                }
                last_sweep = Instant::now();
            }
            // One fetch waits up to flush_interval: a batch is written at least that often.
            let batch = tokio::select! {
                b = fetch_batch(&c.orders, config.sink.batch_size, config.sink.flush_interval) => b,
                _ = &mut shutdown => break,
            };
            let full = batch.len() >= config.sink.batch_size;
            if !batch.is_empty()
                && let Err(e) = self.orders(batch).await
            {
                if runtime::shutting_down() {
                    tracing::warn!(error = %format!("{e:#}"), "stopped during a ClickHouse failure; JetStream will redeliver the batch");
                    break;
                }
                return Err(e);
            }
            if full && last_side.elapsed() < SIDE_INTERVAL {
                continue;
            }
            last_side = Instant::now();
            if self.side(&mut c).await? == 0 && until_idle && all_idle(&mut c).await? {
                self.finish_until_idle().await?;
                break;
            }
        }
        self.stop().await;
        Ok(())
    }

    /// The lag gauge and the low-volume consumers; returns how many messages they took.
    async fn side(&mut self, c: &mut Consumers) -> anyhow::Result<usize> {
        if let Ok(info) = c.orders.info().await {
            self.metrics.set(CONSUMER_PENDING, &[("consumer", "sink")], info.num_pending as f64);
        }
        let mut taken = 0;
        for consumer in &c.external {
            taken += self.record_external(consumer).await?;
        }
        taken += self.record_polls(&c.polls).await?;
        taken += self.record_edits(&c.edits).await?;
        Ok(taken)
    }

    /// `--until-idle` found nothing left: polls still incomplete will never complete in this run
    /// (their fetch failed or is still going); they are handed back to JetStream for the next
    /// run, which may see their end or a newer poll that abandons them.
    async fn finish_until_idle(&mut self) -> anyhow::Result<()> {
        for (_, (msgs, _)) in self.polls.drain() {
            for m in msgs {
                let _ = m.ack_with(AckKind::Nak(None)).await;
            }
        }
        self.sweep().await
    }

    async fn stop(mut self) {
        if let Some(w) = self.webhook.take() {
            w.drain(Duration::from_secs(10)).await;
        }
        let s = &self.stats;
        tracing::info!(
            rows_written = s.rows_written,
            dead_letters = s.dead_letters,
            alerts_opened = s.alerts_opened,
            alerts_resolved = s.alerts_resolved,
            "sink stopped"
        );
    }
}

async fn all_idle(c: &mut Consumers) -> anyhow::Result<bool> {
    for consumer in c.external.iter_mut().chain([&mut c.edits, &mut c.orders]) {
        if !consumer_idle(consumer).await? {
            return Ok(false);
        }
    }
    Ok(consumer_drained(&mut c.polls).await?)
}

/// The alert rules' thresholds, from `[alerts]`.
fn thresholds(config: &PipelineConfig) -> Thresholds {
    let a = &config.alerts;
    Thresholds {
        ship_date_missing_after_business_days: a.ship_date_missing_after_business_days,
        overdue_grace_business_days: a.overdue_grace_business_days,
        calendar: schemas::calendar::BusinessDays { closed: a.holidays.clone() },
    }
}
