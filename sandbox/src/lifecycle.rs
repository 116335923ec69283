//! How an order moves through Qoo10's statuses, as the control API and the clock drive it.

use chrono::{Duration, NaiveDate, NaiveDateTime};
use serde_json::Value;

use crate::model::Order;

/// One step, named as the control API names it.
pub fn apply(o: &mut Order, action: &str, args: &Value, now: NaiveDateTime) -> Result<(), String> {
    match action {
        "pay" if o.status == 1 => {
            o.status = 2;
            o.payment_date = Some(now);
        }
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
        "cancel" => {
            o.claim_status = 3;
            o.claim_request_date.get_or_insert(now);
            o.claim_done_date = Some(now);
            o.claim_reason = "お客様都合".into();
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
        "pay" | "set_ship_date" | "ship" | "deliver" => {
            return Err(format!("cannot {action} an order in status {}", o.status));
        }
        other => return Err(format!("unknown action {other:?}")),
    }
    Ok(())
}

/// What the passing of time does to an order by `now`.
pub fn progress(o: &mut Order, now: NaiveDateTime) {
    if o.claim_status != 0 {
        return;
    }
    if o.status == 1 && now - o.order_date >= Duration::hours(1) {
        o.status = 2;
        o.payment_date = Some(o.order_date + Duration::hours(1));
    }
    if o.status == 2 && o.payment_date.is_some_and(|p| now - p >= Duration::hours(24)) {
        o.status = 3;
        o.est_ship_date = o.payment_date.map(|p| (p + Duration::days(3)).date());
    }
    if o.status == 3 && o.est_ship_date.is_some_and(|d| now.date() >= d) {
        o.status = 4;
        o.shipping_date = o.est_ship_date.and_then(|d| d.and_hms_opt(15, 0, 0));
        o.carrier = "ヤマト運輸".into();
        o.tracking_no = format!("{:012}", o.order_no % 1_000_000_000_000);
    }
    if o.status == 4 && o.shipping_date.is_some_and(|s| now - s >= Duration::days(2)) {
        o.status = 5;
        o.delivered_date = o.shipping_date.map(|s| s + Duration::days(2));
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
        apply(&mut o, "cancel", &json!({}), now).unwrap();
        assert!(o.cancelled());
        assert!(apply(&mut o, "teleport", &json!({}), now).is_err());
    }

    #[test]
    fn time_moves_orders_along() {
        let mut o = order(1);
        let start = o.order_date;
        progress(&mut o, start + Duration::hours(2));
        assert_eq!(o.status, 2, "paid after an hour");
        progress(&mut o, start + Duration::hours(30));
        assert_eq!(o.status, 3, "ship date set a day after payment");
        let ship = o.est_ship_date.unwrap();
        progress(&mut o, ship.and_hms_opt(16, 0, 0).unwrap());
        assert_eq!(o.status, 4, "shipped on the ship date");
        assert!(!o.tracking_no.is_empty());
        progress(&mut o, ship.and_hms_opt(16, 0, 0).unwrap() + Duration::days(3));
        assert_eq!(o.status, 5, "delivered two days later");
        let mut cancelled = order(2);
        cancelled.claim_status = 3;
        progress(&mut cancelled, start + Duration::days(30));
        assert_eq!(cancelled.status, 2, "a cancelled order stays where it was");
    }
}
