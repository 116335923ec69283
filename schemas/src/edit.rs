//! `OMS_EDITS`: an edit the OMS made that Qoo10 must mirror, on `oms.edits.<shop>`.
//!
//! JSON Schema: `schemas/oms-edit.schema.json`. The sink keeps each edit as an expectation and
//! raises `qoo10_correction_required` until Qoo10's data shows the same change.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::dlq::FieldError;

pub const EDIT_SCHEMA_VERSION: u32 = 1;

/// Unknown fields are ignored (the format grows additively).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OmsEdit {
    pub schema_version: u32,
    /// The OMS's id of the edit (idempotence: the same id twice is one edit).
    pub edit_id: String,
    pub shop_id: String,
    #[serde(flatten)]
    pub change: Change,
    pub made_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Change {
    /// The quantity of an order line.
    SetQuantity { order_no: u64, quantity: u32 },
    /// 発送予定日 (JST date).
    SetShipDate { order_no: u64, ship_date: NaiveDate },
    /// The line was removed from the order (Qoo10: cancel it).
    RemoveItem { order_no: u64 },
    /// A line was added to a cart (Qoo10: add the item to the cart's order).
    AddItem { pack_no: u64, item_code: String, quantity: u32 },
}

impl OmsEdit {
    /// Checks what serde cannot; the reason names the field.
    pub fn validate(&self, subject_shop: &str) -> Result<(), FieldError> {
        let bad = |field: &str, problem: String| Err(FieldError::new(field, problem));
        if self.schema_version != EDIT_SCHEMA_VERSION {
            return bad("schema_version", format!("{} is not {EDIT_SCHEMA_VERSION}", self.schema_version));
        }
        if self.edit_id.trim().is_empty() {
            return bad("edit_id", "must not be empty".into());
        }
        if self.shop_id != subject_shop {
            return bad("shop_id", format!("{:?} does not match the subject's shop {subject_shop:?}", self.shop_id));
        }
        match &self.change {
            Change::SetQuantity { order_no: 0, .. }
            | Change::SetShipDate { order_no: 0, .. }
            | Change::RemoveItem { order_no: 0 } => bad("order_no", "must be a positive integer".into()),
            Change::SetQuantity { quantity: 0, .. } | Change::AddItem { quantity: 0, .. } => {
                bad("quantity", "must be at least 1".into())
            }
            Change::AddItem { pack_no: 0, .. } => bad("pack_no", "must be a positive integer".into()),
            Change::AddItem { item_code, .. } if item_code.trim().is_empty() => {
                bad("item_code", "must not be empty".into())
            }
            Change::SetShipDate { ship_date, .. }
                if !crate::order::PLAUSIBLE_YEARS.contains(&chrono::Datelike::year(ship_date)) =>
            {
                bad("ship_date", format!("{ship_date} is outside 2000..2100"))
            }
            _ => Ok(()),
        }
    }

    /// What the expectation is about; a later edit with the same key replaces an earlier one.
    pub fn key(&self) -> String {
        match &self.change {
            Change::SetQuantity { order_no, .. } => format!("quantity:{order_no}"),
            Change::SetShipDate { order_no, .. } => format!("ship_date:{order_no}"),
            Change::RemoveItem { order_no } => format!("remove:{order_no}"),
            Change::AddItem { pack_no, item_code, .. } => format!("add:{pack_no}:{item_code}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_parse_and_validate() {
        let e: OmsEdit = serde_json::from_str(
            r#"{"schema_version":1,"edit_id":"e1","shop_id":"s","action":"set_quantity","order_no":5,"quantity":3,"made_at":"2026-11-29T01:00:00Z"}"#,
        )
        .unwrap();
        assert_eq!(e.change, Change::SetQuantity { order_no: 5, quantity: 3 });
        assert_eq!(e.validate("s"), Ok(()));
        assert_eq!(e.key(), "quantity:5");
        assert!(e.validate("t").unwrap_err().to_string().contains("shop_id"));
        let bad = |text: &str| {
            serde_json::from_str::<OmsEdit>(text)
                .map_err(|e| e.to_string())
                .and_then(|e| e.validate("s").map_err(|e| e.to_string()))
        };
        assert!(bad(r#"{"schema_version":1,"edit_id":"e","shop_id":"s","action":"set_quantity","order_no":5,"made_at":"2026-11-29T01:00:00Z"}"#)
            .unwrap_err()
            .contains("quantity"));
        assert!(bad(r#"{"schema_version":1,"edit_id":"e","shop_id":"s","action":"set_quantity","order_no":5,"quantity":0,"made_at":"2026-11-29T01:00:00Z"}"#)
            .unwrap_err()
            .contains("`quantity`"));
        assert!(bad(r#"{"schema_version":1,"edit_id":"e","shop_id":"s","action":"teleport","order_no":5,"made_at":"2026-11-29T01:00:00Z"}"#)
            .unwrap_err()
            .contains("teleport"));
        assert!(bad(r#"{"schema_version":1,"edit_id":"e","shop_id":"s","action":"set_ship_date","order_no":5,"ship_date":"12/01","made_at":"2026-11-29T01:00:00Z"}"#).is_err());
    }
}
