//! QAPI itself: authentication, the call's parameters checked as strictly as Qoo10 checks them,
//! faults and rate limits applied, the world's orders rendered in QAPI's shapes.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, Utc};
use serde_json::{Value, json};

use super::{Fault, RequestLog, SharedWorld, World, writes};
use crate::model::Order;
use crate::render;

/// How long an issued certification key stays valid (Qoo10: one year).
const KEY_VALIDITY_DAYS: i64 = 365;

pub(super) struct Answer {
    pub(super) body: String,
    pub(super) code: Option<i64>,
    /// The call changed an order (a write that succeeded, for at least one row).
    pub(super) changed: bool,
}

pub(super) fn envelope(code: i64, msg: &str, object: Value) -> Answer {
    let body = json!({"ResultCode": code, "ResultMsg": msg, "ResultObject": object}).to_string();
    Answer { body, code: Some(code), changed: false }
}

fn gateway_error(code: i64, msg: &str) -> Answer {
    Answer { body: json!({"ErrorCode": code, "ErrorMsg": msg}).to_string(), code: Some(code), changed: false }
}

fn plain(text: String) -> Answer {
    Answer { body: text, code: None, changed: false }
}

/// Request parameters from the query string and a form body, looked up without case.
pub(super) struct Params(pub(super) Vec<(String, String)>);

impl Params {
    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

pub(super) async fn qapi(State(world): State<SharedWorld>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path();
    let gateway = ["/GMKT.INC.Front.QAPIService/ebayjapan.qapi", "/GMKT.INC.Front.QAPIService/Giosis.qapi"]
        .iter()
        .find_map(|base| path.strip_prefix(base));
    let Some(rest) = gateway else {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    };
    let mut pairs: Vec<(String, String)> = serde_urlencoded::from_str(uri.query().unwrap_or("")).unwrap_or_default();
    if !body.is_empty()
        && let Ok(form) = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body)
    {
        pairs.extend(form);
    }
    let params = Params(pairs);
    let method = rest.trim_start_matches('/').to_owned();
    let method = if method.is_empty() { params.get("method").unwrap_or("").to_owned() } else { method };
    let key = headers
        .get("GiosisCertificationKey")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| params.get("key").map(str::to_owned))
        .unwrap_or_default();

    let arrived = Utc::now();
    let order_no = params.get("OrderNo").and_then(|n| n.trim().parse().ok());
    let key_print = {
        use sha2::Digest;
        hex::encode(&sha2::Sha256::digest(key.as_bytes())[..6])
    };
    // Decide under the lock; sleep (faults) only after it is released.
    let (answer, fault, violation, logged) = {
        let mut w = world.lock().expect("world lock");
        let now = w.now();
        let caller = caller_shop(&w, &key);
        let violation = w.over_limit(caller.as_deref(), arrived.timestamp_millis());
        let fault = if violation { None } else { w.take_fault(caller.as_deref(), &method) };
        let (answer, shop) = match (&fault, violation) {
            (_, true) => (plain("Too Many Requests".into()), caller.clone()),
            (Some(f), _) if f.kind == "expire_key" => {
                // The caller's certification key expires now: this and later calls with it get -90004.
                if let Some(k) = w.keys.get_mut(&key) {
                    k.1 = now;
                }
                (envelope(-90004, "Seller authorization key is expired. Use a new key.", Value::Null), caller.clone())
            }
            // A write that times out has made its change first: the answer is what is lost.
            (Some(f), _) if f.kind == "timeout" && writes::is_write(&method.to_ascii_lowercase()) => {
                dispatch(&mut w, &method, &key, &params, now)
            }
            // Applied later, below; logged now as what the caller sees: no answer.
            (Some(f), _) if f.kind == "late_commit" => (Answer { code: None, ..plain(String::new()) }, caller.clone()),
            (Some(f), _) if f.kind != "latency" => (plain(String::new()), caller.clone()),
            _ => dispatch(&mut w, &method, &key, &params, now),
        };
        if violation {
            w.violations += 1;
        }
        w.requests.push(RequestLog {
            at_ms: arrived.timestamp_millis(),
            method: method.clone(),
            shop,
            code: answer.code,
            changed: answer.changed,
            violation,
            fault: fault.as_ref().map(|f| f.kind.clone()),
            order_no,
            key: key_print,
        });
        (answer, fault, violation, w.requests.len() - 1)
    };
    if violation {
        return (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, "1")], answer.body).into_response();
    }
    if let Some(f) = fault {
        match f.kind.as_str() {
            "status" => {
                let code = StatusCode::from_u16(f.code.unwrap_or(503)).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
                return (code, "<html><body><h1>Service Unavailable</h1></body></html>").into_response();
            }
            "timeout" => {
                tokio::time::sleep(std::time::Duration::from_secs(f.seconds.unwrap_or(60))).await;
                return (StatusCode::GATEWAY_TIMEOUT, "").into_response();
            }
            "html" => {
                return (
                    [(header::CONTENT_TYPE, "text/html")],
                    "<!DOCTYPE html><html><body>メンテナンス中です</body></html>",
                )
                    .into_response();
            }
            "garbage" => {
                return ([(header::CONTENT_TYPE, "application/json")], vec![0xde, 0xad, b'{', 0xbe, 0xef])
                    .into_response();
            }
            "rate_limit" => {
                let after = f.seconds.unwrap_or(1).to_string();
                return (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, after)], "").into_response();
            }
            "latency" => tokio::time::sleep(std::time::Duration::from_millis(f.ms.unwrap_or(50))).await,
            "late_commit" => {
                let later = std::time::Duration::from_millis(f.ms.unwrap_or(5_000));
                tokio::spawn(commit_late(world, later, logged, method, key, params));
                tokio::time::sleep(std::time::Duration::from_secs(f.seconds.unwrap_or(60))).await;
                return (StatusCode::GATEWAY_TIMEOUT, "").into_response();
            }
            _ => {}
        }
    }
    ([(header::CONTENT_TYPE, "application/json; charset=utf-8")], answer.body).into_response()
}

