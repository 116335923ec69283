//! The sink: canonical orders (`ORDERS`) into ClickHouse, in batches, acknowledged only after
//! ClickHouse confirmed every insert they caused.
//!
//! - [`rows`]: canonical order → table rows, and the merge rule between row kinds (pure).
//! - [`store`]: ClickHouse IO (migrations, lookups, inserts).
//! - [`input`]: what the input subjects may carry, and dead-letter reasons (pure).

pub mod alerts;
pub mod edits;
pub mod input;
pub mod known;
pub mod open;
pub mod rows;
pub mod status;
pub mod store;
pub mod webhook;
