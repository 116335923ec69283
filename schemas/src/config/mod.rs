//! `pipeline.toml`: one file shared by every service; each reads its sections.
//!
//! Loading is strict and happens once: the file is read as written ([`file`]: unknown keys are
//! errors, each one's exact path known), environment overrides are applied, and each section is
//! validated into the types below, secrets resolved. So a mistake stops the service at start with
//! one line naming the file, the key and what to change, and a service holding a
//! [`PipelineConfig`] holds a valid one: nothing is checked, or resolved, later.

pub mod file;
pub mod userinfo;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::secret::Secret;
use crate::status::{Status, StatusMap};

pub const DEFAULT_QAPI_BASE_URL: &str = "https://api.qoo10.jp/GMKT.INC.Front.QAPIService/ebayjapan.qapi";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {reason}")]
    Read { file: String, reason: String },
    #[error("{file}: {reason}")]
    Parse { file: String, reason: String },
    #[error("{file}: `{key}`: {reason}")]
    Invalid { file: String, key: String, reason: String },
}

/// The validated configuration (see the module docs). Serialized, it is what `--print-config`
/// shows: the effective configuration, secrets redacted, itself a valid file.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineConfig {
    pub nats: NatsConfig,
    pub clickhouse: ClickHouseConfig,
    pub qoo10: Qoo10Config,
    pub fetcher: FetcherConfig,
    pub shops: Vec<ShopConfig>,
    pub normalizer: NormalizerConfig,
    pub sink: SinkConfig,
    pub alerts: AlertsConfig,
    /// The contract's status table with `[normalizer]`'s destination and overrides.
    #[serde(skip)]
    pub status_map: StatusMap,
    /// Where the configuration came from (a file path, or "built-in defaults").
    #[serde(skip)]
    pub source: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct NatsConfig {
    /// One server, or several separated by commas (seeds of a cluster: any live one will do).
    pub url: String,
    /// User/password authentication.
    pub user: Option<String>,
    pub password: Option<Secret>,
    /// Token authentication.
    pub token: Option<Secret>,
    /// A `.creds` file (user JWT and NKey seed) for decentralized authentication.
    pub credentials_file: Option<PathBuf>,
    /// Require TLS (also implied by a `tls://` URL or any `tls_*` file).
    pub tls_required: bool,
    /// PEM CA bundle that signed the server certificate (default: the system's roots).
    pub tls_ca_file: Option<PathBuf>,
    /// PEM client certificate and key, for servers that verify clients (`verify: true`).
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// Empty in production. A prefix (`[a-z0-9_]+`) puts all streams and subjects of this
    /// deployment in their own namespace (`<prefix>.orders.<shop>`, stream `<PREFIX>_ORDERS`).
    pub subject_prefix: String,
    /// Replicas of each stream when the services create it (3 on a NATS cluster).
    pub stream_replicas: usize,
    /// JetStream de-duplication window for `Nats-Msg-Id`.
    #[serde(with = "duration_text")]
    pub duplicate_window: Duration,
    /// Deliveries of one message at most: at the last, a stage that still fails dead-letters
    /// it with the error, so no message is redelivered forever.
    pub max_deliver: i64,
    /// `[nats.retention]`: how long each stream keeps a message.
    pub retention: StreamRetention,
}

/// `[nats.retention]`: how long each stream keeps a message (applied to existing streams at a
/// service's start). Buyers' names and addresses are in `raw`, `orders` and `dlq`: see
/// docs/alerts.md, "Personal data".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamRetention {
    #[serde(with = "duration_text")]
    pub raw: Duration,
    #[serde(with = "duration_text")]
    pub orders: Duration,
    #[serde(with = "duration_text")]
    pub alerts: Duration,
    #[serde(with = "duration_text")]
    pub oms_edits: Duration,
    #[serde(with = "duration_text")]
    pub dlq: Duration,
    #[serde(with = "duration_text")]
    pub polls: Duration,
    #[serde(with = "duration_text")]
    pub commands: Duration,
}

