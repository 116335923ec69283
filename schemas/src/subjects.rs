//! NATS stream names and subjects of the contract.
//!
//! A [`Namespace`] with an empty prefix gives exactly the contract's names (`QOO10_RAW`,
//! `qoo10.raw.<shop>`, ...). A non-empty prefix (`[nats] subject_prefix`) puts every stream and
//! subject of one deployment beside another's on the same server: tests use it to run in
//! parallel, and a NATS account does the same job in production.

use crate::config::NatsConfig;

pub const STREAM_RAW: &str = "QOO10_RAW";
pub const STREAM_ORDERS: &str = "ORDERS";
pub const STREAM_ALERTS: &str = "ALERTS";
pub const STREAM_OMS_EDITS: &str = "OMS_EDITS";
pub const STREAM_DLQ: &str = "DLQ";
/// Poll summaries: which order numbers a complete call saw.
pub const STREAM_POLLS: &str = "QOO10_POLLS";
/// The fetcher's durable state: one message per shop (what it last published).
pub const STREAM_FETCH_STATE: &str = "QOO10_FETCH_STATE";

/// Durable consumer names.
pub const CONSUMER_NORMALIZER: &str = "normalizer";
pub const CONSUMER_SINK: &str = "sink";

/// Stage names used in `dlq.<stage>.<shop>`.
pub const STAGE_NORMALIZER: &str = "normalizer";
pub const STAGE_SINK: &str = "sink";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Namespace {
    prefix: String,
}

impl Namespace {
    /// `prefix` must be empty or match `[a-z0-9_]+` (checked by config validation).
    pub fn new(prefix: &str) -> Self {
        Namespace { prefix: prefix.to_owned() }
    }

    pub fn from_config(nats: &NatsConfig) -> Self {
        Namespace::new(&nats.subject_prefix)
    }

    pub fn stream(&self, base: &str) -> String {
        if self.prefix.is_empty() { base.to_owned() } else { format!("{}_{base}", self.prefix.to_ascii_uppercase()) }
    }

    fn subject(&self, rest: &str) -> String {
        if self.prefix.is_empty() { rest.to_owned() } else { format!("{}.{rest}", self.prefix) }
    }

    pub fn raw(&self, shop: &str) -> String {
        self.subject(&format!("qoo10.raw.{shop}"))
    }
    pub fn orders(&self, shop: &str) -> String {
        self.subject(&format!("orders.{shop}"))
    }
    pub fn alerts(&self, kind: &str, shop: &str) -> String {
        self.subject(&format!("alerts.{kind}.{shop}"))
    }
    pub fn oms_edits(&self, shop: &str) -> String {
        self.subject(&format!("oms.edits.{shop}"))
    }
    pub fn dlq(&self, stage: &str, shop: &str) -> String {
        self.subject(&format!("dlq.{stage}.{shop}"))
    }
    pub fn polls(&self, shop: &str) -> String {
        self.subject(&format!("qoo10.polls.{shop}"))
    }
    pub fn fetch_state(&self, shop: &str) -> String {
        self.subject(&format!("qoo10.state.{shop}"))
    }

    /// The wildcard subjects each stream captures.
    pub fn stream_subjects(&self, base: &str) -> String {
        let pattern = match base {
            STREAM_RAW => "qoo10.raw.>",
            STREAM_ORDERS => "orders.>",
            STREAM_ALERTS => "alerts.>",
            STREAM_OMS_EDITS => "oms.edits.>",
            STREAM_DLQ => "dlq.>",
            STREAM_FETCH_STATE => "qoo10.state.>",
            STREAM_POLLS => "qoo10.polls.>",
            other => panic!("unknown stream {other}"),
        };
        self.subject(pattern)
    }

    /// The shop id is the last token of every subject we publish on.
    pub fn shop_of(subject: &str) -> &str {
        subject.rsplit('.').next().unwrap_or(subject)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_prefix_is_the_contract() {
        let ns = Namespace::default();
        assert_eq!(ns.stream(STREAM_RAW), "QOO10_RAW");
        assert_eq!(ns.raw("my-shop"), "qoo10.raw.my-shop");
        assert_eq!(ns.orders("my-shop"), "orders.my-shop");
        assert_eq!(ns.alerts("ship_date_missing", "s"), "alerts.ship_date_missing.s");
        assert_eq!(ns.dlq("normalizer", "s"), "dlq.normalizer.s");
        assert_eq!(ns.stream_subjects(STREAM_OMS_EDITS), "oms.edits.>");
    }

    #[test]
    fn prefix_separates_deployments() {
        let ns = Namespace::new("t42");
        assert_eq!(ns.stream(STREAM_ORDERS), "T42_ORDERS");
        assert_eq!(ns.raw("a"), "t42.qoo10.raw.a");
        assert_eq!(ns.stream_subjects(STREAM_DLQ), "t42.dlq.>");
        assert_eq!(Namespace::shop_of("t42.qoo10.raw.a-b"), "a-b");
    }
}
