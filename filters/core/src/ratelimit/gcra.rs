//! GCRA (the generic cell rate algorithm): one number of state per key, the *theoretical
//! arrival time* (TAT), in nanoseconds on the caller's clock. A limit of `L` units per period `P`
//! spaces units `T = P / L` apart and tolerates a burst of the whole period: a request of cost
//! `c` is admitted when `max(TAT, now) + c·T - now <= P`. Token costs are reserved up front and
//! reconciled later by moving the TAT forward (debit) or back (refund), so what a caller used
//! beyond its reservation is owed before its next request is admitted.

/// A limit as GCRA sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    /// Nanoseconds one unit occupies (`period / limit`, at least 1).
    interval_ns: u64,
    /// The window, in nanoseconds.
    period_ns: u64,
    /// Units per period.
    limit: u64,
}

/// The verdict on one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Admitted: store `tat`; `remaining` units are left now, fully replenished in `reset_ns`.
    Admit {
        /// The new TAT to store.
        tat: u64,
        /// Units still admissible right now.
        remaining: u64,
        /// Nanoseconds until the whole limit is available again.
        reset_ns: u64,
    },
    /// Refused: the TAT is unchanged; the same request fits again in `retry_after_ns`
    /// (`None` when its cost exceeds the whole limit and it never will).
    Deny {
        /// Nanoseconds to wait, or `None` if the cost alone exceeds the limit.
        retry_after_ns: Option<u64>,
        /// Nanoseconds until the whole limit is available again.
        reset_ns: u64,
    },
}

impl Gcra {
    /// `limit` units per `period_ns` (both at least 1).
    pub const fn new(limit: u64, period_ns: u64) -> Self {
        let limit = if limit == 0 { 1 } else { limit };
        let period_ns = if period_ns == 0 { 1 } else { period_ns };
        let interval_ns = period_ns / limit;
        Self { interval_ns: if interval_ns == 0 { 1 } else { interval_ns }, period_ns, limit }
    }

    /// Units per period.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// The window, in nanoseconds.
    pub fn period_ns(&self) -> u64 {
        self.period_ns
    }

    /// What `tat` leaves admissible at `now`, and when everything is back.
    pub fn status(&self, tat: u64, now: u64) -> (u64, u64) {
        let used = tat.saturating_sub(now);
        let remaining = self.period_ns.saturating_sub(used) / self.interval_ns;
        (remaining.min(self.limit), used)
    }

    /// Judges a request of `cost` units at `now` against the stored `tat`.
    pub fn check(&self, tat: u64, now: u64, cost: u64) -> Verdict {
        let base = tat.max(now);
        let new_tat = base.saturating_add(cost.saturating_mul(self.interval_ns));
        let ahead = new_tat - now;
        if ahead <= self.period_ns {
            let (remaining, reset_ns) = self.status(new_tat, now);
            return Verdict::Admit { tat: new_tat, remaining, reset_ns };
        }
        let cost_ns = cost.saturating_mul(self.interval_ns);
        let retry_after_ns = (cost_ns <= self.period_ns).then(|| ahead - self.period_ns);
        Verdict::Deny { retry_after_ns, reset_ns: tat.saturating_sub(now) }
    }

