//! NATS JetStream: connection, the contract's streams, durable pull consumers.
//!
//! Streams are created at start when missing and left alone when present (an operator may have
//! tuned them). Everything here works on nats-server 2.9 (Debian) and current servers: no
//! key-value API, one `filter_subject` per consumer.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer, stream};
use schemas::config::NatsConfig;
use schemas::dlq::Reason;
use schemas::subjects::{Namespace, Stage, Stream};

#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error("cannot connect to NATS at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("JetStream stream {stream}: {reason}")]
    Stream { stream: String, reason: String },
    #[error("JetStream consumer {consumer} on {stream}: {reason}")]
    Consumer { stream: String, consumer: String, reason: String },
}

/// Connects with the configured authentication and TLS. Several URLs (a cluster's seeds) are
/// tried in turn, and the client follows the cluster when a server goes away.
pub async fn connect(cfg: &NatsConfig, name: &str) -> Result<async_nats::Client, NatsError> {
    crate::install_crypto_provider();
    let failed = |reason: String| NatsError::Connect { url: cfg.url.clone(), reason };
    let mut options = async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_secs(5))
        // Publishes made while reconnecting wait in this buffer; a full buffer fails them
        // (callers retry) rather than holding unbounded memory.
        .client_capacity(2048);
    if let (Some(user), Some(password)) = (&cfg.user, cfg.password()) {
        options = options.user_and_password(user.clone(), password.expose().to_owned());
    }
    // Replies (JetStream acknowledgements, pulled messages) come to this user's own inboxes, so
    // that deploy/nats.conf lets a user subscribe to its own replies only, not to another's.
    if let Some(user) = &cfg.user {
        options = options.custom_inbox_prefix(inbox_prefix(user));
    }
    if let Some(token) = cfg.token() {
        options = options.token(token.expose().to_owned());
    }
    if let Some(path) = &cfg.credentials_file {
        options = options
            .credentials_file(path)
            .await
            .map_err(|e| failed(format!("nats.credentials_file {}: {e}", path.display())))?;
    }
    if let Some(ca) = &cfg.tls_ca_file {
        options = options.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&cfg.tls_cert_file, &cfg.tls_key_file) {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    let tls = cfg.tls_required
        || cfg.tls_ca_file.is_some()
        || cfg.tls_cert_file.is_some()
        || cfg.urls().iter().any(|u| u.starts_with("tls://"));
    options = options.require_tls(tls);
    let addrs: Vec<async_nats::ServerAddr> =
        cfg.urls().iter().map(|u| u.parse().map_err(|e| failed(format!("{u}: {e}")))).collect::<Result<_, _>>()?;
    connect_waiting(options, &addrs).await.map_err(|e| failed(e.to_string()))
}

/// `_INBOX_<user>`: the inbox prefix of a NATS user (deploy/nats.conf allows each user
/// `_INBOX_<user>.>` only). Characters a subject token cannot hold become `_`.
pub fn inbox_prefix(user: &str) -> String {
    let token: String = user.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
    format!("_INBOX_{token}")
}

/// How long a service starting while NATS is away (restarting, a node failing over) waits for
/// it before giving up.
const CONNECT_WAIT: Duration = Duration::from_secs(10);

