//! What the fetcher last published for each order line of a shop, so that re-polling unchanged
//! orders publishes nothing.
//!
//! The state is durable: after every complete poll it is stored as one message per shop on
//! `qoo10.state.<shop>` (stream `QOO10_FETCH_STATE`, one message kept per subject), and read back
//! at start. A restart therefore neither re-publishes everything nor loses a change.
//!
//! The `Nats-Msg-Id` of a row names its content *and* the content it replaces, so a line that
//! goes A → B → A publishes three distinct messages (JetStream would drop a second "A" inside its
//! duplicate window if the id named the content alone).

use std::collections::HashMap;

use schemas::raw::RowKind;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Content hash of a row (hex, 96 bits: collisions are not a practical concern per order line).
pub fn row_hash(row_bytes: &[u8]) -> String {
    hex::encode(&Sha256::digest(row_bytes)[..12])
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchState {
    /// `"order:1090000101"` → content hash last published.
    rows: HashMap<String, String>,
    /// When the last complete poll finished: a restart waits out the rest of the interval
    /// instead of polling every shop at once.
    #[serde(default)]
    pub last_success: Option<chrono::DateTime<chrono::Utc>>,
    /// The last failed poll: when, and why (no secrets: error texts are scrubbed).
    #[serde(default)]
    pub last_error: Option<(chrono::DateTime<chrono::Utc>, String)>,
    /// The open `credentials_invalid` alert, if any (resolved by the next successful poll).
    #[serde(default)]
    pub credentials_alert: Option<schemas::alert::Alert>,
    /// Hashes seen in the poll under way; replaces `rows` when the poll completes.
    #[serde(skip)]
    current: HashMap<String, String>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Same content as last published: nothing to do.
    Unchanged,
    /// New or changed: publish with this message id.
    Publish { msg_id: String },
}

impl FetchState {
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a map of strings serializes")
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Records a row seen in the current poll and says whether to publish it.
    pub fn observe(&mut self, shop: &str, kind: RowKind, order_no: Option<u64>, hash: &str) -> Decision {
        let Some(order_no) = order_no else {
            // No order number: cannot be tracked; publish (the normalizer dead-letters it).
            return Decision::Publish { msg_id: format!("raw:{shop}:{}:-:{hash}", kind.as_str()) };
        };
        let key = format!("{}:{order_no}", kind.as_str());
        let previous = self.current.get(&key).or_else(|| self.rows.get(&key)).cloned();
        self.current.insert(key, hash.to_owned());
        match previous {
            Some(p) if p == hash => Decision::Unchanged,
            p => Decision::Publish {
                msg_id: format!("raw:{shop}:{}:{order_no}:{hash}:{}", kind.as_str(), p.as_deref().unwrap_or("-")),
            },
        }
    }

    /// The poll completed: what it saw becomes the state (lines no longer returned are dropped).
    pub fn complete_poll(&mut self) {
        self.rows = std::mem::take(&mut self.current);
    }

    /// The poll failed: forget what it saw, keep the last complete state.
    pub fn abandon_poll(&mut self) {
        self.current.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unchanged_rows_are_skipped_changed_rows_published() {
        let mut s = FetchState::default();
        let Decision::Publish { msg_id: first } = s.observe("s", RowKind::Order, Some(1), "aa") else { panic!() };
        assert_eq!(first, "raw:s:order:1:aa:-");
        s.complete_poll();
        assert_eq!(s.observe("s", RowKind::Order, Some(1), "aa"), Decision::Unchanged);
        s.complete_poll();
        assert_eq!(
            s.observe("s", RowKind::Order, Some(1), "bb"),
            Decision::Publish { msg_id: "raw:s:order:1:bb:aa".into() }
        );
        s.complete_poll();
        // Back to the first content: a new id, so JetStream will not drop it as a duplicate.
        assert_eq!(
            s.observe("s", RowKind::Order, Some(1), "aa"),
            Decision::Publish { msg_id: "raw:s:order:1:aa:bb".into() }
        );
    }

    #[test]
    fn a_failed_poll_keeps_the_last_complete_state() {
        let mut s = FetchState::default();
        s.observe("s", RowKind::Order, Some(1), "aa");
        s.complete_poll();
        s.observe("s", RowKind::Order, Some(1), "bb");
        s.abandon_poll();
        assert_eq!(
            s.observe("s", RowKind::Order, Some(1), "bb"),
            Decision::Publish { msg_id: "raw:s:order:1:bb:aa".into() }
        );
    }

    #[test]
    fn state_survives_a_round_trip() {
        let mut s = FetchState::default();
        s.observe("s", RowKind::Claim, Some(9), "cc");
        s.complete_poll();
        let back = FetchState::from_bytes(&s.to_bytes()).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.len(), 1);
    }
}
