//! The limits of the parts the pipeline is built from, on the same payloads: a bare JetStream
//! two-hop copy, a bare ClickHouse insert, and both at once. Each is prepared first, then only
//! its `run` is timed.

use std::time::{Duration, Instant};

use async_nats::jetstream;
use bytes::Bytes;
use schemas::config::ClickHouseConfig;
use schemas::raw::RawEnvelope;
use schemas::subjects::{Namespace, Stream};

use crate::env::{Env, connect, cpu_of_all, cpu_times, tenths, used, wait_for_quiet};
use crate::load::{publish_all, under_prefix};

/// The bare copy's figures: the median of three runs (its speed moves a lot between runs on
/// this machine: 31k–58k msg/s seen), each run's, and what the median run cost.
pub struct Copy {
    pub per_s: f64,
    pub runs: Vec<f64>,
    pub nats_cpu: f64,
    pub client_cpu: f64,
}

/// The two-hop copy three times, each on streams of its own. `items` are under the prefix `from`.
pub async fn two_hop_copies(env: &Env, items: &[(String, Bytes)], from: &str) -> anyhow::Result<Copy> {
    let mut copies: Vec<(f64, f64, f64)> = Vec::new();
    for i in 1..=3 {
        let prefix = env.name(&format!("hop{i}"));
        let copy = prepare_two_hop(env, &under_prefix(items, from, &prefix), &prefix).await?;
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
    let runs = copies.iter().map(|c| c.0.round()).collect();
    let (per_s, nats_cpu, client_cpu) = median(copies, |c| c.0);
    println!("limit: JetStream two-hop copy {per_s:.0} msg/s (the median of three)");
    Ok(Copy { per_s, runs, nats_cpu, client_cpu })
}

/// The bare insert of the pipeline's rows, in rows per second.
pub async fn clickhouse_insert(env: &Env, items: &[(String, Bytes)]) -> anyhow::Result<f64> {
    let insert = prepare_clickhouse(env, items, &env.name("ch")).await?;
    wait_for_quiet(env).await;
    let per_s = rate(items.len(), insert.run()).await?;
    println!("limit: ClickHouse insert {per_s:.0} rows/s (orders, order_versions, order_contacts)");
    Ok(per_s)
}

/// Both bare parts at once, as the pipeline runs them: on a machine where the bare copy alone
/// keeps most of the cores busy, this (not the slower of the two alone) bounds any pipeline
/// that does both jobs there. Three times as well: the median and each run.
pub async fn both_at_once(env: &Env, items: &[(String, Bytes)], from: &str) -> anyhow::Result<(f64, Vec<f64>)> {
    let mut boths: Vec<f64> = Vec::new();
    for i in 1..=3 {
        let prefix = env.name(&format!("both{i}"));
        let copy = prepare_two_hop(env, &under_prefix(items, from, &prefix), &prefix).await?;
        let insert = prepare_clickhouse(env, items, &prefix).await?;
        wait_for_quiet(env).await;
        let per_s = rate(items.len(), async {
            let (a, b) = tokio::join!(tokio::spawn(copy.run()), tokio::spawn(insert.run()));
            a??;
            b?
        })
        .await?;
        println!("limit: both at once {i} of 3: {per_s:.0} orders/s");
        boths.push(per_s);
    }
    let runs = boths.iter().map(|b| b.round()).collect();
    Ok((median(boths, |b| *b), runs))
}

/// The bare JetStream limit, prepared: the payloads published and both hops' consumers made.
/// [`TwoHop::run`] is the timed part: the same payloads copied across two hops, as the pipeline
/// does (consume, publish, ack; consume, ack), publishing as the stages do.
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
    let hop = |stream, name| runtime::nats::durable_on(&js, &ns, stream, name, None, Duration::from_secs(60));
    let (first, second) = (hop(Stream::Raw, "hop1").await?, hop(Stream::Orders, "hop2").await?);
    Ok(TwoHop { js, first, second, target: ns.orders("bench"), n: items.len() })
}

impl TwoHop {
    async fn run(self) -> anyhow::Result<()> {
        let TwoHop { js, first, second, target, n } = self;
        let mode = runtime::batch::PublishMode::for_server(&js.client());
        let hop1 = tokio::spawn(async move {
            let mut done = 0;
            while done < n {
                let batch = runtime::nats::fetch_batch(&first, 500, Duration::from_millis(500)).await;
                // Published as the stages publish: in atomic batches where the server has them.
                let outgoing = batch.iter().map(|m| runtime::nats::Outgoing {
                    subject: target.clone(),
                    headers: async_nats::HeaderMap::new(),
                    payload: m.payload.clone(),
                });
                for a in runtime::batch::publish_many(&js, mode, outgoing.collect()).await {
                    a?;
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
    let cfg = ClickHouseConfig { url: env.ch_url.clone(), database: db.to_owned(), ..Default::default() };
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

/// The run whose figure is the median (of three, here).
pub fn median<T>(mut runs: Vec<T>, figure: impl Fn(&T) -> f64) -> T {
    runs.sort_by(|a, b| figure(a).total_cmp(&figure(b)));
    runs.swap_remove(runs.len() / 2)
}

/// Items per second of a prepared, timed part.
async fn rate(n: usize, run: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<f64> {
    let started = Instant::now();
    run.await?;
    Ok(n as f64 / started.elapsed().as_secs_f64())
}
