//! NATS stream names and subjects of the contract.
//!
//! A [`Namespace`] with an empty prefix gives exactly the contract's names (`QOO10_RAW`,
//! `qoo10.raw.<shop>`, ...). A non-empty prefix (`[nats] subject_prefix`) puts every stream and
//! subject of one deployment beside another's on the same server: tests use it to run in
//! parallel, and a NATS account does the same job in production.

use crate::config::NatsConfig;

/// The streams of the contract: name, subjects and how long each keeps messages, in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    /// `qoo10.raw.<shop>`: Qoo10 rows as received.
    Raw,
    /// `orders.<shop>`: canonical orders.
    Orders,
    /// `alerts.<kind>.<shop>`: alert transitions.
    Alerts,
    /// `oms.edits.<shop>`: input from the OMS.
    OmsEdits,
    /// `dlq.<stage>.<shop>`: what a stage could not process.
    Dlq,
    /// `qoo10.polls.<shop>`: poll summaries (which order numbers a complete call saw).
    Polls,
    /// `qoo10.state.<shop>`: the fetcher's durable state, one message per shop.
    FetchState,
    /// `leases.>`: which instance of a service works (`runtime::lease`), one message per subject.
    Leases,
    /// `qoo10.commands.<shop>` (input: changes to make on Qoo10) and
    /// `qoo10.command_results.<shop>` (what became of them).
    Commands,
}

impl Stream {
    pub const ALL: [Stream; 9] = [
        Stream::Raw,
        Stream::Orders,
        Stream::Alerts,
        Stream::OmsEdits,
        Stream::Dlq,
        Stream::FetchState,
        Stream::Polls,
        Stream::Leases,
        Stream::Commands,
    ];

    /// The contract's stream name (before a deployment's prefix).
    pub fn base(self) -> &'static str {
        match self {
            Stream::Raw => "QOO10_RAW",
            Stream::Orders => "ORDERS",
            Stream::Alerts => "ALERTS",
            Stream::OmsEdits => "OMS_EDITS",
            Stream::Dlq => "DLQ",
            Stream::Polls => "QOO10_POLLS",
            Stream::FetchState => "QOO10_FETCH_STATE",
            Stream::Leases => "LEASES",
            Stream::Commands => "QOO10_COMMANDS",
        }
    }

    /// The wildcard subject it captures (before a deployment's prefix).
    fn pattern(self) -> &'static str {
        match self {
            Stream::Raw => "qoo10.raw.>",
            Stream::Orders => "orders.>",
            Stream::Alerts => "alerts.>",
            Stream::OmsEdits => "oms.edits.>",
            Stream::Dlq => "dlq.>",
            Stream::Polls => "qoo10.polls.>",
            Stream::FetchState => "qoo10.state.>",
            Stream::Leases => "leases.>",
            Stream::Commands => "qoo10.commands.>",
        }
    }

    /// How long messages are kept when the services create the stream (zero: no limit).
    pub fn max_age(self) -> std::time::Duration {
        let days = |d: u64| std::time::Duration::from_secs(d * 86_400);
        match self {
            Stream::Raw | Stream::Polls => days(14),
            Stream::Orders => days(30),
            Stream::Alerts | Stream::OmsEdits | Stream::Dlq | Stream::Commands => days(90),
            Stream::FetchState => std::time::Duration::ZERO,
            // Held claims are written again every hour; a dead instance's heartbeat goes.
            Stream::Leases => days(7),
        }
    }

    /// Messages kept per subject (-1: no limit): the fetch state and the leases keep the last one.
    pub fn per_subject(self) -> i64 {
        if matches!(self, Stream::FetchState | Stream::Leases) { 1 } else { -1 }
    }

    /// Consumers the stream may have (-1: the server's default). The fetcher reads each shop's
    /// commands through a durable consumer of its own, and nats-server 2.12+ allows a stream
    /// 1,000 consumers unless the stream says otherwise (`default_max_consumers`): shop 1,001's
    /// commands were refused ("maximum consumers limit reached").
    pub fn max_consumers(self) -> i32 {
        if matches!(self, Stream::Commands) { 1_000_000 } else { -1 }
    }

    /// Streams written in runs of many messages (a response's rows, a batch's orders, its alert
    /// transitions): these allow atomic batch publish where the server has it (runtime::batch).
    pub fn batch_published(self) -> bool {
        matches!(self, Stream::Raw | Stream::Orders | Stream::Alerts)
    }
}

