//! The fetcher's metrics, declared once.

use runtime::telemetry::Metric;

pub const ROWS: Metric = Metric::new("fetcher_rows_total", "Rows Qoo10 returned, by shop.");
pub const PUBLISHED: Metric =
    Metric::new("fetcher_published_total", "New or changed rows published to QOO10_RAW, by shop.");
pub const UNCHANGED: Metric = Metric::new("fetcher_unchanged_total", "Rows skipped as unchanged, by shop.");
pub const POLLS: Metric = Metric::new("fetcher_polls_total", "Polls by shop and outcome.");
pub const LAST_SUCCESS: Metric =
    Metric::new("fetcher_last_success_timestamp_seconds", "When the shop's last complete poll ended.");
pub const LAST_ERROR: Metric = Metric::new("fetcher_last_error_timestamp_seconds", "When the shop's last poll failed.");
pub const REQUESTS: Metric =
    Metric::new("qoo10_requests_total", "QAPI requests by method and outcome (result code, or the failure).");
pub const RATE_LIMIT_WAIT: Metric =
    Metric::new("qoo10_rate_limit_wait_seconds_total", "Time QAPI calls waited for the rate limiters.");
