//! `--history-lines N`: a year of stored history, and what it costs the sink and analysts.
//!
//! The history goes straight into ClickHouse (`INSERT … SELECT … FROM numbers(N)`, computed by
//! the server: seconds per million lines, not the pipeline's minutes): N order lines of 2,000
//! shops (a few large, many small: shop i gets a share falling with i), ordered evenly over the
//! 365 days before now, carts of two lines, Japanese titles. By age: the last 2 days in 配送要請,
//! then 配送準備, 配送中, and delivered after a week; 4 % cancelled and 1 % returned (claims).
//! Each line has two versions in `order_versions` (first seen, and its latest), and 発送予定日
//! six days after the order (so the sweep finds nothing overdue: a steady state, not a backlog);
//! 5 % of lines carry a resolved alert, and a tenth of the lines not yet shipped an open one.
//!
//! Then: the sink started on it (seconds until `/readyz` answers 200, peak RSS), the analysts'
//! queries (each the median of three), and the pipeline's throughput run into that database and
//! into an empty one, one after the other.

use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use crate::env::{Env, hundredths, peak_rss_mb, stop, wait_for_quiet};

/// Lines per INSERT: keeps ClickHouse 18.16's memory per query near 1 GB.
const CHUNK: u64 = 1_000_000;
const SHOPS: u64 = 2_000;
/// Order numbers of the history: far from the sandbox generator's.
const FIRST_ORDER: u64 = 5_000_000_000;

/// The analysts' queries over the history, in milliseconds (the median of three runs).
#[derive(Debug, Serialize)]
pub struct QueryMs {
    /// `daily_sales` of one shop (the largest) for one month.
    pub daily_sales_one_shop_one_month: f64,
    /// `orders_by_status`, every shop.
    pub orders_by_status: f64,
    /// `open_alerts`, every shop.
    pub open_alerts: f64,
    /// One order line's versions (`order_versions` by shop and order number).
    pub one_order_history: f64,
}

/// The history figures (the report's `"history"`).
#[derive(Debug, Serialize)]
pub struct History {
    pub lines: u64,
    /// Seconds to store and merge it (not part of any figure below).
    pub insert_s: f64,
    /// Sink started on the history: seconds until `/readyz` answers 200 (state loaded, active).
    pub sink_start_s: f64,
    /// The sink's peak RSS over its start and the throughput run on the history, in MB.
    pub sink_rss_peak_mb: f64,
    /// The throughput run into the database holding the history, and into an empty one.
    pub pipeline_orders_per_s: f64,
    pub pipeline_orders_per_s_empty: f64,
    pub history_query_ms: QueryMs,
}

/// Runs an SQL statement in `db` (or the server's default with `""`).
pub async fn ch(env: &Env, db: &str, sql: &str) -> anyhow::Result<String> {
    let r = reqwest::Client::new()
        .post(format!("{}/", env.ch_url))
        .query(&[("database", if db.is_empty() { "default" } else { db })])
        .body(sql.to_owned())
        .send()
        .await?;
    let (ok, text) = (r.status().is_success(), r.text().await?);
    anyhow::ensure!(
        ok,
        "ClickHouse: {}: {}",
        sql.split_whitespace().take(8).collect::<Vec<_>>().join(" "),
        text.trim()
    );
    Ok(text)
}

/// The sink's tables in `db`, every migration run and recorded, as a sink that has run all year
/// leaves them (an unrecorded migration would run again at the sink's start and be timed with it).
pub async fn create_tables(env: &Env, db: &str) -> anyhow::Result<()> {
    ch(env, "", &format!("CREATE DATABASE IF NOT EXISTS {db}")).await?;
    ch(env, db, schemas::sql::MIGRATIONS_TABLE).await?;
    for m in schemas::sql::MIGRATIONS {
        for statement in m.statements() {
            ch(env, db, &statement).await?;
        }
        ch(env, db, &format!("INSERT INTO schema_migrations VALUES ({}, '{}', now())", m.version, m.name)).await?;
    }
    Ok(())
}

/// The expressions of one history line `n` of `total` (a subquery over `numbers`).
fn line_columns(total: u64, now: i64) -> String {
    let year = 365 * 86_400;
    format!(
        "SELECT number AS n, \
           concat('bench-', toString(toUInt64(pow((intHash32(intDiv(n, 2)) % 10000) / 10000, 3) * {SHOPS}))) AS shop, \
           toUInt64({FIRST_ORDER} + n) AS order_no, toUInt64({FIRST_ORDER} + intDiv(n, 2) * 2) AS pack_no, \
           toUInt32({now} - {year} + intDiv(n * {year}, {total})) AS at, \
           ({now} - at) / 86400 AS age_days, \
           intHash32(n * 7) % 100 AS fate, \
           multiIf(fate < 4, 3, fate = 4, 6, 0) AS claim, \
           multiIf(age_days < 2, 2, age_days < 4, 3, age_days < 7, 4, 5) AS shipping, \
           multiIf(claim = 3, 'cancelled', claim = 6, 'returned', shipping = 2, 'new', shipping = 3, 'awaiting_shipment', \
                   shipping = 4, 'shipped', 'delivered') AS status, \
           toUInt64(at + 3600) * 1000000 AS first_version, \
           toUInt64(least(at + 6 * 86400, {now})) * 1000000 + 1 AS last_version, \
           toUInt32(1 + n % 3) AS qty, toDecimal64(980 + (n % 40) * 100, 2) AS price \
         FROM numbers({{from}}, {{count}})"
    )
}

