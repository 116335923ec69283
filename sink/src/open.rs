//! The alert engine's open alerts: what it must know to decide (is this alert open?) and to
//! resolve (its id, order, cart, version), and nothing more. Their English and Japanese texts and
//! details stay in ClickHouse: a resolution is published with texts read back from
//! `alerts FINAL` (see [`needs_texts`]). About 70 bytes per open alert instead of about 2 KB, so
//! the sink's memory stays flat when a backlog opens alerts by the hundred thousand.
//!
//! Indexed by (kind, shop) as well: the rules that look for "every open X of this shop" (a
//! shipped line settling its cart's `item_removed`, a poll bringing back `order_vanished` lines)
//! read a handful of entries instead of scanning every open alert for every row.
//!
//! [`Pending`] is the same set as a plan sees it while it is being made: changes are recorded
//! beside it, and applied ([`OpenAlerts::apply`]) only once what they caused is durable.

use std::collections::{HashMap, HashSet};

use chrono::DateTime;
use schemas::alert::{ALERT_SCHEMA_VERSION, Alert, AlertKind, AlertState, Severity};

use crate::keys::{AlertKey, Subject};

/// 40 bytes. The id is not held when it is the one [`crate::alerts::open`] derives
/// (`kind:shop:order:version`), which is every alert but `qoo10_correction_required`.
#[derive(Debug)]
struct Slim {
    order_no: u64,
    pack_no: u64,
    version: u64,
    other_id: Option<Box<str>>,
}

fn derived_id(kind: AlertKind, shop: &str, order_no: u64, version: u64) -> String {
    format!("{kind}:{shop}:{order_no}:{version}")
}

/// Open alerts by (kind, shop), then by subject: one table answers "is it open?", "remove it"
/// and "every open X of this shop". About 70 bytes per open alert.
#[derive(Debug, Default)]
pub struct OpenAlerts {
    groups: HashMap<(AlertKind, Box<str>), HashMap<Subject, Slim>>,
}

/// True for an alert handed out without its texts (by [`OpenAlerts::get`]): its texts,
/// severity, details and opening time are to be read back from ClickHouse before it is published
/// or stored.
pub fn needs_texts(a: &Alert) -> bool {
    a.message.is_empty() && a.message_ja.is_empty() && a.details.is_null()
}

impl OpenAlerts {
    fn group(&self, key: &AlertKey) -> Option<&HashMap<Subject, Slim>> {
        self.groups.get(&(key.kind, key.shop.as_str().into()))
    }

    pub fn contains_key(&self, key: &AlertKey) -> bool {
        self.group(key).is_some_and(|g| g.contains_key(&key.subject))
    }

    pub fn insert(&mut self, key: AlertKey, alert: &Alert) {
        let derived = derived_id(key.kind, &key.shop, alert.order_no, alert.version);
        let slim = Slim {
            order_no: alert.order_no,
            pack_no: alert.pack_no,
            version: alert.version,
            other_id: (alert.alert_id != derived).then(|| alert.alert_id.as_str().into()),
        };
        self.groups.entry((key.kind, key.shop.into())).or_default().insert(key.subject, slim);
    }

    /// The open alert, without its texts (see [`needs_texts`]).
    pub fn get(&self, key: &AlertKey) -> Option<Alert> {
        let slim = self.group(key)?.get(&key.subject)?;
        let alert_id = match &slim.other_id {
            Some(id) => id.to_string(),
            None => derived_id(key.kind, &key.shop, slim.order_no, slim.version),
        };
        Some(Alert {
            schema_version: ALERT_SCHEMA_VERSION,
            alert_id,
            kind: key.kind,
            shop_id: key.shop.clone(),
            order_no: slim.order_no,
            pack_no: slim.pack_no,
            state: AlertState::Open,
            severity: Severity::Warning,
            message: String::new(),
            message_ja: String::new(),
            details: serde_json::Value::Null,
            opened_at: DateTime::UNIX_EPOCH,
            updated_at: DateTime::UNIX_EPOCH,
            version: slim.version,
            acknowledged_at: None,
        })
    }

    pub fn remove(&mut self, key: &AlertKey) {
        let name = (key.kind, Box::<str>::from(key.shop.as_str()));
        if let Some(group) = self.groups.get_mut(&name) {
            group.remove(&key.subject);
            if group.is_empty() {
                self.groups.remove(&name);
            }
        }
    }

