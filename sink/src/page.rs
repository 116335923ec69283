//! The status page (`GET /` on `[sink] http_listen`): gathered from ClickHouse and NATS here,
//! rendered by `crate::status`.

use async_nats::jetstream;
use axum::response::IntoResponse;
use chrono::Utc;
use schemas::subjects::{Namespace, Stream};

use crate::store::Store;

/// The page's router, for the sink's HTTP listener.
pub fn router(store: Store, js: jetstream::Context, ns: Namespace, configured: Vec<String>) -> axum::Router {
    axum::Router::new().route(
        "/",
        axum::routing::get(move || {
            let (store, js, ns, configured) = (store.clone(), js.clone(), ns.clone(), configured.clone());
            async move {
                match gather(&store, &js, &ns, &configured).await {
                    Ok(html) => axum::response::Html(html).into_response(),
                    Err(e) => (axum::http::StatusCode::SERVICE_UNAVAILABLE, format!("status unavailable: {e:#}"))
                        .into_response(),
                }
            }
        }),
    )
}

/// Gathers what the status page shows (ClickHouse for orders and alerts, NATS for the fetcher's
/// last poll and error).
pub async fn gather(
    store: &Store,
    js: &jetstream::Context,
    ns: &Namespace,
    configured: &[String],
) -> anyhow::Result<String> {
    use crate::status::ShopStatus;
    let by_status = store.orders_by_status().await?;
    let alerts = store.list_alerts(None, true, 1000).await?;
    let mut ids: Vec<String> = configured.to_vec();
    for id in by_status.iter().map(|(s, _, _)| s).chain(alerts.iter().map(|a| &a.shop_id)) {
        if !ids.contains(id) {
            ids.push(id.clone());
        }
    }
    let state = js.get_stream(ns.stream(Stream::FetchState)).await.ok();
    let mut shops = Vec::with_capacity(ids.len());
    for id in ids {
        let mut fetch = schemas::poll::FetchStatus::default();
        if let Some(stream) = &state
            && let Ok(m) = stream.get_last_raw_message_by_subject(&ns.fetch_state(&id)).await
        {
            fetch = serde_json::from_slice(&m.payload).unwrap_or_default();
        }
        shops.push(ShopStatus {
            orders: by_status.iter().filter(|(s, _, _)| *s == id).map(|(_, st, n)| (st.clone(), *n)).collect(),
            open_alerts: alerts.iter().filter(|a| a.shop_id == id).cloned().collect(),
            fetch,
            shop_id: id,
        });
    }
    Ok(crate::status::render(&shops, Utc::now()))
}
