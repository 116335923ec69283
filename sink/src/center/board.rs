//! The open alerts as the alert center holds them: compact (no texts), with their place on the
//! penalty clock and whether someone took them in hand. Built from ClickHouse at start and kept
//! current from every transition on `ALERTS`; counts and the queue are read from it. Pure.

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use schemas::alert::{Alert, AlertKind, AlertState, Severity};
use schemas::calendar::BusinessDays;

use super::urgency::{Dates, Urgency};

/// One open alert, without its texts (read by id for the rows shown): 112 bytes plus its id,
/// about 220 bytes in the set, so 100,000 open alerts hold about 22 MB (measured). Equal and hashed by `alert_id` alone (the set
/// of entries is its own index).
#[derive(Debug, Clone)]
pub struct Entry {
    pub alert_id: Box<str>,
    pub kind: AlertKind,
    /// Shared by every entry of the shop.
    pub shop: Arc<str>,
    pub order_no: u64,
    pub severity: Severity,
    pub opened_at: DateTime<Utc>,
    pub version: u64,
    pub dates: Dates,
    pub urgency: Urgency,
    pub acknowledged_at: Option<DateTime<Utc>>,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.alert_id == other.alert_id
    }
}

impl Eq for Entry {}

impl Hash for Entry {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.alert_id.hash(state)
    }
}

impl Borrow<str> for Entry {
    fn borrow(&self) -> &str {
        &self.alert_id
    }
}

/// What the page and `/api/alerts` filter on (`None`: any).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub shop: Option<String>,
    pub kind: Option<AlertKind>,
    pub severity: Option<Severity>,
    pub acknowledged: Option<bool>,
}

impl Filter {
    pub fn matches(&self, e: &Entry) -> bool {
        self.shop.as_deref().is_none_or(|s| *e.shop == *s)
            && self.kind.is_none_or(|k| e.kind == k)
            && self.severity.is_none_or(|s| e.severity == s)
            && self.acknowledged.is_none_or(|a| e.acknowledged_at.is_some() == a)
    }
}

/// Open alerts of one shop, counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub total: u64,
    pub acknowledged: u64,
    pub overdue: u64,
    pub by_kind: BTreeMap<AlertKind, u64>,
    pub by_severity: BTreeMap<&'static str, u64>,
    /// (kind, severity) → count.
    pub by_kind_severity: BTreeMap<(AlertKind, &'static str), u64>,
}

#[derive(Debug, Clone)]
pub struct Board {
    open: HashSet<Entry>,
    shops: HashSet<Arc<str>>,
    today: NaiveDate,
    days: BusinessDays,
}

impl Board {
    pub fn new(today: NaiveDate, days: BusinessDays) -> Board {
        Board { open: HashSet::new(), shops: HashSet::new(), today, days }
    }

    fn shop(&mut self, id: &str) -> Arc<str> {
        if let Some(s) = self.shops.get(id) {
            return s.clone();
        }
        let s: Arc<str> = id.into();
        self.shops.insert(s.clone());
        s
    }

    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    pub fn get(&self, alert_id: &str) -> Option<&Entry> {
        self.open.get(alert_id)
    }

    /// Applies a transition: an opening (or an acknowledgement, the open alert with
    /// `acknowledged_at`) adds or updates the alert unless a newer version is held; a
    /// resolution removes it.
    pub fn apply(&mut self, a: &Alert) {
        match a.state {
            AlertState::Resolved => {
                self.open.remove(a.alert_id.as_str());
            }
            AlertState::Open => {
                let held = self.open.get(a.alert_id.as_str());
                if held.is_some_and(|e| e.version > a.version) {
                    return;
                }
                let acknowledged_at = a.acknowledged_at.or(held.and_then(|e| e.acknowledged_at));
                let dates = dates_of(&a.details);
                let entry = Entry {
                    alert_id: a.alert_id.as_str().into(),
                    kind: a.kind,
                    shop: self.shop(&a.shop_id),
                    order_no: a.order_no,
                    severity: a.severity,
                    opened_at: a.opened_at,
                    version: a.version,
                    urgency: Urgency::of(dates, self.today, &self.days),
                    dates,
                    acknowledged_at,
                };
                self.open.replace(entry);
            }
        }
    }