    /// The open alerts of one kind for one shop: their keys and carts.
    pub fn of(&self, kind: AlertKind, shop: &str) -> Vec<(AlertKey, u64)> {
        let Some(group) = self.groups.get(&(kind, shop.into())) else { return Vec::new() };
        group
            .iter()
            .map(|(s, slim)| (AlertKey { kind, shop: shop.to_owned(), subject: s.clone() }, slim.pack_no))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.groups.values().map(HashMap::len).sum()
    }

    /// The open alerts about an order line opened by a version before `version` (µs): the
    /// candidates for [`crate::engine::Engine::settle`].
    pub fn order_alerts_before(&self, version: u64) -> Vec<AlertKey> {
        let mut out = Vec::new();
        for ((kind, shop), group) in &self.groups {
            for (subject, slim) in group {
                if slim.version < version && matches!(subject, Subject::Order(n) if *n != 0) {
                    out.push(AlertKey { kind: *kind, shop: shop.to_string(), subject: subject.clone() });
                }
            }
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// What a plan decided, now that it is durable: resolutions first, then openings (an alert
    /// can resolve and another open under the same key in one plan).
    pub fn apply(&mut self, changes: AlertChanges) {
        for key in &changes.closed {
            self.remove(key);
        }
        for (name, group) in changes.opened.groups {
            self.groups.entry(name).or_default().extend(group);
        }
    }
}

/// The open-alert changes a plan made, not yet applied: its openings as compact as the set's
/// own entries (a first import opens thousands per batch), its resolutions by key.
#[derive(Debug, Default)]
pub struct AlertChanges {
    opened: OpenAlerts,
    closed: HashSet<AlertKey>,
}

/// The open alerts as a plan being made sees them: the engine's set, with the plan's own
/// openings and resolutions on top. Nothing here changes the set itself; every question is a
/// lookup, never a scan of what the plan did so far.
#[derive(Debug)]
pub struct Pending<'a> {
    open: &'a OpenAlerts,
    changes: AlertChanges,
}

impl<'a> Pending<'a> {
    pub fn new(open: &'a OpenAlerts) -> Self {
        Pending { open, changes: AlertChanges::default() }
    }

    pub fn contains(&self, key: &AlertKey) -> bool {
        self.changes.opened.contains_key(key) || (!self.changes.closed.contains(key) && self.open.contains_key(key))
    }

    /// Records an opening.
    pub fn open(&mut self, key: AlertKey, alert: &Alert) {
        self.changes.opened.insert(key, alert);
    }

    /// Records a resolution and hands out the alert it resolves, without its texts (see
    /// [`needs_texts`]: an alert this plan opened gets them from its opening transition).
    pub fn close(&mut self, key: &AlertKey) -> Option<Alert> {
        if let Some(alert) = self.changes.opened.get(key) {
            self.changes.opened.remove(key);
            return Some(alert);
        }
        if self.changes.closed.contains(key) {
            return None;
        }
        let alert = self.open.get(key)?;
        self.changes.closed.insert(key.clone());
        Some(alert)
    }

    /// The open alerts of one kind for one shop, with their carts.
    pub fn of(&self, kind: AlertKind, shop: &str) -> Vec<(AlertKey, u64)> {
        let mut out: Vec<(AlertKey, u64)> =
            self.open.of(kind, shop).into_iter().filter(|(k, _)| !self.changes.closed.contains(k)).collect();
        out.extend(self.changes.opened.of(kind, shop));
        out
    }

