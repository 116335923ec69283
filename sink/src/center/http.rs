//! The center's routes. Reads come from the board and the snapshot (texts of the rows shown by
//! key); the two writes (acknowledge, a write-back fix) need the token when one is configured:
//! `Authorization: Bearer` on `/api/`, or the cookie the page's sign-in form sets (HttpOnly,
//! SameSite=Strict) for the page's own buttons.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use chrono::Utc;
use schemas::alert::{Alert, AlertKind, Severity};
use serde::{Deserialize, Serialize};

use super::actions::{ActionError, Fixed};
use super::board::{Entry, Filter};
use super::page::{self, Choice, Page, Row};
use super::{Center, guard, today, view};

const COOKIE: &str = "alert_center_token";
const PER_PAGE: usize = 30;

pub fn router(center: Arc<Center>) -> Router {
    Router::new()
        .route("/", get(page_get))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .route("/alerts/{id}/acknowledge", post(page_acknowledge))
        .route("/alerts/{id}/fix", post(page_fix))
        .route("/api/summary", get(api_summary))
        .route("/api/alerts", get(api_alerts))
        .route("/api/alerts/{id}/acknowledge", post(api_acknowledge))
        .route("/api/alerts/{id}/fix", post(api_fix))
        .layer(axum::middleware::from_fn_with_state(center.clone(), guarded))
        .with_state(center)
}

/// Every request: refused for a `Host` the center does not serve (421); every answer carries the
/// headers of [`guard::HEADERS`].
async fn guarded(
    State(c): State<Arc<Center>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let served = guard::request_host(request.headers()).is_some_and(|h| c.hosts.contains(&h));
    let mut response = if served {
        next.run(request).await
    } else {
        let why = "421: the alert center does not serve this Host name (add it to [sink] http_hosts)";
        (StatusCode::MISDIRECTED_REQUEST, why).into_response()
    };
    guard::add_headers(response.headers_mut());
    response
}

/// The filters as the page's query string carries them (unknown values are an error, not "all").
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct Filters {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub shop: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub severity: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub acknowledged: String,
}

impl Filters {
    pub fn parse(&self) -> Result<Filter, String> {
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        let kind =
            opt(&self.kind).map(|k| AlertKind::parse(&k).ok_or(format!("kind: unknown kind {k:?}"))).transpose()?;
        let severity = opt(&self.severity)
            .map(|s| Severity::parse(&s).ok_or(format!("severity: unknown severity {s:?}")))
            .transpose()?;
        let acknowledged = match self.acknowledged.as_str() {
            "" => None,
            "true" => Some(true),
            "false" => Some(false),
            other => return Err(format!("acknowledged: {other:?} is neither true nor false")),
        };
        Ok(Filter { shop: opt(&self.shop), kind, severity, acknowledged })
    }

    fn query(&self, extra: &[(&str, String)]) -> String {
        let mut q = serde_urlencoded::to_string(self).unwrap_or_default();
        for (k, v) in extra {
            let pair = serde_urlencoded::to_string([(k, v)]).unwrap_or_default();
            q = if q.is_empty() { pair } else { format!("{q}&{pair}") };
        }
        q
    }
}

#[derive(Debug, Deserialize)]
struct PageQuery {
    #[serde(flatten)]
    filters: Filters,
    #[serde(default)]
    page: Option<usize>,
    #[serde(default)]
    notice: Option<String>,
}

fn bad(msg: impl Into<String>) -> Response {
    (StatusCode::BAD_REQUEST, msg.into()).into_response()
}

