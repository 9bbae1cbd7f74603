//! Request and non-streamed response bodies: text fields rewritten in place, JSON stays valid,
//! other bytes unchanged, block and malformed bodies.

use cordon_redact::json::JsonVerdict;
use cordon_redact::{Action, Engine, JsonError, RedactConfig, Rule, redact_request, redact_response};
use serde_json::Value;
use std::sync::Arc;

fn engine() -> Arc<Engine> {
    Arc::new(Engine::default_set(b"k").unwrap())
}

fn fwd(v: JsonVerdict) -> (String, bool, usize) {
    match v {
        JsonVerdict::Forward { body, changed, detections } => (String::from_utf8(body).unwrap(), changed, detections.len()),
        JsonVerdict::Block { .. } => panic!("unexpected block"),
    }
}

#[test]
fn openai_chat_request() {
    let body = r#"{"model":"gpt-4o","messages":[{"role":"system","content":"be nice"},{"role":"user","content":[{"type":"text","text":"mail john.doe@example.com"},{"type":"image_url","image_url":{"url":"https://x/a@b.com"}}]},{"role":"tool","tool_call_id":"c","content":"card 4242 4242 4242 4242"},{"role":"user","content":"key AKIA\u0049OSFODNN7EXAMPLE"}],"temperature":0.5}"#;
    let (out, changed, n) = fwd(redact_request(&engine(), body.as_bytes()).unwrap());
    assert!(changed);
    assert_eq!(n, 3);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["messages"][1]["content"][0]["text"], "mail [EMAIL]");
    assert_eq!(v["messages"][1]["content"][1]["image_url"]["url"], "https://x/a@b.com");
    assert_eq!(v["messages"][2]["content"], "card [CARD]");
    assert_eq!(v["messages"][3]["content"], "key [AWS_ACCESS_KEY]");
    // Bytes outside the rewritten strings are unchanged (key order, number format).
    assert!(out.starts_with(r#"{"model":"gpt-4o","messages":[{"role":"system","content":"be nice"}"#));
    assert!(out.ends_with(r#""temperature":0.5}"#));
}

#[test]
fn responses_embeddings_and_anthropic_requests() {
    let cases = [
        (r#"{"model":"m","instructions":"x","input":"call +14155552671"}"#, "/input", "call [PHONE]"),
        (
            r#"{"model":"m","input":[{"role":"user","content":[{"type":"input_text","text":"ip 10.0.0.1"}]}]}"#,
            "/input/0/content/0/text",
            "ip [IPV4]",
        ),
        (
            r#"{"model":"m","input":[{"type":"function_call_output","call_id":"c","output":"ssn 123-45-6789"}]}"#,
            "/input/0/output",
            "ssn [SSN]",
        ),
        (r#"{"model":"e","input":["a","mail a@b.io"]}"#, "/input/1", "mail [EMAIL]"),
        (r#"{"model":"e","input":[1,2,3]}"#, "/input/0", ""),
        (
            r#"{"model":"c","system":[{"type":"text","text":"sk-ant-api03-abcdefghijklmnopqrstuvwxyz"}],"messages":[]}"#,
            "/system/0/text",
            "[ANTHROPIC_KEY]",
        ),
        (
            r#"{"model":"c","messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":"DE89 3704 0044 0532 0130 00"}]}]}"#,
            "/messages/0/content/0/content",
            "[IBAN]",
        ),
    ];
    for (body, ptr, want) in cases {
        let (out, _, _) = fwd(redact_request(&engine(), body.as_bytes()).unwrap());
        let v: Value = serde_json::from_str(&out).unwrap();
        if want.is_empty() {
            assert_eq!(out, body);
        } else {
            assert_eq!(v.pointer(ptr).and_then(Value::as_str), Some(want), "{body}");
        }
    }
}

#[test]
fn response_bodies() {
    let cases = [
        (
            r#"{"id":"x","choices":[{"index":0,"message":{"role":"assistant","content":"write to a@b.io"},"finish_reason":"stop"}],"usage":{"total_tokens":3}}"#,
            "/choices/0/message/content",
            "write to [EMAIL]",
        ),
        (
            r#"{"output":[{"type":"message","content":[{"type":"output_text","text":"key ghp_abcdefghijklmnopqrstuvwxyz0123456789"}]}]}"#,
            "/output/0/content/0/text",
            "key [GITHUB_TOKEN]",
        ),
        (
            r#"{"content":[{"type":"text","text":"ip 2001:db8::8a2e:370:7334"},{"type":"tool_use","input":{"to":"a@b.io","n":1}}]}"#,
            "/content/1/input/to",
            "[EMAIL]",
        ),
    ];
    for (body, ptr, want) in cases {
        let (out, changed, _) = fwd(redact_response(&engine(), body.as_bytes()).unwrap());
        assert!(changed);
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v.pointer(ptr).and_then(Value::as_str), Some(want), "{body}");
    }
}

#[test]
fn block_and_malformed() {
    let mut cfg = RedactConfig::default();
    cfg.detectors.insert("card".into(), Rule { request: Action::Block, ..Rule::default() });
    let e = Arc::new(Engine::new(&cfg, b"k").unwrap());
    let body = r#"{"messages":[{"role":"user","content":"4242424242424242"}]}"#;
    assert!(matches!(redact_request(&e, body.as_bytes()).unwrap(), JsonVerdict::Block { .. }));
    // Response direction still redacts.
    let body = r#"{"choices":[{"message":{"content":"4242424242424242"}}]}"#;
    assert!(matches!(redact_response(&e, body.as_bytes()).unwrap(), JsonVerdict::Forward { changed: true, .. }));
    for bad in [&b"{\"messages\":["[..], b"not json", b"{\"a\":\"\xff\"}", br#"{"messages":[{"content":"\ud800"}]}"#] {
        assert!(matches!(redact_request(&engine(), bad), Err(JsonError::Malformed(_))), "{:?}", String::from_utf8_lossy(bad));
    }
}

#[test]
fn escapes_are_decoded_and_output_re_encoded() {
    let body = r#"{"messages":[{"role":"user","content":"\"quote\" \u006aohn\u0040example.com\n\u00e9"}]}"#;
    let (out, _, _) = fwd(redact_request(&engine(), body.as_bytes()).unwrap());
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["messages"][0]["content"], "\"quote\" [EMAIL]\né");
}

/// Found by the JSON fuzz target: a lone surrogate escape in a field the response selector does
/// not read made a body that is not JSON pass through as "unchanged". It must be refused.
#[test]
fn lone_surrogate_anywhere_is_malformed() {
    let e = Arc::new(Engine::default_set(b"k").unwrap());
    let body = br#"{"choices":[{"message":{"content":"hi"}}],"note":"\udddd"}"#;
    assert!(serde_json::from_slice::<serde_json::Value>(body).is_err());
    assert!(matches!(redact_response(&e, body), Err(JsonError::Malformed(_))));
    assert!(matches!(redact_request(&e, body), Err(JsonError::Malformed(_))));
}

/// The selectors judge the whole path, however deep: a prefix selector (`content/N/input/...`)
/// still matches beyond the depth the exact ones reach, and an exact one never matches a path
/// that merely starts like it.
#[test]
fn text_selectors_judge_deep_paths_whole() {
    use cordon_redact::json::{is_request_text, is_response_text, walk_strings};
    let selected = |body: &str, select: fn(&[cordon_redact::json::Seg]) -> bool| {
        let mut out = Vec::new();
        walk_strings(body.as_bytes(), |p, r| {
            if select(p) {
                out.push(body[r].trim_matches('"').to_owned());
            }
        })
        .unwrap();
        out
    };
    let deep = r#"{"content":[{"type":"tool_use","input":{"a":{"b":{"c":{"d":{"e":{"f":"deep"}}}}},"g":"shallow"}}]}"#;
    assert_eq!(selected(deep, is_response_text), ["deep", "shallow"]);
    let request = r#"{"messages":[{"content":[{"content":[{"text":"seven","x":{"text":"eight"}}]}]}],"system":{"text":"no"}}"#;
    assert_eq!(selected(request, is_request_text), ["seven"]);
    let nested =
        r#"{"prompt":[["nested"],"flat"],"messages":[{"content":"c","tool_calls":[{"function":{"arguments":"args","name":"n"}}]}]}"#;
    assert_eq!(selected(nested, is_request_text), ["flat", "c", "args"]);
}
