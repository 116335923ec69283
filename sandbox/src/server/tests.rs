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
