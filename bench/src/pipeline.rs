//! The pipeline itself: throughput from a full raw stream, and latency at a steady rate.

use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use serde_json::json;

use crate::env::{Env, connect, cpu_of_all, cpu_s, peak_rss_mb, stop, tenths, used, wait_for_quiet, wait_for_rows};
use crate::limits::median;
use crate::load::{payloads, publish_all, under_prefix};
use crate::report::CpuSeconds;

/// One throughput run: what `pipeline_run` measured.
pub struct PipelineRun {
    pub per_s: f64,
    /// CPU seconds of each process during the run.
    pub cpu: CpuSeconds,
    pub rss_normalizer: f64,
    pub rss_sink: f64,
}

/// The pipeline's throughput runs (three, each on streams and a database of its own): the
/// median run, each run's figure, and the normalizer's and sink's peak RSS over all three.
pub struct Throughput {
    pub median: PipelineRun,
    pub runs: Vec<f64>,
    pub rss_normalizer: f64,
    pub rss_sink: f64,
}

/// `items` are under the prefix `from`; each run gets its own copy of them.
pub async fn three_runs(env: &Env, items: &[(String, Bytes)], from: &str) -> anyhow::Result<Throughput> {
    let mut runs: Vec<PipelineRun> = Vec::new();
    for i in 1..=3 {
        let prefix = env.name(&format!("pipe{i}"));
        let run = pipeline_run(env, &under_prefix(items, from, &prefix), &prefix, 0).await?;
        let cpu = serde_json::to_string(&run.cpu)?;
        println!("pipeline run {i} of 3: {:.0} orders/s; cpu seconds: {cpu}", run.per_s);
        runs.push(run);
        // The next run, and the limits, start once ClickHouse has merged this run's parts.
        wait_for_quiet(env).await;
    }
    let figures = runs.iter().map(|r| r.per_s.round()).collect();
    let (rss_normalizer, rss_sink) =
        runs.iter().fold((0.0f64, 0.0f64), |(n, s), r| (n.max(r.rss_normalizer), s.max(r.rss_sink)));
    let median = median(runs, |r| r.per_s);
    println!(
        "pipeline: {:.0} orders/s (the median of three; raw in JetStream → order versions in ClickHouse)",
        median.per_s
    );
    Ok(Throughput { median, runs: figures, rss_normalizer, rss_sink })
}

/// `items` published to QOO10_RAW under `prefix`; then the normalizer and the sink are started,
/// and timed until every row is an order version in ClickHouse (database `prefix`, which held
/// `before` order versions).
pub async fn pipeline_run(
    env: &Env,
    items: &[(String, Bytes)],
    prefix: &str,
    before: u64,
) -> anyhow::Result<PipelineRun> {
    let (js, _) = connect(env, prefix).await?;
    publish_all(&js, items).await?;
    // BENCH_EXTRA_CONFIG: more pipeline.toml text for experiments (batch sizes, ...).
    let config = env.config(prefix, &std::env::var("BENCH_EXTRA_CONFIG").unwrap_or_default())?;
    let started = Instant::now();
    let servers_before = (cpu_of_all("nats-server"), cpu_of_all("clickhouse-serv"));
    let normalizer = env.spawn("normalizer", &config, "127.0.0.1:0", &[])?;
    let sink = env.spawn("sink", &config, "127.0.0.1:0", &[])?;
    wait_for_rows(env, prefix, before as usize + items.len(), Duration::from_secs(900)).await?;
    let wall = started.elapsed().as_secs_f64();
    let nats = used(servers_before.0, cpu_of_all("nats-server"));
    let ch = used(servers_before.1, cpu_of_all("clickhouse-serv"));
    let (rss_normalizer, rss_sink) = (peak_rss_mb(normalizer.id()), peak_rss_mb(sink.id()));
    // Where the two cores went: each process's CPU seconds over the run.
    let cpu = CpuSeconds {
        wall_s: tenths(wall),
        normalizer: cpu_s(normalizer.id()),
        sink: cpu_s(sink.id()),
        nats_server: tenths(nats.0 + nats.1),
        clickhouse: tenths(ch.0 + ch.1),
        clickhouse_system: tenths(ch.1),
    };
    if ch.1 > 0.55 * (ch.0 + ch.1) {
        println!(
            "warning: clickhouse-server spent {:.1} of its {:.1} CPU s in the kernel: file creation is slow, as on \
             an ext4 file system without a journal for some minutes after many files were deleted (a previous \
             run's clean-up, a test suite). Figures of this run are low; run again a few minutes later.",
            ch.1,
            ch.0 + ch.1
        );
    }
    stop(normalizer);
    stop(sink);
    Ok(PipelineRun { per_s: items.len() as f64 / wall, cpu, rss_normalizer, rss_sink })
}

