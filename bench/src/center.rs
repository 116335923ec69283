//! `--center-alerts N`: the alert center with N open alerts (2,000 shops, the kinds and dates a
//! first import leaves: most with a payment date, a third past their 発送予定日), stored straight
//! into ClickHouse. Then the sink is started on them and the center timed: until it shows all N,
//! each page and API call (the median and the slowest of 20 loads), and the sink's peak RSS.

use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use crate::env::{Env, hundredths, peak_rss_mb, stop};
use crate::history::{ch, create_tables};

#[derive(Debug, Serialize)]
pub struct Center {
    pub open_alerts: u64,
    /// From the sink's start until `/api/summary` counts every open alert.
    pub load_s: f64,
    /// (median, slowest) of 20 loads, in milliseconds.
    pub page_ms: (f64, f64),
    pub page_one_shop_ms: (f64, f64),
    pub page_last_page_ms: (f64, f64),
    pub api_summary_ms: (f64, f64),
    pub api_alerts_100_ms: (f64, f64),
    pub page_bytes: usize,
    pub sink_rss_peak_mb: f64,
    /// The same sink without the alert center (`HTTP_LISTEN=""`), 20 s after its start.
    pub sink_rss_peak_mb_without_center: f64,
}

const SHOPS: u64 = 2_000;

/// N open alerts as the sink stores them.
fn alerts_select(n: u64) -> String {
    format!(
        "SELECT concat(kind, ':', shop, ':', toString(order_no), ':1'), kind, shop, order_no, order_no + 1, 'open', \
           if(kind = 'ship_date_overdue', 'critical', 'warning'), \
           concat('Order ', toString(order_no), ' has no estimated shipping date. Set it in QSM (Orders > Shipping).'), \
           concat('注文 ', toString(order_no), ' の発送予定日が未設定です。QSMの配送管理で発送予定日を設定してください。'), \
           concat('{{\"paid_at\":\"', formatDateTime(paid, '%Y-%m-%dT%H:%M:%SZ'), '\",\"ship_by\":\"', toString(toDate(paid) + 4), '\"}}'), \
           paid + 60, paid + 60, toUInt64(1) \
         FROM (SELECT number AS n, concat('bench-', toString(intHash32(n) % {SHOPS})) AS shop, 7000000000 + n AS order_no, \
                      arrayElement(['ship_date_missing', 'ship_date_overdue', 'quantity_changed', 'order_vanished'], n % 4 + 1) AS kind, \
                      toDateTime(now() - 86400 * (intHash32(n * 7) % 10)) AS paid \
               FROM numbers({n}))"
    )
}

fn spread(mut ms: Vec<f64>) -> (f64, f64) {
    ms.sort_by(f64::total_cmp);
    let round = |v: f64| (v * 10.0).round() / 10.0;
    (round(ms[ms.len() / 2]), round(ms[ms.len() - 1]))
}

async fn timed(http: &reqwest::Client, url: &str) -> anyhow::Result<((f64, f64), usize)> {
    let (mut ms, mut bytes) = (Vec::new(), 0);
    for _ in 0..20 {
        let t = Instant::now();
        let r = http.get(url).send().await?;
        anyhow::ensure!(r.status() == 200, "{url}: {}", r.status());
        bytes = r.bytes().await?.len();
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok((spread(ms), bytes))
}

pub async fn measure(env: &Env, n: u64) -> anyhow::Result<Center> {
    let db = env.name("center");
    create_tables(env, &db).await?;
    ch(env, &db, &format!("INSERT INTO alerts {}", alerts_select(n))).await?;
    let config = env.config(&db, "")?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let started = Instant::now();
    let sink = env.spawn("sink", &config, &format!("127.0.0.1:{port}"), &[])?;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build()?;
    let base = format!("http://127.0.0.1:{port}");
    let load_s = loop {
        let summary = http.get(format!("{base}/api/summary")).send().await;
        let shown = match summary {
            Ok(r) => r.json::<serde_json::Value>().await.ok().and_then(|s| s["open_alerts"]["total"].as_u64()),
            Err(_) => None,
        };
        if shown == Some(n) {
            break started.elapsed().as_secs_f64();
        }
        anyhow::ensure!(started.elapsed() < Duration::from_secs(600), "the center showed {shown:?} of {n}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let last_page = n.div_ceil(30);
    let (page_ms, page_bytes) = timed(&http, &format!("{base}/")).await?;
    let result = Center {
        open_alerts: n,
        load_s: hundredths(load_s),
        page_ms,
        page_one_shop_ms: timed(&http, &format!("{base}/?shop=bench-7")).await?.0,
        page_last_page_ms: timed(&http, &format!("{base}/?page={last_page}")).await?.0,
        api_summary_ms: timed(&http, &format!("{base}/api/summary")).await?.0,
        api_alerts_100_ms: timed(&http, &format!("{base}/api/alerts?limit=100")).await?.0,
        page_bytes,
        sink_rss_peak_mb: peak_rss_mb(sink.id()).round(),
        sink_rss_peak_mb_without_center: 0.0,
    };
    stop(sink);
    let alone = env.spawn("sink", &config, "", &[])?;
    tokio::time::sleep(Duration::from_secs(20)).await;
    let result = Center { sink_rss_peak_mb_without_center: peak_rss_mb(alone.id()).round(), ..result };
    stop(alone);
    println!("center: {}", serde_json::to_string(&result).context("report")?);
    Ok(result)
}
