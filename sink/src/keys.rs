//! What the sink's state is keyed by: an order line, a cart, an alert, an OMS expectation.

use schemas::alert::{Alert, AlertKind};

/// One order line of a shop (`orderNo`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LineKey {
    pub shop: String,
    pub order_no: u64,
}

impl LineKey {
    pub fn new(shop: &str, order_no: u64) -> Self {
        LineKey { shop: shop.to_owned(), order_no }
    }
}

/// One cart of a shop (`packNo`): the lines paid together.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CartKey {
    pub shop: String,
    pub pack_no: u64,
}

/// What an alert is about within its kind and shop: an order line, or (for
/// `qoo10_correction_required`) the OMS edit it waits for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Subject {
    Order(u64),
    Edit(String),
}

/// An alert's place in the engine: at most one alert is open per key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AlertKey {
    pub kind: AlertKind,
    pub shop: String,
    pub subject: Subject,
}

impl AlertKey {
    pub fn order(kind: AlertKind, shop: &str, order_no: u64) -> Self {
        AlertKey { kind, shop: shop.to_owned(), subject: Subject::Order(order_no) }
    }

    /// The key of `qoo10_correction_required` for the edit with this key (`quantity:5`).
    pub fn edit(shop: &str, edit_key: &str) -> Self {
        AlertKey {
            kind: AlertKind::Qoo10CorrectionRequired,
            shop: shop.to_owned(),
            subject: Subject::Edit(edit_key.to_owned()),
        }
    }

    /// The key an alert is held under.
    pub fn of(a: &Alert) -> Self {
        match a.details.get("edit_key").and_then(|k| k.as_str()) {
            Some(k) if a.kind == AlertKind::Qoo10CorrectionRequired => AlertKey::edit(&a.shop_id, k),
            _ => AlertKey::order(a.kind, &a.shop_id, a.order_no),
        }
    }
}

/// An OMS expectation: the shop and what the edit is about (`OmsEdit::key`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExpectationKey {
    pub shop: String,
    pub edit_key: String,
}
