//! The HTTP face of the sandbox: QAPI at `/GMKT.INC.Front.QAPIService/ebayjapan.qapi` (and the
//! `Giosis.qapi` alias) in both URL styles, plus a control API under `/_sandbox/`.
//!
//! Like QAPI, every QAPI answer is HTTP 200, whatever went wrong; only the body tells.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::routing::{delete, get, post};
use chrono::{DateTime, Duration, NaiveDateTime, Timelike, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{Order, Shop};

mod control;
mod qapi;
#[cfg(test)]
mod tests;
mod writes;

pub use qapi::check_read;
pub use writes::MAX_SHIP_DATE_DAYS;

#[derive(Debug, Default)]
pub struct World {
    pub shops: Vec<Shop>,
    /// By (shop id, order number).
    pub orders: BTreeMap<(String, u64), Order>,
    /// Issued certification keys → (shop id, expiry).
    pub keys: HashMap<String, (String, DateTime<Utc>)>,
    pub requests: Vec<RequestLog>,
    pub seed: u64,
    /// Added to the clock: the sandbox's "now" (moved by `/_sandbox/advance`).
    pub clock_offset: Duration,
    /// `--frozen-clock`: the clock stands at this instant (plus `clock_offset`) instead of
    /// running with real time, so every run of a test sees the same world at each poll.
    pub frozen_at: Option<DateTime<Utc>>,
    /// Requests allowed per shop (and in total) in any one-second window; 0 = unlimited.
    pub limit_per_shop: f64,
    pub limit_global: f64,
    pub violations: u64,
    pub faults: Vec<Fault>,
}

impl World {
    pub fn now(&self) -> DateTime<Utc> {
        self.frozen_at.unwrap_or_else(Utc::now) + self.clock_offset
    }

    /// The clock as Qoo10 keeps its dates: JST wall-clock time in whole seconds (a call whose
    /// window ends at a second includes what happened within that second).
    pub fn now_jst(&self) -> NaiveDateTime {
        let t = self.now().with_timezone(&schemas::time::jst()).naive_local();
        t.with_nanosecond(0).unwrap_or(t)
    }

    /// Sets the clock to `at` (an explicit `--now`): from there it runs with real time, or stands
    /// still when `frozen`.
    pub fn start_clock_at(&mut self, at: DateTime<Utc>, frozen: bool) {
        if frozen {
            (self.frozen_at, self.clock_offset) = (Some(at), Duration::zero());
        } else {
            (self.frozen_at, self.clock_offset) = (None, at - Utc::now());
        }
    }
}

/// An injected fault: what the next matching requests get instead of a normal answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fault {
    /// `status` (HTTP `code`), `timeout` (no answer for `seconds`), `html`, `garbage`,
    /// `rate_limit` (HTTP 429 with Retry-After), `latency` (a normal answer after `ms`),
    /// `expire_key` (the caller's certification key expires: QAPI answers -90004), or
    /// `late_commit` (a write: no answer for `seconds`, and the change made only `ms` after the
    /// call arrived, as a server that commits after its client gave up).
    pub kind: String,
    /// Only requests of this shop (by its keys); all shops when absent.
    #[serde(default)]
    pub shop: Option<String>,
    /// Only requests of this method (case-insensitive, e.g. `ShippingBasic.GetShippingInfo_v3`).
    #[serde(default)]
    pub method: Option<String>,
    /// How many requests it affects; unlimited when absent.
    #[serde(default)]
    pub count: Option<u32>,
    #[serde(default)]
    pub code: Option<u16>,
    #[serde(default)]
    pub seconds: Option<u64>,
    #[serde(default)]
    pub ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RequestLog {
    /// Milliseconds since the Unix epoch (real clock), when the request arrived.
    pub at_ms: i64,
    pub method: String,
    pub shop: Option<String>,
    /// QAPI result code answered (0 = success); `null` for routing errors and faults.
    pub code: Option<i64>,
    /// The call changed an order (a write that was applied; for a Bulk call, at least one row).
    pub changed: bool,
    /// The request exceeded the sandbox's rate limit (answered 429).
    pub violation: bool,
    /// The fault injected into this answer, if any.
    pub fault: Option<String>,
    /// The call's `OrderNo`, if it named one (the writes and the single-order read).
    pub order_no: Option<u64>,
    /// Which key the call came with: a fingerprint (the first 12 hex digits of its SHA-256),
    /// never the key. Each fetcher process certifies on its own, so this tells processes apart.
    pub key: String,
}

pub type SharedWorld = Arc<Mutex<World>>;

pub fn router(world: SharedWorld) -> Router {
    Router::new()
        .route("/_sandbox/health", get(|| async { "ok" }))
        .route("/_sandbox/shops", get(control::list_shops).post(control::add_shop))
        .route("/_sandbox/orders", get(control::list_orders).put(control::put_orders).delete(control::delete_orders))
        .route("/_sandbox/requests", get(control::list_requests).delete(control::clear_requests))
        .route("/_sandbox/stats", get(control::stats))
        .route("/_sandbox/faults", get(control::list_faults).post(control::add_fault).delete(control::clear_faults))
        .route("/_sandbox/keys", get(control::list_keys))
        .route("/_sandbox/keys/expire", post(control::expire_keys))
        .route("/_sandbox/advance", post(control::advance))
        .route("/_sandbox/orders/{shop}/{order_no}", delete(control::delete_order))
        .route("/_sandbox/orders/{shop}/{order_no}/{action}", post(control::order_action))
        .fallback(qapi::qapi)
        .with_state(world.clone())
        .layer(axum::middleware::map_response_with_state(world, stamp_date))
}

/// Every answer carries the sandbox's own clock in `Date`, as a web server's carries its
/// machine's: with a frozen or advanced clock that is the time Qoo10's data is stamped by, not
/// this machine's (hyper adds the machine's only where none is set).
async fn stamp_date(
    axum::extract::State(world): axum::extract::State<SharedWorld>,
    mut response: axum::response::Response,
) -> axum::response::Response {
    let now = world.lock().expect("world lock").now();
    let text = now.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
    if let Ok(value) = axum::http::HeaderValue::from_str(&text) {
        response.headers_mut().insert(axum::http::header::DATE, value);
    }
    response
}
