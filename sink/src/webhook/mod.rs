//! Optional delivery of alerts to a webhook (Slack-compatible `{"text": …}` body).
//!
//! Best effort by design: alerts are durable in `ALERTS` and the `alerts` table; the webhook is a
//! notification, and the pipeline never waits for it. Two modes (`[alerts] webhook_mode`):
//! - `digest` (default): one message per shop and burst of transitions ([`digest`]): counts by
//!   kind, the most urgent few, a link to the alert center. Gathering is a counter update, so
//!   nothing is dropped however many transitions a first import brings.
//! - `each`: one message per transition, through a bounded queue (full: dropped and counted).
//!
//! One sender task sends at most one message per `webhook_min_interval` (Slack accepts about one
//! a second), waits out a `429`'s `Retry-After`, and retries other failures with backoff.
//! Counted in `webhook_notifications_total{outcome}`: `sent`, `failed` (retries gave up),
//! `dropped` (the `each` queue was full); all three are exported from the start.

pub mod digest;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use runtime::telemetry::Metrics;
use schemas::Secret;
use schemas::alert::{Alert, AlertState};
use schemas::config::{AlertsConfig, WebhookMode};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

use digest::Digests;

/// The per-transition text: state, kind, shop and order, then the Japanese and English messages.
pub fn text(a: &Alert) -> String {
    let state = match a.state {
        AlertState::Open => "🔔 open",
        AlertState::Resolved => "✅ resolved",
    };
    let order = if a.order_no == 0 { String::new() } else { format!(" order {}", a.order_no) };
    format!("[{state}] {} — {}{order}\n{}\n{}", a.kind, a.shop_id, a.message_ja, a.message)
}

#[derive(Debug)]
pub struct Webhook {
    mode: WebhookMode,
    each: mpsc::Sender<Alert>,
    digests: Arc<Mutex<Digests>>,
    wake: Arc<Notify>,
    stop: Arc<Notify>,
    /// Messages taken out to be sent and not sent yet.
    unsent: Arc<std::sync::atomic::AtomicUsize>,
    task: JoinHandle<()>,
    metrics: Arc<Metrics>,
}

const OUTCOMES: [&str; 3] = ["sent", "failed", "dropped"];

impl Webhook {
    pub fn start(url: Secret, alerts: &AlertsConfig, queue: usize, metrics: Arc<Metrics>) -> Self {
        for outcome in OUTCOMES {
            metrics.add(crate::metrics::WEBHOOK, &[("outcome", outcome)], 0.0);
        }
        let (each, rx) = mpsc::channel::<Alert>(queue);
        let (digests, wake, stop) =
            (Arc::new(Mutex::new(Digests::default())), Arc::new(Notify::new()), Arc::new(Notify::new()));
        let unsent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let sender = Sender::new(url, alerts.webhook_min_interval, metrics.clone(), unsent.clone());
        let task = tokio::spawn(run(sender, rx, digests.clone(), wake.clone(), stop.clone(), alerts.page_url.clone()));
        Webhook { mode: alerts.webhook_mode, each, digests, wake, stop, unsent, task, metrics }
    }

    /// Takes a transition in; never waits.
    pub fn notify(&self, alert: &Alert) {
        match self.mode {
            WebhookMode::Digest => {
                self.digests.lock().expect("digests").add(alert, Instant::now(), crate::center::today());
                self.wake.notify_one();
            }
            WebhookMode::Each => {
                if self.each.try_send(alert.clone()).is_err() {
                    self.metrics.inc(crate::metrics::WEBHOOK, &[("outcome", "dropped")]);
                    tracing::warn!(alert_id = %alert.alert_id, "webhook queue full; notification dropped");
                }
            }
        }
    }

    /// Sends what is gathered and queued, for at most `limit`; what is left then is counted as
    /// dropped (a first import of 2,000 shops is 2,000 digests: half an hour at Slack's rate).
    pub async fn drain(self, limit: Duration) {
        drop(self.each);
        self.stop.notify_one();
        let mut task = self.task;
        if tokio::time::timeout(limit, &mut task).await.is_err() {
            task.abort();
            let left =
                self.unsent.load(std::sync::atomic::Ordering::Relaxed) + self.digests.lock().expect("digests").len();
            if left > 0 {
                self.metrics.add(crate::metrics::WEBHOOK, &[("outcome", "dropped")], left as f64);
                tracing::warn!(left, "webhook: stopping with notifications not sent; counted as dropped");
            }
        }
    }
}

