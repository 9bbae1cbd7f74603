//! One request's record while the exchange runs: each role writes what it decided, and the
//! role that ends last turns it into a `cordon_audit::record::AuditRecord`. Only identifiers,
//! codes and counts go in: the draft has no place for prompt or response text.

use crate::identity::Identity;
use crate::ratelimit::Usage;
use crate::redaction::session::FailOpen;
use crate::refusal::Refusal;
use cordon_audit::Hash;
use cordon_audit::record::{Action, AuditRecord, Decision, Direction, Ident, PolicyRef, RateLimitOutcome, TokenUsage, UsageSource};
use cordon_redact::Direction as RedactDirection;
use std::collections::BTreeMap;
use std::sync::Arc;

/// An identifier for the record from any text (escaped, never refused); empty is `None`.
fn ident(value: &str) -> Option<Ident> {
    (!value.is_empty()).then(|| Ident::escaped(value))
}

fn hash_from_hex(hex: &str) -> Option<Hash> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn action(name: &str) -> Option<Action> {
    Some(match name {
        "allow" => Action::Allow,
        "mask" => Action::Mask,
        "redact" => Action::Redact,
        "block" => Action::Block,
        "pseudonymize" => Action::Pseudonymize,
        _ => return None,
    })
}

fn direction(d: RedactDirection) -> Direction {
    match d {
        RedactDirection::Request => Direction::Request,
        RedactDirection::Response => Direction::Response,
    }
}

/// How the exchange ended, as the host saw it when the last role logged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ending {
    /// Unix milliseconds at the end.
    pub end_ms: u64,
    /// The status sent to the app, if a response started.
    pub status: Option<u16>,
    /// Bytes received from the app.
    pub bytes_in: u64,
    /// Bytes sent to the app.
    pub bytes_out: u64,
}

/// A record being written by the roles of one request.
#[derive(Debug, Clone)]
pub struct Draft {
    record: AuditRecord,
    started_ms: u64,
    refusal: Option<&'static str>,
    status: Option<u16>,
    incomplete: bool,
}

impl Draft {
    /// A draft for the request `request_id` (e.g. `x-request-id`) that began at `started_ms`.
    pub fn new(request_id: &str, started_ms: u64) -> Self {
        let id = ident(request_id).unwrap_or_else(|| Ident::escaped("none"));
        Self {
            record: AuditRecord::new(id, Decision::Allow, Ident::escaped("ok")),
            started_ms,
            refusal: None,
            status: None,
            incomplete: false,
        }
    }

    /// Who the caller is (principal and key id; never the key).
    pub fn identity(&mut self, identity: &Identity) {
        let p = &mut self.record.principal;
        p.user = identity.principal.user.as_deref().and_then(ident);
        p.team = identity.principal.team.as_deref().and_then(ident);
        p.app = identity.principal.app.as_deref().and_then(ident);
        p.key_id = identity.key_id.as_deref().and_then(ident);
    }

    /// The model the request named.
    pub fn model(&mut self, model: &str) {
        self.record.model = ident(model);
    }

    /// The policy route that governed the request.
    pub fn route(&mut self, route: &str) {
        self.record.route = ident(route);
    }

    /// The upstream cluster the request went to.
    pub fn upstream(&mut self, cluster: &str) {
        self.record.upstream = ident(cluster);
    }

    /// The policy in force: its version and the SHA-256 (hex) of its bundle or document.
    pub fn policy(&mut self, version: &str, sha256_hex: &str) {
        self.record.policy =
            ident(version).zip(hash_from_hex(sha256_hex)).map(|(version, bundle_sha256)| PolicyRef { version, bundle_sha256 });
    }

    /// Cordon refused the exchange (or ended its stream); the first refusal is the reason.
    pub fn refused(&mut self, refusal: &Refusal) {
        if self.refusal.is_none() {
            self.refusal = Some(refusal.code());
            self.status = Some(refusal.status());
        }
        if let Refusal::ModelNotAllowed { model } = refusal
            && self.record.model.is_none()
        {
            // The model asked for is part of what was refused.
            self.record.model = ident(model);
        }
        if let Refusal::RateLimited { limit, .. } = refusal
            && let Some(bucket) = ident(limit)
        {
            self.record.rate_limit = Some(RateLimitOutcome { limited: true, bucket, limit: 0, remaining: 0 });
        }
    }

