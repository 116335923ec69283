//! What the center does besides showing: list alerts with their texts, acknowledge, and send a
//! write-back fix. IO at the edge of the board.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use schemas::alert::{Alert, AlertKind, AlertState};
use schemas::command::{Action, COMMAND_SCHEMA_VERSION, Command};
use serde::Serialize;

use super::board::{Entry, Filter};
use super::{Center, today};
use crate::store::{AckRow, AlertQuery, CommandRow};

#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error("no open alert {0:?}")]
    NotOpen(String),
    #[error("{0}")]
    NotFixable(String),
    #[error("ship_date: {0}")]
    BadDate(String),
    #[error("unavailable: {0}")]
    Unavailable(String),
}

fn unavailable(e: impl std::fmt::Display) -> ActionError {
    ActionError::Unavailable(e.to_string())
}

/// An alert as published on `alerts.>`, plus when it was acknowledged (null when not).
#[derive(Debug, Clone, Serialize)]
pub struct ApiAlert {
    #[serde(flatten)]
    pub alert: Alert,
    pub acknowledged_at: Option<DateTime<Utc>>,
}

impl ApiAlert {
    fn new(mut alert: Alert, acknowledged_at: Option<DateTime<Utc>>) -> Self {
        let acknowledged_at = alert.acknowledged_at.take().or(acknowledged_at);
        ApiAlert { alert, acknowledged_at }
    }
}

/// `{"total": N, "alerts": [...]}`.
#[derive(Debug, Clone, Serialize)]
pub struct Listed {
    pub total: u64,
    pub alerts: Vec<ApiAlert>,
}

impl Listed {
    pub fn one(alert: Alert) -> ApiAlert {
        ApiAlert::new(alert, None)
    }
}

/// A fix sent to the fetcher, with its result once it came.
#[derive(Debug, Clone, Serialize)]
pub struct Fixed {
    pub command_id: String,
    pub result: Option<CommandRow>,
}

impl Center {
    /// Open alerts, most urgent first, with their texts (read by key).
    pub async fn open_alerts(&self, filter: &Filter, offset: usize, limit: usize) -> anyhow::Result<Listed> {
        let (total, entries) = {
            let board = self.board.read().expect("board lock");
            board.queue(filter, offset, limit)
        };
        let ids: Vec<String> = entries.iter().map(|e| e.alert_id.to_string()).collect();
        let mut texts: HashMap<String, Alert> = self
            .store
            .alerts_by_id(&ids)
            .await?
            .into_iter()
            .filter_map(|r| r.to_alert())
            .map(|a| (a.alert_id.clone(), a))
            .collect();
        let alerts = entries
            .iter()
            .filter_map(|e| texts.remove(&*e.alert_id).map(|a| ApiAlert::new(a, e.acknowledged_at)))
            .collect();
        Ok(Listed { total: total as u64, alerts })
    }

    /// Resolved alerts, newest first (from ClickHouse: the board holds open ones only).
    pub async fn resolved_alerts(&self, f: &Filter, offset: u64, limit: u64) -> anyhow::Result<Listed> {
        let q =
            AlertQuery { shop: f.shop.as_deref(), kind: f.kind, severity: f.severity, acknowledged: f.acknowledged };
        let (total, rows) = self.store.resolved_alerts(&q, offset, limit).await?;
        let ids: Vec<String> = rows.iter().map(|r| r.alert_id.clone()).collect();
        let acks: HashMap<String, u32> =
            self.store.acks_of(&ids).await?.into_iter().map(|a| (a.alert_id, a.acknowledged_at)).collect();
        let alerts = rows
            .into_iter()
            .filter_map(|r| {
                let ack = acks.get(&r.alert_id).map(|t| super::feed::at(*t));
                r.to_alert().map(|a| ApiAlert::new(a, ack))
            })
            .collect();
        Ok(Listed { total, alerts })
    }