/// Connects, waiting out for up to [`CONNECT_WAIT`] what waiting can cure (refused, reset, timed
/// out); a refused login or a TLS mismatch fails at once.
async fn connect_waiting(
    options: async_nats::ConnectOptions,
    addrs: &[async_nats::ServerAddr],
) -> Result<async_nats::Client, async_nats::ConnectError> {
    use async_nats::ConnectErrorKind::{Io, TimedOut};
    let started = std::time::Instant::now();
    let mut pause = Duration::from_millis(200);
    loop {
        match options.clone().connect(addrs).await {
            Err(e) if matches!(e.kind(), Io | TimedOut) && started.elapsed() + pause < CONNECT_WAIT => {
                tracing::warn!(error = %e, retry_in_ms = pause.as_millis() as u64, "NATS not reachable yet; waiting");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            other => return other,
        }
    }
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

/// Creates the contract's streams when missing (file storage, limits retention, each stream's
/// retention from `[nats.retention]`, changed on an existing stream when it differs).
pub async fn ensure_streams(js: &jetstream::Context, cfg: &NatsConfig) -> Result<(), NatsError> {
    let ns = Namespace::from_config(cfg);
    let atomic = crate::batch::supports_atomic(&js.client().server_info().version);
    for stream in Stream::ALL {
        let name = ns.stream(stream);
        let config = stream::Config {
            name: name.clone(),
            subjects: ns.stream_subject_list(stream),
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            num_replicas: cfg.stream_replicas,
            duplicate_window: cfg.duplicate_window,
            max_age: cfg.retention.max_age(stream),
            max_messages_per_subject: stream.per_subject(),
            max_consumers: stream.max_consumers(),
            ..Default::default()
        };
        let failed = |e: String| NatsError::Stream { stream: name.clone(), reason: e };
        let made = jetstream_call(&format!("stream {name}"), || js.get_or_create_stream(config.clone()))
            .await
            .map_err(|e| failed(e.to_string()))?;
        // A changed `[nats.retention]` applies to the stream as it exists.
        let existing = made.cached_info().config.clone();
        let more_consumers = config.max_consumers > 0 && existing.max_consumers < config.max_consumers;
        if existing.max_age != config.max_age || more_consumers {
            tracing::info!(stream = %name, max_age_s = config.max_age.as_secs(), max_consumers = config.max_consumers, "stream settings changed");
            let max_consumers = existing.max_consumers.max(config.max_consumers);
            let updated = stream::Config { max_age: config.max_age, max_consumers, ..existing };
            js.update_stream(updated).await.map_err(|e| failed(e.to_string()))?;
        }
        if stream.batch_published() && atomic {
            allow_atomic(js, &name).await.map_err(failed)?;
        }
    }
    Ok(())
}

/// Turns on `allow_atomic` (nats-server 2.12+) on the stream `name`, through the API's JSON: the
/// field is behind an async-nats feature this build leaves off, and an update written from
/// [`stream::Config`] would drop what the server knows and that type does not.
async fn allow_atomic(js: &jetstream::Context, name: &str) -> Result<(), String> {
    use jetstream::response::Response;
    let call = |api: String, body: serde_json::Value| async move {
        match js.request(api, &body).await.map_err(|e| e.to_string())? {
            Response::Ok::<serde_json::Value>(value) => Ok(value),
            Response::Err { error } => Err(error.to_string()),
        }
    };
    let info = call(format!("STREAM.INFO.{name}"), serde_json::json!({})).await?;
    let mut config = info.get("config").cloned().ok_or("stream info without its config")?;
    if config.get("allow_atomic").and_then(serde_json::Value::as_bool) == Some(true) {
        return Ok(());
    }
    config["allow_atomic"] = serde_json::Value::Bool(true);
    call(format!("STREAM.UPDATE.{name}"), config).await?;
    tracing::info!(stream = name, "atomic batch publish allowed");
    Ok(())
}

/// A durable pull consumer with explicit acks. `ack_wait` should exceed the longest time a
/// batch can take without progress acks; `max_deliver` bounds redeliveries (0: unbounded). A
/// consumer that exists with another `max_deliver` or `ack_wait` (made by an earlier version)
/// is updated to these.
pub async fn durable_consumer(
    js: &jetstream::Context,
    stream_name: &str,
    durable: &str,
    filter_subject: String,
    ack_wait: Duration,
    max_deliver: i64,
) -> Result<consumer::PullConsumer, NatsError> {
    let err = |e: String| NatsError::Consumer { stream: stream_name.into(), consumer: durable.into(), reason: e };
    let stream = jetstream_call(stream_name, || js.get_stream(stream_name)).await.map_err(|e| err(e.to_string()))?;
    let config = consumer::pull::Config {
        durable_name: Some(durable.to_owned()),
        filter_subject,
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait,
        max_deliver: if max_deliver > 0 { max_deliver } else { -1 },
        max_ack_pending: 20_000,
        deliver_policy: consumer::DeliverPolicy::All,
        ..Default::default()
    };
    let mut c = jetstream_call(durable, || stream.get_or_create_consumer(durable, config.clone()))
        .await
        .map_err(|e| err(e.to_string()))?;
    let info = c.info().await.map_err(|e| err(e.to_string()))?;
    if info.config.max_deliver != config.max_deliver || info.config.ack_wait != ack_wait {
        tracing::info!(consumer = durable, max_deliver, "updating the consumer's max_deliver and ack_wait");
        match stream.create_consumer(config).await {
            Ok(updated) => c = updated,
            Err(e) => tracing::warn!(consumer = durable, error = %e, "consumer not updated; it keeps its settings"),
        }
    }
    Ok(c)
}

/// The durable pull consumer `durable` on a stream of this deployment, on the whole stream or
/// on `filter` (one subject: nats-server 2.9 takes no more), without a delivery limit.
pub async fn durable_on(
    js: &jetstream::Context,
    ns: &Namespace,
    stream: Stream,
    durable: &str,
    filter: Option<String>,
    ack_wait: Duration,
) -> Result<consumer::PullConsumer, NatsError> {
    let filter = filter.unwrap_or_else(|| ns.stream_subjects(stream));
    durable_consumer(js, &ns.stream(stream), durable, filter, ack_wait, 0).await
}

/// A JetStream API call at start, retried for about 30 s: a cluster electing a new leader (a
/// node just died) answers with timeouts for a few seconds. A lasting error still fails the
/// start, with its reason.
pub(crate) async fn jetstream_call<T, E, F, Fut>(what: &str, f: F) -> Result<T, E>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    use backon::Retryable;
    f.retry(crate::retry::at_start())
        .sleep(crate::sleep_unless_stopping)
        .when(|_| !crate::shutting_down())
        .notify(|e, d| tracing::warn!(what, error = %e, retry_in_ms = d.as_millis() as u64, "JetStream call failed; retrying"))
        .await
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

/// A message for [`publish_all`] (sent without a header block when `headers` is empty).
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub subject: String,
    pub headers: HeaderMap,
    pub payload: bytes::Bytes,
}

impl Outgoing {
    /// `value` as JSON on `subject`, with `Nats-Msg-Id: msg_id` (JetStream drops a repeat within
    /// the stream's duplicate window). `size_hint`: about the JSON's length, so the buffer is
    /// written without growing several times. Only for types whose serialization cannot fail
    /// (plain structs with string keys): it panics otherwise.
    pub fn json_with_id(subject: String, msg_id: &str, value: &impl serde::Serialize, size_hint: usize) -> Outgoing {
        let mut json = Vec::with_capacity(size_hint);
        serde_json::to_writer(&mut json, value).expect("a plain struct serializes");
        Outgoing { subject, headers: msg_id_headers(msg_id), payload: bytes::Bytes::from(json) }
    }
}

/// The message of an alert transition on `alerts.<kind>.<shop>`: the same transition always gets
/// the same message id, so a repeat (a redelivered batch, a retried poll) is dropped by JetStream.
pub fn alert_message(ns: &Namespace, alert: &schemas::alert::Alert) -> Outgoing {
    // An alert is about 1 KB.
    Outgoing::json_with_id(
        ns.alerts(alert.kind.as_str(), &alert.shop_id),
        &schemas::alert::alert_msg_id(alert),
        alert,
        1536,
    )
}

/// How many publishes [`publish_all`] has waiting for their acknowledgement at once, at most.
///
/// async-nats holds one of a context's permits (5,000 by default) from each publish until its
/// acknowledgement future is awaited or dropped, and a publish waits for a free permit without a
/// timeout. Publishing more than that before awaiting the first acknowledgement therefore waits
/// forever: a fetcher poll with 6,000 changed rows did, and so did a sink batch of 10,000 orders
/// (over 5,000 alerts). A thousand in flight keep the acknowledgements pipelined all the same.
pub const ACKS_IN_FLIGHT: usize = 1_000;

/// Publishes `messages` in order and waits until JetStream has acknowledged each one: one result
/// per message, in order (an error is that message's alone; the others are still published).
/// At most [`ACKS_IN_FLIGHT`] acknowledgements are outstanding at any time, whatever the number
/// of messages.
pub async fn publish_all(
    js: &jetstream::Context,
    messages: impl IntoIterator<Item = Outgoing>,
) -> Vec<Result<jetstream::publish::PublishAck, jetstream::context::PublishError>> {
    use futures::{FutureExt, StreamExt};
    use std::future::IntoFuture;
    type Acked =
        futures::future::BoxFuture<'static, Result<jetstream::publish::PublishAck, jetstream::context::PublishError>>;
    // The outstanding acknowledgements are polled together, not one after the other: each one's
    // timeout starts when it is first polled, so awaiting them in turn while NATS is away took
    // one timeout per message instead of one for all (a normalizer batch waited minutes).
    let mut in_flight: futures::stream::FuturesOrdered<Acked> = futures::stream::FuturesOrdered::new();
    let mut results = Vec::new();
    for m in messages {
        if in_flight.len() >= ACKS_IN_FLIGHT
            && let Some(acked) = in_flight.next().await
        {
            results.push(acked);
        }
        let published = if m.headers.is_empty() {
            js.publish(m.subject, m.payload).await
        } else {
            js.publish_with_headers(m.subject, m.headers, m.payload).await
        };
        match published {
            Ok(ack) => in_flight.push_back(ack.into_future()),
            Err(e) => in_flight.push_back(std::future::ready(Err(e)).boxed()),
        }
    }
    while let Some(acked) = in_flight.next().await {
        results.push(acked);
    }
    results
}

/// Acknowledges `msg` once what it caused is durable. A lost ack (NATS away) only means a
/// redelivery after `ack_wait`, which every write downstream is idempotent to: logged, not fatal.
pub async fn ack(msg: &jetstream::Message) {
    if let Err(e) = msg.ack().await {
        tracing::warn!(subject = %msg.subject, error = %e, "ack failed; JetStream will redeliver");
    }
}

/// Runs `fut`, telling JetStream every `every` that `held` is still being worked on, so a slow
/// operation (an insert that takes longer than `ack_wait`) does not get its messages
/// redelivered to another instance meanwhile.
pub async fn with_progress<T>(
    held: &[&jetstream::Message],
    every: Duration,
    fut: impl std::future::Future<Output = T>,
) -> T {
    tokio::pin!(fut);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            out = &mut fut => return out,
            _ = tick.tick() => {
                for m in held {
                    let _ = m.ack_with(jetstream::AckKind::Progress).await;
                }
            }
        }
    }
}

