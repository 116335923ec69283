//! One shop's poll: certification key, every configured status and the claims over the
//! look-back window, each row published verbatim to `qoo10.raw.<shop>`, and after each call a
//! summary of what it saw on `qoo10.polls.<shop>`.
//!
//! A poll is complete only when every call answered `ResultCode 0` and every publish was
//! acknowledged by JetStream; only then is the shop's fetch state advanced. When Qoo10 refuses
//! the shop's credentials even after a fresh key, the poll raises `credentials_invalid`; the
//! next successful poll resolves it.

use std::collections::HashMap;

use async_nats::jetstream;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use schemas::Secret;
use schemas::alert::{ALERT_SCHEMA_VERSION, Alert, AlertState};
use schemas::config::{ApiVersion, ShopConfig};
use schemas::poll::{POLL_SCHEMA_VERSION, PollSummary};
use schemas::qapi::{self, ResultObject, code};
use schemas::raw::{RAW_SCHEMA_VERSION, RawEnvelope, RawQuery, RowKind};
use schemas::status::CLAIM_STATUS_CODES;
use schemas::subjects::Namespace;
use serde_json::value::RawValue;

use crate::client::{CallError, QapiClient, ShopGate};
use crate::plan::{self, Window};
use crate::state::{Decision, FetchState, row_hash};

#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error("credentials rejected by {method}: {code} {message}")]
    Credentials { method: String, code: i64, message: String },
    #[error("{method} answered {code}: {message}")]
    Qapi { method: String, code: i64, message: String },
    #[error("{method} answered an unexpected ResultObject")]
    Shape { method: String },
    #[error(transparent)]
    Call(#[from] CallError),
    #[error("publish to JetStream failed: {0}")]
    Publish(String),
    #[error("fetch state: {0}")]
    State(String),
}

/// What one poll did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PollReport {
    pub calls: u32,
    pub rows: u64,
    /// New or changed rows published (and acknowledged).
    pub published: u64,
    /// Rows identical to what was published before: skipped.
    pub unchanged: u64,
    /// Publishes JetStream acknowledged as duplicates (already stored).
    pub duplicates: u64,
}

/// Where rows go: JetStream, with the namespace of this deployment.
#[derive(Debug, Clone)]
pub struct Sink {
    pub js: jetstream::Context,
    pub ns: Namespace,
}

