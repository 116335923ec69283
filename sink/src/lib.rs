//! The sink: canonical orders (`ORDERS`) into ClickHouse, and the alerts they call for.
//!
//! Where to look first:
//! - [`engine`]: the alert engine, synchronous and pure: input plus lookups in, a plan out;
//! - [`alerts`]: the rules, one function per kind (pure, table-tested);
//! - [`consumer`]: the IO around the engine and the commit order (alerts and expectations
//!   before rows, publish before store, acknowledge last, the engine's state changed last).
//!
//! Beside them: [`rows`] (canonical order → rows, the merge rule between row kinds), [`open`]
//! (the open alerts, compact), [`keys`], [`known`] (fingerprints of stored lines), [`edits`]
//! (OMS edits as expectations, pure), [`input`] (what the input subjects may carry), [`store`]
//! (ClickHouse), [`webhook`], [`commands`] (operator commands), [`center`] (the alert center:
//! page and API, on its own thread).

pub mod alerts;
pub mod center;
pub mod commands;
pub mod consumer;
pub mod edits;
pub mod engine;
pub mod erase;
pub mod input;
pub mod keys;
pub mod known;
pub mod metrics;
pub mod open;
pub mod retention;
pub mod rows;
pub mod store;
pub mod webhook;