async fn page_get(State(c): State<Arc<Center>>, headers: HeaderMap, Query(q): Query<PageQuery>) -> Response {
    let filter = match q.filters.parse() {
        Ok(f) => f,
        Err(e) => return bad(e),
    };
    let page_no = q.page.unwrap_or(1).max(1);
    let (total, entries) = {
        let board = c.board.read().expect("board lock");
        board.queue(&filter, (page_no - 1) * PER_PAGE, PER_PAGE)
    };
    let rows = c.rows(&entries).await;
    let now = Utc::now();
    let (summary, charts) = {
        let (board, snap) = (c.board.read().expect("board lock"), c.snapshot.read().expect("snapshot lock"));
        let shop = filter.shop.as_deref();
        let loaded = c.live.load(Ordering::Relaxed);
        (view::summary((&board, loaded), &snap, &c.shops, shop, now), view::charts(&snap, shop, today()))
    };
    let (overview, more_shops, stale, more_stale, details) =
        page::arrange(page::shop_lines(&summary), filter.shop.is_some());
    let pages = total.div_ceil(PER_PAGE).max(1);
    let link = |p: usize| format!("/?{}", q.filters.query(&[("page", p.to_string())]));
    let html = Page {
        generated: page::jst(now),
        refreshed: summary.refreshed_at.map(page::jst).unwrap_or_else(|| "—".into()),
        refresh_error: summary.refresh_error.clone(),
        live: summary.alerts_loaded,
        refresh_seconds: 60,
        shop_choices: choices(summary.shops.iter().map(|s| (s.shop_id.clone(), s.shop_id.clone())), &q.filters.shop),
        kind_choices: choices(
            AlertKind::ALL.iter().map(|k| (k.as_str().into(), format!("{} / {}", page::kind_ja(*k), k.as_str()))),
            &q.filters.kind,
        ),
        severity_choices: choices(
            [("critical", "重大 / critical"), ("warning", "警告 / warning"), ("info", "情報 / info")]
                .map(|(v, l)| (v.into(), l.into())),
            &q.filters.severity,
        ),
        ack_choices: choices(
            [("false", "未対応 / not acknowledged"), ("true", "対応中 / acknowledged")]
                .map(|(v, l)| (v.into(), l.into())),
            &q.filters.acknowledged,
        ),
        overview,
        more_shops,
        stale,
        more_stale,
        shops: details,
        charts: page::svgs(&charts),
        rows,
        total,
        page: page_no,
        pages,
        prev: (page_no > 1).then(|| link(page_no - 1)),
        next: (page_no < pages).then(|| link(page_no + 1)),
        back: q.filters.query(&[("page", page_no.to_string())]),
        token_required: c.token.is_some(),
        signed_in: c.authorized(&headers, true),
        notice: q.notice,
    };
    Html(html.html()).into_response()
}

fn choices(all: impl IntoIterator<Item = (String, String)>, selected: &str) -> Vec<Choice> {
    all.into_iter().map(|(value, label)| Choice { selected: value == selected, value, label }).collect()
}

impl Center {
    /// The queue rows of `entries`, with their texts and (for write-back shops) the fix form.
    async fn rows(&self, entries: &[Entry]) -> Vec<Row> {
        let ids: Vec<String> = entries.iter().map(|e| e.alert_id.to_string()).collect();
        let texts: HashMap<String, Alert> = match self.store.alerts_by_id(&ids).await {
            Ok(rows) => rows.into_iter().filter_map(|r| r.to_alert()).map(|a| (a.alert_id.clone(), a)).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "alert center: alert texts unavailable");
                HashMap::new()
            }
        };
        let commands = self.last_commands(entries).await;
        let tomorrow = (today() + chrono::Days::new(1)).to_string();
        entries
            .iter()
            .map(|e| {
                let fix = self.fixable(e).then(|| page::Fix {
                    default_date: tomorrow.clone(),
                    last: commands.get(&(e.shop.to_string(), e.order_no)).map(page::command_text),
                });
                Row::new(e, texts.get(&*e.alert_id), fix)
            })
            .collect()
    }

    /// True when `[sink] http_token` is unset, or the request carries it (Bearer, or the page's
    /// cookie when `cookie` is allowed).
    pub fn authorized(&self, headers: &HeaderMap, cookie: bool) -> bool {
        let Some(token) = &self.token else { return true };
        let given = |v: &str| constant_time_eq(v.as_bytes(), token.expose().as_bytes());
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(given);
        let cookied = cookie
            && headers
                .get_all(header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .filter_map(|kv| kv.trim().strip_prefix(COOKIE).and_then(|r| r.strip_prefix('=')))
                .any(given);
        bearer || cookied
    }
}

/// A write must come from the center's own page or from a client that is no browser: a browser
/// says where a POST comes from (`Sec-Fetch-Site`, `Origin`), and another site's page posting to
/// this listener (which a loopback address does not stop) is refused, token or not.
fn same_origin(headers: &HeaderMap) -> bool {
    let site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if site.is_some_and(|s| s != "same-origin" && s != "none") {
        return false;
    }
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    match headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        None => true,
        Some(origin) => host.is_some_and(|h| origin.split_once("://").is_some_and(|(_, rest)| rest == h)),
    }
}