/// The sender task: per-transition messages as they come, digests when due; everything left
/// when stopped.
async fn run(
    mut sender: Sender,
    mut each: mpsc::Receiver<Alert>,
    digests: Arc<Mutex<Digests>>,
    wake: Arc<Notify>,
    stop: Arc<Notify>,
    page_url: String,
) {
    let mut stopping = false;
    loop {
        let due = digests.lock().expect("digests").due(Instant::now(), stopping, &page_url);
        sender.send_all(due).await;
        let next = digests.lock().expect("digests").next_due();
        let sleep = next.map_or(Duration::from_secs(3600), |t| t.saturating_duration_since(Instant::now()));
        tokio::select! {
            a = each.recv(), if !stopping => match a {
                Some(a) => sender.send_all(vec![(a.alert_id.clone(), text(&a))]).await,
                None => stopping = true,
            },
            _ = wake.notified(), if !stopping => {}
            _ = stop.notified(), if !stopping => stopping = true,
            _ = tokio::time::sleep(sleep) => {}
        }
        if stopping {
            let mut rest: Vec<(String, String)> = Vec::new();
            while let Ok(a) = each.try_recv() {
                rest.push((a.alert_id.clone(), text(&a)));
            }
            rest.extend(digests.lock().expect("digests").due(Instant::now(), true, &page_url));
            sender.send_all(rest).await;
            return;
        }
    }
}

/// Sends one message at a time, paced, honouring `Retry-After`.
struct Sender {
    url: Secret,
    http: reqwest::Client,
    min_interval: Duration,
    last: Option<Instant>,
    metrics: Arc<Metrics>,
    unsent: Arc<std::sync::atomic::AtomicUsize>,
}

/// A failed attempt: how long the receiver asked us to wait, if it did.
struct Refused {
    error: String,
    retry_after: Option<Duration>,
}

impl Sender {
    fn new(
        url: Secret,
        min_interval: Duration,
        metrics: Arc<Metrics>,
        unsent: Arc<std::sync::atomic::AtomicUsize>,
    ) -> Sender {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("HTTP client");
        Sender { url, http, min_interval, last: None, metrics, unsent }
    }

    /// Sends each (about, text) in turn, counting what is still to go.
    async fn send_all(&mut self, messages: Vec<(String, String)>) {
        use std::sync::atomic::Ordering::Relaxed;
        self.unsent.store(messages.len(), Relaxed);
        for (about, text) in messages {
            self.send(&text, &about).await;
            self.unsent.fetch_sub(1, Relaxed);
        }
    }

    /// Sends `text` (`about` names it in logs), retrying for at most a minute.
    async fn send(&mut self, text: &str, about: &str) {
        let body = serde_json::json!({ "text": text });
        let started = Instant::now();
        let mut backoff = backon::BackoffBuilder::build(runtime::retry::webhook());
        let outcome = loop {
            if let Some(last) = self.last {
                tokio::time::sleep_until((last + self.min_interval).into()).await;
            }
            self.last = Some(Instant::now());
            let refused = match self.attempt(&body).await {
                Ok(()) => break "sent",
                Err(r) => r,
            };
            let wait = refused.retry_after.or_else(|| backoff.next());
            match wait {
                Some(w) if started.elapsed() + w < Duration::from_secs(120) => {
                    tracing::warn!(about, error = %refused.error, retry_in_ms = w.as_millis() as u64, "webhook failed; retrying");
                    tokio::time::sleep(w).await;
                }
                _ => {
                    tracing::error!(about, error = %refused.error, "webhook gave up on this notification");
                    break "failed";
                }
            }
        };
        self.metrics.inc(crate::metrics::WEBHOOK, &[("outcome", outcome)]);
    }

    async fn attempt(&self, body: &serde_json::Value) -> Result<(), Refused> {
        let r = self
            .http
            .post(self.url.expose())
            .json(body)
            .send()
            .await
            .map_err(|e| Refused { error: e.without_url().to_string(), retry_after: None })?;
        if r.status().is_success() {
            return Ok(());
        }
        let retry_after = r
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|s| Duration::from_secs(s.min(60)));
        Err(Refused { error: format!("HTTP {}", r.status()), retry_after })
    }
}
