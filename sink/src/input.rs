//! What the sink accepts on its input subjects (`orders.<shop>`, `oms.edits.<shop>`), and the
//! precise reason when it does not: anyone with publish rights can put anything there.

use chrono::{DateTime, Utc};
use schemas::dlq::{FieldError, Reason};
use schemas::edit::{Change, OmsEdit};
use schemas::order::CanonicalOrder;
use serde::de::DeserializeOwned;

/// Larger messages are dead letters: a canonical order or an edit is a few kilobytes.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// A canonical order from `orders.<subject_shop>`, or why not.
pub fn order(payload: &[u8], subject_shop: &str, now: DateTime<Utc>) -> Result<CanonicalOrder, Reason> {
    let order: CanonicalOrder = parse(payload, "a canonical order")?;
    order.validate(subject_shop)?;
    // A version from the future would pin the line: nothing fetched later could replace it.
    if let Some(future) = Reason::if_future("fetched_at", order.source.fetched_at, now) {
        return Err(future);
    }
    Ok(order)
}

/// An OMS edit from `oms.edits.<subject_shop>`, or why not.
pub fn edit(payload: &[u8], subject_shop: &str) -> Result<OmsEdit, Reason> {
    // Read flat first: `OmsEdit` flattens a tagged enum, through which serde loses the path of
    // a bad field ("invalid type: string, expected u32" without saying which).
    let f: FlatEdit = parse(payload, "an OMS edit")?;
    let action = f.action.as_str();
    let change = match action {
        "set_quantity" => Change::SetQuantity {
            order_no: need(f.order_no, "order_no", action)?,
            quantity: need(f.quantity, "quantity", action)?,
        },
        "set_ship_date" => Change::SetShipDate {
            order_no: need(f.order_no, "order_no", action)?,
            ship_date: need(f.ship_date, "ship_date", action)?,
        },
        "remove_item" => Change::RemoveItem { order_no: need(f.order_no, "order_no", action)? },
        "add_item" => Change::AddItem {
            pack_no: need(f.pack_no, "pack_no", action)?,
            item_code: need(f.item_code, "item_code", action)?,
            quantity: need(f.quantity, "quantity", action)?,
        },
        other => {
            let problem =
                format!("unknown action {other:?} (expected set_quantity, set_ship_date, remove_item or add_item)");
            return Err(FieldError::new("action", problem).into());
        }
    };
    let edit = OmsEdit {
        schema_version: f.schema_version,
        edit_id: f.edit_id,
        shop_id: f.shop_id,
        change,
        made_at: f.made_at,
    };
    edit.validate(subject_shop)?;
    Ok(edit)
}

/// Every field any edit action has, as the wire carries them.
#[derive(serde::Deserialize)]
struct FlatEdit {
    schema_version: u32,
    edit_id: String,
    shop_id: String,
    action: String,
    order_no: Option<u64>,
    pack_no: Option<u64>,
    quantity: Option<u32>,
    ship_date: Option<chrono::NaiveDate>,
    item_code: Option<String>,
    made_at: chrono::DateTime<chrono::Utc>,
}

fn need<T>(value: Option<T>, field: &'static str, action: &str) -> Result<T, Reason> {
    value.ok_or_else(|| Reason::Missing { field, action: action.to_owned() })
}

/// JSON with the path of the offending field in the reason (`field `quantity`: invalid type …`).
fn parse<T: DeserializeOwned>(payload: &[u8], what: &'static str) -> Result<T, Reason> {
    if payload.len() > MAX_MESSAGE_BYTES {
        return Err(Reason::Oversized { bytes: payload.len(), limit: MAX_MESSAGE_BYTES });
    }
    // The fast parser first; the path-tracking one only to explain a failure.
    serde_json::from_slice(payload).map_err(|_| {
        let de = &mut serde_json::Deserializer::from_slice(payload);
        let detail = match serde_path_to_error::deserialize::<_, T>(de) {
            Ok(_) => "unreadable".to_owned(),
            Err(e) => match e.path().to_string().as_str() {
                "." | "" => e.inner().to_string(),
                path => format!("field `{path}`: {}", e.inner()),
            },
        };
        Reason::Unreadable { what, detail }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_name_the_field() {
        let e = edit(br#"{"schema_version":1,"edit_id":"e","shop_id":"s","action":"set_quantity","order_no":1,"quantity":"3","made_at":"2026-11-29T00:00:00Z"}"#, "s").unwrap_err().to_string();
        assert!(e.starts_with("not an OMS edit: field `quantity`: invalid type"), "{e}");
        let e = edit(br#"{"schema_version":1,"edit_id":"e","shop_id":"s","action":"set_ship_date","order_no":1,"ship_date":"1900-01-01","made_at":"2026-11-29T00:00:00Z"}"#, "s").unwrap_err().to_string();
        assert_eq!(e, "field `ship_date`: 1900-01-01 is outside 2000..2100");
        let e = order(b"\xff\xfe{", "s", Utc::now()).unwrap_err().to_string();
        assert!(e.starts_with("not a canonical order: "), "{e}");
        let e = order(&vec![b' '; MAX_MESSAGE_BYTES + 1], "s", Utc::now()).unwrap_err().to_string();
        assert_eq!(e, format!("payload of {} bytes exceeds {MAX_MESSAGE_BYTES}", MAX_MESSAGE_BYTES + 1));
    }
}
