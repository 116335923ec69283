//! The load: realistic raw envelopes, published as the fetcher publishes them.

use async_nats::jetstream;
use bytes::Bytes;
use chrono::{NaiveDateTime, Utc};
use schemas::raw::{RawEnvelope, RawQuery, RowKind};
use schemas::subjects::Namespace;
use serde_json::value::RawValue;

/// Realistic raw envelopes (v3 rows of the sandbox generator), `fetched_at` one microsecond apart.
pub fn payloads(n: usize, prefix: &str) -> Vec<(String, Bytes)> {
    // Orders of the last days (JST wall-clock time, as Qoo10 sends it), whenever the bench runs:
    // the sink treats recent lines differently from old ones (sink::known).
    let now: NaiveDateTime = (Utc::now() + chrono::Duration::hours(9)).naive_utc();
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

pub async fn publish_all(js: &jetstream::Context, items: &[(String, Bytes)]) -> anyhow::Result<()> {
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

/// The same payloads on the subjects of another run's prefix (each run has streams of its own).
pub fn under_prefix(items: &[(String, Bytes)], from: &str, to: &str) -> Vec<(String, Bytes)> {
    items.iter().map(|(s, b)| (s.replacen(from, to, 1), b.clone())).collect()
}
