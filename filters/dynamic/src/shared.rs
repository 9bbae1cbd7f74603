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
use cordon_core::{CompiledPolicy, Refusal};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub struct Shared {
    /// The static policy; `None` refuses every request with 503 `policy_unavailable` (the
    /// policy stream from the control plane is not wired into the native module yet).
    pub policy: Option<Arc<CompiledPolicy>>,
    /// Verified JWTs, shared by the workers (the wasm build keeps one per worker VM).
    tokens: Mutex<TokenCache>,
    /// Counter ids by decision code: `decision_<code>` under the metrics namespace, so with
    /// `metrics_namespace: cordon` Prometheus shows `envoy_cordon_decision_<code>` (the wasm
    /// build's `cordon_decision_<code>`, with Envoy's prefix).
    decisions: HashMap<&'static str, usize>,
    /// `ratelimit_evictions` under the metrics namespace.
    evictions: Option<usize>,
    /// `ratelimit_fail_open`: fleet-limited requests let through unmetered (`on_unavailable: allow`).
    fail_open: Option<usize>,
    /// `redaction_<direction>_<detector>_<action>` counter ids (redact role only), defined up
    /// front for every detector of the policy: Envoy lets a module define metrics only while
    /// the configuration is created.
    redactions: HashMap<String, usize>,
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
        let policy = match &config.policy {
            None => {
                abi::log(LogLevel::Info, "cordon: no static policy; requests get 503 policy_unavailable");
                None
            }
            Some(p) => {
                let compiled = CompiledPolicy::compile(p, &secret).map_err(|e| format!("invalid policy: {e}"))?;
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
                Some(Arc::new(compiled))
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
        if role == crate::ROLE_REDACT
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
        Ok(Self { policy, tokens: Mutex::new(TokenCache::new(config.token_cache_size)), decisions, evictions, fail_open, redactions })
    }

    /// Runs `f` with the JWT cache (a poisoned lock only means another stream panicked; the
    /// cache holds verified tokens and is still sound, entries are re-checked on every hit).
    pub fn with_tokens<T>(&self, f: impl FnOnce(&mut TokenCache) -> T) -> T {
        let mut guard = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
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
