//! Many messages into one stream for the price of a few fsyncs: JetStream atomic batch publish
//! (ADR-50, nats-server 2.12+, streams with `allow_atomic`).
//!
//! With `sync_interval: always` a stream stores each plainly published message with an fsync of
//! its own, under the stream's lock: about 4,700 messages/s on this project's machines, whatever
//! the client does. An atomic batch is staged, then written to the stream and made durable with
//! one fsync before its commit is acknowledged (strace: 20,000 messages in batches of 500, 165
//! fsyncs; docs/benchmark.md). Each message stays a message of its own, with its own subject and
//! `Nats-Msg-Id`: consumers see no difference.
//!
//! A batch is all or nothing. The server refuses a whole batch when one of its messages repeats a
//! `Nats-Msg-Id` still in the duplicate window (a redelivery republishing what was published), or
//! when the stream does not allow atomic publish: every refused or unanswered batch is then
//! published again message by message ([`publish_all`]), whose de-duplication is per message. So
//! the outcome is the same as [`publish_all`]'s, one result per message, in order; only the
//! number of fsyncs differs. A plain subscriber sees a refused batch's messages twice (once when
//! staged, once published again): callers publishing what may be a repeat go one by one
//! ([`PublishMode::unless_repeating`]).

use async_nats::jetstream;
use futures::StreamExt;

use crate::nats::{Outgoing, publish_all};

/// How a service publishes a run of messages into one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishMode {
    /// Each message published on its own, acknowledgements pipelined (nats-server before 2.12).
    OneByOne,
    /// Atomic batches of up to [`BATCH_MAX`] messages.
    Atomic,
}

impl PublishMode {
    /// Atomic batches where the server has them (2.12 and later).
    pub fn for_server(client: &async_nats::Client) -> PublishMode {
        if supports_atomic(&client.server_info().version) { PublishMode::Atomic } else { PublishMode::OneByOne }
    }

    /// This mode for a first attempt; one by one when what is published may have been published
    /// before (a redelivered input, a retry). A batch holding a repeat is refused whole and then
    /// published again one by one, and a plain subscriber (core NATS, no de-duplication) would
    /// see its messages once more: going one by one at once spares them that.
    pub fn unless_repeating(self, repeating: bool) -> PublishMode {
        if repeating { PublishMode::OneByOne } else { self }
    }
}

/// nats-server's own limit on one atomic batch (`max_batch_size`, 1,000 by default).
pub const BATCH_MAX: usize = 1_000;

/// Commits awaited at once. The server keeps at most 50 unfinished batches per stream.
const COMMITS_IN_FLIGHT: usize = 8;

/// True for nats-server 2.12 and later (`2.12.0`, `v2.15.1`, `2.12.0-RC.1`).
pub fn supports_atomic(version: &str) -> bool {
    let mut parts = version.trim_start_matches('v').split(['.', '-']).map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (2, 12)
}

type Outcome = Result<jetstream::publish::PublishAck, jetstream::context::PublishError>;
/// A batch and its commit's answer (an error text when the commit could not even be sent).
type Commit = futures::future::BoxFuture<'static, (Vec<Outgoing>, Result<Outcome, String>)>;

/// Publishes `messages` (all of them into one stream) and waits until each is durable: one result
/// per message, in order, as [`publish_all`].
pub async fn publish_many(js: &jetstream::Context, mode: PublishMode, messages: Vec<Outgoing>) -> Vec<Outcome> {
    if mode == PublishMode::OneByOne || messages.len() < 2 {
        return publish_all(js, messages).await;
    }
    let chunks: Vec<Vec<Outgoing>> = messages.chunks(BATCH_MAX).map(<[Outgoing]>::to_vec).collect();
    let mut commits = futures::stream::FuturesOrdered::new();
    let mut results = Vec::new();
    for chunk in chunks {
        if commits.len() >= COMMITS_IN_FLIGHT
            && let Some((chunk, committed)) = commits.next().await
        {
            results.extend(settle(js, chunk, committed).await);
        }
        let sent = send_batch(js, &chunk).await;
        let commit: Commit = Box::pin(async move {
            let committed = match sent {
                Ok(ack) => Ok(ack.await),
                Err(e) => Err(e.to_string()),
            };
            (chunk, committed)
        });
        commits.push_back(commit);
    }
    while let Some((chunk, committed)) = commits.next().await {
        results.extend(settle(js, chunk, committed).await);
    }
    results
}

/// Sends one batch: every message but the last without a reply, the last as the commit.
async fn send_batch(
    js: &jetstream::Context,
    chunk: &[Outgoing],
) -> Result<jetstream::context::PublishAckFuture, jetstream::context::PublishError> {
    // A unique token (the client's inbox names end in one); a batch id may be 64 characters.
    let client = js.client();
    let inbox = client.new_inbox();
    let id = inbox.rsplit('.').next().unwrap_or(&inbox).to_owned();
    let last = chunk.len() - 1;
    for (i, m) in chunk.iter().enumerate() {
        let mut headers = m.headers.clone();
        headers.insert("Nats-Batch-Id", id.as_str());
        headers.insert("Nats-Batch-Sequence", (i + 1).to_string().as_str());
        if i < last {
            if let Err(e) = client.publish_with_headers(m.subject.clone(), headers, m.payload.clone()).await {
                // The commit will find the batch incomplete; it is sent anyway so the server
                // drops the batch at once rather than when it times out.
                tracing::debug!(error = %e, "batch message not sent");
            }
        } else {
            headers.insert("Nats-Batch-Commit", "1");
            return js.publish_with_headers(m.subject.clone(), headers, m.payload.clone()).await;
        }
    }
    unreachable!("a batch has a last message")
}

/// The results of one batch: each message's sequence from the commit's, or, when the batch was
/// refused or its commit not answered, the results of publishing it again message by message.
async fn settle(js: &jetstream::Context, chunk: Vec<Outgoing>, committed: Result<Outcome, String>) -> Vec<Outcome> {
    match committed {
        Ok(Ok(ack)) if ack.sequence >= chunk.len() as u64 => {
            let first = ack.sequence + 1 - chunk.len() as u64;
            (0..chunk.len() as u64)
                .map(|i| Ok(jetstream::publish::PublishAck { sequence: first + i, ..ack.clone() }))
                .collect()
        }
        other => {
            let why = match other {
                Ok(Ok(ack)) => format!("commit at sequence {} for {} messages", ack.sequence, chunk.len()),
                Ok(Err(e)) => e.to_string(),
                Err(e) => e,
            };
            tracing::debug!(reason = %why, messages = chunk.len(), "atomic batch not stored; publishing one by one");
            publish_all(js, chunk).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_go_one_by_one() {
        assert_eq!(PublishMode::Atomic.unless_repeating(false), PublishMode::Atomic);
        assert_eq!(PublishMode::Atomic.unless_repeating(true), PublishMode::OneByOne);
        assert_eq!(PublishMode::OneByOne.unless_repeating(false), PublishMode::OneByOne);
    }

    #[test]
    fn atomic_batches_from_2_12_on() {
        for v in ["2.12.0", "v2.15.1", "2.12.0-RC.1", "3.0.0", "2.14.5"] {
            assert!(supports_atomic(v), "{v}");
        }
        for v in ["2.9.10", "v2.11.9", "2.10.0-beta", "", "garbage", "1.99.0"] {
            assert!(!supports_atomic(v), "{v}");
        }
    }
}
