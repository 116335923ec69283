//! Any bytes as a raw envelope, and any bytes as the row inside one: the normalizer must answer
//! with an order or an error, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use schemas::raw::{RawEnvelope, RawQuery, RowKind};
use schemas::status::StatusMap;
use serde_json::value::RawValue;

fuzz_target!(|data: &[u8]| {
    let statuses = StatusMap::default();
    if let Ok(env) = serde_json::from_slice::<RawEnvelope>(data) {
        let _ = normalizer::normalize::normalize(&env, 1, &statuses);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(row) = RawValue::from_string(text.to_owned()) {
            for kind in [RowKind::Order, RowKind::Claim] {
                let env = RawEnvelope {
                    schema_version: 1,
                    shop: "fuzz".into(),
                    kind,
                    method: "m".into(),
                    query: RawQuery { status: 2, from: "20261101".into(), to: "20261129".into(), condition: 1 },
                    fetched_at: chrono_free_now(),
                    row: row.clone(),
                    cart_claims: Vec::new(),
                    first_import: false,
                    new_in_known_cart: false,
                };
                let _ = normalizer::normalize::normalize(&env, 1, &statuses);
            }
        }
    }
});

fn chrono_free_now() -> schemas_time::DateTime {
    "2026-11-29T00:00:00Z".parse().expect("valid")
}

mod schemas_time {
    pub type DateTime = chrono::DateTime<chrono::Utc>;
}
