//! One shop's poll: the certification key, then the calls the planner asks for (`plan`), each
//! row published verbatim to `qoo10.raw.<shop>`, and after each call a summary of what it saw on
//! `qoo10.polls.<shop>`; a closing summary ends the poll.
//!
//! A poll is complete only when every call answered `ResultCode 0` (or was refused for lack of
//! permission, which no retry cures) and every publish was acknowledged by JetStream; only then is
//! the shop's fetch state advanced. When Qoo10 refuses the shop's credentials even after a fresh
//! key, the poll raises `credentials_invalid`; when it refuses a method, the poll goes on without
//! it and raises `credentials_invalid` naming the method. The next poll in which each succeeds
//! resolves it.

use std::collections::{BTreeSet, HashMap};

use async_nats::jetstream;
use bytes::Bytes;
use chrono::{DateTime, NaiveDate, Utc};
use schemas::Secret;
use schemas::alert::Alert;
use schemas::config::{ApiVersion, ShopConfig};
use schemas::poll::{POLL_SCHEMA_VERSION, PollSummary};
use schemas::qapi::{self, QapiResponse, ResultObject, RowFacts, code};
use schemas::raw::{RAW_SCHEMA_VERSION, RawEnvelope, RawQuery, RowKind};
use schemas::subjects::Namespace;
use serde_json::value::RawValue;

use runtime::lease::Fence;

use crate::client::{CallError, QapiClient, ShopGate};
use crate::credentials;
use crate::plan::{self, Cadence, Call, Family, ShopPlan};
use crate::state::{Decision, FetchState, row_hash};

#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error("credentials rejected by {method}: {code} {message}")]
    Credentials { method: String, code: i64, message: String },
    #[error("{method} is not permitted for this shop: {code} {message}")]
    NotPermitted { method: String, code: i64, message: String },
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
    /// Another fetcher took the shop over: this one must not publish for it any more.
    #[error(transparent)]
    Lost(#[from] runtime::lease::LeaseError),
}

/// What one poll did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PollReport {
    pub calls: u32,
    pub rows: u64,
    /// New or changed rows published (and acknowledged).
    pub published: u64,
    /// Rows identical to what was published before: skipped.
    pub unchanged: u64,
    /// Publishes JetStream acknowledged as duplicates (already stored).
    pub duplicates: u64,
    /// Methods Qoo10 refused for lack of permission; their calls were skipped.
    pub refused: BTreeSet<String>,
}

/// Where rows go: JetStream, with the namespace of this deployment.
#[derive(Debug, Clone)]
pub struct Sink {
    pub js: jetstream::Context,
    pub ns: Namespace,
    /// How a response's rows go into `QOO10_RAW` (atomic batches where the server has them).
    pub mode: runtime::batch::PublishMode,
}

impl Sink {
    pub fn new(js: jetstream::Context, ns: Namespace) -> Sink {
        let mode = runtime::batch::PublishMode::for_server(&js.client());
        Sink { js, ns, mode }
    }
}

