//! Canonical order statuses and how Qoo10 codes map to them.
//!
//! The mapping is data: [`StatusMap::default`] is the contract's table, and `destination_status`
//! (where new paid orders land, GoQSystem's 新規受付) replaces the entry for shipping status 2.

use std::collections::BTreeMap;

/// The canonical statuses of the contract, with their Japanese names.
pub const CANONICAL_STATUSES: &[(&str, &str)] = &[
    ("awaiting_payment", "入金待ち"),
    ("new", "新規受付"),
    ("awaiting_shipment", "発送待ち"),
    ("shipped", "発送済み"),
    ("delivered", "配送完了"),
    ("cancel_requested", "キャンセル要請"),
    ("cancelled", "キャンセル"),
    ("return_requested", "返品要請"),
    ("returned", "返品"),
    ("exchange_requested", "交換"),
    ("refunded", "返金"),
    ("partially_refunded", "一部返金"),
];

/// Qoo10 ShippingStat codes that exist (1..=5).
pub const SHIPPING_STATUS_CODES: &[u8] = &[1, 2, 3, 4, 5];
/// Qoo10 ClaimStat codes that exist.
pub const CLAIM_STATUS_CODES: &[u8] = &[1, 2, 3, 4, 5, 6, 11, 12, 13, 14, 15, 16];

pub fn is_canonical(status: &str) -> bool {
    CANONICAL_STATUSES.iter().any(|(s, _)| *s == status)
}

pub fn japanese_name(status: &str) -> Option<&'static str> {
    CANONICAL_STATUSES.iter().find(|(s, _)| *s == status).map(|(_, ja)| *ja)
}

/// Claim codes that end a line's life: cancelled (3, 16), returned (6), refunded (14, 15).
pub const TERMINAL_CLAIMS: &[u8] = &[3, 6, 14, 15, 16];
/// Claim codes of a cancellation, requested or done.
pub const CANCEL_CLAIMS: &[u8] = &[1, 2, 3, 16];

/// A line is followed until it is delivered, cancelled, returned or refunded.
pub fn is_terminal(shipping_status: u8, claim_status: u8) -> bool {
    TERMINAL_CLAIMS.contains(&claim_status) || (claim_status == 0 && shipping_status == 5)
}

/// Qoo10 code → canonical status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusMap {
    pub shipping: BTreeMap<u8, String>,
    pub claim: BTreeMap<u8, String>,
}

impl Default for StatusMap {
    fn default() -> Self {
        let shipping =
            [(1, "awaiting_payment"), (2, "new"), (3, "awaiting_shipment"), (4, "shipped"), (5, "delivered")];
        let claim = [
            (1, "cancel_requested"),
            (2, "cancel_requested"),
            (3, "cancelled"),
            (16, "cancelled"),
            (4, "return_requested"),
            (5, "return_requested"),
            (6, "returned"),
            (11, "exchange_requested"),
            (12, "exchange_requested"),
            (13, "exchange_requested"),
            (14, "refunded"),
            // 未受取部分返金完了: part of the line was refunded; it is not a full refund.
            (15, "partially_refunded"),
        ];
        StatusMap {
            shipping: shipping.into_iter().map(|(k, v)| (k, v.to_owned())).collect(),
            claim: claim.into_iter().map(|(k, v)| (k, v.to_owned())).collect(),
        }
    }
}

impl StatusMap {
    /// The default table with shipping status 2 landing in `destination_status`.
    pub fn with_destination(destination_status: &str) -> Self {
        let mut map = StatusMap::default();
        map.shipping.insert(2, destination_status.to_owned());
        map
    }

    /// The canonical status of an order line. A claim (non-zero) overrides the shipping status.
    /// `None` when a code is not in the table: such a row is a dead letter, never a guess.
    pub fn canonical(&self, shipping_status: Option<u8>, claim_status: u8) -> Option<&str> {
        if claim_status != 0 {
            return self.claim.get(&claim_status).map(String::as_str);
        }
        self.shipping.get(&shipping_status?).map(String::as_str)
    }
}

/// Extracts the code from a Qoo10 status label: `"On request(2)"` → 2, also a bare `"2"`,
/// and legacy spellings such as `"Delivere(5)"`: only the digits in the last parentheses count.
pub fn parse_status_label(label: &str) -> Option<u8> {
    let t = label.trim();
    if let Ok(n) = t.parse::<u8>() {
        return Some(n);
    }
    let open = t.rfind('(')?;
    let close = t[open..].find(')')? + open;
    if !t[close + 1..].trim().is_empty() {
        return None;
    }
    t[open + 1..close].trim().parse().ok()
}

/// The label Qoo10 sends for a shipping status code (the sandbox uses these).
pub fn shipping_label(code: u8) -> &'static str {
    match code {
        1 => "Awaiting shipping(1)",
        2 => "On request(2)",
        3 => "Seller confirm(3)",
        4 => "On delivery(4)",
        5 => "Delivered(5)",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_parse_to_codes() {
        for (label, code) in [
            ("On request(2)", Some(2)),
            ("Seller confirm(3)", Some(3)),
            ("Delivere(5)", Some(5)),
            ("On Waiting(1)", Some(1)),
            (" 4 ", Some(4)),
            ("Delivery(4) ", Some(4)),
            ("On request", None),
            ("(x)", None),
            ("On request(2) later", None),
        ] {
            assert_eq!(parse_status_label(label), code, "{label}");
        }
    }

    #[test]
    fn contract_table_and_claim_override() {
        let m = StatusMap::default();
        assert_eq!(m.canonical(Some(1), 0), Some("awaiting_payment"));
        assert_eq!(m.canonical(Some(2), 0), Some("new"));
        assert_eq!(m.canonical(Some(5), 0), Some("delivered"));
        assert_eq!(m.canonical(Some(3), 3), Some("cancelled"));
        assert_eq!(m.canonical(None, 16), Some("cancelled"));
        assert_eq!(m.canonical(Some(2), 12), Some("exchange_requested"));
        assert_eq!(m.canonical(Some(2), 15), Some("partially_refunded"));
        assert_eq!(m.canonical(Some(5), 14), Some("refunded"));
        assert_eq!(m.canonical(Some(9), 0), None);
        assert_eq!(m.canonical(Some(2), 7), None);
        assert_eq!(m.canonical(None, 0), None);
        for s in m.shipping.values().chain(m.claim.values()) {
            assert!(is_canonical(s), "{s}");
        }
    }

    #[test]
    fn destination_status_replaces_status_two_only() {
        let m = StatusMap::with_destination("awaiting_shipment");
        assert_eq!(m.canonical(Some(2), 0), Some("awaiting_shipment"));
        assert_eq!(m.canonical(Some(1), 0), Some("awaiting_payment"));
    }
}
