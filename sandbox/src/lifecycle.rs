//! How an order moves through Qoo10's statuses, as the control API and the clock drive it.

use chrono::{Duration, NaiveDate, NaiveDateTime};
use serde_json::Value;

use crate::model::Order;

/// One step, named as the control API names it.
pub fn apply(o: &mut Order, action: &str, args: &Value, now: NaiveDateTime) -> Result<(), String> {
    match action {
        "pay" if o.status == 1 => pay(o, now),
        // QSM's 発送予定日: moves 配送要請 (2) to 配送準備 (3); on 3 it just moves the date.
        "set_ship_date" if matches!(o.status, 2 | 3) => {
            let date = args["date"].as_str().ok_or("body needs {\"date\": \"YYYY-MM-DD\"}")?;
            o.est_ship_date = Some(NaiveDate::parse_from_str(date, "%Y-%m-%d").map_err(|e| e.to_string())?);
            o.status = 3;
        }
        "ship" if o.status == 3 => {
            o.status = 4;
            o.shipping_date = Some(now);
            o.carrier = args["carrier"].as_str().unwrap_or("ヤマト運輸").to_owned();
            o.tracking_no = args["tracking_no"].as_str().unwrap_or("0000-0000-0000").to_owned();
        }
        "deliver" if o.status == 4 => {
            o.status = 5;
            o.delivered_date = Some(now);
        }
        // The buyer cancels: at once while 発送予定日 is not set, else a request the seller must
        // approve (the reference, §11.3). Shipped lines are returned, not cancelled.
        "cancel" if o.claim_status == 0 && o.status <= 3 => {
            let instant = o.est_ship_date.is_none() && o.status <= 2;
            o.claim_status = if instant { 3 } else { 1 };
            o.claim_request_date = Some(now);
            o.claim_done_date = instant.then_some(now);
            o.claim_reason = "お客様都合".into();
        }
        // The seller approves a cancel request in QSM (no public method does it).
        "approve_cancel" if matches!(o.claim_status, 1 | 2) => {
            o.claim_status = 3;
            o.claim_done_date = Some(now);
        }
        "request_return" if o.claim_status == 0 && o.status >= 4 => {
            o.claim_status = 4;
            o.claim_request_date = Some(now);
            o.claim_reason = "サイズ違い".into();
        }
        "complete_return" if matches!(o.claim_status, 4 | 5) => {
            o.claim_status = 6;
            o.claim_done_date = Some(now);
        }
        // 未受取部分返金完了: part of the line refunded.
        "partial_refund" if o.claim_status == 0 => {
            let q = args["quantity"].as_u64().filter(|q| *q > 0 && *q <= u64::from(o.quantity));
            let q = q.ok_or("body needs {\"quantity\": N} within the line's quantity")?;
            let amount = args["amount"].as_str().ok_or("body needs {\"amount\": \"decimal\"}")?;
            o.claim_status = 15;
            o.refund_quantity = u32::try_from(q).map_err(|e| e.to_string())?;
            o.refund_amount = amount.parse().map_err(|e| format!("amount: {e}"))?;
            o.claim_request_date = Some(now);
            o.claim_done_date = Some(now);
            o.claim_reason = "未受取".into();
        }
        "claim" => {
            let code = args["claim_status"].as_u64().ok_or("body needs {\"claim_status\": N}")?;
            o.claim_status = u8::try_from(code).map_err(|e| e.to_string())?;
            o.claim_request_date.get_or_insert(now);
            if matches!(o.claim_status, 3 | 6 | 14 | 15 | 16) {
                o.claim_done_date = Some(now);
            }
        }
        "quantity" => {
            let q = args["quantity"].as_u64().filter(|q| *q > 0).ok_or("body needs {\"quantity\": N > 0}")?;
            o.quantity = u32::try_from(q).map_err(|e| e.to_string())?;
        }
        "pay" | "set_ship_date" | "ship" | "deliver" | "cancel" | "approve_cancel" | "request_return"
        | "complete_return" | "partial_refund" => {
            return Err(format!("cannot {action} an order in status {} with claim {}", o.status, o.claim_status));
        }
        other => return Err(format!("unknown action {other:?}")),
    }
    Ok(())
}

fn pay(o: &mut Order, at: NaiveDateTime) {
    o.status = 2;
    o.payment_date = Some(at);
    o.available_ship_date = Some(o.available_after(at));
}

