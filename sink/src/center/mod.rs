//! The alert center (`[sink] http_listen`): the page for the people who act on alerts (`GET /`)
//! and its API (`/api/summary`, `/api/alerts`, acknowledge, write-back fixes).
//!
//! It runs on a thread and runtime of its own, with its own ClickHouse client (NATS through
//! the sink's client): a page load never waits for a batch, and a batch never waits for a page. What it
//! shows comes from state it keeps, never from a scan per request:
//! - [`board`]: the open alerts, compact, loaded from ClickHouse, then kept current by the
//!   active sink handing over every transition it stores ([`Tap`], in-process), or, on a standby,
//!   from `ALERTS` (so a standby's center is as current as the active one's);
//! - a snapshot refreshed every `[sink] page_refresh` (orders by status, the charts' 30 days,
//!   the fetcher's last poll and error per shop).
//!
//! Texts of the alerts shown (a page of the queue) are read from `alerts` by key.

mod actions;
pub mod board;
pub mod charts;
mod feed;
pub mod guard;
mod http;
mod page;
pub mod urgency;
mod view;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use schemas::Secret;
use schemas::calendar::BusinessDays;
use schemas::config::PipelineConfig;
use schemas::poll::FetchStatus;
use schemas::subjects::Namespace;

use crate::store::{AlertDay, OrdersDay, Store};

pub use feed::Tap;
pub use http::router;

/// A configured shop as the center needs it.
#[derive(Debug, Clone)]
pub struct ShopInfo {
    pub id: String,
    pub interval: Duration,
    pub writeback: bool,
}

/// What the center re-reads every `page_refresh`.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// (shop, canonical status, order lines).
    pub orders_by_status: Vec<(String, String, u64)>,
    pub orders_per_day: Vec<OrdersDay>,
    pub alert_days: Vec<AlertDay>,
    pub fetch: HashMap<String, FetchStatus>,
    pub refreshed_at: Option<DateTime<Utc>>,
    /// Why the last refresh failed, if it did (the figures shown are then older).
    pub error: Option<String>,
}

/// The center's state, shared by its tasks and requests.
#[derive(Debug)]
pub struct Center {
    pub board: RwLock<board::Board>,
    pub snapshot: RwLock<Snapshot>,
    /// False until the board is loaded, and while it is reloaded after losing `ALERTS`.
    pub live: std::sync::atomic::AtomicBool,
    store: Store,
    js: async_nats::jetstream::Context,
    ns: Namespace,
    pub shops: Vec<ShopInfo>,
    token: Option<Secret>,
    refresh: Duration,
    days: BusinessDays,
    /// Whether this sink is the active one (then the tap feeds the board, else `ALERTS`).
    active: tokio::sync::watch::Receiver<bool>,
    /// Set when the tap had to drop a batch: the board reloads.
    tap_lost: Arc<std::sync::atomic::AtomicBool>,
    /// The `Host` names it answers ([`guard::allowed_hosts`]).
    hosts: Vec<String>,
    /// The page is served over https (`[alerts] page_url`): the cookie is `Secure`.
    secure_cookie: bool,
    throttle: guard::Throttle,
}

/// Today in JST.
pub fn today() -> NaiveDate {
    Utc::now().with_timezone(&schemas::time::jst()).date_naive()
}

impl Center {
    fn new(
        config: &PipelineConfig,
        store: Store,
        js: async_nats::jetstream::Context,
        (active, tap_lost): (tokio::sync::watch::Receiver<bool>, Arc<std::sync::atomic::AtomicBool>),
    ) -> Center {
        let days = BusinessDays { closed: config.alerts.holidays.clone() };
        Center {
            board: RwLock::new(board::Board::new(today(), days.clone())),
            snapshot: RwLock::new(Snapshot::default()),
            live: false.into(),
            store,
            js,
            ns: Namespace::from_config(&config.nats),
            shops: config
                .shops
                .iter()
                .map(|s| ShopInfo { id: s.id.clone(), interval: s.interval, writeback: s.writeback })
                .collect(),
            token: config.sink.http_token().cloned(),
            refresh: config.sink.page_refresh,
            days,
            active,
            tap_lost,
            hosts: guard::allowed_hosts(&config.sink.http_listen, &config.alerts.page_url, &config.sink.http_hosts),
            secure_cookie: config.alerts.page_url.starts_with("https://"),
            throttle: guard::Throttle::default(),
        }
    }

    pub fn shop(&self, id: &str) -> Option<&ShopInfo> {
        self.shops.iter().find(|s| s.id == id)
    }
}

/// Starts the center on its own thread: serves `[sink] http_listen` (with `/metrics`, `/healthz`
/// and `/readyz` of `service`) and keeps its state; `active` says whether this sink is the
/// active one. Returns, once the listener is bound, the tap the active sink hands its alerts to
/// (`None` when served nowhere), or the error naming the key.
pub async fn start(
    config: &PipelineConfig,
    service: &runtime::service::Service,
    active: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Option<Tap>> {
    if config.sink.http_listen.is_empty() {
        return Ok(None); // served nowhere: nothing to keep
    }
    if let Some((key, reason)) = guard::exposure_problem(config, &config.sink.http_listen) {
        let file = config.source.clone();
        return Err(schemas::config::ConfigError::Invalid { file, key, reason }.into());
    }
    let (tap, tapped) = Tap::channel();
    let lost = tap.lost();
    let (tx, rx) = tokio::sync::oneshot::channel::<anyhow::Result<()>>();
    let (config, service) = (config.clone(), service.clone());
    std::thread::Builder::new().name("alert-center".into()).spawn(move || {
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                let _ = tx.send(Err(e.into()));
                return;
            }
        };
        rt.block_on(async move {
            // NATS through the sink's own client (its connection task runs on the sink's
            // runtime; requests and deliveries are channel sends): one connection, which
            // reconnects by itself, instead of a second one that could fail at start.
            let store = Store::new(&config.clickhouse);
            let center = Arc::new(Center::new(&config, store.clone(), service.js.clone(), (active, lost)));
            let ready = clickhouse_ready(store);
            let served =
                service.serve(&config.sink.http_listen, "sink.http_listen", Some(ready), router(center.clone()));
            let bound = served.await.map_err(anyhow::Error::from);
            let failed = bound.is_err();
            let _ = tx.send(bound);
            if failed {
                return;
            }
            tokio::spawn(center.clone().refresh_forever());
            center.follow_forever(tapped).await;
        });
    })?;
    rx.await.map_err(|_| anyhow::anyhow!("the alert center's thread ended before it started"))??;
    Ok(Some(tap))
}

/// `/readyz`'s ClickHouse check.
fn clickhouse_ready(store: Store) -> runtime::telemetry::ReadyCheck {
    Arc::new(move || {
        let store = store.clone();
        Box::pin(async move { store.ping().await.map_err(|e| format!("clickhouse unreachable: {e}")) })
    })
}