/// Up to `max` messages, waiting at most `expires` for the first ones. NATS being away (a
/// restart, a failover) is not an error here: it is logged, and the batch is empty after a
/// pause; the client reconnects on its own and the next fetch goes on where JetStream left off.
pub async fn fetch_batch(consumer: &consumer::PullConsumer, max: usize, expires: Duration) -> Vec<jetstream::Message> {
    match try_fetch_batch(consumer, max, expires).await {
        Ok(batch) => batch,
        Err(e) => {
            tracing::warn!(error = %e, "fetch from JetStream failed; retrying in 1 s");
            crate::sleep_unless_stopping(Duration::from_secs(1)).await;
            Vec::new()
        }
    }
}

pub(crate) async fn try_fetch_batch(
    consumer: &consumer::PullConsumer,
    max: usize,
    expires: Duration,
) -> Result<Vec<jetstream::Message>, NatsError> {
    use futures::StreamExt;
    let err = |e: String| NatsError::Consumer { stream: String::new(), consumer: String::new(), reason: e };
    let mut out = Vec::with_capacity(max.min(1024));
    // The server ends a fetch after `expires`; a server that died meanwhile never says so, so
    // the client gives up a little later on its own instead of waiting forever.
    let fetch = async {
        let mut batch =
            consumer.fetch().max_messages(max).expires(expires).messages().await.map_err(|e| err(e.to_string()))?;
        while let Some(m) = batch.next().await {
            match m {
                Ok(m) => out.push(m),
                // A fetch that ends early (timeout, heartbeat gap) still returns what arrived.
                Err(e) if out.is_empty() => return Err(err(e.to_string())),
                Err(_) => break,
            }
        }
        Ok(())
    };
    if let Ok(Err(e)) = tokio::time::timeout(expires + Duration::from_secs(5), fetch).await {
        return Err(e);
    }
    Ok(out)
}

