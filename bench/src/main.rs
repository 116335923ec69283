//! `pipeline-bench` (run by `./scripts/bench.sh`): measures the pipeline against the limits of
//! the parts it is built from, on real servers, with release binaries and realistic rows from the
//! sandbox generator (~1.5 KB, Japanese text). Prints figures as it goes; the last line is one
//! JSON object.
//!
//! 1. Throughput: N raw rows already in QOO10_RAW; normalizer and sink started; time until all
//!    N order versions are in ClickHouse. Limits on the same payloads: a bare JetStream two-hop copy
//!    (consume, publish, ack; consume, ack) and a bare ClickHouse insert of the same canonical rows
//!    (the sink's three tables). efficiency = pipeline / min(limits). Also both bare parts run at
//!    the same time (`limit_both_at_once_per_s`): the pipeline needs both on the same cores, and
//!    the bare copy alone already keeps most of two cores busy, so that is the bound for anything
//!    doing both jobs on such a machine. The two shared cores make one run's figure noisy: the
//!    pipeline, the copy and both-at-once run three times each, and the medians count (each run's
//!    figure is in the JSON too).
//! 2. Latency: a steady rate for a while; p50/p99 from the QAPI response time (fetched_at, set at
//!    publish) to ClickHouse confirming the insert (the sink's histogram).
//! 3. Memory: peak RSS (VmHWM) of normalizer and sink in 1 and 2, of the fetcher in 4.
//! 4. Fetcher scale: many sandbox shops with 50 ms latency, `fetcher --once`: wall time against
//!    the minimum the configured rate limits allow, requests over the limit, CPU seconds, RSS.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use async_nats::jetstream;
use bytes::Bytes;
use chrono::{NaiveDateTime, Utc};
use clap::Parser;
use schemas::config::{ClickHouseConfig, NatsConfig};
use schemas::raw::{RawEnvelope, RawQuery, RowKind};
use schemas::subjects::{self, Namespace};
use serde_json::json;
use serde_json::value::RawValue;

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
}

struct Env {
    nats_url: String,
    ch_url: String,
    bin: PathBuf,
    work: PathBuf,
    stamp: String,
}

impl Env {
    fn config(&self, prefix: &str, extra: &str) -> anyhow::Result<PathBuf> {
        let path = self.work.join(format!("{prefix}.toml"));
        std::fs::write(
            &path,
            format!(
                "[nats]\nurl = \"{}\"\nsubject_prefix = \"{prefix}\"\nduplicate_window = \"2m\"\n\n[clickhouse]\nurl = \"{}\"\ndatabase = \"{prefix}\"\n\n{extra}\n",
                self.nats_url, self.ch_url
            ),
        )?;
        Ok(path)
    }

    fn spawn(&self, name: &str, config: &Path, http: &str, args: &[&str]) -> anyhow::Result<Child> {
        // One log per service and run phase (the config file is the phase's).
        let phase = config.file_stem().and_then(|s| s.to_str()).unwrap_or("run");
        let log = std::fs::File::create(self.work.join(format!("{name}-{phase}.log")))?;
        Command::new(self.bin.join(name))
            .arg("--config")
            .arg(config)
            .args(args)
            .env("HTTP_LISTEN", http)
            .env("RUST_LOG", "warn")
            .env_remove("NATS_URL")
            .env_remove("CLICKHOUSE_URL")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {name}"))
    }
}

fn peak_rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// CPU seconds (user, system) a process has used so far.
fn cpu_times(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the `(comm)`, which may hold spaces: utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    (field(11) / 100.0, field(12) / 100.0)
}

/// CPU seconds (user + system) a process has used so far.
fn cpu_s(pid: u32) -> f64 {
    let (user, system) = cpu_times(pid);
    hundredths(user + system)
}

/// CPU seconds (user, system) of every process whose name is `comm` (the local NATS and
/// ClickHouse servers).
fn cpu_of_all(comm: &str) -> (f64, f64) {
    let Ok(dir) = std::fs::read_dir("/proc") else { return (0.0, 0.0) };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm))
        .map(cpu_times)
        .fold((0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1))
}

/// Seconds to one decimal.
fn tenths(s: f64) -> f64 {
    (s * 10.0).round() / 10.0
}

