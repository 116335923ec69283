//! The QAPI wire format: method names, parameters, and a tolerant reader for its responses.
//!
//! QAPI answers HTTP 200 whatever happened. The body is one of: the normal envelope
//! `{"ResultCode":0,"ResultMsg":..,"ResultObject":..}`, the gateway envelope
//! `{"ErrorCode":-90001,"ErrorMsg":..}`, or plain text for routing errors
//! (`Can't find method Info X`). [`parse_response`] turns all of them into a typed result.

use std::collections::BTreeMap;

use serde_json::value::RawValue;
use serde_json::{Map, Value};

pub const CREATE_CERTIFICATION_KEY: &str = "CertificationAPI.CreateCertificationKey";
pub const GET_SHIPPING_INFO_V2: &str = "ShippingBasic.GetShippingInfo_v2";
pub const GET_SHIPPING_INFO_V3: &str = "ShippingBasic.GetShippingInfo_v3";
pub const GET_CLAIM_INFO_V3: &str = "ShippingBasic.GetClaimInfo_V3";

/// The header that carries the seller authorization key in path-style calls.
pub const CERT_HEADER: &str = "GiosisCertificationKey";

/// Result codes with a meaning the pipeline acts on.
pub mod code {
    pub const OK: i64 = 0;
    /// "Please check the Seller Authorization Key."
    pub const CHECK_KEY: i64 = -10000;
    /// "Not exists seller info" (also a bad password at CreateCertificationKey).
    pub const NO_SELLER: i64 = -10001;
    pub const SEARCH_DATE_ERROR: i64 = -10002;
    /// "Searching period exceeds to 90 days."
    pub const PERIOD_TOO_LONG: i64 = -10003;
    /// "The API does not exist" — also the answer to an invalid key.
    pub const NO_API: i64 = -90001;
    pub const NOT_AUTHORIZED_1: i64 = -90002;
    pub const NOT_AUTHORIZED_2: i64 = -90003;
    /// "Seller authorization key is expired. Use a new key."
    pub const KEY_EXPIRED_1: i64 = -90004;
    pub const KEY_EXPIRED_2: i64 = -90005;

    /// "You are not authorized for this.": the key lacks the method's permission. Retrying does
    /// not cure it.
    pub fn not_permitted(code: i64) -> bool {
        matches!(code, NOT_AUTHORIZED_1 | NOT_AUTHORIZED_2)
    }

    /// Codes after which the certification key must be issued again.
    pub fn needs_new_key(code: i64) -> bool {
        matches!(code, NO_API | KEY_EXPIRED_1 | KEY_EXPIRED_2 | CHECK_KEY)
    }
}

/// The longest search window QAPI accepts is 90 days; we ask for at most this many days
/// (inclusive of both ends) per call.
pub const MAX_WINDOW_DAYS: i64 = 89;

/// What `ResultObject` held.
#[derive(Debug)]
pub enum ResultObject {
    /// `null`, absent, or `[]`.
    Empty,
    /// Rows, verbatim (a single object counts as one row).
    Rows(Vec<Box<RawValue>>),
    /// A plain string (the certification key).
    Text(String),
    /// Anything else, verbatim.
    Other(Box<RawValue>),
}

#[derive(Debug)]
pub struct QapiResponse {
    pub code: i64,
    pub message: String,
    pub object: ResultObject,
    /// Qoo10's clock when it answered (the HTTP `Date` header, whole seconds), when it sent one:
    /// its dates are stamped by that clock, so the fetcher's windows follow it.
    pub server_time: Option<chrono::DateTime<chrono::Utc>>,
}

/// An HTTP `Date` header (`Mon, 07 Dec 2026 17:35:39 GMT`), as an instant.
pub fn http_date(value: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc2822(value.trim()).ok().map(|t| t.to_utc())
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    /// Plain-text answer such as `Can't find method Info X`: the method or class name is wrong.
    #[error("QAPI routing error: {0}")]
    Routing(String),
    /// Not JSON at all (an HTML error page, garbage, an empty body).
    #[error("response is not JSON: {0}")]
    NotJson(String),
    /// JSON, but neither envelope.
    #[error("response has no ResultCode or ErrorCode: {0}")]
    NoEnvelope(String),
}

