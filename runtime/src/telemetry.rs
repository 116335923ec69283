//! `/metrics` (Prometheus text format), `/healthz` and `/readyz` for every service.
//!
//! A deliberately small registry: counters, gauges and fixed-bucket histograms keyed by name and
//! labels, rendered on each scrape. Label values come from our own data (shop ids, methods,
//! kinds), never from secrets.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;

/// Histogram buckets (seconds) for latencies.
const BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

#[derive(Debug, Default)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

#[derive(Debug, Default)]
struct Registry {
    /// (name, rendered labels) → value; help texts by name.
    counters: BTreeMap<(String, String), f64>,
    gauges: BTreeMap<(String, String), f64>,
    histograms: BTreeMap<(String, String), Histogram>,
    help: BTreeMap<String, &'static str>,
}

#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Registry>,
}

/// A metric, declared once with its help text (`pub const X: Metric = Metric::new(…)` next to
/// the code that updates it); call sites name the constant, never the string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metric {
    pub name: &'static str,
    pub help: &'static str,
}

impl Metric {
    pub const fn new(name: &'static str, help: &'static str) -> Self {
        Metric { name, help }
    }
}

/// Consumer lag: messages not yet delivered (normalizer, sink).
pub const CONSUMER_PENDING: Metric =
    Metric::new("consumer_pending", "Messages not yet delivered to the consumer (lag).");
pub const REDELIVERIES: Metric = Metric::new("consumer_redeliveries_total", "Messages delivered more than once.");
pub const DEAD_LETTERS: Metric = Metric::new("dead_letters_total", "Messages sent to the DLQ, by stage and reason.");
pub const RETRIES: Metric =
    Metric::new("retries_total", "Retries of held work, by operation and cause (nats, clickhouse_timeout, …).");

fn labels(pairs: &[(&str, &str)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let body: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', " ")))
        .collect();
    format!("{{{}}}", body.join(","))
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        Arc::new(Metrics::default())
    }

    pub fn add(&self, m: Metric, pairs: &[(&str, &str)], v: f64) {
        let mut r = self.inner.lock().expect("metrics lock");
        r.help.entry(m.name.to_owned()).or_insert(m.help);
        *r.counters.entry((m.name.to_owned(), labels(pairs))).or_default() += v;
    }

    pub fn inc(&self, m: Metric, pairs: &[(&str, &str)]) {
        self.add(m, pairs, 1.0);
    }

    pub fn set(&self, m: Metric, pairs: &[(&str, &str)], v: f64) {
        let mut r = self.inner.lock().expect("metrics lock");
        r.help.entry(m.name.to_owned()).or_insert(m.help);
        r.gauges.insert((m.name.to_owned(), labels(pairs)), v);
    }

    pub fn observe(&self, m: Metric, pairs: &[(&str, &str)], seconds: f64) {
        self.observe_all(m, pairs, [seconds]);
    }

    /// Several observations of one histogram under one lock and one lookup (a batch's
    /// latencies: one call per order had cost more than the rest of the bookkeeping).
    pub fn observe_all(&self, m: Metric, pairs: &[(&str, &str)], values: impl IntoIterator<Item = f64>) {
        let mut r = self.inner.lock().expect("metrics lock");
        r.help.entry(m.name.to_owned()).or_insert(m.help);
        let h = r.histograms.entry((m.name.to_owned(), labels(pairs))).or_default();
        if h.counts.is_empty() {
            h.counts = vec![0; BUCKETS.len()];
        }
        for seconds in values {
            for (i, b) in BUCKETS.iter().enumerate() {
                if seconds <= *b {
                    h.counts[i] += 1;
                }
            }
            h.sum += seconds;
            h.count += 1;
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let r = self.inner.lock().expect("metrics lock");
        let mut out = String::new();
        let head = |out: &mut String, name: &str, kind: &str, done: &mut std::collections::HashSet<String>| {
            if done.insert(name.to_owned()) {
                let _ = writeln!(out, "# HELP {name} {}", r.help.get(name).copied().unwrap_or(""));
                let _ = writeln!(out, "# TYPE {name} {kind}");
            }
        };
        let mut done = std::collections::HashSet::new();
        for ((name, l), v) in &r.counters {
            head(&mut out, name, "counter", &mut done);
            let _ = writeln!(out, "{name}{l} {v}");
        }
        for ((name, l), v) in &r.gauges {
            head(&mut out, name, "gauge", &mut done);
            let _ = writeln!(out, "{name}{l} {v}");
        }
        for ((name, l), h) in &r.histograms {
            head(&mut out, name, "histogram", &mut done);
            let inner = l.trim_start_matches('{').trim_end_matches('}');
            let sep = if inner.is_empty() { "" } else { "," };
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(out, "{name}_bucket{{{inner}{sep}le=\"{b}\"}} {}", h.counts[i]);
            }
            let _ = writeln!(out, "{name}_bucket{{{inner}{sep}le=\"+Inf\"}} {}", h.count);
            let _ = writeln!(out, "{name}_sum{l} {}", h.sum);
            let _ = writeln!(out, "{name}_count{l} {}", h.count);
        }
        out
    }
}

