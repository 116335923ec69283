//! The sink's low-volume consumers (poll summaries, OMS edits, the fetcher's alerts) and the
//! time-dependent sweep.

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind};
use chrono::Utc;
use runtime::durable::Durable;
use schemas::alert::Alert;
use schemas::dlq::Reason;
use schemas::poll::PollSummary;
use schemas::subjects::Namespace;

use super::Consumer;
use crate::edits;
use crate::engine::polls::{coverage, poll_started};
use crate::keys::LineKey;
use crate::rows::{AlertRow, OrderRow};
use crate::store::StoreError;

/// Active lines per step of the sweep.
const SWEEP_CHUNK: usize = 2_000;

impl Consumer {
    /// Time-dependent rules (grace periods, overdue ship dates) on the active lines.
    /// The active lines are streamed and evaluated [`SWEEP_CHUNK`] at a time, each chunk's plan
    /// committed before the next is read: memory stays one chunk's however many lines are open.
    /// A read that fails part-way ends this sweep (logged); the next one starts again, and what
    /// the chunks before committed stays (a plan opens an alert once).
    ///
    /// The rules it applies change their verdict only when the JST date does (business days since
    /// payment, a ship date passed), and every new version is judged on arrival: so the active
    /// lines are read once per JST day (and at start), not every `sweep_interval`, and the sweep's
    /// cost (a read of `orders FINAL`, which grows with history) is paid once a day.
    pub(super) async fn sweep(&mut self) -> anyhow::Result<()> {
        let today = schemas::time::today_jst(Utc::now());
        if self.swept_on != Some(today) {
            match self.sweep_active(today).await? {
                Ok(()) => self.swept_on = Some(today),
                Err(e) => {
                    tracing::warn!(error = %e, "sweep: reading the active lines failed; the next sweep starts again")
                }
            }
        }
        self.engine.forget_old_lines(Utc::now());
        if self.expired_on != Some(today) {
            match self.expire_personal().await {
                Ok(()) => self.expired_on = Some(today),
                Err(e) => tracing::warn!(error = %e, "personal data retention failed; the next sweep tries again"),
            }
        }
        self.settle().await
    }

    /// Once per JST day (and at start): the personal data of lines past their shop's
    /// `personal_data_days` deleted from `order_contacts` (the streams keep no message longer
    /// than the shortest period: `[nats.retention]` is capped by it).
    async fn expire_personal(&mut self) -> Result<(), StoreError> {
        let now = u32::try_from(Utc::now().timestamp()).unwrap_or(u32::MAX);
        let started = std::time::Instant::now();
        let lines = self.store.expired_lines(&self.retention, now).await?;
        let rows = self.store.delete_contacts(&lines, std::time::Duration::from_secs(60)).await?;
        self.guard.metrics.add(crate::metrics::PERSONAL_EXPIRED, &[], lines.len() as f64);
        tracing::info!(
            lines = lines.len(),
            rows,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "personal data retention"
        );
        Ok(())
    }

    /// The outer error is a commit's (as for any plan); the inner one the read's.
    async fn sweep_active(&mut self, today: chrono::NaiveDate) -> anyhow::Result<Result<(), StoreError>> {
        let store = self.store.clone();
        let mut cursor = match store.active_lines(today) {
            Ok(c) => c,
            Err(e) => return Ok(Err(e)),
        };
        let mut chunk = Vec::with_capacity(SWEEP_CHUNK);
        loop {
            let key = match store.next_active(&mut cursor).await {
                Ok(key) => key,
                Err(e) => return Ok(Err(e)),
            };
            let end = key.is_none();
            chunk.extend(key);
            if chunk.len() == SWEEP_CHUNK || (end && !chunk.is_empty()) {
                let keys = std::mem::take(&mut chunk);
                let rows = self.guard.run("read active orders", &[], || self.store.latest(&keys)).await?;
                let rows: Vec<OrderRow> = rows.into_values().collect();
                let plan = self.engine.sweep(&rows, Utc::now());
                let delta = self.commit(plan, &[]).await?;
                self.engine.apply(delta);
            }
            if end {
                return Ok(Ok(()));
            }
        }
    }

    /// Alerts on lines terminal for a month resolve (`Engine::settle`): the lines behind old
    /// alerts are read by key, so the cost follows the open alerts, not the history.
    async fn settle(&mut self) -> anyhow::Result<()> {
        if self.settled.is_some_and(|at| at.elapsed() < Duration::from_secs(3600)) {
            return Ok(());
        }
        self.settled = Some(Instant::now());
        let lines = self.engine.settle_candidates(Utc::now());
        if lines.is_empty() {
            return Ok(());
        }
        let latest = self.guard.run("read settled lines", &[], || self.store.latest(&lines)).await?;
        let plan = self.engine.settle(&latest, Utc::now());
        let delta = self.commit(plan, &[]).await?;
        self.engine.apply(delta);
        Ok(())
    }

