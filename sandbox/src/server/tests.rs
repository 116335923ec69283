//! The sandbox's clock and its strictness, checked without HTTP.

mod clock {
    use super::super::*;

    #[test]
    fn a_frozen_clock_moves_only_when_advanced() {
        let at = Utc::now() - Duration::days(30);
        let mut w = World { frozen_at: Some(at), ..Default::default() };
        assert_eq!(w.now(), at);
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert_eq!(w.now(), at, "real time passing does not move it");
        w.clock_offset += Duration::hours(36);
        assert_eq!(w.now(), at + Duration::hours(36));
        let running = World::default();
        assert!((running.now() - Utc::now()).num_seconds().abs() < 5, "without it the clock is the real one");
    }

    #[test]
    fn an_explicit_now_sets_the_clock_which_then_runs() {
        let at = Utc::now() - Duration::days(300);
        let mut w = World::default();
        w.start_clock_at(at, false);
        let first = w.now();
        assert!((first - at).num_seconds().abs() < 5, "{first} is not {at}");
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(w.now() > first, "it runs");
        w.start_clock_at(at, true);
        assert_eq!(w.now(), at);
    }
}

mod strict {
    use super::super::qapi::{Answer, Params, create_key, dispatch};
    use super::super::*;
    use serde_json::Value;

    fn world() -> (World, String) {
        let now = NaiveDateTime::parse_from_str("2026-11-29 12:00:00", "%Y-%m-%d %H:%M:%S").unwrap();
        let mut w = World { shops: vec![crate::generate::shop(1)], ..Default::default() };
        for o in crate::generate::orders(1, 1, "sandbox-1", 40, 5, now) {
            w.orders.insert((o.shop.clone(), o.order_no), o);
        }
        w.start_clock_at(schemas::time::jst_naive_to_utc(now), true);
        let p =
            Params(vec![("user_id".into(), "sandbox-seller-1".into()), ("pwd".into(), "sandbox-password-1".into())]);
        let now = w.now();
        let Answer { body, .. } = create_key(&mut w, "sandbox-api-key-1", &p, now).0;
        let key = serde_json::from_str::<Value>(&body).unwrap()["ResultObject"].as_str().unwrap().to_owned();
        (w, key)
    }

