//! Rate limits and token budgets, local mode: every matching limit applies, each a counter per
//! key in a shared compare-and-swap store (GCRA for rates, a calendar window for budgets), on
//! a clock the caller passes in.
//!
//! A request is admitted only if every limit that matches it admits it; a refusal names the
//! limit. Token limits reserve an estimate before the request goes upstream and are reconciled
//! with the usage the model reports (or counted from the streamed text when it reports none).

pub mod exchange;
pub mod fleet;
pub mod gauge;
pub mod gcra;
pub mod meter;
pub mod schema;
pub mod store;
pub mod usage;
pub mod window;

use crate::policy::{PolicyError, Principal};
use crate::refusal::Refusal;
use gauge::Gauge;
use gcra::{Gcra, Verdict};
use meter::Meter;
use schema::{KeyField, LimitMatch, OnExceed, RateLimit, RateLimitService, Scope, TokenCount, TokenEstimate};
use store::{CasStore, StoreError};
use window::{Calendar, Window};

/// What a compiled limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counts {
    /// Requests.
    Requests,
    /// Tokens of this kind; streams past the limit are cut when `cut`.
    Tokens {
        /// Prompt, completion or total.
        count: TokenCount,
        /// Whether a stream is ended once the limit is reached.
        cut: bool,
    },
    /// Exchanges in flight.
    Concurrent,
}

/// A validated limit.
#[derive(Debug, Clone)]
pub struct CompiledLimit {
    name: String,
    selector: LimitMatch,
    by: Vec<KeyField>,
    counts: Counts,
    meter: Meter,
    slots: u32,
    /// Counted by the rate-limit service (`scope: fleet`): its window, else `None`.
    fleet: Option<fleet::Unit>,
}

/// Validated limits and token estimation of one policy.
#[derive(Debug, Clone, Default)]
pub struct CompiledLimits {
    limits: Vec<CompiledLimit>,
    estimate: TokenEstimate,
    service: Option<RateLimitService>,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

impl CompiledLimits {
    /// Validates `rate_limits` and `token_estimate`, naming the field on error.
    pub fn compile(limits: &[RateLimit], estimate: Option<&TokenEstimate>) -> Result<Self, PolicyError> {
        Self::compile_with_service(limits, estimate, None)
    }

