//! The alert engine's open alerts, by (kind, shop, subject), with an index by (kind, shop): the
//! rules that look for "every open X of this shop" (a shipped line settling its cart's
//! `item_removed`, a poll bringing back `order_vanished` lines) read a handful of entries instead
//! of scanning every open alert for every row, which made the sink's work per order grow with
//! the number of open alerts.

use std::collections::{HashMap, HashSet};

use schemas::alert::Alert;

/// (kind, shop, subject): the subject is the order number, or `edit:<key>`.
pub type Key = (String, String, String);

#[derive(Debug, Default)]
pub struct OpenAlerts {
    all: HashMap<Key, Alert>,
    by_kind_shop: HashMap<(String, String), HashSet<Key>>,
}

impl OpenAlerts {
    pub fn contains_key(&self, key: &Key) -> bool {
        self.all.contains_key(key)
    }

    pub fn insert(&mut self, key: Key, alert: Alert) {
        self.by_kind_shop.entry((key.0.clone(), key.1.clone())).or_default().insert(key.clone());
        self.all.insert(key, alert);
    }

    pub fn remove(&mut self, key: &Key) -> Option<Alert> {
        let alert = self.all.remove(key)?;
        let group = (key.0.clone(), key.1.clone());
        if let Some(keys) = self.by_kind_shop.get_mut(&group) {
            keys.remove(key);
            if keys.is_empty() {
                self.by_kind_shop.remove(&group);
            }
        }
        Some(alert)
    }

    /// The open alerts of one kind for one shop.
    pub fn of<'a>(&'a self, kind: &str, shop: &str) -> impl Iterator<Item = (&'a Key, &'a Alert)> + 'a {
        self.by_kind_shop
            .get(&(kind.to_owned(), shop.to_owned()))
            .into_iter()
            .flatten()
            .filter_map(|k| self.all.get_key_value(k))
    }

    pub fn len(&self) -> usize {
        self.all.len()
    }

    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }
}

impl FromIterator<(Key, Alert)> for OpenAlerts {
    fn from_iter<I: IntoIterator<Item = (Key, Alert)>>(iter: I) -> Self {
        let mut open = OpenAlerts::default();
        for (k, a) in iter {
            open.insert(k, a);
        }
        open
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(kind: &str, shop: &str, order_no: u64) -> (Key, Alert) {
        let a: Alert = serde_json::from_value(serde_json::json!({
            "schema_version": 1, "alert_id": format!("{kind}:{shop}:{order_no}:1"), "kind": kind, "shop_id": shop,
            "order_no": order_no, "pack_no": 7, "state": "open", "severity": "warning", "message": "m",
            "message_ja": "m", "details": {}, "opened_at": "2026-11-29T00:00:00Z", "updated_at": "2026-11-29T00:00:00Z",
            "version": 1
        }))
        .expect("alert");
        ((kind.into(), shop.into(), order_no.to_string()), a)
    }

    #[test]
    fn the_index_follows_inserts_and_removals() {
        let mut open: OpenAlerts =
            [alert("item_removed", "a", 1), alert("item_removed", "a", 2), alert("x", "a", 3)].into_iter().collect();
        assert_eq!(open.of("item_removed", "a").count(), 2);
        assert_eq!(open.of("item_removed", "b").count(), 0);
        let (k, _) = alert("item_removed", "a", 1);
        assert!(open.remove(&k).is_some() && open.remove(&k).is_none());
        assert_eq!(open.of("item_removed", "a").map(|(k, _)| k.2.clone()).collect::<Vec<_>>(), vec!["2"]);
        assert_eq!(open.len(), 2);
    }
}
