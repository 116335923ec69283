//! `pipeline.toml`: one file shared by every service; each reads its sections.
//!
//! Loading is strict: unknown keys are errors, and [`PipelineConfig::load`] validates everything a
//! service could trip over later (ids, durations, rates, secrets present) so that a mistake stops
//! the service at start with one line naming the file, the key and what to change.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::secret::Secret;
use crate::status::{self, StatusMap};

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

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    pub nats: NatsConfig,
    pub clickhouse: ClickHouseConfig,
    pub qoo10: Qoo10Config,
    pub fetcher: FetcherConfig,
    pub shops: Vec<ShopConfig>,
    pub normalizer: NormalizerConfig,
    pub sink: SinkConfig,
    pub alerts: AlertsConfig,
    /// Where the configuration came from (a file path, or "built-in defaults").
    #[serde(skip)]
    pub source: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    /// One server, or several separated by commas (seeds of a cluster: any live one will do).
    pub url: String,
    /// User/password authentication: `user` with `password`, `password_env` or `password_file`.
    pub user: Option<String>,
    pub password: Option<Secret>,
    pub password_env: Option<String>,
    pub password_file: Option<PathBuf>,
    /// Token authentication: `token`, `token_env` or `token_file`.
    pub token: Option<Secret>,
    pub token_env: Option<String>,
    pub token_file: Option<PathBuf>,
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
    #[serde(skip)]
    resolved_password: Option<Secret>,
    #[serde(skip)]
    resolved_token: Option<Secret>,
}

impl NatsConfig {
    /// The servers named by `url`.
    pub fn urls(&self) -> Vec<&str> {
        self.url.split(',').map(str::trim).filter(|u| !u.is_empty()).collect()
    }

    /// The password after `password` / `password_env` / `password_file`.
    pub fn password(&self) -> Option<&Secret> {
        self.resolved_password.as_ref()
    }