    /// [`Self::compile`] with the `rate_limit_service` that `scope: fleet` limits ask.
    pub fn compile_with_service(
        limits: &[RateLimit],
        estimate: Option<&TokenEstimate>,
        service: Option<&RateLimitService>,
    ) -> Result<Self, PolicyError> {
        if let Some(svc) = service {
            fleet::validate_service(svc)?;
        }
        let mut out = Vec::with_capacity(limits.len());
        for (i, l) in limits.iter().enumerate() {
            let at = |f: &str| format!("rate_limits[{i}].{f}");
            if !valid_name(&l.name) {
                return Err(PolicyError::invalid(at("name"), "must be 1-64 characters of a-z, 0-9, '-' or '_'"));
            }
            if limits.iter().take(i).any(|o| o.name == l.name) {
                return Err(PolicyError::invalid(at("name"), format!("'{}' is used by an earlier limit", l.name)));
            }
            let cut = l.on_exceed == OnExceed::Cut;
            let (counts, meter, field) = match (&l.requests, &l.tokens, &l.budget, &l.concurrent) {
                (Some(q), None, None, None) => (Counts::Requests, Meter::Rate(Gcra::new(q.limit, q.per.nanos())), "requests.limit"),
                (None, Some(t), None, None) => {
                    (Counts::Tokens { count: t.count, cut }, Meter::Rate(Gcra::new(t.limit, t.per.nanos())), "tokens.limit")
                }
                (None, None, None, Some(c)) => {
                    if c.limit > gauge::MAX_CONCURRENT {
                        return Err(PolicyError::invalid(at("concurrent.limit"), format!("must be at most {}", gauge::MAX_CONCURRENT)));
                    }
                    if c.stale_after_s == 0 || c.stale_after_s > 86_400 {
                        return Err(PolicyError::invalid(at("concurrent.stale_after_s"), "must be between 1 and 86400"));
                    }
                    (Counts::Concurrent, Meter::Concurrent(Gauge::new(c.limit, c.stale_after_s * 1_000_000_000)), "concurrent.limit")
                }
                (None, None, Some(b), None) => {
                    (Counts::Tokens { count: b.count, cut }, Meter::Budget(Window::new(b.tokens, Calendar::from(b.per))), "budget.tokens")
                }
                _ => return Err(PolicyError::invalid(at("requests"), "set exactly one of `requests`, `tokens`, `budget` or `concurrent`")),
            };
            let quota = match (&l.requests, &l.tokens, &l.budget, &l.concurrent) {
                (Some(q), _, _, _) => q.limit,
                (_, Some(t), _, _) => t.limit,
                (_, _, Some(b), _) => b.tokens,
                (_, _, _, Some(c)) => c.limit,
                _ => 0,
            };
            if quota == 0 {
                return Err(PolicyError::invalid(at(field), "must be greater than zero"));
            }
            if cut && matches!(counts, Counts::Requests | Counts::Concurrent) {
                return Err(PolicyError::invalid(at("on_exceed"), "`cut` applies to token limits and budgets only"));
            }
            if l.slots == 0 || l.slots > 1_000_000 {
                return Err(PolicyError::invalid(at("slots"), "must be between 1 and 1000000"));
            }
            let fleet = match l.scope {
                Scope::Local => None,
                Scope::Fleet => Some(fleet::unit_of(l, service.is_some()).map_err(|(f, why)| PolicyError::invalid(at(f), why))?),
            };
            let mut by = l.by.clone();
            by.sort();
            by.dedup();
            out.push(CompiledLimit { name: l.name.clone(), selector: l.selector.clone(), by, counts, meter, slots: l.slots, fleet });
        }
        let estimate = estimate.cloned().unwrap_or_default();
        let ok = |b: f64| b.is_finite() && (0.5..=64.0).contains(&b);
        if !ok(estimate.bytes_per_token) {
            return Err(PolicyError::invalid("token_estimate.bytes_per_token", "must be between 0.5 and 64"));
        }
        for (i, f) in estimate.families.iter().enumerate() {
            if !ok(f.bytes_per_token) {
                return Err(PolicyError::invalid(format!("token_estimate.families[{i}].bytes_per_token"), "must be between 0.5 and 64"));
            }
        }
        Ok(Self { limits: out, estimate, service: service.cloned() })
    }

    /// Creates the counter tables of every limit in `store` (see [`store::prepare`]); returns
    /// how many counters were created.
    pub fn prepare(&self, store: &dyn CasStore) -> Result<usize, StoreError> {
        self.limits.iter().filter(|l| l.fleet.is_none()).try_fold(0, |n, l| Ok(n + store::prepare(store, &l.name, l.slots)?))
    }

    /// Whether the policy has any limit (none: the limiter costs nothing).
    pub fn is_empty(&self) -> bool {
        self.limits.is_empty()
    }

    /// Whether any limit counting tokens matches this request (its response must be watched).
    pub fn counts_tokens(&self, who: &Caller<'_>) -> bool {
        self.matching(who).any(|l| matches!(l.counts, Counts::Tokens { .. }))
    }

    fn matching<'a>(&'a self, who: &'a Caller<'_>) -> impl Iterator<Item = &'a CompiledLimit> + 'a {
        self.limits.iter().filter(move |l| l.matches(who))
    }

    /// Estimated tokens of a request body for `model`: prompt from its size, completion from
    /// `max_tokens` / `max_output_tokens` / `max_completion_tokens` (else the policy default).
    pub fn estimate(&self, model: &str, body: &[u8]) -> Reservation {
        let bpt =
            self.estimate.families.iter().find(|f| f.model.matches(model)).map_or(self.estimate.bytes_per_token, |f| f.bytes_per_token);
        let prompt = (body.len() as f64 / bpt).ceil() as u64;
        let completion = usage::max_output_tokens(body).unwrap_or(self.estimate.default_completion_tokens);
        Reservation { prompt, completion, bytes_per_token: bpt }
    }

