//! What to ask Qoo10 for: pure functions, no IO.
//!
//! QAPI has no "updated since": a call asks for the rows whose *date of some kind* falls in a
//! window (the reference, §11.1). So each transition is asked for by its own date, from where
//! the last good call of its kind ended (with an overlap), whatever the order's age:
//!
//! | family | every | calls |
//! |---|---|---|
//! | recent | shop `interval` | statuses 1–3 by order date over the look-back (one v3 call, `ShippingStatus=0`); shipped (4) by ship date; cancel requests (claim 1) by request date; cancellations (3, 16) by completion date |
//! | slow | `[fetcher] slow_calls_every` | paid late (2–3) by payment date; delivered (5) by delivered date; the other claims by request date (2, 4, 5, 11–13) or completion date (6, 14, 15) |
//! | long | `[fetcher] long_windows_every` | statuses 1–3 by order date before the look-back, back to the oldest line still followed: 2 → 3 long after payment has no date of its own |
//!
//! The first import adds statuses 4 and 5 by order date over the look-back (what had shipped
//! before the pipeline looked) and runs every family with windows reaching `lookback_days` back.
//! Only order-date calls cover a line completely (an order that did not ship is simply absent
//! from a call by ship date): their summaries are the ones `order_vanished` is judged from.

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, Utc};
use schemas::config::ApiVersion;
use schemas::qapi::{self, MAX_WINDOW_DAYS};
use schemas::raw::{RowKind, condition};

/// An inclusive window of JST calendar days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub from: NaiveDate,
    pub to: NaiveDate,
}

impl Window {
    pub fn from_text(&self) -> String {
        self.from.format("%Y%m%d").to_string()
    }
    pub fn to_text(&self) -> String {
        self.to.format("%Y%m%d").to_string()
    }
}

/// What a call's dates cover: whole JST days (`yyyyMMdd`), or JST instants (`yyyyMMddHHmmss`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Span {
    Days(Window),
    Times { from: NaiveDateTime, to: NaiveDateTime },
}

impl Span {
    pub fn from_text(&self) -> String {
        match self {
            Span::Days(w) => w.from_text(),
            Span::Times { from, .. } => from.format("%Y%m%d%H%M%S").to_string(),
        }
    }
    pub fn to_text(&self) -> String {
        match self {
            Span::Days(w) => w.to_text(),
            Span::Times { to, .. } => to.format("%Y%m%d%H%M%S").to_string(),
        }
    }
}

/// How often a group of calls is made (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    Recent,
    Slow,
    Long,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::Recent => "recent",
            Family::Slow => "slow",
            Family::Long => "long",
        }
    }
}

/// One QAPI call of a poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Call {
    pub kind: RowKind,
    pub family: Family,
    /// ShippingStat (0: v3's statuses 1–3 at once) or ClaimStat.
    pub status: u8,
    /// `search_condition`: see [`schemas::raw::condition`].
    pub condition: u8,
    pub span: Span,
}

impl Call {
    /// A call whose answer holds every line of its statuses and window: only such a call can
    /// tell that a line vanished.
    pub fn covers(&self) -> bool {
        self.kind == RowKind::Order && self.condition == condition::ORDER_DATE
    }
}

/// A shop's settings, as the planner needs them.
#[derive(Debug, Clone)]
pub struct ShopPlan {
    pub version: ApiVersion,
    /// Shipping statuses to fetch.
    pub statuses: Vec<u8>,
    pub claims: bool,
    pub lookback_days: u32,
}

/// How often and how far (`[fetcher]`).
#[derive(Debug, Clone, Copy)]
pub struct Cadence {
    pub slow_every: Duration,
    pub long_every: Duration,
    pub overlap: Duration,
    pub follow_days: u32,
}

/// What the fetch state says about a shop.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    /// A complete poll has been made (the first import is done).
    pub imported: bool,
    /// When each family's calls of each kind last completed.
    pub last: Vec<((Family, RowKind), DateTime<Utc>)>,
    /// The order date (JST) of the oldest line still followed in statuses 1–3.
    pub oldest_open: Option<NaiveDate>,
}

impl Progress {
    fn last(&self, family: Family, kind: RowKind) -> Option<DateTime<Utc>> {
        self.last.iter().find(|(k, _)| *k == (family, kind)).map(|(_, t)| *t)
    }

