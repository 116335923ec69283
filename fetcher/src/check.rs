//! `fetcher check --shop ID`: one real certification and one order call, and what is wrong in
//! plain words (for a seller setting a shop up; needs no NATS).

use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use schemas::config::PipelineConfig;
use schemas::qapi::{ResponseError, code};

use crate::client::{CallError, QapiClient};
use crate::plan;
use crate::poll::{PollError, PollReport, ShopPoller};

/// Tells a seller in plain words whether the shop's credentials and settings work.
pub async fn check(config: &PipelineConfig, id: &str) -> anyhow::Result<bool> {
    let shop =
        config.shop(id).with_context(|| format!("{}: no shop with id {id:?} in [[shops]]", config.source))?.clone();
    let mut qoo10 = config.qoo10.clone();
    qoo10.retry_budget = qoo10.retry_budget.min(Duration::from_secs(10));
    let client = QapiClient::new(&qoo10).context("HTTP client")?;
    let mut poller = ShopPoller::new(shop, config.qoo10.api_version, config.qoo10.requests_per_second);
    println!("Checking shop {id} against {}", config.qoo10.base_url);
    if let Err(e) = poller.certify(&client).await {
        println!("✗ certification key: {}", explain(&e, id, &config.qoo10.base_url));
        return Ok(false);
    }
    println!("✓ certification key issued (API key, QSM login ID and password accepted)");
    let status = poller.shop.statuses[0];
    let window = plan::windows(schemas::time::today_jst(Utc::now()), 1)[0];
    let call = plan::Call {
        kind: schemas::raw::RowKind::Order,
        family: plan::Family::Recent,
        status,
        condition: schemas::raw::condition::ORDER_DATE,
        span: plan::Span::Days(window),
    };
    let (method, params) = plan::request(config.qoo10.api_version, &call);
    let mut report = PollReport::default();
    match poller.call_rows(&client, method, &params, &mut report).await {
        Ok((rows, _)) => {
            println!(
                "✓ {method} answered: {} order lines in status {status} ordered {}..={} (JST)",
                rows.len(),
                window.from,
                window.to
            );
            println!("The shop is ready to be polled.");
            Ok(true)
        }
        Err(e) => {
            println!("✗ {method}: {}", explain(&e, id, &config.qoo10.base_url));
            Ok(false)
        }
    }
}

fn explain(e: &PollError, shop: &str, base_url: &str) -> String {
    let creds = format!("[[shops]] id = \"{shop}\"");
    match e {
        PollError::Credentials { code: c, message, .. } if *c == code::NO_SELLER => format!(
            "Qoo10 does not know this QSM login ID / password ({c} {message}). Check user_id and password of {creds}; \
             after a QSM password change the old one no longer works."
        ),
        PollError::Credentials { code: c, message, .. } if *c == code::NO_API => format!(
            "Qoo10 does not recognise the API key ({c} {message}). Check api_key of {creds}. API keys are issued in QSM \
             (Qoo10へのお問い合わせ → システム → API・FTP・QSM権限) and must be renewed every year."
        ),
        PollError::Credentials { code: c, message, .. } if *c == code::KEY_EXPIRED_1 || *c == code::KEY_EXPIRED_2 => {
            format!(
                "the certification key expired and a new one was refused ({c} {message}). Renew the API key in QSM."
            )
        }
        PollError::Credentials { code: c, message, .. } => {
            format!("Qoo10 refused the credentials ({c} {message}). Check user_id, api_key and password of {creds}.")
        }
        PollError::Call(CallError::Response { source: ResponseError::Routing(text), .. }) => format!(
            "Qoo10 answered {text:?}: the address or method name is wrong. Check [qoo10] base_url (expected \
             https://api.qoo10.jp/GMKT.INC.Front.QAPIService/ebayjapan.qapi) and api_version."
        ),
        PollError::Call(CallError::Transport { reason, .. }) => format!("cannot reach {base_url}: {reason}"),
        PollError::Call(CallError::Timeout { timeout, .. }) => format!("{base_url} did not answer within {timeout:?}"),
        PollError::Call(CallError::Http { status, .. }) => {
            format!("{base_url} answered HTTP {status}; try again later")
        }
        PollError::Call(CallError::Response { source, .. }) => format!("{base_url} did not answer like QAPI: {source}"),
        PollError::Qapi { code: c, message, .. } => format!("Qoo10 answered {c}: {message}"),
        other => other.to_string(),
    }
}
