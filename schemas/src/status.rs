//! Canonical order statuses and how Qoo10 codes map to them.
//!
//! The mapping is data: [`StatusMap::default`] is the contract's table, and `destination_status`
//! (where new paid orders land, GoQSystem's 新規受付) replaces the entry for shipping status 2.

use std::collections::BTreeMap;

/// The canonical statuses of the contract (`orders.status`), with their Japanese names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    AwaitingPayment,
    New,
    AwaitingShipment,
    Shipped,
    Delivered,
    CancelRequested,
    Cancelled,
    ReturnRequested,
    Returned,
    ExchangeRequested,
    Refunded,
    PartiallyRefunded,
}

impl Status {
    pub const ALL: [Status; 12] = [
        Status::AwaitingPayment,
        Status::New,
        Status::AwaitingShipment,
        Status::Shipped,
        Status::Delivered,
        Status::CancelRequested,
        Status::Cancelled,
        Status::ReturnRequested,
        Status::Returned,
        Status::ExchangeRequested,
        Status::Refunded,
        Status::PartiallyRefunded,
    ];

    pub fn as_str(self) -> &'static str {
        self.names().0
    }

    /// As QSM and GoQSystem users say it.
    pub fn japanese(self) -> &'static str {
        self.names().1
    }

    fn names(self) -> (&'static str, &'static str) {
        match self {
            Status::AwaitingPayment => ("awaiting_payment", "入金待ち"),
            Status::New => ("new", "新規受付"),
            Status::AwaitingShipment => ("awaiting_shipment", "発送待ち"),
            Status::Shipped => ("shipped", "発送済み"),
            Status::Delivered => ("delivered", "配送完了"),
            Status::CancelRequested => ("cancel_requested", "キャンセル要請"),
            Status::Cancelled => ("cancelled", "キャンセル"),
            Status::ReturnRequested => ("return_requested", "返品要請"),
            Status::Returned => ("returned", "返品"),
            Status::ExchangeRequested => ("exchange_requested", "交換"),
            Status::Refunded => ("refunded", "返金"),
            Status::PartiallyRefunded => ("partially_refunded", "一部返金"),
        }
    }

    pub fn parse(text: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Qoo10 ShippingStat codes that exist (1..=5).
pub const SHIPPING_STATUS_CODES: &[u8] = &[1, 2, 3, 4, 5];
/// Qoo10 ClaimStat codes that exist.
pub const CLAIM_STATUS_CODES: &[u8] = &[1, 2, 3, 4, 5, 6, 11, 12, 13, 14, 15, 16];

pub fn is_canonical(status: &str) -> bool {
    Status::parse(status).is_some()
}

pub fn japanese_name(status: &str) -> Option<&'static str> {
    Status::parse(status).map(Status::japanese)
}

/// What a claim is about. Codes within a group move on without a date of their own
/// (1 → 2, 4 → 5, 11 → 12 → 13); between groups, never.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimGroup {
    /// 1, 2 requested; 3, 16 done.
    Cancellation,
    /// 4, 5 requested; 6 done.
    Return,
    /// 11, 12, 13.
    Exchange,
    /// 14 (full), 15 (partial): non-receipt refunds, done.
    Refund,
}

impl ClaimGroup {
    /// The group of a claim code; `None` for 0 (no claim) and codes Qoo10 does not have.
    pub fn of(code: u8) -> Option<ClaimGroup> {
        match code {
            1 | 2 | 3 | 16 => Some(ClaimGroup::Cancellation),
            4..=6 => Some(ClaimGroup::Return),
            11..=13 => Some(ClaimGroup::Exchange),
            14 | 15 => Some(ClaimGroup::Refund),
            _ => None,
        }
    }
}

/// Claim codes that end a line's life: cancelled (3, 16), returned (6), refunded (14, 15).
pub const TERMINAL_CLAIMS: &[u8] = &[3, 6, 14, 15, 16];

/// A cancellation, requested or done.
pub fn is_cancellation(claim_status: u8) -> bool {
    ClaimGroup::of(claim_status) == Some(ClaimGroup::Cancellation)
}

/// A line is followed until it is delivered, cancelled, returned or refunded.
pub fn is_terminal(shipping_status: u8, claim_status: u8) -> bool {
    TERMINAL_CLAIMS.contains(&claim_status) || (claim_status == 0 && shipping_status == 5)
}

/// Qoo10 code → canonical status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusMap {
    pub shipping: BTreeMap<u8, Status>,
    pub claim: BTreeMap<u8, Status>,
}