    /// Admits the request if every matching limit admits it, reserving `reserve` tokens on each
    /// token limit; otherwise refuses with the first limit that did not, and undoes what the
    /// earlier ones took.
    pub fn admit(&self, who: &Caller<'_>, reserve: &Reservation, store: &dyn CasStore, now: u64) -> Result<Admission, Refusal> {
        let mut admission = Admission { taken: Vec::new(), headers: Headers::default(), evictions: 0, retries: 0 };
        for limit in self.matching(who).filter(|l| l.fleet.is_none()) {
            let cost = limit.cost(reserve.prompt, reserve.completion, 1);
            let key = limit.key(who);
            let meter = limit.meter;
            let judged = store::update(store, &limit.name, limit.slots, key, now, &meter, |state| match meter.check(state, now, cost) {
                Verdict::Admit { tat, remaining, reset_ns } => (Some(tat), Ok((remaining, reset_ns))),
                Verdict::Deny { retry_after_ns, reset_ns } => (None, Err((retry_after_ns, reset_ns))),
            });
            let (verdict, updated) = match judged {
                Ok(v) => v,
                Err(e) => {
                    admission.release(self, store, now);
                    return Err(unavailable(&e));
                }
            };
            admission.evictions += usize::from(updated.evicted);
            admission.retries += updated.retries;
            match verdict {
                Ok((remaining, reset_ns)) => {
                    admission.headers.note(limit, remaining, reset_ns);
                    admission.taken.push(Taken { limit: limit_index(self, limit), key, reserved: cost, remaining });
                }
                Err((retry_after_ns, reset_ns)) => {
                    admission.release(self, store, now);
                    let retry_after_secs = retry_after_ns
                        .unwrap_or_else(|| meter.retry_fallback_ns(now.saturating_add(reset_ns), now).max(reset_ns))
                        .div_ceil(1_000_000_000)
                        .max(1);
                    let code = match (limit.counts, limit.meter) {
                        (_, Meter::Budget(_)) => LimitKind::Budget,
                        (Counts::Requests, _) => LimitKind::Requests,
                        (Counts::Tokens { .. }, _) => LimitKind::Tokens,
                        (Counts::Concurrent, _) => LimitKind::Concurrency,
                    };
                    return Err(Refusal::RateLimited { limit: limit.name.clone(), kind: code, retry_after_secs });
                }
            }
        }
        Ok(admission)
    }
}

/// The counter after a debit or refund; a refund to a counter that owes nothing (its key lost
/// the slot to eviction, or a concurrency place went stale) writes nothing, so it can never
/// evict another key's counter or push one below empty.
fn give_or_take(meter: &Meter, state: u64, now: u64, delta: i64) -> Option<u64> {
    (delta >= 0 || !meter.idle(state, now)).then(|| meter.adjust(state, now, delta))
}

fn limit_index(all: &CompiledLimits, l: &CompiledLimit) -> usize {
    all.limits.iter().position(|x| std::ptr::eq(x, l)).unwrap_or(usize::MAX)
}

fn unavailable(e: &StoreError) -> Refusal {
    Refusal::RateLimitUnavailable(e.to_string())
}

impl CompiledLimit {
    fn matches(&self, who: &Caller<'_>) -> bool {
        let p = who.principal;
        self.selector.matches(p.user.as_deref(), p.team.as_deref(), p.app.as_deref(), who.key_id, Some(who.model))
    }