/// A call's answer held back until the poll's claims are all in: (call, method, rows, fetched at).
type FetchedCall = (Call, &'static str, Vec<Box<RawValue>>, DateTime<Utc>);

/// One QAPI call of a poll.
#[derive(Debug, Clone, Copy)]
struct Call {
    kind: RowKind,
    status: u8,
    window: Window,
}

#[derive(Debug)]
pub struct ShopPoller {
    pub shop: ShopConfig,
    version: ApiVersion,
    gate: ShopGate,
    sak: Option<Secret>,
    state: Option<FetchState>,
}

impl ShopPoller {
    pub fn new(shop: ShopConfig, version: ApiVersion, per_shop_rps: f64) -> Self {
        ShopPoller { shop, version, gate: ShopGate::new(per_shop_rps), sak: None, state: None }
    }

    /// The durable state (loaded from NATS on first use).
    pub async fn state(&mut self, sink: &Sink) -> Result<&FetchState, PollError> {
        if self.state.is_none() {
            self.state = Some(load_state(sink, &self.shop.id).await?);
        }
        Ok(self.state.as_ref().expect("loaded above"))
    }

    /// A regular poll: the look-back window ending today (JST).
    pub async fn poll(
        &mut self,
        client: &QapiClient,
        sink: &Sink,
        now: DateTime<Utc>,
    ) -> Result<PollReport, PollError> {
        let windows = plan::windows(schemas::time::today_jst(now), self.shop.lookback_days);
        self.poll_windows(client, sink, &windows, &mut |_, _| {}).await
    }

    /// Polls these windows; `progress(done, total)` is called after every call.
    pub async fn poll_windows(
        &mut self,
        client: &QapiClient,
        sink: &Sink,
        windows: &[Window],
        progress: &mut (dyn FnMut(usize, usize) + Send),
    ) -> Result<PollReport, PollError> {
        self.state(sink).await?;
        let mut state = self.state.take().expect("loaded above");
        let started = Utc::now();
        let result = self.poll_with(client, sink, windows, &mut state, started, progress).await;
        let saved = match &result {
            Ok(_) => {
                state.complete_poll();
                state.last_success = Some(Utc::now());
                if let Some(open) = state.credentials_alert.take() {
                    publish_alert(sink, &resolved(open)).await?;
                }
                save_state(sink, &self.shop.id, &state).await
            }
            Err(PollError::Credentials { method, code, message }) => {
                state.abandon_poll();
                state.last_error = Some((Utc::now(), format!("credentials rejected by {method}: {code} {message}")));
                if state.credentials_alert.is_none() {
                    let alert = credentials_alert(&self.shop.id, method, *code, message, Utc::now());
                    publish_alert(sink, &alert).await?;
                    state.credentials_alert = Some(alert);
                }
                save_state(sink, &self.shop.id, &state).await
            }
            Err(e) => {
                state.abandon_poll();
                state.last_error = Some((Utc::now(), e.to_string()));
                // Best effort: the status page shows it; a NATS failure here is already the error.
                let _ = save_state(sink, &self.shop.id, &state).await;
                Ok(())
            }
        };
        self.state = Some(state);
        saved?;
        result
    }

    async fn poll_with(
        &mut self,
        client: &QapiClient,
        sink: &Sink,
        windows: &[Window],
        state: &mut FetchState,
        started: DateTime<Utc>,
        progress: &mut (dyn FnMut(usize, usize) + Send),
    ) -> Result<PollReport, PollError> {
        let mut calls: Vec<Call> = Vec::new();
        for &status in &self.shop.statuses {
            calls.extend(windows.iter().map(|&window| Call { kind: RowKind::Order, status, window }));
        }
        if self.shop.claims {
            for &status in CLAIM_STATUS_CODES {
                calls.extend(windows.iter().map(|&window| Call { kind: RowKind::Claim, status, window }));
            }
        }
        let poll_id = format!("{}:{}", self.shop.id, started.timestamp_micros());
        let mut report = PollReport::default();
        // Claim responses are all fetched before any is published: each claim row then carries
        // which other lines of its cart have a claim in this poll (`cart_claims`).
        let mut fetched: Vec<FetchedCall> = Vec::new();
        let mut carts: HashMap<u64, Vec<u64>> = HashMap::new();
        let mut done = 0;
        for (i, call) in calls.iter().enumerate() {
            let (method, params) = match call.kind {
                RowKind::Order => {
                    (plan::shipping_method(self.version), plan::shipping_params(self.version, call.status, call.window))
                }
                RowKind::Claim => (qapi::GET_CLAIM_INFO_V3, plan::claim_params(call.status, call.window)),
            };
            let (rows, fetched_at) = self.call_rows(client, method, &params, &mut report).await?;
            if call.kind == RowKind::Claim {
                for row in &rows {
                    if let (Some(pack), Some(order)) = (qapi::row_pack_no(row), qapi::row_order_no(row)) {
                        carts.entry(pack).or_default().push(order);
                    }
                }
            }
            fetched.push((*call, method, rows, fetched_at));
            let claims_pending = calls[i + 1..].iter().any(|c| c.kind == RowKind::Claim);
            if call.kind == RowKind::Order || !claims_pending {
                for (call, method, rows, fetched_at) in std::mem::take(&mut fetched) {
                    done += 1;
                    let query = RawQuery {
                        status: call.status,
                        from: call.window.from_text(),
                        to: call.window.to_text(),
                        condition: 1,
                    };
                    let count = rows.len() as u64;
                    let order_nos = self
                        .publish_rows(sink, state, call.kind, method, &query, rows, fetched_at, &carts, &mut report)
                        .await?;
                    let summary = PollSummary {
                        schema_version: POLL_SCHEMA_VERSION,
                        shop: self.shop.id.clone(),
                        poll_id: poll_id.clone(),
                        kind: call.kind,
                        method: method.to_owned(),
                        query,
                        fetched_at,
                        order_nos,
                        rows: count,
                        last_in_poll: done == calls.len(),
                    };
                    publish_summary(sink, &summary).await?;
                    progress(done, calls.len());
                }
            }
        }
        Ok(report)
    }

    /// Issues a new seller authorization key from the API key, QSM login and password.
    pub async fn certify(&mut self, client: &QapiClient) -> Result<(), PollError> {
        let method = qapi::CREATE_CERTIFICATION_KEY;
        let params = [("user_id", self.shop.user_id.clone()), ("pwd", self.shop.password().expose().to_owned())];
        let secrets = [self.shop.api_key(), self.shop.password()];
        let response = client.call(&self.gate, method, self.shop.api_key(), &params, &secrets, &self.shop.id).await?;
        match (response.code, response.object) {
            (code::OK, ResultObject::Text(sak)) if !sak.trim().is_empty() => {
                self.sak = Some(Secret::new(sak.trim()));
                tracing::info!(shop = %self.shop.id, "certification key issued");
                Ok(())
            }
            (code::OK, _) => Err(PollError::Shape { method: method.into() }),
            (code, _) => Err(PollError::Credentials { method: method.into(), code, message: response.message }),
        }
    }

    /// One call that must succeed; an authorization failure renews the key once and retries.
    pub async fn call_rows(
        &mut self,
        client: &QapiClient,
        method: &str,
        params: &[(&str, String)],
        report: &mut PollReport,
    ) -> Result<(Vec<Box<RawValue>>, DateTime<Utc>), PollError> {
        // The key is renewed at most once per call, after Qoo10 refused it.
        let mut renewed = false;
        loop {
            if self.sak.is_none() {
                self.certify(client).await?;
            }
            let sak = self.sak.clone().expect("certified above");
            let secrets = [&sak, self.shop.api_key(), self.shop.password()];
            report.calls += 1;
            let response = client.call(&self.gate, method, &sak, params, &secrets, &self.shop.id).await?;
            let fetched_at = Utc::now();
            if code::needs_new_key(response.code) && !renewed {
                tracing::info!(shop = %self.shop.id, method, code = response.code, message = %response.message, "certification key refused; issuing a new one");
                self.sak = None;
                renewed = true;
                continue;
            }
            if code::needs_new_key(response.code) {
                return Err(PollError::Credentials {
                    method: method.into(),
                    code: response.code,
                    message: response.message,
                });
            }
            if response.code != code::OK {
                return Err(PollError::Qapi { method: method.into(), code: response.code, message: response.message });
            }
            return match response.object {
                ResultObject::Empty => Ok((Vec::new(), fetched_at)),
                ResultObject::Rows(rows) => Ok((rows, fetched_at)),
                ResultObject::Text(_) | ResultObject::Other(_) => Err(PollError::Shape { method: method.into() }),
            };
        }
    }

    /// Publishes the new and changed rows, waits for every acknowledgement, and returns the
    /// order numbers of all rows (for the poll summary).
    #[allow(clippy::too_many_arguments)]
    async fn publish_rows(
        &self,
        sink: &Sink,
        state: &mut FetchState,
        kind: RowKind,
        method: &str,
        query: &RawQuery,
        rows: Vec<Box<RawValue>>,
        fetched_at: DateTime<Utc>,
        carts: &HashMap<u64, Vec<u64>>,
        report: &mut PollReport,
    ) -> Result<Vec<u64>, PollError> {
        let subject = sink.ns.raw(&self.shop.id);
        let mut order_nos = Vec::with_capacity(rows.len());
        // Envelopes are made as they are published, not all first: one response can hold
        // thousands of rows.
        let outgoing = rows.into_iter().filter_map(|row| {
            report.rows += 1;
            let order_no = qapi::row_order_no(&row);
            order_nos.extend(order_no);
            let msg_id = match state.observe(&self.shop.id, kind, order_no, &row_hash(row.get().as_bytes())) {
                Decision::Unchanged => {
                    report.unchanged += 1;
                    return None;
                }
                Decision::Publish { msg_id } => msg_id,
            };
            let cart_claims = match (kind, qapi::row_pack_no(&row)) {
                (RowKind::Claim, Some(pack)) => {
                    let mut others: Vec<u64> =
                        carts.get(&pack).into_iter().flatten().copied().filter(|n| Some(*n) != order_no).collect();
                    others.sort_unstable();
                    others.dedup();
                    others
                }
                _ => Vec::new(),
            };
            let envelope = RawEnvelope {
                schema_version: RAW_SCHEMA_VERSION,
                shop: self.shop.id.clone(),
                kind,
                method: method.to_owned(),
                query: query.clone(),
                fetched_at,
                row,
                cart_claims,
            };
            // The envelope is the row plus about 300 bytes.
            let size_hint = envelope.row.get().len() + 512;
            Some(runtime::nats::Outgoing::json_with_id(subject.clone(), &msg_id, &envelope, size_hint))
        });
        // publish_all keeps the acknowledgements awaited at once below what async-nats allows.
        for ack in runtime::nats::publish_all(&sink.js, outgoing).await {
            let ack = ack.map_err(|e| PollError::Publish(e.to_string()))?;
            report.published += 1;
            report.duplicates += u64::from(ack.duplicate);
        }
        order_nos.sort_unstable();
        Ok(order_nos)
    }
}

fn credentials_alert(shop: &str, method: &str, code: i64, message: &str, now: DateTime<Utc>) -> Alert {
    let micros = u64::try_from(now.timestamp_micros()).unwrap_or(0);
    Alert {
        schema_version: ALERT_SCHEMA_VERSION,
        alert_id: format!("credentials_invalid:{shop}:{micros}"),
        kind: "credentials_invalid".into(),
        shop_id: shop.into(),
        order_no: 0,
        pack_no: 0,
        state: AlertState::Open,
        severity: "critical".into(),
        message: format!(
            "Qoo10 refused the credentials of shop {shop} ({method} answered {code}: {message}). Renew the API key in QSM \
             (Qoo10へのお問い合わせ → システム → API・FTP・QSM権限) or correct the QSM login ID / password in pipeline.toml. \
             Polling of this shop is paused and retried with backoff."
        ),
        message_ja: format!(
            "ショップ {shop} の認証情報がQoo10に拒否されました（{method}: {code} {message}）。QSMでAPIキーを更新するか\
             （Qoo10へのお問い合わせ → システム → API・FTP・QSM権限）、pipeline.toml のQSMログインID・パスワードを確認してください。\
             このショップの取得は一時停止し、間隔を空けて再試行します。"
        ),
        details: serde_json::json!({ "method": method, "code": code, "qoo10_message": message }),
        opened_at: now,
        updated_at: now,
        version: micros,
    }
}

fn resolved(mut alert: Alert) -> Alert {
    let now = Utc::now();
    alert.state = AlertState::Resolved;
    alert.updated_at = now;
    alert.version = u64::try_from(now.timestamp_micros()).unwrap_or(alert.version + 1).max(alert.version + 1);
    alert
}

async fn publish_alert(sink: &Sink, alert: &Alert) -> Result<(), PollError> {
    for acked in runtime::nats::publish_all(&sink.js, [runtime::nats::alert_message(&sink.ns, alert)]).await {
        acked.map_err(|e| PollError::Publish(e.to_string()))?;
    }
    tracing::warn!(shop = %alert.shop_id, kind = %alert.kind, state = ?alert.state, alert_id = %alert.alert_id, "alert");
    Ok(())
}

async fn publish_summary(sink: &Sink, summary: &PollSummary) -> Result<(), PollError> {
    let payload = Bytes::from(serde_json::to_vec(summary).expect("summary serializes"));
    let ack =
        sink.js.publish(sink.ns.polls(&summary.shop), payload).await.map_err(|e| PollError::Publish(e.to_string()))?;
    ack.await.map_err(|e| PollError::Publish(e.to_string()))?;
    Ok(())
}

async fn load_state(sink: &Sink, shop: &str) -> Result<FetchState, PollError> {
    let stream_name = sink.ns.stream(schemas::subjects::STREAM_FETCH_STATE);
    let stream = sink.js.get_stream(&stream_name).await.map_err(|e| PollError::State(e.to_string()))?;
    match stream.get_last_raw_message_by_subject(&sink.ns.fetch_state(shop)).await {
        Ok(msg) => FetchState::from_bytes(&msg.payload)
            .map_err(|e| PollError::State(format!("stored state of {shop} is unreadable: {e}"))),
        Err(e) if e.kind() == async_nats::jetstream::stream::LastRawMessageErrorKind::NoMessageFound => {
            Ok(FetchState::default())
        }
        Err(e) => Err(PollError::State(e.to_string())),
    }
}

async fn save_state(sink: &Sink, shop: &str, state: &FetchState) -> Result<(), PollError> {
    let ack = sink
        .js
        .publish(sink.ns.fetch_state(shop), Bytes::from(state.to_bytes()))
        .await
        .map_err(|e| PollError::State(e.to_string()))?;
    ack.await.map_err(|e| PollError::State(e.to_string()))?;
    Ok(())
}
