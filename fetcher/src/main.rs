use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{NaiveDate, Utc};
use clap::{Parser, Subcommand};
use fetcher::client::{CallError, QapiClient};
use fetcher::plan::{self, Cadence};
use fetcher::poll::{PollError, PollReport, ShopPoller, Sink};
use runtime::service::{Service, Threads};
use runtime::telemetry::Metrics;
use schemas::config::{PipelineConfig, ShopConfig};
use schemas::qapi::{ResponseError, code};
use tokio::sync::Semaphore;

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
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    runtime::service::main("fetcher", Threads::Many, || async {
        let Some(config) = runtime::service::config(args.config.as_deref(), args.print_config)? else {
            return Ok(true);
        };
        match args.command {
            Some(Command::Check { shop }) => check(&config, &shop).await,
            Some(Command::Backfill { shop, from, to }) => backfill(&config, &shop, from, to).await,
            None => run(&config, args.once, args.shop.as_deref()).await,
        }
    })
}

fn find_shop<'a>(config: &'a PipelineConfig, id: &str) -> anyhow::Result<&'a ShopConfig> {
    config.shop(id).with_context(|| format!("{}: no shop with id {id:?} in [[shops]]", config.source))
}

/// How often and how far each family of calls goes (`[fetcher]`).
fn cadence(config: &PipelineConfig) -> Cadence {
    let f = &config.fetcher;
    let d = |d: Duration| chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
    Cadence {
        slow_every: d(f.slow_calls_every),
        long_every: d(f.long_windows_every),
        overlap: d(f.window_overlap),
        follow_days: f.follow_days,
    }
}

