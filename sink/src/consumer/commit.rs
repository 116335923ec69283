//! Plans made durable, dead letters, and the retries that hold a batch while NATS or ClickHouse
//! is away.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use backon::Retryable;
use runtime::batch::publish_many;
use runtime::health::Health;
use runtime::lease::{Fence, LeaseError};
use runtime::nats::publish_all;
use runtime::telemetry::{DEAD_LETTERS, Metrics};
use schemas::alert::{Alert, AlertState};
use schemas::dlq::Reason;
use schemas::subjects::Stage;

use super::Consumer;
use crate::engine::{Delta, Plan};
use crate::open::needs_texts;
use crate::rows::AlertRow;

impl Consumer {
    /// Makes a plan's alerts and expectations durable: transitions published (JetStream
    /// de-duplicates their ids) then stored, expectation rows stored. Returns the delta to apply
    /// once whatever else the plan's input caused (rows) is durable too.
    pub(super) async fn commit(&mut self, plan: Plan, held: &[&jetstream::Message]) -> anyhow::Result<Delta> {
        let Plan { mut transitions, expectations, delta } = plan;
        if !transitions.is_empty() {
            self.fill_texts(&mut transitions, held).await?;
            // Every transition published (in atomic batches where the server has them). A retry
            // (NATS away) publishes only those not yet acknowledged, one by one: a plain
            // subscriber sees each once.
            let pending = std::cell::RefCell::new((0..transitions.len()).collect::<Vec<usize>>());
            let repeating = std::cell::Cell::new(held.iter().any(|m| runtime::durable::redelivered(m)));
            self.guard
                .run("publish alerts", held, || async {
                    let todo = pending.borrow().clone();
                    let outgoing = todo.iter().map(|i| runtime::nats::alert_message(&self.ns, &transitions[*i]));
                    let mode = self.publish.unless_repeating(repeating.replace(true));
                    let results = publish_many(&self.js, mode, outgoing.collect()).await;
                    let (mut left, mut failed) = (Vec::new(), None);
                    for (i, r) in todo.into_iter().zip(results) {
                        if let Err(e) = r {
                            left.push(i);
                            failed = Some(e);
                        }
                    }
                    *pending.borrow_mut() = left;
                    failed.map_or(Ok(()), |e| Err(async_nats::Error::from(e)))
                })
                .await?;
            runtime::crash::point("sink.alerts_published");
            self.count(&transitions);
            let tapped = self.tap.as_ref().map(|t| t.prepare(&transitions));
            let rows: Vec<AlertRow> = transitions.into_iter().map(AlertRow::from_alert).collect();
            self.guard.run("insert alerts", held, || self.store.write_alerts(&rows)).await?;
            if let (Some(tap), Some(alerts)) = (&self.tap, tapped) {
                tap.hand(alerts);
            }
        }
        self.guard.run("insert expectations", held, || self.store.write_expectations(&expectations)).await?;
        Ok(delta)
    }

    /// Counted per kind and state and added to the metric once each: a first import raises
    /// thousands of alerts per batch, and each metric update takes the registry's lock.
    fn count(&mut self, transitions: &[Alert]) {
        let mut counted: HashMap<(&str, &str), u64> = HashMap::new();
        for alert in transitions {
            match alert.state {
                AlertState::Open => self.stats.alerts_opened += 1,
                AlertState::Resolved => self.stats.alerts_resolved += 1,
            }
            *counted.entry((alert.kind.as_str(), alert.state.as_str())).or_default() += 1;
            tracing::info!(kind = %alert.kind, shop = %alert.shop_id, order_no = alert.order_no, state = ?alert.state, alert_id = %alert.alert_id, "alert");
            if let Some(w) = &self.webhook {
                w.notify(alert);
            }
        }
        for ((kind, state), n) in counted {
            self.guard.metrics.add(crate::metrics::ALERTS, &[("kind", kind), ("state", state)], n as f64);
        }
    }

    /// Resolutions of alerts held without their texts (`crate::open`) get them back: from the
    /// opening transition when it is in the same list, else from `alerts FINAL`.
    async fn fill_texts(&mut self, transitions: &mut [Alert], held: &[&jetstream::Message]) -> anyhow::Result<()> {
        if !transitions.iter().any(needs_texts) {
            return Ok(());
        }
        let mut texts: HashMap<String, Alert> = transitions
            .iter()
            .filter(|a| a.state == AlertState::Open && !needs_texts(a))
            .map(|a| (a.alert_id.clone(), a.clone()))
            .collect();
        let missing: Vec<String> = transitions
            .iter()
            .filter(|a| needs_texts(a) && !texts.contains_key(&a.alert_id))
            .map(|a| a.alert_id.clone())
            .collect();
        if !missing.is_empty() {
            let stored = self.guard.run("read alert texts", held, || self.store.alerts_by_id(&missing)).await?;
            texts.extend(stored.into_iter().filter_map(|r| r.to_alert()).map(|a| (a.alert_id.clone(), a)));
        }
        for a in transitions.iter_mut().filter(|a| needs_texts(a)) {
            match texts.get(&a.alert_id) {
                Some(t) => {
                    a.severity = t.severity;
                    a.message = t.message.clone();
                    a.message_ja = t.message_ja.clone();
                    a.details = t.details.clone();
                    a.opened_at = t.opened_at;
                }
                None => {
                    tracing::warn!(alert_id = %a.alert_id, "open alert not found in ClickHouse; resolved without its texts")
                }
            }
        }
        Ok(())
    }

