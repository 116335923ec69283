//! What the fetcher did with each command, durable in NATS before and after it calls Qoo10:
//! `qoo10.state.<shop>.command.<digest of the id>` in the fetch-state stream (one message per
//! subject). Written with the subject's expected last sequence, so that of two writers of the
//! same command one fails instead of both calling.
//!
//! The open `command_rejected` alert of an order and action lives beside it
//! (`….command_alert.<order>.<action>`), so that a later command that is applied resolves it.

use async_nats::jetstream;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::stream::LastRawMessageErrorKind;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use schemas::alert::Alert;
use schemas::command::{Command, CommandResult};
use schemas::subjects::Stream;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::poll::Sink;

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("command record: {0}")]
    Nats(String),
    /// Another writer recorded this command meanwhile.
    #[error("command {0} was recorded by another writer meanwhile")]
    Raced(String),
}

/// One command's record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub command: Command,
    pub requested_at: DateTime<Utc>,
    /// A call may have reached Qoo10 and its outcome is not recorded: read back before anything.
    pub sending: bool,
    /// The last result (`failed` is not final: the command may be sent again).
    pub result: Option<CommandResult>,
}

/// A record as stored, with the sequence a rewrite must expect (0: none stored).
#[derive(Debug, Clone)]
pub struct Stored {
    pub record: Option<Record>,
    pub seq: u64,
}

fn token(command_id: &str) -> String {
    hex::encode(&Sha256::digest(command_id.as_bytes())[..16])
}

fn record_subject(sink: &Sink, shop: &str, command_id: &str) -> String {
    sink.ns.command_record(shop, &token(command_id))
}

fn alert_subject(sink: &Sink, shop: &str, order_no: u64, action: &str) -> String {
    format!("{}_alert.{order_no}.{action}", sink.ns.command_record(shop, "").trim_end_matches('.'))
}

async fn last(sink: &Sink, subject: &str) -> Result<Option<jetstream::message::StreamMessage>, RecordError> {
    let stream =
        sink.js.get_stream(sink.ns.stream(Stream::FetchState)).await.map_err(|e| RecordError::Nats(e.to_string()))?;
    match stream.get_last_raw_message_by_subject(subject).await {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(RecordError::Nats(format!("read {subject}: {e}"))),
    }
}

pub async fn load(sink: &Sink, shop: &str, command_id: &str) -> Result<Stored, RecordError> {
    let Some(m) = last(sink, &record_subject(sink, shop, command_id)).await? else {
        return Ok(Stored { record: None, seq: 0 });
    };
    let record =
        serde_json::from_slice(&m.payload).map_err(|e| RecordError::Nats(format!("unreadable record: {e}")))?;
    Ok(Stored { record: Some(record), seq: m.sequence })
}

/// Writes `record` if the stored one is still the one at `expected`; returns the new sequence.
pub async fn save(sink: &Sink, shop: &str, record: &Record, expected: u64) -> Result<u64, RecordError> {
    let id = &record.command.command_id;
    let payload = Bytes::from(serde_json::to_vec(record).expect("a record serializes"));
    let publish = jetstream::message::PublishMessage::build().payload(payload).expected_last_subject_sequence(expected);
    let sent = sink.js.send_publish(record_subject(sink, shop, id), publish).await;
    let acked = match sent {
        Ok(ack) => ack.await,
        Err(e) => Err(e),
    };
    match acked {
        Ok(ack) => Ok(ack.sequence),
        Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => Err(RecordError::Raced(id.clone())),
        Err(e) => Err(RecordError::Nats(format!("write the record of {id}: {e}"))),
    }
}

/// The open `command_rejected` alert of this order and action, if any.
pub async fn open_alert(sink: &Sink, shop: &str, order_no: u64, action: &str) -> Result<Option<Alert>, RecordError> {
    let m = last(sink, &alert_subject(sink, shop, order_no, action)).await?;
    Ok(m.and_then(|m| serde_json::from_slice(&m.payload).ok()))
}

/// Keeps `alert` as the open one of its order and action (`None`: none is open).
pub async fn set_alert(
    sink: &Sink,
    shop: &str,
    order_no: u64,
    action: &str,
    alert: Option<&Alert>,
) -> Result<(), RecordError> {
    let payload = alert.map(|a| serde_json::to_vec(a).expect("an alert serializes")).unwrap_or_default();
    let subject = alert_subject(sink, shop, order_no, action);
    let ack = sink.js.publish(subject, payload.into()).await.map_err(|e| RecordError::Nats(e.to_string()))?;
    ack.await.map_err(|e| RecordError::Nats(e.to_string()))?;
    Ok(())
}
