//! A batch of `orders.<shop>`: read, looked up, planned by the engine, committed.

use std::time::Instant;

use async_nats::jetstream;
use bytes::Bytes;
use chrono::Utc;
use runtime::telemetry::REDELIVERIES;
use schemas::subjects::Namespace;

use super::Consumer;
use crate::engine::orders::{Merged, Parsed};
use crate::metrics::{BATCHES, INSERT_ROWS, INSERT_SECONDS, LATE_VERSIONS, LATENCY};

impl Consumer {
    /// Writes a batch and what it causes; acknowledges each message once all of it is durable.
    pub(super) async fn orders(&mut self, batch: Vec<jetstream::Message>) -> anyhow::Result<()> {
        let now = Utc::now();
        let items = batch
            .iter()
            .enumerate()
            .map(|(i, msg)| {
                if msg.info().is_ok_and(|info| info.delivered > 1) {
                    self.guard.metrics.inc(REDELIVERIES, &[("consumer", "sink")]);
                }
                let shop = Namespace::shop_of(&msg.subject).to_owned();
                let parsed = crate::input::order(&msg.payload, &shop, now).and_then(|o| Ok(Parsed::of(o)?));
                (i, shop, parsed)
            })
            .collect();
        let planned = self.engine.order_batch(items);
        // Each message is turned into rows at once and its JSON let go, unless it may still have
        // to be dead-lettered with its original bytes: a batch of 5,000 would otherwise hold
        // about 12 MB of JSON until ClickHouse confirms.
        let batch: Vec<jetstream::Message> = batch
            .into_iter()
            .enumerate()
            .map(|(i, m)| {
                if planned.keep_payload.contains(&i) || planned.dead.iter().any(|d| d.0 == i) { m } else { ack_only(m) }
            })
            .collect();
        let held: Vec<&jetstream::Message> = batch.iter().collect();
        let lookups = planned.lookups.clone();
        let stored = if lookups.is_empty() {
            Default::default()
        } else {
            self.guard.run("read latest orders", &held, || self.store.latest(&lookups)).await?
        };
        let mut merged = self.engine.merge(planned, stored);
        let late = merged.late_lines();
        if !late.is_empty() {
            let history = self.guard.run("read order history", &held, || self.store.history(&late)).await?;
            let rebuilt = self.engine.fold_in_late(&mut merged, history);
            self.guard.metrics.add(LATE_VERSIONS, &[], rebuilt as f64);
        }
        let carts = self.engine.carts_to_read(&merged);
        let lines = if carts.is_empty() {
            Vec::new()
        } else {
            self.guard.run("read cart lines", &held, || self.store.pack_lines(&carts)).await?
        };
        let plan = self.engine.evaluate(&merged, &lines, Utc::now());
        let written: Vec<&jetstream::Message> = merged.written.iter().map(|i| &batch[*i]).collect();
        // What the rows cause is made durable before the rows: a crash in between redelivers the
        // batch, whose rows are then still new and evaluated again (the alerts already open stay
        // open once). Rows first would make them look old, and their alerts be lost.
        let delta = self.commit(plan, &written).await?;
        runtime::crash::point("sink.alerts_stored");
        self.write_rows(&merged, &written).await?;
        runtime::crash::point("sink.rows_stored");
        self.engine.apply(delta);
        for msg in &written {
            runtime::nats::ack(msg).await;
        }
        self.stats.rows_written += merged.orders.len() as u64;
        let dead: Vec<(&jetstream::Message, &str, &schemas::dlq::Reason)> =
            merged.dead.iter().map(|(i, shop, reason)| (&batch[*i], shop.as_str(), reason)).collect();
        self.dead_letters(&dead).await;
        Ok(())
    }

    /// `order_contacts`, `order_versions` and `orders`, confirmed by ClickHouse.
    async fn write_rows(&mut self, m: &Merged, held: &[&jetstream::Message]) -> anyhow::Result<()> {
        if m.orders.is_empty() && m.contacts.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        self.guard.run("insert", held, || self.store.write(&m.orders, &m.contacts)).await?;
        let metrics = &self.guard.metrics;
        metrics.observe(INSERT_SECONDS, &[], started.elapsed().as_secs_f64());
        metrics.inc(BATCHES, &[]);
        for (table, n) in
            [("orders", m.orders.len()), ("order_versions", m.orders.len()), ("order_contacts", m.contacts.len())]
        {
            metrics.add(INSERT_ROWS, &[("table", table)], n as f64);
        }
        let now = Utc::now().timestamp_micros();
        let latencies = m.orders.iter().map(|o| (now - i64::try_from(o.version).unwrap_or(now)).max(0) as f64 / 1e6);
        metrics.observe_all(LATENCY, &[], latencies);
        Ok(())
    }
}

/// The message with its payload and headers let go: all that is left to do with a message whose
/// rows are built is to acknowledge it (or keep it in progress).
fn ack_only(mut msg: jetstream::Message) -> jetstream::Message {
    msg.message.payload = Bytes::new();
    msg.message.headers = None;
    msg
}
