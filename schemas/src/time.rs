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
    fn today_in_japan_runs_ahead_of_utc() {
        let now = Utc.with_ymd_and_hms(2026, 11, 29, 16, 0, 0).unwrap();
        assert_eq!(today_jst(now), NaiveDate::from_ymd_opt(2026, 11, 30).unwrap());
    }
}
