//! Failure paths: wrong credentials, plain-text routing errors, bad input on the raw stream.

use std::time::Duration;

use async_nats::HeaderMap;
use e2e::{Deployment, Sandbox};
use serde_json::json;

fn shop_config(base_url: &str, password: &str) -> String {
    format!(
        r#"
[qoo10]
base_url = "{base_url}"
requests_per_second = 50
retry_budget = "2s"

[[shops]]
id = "good-shop"
user_id = "sandbox-seller-1"
api_key = "sandbox-api-key-1"
password = "sandbox-password-1"
lookback_days = 3

[[shops]]
id = "bad-shop"
user_id = "sandbox-seller-2"
api_key = "sandbox-api-key-2"
password = "{password}"
lookback_days = 3
"#
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_password_fails_that_shop_only_and_never_shows_the_secret() -> anyhow::Result<()> {
    let sandbox = Sandbox::start(&["--shops", "2", "--orders", "20"]).await?;
    let secret = "Sup3r-Secret-Pw!";
    let dep = Deployment::new(&shop_config(&sandbox.base_url(), secret)).await?;
    let out = dep.run("fetcher", &["--once"], Duration::from_secs(60))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("shop bad-shop: poll failed"), "{stderr}");
    assert!(stderr.contains("-10001"), "the QAPI code is reported: {stderr}");
    assert!(!stderr.contains("shop good-shop: poll failed"), "{stderr}");
    assert!(!stderr.contains(secret) && !stderr.contains("Sup3r-Secret-Pw%21"), "secret leaked: {stderr}");
    // The good shop's rows arrived anyway.
    let raw = dep.stream_messages("QOO10_RAW").await?;
    assert!(!raw.is_empty());
    assert!(raw.iter().all(|m| m.subject.ends_with(".qoo10.raw.good-shop")));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn routing_error_is_reported_not_retried() -> anyhow::Result<()> {
    let sandbox = Sandbox::start(&["--shops", "1"]).await?;
    // A gateway path that routes every call to an unknown service: plain text with HTTP 200.
    let base = sandbox.url("/GMKT.INC.Front.QAPIService/ebayjapan.qapi/Nope");
    let dep = Deployment::new(&format!(
        "[qoo10]\nbase_url = \"{base}\"\nretry_budget = \"30s\"\n\n[[shops]]\nid = \"s\"\nuser_id = \"sandbox-seller-1\"\napi_key = \"sandbox-api-key-1\"\npassword = \"sandbox-password-1\"\n"
    ))
    .await?;
    let started = std::time::Instant::now();
    let out = dep.run("fetcher", &["--once"], Duration::from_secs(60))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("routing error"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(20), "a routing error must not be retried for the whole budget");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_raw_messages_become_dead_letters_with_reasons() -> anyhow::Result<()> {
    let dep = Deployment::new("").await?;
    // Streams are created by any service at start; the normalizer run below does it, but we
    // publish first, so create them the same way.
    let js = dep.nats().await?;
    let cfg = schemas::config::NatsConfig { subject_prefix: dep.prefix.clone(), ..Default::default() };
    runtime::nats::ensure_streams(&js, &cfg).await?;
    let subject = format!("{}.qoo10.raw.shop-x", dep.prefix);
    let good_row =
        r#"{"orderNo":1,"packNo":2,"shippingStatus":"On request(2)","orderDate":"2026-11-20 10:00:00","orderQty":1}"#;
    let envelope = |row: &str| {
        format!(
            r#"{{"schema_version":1,"shop":"shop-x","kind":"order","method":"m","query":{{"status":2,"from":"20261101","to":"20261129","condition":1}},"fetched_at":"2026-11-29T00:00:00Z","row":{row}}}"#
        )
    };
    let inputs: Vec<(Vec<u8>, &str)> = vec![
        (b"not json at all".to_vec(), "not a raw envelope"),
        (vec![0xff, 0xfe, 0x00, 0x7b], "not a raw envelope"),
        (
            envelope(r#"{"orderNo":1,"packNo":2,"shippingStatus":"Lost(9)","orderDate":"2026-11-20","orderQty":1}"#)
                .into_bytes(),
            "field `shippingStatus`: code 9",
        ),
        (
            envelope(
                r#"{"orderNo":1,"packNo":2,"shippingStatus":"On request(2)","orderDate":"2026-11-20","orderQty":-3}"#,
            )
            .into_bytes(),
            "field `orderQty`",
        ),
        (envelope(good_row).into_bytes(), ""),
    ];
    for (i, (payload, _)) in inputs.iter().enumerate() {
        let mut headers = HeaderMap::new();
        headers.insert("X-Test", format!("input-{i}").as_str());
        js.publish_with_headers(subject.clone(), headers, payload.clone().into()).await?.await?;
    }
    dep.run_ok("normalizer", &["--until-idle"])?;

    let dead = dep.stream_messages("DLQ").await?;
    assert_eq!(dead.len(), 4, "one dead letter per bad input");
    for (i, (payload, reason)) in inputs.iter().enumerate().take(4) {
        let m = dead
            .iter()
            .find(|m| m.headers.get("X-Test").map(|v| v.as_str()) == Some(&format!("input-{i}")))
            .expect("dead letter");
        assert_eq!(m.subject.as_str(), format!("{}.dlq.normalizer.shop-x", dep.prefix));
        assert_eq!(m.payload.as_ref(), payload.as_slice(), "original bytes kept verbatim");
        let error = m.headers.get("Dlq-Error").map(|v| v.as_str().to_owned()).unwrap_or_default();
        assert!(error.contains(reason), "{error:?} should contain {reason:?}");
        assert_eq!(m.headers.get("Dlq-Stage").map(|v| v.as_str()), Some("normalizer"));
    }
    let orders = dep.stream_messages("ORDERS").await?;
    assert_eq!(orders.len(), 1, "the good row still became an order");

    // Inspect, then replay: the letters go back where they came from (still bad, they return).
    let out = dep.run_ok("sink", &["replay-dlq", "--stage", "normalizer", "--dry-run"])?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.contains("4 dead letters of stage normalizer (dry run") && text.contains("field `orderQty`"),
        "{text}"
    );
    assert_eq!(dep.stream_messages("DLQ").await?.len(), 4, "a dry run changes nothing");
    let out = dep.run_ok("sink", &["replay-dlq", "--stage", "normalizer", "--shop", "shop-x"])?;
    assert!(String::from_utf8_lossy(&out.stdout).contains("4 of 4 dead letters of stage normalizer replayed"));
    assert!(dep.stream_messages("DLQ").await?.is_empty());
    let raw = dep.stream_messages("QOO10_RAW").await?;
    assert_eq!(raw.len(), 9);
    assert!(raw[5..].iter().all(|m| m.headers.get("X-Test").is_some()), "original headers travel back");
    dep.run_ok("normalizer", &["--until-idle"])?;
    assert_eq!(dep.stream_messages("DLQ").await?.len(), 4, "still refused, so back in the DLQ");
    let order: serde_json::Value = serde_json::from_slice(&orders[0].payload)?;
    assert_eq!(order["order_no"], json!(1));
    assert_eq!(order["status"], json!("new"));
    Ok(())
}

/// A raw row for `shop-x` (valid), in its envelope.
fn good_envelope(order_no: u64) -> String {
    let row = format!(
        r#"{{"orderNo":{order_no},"packNo":2,"shippingStatus":"On request(2)","orderDate":"2026-11-20 10:00:00","orderQty":1}}"#
    );
    format!(
        r#"{{"schema_version":1,"shop":"shop-x","kind":"order","method":"m","query":{{"status":2,"from":"20261101","to":"20261129","condition":1}},"fetched_at":"2026-11-29T00:00:00Z","row":{row}}}"#
    )
}

async fn wait_for<F, Fut>(what: &str, limit: Duration, mut ok: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = std::time::Instant::now() + limit;
    while !ok().await? {
        anyhow::ensure!(std::time::Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_that_cannot_be_passed_on_is_dead_lettered_at_its_last_delivery() -> anyhow::Result<()> {
    let dep = Deployment::new("").await?;
    dep.add_nats_settings("max_deliver = 3")?;
    let normalizer = dep.spawn("normalizer", &[])?;
    normalizer.wait_readyz(200, Duration::from_secs(30)).await?;
    // Canonical orders can no longer be stored: every publish of one fails.
    let js = dep.nats().await?;
    let ns = schemas::subjects::Namespace::new(&dep.prefix);
    js.delete_stream(ns.stream(schemas::subjects::Stream::Orders)).await?;
    let started = std::time::Instant::now();
    js.publish(ns.raw("shop-x"), good_envelope(7).into()).await?.await?;
    wait_for("the dead letter", Duration::from_secs(60), || async {
        Ok(!dep.stream_messages("DLQ").await?.is_empty())
    })
    .await?;
    println!("dead-lettered after {:?}", started.elapsed());
    let dead = dep.stream_messages("DLQ").await?;
    let error = dead[0].headers.get("Dlq-Error").map(|v| v.as_str().to_owned()).unwrap_or_default();
    assert!(error.starts_with("gave up after 3 deliveries: publish failed"), "{error}");
    assert_eq!(dead[0].payload.as_ref(), good_envelope(7).as_bytes(), "the original bytes");
    // The raw message ended: acknowledged (nothing pending, nothing awaiting an ack), so it is
    // never delivered again.
    let stream = js.get_stream(ns.stream(schemas::subjects::Stream::Raw)).await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let info = stream.consumer_info("normalizer").await?;
        if (info.num_pending, info.num_ack_pending) == (0, 0) {
            break;
        }
        anyhow::ensure!(std::time::Instant::now() < deadline, "the raw message is still open: {info:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(dep.stream_messages("DLQ").await?.len(), 1, "one dead letter");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_consumer_and_a_deleted_stream_are_made_again() -> anyhow::Result<()> {
    let dep = Deployment::new("").await?;
    let normalizer = dep.spawn("normalizer", &[])?;
    normalizer.wait_readyz(200, Duration::from_secs(30)).await?;
    let js = dep.nats().await?;
    let ns = schemas::subjects::Namespace::new(&dep.prefix);
    let raw = ns.stream(schemas::subjects::Stream::Raw);
    let orders = || async { Ok::<usize, anyhow::Error>(dep.stream_messages("ORDERS").await?.len()) };
    js.get_stream(&raw).await?.delete_consumer("normalizer").await?;
    js.publish(ns.raw("shop-x"), good_envelope(1).into()).await?.await?;
    wait_for("an order after the consumer was deleted", Duration::from_secs(30), || async { Ok(orders().await? == 1) })
        .await?;
    js.delete_stream(&raw).await?;
    // Once the normalizer has made QOO10_RAW again, a raw row is an order again.
    wait_for("QOO10_RAW made again", Duration::from_secs(30), || async { Ok(js.get_stream(&raw).await.is_ok()) })
        .await?;
    // nats-server may answer 503 "error opening msg block file" (10077) for a moment after a
    // stream of the same name was deleted and made again; a fetcher polls again after such a failed
    // publish, and this test publishes again until the server takes it.
    wait_for("QOO10_RAW taking a publish", Duration::from_secs(30), || async {
        Ok(match js.publish(ns.raw("shop-x"), good_envelope(2).into()).await {
            Ok(ack) => ack.await.is_ok(),
            Err(_) => false,
        })
    })
    .await?;
    wait_for("an order after the stream was deleted", Duration::from_secs(30), || async { Ok(orders().await? == 2) })
        .await?;
    let log = std::fs::read_to_string(&normalizer.log)?;
    assert!(log.contains("stream or consumer was deleted; creating it again"), "{log}");
    Ok(())
}
