//! `ALERTS`: an alert, opened or resolved, on `alerts.<kind>.<shop>`.
//!
//! Each alert has a stable `alert_id`; it opens once and resolves once. Every transition is one
//! message with a higher `version`; the `alerts` table keeps the latest per `alert_id`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub const ALERT_SCHEMA_VERSION: u32 = 1;

/// The alert kinds of the contract.
pub const KINDS: &[&str] = &[
    "ship_date_missing",
    "skipped_new_status",
    "quantity_changed",
    "item_added",
    "item_removed",
    "ship_date_changed",
    "ship_date_overdue",
    "order_vanished",
    "qoo10_correction_required",
    "credentials_invalid",
    "credentials_expiring",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    Open,
    Resolved,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    pub schema_version: u32,
    pub alert_id: String,
    pub kind: String,
    pub shop_id: String,
    /// 0 when the alert is about the shop, not an order.
    pub order_no: u64,
    pub pack_no: u64,
    pub state: AlertState,
    /// `critical`, `warning` or `info`.
    pub severity: String,
    /// English, with the concrete action.
    pub message: String,
    /// Japanese, with the concrete action (where in QSM).
    pub message_ja: String,
    /// Machine-readable details (JSON object).
    pub details: serde_json::Value,
    pub opened_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Increases with every transition of this alert.
    pub version: u64,
}

/// `Nats-Msg-Id` of an alert transition: a re-sent transition is stored once.
pub fn alert_msg_id(alert: &Alert) -> String {
    let state = match alert.state {
        AlertState::Open => "open",
        AlertState::Resolved => "resolved",
    };
    format!("alert:{}:{state}", alert.alert_id)
}
