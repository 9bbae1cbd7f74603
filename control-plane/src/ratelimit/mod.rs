//! The rate-limit service fleet-wide limits ask: Envoy's RLS v3 API
//! (`envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`), on the control plane's one
//! port. Envoys already reach that port through their `cordon_control_plane` cluster (HTTP/2,
//! mTLS when configured): serving the RLS there needs no second cluster, certificate or port.
//!
//! The service keeps no limit configuration: each descriptor carries its limit as the API's
//! limit override (Cordon's filter always sends one), and a descriptor without one is answered
//! OK with no limit, as envoyproxy/ratelimit answers a descriptor it has no rule for.
//!
//! Counting is a fixed window per descriptor and unit (aligned to the Unix epoch, as
//! envoyproxy/ratelimit does), all-or-nothing per request: the hits of every descriptor are
//! added only if every one fits, so a refused request consumes nothing and admitted hits never
//! exceed a limit within a window. The Cordon-specific entry `cordon_op` (see
//! `cordon_core::ratelimit::fleet`) releases (`release`) or debits unconditionally (`debit`).
//!
//! Counters live in memory ([`memory::MemoryCounters`], the embedded default: one replica) or
//! in Redis ([`redis::RedisCounters`], when several replicas serve the same fleet).

pub mod memory;
pub mod redis;

use cordon_core::ratelimit::fleet::{self, Unit};
use cordon_proto::rls::rate_limit_response::{Code, DescriptorStatus, RateLimit};
use cordon_proto::rls::rate_limit_service_server::RateLimitService;
use cordon_proto::rls::{RateLimitRequest, RateLimitResponse};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tonic::{Request, Response, Status};

/// What a set of counter updates does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Add every item's hits only if every item stays within its limit.
    Check,
    /// Take the hits back (never below zero).
    Release,
    /// Add the hits regardless of the limit (usage that already happened).
    Debit,
}

/// One counter update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The counter: descriptor digest, unit and window.
    pub key: String,
    /// Hits to add (or take back).
    pub hits: u64,
    /// The limit within the window.
    pub limit: u64,
    /// How long the counter must live (until its window ends, plus a second).
    pub ttl_secs: u64,
}

/// The result of an update: whether a check admitted, and each counter's value after it (or,
/// for a refused check, its unchanged value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// False only for a check that did not fit.
    pub admitted: bool,
    /// Counter values, in item order.
    pub counts: Vec<u64>,
}

/// Counter backend failures (the RPC answers UNAVAILABLE; the filter applies `on_unavailable`).
#[derive(Debug, thiserror::Error)]
pub enum CounterError {
    /// Redis could not be reached or refused the script.
    #[error("rate-limit counters in Redis are unavailable: {0}")]
    Redis(String),
}

/// Where counters live.
#[async_trait::async_trait]
pub trait Counters: Send + Sync {
    /// Applies `op` to `items` atomically.
    async fn apply(&self, op: Op, items: &[Item], now_secs: u64) -> Result<Applied, CounterError>;
    /// The backend's name for logs (`memory`, `redis`).
    fn name(&self) -> &'static str;
}

/// Applies `op` given the counters' current values: the one rule both backends follow (the
/// Redis script is its transcription).
pub fn decide(op: Op, items: &[Item], current: &[u64]) -> Applied {
    let fits = items.iter().zip(current).all(|(i, c)| c.saturating_add(i.hits) <= i.limit);
    if op == Op::Check && !fits {
        return Applied { admitted: false, counts: current.to_vec() };
    }
    let counts = items
        .iter()
        .zip(current)
        .map(|(i, c)| if op == Op::Release { c.saturating_sub(i.hits) } else { c.saturating_add(i.hits) })
        .collect();
    Applied { admitted: true, counts }
}

/// The gRPC service over a counter backend.
pub struct RlsGrpc {
    counters: Arc<dyn Counters>,
}

impl RlsGrpc {
    /// A service counting in `counters`.
    pub fn new(counters: Arc<dyn Counters>) -> Self {
        Self { counters }
    }
}

fn counter_key(domain: &str, entries: &[(String, String)], unit: Unit, window: u64) -> String {
    let mut h = Sha256::new();
    h.update(domain.as_bytes());
    for (k, v) in entries {
        h.update([0]);
        h.update(k.as_bytes());
        h.update([1]);
        h.update(v.as_bytes());
    }
    format!("cordon:rl:{}:{}:{window}", hex::encode(&h.finalize()[..16]), unit.seconds())
}