    /// The values of the `by` fields for this caller, in `by` order.
    fn key_values<'a>(&self, who: &Caller<'a>) -> Vec<&'a str> {
        self.by
            .iter()
            .map(|f| match f {
                KeyField::Key => who.key_id.unwrap_or_default(),
                KeyField::User => who.principal.user.as_deref().unwrap_or_default(),
                KeyField::Team => who.principal.team.as_deref().unwrap_or_default(),
                KeyField::App => who.principal.app.as_deref().unwrap_or_default(),
                KeyField::Model => who.model,
            })
            .collect()
    }

    fn key(&self, who: &Caller<'_>) -> u64 {
        store::key_hash(&self.name, &self.key_values(who))
    }

    /// Units this limit counts for a request of these token figures.
    fn cost(&self, prompt: u64, completion: u64, requests: u64) -> u64 {
        match self.counts {
            Counts::Requests | Counts::Concurrent => requests,
            Counts::Tokens { count: TokenCount::Prompt, .. } => prompt,
            Counts::Tokens { count: TokenCount::Completion, .. } => completion,
            Counts::Tokens { count: TokenCount::Total, .. } => prompt.saturating_add(completion),
        }
    }
}

/// Who is asking for what: the inputs every limit matches and keys on.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    /// The resolved principal.
    pub principal: &'a Principal,
    /// The API key id, if an API key was used.
    pub key_id: Option<&'a str>,
    /// The requested model.
    pub model: &'a str,
}

/// Tokens reserved for a request before it goes upstream.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reservation {
    /// Estimated prompt tokens.
    pub prompt: u64,
    /// Completion tokens reserved.
    pub completion: u64,
    /// The estimation ratio used (for counting streamed text).
    pub bytes_per_token: f64,
}

/// Which kind of limit refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    /// A request-rate limit (`rate_limit_exceeded`).
    Requests,
    /// A token limit (`token_limit_exceeded`).
    Tokens,
    /// A calendar token budget (`budget_exceeded`).
    Budget,
    /// Exchanges in flight (`concurrency_limit_exceeded`).
    Concurrency,
}

#[derive(Debug, Clone, Copy)]
struct Taken {
    limit: usize,
    key: u64,
    reserved: u64,
    /// Units this limit had left right after admitting.
    remaining: u64,
}

/// The `x-ratelimit-*` values for the response: per kind, the most restrictive matching limit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    requests: Option<(u64, u64, u64)>,
    tokens: Option<(u64, u64, u64)>,
}

impl Headers {
    fn note(&mut self, limit: &CompiledLimit, remaining: u64, reset_ns: u64) {
        let slot = match limit.counts {
            Counts::Requests => &mut self.requests,
            Counts::Tokens { .. } => &mut self.tokens,
            // OpenAI's headers have no concurrency figure; a refusal names the limit.
            Counts::Concurrent => return,
        };
        let candidate = (limit.meter.limit(), remaining, reset_ns);
        if slot.is_none_or(|(_, r, _)| remaining < r) {
            *slot = Some(candidate);
        }
    }

    /// Header name/value pairs in OpenAI's names (`x-ratelimit-limit-requests`, ...); resets
    /// as durations like `6s` or `1m30s`.
    pub fn pairs(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (kind, v) in [("requests", self.requests), ("tokens", self.tokens)] {
            if let Some((limit, remaining, reset_ns)) = v {
                out.push((format!("x-ratelimit-limit-{kind}"), limit.to_string()));
                out.push((format!("x-ratelimit-remaining-{kind}"), remaining.to_string()));
                out.push((format!("x-ratelimit-reset-{kind}"), duration(reset_ns)));
            }
        }
        out
    }
}

/// A duration as OpenAI writes it in `x-ratelimit-reset-*`: `0s`, `850ms`, `6s`, `1m30s`, `2h0m0s`.
pub fn duration(ns: u64) -> String {
    let ms = ns.div_ceil(1_000_000);
    if ms < 1_000 {
        return if ms == 0 { "0s".into() } else { format!("{ms}ms") };
    }
    let s = ms.div_ceil(1_000);
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, m, sec) => format!("{m}m{sec}s"),
        (h, m, sec) => format!("{h}h{m}m{sec}s"),
    }
}

/// What an admitted request holds: the reservations to reconcile and the headers to send.
#[derive(Debug, Clone)]
pub struct Admission {
    taken: Vec<Taken>,
    headers: Headers,
    /// Busy counters evicted to admit this request (bounded state at its limit).
    pub evictions: usize,
    /// Compare-and-swap retries needed (contention between workers on the same counters).
    pub retries: usize,
}