/// To two decimals (seconds, ratios).
fn hundredths(s: f64) -> f64 {
    (s * 100.0).round() / 100.0
}

/// (user, system) CPU seconds used between two readings.
fn used(before: (f64, f64), after: (f64, f64)) -> (f64, f64) {
    (after.0 - before.0, after.1 - before.1)
}

fn stop(mut child: Child) {
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Realistic raw envelopes (v3 rows of the sandbox generator), `fetched_at` one microsecond apart.
fn payloads(n: usize, prefix: &str) -> Vec<(String, Bytes)> {
    let now = NaiveDateTime::parse_from_str("2026-11-29 12:00:00", "%Y-%m-%d %H:%M:%S").expect("date");
    let ns = Namespace::new(prefix);
    let shops = 100usize;
    let per_shop = n.div_ceil(shops);
    let base = Utc::now();
    let mut out = Vec::with_capacity(n);
    for s in 0..shops {
        let shop = format!("bench-{s}");
        for o in sandbox::generate::orders(7, s as u32 + 1, &shop, per_shop, 10, now) {
            if out.len() == n {
                break;
            }
            let row = sandbox::render::v3_row(&o, "bench-seller", &[o.order_no]);
            let env = RawEnvelope {
                schema_version: 1,
                shop: shop.clone(),
                kind: RowKind::Order,
                method: "ShippingBasic.GetShippingInfo_v3".into(),
                query: RawQuery { status: o.status, from: "20261119".into(), to: "20261129".into(), condition: 1 },
                fetched_at: base + chrono::Duration::microseconds(out.len() as i64),
                row: RawValue::from_string(row.to_string()).expect("row JSON"),
                cart_claims: Vec::new(),
                first_import: false,
                new_in_known_cart: false,
            };
            out.push((ns.raw(&shop), Bytes::from(serde_json::to_vec(&env).expect("envelope"))));
        }
    }
    out
}

async fn publish_all(js: &jetstream::Context, items: &[(String, Bytes)]) -> anyhow::Result<()> {
    let outgoing = items.iter().map(|(subject, payload)| runtime::nats::Outgoing {
        subject: subject.clone(),
        headers: async_nats::HeaderMap::new(),
        payload: payload.clone(),
    });
    for acked in runtime::nats::publish_all(js, outgoing).await {
        acked?;
    }
    Ok(())
}

async fn ch_count(ch_url: &str, sql: &str) -> u64 {
    let Ok(r) = reqwest::Client::new().post(format!("{ch_url}/")).body(sql.to_owned()).send().await else { return 0 };
    r.text().await.ok().and_then(|t| t.trim().parse().ok()).unwrap_or(0)
}

async fn wait_for_rows(env: &Env, db: &str, n: usize, limit: Duration) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        if ch_count(&env.ch_url, &format!("SELECT count() FROM {db}.order_versions")).await >= n as u64 {
            return Ok(started.elapsed());
        }
        anyhow::ensure!(started.elapsed() < limit, "{n} rows not in {db}.order_versions within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits (at most two minutes) until ClickHouse runs no merge.
async fn wait_for_quiet(env: &Env) {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(120)
        && ch_count(&env.ch_url, "SELECT count() FROM system.merges").await > 0
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("waited {:.1} s for ClickHouse's merges to finish", started.elapsed().as_secs_f64());
}

async fn connect(env: &Env, prefix: &str) -> anyhow::Result<(jetstream::Context, NatsConfig)> {
    let mut cfg = NatsConfig::default();
    (cfg.url, cfg.subject_prefix) = (env.nats_url.clone(), prefix.to_owned());
    let (_, js) = runtime::nats::connect_jetstream(&cfg, "pipeline-bench").await?;
    Ok((js, cfg))
}

/// The bare JetStream limit, prepared: the payloads published and both hops' consumers made.
/// [`TwoHop::run`] is the timed part: the same payloads copied across two hops, as the pipeline
/// does (consume, publish, ack; consume, ack).
struct TwoHop {
    js: jetstream::Context,
    first: jetstream::consumer::PullConsumer,
    second: jetstream::consumer::PullConsumer,
    target: String,
    n: usize,
}

async fn prepare_two_hop(env: &Env, items: &[(String, Bytes)], prefix: &str) -> anyhow::Result<TwoHop> {
    let (js, cfg) = connect(env, prefix).await?;
    let ns = Namespace::from_config(&cfg);
    publish_all(&js, items).await?;
    let first = runtime::nats::durable_consumer(
        &js,
        &ns.stream(subjects::Stream::Raw),
        "hop1",
        ns.stream_subjects(subjects::Stream::Raw),
        Duration::from_secs(60),
    )
    .await?;
    let second = runtime::nats::durable_consumer(
        &js,
        &ns.stream(subjects::Stream::Orders),
        "hop2",
        ns.stream_subjects(subjects::Stream::Orders),
        Duration::from_secs(60),
    )
    .await?;
    Ok(TwoHop { js, first, second, target: ns.orders("bench"), n: items.len() })
}

impl TwoHop {
    async fn run(self) -> anyhow::Result<()> {
        let TwoHop { js, first, second, target, n } = self;
        let hop1 = tokio::spawn(async move {
            let mut done = 0;
            while done < n {
                let batch = runtime::nats::fetch_batch(&first, 500, Duration::from_millis(500)).await;
                let mut acks = Vec::with_capacity(batch.len());
                for m in &batch {
                    acks.push(js.publish(target.clone(), m.payload.clone()).await?);
                }
                for a in acks {
                    a.await?;
                }
                for m in &batch {
                    m.ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
                }
                done += batch.len();
            }
            anyhow::Ok(())
        });
        let mut done = 0;
        while done < n {
            let batch = runtime::nats::fetch_batch(&second, 5_000, Duration::from_millis(500)).await;
            for m in &batch {
                m.ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
            }
            done += batch.len();
        }
        hop1.await?
    }
}

/// The bare ClickHouse limit, prepared: the same canonical rows the pipeline makes of the
/// payloads. [`ClickHouseInsert::run`] is the timed part: the rows written as the sink writes
/// them (its three tables, 5,000 orders per insert).
struct ClickHouseInsert {
    store: sink::store::Store,
    orders: Vec<sink::rows::OrderRow>,
    contacts: Vec<sink::rows::ContactRow>,
}

async fn prepare_clickhouse(env: &Env, items: &[(String, Bytes)], db: &str) -> anyhow::Result<ClickHouseInsert> {
    let mut cfg = ClickHouseConfig::default();
    cfg.url = env.ch_url.clone();
    cfg.database = db.to_owned();
    let store = sink::store::Store::new(&cfg);
    store.migrate().await?;
    let statuses = schemas::status::StatusMap::default();
    let mut orders = Vec::with_capacity(items.len());
    let mut contacts = Vec::with_capacity(items.len());
    for (i, (_, p)) in items.iter().enumerate() {
        let env: RawEnvelope = serde_json::from_slice(p)?;
        let o = normalizer::normalize::normalize(&env, i as u64, &statuses).map_err(|e| anyhow::anyhow!("{e}"))?;
        let (row, contact) = sink::rows::rows(o)?;
        orders.push(row);
        contacts.extend(contact);
    }
    Ok(ClickHouseInsert { store, orders, contacts })
}

impl ClickHouseInsert {
    async fn run(self) -> anyhow::Result<()> {
        for (o, c) in self.orders.chunks(5_000).zip(self.contacts.chunks(5_000)) {
            self.store.write(o, c).await?;
        }
        Ok(())
    }
}

/// The same payloads on the subjects of another run's prefix (each run has streams of its own).
fn under_prefix(items: &[(String, Bytes)], from: &str, to: &str) -> Vec<(String, Bytes)> {
    items.iter().map(|(s, b)| (s.replacen(from, to, 1), b.clone())).collect()
}

/// The run whose figure is the median (of three, here).
fn median<T>(mut runs: Vec<T>, figure: impl Fn(&T) -> f64) -> T {
    runs.sort_by(|a, b| figure(a).total_cmp(&figure(b)));
    runs.swap_remove(runs.len() / 2)
}

/// Items per second of a prepared, timed part.
async fn rate(n: usize, run: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<f64> {
    let started = Instant::now();
    run.await?;
    Ok(n as f64 / started.elapsed().as_secs_f64())
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

/// One throughput run: what `pipeline_run` measured.
struct PipelineRun {
    per_s: f64,
    /// CPU seconds of each process during the run.
    cpu: serde_json::Value,
    rss_normalizer: f64,
    rss_sink: f64,
}

/// `items` published to QOO10_RAW under `prefix`; then the normalizer and the sink are started,
/// and timed until every row is an order version in ClickHouse.
async fn pipeline_run(env: &Env, items: &[(String, Bytes)], prefix: &str) -> anyhow::Result<PipelineRun> {
    let (js, _) = connect(env, prefix).await?;
    publish_all(&js, items).await?;
    // BENCH_EXTRA_CONFIG: more pipeline.toml text for experiments (batch sizes, ...).
    let config = env.config(prefix, &std::env::var("BENCH_EXTRA_CONFIG").unwrap_or_default())?;
    let started = Instant::now();
    let servers_before = (cpu_of_all("nats-server"), cpu_of_all("clickhouse-serv"));
    let normalizer = env.spawn("normalizer", &config, "127.0.0.1:0", &[])?;
    let sink = env.spawn("sink", &config, "127.0.0.1:0", &[])?;
    wait_for_rows(env, prefix, items.len(), Duration::from_secs(900)).await?;
    let wall = started.elapsed().as_secs_f64();
    let nats = used(servers_before.0, cpu_of_all("nats-server"));
    let ch = used(servers_before.1, cpu_of_all("clickhouse-serv"));
    let (rss_normalizer, rss_sink) = (peak_rss_mb(normalizer.id()), peak_rss_mb(sink.id()));
    // Where the two cores went: each process's CPU seconds over the run.
    let cpu = json!({
        "wall_s": tenths(wall),
        "normalizer": cpu_s(normalizer.id()),
        "sink": cpu_s(sink.id()),
        "nats_server": tenths(nats.0 + nats.1),
        "clickhouse": tenths(ch.0 + ch.1),
        // ClickHouse's kernel time: creating a part's files is most of it. On an ext4 file system
        // without a journal (this project's machines) it grows several-fold for a few minutes
        // after many files were deleted (the inode allocator skips recently deleted inodes), e.g.
        // right after a previous run's clean-up or a test suite's dropped databases.
        "clickhouse_system": tenths(ch.1),
    });
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

async fn latency(env: &Env, rate: u64, seconds: u64, prefix: &str) -> anyhow::Result<(f64, f64, f64, f64)> {
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
    Ok((p50, p99, rn, rs))
}

/// The calls a shop makes per day after its first import, from the fetcher's own planner: for a
/// shop with the default settings, for a busy one (1,000 orders a day, 2 % made to order with
/// 30-day lead times, so lines stay open 30 days past the look-back; no paging in QAPI, so the
/// number of orders does not change the count), and with v2 (which has no one call for 1–3).
fn call_budget() -> serde_json::Value {
    use fetcher::plan::{Cadence, ShopPlan, calls_in};
    use schemas::config::{ApiVersion, FetcherConfig};
    let f = FetcherConfig::default();
    let d = |x: Duration| chrono::Duration::from_std(x).expect("a default duration");
    let cadence = Cadence {
        slow_every: d(f.slow_calls_every),
        long_every: d(f.long_windows_every),
        overlap: d(f.window_overlap),
        follow_days: f.follow_days,
    };
    let shop = ShopPlan { version: ApiVersion::V3, statuses: vec![1, 2, 3, 4, 5], claims: true, lookback_days: 7 };
    let interval = chrono::Duration::minutes(30);
    let per_day = |shop: &ShopPlan, back: i64| calls_in(7, interval, shop, &cadence, back) as f64 / 7.0;
    let default = per_day(&shop, 0);
    let busy = per_day(&shop, 30);
    let v2 = per_day(&ShopPlan { version: ApiVersion::V2, ..shop.clone() }, 30);
    let limit = schemas::config::Qoo10Config::default().global_requests_per_second * 86_400.0;
    println!(
        "fetcher calls per shop per day: default {default:.0}, busy {busy:.0}, v2 {v2:.0}; the default global limit          ({limit:.0} a day) fits {:.0} busy shops",
        limit / busy
    );
    json!({
        "per_shop_per_day_default": default.round(), "per_shop_per_day_busy": busy.round(),
        "per_shop_per_day_busy_v2": v2.round(), "default_global_limit_per_day": limit,
        "busy_shops_within_default_limit": (limit / busy).floor(),
        "share_of_default_limit_for_2000_busy_shops": hundredths(2000.0 * busy / limit),
    })
}

async fn fetcher_scale(env: &Env, shops: u32, prefix: &str) -> anyhow::Result<serde_json::Value> {
    let (per_shop, global) = (1.0, 200.0);
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut sandbox = Command::new(env.bin.join("qoo10-sandbox"))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--shops", &shops.to_string(), "--orders", "10"])
        .args(["--rate-limit-per-shop", &per_shop.to_string(), "--rate-limit-global", &global.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while http.get(format!("{base}/_sandbox/health")).send().await.is_err() {
        anyhow::ensure!(Instant::now() < deadline, "sandbox did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    http.post(format!("{base}/_sandbox/faults")).json(&json!({"kind": "latency", "ms": 50})).send().await?;
    let mut extra = format!(
        "[qoo10]\nbase_url = \"{base}/GMKT.INC.Front.QAPIService/ebayjapan.qapi\"\nrequests_per_second = {per_shop}\n\
         global_requests_per_second = {global}\n\n[fetcher]\nmax_concurrent_shops = {shops}\n\n"
    );
    for n in 1..=shops {
        extra.push_str(&format!(
            "[[shops]]\nid = \"shop-{n}\"\nuser_id = \"sandbox-seller-{n}\"\napi_key = \"sandbox-api-key-{n}\"\n\
             password = \"sandbox-password-{n}\"\nstatuses = [2]\nlookback_days = 7\nclaims = false\n"
        ));
    }
    let config = env.config(prefix, &extra)?;
    let timing = env.work.join(format!("fetcher-time-{}.txt", env.stamp));
    let status = Command::new("/usr/bin/time")
        .arg("-o")
        .arg(&timing)
        .args(["-f", "%e %U %S %M"])
        .arg(env.bin.join("fetcher"))
        .arg("--config")
        .arg(&config)
        .arg("--once")
        .env("HTTP_LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(env.work.join(format!("fetcher-{}.log", env.stamp)))?)
        .status()?;
    let t = std::fs::read_to_string(&timing)?;
    let f: Vec<f64> = t.lines().last().unwrap_or("").split_whitespace().filter_map(|v| v.parse().ok()).collect();
    let stats: serde_json::Value = http.get(format!("{base}/_sandbox/stats")).send().await?.json().await?;
    let _ = sandbox.kill();
    let _ = sandbox.wait();
    let requests = stats["requests"].as_f64().unwrap_or(0.0);
    // A shop's first request goes at once, each further one a period later.
    let per_shop_requests = requests / f64::from(shops.max(1));
    let min_wall = (requests / global).max((per_shop_requests - 1.0).max(1.0) / per_shop);
    let wall = *f.first().unwrap_or(&f64::NAN);
    println!(
        "fetcher: {shops} shops, {requests} requests in {wall:.1} s (rate-limit minimum {min_wall:.1} s, ratio {:.2}), \
         {} violations, {:.1} CPU s, {:.0} MB peak RSS, {status}",
        wall / min_wall,
        stats["violations"],
        f.get(1).unwrap_or(&0.0) + f.get(2).unwrap_or(&0.0),
        f.get(3).unwrap_or(&0.0) / 1024.0
    );
    Ok(json!({
        "shops": shops, "requests": requests, "wall_s": wall, "min_wall_s": min_wall, "ratio_to_min": wall / min_wall,
        "violations": stats["violations"], "max_requests_in_a_second": stats["max_requests_in_a_second"],
        "cpu_s": hundredths(f.get(1).unwrap_or(&0.0) + f.get(2).unwrap_or(&0.0)), "rss_peak_mb": f.get(3).unwrap_or(&0.0) / 1024.0,
        "ok": status.success(),
    }))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    runtime::install_crypto_provider();
    let exe = std::env::current_exe()?;
    let env = Env {
        nats_url: std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into()),
        ch_url: std::env::var("CLICKHOUSE_URL").unwrap_or_else(|_| "http://127.0.0.1:8123".into()),
        bin: exe.parent().context("binary directory")?.to_path_buf(),
        work: std::env::temp_dir().join("qoo10-bench"),
        stamp: Utc::now().format("%Y%m%d%H%M%S").to_string(),
    };
    std::fs::create_dir_all(&env.work)?;
    let p = |s: &str| format!("bench_{s}_{}", env.stamp);

    // 1. Throughput and limits.
    let items = payloads(args.rows, &p("pipe"));
    let avg = items.iter().map(|(_, b)| b.len()).sum::<usize>() / items.len().max(1);
    println!("payloads: {} raw rows, {avg} bytes on average", items.len());
    // The machine's two cores are shared: one run's figure can be 20 % off the next one's. The
    // pipeline runs three times, each on streams and a database of its own; the median counts.
    let mut runs: Vec<PipelineRun> = Vec::new();
    for i in 1..=3 {
        let prefix = p(&format!("pipe{i}"));
        let run = pipeline_run(&env, &under_prefix(&items, &p("pipe"), &prefix), &prefix).await?;
        println!("pipeline run {i} of 3: {:.0} orders/s; cpu seconds: {}", run.per_s, run.cpu);
        runs.push(run);
        // The next run, and the limits, start once ClickHouse has merged this run's parts.
        wait_for_quiet(&env).await;
    }
    let pipeline_runs: Vec<f64> = runs.iter().map(|r| r.per_s.round()).collect();
    let (rss_n1, rss_s1) = runs.iter().fold((0.0f64, 0.0f64), |(n, s), r| (n.max(r.rss_normalizer), s.max(r.rss_sink)));
    let PipelineRun { per_s: pipeline, cpu, .. } = median(runs, |r| r.per_s);
    println!("pipeline: {pipeline:.0} orders/s (the median of three; raw in JetStream → order versions in ClickHouse)");
    if args.pipeline_only {
        println!("peak RSS: normalizer {rss_n1:.0} MB, sink {rss_s1:.0} MB");
        if !args.keep {
            clean_up(&env).await;
        }
        return Ok(());
    }
    // The limits are what the machine does with nothing else running (ClickHouse has finished
    // merging the pipeline's parts, above).
    // The bare copy's speed moves a lot between runs on this machine (31k–58k msg/s seen): it is
    // measured three times, each on streams of its own, and the median is the limit.
    let mut copies: Vec<(f64, f64, f64)> = Vec::new();
    for i in 1..=3 {
        let prefix = p(&format!("hop{i}"));
        let copy = prepare_two_hop(&env, &under_prefix(&items, &p("pipe"), &prefix), &prefix).await?;
        let (nats_before, client_before) = (cpu_of_all("nats-server"), cpu_times(std::process::id()));
        let per_s = rate(items.len(), copy.run()).await?;
        // nats-server's own CPU for the bare copy: what the pipeline's JetStream traffic costs at least.
        let nats = used(nats_before, cpu_of_all("nats-server"));
        let nats_cpu = tenths(nats.0 + nats.1);
        // The copy's client side (this process: fetch, publish, acknowledge, both hops): the
        // least the two stages spend on NATS, before any work of their own.
        let client = used(client_before, cpu_times(std::process::id()));
        let client_cpu = tenths(client.0 + client.1);
        println!(
            "limit: JetStream two-hop copy {i} of 3: {per_s:.0} msg/s (nats-server {nats_cpu} CPU s, the copying \
             client {client_cpu} CPU s; the rows' first publish not counted, as in the pipeline's figure)"
        );
        copies.push((per_s, nats_cpu, client_cpu));
    }
    let hop_runs: Vec<f64> = copies.iter().map(|c| c.0.round()).collect();
    let (hop, hop_nats_cpu, hop_client_cpu) = median(copies, |c| c.0);
    println!("limit: JetStream two-hop copy {hop:.0} msg/s (the median of three)");
    let insert = prepare_clickhouse(&env, &items, &p("ch")).await?;
    wait_for_quiet(&env).await;
    let ch = rate(items.len(), insert.run()).await?;
    println!("limit: ClickHouse insert {ch:.0} rows/s (orders, order_versions, order_contacts)");
    let efficiency = pipeline / hop.min(ch);
    println!("efficiency: {efficiency:.2}");
    // Both bare parts at once, as the pipeline runs them: on a machine where the bare copy alone
    // keeps most of the cores busy, this (not the slower of the two alone) bounds any pipeline
    // that does both jobs there. What separates the pipeline from it is the stages' own work.
    // Three times as well, the median counts.
    let mut boths: Vec<f64> = Vec::new();
    for i in 1..=3 {
        let prefix = p(&format!("both{i}"));
        let copy = prepare_two_hop(&env, &under_prefix(&items, &p("pipe"), &prefix), &prefix).await?;
        let insert = prepare_clickhouse(&env, &items, &prefix).await?;
        wait_for_quiet(&env).await;
        let per_s = rate(items.len(), async {
            let (a, b) = tokio::join!(tokio::spawn(copy.run()), tokio::spawn(insert.run()));
            a??;
            b?
        })
        .await?;
        println!("limit: both at once {i} of 3: {per_s:.0} orders/s");
        boths.push(per_s);
    }
    let both_runs: Vec<f64> = boths.iter().map(|b| b.round()).collect();
    let both = median(boths, |b| *b);
    let colocated = pipeline / both;
    println!(
        "limit: both at once (two-hop copy and ClickHouse insert) {both:.0} orders/s (the median of three); \
         pipeline / that: {colocated:.2}"
    );

    // 2. Latency.
    let (p50, p99, rss_n2, rss_s2) = latency(&env, args.latency_rate, args.latency_seconds, &p("lat")).await?;

    // 4. Fetcher scale.
    let fetcher =
        if args.fetcher_shops > 0 { fetcher_scale(&env, args.fetcher_shops, &p("fetch")).await? } else { json!(null) };

    let result = json!({
        "rows": items.len(),
        "row_bytes_avg": avg,
        "pipeline_orders_per_s": pipeline.round(),
        "pipeline_runs_orders_per_s": pipeline_runs,
        "pipeline_cpu_s": cpu,
        "limit_jetstream_two_hop_per_s": hop.round(),
        "limit_jetstream_two_hop_runs_per_s": hop_runs,
        "limit_jetstream_nats_cpu_s": hop_nats_cpu,
        "limit_jetstream_client_cpu_s": hop_client_cpu,
        "limit_clickhouse_rows_per_s": ch.round(),
        "efficiency": hundredths(efficiency),
        "limit_both_at_once_per_s": both.round(),
        "limit_both_at_once_runs_per_s": both_runs,
        "efficiency_against_both_at_once": hundredths(colocated),
        "latency_rate_per_s": args.latency_rate,
        "latency_p50_ms": (p50 * 1e3).round(),
        "latency_p99_ms": (p99 * 1e3).round(),
        "rss_peak_mb": {
            "normalizer": rss_n1.max(rss_n2).round(),
            "sink": rss_s1.max(rss_s2).round(),
            "fetcher": fetcher["rss_peak_mb"].as_f64().map(f64::round),
        },
        "fetcher": fetcher,
        "fetcher_calls": call_budget(),
    });
    if !args.keep {
        clean_up(&env).await;
    }
    println!("{result}");
    Ok(())
}

/// Deletes this run's streams (their names carry the run's stamp) and ClickHouse databases.
/// Failures are reported, not fatal: the figures are already taken.
async fn clean_up(env: &Env) {
    use futures::TryStreamExt;
    let stamp = env.stamp.as_str();
    match connect(env, "").await {
        Ok((js, _)) => {
            let names: Vec<String> = js.stream_names().try_collect().await.unwrap_or_default();
            for name in names.iter().filter(|n| n.starts_with("BENCH_") && n.contains(stamp)) {
                if let Err(e) = js.delete_stream(name).await {
                    eprintln!("clean-up: stream {name}: {e}");
                }
            }
        }
        Err(e) => eprintln!("clean-up: {e:#}"),
    }
    let http = reqwest::Client::new();
    let list = http.post(format!("{}/", env.ch_url)).body("SHOW DATABASES").send().await;
    let dbs = match list {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(e) => return eprintln!("clean-up: {e}"),
    };
    for db in dbs.lines().filter(|d| d.starts_with("bench_") && d.ends_with(stamp)) {
        if let Err(e) = http.post(format!("{}/", env.ch_url)).body(format!("DROP DATABASE {db}")).send().await {
            eprintln!("clean-up: database {db}: {e}");
        }
    }
}
