use std::path::PathBuf;

use clap::Parser;

#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
use runtime::lease::Leases;
use runtime::service::{Service, Threads};
use schemas::config::PipelineConfig;
use sink::consumer::{Consumer, HeldError, at_start};
use sink::store::Store;

/// The lease the active sink of a deployment holds.
const SINK_LEASE: &str = "sink";

/// Writes canonical orders (ORDERS) to ClickHouse in batches and raises the alerts they call
/// for; acknowledges a message only after ClickHouse confirmed every insert it caused and every
/// alert it raised was published.
#[derive(Debug, Parser)]
#[command(name = "sink", version, about)]
struct Args {
    /// Configuration file (default: $PIPELINE_CONFIG, else ./pipeline.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Print the effective configuration (secrets redacted) and exit.
    #[arg(long)]
    print_config: bool,
    /// Exit 0 once nothing is pending and everything written is durable.
    #[arg(long)]
    until_idle: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Prints alerts as a table (newest first): state, kind, shop, order, since (JST), what to do.
    Alerts {
        #[arg(long)]
        shop: Option<String>,
        /// Only open alerts.
        #[arg(long)]
        open: bool,
        /// At most this many rows.
        #[arg(long, default_value_t = 100)]
        limit: u64,
    },
    /// Lists dead letters of a stage and, unless --dry-run, sends each back to the subject it
    /// came from (payload and original headers as they were) and removes it from the DLQ. Run it
    /// after fixing what made the stage refuse them; what is still refused comes back to the DLQ.
    ReplayDlq {
        /// `normalizer` or `sink`.
        #[arg(long)]
        stage: String,
        #[arg(long)]
        shop: Option<String>,
        #[arg(long)]
        dry_run: bool,
    },
    /// Prints the SQL the sink runs at start (the migrations), without connecting anywhere: to
    /// review it, or for an administrator to create the tables ahead.
    Schema,
    /// Deletes buyer and recipient personal data now, as the active sink does once a day: each
    /// shop's lines past their `personal_data_days`. With --contacts-days, instead every line
    /// ordered more than DAYS days ago (a floor of your own).
    Retention {
        /// Delete the personal data of every order placed more than this many days ago.
        #[arg(long)]
        contacts_days: Option<u32>,
        /// Only count what would be deleted.
        #[arg(long)]
        dry_run: bool,
    },
    /// Erases personal data on request: one order's (--order), or a buyer's within a shop
    /// (--buyer-email, --buyer-tel), from ClickHouse and from every NATS stream that carries it,
    /// at once; prints what it removed and records the erasure in `erasures`. Idempotent.
    Erase {
        #[arg(long)]
        shop: String,
        #[arg(long, required_unless_present_any = ["buyer_email", "buyer_tel"])]
        order: Option<u64>,
        #[arg(long)]
        buyer_email: Option<String>,
        #[arg(long)]
        buyer_tel: Option<String>,
        /// Who asked or carried it out, recorded (default: $USER).
        #[arg(long)]
        by: Option<String>,
    },
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    runtime::service::main("sink", Threads::One, || run(args))
}

async fn run(args: Args) -> anyhow::Result<bool> {
    if let Some(Command::Schema) = args.command {
        print!("{}", schemas::sql::schema_script());
        return Ok(true);
    }
    let Some(config) = runtime::service::config(args.config.as_deref(), args.print_config)? else { return Ok(true) };
    match args.command {
        Some(Command::Alerts { shop, open, limit }) => {
            sink::commands::alerts(&config, shop.as_deref(), open, limit).await?
        }
        Some(Command::ReplayDlq { stage, shop, dry_run }) => {
            sink::commands::replay_dlq(&config, &stage, shop.as_deref(), dry_run).await?
        }
        Some(Command::Retention { contacts_days, dry_run }) => {
            sink::commands::retention(&config, contacts_days, dry_run).await?
        }
        Some(Command::Erase { shop, order, buyer_email, buyer_tel, by }) => {
            let by = by.or_else(|| std::env::var("USER").ok()).unwrap_or_else(|| "unknown".into());
            let request = sink::erase::Request { shop, order, buyer_email, buyer_tel, by };
            sink::commands::erase(&config, &request).await?
        }
        Some(Command::Schema) | None => serve(&config, args.until_idle).await?,
    }
    Ok(true)
}