/// Reads any QAPI body. A BOM and surrounding white space are ignored; keys match without case.
pub fn parse_response(body: &[u8]) -> Result<QapiResponse, ResponseError> {
    let text = String::from_utf8_lossy(body);
    let text = text.trim_start_matches('\u{feff}').trim();
    if !text.starts_with('{') {
        let snippet = snippet(text);
        if text.starts_with("Can't find") {
            return Err(ResponseError::Routing(snippet));
        }
        return Err(ResponseError::NotJson(snippet));
    }
    // The top level only, each value left as the text it is in the body: the rows are most of a
    // response (a large shop's can be tens of MB) and are copied once, into `Rows`. Building a
    // `Value` of the whole body first had taken a 12,000-line response to 89 MB of peak RSS.
    let top: BTreeMap<String, &RawValue> =
        serde_json::from_str(text).map_err(|_| ResponseError::NotJson(snippet(text)))?;
    let get = |name: &str| top.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| *v);
    // Small values only (codes, messages).
    let value = |raw: &RawValue| serde_json::from_str::<Value>(raw.get()).unwrap_or(Value::Null);

    if let Some(c) = get("ErrorCode") {
        let code = as_i64(&value(c)).unwrap_or(i64::MIN);
        let message = get("ErrorMsg").map(|m| as_text(&value(m))).unwrap_or_default();
        return Ok(QapiResponse { code, message, object: ResultObject::Empty, server_time: None });
    }
    let Some(c) = get("ResultCode") else {
        return Err(ResponseError::NoEnvelope(snippet(text)));
    };
    let code = as_i64(&value(c)).ok_or_else(|| ResponseError::NoEnvelope(snippet(text)))?;
    let message = get("ResultMsg").map(|m| as_text(&value(m))).unwrap_or_default();
    let object = match get("ResultObject") {
        None => ResultObject::Empty,
        Some(raw) => match raw.get().trim_start().as_bytes().first() {
            Some(b'n') => ResultObject::Empty,
            Some(b'"') => ResultObject::Text(as_text(&value(raw))),
            Some(b'[') => {
                let rows: Vec<Box<RawValue>> =
                    serde_json::from_str(raw.get()).map_err(|_| ResponseError::NotJson(snippet(text)))?;
                if rows.is_empty() { ResultObject::Empty } else { ResultObject::Rows(rows) }
            }
            Some(b'{') => ResultObject::Rows(vec![raw.to_owned()]),
            _ => ResultObject::Other(raw.to_owned()),
        },
    };
    Ok(QapiResponse { code, message, object, server_time: None })
}

fn as_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn snippet(text: &str) -> String {
    let mut s: String = text.chars().take(120).collect();
    if text.chars().count() > 120 {
        s.push('…');
    }
    s.replace(['\n', '\r'], " ")
}

/// What the fetcher needs to know of a row to follow its line, read in one pass: keys match
/// without case, numbers may be strings, anything unreadable is `None` (the normalizer is the
/// one that explains a bad row).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RowFacts {
    pub order_no: Option<u64>,
    pub pack_no: Option<u64>,
    /// The code of `shippingStatus` (`"On request(2)"` → 2).
    pub shipping_status: Option<u8>,
    pub claim_status: Option<u8>,
    /// The order date, a JST calendar date.
    pub ordered: Option<chrono::NaiveDate>,
}

