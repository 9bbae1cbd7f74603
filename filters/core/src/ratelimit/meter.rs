//! What a limit counts with: GCRA for rates (a rolling refill), a calendar window for budgets
//! (a reset at the boundary), or a gauge for exchanges in flight. All keep one `u64` per
//! counter in the same slot tables.

use super::gauge::Gauge;
use super::gcra::{Gcra, Verdict};
use super::window::Window;

/// A limit's counting rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Meter {
    /// A rate: `limit` units per rolling period.
    Rate(Gcra),
    /// A budget: `limit` units per calendar window.
    Budget(Window),
    /// Concurrency: at most `limit` exchanges in flight.
    Concurrent(Gauge),
}

impl Meter {
    /// Units per period or window.
    pub fn limit(&self) -> u64 {
        match self {
            Meter::Rate(g) => g.limit(),
            Meter::Budget(w) => w.limit(),
            Meter::Concurrent(g) => g.limit(),
        }
    }

    /// Judges a request of `cost` units at `now` against the stored state.
    pub fn check(&self, state: u64, now: u64, cost: u64) -> Verdict {
        match self {
            Meter::Rate(g) => g.check(state, now, cost),
            Meter::Budget(w) => w.check(state, now, cost),
            Meter::Concurrent(g) => g.check(state, now, cost),
        }
    }

    /// Debits (positive) or refunds (negative) `delta` units.
    pub fn adjust(&self, state: u64, now: u64, delta: i64) -> u64 {
        match self {
            Meter::Rate(g) => g.adjust(state, now, delta),
            Meter::Budget(w) => w.adjust(state, now, delta),
            Meter::Concurrent(g) => g.adjust(state, now, delta),
        }
    }

    /// How long a request that can never fit is told to wait (the period, or the window's end).
    pub fn retry_fallback_ns(&self, state: u64, now: u64) -> u64 {
        match self {
            Meter::Rate(g) => g.period_ns(),
            Meter::Budget(w) => w.status(state, now).1,
            Meter::Concurrent(g) => g.retry_ns(),
        }
    }

    /// Whether the counter owes nothing at `now` (its slot can go to another key, losing nothing).
    pub fn idle(&self, state: u64, now: u64) -> bool {
        match self {
            Meter::Rate(_) => state <= now,
            Meter::Budget(w) => w.idle(state, now),
            Meter::Concurrent(g) => g.idle(state, now),
        }
    }

    /// Outstanding usage, for choosing which busy counter to evict (the least).
    pub fn load(&self, state: u64, now: u64) -> u64 {
        match self {
            Meter::Rate(_) => state.saturating_sub(now),
            Meter::Budget(w) => w.load(state, now),
            Meter::Concurrent(g) => g.in_flight(state, now),
        }
    }
}