impl Default for StatusMap {
    fn default() -> Self {
        use Status::*;
        let shipping = [(1, AwaitingPayment), (2, New), (3, AwaitingShipment), (4, Shipped), (5, Delivered)];
        let claim = [
            (1, CancelRequested),
            (2, CancelRequested),
            (3, Cancelled),
            (16, Cancelled),
            (4, ReturnRequested),
            (5, ReturnRequested),
            (6, Returned),
            (11, ExchangeRequested),
            (12, ExchangeRequested),
            (13, ExchangeRequested),
            (14, Refunded),
            // 未受取部分返金完了: part of the line was refunded; it is not a full refund.
            (15, PartiallyRefunded),
        ];
        StatusMap { shipping: shipping.into_iter().collect(), claim: claim.into_iter().collect() }
    }
}

impl StatusMap {
    /// The default table with shipping status 2 landing in `destination_status`.
    pub fn with_destination(destination_status: Status) -> Self {
        let mut map = StatusMap::default();
        map.shipping.insert(2, destination_status);
        map
    }

    /// The canonical status of an order line. A claim (non-zero) overrides the shipping status.
    /// `None` when a code is not in the table: such a row is a dead letter, never a guess.
    pub fn canonical(&self, shipping_status: Option<u8>, claim_status: u8) -> Option<Status> {
        if claim_status != 0 {
            return self.claim.get(&claim_status).copied();
        }
        self.shipping.get(&shipping_status?).copied()
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
    fn names_in_both_languages_as_the_contract_gives_them() {
        let table: Vec<(String, &str, &str)> =
            Status::ALL.iter().map(|s| (s.to_string(), s.as_str(), s.japanese())).collect();
        assert_eq!(table[1], ("new".into(), "new", "新規受付"));
        assert_eq!(table[11], ("partially_refunded".into(), "partially_refunded", "一部返金"));
        assert_eq!(japanese_name("cancel_requested"), Some("キャンセル要請"));
        assert_eq!(japanese_name("awaiting_shipment"), Some("発送待ち"));
        assert_eq!(japanese_name("sold"), None);
        assert!(is_canonical("delivered") && !is_canonical("Delivered") && !is_canonical(""));
        let labels: Vec<&str> = (0..=5).map(shipping_label).collect();
        assert_eq!(
            labels,
            ["Unknown", "Awaiting shipping(1)", "On request(2)", "Seller confirm(3)", "On delivery(4)", "Delivered(5)"]
        );
        for code in 1..=5 {
            assert_eq!(parse_status_label(shipping_label(code)), Some(code), "labels parse back");
        }
    }

    #[test]
    fn claim_groups_cancellations_and_the_end_of_a_line() {
        use ClaimGroup::*;
        let groups: Vec<Option<ClaimGroup>> = (0..=17).map(ClaimGroup::of).collect();
        assert_eq!(
            groups,
            [
                None,
                Some(Cancellation),
                Some(Cancellation),
                Some(Cancellation),
                Some(Return),
                Some(Return),
                Some(Return),
                None,
                None,
                None,
                None,
                Some(Exchange),
                Some(Exchange),
                Some(Exchange),
                Some(Refund),
                Some(Refund),
                Some(Cancellation),
                None
            ]
        );
        let cancellations: Vec<u8> = (0..=17).filter(|c| is_cancellation(*c)).collect();
        assert_eq!(cancellations, [1, 2, 3, 16]);
        // (shipping, claim) → terminal
        for (shipping, claim, terminal) in [
            (5, 0, true),
            (4, 0, false),
            (3, 0, false),
            (5, 4, false),
            (5, 6, true),
            (2, 3, true),
            (2, 1, false),
            (5, 15, true),
            (0, 16, true),
            (0, 14, true),
            (5, 11, false),
        ] {
            assert_eq!(is_terminal(shipping, claim), terminal, "({shipping}, {claim})");
        }
    }

    fn c(m: &StatusMap, shipping: Option<u8>, claim: u8) -> Option<&'static str> {
        m.canonical(shipping, claim).map(Status::as_str)
    }

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
        assert_eq!(c(&m, Some(1), 0), Some("awaiting_payment"));
        assert_eq!(c(&m, Some(2), 0), Some("new"));
        assert_eq!(c(&m, Some(5), 0), Some("delivered"));
        assert_eq!(c(&m, Some(3), 3), Some("cancelled"));
        assert_eq!(c(&m, None, 16), Some("cancelled"));
        assert_eq!(c(&m, Some(2), 12), Some("exchange_requested"));
        assert_eq!(c(&m, Some(2), 15), Some("partially_refunded"));
        assert_eq!(c(&m, Some(5), 14), Some("refunded"));
        assert_eq!(c(&m, Some(9), 0), None);
        assert_eq!(c(&m, Some(2), 7), None);
        assert_eq!(c(&m, None, 0), None);
        for s in m.shipping.values().chain(m.claim.values()) {
            assert!(is_canonical(s.as_str()), "{s}");
        }
    }

    #[test]
    fn destination_status_replaces_status_two_only() {
        let m = StatusMap::with_destination(Status::AwaitingShipment);
        assert_eq!(c(&m, Some(2), 0), Some("awaiting_shipment"));
        assert_eq!(c(&m, Some(1), 0), Some("awaiting_payment"));
    }
}
