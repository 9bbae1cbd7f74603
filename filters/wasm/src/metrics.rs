//! Counters in Envoy's stats (visible in `/stats/prometheus`): one per decision code.

use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;
use std::collections::HashMap;

/// Counter ids by decision code; defining a metric twice returns the same id.
#[derive(Default)]
pub struct Decisions {
    ids: HashMap<&'static str, u32>,
}

impl Decisions {
    /// Defines `cordon_decision_<code>` for every code plus `allowed`.
    pub fn define() -> Self {
        let mut ids = HashMap::new();
        for code in std::iter::once("allowed").chain(cordon_core::Refusal::all_codes().iter().copied()) {
            if let Ok(id) = hostcalls::define_metric(MetricType::Counter, &format!("cordon_decision_{code}")) {
                ids.insert(code, id);
            }
        }
        Self { ids }
    }

    /// Counts one decision.
    pub fn count(&self, code: &str) {
        if let Some(id) = self.ids.get(code) {
            let _ = hostcalls::increment_metric(*id, 1);
        }
    }
}

/// Counts busy rate-limit counters evicted to admit a request (`cordon_ratelimit_evictions`):
/// when it grows, a limit's key space has outgrown its `slots`.
pub fn count_evictions(n: usize) {
    thread_local! {
        static ID: Option<u32> = hostcalls::define_metric(MetricType::Counter, "cordon_ratelimit_evictions").ok();
    }
    ID.with(|id| add(*id, n));
}

/// Counts compare-and-swap retries on rate-limit counters (`cordon_ratelimit_cas_retries`):
/// contention between workers; sustained growth means hot counters (e.g. one team-wide limit
/// under heavy load).
pub fn count_cas_retries(n: usize) {
    thread_local! {
        static ID: Option<u32> = hostcalls::define_metric(MetricType::Counter, "cordon_ratelimit_cas_retries").ok();
    }
    ID.with(|id| add(*id, n));
}

fn add(id: Option<u32>, n: usize) {
    if let (Some(id), true) = (id, n > 0) {
        let _ = hostcalls::increment_metric(id, i64::try_from(n).unwrap_or(i64::MAX));
    }
}

/// Counts requests let through unmetered because the rate-limit service could not answer and
/// policy says `on_unavailable: allow` (`cordon_ratelimit_fail_open`).
pub fn count_fail_open() {
    thread_local! {
        static ID: Option<u32> = hostcalls::define_metric(MetricType::Counter, "cordon_ratelimit_fail_open").ok();
    }
    ID.with(|id| add(*id, 1));
}