    fn call(w: &mut World, key: &str, method: &str, params: &[(&str, &str)]) -> Value {
        let p = Params(params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        let now = w.now();
        serde_json::from_str(&dispatch(w, method, key, &p, now).0.body).unwrap()
    }

    const V3: &str = "ShippingBasic.GetShippingInfo_v3";

    #[test]
    fn each_version_takes_its_own_names_and_a_date_condition() {
        let (mut w, key) = world();
        let v3 = [
            ("ShippingStatus", "0"),
            ("SearchStartDate", "20261120"),
            ("SearchEndDate", "20261129"),
            ("SearchCondition", "1"),
        ];
        assert_eq!(call(&mut w, &key, V3, &v3)["ResultCode"], 0);
        let v2_names = [
            ("ShippingStatus", "0"),
            ("search_Sdate", "20261120"),
            ("search_Edate", "20261129"),
            ("SearchCondition", "1"),
        ];
        assert_eq!(call(&mut w, &key, V3, &v2_names)["ResultCode"], -10002, "v2 date names on v3 are as if missing");
        let no_condition = &v3[..3];
        assert_eq!(
            call(&mut w, &key, V3, no_condition)["ResultCode"],
            -10001,
            "without a condition: refused, not guessed"
        );
        let v2 = [
            ("ShippingStat", "3"),
            ("search_Sdate", "20261120"),
            ("search_Edate", "20261129"),
            ("search_condition", "1"),
        ];
        assert_eq!(call(&mut w, &key, "ShippingBasic.GetShippingInfo_v2", &v2)["ResultCode"], 0);
        let v3_names = [
            ("ShippingStat", "3"),
            ("SearchStartDate", "20261120"),
            ("SearchEndDate", "20261129"),
            ("search_condition", "1"),
        ];
        assert_eq!(call(&mut w, &key, "ShippingBasic.GetShippingInfo_v2", &v3_names)["ResultCode"], -10002);
    }

    #[test]
    fn claims_need_a_claim_status_and_every_date_condition_is_honoured() {
        let (mut w, key) = world();
        let claims = "ShippingBasic.GetClaimInfo_V3";
        for blank in ["", "0"] {
            let p = [
                ("ClaimStat", blank),
                ("search_Sdate", "20261120"),
                ("search_Edate", "20261129"),
                ("search_condition", "1"),
            ];
            assert_eq!(call(&mut w, &key, claims, &p)["ResultCode"], -10001, "a blank ClaimStat is not 'every claim'");
        }
        // A ship-date window holds exactly the lines shipped in it.
        let day =
            w.orders.values().find(|o| o.status == 4 && !o.cancelled()).and_then(|o| o.shipping_date).unwrap().date();
        let (from, to) = (format!("{}000000", day.format("%Y%m%d")), format!("{}235959", day.format("%Y%m%d")));
        let p = [
            ("ShippingStatus", "4"),
            ("SearchStartDate", from.as_str()),
            ("SearchEndDate", to.as_str()),
            ("SearchCondition", "3"),
        ];
        let rows = call(&mut w, &key, V3, &p)["ResultObject"].as_array().cloned().unwrap_or_default();
        let shipped = |o: &&Order| o.status == 4 && !o.cancelled() && o.shipping_date.is_some_and(|s| s.date() == day);
        assert_eq!(rows.len(), w.orders.values().filter(shipped).count());
        assert!(!rows.is_empty());
        assert!(rows.iter().all(|r| r["ShippingDate"].as_str().unwrap().starts_with(&day.to_string())));
    }

    #[test]
    fn rows_list_their_whole_cart_and_a_denied_method_is_refused() {
        let (mut w, key) = world();
        let p = [
            ("ShippingStatus", "0"),
            ("SearchStartDate", "20261120"),
            ("SearchEndDate", "20261129"),
            ("SearchCondition", "1"),
        ];
        let rows = call(&mut w, &key, V3, &p)["ResultObject"].as_array().cloned().unwrap();
        for r in &rows {
            let own = r["OrderNo"].to_string();
            assert!(r["RelatedOrder"].as_str().unwrap().split(", ").any(|n| n == own), "{r}");
        }
        w.shops[0].denied_methods = vec!["ShippingBasic.GetClaimInfo_V3".into()];
        let p =
            [("ClaimStat", "1"), ("search_Sdate", "20261120"), ("search_Edate", "20261129"), ("search_condition", "2")];
        let answer = call(&mut w, &key, "shippingbasic.getclaiminfo_v3", &p);
        assert_eq!(answer["ResultCode"], -90003, "{answer}");
    }
}

mod writes {
    use super::super::qapi::{Params, create_key, dispatch};
    use super::super::*;
    use serde_json::{Value, json};

    /// A world at 2026-11-29 12:00 JST with one order per status 1..=5 (order numbers 1..=5).
    fn world() -> (World, String) {
        let now = NaiveDateTime::parse_from_str("2026-11-29 12:00:00", "%Y-%m-%d %H:%M:%S").unwrap();
        let mut w = World { shops: vec![crate::generate::shop(1)], ..Default::default() };
        let template = crate::generate::orders(1, 1, "sandbox-1", 5, 5, now).remove(0);
        for status in 1..=5u8 {
            let o =
                Order { order_no: u64::from(status), status, claim_status: 0, est_ship_date: None, ..template.clone() };
            w.orders.insert((o.shop.clone(), o.order_no), o);
        }
        w.start_clock_at(schemas::time::jst_naive_to_utc(now), true);
        let p =
            Params(vec![("user_id".into(), "sandbox-seller-1".into()), ("pwd".into(), "sandbox-password-1".into())]);
        let now = w.now();
        let body = create_key(&mut w, "sandbox-api-key-1", &p, now).0.body;
        let key = serde_json::from_str::<Value>(&body).unwrap()["ResultObject"].as_str().unwrap().to_owned();
        (w, key)
    }

