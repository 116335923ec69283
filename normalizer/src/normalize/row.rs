//! One pass over a row object: each key classified into a field slot (no allocation), values
//! kept as borrowed JSON text until a field is read, then read by type with errors that name the
//! key, the value and what was expected.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use rust_decimal::Decimal;
use schemas::time::{Qoo10Time, jst, parse_qoo10_time};
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::NormalizeError;
use super::slot::{self, Class, classify};

pub(super) fn err(field: &str, problem: impl Into<String>) -> NormalizeError {
    NormalizeError::new(field, problem)
}

/// A value as shown in an error: its JSON text, cut at 60 characters.
pub(super) fn shown(v: &RawValue) -> String {
    let s = v.get();
    if s.chars().count() > 60 { format!("{}…", s.chars().take(60).collect::<String>()) } else { s.to_owned() }
}

/// A JSON object key, borrowed from the input unless it held escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// One pass over a row object: classified keys, values still as JSON text.
pub(super) struct Row<'a> {
    slots: [Option<(Cow<'a, str>, &'a RawValue)>; slot::COUNT],
    pub(super) unknown: Vec<String>,
}

impl<'de> Deserialize<'de> for Row<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Row<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut row = Row { slots: [const { None }; slot::COUNT], unknown: Vec::new() };
                let mut buf = [0u8; 48];
                while let Some((Key(key), value)) = map.next_entry::<Key<'de>, &'de RawValue>()? {
                    let class = if key.len() <= buf.len() {
                        let lower = &mut buf[..key.len()];
                        lower.copy_from_slice(key.as_bytes());
                        lower.make_ascii_lowercase();
                        // ASCII lower-casing keeps UTF-8 valid.
                        std::str::from_utf8(lower).map_or(Class::Unknown, classify)
                    } else {
                        Class::Unknown
                    };
                    match class {
                        Class::Slot(i) => row.slots[i] = Some((key, value)),
                        Class::Known => {}
                        Class::Unknown => row.unknown.push(key.into_owned()),
                    }
                }
                Ok(row)
            }
        }
        d.deserialize_map(V)
    }
}

/// The JSON text of a number, or of a string's content (unescaped; borrowed when it has no
/// escapes, which is nearly always: Japanese text arrives as plain UTF-8).
pub(super) fn scalar_text(v: &RawValue) -> Option<Cow<'_, str>> {
    let t = v.get();
    match t.as_bytes().first() {
        Some(b'"') => {
            let inner = &t[1..t.len() - 1];
            if inner.contains('\\') {
                serde_json::from_str::<String>(t).ok().map(Cow::Owned)
            } else {
                Some(Cow::Borrowed(inner))
            }
        }
        Some(b'-' | b'0'..=b'9') => Some(Cow::Borrowed(t)),
        _ => None,
    }
}

pub(super) fn is_string(v: &RawValue) -> bool {
    v.get().starts_with('"')
}

/// `null`, and the `[]` / `{}` that XML-to-JSON converters make of an empty element.
pub(super) fn is_null(v: &RawValue) -> bool {
    matches!(v.get(), "null" | "[]" | "{}")
}

impl<'a> Row<'a> {
    pub(super) fn get(&self, slot: usize) -> Option<(&str, &'a RawValue)> {
        self.slots[slot].as_ref().map(|(k, v)| (k.as_ref(), *v))
    }

    /// Text, or "" when absent, null or not a scalar. Numbers are accepted as their text.
    pub(super) fn text(&self, slot: usize) -> String {
        match self.get(slot).and_then(|(_, v)| scalar_text(v)) {
            Some(t) => t.trim().to_owned(),
            None => String::new(),
        }
    }

    pub(super) fn opt_text(&self, slot: usize) -> Option<String> {
        self.get(slot).map(|_| self.text(slot))
    }

    pub(super) fn required_u64(&self, slot: usize, name: &str) -> Result<u64, NormalizeError> {
        let (key, v) = self.get(slot).ok_or_else(|| err(name, "missing"))?;
        match scalar_text(v).and_then(|t| t.trim().parse::<u64>().ok()) {
            Some(n) if n > 0 => Ok(n),
            _ => Err(err(key, format!("value {} is not a positive integer", shown(v)))),
        }
    }

    pub(super) fn decimal(&self, slot: usize) -> Result<Option<Decimal>, NormalizeError> {
        let Some((key, v)) = self.get(slot) else {
            return Ok(None);
        };
        if is_null(v) {
            return Ok(None);
        }
        let bad = || err(key, format!("value {} is not a decimal number", shown(v)));
        let text = scalar_text(v).ok_or_else(|| err(key, format!("value {} is not a number", shown(v))))?;
        let text = text.trim();
        if text.is_empty() && is_string(v) {
            return Ok(Some(Decimal::ZERO));
        }
        let text: Cow<'_, str> =
            if text.contains(',') { Cow::Owned(text.replace(',', "")) } else { Cow::Borrowed(text) };
        let d = Decimal::from_str(&text).or_else(|_| Decimal::from_scientific(&text)).map_err(|_| bad())?;
        // Checked where it enters: every sum and product of amounts after this stays in range.
        if !schemas::order::money_in_range(d) {
            return Err(err(key, format!("value {} is beyond what Decimal(18,2) holds (less than 10^16)", shown(v))));
        }
        Ok(Some(d.normalize()))
    }

