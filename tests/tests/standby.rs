//! Several instances of a stage, as operators start them by mistake or on purpose (a rolling
//! update, a second `compose up`): one works, the others stand by, not ready; a standby takes
//! over when the active one dies; a stage that cannot make progress says so.

use std::time::{Duration, Instant};

use e2e::{Deployment, Proxy, Sandbox, the_active};

fn shops(n: u32) -> String {
    (1..=n)
        .map(|i| {
            format!(
                "[[shops]]\nid = \"shop{i}\"\nuser_id = \"sandbox-seller-{i}\"\napi_key = \"sandbox-api-key-{i}\"\n\
                 password = \"sandbox-password-{i}\"\nlookback_days = 7\ninterval = \"1h\"\n\n"
            )
        })
        .collect()
}

fn qoo10(sandbox: &Sandbox) -> String {
    format!(
        "[qoo10]\nbase_url = \"{}\"\nrequests_per_second = 50\nglobal_requests_per_second = 200\n\n",
        sandbox.base_url()
    )
}

/// Certification requests per shop in the sandbox's request log: one per fetcher that polled it.
async fn certifications(sandbox: &Sandbox) -> anyhow::Result<std::collections::BTreeMap<String, usize>> {
    let log = sandbox.get_json("/_sandbox/requests").await?;
    let mut out = std::collections::BTreeMap::new();
    for r in log.as_array().into_iter().flatten() {
        if r["method"].as_str().is_some_and(|m| m.ends_with("CreateCertificationKey")) {
            *out.entry(r["shop"].as_str().unwrap_or("?").to_owned()).or_default() += 1;
        }
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread")]
async fn two_sinks_at_once_end_as_one_and_publish_every_transition_once() -> anyhow::Result<()> {
    let sandbox = Sandbox::start(&["--shops", "2", "--orders", "150"]).await?;
    let dep = Deployment::new(&format!("{}[sink]\nbatch_size = 30\n\n{}", qoo10(&sandbox), shops(2))).await?;
    let tap = dep.alert_tap().await?;
    let (a, b) = (dep.spawn("sink", &[])?, dep.spawn("sink", &[])?);
    let active = the_active(&[&a, &b], Duration::from_secs(30)).await?;
    dep.run_ok("fetcher", &["--once"])?;
    dep.run_ok("normalizer", &["--until-idle"])?;
    dep.wait_drained(Duration::from_secs(120)).await?;
    let orders = dep.count("SELECT count() FROM orders FINAL").await;
    let lines = dep.count("SELECT uniqExact(shop_id, order_no) FROM order_versions").await;
    assert!(orders > 100 && orders == lines, "{orders} orders, {lines} lines");
    let seen = tap.all();
    assert!(!seen.is_empty(), "the workload raised alerts");
    assert_eq!(tap.repeated(), Vec::<(String, usize)>::new(), "a plain subscriber saw a transition twice");
    let stored = dep.count("SELECT count() FROM alerts FINAL").await;
    let opened = seen.iter().filter(|a| a["state"] == "open").count() as u64;
    assert_eq!(stored, opened, "every alert opened once, stored once");
    // The standby did nothing and still stands by.
    assert_eq!(the_active(&[&a, &b], Duration::from_secs(5)).await?, active);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_standby_sink_takes_over_within_30_s_when_the_active_one_dies() -> anyhow::Result<()> {
    let sandbox = Sandbox::start(&["--shops", "1", "--orders", "60"]).await?;
    let dep = Deployment::new(&format!("{}{}", qoo10(&sandbox), shops(1))).await?;
    let mut sinks = [dep.spawn("sink", &[])?, dep.spawn("sink", &[])?];
    let active = the_active(&[&sinks[0], &sinks[1]], Duration::from_secs(30)).await?;
    sinks[active].kill();
    let standby = &sinks[1 - active];
    let started = Instant::now();
    standby.wait_readyz(200, Duration::from_secs(30)).await?;
    println!("took over in {:?}", started.elapsed());
    dep.run_ok("fetcher", &["--once"])?;
    dep.run_ok("normalizer", &["--until-idle"])?;
    dep.wait_drained(Duration::from_secs(60)).await?;
    assert!(dep.count("SELECT count() FROM orders FINAL").await > 10, "the new active sink writes");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rolling_restart_hands_the_sink_over_at_once() -> anyhow::Result<()> {
    let sandbox = Sandbox::start(&["--shops", "1", "--orders", "30"]).await?;
    let dep = Deployment::new(&format!("{}{}", qoo10(&sandbox), shops(1))).await?;
    let mut old = dep.spawn("sink", &[])?;
    old.wait_readyz(200, Duration::from_secs(30)).await?;
    let new = dep.spawn("sink", &[])?;
    let body = new.wait_readyz(503, Duration::from_secs(10)).await?;
    assert!(body.contains("standby"), "{body}");
    assert_eq!(old.terminate()?, Some(0));
    let started = Instant::now();
    new.wait_readyz(200, Duration::from_secs(10)).await?;
    assert!(started.elapsed() < Duration::from_secs(8), "a released lease is taken at once: {:?}", started.elapsed());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn two_fetchers_poll_each_shop_once_and_one_takes_over_from_the_other() -> anyhow::Result<()> {
    let sandbox = Sandbox::start(&["--shops", "4", "--orders", "20"]).await?;
    let dep = Deployment::new(&format!("{}{}", qoo10(&sandbox), shops(4))).await?;
    let mut a = dep.spawn("fetcher", &[])?;
    let certified = |n: usize| {
        let sandbox = &sandbox;
        async move {
            let deadline = Instant::now() + Duration::from_secs(35);
            loop {
                let c = certifications(sandbox).await?;
                if c.len() == 4 && c.values().all(|k| *k >= n) {
                    return anyhow::Ok(c);
                }
                anyhow::ensure!(Instant::now() < deadline, "not every shop certified {n} times: {c:?}");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    };
    certified(1).await?;
    // A second fetcher on the same configuration stands by: it polls nothing.
    let b = dep.spawn("fetcher", &[])?;
    let body = b.wait_readyz(503, Duration::from_secs(10)).await?;
    assert!(body.contains("standby"), "{body}");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(certifications(&sandbox).await?.values().all(|n| *n == 1), "only the first fetcher polled");
    // The first one dies: the second takes every shop over within 30 s (and polls each when
    // its interval says so, not at once: the last poll is recent).
    let before = holders(&dep).await?;
    assert!(before.len() == 4 && before.values().all(|h| *h == before["shop1"]), "{before:?}");
    a.kill();
    let started = Instant::now();
    b.wait_readyz(200, Duration::from_secs(30)).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = holders(&dep).await?;
        if now.len() == 4 && now.values().all(|h| *h != before["shop1"] && *h == now["shop1"]) {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "not every shop taken over: {now:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    println!("taken over after {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(30));
    Ok(())
}

/// Per shop, the instance whose claim stands on `leases.claim.fetcher.<shop>`.
async fn holders(dep: &Deployment) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    let mut out = std::collections::BTreeMap::new();
    for m in dep.stream_messages("LEASES").await? {
        if let Some(shop) = m.subject.rsplit_once("leases.claim.fetcher.").map(|(_, s)| s.to_owned()) {
            let claim: serde_json::Value = serde_json::from_slice(&m.payload)?;
            out.insert(shop, claim["instance"].as_str().unwrap_or_default().to_owned());
        }
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread")]
async fn backfill_beside_a_running_fetcher_says_who_polls_the_shop() -> anyhow::Result<()> {
    let sandbox = Sandbox::start(&["--shops", "1", "--orders", "10"]).await?;
    let dep = Deployment::new(&format!("{}{}", qoo10(&sandbox), shops(1))).await?;
    let fetcher = dep.spawn("fetcher", &[])?;
    fetcher.wait_readyz(200, Duration::from_secs(30)).await?;
    let started = Instant::now();
    let out = dep.run(
        "fetcher",
        &["backfill", "--shop", "shop1", "--from", "2026-10-01", "--to", "2026-10-05"],
        Duration::from_secs(60),
    )?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("shop shop1 is being polled by fetcher"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(40), "{:?}", started.elapsed());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sink_that_cannot_commit_is_not_ready_and_says_why() -> anyhow::Result<()> {
    let sandbox = Sandbox::start(&["--shops", "1", "--orders", "40"]).await?;
    let dep = Deployment::new(&format!("{}[sink]\nstall_after = \"10s\"\n\n{}", qoo10(&sandbox), shops(1))).await?;
    let proxy = Proxy::start(dep.servers.clickhouse_url.trim_start_matches("http://").trim_end_matches('/')).await?;
    dep.clickhouse_via(&format!("http://{}", proxy.addr))?;
    let sink = dep.spawn("sink", &[])?;
    sink.wait_readyz(200, Duration::from_secs(30)).await?;
    proxy.cut();
    dep.run_ok("fetcher", &["--once"])?;
    dep.run_ok("normalizer", &["--until-idle"])?;
    let body = sink.wait_readyz(503, Duration::from_secs(10)).await?;
    assert!(body.contains("clickhouse unreachable"), "{body}");
    let deadline = Instant::now() + Duration::from_secs(40);
    let stalled = loop {
        let (code, body) = sink.readyz().await?;
        if code == 503 && body.contains("stalled") {
            break body;
        }
        anyhow::ensure!(Instant::now() < deadline, "never said stalled: {body}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(stalled.contains("messages pending, nothing committed for"), "{stalled}");
    proxy.restore();
    sink.wait_readyz(200, Duration::from_secs(60)).await?;
    dep.wait_drained(Duration::from_secs(60)).await?;
    Ok(())
}