/// The write of a `late_commit` fault, made `after` its arrival: its log entry (`logged`) then
/// says what it did.
async fn commit_late(
    world: SharedWorld,
    after: std::time::Duration,
    logged: usize,
    method: String,
    key: String,
    params: Params,
) {
    tokio::time::sleep(after).await;
    let mut w = world.lock().expect("world lock");
    let now = w.now();
    let (answer, _) = dispatch(&mut w, &method, &key, &params, now);
    if let Some(entry) = w.requests.get_mut(logged).filter(|e| e.method == method) {
        (entry.code, entry.changed) = (answer.code, answer.changed);
    }
}

/// The shop a request speaks for: by its certification key, or its API key.
fn caller_shop(w: &World, key: &str) -> Option<String> {
    if let Some((shop, _)) = w.keys.get(key) {
        return Some(shop.clone());
    }
    w.shops.iter().find(|s| s.api_key == key).map(|s| s.id.clone())
}

impl World {
    /// Would this request exceed a limit in the one-second window ending now? Requests already
    /// refused do not count.
    fn over_limit(&self, shop: Option<&str>, at_ms: i64) -> bool {
        let window = self.requests.iter().rev().take_while(|r| r.at_ms > at_ms - 1000).filter(|r| !r.violation);
        let (mut global, mut own) = (0u64, 0u64);
        for r in window {
            global += 1;
            if shop.is_some() && r.shop.as_deref() == shop {
                own += 1;
            }
        }
        (self.limit_global > 0.0 && global as f64 >= self.limit_global)
            || (self.limit_per_shop > 0.0 && shop.is_some() && own as f64 >= self.limit_per_shop)
    }

