//! Write-back: the changes QAPI allows (発送予定日, tracking numbers), made by the fetcher that
//! holds the shop's lease, each command at most once.
//!
//! Per command: its record is read (a final result is only published again); the pure checks
//! of [`decide`] run; the line is read back from Qoo10 (a change it already shows is `applied`
//! with no call); the intent is recorded durably; Qoo10 is called once; an unclear answer or
//! none is settled by reading the line back; the result is recorded, published on
//! `qoo10.command_results.<shop>`, and the command acknowledged. A kill -9 anywhere leaves a
//! record that says "read back first", so a command never changes Qoo10 twice.

pub mod decide;
pub mod record;

use std::time::Duration;

use async_nats::jetstream;
use chrono::{DateTime, Utc};
use runtime::durable::Durable;
use schemas::alert::{Alert, AlertKind};
use schemas::command::{Action, COMMAND_SCHEMA_VERSION, Command, CommandResult, CommandState};
use schemas::config::NatsConfig;
use schemas::dlq::Reason;
use schemas::qapi::ResultObject;
use schemas::subjects::{Namespace, Stage, Stream};

use crate::client::QapiClient;
use crate::poll::{PollError, ShopPoller, Sink};
use decide::{Answered, LineNow, Outcome, Rejection};
use record::{Record, RecordError, Stored};

const READ: &str = "ShippingBasic.GetShippingAndClaimInfoByOrderNo_V2";
/// Attempts of one write while Qoo10 gives no answer (each after reading the line back).
const WRITE_ATTEMPTS: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error(transparent)]
    Poll(#[from] PollError),
}

/// The durable consumer of one shop's commands. Its ack wait is short (a command in hand gets
/// progress acks every 15 s): after a kill -9 the fetcher that takes the shop over sees the
/// command again within 45 s.
pub async fn consumer(js: &jetstream::Context, nats: &NatsConfig, shop: &str) -> Result<Durable, PollError> {
    let ns = Namespace::from_config(nats);
    let name = format!("fetcher-commands-{}", runtime::nats::sanitize_token(shop));
    Durable::open(js, nats, Stream::Commands, &name, Some(ns.commands(shop)), Duration::from_secs(45))
        .await
        .map_err(|e| PollError::Publish(e.to_string()))
}

/// False when `shop` has no command in the stream at all, as most shops: its poll then opens no
/// consumer (each durable costs nats-server a consumer's files, written with an fsync; 2,000
/// shops' first polls spent seconds on them). One read, no write.
pub async fn any_command(sink: &Sink, shop: &str) -> Result<bool, PollError> {
    use async_nats::jetstream::response::Response;
    let failed = |e: String| PollError::Publish(format!("commands of {shop}: {e}"));
    let subject = format!("STREAM.MSG.GET.{}", sink.ns.stream(Stream::Commands));
    let ask = serde_json::json!({ "last_by_subj": sink.ns.commands(shop) });
    match sink.js.request(subject, &ask).await.map_err(|e| failed(e.to_string()))? {
        Response::Ok(serde_json::Value::Object(_)) => Ok(true),
        Response::Ok(other) => Err(failed(format!("unexpected answer {other}"))),
        // 10037: no message found.
        Response::Err { error } if error.error_code().0 == 10037 => Ok(false),
        Response::Err { error } => Err(failed(error.to_string())),
    }
}

/// Applies the commands waiting (at most `wait` for the first); returns how many were handled.
/// A command whose handling failed (NATS away, the lease lost) is left to redelivery.
pub async fn apply_pending(
    poller: &mut ShopPoller,
    client: &QapiClient,
    sink: &Sink,
    commands: &mut Durable,
    wait: Duration,
) -> Result<usize, PollError> {
    let batch = commands.fetch(20, wait).await;
    for msg in &batch {
        poller.fenced()?;
        let handled =
            runtime::nats::with_progress(&[msg], Duration::from_secs(15), handle(poller, client, sink, msg)).await;
        match handled {
            Ok(()) => runtime::nats::ack(msg).await,
            Err(WriteError::Poll(PollError::Lost(e))) => return Err(PollError::Lost(e)),
            Err(e) => {
                tracing::warn!(shop = %poller.shop.id, error = %e, "command not handled; it will be redelivered");
                let _ = msg.ack_with(jetstream::AckKind::Nak(Some(Duration::from_secs(5)))).await;
            }
        }
    }
    Ok(batch.len())
}

