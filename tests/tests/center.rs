//! The alert center (`GET /`, `/api/…`) in a real browser (Debian's headless chromium over the
//! DevTools protocol) against a sandbox workload of several shops: counts equal `alerts FINAL`,
//! filters work, acknowledging needs the token and is durable and published, the charts render,
//! a write-back fix reaches Qoo10. Screenshots go to `target/tmp/alert-center/`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use e2e::{Browser, Deployment, Sandbox, Service, http};

const TOKEN: &str = "center-test-token-5f2c";
const SHOPS: usize = 4;

fn config(base_url: &str) -> String {
    let mut c = format!(
        "[qoo10]\nbase_url = \"{base_url}\"\nrequests_per_second = 50\n\n[sink]\nhttp_token = \"{TOKEN}\"\npage_refresh = \"1s\"\n\n"
    );
    for n in 1..=SHOPS {
        c.push_str(&format!(
            "[[shops]]\nid = \"sandbox-{n}\"\nuser_id = \"sandbox-seller-{n}\"\napi_key = \"sandbox-api-key-{n}\"\n\
             password = \"sandbox-password-{n}\"\nlookback_days = 7\nwriteback = {}\n\n",
            n == 1
        ));
    }
    c
}

fn shots() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("alert-center")
}

async fn api(port: u16, path: &str) -> anyhow::Result<serde_json::Value> {
    let r = http().get(format!("http://127.0.0.1:{port}{path}")).bearer_auth(TOKEN).send().await?;
    anyhow::ensure!(r.status() == 200, "{path}: {}", r.status());
    Ok(r.json().await?)
}

