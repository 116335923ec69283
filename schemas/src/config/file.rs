//! `pipeline.toml` as written: every key a user may set, secrets still as `<name>`,
//! `<name>_env` or `<name>_file`. Each section's `validate` checks it and returns the section of
//! the validated [`super::PipelineConfig`], or the key and what to change.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::userinfo::{self, UserInfo};
use super::{
    AlertsConfig, ClickHouseConfig, Compression, FetcherConfig, NatsConfig, NormalizerConfig, Qoo10Config, ShopConfig,
    SinkConfig, StreamRetention, WebhookMode, duration_text,
};
use crate::secret::{Secret, SecretRef};
use crate::status::{self, Status};

/// A key and what is wrong with its value.
pub type Bad = (String, String);

fn bad<T>(key: &str, reason: impl Into<String>) -> Result<T, Bad> {
    Err((key.to_owned(), reason.into()))
}

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineFile {
    pub nats: NatsFile,
    pub clickhouse: ClickHouseFile,
    pub qoo10: Qoo10Config,
    pub fetcher: FetcherConfig,
    pub shops: Vec<ShopFile>,
    pub normalizer: NormalizerConfig,
    pub sink: SinkConfig,
    pub alerts: AlertsFile,
}

impl PipelineFile {
    /// Applies `NATS_URL`, `NATS_SUBJECT_PREFIX`, `NATS_USER`, `NATS_PASSWORD`, `CLICKHOUSE_*` and `HTTP_LISTEN` from
    /// `get` (so that one file serves services that each have their own user, as in compose.yaml).
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) {
        if let Some(v) = get("NATS_URL") {
            self.nats.url = v;
        }
        if let Some(v) = get("NATS_SUBJECT_PREFIX") {
            self.nats.subject_prefix = v;
        }
        if let Some(v) = get("NATS_USER") {
            self.nats.user = Some(v);
        }
        if let Some(v) = get("NATS_PASSWORD") {
            let n = &mut self.nats;
            (n.password, n.password_env, n.password_file) = (Some(Secret::new(v)), None, None);
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
            let c = &mut self.clickhouse;
            (c.password, c.password_env, c.password_file) = (Some(Secret::new(v)), None, None);
        }
    }
}

/// A secret as the file may give it; only one of the three may be set. Deserialized by the
/// section that holds it, under the names `<name>`, `<name>_env` and `<name>_file`.
#[derive(Debug, Clone, Default)]
pub struct SecretFields {
    pub value: Option<Secret>,
    pub env: Option<String>,
    pub file: Option<PathBuf>,
}

impl SecretFields {
    pub fn resolve(&self, key: &str) -> Result<Option<Secret>, Bad> {
        SecretRef { name: key, value: self.value.as_ref(), env: self.env.as_deref(), file: self.file.as_deref() }
            .resolve()
    }
}

