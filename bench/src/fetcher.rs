//! The fetcher: its call budget from the planner, and one `--once` run against many shops.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::env::{Env, hundredths};
use crate::report::{CallBudget, FetcherRun};

/// The calls a shop makes per day after its first import, from the fetcher's own planner: for a
/// shop with the default settings, for a busy one (1,000 orders a day, 2 % made to order with
/// 30-day lead times, so lines stay open 30 days past the look-back; no paging in QAPI, so the
/// number of orders does not change the count), and with v2 (which has no one call for 1–3).
pub fn call_budget() -> CallBudget {
    use fetcher::plan::{Cadence, ShopPlan, calls_in};
    use schemas::config::{ApiVersion, FetcherConfig};
    let f = FetcherConfig::default();
    let d = |x: Duration| chrono::Duration::from_std(x).expect("a default duration");
    let cadence = Cadence {
        slow_every: d(f.slow_calls_every),
        long_every: d(f.long_windows_every),
        overlap: d(f.window_overlap),
        follow_days: f.follow_days,
    };
    let shop = ShopPlan { version: ApiVersion::V3, statuses: vec![1, 2, 3, 4, 5], claims: true, lookback_days: 7 };
    let interval = chrono::Duration::minutes(30);
    let per_day = |shop: &ShopPlan, back: i64| calls_in(7, interval, shop, &cadence, back) as f64 / 7.0;
    let default = per_day(&shop, 0);
    let busy = per_day(&shop, 30);
    let v2 = per_day(&ShopPlan { version: ApiVersion::V2, ..shop.clone() }, 30);
    let limit = schemas::config::Qoo10Config::default().global_requests_per_second * 86_400.0;
    println!(
        "fetcher calls per shop per day: default {default:.0}, busy {busy:.0}, v2 {v2:.0}; the default global limit ({limit:.0} a day) fits {:.0} busy shops",
        limit / busy
    );
    CallBudget {
        per_shop_per_day_default: default.round(),
        per_shop_per_day_busy: busy.round(),
        per_shop_per_day_busy_v2: v2.round(),
        default_global_limit_per_day: limit,
        busy_shops_within_default_limit: (limit / busy).floor(),
        share_of_default_limit_for_2000_busy_shops: hundredths(2000.0 * busy / limit),
    }
}

/// `fetcher --once` against `shops` sandbox shops (see [`FetcherRun`]), timed by `/usr/bin/time`.
pub async fn fetcher_scale(env: &Env, shops: u32, prefix: &str) -> anyhow::Result<FetcherRun> {
    let (per_shop, global) = (1.0, 200.0);
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut sandbox = Command::new(env.bin.join("qoo10-sandbox"))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--shops", &shops.to_string(), "--orders", "10"])
        .args(["--rate-limit-per-shop", &per_shop.to_string(), "--rate-limit-global", &global.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while http.get(format!("{base}/_sandbox/health")).send().await.is_err() {
        anyhow::ensure!(Instant::now() < deadline, "sandbox did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    http.post(format!("{base}/_sandbox/faults")).json(&json!({"kind": "latency", "ms": 50})).send().await?;
    let mut extra = format!(
        "[qoo10]\nbase_url = \"{base}/GMKT.INC.Front.QAPIService/ebayjapan.qapi\"\nrequests_per_second = {per_shop}\n\
         global_requests_per_second = {global}\n\n[fetcher]\nmax_concurrent_shops = {shops}\n\n"
    );
    for n in 1..=shops {
        extra.push_str(&format!(
            "[[shops]]\nid = \"shop-{n}\"\nuser_id = \"sandbox-seller-{n}\"\napi_key = \"sandbox-api-key-{n}\"\n\
             password = \"sandbox-password-{n}\"\nstatuses = [2]\nlookback_days = 7\nclaims = false\n"
        ));
    }
    let config = env.config(prefix, &extra)?;
    let timing = env.work.join(format!("fetcher-time-{}.txt", env.stamp));
    let status = Command::new("/usr/bin/time")
        .arg("-o")
        .arg(&timing)
        .args(["-f", "%e %U %S %M"])
        .arg(env.bin.join("fetcher"))
        .arg("--config")
        .arg(&config)
        .arg("--once")
        .env("HTTP_LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(env.work.join(format!("fetcher-{}.log", env.stamp)))?)
        .status()?;
    let t = std::fs::read_to_string(&timing)?;
    let f: Vec<f64> = t.lines().last().unwrap_or("").split_whitespace().filter_map(|v| v.parse().ok()).collect();
    let stats: serde_json::Value = http.get(format!("{base}/_sandbox/stats")).send().await?.json().await?;
    let _ = sandbox.kill();
    let _ = sandbox.wait();
    let requests = stats["requests"].as_f64().unwrap_or(0.0);
    // A shop's first request goes at once, each further one a period later.
    let per_shop_requests = requests / f64::from(shops.max(1));
    let min_wall = (requests / global).max((per_shop_requests - 1.0).max(1.0) / per_shop);
    let wall = *f.first().unwrap_or(&f64::NAN);
    println!(
        "fetcher: {shops} shops, {requests} requests in {wall:.1} s (rate-limit minimum {min_wall:.1} s, ratio {:.2}), \
         {} violations, {:.1} CPU s, {:.0} MB peak RSS, {status}",
        wall / min_wall,
        stats["violations"],
        f.get(1).unwrap_or(&0.0) + f.get(2).unwrap_or(&0.0),
        f.get(3).unwrap_or(&0.0) / 1024.0
    );
    Ok(FetcherRun {
        shops,
        requests,
        wall_s: wall,
        min_wall_s: min_wall,
        ratio_to_min: wall / min_wall,
        violations: stats["violations"].as_u64().unwrap_or(0),
        max_requests_in_a_second: stats["max_requests_in_a_second"].as_u64().unwrap_or(0),
        cpu_s: hundredths(f.get(1).unwrap_or(&0.0) + f.get(2).unwrap_or(&0.0)),
        rss_peak_mb: f.get(3).unwrap_or(&0.0) / 1024.0,
        ok: status.success(),
    })
}