/// What the passing of time from `since` to `now` does to an order: paid an hour after the
/// order, 発送予定日 set a day after payment (3 days out, or the lead time of a made-to-order
/// line), shipped that day at 15:00, delivered two days later. Each step is stamped when it was
/// due, but never before `since`: the world was last looked at then, and Qoo10 stamps a
/// transition when it happens (a stamp before the last look would be invisible to every window
/// that starts there). Lines on `hold` are left alone.
pub fn progress(o: &mut Order, since: NaiveDateTime, now: NaiveDateTime) {
    if o.claim_status != 0 || o.hold {
        return;
    }
    let at = |due: NaiveDateTime| due.max(since);
    if o.status == 1 && now - o.order_date >= Duration::hours(1) {
        pay(o, at(o.order_date + Duration::hours(1)));
    }
    if o.status == 2 && o.payment_date.is_some_and(|p| now - p >= Duration::hours(24)) {
        o.status = 3;
        let lead = i64::from(o.lead_days.max(3));
        o.est_ship_date = o.payment_date.map(|p| (p + Duration::days(lead)).date());
    }
    let ships = o.est_ship_date.and_then(|d| d.and_hms_opt(15, 0, 0));
    if o.status == 3
        && let Some(ships) = ships.filter(|t| now >= *t)
    {
        o.status = 4;
        o.shipping_date = Some(at(ships));
        o.carrier = "ヤマト運輸".into();
        o.tracking_no = format!("{:012}", o.order_no % 1_000_000_000_000);
    }
    if o.status == 4
        && let Some(delivered) = o.shipping_date.map(|s| s + Duration::days(2)).filter(|t| now >= *t)
    {
        o.status = 5;
        o.delivered_date = Some(at(delivered));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn order(status: u8) -> Order {
        let now = NaiveDateTime::parse_from_str("2026-11-20 10:00:00", "%Y-%m-%d %H:%M:%S").unwrap();
        let mut o = crate::generate::orders(1, 1, "s", 1, 1, now).remove(0);
        o.status = status;
        o.claim_status = 0;
        o.order_date = now - Duration::hours(1);
        o.payment_date = None;
        o.est_ship_date = None;
        o.shipping_date = None;
        o.delivered_date = None;
        o
    }

    fn t(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap()
    }

    #[test]
    fn actions_follow_qoo10s_status_order() {
        let now = t("2026-11-21 09:00:00");
        let mut o = order(1);
        apply(&mut o, "pay", &json!({}), now).unwrap();
        assert_eq!((o.status, o.payment_date), (2, Some(now)));
        apply(&mut o, "set_ship_date", &json!({"date": "2026-11-24"}), now).unwrap();
        assert_eq!((o.status, o.est_ship_date), (3, NaiveDate::from_ymd_opt(2026, 11, 24)));
        apply(&mut o, "set_ship_date", &json!({"date": "2026-11-25"}), now).unwrap();
        assert_eq!((o.status, o.est_ship_date), (3, NaiveDate::from_ymd_opt(2026, 11, 25)), "moving the date keeps 3");
        assert!(apply(&mut o, "deliver", &json!({}), now).is_err(), "cannot deliver before shipping");
        apply(&mut o, "ship", &json!({"carrier": "佐川急便", "tracking_no": "T1"}), now).unwrap();
        assert_eq!((o.status, o.carrier.as_str(), o.tracking_no.as_str()), (4, "佐川急便", "T1"));
        apply(&mut o, "deliver", &json!({}), now).unwrap();
        assert_eq!(o.status, 5);
        apply(&mut o, "quantity", &json!({"quantity": 3}), now).unwrap();
        assert_eq!(o.quantity, 3);
        assert!(apply(&mut o, "quantity", &json!({"quantity": 0}), now).is_err());
        assert!(apply(&mut o, "cancel", &json!({}), now).is_err(), "a delivered line is returned, not cancelled");
        apply(&mut o, "request_return", &json!({}), now).unwrap();
        apply(&mut o, "complete_return", &json!({}), now).unwrap();
        assert_eq!(o.claim_status, 6);
        assert!(apply(&mut o, "teleport", &json!({}), now).is_err());
    }

    #[test]
    fn a_buyer_cancels_at_once_only_before_the_ship_date_is_set() {
        let now = t("2026-11-21 09:00:00");
        let mut new = order(2);
        apply(&mut new, "cancel", &json!({}), now).unwrap();
        assert!(new.cancelled(), "no 発送予定日 yet: cancelled at once (claim 3)");
        let mut dated = order(2);
        apply(&mut dated, "set_ship_date", &json!({"date": "2026-11-25"}), now).unwrap();
        apply(&mut dated, "cancel", &json!({}), now).unwrap();
        assert_eq!((dated.claim_status, dated.claim_done_date), (1, None), "a request the seller must approve");
        apply(&mut dated, "approve_cancel", &json!({}), now).unwrap();
        assert!(dated.cancelled());
        let mut refunded = order(5);
        apply(&mut refunded, "partial_refund", &json!({"quantity": 1, "amount": "500"}), now).unwrap();
        assert_eq!((refunded.claim_status, refunded.refund_quantity), (15, 1));
        assert!(apply(&mut order(5), "partial_refund", &json!({"quantity": 9, "amount": "1"}), now).is_err());
    }

    #[test]
    fn time_moves_orders_along() {
        let mut o = order(1);
        let start = o.order_date;
        progress(&mut o, start, start + Duration::hours(2));
        assert_eq!(o.status, 2, "paid after an hour");
        progress(&mut o, start, start + Duration::hours(30));
        assert_eq!(o.status, 3, "ship date set a day after payment");
        let ship = o.est_ship_date.unwrap();
        progress(&mut o, start, ship.and_hms_opt(16, 0, 0).unwrap());
        assert_eq!(o.status, 4, "shipped on the ship date");
        assert!(!o.tracking_no.is_empty());
        progress(&mut o, start, ship.and_hms_opt(16, 0, 0).unwrap() + Duration::days(3));
        assert_eq!(o.status, 5, "delivered two days later");
        let mut cancelled = order(2);
        cancelled.claim_status = 3;
        progress(&mut cancelled, start, start + Duration::days(30));
        assert_eq!(cancelled.status, 2, "a cancelled order stays where it was");
        let mut made = order(1);
        made.lead_days = 30;
        progress(&mut made, start, start + Duration::days(3));
        assert_eq!(made.status, 3);
        assert_eq!(made.est_ship_date, Some((start + Duration::hours(1) + Duration::days(30)).date()));
        assert_eq!(made.available_ship_date, made.est_ship_date, "made to order: available after the lead time");
        progress(&mut made, start, start + Duration::days(20));
        assert_eq!(made.status, 3, "still being made three weeks on");
        let mut held = order(1);
        held.hold = true;
        progress(&mut held, start, start + Duration::days(30));
        assert_eq!(held.status, 1, "a held line moves only by the control API");
    }
}
