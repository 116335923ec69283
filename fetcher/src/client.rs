//! The QAPI HTTP client: rate limits, retries with backoff, and secret hygiene.
//!
//! Every attempt, retries included, first waits for the shop's limiter and then the process-wide
//! one, so no mix of shops, retries and faults can exceed the configured rates. Transient
//! failures (transport errors, timeouts, 5xx/429, HTML or garbage bodies) are retried with
//! exponential backoff and jitter within a time budget; QAPI result codes are never retried here
//! (the poller decides, e.g. renewing an expired key once).

use std::num::NonZeroU32;
use std::time::Duration;

use backon::Retryable;
use governor::{DefaultDirectRateLimiter, Quota};
use schemas::Secret;
use schemas::config::{Qoo10Config, UrlStyle};
use schemas::qapi::{self, QapiResponse, ResponseError};
use schemas::secret::scrub;
use std::sync::Arc;

use runtime::telemetry::Metrics;

pub type Limiter = DefaultDirectRateLimiter;

/// How much slower than the configured global rate calls are released (see [`limiter`]).
pub const GLOBAL_MARGIN: f64 = 1.03;

/// The process-wide limiter behind a FIFO queue: one caller at a time waits on the limiter, the
/// others on a fair lock. Thousands of shops waiting on the limiter directly all woke at every
/// free slot and all but one slept again: a first import of 2,000 shops cost 138 CPU s.
#[derive(Debug)]
pub struct Global {
    limiter: Limiter,
    queue: tokio::sync::Mutex<()>,
}

impl Global {
    pub fn new(per_second: f64) -> Self {
        Global { limiter: limiter(per_second), queue: tokio::sync::Mutex::new(()) }
    }

    pub async fn until_ready(&self) {
        let _turn = self.queue.lock().await;
        self.limiter.until_ready().await;
    }
}

/// The process-wide limiter: spaces calls evenly at `per_second` with no burst, so that no
/// one-second window holds more than the configured number of calls. A 3 % margin (30 ms a
/// second) absorbs the jitter between a call's release and its arrival: with 1 %, a first import
/// of 2,000 shops at 200 requests/s (38,000 requests) had one request arrive in a sliding second
/// that already held 200, on two busy cores.
pub fn limiter(per_second: f64) -> Limiter {
    let period = Duration::from_secs_f64(GLOBAL_MARGIN / per_second);
    let quota = Quota::with_period(period).expect("validated rate is above 0").allow_burst(NonZeroU32::MIN);
    DefaultDirectRateLimiter::direct(quota)
}

/// A shop's rate limit, counted from when its calls are actually *sent*.
///
/// Counting from the release of a per-shop token is not enough: a call then waits for the global
/// limiter (crowded by other shops) while the shop's next token comes due, and two calls of one
/// shop arrive closer than allowed. Measured with the sandbox's request log: 90 violations out of
/// 490 requests with 200 shops at 1/s each before this gate, none after.
#[derive(Debug)]
pub struct ShopGate {
    interval: Duration,
    last_sent: tokio::sync::Mutex<Option<tokio::time::Instant>>,
}

impl ShopGate {
    pub fn new(per_second: f64) -> Self {
        ShopGate { interval: Duration::from_secs_f64(1.01 / per_second), last_sent: tokio::sync::Mutex::new(None) }
    }

    /// Waits until the shop may send and the global limiter lets the call through, and records
    /// the send time.
    async fn pass(&self, global: &Global) {
        let mut last = self.last_sent.lock().await;
        if let Some(t) = *last {
            tokio::time::sleep_until(t + self.interval).await;
        }
        global.until_ready().await;
        *last = Some(tokio::time::Instant::now());
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("{method}: transport error: {reason}")]
    Transport { method: String, reason: String },
    #[error("{method}: no answer within {timeout:?}")]
    Timeout { method: String, timeout: Duration },
    #[error("{method}: HTTP {status}")]
    Http { method: String, status: u16, retry_after: Option<Duration> },
    #[error("{method}: {source}")]
    Response { method: String, source: ResponseError },
    /// Larger than `[qoo10] max_response_mb`: not read on (no retry cures it).
    #[error("{method}: the answer is larger than {limit_mb} MB ([qoo10] max_response_mb)")]
    TooLarge { method: String, limit_mb: u32 },
}