    fn take_fault(&mut self, shop: Option<&str>, method: &str) -> Option<Fault> {
        let i = self.faults.iter().position(|f| {
            f.shop.as_deref().is_none_or(|s| Some(s) == shop)
                && f.method.as_deref().is_none_or(|m| m.eq_ignore_ascii_case(method))
                && f.count != Some(0)
        })?;
        let f = &mut self.faults[i];
        if let Some(c) = f.count.as_mut() {
            *c -= 1;
        }
        let taken = f.clone();
        if self.faults[i].count == Some(0) {
            self.faults.remove(i);
        }
        Some(taken)
    }
}

pub(super) fn dispatch(
    w: &mut World,
    method: &str,
    key: &str,
    p: &Params,
    now: DateTime<Utc>,
) -> (Answer, Option<String>) {
    let (class, name) = method.split_once('.').unwrap_or((method, ""));
    let lname = name.to_ascii_lowercase();
    match class.to_ascii_lowercase().as_str() {
        "certificationapi" if lname == "createcertificationkey" => create_key(w, key, p, now),
        "certificationapi" => (plain(format!("Can't find method Info {name}")), None),
        "shippingbasic" | "claim" => {
            const READS: [&str; 4] =
                ["getshippinginfo_v2", "getshippinginfo_v3", "getclaiminfo_v3", "getshippingandclaiminfobyorderno_v2"];
            let known = READS.contains(&lname.as_str()) || writes::is_write(&method.to_ascii_lowercase());
            if !known || (class.eq_ignore_ascii_case("claim") != (lname == "setcancelprocess")) {
                return (plain(format!("Can't find method Info {name}")), None);
            }
            let shop = match authorize(w, key, now) {
                Ok(s) => s,
                Err(a) => return (a, None),
            };
            let denied = w
                .shops
                .iter()
                .find(|s| s.id == shop)
                .is_some_and(|s| s.denied_methods.iter().any(|m| m.eq_ignore_ascii_case(method)));
            if denied {
                return (envelope(-90003, "You are not authorized for this.", Value::Null), Some(shop));
            }
            (method_answer(w, &shop, &lname, p, now), Some(shop))
        }
        _ => (plain(format!("Can't find service Name {class}")), None),
    }
}

fn method_answer(w: &mut World, shop: &str, lname: &str, p: &Params, now: DateTime<Utc>) -> Answer {
    match lname {
        "getshippinginfo_v2" => shipping_info(w, shop, p, now, false),
        "getshippinginfo_v3" => shipping_info(w, shop, p, now, true),
        "getclaiminfo_v3" => claim_info(w, shop, p, now),
        "getshippingandclaiminfobyorderno_v2" => writes::by_order_no(w, shop, p),
        "setsellercheckyn_v2" => writes::set_seller_check(w, shop, p),
        "setsellercheckynbulk" => writes::set_seller_check_bulk(w, shop, p),
        "setsendinginfo" => writes::set_sending_info(w, shop, p),
        "setsendinginfobulk" => writes::set_sending_info_bulk(w, shop, p),
        _ => writes::set_cancel_process(w, shop, p),
    }
}

pub(super) fn create_key(w: &mut World, api_key: &str, p: &Params, now: DateTime<Utc>) -> (Answer, Option<String>) {
    let Some(shop) = w.shops.iter().find(|s| s.api_key == api_key).cloned() else {
        return (gateway_error(-90001, "存在しないAPIです。"), None);
    };
    if p.get("user_id") != Some(shop.user_id.as_str()) || p.get("pwd") != Some(shop.password.as_str()) {
        return (envelope(-10001, "Not exists seller info", Value::Null), Some(shop.id));
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("{}:{}:{}", w.seed, shop.id, now.timestamp_nanos_opt().unwrap_or(0)));
    let hex = hex::encode(&digest[..24]);
    let sak = format!("S4ndb0x_g_1_{}_g_3_{}", &hex[..20], &hex[20..]);
    w.keys.insert(sak.clone(), (shop.id.clone(), now + Duration::days(KEY_VALIDITY_DAYS)));
    (envelope(0, "成功", Value::String(sak)), Some(shop.id))
}