    /// Moves `tat` by `delta` units: positive debits usage beyond a reservation (it may push the
    /// TAT past `now + period`: the debt refuses later requests until it drains), negative
    /// refunds an unused reservation (never below `now`: time already passed is not given back
    /// twice).
    pub fn adjust(&self, tat: u64, now: u64, delta: i64) -> u64 {
        let ns = delta.unsigned_abs().saturating_mul(self.interval_ns);
        if delta >= 0 { tat.max(now).saturating_add(ns) } else { tat.saturating_sub(ns).max(now) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const S: u64 = 1_000_000_000;

    fn admit(g: &Gcra, tat: &mut u64, now: u64, cost: u64) -> bool {
        match g.check(*tat, now, cost) {
            Verdict::Admit { tat: t, .. } => {
                *tat = t;
                true
            }
            Verdict::Deny { .. } => false,
        }
    }

    #[test]
    fn a_full_burst_then_one_per_interval() {
        let g = Gcra::new(10, 60 * S); // 10 per minute: one every 6 s
        let mut tat = 0;
        let now = 1_000 * S;
        for i in 0..10 {
            assert!(admit(&g, &mut tat, now, 1), "request {i} of the burst");
        }
        let Verdict::Deny { retry_after_ns, reset_ns } = g.check(tat, now, 1) else { panic!("the 11th is refused") };
        assert_eq!(retry_after_ns, Some(6 * S));
        assert_eq!(reset_ns, 60 * S);
        assert!(!admit(&g, &mut tat, now + 6 * S - 1, 1), "not a nanosecond early");
        assert!(admit(&g, &mut tat, now + 6 * S, 1));
        assert!(!admit(&g, &mut tat, now + 6 * S, 1));
    }

    #[test]
    fn remaining_counts_down_and_reset_says_when_all_is_back() {
        let g = Gcra::new(3, 3 * S);
        let mut tat = 0;
        let now = 10 * S;
        let mut seen = vec![];
        for _ in 0..3 {
            if let Verdict::Admit { tat: t, remaining, reset_ns } = g.check(tat, now, 1) {
                tat = t;
                seen.push((remaining, reset_ns));
            }
        }
        assert_eq!(seen, vec![(2, S), (1, 2 * S), (0, 3 * S)]);
        assert_eq!(g.status(tat, now + 3 * S), (3, 0), "idle for a period: everything is back");
    }

    #[test]
    fn a_cost_larger_than_the_limit_is_never_admitted() {
        let g = Gcra::new(100, 60 * S);
        assert!(matches!(g.check(0, S, 101), Verdict::Deny { retry_after_ns: None, .. }));
        assert!(matches!(g.check(0, S, 100), Verdict::Admit { remaining: 0, .. }));
    }

    #[test]
    fn reservations_are_refunded_or_debited_on_reconciliation() {
        let g = Gcra::new(1000, 60 * S); // 1000 tokens a minute
        let now = 5 * S;
        let Verdict::Admit { tat, remaining, .. } = g.check(0, now, 600) else { panic!() };
        assert_eq!(remaining, 400);
        // The model used only 100: 500 come back.
        let tat = g.adjust(tat, now, -500);
        assert_eq!(g.status(tat, now).0, 900);
        // Another call reserved 100 but used 1100: the caller is in debt...
        let Verdict::Admit { tat, .. } = g.check(tat, now, 100) else { panic!() };
        let tat = g.adjust(tat, now, 1000);
        assert_eq!(g.status(tat, now).0, 0);
        assert!(matches!(g.check(tat, now, 1), Verdict::Deny { .. }));
        // ...until it drains: 200 tokens over the limit take 12 s to repay before one fits.
        assert!(matches!(g.check(tat, now + 12 * S, 1), Verdict::Deny { .. }));
        assert!(matches!(g.check(tat, now + 12 * S + 60_000_000, 1), Verdict::Admit { .. }));
        // A refund never goes below now.
        assert_eq!(g.adjust(now + S, now, -1_000_000), now);
    }

    proptest! {
        /// Over any sequence of requests at non-decreasing times, the units admitted with
        /// arrival times in any interval [t1, t2] never exceed `(t2 - t1 + period) / interval`:
        /// one full burst (the limit) plus what refills during the interval. No interleaving
        /// gets more.
        #[test]
        fn admitted_in_any_interval_is_bounded_by_burst_plus_refill(
            limit in 1u64..50,
            period_s in 1u64..5,
            gaps in proptest::collection::vec(0u64..400_000_000, 1..200),
            costs in proptest::collection::vec(1u64..4, 200),
        ) {
            let period = period_s * S;
            let g = Gcra::new(limit, period);
            let mut tat = 0;
            let mut now = 1_000 * S;
            let mut admitted: Vec<(u64, u64)> = vec![];
            for (gap, cost) in gaps.iter().zip(&costs) {
                now += gap;
                if admit(&g, &mut tat, now, *cost) {
                    admitted.push((now, *cost));
                }
            }
            for (i, (t1, _)) in admitted.iter().enumerate() {
                let mut sum = 0;
                for (t2, c) in admitted.iter().skip(i) {
                    sum += c;
                    prop_assert!(sum <= (t2 - t1 + period) / g.interval_ns, "{sum} units in [{t1}, {t2}] with limit {limit}");
                }
            }
            // And a fresh key admits exactly the limit at once, never more.
            let mut tat = 0;
            let burst = (0..limit + 5).filter(|_| admit(&g, &mut tat, 7 * S, 1)).count() as u64;
            prop_assert_eq!(burst, limit);
        }
    }
}