impl CallError {
    /// Worth another attempt: the same request may well succeed later.
    pub fn is_transient(&self) -> bool {
        match self {
            CallError::Transport { .. } | CallError::Timeout { .. } => true,
            CallError::Http { status, .. } => *status >= 500 || *status == 429 || *status == 408,
            CallError::Response { source, .. } => !matches!(source, ResponseError::Routing(_)),
            CallError::TooLarge { .. } => false,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            CallError::Http { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

#[derive(Debug)]
pub struct QapiClient {
    http: reqwest::Client,
    base_url: String,
    style: UrlStyle,
    timeout: Duration,
    retry_budget: Duration,
    max_response_mb: u32,
    global: Global,
    metrics: Arc<Metrics>,
}

impl QapiClient {
    pub fn new(cfg: &Qoo10Config) -> Result<Self, CallError> {
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("qoo10-pipeline-fetcher/", env!("CARGO_PKG_VERSION")))
            // A redirect would carry the GiosisCertificationKey header (or the key in the query)
            // to wherever it points: QAPI does not redirect, so none is followed.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| CallError::Transport { method: "client".into(), reason: e.to_string() })?;
        Ok(QapiClient {
            http,
            base_url: cfg.base_url.trim_end_matches('/').to_owned(),
            style: cfg.url_style,
            timeout: cfg.timeout,
            retry_budget: cfg.retry_budget,
            max_response_mb: cfg.max_response_mb,
            global: Global::new(cfg.global_requests_per_second),
            metrics: Metrics::new(),
        })
    }

    /// Records QAPI calls (by method and outcome) and rate-limiter waits in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Calls `method` with `key` (the API key for CreateCertificationKey, else the seller
    /// authorization key). `secrets` are scrubbed from every error text.
    pub async fn call(
        &self,
        shop_gate: &ShopGate,
        method: &str,
        key: &Secret,
        params: &[(&str, String)],
        secrets: &[&Secret],
        shop_id: &str,
    ) -> Result<QapiResponse, CallError> {
        let backoff = runtime::retry::qapi(self.retry_budget);
        let attempt = || self.call_once(shop_gate, method, key, params, secrets);
        attempt
            .retry(backoff)
            .sleep(tokio::time::sleep)
            .when(CallError::is_transient)
            .adjust(|e, delay| delay.map(|d| e.retry_after().map_or(d, |r| r.max(d))))
            .notify(|e, delay| {
                tracing::warn!(shop = shop_id, method, error = %e, retry_in_ms = delay.as_millis() as u64, "QAPI call failed; retrying");
            })
            .await
    }

    /// One attempt of [`QapiClient::call`], not retried: for a write, whose lost answer must
    /// be read back before it is sent again. Waits for the shop's gate and the global limiter
    /// like every call.
    pub async fn call_once(
        &self,
        shop_gate: &ShopGate,
        method: &str,
        key: &Secret,
        params: &[(&str, String)],
        secrets: &[&Secret],
    ) -> Result<QapiResponse, CallError> {
        let waited = std::time::Instant::now();
        shop_gate.pass(&self.global).await;
        self.metrics.add(crate::metrics::RATE_LIMIT_WAIT, &[], waited.elapsed().as_secs_f64());
        let result = self.attempt(method, key, params, secrets).await;
        let outcome = match &result {
            Ok(r) => r.code.to_string(),
            Err(CallError::Transport { .. }) => "transport".into(),
            Err(CallError::Timeout { .. }) => "timeout".into(),
            Err(CallError::Http { status, .. }) => format!("http_{status}"),
            Err(CallError::Response { source: ResponseError::Routing(_), .. }) => "routing".into(),
            Err(CallError::Response { .. }) => "not_qapi".into(),
            Err(CallError::TooLarge { .. }) => "too_large".into(),
        };
        self.metrics.inc(crate::metrics::REQUESTS, &[("method", method), ("outcome", &outcome)]);
        result
    }

    async fn attempt(
        &self,
        method: &str,
        key: &Secret,
        params: &[(&str, String)],
        secrets: &[&Secret],
    ) -> Result<QapiResponse, CallError> {
        let request = match self.style {
            UrlStyle::Path => {
                let mut form: Vec<(&str, &str)> = vec![("returnType", "application/json")];
                form.extend(params.iter().map(|(k, v)| (*k, v.as_str())));
                self.http
                    .post(format!("{}/{method}", self.base_url))
                    .header(qapi::CERT_HEADER, key.expose())
                    .header("QAPIVersion", "1.0")
                    .form(&form)
            }
            UrlStyle::Query => {
                let mut query: Vec<(&str, &str)> =
                    vec![("v", "1.0"), ("returnType", "json"), ("method", method), ("key", key.expose())];
                query.extend(params.iter().map(|(k, v)| (*k, v.as_str())));
                self.http.get(&self.base_url).query(&query)
            }
        };
        let clean = |e: reqwest::Error| scrub(&e.without_url().to_string(), secrets);
        let response = request.send().await.map_err(|e| {
            if e.is_timeout() {
                CallError::Timeout { method: method.into(), timeout: self.timeout }
            } else {
                CallError::Transport { method: method.into(), reason: clean(e) }
            }
        })?;
        let status = response.status();
        let server_time =
            response.headers().get(reqwest::header::DATE).and_then(|v| v.to_str().ok()).and_then(qapi::http_date);
        if !status.is_success() {
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            return Err(CallError::Http { method: method.into(), status: status.as_u16(), retry_after });
        }
        let body = self.body(method, response, &clean).await?;
        let mut parsed = qapi::parse_response(&body).map_err(|source| {
            let source = match source {
                ResponseError::Routing(t) => ResponseError::Routing(scrub(&t, secrets)),
                ResponseError::NotJson(t) => ResponseError::NotJson(scrub(&t, secrets)),
                ResponseError::NoEnvelope(t) => ResponseError::NoEnvelope(scrub(&t, secrets)),
            };
            CallError::Response { method: method.into(), source }
        })?;
        parsed.server_time = server_time;
        Ok(parsed)
    }
}

impl QapiClient {
    /// The answer's body, read up to `[qoo10] max_response_mb` (a declared length over it is
    /// refused before reading).
    async fn body(
        &self,
        method: &str,
        mut response: reqwest::Response,
        clean: &(dyn Fn(reqwest::Error) -> String + Sync),
    ) -> Result<Vec<u8>, CallError> {
        let limit = u64::from(self.max_response_mb) * 1024 * 1024;
        let too_large = || CallError::TooLarge { method: method.into(), limit_mb: self.max_response_mb };
        if response.content_length().is_some_and(|n| n > limit) {
            return Err(too_large());
        }
        let failed = |e: reqwest::Error| {
            if e.is_timeout() {
                CallError::Timeout { method: method.into(), timeout: self.timeout }
            } else {
                CallError::Transport { method: method.into(), reason: clean(e) }
            }
        };
        let mut body = Vec::with_capacity(response.content_length().unwrap_or(64 * 1024).min(limit) as usize);
        while let Some(chunk) = response.chunk().await.map_err(failed)? {
            if (body.len() + chunk.len()) as u64 > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_or_not() {
        let m = || "m".to_string();
        assert!(CallError::Transport { method: m(), reason: "reset".into() }.is_transient());
        assert!(CallError::Http { method: m(), status: 503, retry_after: None }.is_transient());
        assert!(CallError::Http { method: m(), status: 429, retry_after: None }.is_transient());
        assert!(!CallError::Http { method: m(), status: 404, retry_after: None }.is_transient());
        assert!(CallError::Response { method: m(), source: ResponseError::NotJson("<html>".into()) }.is_transient());
        assert!(
            !CallError::Response { method: m(), source: ResponseError::Routing("Can't find".into()) }.is_transient()
        );
    }

    /// A one-shot HTTP server on loopback answering `answer` to its first request; yields the
    /// request's head.
    fn serve_once(answer: Vec<u8>) -> (String, std::sync::mpsc::Receiver<String>) {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            if let Ok((mut s, _)) = listener.accept() {
                let mut buf = vec![0u8; 64 * 1024];
                let n = s.read(&mut buf).unwrap_or(0);
                let _ = tx.send(String::from_utf8_lossy(&buf[..n]).into_owned());
                let _ = s.write_all(&answer);
            }
        });
        (url, rx)
    }

    fn client(base_url: &str, max_response_mb: u32) -> QapiClient {
        runtime::install_crypto_provider();
        let cfg = Qoo10Config {
            base_url: base_url.into(),
            retry_budget: Duration::from_millis(1),
            max_response_mb,
            ..Qoo10Config::default()
        };
        QapiClient::new(&cfg).unwrap()
    }

    #[tokio::test]
    async fn a_redirect_is_not_followed_so_the_key_stays_home() {
        let (elsewhere, visited) = serve_once(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}".to_vec());
        let redirect = format!("HTTP/1.1 302 Found\r\nlocation: {elsewhere}/steal\r\ncontent-length: 0\r\n\r\n");
        let (qapi, _) = serve_once(redirect.into_bytes());
        let key = Secret::new("SAK-secret-123");
        let r = client(&qapi, 16)
            .call_once(&ShopGate::new(100.0), "ShippingBasic.GetShippingInfo_v3", &key, &[], &[&key])
            .await;
        assert!(matches!(r, Err(CallError::Http { status: 302, .. })), "{r:?}");
        assert!(visited.recv_timeout(Duration::from_millis(300)).is_err(), "the redirect target got the key");
    }

    #[tokio::test]
    async fn an_answer_beyond_the_cap_fails_the_call_naming_the_limit() {
        let body = format!("{{\"ResultCode\":0,\"ResultObject\":\"{}\"}}", "x".repeat(1_100_000));
        // Declared length over the cap, and none declared (chunked): both refused.
        let declared = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len());
        let (url, _) = serve_once(declared.into_bytes());
        let key = Secret::new("k");
        let gate = ShopGate::new(100.0);
        let r = client(&url, 1).call_once(&gate, "ShippingBasic.GetShippingInfo_v3", &key, &[], &[]).await;
        assert!(matches!(r, Err(CallError::TooLarge { limit_mb: 1, .. })), "{r:?}");
        let chunked =
            format!("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n", body.len());
        let (url, _) = serve_once(chunked.into_bytes());
        let r = client(&url, 1).call_once(&gate, "ShippingBasic.GetShippingInfo_v3", &key, &[], &[]).await;
        let e = r.expect_err("too large");
        assert!(e.to_string().contains("larger than 1 MB ([qoo10] max_response_mb)"), "{e}");
        let small = "{\"ResultCode\":0,\"ResultObject\":[]}";
        let (url, _) =
            serve_once(format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{small}", small.len()).into_bytes());
        assert!(client(&url, 1).call_once(&gate, "ShippingBasic.GetShippingInfo_v3", &key, &[], &[]).await.is_ok());
    }

    #[test]
    fn limiter_has_no_burst() {
        let l = limiter(5.0);
        assert!(l.check().is_ok());
        assert!(l.check().is_err(), "a second call in the same instant must wait");
    }

    #[tokio::test]
    async fn a_shop_gate_counts_from_the_send() {
        // The shop may send every 200 ms; the global limiter holds its second call until ~500 ms.
        let gate = ShopGate::new(5.0);
        let slow_global = Global::new(2.0);
        gate.pass(&slow_global).await;
        gate.pass(&slow_global).await;
        let second_sent = tokio::time::Instant::now();
        // The third call's 200 ms count from the second *send*, not from its release at ~200 ms.
        gate.pass(&Global::new(1000.0)).await;
        assert!(second_sent.elapsed() >= Duration::from_millis(200), "{:?}", second_sent.elapsed());
    }
}