/// Starts the sink and waits until its center shows every open alert ClickHouse holds.
async fn center(dep: &Deployment) -> anyhow::Result<(Service, u16, u64)> {
    let sink = dep.spawn("sink", &[])?;
    let port = sink.port;
    let open = dep.count("SELECT count() FROM alerts FINAL WHERE state = 'open'").await;
    assert!(open > 20, "the sandbox world raises alerts: {open}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let shown = api(port, "/api/summary").await.ok().and_then(|s| s["open_alerts"]["total"].as_u64());
        if shown == Some(open) {
            return Ok((sink, port, open));
        }
        anyhow::ensure!(Instant::now() < deadline, "the center shows {shown:?} open alerts, ClickHouse {open}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_gives_true_counts_and_filters_and_refuses_without_the_token() -> anyhow::Result<()> {
    let sandbox = Sandbox::start(&["--shops", &SHOPS.to_string(), "--orders", "120"]).await?;
    let dep = Deployment::new(&config(&sandbox.base_url())).await?;
    dep.run_pipeline_once()?;
    let (mut sink, port, open) = center(&dep).await?;

    for path in ["/api/summary", "/api/alerts"] {
        let r = http().get(format!("http://127.0.0.1:{port}{path}")).send().await?;
        assert_eq!(r.status(), 401, "{path} without the token");
        let r = http().get(format!("http://127.0.0.1:{port}{path}")).bearer_auth("wrong").send().await?;
        assert_eq!(r.status(), 401, "{path} with a wrong token");
    }
    let summary = api(port, "/api/summary").await?;
    let per_shop = dep.query("SELECT shop_id, kind, severity, count() FROM alerts FINAL WHERE state = 'open' GROUP BY shop_id, kind, severity").await?;
    assert!(!per_shop.is_empty());
    for row in &per_shop {
        let shop = summary["shops"].as_array().unwrap().iter().find(|s| s["shop_id"] == row[0].as_str()).unwrap();
        let counted = shop["open_alerts"]["by_kind_severity"].as_array().unwrap();
        let c = counted.iter().find(|c| c["kind"] == row[1].as_str() && c["severity"] == row[2].as_str());
        assert_eq!(c.map(|c| c["count"].to_string()), Some(row[3].clone()), "{row:?}");
    }
    let all = api(port, "/api/alerts?limit=7").await?;
    assert_eq!((all["total"].as_u64(), all["alerts"].as_array().unwrap().len()), (Some(open), 7));
    assert!(
        all["alerts"][0]["message_ja"].as_str().is_some_and(|m| !m.is_empty()),
        "published form: {}",
        all["alerts"][0]
    );
    assert!(all["alerts"][0].get("acknowledged_at").is_some_and(|a| a.is_null()));
    let shop2 = dep.count("SELECT count() FROM alerts FINAL WHERE state = 'open' AND shop_id = 'sandbox-2'").await;
    let mut paged = std::collections::HashSet::new();
    for offset in (0..shop2).step_by(10) {
        let p = api(port, &format!("/api/alerts?shop=sandbox-2&limit=10&offset={offset}")).await?;
        assert_eq!(p["total"].as_u64(), Some(shop2));
        paged.extend(p["alerts"].as_array().unwrap().iter().map(|a| a["alert_id"].as_str().unwrap().to_owned()));
    }
    assert_eq!(paged.len() as u64, shop2, "pages cover the shop's alerts once each");
    let resolved = dep.count("SELECT count() FROM alerts FINAL WHERE state = 'resolved'").await;
    assert_eq!(api(port, "/api/alerts?state=resolved&limit=1").await?["total"].as_u64(), Some(resolved));
    for bad in ["state=closed", "kind=nope", "acknowledged=maybe", "limit=-1", "limit=5000"] {
        let r = http().get(format!("http://127.0.0.1:{port}/api/alerts?{bad}")).bearer_auth(TOKEN).send().await?;
        assert_eq!(r.status(), 400, "{bad}");
    }

    // A standby's center counts the same (it follows ALERTS), and what is acknowledged there
    // reaches the active one's (which the sink itself feeds).
    let (mut standby, standby_port, _) = center(&dep).await?;
    let first = all["alerts"][0]["alert_id"].as_str().unwrap().to_owned();
    let r = http()
        .post(format!("http://127.0.0.1:{standby_port}/api/alerts/{first}/acknowledge"))
        .bearer_auth(TOKEN)
        .send()
        .await?;
    assert_eq!(r.status(), 200, "{}", r.text().await?);
    let seen = wait_async(|| async {
        api(port, "/api/alerts?acknowledged=true").await.is_ok_and(|a| a["alerts"][0]["alert_id"] == first.as_str())
    })
    .await;
    assert!(seen, "the active sink's center shows the standby's acknowledgement");
    let _ = standby.terminate();
    let _ = sink.terminate();
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_seller_filters_acknowledges_and_fixes_from_the_page_in_a_browser() -> anyhow::Result<()> {
    let sandbox = Sandbox::start(&["--shops", &SHOPS.to_string(), "--orders", "120"]).await?;
    let dep = Deployment::new(&config(&sandbox.base_url())).await?;
    dep.run_pipeline_once()?;
    let (mut sink, port, open) = center(&dep).await?;
    let tap = dep.alert_tap().await?;
    let mut b = Browser::start().await?;
    let base = format!("http://127.0.0.1:{port}/");

    // The whole queue, true counts, three charts of 30 points per line.
    b.goto(&base).await?;
    let total = b.eval("document.querySelector('#queue-total').textContent").await?;
    assert_eq!(total.as_str(), Some(open.to_string().as_str()));
    let rows = b.eval("document.querySelectorAll('table.queue tbody tr').length").await?;
    assert_eq!(rows.as_u64(), Some(open.min(30)), "the first page of the queue");
    let charts = b.eval("[...document.querySelectorAll('svg.chart')].map(s => [s.id, s.dataset.points, [...s.querySelectorAll('polyline')].map(p => p.points.numberOfItems)])").await?;
    let charts = charts.as_array().unwrap();
    assert_eq!(charts.len(), 3, "{charts:?}");
    for c in charts {
        assert_eq!(c[1], "30", "{c}");
        let lines = c[2].as_array().unwrap();
        assert!(!lines.is_empty() && lines.iter().all(|n| n == 30), "every line has 30 points: {c}");
    }
    b.screenshot(&shots().join("center-desktop.png")).await?;

    // Filters: a shop and a kind; the counts are ClickHouse's.
    let kind = dep.query("SELECT kind FROM alerts FINAL WHERE state = 'open' AND shop_id = 'sandbox-3' GROUP BY kind ORDER BY count() DESC LIMIT 1").await?;
    let kind = kind[0][0].clone();
    let want = dep
        .count(&format!(
            "SELECT count() FROM alerts FINAL WHERE state = 'open' AND shop_id = 'sandbox-3' AND kind = '{kind}'"
        ))
        .await;
    b.goto(&format!("{base}?shop=sandbox-3&kind={kind}")).await?;
    assert_eq!(b.eval("document.querySelector('#queue-total').textContent").await?, want.to_string());
    let kinds =
        b.eval("[...new Set([...document.querySelectorAll('table.queue tbody tr')].map(r => r.dataset.kind))]").await?;
    assert_eq!(kinds, serde_json::json!([kind]));
    let sections = b.eval("[...document.querySelectorAll('section.shop')].map(s => s.id)").await?;
    assert_eq!(sections, serde_json::json!(["shop-sandbox-3"]));
    let shop_total = dep.count("SELECT count() FROM alerts FINAL WHERE state = 'open' AND shop_id = 'sandbox-3'").await;
    let overview =
        b.eval("document.querySelector('#overview tr[data-shop=\"sandbox-3\"] .open-total').textContent").await?;
    assert_eq!(overview, shop_total.to_string(), "the shop's true count beside the filtered queue");

    // Acknowledging needs the token: without it the page asks for it and a bare POST is refused.
    let first = b.eval("document.querySelector('table.queue tbody tr').dataset.alertId").await?;
    let first = first.as_str().unwrap().to_owned();
    let bare = http().post(format!("{base}alerts/{first}/acknowledge")).form(&[("back", "")]).send().await?;
    assert_eq!(bare.status(), 401);
    assert!(b.eval("!!document.querySelector('#login')").await? == true);
    b.eval(&format!("document.querySelector('#login input[name=token]').value = '{TOKEN}'; document.querySelector('#login').submit(); 1")).await?;
    b.wait_for("document.readyState === 'complete' && !document.querySelector('#login') && !!document.querySelector('form.ack')", Duration::from_secs(20)).await?;
    b.eval(&format!("document.querySelector('#alert-{} form.ack').submit(); 1", css_id(&first))).await?;
    b.wait_for("!!document.querySelector('#notice')", Duration::from_secs(20)).await?;
    let shown = b
        .eval(&format!("document.querySelector('#alert-{} .acknowledged')?.textContent ?? ''", css_id(&first)))
        .await?;
    assert!(shown.as_str().is_some_and(|s| s.contains("対応中")), "{shown}");
    assert_eq!(b.eval("new URL(location.href).searchParams.get('kind')").await?, kind, "the filter is kept");
    assert_eq!(dep.count(&format!("SELECT count() FROM alert_acks WHERE alert_id = '{first}'")).await, 1, "durable");
    let published =
        wait(|| tap.all().into_iter().any(|a| a["alert_id"] == first.as_str() && a["acknowledged_at"].is_string()))
            .await;
    assert!(published, "the acknowledgement is published on alerts.>");
    let acked = api(port, "/api/alerts?acknowledged=true").await?;
    assert_eq!((acked["total"].as_u64(), acked["alerts"][0]["alert_id"].as_str()), (Some(1), Some(first.as_str())));
    b.screenshot(&shots().join("center-acknowledged.png")).await?;

    // On a phone: the queue stacks, nothing overflows.
    b.viewport(390, 844, true).await?;
    b.goto(&base).await?;
    let overflow = b.eval("document.documentElement.scrollWidth <= window.innerWidth + 1").await?;
    assert_eq!(overflow, true, "readable on a phone without sideways scrolling");
    b.screenshot(&shots().join("center-phone.png")).await?;

    // A write-back shop's missing 発送予定日 is fixed from the page through the fetcher.
    fix_from_the_page(&dep, &mut b, &base).await?;
    let _ = sink.terminate();
    Ok(())
}

async fn fix_from_the_page(dep: &Deployment, b: &mut Browser, base: &str) -> anyhow::Result<()> {
    b.viewport(1280, 900, false).await?;
    b.goto(&format!("{base}?shop=sandbox-1&kind=ship_date_missing")).await?;
    let id = b.eval("document.querySelector('table.queue form.fix')?.closest('tr').dataset.alertId ?? ''").await?;
    let id = id.as_str().unwrap_or_default().to_owned();
    assert!(!id.is_empty(), "a write-back shop offers the fix for ship_date_missing");
    let other = b.eval("document.querySelectorAll('form.fix').length").await?;
    b.goto(&format!("{base}?shop=sandbox-2&kind=ship_date_missing")).await?;
    assert_eq!(
        b.eval("document.querySelectorAll('form.fix').length").await?,
        0,
        "no fix where write-back is off ({other} on sandbox-1)"
    );
    b.goto(&format!("{base}?shop=sandbox-1&kind=ship_date_missing")).await?;
    b.eval(&format!("document.querySelector('#alert-{} form.fix').submit(); 1", css_id(&id))).await?;
    b.wait_for("!!document.querySelector('#notice')", Duration::from_secs(30)).await?;
    // The fetcher applies pending commands before it polls; the sink stores the result.
    dep.run_ok("fetcher", &["--once"])?;
    let order = id.split(':').nth(2).unwrap().to_owned();
    let applied = wait_async(|| async {
        dep.count(&format!("SELECT count() FROM commands FINAL WHERE order_no = {order} AND state = 'applied'")).await
            == 1
    })
    .await;
    assert!(applied, "the fix was applied on Qoo10");
    // The poll after the fix shows Qoo10's date: the alert resolves and leaves the queue.
    dep.run_ok("normalizer", &["--until-idle"])?;
    let resolved = wait_async(|| async {
        dep.count(&format!("SELECT count() FROM alerts FINAL WHERE alert_id = '{id}' AND state = 'resolved'")).await
            == 1
    })
    .await;
    assert!(resolved, "the fixed alert resolved");
    // The page's board follows the stored transition in-process; it is read again until then.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        b.goto(&format!("{base}?shop=sandbox-1&kind=ship_date_missing")).await?;
        if b.eval(&format!("!document.querySelector('#alert-{}')", css_id(&id))).await? == true {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the resolved alert is still in the page's queue");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Ok(())
}

/// An alert id as it appears in an element id selector.
fn css_id(id: &str) -> String {
    id.chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c.to_string() } else { format!("\\\\{c}") })
        .collect()
}

async fn wait(mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

async fn wait_async<F: std::future::Future<Output = bool>>(mut f: impl FnMut() -> F) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread")]
async fn a_first_import_sends_one_digest_per_shop_at_the_receivers_pace() -> anyhow::Result<()> {
    // Like Slack when pressed: 429 with Retry-After to the first request.
    let (url, seen) =
        e2e::webhook_receiver(|n| if n == 1 { "429 Too Many Requests\r\nretry-after: 1" } else { "200 OK" }).await?;
    let sandbox = Sandbox::start(&["--shops", &SHOPS.to_string(), "--orders", "120"]).await?;
    let extra = format!("[alerts]\nwebhook_url = \"{url}\"\npage_url = \"http://center.example/\"\n\n");
    let dep = Deployment::new(&format!("{extra}{}", config(&sandbox.base_url()))).await?;
    dep.run_ok("fetcher", &["--once"])?;
    dep.run_ok("normalizer", &["--until-idle"])?;
    let mut sink = dep.spawn("sink", &[])?;
    let got = wait(|| seen.lock().unwrap().len() > SHOPS).await;
    let bodies = seen.lock().unwrap().clone();
    assert!(got, "one refused attempt and one digest per shop: {bodies:?}");
    let opened = dep.count("SELECT count() FROM alerts FINAL").await;
    assert!(opened > 4 * SHOPS as u64, "a first import opens many alerts: {opened}");
    let texts: Vec<String> = bodies[1..]
        .iter()
        .map(|(_, b)| serde_json::from_str::<serde_json::Value>(b).unwrap()["text"].as_str().unwrap().to_owned())
        .collect();
    for n in 1..=SHOPS {
        let shop = format!("sandbox-{n}");
        let of_shop: Vec<&String> = texts.iter().filter(|t| t.starts_with(&format!("[{shop}] "))).collect();
        assert_eq!(of_shop.len(), 1, "one digest for {shop}: {texts:#?}");
        let open = dep.count(&format!("SELECT count() FROM alerts FINAL WHERE shop_id = '{shop}'")).await;
        assert!(of_shop[0].contains(&format!("{open} new")), "counts by kind, total {open}: {}", of_shop[0]);
        assert!(of_shop[0].contains(&format!("http://center.example/?shop={shop}")), "{}", of_shop[0]);
    }
    assert!(bodies[1].0 - bodies[0].0 >= Duration::from_millis(950), "Retry-After is waited out");
    for pair in bodies.windows(2) {
        assert!(pair[1].0 - pair[0].0 >= Duration::from_millis(950), "at most one message a second");
    }
    let metrics = http().get(format!("http://127.0.0.1:{}/metrics", sink.port)).send().await?.text().await?;
    for (outcome, n) in [("sent", SHOPS), ("failed", 0), ("dropped", 0)] {
        let line = format!("webhook_notifications_total{{outcome=\"{outcome}\"}} {n}");
        assert!(metrics.contains(&line), "{line} in:\n{metrics}");
    }
    let _ = sink.terminate();
    Ok(())
}

/// A page of another site, served on its own port: whatever `html` says.
async fn other_site(html: String) -> anyhow::Result<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let answer =
                format!("HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\n\r\n{html}", html.len());
            let _ = s.write_all(answer.as_bytes()).await;
        }
    });
    Ok(port)
}