    /// When any call of the family last completed (a family is due by its most recent run).
    fn latest(&self, family: Family) -> Option<DateTime<Utc>> {
        self.last.iter().filter(|((f, _), _)| *f == family).map(|(_, t)| *t).max()
    }
}

/// Claim statuses asked for every poll, and by which date.
const RECENT_CLAIMS: &[(u8, u8)] = &[
    (1, condition::CLAIM_REQUESTED), // a cancel request: the seller must not ship
    (3, condition::CLAIM_DONE),      // cancelled (also at once, before 発送予定日)
    (16, condition::CLAIM_DONE),     // an unpaid order cancelled by Qoo10
];

/// Claim statuses asked for on the slow cadence.
const SLOW_CLAIMS: &[(u8, u8)] = &[
    (2, condition::CLAIM_REQUESTED),
    (4, condition::CLAIM_REQUESTED),
    (5, condition::CLAIM_REQUESTED),
    (11, condition::CLAIM_REQUESTED),
    (12, condition::CLAIM_REQUESTED),
    (13, condition::CLAIM_REQUESTED),
    (6, condition::CLAIM_DONE),
    (14, condition::CLAIM_DONE),
    (15, condition::CLAIM_DONE),
];

fn jst(t: DateTime<Utc>) -> NaiveDateTime {
    t.with_timezone(&schemas::time::jst()).naive_local()
}

/// Every call of a shop's poll at `now`, in order: orders first, claims last.
pub fn poll(now: DateTime<Utc>, shop: &ShopPlan, cadence: &Cadence, progress: &Progress) -> Vec<Call> {
    let today = schemas::time::today_jst(now);
    let first = !progress.imported;
    let due = |family: Family, every: Duration| first || progress.latest(family).is_none_or(|t| now - t >= every);
    let mut calls = Vec::new();
    // A look-back longer than QAPI's 90-day limit is asked window by window (it once was one
    // window, which Qoo10 refuses: a 120-day look-back imported nothing, ever).
    let lookback = windows(today, shop.lookback_days);
    let early: Vec<u8> = shop.statuses.iter().copied().filter(|s| *s <= 3).collect();
    for w in &lookback {
        calls.extend(
            group(shop.version, &early, &[1, 2, 3])
                .into_iter()
                .map(|s| order_call(Family::Recent, s, condition::ORDER_DATE, Span::Days(*w))),
        );
    }
    if first {
        for s in shop.statuses.iter().copied().filter(|s| *s >= 4) {
            for w in &lookback {
                calls.push(order_call(Family::Recent, s, condition::ORDER_DATE, Span::Days(*w)));
            }
        }
    }
    let since = |family: Family, kind: RowKind| match progress.last(family, kind) {
        Some(t) if !first => jst(t - cadence.overlap),
        _ => (today - Duration::days(i64::from(shop.lookback_days))).and_hms_opt(0, 0, 0).expect("midnight"),
    };
    let times = |family: Family, kind: RowKind| spans(since(family, kind), jst(now));
    if shop.statuses.contains(&4) {
        for span in times(Family::Recent, RowKind::Order) {
            calls.push(order_call(Family::Recent, 4, condition::SHIP_DATE, span));
        }
    }
    let slow = due(Family::Slow, cadence.slow_every);
    if slow {
        let paid: Vec<u8> = shop.statuses.iter().copied().filter(|s| matches!(s, 2 | 3)).collect();
        for span in times(Family::Slow, RowKind::Order) {
            for s in group(shop.version, &paid, &[2, 3]) {
                calls.push(order_call(Family::Slow, s, condition::PAYMENT_DATE, span));
            }
            if shop.statuses.contains(&5) {
                calls.push(order_call(Family::Slow, 5, condition::DELIVERED_DATE, span));
            }
        }
    }
    if !first && due(Family::Long, cadence.long_every) {
        calls.extend(long_windows(today, shop, cadence, progress).into_iter().flat_map(|w| {
            group(shop.version, &early, &[1, 2, 3])
                .into_iter()
                .map(move |s| order_call(Family::Long, s, condition::ORDER_DATE, Span::Days(w)))
        }));
    }
    if shop.claims {
        let mut claims: Vec<(Family, u8, u8)> = RECENT_CLAIMS.iter().map(|&(s, c)| (Family::Recent, s, c)).collect();
        if slow {
            claims.extend(SLOW_CLAIMS.iter().map(|&(s, c)| (Family::Slow, s, c)));
        }
        for (family, status, condition) in claims {
            for span in times(family, RowKind::Claim) {
                calls.push(Call { kind: RowKind::Claim, family, status, condition, span });
            }
        }
    }
    calls
}