    /// The token after `token` / `token_env` / `token_file`.
    pub fn token(&self) -> Option<&Secret> {
        self.resolved_token.as_ref()
    }
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            user: None,
            password: None,
            password_env: None,
            password_file: None,
            token: None,
            token_env: None,
            token_file: None,
            credentials_file: None,
            tls_required: false,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            resolved_password: None,
            resolved_token: None,
            url: "nats://127.0.0.1:4222".into(),
            subject_prefix: String::new(),
            stream_replicas: 1,
            duplicate_window: Duration::from_secs(120),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClickHouseConfig {
    pub url: String,
    pub database: String,
    pub user: String,
    pub password: Option<Secret>,
    pub password_env: Option<String>,
    pub password_file: Option<PathBuf>,
    #[serde(skip)]
    resolved_password: Option<Secret>,
}

impl Default for ClickHouseConfig {
    fn default() -> Self {
        ClickHouseConfig {
            url: "http://127.0.0.1:8123".into(),
            database: "qoo10".into(),
            user: "default".into(),
            password: None,
            password_env: None,
            password_file: None,
            resolved_password: None,
        }
    }
}

impl ClickHouseConfig {
    /// The password after `password` / `password_env` / `password_file` / `CLICKHOUSE_PASSWORD`.
    pub fn password(&self) -> Option<&Secret> {
        self.resolved_password.as_ref()
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

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ShopConfig {
    /// `[a-z0-9_-]{1,64}`; appears in subjects and keys.
    pub id: String,
    pub api_key: Option<Secret>,
    pub api_key_env: Option<String>,
    pub api_key_file: Option<PathBuf>,
    /// The QSM login ID.
    pub user_id: String,
    pub password: Option<Secret>,
    pub password_env: Option<String>,
    pub password_file: Option<PathBuf>,
    /// Qoo10 ShippingStat codes to fetch.
    #[serde(default = "default_statuses")]
    pub statuses: Vec<u8>,
    #[serde(default = "default_lookback_days")]
    pub lookback_days: u32,
    #[serde(default = "default_interval", with = "duration_text")]
    pub interval: Duration,
    /// Also poll the claim API (cancellations, returns).
    #[serde(default = "default_true")]
    pub claims: bool,
    /// When the shop's API key was issued (JST date): `credentials_expiring` opens 30 days before
    /// it turns one year old. Without it, the first successful certification counts.
    #[serde(default)]
    pub api_key_issued_on: Option<chrono::NaiveDate>,
    #[serde(skip)]
    resolved: Option<(Secret, Secret)>,
}

impl ShopConfig {
    /// The API key (resolved at load time).
    pub fn api_key(&self) -> &Secret {
        &self.resolved.as_ref().expect("validated config").0
    }
    /// The QSM password (resolved at load time).
    pub fn password(&self) -> &Secret {
        &self.resolved.as_ref().expect("validated config").1
    }
    /// Builds a shop in code (tests, the sandbox demo config).
    pub fn new(id: &str, user_id: &str, api_key: Secret, password: Secret) -> Self {
        ShopConfig {
            id: id.into(),
            api_key: None,
            api_key_env: None,
            api_key_file: None,
            user_id: user_id.into(),
            password: None,
            password_env: None,
            password_file: None,
            statuses: default_statuses(),
            lookback_days: default_lookback_days(),
            interval: default_interval(),
            claims: true,
            api_key_issued_on: None,
            resolved: Some((api_key, password)),
        }
    }
}

fn default_statuses() -> Vec<u8> {
    vec![1, 2, 3, 4, 5]
}
fn default_lookback_days() -> u32 {
    7
}
fn default_interval() -> Duration {
    Duration::from_secs(30 * 60)
}
fn default_true() -> bool {
    true
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
}

impl Default for NormalizerConfig {
    fn default() -> Self {
        NormalizerConfig {
            destination_status: "new".into(),
            shipping_status_map: Default::default(),
            claim_status_map: Default::default(),
            batch_size: 500,
            http_listen: "127.0.0.1:9465".into(),
        }
    }
}

impl NormalizerConfig {
    /// The contract's table, with `destination_status` for status 2, then the overrides
    /// (validated at load time).
    pub fn status_map(&self) -> StatusMap {
        let parse = |s: &str| status::Status::parse(s).expect("validated at load time");
        let mut map = StatusMap::with_destination(parse(&self.destination_status));
        for (code, status) in &self.shipping_status_map {
            if let Ok(c) = code.parse() {
                map.shipping.insert(c, parse(status));
            }
        }
        for (code, status) in &self.claim_status_map {
            if let Ok(c) = code.parse() {
                map.claim.insert(c, parse(status));
            }
        }
        map
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
}

impl Default for SinkConfig {
    fn default() -> Self {
        SinkConfig { batch_size: 5000, flush_interval: Duration::from_secs(1), http_listen: "127.0.0.1:9466".into() }
    }
}

/// Thresholds of the alert rules.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
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
    /// How often time-dependent rules (overdue, grace periods) are re-checked.
    #[serde(with = "duration_text")]
    pub sweep_interval: Duration,
    /// Optional webhook (Slack-compatible `{"text": …}` body) for every alert transition. A URL
    /// often embeds a token, so it is a secret: `webhook_url`, `webhook_url_env` or `webhook_url_file`.
    pub webhook_url: Option<Secret>,
    pub webhook_url_env: Option<String>,
    pub webhook_url_file: Option<PathBuf>,
    #[serde(skip)]
    resolved_webhook: Option<Secret>,
}

impl AlertsConfig {
    pub fn webhook(&self) -> Option<&Secret> {
        self.resolved_webhook.as_ref()
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
            webhook_url_env: None,
            webhook_url_file: None,
            resolved_webhook: None,
        }
    }
}

impl PipelineConfig {
    /// Loads `explicit`, else `$PIPELINE_CONFIG`, else `./pipeline.toml`. Only when no file was
    /// named and `./pipeline.toml` does not exist are the built-in defaults used.
    pub fn load(explicit: Option<&Path>) -> Result<Self, ConfigError> {
        let env_path = std::env::var_os("PIPELINE_CONFIG").map(PathBuf::from);
        let named = explicit.map(Path::to_path_buf).or(env_path);
        let path = named.clone().unwrap_or_else(|| PathBuf::from("pipeline.toml"));
        let file = path.display().to_string();
        let mut config = match std::fs::read_to_string(&path) {
            Ok(text) => Self::parse(&text, &file)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && named.is_none() => {
                PipelineConfig { source: "built-in defaults".into(), ..Default::default() }
            }
            Err(e) => {
                return Err(ConfigError::Read { file, reason: e.to_string() });
            }
        };
        config.apply_env(|k| std::env::var(k).ok());
        config.validate()?;
        Ok(config)
    }