/// The `SELECT` of one version of the history lines, in `ORDER_COLUMNS` order. `last`: the
/// line's latest version (else its first, in 配送要請).
fn version_select(total: u64, now: i64, last: bool) -> String {
    let (st, sh, cl, v) = if last {
        ("status", "shipping", "claim", "last_version")
    } else {
        ("'new'", "toUInt8(2)", "toUInt8(0)", "first_version")
    };
    format!(
        "SELECT shop, order_no, pack_no, {st}, toUInt8({sh}), toUInt8({cl}), toString(1100000000 + n % 5000), \
           concat('SKU-', toString(n % 5000)), concat('【送料無料】国産 緑茶 ティーバッグ 100包 お徳用 #', toString(n % 5000)), \
           'カラー:グリーン', '', qty, price, toDecimal64(0, 2), toDecimal64(price * qty, 2), toDecimal64(price * qty, 2), \
           toDecimal64(0, 2), 'JPY', toDateTime(at, 'UTC'), toNullable(toDateTime(at + 60, 'UTC')), \
           if({sh} >= 2, toNullable(toDate(toDateTime(at + 6 * 86400, 'UTC'))), NULL), \
           if({sh} >= 4, toNullable(toDateTime(at + 3 * 86400, 'UTC')), NULL), \
           if({sh} = 5, toNullable(toDateTime(at + 5 * 86400, 'UTC')), NULL), \
           if({sh} >= 4, 'ヤマト運輸', ''), if({sh} >= 4, toString(400000000000 + n), ''), 'クレジットカード', \
           {v}, toDateTime(intDiv({v}, 1000000), 'UTC'), if({cl} = 0, 'order', 'claim'), \
           'ShippingBasic.GetShippingInfo_v3', toUInt64(0), toDecimal64(0, 2), toDecimal64(0, 2), toDecimal64(0, 2), \
           toDecimal64(0, 2), toUInt32(0), toDecimal64(0, 2), NULL, toUInt8(0), toUInt8(0), toUInt8(0) \
         FROM ({})",
        line_columns(total, now)
    )
}

/// Alerts of the history, as a sink that has run all year leaves them: resolved on 5 % of lines,
/// open (`quantity_changed`, still to be mirrored) on a tenth of the lines not yet shipped.
fn alert_select(total: u64, now: i64) -> String {
    format!(
        "SELECT concat(kind, ':', shop, ':', toString(order_no), ':', toString(first_version)), kind, shop, order_no, pack_no, \
           state, 'warning', 'history', '履歴', '{{}}', toDateTime(at + 3600, 'UTC'), toDateTime(intDiv(last_version, 1000000), 'UTC'), \
           if(state = 'open', first_version, last_version) \
         FROM (SELECT *, 'quantity_changed' AS kind, \
                      if(shipping IN (2, 3) AND claim = 0 AND intHash32(n) % 10 = 0, 'open', 'resolved') AS state \
               FROM ({})) \
         WHERE intHash32(n * 13) % 100 < 5 OR state = 'open'",
        line_columns(total, now)
    )
}

/// Stores `lines` lines of history in `db` (its tables made as the sink makes them).
pub async fn store(env: &Env, db: &str, lines: u64) -> anyhow::Result<f64> {
    create_tables(env, db).await?;
    let started = Instant::now();
    let now = chrono::Utc::now().timestamp();
    let mut from = 0;
    while from < lines {
        let count = CHUNK.min(lines - from);
        let fill = |sql: String| sql.replace("{from}", &from.to_string()).replace("{count}", &count.to_string());
        ch(env, db, &fill(format!("INSERT INTO order_versions {}", version_select(lines, now, false)))).await?;
        ch(env, db, &fill(format!("INSERT INTO order_versions {}", version_select(lines, now, true)))).await?;
        ch(env, db, &fill(format!("INSERT INTO orders {}", version_select(lines, now, true)))).await?;
        ch(env, db, &fill(format!("INSERT INTO alerts {}", alert_select(lines, now)))).await?;
        from += count;
        println!("history: {from} of {lines} lines stored ({:.0} s)", started.elapsed().as_secs_f64());
    }
    // Merged as a table is after a year of background merges: a few large parts. Fresh 1M-row
    // parts would otherwise be merged into one another during the throughput run, which would
    // then time ClickHouse rewriting the history (45 CPU s instead of 11, measured).
    for table in ["orders", "order_versions", "order_carts", "alerts"] {
        ch(env, db, &format!("OPTIMIZE TABLE {table} FINAL")).await?;
    }
    let took = started.elapsed().as_secs_f64();
    wait_for_quiet(env).await;
    Ok(hundredths(took))
}

