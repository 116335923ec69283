//! `--store-modes`: what one stored message costs the server with the shipped settings, for each
//! way of putting the pipeline's rows into JetStream (docs/benchmark.md, "Fewer fsyncs"). Each
//! mode stores the same rows into a stream of its own on the server `NATS_URL` names; the figure
//! is rows per second from the first publish to the last acknowledgement, and nats-server's CPU.

use std::time::Instant;

use async_nats::HeaderMap;
use async_nats::jetstream;
use bytes::Bytes;

use crate::env::{Env, cpu_of_all, tenths, used};

/// One mode's figures.
#[derive(Debug, serde::Serialize)]
pub struct Mode {
    pub mode: String,
    pub rows_per_s: f64,
    pub messages: usize,
    pub nats_cpu_us_per_row: f64,
}

/// Every mode on the same `rows` (payloads of ~1.5 KB).
pub async fn measure(env: &Env, rows: &[Bytes]) -> anyhow::Result<Vec<Mode>> {
    let client = async_nats::connect(&env.nats_url).await?;
    let js = jetstream::new(client);
    let mut out = Vec::new();
    if std::env::var("STORE_MODES_ATOMIC_ONLY").is_ok() {
        out.push(atomic(env, &js, rows, 500).await?);
        return Ok(out);
    }
    out.push(one_stream(env, &js, rows, "one message per row", 1).await?);
    out.push(one_stream(env, &js, rows, "one message per 50 rows (a QAPI page)", 50).await?);
    out.push(one_stream(env, &js, rows, "one message per 500 rows", 500).await?);
    for batch in [100usize, 500] {
        match atomic(env, &js, rows, batch).await {
            Ok(m) => out.push(m),
            Err(e) => println!("store modes: atomic batches of {batch}: not available here ({e})"),
        }
    }
    out.push(parallel_streams(env, &js, rows, 4).await?);
    for m in &out {
        println!(
            "store mode: {:<40} {:>8.0} rows/s, {:>6} messages, nats-server {:.0} µs CPU per row",
            m.mode, m.rows_per_s, m.messages, m.nats_cpu_us_per_row
        );
    }
    Ok(out)
}

async fn fresh_stream(env: &Env, js: &jetstream::Context, tag: &str, atomic: bool) -> anyhow::Result<String> {
    let name = env.name(tag).to_uppercase();
    let _ = js.delete_stream(&name).await;
    // Through the API's JSON: `allow_atomic` is behind an async-nats feature this build leaves off.
    let config = serde_json::json!({
        "name": name, "subjects": [format!("{name}.>")], "storage": "file", "retention": "limits",
        "num_replicas": 1, "allow_atomic": atomic,
    });
    let answer = js.client().request(format!("$JS.API.STREAM.CREATE.{name}"), config.to_string().into()).await?;
    let answer: serde_json::Value = serde_json::from_slice(&answer.payload)?;
    anyhow::ensure!(answer.get("error").is_none(), "stream {name}: {}", answer["error"]);
    Ok(name)
}

/// Groups of `per` rows, each one message (JSON array text), published with acknowledgements pipelined.
async fn one_stream(
    env: &Env,
    js: &jetstream::Context,
    rows: &[Bytes],
    mode: &str,
    per: usize,
) -> anyhow::Result<Mode> {
    let name = fresh_stream(env, js, &format!("sm{per}"), false).await?;
    let messages: Vec<Bytes> = rows.chunks(per).map(join).collect();
    let started = (Instant::now(), cpu_of_all("nats-server"));
    publish_pipelined(js, &format!("{name}.x"), &messages).await?;
    let m = finish(mode, rows.len(), messages.len(), started);
    js.delete_stream(&name).await?;
    Ok(m)
}

async fn publish_pipelined(js: &jetstream::Context, subject: &str, messages: &[Bytes]) -> anyhow::Result<()> {
    let outgoing: Vec<runtime::nats::Outgoing> = messages
        .iter()
        .map(|m| runtime::nats::Outgoing { subject: subject.to_owned(), headers: HeaderMap::new(), payload: m.clone() })
        .collect();
    for acked in runtime::nats::publish_all(js, outgoing).await {
        acked?;
    }
    Ok(())
}

/// Atomic batches (ADR-50): `Nats-Batch-Id`, `Nats-Batch-Sequence`, `Nats-Batch-Commit` on the
/// last; only the commit is acknowledged. Batches go one after the other.
async fn atomic(env: &Env, js: &jetstream::Context, rows: &[Bytes], per: usize) -> anyhow::Result<Mode> {
    let name = fresh_stream(env, js, &format!("smatomic{per}"), true).await?;
    let subject = format!("{name}.x");
    let client = js.client();
    let started = (Instant::now(), cpu_of_all("nats-server"));
    for (b, chunk) in rows.chunks(per).enumerate() {
        let id = format!("b{b}");
        for (i, row) in chunk.iter().enumerate() {
            let mut h = HeaderMap::new();
            h.insert("Nats-Batch-Id", id.as_str());
            h.insert("Nats-Batch-Sequence", (i + 1).to_string().as_str());
            if i + 1 == chunk.len() {
                h.insert("Nats-Batch-Commit", "1");
                let ack = js.publish_with_headers(subject.clone(), h, row.clone()).await?.await?;
                anyhow::ensure!(ack.sequence as usize == (b * per) + chunk.len(), "batch {b} stored out of order");
            } else {
                client.publish_with_headers(subject.clone(), h, row.clone()).await?;
            }
        }
    }
    let m = finish(&format!("atomic batches of {per} rows"), rows.len(), rows.len(), started);
    js.delete_stream(&name).await?;
    Ok(m)
}

/// One message per row, spread over `k` streams published at once.
async fn parallel_streams(env: &Env, js: &jetstream::Context, rows: &[Bytes], k: usize) -> anyhow::Result<Mode> {
    let mut names = Vec::new();
    for i in 0..k {
        names.push(fresh_stream(env, js, &format!("smpar{i}"), false).await?);
    }
    let share = rows.len().div_ceil(k);
    let started = (Instant::now(), cpu_of_all("nats-server"));
    let mut tasks = Vec::new();
    for (name, part) in names.iter().zip(rows.chunks(share)) {
        let (js, subject, part) = (js.clone(), format!("{name}.x"), part.to_vec());
        tasks.push(tokio::spawn(async move { publish_pipelined(&js, &subject, &part).await }));
    }
    for t in tasks {
        t.await??;
    }
    let m = finish(&format!("one message per row, {k} streams at once"), rows.len(), rows.len(), started);
    for n in names {
        js.delete_stream(&n).await?;
    }
    Ok(m)
}

fn join(rows: &[Bytes]) -> Bytes {
    let mut v = Vec::with_capacity(rows.iter().map(|r| r.len() + 1).sum::<usize>() + 2);
    v.push(b'[');
    for (i, r) in rows.iter().enumerate() {
        if i > 0 {
            v.push(b',');
        }
        v.extend_from_slice(r);
    }
    v.push(b']');
    Bytes::from(v)
}

fn finish(mode: &str, rows: usize, messages: usize, (t0, cpu0): (Instant, (f64, f64))) -> Mode {
    let secs = t0.elapsed().as_secs_f64();
    let cpu = used(cpu0, cpu_of_all("nats-server"));
    Mode {
        mode: mode.to_owned(),
        rows_per_s: (rows as f64 / secs).round(),
        messages,
        nats_cpu_us_per_row: tenths((cpu.0 + cpu.1) * 1e6 / rows as f64),
    }
}