    /// Parses TOML text without validating it (see [`PipelineConfig::validate`]).
    pub fn parse(text: &str, file: &str) -> Result<Self, ConfigError> {
        let mut config: PipelineConfig = toml::from_str(text).map_err(|e| {
            let reason = e.message().trim().replace('\n', " ");
            match e.span() {
                Some(span) => {
                    let line = text[..span.start].matches('\n').count() + 1;
                    match key_at(text, span.start) {
                        Some(key) => ConfigError::Invalid { file: format!("{file}:{line}"), key, reason },
                        None => ConfigError::Parse { file: format!("{file}:{line}"), reason },
                    }
                }
                None => ConfigError::Parse { file: file.to_owned(), reason },
            }
        })?;
        config.source = file.to_owned();
        Ok(config)
    }

    /// Applies `NATS_URL`, `CLICKHOUSE_*` overrides from `get`.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) {
        if let Some(v) = get("NATS_URL") {
            self.nats.url = v;
        }
        if let Some(v) = get("CLICKHOUSE_URL") {
            self.clickhouse.url = v;
        }
        if let Some(v) = get("CLICKHOUSE_USER") {
            self.clickhouse.user = v;
        }
        if let Some(v) = get("CLICKHOUSE_DATABASE") {
            self.clickhouse.database = v;
        }
        if let Some(v) = get("HTTP_LISTEN") {
            // Each process serves on its own section's address; the variable sets it for whichever runs.
            self.fetcher.http_listen = v.clone();
            self.normalizer.http_listen = v.clone();
            self.sink.http_listen = v;
        }
        if let Some(v) = get("CLICKHOUSE_PASSWORD") {
            self.clickhouse.password = Some(Secret::new(v));
            self.clickhouse.password_env = None;
            self.clickhouse.password_file = None;
        }
    }

    /// Checks every value and resolves secrets. Errors name the key.
    pub fn validate(&mut self) -> Result<(), ConfigError> {
        let file = self.source.clone();
        let bad = |key: &str, reason: String| ConfigError::Invalid { file: file.clone(), key: key.to_owned(), reason };

        let urls = self.nats.urls();
        if urls.is_empty() || urls.iter().any(|u| !(u.starts_with("nats://") || u.starts_with("tls://"))) {
            return Err(bad(
                "nats.url",
                format!("{:?} is not a nats:// or tls:// URL (or several, separated by commas)", self.nats.url),
            ));
        }
        let n = &mut self.nats;
        n.resolved_password =
            resolve_secret("nats.password", n.password.clone(), n.password_env.as_deref(), n.password_file.as_deref())
                .map_err(|(key, reason)| bad(&key, reason))?;
        n.resolved_token =
            resolve_secret("nats.token", n.token.clone(), n.token_env.as_deref(), n.token_file.as_deref())
                .map_err(|(key, reason)| bad(&key, reason))?;
        let n = &self.nats;
        match (&n.user, n.resolved_password.is_some()) {
            (Some(_), false) => return Err(bad("nats.password", "nats.user is set: set its password too".into())),
            (None, true) => return Err(bad("nats.user", "a NATS password is set: set the user too".into())),
            _ => {}
        }
        let methods = n.user.is_some() as u8 + n.resolved_token.is_some() as u8 + n.credentials_file.is_some() as u8;
        if methods > 1 {
            return Err(bad("nats", "choose one of user/password, token and credentials_file".into()));
        }
        for (key, file) in [
            ("nats.credentials_file", &n.credentials_file),
            ("nats.tls_ca_file", &n.tls_ca_file),
            ("nats.tls_cert_file", &n.tls_cert_file),
            ("nats.tls_key_file", &n.tls_key_file),
        ] {
            if let Some(f) = file.as_ref().filter(|f| !f.is_file()) {
                return Err(bad(key, format!("{} is not a readable file", f.display())));
            }
        }
        if n.tls_cert_file.is_some() != n.tls_key_file.is_some() {
            return Err(bad("nats.tls_key_file", "tls_cert_file and tls_key_file go together".into()));
        }
        let p = &self.nats.subject_prefix;
        if !p.is_empty() && !p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
            return Err(bad("nats.subject_prefix", format!("{p:?} may only hold a-z, 0-9 and _")));
        }
        if self.nats.stream_replicas == 0 || self.nats.stream_replicas > 5 {
            return Err(bad("nats.stream_replicas", "must be 1 to 5".into()));
        }
        if !(self.clickhouse.url.starts_with("http://") || self.clickhouse.url.starts_with("https://")) {
            return Err(bad("clickhouse.url", format!("{:?} is not an http:// or https:// URL", self.clickhouse.url)));
        }
        if !is_identifier(&self.clickhouse.database) {
            return Err(bad(
                "clickhouse.database",
                format!("{:?} is not a plain identifier", self.clickhouse.database),
            ));
        }
        let ch = &self.clickhouse;
        self.clickhouse.resolved_password = resolve_secret(
            "clickhouse.password",
            ch.password.clone(),
            ch.password_env.as_deref(),
            ch.password_file.as_deref(),
        )
        .map_err(|(key, reason)| bad(&key, reason))?;

