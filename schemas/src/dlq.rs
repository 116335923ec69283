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