fn authorize(w: &World, key: &str, now: DateTime<Utc>) -> Result<String, Answer> {
    match w.keys.get(key) {
        None => Err(gateway_error(-90001, "存在しないAPIです。")),
        Some((_, expires)) if *expires <= now => {
            Err(envelope(-90004, "Seller authorization key is expired. Use a new key.", Value::Null))
        }
        Some((shop, _)) => Ok(shop.clone()),
    }
}

/// `yyyyMMdd` (a whole day) or `yyyyMMddHHmmss`; `end` picks the day's last second.
fn parse_search_date(text: &str, end: bool) -> Option<NaiveDateTime> {
    let t = text.trim();
    match t.len() {
        8 => {
            let d = NaiveDate::parse_from_str(t, "%Y%m%d").ok()?;
            Some(if end { d.and_hms_opt(23, 59, 59)? } else { d.and_hms_opt(0, 0, 0)? })
        }
        14 => NaiveDateTime::parse_from_str(t, "%Y%m%d%H%M%S").ok(),
        _ => None,
    }
}

/// The search window, or the QAPI error answer.
fn window(p: &Params, start: &[&str], end: &[&str]) -> Result<(NaiveDateTime, NaiveDateTime), Answer> {
    let find = |names: &[&str]| names.iter().find_map(|n| p.get(n)).unwrap_or("");
    let (s, e) = (find(start), find(end));
    let (Some(s), Some(e)) = (parse_search_date(s, false), parse_search_date(e, true)) else {
        return Err(envelope(-10002, "Search Date Error", Value::Null));
    };
    if s > e {
        return Err(envelope(-10002, "Search Date Error", Value::Null));
    }
    if e - s > Duration::days(90) {
        return Err(envelope(-10003, "Searching period exceeds to 90 days.", Value::Null));
    }
    Ok((s, e))
}

/// The date a shipping call's `search_condition` is about (1 order, 2 payment, 3 ship,
/// 4 delivered date).
fn date_for(o: &Order, condition: u8) -> Option<NaiveDateTime> {
    match condition {
        2 => o.payment_date,
        3 => o.shipping_date,
        4 => o.delivered_date,
        _ => Some(o.order_date),
    }
}

/// The date condition of a call, `1..=max`. A missing or unknown one is refused: what QAPI does
/// without it is not known (the reference, §3.1), so the sandbox never guesses in a caller's favour.
fn condition(p: &Params, name: &str, max: u8) -> Result<u8, Answer> {
    match p.get(name).map(str::trim).and_then(|t| t.parse::<u8>().ok()) {
        Some(c) if (1..=max).contains(&c) => Ok(c),
        _ => Err(envelope(-10001, &format!("{name} Error"), Value::Null)),
    }
}

/// What a read asks for, once its parameters passed QAPI's checks: the window, the statuses
/// (shipping statuses, or the one claim status) and the date condition.
pub(super) struct ReadQuery {
    start: NaiveDateTime,
    end: NaiveDateTime,
    statuses: Vec<u8>,
    condition: u8,
}

/// The parameters of `GetShippingInfo_v2` / `_v3`. Each version takes its own parameter names
/// only: a v2 name sent to v3 (or the reverse) is as if it were missing.
fn shipping_query(p: &Params, v3: bool) -> Result<ReadQuery, Answer> {
    let (start, end, status_name, condition_name) = if v3 {
        ("SearchStartDate", "SearchEndDate", "ShippingStatus", "SearchCondition")
    } else {
        ("search_Sdate", "search_Edate", "ShippingStat", "search_condition")
    };
    let (start, end) = window(p, &[start], &[end])?;
    let statuses: Vec<u8> = match p.get(status_name).unwrap_or("").trim() {
        "" | "0" if v3 => vec![1, 2, 3],
        t => match t.parse::<u8>() {
            Ok(s @ 1..=5) => vec![s],
            _ => return Err(envelope(-10001, "ShippingStat Error", Value::Null)),
        },
    };
    Ok(ReadQuery { start, end, statuses, condition: condition(p, condition_name, 4)? })
}