        let q = &self.qoo10;
        if !(q.base_url.starts_with("http://") || q.base_url.starts_with("https://")) {
            return Err(bad("qoo10.base_url", format!("{:?} is not an http(s) URL", q.base_url)));
        }
        if !(q.requests_per_second > 0.0 && q.requests_per_second <= 1000.0) {
            return Err(bad("qoo10.requests_per_second", "must be above 0 and at most 1000".into()));
        }
        if !(q.global_requests_per_second > 0.0 && q.global_requests_per_second <= 100_000.0) {
            return Err(bad("qoo10.global_requests_per_second", "must be above 0 and at most 100000".into()));
        }
        if q.timeout.is_zero() {
            return Err(bad("qoo10.timeout", "must be above 0".into()));
        }
        if self.fetcher.max_concurrent_shops == 0 {
            return Err(bad("fetcher.max_concurrent_shops", "must be at least 1".into()));
        }
        let f = &self.fetcher;
        for (key, d) in
            [("fetcher.slow_calls_every", f.slow_calls_every), ("fetcher.long_windows_every", f.long_windows_every)]
        {
            if d < Duration::from_secs(60) {
                return Err(bad(key, "must be at least 1m".into()));
            }
        }
        if f.follow_days == 0 || f.follow_days > 3650 {
            return Err(bad("fetcher.follow_days", "must be 1 to 3650".into()));
        }

