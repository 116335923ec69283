//! The page (`GET /`): askama templates (`sink/templates/`), filled from the summary, the
//! queue's page and the charts. Japanese first, English beside it. Pure.

use askama::Template;
use chrono::{DateTime, Utc};
use schemas::alert::{Alert, AlertKind, Severity};

use super::board::Entry;
use super::charts::Chart;
use super::urgency::Penalty;
use super::view::Summary;
use crate::store::CommandRow;

/// An alert kind in Japanese (what the seller's staff read first).
pub fn kind_ja(k: AlertKind) -> &'static str {
    k.japanese()
}

fn severity_ja(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "重大",
        Severity::Warning => "警告",
        Severity::Info => "情報",
    }
}

pub fn jst(t: DateTime<Utc>) -> String {
    t.with_timezone(&schemas::time::jst()).format("%Y-%m-%d %H:%M JST").to_string()
}

/// A choice of a filter's `<select>`.
#[derive(Debug, Clone)]
pub struct Choice {
    pub value: String,
    pub label: String,
    pub selected: bool,
}

/// One row of the work queue.
#[derive(Debug, Clone)]
pub struct Row {
    pub alert_id: String,
    pub kind: &'static str,
    pub kind_ja: &'static str,
    pub severity: &'static str,
    pub severity_ja: &'static str,
    pub shop: String,
    pub order: String,
    pub message: String,
    pub message_ja: String,
    pub opened: String,
    /// `overdue`, `today`, `soon`, `later` or `undated`: the row's colour.
    pub urgency: &'static str,
    pub clock_ja: String,
    pub clock_en: String,
    pub acknowledged: Option<String>,
    /// Write-back can fix it: the form is shown (with the last command's result, if any).
    pub fix: Option<Fix>,
}

#[derive(Debug, Clone)]
pub struct Fix {
    pub default_date: String,
    pub last: Option<String>,
}

impl Row {
    /// `alert`: the stored texts, when they could be read.
    pub fn new(e: &Entry, alert: Option<&Alert>, fix: Option<Fix>) -> Row {
        let u = &e.urgency;
        let urgency = match u.days_left {
            Some(d) if d < 0 => "overdue",
            Some(0) => "today",
            Some(1..=2) => "soon",
            Some(_) => "later",
            None => "undated",
        };
        let (mut ja, mut en) = (Vec::new(), Vec::new());
        if let (Some(d), Some(left)) = (u.deadline, u.days_left) {
            if left < 0 {
                ja.push(format!("期限 {d} を{}営業日超過", -left));
                en.push(format!("{} business days past {d}", -left));
            } else {
                ja.push(format!("期限 {d}（あと{left}営業日）"));
                en.push(format!("due {d} ({left} business days left)"));
            }
        }
        if let Some(n) = u.since_payment {
            ja.push(format!("入金から{n}営業日"));
            en.push(format!("{n} business days since payment"));
        }
        if u.penalty != Penalty::None {
            let (pj, pe) = u.penalty.label();
            ja.push(pj.into());
            en.push(pe.into());
        }
        Row {
            alert_id: e.alert_id.to_string(),
            kind: e.kind.as_str(),
            kind_ja: kind_ja(e.kind),
            severity: e.severity.as_str(),
            severity_ja: severity_ja(e.severity),
            shop: e.shop.to_string(),
            order: if e.order_no == 0 { "—".into() } else { e.order_no.to_string() },
            message: alert.map(|a| a.message.clone()).unwrap_or_default(),
            message_ja: alert
                .map(|a| a.message_ja.clone())
                .unwrap_or_else(|| "（本文を読めませんでした / text unavailable）".into()),
            opened: jst(e.opened_at),
            urgency,
            clock_ja: ja.join(" · "),
            clock_en: en.join(" · "),
            acknowledged: e.acknowledged_at.map(jst),
            fix,
        }
    }
}

/// What the last write-back command of an order came to, for the row.
pub fn command_text(c: &CommandRow) -> String {
    let reason = if c.reason_ja.is_empty() { c.reason.clone() } else { format!("{} / {}", c.reason_ja, c.reason) };
    format!(
        "{} {}: {}{}",
        c.action,
        c.command_id,
        c.state,
        if reason.is_empty() { String::new() } else { format!(" — {reason}") }
    )
}

