//! Fleet-wide limits (`scope: fleet`): the counters live in a rate-limit service speaking
//! Envoy's RLS v3 API (`ShouldRateLimit`), the control plane's or any other. This module is the
//! host-free half: the descriptors a request sends, what an answer means (admit, refuse naming
//! the limit, or the service unavailable and `on_unavailable` decides), and what is sent when
//! the exchange ends to settle token reservations. The adapter only makes the gRPC call.
//!
//! One descriptor per matching fleet limit: the entries `cordon_limit` = the limit's name, then
//! one per `by` field (`key`, `user`, `team`, `app`, `model`; a missing value is `-`), the
//! limit itself as the descriptor's limit override (so the service needs no configuration of
//! its own), and the hits it adds: 1 for a request limit, the reserved tokens for a token limit.
//!
//! Settling tokens at the end: a shortfall (used more than reserved) is debited; a surplus is
//! released. The standard API has no negative hits, so a release is a descriptor with the extra
//! entry `cordon_op` = `release`, which Cordon's control plane honours (see docs/limits.md for
//! what another service does with it; with `protocol: standard` none is sent).
//!
//! [`wire`] puts these messages on the wire for both adapters.

pub mod wire;

use super::schema::{BudgetPer, OnUnavailable, Per, RateLimit, RateLimitService, RlsProtocol};
use super::{Caller, CompiledLimit, CompiledLimits, Counts, LimitKind, Reservation};
use crate::policy::PolicyError;
use crate::refusal::Refusal;

/// The descriptor entry naming the limit.
pub const LIMIT_KEY: &str = "cordon_limit";
/// The descriptor entry carrying a Cordon-specific operation (`release`, `debit`).
pub const OP_KEY: &str = "cordon_op";
/// `cordon_op` value: take the hits back (floor 0); always answered OK.
pub const OP_RELEASE: &str = "release";
/// `cordon_op` value: add the hits even past the limit (usage that already happened).
pub const OP_DEBIT: &str = "debit";
/// A descriptor value for a field the caller does not have (RLS entries may not be empty).
pub const MISSING: &str = "-";

/// An RLS window unit (the numbers of Envoy's `RateLimitUnit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// One second.
    Second = 1,
    /// One minute.
    Minute = 2,
    /// One hour.
    Hour = 3,
    /// One day.
    Day = 4,
    /// One calendar month (UTC) as Cordon's service counts it (a third-party service may count
    /// 30 days): for fleet-wide monthly budgets.
    Month = 5,
}

impl Unit {
    /// The unit's length in seconds.
    pub fn seconds(self) -> u64 {
        match self {
            Unit::Second => 1,
            Unit::Minute => 60,
            Unit::Hour => 3_600,
            Unit::Day => 86_400,
            // The longest month: only a fallback wait when a service names no reset.
            Unit::Month => 31 * 86_400,
        }
    }

    /// The window holding `now_secs`: its index (fixed units from the epoch, months from
    /// January 1970) and the seconds until it ends.
    pub fn window(self, now_secs: u64) -> (u64, u64) {
        if self == Unit::Month {
            let (index, end_ns) = super::window::Calendar::Month.window(now_secs.saturating_mul(1_000_000_000));
            return (index, (end_ns / 1_000_000_000).saturating_sub(now_secs));
        }
        let secs = self.seconds();
        let window = now_secs / secs;
        (window, (window + 1) * secs - now_secs)
    }

    /// From the wire number; `None` for units Cordon does not count in (unknown, week, month, year).
    pub fn from_wire(n: i32) -> Option<Self> {
        Some(match n {
            1 => Unit::Second,
            2 => Unit::Minute,
            3 => Unit::Hour,
            4 => Unit::Day,
            5 => Unit::Month,
            _ => return None,
        })
    }

    fn of(per: Per) -> Self {
        match per {
            Per::Second => Unit::Second,
            Per::Minute => Unit::Minute,
            Per::Hour => Unit::Hour,
            Per::Day => Unit::Day,
        }
    }
}

/// One RLS descriptor as Cordon sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    /// Ordered key/value entries.
    pub entries: Vec<(String, String)>,
    /// The limit override: units per window.
    pub limit: Option<(u32, Unit)>,
    /// Hits this descriptor adds.
    pub hits: u64,
}

