//! What to ask Qoo10 for: pure functions, no IO.

use chrono::{Duration, NaiveDate};
use schemas::config::ApiVersion;
use schemas::qapi::{self, MAX_WINDOW_DAYS};

/// An inclusive window of JST calendar days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub from: NaiveDate,
    pub to: NaiveDate,
}

impl Window {
    pub fn from_text(&self) -> String {
        self.from.format("%Y%m%d").to_string()
    }
    pub fn to_text(&self) -> String {
        self.to.format("%Y%m%d").to_string()
    }
}

/// The look-back window ending today (JST), split into windows of at most 89 days, oldest
/// first. `lookback_days = 7` on 2026-11-29 covers 2026-11-22 ..= 2026-11-29: the window
/// reaches one day further back than N so that an order placed just before midnight N days ago
/// is still seen on the day it turns N days old (windows overlap between polls on purpose).
pub fn windows(today: NaiveDate, lookback_days: u32) -> Vec<Window> {
    split(today - Duration::days(i64::from(lookback_days)), today)
}

/// Splits `from ..= to` into windows of at most [`MAX_WINDOW_DAYS`] days.
pub fn split(from: NaiveDate, to: NaiveDate) -> Vec<Window> {
    let mut out = Vec::new();
    let mut start = from;
    while start <= to {
        let end = (start + Duration::days(MAX_WINDOW_DAYS - 1)).min(to);
        out.push(Window { from: start, to: end });
        start = end + Duration::days(1);
    }
    out
}

pub fn shipping_method(version: ApiVersion) -> &'static str {
    match version {
        ApiVersion::V2 => qapi::GET_SHIPPING_INFO_V2,
        ApiVersion::V3 => qapi::GET_SHIPPING_INFO_V3,
    }
}

/// Parameters of a shipping-info call for one status over one window, by order date.
pub fn shipping_params(version: ApiVersion, status: u8, w: Window) -> Vec<(&'static str, String)> {
    match version {
        ApiVersion::V2 => vec![
            ("ShippingStat", status.to_string()),
            ("search_Sdate", w.from_text()),
            ("search_Edate", w.to_text()),
            ("search_condition", "1".into()),
        ],
        ApiVersion::V3 => vec![
            ("ShippingStatus", status.to_string()),
            ("SearchStartDate", w.from_text()),
            ("SearchEndDate", w.to_text()),
            ("SearchCondition", "1".into()),
        ],
    }
}

/// Parameters of a claim-info call for one claim status over one window, by order date.
pub fn claim_params(claim_status: u8, w: Window) -> Vec<(&'static str, String)> {
    vec![
        ("ClaimStat", claim_status.to_string()),
        ("search_Sdate", w.from_text()),
        ("search_Edate", w.to_text()),
        ("search_condition", "1".into()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn a_week_is_one_window() {
        assert_eq!(windows(d("2026-11-29"), 7), vec![Window { from: d("2026-11-22"), to: d("2026-11-29") }]);
    }

    #[test]
    fn a_year_splits_into_windows_qoo10_accepts() {
        let ws = windows(d("2026-11-29"), 365);
        assert_eq!(ws.first().unwrap().from, d("2025-11-29"));
        assert_eq!(ws.last().unwrap().to, d("2026-11-29"));
        for pair in ws.windows(2) {
            assert_eq!(pair[0].to + Duration::days(1), pair[1].from, "no gap, no overlap");
        }
        for w in &ws {
            let days = (w.to - w.from).num_days() + 1;
            assert!(days <= 89, "{w:?} spans {days} days");
        }
        assert_eq!(ws.len(), 5);
    }

    #[test]
    fn params_per_version() {
        let w = Window { from: d("2026-11-22"), to: d("2026-11-29") };
        let v2 = shipping_params(ApiVersion::V2, 2, w);
        assert!(v2.contains(&("ShippingStat", "2".into())) && v2.contains(&("search_Sdate", "20261122".into())));
        let v3 = shipping_params(ApiVersion::V3, 3, w);
        assert!(v3.contains(&("ShippingStatus", "3".into())) && v3.contains(&("SearchEndDate", "20261129".into())));
    }
}
