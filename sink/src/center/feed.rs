//! Keeping the center's state: the board from ClickHouse then `ALERTS`, the snapshot every
//! `page_refresh`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use schemas::subjects::Stream;

use super::board::{Board, Seen};
use super::{Center, Snapshot, today};

/// The days the charts cover.
pub const CHART_DAYS: usize = 30;

impl Center {
    /// Loads the board and follows `ALERTS`; after losing either, reloads (a few seconds later).
    pub async fn follow_forever(self: Arc<Self>) {
        loop {
            if let Err(e) = self.load_and_follow().await {
                tracing::warn!(error = %format!("{e:#}"), "alert center: lost its alerts; reloading");
            }
            self.live.store(false, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    /// The stream's position first, then ClickHouse, then every transition after that position:
    /// applying a transition twice or out of turn is harmless (versions decide), so nothing
    /// published meanwhile is missed.
    async fn load_and_follow(&self) -> anyhow::Result<()> {
        let stream = self.js.get_stream(self.ns.stream(Stream::Alerts)).await?;
        let last = stream.get_info().await?.state.last_sequence;
        let mut board = Board::new(today(), self.days.clone());
        self.store.each_open_alert(|a| board.apply(&Seen::of(&a))).await?;
        for ack in self.store.open_acks().await? {
            board.acknowledge(&ack.alert_id, at(ack.acknowledged_at));
        }
        tracing::info!(open_alerts = board.len(), "alert center: alerts loaded");
        *self.board.write().expect("board lock") = board;
        self.live.store(true, Ordering::Relaxed);
        let config = pull::OrderedConfig {
            deliver_policy: DeliverPolicy::ByStartSequence { start_sequence: last + 1 },
            ..Default::default()
        };
        let mut messages = stream.create_consumer(config).await?.messages().await?;
        let mut day = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                m = messages.next() => match m {
                    Some(Ok(m)) => match serde_json::from_slice::<Seen<'_>>(&m.payload) {
                        Ok(a) => self.board.write().expect("board lock").apply(&a),
                        Err(e) => tracing::debug!(subject = %m.subject, error = %e, "alert center: not an alert; skipped"),
                    },
                    Some(Err(e)) => return Err(e.into()),
                    None => anyhow::bail!("the ALERTS consumer ended"),
                },
                _ = day.tick() => self.board.write().expect("board lock").set_today(today()),
            }
        }
    }

    /// Refreshes the snapshot every `page_refresh`.
    pub async fn refresh_forever(self: Arc<Self>) {
        loop {
            let fresh = self.read_snapshot().await;
            if let Err(e) = &fresh {
                tracing::warn!(error = %format!("{e:#}"), "alert center: refresh failed; showing older figures");
            }
            {
                let mut snap = self.snapshot.write().expect("snapshot lock");
                match fresh {
                    Ok(s) => *snap = s,
                    Err(e) => snap.error = Some(format!("{e:#}")),
                }
            }
            tokio::time::sleep(self.refresh).await;
        }
    }

    async fn read_snapshot(&self) -> anyhow::Result<Snapshot> {
        let from = today() - chrono::Days::new(CHART_DAYS as u64 - 1);
        let orders_by_status = self.store.orders_by_status().await?;
        let orders_per_day = self.store.orders_per_day(from).await?;
        let alert_days = self.store.alert_days(from).await?;
        let mut ids: Vec<String> = self.shops.iter().map(|s| s.id.clone()).collect();
        for (shop, _, _) in &orders_by_status {
            if !ids.contains(shop) {
                ids.push(shop.clone());
            }
        }
        let mut fetch = std::collections::HashMap::new();
        if let Ok(state) = self.js.get_stream(self.ns.stream(Stream::FetchState)).await {
            for id in ids {
                if let Ok(m) = state.get_last_raw_message_by_subject(&self.ns.fetch_state(&id)).await {
                    fetch.insert(id, serde_json::from_slice(&m.payload).unwrap_or_default());
                }
            }
        }
        Ok(Snapshot {
            orders_by_status,
            orders_per_day,
            alert_days,
            fetch,
            refreshed_at: Some(Utc::now()),
            error: None,
        })
    }
}

pub fn at(secs: u32) -> DateTime<Utc> {
    DateTime::from_timestamp(i64::from(secs), 0).unwrap_or_default()
}