/// A `ShouldRateLimit` request, independent of the protobuf types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RlsRequest {
    /// The RLS domain.
    pub domain: String,
    /// One descriptor per limit.
    pub descriptors: Vec<Descriptor>,
    /// The request-level hits: set when every descriptor adds the same (services without
    /// per-descriptor hits then count right too), else 0.
    pub hits_addend: u32,
}

/// An RLS verdict code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// The service could not decide.
    Unknown,
    /// Under the limit.
    Ok,
    /// Over the limit.
    OverLimit,
}

impl Code {
    /// From the wire number (unknown numbers are `Unknown`).
    pub fn from_wire(n: i32) -> Self {
        match n {
            1 => Code::Ok,
            2 => Code::OverLimit,
            _ => Code::Unknown,
        }
    }
}

/// One descriptor's status in an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DescriptorStatus {
    /// Its verdict.
    pub code: Code,
    /// Whether the service applied a limit to it (else `remaining` means nothing).
    pub has_limit: bool,
    /// Units left in the window.
    pub remaining: u64,
    /// Nanoseconds until the window resets, if the service said.
    pub reset_ns: Option<u64>,
}

/// A `ShouldRateLimit` answer, independent of the protobuf types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RlsResponse {
    /// The overall verdict.
    pub overall: Code,
    /// Per descriptor, in the request's order (may be empty).
    pub statuses: Vec<DescriptorStatus>,
}

/// Ordered descriptor entries.
type Entries = Vec<(String, String)>;

/// The fleet part of a request's admission, before the answer arrives.
#[derive(Debug, Clone)]
pub struct FleetCheck {
    request: RlsRequest,
    /// (limit index, entries, cost) per descriptor.
    pending: Vec<(usize, Entries, u64)>,
}

impl FleetCheck {
    /// The request to send.
    pub fn request(&self) -> &RlsRequest {
        &self.request
    }
}

/// A fleet limit that admitted the request, to settle at the end.
#[derive(Debug, Clone)]
pub(crate) struct FleetTaken {
    pub(crate) limit: usize,
    pub(crate) entries: Vec<(String, String)>,
    pub(crate) reserved: u64,
    pub(crate) remaining: u64,
    /// When the counted window ends (ns since the epoch), as the service said.
    pub(crate) window_end: u64,
}

/// What the request gets once the fleet limits are decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FleetOutcome {
    /// Every fleet limit admitted it.
    Admitted,
    /// The service could not answer and `on_unavailable: allow` let the request through,
    /// unmetered by its fleet limits: count it, log it, flag the audit record.
    FailedOpen(String),
}

pub(crate) fn validate_service(svc: &RateLimitService) -> Result<(), PolicyError> {
    let printable = |s: &str, max: usize| !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_graphic());
    if !printable(&svc.cluster, 128) {
        return Err(PolicyError::invalid("rate_limit_service.cluster", "must be 1-128 printable ASCII characters (an Envoy cluster name)"));
    }
    if !printable(&svc.domain, 64) {
        return Err(PolicyError::invalid("rate_limit_service.domain", "must be 1-64 printable ASCII characters"));
    }
    if !(1..=10_000).contains(&svc.timeout_ms) {
        return Err(PolicyError::invalid("rate_limit_service.timeout_ms", "must be between 1 and 10000"));
    }
    Ok(())
}

/// The RLS unit of a `scope: fleet` limit, or the field at fault and why.
pub(crate) fn unit_of(l: &RateLimit, have_service: bool) -> Result<Unit, (&'static str, String)> {
    if !have_service {
        return Err(("scope", "`fleet` needs a top-level `rate_limit_service` to ask".into()));
    }
    let (limit, unit, field) = match (&l.requests, &l.tokens, &l.budget) {
        (Some(q), _, _) => (q.limit, Unit::of(q.per), "requests.limit"),
        (_, Some(t), _) => (t.limit, Unit::of(t.per), "tokens.limit"),
        (_, _, Some(b)) => match b.per {
            BudgetPer::Day => (b.tokens, Unit::Day, "budget.tokens"),
            BudgetPer::Month => (b.tokens, Unit::Month, "budget.tokens"),
            BudgetPer::Week => {
                return Err(("budget.per", "a fleet-wide budget counts per `day` or `month` (Envoy's rate-limit API has no week)".into()));
            }
        },
        _ => return Err(("scope", "`fleet` applies to `requests`, `tokens` and `budget` limits (concurrency limits are local)".into())),
    };
    if limit > u64::from(u32::MAX) {
        return Err((field, format!("a fleet limit is at most {} (the RLS API counts in 32 bits)", u32::MAX)));
    }
    Ok(unit)
}

