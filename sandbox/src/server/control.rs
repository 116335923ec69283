//! The control API under `/_sandbox/`: what tests and demos use to shape the world (shops,
//! orders, faults, the clock) and to read what the fetcher did (requests, stats).

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::Duration;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Fault, SharedWorld};
use crate::model::{Order, Shop};

pub(super) async fn list_shops(State(world): State<SharedWorld>) -> impl IntoResponse {
    axum::Json(world.lock().expect("world lock").shops.clone())
}

pub(super) async fn add_shop(
    State(world): State<SharedWorld>,
    axum::Json(shop): axum::Json<Shop>,
) -> impl IntoResponse {
    let mut w = world.lock().expect("world lock");
    w.shops.retain(|s| s.id != shop.id);
    w.shops.push(shop);
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
pub(super) struct ShopFilter {
    shop: Option<String>,
}

pub(super) async fn list_orders(State(world): State<SharedWorld>, Query(f): Query<ShopFilter>) -> impl IntoResponse {
    let w = world.lock().expect("world lock");
    let orders: Vec<Order> =
        w.orders.values().filter(|o| f.shop.as_deref().is_none_or(|s| s == o.shop)).cloned().collect();
    axum::Json(orders)
}

/// Inserts or replaces orders by (shop, order number).
pub(super) async fn put_orders(
    State(world): State<SharedWorld>,
    axum::Json(orders): axum::Json<Vec<Order>>,
) -> impl IntoResponse {
    let mut w = world.lock().expect("world lock");
    for o in orders {
        w.orders.insert((o.shop.clone(), o.order_no), o);
    }
    StatusCode::NO_CONTENT
}

pub(super) async fn delete_orders(State(world): State<SharedWorld>, Query(f): Query<ShopFilter>) -> impl IntoResponse {
    let mut w = world.lock().expect("world lock");
    w.orders.retain(|(shop, _), _| f.shop.as_deref().is_some_and(|s| s != shop));
    StatusCode::NO_CONTENT
}

pub(super) async fn list_requests(State(world): State<SharedWorld>) -> impl IntoResponse {
    axum::Json(world.lock().expect("world lock").requests.clone())
}

pub(super) async fn clear_requests(State(world): State<SharedWorld>) -> impl IntoResponse {
    let mut w = world.lock().expect("world lock");
    w.requests.clear();
    w.violations = 0;
    StatusCode::NO_CONTENT
}

pub(super) async fn stats(State(world): State<SharedWorld>) -> impl IntoResponse {
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

pub(super) async fn list_faults(State(world): State<SharedWorld>) -> impl IntoResponse {
    axum::Json(world.lock().expect("world lock").faults.clone())
}

pub(super) async fn add_fault(State(world): State<SharedWorld>, axum::Json(f): axum::Json<Fault>) -> Response {
    let known = ["status", "timeout", "html", "garbage", "rate_limit", "latency", "expire_key", "late_commit"];
    if !known.contains(&f.kind.as_str()) {
        return (StatusCode::BAD_REQUEST, format!("kind must be one of {known:?}")).into_response();
    }
    world.lock().expect("world lock").faults.push(f);
    StatusCode::NO_CONTENT.into_response()
}

pub(super) async fn clear_faults(State(world): State<SharedWorld>) -> impl IntoResponse {
    world.lock().expect("world lock").faults.clear();
    StatusCode::NO_CONTENT
}

/// Expires every certification key issued to a shop (or to all shops): the next call answers -90004.
/// The certification keys issued so far (tests scan for them: a key is a secret like the password).
pub(super) async fn list_keys(State(world): State<SharedWorld>, Query(f): Query<ShopFilter>) -> impl IntoResponse {
    let w = world.lock().expect("world lock");
    let keys: Vec<Value> = w
        .keys
        .iter()
        .filter(|(_, (shop, _))| f.shop.as_deref().is_none_or(|s| s == shop))
        .map(|(key, (shop, expires))| json!({"key": key, "shop": shop, "expires": expires.to_rfc3339()}))
        .collect();
    axum::Json(keys)
}

pub(super) async fn expire_keys(State(world): State<SharedWorld>, Query(f): Query<ShopFilter>) -> impl IntoResponse {
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
pub(super) struct Advance {
    hours: i64,
}

/// Moves the sandbox clock forward and lets orders live: paid after an hour, a ship date a day
/// after payment (配送準備), shipped on the ship date, delivered two days later.
pub(super) async fn advance(State(world): State<SharedWorld>, Query(a): Query<Advance>) -> impl IntoResponse {
    let mut w = world.lock().expect("world lock");
    let since = w.now_jst();
    w.clock_offset += Duration::hours(a.hours);
    let now = w.now_jst();
    for o in w.orders.values_mut() {
        crate::lifecycle::progress(o, since, now);
    }
    axum::Json(json!({"now": now.format("%Y-%m-%d %H:%M:%S").to_string()}))
}

pub(super) async fn delete_order(
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
pub(super) async fn order_action(
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
