//! NATS JetStream: connection, the contract's streams, durable pull consumers.
//!
//! Streams are created at start when missing and left alone when present (an operator may have
//! tuned them). Everything here works on nats-server 2.9 (Debian) and current servers: no
//! key-value API, one `filter_subject` per consumer.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer, stream};
use schemas::config::NatsConfig;
use schemas::subjects::{self, Namespace};

#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error("cannot connect to NATS at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("JetStream stream {stream}: {reason}")]
    Stream { stream: String, reason: String },
    #[error("JetStream consumer {consumer} on {stream}: {reason}")]
    Consumer { stream: String, consumer: String, reason: String },
}

pub async fn connect(cfg: &NatsConfig, name: &str) -> Result<async_nats::Client, NatsError> {
    async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_secs(5))
        .connect(cfg.url.as_str())
        .await
        .map_err(|e| NatsError::Connect { url: cfg.url.clone(), reason: e.to_string() })
}

/// Connects, and makes sure the contract's streams exist: what every service does first.
pub async fn connect_jetstream(
    cfg: &NatsConfig,
    name: &str,
) -> Result<(async_nats::Client, jetstream::Context), NatsError> {
    let client = connect(cfg, name).await?;
    let js = jetstream::new(client.clone());
    ensure_streams(&js, cfg).await?;
    Ok((client, js))
}

/// The streams of the contract and how long they keep messages.
/// (stream, max age, messages kept per subject; -1 = no limit).
const STREAMS: &[(&str, Duration, i64)] = &[
    (subjects::STREAM_RAW, Duration::from_secs(14 * 86_400), -1),
    (subjects::STREAM_ORDERS, Duration::from_secs(30 * 86_400), -1),
    (subjects::STREAM_ALERTS, Duration::from_secs(90 * 86_400), -1),
    (subjects::STREAM_OMS_EDITS, Duration::from_secs(90 * 86_400), -1),
    (subjects::STREAM_DLQ, Duration::from_secs(90 * 86_400), -1),
    (subjects::STREAM_FETCH_STATE, Duration::ZERO, 1),
    (subjects::STREAM_POLLS, Duration::from_secs(14 * 86_400), -1),
];

/// Creates the contract's streams when missing (file storage, limits retention).
pub async fn ensure_streams(js: &jetstream::Context, cfg: &NatsConfig) -> Result<(), NatsError> {
    let ns = Namespace::from_config(cfg);
    for (base, max_age, per_subject) in STREAMS {
        let name = ns.stream(base);
        let config = stream::Config {
            name: name.clone(),
            subjects: vec![ns.stream_subjects(base)],
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            num_replicas: cfg.stream_replicas,
            duplicate_window: cfg.duplicate_window,
            max_age: *max_age,
            max_messages_per_subject: *per_subject,
            ..Default::default()
        };
        js.get_or_create_stream(config)
            .await
            .map_err(|e| NatsError::Stream { stream: name.clone(), reason: e.to_string() })?;
    }
    Ok(())
}