    pub fn into_changes(self) -> AlertChanges {
        self.changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(kind: AlertKind, shop: &str, order_no: u64) -> Alert {
        serde_json::from_value(serde_json::json!({
            "schema_version": 1, "alert_id": format!("{kind}:{shop}:{order_no}:1"), "kind": kind, "shop_id": shop,
            "order_no": order_no, "pack_no": 7, "state": "open", "severity": "warning", "message": "m",
            "message_ja": "m", "details": {}, "opened_at": "2026-11-29T00:00:00Z", "updated_at": "2026-11-29T00:00:00Z",
            "version": 1
        }))
        .expect("alert")
    }

    #[test]
    fn keeps_what_decisions_need_and_indexes_by_kind_and_shop() {
        let mut open = OpenAlerts::default();
        for a in [
            alert(AlertKind::ItemRemoved, "a", 1),
            alert(AlertKind::ItemRemoved, "a", 2),
            alert(AlertKind::ItemAdded, "a", 3),
        ] {
            open.insert(AlertKey::of(&a), &a);
        }
        assert_eq!(open.of(AlertKind::ItemRemoved, "a").len(), 2);
        assert!(open.of(AlertKind::ItemRemoved, "b").is_empty());
        let k = AlertKey::of(&alert(AlertKind::ItemRemoved, "a", 1));
        assert!(open.contains_key(&k));
        let stub = open.get(&k).expect("was open");
        assert!(needs_texts(&stub) && !needs_texts(&alert(AlertKind::ItemAdded, "a", 3)));
        assert_eq!((stub.alert_id.as_str(), stub.pack_no, stub.version), ("item_removed:a:1:1", 7, 1));
        open.remove(&k);
        assert!(open.get(&k).is_none() && !open.contains_key(&k));
        assert_eq!(open.of(AlertKind::ItemRemoved, "a"), vec![(AlertKey::order(AlertKind::ItemRemoved, "a", 2), 7)]);
        assert_eq!(open.len(), 2);
    }

    #[test]
    fn ids_not_derived_from_the_key_are_kept() {
        let mut open = OpenAlerts::default();
        let mut edit = alert(AlertKind::Qoo10CorrectionRequired, "a", 5);
        edit.alert_id = "qoo10_correction_required:a:5:e-1".into();
        edit.details = serde_json::json!({"edit_key": "quantity:5"});
        let key = AlertKey::of(&edit);
        assert_eq!(key.subject, Subject::Edit("quantity:5".into()));
        open.insert(key.clone(), &edit);
        assert_eq!(open.get(&key).expect("open").alert_id, "qoo10_correction_required:a:5:e-1");
        assert_eq!((open.len(), open.is_empty()), (1, false));
    }

    /// A plan sees its own changes; the set changes only when the plan is applied.
    #[test]
    fn a_pending_plan_changes_nothing_until_applied() {
        let mut open = OpenAlerts::default();
        let old = alert(AlertKind::ShipDateMissing, "a", 1);
        open.insert(AlertKey::of(&old), &old);
        let new = alert(AlertKind::ItemAdded, "a", 2);
        let mut p = Pending::new(&open);
        assert!(p.close(&AlertKey::of(&old)).is_some_and(|a| needs_texts(&a)));
        assert!(p.close(&AlertKey::of(&old)).is_none(), "resolved once");
        p.open(AlertKey::of(&new), &new);
        assert!(p.contains(&AlertKey::of(&new)) && !p.contains(&AlertKey::of(&old)));
        assert_eq!(p.of(AlertKind::ItemAdded, "a").len(), 1);
        let changes = p.into_changes();
        assert!(open.contains_key(&AlertKey::of(&old)) && !open.contains_key(&AlertKey::of(&new)), "not applied yet");
        open.apply(changes);
        assert!(!open.contains_key(&AlertKey::of(&old)) && open.contains_key(&AlertKey::of(&new)));
        // Opened and resolved within one plan: the same alert (its texts come from its opening
        // transition in the same plan), and nothing left open.
        let mut p = Pending::new(&open);
        let brief = alert(AlertKind::QuantityChanged, "a", 3);
        p.open(AlertKey::of(&brief), &brief);
        assert!(p.close(&AlertKey::of(&brief)).is_some_and(|a| needs_texts(&a) && a.alert_id == brief.alert_id));
        open.apply(p.into_changes());
        assert!(!open.contains_key(&AlertKey::of(&brief)));
    }

    /// Derived ids are not held (the memory figure of docs/benchmark.md); alerts with half
    /// their texts are not stubs; "before" is strict.
    #[test]
    fn derived_ids_cost_nothing_and_before_is_strict() {
        let mut open = OpenAlerts::default();
        assert!(open.is_empty());
        let a = alert(AlertKind::ItemRemoved, "a", 1);
        open.insert(AlertKey::of(&a), &a);
        let slim = &open.groups[&(AlertKind::ItemRemoved, "a".into())][&Subject::Order(1)];
        assert!(slim.other_id.is_none(), "the id is derived: not held");
        assert_eq!(derived_id(AlertKind::ItemRemoved, "a", 1, 1), a.alert_id);
        assert!(open.order_alerts_before(1).is_empty(), "opened by version 1: not before 1");
        assert_eq!(open.order_alerts_before(2), vec![AlertKey::of(&a)]);
        for (message, message_ja, details) in [("", "m", serde_json::Value::Null), ("m", "", serde_json::Value::Null)] {
            let half = Alert { message: message.into(), message_ja: message_ja.into(), details, ..a.clone() };
            assert!(!needs_texts(&half), "{half:?}");
        }
        assert!(!needs_texts(&Alert { message: String::new(), message_ja: String::new(), ..a }));
    }
}
