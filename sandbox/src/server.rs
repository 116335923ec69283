//! The HTTP face of the sandbox: QAPI at `/GMKT.INC.Front.QAPIService/ebayjapan.qapi` (and the
//! `Giosis.qapi` alias) in both URL styles, plus a control API under `/_sandbox/`.
//!
//! Like QAPI, every QAPI answer is HTTP 200, whatever went wrong; only the body tells.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, Timelike, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::model::{Order, Shop};
use crate::render;

/// How long an issued certification key stays valid (Qoo10: one year).
const KEY_VALIDITY_DAYS: i64 = 365;

#[derive(Debug, Default)]
pub struct World {
    pub shops: Vec<Shop>,
    /// By (shop id, order number).
    pub orders: BTreeMap<(String, u64), Order>,
    /// Issued certification keys → (shop id, expiry).
    pub keys: HashMap<String, (String, DateTime<Utc>)>,
    pub requests: Vec<RequestLog>,
    pub seed: u64,
    /// Added to the clock: the sandbox's "now" (moved by `/_sandbox/advance`).
    pub clock_offset: Duration,
    /// `--frozen-clock`: the clock stands at this instant (plus `clock_offset`) instead of
    /// running with real time, so every run of a test sees the same world at each poll.
    pub frozen_at: Option<DateTime<Utc>>,
    /// Requests allowed per shop (and in total) in any one-second window; 0 = unlimited.
    pub limit_per_shop: f64,
    pub limit_global: f64,
    pub violations: u64,
    pub faults: Vec<Fault>,
}

impl World {
    pub fn now(&self) -> DateTime<Utc> {
        self.frozen_at.unwrap_or_else(Utc::now) + self.clock_offset
    }

    /// The clock as Qoo10 keeps its dates: JST wall-clock time in whole seconds (a call whose
    /// window ends at a second includes what happened within that second).
    pub fn now_jst(&self) -> NaiveDateTime {
        let t = self.now().with_timezone(&schemas::time::jst()).naive_local();
        t.with_nanosecond(0).unwrap_or(t)
    }

    /// Sets the clock to `at` (an explicit `--now`): from there it runs with real time, or stands
    /// still when `frozen`.
    pub fn start_clock_at(&mut self, at: DateTime<Utc>, frozen: bool) {
        if frozen {
            (self.frozen_at, self.clock_offset) = (Some(at), Duration::zero());
        } else {
            (self.frozen_at, self.clock_offset) = (None, at - Utc::now());
        }
    }
}

/// An injected fault: what the next matching requests get instead of a normal answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fault {
    /// `status` (HTTP `code`), `timeout` (no answer for `seconds`), `html`, `garbage`,
    /// `rate_limit` (HTTP 429 with Retry-After), `latency` (a normal answer after `ms`), or
    /// `expire_key` (the caller's certification key expires: QAPI answers -90004).
    pub kind: String,
    /// Only requests of this shop (by its keys); all shops when absent.
    #[serde(default)]
    pub shop: Option<String>,
    /// Only requests of this method (case-insensitive, e.g. `ShippingBasic.GetShippingInfo_v3`).
    #[serde(default)]
    pub method: Option<String>,
    /// How many requests it affects; unlimited when absent.
    #[serde(default)]
    pub count: Option<u32>,
    #[serde(default)]
    pub code: Option<u16>,
    #[serde(default)]
    pub seconds: Option<u64>,
    #[serde(default)]
    pub ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RequestLog {
    /// Milliseconds since the Unix epoch (real clock), when the request arrived.
    pub at_ms: i64,
    pub method: String,
    pub shop: Option<String>,
    /// QAPI result code answered (0 = success); `null` for routing errors and faults.
    pub code: Option<i64>,
    /// The request exceeded the sandbox's rate limit (answered 429).
    pub violation: bool,
    /// The fault injected into this answer, if any.
    pub fault: Option<String>,
}

pub type SharedWorld = Arc<Mutex<World>>;

pub fn router(world: SharedWorld) -> Router {
    Router::new()
        .route("/_sandbox/health", get(|| async { "ok" }))
        .route("/_sandbox/shops", get(list_shops).post(add_shop))
        .route("/_sandbox/orders", get(list_orders).put(put_orders).delete(delete_orders))
        .route("/_sandbox/requests", get(list_requests).delete(clear_requests))
        .route("/_sandbox/stats", get(stats))
        .route("/_sandbox/faults", get(list_faults).post(add_fault).delete(clear_faults))
        .route("/_sandbox/keys/expire", axum::routing::post(expire_keys))
        .route("/_sandbox/advance", axum::routing::post(advance))
        .route("/_sandbox/orders/{shop}/{order_no}", axum::routing::delete(delete_order))
        .route("/_sandbox/orders/{shop}/{order_no}/{action}", axum::routing::post(order_action))
        .fallback(qapi)
        .with_state(world)
}

