//! docs/policy-reference.md is checked against the real schema: every field the schema has is
//! documented, every JSON example parses and validates, and every refusal code is listed.

use cordon_core::policy::{CompiledPolicy, Policy};
use serde_json::{Value, json};
use std::collections::BTreeSet;

const DOC: &str = include_str!("../../../docs/policy-reference.md");

fn json_blocks() -> Vec<&'static str> {
    DOC.split("```json").skip(1).filter_map(|rest| rest.split("```").next()).collect()
}

/// A policy with every optional field present, so serialising it lists every field name.
fn fully_populated() -> Policy {
    let doc = json!({
        "identity": {
            "api_keys": [{"id": "k", "sha256": "00".repeat(32), "principal": {"user": "u", "team": "t", "app": "a"}, "status": "revoked", "expires_at": 1}],
            "jwt_providers": [{"name": "n", "issuer": "i", "audiences": ["a"], "clock_skew_secs": 1,
                "claims": {"user": "sub", "team": "t", "app": "a"},
                "jwks": {"keys": [{"kty": "RSA", "kid": "k", "alg": "RS256", "crv": "c", "n": "n", "e": "e", "x": "x", "y": "y"}]}}],
            "spiffe": [{"id": "spiffe://x/*", "principal": {"app": "a"}}]
        },
        "routes": [{"name": "r", "path_prefix": "/", "accept": [["api_key"]]}],
        "models": [{"match": {"user": "u", "team": "t", "app": "a"}, "allow": ["m"]}],
        "upstreams": [{"cluster": "c", "secret_env": "E", "header": "h", "prefix": "p"}],
        "limits": {"max_request_body_bytes": 1, "max_model_list_bytes": 1, "max_response_body_bytes": 1},
        "rate_limits": [
            {"name": "r", "match": {"user": "u", "team": "t", "app": "a", "key": "k", "model": "m"}, "by": ["key", "user", "team", "app", "model"],
             "requests": {"limit": 1, "per": "second"}, "slots": 8},
            {"name": "t", "tokens": {"limit": 1, "per": "day", "count": "completion"}, "on_exceed": "cut"},
            {"name": "b", "budget": {"tokens": 1, "per": "month", "count": "total"}},
            {"name": "c", "concurrent": {"limit": 2, "stale_after_s": 60}},
            {"name": "f", "requests": {"limit": 1, "per": "minute"}, "scope": "fleet"}
        ],
        "rate_limit_service": {"cluster": "c", "domain": "d", "timeout_ms": 100, "on_unavailable": "allow", "protocol": "standard"},
        "token_estimate": {"bytes_per_token": 4.0, "default_completion_tokens": 8, "families": [{"model": "m", "bytes_per_token": 3.0}]},
        "audit": {"on_unavailable": "refuse"},
        "redaction": {
            "on_unscannable": "pass", "pseudonym_secret_env": "K",
            "rules": {"max_holdback_bytes": 64, "detectors": {"email": {"enabled": true, "request": "mask", "response": "allow", "mask_keep": 2}},
                "custom_regexes": [{"name": "n", "pattern": "p", "enabled": true, "request": "redact", "response": "redact", "mask_keep": 4}],
                "keyword_lists": [{"name": "n", "words": ["w"], "case_insensitive": true, "whole_word": true, "enabled": true, "request": "redact", "response": "redact", "mask_keep": 4}],
                "phone_regions": ["US"]}
        }
    });
    serde_json::from_value(doc).unwrap()
}

fn field_names(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                out.insert(k.clone());
                field_names(v, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|i| field_names(i, out)),
        _ => {}
    }
}

#[test]
fn every_schema_field_is_documented() {
    let mut names = BTreeSet::new();
    field_names(&serde_json::to_value(fully_populated()).unwrap(), &mut names);
    assert!(names.len() > 30, "the walk found the schema's fields: {names:?}");
    let missing: Vec<_> = names.iter().filter(|n| !DOC.contains(&format!("`{n}`"))).collect();
    assert!(missing.is_empty(), "fields missing from docs/policy-reference.md: {missing:?}");
}

#[test]
fn every_example_parses_and_validates() {
    let blocks = json_blocks();
    assert!(blocks.len() >= 4);
    for block in blocks {
        let policy = Policy::from_json(block.as_bytes()).unwrap_or_else(|e| panic!("{e}\n{block}"));
        CompiledPolicy::compile(&policy, &|_: &str| None).unwrap_or_else(|e| panic!("{e}\n{block}"));
    }
}

#[test]
fn every_refusal_code_is_documented() {
    for code in cordon_core::Refusal::all_codes() {
        assert!(DOC.contains(&format!("`{code}`")), "refusal code {code} missing from docs/policy-reference.md");
    }
}