impl RowFacts {
    pub fn of(row: &RawValue) -> RowFacts {
        let Ok(map) = serde_json::from_str::<Map<String, Value>>(row.get()) else { return RowFacts::default() };
        let get = |key: &str| map.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v);
        let number = |key: &str| match get(key)? {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        };
        let text = |key: &str| get(key).and_then(Value::as_str);
        RowFacts {
            order_no: number("orderNo"),
            pack_no: number("packNo"),
            shipping_status: text("shippingStatus").and_then(crate::status::parse_status_label),
            claim_status: number("claimStatus").and_then(|n| u8::try_from(n).ok()),
            ordered: text("orderDate").and_then(crate::time::parse_qoo10_time).and_then(|t| match t {
                crate::time::Qoo10Time::Date(d) => Some(d),
                crate::time::Qoo10Time::Instant(i) => Some(i.with_timezone(&crate::time::jst()).date_naive()),
                crate::time::Qoo10Time::Empty => None,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates_are_instants() {
        let t = http_date("Mon, 07 Dec 2026 17:35:39 GMT").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-12-07T17:35:39+00:00");
        assert_eq!(http_date("yesterday"), None);
    }

    #[test]
    fn normal_envelope_with_rows() {
        let r =
            parse_response(br#"{"ResultCode":0,"ResultMsg":"SUCCESS","ResultObject":[{"orderNo":1},{"orderNo":"2"}]}"#)
                .unwrap();
        assert_eq!(r.code, 0);
        let ResultObject::Rows(rows) = r.object else { panic!() };
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].get(), r#"{"orderNo":"2"}"#);
        assert_eq!(RowFacts::of(&rows[1]).order_no, Some(2));
    }

    #[test]
    fn null_empty_single_object_and_text() {
        let r = parse_response(br#"{"ResultCode":0,"ResultMsg":"SUCCESS","ResultObject":null}"#).unwrap();
        assert!(matches!(r.object, ResultObject::Empty));
        let r = parse_response(br#"{"ResultCode":"0","ResultObject":[]}"#).unwrap();
        assert!(matches!(r.object, ResultObject::Empty));
        let r = parse_response(b"\xEF\xBB\xBF  {\"resultcode\":0,\"resultobject\":{\"OrderNo\":5}}\n").unwrap();
        let ResultObject::Rows(rows) = r.object else { panic!() };
        assert_eq!(RowFacts::of(&rows[0]).order_no, Some(5));
        let row = RawValue::from_string(r#"{"PackNo":"7","ShippingStatus":"Seller confirm(3)","OrderDate":"2026-11-20 23:30:00","ClaimStatus":"1"}"#.into()).unwrap();
        let f = RowFacts::of(&row);
        assert_eq!((f.order_no, f.pack_no, f.shipping_status, f.claim_status), (None, Some(7), Some(3), Some(1)));
        assert_eq!(f.ordered, chrono::NaiveDate::from_ymd_opt(2026, 11, 20), "a JST date");
        let r = parse_response(r#"{"ResultCode":0,"ResultMsg":"成功","ResultObject":"KEY_g_1_x"}"#.as_bytes()).unwrap();
        assert!(matches!(r.object, ResultObject::Text(ref s) if s == "KEY_g_1_x"));
        assert_eq!(r.message, "成功");
    }

    #[test]
    fn error_shapes() {
        let r = parse_response(r#"{"ErrorCode":-90001,"ErrorMsg":"存在しないAPIです。"}"#.as_bytes()).unwrap();
        assert_eq!(r.code, -90001);
        assert!(code::needs_new_key(r.code));
        let r = parse_response(
            br#"{"ResultCode":-10003,"ResultMsg":"Searching period exceeds to 90 days.","ResultObject":null}"#,
        )
        .unwrap();
        assert_eq!(r.code, code::PERIOD_TOO_LONG);
        assert_eq!(
            parse_response(b"Can't find method Info GetShippingInfo_v9").unwrap_err(),
            ResponseError::Routing("Can't find method Info GetShippingInfo_v9".into())
        );
        assert!(matches!(parse_response(b"<html>502</html>"), Err(ResponseError::NotJson(_))));
        assert!(matches!(parse_response(b""), Err(ResponseError::NotJson(_))));
        assert!(matches!(parse_response(b"{\"a\":1}"), Err(ResponseError::NoEnvelope(_))));
        assert!(matches!(parse_response(b"{\"ResultCode\":0"), Err(ResponseError::NotJson(_))));
    }

    /// Only the top level is parsed up front: what is deeper is still checked, and odd shapes of
    /// the top-level values still come out as before.
    #[test]
    fn nested_values_are_checked_and_odd_shapes_kept() {
        // Broken JSON inside a row fails the whole body, as a full parse would.
        let body = br#"{"ResultCode":0,"ResultObject":[{"orderNo":1},{"orderNo":}]}"#;
        assert!(matches!(parse_response(body), Err(ResponseError::NotJson(_))));
        let r = parse_response(br#"{"ResultCode":0,"ResultObject": [ ] }"#).unwrap();
        assert!(matches!(r.object, ResultObject::Empty));
        let r = parse_response(br#"{"ResultCode":0,"ResultObject":5,"ResultMsg":null}"#).unwrap();
        assert!(matches!(r.object, ResultObject::Other(ref v) if v.get() == "5"));
        assert_eq!(r.message, "");
        // Keys with escapes, a numeric message, a code as a float.
        let r = parse_response(br#"{"Result\u0043ode":1.0,"ResultMsg":42,"ResultObject":[[1,2]]}"#).unwrap();
        assert_eq!((r.code, r.message.as_str()), (1, "42"));
        let ResultObject::Rows(rows) = r.object else { panic!() };
        assert_eq!(rows[0].get(), "[1,2]");
    }
}
