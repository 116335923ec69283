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

use async_nats::jetstream::{self, AckKind};
use runtime::durable::Durable;
use runtime::lease::Fence;
use runtime::nats::{consumer_drained, consumer_idle};
use runtime::service::Service;
use schemas::alert::AlertKind;
use schemas::config::PipelineConfig;
use schemas::dlq::Reason;
use schemas::edit::OmsEdit;
use schemas::poll::PollSummary;
use schemas::subjects::{CONSUMER_SINK, Namespace, Stream};

pub use commit::{Guard, HeldError, at_start};

use crate::alerts::Thresholds;
use crate::engine::{Engine, Expectations};
use crate::keys::ExpectationKey;
use crate::store::Store;
use crate::webhook::Webhook;

/// How long a backlog on ORDERS may hold back the sink's other consumers: each empty fetch
/// costs a round trip that nats-server 2.9 holds for its expiry (about 50 ms); polling all three
/// after every full batch had taken 155 ms of a 345 ms cycle.
const SIDE_INTERVAL: Duration = Duration::from_secs(1);

/// How long a batch that failed with a permanent error makes the sink take one message at a
/// time: long enough for the batch to be redelivered (after `ack_wait`) and the message that
/// causes the error found and dead-lettered alone.
const ISOLATE_FOR: Duration = Duration::from_secs(150);

