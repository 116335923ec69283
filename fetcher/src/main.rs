use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::Utc;
use clap::Parser;
use fetcher::client::QapiClient;
use fetcher::poll::{ShopPoller, Sink};
use schemas::config::PipelineConfig;
use schemas::subjects::Namespace;
use tokio::sync::Semaphore;

/// Polls Qoo10 orders and claims per shop and publishes every row to NATS JetStream (QOO10_RAW).
#[derive(Debug, Parser)]
#[command(name = "fetcher", version, about)]
struct Args {
    /// Configuration file (default: $PIPELINE_CONFIG, else ./pipeline.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Poll each shop once, wait for every publish acknowledgement, and exit:
    /// 0 if every shop succeeded, 1 otherwise.
    #[arg(long)]
    once: bool,
    /// Only this shop.
    #[arg(long)]
    shop: Option<String>,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    runtime::init_tracing();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fetcher: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("fetcher: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<bool> {
    let config = PipelineConfig::load(args.config.as_deref())?;
    let mut shops = config.shops.clone();
    if let Some(id) = &args.shop {
        shops.retain(|s| &s.id == id);
        if shops.is_empty() {
            bail!("{}: no shop with id {id:?} in [[shops]]", config.source);
        }
    }
    if shops.is_empty() {
        bail!(
            "{}: `shops`: no [[shops]] configured; add one (see pipeline.toml.example), or run ./scripts/run.sh to use the Qoo10 sandbox",
            config.source
        );
    }
    // reqwest is built without a default TLS provider (see Cargo.toml); use ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = Arc::new(QapiClient::new(&config.qoo10).context("HTTP client")?);
    let nats = runtime::nats::connect(&config.nats, "fetcher").await?;
    let js = async_nats::jetstream::new(nats.clone());
    runtime::nats::ensure_streams(&js, &config.nats).await?;
    let sink = Sink { js, ns: Namespace::from_config(&config.nats) };
    let limit = Arc::new(Semaphore::new(config.fetcher.max_concurrent_shops));
    tracing::info!(shops = shops.len(), once = args.once, base_url = %config.qoo10.base_url, "fetcher started");

    let mut tasks = tokio::task::JoinSet::new();
    for shop in shops {
        let poller = ShopPoller::new(shop, config.qoo10.api_version, config.qoo10.requests_per_second);
        let (client, sink, limit) = (client.clone(), sink.clone(), limit.clone());
        if args.once {
            tasks.spawn(async move {
                let mut poller = poller;
                let _permit = limit.acquire_owned().await;
                let result = poll_logged(&mut poller, &client, &sink).await;
                (poller.shop.id.clone(), result.is_ok())
            });
        } else {
            tasks.spawn(async move {
                let mut poller = poller;
                let interval = poller.shop.interval;
                loop {
                    {
                        let _permit = limit.acquire().await;
                        let _ = poll_logged(&mut poller, &client, &sink).await;
                    }
                    tokio::time::sleep(jittered(interval, &poller.shop.id)).await;
                }
            });
        }
    }

    if args.once {
        let mut all_ok = true;
        while let Some(joined) = tasks.join_next().await {
            let (shop, ok) = joined.context("poll task")?;
            if !ok {
                eprintln!("fetcher: shop {shop}: poll failed (see the log above)");
            }
            all_ok &= ok;
        }
        nats.flush().await.ok();
        return Ok(all_ok);
    }
    runtime::shutdown_signal().await;
    tracing::info!("shutting down");
    tasks.abort_all();
    Ok(true)
}

async fn poll_logged(poller: &mut ShopPoller, client: &QapiClient, sink: &Sink) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    match poller.poll(client, sink, Utc::now()).await {
        Ok(r) => {
            tracing::info!(
                shop = %poller.shop.id, calls = r.calls, rows = r.rows, published = r.published,
                unchanged = r.unchanged, duplicates = r.duplicates, elapsed_ms = started.elapsed().as_millis() as u64,
                "poll complete"
            );
            Ok(())
        }
        Err(e) => {
            tracing::error!(shop = %poller.shop.id, error = %e, "poll failed");
            Err(e.into())
        }
    }
}

/// The interval ±10 %, varied per shop and per poll, so that thousands of shops do not poll in step.
fn jittered(interval: Duration, shop: &str) -> Duration {
    let seed = shop
        .bytes()
        .fold(Utc::now().timestamp_subsec_nanos() as u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    let spread = interval.as_millis() as u64 / 5;
    let offset = if spread == 0 { 0 } else { seed % spread };
    interval - Duration::from_millis(spread / 2) + Duration::from_millis(offset)
}
