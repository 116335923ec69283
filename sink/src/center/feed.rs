//! Keeping the center's state: the board from ClickHouse then `ALERTS`, the snapshot every
//! `page_refresh`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use schemas::alert::Alert;
use schemas::subjects::Stream;

use super::board::{Board, Seen};
use super::{Center, Snapshot, today};

/// The days the charts cover.
pub const CHART_DAYS: usize = 30;

/// What the active sink hands the center as it stores them: its own transitions and the
/// fetcher's alerts it records. In-process, no JSON and no second delivery through NATS (that
/// had cost the sink 15 µs and nats-server 13 µs per order of a first import). Never waits: when
/// the center falls behind, the batch is dropped and the center reloads from ClickHouse.
#[derive(Debug, Clone)]
pub struct Tap {
    tx: tokio::sync::mpsc::Sender<Vec<Seen<'static>>>,
    lost: Arc<AtomicBool>,
}

/// Batches the tap holds for the center at most.
const TAP_BATCHES: usize = 1024;

impl Tap {
    pub fn channel() -> (Tap, tokio::sync::mpsc::Receiver<Vec<Seen<'static>>>) {
        let (tx, rx) = tokio::sync::mpsc::channel(TAP_BATCHES);
        (Tap { tx, lost: Arc::new(AtomicBool::new(false)) }, rx)
    }

    pub fn lost(&self) -> Arc<AtomicBool> {
        self.lost.clone()
    }

    /// What the center keeps of `alerts` (taken before they are moved into rows).
    pub fn prepare(&self, alerts: &[Alert]) -> Vec<Seen<'static>> {
        alerts.iter().map(Seen::owned).collect()
    }

    /// Hands prepared alerts over (once stored); never waits.
    pub fn hand(&self, alerts: Vec<Seen<'static>>) {
        if !alerts.is_empty() && self.tx.try_send(alerts).is_err() {
            self.lost.store(true, Ordering::Relaxed);
        }
    }
}

impl Center {
    /// Keeps the board: loaded from ClickHouse, then kept current from the tap while this sink
    /// is active, from `ALERTS` while it is a standby; reloaded when that changes, and a few
    /// seconds after losing either.
    pub async fn follow_forever(self: Arc<Self>, mut tapped: tokio::sync::mpsc::Receiver<Vec<Seen<'static>>>) {
        let mut active = self.active.clone();
        // A sink knows within moments whether it is the active one: loading once for the mode
        // it will be in saves a second load of every open alert.
        let _ = tokio::time::timeout(Duration::from_secs(5), active.wait_for(|a| *a)).await;
        loop {
            let done = if *active.borrow_and_update() {
                self.load_and_listen(&mut tapped, &mut active).await
            } else {
                self.load_and_follow(&mut active).await
            };
            self.live.store(false, Ordering::Relaxed);
            if let Err(e) = done {
                tracing::warn!(error = %format!("{e:#}"), "alert center: lost its alerts; reloading");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }

    /// The open alerts and their acknowledgements from ClickHouse, as the board.
    async fn load(&self) -> anyhow::Result<()> {
        // The old board goes first: memory holds one board at a time (the page says "loading").
        *self.board.write().expect("board lock") = Board::new(today(), self.days.clone());
        let mut board = Board::new(today(), self.days.clone());
        self.store.each_open_alert(|a| board.apply(&Seen::of(&a))).await?;
        for ack in self.store.open_acks().await? {
            board.acknowledge(&ack.alert_id, at(ack.acknowledged_at));
        }
        tracing::info!(open_alerts = board.len(), "alert center: alerts loaded");
        *self.board.write().expect("board lock") = board;
        self.live.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Active: the tap. What it held before the load is applied after it (harmless: versions
    /// decide); acknowledgements made on another sink's page are read back every refresh.
    async fn load_and_listen(
        &self,
        tapped: &mut tokio::sync::mpsc::Receiver<Vec<Seen<'static>>>,
        active: &mut tokio::sync::watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        self.tap_lost.store(false, Ordering::Relaxed);
        self.load().await?;
        let (mut tick, mut acks) = (tokio::time::interval(Duration::from_secs(1)), tokio::time::interval(self.refresh));
        loop {
            tokio::select! {
                batch = tapped.recv() => {
                    let Some(batch) = batch else { anyhow::bail!("the sink's tap closed") };
                    let mut board = self.board.write().expect("board lock");
                    batch.iter().for_each(|a| board.apply(a));
                }
                _ = tick.tick() => {
                    anyhow::ensure!(!self.tap_lost.swap(false, Ordering::Relaxed), "fell behind the sink's alerts");
                    self.board.write().expect("board lock").set_today(today());
                }
                _ = acks.tick() => {
                    let read = self.store.open_acks().await?;
                    let mut board = self.board.write().expect("board lock");
                    read.iter().for_each(|a| { board.acknowledge(&a.alert_id, at(a.acknowledged_at)); });
                }
                _ = active.changed() => return Ok(()),
            }
        }
    }

    /// Standby: `ALERTS` from the stream's position read before the load, so nothing published
    /// meanwhile is missed (applying a transition twice or out of turn is harmless).
    async fn load_and_follow(&self, active: &mut tokio::sync::watch::Receiver<bool>) -> anyhow::Result<()> {
        let stream = self.js.get_stream(self.ns.stream(Stream::Alerts)).await?;
        let last = stream.get_info().await?.state.last_sequence;
        self.load().await?;
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
                _ = active.changed() => return Ok(()),
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
