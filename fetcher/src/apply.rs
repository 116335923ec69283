//! `fetcher apply`: one write-back command, sent on `qoo10.commands.<shop>` like any other
//! sender's, and its result printed. If no fetcher holds the shop, this process takes the
//! shop's lease and applies what is waiting itself; otherwise the holder applies it.

use std::time::Duration;

use anyhow::bail;
use chrono::NaiveDate;
use fetcher::schedule::{apply_waiting, shop_lease};
use futures::StreamExt;
use schemas::command::{Action, COMMAND_SCHEMA_VERSION, Command, CommandResult, CommandState};
use schemas::config::PipelineConfig;

#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    #[arg(long)]
    shop: String,
    /// The order (line) number.
    #[arg(long)]
    order: u64,
    /// Set 発送予定日 (YYYY-MM-DD, JST; after today): 配送要請 → 配送準備.
    #[arg(long, conflicts_with_all = ["carrier", "tracking_no"])]
    ship_date: Option<NaiveDate>,
    /// With --ship-date: 1 商品準備中, 2 注文製作, 3 顧客の要求, 4 その他.
    #[arg(long, default_value_t = 1)]
    delay_type: u8,
    /// With --ship-date: the seller's memo (≤ 1000 characters).
    #[arg(long, default_value = "")]
    memo: String,
    /// Register shipping: the carrier's name as Qoo10 knows it (佐川急便, ヤマト宅急便, ゆうパック).
    #[arg(long, requires = "tracking_no")]
    carrier: Option<String>,
    #[arg(long, requires = "carrier")]
    tracking_no: Option<String>,
    /// The command's id (default: one made from the shop, order and time). Sending an id
    /// again prints its stored result and calls Qoo10 no more.
    #[arg(long)]
    command_id: Option<String>,
}

fn command(a: &ApplyArgs) -> anyhow::Result<Command> {
    let action = match (&a.ship_date, &a.carrier, &a.tracking_no) {
        (Some(d), None, None) => {
            Action::SetShipDate { order_no: a.order, ship_date: *d, delay_type: a.delay_type, memo: a.memo.clone() }
        }
        (None, Some(c), Some(t)) => {
            Action::SetTracking { order_no: a.order, carrier: c.clone(), tracking_no: t.clone() }
        }
        _ => bail!("give --ship-date, or --carrier and --tracking-no"),
    };
    let id = a
        .command_id
        .clone()
        .unwrap_or_else(|| format!("cli-{}-{}-{}", a.shop, a.order, chrono::Utc::now().timestamp_micros()));
    let cmd = Command { schema_version: COMMAND_SCHEMA_VERSION, command_id: id, shop_id: a.shop.clone(), action };
    cmd.validate(&a.shop).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(cmd)
}

pub async fn apply(config: &PipelineConfig, a: ApplyArgs) -> anyhow::Result<bool> {
    let shop = crate::find_shop(config, &a.shop)?.clone();
    let cmd = command(&a)?;
    let (service, sink, leases) = crate::connect(config).await?;
    let mut results = service.client.subscribe(sink.ns.command_results(&shop.id)).await?;
    service.client.flush().await?;
    // No Nats-Msg-Id: JetStream would drop a command sent again within its duplicate window,
    // and a command sent again must get its stored result (or, after `failed`, another try).
    // The fetcher's command record is what keeps it from changing Qoo10 twice.
    let payload = serde_json::to_vec(&cmd)?;
    sink.js.publish(sink.ns.commands(&shop.id), payload.into()).await?.await?;
    let lease = shop_lease(&shop.id);
    if leases.acquire(&lease).await? {
        let shared = crate::shared(config, sink.clone(), &leases, service.metrics.clone(), 1)?;
        let mut poller = crate::poller(config, shop.clone(), &leases);
        let applied = apply_waiting(&mut poller, &shared).await;
        leases.release(&lease).await;
        applied?;
    } else {
        let holder = leases.holder(&lease).map(|h| h.to_string()).unwrap_or_else(|| "another fetcher".into());
        eprintln!("shop {} is polled by {holder}: it applies the command", shop.id);
    }
    let wait = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(m) = results.next().await {
            if let Ok(r) = serde_json::from_slice::<CommandResult>(&m.payload)
                && r.command_id == cmd.command_id
            {
                return Some(r);
            }
        }
        None
    });
    let Ok(Some(result)) = wait.await else { bail!("no result for command {} within 120 s", cmd.command_id) };
    let code = result.qoo10_result_code.map(|c| format!(" (Qoo10 {c})")).unwrap_or_default();
    println!("command {} order {}: {}{code}", result.command_id, result.order_no, result.state.as_str());
    if !result.reason.is_empty() {
        println!("  {}\n  {}", result.reason, result.reason_ja);
    }
    Ok(result.state == CommandState::Applied)
}
