//! Redaction policy: which detectors run with which actions (the `cordon-redact` engine's
//! configuration), what to do with a body that cannot be scanned, and where the pseudonymisation
//! key comes from. Compiled once per policy into a shared engine.

pub mod session;

use crate::policy::{PolicyError, SecretSource};
use crate::refusal::Refusal;
use cordon_redact::{Action, Engine, RedactConfig, SseFormat};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// What happens to a body Cordon cannot scan (malformed JSON, broken SSE, unknown encoding).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnUnscannable {
    /// Refuse the request, or end the response with an error (the default: fail closed).
    #[default]
    Block,
    /// Forward it unscanned and count it (an explicit, audited fail-open).
    Pass,
}

/// The `redaction` section of a policy.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedactionPolicy {
    /// Detector rules, custom detectors and the holdback bound.
    #[serde(default)]
    pub rules: RedactConfig,
    /// What to do with bodies that cannot be scanned.
    #[serde(default)]
    pub on_unscannable: OnUnscannable,
    /// Runtime secret (environment variable) holding the pseudonymisation key; required when
    /// any rule uses `pseudonymize`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pseudonym_secret_env: Option<String>,
}

/// A compiled redaction policy.
#[derive(Debug)]
pub struct CompiledRedaction {
    engine: Option<Arc<Engine>>,
    /// What to do with bodies that cannot be scanned.
    pub on_unscannable: OnUnscannable,
    missing_secret: Option<String>,
}

fn uses_pseudonymize(cfg: &RedactConfig) -> bool {
    let rules = cfg.detectors.values().chain(cfg.custom_regexes.iter().map(|c| &c.rule)).chain(cfg.keyword_lists.iter().map(|k| &k.rule));
    rules.into_iter().any(|r| r.request == Action::Pseudonymize || r.response == Action::Pseudonymize)
}

impl CompiledRedaction {
    /// Compiles `policy` (the default detector set when absent).
    pub fn compile(policy: Option<&RedactionPolicy>, secrets: &dyn SecretSource) -> Result<Self, PolicyError> {
        let default = RedactionPolicy::default();
        let p = policy.unwrap_or(&default);
        let needs_key = uses_pseudonymize(&p.rules);
        if needs_key && p.pseudonym_secret_env.as_deref().is_none_or(str::is_empty) {
            return Err(PolicyError::invalid(
                "redaction.pseudonym_secret_env",
                "a rule uses pseudonymize: name the runtime secret holding its key",
            ));
        }
        let key = match (&p.pseudonym_secret_env, needs_key) {
            (Some(name), true) => secrets.secret(name).filter(|k| k.len() >= 16),
            _ => Some(String::new()),
        };
        let engine = match &key {
            Some(k) => {
                Some(Arc::new(Engine::new(&p.rules, k.as_bytes()).map_err(|e| PolicyError::invalid("redaction.rules", e.to_string()))?))
            }
            // Validate the rules even when the key is missing at run time.
            None => {
                Engine::new(&p.rules, b"validation-only-key").map_err(|e| PolicyError::invalid("redaction.rules", e.to_string()))?;
                None
            }
        };
        let missing_secret = if key.is_none() { p.pseudonym_secret_env.clone() } else { None };
        Ok(Self { engine, on_unscannable: p.on_unscannable, missing_secret })
    }

    /// No engine, for a role that never redacts (see `CompiledPolicy::compile_without_redaction`):
    /// [`CompiledRedaction::engine`] answers 503, as for a missing key.
    pub(crate) fn without_engine() -> Self {
        Self { engine: None, on_unscannable: OnUnscannable::default(), missing_secret: None }
    }

    /// The engine, or 503 when its pseudonymisation key is missing (never a guessable key), or
    /// when the policy was compiled for a role that never redacts.
    pub fn engine(&self) -> Result<&Arc<Engine>, Refusal> {
        self.engine.as_ref().ok_or(Refusal::RedactionUnavailable)
    }

    /// The pseudonymisation secret the runtime lacks (at least 16 bytes are required), if any.
    pub fn missing_secret(&self) -> Option<&str> {
        self.missing_secret.as_deref()
    }
}

/// Which provider stream format a request path answers with.
pub fn sse_format(path: &str) -> Option<SseFormat> {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    match path {
        "/v1/chat/completions" => Some(SseFormat::OpenAiChat),
        "/v1/responses" => Some(SseFormat::OpenAiResponses),
        "/v1/messages" => Some(SseFormat::Anthropic),
        _ => None,
    }
}

