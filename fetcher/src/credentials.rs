//! The fetcher's own alerts about a shop's credentials, and when they open. Pure.
//!
//! - `credentials_invalid`: Qoo10 refuses the certification key even after a fresh one, or
//!   refuses a method the shop needs for lack of permission (`-90002` / `-90003`, which no retry
//!   cures). One alert per cause (the key, or each refused method), resolved by the next poll in
//!   which that cause succeeds.
//! - `credentials_expiring`: the API key turns one year old within 30 days (Qoo10 sends no
//!   notice). Counted from `api_key_issued_on`, else from the first successful certification the
//!   fetcher saw with this key.

use chrono::{DateTime, Duration, Months, NaiveDate, Utc};
use schemas::alert::{ALERT_SCHEMA_VERSION, Alert, AlertKind, AlertState, Severity};

/// How long before the key's first birthday `credentials_expiring` opens.
pub const EXPIRY_WARNING_DAYS: i64 = 30;

fn micros(t: DateTime<Utc>) -> u64 {
    u64::try_from(t.timestamp_micros()).unwrap_or(0)
}

/// `credentials_invalid` for a refused key (`method` = the call that was refused) or a method
/// Qoo10 does not permit (`not_permitted`).
pub fn invalid(shop: &str, method: &str, code: i64, message: &str, not_permitted: bool, now: DateTime<Utc>) -> Alert {
    let (en, ja) = if not_permitted {
        (
            format!(
                "Qoo10 does not permit {method} for shop {shop} ({code}: {message}). Ask Qoo10 for this API's permission \
                 (QSM: Qoo10へのお問い合わせ → システム → API・FTP・QSM権限); until then its data is not fetched, so \
                 this shop's orders are followed without it and nothing is reported as vanished."
            ),
            format!(
                "ショップ {shop} のAPIキーに {method} の権限がありません（{code} {message}）。QSMのQoo10へのお問い合わせ → システム → \
                 API・FTP・QSM権限 で権限を申請してください。権限がない間はこのAPIのデータを取得できません。"
            ),
        )
    } else {
        (
            format!(
                "Qoo10 refused the credentials of shop {shop} ({method} answered {code}: {message}). Renew the API key in QSM \
                 (Qoo10へのお問い合わせ → システム → API・FTP・QSM権限) or correct the QSM login ID / password in pipeline.toml. \
                 Polling of this shop is paused and retried with backoff."
            ),
            format!(
                "ショップ {shop} の認証情報がQoo10に拒否されました（{method}: {code} {message}）。QSMでAPIキーを更新するか\
                 （Qoo10へのお問い合わせ → システム → API・FTP・QSM権限）、pipeline.toml のQSMログインID・パスワードを確認してください。\
                 このショップの取得は一時停止し、間隔を空けて再試行します。"
            ),
        )
    };
    let cause = if not_permitted { "permission" } else { "credentials" };
    shop_alert(
        AlertKind::CredentialsInvalid,
        shop,
        format!("credentials_invalid:{shop}:{}", micros(now)),
        (en, ja),
        serde_json::json!({ "method": method, "code": code, "qoo10_message": message, "cause": cause }),
        now,
    )
}

/// The day a key certified first on `certified` (or issued on `issued_on`) turns one year old.
pub fn expires_on(issued_on: Option<NaiveDate>, certified: Option<NaiveDate>) -> Option<NaiveDate> {
    issued_on.or(certified).and_then(|d| d.checked_add_months(Months::new(12)))
}

/// Whether `credentials_expiring` should be open today for a key expiring on `expiry`.
pub fn expiring_due(expiry: NaiveDate, today: NaiveDate) -> bool {
    today >= expiry - Duration::days(EXPIRY_WARNING_DAYS)
}