        let mut seen = std::collections::HashSet::new();
        for (i, shop) in self.shops.iter_mut().enumerate() {
            let key = |k: &str| format!("shops[{i}].{k}");
            let id_ok = !shop.id.is_empty()
                && shop.id.len() <= 64
                && shop.id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
            if !id_ok {
                return Err(bad(&key("id"), format!("{:?} must match [a-z0-9_-]{{1,64}}", shop.id)));
            }
            if !seen.insert(shop.id.clone()) {
                return Err(bad(&key("id"), format!("{:?} is used by two shops", shop.id)));
            }
            if shop.user_id.trim().is_empty() {
                return Err(bad(&key("user_id"), "must not be empty".into()));
            }
            if shop.statuses.is_empty() {
                return Err(bad(&key("statuses"), "must list at least one Qoo10 ShippingStat code".into()));
            }
            if let Some(s) = shop.statuses.iter().find(|s| !status::SHIPPING_STATUS_CODES.contains(s)) {
                return Err(bad(&key("statuses"), format!("{s} is not a Qoo10 ShippingStat code (1 to 5)")));
            }
            if shop.lookback_days == 0 || shop.lookback_days > 3650 {
                return Err(bad(&key("lookback_days"), "must be 1 to 3650".into()));
            }
            if shop.interval < Duration::from_secs(1) {
                return Err(bad(&key("interval"), "must be at least 1s".into()));
            }
            if shop.resolved.is_none() {
                let api_key = resolve_secret(
                    &key("api_key"),
                    shop.api_key.clone(),
                    shop.api_key_env.as_deref(),
                    shop.api_key_file.as_deref(),
                )
                .map_err(|(k, r)| bad(&k, r))?
                .ok_or_else(|| bad(&key("api_key"), "missing: set api_key, api_key_env or api_key_file".into()))?;
                let password = resolve_secret(
                    &key("password"),
                    shop.password.clone(),
                    shop.password_env.as_deref(),
                    shop.password_file.as_deref(),
                )
                .map_err(|(k, r)| bad(&k, r))?
                .ok_or_else(|| bad(&key("password"), "missing: set password, password_env or password_file".into()))?;
                shop.resolved = Some((api_key, password));
            }
        }

        let dest = &self.normalizer.destination_status;
        if !status::is_canonical(dest) {
            return Err(bad("normalizer.destination_status", format!("{dest:?} is not a canonical status")));
        }
        for (table, map, codes) in [
            ("normalizer.shipping_status_map", &self.normalizer.shipping_status_map, status::SHIPPING_STATUS_CODES),
            ("normalizer.claim_status_map", &self.normalizer.claim_status_map, status::CLAIM_STATUS_CODES),
        ] {
            for (code, canonical) in map {
                let key = format!("{table}.{code}");
                if !code.parse::<u8>().is_ok_and(|c| codes.contains(&c)) {
                    return Err(bad(&key, format!("{code:?} is not a Qoo10 code (one of {codes:?})")));
                }
                if !status::is_canonical(canonical) {
                    return Err(bad(&key, format!("{canonical:?} is not a canonical status")));
                }
            }
        }
        if self.normalizer.batch_size == 0 {
            return Err(bad("normalizer.batch_size", "must be at least 1".into()));
        }
        if self.sink.batch_size == 0 {
            return Err(bad("sink.batch_size", "must be at least 1".into()));
        }
        let a = &self.alerts;
        let hook = resolve_secret(
            "alerts.webhook_url",
            a.webhook_url.clone(),
            a.webhook_url_env.as_deref(),
            a.webhook_url_file.as_deref(),
        )
        .map_err(|(k, r)| bad(&k, r))?;
        if let Some(h) = &hook
            && !(h.expose().starts_with("http://") || h.expose().starts_with("https://"))
        {
            return Err(bad("alerts.webhook_url", "is not an http(s) URL".into()));
        }
        self.alerts.resolved_webhook = hook;
        if self.alerts.sweep_interval.is_zero() {
            return Err(bad("alerts.sweep_interval", "must be above 0".into()));
        }
        if self.sink.flush_interval.is_zero() {
            return Err(bad("sink.flush_interval", "must be above 0".into()));
        }
        Ok(())
    }

    /// The effective configuration as TOML (environment overrides applied), secrets redacted:
    /// what `--print-config` shows.
    pub fn to_toml(&self) -> String {
        let body = toml::to_string(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"));
        format!("# effective configuration from {} (secrets redacted)\n{body}", self.source)
    }

    pub fn shop(&self, id: &str) -> Option<&ShopConfig> {
        self.shops.iter().find(|s| s.id == id)
    }
}

/// The dotted key (`shops[1].interval`) whose line holds byte `offset` of `text`.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("");
    let (name, _) = line.split_once('=')?;
    let name = name.trim().trim_matches('"');
    let mut table = String::new();
    let mut counts: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for l in text[..line_start].lines() {
        let l = l.trim();
        if let Some(t) = l.strip_prefix("[[").and_then(|r| r.split_once("]]")).map(|(t, _)| t.trim()) {
            let n = counts.entry(t.to_owned()).or_insert(0);
            table = format!("{t}[{n}]");
            *n += 1;
        } else if let Some(t) = l.strip_prefix('[').and_then(|r| r.split_once(']')).map(|(t, _)| t.trim()) {
            table = t.to_owned();
        }
    }
    Some(if table.is_empty() { name.to_owned() } else { format!("{table}.{name}") })
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') && !s.as_bytes()[0].is_ascii_digit()
}

