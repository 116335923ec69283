//! The retry policies of the pipeline, named by what they are for. Every retry in the code uses
//! one of these, so that what "retried with backoff" means is written down once.

use std::time::Duration;

use backon::ExponentialBuilder;

/// A dependency (NATS, ClickHouse) away while work is held: 200 ms doubling to 30 s, with
/// jitter, until it succeeds or the service is asked to stop.
pub fn while_held() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(30))
        .with_jitter()
        .with_max_times(usize::MAX)
}

/// A JetStream API call at start: a cluster electing a new leader answers with timeouts for a
/// few seconds. 250 ms doubling to 5 s, ten times (about 30 s); a lasting error fails the start.
pub fn at_start() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(250))
        .with_max_delay(Duration::from_secs(5))
        .with_max_times(10)
}

/// A QAPI call's transient failures (transport, timeouts, 5xx, 429, garbage): 200 ms doubling to
/// 30 s, with jitter, within `budget` in all; then the poll fails.
pub fn qapi(budget: Duration) -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(30))
        .with_jitter()
        .with_max_times(usize::MAX)
        .with_total_delay(Some(budget))
}

/// A webhook notification (best effort): 200 ms doubling to 10 s, with jitter, for a minute.
pub fn webhook() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(10))
        .with_jitter()
        .with_max_times(usize::MAX)
        .with_total_delay(Some(Duration::from_secs(60)))
}
