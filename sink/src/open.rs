//! The alert engine's open alerts: what it must know to decide (is this alert open?) and to
//! resolve (its id, order, cart, version), and nothing more. Their English and Japanese texts and
//! details stay in ClickHouse: a resolution is published with texts read back from
//! `alerts FINAL` (see [`needs_texts`]). About 200 bytes per open alert instead of about 2 KB, so
//! the sink's memory stays flat when a backlog opens alerts by the hundred thousand.
//!
//! Indexed by (kind, shop) as well: the rules that look for "every open X of this shop" (a
//! shipped line settling its cart's `item_removed`, a poll bringing back `order_vanished` lines)
//! read a handful of entries instead of scanning every open alert for every row.

use std::collections::{HashMap, HashSet};

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

#[derive(Debug)]
struct Slim {
    alert_id: Box<str>,
    order_no: u64,
    pack_no: u64,
    version: u64,
}

#[derive(Debug, Default)]
pub struct OpenAlerts {
    all: HashMap<Box<str>, Slim>,
    /// "kind\u{1f}shop" → subjects.
    by_kind_shop: HashMap<Box<str>, HashSet<Box<str>>>,
}

fn joined(kind: &str, shop: &str) -> String {
    format!("{kind}\u{1f}{shop}")
}

fn flat(key: &Key) -> String {
    format!("{}\u{1f}{}\u{1f}{}", key.0, key.1, key.2)
}

/// True for an alert handed out by [`OpenAlerts::remove`]: its texts, severity, details and
/// opening time are to be read back from ClickHouse before it is published or stored.
pub fn needs_texts(a: &Alert) -> bool {
    a.message.is_empty() && a.message_ja.is_empty() && a.details.is_null()
}

impl OpenAlerts {
    pub fn contains_key(&self, key: &Key) -> bool {
        self.all.contains_key(flat(key).as_str())
    }

    pub fn insert(&mut self, key: Key, alert: &Alert) {
        let slim = Slim {
            alert_id: alert.alert_id.as_str().into(),
            order_no: alert.order_no,
            pack_no: alert.pack_no,
            version: alert.version,
        };
        self.all.insert(flat(&key).into(), slim);
        self.by_kind_shop.entry(joined(&key.0, &key.1).into()).or_default().insert(key.2.into());
    }

    /// The alert, without its texts (see [`needs_texts`]), if it was open.
    pub fn remove(&mut self, key: &Key) -> Option<Alert> {
        let slim = self.all.remove(flat(key).as_str())?;
        let group = joined(&key.0, &key.1);
        if let Some(subjects) = self.by_kind_shop.get_mut(group.as_str()) {
            subjects.remove(key.2.as_str());
            if subjects.is_empty() {
                self.by_kind_shop.remove(group.as_str());
            }
        }
        Some(Alert {
            schema_version: ALERT_SCHEMA_VERSION,
            alert_id: slim.alert_id.into(),
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
        let Some(subjects) = self.by_kind_shop.get(joined(kind, shop).as_str()) else { return Vec::new() };
        subjects
            .iter()
            .filter_map(|s| {
                let key: Key = (kind.to_owned(), shop.to_owned(), s.to_string());
                self.all.get(flat(&key).as_str()).map(|slim| (key, slim.pack_no))
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        self.all.len()
    }

    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
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
}
