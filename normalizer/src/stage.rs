//! The normalizer's IO around [`crate::normalize`]: one batch of `QOO10_RAW` in, each message's
//! outcome (its canonical order, or its dead letter with the reason) published, and only then
//! the originals acknowledged.

use std::time::Duration;

use async_nats::jetstream;
use chrono::{DateTime, Utc};
use runtime::batch::{PublishMode, publish_many};
use runtime::durable::{last_delivery, redelivered};
use runtime::nats::{Outgoing, dead_letter, publish_all};
use runtime::telemetry::{DEAD_LETTERS, Metric, Metrics, REDELIVERIES};
use schemas::dlq::Reason;
use schemas::order::{CanonicalOrder, order_msg_id};
use schemas::raw::RawEnvelope;
use schemas::status::StatusMap;
use schemas::subjects::{Namespace, Stage};
use serde_json::value::RawValue;

use crate::normalize::normalize;

const ORDERS: Metric = Metric::new("normalizer_orders_total", "Canonical orders published, by shop.");

/// Raw payloads larger than this are dead letters (a Qoo10 row is about 1.5 KB).
const MAX_RAW_BYTES: usize = 256 * 1024;

#[derive(Debug, Default)]
pub struct Counters {
    pub orders: u64,
    pub dead_letters: u64,
    /// Orders whose row held keys the normalizer does not know (kept in the raw stream).
    pub with_unknown_keys: u64,
    /// Orders whose figures do not add up (see docs/qoo10-money.md).
    pub with_anomalies: u64,
}

/// What a batch needs besides its messages.
#[derive(Debug)]
pub struct Normalizer<'a> {
    pub js: &'a jetstream::Context,
    pub ns: &'a Namespace,
    pub statuses: &'a StatusMap,
    pub metrics: &'a Metrics,
    pub max_deliver: i64,
    /// How a batch's orders go into `ORDERS` (atomic batches where the server has them).
    pub mode: PublishMode,
}

/// A raw message's canonical order, or the reason it is a dead letter (of the subject's shop).
/// An envelope must name the shop of its subject, and must not come from the future: its fetch
/// time becomes the order's version, and a version ahead of the clock would pin the line.
pub fn canonical(
    msg: &jetstream::Message,
    seq: u64,
    statuses: &StatusMap,
    now: DateTime<Utc>,
) -> Result<CanonicalOrder, Reason> {
    if msg.payload.len() > MAX_RAW_BYTES {
        return Err(Reason::Oversized { bytes: msg.payload.len(), limit: MAX_RAW_BYTES });
    }
    // The row stays borrowed from the payload (no copy): the order is built before the message
    // is let go.
    let env = serde_json::from_slice::<RawEnvelope<&RawValue>>(&msg.payload)
        .map_err(|e| Reason::Unreadable { what: "a raw envelope", detail: e.to_string() })?;
    if env.shop != Namespace::shop_of(&msg.subject) {
        return Err(Reason::WrongShop { named: env.shop.clone(), subject: msg.subject.to_string() });
    }
    if let Some(future) = Reason::if_future("fetched_at", env.fetched_at, now) {
        return Err(future);
    }
    normalize(&env, seq, statuses).map_err(Reason::Field)
}

/// Publishes every message's outcome (order or dead letter), waits for all publish
/// acknowledgements, and only then acknowledges the originals. A message whose outcome could not
/// be published is handed back (NAK, later each time); at its last delivery it is dead-lettered
/// with the error instead, so it never loops.
pub async fn process_batch(stage: &Normalizer<'_>, batch: Vec<jetstream::Message>, counters: &mut Counters) {
    let now = Utc::now();
    let outgoing: Vec<(Outgoing, bool)> = batch.iter().map(|msg| outcome(stage, msg, counters, now)).collect();
    let is_order: Vec<bool> = outgoing.iter().map(|(_, o)| *o).collect();
    let repeating = batch.iter().any(redelivered);
    let outcomes = publish_outcomes(stage, outgoing, &is_order, repeating).await;
    // Orders per shop, counted here and added to the metric once per shop and batch.
    let mut per_shop: std::collections::HashMap<&str, u64> = std::collections::HashMap::new();
    for ((msg, is_order), published) in batch.iter().zip(is_order).zip(outcomes) {
        if let Err(e) = published {
            not_published(stage, msg, &e.to_string(), counters).await;
            continue;
        }
        if is_order {
            counters.orders += 1;
            *per_shop.entry(Namespace::shop_of(&msg.subject)).or_default() += 1;
        } else {
            counters.dead_letters += 1;
        }
        runtime::nats::ack(msg).await;
    }
    for (shop, n) in &per_shop {
        stage.metrics.add(ORDERS, &[("shop", shop)], *n as f64);
    }
}