/// The sink service. Of all sinks of a deployment one is active (it holds the lease `sink`);
/// the others wait as standbys, not ready, and load nothing until they take over. The active one
/// is ready only once its start-up reads are done and NATS and ClickHouse answer; started while
/// ClickHouse is down it waits instead of exiting (what waiting cannot cure, a wrong password,
/// still fails at once). An active sink that loses its lease stops writing and becomes a
/// standby again.
async fn serve(config: &PipelineConfig, until_idle: bool) -> anyhow::Result<()> {
    let store = Store::new(&config.clickhouse);
    let service = Service::connect(config, "sink", config.sink.stall_after).await?;
    // The alert center and /metrics, /healthz, /readyz: on a thread of their own (a page load
    // never waits for a batch), on standbys too.
    let (active_tx, active_rx) = tokio::sync::watch::channel(false);
    let tap = sink::center::start(config, &service, active_rx).await?;
    let leases = Leases::start(service.js.clone(), service.ns.clone(), "sink").await?;
    loop {
        let health = service.health.clone();
        let waiting = |holder: Option<&runtime::lease::Holder>| {
            if let Some(h) = holder {
                tracing::info!(active = %h, "standby: another sink is active");
            }
            health.standby(holder.map(|h| h.to_string()));
        };
        if !wait_for_lease(&leases, until_idle, waiting).await? {
            return Ok(());
        }
        active_tx.send_replace(true);
        let worked = active(config, &service, &store, (&leases, tap.clone()), until_idle).await;
        active_tx.send_replace(false);
        match worked {
            Err(e) if e.downcast_ref::<HeldError>().is_some_and(|h| matches!(h, HeldError::Lost(_))) => {
                tracing::warn!(error = %e, "this sink lost its lease: standby again");
            }
            other => {
                leases.release(SINK_LEASE).await;
                return other;
            }
        }
    }
}

/// Waits for the lease: as a standby, for as long as it takes; with `--until-idle`, a little
/// longer than a dead holder keeps it, then fails naming the active sink.
async fn wait_for_lease(
    leases: &Leases,
    until_idle: bool,
    waiting: impl FnMut(Option<&runtime::lease::Holder>),
) -> anyhow::Result<bool> {
    if !until_idle {
        return Ok(leases.wait_for(SINK_LEASE, waiting).await?);
    }
    let limit = runtime::lease::TTL + std::time::Duration::from_secs(10);
    match tokio::time::timeout(limit, leases.wait_for(SINK_LEASE, waiting)).await {
        Ok(held) => Ok(held?),
        Err(_) => {
            let holder = leases.holder(SINK_LEASE).map(|h| h.to_string()).unwrap_or_else(|| "another sink".into());
            anyhow::bail!("--until-idle: {holder} is active on this deployment; stop it or let it do the work")
        }
    }
}

/// The active sink: start-up reads, then the consumers until stopped or idle.
async fn active(
    config: &PipelineConfig,
    service: &Service,
    store: &Store,
    (leases, tap): (&Leases, Option<sink::center::Tap>),
    until_idle: bool,
) -> anyhow::Result<()> {
    tracing::info!("this sink is active");
    let Some(applied) = at_start("migrations", || store.migrate()).await? else { return Ok(()) };
    tracing::info!(migrations_applied = ?applied, "migrations");
    let fence = leases.fence(SINK_LEASE);
    let Some((consumer, consumers)) = Consumer::start(config, service, store.clone(), (fence, tap)).await? else {
        return Ok(());
    };
    service.health.active();
    consumer.run(consumers, config, until_idle).await
}
