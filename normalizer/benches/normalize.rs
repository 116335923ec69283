//! Single-core throughput of the normalizer's per-message work on realistic rows: parse the raw
//! envelope (as it arrives from NATS), normalize, serialize the canonical order (as it leaves).
//! And the first step of the sink's: reading such a canonical order back (JSON parse and checks).
//! Rows come from the sandbox generator (v3 shape, Japanese text, about 1.5 KB each).
//!
//!     cargo bench -p normalizer --bench normalize

use chrono::NaiveDateTime;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use normalizer::normalize::normalize;
use schemas::order::CanonicalOrder;
use schemas::raw::{RawEnvelope, RawQuery, RowKind};
use schemas::status::StatusMap;
use serde_json::value::RawValue;

fn payloads(n: usize) -> Vec<Vec<u8>> {
    let now = NaiveDateTime::parse_from_str("2026-11-29 12:00:00", "%Y-%m-%d %H:%M:%S").unwrap();
    let orders = sandbox::generate::orders(1, 1, "bench-shop", n, 10, now);
    orders
        .iter()
        .map(|o| {
            let row = sandbox::render::v3_row(o, "bench-seller", &[o.order_no]);
            let env = RawEnvelope {
                schema_version: 1,
                shop: "bench-shop".into(),
                kind: RowKind::Order,
                method: "ShippingBasic.GetShippingInfo_v3".into(),
                query: RawQuery { status: o.status, from: "20261119".into(), to: "20261129".into(), condition: 1 },
                fetched_at: "2026-11-29T03:00:00.123456Z".parse().unwrap(),
                row: RawValue::from_string(row.to_string()).unwrap(),
                cart_claims: Vec::new(),
                first_import: false,
                new_in_known_cart: false,
            };
            serde_json::to_vec(&env).unwrap()
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let input = payloads(10_000);
    let avg = input.iter().map(Vec::len).sum::<usize>() / input.len();
    eprintln!("payloads: {} rows, {avg} bytes on average", input.len());
    let statuses = StatusMap::default();
    let mut group = c.benchmark_group("normalizer");
    group.throughput(Throughput::Elements(input.len() as u64));
    group.sample_size(20);
    group.bench_function("envelope→canonical→json, 10k rows", |b| {
        b.iter(|| {
            let mut bytes = 0usize;
            for (seq, p) in input.iter().enumerate() {
                let env: RawEnvelope = serde_json::from_slice(p).unwrap();
                let order = normalize(&env, seq as u64, &statuses).unwrap();
                bytes += serde_json::to_vec(&order).unwrap().len();
            }
            bytes
        })
    });
    let canonical: Vec<Vec<u8>> = input
        .iter()
        .enumerate()
        .map(|(seq, p)| {
            let env: RawEnvelope = serde_json::from_slice(p).unwrap();
            serde_json::to_vec(&normalize(&env, seq as u64, &statuses).unwrap()).unwrap()
        })
        .collect();
    group.bench_function("canonical json→order as the sink reads it, 10k orders", |b| {
        b.iter(|| {
            let mut quantity = 0u64;
            for p in &canonical {
                let order: CanonicalOrder = serde_json::from_slice(p).unwrap();
                order.validate("bench-shop").unwrap();
                quantity += u64::from(order.quantity);
            }
            quantity
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