/// The center hardened: its headers keep it out of frames and other sites' reach; a request
/// for another `Host` (a DNS-rebinding page's) is refused; a signed-in browser visiting another
/// site that posts an acknowledgement to the center changes nothing; wrong tokens are
/// throttled; signing out ends the cookie.
#[tokio::test(flavor = "multi_thread")]
async fn the_center_answers_only_its_own_pages_and_hosts() -> anyhow::Result<()> {
    let sandbox = Sandbox::start(&["--shops", &SHOPS.to_string(), "--orders", "40"]).await?;
    let dep = Deployment::new(&config(&sandbox.base_url())).await?;
    dep.run_pipeline_once()?;
    let (sink, port, _) = center(&dep).await?;
    let base = format!("http://127.0.0.1:{port}/");
    let page = http().get(&base).send().await?;
    for (name, value) in sink::center::guard::HEADERS {
        assert_eq!(page.headers().get(name).and_then(|v| v.to_str().ok()), Some(value), "{name}");
    }
    let rebound = http().get(&base).header("host", format!("rebind.example:{port}")).send().await?;
    assert_eq!(rebound.status(), 421, "another Host name is refused");
    assert!(rebound.headers().contains_key("x-frame-options"));

    // Signed in, the browser visits another site whose page posts an acknowledgement.
    let mut b = Browser::start().await?;
    b.goto(&base).await?;
    b.eval(&format!("document.querySelector('#login input[name=token]').value = '{TOKEN}'; document.querySelector('#login').submit(); 1")).await?;
    b.wait_for("document.readyState === 'complete' && !!document.querySelector('#logout')", Duration::from_secs(20))
        .await?;
    let id = b.eval("document.querySelector('table.queue tbody tr').dataset.alertId").await?;
    let id = id.as_str().unwrap_or_default().to_owned();
    assert!(!id.is_empty());
    let attack = format!(
        "<form id=f method=post action=\"{base}alerts/{id}/acknowledge\"><input name=back value=\"\"></form>\
         <iframe id=frame src=\"{base}\"></iframe><script>document.getElementById('f').submit()</script>"
    );
    let evil = other_site(attack).await?;
    // (Its page submits itself at once: the browser ends on the center's answer.)
    b.eval(&format!("location.href = 'http://localhost:{evil}/'; 1")).await?;
    let refused = "document.readyState === 'complete' && location.href.includes('/acknowledge') \
                   && document.body.innerText.includes('cross-site request refused')";
    b.wait_for(refused, Duration::from_secs(20)).await?;
    assert_eq!(dep.count("SELECT count() FROM alert_acks").await, 0, "the other site acknowledged nothing");

    // Wrong tokens: five, then a wait.
    let wrong = |_| http().post(format!("{base}login")).form(&[("token", "guess"), ("back", "")]).send();
    for n in 0..sink::center::guard::MAX_FAILURES {
        assert_eq!(wrong(n).await?.status(), 401);
    }
    let throttled = wrong(0).await?;
    assert_eq!(throttled.status(), 429, "the sixth wrong token in a row");
    assert!(throttled.headers().contains_key("retry-after"));
    let no_redirect = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
    let out = no_redirect.post(format!("{base}logout")).form(&[("back", "")]).send().await?;
    assert_eq!(out.status(), 303);
    let cleared = out.headers().get("set-cookie").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    assert!(cleared.contains("Max-Age=0") && cleared.contains("HttpOnly"), "{cleared}");
    drop(sink);
    Ok(())
}

/// A write-back shop without a token: the sink refuses to start, naming the key.
#[tokio::test(flavor = "multi_thread")]
async fn write_back_without_a_token_refuses_to_start_naming_the_key() -> anyhow::Result<()> {
    let dep = Deployment::new("# no http_token on purpose\n[[shops]]\nid = \"wb\"\nwriteback = true\n").await?;
    let out = dep.run("sink", &["--until-idle"], Duration::from_secs(60))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("`sink.http_token`: required: shop \"wb\" has writeback = true"), "{stderr}");
    Ok(())
}