/// The sink's durable consumers.
#[derive(Debug)]
pub struct Consumers {
    orders: Durable,
    /// Poll summaries: a poll's are held unacknowledged (told "in progress") until its closing
    /// one arrives.
    polls: Durable,
    edits: Durable,
    /// Write-back results (`qoo10.command_results.>`), into `commands`.
    results: Durable,
    /// Alerts other services raise, one consumer per kind.
    external: Vec<Durable>,
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
    /// How a batch's alert transitions go into `ALERTS` (atomic batches where the server has them).
    publish: runtime::batch::PublishMode,
    ns: Namespace,
    store: Store,
    guard: Guard,
    webhook: Option<Webhook>,
    /// The alert center's feed: every transition and recorded alert, once stored.
    tap: Option<crate::center::Tap>,
    /// Summaries of polls not yet complete, with their messages (acknowledged once evaluated).
    polls: HashMap<String, (Vec<jetstream::Message>, Vec<PollSummary>)>,
    /// Until then, batches of one message (a batch failed with a permanent error).
    isolate_until: Option<Instant>,
    /// When the held poll summaries were last told "in progress".
    polls_progress: Instant,
    /// When old alerts were last checked for settled lines (hourly: `side::settle`).
    settled: Option<Instant>,
    /// The JST day of the last complete sweep of the active lines (`side::sweep`).
    swept_on: Option<chrono::NaiveDate>,
    /// The JST day personal data was last expired (`side::expire_personal`).
    expired_on: Option<chrono::NaiveDate>,
    /// Each shop's `personal_data_days`.
    retention: crate::retention::Policy,
    stats: Stats,
    /// Shops with `writeback = true`: their OMS edits of 発送予定日 become commands.
    writeback: std::collections::HashSet<String>,
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
        service: &Service,
        store: Store,
        (fence, tap): (Fence, Option<crate::center::Tap>),
    ) -> anyhow::Result<Option<(Consumer, Consumers)>> {
        let (js, nats, minute) = (&service.js, &config.nats, Duration::from_secs(60));
        let ns = Namespace::from_config(nats);
        let orders = Durable::open(js, nats, Stream::Orders, CONSUMER_SINK, None, minute).await?;
        orders.watch_lag(service.metrics.clone(), Some(service.health.clone()), "sink");
        let mut external = Vec::new();
        for kind in AlertKind::ALL.into_iter().filter(|k| k.from_fetcher()) {
            let filter = Some(ns.alerts(kind.as_str(), "*"));
            external.push(Durable::open(js, nats, Stream::Alerts, &external_durable(kind), filter, minute).await?);
        }
        let polls = Durable::open(js, nats, Stream::Polls, "sink-polls", None, 10 * minute).await?;
        let edits = Durable::open(js, nats, Stream::OmsEdits, "sink-edits", None, minute).await?;
        let filter = Some(ns.command_results("*"));
        let results = Durable::open(js, nats, Stream::Commands, "sink-command-results", filter, minute).await?;
        let Some(engine) = load_engine(config, &store).await? else { return Ok(None) };
        tracing::info!(database = %config.clickhouse.database, open_alerts = engine.open_alerts().len(), "sink started");
        let metrics = service.metrics.clone();
        let webhook =
            config.alerts.webhook().cloned().map(|url| Webhook::start(url, &config.alerts, 10_000, metrics.clone()));
        let guard = Guard { fence, metrics, health: service.health.clone() };
        let consumer = Consumer {
            engine,
            js: js.clone(),
            publish: runtime::batch::PublishMode::for_server(&service.client),
            ns,
            store,
            guard,
            webhook,
            tap,
            polls: HashMap::new(),
            isolate_until: None,
            polls_progress: Instant::now(),
            settled: None,
            swept_on: None,
            expired_on: None,
            retention: crate::retention::Policy::of(config),
            stats: Stats::default(),
            writeback: config.shops.iter().filter(|s| s.writeback).map(|s| s.id.clone()).collect(),
        };
        Ok(Some((consumer, Consumers { orders, polls, edits, results, external })))
    }

    /// Works until stopped, or (`until_idle`) until nothing is pending and all is durable.
    pub async fn run(mut self, mut c: Consumers, config: &PipelineConfig, until_idle: bool) -> anyhow::Result<()> {
        let shutdown = runtime::stopped();
        tokio::pin!(shutdown);
        let sweep_every = config.alerts.sweep_interval;
        let (mut last_sweep, mut last_side) = (Instant::now() - sweep_every, Instant::now() - SIDE_INTERVAL);
        while !runtime::shutting_down() {
            if last_sweep.elapsed() >= sweep_every {
                match self.sweep().await {
                    Err(e) if runtime::shutting_down() && stopping(&e) => break,
                    other => other?,
                }
                last_sweep = Instant::now();
            }
            let isolating = self.isolate_until.is_some_and(|t| t > Instant::now());
            let max = if isolating { 1 } else { config.sink.batch_size };
            // One fetch waits up to flush_interval: a batch is written at least that often.
            let batch = tokio::select! {
                b = c.orders.fetch(max, config.sink.flush_interval) => b,
                _ = &mut shutdown => break,
            };
            let full = batch.len() >= max;
            if !batch.is_empty() && self.batch(batch, c.orders.max_deliver()).await? {
                break;
            }
            if full && last_side.elapsed() < SIDE_INTERVAL {
                continue;
            }
            last_side = Instant::now();
            if self.side(&mut c).await? == 0 && until_idle && all_idle(&mut c).await? {
                self.finish_until_idle().await?;
                break;
            }
            self.guard.health.committed();
        }
        self.stop().await;
        Ok(())
    }

    /// One batch of ORDERS. A permanent failure of a batch makes the sink take one message at a
    /// time for a while (the batch is redelivered); a single message failing so, or failing at
    /// its last delivery, is dead-lettered with the error. True: stop (asked to, mid-retry).
    async fn batch(&mut self, batch: Vec<jetstream::Message>, max_deliver: i64) -> anyhow::Result<bool> {
        let single = (batch.len() == 1).then(|| batch[0].clone());
        let last = batch.iter().any(|m| runtime::durable::last_delivery(m, max_deliver));
        let error = match self.orders(batch).await {
            Ok(()) => {
                self.guard.health.committed();
                return Ok(false);
            }
            Err(e) => e,
        };
        let (permanent, detail) = match error.downcast_ref::<HeldError>() {
            Some(HeldError::Permanent { .. }) => (true, format!("{error:#}")),
            Some(HeldError::Stopping { .. }) => {
                tracing::warn!(error = %format!("{error:#}"), "stopped during a failure; JetStream will redeliver the batch");
                return Ok(true);
            }
            _ => return Err(error),
        };
        match single {
            Some(msg) if permanent || last => {
                let reason = if last && !permanent {
                    Reason::Exhausted { deliveries: max_deliver, last_error: detail }
                } else {
                    Reason::Permanent(detail)
                };
                self.dead_letters(&[(&msg, Namespace::shop_of(&msg.subject), &reason)]).await;
            }
            _ => {
                tracing::warn!(error = %detail, "a batch failed with an error waiting cannot cure; taking one message at a time to find the one that causes it");
                self.isolate_until = Some(Instant::now() + ISOLATE_FOR);
            }
        }
        Ok(false)
    }

    /// The low-volume consumers; returns how many messages they took.
    async fn side(&mut self, c: &mut Consumers) -> anyhow::Result<usize> {
        let mut taken = 0;
        for consumer in &mut c.external {
            taken += self.record_external(consumer).await?;
        }
        taken += self.record_polls(&mut c.polls).await?;
        taken += self.record_edits(&mut c.edits).await?;
        taken += self.record_results(&mut c.results).await?;
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
    for consumer in c.external.iter_mut().chain([&mut c.edits, &mut c.results, &mut c.orders]) {
        if !consumer_idle(consumer.consumer()).await? {
            return Ok(false);
        }
    }
    Ok(consumer_drained(c.polls.consumer()).await?)
}

/// The error is a stop asked for while retrying.
fn stopping(e: &anyhow::Error) -> bool {
    e.downcast_ref::<HeldError>().is_some_and(|h| matches!(h, HeldError::Stopping { .. }))
}

/// The engine's state, read from ClickHouse (at start, or when this sink takes over).
async fn load_engine(config: &PipelineConfig, store: &Store) -> anyhow::Result<Option<Engine>> {
    let Some(open) = at_start("read open alerts", || store.load_open_alerts()).await? else { return Ok(None) };
    let Some(pending) = at_start("read expectations", || store.pending_expectations()).await? else {
        return Ok(None);
    };
    let since = crate::known::window_start(chrono::Utc::now().timestamp());
    let Some(known) = at_start("read stored lines", || store.load_known(since)).await? else { return Ok(None) };
    let expectations: Expectations = pending
        .into_iter()
        .filter_map(|r| {
            let edit = serde_json::from_str::<OmsEdit>(&r.edit).ok()?;
            Some((ExpectationKey { shop: r.shop_id.clone(), edit_key: r.edit_key.clone() }, (edit, r.version)))
        })
        .collect();
    Ok(Some(Engine::new(config.status_map.clone(), thresholds(config), open, expectations, known)))
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
