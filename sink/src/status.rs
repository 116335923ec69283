//! The status page for the people who act on alerts: per shop, orders by canonical status, open
//! alerts with their Japanese instructions, and the fetcher's last poll and last error. Plain
//! server-rendered HTML (no JavaScript), refreshed on reload. Rendering is pure.

use chrono::{DateTime, Utc};
use schemas::poll::FetchStatus;

use crate::rows::AlertRow;

#[derive(Debug, Default)]
pub struct ShopStatus {
    pub shop_id: String,
    /// (canonical status, order lines).
    pub orders: Vec<(String, u64)>,
    pub fetch: FetchStatus,
    pub open_alerts: Vec<AlertRow>,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn jst(t: DateTime<Utc>) -> String {
    t.with_timezone(&schemas::time::jst()).format("%Y-%m-%d %H:%M:%S JST").to_string()
}

pub fn render(shops: &[ShopStatus], now: DateTime<Utc>) -> String {
    let mut h = String::from(
        "<!DOCTYPE html><html lang=\"ja\"><head><meta charset=\"utf-8\"><title>Qoo10 pipeline status</title>\
         <style>body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:.5em 0 1.5em}\
         td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}th{background:#f4f4f4}.crit{color:#b00}\
         .muted{color:#777;font-size:.85em}section{margin-bottom:2.5em}</style></head><body>",
    );
    h.push_str(&format!(
        "<h1>Qoo10 注文パイプライン / pipeline status</h1><p class=\"muted\">{} — reload to refresh</p>",
        jst(now)
    ));
    if shops.is_empty() {
        h.push_str("<p>No shops yet.</p>");
    }
    for s in shops {
        h.push_str(&format!("<section id=\"shop-{0}\"><h2>{0}</h2>", esc(&s.shop_id)));
        let last = s.fetch.last_success.map(jst).unwrap_or_else(|| "—".into());
        h.push_str(&format!("<p>最終取得 / last poll: <b class=\"last-poll\">{last}</b>"));
        match &s.fetch.last_error {
            Some((t, e)) => h.push_str(&format!(
                "<br>最終エラー / last error: <span class=\"crit\">{} — {}</span>",
                jst(*t),
                esc(e)
            )),
            None => h.push_str("<br>最終エラー / last error: —"),
        }
        h.push_str("</p><table class=\"orders\"><tr><th>status</th><th>ステータス</th><th>order lines</th></tr>");
        for (status, n) in &s.orders {
            let ja = schemas::status::japanese_name(status).unwrap_or("");
            h.push_str(&format!("<tr><td>{}</td><td>{ja}</td><td>{n}</td></tr>", esc(status)));
        }
        h.push_str("</table>");
        h.push_str(&format!("<h3>対応が必要なアラート / open alerts ({})</h3>", s.open_alerts.len()));
        if s.open_alerts.is_empty() {
            h.push_str("<p>なし / none</p>");
        } else {
            h.push_str(
                "<table class=\"alerts\"><tr><th>kind</th><th>order</th><th>since</th><th>対応 / what to do</th></tr>",
            );
            for a in &s.open_alerts {
                let since = DateTime::from_timestamp(i64::from(a.opened_at), 0).map(jst).unwrap_or_default();
                let order = if a.order_no == 0 { "—".into() } else { a.order_no.to_string() };
                let class = if a.severity == "critical" { " class=\"crit\"" } else { "" };
                h.push_str(&format!(
                    "<tr><td{class}>{}</td><td>{order}</td><td>{since}</td><td>{}<br><span class=\"muted\">{}</span></td></tr>",
                    esc(&a.kind),
                    esc(&a.message_ja),
                    esc(&a.message)
                ));
            }
            h.push_str("</table>");
        }
        h.push_str("</section>");
    }
    h.push_str("</body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_shops_alerts_and_escapes() {
        let alert = AlertRow {
            alert_id: "a".into(),
            kind: "ship_date_missing".into(),
            shop_id: "s".into(),
            order_no: 9001,
            pack_no: 1,
            state: "open".into(),
            severity: "warning".into(),
            message: "Order <9001>".into(),
            message_ja: "注文 9001 の発送予定日が未設定です。".into(),
            details: "{}".into(),
            opened_at: 1_795_900_000,
            updated_at: 1_795_900_000,
            version: 1,
        };
        let page = render(
            &[ShopStatus {
                shop_id: "s".into(),
                orders: vec![("new".into(), 3)],
                fetch: FetchStatus { last_success: DateTime::from_timestamp(1_795_900_000, 0), last_error: None },
                open_alerts: vec![alert],
            }],
            DateTime::from_timestamp(1_795_900_100, 0).unwrap(),
        );
        assert!(page.contains("<td>new</td><td>新規受付</td><td>3</td>"));
        assert!(page.contains("注文 9001 の発送予定日が未設定です。"));
        assert!(page.contains("Order &lt;9001&gt;"), "escaped");
        assert!(page.contains("2026-11-29"));
    }
}
