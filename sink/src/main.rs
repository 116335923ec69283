use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::Parser;
use runtime::service::{Service, Threads};
use runtime::telemetry::ReadyCheck;
use schemas::config::PipelineConfig;
use sink::consumer::{Consumer, at_start};
use sink::store::Store;

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
    /// Deletes buyer and recipient personal data (order_contacts) of orders placed more than
    /// DAYS days ago. Run it daily (cron); it is an ALTER TABLE … DELETE mutation, which works on
    /// ClickHouse 18.16 (no TTL there) and current releases, and completes in the background.
    Retention {
        /// Keep personal data of orders placed within this many days.
        #[arg(long)]
        contacts_days: u32,
        /// Only count what would be deleted.
        #[arg(long)]
        dry_run: bool,
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
        Some(Command::Schema) | None => serve(&config, args.until_idle).await?,
    }
    Ok(true)
}

/// The sink service: ready only once its start-up reads are done and NATS and ClickHouse
/// answer; a sink started while ClickHouse is down waits for it instead of exiting (what waiting
/// cannot cure, a wrong password, still fails at once).
async fn serve(config: &PipelineConfig, until_idle: bool) -> anyhow::Result<()> {
    let store = Store::new(&config.clickhouse);
    let service = Service::connect(config, "sink").await?;
    let started = Arc::new(AtomicBool::new(false));
    let configured: Vec<String> = config.shops.iter().map(|s| s.id.clone()).collect();
    let page = sink::page::router(store.clone(), service.js.clone(), service.ns.clone(), configured);
    let ready = ready_check(service.client.clone(), store.clone(), started.clone());
    service.serve(&config.sink.http_listen, "sink.http_listen", Some(ready), page).await?;
    let Some(applied) = at_start("migrations", || store.migrate()).await? else { return Ok(()) };
    tracing::info!(migrations_applied = ?applied, "migrations");
    let Some((consumer, consumers)) = Consumer::start(config, service.js, store, service.metrics).await? else {
        return Ok(());
    };
    started.store(true, Ordering::SeqCst);
    consumer.run(consumers, config, until_idle).await
}

fn ready_check(client: async_nats::Client, store: Store, started: Arc<AtomicBool>) -> ReadyCheck {
    Arc::new(move || {
        let (client, store, started) = (client.clone(), store.clone(), started.clone());
        Box::pin(async move {
            started.load(Ordering::SeqCst)
                && client.connection_state() == async_nats::connection::State::Connected
                && store.ping().await.is_ok()
        })
    })
}
