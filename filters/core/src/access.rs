//! Model access: which principals may use which models, and the filtered `/v1/models` list.

use crate::policy::{CompiledPolicy, Principal, PrincipalSelector};
use crate::refusal::Refusal;
use serde_json::Value;

fn selects(sel: &PrincipalSelector, p: &Principal) -> bool {
    let field = |pat: &Option<crate::glob::Glob>, val: &Option<String>| match pat {
        None => true,
        Some(g) => val.as_deref().is_some_and(|v| g.matches(v)),
    };
    field(&sel.user, &p.user) && field(&sel.team, &p.team) && field(&sel.app, &p.app)
}

/// Whether `principal` may use `model`: some rule that selects the principal allows it.
pub fn is_allowed(policy: &CompiledPolicy, principal: &Principal, model: &str) -> bool {
    policy.models.iter().filter(|r| selects(&r.selector, principal)).any(|r| r.allow.iter().any(|g| g.matches(model)))
}

/// Longest model name accepted, in bytes; real model ids (with provider prefixes, ARNs,
/// deployment names) are far shorter.
pub const MAX_MODEL_NAME_BYTES: usize = 256;

/// A model name comes from the caller and ends up in headers, logs, metric labels and audit
/// records: it must be 1..=[`MAX_MODEL_NAME_BYTES`] bytes of printable ASCII without spaces.
/// Anything else (a control character, a NUL that a glob would skip over, a bidi override) is
/// refused rather than matched against the allowlist.
pub fn check_model_name(model: &str) -> Result<(), Refusal> {
    let why = if model.is_empty() {
        "it is empty".to_owned()
    } else if model.len() > MAX_MODEL_NAME_BYTES {
        format!("it is {} bytes long, the limit is {MAX_MODEL_NAME_BYTES}", model.len())
    } else if let Some((i, c)) = model.char_indices().find(|(_, c)| !c.is_ascii_graphic()) {
        format!("character U+{:04X} at byte {i} is not printable ASCII", u32::from(c))
    } else {
        return Ok(());
    };
    Err(Refusal::InvalidModelName(why))
}

/// Refuses with `invalid_model_name` for a name [`check_model_name`] rejects, and with
/// `model_not_allowed` unless the principal may use `model`.
pub fn authorize(policy: &CompiledPolicy, principal: &Principal, model: &str) -> Result<(), Refusal> {
    check_model_name(model)?;
    if is_allowed(policy, principal, model) { Ok(()) } else { Err(Refusal::ModelNotAllowed { model: model.to_owned() }) }
}

/// Rewrites an OpenAI (`data[].id`) or Anthropic (`data[].id`) model list to the models the
/// principal may use. A body that is not such a list is refused rather than passed unfiltered.
pub fn filter_model_list(policy: &CompiledPolicy, principal: &Principal, body: &[u8]) -> Result<Vec<u8>, Refusal> {
    let mut doc: Value = serde_json::from_slice(body).map_err(|_| Refusal::UpstreamResponseInvalid)?;
    let data = doc.get_mut("data").and_then(Value::as_array_mut).ok_or(Refusal::UpstreamResponseInvalid)?;
    data.retain(|m| m.get("id").and_then(Value::as_str).is_some_and(|id| is_allowed(policy, principal, id)));
    // Anthropic's list carries cursors that would point at hidden models.
    if let Some(obj) = doc.as_object_mut() {
        for cursor in ["first_id", "last_id"] {
            if obj.contains_key(cursor) {
                let v = obj.get("data").and_then(Value::as_array).and_then(|d| {
                    let item = if cursor == "first_id" { d.first() } else { d.last() };
                    item.and_then(|m| m.get("id")).cloned()
                });
                obj.insert(cursor.into(), v.unwrap_or(Value::Null));
            }
        }
    }
    serde_json::to_vec(&doc).map_err(|_| Refusal::UpstreamResponseInvalid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Policy;

    fn policy() -> CompiledPolicy {
        let p = Policy::from_json(
            br#"{"models":[
                {"match":{"team":"research"},"allow":["gpt-4o*","claude-*"]},
                {"match":{"team":"support","app":"bot"},"allow":["gpt-4o-mini"]},
                {"allow":["text-embedding-3-small"]}
            ]}"#,
        )
        .unwrap();
        CompiledPolicy::compile(&p, &|_: &str| None).unwrap()
    }

    fn who(team: &str, app: Option<&str>) -> Principal {
        Principal { user: Some("u".into()), team: Some(team.into()), app: app.map(Into::into) }
    }

    #[test]
    fn model_names_with_control_characters_or_unbounded_length_are_refused() {
        let p = policy();
        let research = who("research", None);
        // Matches `gpt-4o*` as a string; must never reach the allowlist.
        for bad in ["gpt-4o-mini\u{0}admin", "gpt-4o\nX-Injected: 1", "gpt-4o\u{202e}", "gpt-4o mini", "gpt-4o\t", ""] {
            let err = authorize(&p, &research, bad).unwrap_err();
            assert_eq!((err.code(), err.status()), ("invalid_model_name", 400), "{bad:?}");
            assert!(!err.message().contains(bad) || bad.is_empty(), "the name is not echoed back");
        }
        let long = format!("gpt-4o{}", "x".repeat(MAX_MODEL_NAME_BYTES));
        assert!(authorize(&p, &research, &long).unwrap_err().message().contains("bytes long"));
        assert!(authorize(&p, &research, &long[..MAX_MODEL_NAME_BYTES]).is_ok());
        for good in ["gpt-4o-2024-08-06", "gpt-4o/ft:org:x:abc", "gpt-4o@latest"] {
            assert!(authorize(&p, &research, good).is_ok(), "{good}");
        }
    }

    #[test]
    fn allowlists_by_team_and_app_with_wildcards() {
        let p = policy();
        assert!(is_allowed(&p, &who("research", None), "gpt-4o-2024-08-06"));
        assert!(is_allowed(&p, &who("research", None), "claude-3-5-sonnet"));
        assert!(!is_allowed(&p, &who("research", None), "o1-preview"));
        assert!(is_allowed(&p, &who("support", Some("bot")), "gpt-4o-mini"));
        assert!(!is_allowed(&p, &who("support", None), "gpt-4o-mini"), "selector needs app=bot");
        assert!(is_allowed(&p, &who("anyone", None), "text-embedding-3-small"), "empty selector applies to all");
        assert_eq!(authorize(&p, &who("support", None), "gpt-4o"), Err(Refusal::ModelNotAllowed { model: "gpt-4o".into() }));
    }

    #[test]
    fn model_list_keeps_only_allowed_models() {
        let p = policy();
        let body = br#"{"object":"list","data":[{"id":"gpt-4o","object":"model"},{"id":"o1","object":"model"},{"id":"text-embedding-3-small","object":"model"}]}"#;
        let out: Value = serde_json::from_slice(&filter_model_list(&p, &who("research", None), body).unwrap()).unwrap();
        let ids: Vec<_> = out["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["gpt-4o", "text-embedding-3-small"]);
        assert_eq!(out["object"], "list");
    }

    #[test]
    fn model_list_that_is_not_a_list_is_refused() {
        let p = policy();
        assert_eq!(filter_model_list(&p, &who("research", None), b"<html>"), Err(Refusal::UpstreamResponseInvalid));
        assert_eq!(filter_model_list(&p, &who("research", None), br#"{"object":"list"}"#), Err(Refusal::UpstreamResponseInvalid));
    }
}