/// Publishes the orders (into `ORDERS`, together) and the dead letters (into `DLQ`) and returns
/// each outcome's result in the batch's order. Acknowledgements are pipelined either way:
/// publishes lost in a reconnect cost one ack timeout for the batch, not one per message.
async fn publish_outcomes(
    stage: &Normalizer<'_>,
    outgoing: Vec<(Outgoing, bool)>,
    is_order: &[bool],
    repeating: bool,
) -> Vec<Result<jetstream::publish::PublishAck, jetstream::context::PublishError>> {
    let (orders, letters): (Vec<_>, Vec<_>) = outgoing.into_iter().partition(|(_, is_order)| *is_order);
    let mode = stage.mode.unless_repeating(repeating);
    let mut orders = publish_many(stage.js, mode, orders.into_iter().map(|(o, _)| o).collect()).await.into_iter();
    let mut letters = publish_all(stage.js, letters.into_iter().map(|(o, _)| o)).await.into_iter();
    let mut next = |o: bool| if o { orders.next() } else { letters.next() };
    is_order.iter().map(|o| next(*o).expect("one result per message")).collect()
}

/// One message's outcome to publish: its canonical order (true), or its dead letter.
fn outcome(
    stage: &Normalizer<'_>,
    msg: &jetstream::Message,
    counters: &mut Counters,
    now: DateTime<Utc>,
) -> (Outgoing, bool) {
    let info = msg.info().ok();
    let seq = info.as_ref().map_or(0, |i| i.stream_sequence);
    if info.is_some_and(|i| i.delivered > 1) {
        stage.metrics.inc(REDELIVERIES, &[("consumer", "normalizer")]);
    }
    match canonical(msg, seq, stage.statuses, now) {
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
            (Outgoing::json_with_id(stage.ns.orders(&order.shop_id), &id, &order, msg.payload.len() + 256), true)
        }
        Err(reason) => (dead_letter_of(stage, msg, &reason), false),
    }
}

fn dead_letter_of(stage: &Normalizer<'_>, msg: &jetstream::Message, reason: &Reason) -> Outgoing {
    let shop = Namespace::shop_of(&msg.subject);
    let seq = msg.info().map_or(0, |i| i.stream_sequence);
    tracing::warn!(shop = %shop, stream_seq = seq, reason = %reason, "dead letter");
    stage.metrics.inc(DEAD_LETTERS, &[("stage", "normalizer"), ("reason", &reason.label())]);
    dead_letter(stage.ns, Stage::Normalizer, shop, msg, reason)
}

/// The outcome of `msg` was not acknowledged by JetStream: handed back, later each delivery, or
/// at its last delivery dead-lettered with the error.
async fn not_published(stage: &Normalizer<'_>, msg: &jetstream::Message, error: &str, counters: &mut Counters) {
    if last_delivery(msg, stage.max_deliver) {
        let reason =
            Reason::Exhausted { deliveries: stage.max_deliver, last_error: format!("publish failed: {error}") };
        let letter = dead_letter_of(stage, msg, &reason);
        if publish_all(stage.js, [letter]).await.into_iter().all(|r| r.is_ok()) {
            counters.dead_letters += 1;
            runtime::nats::ack(msg).await;
            return;
        }
    }
    let delivered = msg.info().map_or(1, |i| i.delivered).clamp(1, 6) as u32;
    let delay = Duration::from_secs(2u64.pow(delivered - 1)).min(Duration::from_secs(30));
    tracing::warn!(
        error,
        retry_in_s = delay.as_secs(),
        "publish not acknowledged; JetStream will redeliver the message"
    );
    let _ = msg.ack_with(jetstream::AckKind::Nak(Some(delay))).await;
}
