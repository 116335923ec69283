//! `pipeline-bench` (run by `./scripts/bench.sh`): measures the pipeline against the limits of
//! the parts it is built from, on real servers, with release binaries and realistic rows from the
//! sandbox generator (~1.5 KB, Japanese text). Prints figures as it goes; the last line is one
//! JSON object, a [`report::Report`] (its fields document every figure).
//!
//! 1. Throughput ([`pipeline`]): N raw rows already in QOO10_RAW; normalizer and sink started;
//!    time until all N order versions are in ClickHouse. Limits on the same payloads
//!    ([`limits`]): a bare JetStream two-hop copy, a bare ClickHouse insert of the same
//!    canonical rows, and both at once (the bound for anything doing both jobs on the same two
//!    cores). Pipeline, copy and both-at-once run three times each; the medians count.
//! 2. Latency: a steady rate for a while; p50/p99 from the QAPI response time (fetched_at, set at
//!    publish) to ClickHouse confirming the insert (the sink's histogram).
//! 3. Memory: peak RSS (VmHWM) of normalizer and sink in 1 and 2, of the fetcher in 4.
//! 4. Fetcher scale ([`fetcher`]): many sandbox shops with 50 ms latency, `fetcher --once`: wall
//!    time against the minimum the configured rate limits allow, requests over the limit, CPU
//!    seconds, RSS; and the planner's call budget per shop.

mod center;
mod env;
mod fetcher;
mod history;
mod limits;
mod load;
mod pipeline;
mod report;
mod store_modes;

use anyhow::Context;
use clap::Parser;

use env::{Env, clean_up, hundredths};
use report::{Report, RssPeak};

#[derive(Debug, Parser)]
#[command(name = "pipeline-bench", about)]
struct Args {
    /// Raw rows for the throughput run.
    #[arg(long, default_value_t = 200_000)]
    rows: usize,
    /// Rows per second in the latency run.
    #[arg(long, default_value_t = 2_000)]
    latency_rate: u64,
    /// Seconds of the latency run.
    #[arg(long, default_value_t = 30)]
    latency_seconds: u64,
    /// Sandbox shops in the fetcher run (0 skips it).
    #[arg(long, default_value_t = 2_000)]
    fetcher_shops: u32,
    /// Keep this run's streams and databases for inspection (by default they are deleted at the
    /// end: one run stores about 7 GB in JetStream and ClickHouse).
    #[arg(long)]
    keep: bool,
    /// Only the pipeline's throughput runs (no limits, latency or fetcher run): for profiling a
    /// change to the stages. Prints their figures and no JSON line.
    #[arg(long)]
    pipeline_only: bool,
    /// First store this many order lines of history (a year of 2,000 shops) and measure the
    /// sink's start, memory, throughput and the analysts' queries on it (`"history"`).
    #[arg(long, default_value_t = 0)]
    history_lines: u64,
    /// With `--history-lines`: only the history phase; the JSON line holds `rows` and `history`.
    #[arg(long)]
    history_only: bool,
    /// Only the alert center with this many open alerts (2,000 shops): its load, page and API
    /// times and the sink's RSS; the JSON line holds `center`.
    #[arg(long, default_value_t = 0)]
    center_alerts: u64,
    /// Only the fetcher run (`--fetcher-shops`); the JSON line holds `fetcher`.
    #[arg(long)]
    fetcher_only: bool,
    /// Only the ways of storing this many rows in JetStream (one message per row, per page,
    /// atomic batches, several streams) on the running server; the JSON line holds `store_modes`.
    #[arg(long, default_value_t = 0)]
    store_modes: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    runtime::install_crypto_provider();
    let env = Env::from_environment()?;
    let report = measure(&env, &args).await;
    if !args.keep {
        clean_up(&env).await;
    }
    if let Some(report) = report? {
        println!("{}", serde_json::to_string(&report)?);
    }
    Ok(())
}

