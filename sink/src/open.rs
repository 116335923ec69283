//! The alert engine's open alerts: what it must know to decide (is this alert open?) and to
//! resolve (its id, order, cart, version), and nothing more. Their English and Japanese texts and
//! details stay in ClickHouse: a resolution is published with texts read back from
//! `alerts FINAL` (see [`needs_texts`]). About 70 bytes per open alert instead of about 2 KB, so
//! the sink's memory stays flat when a backlog opens alerts by the hundred thousand.
//!
//! Indexed by (kind, shop) as well: the rules that look for "every open X of this shop" (a
//! shipped line settling its cart's `item_removed`, a poll bringing back `order_vanished` lines)
//! read a handful of entries instead of scanning every open alert for every row.

use std::collections::HashMap;

use chrono::DateTime;
use schemas::alert::{ALERT_SCHEMA_VERSION, Alert, AlertState};

/// (kind, shop, subject): the subject is the order number, or `edit:<key>` for
/// `qoo10_correction_required`.
pub type Key = (String, String, String);

/// The key an alert is held under.
pub fn key_of(a: &Alert) -> Key {
    let subject = match a.details.get("edit_key").and_then(|k| k.as_str()) {
        Some(k) if a.kind == "qoo10_correction_required" => format!("edit:{k}"),
        _ => a.order_no.to_string(),
    };
    (a.kind.clone(), a.shop_id.clone(), subject)
}

/// What identifies an open alert within its (kind, shop): the order number, held as a number,
/// or any other subject (`edit:<key>`).
#[derive(Debug, PartialEq, Eq, Hash)]
enum Subject {
    Order(u64),
    Other(Box<str>),
}

impl Subject {
    fn of(s: &str) -> Subject {
        match s.parse::<u64>() {
            Ok(n) if n.to_string() == s => Subject::Order(n),
            _ => Subject::Other(s.into()),
        }
    }

    fn text(&self) -> String {
        match self {
            Subject::Order(n) => n.to_string(),
            Subject::Other(s) => s.to_string(),
        }
    }
}

/// 40 bytes. The id is not held when it is the one [`crate::alerts::open`] derives
/// (`kind:shop:order:version`), which is every alert but `qoo10_correction_required`.
#[derive(Debug)]
struct Slim {
    order_no: u64,
    pack_no: u64,
    version: u64,
    other_id: Option<Box<str>>,
}

fn derived_id(kind: &str, shop: &str, order_no: u64, version: u64) -> String {
    format!("{kind}:{shop}:{order_no}:{version}")
}

/// Open alerts by "kind\u{1f}shop", then by subject: one table answers "is it open?", "remove
/// it" and "every open X of this shop". About 70 bytes per open alert.
#[derive(Debug, Default)]
pub struct OpenAlerts {
    groups: HashMap<Box<str>, HashMap<Subject, Slim>>,
}

fn joined(kind: &str, shop: &str) -> String {
    format!("{kind}\u{1f}{shop}")
}

/// True for an alert handed out by [`OpenAlerts::remove`]: its texts, severity, details and
/// opening time are to be read back from ClickHouse before it is published or stored.
pub fn needs_texts(a: &Alert) -> bool {
    a.message.is_empty() && a.message_ja.is_empty() && a.details.is_null()
}

impl OpenAlerts {
    pub fn contains_key(&self, key: &Key) -> bool {
        self.groups.get(joined(&key.0, &key.1).as_str()).is_some_and(|g| g.contains_key(&Subject::of(&key.2)))
    }

    pub fn insert(&mut self, key: Key, alert: &Alert) {
        let derived = derived_id(&key.0, &key.1, alert.order_no, alert.version);
        let slim = Slim {
            order_no: alert.order_no,
            pack_no: alert.pack_no,
            version: alert.version,
            other_id: (alert.alert_id != derived).then(|| alert.alert_id.as_str().into()),
        };
        self.groups.entry(joined(&key.0, &key.1).into()).or_default().insert(Subject::of(&key.2), slim);
    }

    /// The alert, without its texts (see [`needs_texts`]), if it was open.
    pub fn remove(&mut self, key: &Key) -> Option<Alert> {
        let name = joined(&key.0, &key.1);
        let group = self.groups.get_mut(name.as_str())?;
        let slim = group.remove(&Subject::of(&key.2))?;
        if group.is_empty() {
            self.groups.remove(name.as_str());
        }
        let alert_id = match slim.other_id {
            Some(id) => id.into(),
            None => derived_id(&key.0, &key.1, slim.order_no, slim.version),
        };
        Some(Alert {
            schema_version: ALERT_SCHEMA_VERSION,
            alert_id,
            kind: key.0.clone(),
            shop_id: key.1.clone(),
            order_no: slim.order_no,
            pack_no: slim.pack_no,
            state: AlertState::Open,
            severity: String::new(),
            message: String::new(),
            message_ja: String::new(),
            details: serde_json::Value::Null,
            opened_at: DateTime::UNIX_EPOCH,
            updated_at: DateTime::UNIX_EPOCH,
            version: slim.version,
        })
    }

    /// The open alerts of one kind for one shop: their keys and carts.
    pub fn of(&self, kind: &str, shop: &str) -> Vec<(Key, u64)> {
        let Some(group) = self.groups.get(joined(kind, shop).as_str()) else { return Vec::new() };
        group.iter().map(|(s, slim)| ((kind.to_owned(), shop.to_owned(), s.text()), slim.pack_no)).collect()
    }

    pub fn len(&self) -> usize {
        self.groups.values().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(kind: &str, shop: &str, order_no: u64) -> Alert {
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
        for a in [alert("item_removed", "a", 1), alert("item_removed", "a", 2), alert("x", "a", 3)] {
            open.insert(key_of(&a), &a);
        }
        assert_eq!(open.of("item_removed", "a").len(), 2);
        assert!(open.of("item_removed", "b").is_empty());
        let k = key_of(&alert("item_removed", "a", 1));
        assert!(open.contains_key(&k));
        let stub = open.remove(&k).expect("was open");
        assert!(needs_texts(&stub) && !needs_texts(&alert("x", "a", 3)));
        assert_eq!((stub.alert_id.as_str(), stub.pack_no, stub.version), ("item_removed:a:1:1", 7, 1));
        assert!(open.remove(&k).is_none() && !open.contains_key(&k));
        assert_eq!(open.of("item_removed", "a"), vec![(("item_removed".into(), "a".into(), "2".into()), 7)]);
        assert_eq!(open.len(), 2);
    }

    #[test]
    fn ids_not_derived_from_the_key_are_kept() {
        let mut open = OpenAlerts::default();
        let mut edit = alert("qoo10_correction_required", "a", 5);
        edit.alert_id = "qoo10_correction_required:a:5:e-1".into();
        edit.details = serde_json::json!({"edit_key": "5"});
        let key = key_of(&edit);
        assert_eq!(key.2, "edit:5");
        open.insert(key.clone(), &edit);
        // An order number with a leading zero is not the number: it stays text.
        let odd: Key = ("x".into(), "a".into(), "007".into());
        open.insert(odd.clone(), &alert("x", "a", 7));
        assert!(open.contains_key(&odd) && !open.contains_key(&("x".into(), "a".into(), "7".into())));
        assert_eq!(open.remove(&key).expect("open").alert_id, "qoo10_correction_required:a:5:e-1");
        assert_eq!(open.of("x", "a")[0].0.2, "007");
        assert_eq!((open.len(), open.is_empty()), (1, false));
    }
}