async fn connect(config: &PipelineConfig) -> anyhow::Result<(Service, Sink)> {
    let service = Service::connect(config, "fetcher").await?;
    let sink = Sink { js: service.js.clone(), ns: service.ns.clone() };
    Ok((service, sink))
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
    let (service, sink) = connect(config).await?;
    service.serve(&config.fetcher.http_listen, "fetcher.http_listen", None, Default::default()).await?;
    let (nats, metrics) = (service.client.clone(), service.metrics.clone());
    let client = Arc::new(QapiClient::new(&config.qoo10).context("HTTP client")?.with_metrics(metrics.clone()));
    let limit = Arc::new(Semaphore::new(config.fetcher.max_concurrent_shops));
    let cadence = cadence(config);
    tracing::info!(shops = shops.len(), once, base_url = %config.qoo10.base_url, "fetcher started");

    let mut tasks = tokio::task::JoinSet::new();
    for shop in shops {
        let mut poller = ShopPoller::new(shop, config.qoo10.api_version, config.qoo10.requests_per_second);
        let (client, sink, limit, metrics) = (client.clone(), sink.clone(), limit.clone(), metrics.clone());
        if once {
            tasks.spawn(async move {
                let _permit = limit.acquire_owned().await;
                let result = poll_logged(&mut poller, &client, &sink, &metrics, &cadence).await;
                (poller.shop.id.clone(), result.is_ok())
            });
        } else {
            tasks.spawn(async move {
                schedule(&mut poller, &client, &sink, &limit, &metrics, &cadence).await;
                (poller.shop.id.clone(), true)
            });
        }
    }

    if once {
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
    runtime::stopped().await;
    tracing::info!("shutting down");
    tasks.abort_all();
    Ok(true)
}

/// One shop, forever: resumes where the durable state says the last poll ended (no burst after
/// a restart, no gap: the look-back window overlaps), polls on its interval with jitter, and
/// backs off (doubling, up to 6 h) while Qoo10 refuses its credentials.
async fn schedule(
    poller: &mut ShopPoller,
    client: &QapiClient,
    sink: &Sink,
    limit: &Semaphore,
    metrics: &Metrics,
    cadence: &Cadence,
) {
    let interval = poller.shop.interval;
    let last = poller.state(sink).await.ok().and_then(|s| s.last_success);
    let due_in = last
        .and_then(|t| (t + chrono::Duration::from_std(interval).unwrap_or_default() - Utc::now()).to_std().ok())
        .unwrap_or_default();
    if !due_in.is_zero() {
        tracing::info!(shop = %poller.shop.id, wait_s = due_in.as_secs(), "resuming: last poll is recent");
    }
    tokio::time::sleep(due_in).await;
    let mut refused = 0u32;
    loop {
        let outcome = {
            let _permit = limit.acquire().await;
            poll_logged(poller, client, sink, metrics, cadence).await
        };
        let wait = match outcome {
            Err(PollError::Credentials { .. }) => {
                refused += 1;
                (interval * 2u32.saturating_pow(refused - 1)).min(Duration::from_secs(6 * 3600))
            }
            _ => {
                refused = 0;
                jittered(interval, &poller.shop.id)
            }
        };
        tokio::time::sleep(wait).await;
    }
}

async fn poll_logged(
    poller: &mut ShopPoller,
    client: &QapiClient,
    sink: &Sink,
    metrics: &Metrics,
    cadence: &Cadence,
) -> Result<PollReport, PollError> {
    let started = std::time::Instant::now();
    let result = poller.poll(client, sink, Utc::now(), cadence).await;
    let id = poller.shop.id.as_str();
    let now = Utc::now().timestamp() as f64;
    match &result {
        Ok(r) => {
            use fetcher::metrics::{LAST_SUCCESS, POLLS, PUBLISHED, ROWS, UNCHANGED};
            for (metric, n) in [(ROWS, r.rows), (PUBLISHED, r.published), (UNCHANGED, r.unchanged)] {
                metrics.add(metric, &[("shop", id)], n as f64);
            }
            metrics.set(LAST_SUCCESS, &[("shop", id)], now);
            metrics.inc(POLLS, &[("shop", id), ("outcome", "ok")]);
            tracing::info!(
                shop = %id, calls = r.calls, rows = r.rows, published = r.published, unchanged = r.unchanged,
                duplicates = r.duplicates, refused = ?r.refused, elapsed_ms = started.elapsed().as_millis() as u64,
                "poll complete"
            );
        }
        Err(e) => {
            let outcome = if matches!(e, PollError::Credentials { .. }) { "credentials" } else { "failed" };
            metrics.inc(fetcher::metrics::POLLS, &[("shop", id), ("outcome", outcome)]);
            metrics.set(fetcher::metrics::LAST_ERROR, &[("shop", id)], now);
            tracing::error!(shop = %id, error = %e, "poll failed");
        }
    }
    result
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

async fn backfill(config: &PipelineConfig, id: &str, from: NaiveDate, to: NaiveDate) -> anyhow::Result<bool> {
    if from > to {
        bail!("--from {from} is after --to {to}");
    }
    let shop = find_shop(config, id)?.clone();
    let client = QapiClient::new(&config.qoo10).context("HTTP client")?;
    let (service, sink) = connect(config).await?;
    let nats = service.client.clone();
    let mut poller = ShopPoller::new(shop, config.qoo10.api_version, config.qoo10.requests_per_second);
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

/// Tells a seller in plain words whether the shop's credentials and settings work.
async fn check(config: &PipelineConfig, id: &str) -> anyhow::Result<bool> {
    let shop = find_shop(config, id)?.clone();
    let mut qoo10 = config.qoo10.clone();
    qoo10.retry_budget = qoo10.retry_budget.min(Duration::from_secs(10));
    let client = QapiClient::new(&qoo10).context("HTTP client")?;
    let mut poller = ShopPoller::new(shop, config.qoo10.api_version, config.qoo10.requests_per_second);
    println!("Checking shop {id} against {}", config.qoo10.base_url);
    if let Err(e) = poller.certify(&client).await {
        println!("✗ certification key: {}", explain(&e, id, &config.qoo10.base_url));
        return Ok(false);
    }
    println!("✓ certification key issued (API key, QSM login ID and password accepted)");
    let status = poller.shop.statuses[0];
    let window = plan::windows(schemas::time::today_jst(Utc::now()), 1)[0];
    let call = plan::Call {
        kind: schemas::raw::RowKind::Order,
        family: plan::Family::Recent,
        status,
        condition: schemas::raw::condition::ORDER_DATE,
        span: plan::Span::Days(window),
    };
    let (method, params) = plan::request(config.qoo10.api_version, &call);
    let mut report = PollReport::default();
    match poller.call_rows(&client, method, &params, &mut report).await {
        Ok((rows, _)) => {
            println!(
                "✓ {method} answered: {} order lines in status {status} ordered {}..={} (JST)",
                rows.len(),
                window.from,
                window.to
            );
            println!("The shop is ready to be polled.");
            Ok(true)
        }
        Err(e) => {
            println!("✗ {method}: {}", explain(&e, id, &config.qoo10.base_url));
            Ok(false)
        }
    }
}

fn explain(e: &PollError, shop: &str, base_url: &str) -> String {
    let creds = format!("[[shops]] id = \"{shop}\"");
    match e {
        PollError::Credentials { code: c, message, .. } if *c == code::NO_SELLER => format!(
            "Qoo10 does not know this QSM login ID / password ({c} {message}). Check user_id and password of {creds}; \
             after a QSM password change the old one no longer works."
        ),
        PollError::Credentials { code: c, message, .. } if *c == code::NO_API => format!(
            "Qoo10 does not recognise the API key ({c} {message}). Check api_key of {creds}. API keys are issued in QSM \
             (Qoo10へのお問い合わせ → システム → API・FTP・QSM権限) and must be renewed every year."
        ),
        PollError::Credentials { code: c, message, .. } if *c == code::KEY_EXPIRED_1 || *c == code::KEY_EXPIRED_2 => {
            format!(
                "the certification key expired and a new one was refused ({c} {message}). Renew the API key in QSM."
            )
        }
        PollError::Credentials { code: c, message, .. } => {
            format!("Qoo10 refused the credentials ({c} {message}). Check user_id, api_key and password of {creds}.")
        }
        PollError::Call(CallError::Response { source: ResponseError::Routing(text), .. }) => format!(
            "Qoo10 answered {text:?}: the address or method name is wrong. Check [qoo10] base_url (expected \
             https://api.qoo10.jp/GMKT.INC.Front.QAPIService/ebayjapan.qapi) and api_version."
        ),
        PollError::Call(CallError::Transport { reason, .. }) => format!("cannot reach {base_url}: {reason}"),
        PollError::Call(CallError::Timeout { timeout, .. }) => format!("{base_url} did not answer within {timeout:?}"),
        PollError::Call(CallError::Http { status, .. }) => {
            format!("{base_url} answered HTTP {status}; try again later")
        }
        PollError::Call(CallError::Response { source, .. }) => format!("{base_url} did not answer like QAPI: {source}"),
        PollError::Qapi { code: c, message, .. } => format!("Qoo10 answered {c}: {message}"),
        other => other.to_string(),
    }
}