impl Stream {
    /// Every subject pattern the stream captures: [`Stream::pattern`], and for
    /// [`Stream::Commands`] the results beside the commands.
    pub fn patterns(self) -> Vec<&'static str> {
        match self {
            Stream::Commands => vec![self.pattern(), "qoo10.command_results.>"],
            _ => vec![self.pattern()],
        }
    }
}

/// Durable consumer names.
pub const CONSUMER_NORMALIZER: &str = "normalizer";
pub const CONSUMER_SINK: &str = "sink";

/// The stages named in `dlq.<stage>.<shop>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Normalizer,
    Sink,
    /// Commands the fetcher could not read (`dlq.fetcher.<shop>`).
    Fetcher,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Normalizer => "normalizer",
            Stage::Sink => "sink",
            Stage::Fetcher => "fetcher",
        }
    }

    pub fn parse(text: &str) -> Option<Stage> {
        [Stage::Normalizer, Stage::Sink, Stage::Fetcher].into_iter().find(|s| s.as_str() == text)
    }
}

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

    /// A stream's name in this deployment.
    pub fn stream(&self, stream: Stream) -> String {
        self.stream_named(stream.base())
    }

    /// The name in this deployment of the stream with this contract name (`ORDERS`).
    pub fn stream_named(&self, base: &str) -> String {
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
    /// `kind` is an [`crate::alert::AlertKind`]'s name, or `*`.
    pub fn alerts(&self, kind: &str, shop: &str) -> String {
        self.subject(&format!("alerts.{kind}.{shop}"))
    }
    pub fn oms_edits(&self, shop: &str) -> String {
        self.subject(&format!("oms.edits.{shop}"))
    }
    pub fn dlq(&self, stage: Stage, shop: &str) -> String {
        self.subject(&format!("dlq.{}.{shop}", stage.as_str()))
    }
    pub fn polls(&self, shop: &str) -> String {
        self.subject(&format!("qoo10.polls.{shop}"))
    }
    pub fn fetch_state(&self, shop: &str) -> String {
        self.subject(&format!("qoo10.state.{shop}"))
    }
    pub fn commands(&self, shop: &str) -> String {
        self.subject(&format!("qoo10.commands.{shop}"))
    }
    pub fn command_results(&self, shop: &str) -> String {
        self.subject(&format!("qoo10.command_results.{shop}"))
    }
    /// Where the fetcher keeps what it did with one command (`token`: a digest of its id), in
    /// the fetch-state stream (one message per subject, kept until replaced).
    pub fn command_record(&self, shop: &str, token: &str) -> String {
        self.subject(&format!("qoo10.state.{shop}.command.{token}"))
    }
    /// `leases.<rest>` (`runtime::lease`).
    pub fn leases(&self, rest: &str) -> String {
        self.subject(&format!("leases.{rest}"))
    }

    /// The wildcard subject a stream captures (the first, for a stream of several).
    pub fn stream_subjects(&self, stream: Stream) -> String {
        self.subject(stream.pattern())
    }

    /// Every wildcard subject a stream captures.
    pub fn stream_subject_list(&self, stream: Stream) -> Vec<String> {
        stream.patterns().into_iter().map(|p| self.subject(p)).collect()
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
        assert_eq!(ns.stream(Stream::Raw), "QOO10_RAW");
        assert_eq!(ns.raw("my-shop"), "qoo10.raw.my-shop");
        assert_eq!(ns.orders("my-shop"), "orders.my-shop");
        assert_eq!(ns.alerts("ship_date_missing", "s"), "alerts.ship_date_missing.s");
        assert_eq!(ns.dlq(Stage::Normalizer, "s"), "dlq.normalizer.s");
        assert_eq!(ns.stream_subjects(Stream::OmsEdits), "oms.edits.>");
    }

    #[test]
    fn prefix_separates_deployments() {
        let ns = Namespace::new("t42");
        assert_eq!(ns.stream(Stream::Orders), "T42_ORDERS");
        assert_eq!(ns.raw("a"), "t42.qoo10.raw.a");
        assert_eq!(ns.stream_subjects(Stream::Dlq), "t42.dlq.>");
        assert_eq!(Namespace::shop_of("t42.qoo10.raw.a-b"), "a-b");
    }
}
