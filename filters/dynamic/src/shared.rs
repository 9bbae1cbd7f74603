//! One filter configuration, shared by every worker: the static policy compiled once, the JWT
//! cache, and the decision counters (Envoy only lets a module define metrics while the
//! configuration is created).
//!
//! A configuration is immutable apart from the JWT cache: Envoy replaces the whole
//! configuration on a config change, and a stream keeps the `Arc` of the policy it started under,
//! so **a request runs under one policy from start to end**, as in the wasm adapter.

use crate::abi::{self, ConfigHost, LogLevel, Stream};
use cordon_core::config::FilterConfig;
use cordon_core::identity::jwt::TokenCache;
use cordon_core::{CompiledPolicy, Policy, PolicyError, Refusal};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

/// Static policies compiled in this process: the document, whether the copy has a redaction
/// engine, the copy. The roles of one chain (`cordon.identity`, `cordon.redact`) and the
/// listeners of one Envoy usually carry the same policy and share one compiled copy (its
/// redaction engine is most of it, and building it twice also left twice its transient memory in
/// Envoy's allocator). Weak: a copy goes when the last configuration using it is destroyed.
type Compiled = Vec<(Policy, bool, Weak<CompiledPolicy>)>;
static COMPILED: Mutex<Compiled> = Mutex::new(Vec::new());

/// `policy` compiled for a role that redacts (`redacts`) or not, or a live copy already compiled
/// from an equal document that serves it. A role that never redacts does not build the
/// redaction engine of a policy without a `redaction` section
/// (`CompiledPolicy::compile_without_redaction`). Secrets come from this process's environment,
/// the same for every configuration, so an equal document compiles to an equal policy.
fn compile_shared(policy: &Policy, redacts: bool) -> Result<Arc<CompiledPolicy>, PolicyError> {
    let mut cache = COMPILED.lock().unwrap_or_else(|p| p.into_inner());
    cache.retain(|(_, _, weak)| weak.strong_count() > 0);
    let serves = |doc: &Policy, engine: bool| doc == policy && (engine || !redacts);
    if let Some(live) = cache.iter().find(|(doc, engine, _)| serves(doc, *engine)).and_then(|(_, _, weak)| weak.upgrade()) {
        return Ok(live);
    }
    let compiled = Arc::new(if redacts {
        CompiledPolicy::compile(policy, &secret)?
    } else {
        CompiledPolicy::compile_without_redaction(policy, &secret)?
    });
    let engine = redacts || policy.redaction.is_some();
    cache.push((policy.clone(), engine, Arc::downgrade(&compiled)));
    Ok(compiled)
}

pub struct Shared {
    /// The static policy, if the configuration has one. A policy pushed by the control plane
    /// (`crate::policy_stream`) wins over it, as in the wasm build; with neither, requests get
    /// 503 `policy_unavailable`.
    static_policy: Option<Arc<CompiledPolicy>>,
    /// Verified JWTs, shared by the workers (the wasm build keeps one per worker VM), with the
    /// digest of the policy they were verified under: a cache belongs to one policy.
    tokens: Mutex<(String, TokenCache)>,
    /// Counter ids by decision code: `decision_<code>` under the metrics namespace, so with
    /// `metrics_namespace: cordon` Prometheus shows `envoy_cordon_decision_<code>` (the wasm
    /// build's `cordon_decision_<code>`, with Envoy's prefix).
    decisions: HashMap<&'static str, usize>,
    /// `ratelimit_evictions` under the metrics namespace.
    evictions: Option<usize>,
    /// `ratelimit_fail_open`: fleet-limited requests let through unmetered (`on_unavailable: allow`).
    fail_open: Option<usize>,
    /// `redaction_<direction>_<detector>_<action>` counter ids (redact and gateway roles), defined up
    /// front for every detector of the policy: Envoy lets a module define metrics only while
    /// the configuration is created.
    redactions: HashMap<String, usize>,
    /// Fleet token settlements on their way to the rate-limit service (see `crate::fleet`).
    pub settlements: crate::fleet::Settlements,
}