/// `credentials_expiring` for a key that turns one year old on `expiry`.
pub fn expiring(shop: &str, expiry: NaiveDate, today: NaiveDate, now: DateTime<Utc>) -> Alert {
    let days = (expiry - today).num_days();
    let when =
        if days >= 0 { format!("in {days} days, on {expiry}") } else { format!("on {expiry}, {} days ago", -days) };
    shop_alert(
        AlertKind::CredentialsExpiring,
        shop,
        format!("credentials_expiring:{shop}:{expiry}"),
        (
            format!(
                "The Qoo10 API key of shop {shop} turns one year old {when} and then stops working; Qoo10 sends no notice. \
                 Renew it in QSM (Qoo10へのお問い合わせ → システム → API・FTP・QSM権限) and put the new key in pipeline.toml \
                 (with api_key_issued_on)."
            ),
            format!(
                "ショップ {shop} のQoo10 APIキーは {expiry} に発行から1年となり、使えなくなります（Qoo10からの通知はありません）。\
                 QSMのQoo10へのお問い合わせ → システム → API・FTP・QSM権限 でAPIキーを更新し、pipeline.toml に新しいキーと api_key_issued_on を設定してください。"
            ),
        ),
        serde_json::json!({ "expires_on": expiry.to_string(), "days_left": days }),
        now,
    )
}

pub(crate) fn shop_alert(
    kind: AlertKind,
    shop: &str,
    alert_id: String,
    texts: (String, String),
    details: serde_json::Value,
    now: DateTime<Utc>,
) -> Alert {
    let severity = if kind == AlertKind::CredentialsInvalid { Severity::Critical } else { Severity::Warning };
    Alert {
        schema_version: ALERT_SCHEMA_VERSION,
        alert_id,
        kind,
        shop_id: shop.into(),
        order_no: 0,
        pack_no: 0,
        state: AlertState::Open,
        severity,
        message: texts.0,
        message_ja: texts.1,
        details,
        opened_at: now,
        updated_at: now,
        version: micros(now),
        acknowledged_at: None,
    }
}

/// The resolution of an open alert, now.
pub fn resolved(mut alert: Alert, now: DateTime<Utc>) -> Alert {
    alert.state = AlertState::Resolved;
    alert.updated_at = now;
    alert.version = micros(now).max(alert.version + 1);
    alert
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn a_key_warns_thirty_days_before_its_first_birthday() {
        let expiry = expires_on(None, Some(d("2026-01-15"))).unwrap();
        assert_eq!(expiry, d("2027-01-15"));
        assert_eq!(
            expires_on(Some(d("2025-12-20")), Some(d("2026-01-15"))),
            Some(d("2026-12-20")),
            "the issue date wins"
        );
        assert!(!expiring_due(expiry, d("2026-12-15")));
        assert!(expiring_due(expiry, d("2026-12-16")));
        let a = expiring("s", expiry, d("2026-12-16"), "2026-12-16T00:00:00Z".parse().unwrap());
        assert_eq!(a.alert_id, "credentials_expiring:s:2027-01-15");
        assert!(a.message.contains("in 30 days, on 2027-01-15"), "{}", a.message);
        assert!(a.message_ja.contains("2027-01-15 に発行から1年"), "{}", a.message_ja);
        assert_eq!(expires_on(None, None), None, "nothing to count from yet");
    }

    #[test]
    fn a_refused_method_is_named() {
        let now = "2026-12-01T00:00:00Z".parse().unwrap();
        let a = invalid("s", "ShippingBasic.GetClaimInfo_V3", -90003, "You are not authorized for this.", true, now);
        assert_eq!((a.kind, a.severity), (AlertKind::CredentialsInvalid, Severity::Critical));
        assert_eq!(a.details["method"], "ShippingBasic.GetClaimInfo_V3");
        assert!(a.message_ja.contains("ShippingBasic.GetClaimInfo_V3 の権限がありません"));
        let r = resolved(a.clone(), now);
        assert!(r.state == AlertState::Resolved && r.version > a.version && r.alert_id == a.alert_id);
        let micros = 1_796_083_200_000_000; // 2026-12-01T00:00:00Z
        assert_eq!((a.version, a.alert_id.as_str()), (micros, "credentials_invalid:s:1796083200000000"));
    }
}