fn window_ns(unit: Unit) -> u64 {
    unit.seconds().saturating_mul(1_000_000_000)
}

fn clamp32(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl CompiledLimit {
    fn entries(&self, who: &Caller<'_>) -> Vec<(String, String)> {
        let mut e = Vec::with_capacity(1 + self.by.len());
        e.push((LIMIT_KEY.to_owned(), self.name.clone()));
        for (field, value) in self.by.iter().zip(self.key_values(who)) {
            let value = if value.is_empty() { MISSING } else { value };
            e.push((field.as_str().to_owned(), value.to_owned()));
        }
        e
    }

    fn descriptor(&self, entries: Vec<(String, String)>, hits: u64) -> Descriptor {
        Descriptor { entries, limit: self.fleet.map(|u| (clamp32(self.meter.limit()), u)), hits }
    }

    fn kind(&self) -> LimitKind {
        match self.counts {
            Counts::Requests => LimitKind::Requests,
            Counts::Tokens { .. } if matches!(self.meter, super::meter::Meter::Budget(_)) => LimitKind::Budget,
            Counts::Tokens { .. } => LimitKind::Tokens,
            // Never fleet-wide (refused at compile time); named for completeness.
            Counts::Concurrent => LimitKind::Concurrency,
        }
    }
}

fn request(domain: &str, descriptors: Vec<Descriptor>) -> RlsRequest {
    let uniform = descriptors.first().map(|d| d.hits).filter(|h| descriptors.iter().all(|d| d.hits == *h));
    RlsRequest { domain: domain.to_owned(), descriptors, hits_addend: uniform.map_or(0, clamp32) }
}

impl CompiledLimits {
    /// The rate-limit service, when the policy names one.
    pub fn service(&self) -> Option<&RateLimitService> {
        self.service.as_ref()
    }

    /// Whether any `scope: fleet` limit matches this request.
    pub fn has_fleet(&self, who: &Caller<'_>) -> bool {
        self.matching(who).any(|l| l.fleet.is_some())
    }

    /// The `ShouldRateLimit` call for the fleet limits matching this request, if any.
    pub fn fleet_check(&self, who: &Caller<'_>, reserve: &Reservation) -> Option<FleetCheck> {
        let svc = self.service.as_ref()?;
        let mut pending = Vec::new();
        let mut descriptors = Vec::new();
        for (i, l) in self.limits.iter().enumerate() {
            if l.fleet.is_none() || !l.matches(who) {
                continue;
            }
            let cost = l.cost(reserve.prompt, reserve.completion, 1);
            let entries = l.entries(who);
            descriptors.push(l.descriptor(entries.clone(), cost));
            pending.push((i, entries, cost));
        }
        if pending.is_empty() {
            return None;
        }
        Some(FleetCheck { request: request(&svc.domain, descriptors), pending })
    }

    /// What a request gets when the service could not answer (`why`): the refusal under
    /// `on_unavailable: deny`, else a fail-open outcome.
    pub fn fleet_unavailable(&self, why: &str) -> Result<FleetOutcome, Refusal> {
        match self.service.as_ref().map(|s| s.on_unavailable) {
            Some(OnUnavailable::Allow) => Ok(FleetOutcome::FailedOpen(why.to_owned())),
            _ => Err(Refusal::RateLimitUnavailable(format!("the rate-limit service is unavailable: {why}"))),
        }
    }

    /// Judges the service's answer to `check`: the limits that admitted (to settle later) or
    /// the refusal naming the first limit over. Headers are noted into `headers`.
    pub(crate) fn fleet_judge(
        &self,
        check: FleetCheck,
        answer: Result<RlsResponse, String>,
        headers: &mut super::Headers,
        now: u64,
    ) -> Result<(Vec<FleetTaken>, FleetOutcome), Refusal> {
        let resp = match answer {
            Ok(r) if r.overall != Code::Unknown => r,
            Ok(_) => return self.fleet_unavailable("it answered UNKNOWN").map(|o| (Vec::new(), o)),
            Err(why) => return self.fleet_unavailable(&why).map(|o| (Vec::new(), o)),
        };
        let n = check.pending.len();
        let status = |i: usize| resp.statuses.get(i).filter(|_| resp.statuses.len() == n);
        if resp.overall == Code::OverLimit {
            let at = (0..n).find(|i| status(*i).is_some_and(|s| s.code == Code::OverLimit)).unwrap_or(0);
            let Some((idx, _, _)) = check.pending.get(at) else {
                return self.fleet_unavailable("it refused a request with no descriptors").map(|o| (Vec::new(), o));
            };
            let Some(l) = self.limits.get(*idx) else { return self.fleet_unavailable("policy changed").map(|o| (Vec::new(), o)) };
            let unit_ns = l.fleet.map_or(1_000_000_000, window_ns);
            let reset = status(at).and_then(|s| s.reset_ns).unwrap_or(unit_ns);
            let retry_after_secs = reset.div_ceil(1_000_000_000).max(1);
            return Err(Refusal::RateLimited { limit: l.name.clone(), kind: l.kind(), retry_after_secs });
        }
        let mut taken = Vec::with_capacity(n);
        for (i, (idx, entries, cost)) in check.pending.into_iter().enumerate() {
            let Some(l) = self.limits.get(idx) else { continue };
            let unit_ns = l.fleet.map_or(1_000_000_000, window_ns);
            let st = status(i);
            let reset_ns = st.and_then(|s| s.reset_ns).unwrap_or(unit_ns);
            let remaining = match st {
                Some(s) if s.has_limit => {
                    headers.note(l, s.remaining, reset_ns);
                    s.remaining
                }
                _ => l.meter.limit().saturating_sub(cost),
            };
            taken.push(FleetTaken { limit: idx, entries, reserved: cost, remaining, window_end: now.saturating_add(reset_ns) });
        }
        Ok((taken, FleetOutcome::Admitted))
    }

    /// The call that settles fleet token reservations with the usage (debits and releases);
    /// `None` when nothing is owed either way.
    pub(crate) fn fleet_settlement(&self, taken: &[FleetTaken], usage: &super::Usage, now: u64) -> Option<RlsRequest> {
        let svc = self.service.as_ref()?;
        let mut descriptors = Vec::new();
        for t in taken {
            let Some(l) = self.limits.get(t.limit) else { continue };
            if !matches!(l.counts, Counts::Tokens { .. }) {
                continue;
            }
            let actual = l.cost(usage.prompt, usage.completion, 1);
            let mut entries = t.entries.clone();
            if actual > t.reserved {
                if svc.protocol == RlsProtocol::Cordon {
                    entries.push((OP_KEY.to_owned(), OP_DEBIT.to_owned()));
                }
                descriptors.push(l.descriptor(entries, actual - t.reserved));
            } else if actual < t.reserved && svc.protocol == RlsProtocol::Cordon && now < t.window_end {
                // A release after the window ended would give tokens back to the next window.
                entries.push((OP_KEY.to_owned(), OP_RELEASE.to_owned()));
                descriptors.push(l.descriptor(entries, t.reserved - actual));
            }
        }
        (!descriptors.is_empty()).then(|| request(&svc.domain, descriptors))
    }
}

/// Splits a descriptor's entries into the counter's identity and the Cordon operation, if any
/// (for the service side): `cordon_op` entries are removed wherever they are.
pub fn split_op(entries: &[(String, String)]) -> (Vec<(String, String)>, Option<&str>) {
    let mut op = None;
    let mut rest = Vec::with_capacity(entries.len());
    for (k, v) in entries {
        if k == OP_KEY {
            op = Some(v.as_str());
        } else {
            rest.push((k.clone(), v.clone()));
        }
    }
    (rest, op)
}

#[cfg(test)]
mod tests;