/// One command message, to its end: dead-lettered if unreadable, else a result recorded and
/// published.
async fn handle(
    poller: &mut ShopPoller,
    client: &QapiClient,
    sink: &Sink,
    msg: &jetstream::Message,
) -> Result<(), WriteError> {
    let shop = poller.shop.id.clone();
    let cmd = match serde_json::from_slice::<Command>(&msg.payload) {
        Ok(c) if c.shop_id == shop => c,
        Ok(c) => return dead_letter(sink, &shop, msg, &wrong_shop(&c, msg)).await,
        Err(e) => {
            let reason = Reason::Unreadable { what: "a command", detail: e.to_string() };
            return dead_letter(sink, &shop, msg, &reason).await;
        }
    };
    let stored = record::load(sink, &shop, &cmd.command_id).await?;
    if let Some(done) = stored.record.as_ref().and_then(|r| r.result.clone()).filter(|r| r.state.is_final()) {
        tracing::info!(shop, command_id = %cmd.command_id, state = done.state.as_str(), "known command: result published again");
        // A crash after the record may have left its alert and result unpublished: both again
        // (the same messages: their times are the result's).
        alert_for(sink, &done).await?;
        return publish_result(sink, &done, msg).await;
    }
    if stored.record.as_ref().is_some_and(|r| r.sending && r.result.is_none()) {
        tracing::warn!(shop, command_id = %cmd.command_id, "a call for this command may have reached Qoo10 before a crash: reading the line back first");
    }
    let requested_at = stored.record.as_ref().map_or_else(Utc::now, |r| r.requested_at);
    let outcome = match cmd.validate(&shop) {
        Err(e) => Outcome::rejected(&Rejection::Refused { code: 0, message: e.to_string() }),
        Ok(()) => decide_and_call(poller, client, sink, &cmd, &stored, requested_at).await?,
    };
    finish(poller, sink, &cmd, requested_at, outcome, msg).await
}

fn wrong_shop(c: &Command, msg: &jetstream::Message) -> Reason {
    Reason::WrongShop { named: c.shop_id.clone(), subject: msg.subject.to_string() }
}

async fn dead_letter(sink: &Sink, shop: &str, msg: &jetstream::Message, reason: &Reason) -> Result<(), WriteError> {
    tracing::warn!(shop, error = %reason, "command dead-lettered");
    let out = runtime::nats::dead_letter(&sink.ns, Stage::Fetcher, shop, msg, reason);
    for acked in runtime::nats::publish_all(&sink.js, [out]).await {
        acked.map_err(|e| PollError::Publish(e.to_string()))?;
    }
    Ok(())
}

/// The checks, the read-back, and (when needed) the one call, with the intent recorded first.
async fn decide_and_call(
    poller: &mut ShopPoller,
    client: &QapiClient,
    sink: &Sink,
    cmd: &Command,
    stored: &Stored,
    requested_at: DateTime<Utc>,
) -> Result<Outcome, WriteError> {
    let today = schemas::time::today_jst(Utc::now());
    if let Err(why) = decide::precheck(cmd, poller.shop.writeback, today) {
        return Ok(Outcome::rejected(&why));
    }
    let line = match read_line(poller, client, cmd.action.order_no()).await {
        Ok(line) => line,
        Err(PollError::Call(e)) => return Ok(Outcome::failed(&e.to_string())),
        Err(e) => return Err(e.into()),
    };
    match decide::before_call(cmd, line.as_ref()) {
        Err(why) => return Ok(Outcome::rejected(&why)),
        Ok(Some(done)) => return Ok(done),
        Ok(None) => {}
    }
    let intent = Record { command: cmd.clone(), requested_at, sending: true, result: None };
    poller.fenced().map_err(WriteError::Poll)?;
    record::save(sink, &poller.shop.id, &intent, stored.seq).await?;
    runtime::crash::point("writeback.intent_recorded");
    // The caller records the outcome over the intent.
    call(poller, client, cmd).await
}

