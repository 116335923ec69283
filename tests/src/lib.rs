//! Harness for end-to-end tests: real NATS JetStream and ClickHouse, our real binaries as
//! processes, and the Qoo10 sandbox.
//!
//! Servers come from `NATS_URL` / `CLICKHOUSE_URL` when set (what `./scripts/test.sh` does),
//! else from containers when a Docker engine answers, else the test fails saying how to start
//! them. It never skips silently: a skipped end-to-end test would make CI test nothing.
//! Every test gets its own NATS namespace and ClickHouse database, so tests run in parallel
//! and repeatedly against the same servers.
//!
//! Modules by concern: [`servers`] (where NATS and ClickHouse are), [`deployment`] (our services
//! against the [`sandbox`]), [`nodes`] (processes a test stops and starts), [`proxy`], [`support`].

mod browser;
mod deployment;
mod nodes;
mod proxy;
mod sandbox;
mod servers;
mod support;

pub use browser::*;
pub use deployment::*;
pub use nodes::*;
pub use proxy::*;
pub use sandbox::*;
pub use servers::*;
pub use support::*;