impl Default for StreamRetention {
    fn default() -> Self {
        use crate::subjects::Stream as S;
        StreamRetention {
            raw: S::Raw.max_age(),
            orders: S::Orders.max_age(),
            alerts: S::Alerts.max_age(),
            oms_edits: S::OmsEdits.max_age(),
            dlq: S::Dlq.max_age(),
            polls: S::Polls.max_age(),
            commands: S::Commands.max_age(),
        }
    }
}

impl StreamRetention {
    /// The streams holding personal data (`raw`, `orders`, `dlq`) keep at most `limit`.
    pub fn cap_personal(&mut self, limit: Duration) {
        for kept in [&mut self.raw, &mut self.orders, &mut self.dlq] {
            *kept = (*kept).min(limit);
        }
    }

    /// The max age of `stream` (the fetch state and the leases keep their own).
    pub fn max_age(&self, stream: crate::subjects::Stream) -> Duration {
        use crate::subjects::Stream as S;
        match stream {
            S::Raw => self.raw,
            S::Orders => self.orders,
            S::Alerts => self.alerts,
            S::OmsEdits => self.oms_edits,
            S::Dlq => self.dlq,
            S::Polls => self.polls,
            S::Commands => self.commands,
            S::FetchState | S::Leases => stream.max_age(),
        }
    }

    /// Each with its key, for validation.
    pub fn all(&self) -> [(&'static str, Duration); 7] {
        [
            ("raw", self.raw),
            ("orders", self.orders),
            ("alerts", self.alerts),
            ("oms_edits", self.oms_edits),
            ("dlq", self.dlq),
            ("polls", self.polls),
            ("commands", self.commands),
        ]
    }
}

impl NatsConfig {
    /// The servers named by `url`.
    pub fn urls(&self) -> Vec<&str> {
        self.url.split(',').map(str::trim).filter(|u| !u.is_empty()).collect()
    }

    pub fn password(&self) -> Option<&Secret> {
        self.password.as_ref()
    }