/// A durable pull consumer with explicit acks. `ack_wait` should exceed the longest time a
/// batch can take (a ClickHouse outage is handled by retrying in-process, not by letting acks
/// expire).
pub async fn durable_consumer(
    js: &jetstream::Context,
    stream_name: &str,
    durable: &str,
    filter_subject: String,
    ack_wait: Duration,
) -> Result<consumer::PullConsumer, NatsError> {
    let err = |e: String| NatsError::Consumer { stream: stream_name.into(), consumer: durable.into(), reason: e };
    let stream = js.get_stream(stream_name).await.map_err(|e| err(e.to_string()))?;
    stream
        .get_or_create_consumer(
            durable,
            consumer::pull::Config {
                durable_name: Some(durable.to_owned()),
                filter_subject,
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait,
                max_ack_pending: 20_000,
                deliver_policy: consumer::DeliverPolicy::All,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| err(e.to_string()))
}

/// (messages not yet delivered, messages delivered and awaiting acknowledgement).
async fn consumer_counts(consumer: &mut consumer::PullConsumer) -> Result<(u64, usize), NatsError> {
    let info = consumer.info().await.map_err(|e| NatsError::Consumer {
        stream: String::new(),
        consumer: String::new(),
        reason: e.to_string(),
    })?;
    Ok((info.num_pending, info.num_ack_pending))
}

/// True when the consumer has nothing left to deliver and nothing awaiting acknowledgement.
pub async fn consumer_idle(consumer: &mut consumer::PullConsumer) -> Result<bool, NatsError> {
    Ok(consumer_counts(consumer).await? == (0, 0))
}

/// True when the consumer has nothing left to deliver (messages delivered but held
/// unacknowledged do not count).
pub async fn consumer_drained(consumer: &mut consumer::PullConsumer) -> Result<bool, NatsError> {
    Ok(consumer_counts(consumer).await?.0 == 0)
}

/// Headers with `Nats-Msg-Id` set.
pub fn msg_id_headers(id: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(async_nats::header::NATS_MESSAGE_ID, id);
    h
}

/// Up to `max` messages, waiting at most `expires` for the first ones.
pub async fn fetch_batch(
    consumer: &consumer::PullConsumer,
    max: usize,
    expires: Duration,
) -> Result<Vec<jetstream::Message>, NatsError> {
    use futures::StreamExt;
    let err = |e: String| NatsError::Consumer { stream: String::new(), consumer: String::new(), reason: e };
    let mut batch =
        consumer.fetch().max_messages(max).expires(expires).messages().await.map_err(|e| err(e.to_string()))?;
    let mut out = Vec::with_capacity(max.min(1024));
    while let Some(m) = batch.next().await {
        match m {
            Ok(m) => out.push(m),
            // A fetch that ends early (timeout, heartbeat gap) still returns what arrived.
            Err(e) if out.is_empty() => return Err(err(e.to_string())),
            Err(_) => break,
        }
    }
    Ok(out)
}

/// Publishes `msg` as a dead letter on `dlq.<stage>.<shop>`: its payload and headers verbatim,
/// plus the `Dlq-*` headers saying why. Returns the publish acknowledgement future; the caller
/// acks the original only after it resolves.
pub async fn publish_dead_letter(
    js: &jetstream::Context,
    ns: &Namespace,
    stage: &str,
    shop: &str,
    msg: &jetstream::Message,
    reason: &str,
) -> Result<jetstream::context::PublishAckFuture, NatsError> {
    use schemas::dlq;
    let mut headers = msg.headers.clone().unwrap_or_default();
    let one_line: String = reason.replace(['\n', '\r'], " ").chars().take(1000).collect();
    headers.insert(dlq::STAGE, stage);
    headers.insert(dlq::ERROR, one_line.as_str());
    headers.insert(dlq::TIME, chrono::Utc::now().to_rfc3339().as_str());
    headers.insert(dlq::SUBJECT, msg.subject.as_str());
    if let Ok(info) = msg.info() {
        headers.insert(dlq::STREAM_SEQ, info.stream_sequence.to_string().as_str());
        // Keep the id unique per original message so redelivered dead letters de-duplicate.
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            format!("dlq:{stage}:{}:{}", info.stream, info.stream_sequence).as_str(),
        );
    }
    let subject = ns.dlq(stage, &sanitize_token(shop));
    js.publish_with_headers(subject, headers, msg.payload.clone())
        .await
        .map_err(|e| NatsError::Stream { stream: "DLQ".into(), reason: e.to_string() })
}

/// A short, bounded metric label for a dead-letter reason: the field it names (`field `x`: …`),
/// `oversized`, or the words before the first `:` or space-separated detail.
pub fn dead_letter_reason_kind(reason: &str) -> &str {
    if let Some(rest) = reason.strip_prefix("field `") {
        return rest.split('`').next().unwrap_or("field");
    }
    if reason.starts_with("payload of") {
        return "oversized";
    }
    match reason.split_once(':') {
        Some((head, _)) => head.trim(),
        None => reason.split_whitespace().next().unwrap_or("other"),
    }
}

/// A subject token from untrusted text: anything outside `[a-z0-9_-]` becomes `_`.
pub fn sanitize_token(text: &str) -> String {
    let t: String = text
        .chars()
        .take(64)
        .map(|c| if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_' { c } else { '_' })
        .collect();
    if t.is_empty() { "_".into() } else { t }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letter_reasons_become_bounded_labels() {
        assert_eq!(dead_letter_reason_kind("field `orderQty`: value -1 is not a positive whole quantity"), "orderQty");
        assert_eq!(dead_letter_reason_kind("payload of 300000 bytes exceeds 262144"), "oversized");
        assert_eq!(dead_letter_reason_kind("not a raw envelope: expected value at line 1"), "not a raw envelope");
        assert_eq!(dead_letter_reason_kind("schema_version 2 is not 1"), "schema_version");
        assert_eq!(sanitize_token("shop.A*"), "shop___");
    }
}
