//! Calendar budgets: a fixed number of units per UTC day, ISO week or calendar month, reset at
//! the boundary (what finance means by "10M tokens a month"), unlike GCRA's rolling refill.
//!
//! State is one `u64` as for GCRA: the window's index in the high 24 bits (days, weeks or
//! months since 1970), the units used in it in the low 40 bits (saturating at 2^40 - 1, about
//! 1.1 trillion). A counter whose window has passed reads as unused.

use super::gcra::Verdict;

const USED_BITS: u32 = 40;
const USED_MAX: u64 = (1 << USED_BITS) - 1;
const DAY_NS: u64 = 86_400 * 1_000_000_000;

/// A budget's calendar period (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Calendar {
    /// Midnight to midnight.
    Day,
    /// Monday 00:00 to Monday 00:00 (ISO weeks).
    Week,
    /// The 1st 00:00 to the next 1st 00:00.
    Month,
}

/// Days since 1970-01-01 of a civil date (proleptic Gregorian; H. Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil (year, month, day) of a day number.
fn civil(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The civil (year, month) of a day number.
fn civil_from_days(z: i64) -> (i64, u32) {
    let (y, m, _) = civil(z);
    (y, m)
}

/// The UTC calendar date of a unix time in milliseconds, as `YYYY-MM-DD` (the day budgets and
/// the usage ledger count in).
pub fn utc_date(unix_ms: i64) -> String {
    let (y, m, d) = civil(unix_ms.div_euclid(86_400_000));
    format!("{y:04}-{m:02}-{d:02}")
}

impl Calendar {
    /// The window containing `now_ns` (unix): its start and its end (unix ns).
    pub fn bounds(self, now_ns: u64) -> (u64, u64) {
        let (_, end) = self.window(now_ns);
        let start = match self {
            Calendar::Day => end.saturating_sub(DAY_NS),
            Calendar::Week => end.saturating_sub(7 * DAY_NS),
            Calendar::Month => {
                let (y, m) = civil_from_days((now_ns / DAY_NS) as i64);
                days_from_civil(y, m, 1) as u64 * DAY_NS
            }
        };
        (start, end)
    }

    /// The window containing `now_ns` (unix): its index and its end (unix ns).
    pub fn window(self, now_ns: u64) -> (u64, u64) {
        let day = (now_ns / DAY_NS) as i64;
        match self {
            Calendar::Day => (day as u64, (day as u64 + 1) * DAY_NS),
            Calendar::Week => {
                // 1970-01-01 was a Thursday, so Monday-based weeks begin on days 7k - 3.
                let week = (day + 3).div_euclid(7);
                let end_day = (week + 1) * 7 - 3;
                (week as u64, end_day as u64 * DAY_NS)
            }
            Calendar::Month => {
                let (y, m) = civil_from_days(day);
                let index = (y - 1970) * 12 + i64::from(m) - 1;
                let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                (index as u64, days_from_civil(ny, nm, 1) as u64 * DAY_NS)
            }
        }
    }
}

/// A budget of `limit` units per calendar window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    limit: u64,
    calendar: Calendar,
}

fn pack(window: u64, used: u64) -> u64 {
    (window << USED_BITS) | used.min(USED_MAX)
}

impl Window {
    /// `limit` units (at least 1) per `calendar` window.
    pub fn new(limit: u64, calendar: Calendar) -> Self {
        Self { limit: limit.clamp(1, USED_MAX), calendar }
    }

    /// Units per window.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Units used in the current window (0 if the stored window has passed) and its index and end.
    fn used(&self, state: u64, now: u64) -> (u64, u64, u64) {
        let (window, end) = self.calendar.window(now);
        let used = if state >> USED_BITS == window { state & USED_MAX } else { 0 };
        (used, window, end)
    }

    /// Units left now and nanoseconds until the window resets.
    pub fn status(&self, state: u64, now: u64) -> (u64, u64) {
        let (used, _, end) = self.used(state, now);
        (self.limit.saturating_sub(used), end.saturating_sub(now))
    }

    /// Judges a request of `cost` units at `now`.
    pub fn check(&self, state: u64, now: u64, cost: u64) -> Verdict {
        let (used, window, end) = self.used(state, now);
        let reset_ns = end.saturating_sub(now);
        if used.saturating_add(cost) <= self.limit {
            let used = used.saturating_add(cost);
            return Verdict::Admit { tat: pack(window, used), remaining: self.limit - used, reset_ns };
        }
        Verdict::Deny { retry_after_ns: (cost <= self.limit).then_some(reset_ns), reset_ns }
    }

    /// Debits (positive) or refunds (negative) `delta` units in the current window. A refund
    /// for a reservation made in a window that has since ended gives nothing back (that window
    /// is over); a debit lands in the current window.
    pub fn adjust(&self, state: u64, now: u64, delta: i64) -> u64 {
        let (used, window, _) = self.used(state, now);
        let used = if delta >= 0 { used.saturating_add(delta.unsigned_abs()) } else { used.saturating_sub(delta.unsigned_abs()) };
        pack(window, used)
    }