/// A readiness check: `Ok` when the service is ready, else the one-line reason `/readyz` gives.
pub type ReadyCheck = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// Serves `/metrics`, `/healthz` (the process runs) and `/readyz` (200 `ready`, or 503 and why) on
/// `listen`; an empty `listen` serves nothing. Returns the address actually bound (port 0 picks
/// a free one).
pub async fn serve(listen: &str, metrics: Arc<Metrics>, ready: ReadyCheck) -> std::io::Result<Option<SocketAddr>> {
    serve_with(listen, metrics, ready, Router::new()).await
}

/// [`serve`], plus the service's own pages.
pub async fn serve_with(
    listen: &str,
    metrics: Arc<Metrics>,
    ready: ReadyCheck,
    pages: Router,
) -> std::io::Result<Option<SocketAddr>> {
    if listen.is_empty() {
        return Ok(None);
    }
    let app = pages
        .route("/metrics", get(move || async move { metrics.render() }))
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.clone();
                async move {
                    match ready().await {
                        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
                        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")),
                    }
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        // The peer's address reaches handlers that need it (the alert center's sign-in throttle).
        let _ = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await;
    });
    tracing::info!(%addr, "serving /metrics, /healthz, /readyz");
    Ok(Some(addr))
}

/// Ready when the NATS connection is up, JetStream answers, and the stage's own [`Health`]
/// says so; then `extra` (the sink's ClickHouse), if any.
///
/// [`Health`]: crate::health::Health
///
/// JetStream is asked about `probe` (one of the deployment's streams): a server whose JetStream
/// is disabled (out of disk) or has lost the stream answers with an error.
pub fn ready_check(
    client: async_nats::Client,
    health: Arc<crate::health::Health>,
    probe: String,
    extra: Option<ReadyCheck>,
) -> ReadyCheck {
    Arc::new(move || {
        let (client, health, extra, probe) = (client.clone(), health.clone(), extra.clone(), probe.clone());
        Box::pin(async move {
            if client.connection_state() != async_nats::connection::State::Connected {
                return Err("nats unreachable".into());
            }
            let js = async_nats::jetstream::new(client);
            let answered = tokio::time::timeout(std::time::Duration::from_secs(2), js.get_stream(probe)).await;
            match answered {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(format!("jetstream unavailable: {e}")),
                Err(_) => return Err("jetstream unavailable: no answer within 2 s".into()),
            }
            health.verdict()?;
            match extra {
                Some(check) => check().await,
                None => Ok(()),
            }
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        let rows = Metric::new("rows_total", "Rows.");
        m.inc(rows, &[("shop", "a")]);
        m.add(rows, &[("shop", "a")], 2.0);
        m.set(Metric::new("lag", "Lag."), &[], 7.0);
        m.observe(Metric::new("latency_seconds", "Latency."), &[("t", "x")], 0.03);
        let text = m.render();
        assert!(text.contains("# TYPE rows_total counter\nrows_total{shop=\"a\"} 3\n"), "{text}");
        assert!(text.contains("lag 7\n"), "{text}");
        assert!(text.contains("latency_seconds_bucket{t=\"x\",le=\"0.025\"} 0\n"), "{text}");
        assert!(text.contains("latency_seconds_bucket{t=\"x\",le=\"0.05\"} 1\n"), "{text}");
        assert!(text.contains("latency_seconds_count{t=\"x\"} 1\n"), "{text}");
    }
}
