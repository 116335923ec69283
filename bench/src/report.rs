//! What one run measured. The last line the benchmark prints is a [`Report`] as one JSON object:
//! its keys are the fields below, so this file is the reference for every figure
//! (`docs/benchmark.md` tells what they were on this project's machines, and why).

use serde::Serialize;

/// The whole run. Rates are per second; "the median of three" because the two shared cores
/// make one run's figure up to 20 % off the next one's (each run's figure is kept too).
#[derive(Debug, Serialize)]
pub struct Report {
    /// The NATS server every figure was measured on: its version, its JetStream
    /// `sync_interval` ("always": an fsync on every write, as shipped) and how the stages
    /// published on it (atomic batches from 2.12 on).
    pub nats: NatsSettings,
    /// Raw rows of the throughput runs (sandbox v3 rows, Japanese text).
    pub rows: usize,
    /// Their average size as raw envelopes, in bytes.
    pub row_bytes_avg: usize,
    /// Raw rows already in `QOO10_RAW` → order versions in ClickHouse, normalizer and sink
    /// started cold: the median of three runs.
    pub pipeline_orders_per_s: f64,
    pub pipeline_runs_orders_per_s: Vec<f64>,
    /// Where the cores went during the median pipeline run.
    pub pipeline_cpu_s: CpuSeconds,
    /// The same, per order: CPU microseconds each process spent on one order of that run.
    pub pipeline_cpu_us_per_order: CpuPerOrder,
    /// The bare JetStream limit: the same payloads copied across two hops as the stages do
    /// (consume, publish, ack; consume, ack), no work in between. Median of three, and each.
    pub limit_jetstream_two_hop_per_s: f64,
    pub limit_jetstream_two_hop_runs_per_s: Vec<f64>,
    /// nats-server's CPU seconds for that copy: the least the pipeline's traffic costs it.
    pub limit_jetstream_nats_cpu_s: f64,
    /// The copying client's CPU seconds: the least the two stages spend on NATS.
    pub limit_jetstream_client_cpu_s: f64,
    /// The bare ClickHouse limit: the pipeline's canonical rows inserted as the sink inserts them
    /// (its three tables, 5,000 orders per insert).
    pub limit_clickhouse_rows_per_s: f64,
    /// `pipeline_orders_per_s / min(two-hop, insert)`.
    pub efficiency: f64,
    /// Both bare parts at once on the same cores, as the pipeline runs them: the bound for
    /// anything doing both jobs on this machine. Median of three, and each.
    pub limit_both_at_once_per_s: f64,
    pub limit_both_at_once_runs_per_s: Vec<f64>,
    /// `pipeline_orders_per_s / limit_both_at_once_per_s`.
    pub efficiency_against_both_at_once: f64,
    /// The steady rate of the latency run, and the end-to-end latency at it: QAPI response
    /// (`fetched_at`, set at publish) → ClickHouse confirming the insert (the sink's histogram).
    pub latency_rate_per_s: u64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub rss_peak_mb: RssPeak,
    /// The fetcher against many sandbox shops; `null` with `--fetcher-shops 0`.
    pub fetcher: Option<FetcherRun>,
    /// The calls a shop makes per day, from the fetcher's own planner.
    pub fetcher_calls: CallBudget,
    /// With `--history-lines N` (see `history.rs`); absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<crate::history::History>,
}

/// CPU seconds of each process during one pipeline run.
#[derive(Debug, Clone, Serialize)]
pub struct CpuSeconds {
    pub wall_s: f64,
    pub normalizer: f64,
    pub sink: f64,
    pub nats_server: f64,
    pub clickhouse: f64,
    /// ClickHouse's kernel time: creating a part's files is most of it. On an ext4 file system
    /// without a journal (this project's machines) it grows several-fold for a few minutes after
    /// many files were deleted (the inode allocator skips recently deleted inodes), e.g. right
    /// after a previous run's clean-up or a test suite's dropped databases.
    pub clickhouse_system: f64,
}

/// CPU microseconds per order of each process in a pipeline run.
#[derive(Debug, Serialize)]
pub struct CpuPerOrder {
    pub normalizer: f64,
    pub sink: f64,
    pub nats_server: f64,
    pub clickhouse: f64,
}

impl CpuPerOrder {
    pub fn of(cpu: &CpuSeconds, orders: usize) -> CpuPerOrder {
        let us = |s: f64| (s * 1e6 / orders.max(1) as f64).round();
        CpuPerOrder {
            normalizer: us(cpu.normalizer),
            sink: us(cpu.sink),
            nats_server: us(cpu.nats_server),
            clickhouse: us(cpu.clickhouse),
        }
    }
}

/// Peak resident memory (VmHWM) of each service over the run, in MB.
#[derive(Debug, Serialize)]
pub struct RssPeak {
    /// Over the throughput and latency runs.
    pub normalizer: f64,
    pub sink: f64,
    /// Over the fetcher run (`null` without one).
    pub fetcher: Option<f64>,
}

/// `fetcher --once` against `shops` sandbox shops answering after 50 ms, with the rate limits
/// 1 request/s per shop and 200/s in all.
#[derive(Debug, Serialize)]
pub struct FetcherRun {
    pub shops: u32,
    pub requests: f64,
    pub wall_s: f64,
    /// The least time the rate limits allow for those requests.
    pub min_wall_s: f64,
    pub ratio_to_min: f64,
    /// Requests the sandbox saw over a limit (answered 429): should be 0.
    pub violations: u64,
    pub max_requests_in_a_second: u64,
    pub cpu_s: f64,
    pub rss_peak_mb: f64,
    /// The fetcher exited successfully.
    pub ok: bool,
}

/// Calls per shop per day after the first import (`docs/benchmark.md`, "call budget").
#[derive(Debug, Serialize)]
pub struct CallBudget {
    /// A shop with the default settings.
    pub per_shop_per_day_default: f64,
    /// A busy shop: 2 % made to order with 30-day lead times, so lines stay open 30 days past
    /// the look-back (QAPI has no paging, so the number of orders does not change the count).
    pub per_shop_per_day_busy: f64,
    /// The busy shop on `GetShippingInfo_v2` (no one call for statuses 1–3).
    pub per_shop_per_day_busy_v2: f64,
    /// `[qoo10] global_requests_per_second`'s default, per day.
    pub default_global_limit_per_day: f64,
    pub busy_shops_within_default_limit: f64,
    pub share_of_default_limit_for_2000_busy_shops: f64,
}

/// See [`Report::nats`].
#[derive(Debug, Clone, Serialize)]
pub struct NatsSettings {
    pub version: String,
    pub sync_interval: String,
    pub publish_mode: String,
}