    /// Sends each message to `dlq.sink.<shop>` with its reason, the publish acknowledgements
    /// pipelined; a message is acknowledged only once JetStream has its dead letter, otherwise
    /// handed back (NAK) so it is neither lost nor processed as valid.
    pub(super) async fn dead_letters(&mut self, dead: &[(&jetstream::Message, &str, &Reason)]) {
        let outgoing = dead.iter().map(|&(msg, shop, reason)| {
            tracing::warn!(shop = %shop, reason = %reason, "dead letter");
            runtime::nats::dead_letter(&self.ns, Stage::Sink, shop, msg, reason)
        });
        let stored = publish_all(&self.js, outgoing).await;
        for (&(msg, _, reason), stored) in dead.iter().zip(stored) {
            if stored.is_err() {
                let _ = msg.ack_with(AckKind::Nak(Some(Duration::from_secs(1)))).await;
                continue;
            }
            self.stats.dead_letters += 1;
            self.guard.metrics.inc(DEAD_LETTERS, &[("stage", "sink"), ("reason", &reason.label())]);
            runtime::nats::ack(msg).await;
        }
    }
}

/// A start-up read: retried while ClickHouse is unreachable, failed at once on an error waiting
/// cannot cure. `None` when the service was asked to stop meanwhile (a clean exit).
pub async fn at_start<T, F, Fut>(op: &str, f: F) -> anyhow::Result<Option<T>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, crate::store::StoreError>>,
{
    let result = f
        .retry(runtime::retry::while_held())
        .sleep(runtime::sleep_unless_stopping)
        .when(|e| e.is_transient() && !runtime::shutting_down())
        .notify(|e, delay| {
            tracing::warn!(op, error = %e, retry_in_ms = delay.as_millis() as u64, "ClickHouse unreachable at start; waiting (not ready)");
        })
        .await;
    match result {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_transient() && runtime::shutting_down() => {
            tracing::info!(op, "stopped before start-up finished");
            Ok(None)
        }
        Err(e) => Err(anyhow::Error::new(e).context(format!("ClickHouse {op}"))),
    }
}

/// Why a held operation did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum HeldError {
    /// This sink lost its lease: it must not write any more; what it held is redelivered to the
    /// sink that took over.
    #[error(transparent)]
    Lost(#[from] LeaseError),
    /// An error waiting cannot cure: what caused it is dead-lettered (alone, if need be).
    #[error("{op}: {error}")]
    Permanent { op: String, error: String },
    /// Asked to stop while retrying: the batch is handed back to JetStream.
    #[error("{op}: {error} (stopping: the batch is handed back to JetStream)")]
    Stopping { op: String, error: String },
}

/// An error a held operation may meet: whether waiting can cure it, and a bounded label for
/// `retries_total{op,cause}`.
pub trait Transient: std::fmt::Display {
    fn transient(&self) -> bool;
    fn cause(&self) -> &'static str;
}

impl Transient for crate::store::StoreError {
    fn transient(&self) -> bool {
        self.is_transient()
    }
    fn cause(&self) -> &'static str {
        self.cause()
    }
}

impl Transient for async_nats::Error {
    fn transient(&self) -> bool {
        true
    }
    fn cause(&self) -> &'static str {
        "nats"
    }
}

/// How often messages held by a long operation (a slow insert, an outage) are told "in
/// progress": well inside the consumers' one-minute `ack_wait`.
const PROGRESS_EVERY: Duration = Duration::from_secs(15);

/// What every durable step of the sink goes through: the lease checked before each attempt,
/// transient failures retried ([`runtime::retry::while_held`]) while the held messages are kept
/// "in progress" (JetStream neither redelivers them nor sends more: memory stays one batch),
/// permanent ones returned at once, and the retries counted by cause.
#[derive(Debug, Clone)]
pub struct Guard {
    pub fence: Fence,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
}

impl Guard {
    pub async fn run<T, E, F, Fut>(&self, op: &str, held: &[&jetstream::Message], mut f: F) -> Result<T, HeldError>
    where
        E: Transient,
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
    {
        enum Attempt<E> {
            Lost(LeaseError),
            Failed(E),
        }
        let attempt = || {
            let fut = f();
            async {
                self.fence.check().map_err(Attempt::Lost)?;
                runtime::nats::with_progress(held, PROGRESS_EVERY, fut).await.map_err(Attempt::Failed)
            }
        };
        let result = attempt
            .retry(runtime::retry::while_held())
            .sleep(runtime::sleep_unless_stopping)
            .when(|e| matches!(e, Attempt::Failed(e) if e.transient()) && !runtime::shutting_down())
            .notify(|e, delay| {
                if let Attempt::Failed(e) = e {
                    tracing::warn!(op, error = %e, retry_in_ms = delay.as_millis() as u64, held = held.len(), "failed; retrying");
                    self.metrics.inc(runtime::telemetry::RETRIES, &[("op", op), ("cause", e.cause())]);
                    self.health.error(format_args!("{op}: {e}"));
                }
            })
            .await;
        match result {
            Ok(v) => Ok(v),
            Err(Attempt::Lost(e)) => Err(HeldError::Lost(e)),
            Err(Attempt::Failed(e)) if e.transient() => {
                // Stopping: hand the batch back now rather than after ack_wait.
                for m in held {
                    let _ = m.ack_with(AckKind::Nak(None)).await;
                }
                Err(HeldError::Stopping { op: op.to_owned(), error: e.to_string() })
            }
            Err(Attempt::Failed(e)) => Err(HeldError::Permanent { op: op.to_owned(), error: e.to_string() }),
        }
    }
}