    pub fn token(&self) -> Option<&Secret> {
        self.token.as_ref()
    }
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            url: "nats://127.0.0.1:4222".into(),
            user: None,
            password: None,
            token: None,
            credentials_file: None,
            tls_required: false,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            subject_prefix: String::new(),
            stream_replicas: 1,
            duplicate_window: Duration::from_secs(120),
            max_deliver: 10,
            retention: StreamRetention::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ClickHouseConfig {
    pub url: String,
    pub database: String,
    pub user: String,
    /// `password` / `password_env` / `password_file`, or `CLICKHOUSE_PASSWORD`.
    pub password: Option<Secret>,
    /// How long one call may take before it counts as timed out (then retried).
    #[serde(with = "duration_text")]
    pub timeout: Duration,
    /// What goes over the wire: `lz4` (ClickHouse's own block compression, both ways) or `none`.
    pub compression: Compression,
}

/// `[clickhouse] compression`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    Lz4,
    None,
}

impl Default for ClickHouseConfig {
    fn default() -> Self {
        ClickHouseConfig {
            url: "http://127.0.0.1:8123".into(),
            database: "qoo10".into(),
            user: "default".into(),
            password: None,
            timeout: Duration::from_secs(60),
            compression: Compression::Lz4,
        }
    }
}

impl ClickHouseConfig {
    pub fn password(&self) -> Option<&Secret> {
        self.password.as_ref()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ApiVersion {
    V2,
    V3,
}

/// How requests name the QAPI method: `path` (`.../ebayjapan.qapi/Class.Method` with the
/// `GiosisCertificationKey` header) or `query` (`method=Class.Method&key=...&v=1.0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UrlStyle {
    Path,
    Query,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Qoo10Config {
    pub base_url: String,
    /// Per shop.
    pub requests_per_second: f64,
    /// All shops together, in this process.
    pub global_requests_per_second: f64,
    /// `GetShippingInfo_v3` (documented) or `_v2` (older, still served).
    pub api_version: ApiVersion,
    pub url_style: UrlStyle,
    /// Timeout of one HTTP request.
    #[serde(with = "duration_text")]
    pub timeout: Duration,
    /// How long transient failures of one call are retried before the poll fails.
    #[serde(with = "duration_text")]
    pub retry_budget: Duration,
    /// The largest QAPI answer read, in MB: a larger one fails the call (naming the method and
    /// the limit) instead of being held in memory whole.
    pub max_response_mb: u32,
}

impl Default for Qoo10Config {
    fn default() -> Self {
        Qoo10Config {
            base_url: DEFAULT_QAPI_BASE_URL.into(),
            requests_per_second: 1.0,
            global_requests_per_second: 10.0,
            api_version: ApiVersion::V3,
            url_style: UrlStyle::Path,
            timeout: Duration::from_secs(30),
            retry_budget: Duration::from_secs(120),
            max_response_mb: 16,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FetcherConfig {
    /// Shops polled at the same time.
    pub max_concurrent_shops: usize,
    /// Where /metrics, /healthz and /readyz are served ("" = nowhere; `HTTP_LISTEN` overrides).
    pub http_listen: String,
    /// How often the calls that can wait are made: late payments, deliveries, returns,
    /// exchanges and refunds (new orders, shipments and cancellations go every `interval`).
    #[serde(with = "duration_text")]
    pub slow_calls_every: Duration,
    /// How often order-date windows older than the look-back are asked again (an order
    /// confirmed long after payment has no date of its own).
    #[serde(with = "duration_text")]
    pub long_windows_every: Duration,
    /// Windows by a transition's date start this long before the last good call ended.
    #[serde(with = "duration_text")]
    pub window_overlap: Duration,
    /// How far back the long windows reach at most (days): a line older than this that has
    /// not shipped is no longer followed.
    pub follow_days: u32,
}

impl Default for FetcherConfig {
    fn default() -> Self {
        FetcherConfig {
            max_concurrent_shops: 64,
            http_listen: "127.0.0.1:9464".into(),
            slow_calls_every: Duration::from_secs(3 * 3600),
            long_windows_every: Duration::from_secs(24 * 3600),
            window_overlap: Duration::from_secs(3600),
            follow_days: 365,
        }
    }
}

/// A Qoo10 shop, its secrets resolved.
#[derive(Debug, Clone, Serialize)]
pub struct ShopConfig {
    /// `[a-z0-9_-]{1,64}`; appears in subjects and keys.
    pub id: String,
    /// The shop's Qoo10 credentials. Only the fetcher uses them, and only the fetcher requires
    /// them ([`PipelineConfig::require_credentials`]): the normalizer and the sink (which serves
    /// a web page) run without any shop's secrets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key: Option<Secret>,
    /// The QSM login ID.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub user_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// Why the credentials could not be had (the key, the reason), kept for the fetcher to fail
    /// on at start: an `_env` variable not set where a service that needs none runs is no error.
    #[serde(skip)]
    pub credentials_problem: Option<(String, String)>,
    /// Qoo10 ShippingStat codes to fetch.
    pub statuses: Vec<u8>,
    pub lookback_days: u32,
    #[serde(with = "duration_text")]
    pub interval: Duration,
    /// Also poll the claim API (cancellations, returns).
    pub claims: bool,
    /// When the shop's API key was issued (JST date): `credentials_expiring` opens 30 days before
    /// it turns one year old. Without it, the first successful certification counts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key_issued_on: Option<chrono::NaiveDate>,
    /// The fetcher may change this shop's orders on Qoo10 (`qoo10.commands.<shop>`; see
    /// docs/writeback.md). Off by default: it changes a seller's real orders.
    pub writeback: bool,
    /// How many days after a line settled (delivered, cancelled, returned, refunded; a line
    /// never settled: after its order date plus `[fetcher] follow_days`) its buyer's and
    /// receiver's personal data is kept (docs/security.md, "Personal data").
    pub personal_data_days: u32,
}

impl ShopConfig {
    /// The API key. Only for a configuration [`PipelineConfig::require_credentials`] accepted
    /// (the fetcher's, at start).
    pub fn api_key(&self) -> &Secret {
        self.api_key.as_ref().expect("the fetcher checks every shop's credentials at start")
    }
    /// The QSM password; as [`ShopConfig::api_key`].
    pub fn password(&self) -> &Secret {
        self.password.as_ref().expect("the fetcher checks every shop's credentials at start")
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NormalizerConfig {
    /// Where new paid orders (Qoo10 status 2) land. GoQSystem calls it 新規受付.
    pub destination_status: String,
    /// Overrides of the contract's status table: Qoo10 ShippingStat code → canonical status.
    pub shipping_status_map: std::collections::BTreeMap<String, String>,
    /// Overrides of the contract's status table: Qoo10 ClaimStat code → canonical status.
    pub claim_status_map: std::collections::BTreeMap<String, String>,
    /// Messages fetched from the consumer at once.
    pub batch_size: usize,
    /// Where /metrics, /healthz and /readyz are served ("" = nowhere; `HTTP_LISTEN` overrides).
    pub http_listen: String,
    /// `/readyz` says `stalled` when messages are pending and nothing was committed for this long.
    #[serde(with = "duration_text")]
    pub stall_after: Duration,
}

impl Default for NormalizerConfig {
    fn default() -> Self {
        NormalizerConfig {
            destination_status: "new".into(),
            shipping_status_map: Default::default(),
            claim_status_map: Default::default(),
            batch_size: 500,
            http_listen: "127.0.0.1:9465".into(),
            stall_after: Duration::from_secs(120),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SinkConfig {
    /// Largest batch written in one INSERT per table.
    pub batch_size: usize,
    /// A batch is written at least this often.
    #[serde(with = "duration_text")]
    pub flush_interval: Duration,
    /// Where /metrics, /healthz and /readyz are served ("" = nowhere; `HTTP_LISTEN` overrides).
    pub http_listen: String,
    /// `/readyz` says `stalled` when messages are pending and nothing was committed for this long.
    #[serde(with = "duration_text")]
    pub stall_after: Duration,
    /// When set (inline, `http_token_env` or `http_token_file`), every `/api/` call of the alert
    /// center needs `Authorization: Bearer <token>`, and the page's buttons need it once typed in.
    /// Resolved at load: after it, only `http_token` holds it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_token: Option<Secret>,
    #[serde(skip_serializing)]
    pub http_token_env: Option<String>,
    #[serde(skip_serializing)]
    pub http_token_file: Option<PathBuf>,
    /// How often the alert center re-reads what it shows from ClickHouse besides the alerts it
    /// follows live (orders by status, the charts): a full read of `orders`, so not too often.
    #[serde(with = "duration_text")]
    pub page_refresh: Duration,
    /// Host names the alert center answers besides its listen address's and `[alerts] page_url`'s
    /// (a request for another name, as a DNS-rebinding page sends, gets 421).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub http_hosts: Vec<String>,
}

impl SinkConfig {
    /// The token the alert center's `/api/` and buttons require, if any.
    pub fn http_token(&self) -> Option<&Secret> {
        self.http_token.as_ref()
    }
}

impl Default for SinkConfig {
    fn default() -> Self {
        SinkConfig {
            batch_size: 5000,
            flush_interval: Duration::from_secs(1),
            http_listen: "127.0.0.1:9466".into(),
            stall_after: Duration::from_secs(120),
            http_token: None,
            http_token_env: None,
            http_token_file: None,
            page_refresh: Duration::from_secs(60),
            http_hosts: Vec::new(),
        }
    }
}

/// How the webhook tells of alert transitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookMode {
    /// One message per shop and burst of transitions (a poll's): counts by kind, the most urgent
    /// few, a link to the alert center.
    #[default]
    Digest,
    /// One message per transition.
    Each,
}

/// Thresholds of the alert rules.
#[derive(Debug, Clone, Serialize)]
pub struct AlertsConfig {
    /// `ship_date_missing` opens once this many business days (JST) have passed since payment
    /// (0: at once). Qoo10 penalises shipping later than 3 business days after payment.
    pub ship_date_missing_after_business_days: u32,
    /// `ship_date_overdue` opens when 発送予定日 has passed and at least this many business days
    /// (JST) have gone by since (0: the day after).
    pub overdue_grace_business_days: u32,
    /// Days that are not business days besides Saturdays, Sundays and Japanese national
    /// holidays (built in): the shop's own closing days, as JST dates.
    pub holidays: Vec<chrono::NaiveDate>,
    /// No longer used: `item_added` is decided by the poll that first showed the cart, not by
    /// time between sightings. Accepted so that existing files still load.
    #[serde(with = "duration_text")]
    pub item_added_after: Duration,
    /// How often the sink checks whether time-dependent rules (overdue, grace periods) are due:
    /// they read the active lines once per JST day (and at start), as their verdicts change only
    /// with the date; each check also forgets old line fingerprints and (hourly) settles alerts.
    #[serde(with = "duration_text")]
    pub sweep_interval: Duration,
    /// Optional webhook (Slack-compatible `{"text": …}` body) for every alert transition. A URL
    /// often embeds a token, so it is a secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<Secret>,
    pub webhook_mode: WebhookMode,
    /// The alert center's address as the webhook's readers reach it (a digest links to it).
    pub page_url: String,
    /// At most one webhook message per this interval (Slack accepts about one a second).
    #[serde(with = "duration_text")]
    pub webhook_min_interval: Duration,
}

impl AlertsConfig {
    pub fn webhook(&self) -> Option<&Secret> {
        self.webhook_url.as_ref()
    }
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            ship_date_missing_after_business_days: 0,
            overdue_grace_business_days: 0,
            holidays: Vec::new(),
            item_added_after: Duration::from_secs(600),
            sweep_interval: Duration::from_secs(60),
            webhook_url: None,
            webhook_mode: WebhookMode::Digest,
            page_url: "http://127.0.0.1:9466/".into(),
            webhook_min_interval: Duration::from_secs(1),
        }
    }
}

impl PipelineConfig {
    /// Loads `explicit`, else `$PIPELINE_CONFIG`, else `./pipeline.toml`, with the environment's
    /// overrides. Only when no file was named and `./pipeline.toml` does not exist are the
    /// built-in defaults used.
    pub fn load(explicit: Option<&Path>) -> Result<Self, ConfigError> {
        let env_path = std::env::var_os("PIPELINE_CONFIG").map(PathBuf::from);
        let named = explicit.map(Path::to_path_buf).or(env_path);
        let path = named.clone().unwrap_or_else(|| PathBuf::from("pipeline.toml"));
        let source = path.display().to_string();
        let raw = match std::fs::read_to_string(&path) {
            Ok(text) => file::PipelineFile::parse(&text, &source)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && named.is_none() => {
                return Self::build(file::PipelineFile::default(), "built-in defaults", |k| std::env::var(k).ok());
            }
            Err(e) => return Err(ConfigError::Read { file: source, reason: e.to_string() }),
        };
        Self::build(raw, &source, |k| std::env::var(k).ok())
    }

    /// The file `raw` read from `source`, with the overrides `env` gives, validated section by
    /// section.
    pub fn build(
        mut raw: file::PipelineFile,
        source: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        raw.apply_env(env);
        let invalid = |(key, reason): file::Bad| ConfigError::Invalid { file: source.to_owned(), key, reason };
        let mut shops = Vec::with_capacity(raw.shops.len());
        for (i, s) in raw.shops.iter().enumerate() {
            let shop = s.validate(i).map_err(invalid)?;
            if shops.iter().any(|o: &ShopConfig| o.id == shop.id) {
                return Err(invalid((format!("shops[{i}].id"), format!("{:?} is used by two shops", shop.id))));
            }
            shops.push(shop);
        }
        raw.qoo10.validate().map_err(invalid)?;
        // Every stream that carries buyers' data keeps a message no longer than the shortest
        // personal_data_days: a message is never older than the line's settlement it follows.
        let shortest = shops.iter().map(|s| s.personal_data_days).min().unwrap_or(90);
        raw.nats.retention.cap_personal(Duration::from_secs(u64::from(shortest) * 86_400));
        raw.fetcher.validate().map_err(invalid)?;
        raw.normalizer.validate().map_err(invalid)?;
        raw.sink.validate().map_err(invalid)?;
        raw.sink.http_token = raw.sink.token_fields().resolve("sink.http_token").map_err(invalid)?;
        file::real_secret("sink.http_token", raw.sink.http_token.as_ref(), true).map_err(invalid)?;
        (raw.sink.http_token_env, raw.sink.http_token_file) = (None, None);
        Ok(PipelineConfig {
            nats: raw.nats.validate().map_err(invalid)?,
            clickhouse: raw.clickhouse.validate().map_err(invalid)?,
            alerts: raw.alerts.validate().map_err(invalid)?,
            status_map: status_map(&raw.normalizer),
            qoo10: raw.qoo10,
            fetcher: raw.fetcher,
            shops,
            normalizer: raw.normalizer,
            sink: raw.sink,
            source: source.to_owned(),
        })
    }

    /// Parses and validates TOML text (no environment overrides): for tests and tools.
    pub fn from_text(text: &str, source: &str) -> Result<Self, ConfigError> {
        Self::build(file::PipelineFile::parse(text, source)?, source, |_| None)
    }

    /// The effective configuration as TOML (environment overrides applied), secrets redacted:
    /// what `--print-config` shows.
    pub fn to_toml(&self) -> String {
        let body = toml::to_string(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"));
        format!("# effective configuration from {} (secrets redacted)\n{body}", self.source)
    }

    /// Every shop has its three Qoo10 credentials (the fetcher's check at start; the other
    /// services need none). The error names the file and the shop's key.
    pub fn require_credentials(&self) -> Result<(), ConfigError> {
        for (i, shop) in self.shops.iter().enumerate() {
            let invalid = |key: String, reason: String| ConfigError::Invalid { file: self.source.clone(), key, reason };
            if let Some((key, reason)) = &shop.credentials_problem {
                return Err(invalid(key.clone(), reason.clone()));
            }
            if shop.user_id.trim().is_empty() {
                return Err(invalid(format!("shops[{i}].user_id"), "missing: the shop's QSM login ID".into()));
            }
        }
        Ok(())
    }

    pub fn shop(&self, id: &str) -> Option<&ShopConfig> {
        self.shops.iter().find(|s| s.id == id)
    }
}

/// The contract's table with `destination_status` for status 2, then the overrides (all
/// checked by [`NormalizerConfig::validate`] before this runs).
fn status_map(n: &NormalizerConfig) -> StatusMap {
    let parse = |s: &str| Status::parse(s).unwrap_or(Status::New);
    let mut map = StatusMap::with_destination(parse(&n.destination_status));
    for (code, status) in &n.shipping_status_map {
        map.shipping.extend(code.parse().ok().map(|c| (c, parse(status))));
    }
    for (code, status) in &n.claim_status_map {
        map.claim.extend(code.parse().ok().map(|c| (c, parse(status))));
    }
    map
}

impl file::PipelineFile {
    /// Reads TOML text as the file format, naming the exact key of a wrong value.
    pub fn parse(text: &str, source: &str) -> Result<Self, ConfigError> {
        let de = toml::de::Deserializer::parse(text).map_err(|e| parse_error(text, source, None, &e))?;
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            parse_error(text, source, Some(path), e.inner())
        })
    }
}

/// One line: `file:line: \`key\`: reason`.
fn parse_error(text: &str, source: &str, path: Option<String>, e: &toml::de::Error) -> ConfigError {
    let reason = e.message().trim().replace('\n', " ");
    let file = match e.span() {
        Some(span) => format!("{source}:{}", text[..span.start].matches('\n').count() + 1),
        None => source.to_owned(),
    };
    // serde_path_to_error's path ends with the unknown key itself; toml's own errors have none.
    let unknown = reason.strip_prefix("unknown field `").and_then(|r| r.split('`').next());
    let key = match (path.filter(|p| p != "."), unknown) {
        (None, Some(field)) => Some(field.to_owned()),
        (p, _) => p,
    };
    match key {
        Some(key) => ConfigError::Invalid { file, key, reason },
        None => ConfigError::Parse { file, reason },
    }
}

/// Durations written as text: `"30m"`, `"1s"`, `"500ms"`, `"1h 30m"`.
pub mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text)
            .map_err(|e| serde::de::Error::custom(format!("{text:?} is not a duration like \"30m\" or \"5s\": {e}")))
    }
}

#[cfg(test)]
mod tests;