    /// Collects poll summaries; a poll is evaluated when its closing summary arrives. The
    /// summaries of polls still open are told "in progress" each round (a poll can outlast
    /// `ack_wait`), and a redelivered summary replaces its first delivery instead of counting
    /// twice. Returns how many summaries arrived.
    pub(super) async fn record_polls(&mut self, consumer: &mut Durable) -> anyhow::Result<usize> {
        self.keep_polls_in_progress().await;
        let batch = consumer.fetch(500, Duration::from_millis(50)).await;
        let count = batch.len();
        for msg in batch {
            let summary = match serde_json::from_slice::<PollSummary>(&msg.payload) {
                Ok(s) => s,
                Err(e) => {
                    let reason = Reason::Unreadable { what: "a poll summary", detail: e.to_string() };
                    self.dead_letters(&[(&msg, Namespace::shop_of(&msg.subject), &reason)]).await;
                    continue;
                }
            };
            self.abandon_older_polls(&summary).await;
            let (last, id) = (summary.last_in_poll, summary.poll_id.clone());
            let entry = self.polls.entry(id.clone()).or_default();
            let seq = |m: &jetstream::Message| m.info().map(|i| i.stream_sequence).unwrap_or(0);
            match entry.0.iter().position(|held| seq(held) == seq(&msg)) {
                Some(i) => entry.0[i] = msg,
                None => {
                    entry.0.push(msg);
                    entry.1.push(summary);
                }
            }
            if last {
                let (msgs, summaries) = self.polls.remove(&id).expect("just inserted");
                self.evaluate_poll(&msgs, &summaries).await?;
            }
        }
        Ok(count)
    }

    /// Progress acks for the summaries of polls still open, at most every 15 s.
    async fn keep_polls_in_progress(&mut self) {
        if self.polls.is_empty() || self.polls_progress.elapsed() < Duration::from_secs(15) {
            return;
        }
        self.polls_progress = std::time::Instant::now();
        for (msgs, _) in self.polls.values() {
            for m in msgs {
                let _ = m.ack_with(AckKind::Progress).await;
            }
        }
    }

