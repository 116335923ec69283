//! What operators rely on: /metrics, /healthz, /readyz on every service, graceful shutdown on
//! SIGTERM, and --print-config.

use std::time::{Duration, Instant};

use std::process::{Command, Stdio};

use anyhow::Context;
use e2e::{Deployment, Sandbox, Service, http};

/// Starts a service on a free port and waits until it is ready.
async fn start_ready(dep: &Deployment, name: &str) -> anyhow::Result<(Service, u16)> {
    let service = dep.spawn(name, &[])?;
    let port = service.port;
    let deadline = Instant::now() + Duration::from_secs(20);
    while status(port, "/readyz").await.unwrap_or(0) != 200 {
        anyhow::ensure!(Instant::now() < deadline, "{name} not ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok((service, port))
}

/// Scrapes /metrics until `want` appears (or fails after 30 s).
async fn metrics_with(port: u16, want: &str) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = http().get(format!("http://127.0.0.1:{port}/metrics")).send().await {
            let text = r.text().await?;
            if text.contains(want) {
                return Ok(text);
            }
            anyhow::ensure!(Instant::now() < deadline, "no {want:?} in:\n{text}");
        }
        anyhow::ensure!(Instant::now() < deadline, "no /metrics on port {port}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn status(port: u16, path: &str) -> anyhow::Result<u16> {
    Ok(http().get(format!("http://127.0.0.1:{port}{path}")).send().await?.status().as_u16())
}

#[tokio::test(flavor = "multi_thread")]
async fn every_service_reports_metrics_health_and_stops_gracefully() -> anyhow::Result<()> {
    let sandbox = Sandbox::start(&["--shops", "1", "--orders", "30"]).await?;
    let dep = Deployment::new(&format!(
        "[qoo10]\nbase_url = \"{}\"\nrequests_per_second = 50\n\n[[shops]]\nid = \"ops\"\nuser_id = \"sandbox-seller-1\"\n\
         api_key = \"sandbox-api-key-1\"\npassword = \"sandbox-password-1\"\nlookback_days = 7\ninterval = \"10m\"\n",
        sandbox.base_url()
    ))
    .await?;

    let mut fetcher = dep.spawn("fetcher", &[])?;
    let fp = fetcher.port;
    let text = metrics_with(fp, "fetcher_polls_total{shop=\"ops\",outcome=\"ok\"} 1").await?;
    assert!(
        // A first import: 1–3, 4 and 5 by order date, 4 by ship date, 2–3 by payment date, 5 by delivered date.
        text.contains("qoo10_requests_total{method=\"ShippingBasic.GetShippingInfo_v3\",outcome=\"0\"} 6"),
        "{text}"
    );
    assert!(text.contains("# TYPE fetcher_published_total counter"), "{text}");
    assert!(text.contains("qoo10_rate_limit_wait_seconds_total"), "{text}");
    assert_eq!((status(fp, "/healthz").await?, status(fp, "/readyz").await?), (200, 200));
    assert_eq!(fetcher.terminate()?, Some(0));

    let mut normalizer = dep.spawn("normalizer", &[])?;
    let np = normalizer.port;
    let text = metrics_with(np, "normalizer_orders_total{shop=\"ops\"}").await?;
    assert!(text.contains("consumer_pending{consumer=\"normalizer\"}"), "{text}");
    assert_eq!(status(np, "/readyz").await?, 200);
    assert_eq!(normalizer.terminate()?, Some(0));

    let mut sink = dep.spawn("sink", &[])?;
    let sp = sink.port;
    let text = metrics_with(sp, "end_to_end_latency_seconds_count").await?;
    assert!(text.contains("clickhouse_insert_rows_total{table=\"orders\"}"), "{text}");
    assert!(text.contains("clickhouse_insert_seconds_bucket{le=\"+Inf\"} 1"), "{text}");
    // Which kinds open depends on the hour the sandbox generated its orders in.
    assert!(text.contains("alerts_total{kind="), "{text}");
    assert_eq!((status(sp, "/healthz").await?, status(sp, "/readyz").await?), (200, 200));
    assert_eq!(sink.terminate()?, Some(0));

    let rows = dep.query("SELECT count() FROM orders FINAL").await?;
    assert_ne!(rows, vec![vec!["0".to_string()]]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn print_config_shows_the_effective_configuration_without_secrets() -> anyhow::Result<()> {
    let dep = Deployment::new(
        "[[shops]]\nid = \"p\"\nuser_id = \"u\"\napi_key = \"TOP-SECRET-KEY\"\npassword = \"TOP-SECRET-PW\"\n",
    )
    .await?;
    for name in ["fetcher", "normalizer", "sink"] {
        let out = dep.run_ok(name, &["--print-config"])?;
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(&format!("subject_prefix = \"{}\"", dep.prefix)), "{name}: {text}");
        assert!(text.contains("api_key = \"<redacted>\"") && !text.contains("TOP-SECRET"), "{name}: {text}");
        assert!(text.contains("http_listen = \"127.0.0.1:0\""), "HTTP_LISTEN applies: {text}");
    }
    Ok(())
}

/// The browser for page tests: `$CHROMIUM`, else `chromium` on the PATH (./scripts/test.sh
/// installs Debian's package). Missing, the test fails: a skipped page test tests nothing.
/// A one-shop sandbox deployment whose services reach ClickHouse only through a proxy the test
/// can cut.
async fn behind_a_proxy(shop: &str, orders: &str) -> anyhow::Result<(Sandbox, e2e::Proxy, Deployment)> {
    let sandbox = Sandbox::start(&["--shops", "1", "--orders", orders]).await?;
    let servers = e2e::servers().await;
    let proxy = e2e::Proxy::start(servers.clickhouse_url.trim_start_matches("http://").trim_end_matches('/')).await?;
    let dep = Deployment::new(&format!(
        "[qoo10]\nbase_url = \"{}\"\nrequests_per_second = 50\n\n[[shops]]\nid = \"{shop}\"\nuser_id = \"sandbox-seller-1\"\n\
         api_key = \"sandbox-api-key-1\"\npassword = \"sandbox-password-1\"\nlookback_days = 7\n",
        sandbox.base_url()
    ))
    .await?;
    dep.clickhouse_via(&format!("http://{}", proxy.addr))?;
    Ok((sandbox, proxy, dep))
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_a_clickhouse_outage_exits_cleanly_and_loses_nothing() -> anyhow::Result<()> {
    let (_sandbox, proxy, dep) = behind_a_proxy("outage", "30").await?;

    let (mut sink, _) = start_ready(&dep, "sink").await?;
    proxy.cut();
    dep.run_ok("fetcher", &["--once"])?;
    dep.run_ok("normalizer", &["--until-idle"])?;
    let expected = dep.stream_messages("ORDERS").await?.len();
    assert!(expected > 5);
    // The sink holds a batch it cannot write and is not ready, saying why.
    let why = sink.wait_readyz(503, Duration::from_secs(20)).await?;
    assert!(why.contains("clickhouse"), "{why}");
    let started = Instant::now();
    assert_eq!(sink.terminate()?, Some(0), "SIGTERM during the outage still exits 0");
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());

    // ClickHouse is back: the batch that was never acknowledged is written, once.
    proxy.restore();
    dep.run_ok("sink", &["--until-idle"])?;
    dep.run_ok("sink", &["--until-idle"])?;
    let stored = dep.query("SELECT count() FROM order_versions FINAL").await?;
    assert_eq!(stored, vec![vec![expected.to_string()]], "every order version once, none lost");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sink_started_during_a_clickhouse_outage_waits_then_catches_up() -> anyhow::Result<()> {
    let (_sandbox, proxy, dep) = behind_a_proxy("late", "20").await?;
    dep.run_ok("fetcher", &["--once"])?;
    dep.run_ok("normalizer", &["--until-idle"])?;
    let expected = dep.stream_messages("ORDERS").await?.len();
    assert!(expected > 5);
    proxy.cut();

    // Started without ClickHouse: alive, not ready, and a stop request still exits 0.
    let mut first = dep.spawn("sink", &[])?;
    let port = first.port;
    // It has tried ClickHouse and been refused twice (its retries, as its log says), and is
    // still there.
    let deadline = Instant::now() + Duration::from_secs(30);
    let refused = |s: &e2e::Service| {
        std::fs::read_to_string(&s.log).unwrap_or_default().matches("ClickHouse unreachable at start").count()
    };
    while refused(&first) < 2 {
        first.check_running().context("the sink waits for ClickHouse instead of exiting")?;
        anyhow::ensure!(Instant::now() < deadline, "the sink did not retry ClickHouse twice within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    first.check_running().context("the sink waits for ClickHouse instead of exiting")?;
    assert_eq!(status(port, "/healthz").await?, 200);
    assert_eq!(status(port, "/readyz").await?, 503, "not ready before its start-up reads are done");
    assert_eq!(first.terminate()?, Some(0), "SIGTERM while waiting at start exits 0");

    // Started without ClickHouse, then ClickHouse returns: ready, and every order written once.
    let mut second = dep.spawn("sink", &[])?;
    let port = second.port;
    second.wait_readyz(503, Duration::from_secs(10)).await?;
    proxy.restore();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // The database appears only once the sink has run its migrations.
        let stored = dep.count("SELECT count() FROM order_versions FINAL").await;
        if stored == expected as u64 && status(port, "/readyz").await? == 200 {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "not caught up within 60 s: {stored:?} of {expected}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(second.terminate()?, Some(0));
    Ok(())
}

/// `[nats.retention]` sets each stream's max age, also on streams that already exist.
#[tokio::test(flavor = "multi_thread")]
async fn stream_retention_follows_the_configuration() -> anyhow::Result<()> {
    let dep = Deployment::new("[nats.retention]\nraw = \"3days\"\n").await?;
    dep.run_ok("normalizer", &["--until-idle"])?;
    let js = dep.nats().await?;
    let ns = schemas::subjects::Namespace::new(&dep.prefix);
    let raw = ns.stream(schemas::subjects::Stream::Raw);
    let age = |js: async_nats::jetstream::Context, name: String| async move {
        anyhow::Ok(js.get_stream(&name).await?.info().await?.config.max_age)
    };
    assert_eq!(age(js.clone(), raw.clone()).await?, Duration::from_secs(3 * 86_400));
    let text = std::fs::read_to_string(&dep.config_path)?.replace("raw = \"3days\"", "raw = \"5days\"");
    std::fs::write(&dep.config_path, text)?;
    dep.run_ok("normalizer", &["--until-idle"])?;
    assert_eq!(age(js.clone(), raw).await?, Duration::from_secs(5 * 86_400));
    let orders = ns.stream(schemas::subjects::Stream::Orders);
    assert_eq!(age(js, orders).await?, Duration::from_secs(30 * 86_400), "the others keep their default");
    Ok(())
}

/// `./scripts/run.sh` (the main job) returns within seconds of Ctrl-C, with the services and
/// the sandbox it started stopped.
#[tokio::test(flavor = "multi_thread")]
async fn the_main_job_stops_at_ctrl_c_within_seconds() -> anyhow::Result<()> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let dir = e2e::TempDir::new(&e2e::unique("runsh"))?;
    let sandbox = format!("127.0.0.1:{}", e2e::free_port());
    let database = e2e::unique("runsh");
    let mut child = Command::new("setsid")
        .args(["bash", "-c", "exec ./scripts/run.sh"])
        .current_dir(root)
        .env("RUN_BIN_DIR", e2e::bin("sink").parent().context("bin dir")?)
        .env("PIPELINE_CONFIG", dir.0.join("none.toml"))
        .env("SANDBOX_ADDR", &sandbox)
        .env("CLICKHOUSE_DATABASE", &database)
        .env("NATS_SUBJECT_PREFIX", &database)
        .env("HTTP_LISTEN", "")
        .env("RUN_LOG_DIR", dir.0.join("logs"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let pid = child.id();
    // Running once it printed its first summary (after the first poll reached ClickHouse). The
    // output is read to its end, as a terminal would: a closed pipe would kill the script.
    let stdout = child.stdout.take().context("stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        let mut seen = String::new();
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            seen.push_str(&line);
            seen.push('\n');
            if line.starts_with("dead letters:") {
                let _ = tx.send(std::mem::take(&mut seen));
            }
        }
    });
    let seen = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(300)))
        .await?
        .context("no summary within 300 s")?;
    assert!(seen.contains("orders stored per status") && seen.contains("sandbox-1"), "{seen}");
    let started = Instant::now();
    // Ctrl-C at a terminal signals the whole foreground process group.
    let sent = Command::new("kill").args(["-s", "INT", "--", &format!("-{pid}")]).status()?;
    anyhow::ensure!(sent.success(), "kill -s INT -- -{pid}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        anyhow::ensure!(Instant::now() < deadline, "run.sh still running 30 s after Ctrl-C");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let took = started.elapsed();
    println!("run.sh returned {:.1} s after Ctrl-C ({status})", took.as_secs_f64());
    assert!(took < Duration::from_secs(10), "took {took:?}");
    let left = Command::new("pgrep").args(["-g", &pid.to_string()]).output()?;
    assert!(left.stdout.is_empty(), "left running: {}", String::from_utf8_lossy(&left.stdout));
    assert!(std::net::TcpStream::connect(&sandbox).is_err(), "the sandbox still listens");
    // Each service got one signal (from the script, not the terminal too) and stopped cleanly.
    for service in ["fetcher", "normalizer", "sink"] {
        let log = std::fs::read_to_string(dir.0.join("logs").join(format!("{service}.log")))?;
        assert!(!log.contains("second signal: exiting now"), "{service} got two signals:\n{log}");
        assert!(log.contains("stopping: finishing the batch"), "{service} did not stop cleanly:\n{log}");
        // Normalizers share the work: only the fetcher and the sink hold leases.
        if service != "normalizer" {
            assert!(log.contains("lease released"), "{service} did not release its lease:\n{log}");
        }
    }
    // Every lease is free, so a run started now is active at once.
    let nats = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let js = async_nats::jetstream::new(async_nats::connect(nats.as_str()).await?);
    let ns = schemas::subjects::Namespace::new(&database);
    let mut stream = js.get_stream(ns.stream_named("LEASES")).await?;
    let state = stream.info().await?.state.clone();
    let mut holders = std::collections::BTreeMap::new();
    for seq in state.first_sequence..=state.last_sequence {
        if let Ok(m) = stream.get_raw_message(seq).await
            && m.subject.contains(".claim.")
        {
            let claim: serde_json::Value = serde_json::from_slice(&m.payload)?;
            holders.insert(m.subject.to_string(), claim["instance"].as_str().unwrap_or_default().to_owned());
        }
    }
    assert!(!holders.is_empty() && holders.values().all(String::is_empty), "leases still held: {holders:?}");
    Ok(())
}

/// A deployment upgraded from migration 5 keeps finding its carts: migration 6 copies the stored
/// history into `order_carts` (keyed by cart), and ClickHouse feeds it from every insert after.
#[tokio::test(flavor = "multi_thread")]
async fn an_upgrade_fills_order_carts_from_the_stored_history() -> anyhow::Result<()> {
    let dep = Deployment::new("").await?;
    let run = |db: &str, sql: String| {
        let url = format!("{}/?database={db}", dep.servers.clickhouse_url);
        async move {
            let r = http().post(url).body(sql.clone()).send().await?;
            let (ok, text) = (r.status().is_success(), r.text().await?);
            anyhow::ensure!(ok, "{sql}: {text}");
            anyhow::Ok(())
        }
    };
    run("default", format!("CREATE DATABASE {}", dep.database)).await?;
    run(&dep.database, schemas::sql::MIGRATIONS_TABLE.to_owned()).await?;
    // The tables as migrations 1–5 left them, with two carts of history.
    for m in schemas::sql::MIGRATIONS.iter().filter(|m| m.version <= 5) {
        for s in m.statements() {
            run(&dep.database, s).await?;
        }
        run(&dep.database, format!("INSERT INTO schema_migrations VALUES ({}, 'old', now())", m.version)).await?;
    }
    let line = |order: u64, pack: u64, claim: u8| {
        format!(
            "INSERT INTO order_versions (shop_id, order_no, pack_no, claim_status, version) VALUES ('s', {order}, {pack}, {claim}, 1)"
        )
    };
    for sql in [line(1, 77, 0), line(2, 77, 3), line(3, 78, 0)] {
        run(&dep.database, sql).await?;
    }
    dep.run_ok("sink", &["--until-idle"])?;
    let carts = dep.query("SELECT pack_no, order_no, claim_status FROM order_carts FINAL ORDER BY order_no").await?;
    assert_eq!(carts, vec![vec!["77", "1", "0"], vec!["77", "2", "3"], vec!["78", "3", "0"]]);
    // Fed by ClickHouse from now on, whoever inserts.
    run(&dep.database, line(4, 78, 0)).await?;
    assert_eq!(dep.count("SELECT count() FROM order_carts FINAL WHERE pack_no = 78").await, 2);
    Ok(())
}
