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
use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, Utc};
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
}

#[derive(Debug, Clone, Serialize)]
pub struct RequestLog {
    /// Milliseconds since the Unix epoch.
    pub at_ms: i64,
    pub method: String,
    pub shop: Option<String>,
    /// QAPI result code answered (0 = success); `null` for routing errors.
    pub code: Option<i64>,
}

pub type SharedWorld = Arc<Mutex<World>>;

pub fn router(world: SharedWorld) -> Router {
    Router::new()
        .route("/_sandbox/health", get(|| async { "ok" }))
        .route("/_sandbox/shops", get(list_shops).post(add_shop))
        .route(
            "/_sandbox/orders",
            get(list_orders).put(put_orders).delete(delete_orders),
        )
        .route(
            "/_sandbox/requests",
            get(list_requests).delete(clear_requests),
        )
        .fallback(qapi)
        .with_state(world)
}

// ---------------------------------------------------------------- QAPI

struct Answer {
    body: String,
    code: Option<i64>,
}

fn envelope(code: i64, msg: &str, object: Value) -> Answer {
    Answer {
        body: json!({"ResultCode": code, "ResultMsg": msg, "ResultObject": object}).to_string(),
        code: Some(code),
    }
}

fn gateway_error(code: i64, msg: &str) -> Answer {
    Answer {
        body: json!({"ErrorCode": code, "ErrorMsg": msg}).to_string(),
        code: Some(code),
    }
}

fn plain(text: String) -> Answer {
    Answer {
        body: text,
        code: None,
    }
}

/// Request parameters from the query string and a form body, looked up without case.
struct Params(Vec<(String, String)>);

impl Params {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

async fn qapi(
    State(world): State<SharedWorld>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path();
    let gateway = [
        "/GMKT.INC.Front.QAPIService/ebayjapan.qapi",
        "/GMKT.INC.Front.QAPIService/Giosis.qapi",
    ]
    .iter()
    .find_map(|base| path.strip_prefix(base));
    let Some(rest) = gateway else {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    };
    let mut pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(uri.query().unwrap_or("")).unwrap_or_default();
    if !body.is_empty() {
        if let Ok(form) = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body) {
            pairs.extend(form);
        }
    }
    let params = Params(pairs);
    let method = rest.trim_start_matches('/').to_owned();
    let method = if method.is_empty() {
        params.get("method").unwrap_or("").to_owned()
    } else {
        method
    };
    let key = headers
        .get("GiosisCertificationKey")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| params.get("key").map(str::to_owned))
        .unwrap_or_default();

    let now = Utc::now();
    let mut w = world.lock().expect("world lock");
    let (answer, shop) = dispatch(&mut w, &method, &key, &params, now);
    w.requests.push(RequestLog {
        at_ms: now.timestamp_millis(),
        method: method.clone(),
        shop,
        code: answer.code,
    });
    drop(w);
    (
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        answer.body,
    )
        .into_response()
}

