//! Digests: the transitions of a shop gathered into one message (counts by kind, the most
//! urgent few, a link to the alert center). Pure.
//!
//! A shop's digest goes once the shop has been quiet for [`QUIET`] (a poll's transitions come
//! within seconds of each other, so a first import of hundreds of alerts is one message), and
//! at the latest [`MAX_WAIT`] after its first transition.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use schemas::alert::{Alert, AlertKind, AlertState};
use schemas::calendar::BusinessDays;

use crate::center::board::{dates_of, severity_rank};
use crate::center::urgency::Urgency;

pub const QUIET: Duration = Duration::from_secs(3);
pub const MAX_WAIT: Duration = Duration::from_secs(30);
/// The most urgent openings a digest names.
pub const URGENT: usize = 5;

/// One shop's transitions since its last digest.
#[derive(Debug, Clone)]
pub struct Pending {
    first: Instant,
    last: Instant,
    opened: BTreeMap<AlertKind, u64>,
    resolved: BTreeMap<AlertKind, u64>,
    /// The most urgent openings, most urgent first (at most [`URGENT`]).
    urgent: Vec<(Urgency, Alert)>,
}

/// The digests not yet sent, per shop. Memory: counts and five alerts per shop.
#[derive(Debug, Default)]
pub struct Digests {
    shops: BTreeMap<String, Pending>,
}

impl Digests {
    pub fn add(&mut self, a: &Alert, now: Instant, today: NaiveDate) {
        let p = self.shops.entry(a.shop_id.clone()).or_insert_with(|| Pending {
            first: now,
            last: now,
            opened: BTreeMap::new(),
            resolved: BTreeMap::new(),
            urgent: Vec::new(),
        });
        p.last = p.last.max(now);
        match a.state {
            AlertState::Resolved => *p.resolved.entry(a.kind).or_default() += 1,
            AlertState::Open => {
                *p.opened.entry(a.kind).or_default() += 1;
                let u = Urgency::of(dates_of(&a.details), today, &BusinessDays::default());
                let key = |(u, a): &(Urgency, Alert)| (u.rank(), severity_rank(a.severity));
                let entry = (u, a.clone());
                let at = p.urgent.partition_point(|x| key(x) <= key(&entry));
                if at < URGENT {
                    p.urgent.insert(at, entry);
                    p.urgent.truncate(URGENT);
                }
            }
        }
    }

    /// The shops whose digest is due at `now` (all with `all`), taken out, as (shop, text).
    pub fn due(&mut self, now: Instant, all: bool, page_url: &str) -> Vec<(String, String)> {
        let due: Vec<String> = self
            .shops
            .iter()
            .filter(|(_, p)| all || now.duration_since(p.last) >= QUIET || now.duration_since(p.first) >= MAX_WAIT)
            .map(|(s, _)| s.clone())
            .collect();
        due.into_iter().filter_map(|s| self.shops.remove(&s).map(|p| (s.clone(), text(&s, &p, page_url)))).collect()
    }

    /// When the next digest may be due.
    pub fn next_due(&self) -> Option<Instant> {
        self.shops.values().map(|p| (p.last + QUIET).min(p.first + MAX_WAIT)).min()
    }

    pub fn is_empty(&self) -> bool {
        self.shops.is_empty()
    }

    /// Shops with a digest not yet taken out.
    pub fn len(&self) -> usize {
        self.shops.len()
    }
}

/// The digest's text (Slack-compatible, Japanese first).
pub fn text(shop: &str, p: &Pending, page_url: &str) -> String {
    let (opened, resolved): (u64, u64) = (p.opened.values().sum(), p.resolved.values().sum());
    let mut t =
        format!("[{shop}] 🔔 新しいアラート {opened}件 / {opened} new · ✅ 解消 {resolved}件 / {resolved} resolved\n");
    for (kind, n) in &p.opened {
        t.push_str(&format!("・{} {kind}: {n}\n", kind.japanese()));
    }
    if !p.urgent.is_empty() {
        t.push_str("最も緊急 / most urgent:\n");
    }
    for (u, a) in &p.urgent {
        let order = if a.order_no == 0 { String::new() } else { format!("注文 {} ", a.order_no) };
        let clock = match (u.deadline, u.days_left) {
            (Some(d), Some(left)) if left < 0 => format!("期限 {d} を{}営業日超過 / overdue — ", -left),
            (Some(d), Some(left)) => format!("期限 {d} あと{left}営業日 / {left} days left — "),
            _ => String::new(),
        };
        t.push_str(&format!("・{order}{clock}{}\n", a.message_ja));
    }
    let sep = if page_url.contains('?') { '&' } else { '?' };
    t.push_str(&format!("アラートセンター / alert center: {page_url}{sep}shop={shop}"));
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;
    use schemas::alert::Severity;
    use serde_json::json;

    fn alert(n: u64, kind: AlertKind, state: AlertState, details: serde_json::Value) -> Alert {
        Alert {
            schema_version: 1,
            alert_id: format!("a{n}"),
            kind,
            shop_id: if n.is_multiple_of(2) { "even".into() } else { "odd".into() },
            order_no: n,
            pack_no: n,
            state,
            severity: Severity::Warning,
            message: format!("en {n}"),
            message_ja: format!("ja {n}"),
            details,
            opened_at: DateTime::UNIX_EPOCH,
            updated_at: DateTime::UNIX_EPOCH,
            version: 1,
            acknowledged_at: None,
        }
    }

    #[test]
    fn a_burst_is_one_digest_per_shop_with_counts_and_the_most_urgent() {
        let (mut d, t0, today) = (Digests::default(), Instant::now(), "2026-12-10".parse().unwrap());
        for n in 0..400u64 {
            let details =
                if n == 7 { json!({"ship_by": "2026-12-01"}) } else { json!({"paid_at": "2026-12-09T00:00:00Z"}) };
            d.add(
                &alert(n, AlertKind::ShipDateMissing, AlertState::Open, details),
                t0 + Duration::from_millis(n),
                today,
            );
        }
        d.add(&alert(3, AlertKind::QuantityChanged, AlertState::Resolved, json!({})), t0, today);
        let last = t0 + Duration::from_millis(399);
        assert!(d.due(last + Duration::from_secs(1), false, "http://c/").is_empty(), "not quiet yet");
        assert!(d.next_due().is_some_and(|t| t > last && t <= last + QUIET));
        let sent = d.due(last + QUIET, false, "http://c/");
        assert_eq!(sent.len(), 2, "one per shop");
        let odd = &sent.iter().find(|(s, _)| s == "odd").unwrap().1;
        assert!(odd.starts_with("[odd] 🔔 新しいアラート 200件 / 200 new · ✅ 解消 1件"), "{odd}");
        assert!(odd.contains("・注文 7 期限 2026-12-01 を7営業日超過"), "the overdue one first: {odd}");
        assert_eq!(odd.matches("\n・注文").count(), URGENT);
        assert!(odd.ends_with("alert center: http://c/?shop=odd"), "{odd}");
        assert!(d.is_empty());
    }

    #[test]
    fn a_shop_that_never_goes_quiet_still_gets_its_digest() {
        let (mut d, t0, today) = (Digests::default(), Instant::now(), "2026-12-10".parse().unwrap());
        for s in 0..40u64 {
            d.add(&alert(1, AlertKind::ItemAdded, AlertState::Open, json!({})), t0 + Duration::from_secs(s), today);
        }
        assert_eq!(d.due(t0 + MAX_WAIT, false, "http://c/").len(), 1);
    }
}