/// A claim call's answer, held back until the poll's claims are all in.
type FetchedCall = (Call, &'static str, Vec<Box<RawValue>>, DateTime<Utc>);

#[derive(Debug)]
pub struct ShopPoller {
    pub shop: ShopConfig,
    version: ApiVersion,
    gate: ShopGate,
    sak: Option<Secret>,
    /// A certification key was issued to this poller (for `credentials_expiring`).
    certified: bool,
    state: Option<FetchState>,
    /// The shop's lease, checked before every publish (`None`: `check`, which publishes nothing).
    fence: Option<Fence>,
    /// Added to the clock for this poll's times (fetch times, versions, poll id, windows): zero,
    /// or how far the clock is behind what the shop's state already recorded (stepped back).
    skew: chrono::Duration,
    /// Qoo10's clock less this machine's, from the last answer's `Date` (zero while the two
    /// agree within [`CLOCK_AGREES`]): Qoo10 stamps its dates by its clock, so windows,
    /// fetch times and versions follow it, whichever way this machine's clock was stepped.
    offset: chrono::Duration,
    /// The earliest `Date` Qoo10 sent since this poll was planned: a window is complete only
    /// up to it (one that ends later ends in Qoo10's future, which holds nothing yet).
    answered_from: Option<DateTime<Utc>>,
}

/// Within this, this machine's clock and Qoo10's `Date` (whole seconds) agree.
const CLOCK_AGREES: chrono::Duration = chrono::Duration::seconds(2);

impl ShopPoller {
    pub fn new(shop: ShopConfig, version: ApiVersion, per_shop_rps: f64) -> Self {
        ShopPoller {
            shop,
            version,
            gate: ShopGate::new(per_shop_rps),
            sak: None,
            certified: false,
            state: None,
            fence: None,
            skew: chrono::Duration::zero(),
            offset: chrono::Duration::zero(),
            answered_from: None,
        }
    }

    /// The clock of this poll: Qoo10's (this machine's moved by [`ShopPoller::offset`]), moved
    /// up by [`ShopPoller::skew`].
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.offset + self.skew
    }

    /// Qoo10 answered at `server_time` (its `Date`): the offset follows it.
    fn answered(&mut self, server_time: Option<DateTime<Utc>>) {
        let Some(at) = server_time else { return };
        self.answered_from = Some(self.answered_from.map_or(at, |t| t.min(at)));
        let offset = at - Utc::now();
        let offset = if offset.abs() <= CLOCK_AGREES { chrono::Duration::zero() } else { offset };
        if (offset - self.offset).abs() > CLOCK_AGREES {
            let offset_s = offset.num_seconds();
            tracing::warn!(shop = %self.shop.id, offset_s, "this machine's clock and Qoo10's disagree: following Qoo10's");
        }
        self.offset = offset;
    }

    /// Until when this poll's windows were complete: its clock, or Qoo10's earliest answer
    /// when that is earlier (this machine's clock ahead of Qoo10's).
    fn complete_through(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        self.answered_from.map_or(now, |t| t.min(now))
    }

    /// Sets [`ShopPoller::skew`] for a poll starting at `clock`, from the shop's fetch state.
    fn set_skew(&mut self, clock: DateTime<Utc>) {
        self.skew = self.state.as_ref().and_then(|s| s.behind(clock)).unwrap_or_default();
        if self.skew > chrono::Duration::zero() {
            let behind_s = self.skew.num_seconds();
            tracing::warn!(shop = %self.shop.id, behind_s, "clock behind the shop's fetch state: this poll's times moved up");
        }
    }

    /// Publishes only while `fence` holds (the shop's lease).
    pub fn with_fence(mut self, fence: Fence) -> Self {
        self.fence = Some(fence);
        self
    }

    /// Fails once the shop's lease is lost.
    pub(crate) fn fenced(&self) -> Result<(), PollError> {
        match &self.fence {
            Some(f) => Ok(f.check()?),
            None => Ok(()),
        }
    }

    /// Drops the state held in memory: it is read again from NATS before the next poll (another
    /// fetcher may have polled the shop meanwhile).
    pub fn forget_state(&mut self) {
        self.state = None;
    }

    /// The durable state (loaded from NATS on first use).
    pub async fn state(&mut self, sink: &Sink) -> Result<&FetchState, PollError> {
        if self.state.is_none() {
            self.state = Some(load_state(sink, &self.shop.id).await?);
        }
        Ok(self.state.as_ref().expect("loaded above"))
    }

    fn plan(&self) -> ShopPlan {
        ShopPlan {
            version: self.version,
            statuses: self.shop.statuses.clone(),
            claims: self.shop.claims,
            lookback_days: self.shop.lookback_days,
        }
    }

    /// A poll now: the calls the planner asks for, given the fetch state.
    pub async fn poll(&mut self, client: &QapiClient, sink: &Sink, cadence: &Cadence) -> Result<PollReport, PollError> {
        let progress = self.state(sink).await?.progress();
        // A key first: its answer tells Qoo10's clock before any window is planned.
        if self.sak.is_none()
            && let Err(e) = self.certify(client).await
        {
            return self.failed_before_calls(sink, e).await;
        }
        // Read after the key's answer: a window must not end before the instant Qoo10 said.
        let now = Utc::now() + self.offset;
        self.set_skew(now);
        let now = now + self.skew;
        self.answered_from = None;
        let calls = plan::poll(now, &self.plan(), cadence, &progress);
        self.run(client, sink, &calls, now, cadence, true, &mut |_, _| {}).await
    }

    /// The poll failed before its first call (no key): recorded as any failed poll.
    async fn failed_before_calls(&mut self, sink: &Sink, e: PollError) -> Result<PollReport, PollError> {
        let mut state = self.state.take().expect("loaded by the caller");
        let saved = self.failed(sink, &mut state, &e).await;
        self.state = Some(state);
        saved?;
        Err(e)
    }

    /// A past period by order date (`fetcher backfill`); `progress(done, total)` after every
    /// call. The regular polls' windows are left where they are.
    pub async fn backfill(
        &mut self,
        client: &QapiClient,
        sink: &Sink,
        from: NaiveDate,
        to: NaiveDate,
        cadence: &Cadence,
        progress: &mut (dyn FnMut(usize, usize) + Send),
    ) -> Result<PollReport, PollError> {
        self.state(sink).await?;
        self.set_skew(Utc::now());
        let calls = plan::backfill(&self.plan(), from, to);
        self.run(client, sink, &calls, self.now(), cadence, false, progress).await
    }

    /// Runs `calls`, then records the outcome in the fetch state (saved to NATS).
    #[allow(clippy::too_many_arguments)]
    async fn run(
        &mut self,
        client: &QapiClient,
        sink: &Sink,
        calls: &[Call],
        now: DateTime<Utc>,
        cadence: &Cadence,
        advance: bool,
        progress: &mut (dyn FnMut(usize, usize) + Send),
    ) -> Result<PollReport, PollError> {
        let mut state = self.state.take().expect("loaded by the caller");
        let result = self.run_calls(client, sink, calls, &mut state, progress).await;
        let saved = match &result {
            Ok(report) => self.completed(sink, &mut state, calls, report, now, cadence, advance).await,
            Err(e) => self.failed(sink, &mut state, e).await,
        };
        self.state = Some(state);
        saved?;
        result
    }

    /// A complete poll: the state moves on, alerts of causes that succeeded resolve, alerts of
    /// refused methods and an expiring key open.
    #[allow(clippy::too_many_arguments)]
    async fn completed(
        &self,
        sink: &Sink,
        state: &mut FetchState,
        calls: &[Call],
        report: &PollReport,
        now: DateTime<Utc>,
        cadence: &Cadence,
        advance: bool,
    ) -> Result<(), PollError> {
        let refused = |c: &Call| report.refused.contains(plan::request(self.version, c).0);
        // A family moves on for a kind only when none of its calls of that kind was refused.
        let mut ran: Vec<(Family, RowKind)> = Vec::new();
        for c in calls.iter().filter(|_| advance) {
            if !ran.contains(&(c.family, c.kind)) {
                ran.push((c.family, c.kind));
            }
        }
        ran.retain(|key| !calls.iter().any(|c| (c.family, c.kind) == *key && refused(c)));
        state.complete_poll(self.complete_through(now), &ran, cadence.follow_days);
        state.last_success = Some(Utc::now());
        let mut alerts = Vec::new();
        let causes: Vec<String> = state.credentials_alerts.keys().cloned().collect();
        for cause in causes {
            if !report.refused.contains(&cause) {
                let open = state.credentials_alerts.remove(&cause).expect("listed above");
                alerts.push(credentials::resolved(open, Utc::now()));
            }
        }
        for method in &report.refused {
            if !state.credentials_alerts.contains_key(method) {
                let alert = credentials::invalid(
                    &self.shop.id,
                    method,
                    code::NOT_AUTHORIZED_2,
                    "not authorized",
                    true,
                    Utc::now(),
                );
                state.credentials_alerts.insert(method.clone(), alert.clone());
                alerts.push(alert);
            }
        }
        alerts.extend(self.expiry(state, now));
        self.fenced()?;
        for alert in &alerts {
            publish_alert(sink, alert).await?;
        }
        save_state(sink, &self.shop.id, state).await
    }

    /// `credentials_expiring`: opens 30 days before the key's first birthday, resolves when the
    /// key (or its issue date) changes.
    fn expiry(&self, state: &mut FetchState, now: DateTime<Utc>) -> Vec<Alert> {
        let today = schemas::time::today_jst(now);
        let fingerprint = row_hash(self.shop.api_key().expose().as_bytes());
        if self.certified && state.key_certified.as_ref().is_none_or(|(f, _)| *f != fingerprint) {
            state.key_certified = Some((fingerprint.clone(), today));
        }
        let certified = state.key_certified.as_ref().filter(|(f, _)| *f == fingerprint).map(|(_, d)| *d);
        let expiry = credentials::expires_on(self.shop.api_key_issued_on, certified);
        let mut out = Vec::new();
        let stale = |a: &Alert| expiry.is_none_or(|e| a.details["expires_on"] != serde_json::json!(e.to_string()));
        if let Some(open) = state.expiring_alert.take_if(|a| stale(a)) {
            out.push(credentials::resolved(open, now));
        }
        if let Some(expiry) = expiry.filter(|e| credentials::expiring_due(*e, today))
            && state.expiring_alert.is_none()
        {
            let alert = credentials::expiring(&self.shop.id, expiry, today, now);
            state.expiring_alert = Some(alert.clone());
            out.push(alert);
        }
        out
    }

    async fn failed(&self, sink: &Sink, state: &mut FetchState, e: &PollError) -> Result<(), PollError> {
        state.abandon_poll();
        match e {
            PollError::Credentials { method, code, message } => {
                state.last_error = Some((Utc::now(), format!("credentials rejected by {method}: {code} {message}")));
                self.fenced()?;
                if !state.credentials_alerts.contains_key("") {
                    let alert = credentials::invalid(&self.shop.id, method, *code, message, false, Utc::now());
                    publish_alert(sink, &alert).await?;
                    state.credentials_alerts.insert(String::new(), alert);
                }
                save_state(sink, &self.shop.id, state).await
            }
            e => {
                state.last_error = Some((Utc::now(), e.to_string()));
                // Best effort: the status page shows it; a NATS failure here is already the error.
                if self.fenced().is_ok() {
                    let _ = save_state(sink, &self.shop.id, state).await;
                }
                Ok(())
            }
        }
    }

    /// Every call in turn: order rows published as they come; claim answers held until all are
    /// in (each claim row then carries which other lines of its cart have a claim in this poll,
    /// `cart_claims`); a summary per call, and a closing one.
    async fn run_calls(
        &mut self,
        client: &QapiClient,
        sink: &Sink,
        calls: &[Call],
        state: &mut FetchState,
        progress: &mut (dyn FnMut(usize, usize) + Send),
    ) -> Result<PollReport, PollError> {
        let poll_id = format!("{}:{}", self.shop.id, self.now().timestamp_micros());
        let mut report = PollReport::default();
        let mut held: Vec<FetchedCall> = Vec::new();
        for (i, call) in calls.iter().enumerate() {
            let (method, params) = plan::request(self.version, call);
            if report.refused.contains(method) {
                continue;
            }
            let (rows, fetched_at) = match self.call_rows(client, method, &params, &mut report).await {
                Err(PollError::NotPermitted { method, code, message }) => {
                    tracing::warn!(shop = %self.shop.id, method, code, message, "method not permitted; skipped");
                    report.refused.insert(method);
                    continue;
                }
                other => other?,
            };
            match call.kind {
                RowKind::Claim => held.push((*call, method, rows, fetched_at)),
                RowKind::Order => {
                    self.publish_call(
                        sink,
                        state,
                        &poll_id,
                        call,
                        method,
                        rows,
                        fetched_at,
                        &HashMap::new(),
                        &mut report,
                    )
                    .await?
                }
            }
            progress(i + 1, calls.len());
        }
        let mut carts: HashMap<u64, Vec<u64>> = HashMap::new();
        for (_, _, rows, _) in &held {
            for f in rows.iter().map(|r| RowFacts::of(r)) {
                if let (Some(pack), Some(order)) = (f.pack_no, f.order_no) {
                    carts.entry(pack).or_default().push(order);
                }
            }
        }
        for (call, method, rows, fetched_at) in held {
            self.publish_call(sink, state, &poll_id, &call, method, rows, fetched_at, &carts, &mut report).await?;
        }
        self.fenced()?;
        publish_summary(sink, &closing_summary(&self.shop.id, &poll_id, &report, self.now())).await?;
        Ok(report)
    }

    /// Publishes one call's rows, then its summary.
    #[allow(clippy::too_many_arguments)]
    async fn publish_call(
        &self,
        sink: &Sink,
        state: &mut FetchState,
        poll_id: &str,
        call: &Call,
        method: &'static str,
        rows: Vec<Box<RawValue>>,
        fetched_at: DateTime<Utc>,
        carts: &HashMap<u64, Vec<u64>>,
        report: &mut PollReport,
    ) -> Result<(), PollError> {
        let query = RawQuery {
            status: call.status,
            from: call.span.from_text(),
            to: call.span.to_text(),
            condition: call.condition,
        };
        let count = rows.len() as u64;
        let order_nos =
            self.publish_rows(sink, state, call.kind, method, &query, rows, fetched_at, carts, report).await?;
        let summary = PollSummary {
            schema_version: POLL_SCHEMA_VERSION,
            shop: self.shop.id.clone(),
            poll_id: poll_id.to_owned(),
            kind: call.kind,
            method: method.to_owned(),
            query,
            fetched_at,
            order_nos,
            rows: count,
            last_in_poll: false,
            refused_methods: Vec::new(),
        };
        self.fenced()?;
        publish_summary(sink, &summary).await
    }

    /// Issues a new seller authorization key from the API key, QSM login and password.
    pub async fn certify(&mut self, client: &QapiClient) -> Result<(), PollError> {
        self.fenced()?;
        let method = qapi::CREATE_CERTIFICATION_KEY;
        let params = [("user_id", self.shop.user_id.clone()), ("pwd", self.shop.password().expose().to_owned())];
        let secrets = [self.shop.api_key(), self.shop.password()];
        let response = client.call(&self.gate, method, self.shop.api_key(), &params, &secrets, &self.shop.id).await?;
        self.answered(response.server_time);
        match (response.code, response.object) {
            (code::OK, ResultObject::Text(sak)) if !sak.trim().is_empty() => {
                self.sak = Some(Secret::new(sak.trim()));
                self.certified = true;
                tracing::info!(shop = %self.shop.id, "certification key issued");
                Ok(())
            }
            (code::OK, _) => Err(PollError::Shape { method: method.into() }),
            (code, _) => Err(PollError::Credentials { method: method.into(), code, message: response.message }),
        }
    }

    /// One call whose result codes are answers, not errors (a write, the single-order read):
    /// a refused key is renewed once; `retry`: transient failures are retried (a read) or not
    /// (a write, whose lost answer must be read back first). Counts the call in `calls`.
    pub async fn call_answer(
        &mut self,
        client: &QapiClient,
        method: &str,
        params: &[(&str, String)],
        retry: bool,
        calls: &mut u32,
    ) -> Result<QapiResponse, PollError> {
        // The key is renewed at most once per call, after Qoo10 refused it.
        let mut renewed = false;
        loop {
            // No call to Qoo10 once the shop's lease is lost (a process paused past its lease
            // and resumed mid-poll stops here, not at its next publish).
            self.fenced()?;
            if self.sak.is_none() {
                self.certify(client).await?;
            }
            let sak = self.sak.clone().expect("certified above");
            let secrets = [&sak, self.shop.api_key(), self.shop.password()];
            *calls += 1;
            let response = if retry {
                client.call(&self.gate, method, &sak, params, &secrets, &self.shop.id).await?
            } else {
                client.call_once(&self.gate, method, &sak, params, &secrets).await?
            };
            self.answered(response.server_time);
            if code::needs_new_key(response.code) && !renewed {
                tracing::info!(shop = %self.shop.id, method, code = response.code, message = %response.message, "certification key refused; issuing a new one");
                self.sak = None;
                renewed = true;
                continue;
            }
            let (method, code) = (method.to_owned(), response.code);
            if code::needs_new_key(code) {
                return Err(PollError::Credentials { method, code, message: response.message });
            }
            if code::not_permitted(code) {
                return Err(PollError::NotPermitted { method, code, message: response.message });
            }
            return Ok(response);
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
        let response = self.call_answer(client, method, params, true, &mut report.calls).await?;
        let fetched_at = self.now();
        if response.code != code::OK {
            let (method, code, message) = (method.to_owned(), response.code, response.message);
            return Err(PollError::Qapi { method, code, message });
        }
        match response.object {
            ResultObject::Empty => Ok((Vec::new(), fetched_at)),
            ResultObject::Rows(rows) => Ok((rows, fetched_at)),
            ResultObject::Text(_) | ResultObject::Other(_) => Err(PollError::Shape { method: method.to_owned() }),
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
        let today = schemas::time::today_jst(fetched_at);
        let mut order_nos = Vec::with_capacity(rows.len());
        // Per message published: its line and version, recorded in the state once acknowledged.
        let mut sent: Vec<(Option<u64>, DateTime<Utc>)> = Vec::new();
        // Envelopes are made as they are published, not all first: one response can hold
        // thousands of rows.
        let outgoing = rows.into_iter().filter_map(|row| {
            report.rows += 1;
            let facts = RowFacts::of(&row);
            order_nos.extend(facts.order_no);
            let seen = state.observe(&self.shop.id, kind, &facts, &row_hash(row.get().as_bytes()), today);
            let msg_id = match seen.decision {
                Decision::Unchanged => {
                    report.unchanged += 1;
                    return None;
                }
                Decision::Publish { msg_id } => msg_id,
            };
            let cart_claims = match (kind, facts.pack_no) {
                (RowKind::Claim, Some(pack)) => {
                    let mut others: Vec<u64> = carts
                        .get(&pack)
                        .into_iter()
                        .flatten()
                        .copied()
                        .filter(|n| Some(*n) != facts.order_no)
                        .collect();
                    others.sort_unstable();
                    others.dedup();
                    others
                }
                _ => Vec::new(),
            };
            // The fetch time is the version: never below what this line last had.
            let version = state.version_for(facts.order_no, fetched_at);
            sent.push((facts.order_no, version));
            let envelope = RawEnvelope {
                schema_version: RAW_SCHEMA_VERSION,
                shop: self.shop.id.clone(),
                kind,
                method: method.to_owned(),
                query: query.clone(),
                fetched_at: version,
                row,
                cart_claims,
                first_import: seen.first_import,
                new_in_known_cart: seen.new_in_known_cart,
            };
            // The envelope is the row plus about 300 bytes.
            let size_hint = envelope.row.get().len() + 512;
            Some(runtime::nats::Outgoing::json_with_id(subject.clone(), &msg_id, &envelope, size_hint))
        });
        // The rows of a response together: one atomic batch where the server has them.
        self.fenced()?;
        let acks = runtime::batch::publish_many(&sink.js, sink.mode, outgoing.collect()).await;
        let mut failed = None;
        for (ack, (order_no, version)) in acks.into_iter().zip(sent) {
            match ack {
                Ok(ack) => {
                    report.published += 1;
                    report.duplicates += u64::from(ack.duplicate);
                    if let Some(n) = order_no {
                        state.confirm(kind, n, version);
                    }
                }
                Err(e) => failed = Some(PollError::Publish(e.to_string())),
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        order_nos.sort_unstable();
        Ok(order_nos)
    }
}

/// The summary that ends a poll: no rows of its own, the methods refused.
fn closing_summary(shop: &str, poll_id: &str, report: &PollReport, fetched_at: DateTime<Utc>) -> PollSummary {
    PollSummary {
        schema_version: POLL_SCHEMA_VERSION,
        shop: shop.to_owned(),
        poll_id: poll_id.to_owned(),
        kind: RowKind::Order,
        method: String::new(),
        query: RawQuery { status: 0, from: String::new(), to: String::new(), condition: 0 },
        fetched_at,
        order_nos: Vec::new(),
        rows: 0,
        last_in_poll: true,
        refused_methods: report.refused.iter().cloned().collect(),
    }
}

pub(crate) async fn publish_alert(sink: &Sink, alert: &Alert) -> Result<(), PollError> {
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

/// The shop's state: its head, then the parts the head names (a state stored by an earlier
/// version is one message, read as it is).
async fn load_state(sink: &Sink, shop: &str) -> Result<FetchState, PollError> {
    let stream_name = sink.ns.stream(schemas::subjects::Stream::FetchState);
    let stream = sink.js.get_stream(&stream_name).await.map_err(|e| PollError::State(e.to_string()))?;
    let unreadable = |e: serde_json::Error| PollError::State(format!("stored state of {shop} is unreadable: {e}"));
    let Some(head) = last_message(&stream, &sink.ns.fetch_state(shop)).await? else { return Ok(FetchState::default()) };
    let mut state = FetchState::from_bytes(&head).map_err(unreadable)?;
    for i in 0..state.parts() {
        match last_message(&stream, &part_subject(sink, shop, i)).await? {
            Some(part) => state.add_part(&part).map_err(unreadable)?,
            // Lines forgotten are published again once: every stage downstream is idempotent.
            None => tracing::warn!(shop, part = i, "a part of the fetch state is missing"),
        }
    }
    Ok(state)
}

async fn last_message(stream: &jetstream::stream::Stream, subject: &str) -> Result<Option<Bytes>, PollError> {
    match stream.get_last_raw_message_by_subject(subject).await {
        Ok(msg) => Ok(Some(msg.payload)),
        Err(e) if e.kind() == async_nats::jetstream::stream::LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(PollError::State(e.to_string())),
    }
}

fn part_subject(sink: &Sink, shop: &str, i: u32) -> String {
    format!("{}.part.{i}", sink.ns.fetch_state(shop))
}

/// The parts first, then the head that names them: a crash in between leaves parts newer than
/// the head, which only ever hold what JetStream acknowledged.
async fn save_state(sink: &Sink, shop: &str, state: &FetchState) -> Result<(), PollError> {
    let (head, parts) = state.to_messages();
    let subjects = (0..parts.len() as u32).map(|i| part_subject(sink, shop, i));
    let outgoing = subjects.zip(parts).map(|(subject, payload)| runtime::nats::Outgoing {
        subject,
        headers: async_nats::HeaderMap::new(),
        payload: Bytes::from(payload),
    });
    for acked in runtime::nats::publish_all(&sink.js, outgoing).await {
        acked.map_err(|e| PollError::State(e.to_string()))?;
    }
    let ack = sink
        .js
        .publish(sink.ns.fetch_state(shop), Bytes::from(head))
        .await
        .map_err(|e| PollError::State(e.to_string()))?;
    ack.await.map_err(|e| PollError::State(e.to_string()))?;
    Ok(())
}