// ---------------------------------------------------------------- QAPI

struct Answer {
    body: String,
    code: Option<i64>,
}

fn envelope(code: i64, msg: &str, object: Value) -> Answer {
    Answer { body: json!({"ResultCode": code, "ResultMsg": msg, "ResultObject": object}).to_string(), code: Some(code) }
}

fn gateway_error(code: i64, msg: &str) -> Answer {
    Answer { body: json!({"ErrorCode": code, "ErrorMsg": msg}).to_string(), code: Some(code) }
}

fn plain(text: String) -> Answer {
    Answer { body: text, code: None }
}

/// Request parameters from the query string and a form body, looked up without case.
struct Params(Vec<(String, String)>);

impl Params {
    fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

async fn qapi(State(world): State<SharedWorld>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
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
    // Decide under the lock; sleep (faults) only after it is released.
    let (answer, fault, violation) = {
        let mut w = world.lock().expect("world lock");
        let now = w.now();
        let caller = caller_shop(&w, &key);
        let violation = w.over_limit(caller.as_deref(), arrived.timestamp_millis());
        let fault = if violation { None } else { w.take_fault(caller.as_deref(), &method) };
        let (answer, shop) = match (&fault, violation) {
            (_, true) => (Answer { body: "Too Many Requests".into(), code: None }, caller.clone()),
            (Some(f), _) if f.kind == "expire_key" => {
                // The caller's certification key expires now: this and later calls with it get -90004.
                if let Some(k) = w.keys.get_mut(&key) {
                    k.1 = now;
                }
                (envelope(-90004, "Seller authorization key is expired. Use a new key.", Value::Null), caller.clone())
            }
            (Some(f), _) if f.kind != "latency" => (Answer { body: String::new(), code: None }, caller.clone()),
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
            violation,
            fault: fault.as_ref().map(|f| f.kind.clone()),
        });
        (answer, fault, violation)
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
            _ => {}
        }
    }
    ([(header::CONTENT_TYPE, "application/json; charset=utf-8")], answer.body).into_response()
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

