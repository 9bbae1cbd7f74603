//! Concurrency: how many exchanges of one key are in flight. Admission takes one, the end of the
//! exchange (or its refusal further down the chain) gives it back.
//!
//! One `u64` per counter, like the other meters: the count in the high bits and, in the low
//! bits, the millisecond it last changed. The timestamp bounds what a lost release can cost: an
//! exchange whose end never came (its worker's VM was torn down mid-stream) would otherwise hold
//! its place forever. A counter untouched for `stale_after` restarts at zero, so such a leak
//! locks a key out for at most that long (and a stream that outlives it without any other
//! activity on its key may let one more in; the limits reference says so).

use super::gcra::Verdict;

/// Bits of the last-change time (milliseconds since the Unix epoch; 2^44 ms is 557 years).
const TIME_BITS: u32 = 44;
const TIME_MASK: u64 = (1 << TIME_BITS) - 1;
/// The largest concurrency limit a counter can hold.
pub const MAX_CONCURRENT: u64 = (1 << (64 - TIME_BITS)) - 1;
/// How long a refused caller is told to wait: nothing says when a stream of its key will end.
const RETRY_NS: u64 = 1_000_000_000;

/// At most `limit` exchanges in flight per key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gauge {
    limit: u64,
    stale_after_ns: u64,
}

fn pack(count: u64, now_ns: u64) -> u64 {
    (count.min(MAX_CONCURRENT) << TIME_BITS) | ((now_ns / 1_000_000) & TIME_MASK)
}

impl Gauge {
    /// `limit` (1..=[`MAX_CONCURRENT`]) in flight; a counter untouched for `stale_after_ns`
    /// counts as empty.
    pub fn new(limit: u64, stale_after_ns: u64) -> Self {
        Self { limit: limit.clamp(1, MAX_CONCURRENT), stale_after_ns: stale_after_ns.max(1) }
    }

    /// Exchanges allowed in flight.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Exchanges in flight per `state` at `now` (0 once stale).
    pub fn in_flight(&self, state: u64, now_ns: u64) -> u64 {
        let changed_ms = state & TIME_MASK;
        let now_ms = (now_ns / 1_000_000) & TIME_MASK;
        let idle_ns = now_ms.saturating_sub(changed_ms).saturating_mul(1_000_000);
        if idle_ns >= self.stale_after_ns { 0 } else { state >> TIME_BITS }
    }

    /// Takes `cost` places if they are free.
    pub fn check(&self, state: u64, now_ns: u64, cost: u64) -> Verdict {
        let count = self.in_flight(state, now_ns);
        match count.checked_add(cost) {
            Some(after) if after <= self.limit => Verdict::Admit { tat: pack(after, now_ns), remaining: self.limit - after, reset_ns: 0 },
            _ => Verdict::Deny { retry_after_ns: (cost <= self.limit).then_some(RETRY_NS), reset_ns: RETRY_NS },
        }
    }

    /// Takes (positive) or gives back (negative) `delta` places.
    pub fn adjust(&self, state: u64, now_ns: u64, delta: i64) -> u64 {
        let count = self.in_flight(state, now_ns);
        let after = if delta >= 0 { count.saturating_add(delta.unsigned_abs()) } else { count.saturating_sub(delta.unsigned_abs()) };
        pack(after, now_ns)
    }

    /// Whether nothing is in flight (the slot can go to another key).
    pub fn idle(&self, state: u64, now_ns: u64) -> bool {
        self.in_flight(state, now_ns) == 0
    }

    /// How long a refused caller waits before trying again.
    pub fn retry_ns(&self) -> u64 {
        RETRY_NS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;
    const T0: u64 = 1_700_000_000 * S;

    fn admit(g: &Gauge, state: u64, now: u64) -> Option<(u64, u64)> {
        match g.check(state, now, 1) {
            Verdict::Admit { tat, remaining, .. } => Some((tat, remaining)),
            Verdict::Deny { .. } => None,
        }
    }

    #[test]
    fn takes_places_up_to_the_limit_and_gives_them_back() {
        let g = Gauge::new(2, 900 * S);
        let (s1, r1) = admit(&g, 0, T0).unwrap();
        let (s2, r2) = admit(&g, s1, T0 + S).unwrap();
        assert_eq!((r1, r2), (1, 0));
        assert!(admit(&g, s2, T0 + 2 * S).is_none(), "a third in flight is refused");
        let s3 = g.adjust(s2, T0 + 3 * S, -1);
        assert_eq!(g.in_flight(s3, T0 + 3 * S), 1);
        assert!(admit(&g, s3, T0 + 3 * S).is_some(), "a released place is free again");
        assert!(g.idle(g.adjust(s3, T0 + 4 * S, -5), T0 + 4 * S), "releases never go below zero");
    }

    #[test]
    fn a_counter_nobody_touched_for_stale_after_restarts_at_zero() {
        let g = Gauge::new(1, 60 * S);
        let (held, _) = admit(&g, 0, T0).unwrap();
        assert!(admit(&g, held, T0 + 59 * S).is_none());
        assert_eq!(admit(&g, held, T0 + 60 * S).map(|(_, r)| r), Some(0), "a lost release holds a key for at most stale_after");
    }

    #[test]
    fn a_cost_beyond_the_limit_is_never_admitted_and_gets_no_retry_hint() {
        let g = Gauge::new(1, 60 * S);
        assert!(matches!(g.check(0, T0, 2), Verdict::Deny { retry_after_ns: None, .. }));
        assert!(matches!(g.check(pack(1, T0), T0, 1), Verdict::Deny { retry_after_ns: Some(RETRY_NS), .. }));
    }
}
