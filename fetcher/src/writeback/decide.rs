//! What to do with a command, decided without IO: checked before anything is called, against
//! what Qoo10 shows of the line now (the single-order read), and after Qoo10 answered.
//!
//! The rule that makes a command reach Qoo10 at most once: a change Qoo10 already shows is
//! `applied` without a call, and an answer that may mean "already done" (`-10012`, `-10010`)
//! or no answer at all is settled by reading the line back, never by calling again blindly.

use chrono::{Duration, NaiveDate};
use schemas::command::{Action, Command, CommandState};
use schemas::qapi::RowFacts;
use serde_json::{Map, Value};

/// A date further ahead than this is a mistake, not a plan (Qoo10's own maximum is not
/// published and may be lower: it answers `-10017` then).
pub const ABSURD_DAYS: i64 = 90;

/// What Qoo10 shows of a line now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LineNow {
    pub status: u8,
    pub claim: u8,
    pub ship_date: Option<NaiveDate>,
    pub carrier: String,
    pub tracking_no: String,
}

impl LineNow {
    /// From a `GetShippingAndClaimInfoByOrderNo_V2` row (keys matched without case).
    pub fn of(row: &serde_json::value::RawValue) -> Option<LineNow> {
        let facts = RowFacts::of(row);
        let map: Map<String, Value> = serde_json::from_str(row.get()).ok()?;
        let text = |key: &str| {
            map.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).and_then(|(_, v)| v.as_str()).unwrap_or("").trim()
        };
        let ship_date = text("EstShippingDate").get(..10).and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok());
        Some(LineNow {
            status: facts.shipping_status?,
            claim: facts.claim_status.unwrap_or(0),
            ship_date,
            carrier: text("deliveryCompany").to_owned(),
            tracking_no: text("trackingNo").to_owned(),
        })
    }
}

/// Why a command is not applied; each has its English and Japanese text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    WritebackOff,
    NotAfterToday { date: NaiveDate, today: NaiveDate },
    TooFar { date: NaiveDate },
    UnknownOrder,
    HasClaim { claim: u8 },
    Unpaid,
    AlreadyConfirmed { date: Option<NaiveDate> },
    AlreadyShipped { tracking_no: String },
    Refused { code: i64, message: String },
}

impl Rejection {
    pub fn texts(&self) -> (String, String) {
        match self {
            Rejection::WritebackOff => (
                "write-back is off for this shop (set writeback = true in its [[shops]] entry)".into(),
                "このショップはwrite-backが無効です（[[shops]] に writeback = true を設定してください）".into(),
            ),
            Rejection::NotAfterToday { date, today } => (
                format!("the ship date {date} is not after today ({today}, JST)"),
                format!("発送予定日 {date} は今日（{today}）より後の日付である必要があります"),
            ),
            Rejection::TooFar { date } => (
                format!("the ship date {date} is more than {ABSURD_DAYS} days ahead"),
                format!("発送予定日 {date} が{ABSURD_DAYS}日より先です"),
            ),
            Rejection::UnknownOrder => (
                "Qoo10 does not know this order for this shop".into(),
                "Qoo10にこのショップの該当注文がありません".into(),
            ),
            Rejection::HasClaim { claim } => (
                format!("the order has a claim (cancellation, return; ClaimStat {claim})"),
                format!("この注文にはキャンセル・返品等のクレームがあります（ClaimStat {claim}）"),
            ),
            Rejection::Unpaid => ("the order is not paid yet (入金待ち)".into(), "この注文はまだ入金待ちです".into()),
            Rejection::AlreadyConfirmed { date } => {
                let d = date.map_or("未設定".to_owned(), |d| d.to_string());
                (
                    format!("the order is already confirmed with ship date {d}; QAPI cannot move it: change it in QSM"),
                    format!("この注文は発送予定日 {d} で確認済みです。APIでは変更できないため、QSMで変更してください"),
                )
            }
            Rejection::AlreadyShipped { tracking_no } => (
                format!("the order has already shipped (tracking number {tracking_no:?})"),
                format!("この注文はすでに発送済みです（送り状番号 {tracking_no}）"),
            ),
            Rejection::Refused { code, message } => (
                format!("Qoo10 refused it: {code} {message}"),
                format!("Qoo10が受け付けませんでした：{code} {message}"),
            ),
        }
    }