/// Declares a section's `<name>`, `<name>_env`, `<name>_file` fields and gathers them into
/// [`SecretFields`]: the file format has three keys per secret, the code one value.
macro_rules! secret_fields {
    ($raw:ident { $($field:ident, $env:ident, $file:ident);* $(;)? }) => {
        impl $raw {
            $(fn $field(&self) -> SecretFields {
                SecretFields { value: self.$field.clone(), env: self.$env.clone(), file: self.$file.clone() }
            })*
        }
    };
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsFile {
    pub url: String,
    pub user: Option<String>,
    pub password: Option<Secret>,
    pub password_env: Option<String>,
    pub password_file: Option<PathBuf>,
    pub token: Option<Secret>,
    pub token_env: Option<String>,
    pub token_file: Option<PathBuf>,
    pub credentials_file: Option<PathBuf>,
    pub tls_required: bool,
    pub tls_ca_file: Option<PathBuf>,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    pub subject_prefix: String,
    pub stream_replicas: usize,
    #[serde(with = "duration_text")]
    pub duplicate_window: Duration,
    pub max_deliver: i64,
    pub retention: StreamRetention,
}

secret_fields!(NatsFile { password, password_env, password_file; token, token_env, token_file });

impl Default for NatsFile {
    fn default() -> Self {
        let d = NatsConfig::default();
        NatsFile {
            url: d.url,
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
            subject_prefix: d.subject_prefix,
            stream_replicas: d.stream_replicas,
            duplicate_window: d.duplicate_window,
            max_deliver: d.max_deliver,
            retention: d.retention,
        }
    }
}

impl NatsFile {
    pub fn validate(&self) -> Result<NatsConfig, Bad> {
        let (mut user, mut password) = (self.user.clone(), self.password().resolve("nats.password")?);
        let mut token = self.token().resolve("nats.token")?;
        let (url, info) = nats_userinfo(&self.url)?;
        if let Some(info) = info {
            if user.is_some() || password.is_some() || token.is_some() || self.credentials_file.is_some() {
                return bad(
                    "nats.url",
                    "holds user info and nats.user/password/token/credentials_file are set: use one",
                );
            }
            match info.password {
                Some(p) => (user, password) = (Some(info.user), Some(Secret::new(p))),
                None => token = Some(Secret::new(info.user)),
            }
        }
        let c = NatsConfig {
            url,
            user,
            password,
            token,
            credentials_file: self.credentials_file.clone(),
            tls_required: self.tls_required,
            tls_ca_file: self.tls_ca_file.clone(),
            tls_cert_file: self.tls_cert_file.clone(),
            tls_key_file: self.tls_key_file.clone(),
            subject_prefix: self.subject_prefix.clone(),
            stream_replicas: self.stream_replicas,
            duplicate_window: self.duplicate_window,
            max_deliver: self.max_deliver,
            retention: self.retention,
        };
        check_nats(&c)?;
        Ok(c)
    }
}

/// The URLs without user info, and the one user info they share (each seed may repeat it).
fn nats_userinfo(urls: &str) -> Result<(String, Option<UserInfo>), Bad> {
    let split: Vec<(String, Option<UserInfo>)> =
        urls.split(',').map(str::trim).filter(|u| !u.is_empty()).map(userinfo::split).collect();
    let mut infos: Vec<&UserInfo> = split.iter().filter_map(|(_, i)| i.as_ref()).collect();
    infos.dedup();
    if infos.len() > 1 {
        return bad("nats.url", "its URLs hold different user info: give the credentials once (nats.user, ...)");
    }
    let info = infos.first().map(|i| (*i).clone());
    Ok((split.into_iter().map(|(u, _)| u).collect::<Vec<_>>().join(","), info))
}

/// A placeholder from `.env.example` (`change-me-…`) is no secret: a deployment started with one
/// is refused, naming the key. `empty_too`: an empty value is refused as well.
pub(crate) fn real_secret(key: &str, s: Option<&Secret>, empty_too: bool) -> Result<(), Bad> {
    match s.map(Secret::expose) {
        Some(v) if empty_too && v.trim().is_empty() => bad(key, "is empty: give a secret, or leave the key out"),
        Some(v) if v.trim().starts_with("change-me") => {
            bad(key, "is the placeholder from .env.example: set a secret of your own")
        }
        _ => Ok(()),
    }
}

fn check_nats(c: &NatsConfig) -> Result<(), Bad> {
    real_secret("nats.password", c.password.as_ref(), false)?;
    real_secret("nats.token", c.token.as_ref(), true)?;
    let urls = c.urls();
    if urls.is_empty() || urls.iter().any(|u| !(u.starts_with("nats://") || u.starts_with("tls://"))) {
        return bad(
            "nats.url",
            format!("{:?} is not a nats:// or tls:// URL (or several, separated by commas)", c.url),
        );
    }
    match (&c.user, c.password.is_some()) {
        (Some(_), false) => return bad("nats.password", "nats.user is set: set its password too"),
        (None, true) => return bad("nats.user", "a NATS password is set: set the user too"),
        _ => {}
    }
    if c.user.is_some() as u8 + c.token.is_some() as u8 + c.credentials_file.is_some() as u8 > 1 {
        return bad("nats", "choose one of user/password, token and credentials_file");
    }
    for (key, file) in [
        ("nats.credentials_file", &c.credentials_file),
        ("nats.tls_ca_file", &c.tls_ca_file),
        ("nats.tls_cert_file", &c.tls_cert_file),
        ("nats.tls_key_file", &c.tls_key_file),
    ] {
        if let Some(f) = file.as_ref().filter(|f| !f.is_file()) {
            return bad(key, format!("{} is not a readable file", f.display()));
        }
    }
    if c.tls_cert_file.is_some() != c.tls_key_file.is_some() {
        return bad("nats.tls_key_file", "tls_cert_file and tls_key_file go together");
    }
    let p = &c.subject_prefix;
    if !p.is_empty() && !p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
        return bad("nats.subject_prefix", format!("{p:?} may only hold a-z, 0-9 and _"));
    }
    if c.stream_replicas == 0 || c.stream_replicas > 5 {
        return bad("nats.stream_replicas", "must be 1 to 5");
    }
    if !(2..=1000).contains(&c.max_deliver) {
        return bad("nats.max_deliver", "must be 2 to 1000");
    }
    // A stage behind by less than a day loses nothing; JetStream wants more than the window.
    let floor = c.duplicate_window.max(Duration::from_secs(86_400));
    if let Some((key, _)) = c.retention.all().into_iter().find(|(_, d)| *d < floor) {
        return bad(&format!("nats.retention.{key}"), "must be at least 1 day (and the duplicate window)");
    }
    Ok(())
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClickHouseFile {
    pub url: String,
    pub database: String,
    pub user: String,
    pub password: Option<Secret>,
    pub password_env: Option<String>,
    pub password_file: Option<PathBuf>,
    #[serde(with = "duration_text")]
    pub timeout: Duration,
    pub compression: Compression,
}

secret_fields!(ClickHouseFile { password, password_env, password_file });

impl Default for ClickHouseFile {
    fn default() -> Self {
        let d = ClickHouseConfig::default();
        ClickHouseFile {
            url: d.url,
            database: d.database,
            user: d.user,
            password: None,
            password_env: None,
            password_file: None,
            timeout: d.timeout,
            compression: d.compression,
        }
    }
}

impl ClickHouseFile {
    pub fn validate(&self) -> Result<ClickHouseConfig, Bad> {
        let (mut user, mut password) = (self.user.clone(), self.password().resolve("clickhouse.password")?);
        let (url, info) = userinfo::split(&self.url);
        if let Some(info) = info {
            if password.is_some() {
                return bad("clickhouse.url", "holds user info and clickhouse.password is set: use one");
            }
            (user, password) = (info.user, info.password.map(Secret::new));
        }
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return bad("clickhouse.url", format!("{:?} is not an http:// or https:// URL", url));
        }
        real_secret("clickhouse.password", password.as_ref(), false)?;
        let d = &self.database;
        if d.is_empty()
            || !d.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            || d.as_bytes()[0].is_ascii_digit()
        {
            return bad("clickhouse.database", format!("{d:?} is not a plain identifier"));
        }
        if self.timeout < Duration::from_secs(1) {
            return bad("clickhouse.timeout", "must be at least 1s");
        }
        Ok(ClickHouseConfig {
            url,
            database: d.clone(),
            user,
            password,
            timeout: self.timeout,
            compression: self.compression,
        })
    }
}