/// Qoo10 called for `cmd`, at most [`WRITE_ATTEMPTS`] times and each time only after a read
/// back showed the change is not there.
async fn call(poller: &mut ShopPoller, client: &QapiClient, cmd: &Command) -> Result<Outcome, WriteError> {
    let (method, params) = request(cmd);
    let mut calls = 0;
    let mut last_error = String::new();
    for attempt in 1..=WRITE_ATTEMPTS {
        if attempt > 1 {
            tokio::time::sleep(Duration::from_secs(2 * u64::from(attempt))).await;
            let line = read_line(poller, client, cmd.action.order_no()).await;
            if let Ok(Some(l)) = &line
                && decide::shows(cmd, l)
            {
                return Ok(decide::after_read_back(cmd, Some(l), None, &last_error));
            }
        }
        match poller.call_answer(client, method, &params, false, &mut calls).await {
            Ok(answer) => {
                tracing::info!(shop = %poller.shop.id, command_id = %cmd.command_id, method, code = answer.code, "write answered");
                runtime::crash::point("writeback.answered");
                return Ok(match decide::after_answer(answer.code, &answer.message) {
                    Answered::Applied => Outcome::applied(Some(answer.code), "", ""),
                    Answered::Rejected(why) => Outcome::rejected(&why),
                    Answered::ReadBack => {
                        let line = read_line(poller, client, cmd.action.order_no()).await?;
                        decide::after_read_back(cmd, line.as_ref(), Some(answer.code), &answer.message)
                    }
                });
            }
            Err(PollError::Call(e)) if e.is_transient() => {
                tracing::warn!(shop = %poller.shop.id, command_id = %cmd.command_id, method, error = %e, attempt, "write unanswered; reading back");
                last_error = e.to_string();
            }
            Err(PollError::Call(e)) => return Ok(Outcome::failed(&e.to_string())),
            Err(PollError::NotPermitted { code, message, .. }) => {
                return Ok(Outcome::rejected(&Rejection::Refused { code, message }));
            }
            Err(e) => return Err(e.into()),
        }
    }
    let line = read_line(poller, client, cmd.action.order_no()).await.ok().flatten();
    Ok(decide::after_read_back(cmd, line.as_ref(), None, &last_error))
}

/// The method and parameters of the one call a command makes.
fn request(cmd: &Command) -> (&'static str, Vec<(&'static str, String)>) {
    match &cmd.action {
        Action::SetShipDate { order_no, ship_date, delay_type, memo } => (
            "ShippingBasic.SetSellerCheckYN_V2",
            vec![
                ("OrderNo", order_no.to_string()),
                ("EstShipDt", ship_date.format("%Y%m%d").to_string()),
                ("DelayType", delay_type.to_string()),
                ("DelayMemo", memo.clone()),
            ],
        ),
        Action::SetTracking { order_no, carrier, tracking_no } => (
            "ShippingBasic.SetSendingInfo",
            vec![
                ("OrderNo", order_no.to_string()),
                ("ShippingCorp", carrier.trim().to_owned()),
                ("TrackingNo", tracking_no.trim().to_owned()),
            ],
        ),
    }
}

/// What Qoo10 shows of the line now (`None`: no such order for this shop).
async fn read_line(poller: &mut ShopPoller, client: &QapiClient, order_no: u64) -> Result<Option<LineNow>, PollError> {
    let mut calls = 0;
    let answer = poller.call_answer(client, READ, &[("OrderNo", order_no.to_string())], true, &mut calls).await?;
    if answer.code != 0 {
        return Err(PollError::Qapi { method: READ.into(), code: answer.code, message: answer.message });
    }
    Ok(match answer.object {
        ResultObject::Rows(rows) => rows.iter().find_map(|r| LineNow::of(r)),
        _ => None,
    })
}