/// What the latency run measured: end-to-end quantiles (seconds) and the services' peak RSS.
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
    pub rss_normalizer: f64,
    pub rss_sink: f64,
}

/// `rate` rows a second for `seconds`, each stamped as it is published.
pub async fn latency(env: &Env, rate: u64, seconds: u64, prefix: &str) -> anyhow::Result<Latency> {
    let (js, _) = connect(env, prefix).await?;
    let config = env.config(prefix, "")?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let normalizer = env.spawn("normalizer", &config, "127.0.0.1:0", &[])?;
    let sink = env.spawn("sink", &config, &format!("127.0.0.1:{port}"), &[])?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let total = (rate * seconds) as usize;
    let items = payloads(total, prefix);
    let started = Instant::now();
    let per_tick = (rate / 100).max(1) as usize;
    let mut sent = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    while sent < total {
        tick.tick().await;
        let end = (sent + per_tick).min(total);
        let mut acks = Vec::new();
        for (subject, payload) in &items[sent..end] {
            // fetched_at = now: the latency measured is publish → ClickHouse.
            let mut env_json: serde_json::Value = serde_json::from_slice(payload)?;
            env_json["fetched_at"] = json!(Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
            acks.push(js.publish(subject.clone(), Bytes::from(serde_json::to_vec(&env_json)?)).await?);
        }
        for a in acks {
            a.await?;
        }
        sent = end;
    }
    let achieved = total as f64 / started.elapsed().as_secs_f64();
    wait_for_rows(env, prefix, total, Duration::from_secs(120)).await?;
    let metrics = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await?.text().await?;
    let p50 = quantile(&metrics, "end_to_end_latency_seconds", 0.50).unwrap_or(f64::NAN);
    let p99 = quantile(&metrics, "end_to_end_latency_seconds", 0.99).unwrap_or(f64::NAN);
    let (rn, rs) = (peak_rss_mb(normalizer.id()), peak_rss_mb(sink.id()));
    stop(normalizer);
    stop(sink);
    println!(
        "latency: {achieved:.0} rows/s for {seconds} s: p50 {:.0} ms, p99 {:.0} ms (publish → ClickHouse)",
        p50 * 1e3,
        p99 * 1e3
    );
    Ok(Latency { p50, p99, rss_normalizer: rn, rss_sink: rs })
}

/// p-quantile from a Prometheus histogram's cumulative buckets (linear within a bucket).
fn quantile(metrics: &str, name: &str, q: f64) -> Option<f64> {
    let mut buckets: Vec<(f64, f64)> = metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}_bucket{{")))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let v: f64 = l.rsplit(' ').next()?.parse().ok()?;
            Some((if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? }, v))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last()?.1;
    let want = q * total;
    let (mut lo, mut below) = (0.0, 0.0);
    for (le, count) in buckets {
        if count >= want {
            if le.is_infinite() {
                return Some(lo);
            }
            let frac = if count > below { (want - below) / (count - below) } else { 1.0 };
            return Some(lo + (le - lo) * frac);
        }
        lo = le;
        below = count;
    }
    None
}
