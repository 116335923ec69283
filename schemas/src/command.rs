//! `QOO10_COMMANDS`: changes to make on Qoo10 (`qoo10.commands.<shop>`, input) and what became
//! of each (`qoo10.command_results.<shop>`, one message per state it reaches).
//!
//! JSON Schemas: `schemas/command.schema.json`, `schemas/command-result.schema.json`. The
//! fetcher applies commands for shops with `writeback = true` (see docs/writeback.md).

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::dlq::FieldError;

pub const COMMAND_SCHEMA_VERSION: u32 = 1;

/// The longest `command_id` accepted.
pub const MAX_COMMAND_ID: usize = 128;
/// Qoo10's limits (the reference, §11.3).
pub const MAX_MEMO: usize = 1000;
pub const MAX_CARRIER: usize = 200;
pub const MAX_TRACKING_NO: usize = 50;

/// Unknown fields are ignored (the format grows additively).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    pub schema_version: u32,
    /// The sender's id of the command: applied at most once, whatever arrives how often.
    pub command_id: String,
    pub shop_id: String,
    #[serde(flatten)]
    pub action: Action,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// 発送予定日 (`ShippingBasic.SetSellerCheckYN_V2`): 配送要請 → 配送準備.
    SetShipDate {
        order_no: u64,
        ship_date: NaiveDate,
        /// 1 商品準備中 (default), 2 注文製作, 3 顧客の要求, 4 その他.
        #[serde(default = "default_delay_type")]
        delay_type: u8,
        #[serde(default)]
        memo: String,
    },
    /// Carrier and tracking number (`ShippingBasic.SetSendingInfo`): → 配送中.
    SetTracking { order_no: u64, carrier: String, tracking_no: String },
}

fn default_delay_type() -> u8 {
    1
}

impl Action {
    pub fn order_no(&self) -> u64 {
        match self {
            Action::SetShipDate { order_no, .. } | Action::SetTracking { order_no, .. } => *order_no,
        }
    }

    /// The name on the wire.
    pub fn name(&self) -> &'static str {
        match self {
            Action::SetShipDate { .. } => "set_ship_date",
            Action::SetTracking { .. } => "set_tracking",
        }
    }
}

impl Command {
    /// Checks what serde cannot and what needs no clock; the reason names the field.
    pub fn validate(&self, subject_shop: &str) -> Result<(), FieldError> {
        let bad = |field: &str, problem: String| Err(FieldError::new(field, problem));
        let chars = |s: &str| s.chars().count();
        if self.schema_version != COMMAND_SCHEMA_VERSION {
            return bad("schema_version", format!("{} is not {COMMAND_SCHEMA_VERSION}", self.schema_version));
        }
        if self.command_id.trim().is_empty() || chars(&self.command_id) > MAX_COMMAND_ID {
            return bad("command_id", format!("must be 1 to {MAX_COMMAND_ID} characters"));
        }
        if self.shop_id != subject_shop {
            return bad("shop_id", format!("{:?} does not match the subject's shop {subject_shop:?}", self.shop_id));
        }
        if self.action.order_no() == 0 {
            return bad("order_no", "must be a positive integer".into());
        }
        match &self.action {
            Action::SetShipDate { delay_type, .. } if !(1..=4).contains(delay_type) => {
                bad("delay_type", format!("{delay_type} is not 1..4"))
            }
            Action::SetShipDate { memo, .. } if chars(memo) > MAX_MEMO => {
                bad("memo", format!("longer than {MAX_MEMO} characters"))
            }
            Action::SetTracking { carrier, .. } if carrier.trim().is_empty() || chars(carrier) > MAX_CARRIER => {
                bad("carrier", format!("must be 1 to {MAX_CARRIER} characters"))
            }
            Action::SetTracking { tracking_no, .. }
                if tracking_no.trim().is_empty() || chars(tracking_no) > MAX_TRACKING_NO =>
            {
                bad("tracking_no", format!("must be 1 to {MAX_TRACKING_NO} characters"))
            }
            _ => Ok(()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandState {
    /// Qoo10 accepted it, or already showed the change.
    Applied,
    /// It will not be applied as sent; `reason` says why.
    Rejected,
    /// Transient failures outlasted the retry budget; sending it again retries it.
    Failed,
}

impl CommandState {
    pub fn as_str(self) -> &'static str {
        match self {
            CommandState::Applied => "applied",
            CommandState::Rejected => "rejected",
            CommandState::Failed => "failed",
        }
    }

    /// A command in this state is done with: sending it again republishes the result.
    pub fn is_final(self) -> bool {
        self != CommandState::Failed
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandResult {
    pub schema_version: u32,
    pub command_id: String,
    pub shop_id: String,
    pub order_no: u64,
    pub action: String,
    pub state: CommandState,
    /// Qoo10's `ResultCode` of the call that decided it; `null` when no call decided it.
    pub qoo10_result_code: Option<i64>,
    /// Why (English); empty when applied by a call that succeeded.
    pub reason: String,
    pub reason_ja: String,
    /// When the command was first received.
    pub requested_at: DateTime<Utc>,
    pub at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_and_validate() {
        let c: Command = serde_json::from_str(
            r#"{"schema_version":1,"command_id":"oms-4711","shop_id":"s","action":"set_ship_date","order_no":5,"ship_date":"2026-12-05"}"#,
        )
        .unwrap();
        assert!(matches!(c.action, Action::SetShipDate { delay_type: 1, .. }), "DelayType 1 by default");
        assert_eq!(c.validate("s"), Ok(()));
        assert!(c.validate("t").unwrap_err().to_string().contains("shop_id"));
        let t: Command = serde_json::from_str(
            r#"{"schema_version":1,"command_id":"x","shop_id":"s","action":"set_tracking","order_no":5,"carrier":"佐川急便","tracking_no":""}"#,
        )
        .unwrap();
        assert!(t.validate("s").unwrap_err().to_string().contains("tracking_no"));
        let bad = r#"{"schema_version":1,"command_id":"x","shop_id":"s","action":"set_quantity","order_no":5}"#;
        assert!(serde_json::from_str::<Command>(bad).unwrap_err().to_string().contains("set_quantity"));
    }
}
