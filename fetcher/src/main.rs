use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::NaiveDate;
use clap::{Parser, Subcommand};
use fetcher::client::QapiClient;
use fetcher::plan::{self, Cadence};
use fetcher::poll::{ShopPoller, Sink};
use fetcher::schedule::{Shared, apply_waiting, follow_lease, lease_for_job, poll_logged, report_role, shop_lease};
use runtime::lease::Leases;
use runtime::service::{Service, Threads};
use runtime::telemetry::Metrics;
use schemas::config::{PipelineConfig, ShopConfig};
use tokio::sync::Semaphore;

mod apply;

/// Polls Qoo10 orders and claims per shop and publishes every row to NATS JetStream (QOO10_RAW).
#[derive(Debug, Parser)]
#[command(name = "fetcher", version, about)]
struct Args {
    /// Configuration file (default: $PIPELINE_CONFIG, else ./pipeline.toml).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Poll each shop once, wait for every publish acknowledgement, and exit:
    /// 0 if every shop succeeded, 1 otherwise.
    #[arg(long)]
    once: bool,
    /// Only this shop.
    #[arg(long)]
    shop: Option<String>,
    /// Print the effective configuration (secrets redacted) and exit.
    #[arg(long)]
    print_config: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Verify a shop's credentials with one real certification and one order call, and say
    /// plainly what is wrong. Needs no NATS.
    Check {
        #[arg(long)]
        shop: String,
    },
    /// Fetch and publish a past period (JST dates, inclusive), in windows Qoo10 accepts.
    Backfill {
        #[arg(long)]
        shop: String,
        /// First day, YYYY-MM-DD.
        #[arg(long)]
        from: NaiveDate,
        /// Last day, YYYY-MM-DD.
        #[arg(long)]
        to: NaiveDate,
    },
    /// Send one write-back command to Qoo10 and print its result (the shop needs
    /// `writeback = true`). Applied here, or by the fetcher that polls the shop.
    Apply(apply::ApplyArgs),
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    runtime::service::main("fetcher", Threads::Many, || async {
        let Some(config) = runtime::service::config(args.config.as_deref(), args.print_config)? else {
            return Ok(true);
        };
        // The one service that holds the shops' Qoo10 secrets: each must have all three.
        config.require_credentials()?;
        match args.command {
            Some(Command::Check { shop }) => fetcher::check::check(&config, &shop).await,
            Some(Command::Backfill { shop, from, to }) => backfill(&config, &shop, from, to).await,
            Some(Command::Apply(a)) => apply::apply(&config, a).await,
            None => run(&config, args.once, args.shop.as_deref()).await,
        }
    })
}

pub(crate) fn find_shop<'a>(config: &'a PipelineConfig, id: &str) -> anyhow::Result<&'a ShopConfig> {
    config.shop(id).with_context(|| format!("{}: no shop with id {id:?} in [[shops]]", config.source))
}

/// How often and how far each family of calls goes (`[fetcher]`).
pub(crate) fn cadence(config: &PipelineConfig) -> Cadence {
    let f = &config.fetcher;
    let d = |d: Duration| chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
    Cadence {
        slow_every: d(f.slow_calls_every),
        long_every: d(f.long_windows_every),
        overlap: d(f.window_overlap),
        follow_days: f.follow_days,
    }
}

pub(crate) async fn connect(config: &PipelineConfig) -> anyhow::Result<(Service, Sink, Leases)> {
    let service = Service::connect(config, "fetcher", Duration::from_secs(24 * 3600)).await?;
    let sink = Sink::new(service.js.clone(), service.ns.clone());
    let leases = Leases::start(service.js.clone(), service.ns.clone(), "fetcher").await?;
    Ok((service, sink, leases))
}

/// What every shop's task shares: the QAPI client, NATS, at most `concurrent` shops at work.
fn shared(
    config: &PipelineConfig,
    sink: Sink,
    leases: &Leases,
    metrics: Arc<Metrics>,
    concurrent: usize,
) -> anyhow::Result<Shared> {
    let client = Arc::new(QapiClient::new(&config.qoo10).context("HTTP client")?.with_metrics(metrics.clone()));
    let limit = Arc::new(Semaphore::new(concurrent));
    let (cadence, nats) = (cadence(config), config.nats.clone());
    Ok(Shared { client, sink, limit, metrics, cadence, leases: leases.clone(), nats })
}

/// A shop's poller, fenced by its lease.
fn poller(config: &PipelineConfig, shop: ShopConfig, leases: &Leases) -> ShopPoller {
    let fence = leases.fence(&shop_lease(&shop.id));
    ShopPoller::new(shop, config.qoo10.api_version, config.qoo10.requests_per_second).with_fence(fence)
}

