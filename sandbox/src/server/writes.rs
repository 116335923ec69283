//! QAPI's write side, as strict as the reference (§11.3) says Qoo10 is: one order number per
//! call, 発送予定日 only from 配送要請 and only once, a date after today and not beyond the
//! maximum, tracking from 2 or 3 only; and the single-order read a caller checks with.
//!
//! Every answer says whether it changed the world (`changed` in the request log): the tests
//! count the calls that changed something, not the calls.

use chrono::{Duration, NaiveDate};
use serde_json::{Value, json};

use super::World;
use super::qapi::{Answer, Params, envelope};
use crate::model::Order;
use crate::render;

/// The latest 発送予定日 the sandbox accepts, in days after today (JST). Qoo10's maximum is not
/// published; one integration assumes 30 (the reference, §11.3).
pub const MAX_SHIP_DATE_DAYS: i64 = 30;

/// A Bulk call's most rows.
const BULK_MAX: usize = 500;

/// One `OrderNo`: a comma-joined list (or anything but a number) is refused, as live QAPI does.
fn order_no(text: Option<&str>) -> Result<u64, Answer> {
    text.map(str::trim)
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| envelope(-10001, "OrderNo format error", Value::Null))
}

fn order_mut<'w>(w: &'w mut World, shop: &str, no: u64) -> Result<&'w mut Order, Answer> {
    w.orders.get_mut(&(shop.to_owned(), no)).ok_or_else(|| envelope(-10004, "Not your order.", Value::Null))
}

/// `SetSellerCheckYN_V2` for one order; `(code, message)` when refused.
fn confirm(w: &mut World, shop: &str, no: u64, date: &str, delay: &str, memo: &str) -> Result<(), (i64, String)> {
    let today = w.now_jst().date();
    let refused = |a: Answer| (a.code.unwrap_or(-1), a.body);
    let date = match date.trim() {
        "" => return Err((-10016, "EstShipDt is required.".into())),
        d => NaiveDate::parse_from_str(d, "%Y%m%d").map_err(|_| (-10016, format!("EstShipDt format error: {d}")))?,
    };
    if !matches!(delay.trim(), "1" | "2" | "3" | "4") {
        return Err((-10001, "DelayType Error".into()));
    }
    if memo.chars().count() > 1000 {
        return Err((-10001, "DelayMemo is too long.".into()));
    }
    let o = order_mut(w, shop, no).map_err(refused)?;
    if o.status == 3 {
        return Err((-10012, "This order is already confirmed.".into()));
    }
    if o.status != 2 || o.claim_status != 0 {
        return Err((-10013, "This order is not in shipping request status.".into()));
    }
    if date <= today {
        return Err((-10018, "EstShipDt must be after today.".into()));
    }
    if date > today + Duration::days(MAX_SHIP_DATE_DAYS) {
        return Err((-10017, "EstShipDt is beyond the maximum allowed date.".into()));
    }
    o.est_ship_date = Some(date);
    o.status = 3;
    Ok(())
}

/// `SetSendingInfo` for one order; `(code, message)` when refused.
fn send(w: &mut World, shop: &str, no: u64, corp: &str, tracking: &str) -> Result<(), (i64, String)> {
    let now = w.now_jst();
    if corp.trim().is_empty() || corp.chars().count() > 200 {
        return Err((-10002, "ShippingCorp Error".into()));
    }
    if tracking.trim().is_empty() || tracking.chars().count() > 50 {
        return Err((-10003, "TrackingNo Error".into()));
    }
    let o = order_mut(w, shop, no).map_err(|a| (a.code.unwrap_or(-1), a.body))?;
    if !matches!(o.status, 2 | 3) || o.claim_status != 0 {
        return Err((-10010, "Update failed.".into()));
    }
    o.status = 4;
    o.shipping_date = Some(now);
    o.carrier = corp.trim().to_owned();
    o.tracking_no = tracking.trim().to_owned();
    Ok(())
}

fn single(result: Result<(), (i64, String)>) -> Answer {
    match result {
        Ok(()) => Answer { changed: true, ..envelope(0, "SUCCESS", Value::Null) },
        Err((code, msg)) => envelope(code, &msg, Value::Null),
    }
}

pub(super) fn set_seller_check(w: &mut World, shop: &str, p: &Params) -> Answer {
    let no = match order_no(p.get("OrderNo")) {
        Ok(n) => n,
        Err(a) => return a,
    };
    let field = |n: &str| p.get(n).unwrap_or("").to_owned();
    single(confirm(w, shop, no, &field("EstShipDt"), &field("DelayType"), &field("DelayMemo")))
}

pub(super) fn set_sending_info(w: &mut World, shop: &str, p: &Params) -> Answer {
    let no = match order_no(p.get("OrderNo")) {
        Ok(n) => n,
        Err(a) => return a,
    };
    let field = |n: &str| p.get(n).unwrap_or("").to_owned();
    single(send(w, shop, no, &field("ShippingCorp"), &field("TrackingNo")))
}

