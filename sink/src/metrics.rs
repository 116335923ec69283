//! The sink's metrics, declared once.

use runtime::telemetry::Metric;

pub const INSERT_ROWS: Metric = Metric::new("clickhouse_insert_rows_total", "Rows inserted, by table.");
pub const BATCHES: Metric = Metric::new("clickhouse_batches_total", "Batches written.");
pub const INSERT_SECONDS: Metric =
    Metric::new("clickhouse_insert_seconds", "Time to write one batch (all tables), retries included.");
pub const ALERTS: Metric = Metric::new("alerts_total", "Alert transitions, by kind and state.");
pub const LATENCY: Metric =
    Metric::new("end_to_end_latency_seconds", "From the QAPI response (fetched_at) to ClickHouse confirming the row.");
pub const LATE_VERSIONS: Metric =
    Metric::new("late_versions_total", "Versions that arrived after newer ones, folded in.");
pub const WEBHOOK: Metric = Metric::new(
    "webhook_notifications_total",
    "Webhook notifications by outcome (sent, failed after retries, dropped).",
);
pub const PERSONAL_EXPIRED: Metric = Metric::new(
    "personal_data_expired_total",
    "Order lines whose personal data the daily retention deleted (personal_data_days after settling).",
);
