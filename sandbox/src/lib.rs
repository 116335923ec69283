//! `qoo10-sandbox`: a deterministic QAPI look-alike for demos, tests and benchmarks.
//!
//! It holds a seeded world of shops and orders ([`generate`]), renders them in QAPI's real
//! response shapes ([`render`]), and serves them with QAPI's quirks ([`server`]): HTTP 200 on
//! every error, two error envelopes, plain-text routing errors, `Label(n)` statuses, numbers
//! sometimes as strings, `null` for no rows, a 90-day window limit, and keys that expire.

pub mod generate;
pub mod lifecycle;
pub mod model;
pub mod render;
pub mod server;