/// What a redaction outcome can be counted as (`redact` actions, plus `pass` for unscannable).
const REDACTION_ACTIONS: &[&str] = &["allow", "mask", "redact", "pseudonymize", "block", "pass"];

fn secret(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

impl Shared {
    /// Parses the configuration (the wasm plugin's JSON), compiles its policy and defines the
    /// counters. An error rejects the configuration in Envoy.
    pub fn configure(host: &ConfigHost, raw: &[u8], role: &str) -> Result<Self, String> {
        let config = FilterConfig::from_json(raw).map_err(|e| e.to_string())?;
        // Check the node key before any thread starts, so a rejected configuration leaves none.
        if let Some(audit) = &config.audit {
            audit.signer(&secret).map_err(|e| format!("audit: {e}"))?;
        }
        if let Some(cp) = &config.control_plane {
            crate::policy_stream::ensure_started(cp).map_err(|e| format!("control_plane: {e}"))?;
        }
        match (&config.audit, &config.control_plane) {
            (Some(audit), Some(cp)) => {
                let dialer = crate::policy_stream::Dialer::new(cp)?;
                crate::audit_stream::ensure_started(audit, dialer, &crate::policy_stream::node_id(cp))
                    .map_err(|e| format!("audit: {e}"))?;
            }
            (Some(_), None) => return Err("audit needs a control_plane section: records are shipped to the control plane".into()),
            _ => {}
        }
        let policy = match &config.policy {
            None if config.control_plane.is_some() => {
                abi::log(
                    LogLevel::Info,
                    "cordon: no static policy; waiting for the control plane (requests get 503 policy_unavailable until then)",
                );
                None
            }
            None => {
                abi::log(
                    LogLevel::Info,
                    "cordon: no static policy; requests get 503 policy_unavailable unless a control_plane section in this Envoy pushes one",
                );
                None
            }
            Some(p) => {
                // Only the identity role works without a redaction engine.
                let compiled = compile_shared(p, role != crate::ROLE_IDENTITY).map_err(|e| format!("invalid policy: {e}"))?;
                for name in compiled.missing_secrets() {
                    abi::log(
                        LogLevel::Error,
                        &format!(
                            "cordon: runtime secret '{name}' is not set; requests to its upstream get 503 upstream_credential_unavailable"
                        ),
                    );
                }
                if let Err(e) = compiled.rate_limits().prepare(&crate::counters::ProcessStore) {
                    abi::log(LogLevel::Error, &format!("cordon: rate limits: could not create counters: {e}"));
                }
                abi::log(LogLevel::Info, &format!("{role} loaded static policy {}", compiled.digest().get(..16).unwrap_or_default()));
                Some(compiled)
            }
        };
        let mut decisions = HashMap::new();
        for code in std::iter::once("allowed").chain(Refusal::all_codes().iter().copied()) {
            if let Some(id) = host.define_counter(&format!("decision_{code}")) {
                decisions.insert(code, id);
            }
        }
        let evictions = host.define_counter("ratelimit_evictions");
        let fail_open = host.define_counter("ratelimit_fail_open");
        let mut redactions = HashMap::new();
        if (role == crate::ROLE_REDACT || role == crate::ROLE_GATEWAY)
            && let Some(engine) = policy.as_ref().and_then(|p| p.redaction().engine().ok())
        {
            host.set_gauge("redaction_holdback_bound_bytes", engine.holdback_bound() as u64);
            let detectors: Vec<String> = engine.detector_names().iter().map(|d| d.to_string()).chain(["unscannable".to_owned()]).collect();
            for direction in ["request", "response"] {
                for detector in &detectors {
                    for action in REDACTION_ACTIONS {
                        let name = format!("redaction_{direction}_{detector}_{action}");
                        if let Some(id) = host.define_counter(&name) {
                            redactions.insert(name, id);
                        }
                    }
                }
            }
        }
        Ok(Self {
            static_policy: policy,
            tokens: Mutex::new((String::new(), TokenCache::new(config.token_cache_size))),
            decisions,
            evictions,
            fail_open,
            redactions,
            settlements: crate::fleet::Settlements::new(host.handle()),
        })
    }

    /// The policy a request starting now runs under: the one the control plane pushed, else
    /// the static one. One atomic load (see `policy_stream::current`).
    pub fn policy(&self) -> Option<Arc<CompiledPolicy>> {
        crate::policy_stream::current().map(|p| p.policy.clone()).or_else(|| self.static_policy.clone())
    }

    /// How an audit record names `policy`: the pushed bundle's version and SHA-256, or
    /// `static` and the document's digest.
    pub fn policy_ref(&self, policy: &Arc<CompiledPolicy>) -> (String, String) {
        match crate::policy_stream::current() {
            Some(p) if Arc::ptr_eq(&p.policy, policy) => (p.version.clone(), p.sha256.clone()),
            _ => ("static".to_owned(), policy.digest().to_owned()),
        }
    }

    /// Runs `f` with the JWT cache of `policy`; the cache is emptied when the policy changed,
    /// since keys may have rotated. (A poisoned lock only means another stream panicked; the
    /// cache holds verified tokens and is still sound, entries are re-checked on every hit.)
    pub fn with_tokens<T>(&self, policy: &CompiledPolicy, f: impl FnOnce(&mut TokenCache) -> T) -> T {
        let mut guard = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        let (owner, cache) = &mut *guard;
        if owner != policy.digest() {
            cache.clear();
            *owner = policy.digest().to_owned();
        }
        f(cache)
    }

    /// Counts one decision.
    pub fn count(&self, stream: &Stream, code: &str) {
        if let Some(id) = self.decisions.get(code) {
            stream.increment_counter(*id, 1);
        }
    }

    /// Counts one redaction outcome (`redaction_<direction>_<detector>_<action>`).
    pub fn count_redaction(&self, stream: &Stream, direction: &str, detector: &str, action: &str) {
        if let Some(id) = self.redactions.get(&format!("redaction_{direction}_{detector}_{action}")) {
            stream.increment_counter(*id, 1);
        }
    }

    /// Counts rate-limit counters evicted to admit a request.
    pub fn count_evictions(&self, stream: &Stream, n: usize) {
        if let (Some(id), true) = (self.evictions, n > 0) {
            stream.increment_counter(id, n as u64);
        }
    }

    /// Counts one request admitted without its fleet limits (`on_unavailable: allow`).
    pub fn count_fail_open(&self, stream: &Stream) {
        if let Some(id) = self.fail_open {
            stream.increment_counter(id, 1);
        }
    }
}

/// Sends `refusal` as the local reply: its status, the OpenAI-shaped body, `x-cordon-error` and
/// any headers of its own (`retry-after`, `x-cordon-limit`).
pub fn send_refusal(stream: &Stream, refusal: &Refusal) {
    let own = refusal.headers();
    let mut headers = vec![("content-type", "application/json"), ("x-cordon-error", refusal.code())];
    headers.extend(own.iter().map(|(k, v)| (*k, v.as_str())));
    stream.send_response(refusal.status(), &headers, &refusal.body(), refusal.code());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(team: &str) -> Policy {
        let doc = serde_json::json!({
            "identity": {"api_keys": [{"id": "k", "sha256": "00".repeat(32), "principal": {"user": "u", "team": team}}]},
        });
        Policy::from_json(doc.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn a_role_that_redacts_gets_an_engine_even_after_identity_compiled_the_same_policy_without_one() {
        let p = policy("compile-order");
        let identity = compile_shared(&p, false).unwrap();
        assert!(identity.redaction().engine().is_err());
        let redact = compile_shared(&p, true).unwrap();
        assert!(redact.redaction().engine().is_ok());
        // Equal documents share a live copy: identity may take the one with an engine.
        assert!(Arc::ptr_eq(&compile_shared(&p, true).unwrap(), &redact));
        let again = compile_shared(&p, false).unwrap();
        assert!(Arc::ptr_eq(&again, &identity) || Arc::ptr_eq(&again, &redact));
        // Another document is never served a copy of this one.
        let other = compile_shared(&policy("another"), true).unwrap();
        assert!(!Arc::ptr_eq(&other, &redact));
        assert_ne!(other.digest(), redact.digest());
    }
}
