//! What every service binary does around its own work: logging, the TLS provider, a tokio
//! runtime, the stop signals, the configuration, NATS, and the HTTP listener for `/metrics`,
//! `/healthz` and `/readyz`.

use std::future::Future;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use schemas::config::{ConfigError, PipelineConfig};
use schemas::subjects::Namespace;

use crate::health::Health;
use crate::nats::NatsError;
use crate::telemetry::{Metrics, ReadyCheck};

/// The runtime a stage works on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threads {
    /// One thread: a stage that works one batch at a time (normalizer, sink). Worker threads
    /// only added wake-ups between the NATS connection task and the batch (the normalizer took
    /// 3.8 CPU s per 200k rows multi-threaded, 2.7 s on one thread).
    One,
    /// Worker threads: a stage waiting on many things at once (the fetcher's shops).
    Many,
}

/// Runs `work` as the binary `name`: exit 0 when it returns `Ok(true)`, 1 for `Ok(false)`, and
/// 1 with `name: <the error and its causes>` on stderr for an error.
pub fn main<E, F, Fut>(name: &str, threads: Threads, work: F) -> ExitCode
where
    E: std::fmt::Display,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<bool, E>>,
{
    crate::init_tracing();
    crate::install_crypto_provider();
    let built = match threads {
        Threads::One => tokio::runtime::Builder::new_current_thread().enable_all().build(),
        Threads::Many => tokio::runtime::Builder::new_multi_thread().enable_all().build(),
    };
    let rt = match built {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{name}: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        crate::install_shutdown_handler();
        work().await
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("{name}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The configuration (`--config`, `$PIPELINE_CONFIG` or `./pipeline.toml`); with
/// `print`, the effective configuration is printed (secrets redacted) and `None` returned.
pub fn config(path: Option<&Path>, print: bool) -> Result<Option<PipelineConfig>, ConfigError> {
    let config = PipelineConfig::load(path)?;
    if print {
        print!("{}", config.to_toml());
        return Ok(None);
    }
    Ok(Some(config))
}

/// A service connected to NATS (the contract's streams made sure of), with its metrics and what
/// it says of its own health.
#[derive(Debug, Clone)]
pub struct Service {
    pub client: async_nats::Client,
    pub js: async_nats::jetstream::Context,
    pub ns: Namespace,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
}

impl Service {
    /// `stall_after`: how long pending work may go without a commit before `/readyz` says
    /// `stalled`.
    pub async fn connect(
        config: &PipelineConfig,
        name: &str,
        stall_after: std::time::Duration,
    ) -> Result<Service, NatsError> {
        let (client, js) = crate::nats::connect_jetstream(&config.nats, name).await?;
        let (metrics, health) = (Metrics::new(), Arc::new(Health::new(stall_after)));
        Ok(Service { client, js, ns: Namespace::from_config(&config.nats), metrics, health })
    }

    /// Serves `/metrics`, `/healthz`, `/readyz` (NATS, JetStream, the service's health, then
    /// `extra`) and `pages` on `listen` ("" = nowhere).
    pub async fn serve(
        &self,
        listen: &str,
        key: &str,
        extra: Option<ReadyCheck>,
        pages: axum::Router,
    ) -> Result<(), ServeError> {
        let probe = self.ns.stream(schemas::subjects::Stream::Orders);
        let ready = crate::telemetry::ready_check(self.client.clone(), self.health.clone(), probe, extra);
        crate::telemetry::serve_with(listen, self.metrics.clone(), ready, pages)
            .await
            .map(|_| ())
            .map_err(|source| ServeError { key: key.to_owned(), listen: listen.to_owned(), source })
    }
}

/// The HTTP listener could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("{key} {listen:?}: {source}")]
pub struct ServeError {
    key: String,
    listen: String,
    #[source]
    source: std::io::Error,
}