/// An error event in the provider's own stream format, to end a stream Cordon must stop.
pub fn stream_error_event(format: Option<SseFormat>, refusal: &Refusal) -> Vec<u8> {
    let message = refusal.message();
    let event = match format {
        Some(SseFormat::Anthropic) => {
            let data = serde_json::json!({"type": "error", "error": {"type": "api_error", "message": message, "code": refusal.code()}});
            format!("event: error\ndata: {data}\n\n")
        }
        Some(SseFormat::OpenAiResponses) => {
            let data = serde_json::json!({"type": "error", "code": refusal.code(), "message": message, "param": null});
            format!("event: error\ndata: {data}\n\n")
        }
        _ => {
            let data =
                serde_json::json!({"error": {"message": message, "type": refusal.error_type(), "code": refusal.code(), "param": null}});
            format!("data: {data}\n\n")
        }
    };
    event.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(json: &str, secrets: &dyn SecretSource) -> Result<CompiledRedaction, PolicyError> {
        let p: RedactionPolicy = serde_json::from_str(json).unwrap();
        CompiledRedaction::compile(Some(&p), secrets)
    }

    #[test]
    fn a_role_that_never_redacts_builds_no_engine_and_fails_closed_if_asked_for_one() {
        use crate::policy::{CompiledPolicy, Policy};
        let secrets = |name: &str| (name == "OPENAI_API_KEY").then(|| "sk-provider-secret".to_string());
        let doc = crate::testkit::policy_json();
        assert!(doc.get("redaction").is_none());
        let p = Policy::from_json(doc.to_string().as_bytes()).unwrap();
        let full = CompiledPolicy::compile(&p, &secrets).unwrap();
        let light = CompiledPolicy::compile_without_redaction(&p, &secrets).unwrap();
        assert!(full.redaction().engine().is_ok());
        assert_eq!(light.redaction().engine().err(), Some(Refusal::RedactionUnavailable));
        assert_eq!(light.digest(), full.digest());
        // A redaction section is still compiled, so an invalid one is refused by either role.
        let mut with_section = doc.clone();
        with_section["redaction"] = serde_json::json!({"rules": {"detectors": {"no_such_detector": {}}}});
        let p = Policy::from_json(with_section.to_string().as_bytes()).unwrap();
        assert!(CompiledPolicy::compile(&p, &secrets).is_err());
        assert!(CompiledPolicy::compile_without_redaction(&p, &secrets).is_err());
        with_section["redaction"] = serde_json::json!({"on_unscannable": "pass"});
        let p = Policy::from_json(with_section.to_string().as_bytes()).unwrap();
        assert!(CompiledPolicy::compile_without_redaction(&p, &secrets).unwrap().redaction().engine().is_ok());
    }

    #[test]
    fn default_set_compiles_without_secrets() {
        let c = CompiledRedaction::compile(None, &|_: &str| None).unwrap();
        assert!(c.engine().is_ok());
        assert_eq!(c.on_unscannable, OnUnscannable::Block);
    }

    #[test]
    fn pseudonymize_needs_a_named_secret_and_fails_closed_without_it() {
        let rules = r#"{"rules":{"detectors":{"email":{"request":"pseudonymize"}}}}"#;
        assert_eq!(compile(rules, &|_: &str| None).unwrap_err().path(), "redaction.pseudonym_secret_env");
        let named = r#"{"rules":{"detectors":{"email":{"request":"pseudonymize"}}},"pseudonym_secret_env":"K"}"#;
        let missing = compile(named, &|_: &str| None).unwrap();
        assert_eq!(missing.engine().unwrap_err(), Refusal::RedactionUnavailable);
        assert_eq!(missing.missing_secret(), Some("K"));
        let short = compile(named, &|_: &str| Some("short".into())).unwrap();
        assert!(short.engine().is_err(), "a short key is as good as none");
        let ok = compile(named, &|_: &str| Some("0123456789abcdef0123".into())).unwrap();
        assert!(ok.engine().is_ok());
    }

    #[test]
    fn bad_rules_name_the_section() {
        let err = compile(r#"{"rules":{"detectors":{"nope":{}}}}"#, &|_: &str| None).unwrap_err();
        assert_eq!(err.path(), "redaction.rules");
        assert!(err.to_string().contains("nope"));
    }

    #[test]
    fn unknown_phone_regions_are_named_with_their_field() {
        let err = compile(r#"{"rules":{"phone_regions":["US","gb"]}}"#, &|_: &str| None).unwrap_err();
        assert_eq!(err.path(), "redaction.rules");
        let msg = err.to_string();
        assert!(msg.contains("phone_regions[1]") && msg.contains("`gb`") && msg.contains("upper-case ISO 3166-1"), "{msg}");
        let err = compile(r#"{"rules":{"phone_regions":["DE","DE"]}}"#, &|_: &str| None).unwrap_err();
        assert!(err.to_string().contains("phone_regions[1]"), "{err}");
        compile(r#"{"rules":{"phone_regions":["US","GB","DE","FR","GR","IN"]}}"#, &|_: &str| None).unwrap();
    }

    #[test]
    fn error_events_are_in_the_provider_format() {
        let r = Refusal::UnscannableResponse("broken SSE".into());
        let openai = String::from_utf8(stream_error_event(Some(SseFormat::OpenAiChat), &r)).unwrap();
        assert!(openai.starts_with("data: {\"error\":"), "{openai}");
        let anthropic = String::from_utf8(stream_error_event(Some(SseFormat::Anthropic), &r)).unwrap();
        assert!(anthropic.starts_with("event: error\ndata: {\"type\":\"error\""), "{anthropic}");
        for e in [openai, anthropic] {
            assert!(e.ends_with("\n\n"));
            let data = e.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
            assert!(serde_json::from_str::<serde_json::Value>(data).is_ok());
        }
    }

    #[test]
    fn formats_by_path() {
        assert_eq!(sse_format("/v1/chat/completions?x=1"), Some(SseFormat::OpenAiChat));
        assert_eq!(sse_format("/v1/responses"), Some(SseFormat::OpenAiResponses));
        assert_eq!(sse_format("/v1/messages"), Some(SseFormat::Anthropic));
        assert_eq!(sse_format("/v1/embeddings"), None);
    }
}