    /// Whether the counter holds nothing in the current window (its slot can be reused).
    pub fn idle(&self, state: u64, now: u64) -> bool {
        self.used(state, now).0 == 0
    }

    /// Units used in the current window (eviction takes the least used).
    pub fn load(&self, state: u64, now: u64) -> u64 {
        self.used(state, now).0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const S: u64 = 1_000_000_000;

    fn at(y: i64, m: u32, d: u32, secs: u64) -> u64 {
        days_from_civil(y, m, d) as u64 * DAY_NS + secs * S
    }

    #[test]
    fn civil_dates_round_trip_across_leap_years_and_centuries() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2024, 2, 29) + 1, days_from_civil(2024, 3, 1));
        assert_eq!(days_from_civil(2100, 2, 28) + 1, days_from_civil(2100, 3, 1), "2100 is not a leap year");
        for d in [0i64, 59, 60, 365, 11_016, 11_017, 19_782, 20_000, 60_000] {
            let (y, m) = civil_from_days(d);
            assert!(days_from_civil(y, m, 1) <= d && d < days_from_civil(if m == 12 { y + 1 } else { y }, m % 12 + 1, 1));
        }
    }

    #[test]
    fn utc_dates_are_calendar_dates() {
        assert_eq!(utc_date(0), "1970-01-01");
        assert_eq!(utc_date(1_796_036_400_000), "2026-11-30");
        assert_eq!(utc_date(951_782_400_000), "2000-02-29");
        assert_eq!(utc_date(-1), "1969-12-31");
    }

    #[test]
    fn windows_end_at_midnight_monday_and_the_first() {
        let now = at(2026, 11, 30, 11 * 3600); // Monday 30 Nov 2026, 11:00 UTC
        assert_eq!(Calendar::Day.window(now).1, at(2026, 12, 1, 0));
        assert_eq!(Calendar::Week.window(now).1, at(2026, 12, 7, 0), "the next Monday");
        assert_eq!(Calendar::Month.window(now).1, at(2026, 12, 1, 0));
        assert_eq!(Calendar::Month.window(at(2026, 12, 31, 0)).1, at(2027, 1, 1, 0));
        assert_eq!(Calendar::Month.window(at(2028, 2, 10, 0)).1, at(2028, 3, 1, 0));
        let sunday = at(2026, 12, 6, 86_399);
        assert_eq!(Calendar::Week.window(sunday), Calendar::Week.window(now), "Sunday 23:59:59 is the same ISO week");
    }

    #[test]
    fn a_budget_admits_up_to_its_limit_then_refuses_until_the_window_resets() {
        let w = Window::new(100, Calendar::Month);
        let t = at(2026, 11, 30, 0);
        let Verdict::Admit { tat: s, remaining, .. } = w.check(0, t, 60) else { panic!() };
        assert_eq!(remaining, 40);
        let Verdict::Deny { retry_after_ns, reset_ns } = w.check(s, t + S, 41) else { panic!() };
        assert_eq!(retry_after_ns, Some(reset_ns));
        assert_eq!(t + S + reset_ns, at(2026, 12, 1, 0));
        assert!(matches!(w.check(s, at(2026, 12, 1, 0), 100), Verdict::Admit { remaining: 0, .. }), "a new month starts empty");
        assert!(matches!(w.check(0, t, 101), Verdict::Deny { retry_after_ns: None, .. }), "more than the budget never fits");
    }

    #[test]
    fn reconciling_debits_and_refunds_in_the_current_window_only() {
        let w = Window::new(100, Calendar::Day);
        let t = at(2026, 11, 30, 100);
        let Verdict::Admit { tat: s, .. } = w.check(0, t, 50) else { panic!() };
        assert_eq!(w.status(w.adjust(s, t, -30), t).0, 80, "unused reservation refunded");
        assert_eq!(w.status(w.adjust(s, t, 70), t).0, 0, "overshoot debited (floor at zero remaining)");
        let tomorrow = at(2026, 12, 1, 5);
        assert_eq!(w.status(w.adjust(s, tomorrow, -50), tomorrow).0, 100, "yesterday's refund gives nothing back today");
        assert!(w.idle(s, tomorrow) && !w.idle(s, t));
    }

    proptest! {
        /// Whatever sequence of requests arrives within one window, what is admitted never
        /// exceeds the budget.
        #[test]
        fn admitted_units_never_exceed_the_budget_within_a_window(costs in prop::collection::vec(0u64..50, 1..60), limit in 1u64..500) {
            let w = Window::new(limit, Calendar::Month);
            let t0 = at(2026, 11, 1, 0);
            let (mut state, mut admitted) = (0u64, 0u64);
            for (i, c) in costs.iter().enumerate() {
                if let Verdict::Admit { tat, .. } = w.check(state, t0 + i as u64 * 3600 * S, *c) {
                    state = tat;
                    admitted += c;
                }
            }
            prop_assert!(admitted <= limit);
        }
    }
}
