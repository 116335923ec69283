//! What the page and `/api/summary` show, computed from the board and the snapshot. Pure.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use schemas::alert::AlertKind;
use serde::Serialize;

use super::board::{Board, Counts, Filter};
use super::charts::{Chart, Series, days_until};
use super::{ShopInfo, Snapshot};

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct KindSeverity {
    pub kind: AlertKind,
    pub severity: &'static str,
    pub count: u64,
}

/// Open alerts counted (true counts: every open alert, however many).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct AlertCounts {
    pub total: u64,
    pub acknowledged: u64,
    pub overdue: u64,
    pub by_kind: BTreeMap<AlertKind, u64>,
    pub by_severity: BTreeMap<&'static str, u64>,
    pub by_kind_severity: Vec<KindSeverity>,
}

impl From<&Counts> for AlertCounts {
    fn from(c: &Counts) -> Self {
        AlertCounts {
            total: c.total,
            acknowledged: c.acknowledged,
            overdue: c.overdue,
            by_kind: c.by_kind.clone(),
            by_severity: c.by_severity.clone(),
            by_kind_severity: c
                .by_kind_severity
                .iter()
                .map(|((kind, severity), n)| KindSeverity { kind: *kind, severity, count: *n })
                .collect(),
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LastError {
    pub at: DateTime<Utc>,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ShopSummary {
    pub shop_id: String,
    /// Canonical status → order lines.
    pub orders_by_status: BTreeMap<String, u64>,
    pub open_alerts: AlertCounts,
    pub last_poll: Option<DateTime<Utc>>,
    pub last_error: Option<LastError>,
    /// The last good poll is older than twice the shop's interval (or there was none).
    pub poll_stale: bool,
    pub writeback: bool,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Summary {
    pub generated_at: DateTime<Utc>,
    /// False while the open alerts are (re)loading: counts are not complete yet.
    pub alerts_loaded: bool,
    /// When orders and polls were last read (alerts are followed live).
    pub refreshed_at: Option<DateTime<Utc>>,
    pub refresh_error: Option<String>,
    pub shops: Vec<ShopSummary>,
    pub open_alerts: AlertCounts,
}

/// The figures of every shop (or only `shop`).
pub fn summary(
    (board, loaded): (&Board, bool),
    snap: &Snapshot,
    shops: &[ShopInfo],
    shop: Option<&str>,
    now: DateTime<Utc>,
) -> Summary {
    let counts = board.counts(&Filter { shop: shop.map(str::to_owned), ..Filter::default() });
    let mut ids: Vec<&str> = shops.iter().map(|s| s.id.as_str()).collect();
    let seen = snap.orders_by_status.iter().map(|(s, _, _)| s.as_str()).chain(counts.keys().map(String::as_str));
    for id in seen {
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    ids.retain(|id| shop.is_none_or(|s| s == *id));
    let shops_out: Vec<ShopSummary> = ids.into_iter().map(|id| shop_summary(id, &counts, snap, shops, now)).collect();
    let mut all = Counts::default();
    for c in counts.values() {
        all.total += c.total;
        all.acknowledged += c.acknowledged;
        all.overdue += c.overdue;
        c.by_kind.iter().for_each(|(k, n)| *all.by_kind.entry(*k).or_default() += n);
        c.by_severity.iter().for_each(|(k, n)| *all.by_severity.entry(k).or_default() += n);
        c.by_kind_severity.iter().for_each(|(k, n)| *all.by_kind_severity.entry(*k).or_default() += n);
    }
    Summary {
        generated_at: now,
        alerts_loaded: loaded,
        refreshed_at: snap.refreshed_at,
        refresh_error: snap.error.clone(),
        shops: shops_out,
        open_alerts: AlertCounts::from(&all),
    }
}

fn shop_summary(
    id: &str,
    counts: &BTreeMap<String, Counts>,
    snap: &Snapshot,
    shops: &[ShopInfo],
    now: DateTime<Utc>,
) -> ShopSummary {
    let info = shops.iter().find(|s| s.id == id);
    let fetch = snap.fetch.get(id).cloned().unwrap_or_default();
    let poll_stale = info.is_some_and(|i| {
        let limit = chrono::Duration::from_std(i.interval * 2).unwrap_or(chrono::Duration::MAX);
        fetch.last_success.is_none_or(|t| now - t > limit)
    });
    ShopSummary {
        shop_id: id.to_owned(),
        orders_by_status: snap
            .orders_by_status
            .iter()
            .filter(|(s, _, _)| s == id)
            .map(|(_, status, n)| (status.clone(), *n))
            .collect(),
        open_alerts: counts.get(id).map(AlertCounts::from).unwrap_or_default(),
        last_poll: fetch.last_success,
        last_error: fetch.last_error.map(|(at, message)| LastError { at, message }),
        poll_stale,
        writeback: info.is_some_and(|i| i.writeback),
    }
}

/// The three charts over the 30 days up to `today`, for every shop (or only `shop`).
pub fn charts(snap: &Snapshot, shop: Option<&str>, today: NaiveDate) -> Vec<Chart> {
    let days = days_until(today, super::feed::CHART_DAYS);
    let index = |d: &str| d.parse::<NaiveDate>().ok().and_then(|d| days.iter().position(|x| *x == d));
    let ours = |s: &str| shop.is_none_or(|x| x == s);
    let mut by_status: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for r in snap.orders_per_day.iter().filter(|r| ours(&r.shop_id)) {
        if let Some(i) = index(&r.day) {
            by_status.entry(r.status.clone()).or_insert_with(|| vec![0; days.len()])[i] += r.n;
        }
    }
    let (mut open_by_kind, mut opened, mut resolved) = (BTreeMap::new(), vec![0; days.len()], vec![0; days.len()]);
    for r in snap.alert_days.iter().filter(|r| ours(&r.shop_id)) {
        let (o, c) = (r.opened.parse::<NaiveDate>().ok(), r.resolved.parse::<NaiveDate>().ok());
        let line: &mut Vec<u64> = open_by_kind.entry(r.kind.clone()).or_insert_with(|| vec![0; days.len()]);
        for (i, d) in days.iter().enumerate() {
            if o.is_some_and(|o| o <= *d) && c.is_none_or(|c| c > *d) {
                line[i] += r.n;
            }
        }
        index(&r.opened).into_iter().for_each(|i| opened[i] += r.n);
        index(&r.resolved).into_iter().for_each(|i| resolved[i] += r.n);
    }
    let status_label = |s: &str| format!("{} / {s}", schemas::status::japanese_name(s).unwrap_or(s));
    let kind_label = |k: &str| format!("{} / {k}", AlertKind::parse(k).map(super::page::kind_ja).unwrap_or(k));
    let series = |m: BTreeMap<String, Vec<u64>>, label: &dyn Fn(&str) -> String| -> Vec<Series> {
        m.into_iter().map(|(key, values)| Series { label: label(&key), key, values }).collect()
    };
    vec![
        Chart {
            id: "orders-per-day",
            title: "日別注文数（ステータス別） / order lines per JST day by status".into(),
            days: days.clone(),
            series: series(by_status, &status_label),
        },
        Chart {
            id: "open-alerts",
            title: "未対応アラートの推移（種類別） / open alerts over time by kind".into(),
            days: days.clone(),
            series: series(open_by_kind, &kind_label),
        },
        Chart {
            id: "opened-resolved",
            title: "発生・解消数 / alerts opened vs resolved per day".into(),
            days,
            series: vec![
                Series { key: "opened".into(), label: "発生 / opened".into(), values: opened },
                Series { key: "resolved".into(), label: "解消 / resolved".into(), values: resolved },
            ],
        },
    ]
}