/// Records the outcome, publishes it (and the alert it opens or resolves).
async fn finish(
    poller: &mut ShopPoller,
    sink: &Sink,
    cmd: &Command,
    requested_at: DateTime<Utc>,
    outcome: Outcome,
    msg: &jetstream::Message,
) -> Result<(), WriteError> {
    let shop = poller.shop.id.clone();
    let result = CommandResult {
        schema_version: COMMAND_SCHEMA_VERSION,
        command_id: cmd.command_id.clone(),
        shop_id: shop.clone(),
        order_no: cmd.action.order_no(),
        action: cmd.action.name().into(),
        state: outcome.state,
        qoo10_result_code: outcome.code,
        reason: outcome.reason,
        reason_ja: outcome.reason_ja,
        requested_at,
        at: Utc::now(),
    };
    // Whatever was stored (an intent, a failure) is replaced: read it again for its sequence.
    let seq = record::load(sink, &shop, &cmd.command_id).await?.seq;
    let done = Record { command: cmd.clone(), requested_at, sending: false, result: Some(result.clone()) };
    record::save(sink, &shop, &done, seq).await?;
    runtime::crash::point("writeback.result_recorded");
    tracing::info!(shop, command_id = %cmd.command_id, state = result.state.as_str(), reason = %result.reason, "command result");
    alert_for(sink, &result).await?;
    publish_result(sink, &result, msg).await?;
    runtime::crash::point("writeback.result_published");
    Ok(())
}

async fn publish_result(sink: &Sink, result: &CommandResult, msg: &jetstream::Message) -> Result<(), WriteError> {
    // One id per command message: a redelivered message publishes once, a new copy again.
    let seq = msg.info().map(|i| i.stream_sequence).unwrap_or(0);
    let id = format!("command-result:{}:{}:{seq}", result.command_id, result.state.as_str());
    let out = runtime::nats::Outgoing::json_with_id(sink.ns.command_results(&result.shop_id), &id, result, 512);
    for acked in runtime::nats::publish_all(&sink.js, [out]).await {
        acked.map_err(|e| PollError::Publish(e.to_string()))?;
    }
    Ok(())
}

/// A rejection opens `command_rejected` for its order and action (replacing an earlier one);
/// an applied command resolves it. Dated by the result, so that doing it again after a crash
/// publishes the same message (and finds it open already).
async fn alert_for(sink: &Sink, result: &CommandResult) -> Result<(), WriteError> {
    let (shop, order, action) = (&result.shop_id, result.order_no, result.action.as_str());
    let open = record::open_alert(sink, shop, order, action).await?;
    let now = result.at;
    let (publish, keep): (Option<Alert>, Option<Alert>) = match result.state {
        CommandState::Rejected => {
            let alert = rejected_alert(result, now);
            let known = open.as_ref().is_some_and(|o| o.alert_id == alert.alert_id);
            (Some(alert.clone()).filter(|_| !known), Some(alert))
        }
        CommandState::Applied => (open.map(|a| crate::credentials::resolved(a, now)), None),
        CommandState::Failed => return Ok(()),
    };
    if let Some(alert) = &publish {
        crate::poll::publish_alert(sink, alert).await?;
    }
    record::set_alert(sink, shop, order, action, keep.as_ref()).await?;
    Ok(())
}

fn rejected_alert(result: &CommandResult, now: DateTime<Utc>) -> Alert {
    let what = if result.action == "set_ship_date" { "発送予定日" } else { "送り状番号" };
    let texts = (
        format!(
            "Command {} ({} for order {}) was not applied: {}. Do it in QSM, or fix the command and send it again.",
            result.command_id, result.action, result.order_no, result.reason
        ),
        format!(
            "注文 {} の{what}の反映（コマンド {}）ができませんでした：{}。QSMで設定するか、内容を直して再送してください。",
            result.order_no, result.command_id, result.reason_ja
        ),
    );
    let details = serde_json::json!({
        "command_id": result.command_id, "action": result.action, "qoo10_result_code": result.qoo10_result_code,
        "reason": result.reason,
    });
    let id = format!("command_rejected:{}:{}:{}", result.shop_id, result.order_no, result.command_id);
    let mut alert =
        crate::credentials::shop_alert(AlertKind::CommandRejected, &result.shop_id, id, texts, details, now);
    alert.order_no = result.order_no;
    alert
}