    /// The Qoo10 result code behind it, if an answer decided it.
    pub fn code(&self) -> Option<i64> {
        match self {
            Rejection::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// What became of a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub state: CommandState,
    pub code: Option<i64>,
    pub reason: String,
    pub reason_ja: String,
}

impl Outcome {
    pub fn applied(code: Option<i64>, reason: &str, reason_ja: &str) -> Outcome {
        Outcome { state: CommandState::Applied, code, reason: reason.into(), reason_ja: reason_ja.into() }
    }

    pub fn rejected(why: &Rejection) -> Outcome {
        let (reason, reason_ja) = why.texts();
        Outcome { state: CommandState::Rejected, code: why.code(), reason, reason_ja }
    }

    pub fn failed(error: &str) -> Outcome {
        Outcome {
            state: CommandState::Failed,
            code: None,
            reason: format!("Qoo10 could not be reached: {error}; send the command again to retry"),
            reason_ja: format!("Qoo10に接続できませんでした：{error}。同じコマンドを再送すると再試行します"),
        }
    }

    fn already() -> Outcome {
        Outcome::applied(None, "Qoo10 already showed this change", "Qoo10にはすでに反映されていました")
    }
}

/// Checks that need no call: the shop allows write-back, the date is plausible.
pub fn precheck(cmd: &Command, writeback: bool, today: NaiveDate) -> Result<(), Rejection> {
    if !writeback {
        return Err(Rejection::WritebackOff);
    }
    if let Action::SetShipDate { ship_date, .. } = cmd.action {
        if ship_date <= today {
            return Err(Rejection::NotAfterToday { date: ship_date, today });
        }
        if ship_date > today + Duration::days(ABSURD_DAYS) {
            return Err(Rejection::TooFar { date: ship_date });
        }
    }
    Ok(())
}

/// Qoo10 already shows what the command asks for.
pub fn shows(cmd: &Command, line: &LineNow) -> bool {
    match &cmd.action {
        Action::SetShipDate { ship_date, .. } => line.status >= 3 && line.ship_date == Some(*ship_date),
        Action::SetTracking { tracking_no, .. } => line.status >= 4 && line.tracking_no == tracking_no.trim(),
    }
}

/// Before calling: done already, refused, or to be called.
pub fn before_call(cmd: &Command, line: Option<&LineNow>) -> Result<Option<Outcome>, Rejection> {
    let Some(line) = line else { return Err(Rejection::UnknownOrder) };
    if shows(cmd, line) {
        return Ok(Some(Outcome::already()));
    }
    if line.claim != 0 {
        return Err(Rejection::HasClaim { claim: line.claim });
    }
    match (&cmd.action, line.status) {
        (_, 1) => Err(Rejection::Unpaid),
        (Action::SetShipDate { .. }, 2) | (Action::SetTracking { .. }, 2 | 3) => Ok(None),
        (Action::SetShipDate { .. }, 3) => Err(Rejection::AlreadyConfirmed { date: line.ship_date }),
        _ => Err(Rejection::AlreadyShipped { tracking_no: line.tracking_no.clone() }),
    }
}

/// After Qoo10 answered `code`: applied, refused, or to be read back (the answer may mean it
/// was done already).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answered {
    Applied,
    ReadBack,
    Rejected(Rejection),
}

pub fn after_answer(code: i64, message: &str) -> Answered {
    match code {
        0 => Answered::Applied,
        // Already confirmed / update failed: a change made by a call whose answer was lost
        // looks like this on the next call.
        -10012 | -10010 | -10100 => Answered::ReadBack,
        _ => Answered::Rejected(Rejection::Refused { code, message: message.to_owned() }),
    }
}

/// After reading back a line that an answer (`code`, or none) left unclear.
pub fn after_read_back(cmd: &Command, line: Option<&LineNow>, code: Option<i64>, message: &str) -> Outcome {
    match line {
        Some(l) if shows(cmd, l) => Outcome::applied(code, "Qoo10 shows the change", "Qoo10に反映されています"),
        _ => match code {
            Some(code) => Outcome::rejected(&Rejection::Refused { code, message: message.to_owned() }),
            None => Outcome::failed(message),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn ship(date: &str) -> Command {
        let action = Action::SetShipDate { order_no: 7, ship_date: d(date), delay_type: 1, memo: String::new() };
        Command { schema_version: 1, command_id: "c".into(), shop_id: "s".into(), action }
    }

    fn track(no: &str) -> Command {
        let action = Action::SetTracking { order_no: 7, carrier: "佐川急便".into(), tracking_no: no.into() };
        Command { schema_version: 1, command_id: "c".into(), shop_id: "s".into(), action }
    }

    fn line(status: u8, date: Option<&str>, tracking: &str) -> LineNow {
        LineNow { status, ship_date: date.map(d), tracking_no: tracking.into(), ..LineNow::default() }
    }

    #[test]
    fn prechecks_need_write_back_and_a_date_after_today() {
        let today = d("2026-12-02");
        assert_eq!(precheck(&ship("2026-12-05"), false, today), Err(Rejection::WritebackOff));
        assert_eq!(precheck(&ship("2026-12-02"), true, today), Err(Rejection::NotAfterToday { date: today, today }));
        assert!(matches!(precheck(&ship("2027-06-01"), true, today), Err(Rejection::TooFar { .. })));
        assert_eq!(precheck(&ship("2026-12-03"), true, today), Ok(()));
        assert_eq!(precheck(&ship("2027-03-02"), true, today), Ok(()), "exactly ABSURD_DAYS ahead");
        assert!(matches!(precheck(&ship("2027-03-03"), true, today), Err(Rejection::TooFar { .. })));
        assert_eq!(precheck(&track("1"), true, today), Ok(()));
    }

    #[test]
    fn what_qoo10_shows_decides_before_any_call() {
        let c = ship("2026-12-05");
        assert_eq!(before_call(&c, None), Err(Rejection::UnknownOrder));
        assert_eq!(before_call(&c, Some(&line(2, None, ""))), Ok(None), "2: call");
        let done = before_call(&c, Some(&line(3, Some("2026-12-05"), ""))).unwrap().unwrap();
        assert_eq!(done.state, CommandState::Applied, "already shows it: no call");
        assert_eq!(
            before_call(&c, Some(&line(3, Some("2026-12-09"), ""))),
            Err(Rejection::AlreadyConfirmed { date: Some(d("2026-12-09")) })
        );
        assert_eq!(before_call(&c, Some(&line(1, None, ""))), Err(Rejection::Unpaid));
        let claimed = LineNow { claim: 1, ..line(2, None, "") };
        assert_eq!(before_call(&c, Some(&claimed)), Err(Rejection::HasClaim { claim: 1 }));
        let t = track("1234");
        assert_eq!(before_call(&t, Some(&line(3, Some("2026-12-05"), ""))), Ok(None), "3: call");
        assert_eq!(before_call(&t, Some(&line(2, None, ""))), Ok(None), "2 too");
        assert!(before_call(&t, Some(&line(4, None, "1234"))).unwrap().is_some(), "same tracking: applied");
        assert!(matches!(before_call(&t, Some(&line(5, None, "9"))), Err(Rejection::AlreadyShipped { .. })));
    }

    #[test]
    fn unclear_answers_are_read_back_not_called_again() {
        assert_eq!(after_answer(0, "SUCCESS"), Answered::Applied);
        assert_eq!(after_answer(-10012, "already"), Answered::ReadBack);
        assert_eq!(after_answer(-10010, "failed"), Answered::ReadBack);
        assert!(matches!(after_answer(-10017, "max"), Answered::Rejected(Rejection::Refused { code: -10017, .. })));
        let c = ship("2026-12-05");
        let now = line(3, Some("2026-12-05"), "");
        assert_eq!(after_read_back(&c, Some(&now), Some(-10012), "").state, CommandState::Applied);
        let other = line(3, Some("2026-12-07"), "");
        let o = after_read_back(&c, Some(&other), Some(-10012), "already confirmed");
        assert_eq!((o.state, o.code), (CommandState::Rejected, Some(-10012)), "-10012 with another date");
        assert_eq!(after_read_back(&c, Some(&line(2, None, "")), None, "timeout").state, CommandState::Failed);
    }

    #[test]
    fn the_single_order_row_is_read_without_case() {
        let row = serde_json::value::RawValue::from_string(
            r#"{"orderNo":7,"shippingStatus":"Seller confirm(3)","claimStatus":"0","EstShippingDate":"2026-12-05 00:00:00","trackingNo":"","deliveryCompany":""}"#.into(),
        )
        .unwrap();
        assert_eq!(LineNow::of(&row), Some(line(3, Some("2026-12-05"), "")));
    }

    /// Each rejection says what happened in both languages, naming its particulars.
    #[test]
    fn rejections_explain_themselves() {
        let today = d("2026-12-02");
        let cases = [
            (Rejection::WritebackOff, "writeback = true", "write-back"),
            (Rejection::NotAfterToday { date: today, today }, "2026-12-02", "2026-12-02"),
            (Rejection::TooFar { date: d("2027-06-01") }, "2027-06-01", "90日"),
            (Rejection::UnknownOrder, "does not know", "該当注文"),
            (Rejection::HasClaim { claim: 3 }, "ClaimStat 3", "ClaimStat 3"),
            (Rejection::Unpaid, "not paid", "入金待ち"),
            (Rejection::AlreadyConfirmed { date: None }, "未設定", "未設定"),
            (Rejection::AlreadyShipped { tracking_no: "T-1".into() }, "\"T-1\"", "T-1"),
            (Rejection::Refused { code: -10012, message: "m".into() }, "-10012 m", "-10012 m"),
        ];
        for (r, en, ja) in cases {
            let (e, j) = r.texts();
            assert!(e.contains(en) && j.contains(ja), "{r:?}: {e} / {j}");
        }
    }
}