    /// A Qoo10 date/time field. `None` for absent, null or empty.
    pub(super) fn time(&self, slot: usize) -> Result<Option<Qoo10Time>, NormalizeError> {
        let Some((key, v)) = self.get(slot) else {
            return Ok(None);
        };
        if is_null(v) {
            return Ok(None);
        }
        if !is_string(v) {
            return Err(err(key, format!("value {} is not a date string", shown(v))));
        }
        let text = scalar_text(v).unwrap_or_default();
        match parse_qoo10_time(&text) {
            Some(Qoo10Time::Empty) => Ok(None),
            Some(t) => check_plausible(key, v, t).map(Some),
            None => Err(err(key, format!("value {} is not a date (YYYY-MM-DD[ HH:MM[:SS]], JST)", shown(v)))),
        }
    }

    pub(super) fn instant(&self, slot: usize) -> Result<Option<DateTime<Utc>>, NormalizeError> {
        Ok(self.time(slot)?.map(|t| match t {
            Qoo10Time::Instant(i) => i,
            Qoo10Time::Date(d) => schemas::time::jst_naive_to_utc(d.and_hms_opt(0, 0, 0).expect("midnight exists")),
            Qoo10Time::Empty => unreachable!("empty is None"),
        }))
    }

    pub(super) fn date(&self, slot: usize) -> Result<Option<NaiveDate>, NormalizeError> {
        Ok(self.time(slot)?.map(|t| match t {
            Qoo10Time::Date(d) => d,
            Qoo10Time::Instant(i) => i.with_timezone(&jst()).date_naive(),
            Qoo10Time::Empty => unreachable!("empty is None"),
        }))
    }
}

/// Qoo10 did not exist before 2000; a date past 2100 is a corrupted value.
fn check_plausible(key: &str, v: &RawValue, t: Qoo10Time) -> Result<Qoo10Time, NormalizeError> {
    let year = match t {
        Qoo10Time::Date(d) => d.year(),
        Qoo10Time::Instant(i) => i.year(),
        Qoo10Time::Empty => return Ok(t),
    };
    if (2000..=2100).contains(&year) {
        Ok(t)
    } else {
        Err(err(key, format!("value {} is outside 2000..2100", shown(v))))
    }
}

/// A small whole number (a count, a code) from a number or a string; `None` when absent, null
/// or empty.
pub(super) fn small_number(row: &Row<'_>, slot: usize) -> Result<Option<u32>, NormalizeError> {
    let Some((key, v)) = row.get(slot) else { return Ok(None) };
    if is_null(v) {
        return Ok(None);
    }
    match scalar_text(v).map(|t| t.trim().to_owned()) {
        Some(t) if t.is_empty() => Ok(None),
        Some(t) => t
            .parse::<u32>()
            .ok()
            .or_else(|| Decimal::from_str(&t).ok().filter(|d| d.fract().is_zero()).and_then(|d| u32::try_from(d).ok()))
            .map(Some)
            .ok_or_else(|| err(key, format!("value {} is not a whole number", shown(v)))),
        None => Err(err(key, format!("value {} is not a number", shown(v)))),
    }
}

/// A whole, positive quantity from a number or a string (`2`, `"2"`, `"2.0000"`).
pub(super) fn quantity(row: &Row<'_>) -> Result<u32, NormalizeError> {
    let (key, v) = row.get(slot::ORDER_QTY).ok_or_else(|| err("orderQty", "missing"))?;
    let q = scalar_text(v).and_then(|t| {
        let t = t.trim();
        t.parse::<i64>().ok().or_else(|| {
            Decimal::from_str(t)
                .or_else(|_| Decimal::from_scientific(t))
                .ok()
                .filter(|d| d.fract().is_zero())
                .and_then(|d| i64::try_from(d).ok())
        })
    });
    match q {
        Some(q) if q > 0 && q <= i64::from(u32::MAX) => Ok(q as u32),
        _ => Err(err(key, format!("value {} is not a positive whole quantity", shown(v)))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(json: &str) -> Row<'_> {
        serde_json::from_str(json).expect("a row")
    }

    /// Values are shown whole up to 60 characters, cut after; integers must be positive; small
    /// numbers accept their text, blank is none.
    #[test]
    fn values_are_read_and_shown_as_the_contract_says() {
        let long = format!("\"{}\"", "x".repeat(70));
        let v: &RawValue = serde_json::from_str(&long).unwrap();
        assert_eq!(shown(v), format!("\"{}…", "x".repeat(59)));
        let exact = format!("\"{}\"", "x".repeat(58));
        let v: &RawValue = serde_json::from_str(&exact).unwrap();
        assert_eq!(shown(v), exact, "60 characters: whole");
        let r =
            row(r#"{"orderNo": "0", "packNo": " 12 ", "orderQty": " ", "ClaimStatus": "3.0", "shippingStatus": true}"#);
        let e = r.required_u64(slot::ORDER_NO, "orderNo").unwrap_err();
        assert_eq!((e.field.as_str(), e.problem.as_str()), ("orderNo", "value \"0\" is not a positive integer"));
        assert_eq!(r.required_u64(slot::PACK_NO, "packNo").unwrap(), 12);
        assert_eq!(r.required_u64(slot::ITEM_CODE, "itemCode").unwrap_err().problem, "missing");
        assert_eq!(small_number(&r, slot::ORDER_QTY).unwrap(), None, "blank");
        assert_eq!(small_number(&r, slot::CLAIM_STATUS).unwrap(), Some(3));
        assert_eq!(small_number(&r, slot::SHIPPING_STATUS).unwrap_err().problem, "value true is not a number");
        let n: &RawValue = serde_json::from_str("5").unwrap();
        let s: &RawValue = serde_json::from_str("\"5\"").unwrap();
        assert!(!is_string(n) && is_string(s));
        let e = serde_json::from_str::<Row<'_>>("5").err().expect("not an object").to_string();
        assert!(e.contains("expected a JSON object"), "{e}");
    }
}