/// ClickHouse's own counters (`system.events`, server-wide) that tell where its CPU went in a run.
pub async fn ch_events(env: &Env) -> std::collections::BTreeMap<String, i64> {
    let sql = "SELECT event, value FROM system.events WHERE event IN \
               ('SelectQuery', 'SelectedMarks', 'MergedRows', 'MergesTimeMilliseconds', 'InsertedRows')";
    let text = ch(env, "", sql).await.unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split_once('\t'))
        .filter_map(|(k, v)| Some((k.to_owned(), v.trim().parse().ok()?)))
        .collect()
}

/// `after - before`, for printing.
pub fn events_between(
    before: &std::collections::BTreeMap<String, i64>,
    after: &std::collections::BTreeMap<String, i64>,
) -> String {
    let diff: Vec<String> =
        after.iter().map(|(k, v)| format!("{k} {}", v - before.get(k).copied().unwrap_or(0))).collect();
    diff.join(", ")
}

/// A throughput run into database `prefix` (holding `before` order versions), printed with its
/// CPU seconds and ClickHouse's counters over the run.
pub async fn observed_run(
    env: &Env,
    items: &[(String, bytes::Bytes)],
    prefix: &str,
    before: u64,
) -> anyhow::Result<crate::pipeline::PipelineRun> {
    let events = ch_events(env).await;
    let run = crate::pipeline::pipeline_run(env, items, prefix, before).await?;
    println!(
        "history: into {prefix} ({before} versions before): {:.0} orders/s; cpu seconds: {}; ClickHouse: {}",
        run.per_s,
        serde_json::to_string(&run.cpu)?,
        events_between(&events, &ch_events(env).await)
    );
    Ok(run)
}

/// The sink started on `config`'s database: seconds until `/readyz` says 200, and its peak RSS.
pub async fn sink_start(env: &Env, config: &std::path::Path) -> anyhow::Result<(f64, f64)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let started = Instant::now();
    let sink = env.spawn("sink", config, &format!("127.0.0.1:{port}"), &[])?;
    let http = reqwest::Client::new();
    let ready = loop {
        let ok = http.get(format!("http://127.0.0.1:{port}/readyz")).send().await.is_ok_and(|r| r.status() == 200);
        if ok {
            break Some(started.elapsed().as_secs_f64());
        }
        if started.elapsed() > Duration::from_secs(600) {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let rss = peak_rss_mb(sink.id());
    stop(sink);
    let ready = ready.context("the sink was not ready within 10 minutes")?;
    println!("history: sink ready after {ready:.2} s, peak RSS {rss:.0} MB");
    Ok((hundredths(ready), rss.round()))
}

/// The analysts' queries on `db`, each the median of three runs.
pub async fn queries(env: &Env, db: &str) -> anyhow::Result<QueryMs> {
    let shop = "bench-0";
    let one_order = FIRST_ORDER + 1234;
    let owner = ch(env, db, &format!("SELECT shop_id FROM orders WHERE order_no = {one_order} LIMIT 1")).await?;
    let month = "day_jst >= today() - 60 AND day_jst < today() - 30";
    let timed = |sql: String| async move {
        let mut ms = Vec::new();
        for _ in 0..3 {
            let t = Instant::now();
            ch(env, db, &sql).await?;
            ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
        ms.sort_by(f64::total_cmp);
        anyhow::Ok((ms[1] * 10.0).round() / 10.0)
    };
    let q = QueryMs {
        daily_sales_one_shop_one_month: timed(format!(
            "SELECT day_jst, sum(units), sum(sales) FROM daily_sales WHERE shop_id = '{shop}' AND {month} GROUP BY day_jst"
        ))
        .await?,
        orders_by_status: timed("SELECT * FROM orders_by_status".into()).await?,
        open_alerts: timed("SELECT count(), countIf(severity = 'critical') FROM open_alerts".into()).await?,
        one_order_history: timed(format!(
            "SELECT * FROM order_versions WHERE shop_id = '{}' AND order_no = {one_order} ORDER BY version",
            owner.trim()
        ))
        .await?,
    };
    println!("history: analyst queries (ms): {}", serde_json::to_string(&q)?);
    Ok(q)
}