/// `msg` as a dead letter on `dlq.<stage>.<shop>`, for [`publish_all`]: its payload and headers
/// verbatim, plus the `Dlq-*` headers saying why. The caller acks the original only once the
/// dead letter's publish is acknowledged.
pub fn dead_letter(ns: &Namespace, stage: Stage, shop: &str, msg: &jetstream::Message, reason: &Reason) -> Outgoing {
    use schemas::dlq;
    let mut headers = msg.headers.clone().unwrap_or_default();
    let one_line: String = reason.to_string().replace(['\n', '\r'], " ").chars().take(1000).collect();
    headers.insert(dlq::STAGE, stage.as_str());
    headers.insert(dlq::ERROR, one_line.as_str());
    headers.insert(dlq::TIME, chrono::Utc::now().to_rfc3339().as_str());
    headers.insert(dlq::SUBJECT, msg.subject.as_str());
    if let Ok(info) = msg.info() {
        headers.insert(dlq::STREAM_SEQ, info.stream_sequence.to_string().as_str());
        // Keep the id unique per original message so redelivered dead letters de-duplicate.
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            format!("dlq:{}:{}:{}", stage.as_str(), info.stream, info.stream_sequence).as_str(),
        );
    }
    Outgoing { subject: ns.dlq(stage, &sanitize_token(shop)), headers, payload: msg.payload.clone() }
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
    fn untrusted_text_becomes_a_subject_token() {
        assert_eq!(sanitize_token("shop.A*"), "shop___");
    }
}
