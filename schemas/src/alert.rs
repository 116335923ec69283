//! `ALERTS`: an alert, opened or resolved, on `alerts.<kind>.<shop>`.
//!
//! Each alert has a stable `alert_id`; it opens once and resolves once. Every transition is one
//! message with a higher `version`; the `alerts` table keeps the latest per `alert_id`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub const ALERT_SCHEMA_VERSION: u32 = 1;

/// The alert kinds of the contract (`alerts.<kind>.<shop>`). Adding one is a compiler-guided
/// change: every `match` on it names what the new kind does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    ShipDateMissing,
    SkippedNewStatus,
    QuantityChanged,
    ItemAdded,
    ItemRemoved,
    ShipDateChanged,
    ShipDateOverdue,
    OrderVanished,
    #[serde(rename = "qoo10_correction_required")]
    Qoo10CorrectionRequired,
    CredentialsInvalid,
    CredentialsExpiring,
    /// A write-back command could not be applied (raised by the fetcher).
    CommandRejected,
}

impl AlertKind {
    pub const ALL: [AlertKind; 12] = [
        AlertKind::ShipDateMissing,
        AlertKind::SkippedNewStatus,
        AlertKind::QuantityChanged,
        AlertKind::ItemAdded,
        AlertKind::ItemRemoved,
        AlertKind::ShipDateChanged,
        AlertKind::ShipDateOverdue,
        AlertKind::OrderVanished,
        AlertKind::Qoo10CorrectionRequired,
        AlertKind::CredentialsInvalid,
        AlertKind::CredentialsExpiring,
        AlertKind::CommandRejected,
    ];

    /// The name on the wire, in subjects and in ClickHouse.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::ShipDateMissing => "ship_date_missing",
            AlertKind::SkippedNewStatus => "skipped_new_status",
            AlertKind::QuantityChanged => "quantity_changed",
            AlertKind::ItemAdded => "item_added",
            AlertKind::ItemRemoved => "item_removed",
            AlertKind::ShipDateChanged => "ship_date_changed",
            AlertKind::ShipDateOverdue => "ship_date_overdue",
            AlertKind::OrderVanished => "order_vanished",
            AlertKind::Qoo10CorrectionRequired => "qoo10_correction_required",
            AlertKind::CredentialsInvalid => "credentials_invalid",
            AlertKind::CredentialsExpiring => "credentials_expiring",
            AlertKind::CommandRejected => "command_rejected",
        }
    }

    /// The kind in Japanese, as the alert center and digests name it.
    pub fn japanese(self) -> &'static str {
        match self {
            AlertKind::ShipDateMissing => "発送予定日が未設定",
            AlertKind::SkippedNewStatus => "新規注文を飛ばした注文",
            AlertKind::QuantityChanged => "数量の変更",
            AlertKind::ItemAdded => "商品の追加",
            AlertKind::ItemRemoved => "商品の削除",
            AlertKind::ShipDateChanged => "発送予定日の変更",
            AlertKind::ShipDateOverdue => "発送予定日の超過",
            AlertKind::OrderVanished => "注文が取得できない",
            AlertKind::Qoo10CorrectionRequired => "Qoo10側の修正が必要",
            AlertKind::CredentialsInvalid => "認証情報が無効",
            AlertKind::CredentialsExpiring => "APIキーの期限切れ間近",
            AlertKind::CommandRejected => "書き戻しの拒否",
        }
    }

    pub fn parse(text: &str) -> Option<AlertKind> {
        AlertKind::ALL.into_iter().find(|k| k.as_str() == text)
    }

    /// Raised by the fetcher about a shop (the sink records them from `ALERTS`).
    pub fn from_fetcher(self) -> bool {
        matches!(self, AlertKind::CredentialsInvalid | AlertKind::CredentialsExpiring | AlertKind::CommandRejected)
    }
}

impl std::fmt::Display for AlertKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Critical,
    Warning,
    Info,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }

    pub fn parse(text: &str) -> Option<Severity> {
        [Severity::Critical, Severity::Warning, Severity::Info].into_iter().find(|s| s.as_str() == text)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    Open,
    Resolved,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Open => "open",
            AlertState::Resolved => "resolved",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    pub schema_version: u32,
    pub alert_id: String,
    pub kind: AlertKind,
    pub shop_id: String,
    /// 0 when the alert is about the shop, not an order.
    pub order_no: u64,
    pub pack_no: u64,
    pub state: AlertState,
    pub severity: Severity,
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
    /// When someone took the alert in hand (alert center, `POST /api/alerts/<id>/acknowledge`).
    /// An acknowledgement is published as the open alert with its version unchanged and this
    /// set (`Nats-Msg-Id` `alert:<id>:acknowledged`); the alert stays open until its condition
    /// ends. Absent on transitions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged_at: Option<DateTime<Utc>>,
}

/// `Nats-Msg-Id` of an alert transition: a re-sent transition is stored once.
pub fn alert_msg_id(alert: &Alert) -> String {
    match alert.acknowledged_at {
        Some(_) if alert.state == AlertState::Open => format!("alert:{}:acknowledged", alert.alert_id),
        _ => format!("alert:{}:{}", alert.alert_id, alert.state.as_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_named_as_the_contract_names_them() {
        for k in AlertKind::ALL {
            assert_eq!(serde_json::to_value(k).unwrap(), serde_json::json!(k.as_str()));
            assert_eq!(AlertKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(AlertKind::Qoo10CorrectionRequired.as_str(), "qoo10_correction_required");
        let schema: serde_json::Value =
            serde_json::from_str(include_str!("../alert.schema.json")).expect("the alert schema is JSON");
        let listed: Vec<&str> =
            schema["properties"]["kind"]["enum"].as_array().unwrap().iter().filter_map(|v| v.as_str()).collect();
        assert_eq!(listed, AlertKind::ALL.map(AlertKind::as_str), "the JSON Schema lists every kind");
    }
}