fn dispatch(
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
        "shippingbasic" => {
            let known = [
                "getshippinginfo_v2",
                "getshippinginfo_v3",
                "getclaiminfo_v3",
            ];
            if !known.contains(&lname.as_str()) {
                return (plain(format!("Can't find method Info {name}")), None);
            }
            let shop = match authorize(w, key, now) {
                Ok(s) => s,
                Err(a) => return (a, None),
            };
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

fn create_key(
    w: &mut World,
    api_key: &str,
    p: &Params,
    now: DateTime<Utc>,
) -> (Answer, Option<String>) {
    let Some(shop) = w.shops.iter().find(|s| s.api_key == api_key).cloned() else {
        return (gateway_error(-90001, "存在しないAPIです。"), None);
    };
    if p.get("user_id") != Some(shop.user_id.as_str())
        || p.get("pwd") != Some(shop.password.as_str())
    {
        return (
            envelope(-10001, "Not exists seller info", Value::Null),
            Some(shop.id),
        );
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!(
        "{}:{}:{}",
        w.seed,
        shop.id,
        now.timestamp_nanos_opt().unwrap_or(0)
    ));
    let hex = hex::encode(&digest[..24]);
    let sak = format!("S4ndb0x_g_1_{}_g_3_{}", &hex[..20], &hex[20..]);
    w.keys.insert(
        sak.clone(),
        (shop.id.clone(), now + Duration::days(KEY_VALIDITY_DAYS)),
    );
    (envelope(0, "成功", Value::String(sak)), Some(shop.id))
}

fn authorize(w: &World, key: &str, now: DateTime<Utc>) -> Result<String, Answer> {
    match w.keys.get(key) {
        None => Err(gateway_error(-90001, "存在しないAPIです。")),
        Some((_, expires)) if *expires <= now => Err(envelope(
            -90004,
            "Seller authorization key is expired. Use a new key.",
            Value::Null,
        )),
        Some((shop, _)) => Ok(shop.clone()),
    }
}

/// `yyyyMMdd` (a whole day) or `yyyyMMddHHmmss`; `end` picks the day's last second.
fn parse_search_date(text: &str, end: bool) -> Option<NaiveDateTime> {
    let t = text.trim();
    match t.len() {
        8 => {
            let d = NaiveDate::parse_from_str(t, "%Y%m%d").ok()?;
            Some(if end {
                d.and_hms_opt(23, 59, 59)?
            } else {
                d.and_hms_opt(0, 0, 0)?
            })
        }
        14 => NaiveDateTime::parse_from_str(t, "%Y%m%d%H%M%S").ok(),
        _ => None,
    }
}

/// The search window, or the QAPI error answer.
fn window(
    p: &Params,
    start: &[&str],
    end: &[&str],
) -> Result<(NaiveDateTime, NaiveDateTime), Answer> {
    let find = |names: &[&str]| names.iter().find_map(|n| p.get(n)).unwrap_or("");
    let (s, e) = (find(start), find(end));
    let (Some(s), Some(e)) = (parse_search_date(s, false), parse_search_date(e, true)) else {
        return Err(envelope(-10002, "Search Date Error", Value::Null));
    };
    if s > e {
        return Err(envelope(-10002, "Search Date Error", Value::Null));
    }
    if e - s > Duration::days(90) {
        return Err(envelope(
            -10003,
            "Searching period exceeds to 90 days.",
            Value::Null,
        ));
    }
    Ok((s, e))
}

fn date_for(o: &Order, condition: &str) -> Option<NaiveDateTime> {
    match condition {
        "2" => o.payment_date,
        "3" => o.shipping_date,
        "4" => o.delivered_date,
        _ => Some(o.order_date),
    }
}

fn shipping_info(w: &World, shop: &str, p: &Params, _now: DateTime<Utc>, v3: bool) -> Answer {
    let (start, end) = if v3 {
        match window(
            p,
            &["SearchStartDate", "search_Sdate"],
            &["SearchEndDate", "search_Edate"],
        ) {
            Ok(x) => x,
            Err(a) => return a,
        }
    } else {
        match window(p, &["search_Sdate"], &["search_Edate"]) {
            Ok(x) => x,
            Err(a) => return a,
        }
    };
    let status_text = if v3 {
        p.get("ShippingStatus")
    } else {
        p.get("ShippingStat")
    }
    .unwrap_or("")
    .trim();
    let statuses: Vec<u8> = match status_text {
        "" | "0" if v3 => vec![1, 2, 3],
        t => match t.parse::<u8>() {
            Ok(s @ 1..=5) => vec![s],
            _ => return envelope(-10001, "ShippingStat Error", Value::Null),
        },
    };
    let condition = if v3 {
        p.get("SearchCondition")
    } else {
        p.get("search_condition")
    }
    .unwrap_or("1")
    .trim()
    .to_owned();
    let seller = w
        .shops
        .iter()
        .find(|s| s.id == shop)
        .map(|s| s.user_id.clone())
        .unwrap_or_default();
    let in_shop: Vec<&Order> = w
        .orders
        .range((shop.to_owned(), 0)..=(shop.to_owned(), u64::MAX))
        .map(|(_, o)| o)
        .collect();
    let rows: Vec<Value> = in_shop
        .iter()
        .filter(|o| statuses.contains(&o.status) && !o.cancelled())
        .filter(|o| date_for(o, &condition).is_some_and(|d| d >= start && d <= end))
        .map(|o| {
            let siblings: Vec<u64> = in_shop
                .iter()
                .filter(|x| x.pack_no == o.pack_no)
                .map(|x| x.order_no)
                .collect();
            if v3 {
                render::v3_row(o, &seller, &siblings)
            } else {
                render::v2_row(o, &seller, &siblings)
            }
        })
        .collect();
    // Qoo10 answers an empty result with `null`.
    envelope(
        0,
        "SUCCESS",
        if rows.is_empty() {
            Value::Null
        } else {
            Value::Array(rows)
        },
    )
}

fn claim_info(w: &World, shop: &str, p: &Params, _now: DateTime<Utc>) -> Answer {
    let (start, end) = match window(p, &["search_Sdate"], &["search_Edate"]) {
        Ok(x) => x,
        Err(a) => return a,
    };
    let wanted: Option<u8> = p
        .get("ClaimStat")
        .and_then(|s| s.trim().parse().ok())
        .filter(|s| *s != 0);
    let condition = p.get("search_condition").unwrap_or("1").trim().to_owned();
    let rows: Vec<Value> = w
        .orders
        .range((shop.to_owned(), 0)..=(shop.to_owned(), u64::MAX))
        .map(|(_, o)| o)
        .filter(|o| o.claim_status != 0 && wanted.is_none_or(|c| c == o.claim_status))
        .filter(|o| {
            let d = match condition.as_str() {
                "2" => o.claim_request_date,
                "3" => o.claim_done_date,
                _ => Some(o.order_date),
            };
            d.is_some_and(|d| d >= start && d <= end)
        })
        .map(render::claim_row)
        .collect();
    envelope(
        0,
        "SUCCESS",
        if rows.is_empty() {
            Value::Null
        } else {
            Value::Array(rows)
        },
    )
}

// ---------------------------------------------------------------- control API

async fn list_shops(State(world): State<SharedWorld>) -> impl IntoResponse {
    axum::Json(world.lock().expect("world lock").shops.clone())
}

async fn add_shop(
    State(world): State<SharedWorld>,
    axum::Json(shop): axum::Json<Shop>,
) -> impl IntoResponse {
    let mut w = world.lock().expect("world lock");
    w.shops.retain(|s| s.id != shop.id);
    w.shops.push(shop);
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct ShopFilter {
    shop: Option<String>,
}

async fn list_orders(
    State(world): State<SharedWorld>,
    Query(f): Query<ShopFilter>,
) -> impl IntoResponse {
    let w = world.lock().expect("world lock");
    let orders: Vec<Order> = w
        .orders
        .values()
        .filter(|o| f.shop.as_deref().is_none_or(|s| s == o.shop))
        .cloned()
        .collect();
    axum::Json(orders)
}

/// Inserts or replaces orders by (shop, order number).
async fn put_orders(
    State(world): State<SharedWorld>,
    axum::Json(orders): axum::Json<Vec<Order>>,
) -> impl IntoResponse {
    let mut w = world.lock().expect("world lock");
    for o in orders {
        w.orders.insert((o.shop.clone(), o.order_no), o);
    }
    StatusCode::NO_CONTENT
}

async fn delete_orders(
    State(world): State<SharedWorld>,
    Query(f): Query<ShopFilter>,
) -> impl IntoResponse {
    let mut w = world.lock().expect("world lock");
    w.orders
        .retain(|(shop, _), _| f.shop.as_deref().is_some_and(|s| s != shop));
    StatusCode::NO_CONTENT
}

async fn list_requests(State(world): State<SharedWorld>) -> impl IntoResponse {
    axum::Json(world.lock().expect("world lock").requests.clone())
}

async fn clear_requests(State(world): State<SharedWorld>) -> impl IntoResponse {
    world.lock().expect("world lock").requests.clear();
    StatusCode::NO_CONTENT
}