    /// A stream ended by Cordon after it started (a budget cut): the reason, status unchanged.
    pub fn ended(&mut self, code: &'static str) {
        if self.refusal.is_none() {
            self.refusal = Some(code);
        }
    }

    /// The tightest limit that admitted the request: its name, limit and what remained.
    pub fn rate_limit(&mut self, name: &str, limit: u64, remaining: u64) {
        if let Some(bucket) = ident(name) {
            self.record.rate_limit = Some(RateLimitOutcome { limited: false, bucket, limit, remaining });
        }
    }

    /// Token usage the exchange settled on.
    pub fn usage(&mut self, usage: &Usage) {
        self.record.usage = Some(TokenUsage {
            prompt: usage.prompt,
            completion: usage.completion,
            total: usage.prompt.saturating_add(usage.completion),
            source: if usage.reported { UsageSource::Reported } else { UsageSource::Estimated },
        });
    }

    /// The status the app received, when a role saw it.
    pub fn status(&mut self, status: u16) {
        if self.status.is_none() {
            self.status = Some(status);
        }
    }

    /// Redaction outcome counts (direction, detector, action) as the redaction session kept them.
    pub fn redactions(&mut self, outcomes: &BTreeMap<(RedactDirection, Arc<str>, &'static str), u64>) {
        for ((dir, detector, act), n) in outcomes {
            let (Some(detector), Some(act)) = (ident(detector), action(act)) else {
                self.incomplete = true;
                continue;
            };
            if self.record.redactions.add(detector, direction(*dir), act, *n).is_err() {
                self.incomplete = true;
            }
        }
    }

    /// The fail-open paths redaction took (`on_unscannable: pass`), by direction.
    pub fn failed_open(&mut self, paths: &[FailOpen]) {
        for p in paths {
            let name = match p.direction {
                RedactDirection::Request => "on_unscannable_pass:request",
                RedactDirection::Response => "on_unscannable_pass:response",
            };
            self.fail_open(name);
        }
    }

    /// Keyed digests of the content after redaction (request as sent upstream, response as
    /// passed on to the app); `None` where a body was not read whole.
    pub fn digests(&mut self, request: Option<Hash>, response: Option<Hash>) {
        self.record.request_digest = request;
        self.record.response_digest = response;
    }

    /// The rate-limit service could not answer and `on_unavailable: allow` let the request
    /// through unmetered by its fleet-wide limits.
    pub fn rate_limit_failed_open(&mut self) {
        self.fail_open("rate_limit_unavailable:allow");
    }

    /// Marks that a role could not contribute its part (evicted, or bounds exceeded).
    pub fn mark_incomplete(&mut self) {
        self.incomplete = true;
    }

    fn fail_open(&mut self, name: &'static str) {
        if self.record.fail_open.insert(Ident::escaped(name)).is_err() {
            self.incomplete = true;
        }
    }

    /// The finished record. Decision: refused if any role refused (its code), else a failure
    /// if no response reached the app (`client_abort`) or the upstream answered 5xx
    /// (`upstream_error`), else allowed (`ok`).
    pub fn finish(mut self, end: Ending) -> AuditRecord {
        if self.incomplete {
            self.fail_open("audit_record_incomplete");
        }
        let status = self.status.or(end.status);
        let (decision, reason) = match (self.refusal, status) {
            (Some(code), _) => (Decision::Refuse, code),
            (None, None) => (Decision::Fail, "client_abort"),
            (None, Some(s)) if s >= 500 => (Decision::Fail, "upstream_error"),
            (None, Some(_)) => (Decision::Allow, "ok"),
        };
        let mut r = self.record;
        r.decision = decision;
        r.reason = Ident::escaped(reason);
        r.status = status;
        r.duration_ms = end.end_ms.saturating_sub(self.started_ms);
        r.bytes_in = end.bytes_in;
        r.bytes_out = end.bytes_out;
        r
    }
}

#[cfg(test)]
mod tests;