    /// Marks an open alert as taken in hand; false when it is not open.
    pub fn acknowledge(&mut self, alert_id: &str, at: DateTime<Utc>) -> bool {
        match self.open.take(alert_id) {
            Some(mut e) => {
                e.acknowledged_at.get_or_insert(at);
                self.open.insert(e);
                true
            }
            None => false,
        }
    }

    /// Moves the clock to `today` (the queue's order changes only with the date).
    pub fn set_today(&mut self, today: NaiveDate) {
        if today == self.today {
            return;
        }
        self.today = today;
        let days = &self.days;
        self.open = std::mem::take(&mut self.open)
            .into_iter()
            .map(|mut e| {
                e.urgency = Urgency::of(e.dates, today, days);
                e
            })
            .collect();
    }

    /// True counts per shop of the open alerts `filter` lets through.
    pub fn counts(&self, filter: &Filter) -> BTreeMap<String, Counts> {
        let mut out: BTreeMap<String, Counts> = BTreeMap::new();
        for e in self.open.iter().filter(|e| filter.matches(e)) {
            let c = out.entry(e.shop.to_string()).or_default();
            c.total += 1;
            c.acknowledged += u64::from(e.acknowledged_at.is_some());
            c.overdue += u64::from(e.urgency.overdue());
            *c.by_kind.entry(e.kind).or_default() += 1;
            *c.by_severity.entry(e.severity.as_str()).or_default() += 1;
            *c.by_kind_severity.entry((e.kind, e.severity.as_str())).or_default() += 1;
        }
        out
    }

    /// The open alerts `filter` lets through, most urgent first (overdue, then fewest business
    /// days left, then critical before warning, then oldest): how many, and `limit` of them
    /// from `offset`.
    pub fn queue(&self, filter: &Filter, offset: usize, limit: usize) -> (usize, Vec<&Entry>) {
        let mut all: Vec<&Entry> = self.open.iter().filter(|e| filter.matches(e)).collect();
        let total = all.len();
        let key = |e: &Entry| (e.urgency.rank(), severity_rank(e.severity), e.opened_at);
        let cmp = |a: &&Entry, b: &&Entry| key(a).cmp(&key(b)).then_with(|| a.alert_id.cmp(&b.alert_id));
        let end = (offset + limit).min(total);
        if offset >= total {
            return (total, Vec::new());
        }
        // Only the page needs its order: partition around its end, then sort the head.
        if end < total {
            all.select_nth_unstable_by(end, cmp);
            all.truncate(end);
        }
        all.sort_by(cmp);
        (total, all.into_iter().skip(offset).collect())
    }
}

fn severity_rank(s: Severity) -> u8 {
    match s {
        Severity::Critical => 0,
        Severity::Warning => 1,
        Severity::Info => 2,
    }
}

