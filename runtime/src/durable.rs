//! A stage's durable pull consumer, as every stage uses it: explicit acks, at most
//! `[nats] max_deliver` deliveries of a message, its lag reported while the stage works, and
//! recreated (with a warning) when someone deleted it or its stream, instead of the stage
//! stalling silently.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::PullConsumer};
use schemas::config::NatsConfig;
use schemas::subjects::{Namespace, Stream};

use crate::health::Health;
use crate::nats::{NatsError, durable_consumer, ensure_streams, try_fetch_batch};
use crate::telemetry::{CONSUMER_PENDING, Metrics};

/// How often the lag gauge (and the health's pending count) is refreshed, also while a batch
/// is held.
const LAG_EVERY: Duration = Duration::from_secs(5);
/// How often, while fetches come back empty, the consumer is checked to still exist.
const CHECK_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct Durable {
    js: jetstream::Context,
    nats: NatsConfig,
    stream: String,
    name: String,
    filter: String,
    ack_wait: Duration,
    consumer: PullConsumer,
    /// When the consumer was last found to exist (checked while fetches come back empty: a
    /// deleted stream answers no fetch, it does not fail one).
    checked: tokio::time::Instant,
}

impl Durable {
    /// The consumer `name` on `stream` of this deployment, on the whole stream or on `filter`.
    pub async fn open(
        js: &jetstream::Context,
        nats: &NatsConfig,
        stream: Stream,
        name: &str,
        filter: Option<String>,
        ack_wait: Duration,
    ) -> Result<Durable, NatsError> {
        let ns = Namespace::from_config(nats);
        let filter = filter.unwrap_or_else(|| ns.stream_subjects(stream));
        let stream = ns.stream(stream);
        let consumer = durable_consumer(js, &stream, name, filter.clone(), ack_wait, nats.max_deliver).await?;
        let (js, nats, name) = (js.clone(), nats.clone(), name.to_owned());
        let checked = tokio::time::Instant::now();
        Ok(Durable { js, nats, stream, name, filter, ack_wait, consumer, checked })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn consumer(&mut self) -> &mut PullConsumer {
        &mut self.consumer
    }

    /// The most deliveries a message gets; the stage dead-letters it at the last one.
    pub fn max_deliver(&self) -> i64 {
        self.nats.max_deliver
    }

    /// Up to `max` messages, waiting at most `expires` for the first. NATS being away is not an
    /// error: logged, and the batch is empty after a pause. A consumer or stream that no longer
    /// exists is made again (it starts from the stream's first message: every stage is
    /// idempotent to that).
    pub async fn fetch(&mut self, max: usize, expires: Duration) -> Vec<jetstream::Message> {
        match try_fetch_batch(&self.consumer, max, expires).await {
            Ok(batch) if !batch.is_empty() || self.checked.elapsed() < CHECK_EVERY => return batch,
            Ok(batch) => {
                self.checked = tokio::time::Instant::now();
                if let Err(e) = self.recreate_if_gone().await {
                    tracing::warn!(consumer = %self.name, error = %e, "consumer not checked");
                }
                return batch;
            }
            Err(e) => tracing::warn!(consumer = %self.name, error = %e, "fetch from JetStream failed; retrying in 1 s"),
        }
        if let Err(e) = self.recreate_if_gone().await {
            tracing::warn!(consumer = %self.name, error = %e, "consumer not checked");
        }
        crate::sleep_unless_stopping(Duration::from_secs(1)).await;
        Vec::new()
    }

    async fn recreate_if_gone(&mut self) -> Result<(), NatsError> {
        let exists = match self.js.get_stream(&self.stream).await {
            Ok(stream) => stream.consumer_info(&self.name).await.is_ok(),
            Err(_) => false,
        };
        if exists {
            return Ok(());
        }
        tracing::warn!(stream = %self.stream, consumer = %self.name, "stream or consumer was deleted; creating it again");
        ensure_streams(&self.js, &self.nats).await?;
        self.consumer = durable_consumer(
            &self.js,
            &self.stream,
            &self.name,
            self.filter.clone(),
            self.ack_wait,
            self.nats.max_deliver,
        )
        .await?;
        Ok(())
    }

    /// Reports the consumer's lag every few seconds, whatever the stage is doing: the gauge
    /// `consumer_pending{consumer=label}` and, with `health`, the work pending for a stall.
    pub fn watch_lag(&self, metrics: Arc<Metrics>, health: Option<Arc<Health>>, label: &'static str) {
        let (js, stream, name) = (self.js.clone(), self.stream.clone(), self.name.clone());
        tokio::spawn(async move {
            loop {
                if let Ok(s) = js.get_stream(&stream).await
                    && let Ok(info) = s.consumer_info(&name).await
                {
                    metrics.set(CONSUMER_PENDING, &[("consumer", label)], info.num_pending as f64);
                    if let Some(h) = &health {
                        h.pending(info.num_pending + info.num_ack_pending as u64);
                    }
                }
                tokio::time::sleep(LAG_EVERY).await;
            }
        });
    }
}

/// True when JetStream delivered this message before: what it caused may already be published.
pub fn redelivered(msg: &jetstream::Message) -> bool {
    msg.info().is_ok_and(|i| i.delivered > 1)
}

/// True when this is the message's last delivery: a failure now must dead-letter it, since
/// JetStream will not deliver it again.
pub fn last_delivery(msg: &jetstream::Message, max_deliver: i64) -> bool {
    max_deliver > 0 && msg.info().is_ok_and(|i| i.delivered >= max_deliver)
}