/// Every phase in turn; `None` with `--pipeline-only`.
async fn measure(env: &Env, args: &Args) -> anyhow::Result<Option<Report>> {
    if args.center_alerts > 0 {
        let center = center::measure(env, args.center_alerts).await?;
        println!("{}", serde_json::to_string(&serde_json::json!({"center": center}))?);
        return Ok(None);
    }
    if args.fetcher_only {
        let run = fetcher::fetcher_scale(env, args.fetcher_shops, &env.name("fetch")).await?;
        println!("{}", serde_json::to_string(&serde_json::json!({"fetcher": run}))?);
        return Ok(None);
    }
    if args.store_modes > 0 {
        let rows: Vec<bytes::Bytes> = load::payloads(args.store_modes, "x").into_iter().map(|(_, b)| b).collect();
        let modes = store_modes::measure(env, &rows).await?;
        println!("{}", serde_json::to_string(&serde_json::json!({"store_modes": modes}))?);
        return Ok(None);
    }
    let nats = env::nats_settings(env).await;
    println!(
        "nats-server {}, sync_interval {}, the stages publish {}",
        nats.version, nats.sync_interval, nats.publish_mode
    );
    let from = env.name("pipe");
    let items = load::payloads(args.rows, &from);
    let avg = items.iter().map(|(_, b)| b.len()).sum::<usize>() / items.len().max(1);
    println!("payloads: {} raw rows, {avg} bytes on average", items.len());
    let history = match args.history_lines {
        0 => None,
        lines => Some(history_phase(env, lines, &items, &from).await?),
    };
    if args.history_only {
        let history = history.context("--history-only needs --history-lines N")?;
        println!("{}", serde_json::to_string(&serde_json::json!({"rows": items.len(), "history": history}))?);
        return Ok(None);
    }
    let throughput = pipeline::three_runs(env, &items, &from).await?;
    if args.pipeline_only {
        println!("peak RSS: normalizer {:.0} MB, sink {:.0} MB", throughput.rss_normalizer, throughput.rss_sink);
        let per_order = report::CpuPerOrder::of(&throughput.median.cpu, items.len());
        println!("CPU µs per order (median run): {}", serde_json::to_string(&per_order)?);
        return Ok(None);
    }
    // The limits are what the machine does with nothing else running (ClickHouse has finished
    // merging the pipeline's parts).
    let copy = limits::two_hop_copies(env, &items, &from).await?;
    let insert = limits::clickhouse_insert(env, &items).await?;
    let pipeline = throughput.median.per_s;
    let efficiency = pipeline / copy.per_s.min(insert);
    println!("efficiency: {efficiency:.2}");
    let (both, both_runs) = limits::both_at_once(env, &items, &from).await?;
    let colocated = pipeline / both;
    println!(
        "limit: both at once (two-hop copy and ClickHouse insert) {both:.0} orders/s (the median of three); \
         pipeline / that: {colocated:.2}"
    );
    let latency = pipeline::latency(env, args.latency_rate, args.latency_seconds, &env.name("lat")).await?;
    let fetcher = match args.fetcher_shops {
        0 => None,
        shops => Some(fetcher::fetcher_scale(env, shops, &env.name("fetch")).await?),
    };
    Ok(Some(Report {
        nats,
        rows: items.len(),
        row_bytes_avg: avg,
        pipeline_orders_per_s: pipeline.round(),
        pipeline_runs_orders_per_s: throughput.runs,
        pipeline_cpu_us_per_order: report::CpuPerOrder::of(&throughput.median.cpu, items.len()),
        pipeline_cpu_s: throughput.median.cpu,
        limit_jetstream_two_hop_per_s: copy.per_s.round(),
        limit_jetstream_two_hop_runs_per_s: copy.runs,
        limit_jetstream_nats_cpu_s: copy.nats_cpu,
        limit_jetstream_client_cpu_s: copy.client_cpu,
        limit_clickhouse_rows_per_s: insert.round(),
        efficiency: hundredths(efficiency),
        limit_both_at_once_per_s: both.round(),
        limit_both_at_once_runs_per_s: both_runs,
        efficiency_against_both_at_once: hundredths(colocated),
        latency_rate_per_s: args.latency_rate,
        latency_p50_ms: (latency.p50 * 1e3).round(),
        latency_p99_ms: (latency.p99 * 1e3).round(),
        rss_peak_mb: RssPeak {
            normalizer: throughput.rss_normalizer.max(latency.rss_normalizer).round(),
            sink: throughput.rss_sink.max(latency.rss_sink).round(),
            fetcher: fetcher.as_ref().map(|f| f.rss_peak_mb.round()),
        },
        fetcher,
        fetcher_calls: fetcher::call_budget(),
        history,
    }))
}

/// `--history-lines`: the history stored, the sink started on it, the analysts' queries, then
/// the throughput run into an empty database and into the history's, one after the other.
async fn history_phase(
    env: &Env,
    lines: u64,
    items: &[(String, bytes::Bytes)],
    from: &str,
) -> anyhow::Result<history::History> {
    let name = env.name("hist");
    let config = env.config(&name, "")?;
    let insert_s = history::store(env, &name, lines).await?;
    let (sink_start_s, start_rss) = history::sink_start(env, &config).await?;
    let history_query_ms = history::queries(env, &name).await?;
    let empty_prefix = env.name("histempty");
    let empty = history::observed_run(env, &load::under_prefix(items, from, &empty_prefix), &empty_prefix, 0).await?;
    env::wait_for_quiet(env).await;
    let before = env::ch_count(&env.ch_url, &format!("SELECT count() FROM {name}.order_versions")).await;
    let full = history::observed_run(env, &load::under_prefix(items, from, &name), &name, before).await?;
    Ok(history::History {
        lines,
        insert_s,
        sink_start_s,
        sink_rss_peak_mb: start_rss.max(full.rss_sink.round()),
        pipeline_orders_per_s: full.per_s.round(),
        pipeline_orders_per_s_empty: empty.per_s.round(),
        history_query_ms,
    })
}
