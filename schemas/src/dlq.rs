//! `DLQ`: what a stage could not process.
//!
//! A dead letter is the original message, payload and headers verbatim, published on
//! `dlq.<stage>.<shop>` with these headers added. Keeping the payload untouched (even when it is
//! not UTF-8) means a fixed stage can replay it as it was.

pub const STAGE: &str = "Dlq-Stage";
/// The reason, one line: which field, which value, what was expected.
pub const ERROR: &str = "Dlq-Error";
/// RFC 3339 time of the failure.
pub const TIME: &str = "Dlq-Time";
/// Subject the message was taken from.
pub const SUBJECT: &str = "Dlq-Subject";
/// Stream sequence of the original message.
pub const STREAM_SEQ: &str = "Dlq-Stream-Seq";

/// A field whose value is wrong: `field \`orderQty\`: value -1 is not a positive whole quantity`.
/// What the normalizer, the sink and every `validate` report about one field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}`: {problem}")]
pub struct FieldError {
    pub field: String,
    pub problem: String,
}

impl FieldError {
    pub fn new(field: &str, problem: impl Into<String>) -> Self {
        FieldError { field: field.to_owned(), problem: problem.into() }
    }
}

/// Why a message is a dead letter. Its text goes in `Dlq-Error`; [`Reason::label`] is the
/// bounded label of `dead_letters_total`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Reason {
    #[error("payload of {bytes} bytes exceeds {limit}")]
    Oversized { bytes: usize, limit: usize },
    /// Not the message its subject carries: `not a raw envelope: …`.
    #[error("not {what}: {detail}")]
    Unreadable { what: &'static str, detail: String },
    #[error(transparent)]
    Field(#[from] FieldError),
    /// A field the action needs is absent.
    #[error("missing field `{field}` (action {action})")]
    Missing { field: &'static str, action: String },
    /// The same id (an order version, an edit) came again with other content: the first stands.
    #[error("conflicting content: {0}")]
    Conflict(String),
    /// The message names another shop than the subject it arrived on.
    #[error("wrong shop: the message is for shop {named:?} but arrived on {subject}")]
    WrongShop { named: String, subject: String },
    /// Fetched (or versioned) further in the future than clocks can disagree.
    #[error("from the future: {what} {at} is {ahead} ahead of this stage's clock (more than 5 minutes)")]
    Future { what: &'static str, at: String, ahead: String },
    /// Processing it failed with an error waiting cannot cure.
    #[error("could not be processed: {0}")]
    Permanent(String),
    /// Its last delivery failed too: JetStream would not deliver it again.
    #[error("gave up after {deliveries} deliveries: {last_error}")]
    Exhausted { deliveries: i64, last_error: String },
}

/// How far ahead of a stage's clock a message's fetch time may be: clocks of two machines
/// disagree by seconds, not minutes.
pub const MAX_CLOCK_AHEAD: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

impl Reason {
    /// `Some` when `at` is more than [`MAX_CLOCK_AHEAD`] after `now`.
    pub fn if_future(
        what: &'static str,
        at: chrono::DateTime<chrono::Utc>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Option<Reason> {
        let ahead = at - now;
        (ahead > MAX_CLOCK_AHEAD).then(|| Reason::Future {
            what,
            at: at.to_rfc3339(),
            ahead: humantime::format_duration(std::time::Duration::from_secs(ahead.num_seconds().max(0) as u64))
                .to_string(),
        })
    }

    /// A short, bounded label: the field a reason names, `oversized`, `missing`, `conflicting
    /// content`, or what the message was not.
    pub fn label(&self) -> std::borrow::Cow<'_, str> {
        use std::borrow::Cow;
        match self {
            Reason::Oversized { .. } => Cow::Borrowed("oversized"),
            Reason::Unreadable { what, .. } => Cow::Owned(format!("not {what}")),
            Reason::Field(f) => Cow::Borrowed(f.field.as_str()),
            Reason::Missing { .. } => Cow::Borrowed("missing"),
            Reason::Conflict(_) => Cow::Borrowed("conflicting content"),
            Reason::WrongShop { .. } => Cow::Borrowed("wrong shop"),
            Reason::Future { .. } => Cow::Borrowed("from the future"),
            Reason::Permanent(_) => Cow::Borrowed("permanent failure"),
            Reason::Exhausted { .. } => Cow::Borrowed("deliveries exhausted"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_read_as_before_and_label_boundedly() {
        let f = Reason::from(FieldError::new("orderQty", "value -1 is not a positive whole quantity"));
        assert_eq!(f.to_string(), "field `orderQty`: value -1 is not a positive whole quantity");
        assert_eq!(f.label(), "orderQty");
        let big = Reason::Oversized { bytes: 300_000, limit: 262_144 };
        assert_eq!(
            (big.to_string().as_str(), big.label().as_ref()),
            ("payload of 300000 bytes exceeds 262144", "oversized")
        );
        let bad = Reason::Unreadable { what: "a raw envelope", detail: "expected value at line 1".into() };
        assert_eq!(
            (bad.to_string().as_str(), bad.label().as_ref()),
            ("not a raw envelope: expected value at line 1", "not a raw envelope")
        );
        let missing = Reason::Missing { field: "quantity", action: "set_quantity".into() };
        assert_eq!(missing.to_string(), "missing field `quantity` (action set_quantity)");
    }
}
