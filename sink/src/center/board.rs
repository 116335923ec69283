//! The open alerts as the alert center holds them: compact (no texts), with their place on the
//! penalty clock and whether someone took them in hand. Built from ClickHouse at start and kept
//! current from every transition on `ALERTS`; counts and the queue are read from it. Pure.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use schemas::alert::{Alert, AlertKind, AlertState, Severity};
use schemas::calendar::BusinessDays;
use serde::Deserialize;

use super::urgency::{Dates, Urgency};

/// One open alert as the board hands it out (built for the rows asked for; the board itself
/// holds a smaller form).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub alert_id: Box<str>,
    pub kind: AlertKind,
    pub shop: Arc<str>,
    pub order_no: u64,
    pub severity: Severity,
    pub opened_at: DateTime<Utc>,
    pub version: u64,
    pub dates: Dates,
    pub urgency: Urgency,
    pub acknowledged_at: Option<DateTime<Utc>>,
}

/// What names an open alert: every producer's id is `<kind>:<shop>:<rest>`, so only `rest` is
/// stored (the shop's name is shared), and an order alert's `<order>:<version>` as two numbers.
/// 40 bytes, nothing on the heap for an order alert.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Key {
    kind: AlertKind,
    shop: Arc<str>,
    rest: Rest,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Rest {
    /// `<order>:<version that opened it>`.
    Line(u64, u64),
    Text(Box<str>),
}

impl Rest {
    fn of(rest: &str) -> Rest {
        let line = rest.split_once(':').and_then(|(o, v)| {
            let (o2, v2): (u64, u64) = (o.parse().ok()?, v.parse().ok()?);
            // Only when writing the numbers back gives the same text (no leading zeros, signs).
            (o2.to_string() == o && v2.to_string() == v).then_some(Rest::Line(o2, v2))
        });
        line.unwrap_or_else(|| Rest::Text(rest.into()))
    }
}

impl std::fmt::Display for Rest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rest::Line(o, v) => write!(f, "{o}:{v}"),
            Rest::Text(t) => f.write_str(t),
        }
    }
}

/// The rest of an open alert: 48 bytes. With its key and the map's own slack, 100,000 open
/// alerts hold about 10 MB.
#[derive(Debug, Clone, Copy)]
struct Held {
    order_no: u64,
    version: u64,
    opened_at: u32,
    acknowledged_at: Option<u32>,
    dates: Dates,
    /// Business days left to the deadline today (what the queue sorts by).
    days_left: Option<i32>,
    overdue: bool,
    severity: Severity,
}

/// An alert transition as the board reads it from `ALERTS`: only what it keeps (the texts are
/// skipped, ids borrowed from the message).
#[derive(Debug, Deserialize)]
pub struct Seen<'a> {
    #[serde(borrow)]
    pub alert_id: Cow<'a, str>,
    pub kind: AlertKind,
    #[serde(borrow)]
    pub shop_id: Cow<'a, str>,
    pub order_no: u64,
    pub state: AlertState,
    pub severity: Severity,
    pub opened_at: DateTime<Utc>,
    pub version: u64,
    #[serde(default)]
    pub acknowledged_at: Option<DateTime<Utc>>,
    #[serde(default, borrow)]
    pub details: SeenDetails<'a>,
}

#[derive(Debug, Default, Deserialize)]
pub struct SeenDetails<'a> {
    #[serde(default, borrow)]
    pub paid_at: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub ship_by: Option<Cow<'a, str>>,
}

impl<'a> Seen<'a> {
    /// A full alert (as read from ClickHouse) in the board's terms.
    pub fn of(a: &'a Alert) -> Seen<'a> {
        Seen {
            alert_id: Cow::Borrowed(&a.alert_id),
            shop_id: Cow::Borrowed(&a.shop_id),
            details: SeenDetails::of_json(&a.details),
            ..Seen::of_fields(a)
        }
    }

    /// An owned copy, for the sink to hand over (`feed::Tap`).
    pub fn owned(a: &Alert) -> Seen<'static> {
        let text = |k: &str| a.details.get(k).and_then(|v| v.as_str()).map(|t| Cow::Owned(t.to_owned()));
        Seen {
            alert_id: Cow::Owned(a.alert_id.clone()),
            shop_id: Cow::Owned(a.shop_id.clone()),
            details: SeenDetails { paid_at: text("paid_at"), ship_by: text("ship_by") },
            ..Seen::of_fields(a)
        }
    }

