//! The fetcher: polls Qoo10 QAPI per shop, rate-limited, and publishes every row verbatim to
//! `QOO10_RAW`.
//!
//! - [`plan`]: which calls a poll makes (pure).
//! - [`client`]: HTTP, rate limits, retries, secret hygiene.
//! - [`state`]: what was last published per order line, so unchanged rows are not re-sent.
//! - [`poll`]: one shop's poll, tying the three together with JetStream.

pub mod client;
pub mod plan;
pub mod poll;
pub mod state;