impl Admission {
    /// The matching limit with the least left after admitting: its name, limit and remainder
    /// (what the audit record names as the rate-limit outcome).
    pub fn tightest<'a>(&self, limits: &'a CompiledLimits) -> Option<(&'a str, u64, u64)> {
        let t = self.taken.iter().min_by_key(|t| t.remaining)?;
        let l = limits.limits.get(t.limit)?;
        Some((l.name.as_str(), l.meter.limit(), t.remaining))
    }
}

/// Token usage of one exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Prompt (input) tokens.
    pub prompt: u64,
    /// Completion (output) tokens.
    pub completion: u64,
    /// True when the model reported it; false when Cordon counted it from the text.
    pub reported: bool,
}

impl Admission {
    /// The rate-limit headers for the response.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// Whether anything was reserved (nothing to reconcile otherwise).
    pub fn holds_tokens(&self, limits: &CompiledLimits) -> bool {
        self.taken.iter().any(|t| limits.limits.get(t.limit).is_some_and(|l| matches!(l.counts, Counts::Tokens { .. })))
    }

    /// Completion tokens a stream may still produce before a `cut` limit is reached: the
    /// completion reserved plus what each cut limit had left when admitted (the smallest).
    /// `None` when no matching limit cuts.
    pub fn stream_budget(&self, limits: &CompiledLimits, reserve: &Reservation) -> Option<u64> {
        self.cut_budget(limits, reserve).map(|(budget, _, _)| budget)
    }

    /// The smallest stream budget, the name of the `cut` limit that sets it and its kind.
    pub fn cut_budget(&self, limits: &CompiledLimits, reserve: &Reservation) -> Option<(u64, String, LimitKind)> {
        self.taken
            .iter()
            .filter_map(|t| {
                let l = limits.limits.get(t.limit)?;
                let Counts::Tokens { count, cut: true } = l.counts else { return None };
                if count == TokenCount::Prompt {
                    return None;
                }
                let kind = if matches!(l.meter, Meter::Budget(_)) { LimitKind::Budget } else { LimitKind::Tokens };
                Some((reserve.completion.saturating_add(t.remaining), l.name.clone(), kind))
            })
            .min_by_key(|(budget, _, _)| *budget)
    }

    /// Reconciles each token reservation with the usage: refunds what was not used, debits what
    /// was used beyond it; gives back the places taken under concurrency limits. Idempotent per
    /// admission (reservations are consumed).
    pub fn reconcile(&mut self, limits: &CompiledLimits, usage: &Usage, store: &dyn CasStore, now: u64) -> Result<(), Refusal> {
        for t in std::mem::take(&mut self.taken) {
            let Some(l) = limits.limits.get(t.limit) else { continue };
            let delta = match l.counts {
                Counts::Requests => continue,
                Counts::Concurrent => -1,
                Counts::Tokens { .. } => {
                    let actual = l.cost(usage.prompt, usage.completion, 1);
                    i64::try_from(actual).unwrap_or(i64::MAX).saturating_sub(i64::try_from(t.reserved).unwrap_or(i64::MAX))
                }
            };
            if delta == 0 {
                continue;
            }
            let meter = l.meter;
            store::update(store, &l.name, l.slots, t.key, now, &meter, |state| (give_or_take(&meter, state, now, delta), ()))
                .map_err(|e| unavailable(&e))?;
        }
        Ok(())
    }

    /// Gives every reservation back (the request never reached the model).
    pub fn release(&mut self, limits: &CompiledLimits, store: &dyn CasStore, now: u64) {
        for t in std::mem::take(&mut self.taken) {
            let Some(l) = limits.limits.get(t.limit) else { continue };
            let meter = l.meter;
            let delta = -i64::try_from(t.reserved).unwrap_or(i64::MAX);
            // Best effort: a failed refund only errs towards refusing.
            let _ = store::update(store, &l.name, l.slots, t.key, now, &meter, |state| (give_or_take(&meter, state, now, delta), ()));
        }
    }
}

#[cfg(test)]
mod tests;