fn dispatch(w: &mut World, method: &str, key: &str, p: &Params, now: DateTime<Utc>) -> (Answer, Option<String>) {
    let (class, name) = method.split_once('.').unwrap_or((method, ""));
    let lname = name.to_ascii_lowercase();
    match class.to_ascii_lowercase().as_str() {
        "certificationapi" if lname == "createcertificationkey" => create_key(w, key, p, now),
        "certificationapi" => (plain(format!("Can't find method Info {name}")), None),
        "shippingbasic" => {
            let known = ["getshippinginfo_v2", "getshippinginfo_v3", "getclaiminfo_v3"];
            if !known.contains(&lname.as_str()) {
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
            let answer = match lname.as_str() {
                "getshippinginfo_v2" => shipping_info(w, &shop, p, now, false),
                "getshippinginfo_v3" => shipping_info(w, &shop, p, now, true),
                _ => claim_info(w, &shop, p, now),
            };
            (answer, Some(shop))
        }
        _ => (plain(format!("Can't find service Name {class}")), None),
    }
}

fn create_key(w: &mut World, api_key: &str, p: &Params, now: DateTime<Utc>) -> (Answer, Option<String>) {
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

/// `GetShippingInfo_v2` / `_v3`. Each version takes its own parameter names only: a v2 name
/// sent to v3 (or the reverse) is as if it were missing.
fn shipping_info(w: &World, shop: &str, p: &Params, _now: DateTime<Utc>, v3: bool) -> Answer {
    let (start, end, status_name, condition_name) = if v3 {
        ("SearchStartDate", "SearchEndDate", "ShippingStatus", "SearchCondition")
    } else {
        ("search_Sdate", "search_Edate", "ShippingStat", "search_condition")
    };
    let (start, end) = match window(p, &[start], &[end]) {
        Ok(x) => x,
        Err(a) => return a,
    };
    let status_text = p.get(status_name).unwrap_or("").trim();
    let statuses: Vec<u8> = match status_text {
        "" | "0" if v3 => vec![1, 2, 3],
        t => match t.parse::<u8>() {
            Ok(s @ 1..=5) => vec![s],
            _ => return envelope(-10001, "ShippingStat Error", Value::Null),
        },
    };
    let condition = match condition(p, condition_name, 4) {
        Ok(c) => c,
        Err(a) => return a,
    };
    let seller = w.shops.iter().find(|s| s.id == shop).map(|s| s.user_id.clone()).unwrap_or_default();
    let in_shop: Vec<&Order> =
        w.orders.range((shop.to_owned(), 0)..=(shop.to_owned(), u64::MAX)).map(|(_, o)| o).collect();
    let rows: Vec<Value> = in_shop
        .iter()
        .filter(|o| statuses.contains(&o.status) && !o.cancelled())
        .filter(|o| date_for(o, condition).is_some_and(|d| d >= start && d <= end))
        .map(|o| {
            let siblings: Vec<u64> = in_shop.iter().filter(|x| x.pack_no == o.pack_no).map(|x| x.order_no).collect();
            if v3 { render::v3_row(o, &seller, &siblings) } else { render::v2_row(o, &seller, &siblings) }
        })
        .collect();
    // Qoo10 answers an empty result with `null`.
    envelope(0, "SUCCESS", if rows.is_empty() { Value::Null } else { Value::Array(rows) })
}

fn claim_info(w: &World, shop: &str, p: &Params, _now: DateTime<Utc>) -> Answer {
    let (start, end) = match window(p, &["search_Sdate"], &["search_Edate"]) {
        Ok(x) => x,
        Err(a) => return a,
    };
    // A blank ClaimStat may return every claim [open in the reference, §11.1]: refused here, so
    // that nothing comes to rely on it.
    let wanted: u8 = match p.get("ClaimStat").and_then(|s| s.trim().parse().ok()) {
        Some(c) if schemas::status::CLAIM_STATUS_CODES.contains(&c) => c,
        _ => return envelope(-10001, "ClaimStat Error", Value::Null),
    };
    let condition = match condition(p, "search_condition", 3) {
        Ok(c) => c,
        Err(a) => return a,
    };
    let rows: Vec<Value> = w
        .orders
        .range((shop.to_owned(), 0)..=(shop.to_owned(), u64::MAX))
        .map(|(_, o)| o)
        .filter(|o| o.claim_status == wanted)
        .filter(|o| {
            let d = match condition {
                2 => o.claim_request_date,
                3 => o.claim_done_date,
                _ => Some(o.order_date),
            };
            d.is_some_and(|d| d >= start && d <= end)
        })
        .map(render::claim_row)
        .collect();
    envelope(0, "SUCCESS", if rows.is_empty() { Value::Null } else { Value::Array(rows) })
}

// ---------------------------------------------------------------- control API

async fn list_shops(State(world): State<SharedWorld>) -> impl IntoResponse {
    axum::Json(world.lock().expect("world lock").shops.clone())
}

async fn add_shop(State(world): State<SharedWorld>, axum::Json(shop): axum::Json<Shop>) -> impl IntoResponse {
    let mut w = world.lock().expect("world lock");
    w.shops.retain(|s| s.id != shop.id);
    w.shops.push(shop);
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct ShopFilter {
    shop: Option<String>,
}

async fn list_orders(State(world): State<SharedWorld>, Query(f): Query<ShopFilter>) -> impl IntoResponse {
    let w = world.lock().expect("world lock");
    let orders: Vec<Order> =
        w.orders.values().filter(|o| f.shop.as_deref().is_none_or(|s| s == o.shop)).cloned().collect();
    axum::Json(orders)
}

/// Inserts or replaces orders by (shop, order number).
async fn put_orders(State(world): State<SharedWorld>, axum::Json(orders): axum::Json<Vec<Order>>) -> impl IntoResponse {
    let mut w = world.lock().expect("world lock");
    for o in orders {
        w.orders.insert((o.shop.clone(), o.order_no), o);
    }
    StatusCode::NO_CONTENT
}

async fn delete_orders(State(world): State<SharedWorld>, Query(f): Query<ShopFilter>) -> impl IntoResponse {
    let mut w = world.lock().expect("world lock");
    w.orders.retain(|(shop, _), _| f.shop.as_deref().is_some_and(|s| s != shop));
    StatusCode::NO_CONTENT
}

async fn list_requests(State(world): State<SharedWorld>) -> impl IntoResponse {
    axum::Json(world.lock().expect("world lock").requests.clone())
}

async fn clear_requests(State(world): State<SharedWorld>) -> impl IntoResponse {
    let mut w = world.lock().expect("world lock");
    w.requests.clear();
    w.violations = 0;
    StatusCode::NO_CONTENT
}

async fn stats(State(world): State<SharedWorld>) -> impl IntoResponse {
    let w = world.lock().expect("world lock");
    let mut per_second: HashMap<i64, u64> = HashMap::new();
    let mut per_shop_second: HashMap<(String, i64), u64> = HashMap::new();
    for r in w.requests.iter().filter(|r| !r.violation) {
        *per_second.entry(r.at_ms.div_euclid(1000)).or_default() += 1;
        if let Some(s) = &r.shop {
            *per_shop_second.entry((s.clone(), r.at_ms.div_euclid(1000))).or_default() += 1;
        }
    }
    axum::Json(json!({
        "requests": w.requests.len(),
        "violations": w.violations,
        "limit_per_shop": w.limit_per_shop,
        "limit_global": w.limit_global,
        "max_requests_in_a_second": per_second.values().max().copied().unwrap_or(0),
        "max_requests_of_one_shop_in_a_second": per_shop_second.values().max().copied().unwrap_or(0),
        "now": w.now().with_timezone(&schemas::time::jst()).format("%Y-%m-%d %H:%M:%S").to_string(),
    }))
}

async fn list_faults(State(world): State<SharedWorld>) -> impl IntoResponse {
    axum::Json(world.lock().expect("world lock").faults.clone())
}

async fn add_fault(State(world): State<SharedWorld>, axum::Json(f): axum::Json<Fault>) -> Response {
    let known = ["status", "timeout", "html", "garbage", "rate_limit", "latency", "expire_key"];
    if !known.contains(&f.kind.as_str()) {
        return (StatusCode::BAD_REQUEST, format!("kind must be one of {known:?}")).into_response();
    }
    world.lock().expect("world lock").faults.push(f);
    StatusCode::NO_CONTENT.into_response()
}

async fn clear_faults(State(world): State<SharedWorld>) -> impl IntoResponse {
    world.lock().expect("world lock").faults.clear();
    StatusCode::NO_CONTENT
}

/// Expires every certification key issued to a shop (or to all shops): the next call answers -90004.
async fn expire_keys(State(world): State<SharedWorld>, Query(f): Query<ShopFilter>) -> impl IntoResponse {
    let mut w = world.lock().expect("world lock");
    let now = w.now();
    for (shop, expires) in w.keys.values_mut() {
        if f.shop.as_deref().is_none_or(|s| s == shop) {
            *expires = now;
        }
    }
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct Advance {
    hours: i64,
}

/// Moves the sandbox clock forward and lets orders live: paid after an hour, a ship date a day
/// after payment (配送準備), shipped on the ship date, delivered two days later.
async fn advance(State(world): State<SharedWorld>, Query(a): Query<Advance>) -> impl IntoResponse {
    let mut w = world.lock().expect("world lock");
    let since = w.now_jst();
    w.clock_offset += Duration::hours(a.hours);
    let now = w.now_jst();
    for o in w.orders.values_mut() {
        crate::lifecycle::progress(o, since, now);
    }
    axum::Json(json!({"now": now.format("%Y-%m-%d %H:%M:%S").to_string()}))
}

async fn delete_order(
    State(world): State<SharedWorld>,
    axum::extract::Path((shop, order_no)): axum::extract::Path<(String, u64)>,
) -> impl IntoResponse {
    match world.lock().expect("world lock").orders.remove(&(shop, order_no)) {
        Some(_) => StatusCode::NO_CONTENT,
        None => StatusCode::NOT_FOUND,
    }
}

/// `pay`, `set_ship_date` {"date"}, `ship` {"carrier","tracking_no"}, `deliver`, `cancel`,
/// `claim` {"claim_status"}, `quantity` {"quantity"}: one step of an order's life, as a buyer,
/// the seller in QSM, or Qoo10 would take it.
async fn order_action(
    State(world): State<SharedWorld>,
    axum::extract::Path((shop, order_no, action)): axum::extract::Path<(String, u64, String)>,
    body: Bytes,
) -> Response {
    let args: Value = if body.is_empty() { json!({}) } else { serde_json::from_slice(&body).unwrap_or(json!({})) };
    let mut w = world.lock().expect("world lock");
    let now = w.now_jst();
    let Some(o) = w.orders.get_mut(&(shop, order_no)) else {
        return (StatusCode::NOT_FOUND, "no such order").into_response();
    };
    match crate::lifecycle::apply(o, &action, &args, now) {
        Ok(()) => axum::Json(o.clone()).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, e).into_response(),
    }
}

#[cfg(test)]
mod clock_tests {
    use super::*;

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

#[cfg(test)]
mod strict_tests {
    use super::*;

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
