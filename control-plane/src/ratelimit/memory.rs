//! Counters in this process: the embedded default (one control-plane replica).

use super::{Applied, CounterError, Counters, Item, Op, decide};
use std::collections::HashMap;
use std::sync::Mutex;

/// Expired windows are swept every this many updates.
const SWEEP_EVERY: u64 = 4096;

/// Fixed-window counters behind one mutex; a window's counter is dropped once it has expired.
#[derive(Default)]
pub struct MemoryCounters {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Counter key → (value, expiry in Unix seconds).
    counts: HashMap<String, (u64, u64)>,
    updates: u64,
}

impl MemoryCounters {
    /// Empty counters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Live counters (for tests and metrics).
    pub fn len(&self) -> usize {
        self.inner.lock().map_or(0, |i| i.counts.len())
    }

    /// Whether no counter is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait::async_trait]
impl Counters for MemoryCounters {
    async fn apply(&self, op: Op, items: &[Item], now_secs: u64) -> Result<Applied, CounterError> {
        // A poisoned lock only means another update panicked mid-way; the map is still sound.
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.updates += 1;
        if inner.updates.is_multiple_of(SWEEP_EVERY) {
            inner.counts.retain(|_, (_, exp)| *exp > now_secs);
        }
        let current: Vec<u64> =
            items.iter().map(|i| inner.counts.get(&i.key).filter(|(_, exp)| *exp > now_secs).map_or(0, |(v, _)| *v)).collect();
        let applied = decide(op, items, &current);
        if applied.admitted {
            for (item, count) in items.iter().zip(&applied.counts) {
                let expiry = inner.counts.get(&item.key).filter(|(_, exp)| *exp > now_secs).map_or(now_secs + item.ttl_secs, |(_, e)| *e);
                inner.counts.insert(item.key.clone(), (*count, expiry));
            }
        }
        Ok(applied)
    }

    fn name(&self) -> &'static str {
        "memory"
    }
}
