//! OMS edits as expectations of Qoo10's data: does Qoo10 show the change yet, and what must
//! the seller do in QSM until it does. Pure.

use schemas::alert::{AlertKind, Severity};
use schemas::edit::{Change, OmsEdit};
use serde_json::json;

use crate::alerts::Draft;
use crate::rows::{OrderRow, date};

/// Does this order line show the edit? `None` when the line is not the one the edit is about.
pub fn satisfied_by(edit: &OmsEdit, row: &OrderRow) -> Option<bool> {
    match &edit.change {
        Change::SetQuantity { order_no, quantity } => (row.order_no == *order_no).then_some(row.quantity == *quantity),
        Change::SetShipDate { order_no, ship_date } => {
            (row.order_no == *order_no).then_some(date(row.estimated_ship_date) == Some(*ship_date))
        }
        Change::RemoveItem { order_no } => {
            (row.order_no == *order_no).then_some(schemas::status::is_cancellation(row.claim_status))
        }
        Change::AddItem { pack_no, item_code, quantity } => (row.pack_no == *pack_no
            && (row.item_code == *item_code || row.seller_item_code == *item_code))
            .then_some(row.quantity == *quantity && row.claim_status == 0),
    }
}

/// The order line an edit is about, and the cart (for lookups).
pub fn target(edit: &OmsEdit) -> (Option<u64>, Option<u64>) {
    match &edit.change {
        Change::SetQuantity { order_no, .. }
        | Change::SetShipDate { order_no, .. }
        | Change::RemoveItem { order_no } => (Some(*order_no), None),
        Change::AddItem { pack_no, .. } => (None, Some(*pack_no)),
    }
}

/// The write-back command that applies an edit on Qoo10, for the edits QAPI can apply
/// (発送予定日); its id is the edit's.
pub fn as_command(edit: &OmsEdit) -> Option<schemas::command::Command> {
    let Change::SetShipDate { order_no, ship_date } = &edit.change else { return None };
    Some(schemas::command::Command {
        schema_version: schemas::command::COMMAND_SCHEMA_VERSION,
        command_id: edit.edit_id.clone(),
        shop_id: edit.shop_id.clone(),
        action: schemas::command::Action::SetShipDate {
            order_no: *order_no,
            ship_date: *ship_date,
            delay_type: 1,
            memo: String::new(),
        },
    })
}

/// The change alert that a satisfied edit makes redundant (the seller did what the OMS said).
pub fn predicted_kind(edit: &OmsEdit) -> AlertKind {
    match edit.change {
        Change::SetQuantity { .. } => AlertKind::QuantityChanged,
        Change::SetShipDate { .. } => AlertKind::ShipDateChanged,
        Change::RemoveItem { .. } => AlertKind::ItemRemoved,
        Change::AddItem { .. } => AlertKind::ItemAdded,
    }
}

