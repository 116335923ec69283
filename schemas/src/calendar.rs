//! Japanese national holidays and business days (JST calendar dates). Pure.
//!
//! Qoo10's delay penalties count business days: JST weekdays that are not national holidays.
//! The holidays are computed from the rules of 国民の祝日に関する法律 (the Act on National
//! Holidays, as amended to 2018, with the one-off dates of 2019–2021 written out), the equinoxes
//! from the approximation the National Astronomical Observatory of Japan publishes for
//! 1980–2099. Checked against the Cabinet Office's list (内閣府「国民の祝日について」) for 2026
//! and 2027 in the tests below. Valid for 2000–2099; a shop's own closing days come on top
//! (`[alerts] holidays`).

use chrono::{Datelike, Duration, NaiveDate, Weekday};

fn ymd(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).expect("a calendar date")
}

/// The `n`th Monday of a month (Happy Monday holidays).
fn nth_monday(y: i32, m: u32, n: u32) -> NaiveDate {
    NaiveDate::from_weekday_of_month_opt(y, m, Weekday::Mon, n as u8).expect("every month has five Mondays at most")
}

/// 春分の日 and 秋分の日: the day numbers of NAOJ's approximation (valid 1980–2099).
fn equinox(y: i32, base: f64) -> u32 {
    let t = f64::from(y - 1980);
    (base + 0.242194 * t - (t / 4.0).floor()).floor() as u32
}

/// The holidays the law names for a year, before substitute and citizens' holidays.
fn named(y: i32) -> Vec<(NaiveDate, &'static str)> {
    let mut h = vec![
        (ymd(y, 1, 1), "元日"),
        (nth_monday(y, 1, 2), "成人の日"),
        (ymd(y, 2, 11), "建国記念の日"),
        (ymd(y, 3, equinox(y, 20.8431)), "春分の日"),
        (ymd(y, 4, 29), if y >= 2007 { "昭和の日" } else { "みどりの日" }),
        (ymd(y, 5, 3), "憲法記念日"),
        (ymd(y, 5, 5), "こどもの日"),
        (ymd(y, 9, equinox(y, 23.2488)), "秋分の日"),
        (ymd(y, 11, 3), "文化の日"),
        (ymd(y, 11, 23), "勤労感謝の日"),
    ];
    if y >= 2007 {
        h.push((ymd(y, 5, 4), "みどりの日"));
    }
    if y >= 2020 {
        h.push((ymd(y, 2, 23), "天皇誕生日"));
    } else if y <= 2018 {
        h.push((ymd(y, 12, 23), "天皇誕生日"));
    }
    // 海の日, 山の日 and スポーツの日 moved for the Tokyo Olympics in 2020 and 2021.
    let (sea, mountain, sports) = match y {
        2020 => (ymd(2020, 7, 23), Some(ymd(2020, 8, 10)), ymd(2020, 7, 24)),
        2021 => (ymd(2021, 7, 22), Some(ymd(2021, 8, 8)), ymd(2021, 7, 23)),
        _ => (
            if y >= 2003 { nth_monday(y, 7, 3) } else { ymd(y, 7, 20) },
            (y >= 2016).then(|| ymd(y, 8, 11)),
            nth_monday(y, 10, 2),
        ),
    };
    h.push((sea, "海の日"));
    h.extend(mountain.map(|d| (d, "山の日")));
    h.push((sports, if y >= 2020 { "スポーツの日" } else { "体育の日" }));
    h.push((if y >= 2003 { nth_monday(y, 9, 3) } else { ymd(y, 9, 15) }, "敬老の日"));
    if y == 2019 {
        h.push((ymd(2019, 5, 1), "天皇の即位の日"));
        h.push((ymd(2019, 10, 22), "即位礼正殿の儀の行われる日"));
    }
    h
}

/// Every national holiday of `year`, in date order, with its name: the named ones, 振替休日
/// (a holiday on a Sunday moves to the next day that is not a holiday) and 国民の休日 (a day
/// between two holidays).
pub fn holidays(year: i32) -> Vec<(NaiveDate, &'static str)> {
    let mut days = named(year);
    days.sort();
    let is = |days: &[(NaiveDate, &str)], d: NaiveDate| days.iter().any(|(h, _)| *h == d);
    let mut extra = Vec::new();
    for (d, _) in &days {
        if d.weekday() == Weekday::Sun {
            let mut next = *d + Duration::days(1);
            while is(&days, next) {
                next += Duration::days(1);
            }
            extra.push((next, "振替休日"));
        }
    }
    for (d, _) in &days {
        let between = *d + Duration::days(1);
        if !is(&days, between) && is(&days, between + Duration::days(1)) && between.weekday() != Weekday::Sun {
            extra.push((between, "国民の休日"));
        }
    }
    days.extend(extra);
    days.sort();
    days.dedup_by_key(|(d, _)| *d);
    days
}

/// True for a Japanese national holiday (振替休日 and 国民の休日 included).
pub fn is_national_holiday(d: NaiveDate) -> bool {
    // The list of a year has about 17 entries: computing it is cheaper than caching it.
    holidays(d.year()).iter().any(|(h, _)| *h == d)
}