    fn of_fields(a: &Alert) -> Seen<'static> {
        Seen {
            alert_id: Cow::Borrowed(""),
            kind: a.kind,
            shop_id: Cow::Borrowed(""),
            order_no: a.order_no,
            state: a.state,
            severity: a.severity,
            opened_at: a.opened_at,
            version: a.version,
            acknowledged_at: a.acknowledged_at,
            details: SeenDetails::default(),
        }
    }

    fn dates(&self) -> Dates {
        self.details.dates()
    }
}

impl<'a> SeenDetails<'a> {
    /// `paid_at` and `ship_by` of an alert's details, borrowed.
    fn of_json(details: &'a serde_json::Value) -> SeenDetails<'a> {
        let text = |k: &str| details.get(k).and_then(|v| v.as_str()).map(Cow::Borrowed);
        SeenDetails { paid_at: text("paid_at"), ship_by: text("ship_by") }
    }

    /// As JST dates.
    fn dates(&self) -> Dates {
        let paid = self
            .paid_at
            .as_deref()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&schemas::time::jst()).date_naive());
        Dates { paid, ship_by: self.ship_by.as_deref().and_then(|d| d.parse().ok()) }
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
    fn matches(&self, k: &Key, h: &Held) -> bool {
        self.shop.as_deref().is_none_or(|s| *k.shop == *s)
            && self.kind.is_none_or(|kind| k.kind == kind)
            && self.severity.is_none_or(|s| h.severity == s)
            && self.acknowledged.is_none_or(|a| h.acknowledged_at.is_some() == a)
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

/// `open` is a B-tree, not a hash map: a hash map doubles its table when it grows past 7/8 full
/// and holds both tables while it moves, so 115,000 open alerts (one bench run) took a 262,144-slot
/// table beside the 131,072-slot one, 35 MB at that moment; the tree grows a node at a time
/// (about 13 MB for the same alerts; docs/benchmark.md).
#[derive(Debug, Clone)]
pub struct Board {
    open: BTreeMap<Key, Held>,
    shops: HashSet<Arc<str>>,
    today: NaiveDate,
    days: BusinessDays,
}

fn secs(t: DateTime<Utc>) -> u32 {
    u32::try_from(t.timestamp()).unwrap_or(0)
}

fn time(secs: u32) -> DateTime<Utc> {
    DateTime::from_timestamp(i64::from(secs), 0).unwrap_or_default()
}

impl Board {
    pub fn new(today: NaiveDate, days: BusinessDays) -> Board {
        Board { open: BTreeMap::new(), shops: HashSet::new(), today, days }
    }

    fn shop(&mut self, id: &str) -> Arc<str> {
        if let Some(s) = self.shops.get(id) {
            return s.clone();
        }
        let s: Arc<str> = id.into();
        self.shops.insert(s.clone());
        s
    }

    /// The key of `alert_id` (`None` when it is not `<kind>:<known shop>:<rest>`: then no open
    /// alert has it).
    fn key(&self, alert_id: &str) -> Option<Key> {
        let mut parts = alert_id.splitn(3, ':');
        let (kind, shop, rest) = (parts.next()?, parts.next()?, parts.next()?);
        Some(Key { kind: AlertKind::parse(kind)?, shop: self.shops.get(shop)?.clone(), rest: Rest::of(rest) })
    }

    fn entry(&self, k: &Key, h: &Held) -> Entry {
        Entry {
            alert_id: format!("{}:{}:{}", k.kind, k.shop, k.rest).into(),
            kind: k.kind,
            shop: k.shop.clone(),
            order_no: h.order_no,
            severity: h.severity,
            opened_at: time(h.opened_at),
            version: h.version,
            dates: h.dates,
            urgency: Urgency::of(h.dates, self.today, &self.days),
            acknowledged_at: h.acknowledged_at.map(time),
        }
    }

    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    pub fn get(&self, alert_id: &str) -> Option<Entry> {
        let k = self.key(alert_id)?;
        self.open.get(&k).map(|h| self.entry(&k, h))
    }

    /// Applies a transition: an opening (or an acknowledgement, the open alert with
    /// `acknowledged_at`) adds or updates the alert unless a newer version is held; a
    /// resolution removes it. An id not of the form `<kind>:<shop>:<rest>` is not kept.
    pub fn apply(&mut self, a: &Seen<'_>) {
        let prefix = format!("{}:{}:", a.kind, a.shop_id);
        let Some(rest) = a.alert_id.strip_prefix(prefix.as_str()) else {
            tracing::warn!(alert_id = %a.alert_id, "alert center: an alert id not of the form <kind>:<shop>:…; not shown");
            return;
        };
        let key = Key { kind: a.kind, shop: self.shop(&a.shop_id), rest: Rest::of(rest) };
        if a.state == AlertState::Resolved {
            self.open.remove(&key);
            return;
        }
        let held = self.open.get(&key);
        if held.is_some_and(|h| h.version > a.version) {
            return;
        }
        let acknowledged_at = a.acknowledged_at.map(secs).or(held.and_then(|h| h.acknowledged_at));
        let dates = a.dates();
        let urgency = Urgency::of(dates, self.today, &self.days);
        let h = Held {
            order_no: a.order_no,
            version: a.version,
            opened_at: secs(a.opened_at),
            acknowledged_at,
            dates,
            days_left: urgency.days_left,
            overdue: urgency.overdue(),
            severity: a.severity,
        };
        self.open.insert(key, h);
    }

    /// Marks an open alert as taken in hand; false when it is not open.
    pub fn acknowledge(&mut self, alert_id: &str, at: DateTime<Utc>) -> bool {
        let Some(k) = self.key(alert_id) else { return false };
        match self.open.get_mut(&k) {
            Some(h) => {
                h.acknowledged_at.get_or_insert(secs(at));
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
        for h in self.open.values_mut() {
            let u = Urgency::of(h.dates, today, &self.days);
            (h.days_left, h.overdue) = (u.days_left, u.overdue());
        }
    }

    /// True counts per shop of the open alerts `filter` lets through.
    pub fn counts(&self, filter: &Filter) -> BTreeMap<String, Counts> {
        let mut out: BTreeMap<String, Counts> = BTreeMap::new();
        for (k, h) in self.open.iter().filter(|(k, h)| filter.matches(k, h)) {
            let c = out.entry(k.shop.to_string()).or_default();
            c.total += 1;
            c.acknowledged += u64::from(h.acknowledged_at.is_some());
            c.overdue += u64::from(h.overdue);
            *c.by_kind.entry(k.kind).or_default() += 1;
            *c.by_severity.entry(h.severity.as_str()).or_default() += 1;
            *c.by_kind_severity.entry((k.kind, h.severity.as_str())).or_default() += 1;
        }
        out
    }

    /// The open alerts `filter` lets through, most urgent first (overdue, then fewest business
    /// days left, then critical before warning, then oldest): how many, and `limit` of them
    /// from `offset`.
    pub fn queue(&self, filter: &Filter, offset: usize, limit: usize) -> (usize, Vec<Entry>) {
        let mut all: Vec<(&Key, &Held)> = self.open.iter().filter(|(k, h)| filter.matches(k, h)).collect();
        let total = all.len();
        let rank = |h: &Held| match h.days_left {
            Some(d) if d < 0 => (0u8, d),
            Some(d) => (1, d),
            None => (2, 0),
        };
        let key = |h: &Held| (rank(h), severity_rank(h.severity), h.opened_at);
        let cmp = |a: &(&Key, &Held), b: &(&Key, &Held)| key(a.1).cmp(&key(b.1)).then_with(|| a.0.cmp(b.0));
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
        (total, all.into_iter().skip(offset).map(|(k, h)| self.entry(k, h)).collect())
    }
}

/// Critical first (the queue's and the digests' order).
pub fn severity_rank(s: Severity) -> u8 {
    match s {
        Severity::Critical => 0,
        Severity::Warning => 1,
        Severity::Info => 2,
    }
}

/// `details.paid_at` (RFC 3339) and `details.ship_by` (a date) as JST dates.
pub fn dates_of(details: &serde_json::Value) -> Dates {
    SeenDetails::of_json(details).dates()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn alert(id: &str, kind: AlertKind, shop: &str, details: serde_json::Value, version: u64) -> Alert {
        Alert {
            schema_version: 1,
            alert_id: format!("{kind}:{shop}:{id}"),
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

    fn apply(b: &mut Board, a: &Alert) {
        b.apply(&Seen::of(a));
    }

    fn board() -> Board {
        Board::new("2026-12-10".parse().unwrap(), BusinessDays::default())
    }

    #[test]
    fn transitions_open_update_and_resolve_and_an_older_version_never_wins() {
        let mut b = board();
        let a = alert("a", AlertKind::ShipDateMissing, "s", json!({}), 2);
        apply(&mut b, &a);
        apply(&mut b, &Alert { version: 1, acknowledged_at: Some(DateTime::UNIX_EPOCH), ..a.clone() });
        assert_eq!(b.get("ship_date_missing:s:a").unwrap().acknowledged_at, None, "a stale message is ignored");
        let at = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        apply(&mut b, &Alert { acknowledged_at: Some(at), ..a.clone() });
        assert_eq!(
            b.get("ship_date_missing:s:a").unwrap().acknowledged_at,
            Some(at),
            "an acknowledgement of the same version"
        );
        apply(&mut b, &a);
        assert_eq!(b.get("ship_date_missing:s:a").unwrap().acknowledged_at, Some(at), "a re-sent opening keeps it");
        apply(&mut b, &Alert { state: AlertState::Resolved, version: 3, ..a });
        assert!(b.is_empty());
        assert!(!b.acknowledge("ship_date_missing:s:a", at), "only an open alert is acknowledged");
    }

    #[test]
    fn counts_are_true_counts_per_shop_and_follow_the_filter() {
        let mut b = board();
        for i in 0..2500u64 {
            let shop = if i % 5 == 0 { "small" } else { "big" };
            let kind = if i % 2 == 0 { AlertKind::ShipDateMissing } else { AlertKind::QuantityChanged };
            apply(&mut b, &alert(&format!("x{i}"), kind, shop, json!({}), i));
        }
        assert!(b.acknowledge("quantity_changed:big:x1", Utc::now()));
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
        apply(&mut b, &alert("later", AlertKind::ShipDateMissing, "s", json!({"paid_at": "2026-12-09T01:00:00Z"}), 1));
        apply(&mut b, &alert("undated", AlertKind::QuantityChanged, "s", json!({}), 2));
        apply(&mut b, &alert("overdue", AlertKind::ShipDateOverdue, "s", json!({"ship_by": "2026-12-07"}), 3));
        apply(&mut b, &alert("soon", AlertKind::ShipDateMissing, "s", json!({"paid_at": "2026-12-07T01:00:00Z"}), 4));
        let (total, page) = b.queue(&Filter::default(), 0, 10);
        let ids: Vec<&str> = page.iter().map(|e| e.alert_id.rsplit(':').next().unwrap()).collect();
        assert_eq!((total, ids), (4, vec!["overdue", "soon", "later", "undated"]));
        let mut paged = Vec::new();
        for offset in [0, 1, 2, 3] {
            let (_, p) = b.queue(&Filter::default(), offset, 1);
            paged.extend(p.iter().map(|e| e.alert_id.rsplit(':').next().unwrap().to_owned()));
        }
        assert_eq!(paged, ["overdue", "soon", "later", "undated"]);
        assert_eq!(b.queue(&Filter::default(), 9, 5).1.len(), 0);
    }

    #[test]
    fn an_id_not_of_the_common_form_is_not_kept_and_ids_come_back_whole() {
        let mut b = board();
        apply(&mut b, &Alert { alert_id: "odd-id".into(), ..alert("x", AlertKind::ItemAdded, "s", json!({}), 1) });
        assert!(b.is_empty());
        let a = alert("credentials:2027-01-15", AlertKind::CredentialsExpiring, "my-shop", json!({}), 1);
        apply(&mut b, &a);
        assert_eq!(b.get(&a.alert_id).map(|e| e.alert_id.to_string()), Some(a.alert_id.clone()));
        assert!(b.get("credentials_expiring:other-shop:credentials:2027-01-15").is_none());
    }

    #[test]
    fn ids_are_held_as_numbers_only_when_they_read_back_the_same() {
        assert_eq!(Rest::of("1090000101:1764806400000000"), Rest::Line(1090000101, 1764806400000000));
        for text in ["007:1", "1:2:3", "edit-key:edit-1", "2027-01-15"] {
            assert_eq!(Rest::of(text), Rest::Text(text.into()));
            assert_eq!(Rest::of(text).to_string(), text);
        }
    }

    #[test]
    fn a_transition_is_read_from_its_message_without_the_texts() {
        let a = alert(
            "9:1",
            AlertKind::ShipDateMissing,
            "s",
            json!({"paid_at": "2026-12-09T01:00:00Z", "ship_by": "2026-12-12"}),
            5,
        );
        let json = serde_json::to_vec(&a).unwrap();
        let seen: Seen<'_> = serde_json::from_slice(&json).unwrap();
        let mut b = board();
        b.apply(&seen);
        let e = b.get("ship_date_missing:s:9:1").unwrap();
        assert_eq!((e.version, e.dates.ship_by.map(|d| d.to_string())), (5, Some("2026-12-12".into())));
        assert!(matches!(seen.alert_id, Cow::Borrowed(_)), "ids are borrowed from the message");
    }

    #[test]
    fn a_new_day_moves_the_clock() {
        let mut b = board();
        apply(&mut b, &alert("a", AlertKind::ShipDateMissing, "s", json!({"paid_at": "2026-12-09T01:00:00Z"}), 1));
        assert!(!b.get("ship_date_missing:s:a").unwrap().urgency.overdue());
        b.set_today("2026-12-16".parse().unwrap());
        assert!(b.get("ship_date_missing:s:a").unwrap().urgency.overdue());
    }
}