async fn run(config: &PipelineConfig, once: bool, only: Option<&str>) -> anyhow::Result<bool> {
    let mut shops = config.shops.clone();
    if let Some(id) = only {
        shops = vec![find_shop(config, id)?.clone()];
    }
    if shops.is_empty() {
        bail!(
            "{}: `shops`: no [[shops]] configured; add one (see pipeline.toml.example), or run ./scripts/run.sh to use the Qoo10 sandbox",
            config.source
        );
    }
    let (service, sink, leases) = connect(config).await?;
    service.serve(&config.fetcher.http_listen, "fetcher.http_listen", None, Default::default()).await?;
    let shared = shared(config, sink, &leases, service.metrics.clone(), config.fetcher.max_concurrent_shops)?;
    tracing::info!(shops = shops.len(), once, base_url = %config.qoo10.base_url, "fetcher started");
    let ids: Vec<String> = shops.iter().map(|s| s.id.clone()).collect();
    tokio::spawn(report_role(leases.clone(), ids.clone(), service.health.clone()));
    let mut tasks = tokio::task::JoinSet::new();
    for shop in shops {
        let (mut poller, shared) = (poller(config, shop, &leases), shared.clone());
        tasks.spawn(async move {
            let id = poller.shop.id.clone();
            if !once {
                follow_lease(&mut poller, &shared).await;
                return (id, true);
            }
            if let Err(e) = lease_for_job(&shared.leases, &id).await {
                eprintln!("fetcher: shop {id}: {e:#}");
                return (id, false);
            }
            let result = {
                let _permit = shared.limit.acquire().await;
                // Commands first: the poll then shows what they changed.
                match apply_waiting(&mut poller, &shared).await {
                    Ok(n) if n > 0 => tracing::info!(shop = %id, commands = n, "commands handled"),
                    Ok(_) => {}
                    Err(e) => tracing::error!(shop = %id, error = %e, "commands not handled"),
                }
                poll_logged(&mut poller, &shared).await
            };
            shared.leases.release(&shop_lease(&id)).await;
            (id, result.is_ok())
        });
    }
    if !once {
        runtime::stopped().await;
        tracing::info!("shutting down");
        tasks.abort_all();
        for id in &ids {
            leases.release(&shop_lease(id)).await;
        }
        return Ok(true);
    }
    let mut all_ok = true;
    while let Some(joined) = tasks.join_next().await {
        let (shop, ok) = joined.context("poll task")?;
        if !ok {
            eprintln!("fetcher: shop {shop}: poll failed (see the log above)");
        }
        all_ok &= ok;
    }
    service.client.flush().await.ok();
    Ok(all_ok)
}

async fn backfill(config: &PipelineConfig, id: &str, from: NaiveDate, to: NaiveDate) -> anyhow::Result<bool> {
    if from > to {
        bail!("--from {from} is after --to {to}");
    }
    let shop = find_shop(config, id)?.clone();
    let client = QapiClient::new(&config.qoo10).context("HTTP client")?;
    let (service, sink, leases) = connect(config).await?;
    let nats = service.client.clone();
    // The shop's fetch state is written by one fetcher at a time: backfill takes the lease too.
    lease_for_job(&leases, id).await?;
    let fence = leases.fence(&shop_lease(id));
    let mut poller =
        ShopPoller::new(shop, config.qoo10.api_version, config.qoo10.requests_per_second).with_fence(fence);
    let windows = plan::split(from, to);
    let terminal = std::io::stderr().is_terminal();
    let mut bar = |done: usize, total: usize| {
        if terminal {
            let width = 30;
            let filled = done * width / total.max(1);
            eprint!("\r[{}{}] {done}/{total} calls", "#".repeat(filled), " ".repeat(width - filled));
            let _ = std::io::stderr().flush();
        }
    };
    let result = poller.backfill(&client, &sink, from, to, &cadence(config), &mut bar).await;
    if terminal {
        eprintln!();
    }
    leases.release(&shop_lease(id)).await;
    nats.flush().await.ok();
    match result {
        Ok(r) => {
            println!(
                "backfill {id} {from}..={to}: {} windows, {} calls, {} rows, {} published, {} unchanged",
                windows.len(),
                r.calls,
                r.rows,
                r.published,
                r.unchanged
            );
            Ok(true)
        }
        Err(e) => {
            eprintln!("fetcher: backfill {id}: {e}");
            Ok(false)
        }
    }
}
