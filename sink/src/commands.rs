//! The sink's operator commands: `alerts`, `replay-dlq`, `retention` (`schema` needs nothing:
//! `main.rs` prints `schemas::sql::schema_script`).

use schemas::config::PipelineConfig;
use schemas::subjects::{Namespace, Stage, Stream};

use crate::rows::AlertRow;
use crate::store::Store;

/// `sink alerts`: alerts as a table, newest first.
pub async fn alerts(config: &PipelineConfig, shop: Option<&str>, open: bool, limit: u64) -> anyhow::Result<()> {
    let store = Store::new(&config.clickhouse);
    store.migrate().await?;
    print!("{}", alerts_table(&store.list_alerts(shop, open, limit).await?));
    Ok(())
}

/// `sink retention`: the daily retention run now (each shop's `personal_data_days`), or with
/// `contacts_days` every line ordered longer ago than that; or, `dry_run`, only counted.
pub async fn retention(config: &PipelineConfig, contacts_days: Option<u32>, dry_run: bool) -> anyhow::Result<()> {
    let store = Store::new(&config.clickhouse);
    store.migrate().await?;
    if let Some(days) = contacts_days {
        let n = store.expire_contacts(days, dry_run).await?;
        let verb = if dry_run { "would be deleted" } else { "deleted (mutation submitted)" };
        println!("order_contacts: {n} rows of orders placed more than {days} days ago {verb}");
        return Ok(());
    }
    let now = u32::try_from(chrono::Utc::now().timestamp()).unwrap_or(u32::MAX);
    let lines = store.expired_lines(&crate::retention::Policy::of(config), now).await?;
    if dry_run {
        println!("order_contacts: the personal data of {} lines is past its shop's personal_data_days", lines.len());
        return Ok(());
    }
    let rows = store.delete_contacts(&lines, std::time::Duration::from_secs(120)).await?;
    println!("order_contacts: deleted {rows} rows of {} lines past their shop's personal_data_days", lines.len());
    Ok(())
}

/// `sink erase`: see [`crate::erase`]. Prints what it removed, place by place.
pub async fn erase(config: &PipelineConfig, request: &crate::erase::Request) -> anyhow::Result<()> {
    let shop_ok = !request.shop.is_empty()
        && request.shop.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    anyhow::ensure!(shop_ok, "--shop {:?} is not a shop id ([a-z0-9_-])", request.shop);
    let store = Store::new(&config.clickhouse);
    store.migrate().await?;
    let (_client, js) = runtime::nats::connect_jetstream(&config.nats, "sink-erase").await?;
    let removed = crate::erase::erase(&store, &js, &Namespace::from_config(&config.nats), request).await?;
    let orders: Vec<String> = removed.orders.iter().map(u64::to_string).collect();
    println!(
        "shop {}: orders {}",
        request.shop,
        if orders.is_empty() { "none found".into() } else { orders.join(", ") }
    );
    println!("  ClickHouse order_contacts: {} rows deleted", removed.contact_rows);
    for (stream, n) in &removed.messages {
        println!("  NATS {stream}: {n} messages deleted (erased)");
    }
    println!("  recorded in erasures (by {}, no personal data)", request.by);
    Ok(())
}

/// `sink replay-dlq`: lists dead letters of a stage and, unless `dry_run`, sends each back to
/// the subject it came from (payload and original headers as they were) and removes it.
pub async fn replay_dlq(config: &PipelineConfig, stage: &str, shop: Option<&str>, dry_run: bool) -> anyhow::Result<()> {
    let Some(stage) = Stage::parse(stage) else { anyhow::bail!("--stage must be `normalizer`, `sink` or `fetcher`") };
    let ns = Namespace::from_config(&config.nats);
    let (_client, js) = runtime::nats::connect_jetstream(&config.nats, "sink-replay-dlq").await?;
    let mut stream = js.get_stream(ns.stream(Stream::Dlq)).await?;
    let state = stream.info().await?.state.clone();
    let prefix = ns.dlq(stage, "");
    let (mut listed, mut replayed) = (0u64, 0u64);
    if state.messages > 0 {
        for seq in state.first_sequence..=state.last_sequence {
            let Ok(m) = stream.get_raw_message(seq).await else { continue }; // deleted
            let subject = m.subject.to_string();
            if !subject.starts_with(&prefix) || shop.is_some_and(|s| Namespace::shop_of(&subject) != s) {
                continue;
            }
            let header = |name: &str| m.headers.get(name).map(|v| v.as_str().to_owned()).unwrap_or_default();
            listed += 1;
            println!("#{seq} {subject} from {}: {}", header(schemas::dlq::SUBJECT), header(schemas::dlq::ERROR));
            if dry_run {
                continue;
            }
            let target = header(schemas::dlq::SUBJECT);
            if target.is_empty() {
                println!("  skipped: no {} header", schemas::dlq::SUBJECT);
                continue;
            }
            let mut headers = async_nats::HeaderMap::new();
            for (name, values) in m.headers.iter() {
                let name: &str = name.as_ref();
                if name.starts_with("Dlq-") || name == "Nats-Msg-Id" {
                    continue;
                }
                for v in values {
                    headers.append(name, v.as_str());
                }
            }
            headers.insert(async_nats::header::NATS_MESSAGE_ID, format!("replay:{}:{seq}", stage.as_str()).as_str());
            js.publish_with_headers(target, headers, m.payload.clone()).await?.await?;
            stream.delete_message(seq).await?;
            replayed += 1;
        }
    }
    if dry_run {
        println!("{listed} dead letters of stage {} (dry run: nothing replayed)", stage.as_str());
    } else {
        println!("{replayed} of {listed} dead letters of stage {} replayed", stage.as_str());
    }
    Ok(())
}

/// A plain-text table of alerts, one line each, Japanese message last (it is the action).
pub fn alerts_table(rows: &[AlertRow]) -> String {
    let mut out = format!(
        "{:<8} {:<26} {:<16} {:>12} {:<16} {}\n",
        "STATE", "KIND", "SHOP", "ORDER", "SINCE (JST)", "WHAT TO DO"
    );
    for r in rows {
        let since = chrono::DateTime::from_timestamp(i64::from(r.opened_at), 0)
            .map(|t| t.with_timezone(&schemas::time::jst()).format("%Y-%m-%d %H:%M").to_string())
            .unwrap_or_default();
        let order = if r.order_no == 0 { "-".to_owned() } else { r.order_no.to_string() };
        out.push_str(&format!(
            "{:<8} {:<26} {:<16} {:>12} {:<16} {}\n",
            r.state, r.kind, r.shop_id, order, since, r.message_ja
        ));
    }
    if rows.is_empty() {
        out.push_str("(no alerts)\n");
    }
    out
}