fn order_call(family: Family, status: u8, condition: u8, span: Span) -> Call {
    Call { kind: RowKind::Order, family, status, condition, span }
}

/// v3 answers statuses 1–3 in one call (`ShippingStatus=0`): `statuses` become that one call
/// when they are every status of 1–3 the call's date can hold (`reachable`: 2 and 3 for a
/// payment date, 1–3 for an order date); else one call each.
fn group(version: ApiVersion, statuses: &[u8], reachable: &[u8]) -> Vec<u8> {
    let all = reachable.iter().all(|s| statuses.contains(s)) && statuses.iter().all(|s| reachable.contains(s));
    if version == ApiVersion::V3 && all { vec![0] } else { statuses.to_vec() }
}

/// The windows before the look-back, back to the oldest line still followed in 1–3 (at most
/// `follow_days` back): none when every open line is within the look-back.
fn long_windows(today: NaiveDate, shop: &ShopPlan, cadence: &Cadence, progress: &Progress) -> Vec<Window> {
    let Some(oldest) = progress.oldest_open else { return Vec::new() };
    let end = today - Duration::days(i64::from(shop.lookback_days) + 1);
    let start = oldest.max(today - Duration::days(i64::from(cadence.follow_days)));
    if start > end { Vec::new() } else { split(start, end) }
}

/// `from ..= to` as windows QAPI accepts (at most 89 days each).
fn spans(from: NaiveDateTime, to: NaiveDateTime) -> Vec<Span> {
    let mut out = Vec::new();
    let mut start = from;
    while start < to {
        let end = (start + Duration::days(MAX_WINDOW_DAYS)).min(to);
        out.push(Span::Times { from: start, to: end });
        start = end;
    }
    out
}

/// The look-back window ending today (JST). `lookback_days = 7` on 2026-11-29 covers
/// 2026-11-22 ..= 2026-11-29: one day further back than N, so that an order placed just before
/// midnight N days ago is still seen on the day it turns N days old.
fn window_back(today: NaiveDate, lookback_days: u32) -> Window {
    Window { from: today - Duration::days(i64::from(lookback_days)), to: today }
}

/// The look-back window ending today (JST), split into windows of at most 89 days, oldest first
/// (`fetcher check` and the first import of a look-back longer than 89 days).
pub fn windows(today: NaiveDate, lookback_days: u32) -> Vec<Window> {
    let w = window_back(today, lookback_days);
    split(w.from, w.to)
}

/// Splits `from ..= to` into windows of at most [`MAX_WINDOW_DAYS`] days.
pub fn split(from: NaiveDate, to: NaiveDate) -> Vec<Window> {
    let mut out = Vec::new();
    let mut start = from;
    while start <= to {
        let end = (start + Duration::days(MAX_WINDOW_DAYS - 1)).min(to);
        out.push(Window { from: start, to: end });
        start = end + Duration::days(1);
    }
    out
}

/// A backfill of `from ..= to`: every configured status and every claim status by order date,
/// in windows QAPI accepts.
pub fn backfill(shop: &ShopPlan, from: NaiveDate, to: NaiveDate) -> Vec<Call> {
    let windows = split(from, to);
    let mut calls = Vec::new();
    for w in &windows {
        for s in group(shop.version, &shop.statuses, &[1, 2, 3]) {
            calls.push(order_call(Family::Recent, s, condition::ORDER_DATE, Span::Days(*w)));
        }
    }
    if shop.claims {
        for &status in schemas::status::CLAIM_STATUS_CODES {
            for w in &windows {
                let span = Span::Days(*w);
                calls.push(Call {
                    kind: RowKind::Claim,
                    family: Family::Recent,
                    status,
                    condition: condition::ORDER_DATE,
                    span,
                });
            }
        }
    }
    calls
}