/// Why a write is refused, if it is: from another site (403), or without the token (401).
fn refuse_write(c: &Center, headers: &HeaderMap, cookie: bool) -> Option<Response> {
    if !same_origin(headers) {
        return Some(cross_site());
    }
    (!c.authorized(headers, cookie)).then(unauthorized)
}

fn cross_site() -> Response {
    (StatusCode::FORBIDDEN, "cross-site request refused: post from the alert center's own page").into_response()
}

/// Compares without stopping at the first difference (the time taken says nothing of the token).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "a valid token is required (Authorization: Bearer <sink.http_token>)",
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    token: String,
    #[serde(default)]
    back: String,
}

async fn login(
    State(c): State<Arc<Center>>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    axum::Form(f): axum::Form<LoginForm>,
) -> Response {
    if !same_origin(&headers) {
        return cross_site();
    }
    let now = std::time::Instant::now();
    if let Some(wait) = c.throttle.blocked(peer.ip(), now) {
        let text = format!("too many wrong tokens from this address: try again in {} s", wait.as_secs() + 1);
        return (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, (wait.as_secs() + 1).to_string())], text)
            .into_response();
    }
    let ok = c.token.as_ref().is_some_and(|t| constant_time_eq(f.token.as_bytes(), t.expose().as_bytes()));
    if !ok {
        c.throttle.failed(peer.ip(), now);
        return (StatusCode::UNAUTHORIZED, Html("トークンが違います / wrong token. <a href=\"/\">戻る / back</a>"))
            .into_response();
    }
    c.throttle.succeeded(peer.ip());
    let cookie = guard::cookie(COOKIE, &f.token, c.secure_cookie);
    ([(header::SET_COOKIE, cookie)], Redirect::to(&back_to(&f.back, None))).into_response()
}

/// Ends the sign-in: the cookie is cleared.
async fn logout(State(c): State<Arc<Center>>, headers: HeaderMap, axum::Form(f): axum::Form<BackForm>) -> Response {
    if !same_origin(&headers) {
        return cross_site();
    }
    let cookie = guard::cookie(COOKIE, "", c.secure_cookie);
    ([(header::SET_COOKIE, cookie)], Redirect::to(&back_to(&f.back, None))).into_response()
}

/// Where a form goes back to: the page with the filters it came from (re-encoded, so that
/// `back` can never point elsewhere) and a notice.
fn back_to(back: &str, notice: Option<&str>) -> String {
    let q: PageQuery =
        serde_urlencoded::from_str(back).unwrap_or(PageQuery { filters: Filters::default(), page: None, notice: None });
    let mut extra = vec![("page", q.page.unwrap_or(1).to_string())];
    extra.extend(notice.map(|n| ("notice", n.to_owned())));
    format!("/?{}", q.filters.query(&extra))
}

#[derive(Debug, Deserialize)]
struct BackForm {
    #[serde(default)]
    back: String,
    #[serde(default)]
    ship_date: String,
}

async fn page_acknowledge(
    State(c): State<Arc<Center>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    axum::Form(f): axum::Form<BackForm>,
) -> Response {
    if let Some(refused) = refuse_write(&c, &headers, true) {
        return refused;
    }
    let notice = match c.acknowledge(&id).await {
        Ok(_) => format!("対応中にしました / acknowledged: {id}"),
        Err(e) => format!("できませんでした / failed: {e}"),
    };
    Redirect::to(&back_to(&f.back, Some(&notice))).into_response()
}

async fn page_fix(
    State(c): State<Arc<Center>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    axum::Form(f): axum::Form<BackForm>,
) -> Response {
    if let Some(refused) = refuse_write(&c, &headers, true) {
        return refused;
    }
    let notice = match c.fix(&id, &f.ship_date).await {
        Ok(Fixed { command_id, result: Some(r) }) => {
            format!("書き戻し / write-back {command_id}: {}", page::command_text(&r))
        }
        Ok(Fixed { command_id, result: None }) => {
            format!("書き戻しを送信しました（結果待ち） / write-back {command_id} sent, result pending")
        }
        Err(e) => format!("書き戻しできませんでした / write-back failed: {e}"),
    };
    Redirect::to(&back_to(&f.back, Some(&notice))).into_response()
}

async fn api_summary(State(c): State<Arc<Center>>, headers: HeaderMap, Query(f): Query<Filters>) -> Response {
    if !c.authorized(&headers, false) {
        return unauthorized();
    }
    let shop = (!f.shop.is_empty()).then_some(f.shop.as_str());
    let (board, snap) = (c.board.read().expect("board lock"), c.snapshot.read().expect("snapshot lock"));
    let loaded = c.live.load(Ordering::Relaxed);
    axum::Json(view::summary((&board, loaded), &snap, &c.shops, shop, Utc::now())).into_response()
}

