//! `QOO10_POLLS`: after every complete call of a poll, what it saw, on `qoo10.polls.<shop>`.
//!
//! A summary exists only for a call that answered `ResultCode 0` and whose rows were all
//! acknowledged by JetStream, so downstream can tell "this order vanished" (absent from a
//! complete poll) from "this poll failed" (no summary). The summaries of one poll share
//! `poll_id`; the last has `last_in_poll = true` and only then is the whole poll complete.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::raw::{RawQuery, RowKind};

pub const POLL_SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PollSummary {
    pub schema_version: u32,
    pub shop: String,
    /// Shared by the summaries of one poll (`<shop>:<started_at micros>`).
    pub poll_id: String,
    pub kind: RowKind,
    pub method: String,
    pub query: RawQuery,
    pub fetched_at: DateTime<Utc>,
    /// Every order number the call returned (unchanged ones included), ascending.
    pub order_nos: Vec<u64>,
    /// Rows the call returned.
    pub rows: u64,
    pub last_in_poll: bool,
    /// On the last summary of a poll: methods Qoo10 refused for lack of permission (`-90002`,
    /// `-90003`) whose calls were skipped. Such a poll is incomplete and accuses nobody of
    /// vanishing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused_methods: Vec<String>,
}

/// What the status page reads from the fetcher's state message (`qoo10.state.<shop>`); other
/// fields of that message are the fetcher's own.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchStatus {
    #[serde(default)]
    pub last_success: Option<DateTime<Utc>>,
    #[serde(default)]
    pub last_error: Option<(DateTime<Utc>, String)>,
}