impl Qoo10Config {
    pub fn validate(&self) -> Result<(), Bad> {
        let shown = userinfo::redact(&self.base_url);
        if !(self.base_url.starts_with("http://") || self.base_url.starts_with("https://")) {
            return bad("qoo10.base_url", format!("{shown:?} is not an http(s) URL"));
        }
        if userinfo::split(&self.base_url).1.is_some() {
            return bad(
                "qoo10.base_url",
                format!("{shown:?} holds user info: QAPI takes none (credentials go in [[shops]])"),
            );
        }
        if !(self.requests_per_second > 0.0 && self.requests_per_second <= 1000.0) {
            return bad("qoo10.requests_per_second", "must be above 0 and at most 1000");
        }
        if !(self.global_requests_per_second > 0.0 && self.global_requests_per_second <= 100_000.0) {
            return bad("qoo10.global_requests_per_second", "must be above 0 and at most 100000");
        }
        if self.timeout.is_zero() {
            return bad("qoo10.timeout", "must be above 0");
        }
        if !(1..=1024).contains(&self.max_response_mb) {
            return bad("qoo10.max_response_mb", "must be 1 to 1024");
        }
        Ok(())
    }
}

impl FetcherConfig {
    pub fn validate(&self) -> Result<(), Bad> {
        if self.max_concurrent_shops == 0 {
            return bad("fetcher.max_concurrent_shops", "must be at least 1");
        }
        for (key, d) in [
            ("fetcher.slow_calls_every", self.slow_calls_every),
            ("fetcher.long_windows_every", self.long_windows_every),
        ] {
            if d < Duration::from_secs(60) {
                return bad(key, "must be at least 1m");
            }
        }
        if self.follow_days == 0 || self.follow_days > 3650 {
            return bad("fetcher.follow_days", "must be 1 to 3650");
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShopFile {
    pub id: String,
    pub api_key: Option<Secret>,
    pub api_key_env: Option<String>,
    pub api_key_file: Option<PathBuf>,
    #[serde(default)]
    pub user_id: String,
    pub password: Option<Secret>,
    pub password_env: Option<String>,
    pub password_file: Option<PathBuf>,
    #[serde(default = "default_statuses")]
    pub statuses: Vec<u8>,
    #[serde(default = "default_lookback_days")]
    pub lookback_days: u32,
    #[serde(default = "default_interval", with = "duration_text")]
    pub interval: Duration,
    #[serde(default = "default_true")]
    pub claims: bool,
    #[serde(default)]
    pub api_key_issued_on: Option<chrono::NaiveDate>,
    #[serde(default)]
    pub writeback: bool,
    #[serde(default = "default_personal_data_days")]
    pub personal_data_days: u32,
}

fn default_personal_data_days() -> u32 {
    90
}

secret_fields!(ShopFile { api_key, api_key_env, api_key_file; password, password_env, password_file });

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

impl ShopFile {
    /// The shop at `shops[i]`.
    pub fn validate(&self, i: usize) -> Result<ShopConfig, Bad> {
        let key = |k: &str| format!("shops[{i}].{k}");
        let id = &self.id;
        let id_ok = !id.is_empty()
            && id.len() <= 64
            && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !id_ok {
            return bad(&key("id"), format!("{id:?} must match [a-z0-9_-]{{1,64}}"));
        }
        if self.statuses.is_empty() {
            return bad(&key("statuses"), "must list at least one Qoo10 ShippingStat code");
        }
        if let Some(s) = self.statuses.iter().find(|s| !status::SHIPPING_STATUS_CODES.contains(s)) {
            return bad(&key("statuses"), format!("{s} is not a Qoo10 ShippingStat code (1 to 5)"));
        }
        if self.lookback_days == 0 || self.lookback_days > 3650 {
            return bad(&key("lookback_days"), "must be 1 to 3650");
        }
        if self.interval < Duration::from_secs(1) {
            return bad(&key("interval"), "must be at least 1s");
        }
        if self.personal_data_days == 0 || self.personal_data_days > 3650 {
            return bad(&key("personal_data_days"), "must be 1 to 3650");
        }
        // Resolved where they can be; what stops them is kept for the fetcher, which alone needs
        // them (PipelineConfig::require_credentials), not raised for the other services.
        let mut problem = None;
        let mut credential = |f: SecretFields, name: &str| match f.resolve(&key(name)) {
            Ok(Some(s)) => Some(s),
            Ok(None) => {
                problem.get_or_insert((key(name), format!("missing: set {name}, {name}_env or {name}_file")));
                None
            }
            Err(e) => {
                problem.get_or_insert(e);
                None
            }
        };
        let (api_key, password) = (credential(self.api_key(), "api_key"), credential(self.password(), "password"));
        Ok(ShopConfig {
            id: id.clone(),
            api_key,
            user_id: self.user_id.trim().to_owned(),
            password,
            credentials_problem: problem,
            statuses: self.statuses.clone(),
            lookback_days: self.lookback_days,
            interval: self.interval,
            claims: self.claims,
            api_key_issued_on: self.api_key_issued_on,
            writeback: self.writeback,
            personal_data_days: self.personal_data_days,
        })
    }
}

impl NormalizerConfig {
    pub fn validate(&self) -> Result<(), Bad> {
        let dest = &self.destination_status;
        if Status::parse(dest).is_none() {
            return bad("normalizer.destination_status", format!("{dest:?} is not a canonical status"));
        }
        let tables = [
            ("normalizer.shipping_status_map", &self.shipping_status_map, status::SHIPPING_STATUS_CODES),
            ("normalizer.claim_status_map", &self.claim_status_map, status::CLAIM_STATUS_CODES),
        ];
        for (table, map, codes) in tables {
            check_status_map(table, map, codes)?;
        }
        if self.batch_size == 0 {
            return bad("normalizer.batch_size", "must be at least 1");
        }
        if self.stall_after < Duration::from_secs(10) {
            return bad("normalizer.stall_after", "must be at least 10s");
        }
        Ok(())
    }
}

fn check_status_map(table: &str, map: &BTreeMap<String, String>, codes: &[u8]) -> Result<(), Bad> {
    for (code, canonical) in map {
        let key = format!("{table}.{code}");
        if !code.parse::<u8>().is_ok_and(|c| codes.contains(&c)) {
            return bad(&key, format!("{code:?} is not a Qoo10 code (one of {codes:?})"));
        }
        if Status::parse(canonical).is_none() {
            return bad(&key, format!("{canonical:?} is not a canonical status"));
        }
    }
    Ok(())
}

impl SinkConfig {
    pub fn validate(&self) -> Result<(), Bad> {
        if self.batch_size == 0 {
            return bad("sink.batch_size", "must be at least 1");
        }
        if self.flush_interval.is_zero() {
            return bad("sink.flush_interval", "must be above 0");
        }
        if self.stall_after < Duration::from_secs(10) {
            return bad("sink.stall_after", "must be at least 10s");
        }
        if self.page_refresh < Duration::from_secs(1) {
            return bad("sink.page_refresh", "must be at least 1s");
        }
        Ok(())
    }

    /// `http_token`, `http_token_env`, `http_token_file` as one secret.
    pub fn token_fields(&self) -> SecretFields {
        SecretFields {
            value: self.http_token.clone(),
            env: self.http_token_env.clone(),
            file: self.http_token_file.clone(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsFile {
    pub ship_date_missing_after_business_days: u32,
    pub overdue_grace_business_days: u32,
    pub holidays: Vec<chrono::NaiveDate>,
    #[serde(with = "duration_text")]
    pub item_added_after: Duration,
    #[serde(with = "duration_text")]
    pub sweep_interval: Duration,
    pub webhook_url: Option<Secret>,
    pub webhook_url_env: Option<String>,
    pub webhook_url_file: Option<PathBuf>,
    pub webhook_mode: WebhookMode,
    pub page_url: String,
    #[serde(with = "duration_text")]
    pub webhook_min_interval: Duration,
}

secret_fields!(AlertsFile { webhook_url, webhook_url_env, webhook_url_file });

impl Default for AlertsFile {
    fn default() -> Self {
        let d = AlertsConfig::default();
        AlertsFile {
            ship_date_missing_after_business_days: d.ship_date_missing_after_business_days,
            overdue_grace_business_days: d.overdue_grace_business_days,
            holidays: d.holidays,
            item_added_after: d.item_added_after,
            sweep_interval: d.sweep_interval,
            webhook_url: None,
            webhook_url_env: None,
            webhook_url_file: None,
            webhook_mode: d.webhook_mode,
            page_url: d.page_url,
            webhook_min_interval: d.webhook_min_interval,
        }
    }
}

impl AlertsFile {
    pub fn validate(&self) -> Result<AlertsConfig, Bad> {
        let webhook_url = self.webhook_url().resolve("alerts.webhook_url")?;
        if let Some(h) = &webhook_url
            && !(h.expose().starts_with("http://") || h.expose().starts_with("https://"))
        {
            return bad("alerts.webhook_url", "is not an http(s) URL");
        }
        if !(self.page_url.starts_with("http://") || self.page_url.starts_with("https://")) {
            return bad("alerts.page_url", "is not an http(s) URL");
        }
        if self.sweep_interval.is_zero() {
            return bad("alerts.sweep_interval", "must be above 0");
        }
        Ok(AlertsConfig {
            ship_date_missing_after_business_days: self.ship_date_missing_after_business_days,
            overdue_grace_business_days: self.overdue_grace_business_days,
            holidays: self.holidays.clone(),
            item_added_after: self.item_added_after,
            sweep_interval: self.sweep_interval,
            webhook_url,
            webhook_mode: self.webhook_mode,
            page_url: self.page_url.clone(),
            webhook_min_interval: self.webhook_min_interval,
        })
    }
}
