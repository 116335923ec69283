//! The delay-penalty clock of an alert's order: what makes one alert more urgent than another.
//! Pure.
//!
//! Qoo10 counts business days (JST) after payment: a reminder mail on business day 3, −2 points
//! on day 5, sales restrictions on day 6. An order must ship by its deadline: 発送予定日 when the
//! seller set one, else 発送可能日, else the third business day after payment. The queue shows
//! overdue orders first, then the fewest business days left, then the oldest alert.

use chrono::NaiveDate;
use schemas::calendar::BusinessDays;

/// How far along Qoo10's penalty ladder an unshipped order is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Penalty {
    None,
    /// Business day 3: Qoo10 mails the buyer about the delay.
    Mail,
    /// Business day 5: −2 points for the shop.
    Points,
    /// Business day 6: sales restrictions.
    Restricted,
}

impl Penalty {
    /// The stage reached on business day `day` of the clock.
    pub fn on_day(day: u32) -> Penalty {
        match day {
            0..=2 => Penalty::None,
            3..=4 => Penalty::Mail,
            5 => Penalty::Points,
            _ => Penalty::Restricted,
        }
    }

    /// (Japanese, English) for the page; empty for `None`.
    pub fn label(self) -> (&'static str, &'static str) {
        match self {
            Penalty::None => ("", ""),
            Penalty::Mail => ("遅延メール送信段階", "delay mail stage"),
            Penalty::Points => ("ペナルティ −2点", "−2 points"),
            Penalty::Restricted => ("販売制限の段階", "sales restriction stage"),
        }
    }
}

/// An order's dates as the alert carries them (`details.paid_at`, `details.ship_by`), as JST
/// calendar dates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dates {
    pub paid: Option<NaiveDate>,
    pub ship_by: Option<NaiveDate>,
}

/// Where an alert stands on the clock `today`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Urgency {
    /// The date the order must ship by, when known.
    pub deadline: Option<NaiveDate>,
    /// Business days from today to the deadline; negative once it has passed.
    pub days_left: Option<i32>,
    /// Business days since payment.
    pub since_payment: Option<u32>,
    pub penalty: Penalty,
}

impl Urgency {
    pub fn of(dates: Dates, today: NaiveDate, days: &BusinessDays) -> Urgency {
        let deadline = dates.ship_by.or(dates.paid.map(|p| days.add(p, 3)));
        let days_left =
            deadline.map(|d| if d >= today { days.between(today, d) as i32 } else { -(days.between(d, today) as i32) });
        let since_payment = dates.paid.map(|p| days.between(p, today));
        // With a 発送予定日 the clock runs from it: its first business day late counts as day 3.
        let day = match (dates.ship_by, days_left, since_payment) {
            (Some(_), Some(left), _) if left < 0 => 2 + left.unsigned_abs(),
            (Some(_), _, _) => 0,
            (None, _, Some(n)) => n,
            (None, _, None) => 0,
        };
        Urgency { deadline, days_left, since_payment, penalty: Penalty::on_day(day) }
    }

    pub fn overdue(&self) -> bool {
        self.days_left.is_some_and(|d| d < 0)
    }

    /// Sorts the most urgent first: overdue (longest first), then fewest days left, then
    /// alerts without dates.
    pub fn rank(&self) -> (u8, i32) {
        match self.days_left {
            Some(d) if d < 0 => (0, d),
            Some(d) => (1, d),
            None => (2, 0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn without_a_ship_date_the_clock_counts_business_days_since_payment() {
        let days = BusinessDays::default();
        // Paid Monday 2026-12-07: day 3 is Thursday 12-10, day 5 Monday 12-14, day 6 Tuesday.
        let paid = Dates { paid: Some(d("2026-12-07")), ship_by: None };
        let on = |t: &str| Urgency::of(paid, d(t), &days);
        assert_eq!(on("2026-12-08").penalty, Penalty::None);
        assert_eq!(on("2026-12-08").days_left, Some(2));
        assert_eq!(on("2026-12-10").penalty, Penalty::Mail);
        assert_eq!(on("2026-12-10").days_left, Some(0));
        assert!(!on("2026-12-10").overdue());
        assert_eq!(on("2026-12-12").since_payment, Some(4), "the weekend does not count");
        assert_eq!(on("2026-12-14").penalty, Penalty::Points);
        assert_eq!(on("2026-12-15").penalty, Penalty::Restricted);
        assert_eq!(on("2026-12-15").days_left, Some(-3));
    }

    #[test]
    fn a_ship_date_moves_the_deadline_and_the_clock_starts_when_it_passes() {
        let days = BusinessDays::default();
        let set = Dates { paid: Some(d("2026-12-01")), ship_by: Some(d("2026-12-16")) };
        let before = Urgency::of(set, d("2026-12-14"), &days);
        assert_eq!(
            (before.deadline, before.days_left, before.penalty),
            (Some(d("2026-12-16")), Some(2), Penalty::None)
        );
        let after = Urgency::of(set, d("2026-12-17"), &days);
        assert_eq!((after.days_left, after.penalty), (Some(-1), Penalty::Mail));
    }

    #[test]
    fn overdue_first_then_fewest_days_left_then_undated() {
        let days = BusinessDays::default();
        let today = d("2026-12-10");
        let mut all = [
            Urgency::of(Dates::default(), today, &days),
            Urgency::of(Dates { paid: Some(d("2026-12-09")), ship_by: None }, today, &days),
            Urgency::of(Dates { paid: Some(d("2026-12-01")), ship_by: None }, today, &days),
            Urgency::of(Dates { paid: None, ship_by: Some(d("2026-12-11")) }, today, &days),
        ];
        all.sort_by_key(Urgency::rank);
        let left: Vec<_> = all.iter().map(|u| u.days_left).collect();
        assert_eq!(left, [Some(-4), Some(1), Some(2), None]);
    }
}
