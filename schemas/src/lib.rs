//! What crosses a process boundary, in one place.
//!
//! Every service reads the same `pipeline.toml` ([`config`]), speaks the same QAPI dialect
//! ([`qapi`], shared by the fetcher and the sandbox), and exchanges the same messages over NATS
//! ([`raw`], [`order`], [`dlq`], named by [`subjects`]). The ClickHouse tables live in [`sql`].
//! Nothing here does IO beyond reading the configuration file: the stages stay testable and the
//! contract stays readable in one sitting.

pub mod alert;
pub mod calendar;
pub mod command;
pub mod config;
pub mod dlq;
pub mod edit;
pub mod order;
pub mod poll;
pub mod qapi;
pub mod raw;
pub mod secret;
pub mod sql;
pub mod status;
pub mod subjects;
pub mod time;

pub use secret::Secret;