/// What the seller must do in QSM; `current` is Qoo10's latest data for the line, if known.
pub fn correction(edit: &OmsEdit, current: Option<&OrderRow>) -> Draft {
    let (message, message_ja, details) = match &edit.change {
        Change::SetQuantity { order_no, quantity } => {
            let now = current.map_or("(unknown)".into(), |r| r.quantity.to_string());
            (
                format!(
                    "The OMS changed the quantity of order {order_no} to {quantity}, but Qoo10 shows {now}. Make the same change in QSM."
                ),
                format!(
                    "OMSで注文 {order_no} の数量が {quantity} に変更されましたが、Qoo10では {now} です。QSMでも同じ変更をしてください。"
                ),
                json!({"field": "quantity", "expected": quantity, "qoo10": now}),
            )
        }
        Change::SetShipDate { order_no, ship_date } => {
            let now = current.and_then(|r| date(r.estimated_ship_date)).map_or("未設定".into(), |d| d.to_string());
            (
                format!(
                    "The OMS set the estimated shipping date of order {order_no} to {ship_date}, but Qoo10 shows {now}. \
                     Set 発送予定日 in QSM, or through QAPI (SetSellerCheckYN_V2): the pipeline's write-back does it where the shop enables it."
                ),
                format!(
                    "OMSで注文 {order_no} の発送予定日が {ship_date} に設定されましたが、Qoo10では {now} です。QSMで発送予定日を設定してください（QAPIでも設定できます：ショップでwrite-backを有効にするとパイプラインが設定します）。"
                ),
                json!({"field": "estimated_ship_date", "expected": ship_date.to_string(), "qoo10": now}),
            )
        }
        Change::RemoveItem { order_no } => {
            let title = current.map_or(String::new(), |r| format!("（{}）", r.item_title));
            (
                format!("The OMS removed order {order_no}{title}, but it is not cancelled on Qoo10. Cancel it in QSM."),
                format!(
                    "OMSで注文 {order_no}{title} が削除されましたが、Qoo10ではキャンセルされていません。QSMでキャンセル処理をしてください。"
                ),
                json!({"field": "claim_status", "expected": "cancelled"}),
            )
        }
        Change::AddItem { pack_no, item_code, quantity } => (
            format!(
                "The OMS added {item_code} × {quantity} to cart {pack_no}, but Qoo10 does not show it. Add it in QSM as well."
            ),
            format!(
                "OMSでカート {pack_no} に商品 {item_code} × {quantity} が追加されましたが、Qoo10には見つかりません。QSMでも追加してください。"
            ),
            json!({"field": "pack_lines", "expected": {"item_code": item_code, "quantity": quantity}}),
        ),
    };
    let mut details = details;
    details["edit_id"] = json!(edit.edit_id);
    details["edit_key"] = json!(edit.key());
    if let Some(cmd) = as_command(edit) {
        // What write-back would send to fix it (the alert center can offer it).
        details["command"] = json!(cmd);
    }
    Draft { kind: AlertKind::Qoo10CorrectionRequired, severity: Severity::Warning, message, message_ja, details }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::edit::EDIT_SCHEMA_VERSION;

    fn edit(change: Change) -> OmsEdit {
        OmsEdit {
            schema_version: EDIT_SCHEMA_VERSION,
            edit_id: "e1".into(),
            shop_id: "s".into(),
            change,
            made_at: "2026-11-29T00:00:00Z".parse().unwrap(),
        }
    }

    fn line(order_no: u64, quantity: u32, claim: u8) -> OrderRow {
        OrderRow {
            order_no,
            pack_no: 77,
            qoo10_status: 2,
            claim_status: claim,
            item_code: "I1".into(),
            seller_item_code: "SKU1".into(),
            item_title: "緑茶".into(),
            quantity,
            ..OrderRow::empty("s")
        }
    }

    #[test]
    fn what_satisfies_an_edit() {
        let q = edit(Change::SetQuantity { order_no: 1, quantity: 3 });
        assert_eq!(satisfied_by(&q, &line(1, 2, 0)), Some(false));
        assert_eq!(satisfied_by(&q, &line(1, 3, 0)), Some(true));
        assert_eq!(satisfied_by(&q, &line(2, 3, 0)), None, "another line");
        let r = edit(Change::RemoveItem { order_no: 1 });
        assert_eq!(satisfied_by(&r, &line(1, 2, 0)), Some(false));
        assert_eq!(satisfied_by(&r, &line(1, 2, 3)), Some(true));
        let a = edit(Change::AddItem { pack_no: 77, item_code: "SKU1".into(), quantity: 2 });
        assert_eq!(satisfied_by(&a, &line(9, 2, 0)), Some(true), "matched by the seller's item code");
        assert_eq!(satisfied_by(&a, &line(9, 1, 0)), Some(false));
        let mut d = line(1, 2, 0);
        d.estimated_ship_date = Some(20_788); // 2026-12-01
        let s =
            edit(Change::SetShipDate { order_no: 1, ship_date: chrono::NaiveDate::from_ymd_opt(2026, 12, 1).unwrap() });
        assert_eq!(satisfied_by(&s, &d), Some(true));
    }

    #[test]
    fn corrections_say_what_to_do_in_qsm() {
        let q = edit(Change::SetQuantity { order_no: 1, quantity: 3 });
        let d = correction(&q, Some(&line(1, 2, 0)));
        assert_eq!(
            d.message_ja,
            "OMSで注文 1 の数量が 3 に変更されましたが、Qoo10では 2 です。QSMでも同じ変更をしてください。"
        );
        assert_eq!(d.details["edit_key"], json!("quantity:1"));
        let s =
            edit(Change::SetShipDate { order_no: 1, ship_date: chrono::NaiveDate::from_ymd_opt(2026, 12, 1).unwrap() });
        assert!(
            correction(&s, Some(&line(1, 2, 0)))
                .message_ja
                .contains("Qoo10では 未設定 です。QSMで発送予定日を設定してください（QAPIでも設定できます")
        );
    }
}