#[derive(Debug, Deserialize)]
struct AlertsQuery {
    #[serde(flatten)]
    filters: Filters,
    #[serde(default)]
    state: String,
    limit: Option<String>,
    offset: Option<String>,
}

async fn api_alerts(State(c): State<Arc<Center>>, headers: HeaderMap, Query(q): Query<AlertsQuery>) -> Response {
    if !c.authorized(&headers, false) {
        return unauthorized();
    }
    let number = |v: &Option<String>, name: &str, default: u64| match v {
        None => Ok(default),
        Some(s) => s.parse::<u64>().map_err(|_| format!("{name}: {s:?} is not a non-negative integer")),
    };
    let (filter, limit, offset) =
        match (q.filters.parse(), number(&q.limit, "limit", 100), number(&q.offset, "offset", 0)) {
            (Ok(f), Ok(l), Ok(o)) if l <= 1000 => (f, l, o),
            (Ok(_), Ok(l), Ok(_)) => return bad(format!("limit: {l} is above 1000")),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return bad(e),
        };
    let listed = match q.state.as_str() {
        "" | "open" => c.open_alerts(&filter, offset as usize, limit as usize).await,
        "resolved" => c.resolved_alerts(&filter, offset, limit).await,
        other => return bad(format!("state: {other:?} is neither open nor resolved")),
    };
    match listed {
        Ok(l) => axum::Json(l).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

async fn api_acknowledge(State(c): State<Arc<Center>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Some(refused) = refuse_write(&c, &headers, false) {
        return refused;
    }
    match c.acknowledge(&id).await {
        Ok(alert) => axum::Json(super::actions::Listed::one(alert)).into_response(),
        Err(e) => error_response(e),
    }
}

#[derive(Debug, Deserialize)]
struct FixBody {
    ship_date: String,
}

async fn api_fix(
    State(c): State<Arc<Center>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    axum::Json(b): axum::Json<FixBody>,
) -> Response {
    if let Some(refused) = refuse_write(&c, &headers, false) {
        return refused;
    }
    match c.fix(&id, &b.ship_date).await {
        Ok(f) => {
            let status = if f.result.is_some() { StatusCode::OK } else { StatusCode::ACCEPTED };
            (status, axum::Json(f)).into_response()
        }
        Err(e) => error_response(e),
    }
}

fn error_response(e: ActionError) -> Response {
    let status = match e {
        ActionError::NotOpen(_) => StatusCode::NOT_FOUND,
        ActionError::NotFixable(_) | ActionError::BadDate(_) => StatusCode::CONFLICT,
        ActionError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    (status, e.to_string()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn writes_come_from_the_page_itself_or_from_no_browser() {
        assert!(same_origin(&headers(&[("host", "127.0.0.1:9466")])), "curl, scripts");
        let page = [("host", "127.0.0.1:9466"), ("origin", "http://127.0.0.1:9466"), ("sec-fetch-site", "same-origin")];
        assert!(same_origin(&headers(&page)));
        let other = [("host", "127.0.0.1:9466"), ("origin", "https://evil.example"), ("sec-fetch-site", "cross-site")];
        assert!(!same_origin(&headers(&other)));
        assert!(!same_origin(&headers(&[("host", "127.0.0.1:9466"), ("origin", "https://evil.example")])));
        assert!(!same_origin(&headers(&[("host", "127.0.0.1:9466"), ("sec-fetch-site", "same-site")])));
    }

    #[test]
    fn a_form_goes_back_only_to_the_page_with_its_filters() {
        assert_eq!(back_to("shop=a&kind=item_added&page=2", None), "/?shop=a&kind=item_added&page=2");
        assert_eq!(back_to("//evil.example/x", Some("done")), "/?page=1&notice=done");
    }

    #[test]
    fn unknown_filter_values_are_errors_naming_the_parameter() {
        let f = |kind: &str, ack: &str| {
            Filters { kind: kind.into(), acknowledged: ack.into(), ..Filters::default() }.parse()
        };
        assert!(f("nope", "").unwrap_err().starts_with("kind:"));
        assert!(f("", "yes").unwrap_err().starts_with("acknowledged:"));
        assert_eq!(f("item_added", "false").unwrap().kind, Some(AlertKind::ItemAdded));
    }
}