struct Planned {
    op: Op,
    item: Item,
    unit: Unit,
    name: String,
    reset_secs: u64,
}

/// Answers one request at `now_secs` (split out of the RPC for tests).
pub async fn should_rate_limit(counters: &dyn Counters, req: &RateLimitRequest, now_secs: u64) -> Result<RateLimitResponse, Status> {
    let default_hits = if req.hits_addend == 0 { 1 } else { u64::from(req.hits_addend) };
    let mut planned: Vec<Option<Planned>> = Vec::with_capacity(req.descriptors.len());
    for (i, d) in req.descriptors.iter().enumerate() {
        let all: Vec<(String, String)> = d.entries.iter().map(|e| (e.key.clone(), e.value.clone())).collect();
        let (entries, op) = fleet::split_op(&all);
        let op = match op {
            None => Op::Check,
            Some(fleet::OP_RELEASE) => Op::Release,
            Some(fleet::OP_DEBIT) => Op::Debit,
            Some(other) => {
                return Err(Status::invalid_argument(format!("descriptors[{i}]: unknown cordon_op '{other}' (release or debit)")));
            }
        };
        let Some(limit) = &d.limit else {
            planned.push(None);
            continue;
        };
        let unit = Unit::from_wire(limit.unit).ok_or_else(|| {
            Status::invalid_argument(format!("descriptors[{i}].limit.unit: this service counts per SECOND, MINUTE, HOUR, DAY or MONTH"))
        })?;
        let (window, reset_secs) = unit.window(now_secs);
        let name = entries.iter().find(|(k, _)| k == fleet::LIMIT_KEY).map(|(_, v)| v.clone()).unwrap_or_default();
        let item = Item {
            key: counter_key(&req.domain, &entries, unit, window),
            hits: d.hits_addend.unwrap_or(default_hits),
            limit: u64::from(limit.requests_per_unit),
            ttl_secs: reset_secs + 1,
        };
        planned.push(Some(Planned { op, item, unit, name, reset_secs }));
    }
    let mut statuses: Vec<DescriptorStatus> = planned
        .iter()
        .map(|_| DescriptorStatus { code: Code::Ok as i32, current_limit: None, limit_remaining: 0, duration_until_reset: None })
        .collect();
    let mut overall = Code::Ok;
    for op in [Op::Check, Op::Release, Op::Debit] {
        let idx: Vec<usize> = planned.iter().enumerate().filter(|(_, p)| p.as_ref().is_some_and(|p| p.op == op)).map(|(i, _)| i).collect();
        if idx.is_empty() {
            continue;
        }
        let items: Vec<Item> = idx.iter().filter_map(|i| planned.get(*i).and_then(|p| p.as_ref()).map(|p| p.item.clone())).collect();
        let applied = counters.apply(op, &items, now_secs).await.map_err(|e| {
            tracing::warn!(error = %e, "rate-limit service: counters unavailable");
            Status::unavailable(e.to_string())
        })?;
        if !applied.admitted {
            overall = Code::OverLimit;
        }
        for ((i, item), count) in idx.iter().zip(&items).zip(&applied.counts) {
            let (Some(Some(p)), Some(st)) = (planned.get(*i), statuses.get_mut(*i)) else { continue };
            let over = !applied.admitted && count.saturating_add(item.hits) > item.limit;
            st.code = if over { Code::OverLimit as i32 } else { Code::Ok as i32 };
            st.current_limit = Some(RateLimit {
                requests_per_unit: u32::try_from(item.limit).unwrap_or(u32::MAX),
                unit: p.unit as i32,
                name: p.name.clone(),
            });
            st.limit_remaining = u32::try_from(item.limit.saturating_sub(*count)).unwrap_or(u32::MAX);
            st.duration_until_reset = Some(prost_types::Duration { seconds: i64::try_from(p.reset_secs).unwrap_or(i64::MAX), nanos: 0 });
        }
    }
    Ok(RateLimitResponse { overall_code: overall as i32, statuses })
}

#[tonic::async_trait]
impl RateLimitService for RlsGrpc {
    async fn should_rate_limit(&self, request: Request<RateLimitRequest>) -> Result<Response<RateLimitResponse>, Status> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        should_rate_limit(self.counters.as_ref(), request.get_ref(), now).await.map(Response::new)
    }
}

#[cfg(test)]
mod tests;
