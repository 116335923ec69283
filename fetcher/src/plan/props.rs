//! The planner held to what the line-following contract promises, for any configuration the
//! validator accepts and any progress: every call is one Qoo10 accepts (the sandbox's own
//! request checks, [`sandbox::server::check_read`]), and together the calls of a poll cover every
//! window a transition can fall in.

use chrono::{DateTime, Duration, NaiveDateTime, Utc};
use proptest::prelude::*;
use schemas::config::ApiVersion;
use schemas::raw::{RowKind, condition};

use super::*;

/// An inclusive JST interval that a group of calls must cover.
#[derive(Debug)]
struct Promise {
    kind: RowKind,
    status: u8,
    condition: u8,
    from: NaiveDateTime,
    to: NaiveDateTime,
}

fn span_bounds(span: &Span) -> (NaiveDateTime, NaiveDateTime) {
    match span {
        Span::Days(w) => (w.from.and_hms_opt(0, 0, 0).expect("midnight"), w.to.and_hms_opt(23, 59, 59).expect("end")),
        Span::Times { from, to } => (*from, *to),
    }
}

/// Does `call` ask for lines of `status`? (v3's `0` is statuses 1–3 at once.)
fn asks_for(version: ApiVersion, call: &Call, kind: RowKind, status: u8) -> bool {
    call.kind == kind
        && (call.status == status
            || (kind == RowKind::Order && version == ApiVersion::V3 && call.status == 0 && (1..=3).contains(&status)))
}

/// What a poll at `now` must ask for, stated from the contract rather than from the planner:
/// the look-back by order date (every status on the first import, 1–3 always); each transition
/// by its own date from where the last good call of its family ended, less the overlap; the
/// lines still open before the look-back by order date, back to `follow_days`.
fn promises(now: DateTime<Utc>, shop: &ShopPlan, cadence: &Cadence, p: &Progress) -> Vec<Promise> {
    let today = schemas::time::today_jst(now);
    let nowj = jst(now);
    let first = !p.imported;
    let start_of = |d: NaiveDate| d.and_hms_opt(0, 0, 0).expect("midnight");
    let end_of = |d: NaiveDate| d.and_hms_opt(23, 59, 59).expect("end");
    let lookback_start = today - Duration::days(i64::from(shop.lookback_days));
    let since = |f: Family, k: RowKind| match p.last(f, k) {
        Some(t) if !first => jst(t - cadence.overlap),
        _ => start_of(lookback_start),
    };
    let due = |f: Family, every: Duration| first || p.latest(f).is_none_or(|t| now - t >= every);
    let mut out = Vec::new();
    let mut promise = |kind, status, condition, from: NaiveDateTime, to: NaiveDateTime| {
        if from <= to {
            out.push(Promise { kind, status, condition, from, to });
        }
    };
    let order = RowKind::Order;
    for &s in &shop.statuses {
        if s <= 3 || first {
            promise(order, s, condition::ORDER_DATE, start_of(lookback_start), end_of(today));
        }
    }
    if shop.statuses.contains(&4) {
        promise(order, 4, condition::SHIP_DATE, since(Family::Recent, order), nowj);
    }
    let slow = due(Family::Slow, cadence.slow_every);
    if slow {
        for &s in shop.statuses.iter().filter(|s| matches!(s, 2 | 3)) {
            promise(order, s, condition::PAYMENT_DATE, since(Family::Slow, order), nowj);
        }
        if shop.statuses.contains(&5) {
            promise(order, 5, condition::DELIVERED_DATE, since(Family::Slow, order), nowj);
        }
    }
    if !first
        && due(Family::Long, cadence.long_every)
        && let Some(oldest) = p.oldest_open
    {
        let from = oldest.max(today - Duration::days(i64::from(cadence.follow_days)));
        let to = lookback_start - Duration::days(1);
        for &s in shop.statuses.iter().filter(|s| **s <= 3) {
            promise(order, s, condition::ORDER_DATE, start_of(from), end_of(to));
        }
    }
    if shop.claims {
        let claim = RowKind::Claim;
        for &(s, c) in RECENT_CLAIMS {
            promise(claim, s, c, since(Family::Recent, claim), nowj);
        }
        for &(s, c) in SLOW_CLAIMS.iter().filter(|_| slow) {
            promise(claim, s, c, since(Family::Slow, claim), nowj);
        }
    }
    out
}

/// The first second of `promise` that `calls` leave unasked, if any.
fn gap(version: ApiVersion, calls: &[Call], promise: &Promise) -> Option<NaiveDateTime> {
    let mut spans: Vec<(NaiveDateTime, NaiveDateTime)> = calls
        .iter()
        .filter(|c| c.condition == promise.condition && asks_for(version, c, promise.kind, promise.status))
        .map(|c| span_bounds(&c.span))
        .collect();
    spans.sort();
    let mut covered_to = promise.from - Duration::seconds(1);
    for (from, to) in spans {
        if from > covered_to + Duration::seconds(1) && from <= promise.to {
            break;
        }
        covered_to = covered_to.max(to);
    }
    (covered_to < promise.to).then(|| covered_to + Duration::seconds(1))
}

fn version() -> impl Strategy<Value = ApiVersion> {
    prop_oneof![Just(ApiVersion::V2), Just(ApiVersion::V3)]
}

