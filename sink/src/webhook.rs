//! Optional delivery of alert transitions to a webhook (Slack-compatible `{"text": …}`).
//!
//! Best effort by design: alerts are durable in `ALERTS` and the `alerts` table; the webhook is a
//! notification. Transitions go through a bounded queue to one sender task that retries with
//! backoff; when the queue is full (the webhook is down for long), new notifications are dropped
//! and counted, and the pipeline never waits for the webhook.

use std::sync::Arc;
use std::time::Duration;

use runtime::telemetry::Metrics;

use backon::Retryable;
use schemas::Secret;
use schemas::alert::{Alert, AlertState};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The notification text: state, kind, shop and order, then the Japanese and English messages.
pub fn text(a: &Alert) -> String {
    let state = match a.state {
        AlertState::Open => "🔔 open",
        AlertState::Resolved => "✅ resolved",
    };
    let order = if a.order_no == 0 { String::new() } else { format!(" order {}", a.order_no) };
    format!("[{state}] {} — {}{order}\n{}\n{}", a.kind, a.shop_id, a.message_ja, a.message)
}

/// Counted in `webhook_notifications_total{outcome}`: `sent`, `failed` (retries gave up) and
/// `dropped` (the queue was full).
#[derive(Debug)]
pub struct Webhook {
    tx: mpsc::Sender<Alert>,
    task: JoinHandle<()>,
    metrics: Arc<Metrics>,
}

impl Webhook {
    pub fn start(url: Secret, queue: usize, metrics: Arc<Metrics>) -> Self {
        let (tx, mut rx) = mpsc::channel::<Alert>(queue);
        let counts = metrics.clone();
        let task = tokio::spawn(async move {
            let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("HTTP client");
            while let Some(alert) = rx.recv().await {
                let body = serde_json::json!({ "text": text(&alert) });
                let send = || async {
                    let r =
                        http.post(url.expose()).json(&body).send().await.map_err(|e| e.without_url().to_string())?;
                    if r.status().is_success() { Ok(()) } else { Err(format!("HTTP {}", r.status())) }
                };
                let backoff = runtime::retry::webhook();
                let result = send
                    .retry(backoff)
                    .sleep(tokio::time::sleep)
                    .notify(|e, d| tracing::warn!(alert_id = %alert.alert_id, error = %e, retry_in_ms = d.as_millis() as u64, "webhook failed; retrying"))
                    .await;
                let outcome = if let Err(e) = result {
                    tracing::error!(alert_id = %alert.alert_id, error = %e, "webhook gave up on this alert");
                    "failed"
                } else {
                    "sent"
                };
                counts.inc(crate::metrics::WEBHOOK, &[("outcome", outcome)]);
            }
        });
        Webhook { tx, task, metrics }
    }

    /// Queues a notification; never waits.
    pub fn notify(&self, alert: &Alert) {
        if self.tx.try_send(alert.clone()).is_err() {
            self.metrics.inc(crate::metrics::WEBHOOK, &[("outcome", "dropped")]);
            tracing::warn!(alert_id = %alert.alert_id, "webhook queue full; notification dropped");
        }
    }

    /// Lets queued notifications go out, for at most `limit`.
    pub async fn drain(self, limit: Duration) {
        drop(self.tx);
        let _ = tokio::time::timeout(limit, self.task).await;
    }
}
