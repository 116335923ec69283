//! When each shop is polled, and by which fetcher: a shop is polled only by the fetcher that
//! holds its lease (`fetcher.<shop>`, see `runtime::lease`); the others stand by and take it over
//! within the lease's TTL once its holder is gone. While held, the shop is polled on its
//! interval with jitter, resuming where the durable state says the last poll ended.

use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use chrono::Utc;
use runtime::health::Health;
use runtime::lease::{Holder, Leases};
use runtime::telemetry::Metrics;
use tokio::sync::Semaphore;

use crate::client::QapiClient;
use crate::plan::Cadence;
use crate::poll::{PollError, PollReport, ShopPoller, Sink};

/// What every shop's task shares.
#[derive(Debug, Clone)]
pub struct Shared {
    pub client: Arc<QapiClient>,
    pub sink: Sink,
    /// `[fetcher] max_concurrent_shops`.
    pub limit: Arc<Semaphore>,
    pub metrics: Arc<Metrics>,
    pub cadence: Cadence,
    pub leases: Leases,
    /// For the shops' command consumers.
    pub nats: schemas::config::NatsConfig,
}

/// The lease of a shop: one fetcher polls it at a time, however many list it.
pub fn shop_lease(shop: &str) -> String {
    format!("fetcher.{shop}")
}

/// Takes the shop's lease for a one-off job (`--once`, `backfill`): waits a little longer than
/// a dead holder keeps it, then fails naming the fetcher that has it.
pub async fn lease_for_job(leases: &Leases, shop: &str) -> anyhow::Result<()> {
    let name = shop_lease(shop);
    let limit = runtime::lease::TTL + Duration::from_secs(10);
    let waiting = |h: Option<&Holder>| {
        if let Some(h) = h {
            tracing::info!(shop, holder = %h, "waiting for the shop's lease");
        }
    };
    match tokio::time::timeout(limit, leases.wait_for(&name, waiting)).await {
        Ok(Ok(true)) => Ok(()),
        Ok(Ok(false)) => bail!("stopped while waiting for shop {shop}'s lease"),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => {
            let holder = leases.holder(&name).map(|h| h.to_string()).unwrap_or_else(|| "another fetcher".into());
            bail!("shop {shop} is being polled by {holder}; stop it, or let it poll the shop")
        }
    }
}

/// Applies every command waiting for the shop (`--once`, `apply`); returns how many.
pub async fn apply_waiting(poller: &mut ShopPoller, shared: &Shared) -> Result<usize, PollError> {
    if !crate::writeback::any_command(&shared.sink, &poller.shop.id).await? {
        return Ok(0);
    }
    let mut commands = crate::writeback::consumer(&shared.sink.js, &shared.nats, &poller.shop.id).await?;
    // Most shops have no command waiting: one request says so, instead of a fetch that waits.
    if runtime::nats::consumer_idle(commands.consumer()).await.unwrap_or(false) {
        return Ok(0);
    }
    let mut total = 0;
    loop {
        let wait = Duration::from_millis(300);
        match crate::writeback::apply_pending(poller, &shared.client, &shared.sink, &mut commands, wait).await? {
            0 => return Ok(total),
            n => total += n,
        }
    }
}

/// `/readyz`: standby while another fetcher polls every one of this fetcher's shops.
pub async fn report_role(leases: Leases, shops: Vec<String>, health: Arc<Health>) {
    loop {
        let held = shops.iter().filter(|s| leases.holds(&shop_lease(s))).count();
        if held > 0 {
            health.active();
        } else {
            health.standby(Some(format!(
                "every shop of this fetcher is polled by another fetcher ({} shops)",
                shops.len()
            )));
        }
        // In memory only: checked often, so a lease taken shows as ready before the first poll ends.
        tokio::time::sleep(ROLE_EVERY).await;
    }
}

/// How often `/readyz` follows the leases this fetcher holds.
const ROLE_EVERY: Duration = Duration::from_millis(250);

/// One shop while this fetcher runs: polled on its schedule while this fetcher holds its lease;
/// when another fetcher has it, waited for (taken over within the lease's TTL once that one is
/// gone).
pub async fn follow_lease(poller: &mut ShopPoller, shared: &Shared) {
    let (id, name) = (poller.shop.id.clone(), shop_lease(&poller.shop.id));
    loop {
        let waiting = |h: Option<&Holder>| {
            if let Some(h) = h {
                tracing::info!(shop = %id, holder = %h, "standby for this shop: another fetcher polls it");
            }
        };
        match shared.leases.wait_for(&name, waiting).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                tracing::warn!(shop = %id, error = %e, "lease not taken; trying again");
                tokio::time::sleep(runtime::lease::HEARTBEAT).await;
                continue;
            }
        }
        // Taken over: what another fetcher stored is read afresh.
        poller.forget_state();
        schedule(poller, shared, &name).await;
        tracing::warn!(shop = %id, "this fetcher lost the shop's lease: standby for it");
    }
}

