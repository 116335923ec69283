//! The fetcher: polls Qoo10 QAPI per shop, rate-limited, and publishes every row verbatim to
//! `QOO10_RAW`.
//!
//! - [`plan`]: which calls a poll makes (pure).
//! - [`client`]: HTTP, rate limits, retries, secret hygiene.
//! - [`state`]: what was last published per order line, which lines are still followed, when
//!   each family of calls last completed.
//! - [`credentials`]: the fetcher's own alerts about a shop's key (pure).
//! - [`poll`]: one shop's poll, tying them together with JetStream.
//! - [`schedule`]: when each shop is polled, and by which fetcher (leases).
//! - [`check`]: `fetcher check`, a shop's credentials verified in plain words.
//! - [`writeback`]: commands that change Qoo10 (発送予定日, tracking), each at most once.

pub mod check;
pub mod client;
pub mod credentials;
pub mod metrics;
pub mod plan;
pub mod poll;
pub mod schedule;
pub mod state;
pub mod writeback;