/// Business days for Qoo10's clocks: JST weekdays that are neither national holidays nor in
/// `closed` (the shop's own non-business days).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BusinessDays {
    pub closed: Vec<NaiveDate>,
}

impl BusinessDays {
    pub fn is_business_day(&self, d: NaiveDate) -> bool {
        !matches!(d.weekday(), Weekday::Sat | Weekday::Sun) && !is_national_holiday(d) && !self.closed.contains(&d)
    }

    /// Business days after `from` up to and including `to` (0 when `to` is not after `from`).
    pub fn between(&self, from: NaiveDate, to: NaiveDate) -> u32 {
        from.iter_days().skip(1).take_while(|d| *d <= to).filter(|d| self.is_business_day(*d)).count() as u32
    }

    /// The `n`th business day after `from`.
    pub fn add(&self, from: NaiveDate, n: u32) -> NaiveDate {
        from.iter_days().skip(1).filter(|d| self.is_business_day(*d)).nth(n.saturating_sub(1) as usize).unwrap_or(from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(y: i32) -> Vec<String> {
        holidays(y).into_iter().map(|(d, n)| format!("{} {n}", d.format("%m-%d"))).collect()
    }

    /// 内閣府「国民の祝日について」, 令和8年（2026年）.
    #[test]
    fn twenty_twenty_six() {
        assert_eq!(
            list(2026),
            [
                "01-01 元日",
                "01-12 成人の日",
                "02-11 建国記念の日",
                "02-23 天皇誕生日",
                "03-20 春分の日",
                "04-29 昭和の日",
                "05-03 憲法記念日",
                "05-04 みどりの日",
                "05-05 こどもの日",
                "05-06 振替休日",
                "07-20 海の日",
                "08-11 山の日",
                "09-21 敬老の日",
                "09-22 国民の休日",
                "09-23 秋分の日",
                "10-12 スポーツの日",
                "11-03 文化の日",
                "11-23 勤労感謝の日",
            ]
        );
    }

    /// 令和9年（2027年）: 春分の日 on a Sunday gives 3-22 as 振替休日.
    #[test]
    fn twenty_twenty_seven() {
        assert_eq!(
            list(2027),
            [
                "01-01 元日",
                "01-11 成人の日",
                "02-11 建国記念の日",
                "02-23 天皇誕生日",
                "03-21 春分の日",
                "03-22 振替休日",
                "04-29 昭和の日",
                "05-03 憲法記念日",
                "05-04 みどりの日",
                "05-05 こどもの日",
                "07-19 海の日",
                "08-11 山の日",
                "09-20 敬老の日",
                "09-23 秋分の日",
                "10-11 スポーツの日",
                "11-03 文化の日",
                "11-23 勤労感謝の日",
            ]
        );
    }

    #[test]
    fn one_off_years_and_substitutes() {
        assert!(is_national_holiday(ymd(2019, 5, 1)) && is_national_holiday(ymd(2019, 4, 30)));
        assert!(is_national_holiday(ymd(2021, 8, 9)), "山の日 2021 on a Sunday, substituted on Monday");
        assert!(!is_national_holiday(ymd(2021, 7, 19)), "海の日 moved to 7-22 in 2021");
        assert!(is_national_holiday(ymd(2025, 11, 24)), "勤労感謝の日 2025 on a Sunday");
        // The Olympic year 2020: 海の日 7-23, スポーツの日 7-24, 山の日 8-10, not the usual days.
        for d in [ymd(2020, 7, 23), ymd(2020, 7, 24), ymd(2020, 8, 10)] {
            assert!(is_national_holiday(d), "{d}");
        }
        assert!(!is_national_holiday(ymd(2020, 7, 20)) && !is_national_holiday(ymd(2020, 10, 12)));
        // 天皇誕生日: 12-23 until 2018, none in 2019, 2-23 from 2020.
        assert!(is_national_holiday(ymd(2018, 12, 24)), "12-23-2018 a Sunday, substituted");
        assert!(!is_national_holiday(ymd(2019, 12, 23)) && !is_national_holiday(ymd(2019, 2, 23)));
        assert!(is_national_holiday(ymd(2017, 12, 23)) && is_national_holiday(ymd(2021, 2, 23)));
    }

    #[test]
    fn business_days_skip_weekends_holidays_and_closing_days() {
        let b = BusinessDays::default();
        // Golden Week 2026: Thu 4-30, Fri 5-1 are business days; 5-2..5-6 are not.
        assert_eq!(b.between(ymd(2026, 4, 28), ymd(2026, 5, 7)), 3, "4-30, 5-1 and 5-7; 4-29 and 5-2..5-6 are off");
        assert_eq!(b.add(ymd(2026, 5, 1), 1), ymd(2026, 5, 7));
        let closed = BusinessDays { closed: vec![ymd(2026, 5, 7)] };
        assert_eq!(closed.add(ymd(2026, 5, 1), 1), ymd(2026, 5, 8));
        assert!(!b.is_business_day(ymd(2026, 9, 22)), "国民の休日");
    }
}