pub fn shipping_method(version: ApiVersion) -> &'static str {
    match version {
        ApiVersion::V2 => qapi::GET_SHIPPING_INFO_V2,
        ApiVersion::V3 => qapi::GET_SHIPPING_INFO_V3,
    }
}

/// The method and parameters of a call, in the names its API version takes.
pub fn request(version: ApiVersion, call: &Call) -> (&'static str, Vec<(&'static str, String)>) {
    let (from, to) = (call.span.from_text(), call.span.to_text());
    let (status, condition) = (call.status.to_string(), call.condition.to_string());
    match (call.kind, version) {
        (RowKind::Claim, _) => (
            qapi::GET_CLAIM_INFO_V3,
            vec![("ClaimStat", status), ("search_Sdate", from), ("search_Edate", to), ("search_condition", condition)],
        ),
        (RowKind::Order, ApiVersion::V2) => (
            qapi::GET_SHIPPING_INFO_V2,
            vec![
                ("ShippingStat", status),
                ("search_Sdate", from),
                ("search_Edate", to),
                ("search_condition", condition),
            ],
        ),
        (RowKind::Order, ApiVersion::V3) => (
            qapi::GET_SHIPPING_INFO_V3,
            vec![
                ("ShippingStatus", status),
                ("SearchStartDate", from),
                ("SearchEndDate", to),
                ("SearchCondition", condition),
            ],
        ),
    }
}