/// `<name>`, `<name>_env` or `<name>_file`: exactly one may be set.
fn resolve_secret(
    name: &str,
    value: Option<Secret>,
    env: Option<&str>,
    file: Option<&Path>,
) -> Result<Option<Secret>, (String, String)> {
    let count = value.is_some() as u8 + env.is_some() as u8 + file.is_some() as u8;
    if count > 1 {
        return Err((name.to_owned(), format!("set only one of {name}, {name}_env, {name}_file")));
    }
    if let Some(v) = value {
        return Ok(Some(v));
    }
    if let Some(var) = env {
        return match std::env::var(var) {
            Ok(v) if !v.is_empty() => Ok(Some(Secret::new(v))),
            _ => Err((format!("{name}_env"), format!("environment variable {var} is not set"))),
        };
    }
    if let Some(path) = file {
        return match std::fs::read_to_string(path) {
            Ok(v) if !v.trim().is_empty() => Ok(Some(Secret::new(v.trim_end_matches(['\n', '\r'])))),
            Ok(_) => Err((format!("{name}_file"), format!("{} is empty", path.display()))),
            Err(e) => Err((format!("{name}_file"), format!("cannot read {}: {e}", path.display()))),
        };
    }
    Ok(None)
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
mod tests {
    use super::*;

    fn load_str(text: &str) -> Result<PipelineConfig, ConfigError> {
        let mut c = PipelineConfig::parse(text, "pipeline.toml")?;
        c.validate()?;
        Ok(c)
    }

    #[test]
    fn the_contract_example_parses() {
        let c = load_str(
            r#"
[nats]
url = "nats://127.0.0.1:4222"
[clickhouse]
url = "http://127.0.0.1:8123"
database = "qoo10"
user = "default"
[qoo10]
base_url = "https://api.qoo10.jp/GMKT.INC.Front.QAPIService/ebayjapan.qapi"
requests_per_second = 1
global_requests_per_second = 10
[[shops]]
id = "my-shop"
api_key = "k"
user_id = "my-qsm-login"
password_env = "PATH" # any variable that is set
statuses = [1, 2, 3, 4, 5]
lookback_days = 7
interval = "30m"
claims = true
[normalizer]
destination_status = "new"
"#,
        )
        .unwrap();
        assert_eq!(c.shops[0].interval, Duration::from_secs(1800));
        assert_eq!(c.shops[0].api_key().expose(), "k");
        assert_eq!(c.shops[0].password().expose(), std::env::var("PATH").unwrap());
        assert_eq!(c.qoo10.requests_per_second, 1.0);
    }

    #[test]
    fn mistakes_name_the_key() {
        let cases = [
            ("[nats]\nurl2 = \"x\"\n", "nats.url2"),
            ("[nats]\nurl = 5\n", "nats.url"),
            ("[[shops]]\nid = \"Bad Shop\"\nuser_id = \"u\"\napi_key = \"k\"\npassword = \"p\"\n", "shops[0].id"),
            (
                "[[shops]]\nid = \"a\"\nuser_id = \"u\"\napi_key = \"k\"\npassword = \"p\"\ninterval = \"soon\"\n",
                "shops[0].interval",
            ),
            (
                "[[shops]]\nid = \"a\"\nuser_id = \"u\"\napi_key = \"k\"\npassword_env = \"TEST_CFG_SURELY_UNSET\"\n",
                "shops[0].password_env",
            ),
            ("[[shops]]\nid = \"a\"\nuser_id = \"u\"\napi_key = \"k\"\n", "shops[0].password"),
            (
                "[[shops]]\nid = \"a\"\nuser_id = \"u\"\napi_key = \"k\"\npassword = \"p\"\nstatuses = [7]\n",
                "shops[0].statuses",
            ),
            ("[normalizer]\ndestination_status = \"shinki\"\n", "normalizer.destination_status"),
            ("[clickhouse]\ndatabase = \"a.b\"\n", "clickhouse.database"),
            ("[normalizer.claim_status_map]\n\"7\" = \"cancelled\"\n", "normalizer.claim_status_map.7"),
            ("[normalizer.shipping_status_map]\n\"3\" = \"ready\"\n", "normalizer.shipping_status_map.3"),
        ];
        for (text, key) in cases {
            let err = load_str(text).unwrap_err().to_string();
            assert!(err.contains(key), "{err:?} should name {key}");
            assert!(err.starts_with("pipeline.toml"), "{err:?} should name the file");
            println!("{err}");
            assert!(!err.contains('\n'), "{err:?} should be one line");
        }
    }

    #[test]
    fn status_map_overrides_are_data() {
        let c = load_str("[normalizer]\ndestination_status = \"awaiting_shipment\"\n[normalizer.claim_status_map]\n\"14\" = \"returned\"\n").unwrap();
        let m = c.normalizer.status_map();
        let s = |shipping, claim| m.canonical(Some(shipping), claim).map(status::Status::as_str);
        assert_eq!(s(2, 0), Some("awaiting_shipment"));
        assert_eq!(s(5, 14), Some("returned"));
        assert_eq!(s(5, 15), Some("partially_refunded"));
    }

    #[test]
    fn print_config_redacts_secrets_and_round_trips() {
        let c = load_str("[[shops]]\nid = \"a\"\nuser_id = \"u\"\napi_key = \"KEY-123\"\npassword = \"PW-456\"\ninterval = \"90s\"\n").unwrap();
        let text = c.to_toml();
        assert!(!text.contains("KEY-123") && !text.contains("PW-456"), "{text}");
        assert!(text.contains("api_key = \"<redacted>\"") && text.contains("interval = \"1m 30s\""), "{text}");
        // What it prints is itself a valid configuration (with the secrets to fill in).
        let back = PipelineConfig::parse(&text.replace("<redacted>", "x"), "printed").unwrap();
        assert_eq!(back.shops[0].interval, Duration::from_secs(90));
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let c =
            load_str("[[shops]]\nid = \"a\"\nuser_id = \"u\"\napi_key = \"KEY-123\"\npassword = \"PW-456\"\n").unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("KEY-123") && !dbg.contains("PW-456"), "{dbg}");
    }

    #[test]
    fn env_overrides_connection_settings() {
        let mut c = PipelineConfig::default();
        c.apply_env(|k| match k {
            "NATS_URL" => Some("nats://10.0.0.1:4222".into()),
            "CLICKHOUSE_DATABASE" => Some("t1".into()),
            "CLICKHOUSE_PASSWORD" => Some("pw".into()),
            _ => None,
        });
        c.validate().unwrap();
        assert_eq!(c.nats.url, "nats://10.0.0.1:4222");
        assert_eq!(c.clickhouse.database, "t1");
        assert_eq!(c.clickhouse.password().unwrap().expose(), "pw");
    }
}

#[cfg(test)]
mod example_tests {
    use super::*;

    /// The documented example is a valid configuration (with its commented shop left out).
    #[test]
    fn pipeline_toml_example_loads() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../pipeline.toml.example");
        let text = std::fs::read_to_string(path).unwrap();
        let mut c = PipelineConfig::parse(&text, path).unwrap();
        c.validate().unwrap();
        let d = PipelineConfig::default();
        assert_eq!(c.qoo10.requests_per_second, d.qoo10.requests_per_second);
        assert_eq!(c.qoo10.retry_budget, d.qoo10.retry_budget);
        assert_eq!(c.sink.flush_interval, d.sink.flush_interval);
        assert_eq!(c.nats.duplicate_window, d.nats.duplicate_window);
        assert_eq!(c.normalizer.batch_size, d.normalizer.batch_size);
    }
}