/// One shop, while its lease holds: resumes where the durable state says the last poll ended
/// (no burst after a restart, no gap: the look-back window overlaps), polls on its interval with
/// jitter, and backs off (doubling, up to 6 h) while Qoo10 refuses its credentials.
async fn schedule(poller: &mut ShopPoller, shared: &Shared, lease: &str) {
    let interval = poller.shop.interval;
    let last = poller.state(&shared.sink).await.ok().and_then(|s| s.last_success);
    let due_in = last
        .and_then(|t| (t + chrono::Duration::from_std(interval).unwrap_or_default() - Utc::now()).to_std().ok())
        .unwrap_or_default();
    if !due_in.is_zero() {
        tracing::info!(shop = %poller.shop.id, wait_s = due_in.as_secs(), "resuming: last poll is recent");
    }
    let mut commands = match crate::writeback::consumer(&shared.sink.js, &shared.nats, &poller.shop.id).await {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(shop = %poller.shop.id, error = %e, "command consumer not opened; polling only");
            None
        }
    };
    if !wait_holding(poller, shared, lease, commands.as_mut(), due_in).await {
        return;
    }
    let mut refused = 0u32;
    loop {
        let outcome = {
            let _permit = shared.limit.acquire().await;
            poll_logged(poller, shared).await
        };
        let wait = match outcome {
            Err(PollError::Lost(_)) => return,
            Err(PollError::Credentials { .. }) => {
                refused += 1;
                (interval * 2u32.saturating_pow(refused - 1)).min(Duration::from_secs(6 * 3600))
            }
            _ => {
                refused = 0;
                jittered(interval, &poller.shop.id)
            }
        };
        if !wait_holding(poller, shared, lease, commands.as_mut(), wait).await {
            return;
        }
    }
}

/// Waits `d` while the lease holds, applying the shop's commands as they arrive; false as soon
/// as the lease is lost.
async fn wait_holding(
    poller: &mut ShopPoller,
    shared: &Shared,
    lease: &str,
    commands: Option<&mut runtime::durable::Durable>,
    d: Duration,
) -> bool {
    let Some(commands) = commands else { return sleep_holding(&shared.leases, lease, d).await };
    let end = tokio::time::Instant::now() + d;
    loop {
        let now = tokio::time::Instant::now();
        if !shared.leases.holds(lease) {
            return false;
        }
        if now >= end {
            return true;
        }
        let wait = (end - now).min(COMMAND_WAIT);
        let applied = crate::writeback::apply_pending(poller, &shared.client, &shared.sink, commands, wait).await;
        if let Err(PollError::Lost(_)) = applied {
            return false;
        }
    }
}

/// How long one wait for commands lasts: a command waits at most this long for a fetcher that
/// is between polls, and thousands of shops make few requests to NATS.
const COMMAND_WAIT: Duration = Duration::from_secs(10);

/// Sleeps `d`; false as soon as the lease is lost.
async fn sleep_holding(leases: &Leases, lease: &str, d: Duration) -> bool {
    let end = tokio::time::Instant::now() + d;
    loop {
        if !leases.holds(lease) {
            return false;
        }
        let now = tokio::time::Instant::now();
        if now >= end {
            return true;
        }
        tokio::time::sleep((end - now).min(runtime::lease::HEARTBEAT)).await;
    }
}

/// One poll, its figures in the metrics and the log.
pub async fn poll_logged(poller: &mut ShopPoller, shared: &Shared) -> Result<PollReport, PollError> {
    let (client, sink, metrics, cadence) = (&shared.client, &shared.sink, &shared.metrics, &shared.cadence);
    let started = std::time::Instant::now();
    let result = poller.poll(client, sink, cadence).await;
    let id = poller.shop.id.as_str();
    let now = Utc::now().timestamp() as f64;
    match &result {
        Ok(r) => {
            use crate::metrics::{LAST_SUCCESS, POLLS, PUBLISHED, ROWS, UNCHANGED};
            for (metric, n) in [(ROWS, r.rows), (PUBLISHED, r.published), (UNCHANGED, r.unchanged)] {
                metrics.add(metric, &[("shop", id)], n as f64);
            }
            metrics.set(LAST_SUCCESS, &[("shop", id)], now);
            metrics.inc(POLLS, &[("shop", id), ("outcome", "ok")]);
            tracing::info!(
                shop = %id, calls = r.calls, rows = r.rows, published = r.published, unchanged = r.unchanged,
                duplicates = r.duplicates, refused = ?r.refused, elapsed_ms = started.elapsed().as_millis() as u64,
                "poll complete"
            );
        }
        Err(e) => {
            let outcome = if matches!(e, PollError::Credentials { .. }) { "credentials" } else { "failed" };
            metrics.inc(crate::metrics::POLLS, &[("shop", id), ("outcome", outcome)]);
            metrics.set(crate::metrics::LAST_ERROR, &[("shop", id)], now);
            tracing::error!(shop = %id, error = %e, "poll failed");
        }
    }
    result
}

/// The interval ±10 %, varied per shop and per poll, so that thousands of shops do not poll in step.
fn jittered(interval: Duration, shop: &str) -> Duration {
    let seed = shop
        .bytes()
        .fold(Utc::now().timestamp_subsec_nanos() as u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    let spread = interval.as_millis() as u64 / 5;
    let offset = if spread == 0 { 0 } else { seed % spread };
    interval - Duration::from_millis(spread / 2) + Duration::from_millis(offset)
}