/// The calls a shop makes in `days` days of polls every `interval` after its first import
/// (the import itself not counted), following `open_lines_back` days of open lines before the
/// look-back: for the README's and the benchmark's call budget.
pub fn calls_in(days: i64, interval: Duration, shop: &ShopPlan, cadence: &Cadence, open_lines_back: i64) -> u64 {
    let start: DateTime<Utc> = "2026-12-01T00:00:00Z".parse().expect("an instant");
    let mut progress = Progress { imported: true, ..Progress::default() };
    let mut total = 0;
    let mut now = start;
    while now < start + Duration::days(days) {
        progress.oldest_open =
            Some(schemas::time::today_jst(now) - Duration::days(i64::from(shop.lookback_days) + open_lines_back));
        let calls = poll(now, shop, cadence, &progress);
        total += calls.len() as u64;
        for c in &calls {
            let key = (c.family, c.kind);
            progress.last.retain(|(k, _)| *k != key);
            progress.last.push((key, now));
        }
        now += interval;
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn shop() -> ShopPlan {
        ShopPlan { version: ApiVersion::V3, statuses: vec![1, 2, 3, 4, 5], claims: true, lookback_days: 7 }
    }

    fn cadence() -> Cadence {
        Cadence {
            slow_every: Duration::hours(3),
            long_every: Duration::hours(24),
            overlap: Duration::hours(1),
            follow_days: 365,
        }
    }

    /// (kind, family, status, condition, from, to) of each call.
    fn shape(calls: &[Call]) -> Vec<(RowKind, Family, u8, u8, String, String)> {
        calls.iter().map(|c| (c.kind, c.family, c.status, c.condition, c.span.from_text(), c.span.to_text())).collect()
    }

    #[test]
    fn a_first_import_reaches_the_look_back_for_every_transition() {
        // 2026-11-29 03:00 UTC is 12:00 JST.
        let calls = poll(at("2026-11-29T03:00:00Z"), &shop(), &cadence(), &Progress::default());
        let s = shape(&calls);
        let o = RowKind::Order;
        assert_eq!(
            s[0],
            (o, Family::Recent, 0, 1, "20261122".into(), "20261129".into()),
            "1–3 by order date, one call"
        );
        assert_eq!(s[1].2, 4);
        assert_eq!(s[2], (o, Family::Recent, 5, 1, "20261122".into(), "20261129".into()), "what had shipped before");
        assert_eq!(
            s[3],
            (o, Family::Recent, 4, 3, "20261122000000".into(), "20261129120000".into()),
            "shipped, by ship date"
        );
        assert_eq!(
            s[4],
            (o, Family::Slow, 0, 2, "20261122000000".into(), "20261129120000".into()),
            "paid, by payment date"
        );
        assert_eq!(s[5].3, condition::DELIVERED_DATE);
        let claims: Vec<(u8, u8)> =
            calls.iter().filter(|c| c.kind == RowKind::Claim).map(|c| (c.status, c.condition)).collect();
        assert_eq!(claims.len(), 12, "every claim status, each by its own date: {claims:?}");
        assert!(claims.contains(&(1, condition::CLAIM_REQUESTED)) && claims.contains(&(6, condition::CLAIM_DONE)));
        assert_eq!(calls.iter().filter(|c| c.covers()).count(), 3, "only order-date calls cover lines");
        assert!(calls.iter().all(|c| c.family != Family::Long), "a first import does not reach before the look-back");
    }

    #[test]
    fn later_polls_ask_from_where_the_last_good_call_ended() {
        let t0 = at("2026-11-29T03:00:00Z");
        let mut p = Progress { imported: true, ..Progress::default() };
        for k in [RowKind::Order, RowKind::Claim] {
            for f in [Family::Recent, Family::Slow, Family::Long] {
                p.last.push(((f, k), t0));
            }
        }
        // Thirty minutes later: only the recent family is due.
        let calls = poll(t0 + Duration::minutes(30), &shop(), &cadence(), &p);
        let s = shape(&calls);
        assert_eq!(s.len(), 5, "{s:?}");
        assert_eq!(s[0].4, "20261122", "the look-back by order date");
        assert_eq!(
            (s[1].2, s[1].3, s[1].4.as_str(), s[1].5.as_str()),
            (4, 3, "20261129110000", "20261129123000"),
            "an hour of overlap"
        );
        let claims: Vec<(u8, u8)> =
            calls.iter().filter(|c| c.kind == RowKind::Claim).map(|c| (c.status, c.condition)).collect();
        assert_eq!(claims, [(1, 2), (3, 3), (16, 3)]);
        // Three hours later the slow family joins; a day later the long one, when lines are open
        // before the look-back.
        assert_eq!(poll(t0 + Duration::hours(3), &shop(), &cadence(), &p).len(), 5 + 11);
        p.oldest_open = Some(d("2026-10-01"));
        let calls = poll(t0 + Duration::hours(24), &shop(), &cadence(), &p);
        let long: Vec<_> = shape(&calls).into_iter().filter(|c| c.1 == Family::Long).collect();
        assert_eq!(long, vec![(RowKind::Order, Family::Long, 0, 1, "20261001".into(), "20261122".into())]);
        assert!(calls.iter().filter(|c| c.family == Family::Long).all(Call::covers));
        p.oldest_open = Some(d("2026-11-25"));
        assert!(
            poll(t0 + Duration::hours(24), &shop(), &cadence(), &p).iter().all(|c| c.family != Family::Long),
            "nothing open before the look-back"
        );
    }

    #[test]
    fn long_windows_split_and_stop_at_follow_days() {
        let mut p = Progress { imported: true, oldest_open: Some(d("2024-01-01")), ..Progress::default() };
        p.last.push(((Family::Recent, RowKind::Order), at("2026-11-29T02:00:00Z")));
        let calls = poll(at("2026-11-29T03:00:00Z"), &shop(), &cadence(), &p);
        let long: Vec<&Call> = calls.iter().filter(|c| c.family == Family::Long).collect();
        assert_eq!(long.first().map(|c| c.span.from_text()), Some("20251129".into()), "365 days back at most");
        assert_eq!(long.len(), 5, "357 days in windows of at most 89 days");
    }

    /// A line open since the day before the look-back gets one long window of that day; one
    /// within the look-back gets none.
    #[test]
    fn long_windows_start_the_day_before_the_look_back() {
        let p = |oldest| Progress { imported: true, oldest_open: Some(d(oldest)), ..Progress::default() };
        let today = d("2026-11-29");
        let w = long_windows(today, &shop(), &cadence(), &p("2026-11-21"));
        assert_eq!(w.iter().map(|w| (w.from, w.to)).collect::<Vec<_>>(), [(d("2026-11-21"), d("2026-11-21"))]);
        assert!(long_windows(today, &shop(), &cadence(), &p("2026-11-22")).is_empty());
        assert_eq!(shipping_method(ApiVersion::V2), qapi::GET_SHIPPING_INFO_V2);
        assert_eq!(shipping_method(ApiVersion::V3), qapi::GET_SHIPPING_INFO_V3);
    }

    #[test]
    fn v2_and_a_partial_status_list_ask_status_by_status() {
        let v2 = ShopPlan { version: ApiVersion::V2, ..shop() };
        let calls = poll(at("2026-11-29T03:00:00Z"), &v2, &cadence(), &Progress::default());
        let by_order_date: Vec<u8> = calls.iter().filter(|c| c.covers()).map(|c| c.status).collect();
        assert_eq!(by_order_date, [1, 2, 3, 4, 5]);
        let goq = ShopPlan { statuses: vec![2], claims: false, ..shop() };
        let calls = poll(at("2026-11-29T03:00:00Z"), &goq, &cadence(), &Progress::default());
        assert_eq!(shape(&calls).iter().map(|c| (c.2, c.3)).collect::<Vec<_>>(), [(2, 1), (2, 2)]);
    }

    #[test]
    fn a_long_outage_is_caught_up_in_windows_qoo10_accepts() {
        let mut p = Progress { imported: true, ..Progress::default() };
        p.last.push(((Family::Recent, RowKind::Order), at("2026-06-01T00:00:00Z")));
        let calls = poll(at("2026-11-29T03:00:00Z"), &shop(), &cadence(), &p);
        let shipped: Vec<&Call> =
            calls.iter().filter(|c| c.kind == RowKind::Order && c.condition == condition::SHIP_DATE).collect();
        assert_eq!(shipped.len(), 3, "181 days in 89-day windows");
        assert_eq!(shipped[0].span.from_text(), "20260601080000", "from the last good call, less the overlap, in JST");
    }

    #[test]
    fn the_call_budget_of_a_default_shop() {
        let per_day = calls_in(1, Duration::minutes(30), &shop(), &cadence(), 0);
        // 48 polls of 5 calls, 8 slow rounds of 11, one long window when lines are open before
        // the look-back (none here).
        assert_eq!(per_day, 48 * 5 + 8 * 11);
        assert_eq!(calls_in(1, Duration::minutes(30), &shop(), &cadence(), 30), 48 * 5 + 8 * 11 + 1);
        assert!(per_day * 2_000 < 10 * 86_400, "2,000 shops fit 10 requests per second");
    }

    #[test]
    fn requests_use_each_versions_names() {
        let call = Call {
            kind: RowKind::Order,
            family: Family::Recent,
            status: 0,
            condition: 3,
            span: Span::Times {
                from: NaiveDateTime::parse_from_str("2026-11-29 11:00:00", "%Y-%m-%d %H:%M:%S").unwrap(),
                to: NaiveDateTime::parse_from_str("2026-11-29 12:30:00", "%Y-%m-%d %H:%M:%S").unwrap(),
            },
        };
        let (m, p) = request(ApiVersion::V3, &call);
        assert_eq!(m, qapi::GET_SHIPPING_INFO_V3);
        assert!(
            p.contains(&("SearchStartDate", "20261129110000".into())) && p.contains(&("SearchCondition", "3".into()))
        );
        let (m, p) = request(ApiVersion::V2, &call);
        assert_eq!(m, qapi::GET_SHIPPING_INFO_V2);
        assert!(p.contains(&("search_Edate", "20261129123000".into())) && p.contains(&("ShippingStat", "0".into())));
        let (m, p) = request(ApiVersion::V3, &Call { kind: RowKind::Claim, status: 4, condition: 2, ..call });
        assert_eq!(m, qapi::GET_CLAIM_INFO_V3);
        assert!(p.contains(&("ClaimStat", "4".into())) && p.contains(&("search_condition", "2".into())));
    }

    #[test]
    fn a_year_splits_into_windows_qoo10_accepts() {
        let ws = windows(d("2026-11-29"), 365);
        assert_eq!(ws.first().unwrap().from, d("2025-11-29"));
        assert_eq!(ws.last().unwrap().to, d("2026-11-29"));
        for pair in ws.windows(2) {
            assert_eq!(pair[0].to + Duration::days(1), pair[1].from, "no gap, no overlap");
        }
        assert!(ws.iter().all(|w| (w.to - w.from).num_days() < 89));
        assert_eq!(ws.len(), 5);
    }
}

#[cfg(test)]
mod props;