/// A shop as the validator accepts it: a non-empty set of statuses 1–5, look-back 1–3650.
fn shop() -> impl Strategy<Value = ShopPlan> {
    (version(), proptest::bits::u8::between(0, 5), any::<bool>(), 1u32..=3650).prop_map(
        |(version, bits, claims, lb)| {
            let mut statuses: Vec<u8> = (1..=5).filter(|s| bits & (1 << (s - 1)) != 0).collect();
            if statuses.is_empty() {
                statuses.push(2);
            }
            ShopPlan { version, statuses, claims, lookback_days: lb }
        },
    )
}

fn cadence() -> impl Strategy<Value = Cadence> {
    (1i64..=48 * 60, 1i64..=72 * 60, 0i64..=24 * 60, 1u32..=3650).prop_map(|(slow, long, overlap, follow)| Cadence {
        slow_every: Duration::minutes(slow),
        long_every: Duration::minutes(long),
        overlap: Duration::minutes(overlap),
        follow_days: follow,
    })
}

/// Where a shop stands: first import, or families last run anywhere from 400 days ago (an
/// outage) to two days ahead of this clock (the clock stepped back), open lines 0–400 days old.
fn progress() -> impl Strategy<Value = Progress> {
    let last = proptest::option::of(-2 * 86_400i64..=400 * 86_400);
    (any::<bool>(), proptest::collection::vec(last, 6), proptest::option::of(0i64..=400)).prop_map(
        |(imported, ago, oldest)| {
            let keys = [Family::Recent, Family::Slow, Family::Long]
                .into_iter()
                .flat_map(|f| [RowKind::Order, RowKind::Claim].map(|k| (f, k)));
            // Seconds before "now"; resolved against the clock in the test.
            let last = keys.zip(ago).filter_map(|(k, a)| a.map(|a| (k, DateTime::from_timestamp(a, 0).expect("t"))));
            Progress {
                imported,
                last: last.collect(),
                oldest_open: oldest.map(|d| NaiveDate::from_ymd_opt(1970, 1, 1).expect("d") + Duration::days(d)),
            }
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn every_call_is_accepted_and_every_promised_window_is_asked(
        shop in shop(),
        cadence in cadence(),
        raw in progress(),
        now_s in 1_600_000_000i64..1_950_000_000,
    ) {
        let now = DateTime::from_timestamp(now_s, 0).expect("an instant");
        // The generated times are offsets before `now`; open lines are days before today.
        let today = schemas::time::today_jst(now);
        let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("d");
        let p = Progress {
            imported: raw.imported,
            last: raw.last.iter().map(|(k, t)| (*k, now - Duration::seconds(t.timestamp()))).collect(),
            oldest_open: raw.oldest_open.map(|d| today - (d - epoch)),
        };
        let calls = poll(now, &shop, &cadence, &p);
        for call in &calls {
            let (method, params) = request(shop.version, call);
            prop_assert_eq!(sandbox::server::check_read(method, &params), Ok(()), "{:?}", call);
        }
        // (A shop fetching only status 4 whose clock went back has nothing due: no promise.)
        for promise in &promises(now, &shop, &cadence, &p) {
            prop_assert_eq!(gap(shop.version, &calls, promise), None, "unasked part of {:?}", promise);
        }
    }

    #[test]
    fn every_backfill_call_is_accepted_and_the_period_is_asked(
        shop in shop(),
        from_days in 0i64..=3650,
        len in 0i64..=3650,
    ) {
        let from = NaiveDate::from_ymd_opt(2016, 1, 1).expect("d") + Duration::days(from_days);
        let to = from + Duration::days(len);
        let calls = backfill(&shop, from, to);
        for call in &calls {
            let (method, params) = request(shop.version, call);
            prop_assert_eq!(sandbox::server::check_read(method, &params), Ok(()), "{:?}", call);
        }
        let end = to.and_hms_opt(23, 59, 59).expect("end");
        for &s in &shop.statuses {
            let promise = Promise { kind: RowKind::Order, status: s, condition: condition::ORDER_DATE,
                from: from.and_hms_opt(0, 0, 0).expect("midnight"), to: end };
            prop_assert_eq!(gap(shop.version, &calls, &promise), None, "{:?}", promise);
        }
    }
}

#[test]
fn a_gap_is_found_where_calls_leave_one() {
    // The checker itself can fail: two windows with a day between them.
    let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
    let call = |from, to| Call {
        kind: RowKind::Order,
        family: Family::Recent,
        status: 2,
        condition: condition::ORDER_DATE,
        span: Span::Days(Window { from: d(from), to: d(to) }),
    };
    let calls = [call("2026-01-01", "2026-01-10"), call("2026-01-12", "2026-01-20")];
    let promise = Promise {
        kind: RowKind::Order,
        status: 2,
        condition: condition::ORDER_DATE,
        from: d("2026-01-01").and_hms_opt(0, 0, 0).unwrap(),
        to: d("2026-01-20").and_hms_opt(23, 59, 59).unwrap(),
    };
    assert_eq!(gap(ApiVersion::V2, &calls, &promise), Some(d("2026-01-11").and_hms_opt(0, 0, 0).unwrap()));
    assert_eq!(gap(ApiVersion::V2, &calls[..1], &Promise { to: calls_end(&calls[0]), ..promise }), None);
}

fn calls_end(call: &Call) -> NaiveDateTime {
    span_bounds(&call.span).1
}
