//! Qoo10 speaks JST wall-clock time without an offset; everything downstream speaks UTC instants.

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, TimeZone, Utc};

/// Japan has no daylight saving time, so a fixed +09:00 offset is exact for every date.
pub fn jst() -> FixedOffset {
    FixedOffset::east_opt(9 * 3600).expect("+09:00 is a valid offset")
}

/// Today's date in Japan.
pub fn today_jst(now: DateTime<Utc>) -> NaiveDate {
    now.with_timezone(&jst()).date_naive()
}

/// Days since 1970-01-01: how ClickHouse's `Date` and the fetcher's state hold a calendar date.
pub fn epoch_day(d: NaiveDate) -> i64 {
    (d - NaiveDate::from_ymd_opt(1970, 1, 1).expect("1970-01-01 is a date")).num_days()
}

/// The calendar date `days` days after 1970-01-01 (the inverse of [`epoch_day`]).
pub fn from_epoch_day(days: i64) -> NaiveDate {
    NaiveDate::from_ymd_opt(1970, 1, 1).expect("1970-01-01 is a date") + chrono::Duration::days(days)
}

/// What a Qoo10 date/time field held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qoo10Time {
    /// The field was empty (`""`), which Qoo10 uses for "not yet".
    Empty,
    /// A date without a time (`2026-11-20`).
    Date(NaiveDate),
    /// A JST wall-clock time, as a UTC instant.
    Instant(DateTime<Utc>),
}

/// Parses `YYYY-MM-DD HH:MM:SS`, `YYYY-MM-DD HH:MM`, `YYYY-MM-DD` (also with `/` or `T`), or `""`.
/// Returns `None` when the text is none of those.
pub fn parse_qoo10_time(text: &str) -> Option<Qoo10Time> {
    let t = text.trim();
    if t.is_empty() {
        return Some(Qoo10Time::Empty);
    }
    if let Some(parsed) = fixed_width(t.as_bytes()) {
        return Some(parsed);
    }
    general(t)
}

/// The forms Qoo10 sends, `YYYY-MM-DD HH:MM:SS` and `YYYY-MM-DD`, read without chrono's format
/// interpreter (which was 6 % of the normalizer's CPU). `None` sends the text down the general
/// path, which gives the same answer for these forms and handles every other one.
fn fixed_width(b: &[u8]) -> Option<Qoo10Time> {
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        b[r].iter().try_fold(0u32, |n, &c| c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0')))
    };
    let date_sep = |i: usize| b[i] == b'-' || b[i] == b'/';
    if !(b.len() == 10 || b.len() == 19) || !date_sep(4) || !date_sep(7) {
        return None;
    }
    let date = NaiveDate::from_ymd_opt(i32::try_from(num(0..4)?).ok()?, num(5..7)?, num(8..10)?)?;
    if b.len() == 10 {
        return Some(Qoo10Time::Date(date));
    }
    if !(b[10] == b' ' || b[10] == b'T') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let time = chrono::NaiveTime::from_hms_opt(num(11..13)?, num(14..16)?, num(17..19)?)?;
    Some(Qoo10Time::Instant(jst_naive_to_utc(date.and_time(time))))
}

fn general(t: &str) -> Option<Qoo10Time> {
    let norm: String = t
        .chars()
        .map(|c| {
            if c == '/' {
                '-'
            } else if c == 'T' {
                ' '
            } else {
                c
            }
        })
        .collect();
    for fmt in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d %H:%M"] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(&norm, fmt) {
            return Some(Qoo10Time::Instant(jst_naive_to_utc(naive)));
        }
    }
    NaiveDate::parse_from_str(&norm, "%Y-%m-%d").ok().map(Qoo10Time::Date)
}

/// A JST wall-clock time as a UTC instant.
pub fn jst_naive_to_utc(naive: NaiveDateTime) -> DateTime<Utc> {
    jst()
        .from_local_datetime(&naive)
        .single()
        .expect("a fixed offset maps every local time to exactly one instant")
        .with_timezone(&Utc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jst_wall_clock_becomes_utc_instant() {
        let Some(Qoo10Time::Instant(i)) = parse_qoo10_time("2026-11-20 21:14:03") else { panic!() };
        assert_eq!(i.to_rfc3339(), "2026-11-20T12:14:03+00:00");
        let Some(Qoo10Time::Instant(i)) = parse_qoo10_time("2026-11-21 08:02") else { panic!() };
        assert_eq!(i.to_rfc3339(), "2026-11-20T23:02:00+00:00");
    }

    #[test]
    fn dates_empty_and_garbage() {
        assert_eq!(parse_qoo10_time(""), Some(Qoo10Time::Empty));
        assert_eq!(parse_qoo10_time("  "), Some(Qoo10Time::Empty));
        assert_eq!(
            parse_qoo10_time("2026-11-20"),
            Some(Qoo10Time::Date(NaiveDate::from_ymd_opt(2026, 11, 20).unwrap()))
        );
        assert!(parse_qoo10_time("2026/11/20 00:00:00").is_some());
        assert_eq!(parse_qoo10_time("yesterday"), None);
        assert_eq!(parse_qoo10_time("2026-13-40"), None);
    }

    #[test]
    fn the_fast_path_agrees_with_chrono() {
        for text in [
            "2026-11-20 21:14:03",
            "2026/11/20T00:00:59",
            "2026-11-20",
            "2026/02/28",
            "2026-02-29",
            "2026-02-29 10:00:00",
            "2026-11-20 24:00:00",
            "2026-11-20 23:59:60",
            "2026-11-20 2a:00:00",
            "2026-1-20 21:14:03",
            "2026-11-20 21:14",
            "+026-11-20",
            "0000-01-01",
        ] {
            assert_eq!(parse_qoo10_time(text), general(text), "{text}");
        }
        // The fast path really takes these (and refuses what it cannot vouch for).
        assert!(fixed_width(b"2026-11-20 21:14:03").is_some());
        assert!(fixed_width(b"2026-11-20").is_some());
        assert!(fixed_width(b"2026-11-20 21:14").is_none());
    }

    #[test]
    fn today_in_japan_runs_ahead_of_utc() {
        let now = Utc.with_ymd_and_hms(2026, 11, 29, 16, 0, 0).unwrap();
        assert_eq!(today_jst(now), NaiveDate::from_ymd_opt(2026, 11, 30).unwrap());
    }
}