/// The rows of a Bulk call's JSON parameter, at most 500.
fn bulk_rows(p: &Params, name: &str) -> Result<Vec<Value>, Answer> {
    let rows: Vec<Value> = serde_json::from_str(p.get(name).unwrap_or(""))
        .map_err(|_| envelope(-10001, &format!("{name} format error"), Value::Null))?;
    if rows.len() > BULK_MAX {
        return Err(envelope(-10011, "Up to 500 orders at once.", Value::Null));
    }
    Ok(rows)
}

fn text(row: &Value, key: &str) -> String {
    match &row[key] {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

/// Runs `one` per row; every row gets its own result, the call succeeds as a whole.
fn bulk(
    w: &mut World,
    rows: &[Value],
    key: &str,
    mut one: impl FnMut(&mut World, u64, &Value) -> Result<(), (i64, String)>,
) -> Answer {
    let mut changed = false;
    let results: Vec<Value> = rows
        .iter()
        .map(|row| {
            let outcome = match text(row, "OrderNo").trim().parse::<u64>() {
                Ok(no) => one(w, no, row),
                Err(_) => Err((-10001, "OrderNo format error".into())),
            };
            changed |= outcome.is_ok();
            let (code, msg) = outcome.err().unwrap_or((0, "SUCCESS".into()));
            json!({key: text(row, "OrderNo"), "result_cd": code, "ResultCode": code, "ResultMsg": msg})
        })
        .collect();
    Answer { changed, ..envelope(0, "SUCCESS", Value::Array(results)) }
}

pub(super) fn set_seller_check_bulk(w: &mut World, shop: &str, p: &Params) -> Answer {
    let rows = match bulk_rows(p, "SendPlanDtInfoJson") {
        Ok(r) => r,
        Err(a) => return a,
    };
    bulk(w, &rows, "cont_no", |w, no, r| {
        confirm(w, shop, no, &text(r, "EstShipDt"), &text(r, "DelayType"), &text(r, "DelayMemo"))
    })
}

pub(super) fn set_sending_info_bulk(w: &mut World, shop: &str, p: &Params) -> Answer {
    let rows = match bulk_rows(p, "ShippingInfoJson") {
        Ok(r) => r,
        Err(a) => return a,
    };
    bulk(w, &rows, "contr_no", |w, no, r| send(w, shop, no, &text(r, "ShippingCorp"), &text(r, "TrackingNo")))
}

/// `Claim.SetCancelProcess`: the seller cancels a line that has not shipped.
pub(super) fn set_cancel_process(w: &mut World, shop: &str, p: &Params) -> Answer {
    let no = match order_no(p.get("ContrNo")) {
        Ok(n) => n,
        Err(a) => return a,
    };
    if !matches!(p.get("CancelReason").unwrap_or("").trim(), "" | "1" | "2" | "3") {
        return envelope(-10001, "CancelReason Error", Value::Null);
    }
    if p.get("SellerMemo").unwrap_or("").chars().count() > 1000 {
        return envelope(-10001, "SellerMemo is too long.", Value::Null);
    }
    let now = w.now_jst();
    let o = match order_mut(w, shop, no) {
        Ok(o) => o,
        Err(a) => return a,
    };
    if o.status >= 4 || o.claim_status != 0 {
        return envelope(-10004, "Wrong order status.", Value::Null);
    }
    o.claim_status = 3;
    o.claim_request_date = Some(now);
    o.claim_done_date = Some(now);
    o.claim_reason = "販売者都合".into();
    Answer { changed: true, ..envelope(0, "SUCCESS", Value::Null) }
}

/// `GetShippingAndClaimInfoByOrderNo_V2`: one order's row, or `null` for an order the shop
/// does not have.
pub(super) fn by_order_no(w: &World, shop: &str, p: &Params) -> Answer {
    let no = match order_no(p.get("OrderNo")) {
        Ok(n) => n,
        Err(a) => return a,
    };
    match w.orders.get(&(shop.to_owned(), no)) {
        Some(o) => envelope(0, "SUCCESS", json!([render::single_order_row(o)])),
        None => envelope(0, "SUCCESS", Value::Null),
    }
}

/// Methods that change orders: a `timeout` fault lets them make the change and then not answer
/// (the lost answer a caller must read back after); a `status` fault answers before any change.
pub(super) fn is_write(lname: &str) -> bool {
    matches!(
        lname,
        "shippingbasic.setsellercheckyn_v2"
            | "shippingbasic.setsellercheckynbulk"
            | "shippingbasic.setsendinginfo"
            | "shippingbasic.setsendinginfobulk"
            | "claim.setcancelprocess"
    )
}