    fn call(w: &mut World, key: &str, method: &str, params: &[(&str, &str)]) -> (i64, bool, Value) {
        let p = Params(params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        let now = w.now();
        let answer = dispatch(w, method, key, &p, now).0;
        let v: Value = serde_json::from_str(&answer.body).unwrap();
        (v["ResultCode"].as_i64().unwrap(), answer.changed, v["ResultObject"].clone())
    }

    const CHECK: &str = "ShippingBasic.SetSellerCheckYN_V2";
    const SEND: &str = "ShippingBasic.SetSendingInfo";

    #[test]
    fn a_ship_date_is_set_once_from_status_2_with_a_date_after_today() {
        let (mut w, key) = world();
        let set = |w: &mut World, no: &str, date: &str| {
            call(w, &key, CHECK, &[("OrderNo", no), ("EstShipDt", date), ("DelayType", "1")])
        };
        assert_eq!(set(&mut w, "2,3", "20261203").0, -10001, "one order number per call");
        assert_eq!(set(&mut w, "2", "").0, -10016, "a date is needed");
        assert_eq!(set(&mut w, "2", "20261129").0, -10018, "today is not after today");
        assert_eq!(set(&mut w, "2", "20270101").0, -10017, "beyond the maximum");
        assert_eq!(set(&mut w, "1", "20261203").0, -10013, "unpaid: not in 配送要請");
        assert_eq!(set(&mut w, "9", "20261203").0, -10004, "not this shop's order");
        let (code, changed, _) = set(&mut w, "2", "20261203");
        assert_eq!((code, changed), (0, true));
        let o = &w.orders[&("sandbox-1".to_owned(), 2)];
        assert_eq!((o.status, o.est_ship_date.map(|d| d.to_string())), (3, Some("2026-12-03".into())));
        assert_eq!(set(&mut w, "2", "20261204"), (-10012, false, Value::Null), "once: already confirmed");
        let missing_type = call(&mut w, &key, CHECK, &[("OrderNo", "2"), ("EstShipDt", "20261203")]);
        assert_eq!(missing_type.0, -10001, "DelayType is required: what Qoo10 does without it is not known");
    }

    #[test]
    fn tracking_moves_2_and_3_to_4_and_is_refused_after() {
        let (mut w, key) = world();
        let send = |w: &mut World, no: &str, corp: &str, t: &str| {
            call(w, &key, SEND, &[("OrderNo", no), ("ShippingCorp", corp), ("TrackingNo", t)])
        };
        assert_eq!(send(&mut w, "3", "", "1").0, -10002);
        assert_eq!(send(&mut w, "3", "佐川急便", "").0, -10003);
        assert_eq!(send(&mut w, "3", "佐川急便", &"1".repeat(51)).0, -10003, "50 characters at most");
        assert!(send(&mut w, "2", "佐川急便", "1111").1, "from 2");
        assert!(send(&mut w, "3", "佐川急便", "3333").1, "from 3");
        assert_eq!(w.orders[&("sandbox-1".to_owned(), 3)].status, 4);
        assert_eq!(send(&mut w, "3", "佐川急便", "3333"), (-10010, false, Value::Null), "again: update failed");
        assert_eq!(send(&mut w, "5", "佐川急便", "5555").0, -10010);
    }

    #[test]
    fn bulk_calls_answer_per_row_and_take_500_at_most() {
        let (mut w, key) = world();
        let rows = json!([{"OrderNo": 2, "EstShipDt": "20261203", "DelayType": 1}, {"OrderNo": 3, "EstShipDt": "20261203", "DelayType": 1}]);
        let (code, changed, object) =
            call(&mut w, &key, "ShippingBasic.SetSellerCheckYNBulk", &[("SendPlanDtInfoJson", &rows.to_string())]);
        assert_eq!((code, changed), (0, true));
        let codes: Vec<i64> = object.as_array().unwrap().iter().map(|r| r["result_cd"].as_i64().unwrap()).collect();
        assert_eq!(codes, vec![0, -10012]);
        let many = Value::Array(vec![json!({"OrderNo": 2}); 501]).to_string();
        assert_eq!(call(&mut w, &key, "ShippingBasic.SetSendingInfoBulk", &[("ShippingInfoJson", &many)]).0, -10011);
    }

    #[test]
    fn the_single_order_read_shows_what_a_write_did() {
        let (mut w, key) = world();
        call(&mut w, &key, CHECK, &[("OrderNo", "2"), ("EstShipDt", "20261203"), ("DelayType", "1")]);
        let (code, changed, rows) =
            call(&mut w, &key, "ShippingBasic.GetShippingAndClaimInfoByOrderNo_V2", &[("OrderNo", "2")]);
        assert_eq!((code, changed), (0, false));
        assert_eq!(rows[0]["shippingStatus"], json!("Seller confirm(3)"));
        assert_eq!(rows[0]["EstShippingDate"], json!("2026-12-03 00:00:00"));
        assert!(rows[0].get("Addr1").is_none(), "the single-order row has fewer fields");
        let unknown = call(&mut w, &key, "ShippingBasic.GetShippingAndClaimInfoByOrderNo_V2", &[("OrderNo", "77")]);
        assert_eq!(unknown, (0, false, Value::Null));
        let cancel = call(&mut w, &key, "Claim.SetCancelProcess", &[("ContrNo", "4"), ("CancelReason", "1")]);
        assert_eq!(cancel.0, -10004, "shipped: wrong order status");
        assert!(call(&mut w, &key, "Claim.SetCancelProcess", &[("ContrNo", "1")]).1);
    }
}