/// `details.paid_at` (RFC 3339) and `details.ship_by` (a date) as JST dates.
pub fn dates_of(details: &serde_json::Value) -> Dates {
    let paid = details
        .get("paid_at")
        .and_then(|v| v.as_str())
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&schemas::time::jst()).date_naive());
    let ship_by = details.get("ship_by").and_then(|v| v.as_str()).and_then(|d| d.parse().ok());
    Dates { paid, ship_by }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn alert(id: &str, kind: AlertKind, shop: &str, details: serde_json::Value, version: u64) -> Alert {
        Alert {
            schema_version: 1,
            alert_id: id.into(),
            kind,
            shop_id: shop.into(),
            order_no: 1,
            pack_no: 1,
            state: AlertState::Open,
            severity: Severity::Warning,
            message: "m".into(),
            message_ja: "m".into(),
            details,
            opened_at: DateTime::from_timestamp(1_700_000_000 + version as i64, 0).unwrap(),
            updated_at: DateTime::UNIX_EPOCH,
            version,
            acknowledged_at: None,
        }
    }

    fn board() -> Board {
        Board::new("2026-12-10".parse().unwrap(), BusinessDays::default())
    }

    #[test]
    fn transitions_open_update_and_resolve_and_an_older_version_never_wins() {
        let mut b = board();
        let a = alert("a", AlertKind::ShipDateMissing, "s", json!({}), 2);
        b.apply(&a);
        b.apply(&Alert { version: 1, acknowledged_at: Some(DateTime::UNIX_EPOCH), ..a.clone() });
        assert_eq!(b.get("a").unwrap().acknowledged_at, None, "a stale message is ignored");
        let at = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        b.apply(&Alert { acknowledged_at: Some(at), ..a.clone() });
        assert_eq!(b.get("a").unwrap().acknowledged_at, Some(at), "an acknowledgement of the same version");
        b.apply(&a);
        assert_eq!(b.get("a").unwrap().acknowledged_at, Some(at), "a re-sent opening keeps it");
        b.apply(&Alert { state: AlertState::Resolved, version: 3, ..a });
        assert!(b.is_empty());
        assert!(!b.acknowledge("a", at), "only an open alert is acknowledged");
    }

    #[test]
    fn counts_are_true_counts_per_shop_and_follow_the_filter() {
        let mut b = board();
        for i in 0..2500u64 {
            let shop = if i % 5 == 0 { "small" } else { "big" };
            let kind = if i % 2 == 0 { AlertKind::ShipDateMissing } else { AlertKind::QuantityChanged };
            b.apply(&alert(&format!("x{i}"), kind, shop, json!({}), i));
        }
        b.acknowledge("x1", Utc::now());
        let all = b.counts(&Filter::default());
        assert_eq!((all["big"].total, all["small"].total), (2000, 500));
        assert_eq!(all["big"].by_kind[&AlertKind::QuantityChanged], 1000);
        assert_eq!(all["big"].acknowledged, 1);
        let f = Filter { acknowledged: Some(false), kind: Some(AlertKind::QuantityChanged), ..Filter::default() };
        assert_eq!(b.counts(&f)["big"].total, 999);
    }

    #[test]
    fn the_queue_puts_overdue_first_and_pages_without_gaps_or_repeats() {
        let mut b = board();
        b.apply(&alert("later", AlertKind::ShipDateMissing, "s", json!({"paid_at": "2026-12-09T01:00:00Z"}), 1));
        b.apply(&alert("undated", AlertKind::QuantityChanged, "s", json!({}), 2));
        b.apply(&alert("overdue", AlertKind::ShipDateOverdue, "s", json!({"ship_by": "2026-12-07"}), 3));
        b.apply(&alert("soon", AlertKind::ShipDateMissing, "s", json!({"paid_at": "2026-12-07T01:00:00Z"}), 4));
        let (total, page) = b.queue(&Filter::default(), 0, 10);
        let ids: Vec<&str> = page.iter().map(|e| &*e.alert_id).collect();
        assert_eq!((total, ids), (4, vec!["overdue", "soon", "later", "undated"]));
        let mut paged = Vec::new();
        for offset in [0, 1, 2, 3] {
            let (_, p) = b.queue(&Filter::default(), offset, 1);
            paged.extend(p.iter().map(|e| e.alert_id.to_string()));
        }
        assert_eq!(paged, ["overdue", "soon", "later", "undated"]);
        assert_eq!(b.queue(&Filter::default(), 9, 5).1.len(), 0);
    }

    #[test]
    fn a_new_day_moves_the_clock() {
        let mut b = board();
        b.apply(&alert("a", AlertKind::ShipDateMissing, "s", json!({"paid_at": "2026-12-09T01:00:00Z"}), 1));
        assert!(!b.get("a").unwrap().urgency.overdue());
        b.set_today("2026-12-16".parse().unwrap());
        assert!(b.get("a").unwrap().urgency.overdue());
    }
}