    /// Marks an open alert as taken in hand: stored in `alert_acks`, then published on
    /// `alerts.<kind>.<shop>` (the open alert, same version, `acknowledged_at` set), then shown.
    /// Acknowledging again answers with the first acknowledgement.
    pub async fn acknowledge(&self, alert_id: &str) -> Result<Alert, ActionError> {
        let held = self.board.read().expect("board lock").get(alert_id).map(|e| e.acknowledged_at);
        let Some(previous) = held else { return Err(ActionError::NotOpen(alert_id.into())) };
        let stored = self.store.alerts_by_id(&[alert_id.to_owned()]).await.map_err(unavailable)?;
        let Some(mut alert) = stored.into_iter().filter_map(|r| r.to_alert()).find(|a| a.state == AlertState::Open)
        else {
            return Err(ActionError::NotOpen(alert_id.into()));
        };
        let at = previous.unwrap_or_else(|| DateTime::from_timestamp(Utc::now().timestamp(), 0).unwrap_or_default());
        if previous.is_none() {
            let row = AckRow {
                alert_id: alert.alert_id.clone(),
                shop_id: alert.shop_id.clone(),
                kind: alert.kind.as_str().into(),
                acknowledged_at: u32::try_from(at.timestamp()).unwrap_or(0),
            };
            self.store.write_ack(&row).await.map_err(unavailable)?;
        }
        alert.acknowledged_at = Some(at);
        let message = runtime::nats::alert_message(&self.ns, &alert);
        let published = self.js.publish_with_headers(message.subject, message.headers, message.payload).await;
        published.map_err(unavailable)?.await.map_err(unavailable)?;
        self.board.write().expect("board lock").acknowledge(alert_id, at);
        tracing::info!(alert_id, shop = %alert.shop_id, kind = %alert.kind, "alert acknowledged");
        Ok(alert)
    }

    /// True when write-back can fix `e`: the shop has it on, and the alert is about an order's
    /// 発送予定日.
    pub fn fixable(&self, e: &Entry) -> bool {
        e.order_no != 0
            && matches!(e.kind, AlertKind::ShipDateMissing | AlertKind::ShipDateOverdue)
            && self.shop(&e.shop).is_some_and(|s| s.writeback)
    }

    /// Sends `set_ship_date` for the alert's order and waits a little for its result (the
    /// fetcher applies it between polls). The command id names order and date: sending the same
    /// fix again never calls Qoo10 twice.
    pub async fn fix(&self, alert_id: &str, ship_date: &str) -> Result<Fixed, ActionError> {
        let entry = self.board.read().expect("board lock").get(alert_id);
        let Some(e) = entry else { return Err(ActionError::NotOpen(alert_id.into())) };
        if !self.fixable(&e) {
            return Err(ActionError::NotFixable(format!(
                "{alert_id}: write-back cannot fix this alert (shop {} has writeback = {}, kind {})",
                e.shop,
                self.shop(&e.shop).is_some_and(|s| s.writeback),
                e.kind
            )));
        }
        let date: NaiveDate =
            ship_date.parse().map_err(|_| ActionError::BadDate(format!("{ship_date:?} is not YYYY-MM-DD")))?;
        if date <= today() {
            return Err(ActionError::BadDate(format!("{date} is not after today (JST); Qoo10 refuses it")));
        }
        let command_id = format!("center:{}:{}:{date}", e.shop, e.order_no);
        let command = Command {
            schema_version: COMMAND_SCHEMA_VERSION,
            command_id: command_id.clone(),
            shop_id: e.shop.to_string(),
            action: Action::SetShipDate { order_no: e.order_no, ship_date: date, delay_type: 1, memo: String::new() },
        };
        command.validate(&e.shop).map_err(|f| ActionError::NotFixable(f.to_string()))?;
        let payload = serde_json::to_vec(&command).map_err(unavailable)?;
        let published = self.js.publish(self.ns.commands(&e.shop), payload.into()).await;
        published.map_err(unavailable)?.await.map_err(unavailable)?;
        tracing::info!(alert_id, command_id, "write-back fix sent");
        let result = self.wait_for_result(&e, &command_id).await;
        Ok(Fixed { command_id, result })
    }

    async fn wait_for_result(&self, e: &Entry, command_id: &str) -> Option<CommandRow> {
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if let Ok(rows) = self.store.latest_commands(&e.shop, &[e.order_no]).await
                && let Some(r) = rows.into_iter().find(|r| r.command_id == command_id && r.state != "pending")
            {
                return Some(r);
            }
        }
        None
    }

    /// The latest command of each write-back order among `entries`, by (shop, order).
    pub async fn last_commands(&self, entries: &[Entry]) -> HashMap<(String, u64), CommandRow> {
        let mut by_shop: HashMap<&str, Vec<u64>> = HashMap::new();
        for e in entries.iter().filter(|e| self.fixable(e)) {
            by_shop.entry(&e.shop).or_default().push(e.order_no);
        }
        let mut out = HashMap::new();
        for (shop, orders) in by_shop {
            if let Ok(rows) = self.store.latest_commands(shop, &orders).await {
                out.extend(rows.into_iter().map(|r| ((r.shop_id.clone(), r.order_no), r)));
            }
        }
        out
    }
}