/// The parameters of `GetClaimInfo_V3`. A blank ClaimStat may return every claim [open in the
/// reference, §11.1]: refused here, so that nothing comes to rely on it.
fn claim_query(p: &Params) -> Result<ReadQuery, Answer> {
    let (start, end) = window(p, &["search_Sdate"], &["search_Edate"])?;
    let wanted: u8 = match p.get("ClaimStat").and_then(|s| s.trim().parse().ok()) {
        Some(c) if schemas::status::CLAIM_STATUS_CODES.contains(&c) => c,
        _ => return Err(envelope(-10001, "ClaimStat Error", Value::Null)),
    };
    Ok(ReadQuery { start, end, statuses: vec![wanted], condition: condition(p, "search_condition", 3)? })
}

/// The checks the server makes of a read's parameters (window, 90-day limit, statuses, date
/// condition, each version's names), before it looks at any order: `Err((ResultCode,
/// ResultMsg))` where QAPI would refuse the call. Tests hold the fetcher's planner to this very
/// function, so the two cannot drift.
pub fn check_read(method: &str, params: &[(&str, String)]) -> Result<(), (i64, String)> {
    let p = Params(params.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect());
    let checked = match method.to_ascii_lowercase().as_str() {
        "shippingbasic.getshippinginfo_v2" => shipping_query(&p, false).map(drop),
        "shippingbasic.getshippinginfo_v3" => shipping_query(&p, true).map(drop),
        "shippingbasic.getclaiminfo_v3" => claim_query(&p).map(drop),
        _ => return Err((-1, format!("not a read the sandbox checks: {method}"))),
    };
    checked.map_err(|a| {
        let msg = serde_json::from_str::<Value>(&a.body).ok().and_then(|v| v["ResultMsg"].as_str().map(str::to_owned));
        (a.code.unwrap_or(-1), msg.unwrap_or(a.body))
    })
}

fn shipping_info(w: &World, shop: &str, p: &Params, _now: DateTime<Utc>, v3: bool) -> Answer {
    let q = match shipping_query(p, v3) {
        Ok(q) => q,
        Err(a) => return a,
    };
    let seller = w.shops.iter().find(|s| s.id == shop).map(|s| s.user_id.clone()).unwrap_or_default();
    let in_shop: Vec<&Order> =
        w.orders.range((shop.to_owned(), 0)..=(shop.to_owned(), u64::MAX)).map(|(_, o)| o).collect();
    let rows: Vec<Value> = in_shop
        .iter()
        .filter(|o| q.statuses.contains(&o.status) && !o.cancelled())
        .filter(|o| date_for(o, q.condition).is_some_and(|d| d >= q.start && d <= q.end))
        .map(|o| {
            let siblings: Vec<u64> = in_shop.iter().filter(|x| x.pack_no == o.pack_no).map(|x| x.order_no).collect();
            if v3 { render::v3_row(o, &seller, &siblings) } else { render::v2_row(o, &seller, &siblings) }
        })
        .collect();
    // Qoo10 answers an empty result with `null`.
    envelope(0, "SUCCESS", if rows.is_empty() { Value::Null } else { Value::Array(rows) })
}

fn claim_info(w: &World, shop: &str, p: &Params, _now: DateTime<Utc>) -> Answer {
    let q = match claim_query(p) {
        Ok(q) => q,
        Err(a) => return a,
    };
    let rows: Vec<Value> = w
        .orders
        .range((shop.to_owned(), 0)..=(shop.to_owned(), u64::MAX))
        .map(|(_, o)| o)
        .filter(|o| q.statuses.contains(&o.claim_status))
        .filter(|o| {
            let d = match q.condition {
                2 => o.claim_request_date,
                3 => o.claim_done_date,
                _ => Some(o.order_date),
            };
            d.is_some_and(|d| d >= q.start && d <= q.end)
        })
        .map(render::claim_row)
        .collect();
    envelope(0, "SUCCESS", if rows.is_empty() { Value::Null } else { Value::Array(rows) })
}
