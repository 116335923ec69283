//! One shop's poll: certification key, every configured status and the claims over the
//! look-back window, each row published verbatim to `qoo10.raw.<shop>`.
//!
//! A poll is complete only when every call answered `ResultCode 0` and every publish was
//! acknowledged by JetStream; only then is the shop's fetch state advanced.

use async_nats::jetstream::{self, context::PublishAckFuture};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use schemas::Secret;
use schemas::config::{ApiVersion, ShopConfig};
use schemas::qapi::{self, ResultObject, code};
use schemas::raw::{RAW_SCHEMA_VERSION, RawEnvelope, RawQuery, RowKind};
use schemas::status::CLAIM_STATUS_CODES;
use schemas::subjects::Namespace;
use serde_json::value::RawValue;

use crate::client::{CallError, Limiter, QapiClient, limiter};
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

#[derive(Debug)]
pub struct ShopPoller {
    pub shop: ShopConfig,
    version: ApiVersion,
    limiter: Limiter,
    sak: Option<Secret>,
    state: Option<FetchState>,
}

impl ShopPoller {
    pub fn new(shop: ShopConfig, version: ApiVersion, per_shop_rps: f64) -> Self {
        ShopPoller { shop, version, limiter: limiter(per_shop_rps), sak: None, state: None }
    }

    pub async fn poll(
        &mut self,
        client: &QapiClient,
        sink: &Sink,
        now: DateTime<Utc>,
    ) -> Result<PollReport, PollError> {
        let mut state = match self.state.take() {
            Some(s) => s,
            None => load_state(sink, &self.shop.id).await?,
        };
        let result = self.poll_with(client, sink, now, &mut state).await;
        match &result {
            Ok(_) => {
                state.complete_poll();
                save_state(sink, &self.shop.id, &state).await?;
            }
            Err(_) => state.abandon_poll(),
        }
        self.state = Some(state);
        result
    }

    async fn poll_with(
        &mut self,
        client: &QapiClient,
        sink: &Sink,
        now: DateTime<Utc>,
        state: &mut FetchState,
    ) -> Result<PollReport, PollError> {
        let mut report = PollReport::default();
        let windows = plan::windows(schemas::time::today_jst(now), self.shop.lookback_days);
        let method = plan::shipping_method(self.version);
        for &status in &self.shop.statuses.clone() {
            for &w in &windows {
                let params = plan::shipping_params(self.version, status, w);
                let rows = self.call_rows(client, method, &params, &mut report).await?;
                let query = query(status, w);
                self.publish_rows(sink, state, RowKind::Order, method, &query, rows, &mut report).await?;
            }
        }
        if self.shop.claims {
            for &claim in CLAIM_STATUS_CODES {
                for &w in &windows {
                    let params = plan::claim_params(claim, w);
                    let rows = self.call_rows(client, qapi::GET_CLAIM_INFO_V3, &params, &mut report).await?;
                    let query = query(claim, w);
                    self.publish_rows(sink, state, RowKind::Claim, qapi::GET_CLAIM_INFO_V3, &query, rows, &mut report)
                        .await?;
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
        let response =
            client.call(&self.limiter, method, self.shop.api_key(), &params, &secrets, &self.shop.id).await?;
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
    async fn call_rows(
        &mut self,
        client: &QapiClient,
        method: &str,
        params: &[(&str, String)],
        report: &mut PollReport,
    ) -> Result<(Vec<Box<RawValue>>, DateTime<Utc>), PollError> {
        let mut renewed = false;
        loop {
            if self.sak.is_none() {
                self.certify(client).await?;
                renewed = true;
            }
            let sak = self.sak.clone().expect("certified above");
            let secrets = [&sak, self.shop.api_key(), self.shop.password()];
            report.calls += 1;
            let response = client.call(&self.limiter, method, &sak, params, &secrets, &self.shop.id).await?;
            let fetched_at = Utc::now();
            if code::needs_new_key(response.code) && !renewed {
                tracing::info!(shop = %self.shop.id, method, code = response.code, message = %response.message, "certification key refused; issuing a new one");
                self.sak = None;
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

    #[allow(clippy::too_many_arguments)]
    async fn publish_rows(
        &self,
        sink: &Sink,
        state: &mut FetchState,
        kind: RowKind,
        method: &str,
        query: &RawQuery,
        (rows, fetched_at): (Vec<Box<RawValue>>, DateTime<Utc>),
        report: &mut PollReport,
    ) -> Result<(), PollError> {
        let subject = sink.ns.raw(&self.shop.id);
        let mut acks: Vec<PublishAckFuture> = Vec::with_capacity(rows.len());
        for row in rows {
            report.rows += 1;
            let order_no = qapi::row_order_no(&row);
            let msg_id = match state.observe(&self.shop.id, kind, order_no, &row_hash(row.get().as_bytes())) {
                Decision::Unchanged => {
                    report.unchanged += 1;
                    continue;
                }
                Decision::Publish { msg_id } => msg_id,
            };
            let envelope = RawEnvelope {
                schema_version: RAW_SCHEMA_VERSION,
                shop: self.shop.id.clone(),
                kind,
                method: method.to_owned(),
                query: query.clone(),
                fetched_at,
                row,
            };
            let payload = Bytes::from(serde_json::to_vec(&envelope).expect("envelope serializes"));
            let ack = sink
                .js
                .publish_with_headers(subject.clone(), runtime::nats::msg_id_headers(&msg_id), payload)
                .await
                .map_err(|e| PollError::Publish(e.to_string()))?;
            acks.push(ack);
        }
        for ack in acks {
            let ack = ack.await.map_err(|e| PollError::Publish(e.to_string()))?;
            report.published += 1;
            report.duplicates += u64::from(ack.duplicate);
        }
        Ok(())
    }
}

fn query(status: u8, w: Window) -> RawQuery {
    RawQuery { status, from: w.from_text(), to: w.to_text(), condition: 1 }
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