/// A per-shop line of the overview.
#[derive(Debug, Clone)]
pub struct ShopLine {
    pub shop_id: String,
    /// (status, Japanese name, order lines).
    pub orders: Vec<(String, &'static str, u64)>,
    /// (kind, Japanese, critical, warning, info, total).
    pub alerts: Vec<(&'static str, &'static str, u64, u64, u64, u64)>,
    pub open_total: u64,
    pub acknowledged: u64,
    pub overdue: u64,
    pub last_poll: String,
    pub last_error: Option<String>,
    pub stale: bool,
}

/// Shops the overview names at most (2,000 shops would make a page of megabytes).
pub const OVERVIEW: usize = 30;
/// Up to this many shops, every shop's details are on the page; above, the chosen one's.
pub const DETAILS: usize = 10;

/// (overview, left out, stale named, stale left out, details) of the page.
pub fn arrange(mut lines: Vec<ShopLine>, chosen: bool) -> (Vec<ShopLine>, usize, Vec<ShopLine>, usize, Vec<ShopLine>) {
    lines.sort_by(|a, b| (b.overdue, b.open_total).cmp(&(a.overdue, a.open_total)).then(a.shop_id.cmp(&b.shop_id)));
    let stale: Vec<ShopLine> = lines.iter().filter(|l| l.stale).cloned().collect();
    let more_stale = stale.len().saturating_sub(OVERVIEW);
    let details = if chosen || lines.len() <= DETAILS { lines.clone() } else { Vec::new() };
    let more = lines.len().saturating_sub(OVERVIEW);
    lines.truncate(OVERVIEW);
    (lines, more, stale.into_iter().take(OVERVIEW).collect(), more_stale, details)
}

pub fn shop_lines(summary: &Summary) -> Vec<ShopLine> {
    summary
        .shops
        .iter()
        .map(|s| {
            let c = &s.open_alerts;
            let count = |k: AlertKind, sev: &str| {
                c.by_kind_severity.iter().find(|x| x.kind == k && x.severity == sev).map_or(0, |x| x.count)
            };
            ShopLine {
                shop_id: s.shop_id.clone(),
                orders: s
                    .orders_by_status
                    .iter()
                    .map(|(st, n)| (st.clone(), schemas::status::japanese_name(st).unwrap_or(""), *n))
                    .collect(),
                alerts: c
                    .by_kind
                    .iter()
                    .map(|(k, n)| {
                        (k.as_str(), kind_ja(*k), count(*k, "critical"), count(*k, "warning"), count(*k, "info"), *n)
                    })
                    .collect(),
                open_total: c.total,
                acknowledged: c.acknowledged,
                overdue: c.overdue,
                last_poll: s.last_poll.map(jst).unwrap_or_else(|| "—".into()),
                last_error: s.last_error.as_ref().map(|e| format!("{} — {}", jst(e.at), e.message)),
                stale: s.poll_stale,
            }
        })
        .collect()
}

/// The whole page.
#[derive(Template)]
#[template(path = "center.html")]
pub struct Page {
    pub generated: String,
    pub refreshed: String,
    pub refresh_error: Option<String>,
    pub live: bool,
    pub refresh_seconds: u64,
    /// The overview: the shops with the most overdue, then open alerts first, at most
    /// [`OVERVIEW`]; `more_shops` are left out (choose one in the filter).
    pub overview: Vec<ShopLine>,
    pub more_shops: usize,
    /// Stale shops (at most [`OVERVIEW`] named), and how many more.
    pub stale: Vec<ShopLine>,
    pub more_stale: usize,
    /// Per-shop details: the chosen shop, or every shop when there are few.
    pub shops: Vec<ShopLine>,
    pub shop_choices: Vec<Choice>,
    pub kind_choices: Vec<Choice>,
    pub severity_choices: Vec<Choice>,
    pub ack_choices: Vec<Choice>,
    /// (title, inline SVG).
    pub charts: Vec<(String, String)>,
    pub rows: Vec<Row>,
    pub total: usize,
    pub page: usize,
    pub pages: usize,
    pub prev: Option<String>,
    pub next: Option<String>,
    /// The current filters as a query string (forms come back to it).
    pub back: String,
    pub token_required: bool,
    pub signed_in: bool,
    pub notice: Option<String>,
}

impl Page {
    pub fn html(&self) -> String {
        self.render().unwrap_or_else(|e| format!("template error: {e}"))
    }
}

/// `charts` as (title, inline SVG).
pub fn svgs(charts: &[Chart]) -> Vec<(String, String)> {
    charts.iter().map(|c| (c.title.clone(), c.svg())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(i: usize, overdue: u64, stale: bool) -> ShopLine {
        ShopLine {
            shop_id: format!("s{i:03}"),
            orders: Vec::new(),
            alerts: Vec::new(),
            open_total: i as u64,
            acknowledged: 0,
            overdue,
            last_poll: "—".into(),
            last_error: None,
            stale,
        }
    }

    #[test]
    fn many_shops_show_the_most_urgent_few_and_say_how_many_are_left_out() {
        let lines: Vec<ShopLine> = (0..2000).map(|i| line(i, u64::from(i == 5) * 9, i % 3 == 0)).collect();
        let (overview, more, stale, more_stale, details) = arrange(lines.clone(), false);
        assert_eq!((overview.len(), more, details.len()), (OVERVIEW, 2000 - OVERVIEW, 0));
        assert_eq!(overview[0].shop_id, "s005", "overdue first");
        assert_eq!(overview[1].shop_id, "s1999", "then the most open alerts");
        assert_eq!((stale.len(), more_stale), (OVERVIEW, 667 - OVERVIEW));
        let few: Vec<ShopLine> = lines.into_iter().take(4).collect();
        let (_, more, _, _, details) = arrange(few, false);
        assert_eq!((more, details.len()), (0, 4), "few shops: every shop's details");
    }
}
