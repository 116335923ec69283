use runtime::batch::PublishMode;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
use normalizer::stage::{Counters, Normalizer, process_batch};
use runtime::durable::Durable;
use runtime::nats::consumer_idle;
use runtime::service::{Service, Threads};
use schemas::subjects::{self, Stream};

/// Maps raw Qoo10 rows (QOO10_RAW) to canonical orders (ORDERS); what it cannot map goes to
/// dlq.normalizer.<shop> with the reason.
#[derive(Debug, Parser)]
#[command(name = "normalizer", version, about)]
struct Args {
    /// Configuration file (default: $PIPELINE_CONFIG, else ./pipeline.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Print the effective configuration (secrets redacted) and exit.
    #[arg(long)]
    print_config: bool,
    /// Exit 0 once nothing is pending and everything done is durable.
    #[arg(long)]
    until_idle: bool,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    runtime::service::main("normalizer", Threads::One, || run(args))
}

async fn run(args: Args) -> anyhow::Result<bool> {
    let Some(config) = runtime::service::config(args.config.as_deref(), args.print_config)? else { return Ok(true) };
    let service = Service::connect(&config, "normalizer", config.normalizer.stall_after).await?;
    service.serve(&config.normalizer.http_listen, "normalizer.http_listen", None, Default::default()).await?;
    let minute = Duration::from_secs(60);
    let name = subjects::CONSUMER_NORMALIZER;
    let mut consumer = Durable::open(&service.js, &config.nats, Stream::Raw, name, None, minute).await?;
    consumer.watch_lag(service.metrics.clone(), Some(service.health.clone()), "normalizer");
    // Normalizers share the work: every one is active.
    service.health.active();
    tracing::info!(until_idle = args.until_idle, destination_status = %config.normalizer.destination_status, "normalizer started");
    let stage = Normalizer {
        js: &service.js,
        ns: &service.ns,
        statuses: &config.status_map,
        metrics: &service.metrics,
        max_deliver: consumer.max_deliver(),
        mode: PublishMode::for_server(&service.client),
    };
    tracing::info!(mode = ?stage.mode, "publishing orders");
    let mut counters = Counters::default();
    let shutdown = runtime::stopped();
    tokio::pin!(shutdown);
    loop {
        let batch = tokio::select! {
            b = consumer.fetch(config.normalizer.batch_size, Duration::from_millis(500)) => b,
            _ = &mut shutdown => break,
        };
        if batch.is_empty() {
            if args.until_idle && consumer_idle(consumer.consumer()).await? {
                break;
            }
        } else {
            process_batch(&stage, batch, &mut counters).await;
        }
        service.health.committed();
    }
    tracing::info!(orders = counters.orders, dead_letters = counters.dead_letters, "normalizer stopped");
    Ok(true)
}