    /// A newer poll of the shop abandons an older one that never completed (its fetch failed).
    async fn abandon_older_polls(&mut self, summary: &PollSummary) {
        let stale: Vec<String> = self
            .polls
            .iter()
            .filter(|(id, (_, s))| {
                **id != summary.poll_id
                    && s[0].shop == summary.shop
                    && poll_started(id) < poll_started(&summary.poll_id)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in stale {
            if let Some((msgs, _)) = self.polls.remove(&id) {
                tracing::info!(poll_id = %id, "incomplete poll abandoned");
                for m in msgs {
                    let _ = m.ack().await;
                }
            }
        }
    }

    /// `order_vanished` for one complete poll, committed; then its summaries acknowledged.
    async fn evaluate_poll(&mut self, msgs: &[jetstream::Message], summaries: &[PollSummary]) -> anyhow::Result<()> {
        let held: Vec<&jetstream::Message> = msgs.iter().collect();
        let cov = coverage(summaries);
        let mut known = Vec::new();
        for (statuses, from, to) in &cov.windows {
            let before = cov.started_version;
            known.extend(
                self.guard
                    .run("read known lines", &held, || self.store.known_lines(&cov.shop, statuses, *from, *to, before))
                    .await?,
            );
        }
        let plan = self.engine.evaluate_poll(&cov, known, Utc::now());
        let delta = self.commit(plan, &held).await?;
        self.engine.apply(delta);
        for m in msgs {
            runtime::nats::ack(m).await;
        }
        Ok(())
    }

    /// Takes OMS edits: each becomes an expectation and, while Qoo10 does not show it,
    /// `qoo10_correction_required`. Invalid edits go to `dlq.sink.<shop>`.
    pub(super) async fn record_edits(&mut self, consumer: &mut Durable) -> anyhow::Result<usize> {
        let batch = consumer.fetch(100, Duration::from_millis(50)).await;
        for msg in &batch {
            let shop = Namespace::shop_of(&msg.subject).to_owned();
            let edit = match self.engine.read_edit(&msg.payload, &shop) {
                Ok(e) => e,
                Err(reason) => {
                    self.dead_letters(&[(msg, &shop, &reason)]).await;
                    continue;
                }
            };
            let held = [msg];
            let rows = self.edit_target(&shop, &edit, &held).await?;
            let version = msg.info().map(|i| i.stream_sequence).unwrap_or(0);
            let delta = self.commit(self.engine.evaluate_edit(&edit, &rows, version, Utc::now()), &held).await?;
            self.engine.apply(delta);
            if let Some(cmd) = edits::as_command(&edit).filter(|_| self.writeback.contains(&shop)) {
                self.send_command(&cmd, &held).await?;
            }
            runtime::nats::ack(msg).await;
        }
        Ok(batch.len())
    }

    /// A write-back command for the fetcher (an OMS edit it can apply), sent once per id.
    async fn send_command(&self, cmd: &schemas::command::Command, held: &[&jetstream::Message]) -> anyhow::Result<()> {
        let out = runtime::nats::Outgoing::json_with_id(
            self.ns.commands(&cmd.shop_id),
            &format!("command:{}", cmd.command_id),
            cmd,
            512,
        );
        let publish = || async {
            let acked = runtime::nats::publish_all(&self.js, [out.clone()]).await;
            acked.into_iter().next().expect("one message").map(|_| ()).map_err(async_nats::Error::from)
        };
        self.guard.run("send command", held, publish).await?;
        tracing::info!(shop = %cmd.shop_id, command_id = %cmd.command_id, "OMS edit sent to the fetcher as a write-back command");
        Ok(())
    }

    /// Qoo10's latest data for what an edit is about: its line, or its cart's lines.
    async fn edit_target(
        &self,
        shop: &str,
        edit: &schemas::edit::OmsEdit,
        held: &[&jetstream::Message],
    ) -> anyhow::Result<Vec<OrderRow>> {
        Ok(match edits::target(edit) {
            (Some(order_no), _) => {
                let keys = [LineKey::new(shop, order_no)];
                self.guard.run("read order", held, || self.store.latest(&keys)).await?.into_values().collect()
            }
            (_, Some(pack_no)) => self.guard.run("read cart", held, || self.store.pack_rows(shop, pack_no)).await?,
            _ => Vec::new(),
        })
    }

    /// Stores write-back results (the fetcher publishes one per state a command reaches);
    /// returns how many arrived.
    pub(super) async fn record_results(&mut self, consumer: &mut Durable) -> anyhow::Result<usize> {
        let batch = consumer.fetch(100, Duration::from_millis(50)).await;
        let (results, good) = self.readable::<schemas::command::CommandResult>(&batch, "a command result").await;
        let rows: Vec<_> = results.iter().map(crate::store::CommandRow::from_result).collect();
        self.guard.run("insert commands", &good, || self.store.write_commands(&rows)).await?;
        for msg in good {
            runtime::nats::ack(msg).await;
        }
        Ok(batch.len())
    }

    /// Stores alerts other services published; returns how many arrived.
    pub(super) async fn record_external(&mut self, consumer: &mut Durable) -> anyhow::Result<usize> {
        let batch = consumer.fetch(100, Duration::from_millis(50)).await;
        let (alerts, good) = self.readable::<Alert>(&batch, "an alert").await;
        let tapped = self.tap.as_ref().map(|t| t.prepare(&alerts));
        let rows: Vec<AlertRow> = alerts.into_iter().map(AlertRow::from_alert).collect();
        self.guard.run("insert alerts", &good, || self.store.write_alerts(&rows)).await?;
        if let (Some(tap), Some(alerts)) = (&self.tap, tapped) {
            tap.hand(alerts);
        }
        for msg in good {
            runtime::nats::ack(msg).await;
        }
        Ok(batch.len())
    }

    /// The messages of `batch` that parse as `T`, with the messages they came from; the others
    /// are dead-lettered as unreadable (`what` names what they should have been).
    async fn readable<'m, T: serde::de::DeserializeOwned>(
        &mut self,
        batch: &'m [jetstream::Message],
        what: &'static str,
    ) -> (Vec<T>, Vec<&'m jetstream::Message>) {
        let (mut parsed, mut good) = (Vec::with_capacity(batch.len()), Vec::with_capacity(batch.len()));
        for msg in batch {
            match serde_json::from_slice::<T>(&msg.payload) {
                Ok(v) => {
                    parsed.push(v);
                    good.push(msg);
                }
                Err(e) => {
                    let reason = Reason::Unreadable { what, detail: e.to_string() };
                    self.dead_letters(&[(msg, Namespace::shop_of(&msg.subject), &reason)]).await;
                }
            }
        }
        (parsed, good)
    }
}
