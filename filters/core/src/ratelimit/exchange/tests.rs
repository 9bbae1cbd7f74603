//! One metered exchange from request to end of stream, on an in-memory store and a fixed clock.

use super::*;
use crate::policy::Principal;
use crate::ratelimit::schema::RateLimit;
use crate::ratelimit::store::MemoryStore;
use serde_json::json;

const NOW: u64 = 1_800_000_000_000_000_000;

fn limits(v: serde_json::Value) -> CompiledLimits {
    let rl: Vec<RateLimit> = serde_json::from_value(v).unwrap();
    CompiledLimits::compile(&rl, None).unwrap()
}

fn who(p: &Principal) -> Caller<'_> {
    Caller { principal: p, key_id: Some("k"), model: "gpt-4o" }
}

fn principal() -> Principal {
    Principal { user: Some("u".into()), team: Some("t".into()), app: None }
}

fn chat(stream: bool, include_usage: bool, max_tokens: u64) -> Vec<u8> {
    let mut v = json!({"model": "gpt-4o", "max_tokens": max_tokens, "messages": [{"role": "user", "content": "hi"}]});
    if stream {
        v["stream"] = json!(true);
    }
    if include_usage {
        v["stream_options"] = json!({"include_usage": true});
    }
    v.to_string().into_bytes()
}

fn delta(text: &str) -> String {
    format!("data: {}\n\n", json!({"choices": [{"index": 0, "delta": {"content": text}}]}))
}

fn usage_chunk(p: u64, c: u64) -> String {
    format!("data: {}\n\n", json!({"choices": [], "usage": {"prompt_tokens": p, "completion_tokens": c}}))
}

fn run(x: &mut Exchange, chunks: &[String]) -> String {
    let mut out = String::new();
    for (i, c) in chunks.iter().enumerate() {
        match x.response_chunk(c.as_bytes(), i + 1 == chunks.len()) {
            ChunkStep::Continue => out.push_str(c),
            ChunkStep::Replace(b) => out.push_str(&String::from_utf8(b).unwrap()),
        }
    }
    out
}

fn remaining_tokens(l: &CompiledLimits, store: &MemoryStore) -> String {
    let p = principal();
    let probe = Reservation { prompt: 0, completion: 0, bytes_per_token: 4.0 };
    let a = l.admit(&who(&p), &probe, store, NOW).unwrap();
    a.headers().pairs().into_iter().find(|(k, _)| k == "x-ratelimit-remaining-tokens").map(|(_, v)| v).unwrap()
}

#[test]
fn nothing_is_metered_without_a_matching_limit() {
    let p = principal();
    let store = MemoryStore::new();
    assert!(Exchange::begin(&limits(json!([])), &who(&p), "/v1/chat/completions", b"{}", &store, NOW).unwrap().is_none());
    let other = limits(json!([{"name": "x", "match": {"team": "other"}, "requests": {"limit": 1, "per": "second"}}]));
    assert!(Exchange::begin(&other, &who(&p), "/v1/chat/completions", b"{}", &store, NOW).unwrap().is_none());
    assert!(store.is_empty());
}

#[test]
fn a_request_limit_sets_headers_and_reads_no_body() {
    let l = limits(json!([{"name": "rpm", "requests": {"limit": 10, "per": "minute"}}]));
    let p = principal();
    let store = MemoryStore::new();
    let (mut x, rewritten) = Exchange::begin(&l, &who(&p), "/v1/chat/completions", &chat(true, false, 10), &store, NOW).unwrap().unwrap();
    assert_eq!(rewritten, None, "no token limit: the request is left alone");
    assert!(x.response_headers().contains(&("x-ratelimit-remaining-requests".into(), "9".into())));
    assert!(!x.response_head(200, Some("text/event-stream")));
    assert_eq!(x.response_chunk(b"data: x\n\n", true), ChunkStep::Continue);
}

#[test]
fn a_stream_gets_exact_usage_and_the_client_never_sees_the_chunk_it_did_not_ask_for() {
    let l = limits(json!([{"name": "tpm", "tokens": {"limit": 1000, "per": "minute"}}]));
    let p = principal();
    let store = MemoryStore::new();
    let body = chat(true, false, 100);
    let (mut x, rewritten) = Exchange::begin(&l, &who(&p), "/v1/chat/completions", &body, &store, NOW).unwrap().unwrap();
    let rewritten: serde_json::Value = serde_json::from_slice(&rewritten.expect("usage requested")).unwrap();
    assert_eq!(rewritten["stream_options"]["include_usage"], true);
    assert!(x.response_head(200, Some("text/event-stream")));
    let out = run(&mut x, &[delta("Hello"), delta(" world"), usage_chunk(7, 3), "data: [DONE]\n\n".into()]);
    assert_eq!(out, format!("{}{}data: [DONE]\n\n", delta("Hello"), delta(" world")), "the usage chunk is removed, the rest byte for byte");
    let u = x.finish(&l, &store, NOW).unwrap();
    assert_eq!(u, Usage { prompt: 7, completion: 3, reported: true });
    assert_eq!(remaining_tokens(&l, &store), "990", "the reservation was replaced by the 10 tokens used");
}

#[test]
fn a_client_that_asked_for_usage_gets_its_stream_untouched() {
    let l = limits(json!([{"name": "tpm", "tokens": {"limit": 1000, "per": "minute"}}]));
    let p = principal();
    let store = MemoryStore::new();
    let (mut x, rewritten) = Exchange::begin(&l, &who(&p), "/v1/chat/completions", &chat(true, true, 100), &store, NOW).unwrap().unwrap();
    assert_eq!(rewritten, None);
    x.response_head(200, Some("text/event-stream"));
    for (i, c) in [delta("Hi"), usage_chunk(5, 1)].iter().enumerate() {
        assert_eq!(x.response_chunk(c.as_bytes(), i == 1), ChunkStep::Continue);
    }
    assert_eq!(x.finish(&l, &store, NOW).unwrap(), Usage { prompt: 5, completion: 1, reported: true });
}

#[test]
fn a_cut_limit_ends_the_stream_cleanly_at_the_budget() {
    // 100 tokens a minute, cut; the request reserves ceil(len/4) prompt + 10 completion.
    let l = limits(json!([{"name": "tpm", "tokens": {"limit": 100, "per": "minute", "count": "completion"}, "on_exceed": "cut"}]));
    let p = principal();
    let store = MemoryStore::new();
    let (mut x, _) = Exchange::begin(&l, &who(&p), "/v1/chat/completions", &chat(true, true, 10), &store, NOW).unwrap().unwrap();
    x.response_head(200, Some("text/event-stream"));
    assert!(x.rewrites_stream());
    // Budget: 10 reserved + 90 left = 100 tokens ≈ 400 bytes of text at 4 bytes per token.
    let chunk = delta(&"abcd".repeat(30)); // 30 tokens each
    let out = run(&mut x, &[chunk.clone(), chunk.clone(), chunk.clone(), chunk.clone(), delta("never sent")]);
    assert!(out.starts_with(&chunk));
    let events: Vec<&str> = out.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(events.len(), 5, "3 deltas (90 tokens), the error event, [DONE]: {out}");
    let err: serde_json::Value = serde_json::from_str(events[3].strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(err["error"]["code"], "token_limit_exceeded");
    assert!(err["error"]["message"].as_str().unwrap().contains("'tpm'"));
    assert_eq!(events[4], "data: [DONE]");
    assert!(!out.contains("never sent"));
    assert!(x.was_cut());
    assert_eq!(x.finish(&l, &store, NOW).unwrap().completion, 120, "counted up to and including the event that crossed");
}

#[test]
fn an_anthropic_stream_is_cut_with_its_own_error_event() {
    let l = limits(json!([{"name": "tpm", "tokens": {"limit": 40, "per": "minute"}, "on_exceed": "cut"}]));
    let p = principal();
    let store = MemoryStore::new();
    let body = json!({"model": "gpt-4o", "max_tokens": 5, "stream": true, "messages": []}).to_string().into_bytes();
    let (mut x, rewritten) = Exchange::begin(&l, &who(&p), "/v1/messages", &body, &store, NOW).unwrap().unwrap();
    assert_eq!(rewritten, None, "only OpenAI chat gets stream_options");
    x.response_head(200, Some("text/event-stream"));
    let start = format!("event: message_start\ndata: {}\n\n", json!({"type": "message_start", "message": {"usage": {"input_tokens": 3}}}));
    let text = format!(
        "event: content_block_delta\ndata: {}\n\n",
        json!({"type": "content_block_delta", "delta": {"type": "text_delta", "text": "x".repeat(80)}})
    );
    let out = run(&mut x, &[start.clone(), text.clone(), text.clone()]);
    assert!(out.starts_with(&start));
    assert!(out.contains("event: error\ndata: {\"type\":\"error\""), "{out}");
    assert!(!out.contains("[DONE]"), "Anthropic streams have no [DONE]");
}

#[test]
fn a_json_response_is_read_as_it_passes_and_reconciled() {
    let l = limits(json!([{"name": "tpm", "tokens": {"limit": 1000, "per": "minute"}}]));
    let p = principal();
    let store = MemoryStore::new();
    let (mut x, _) = Exchange::begin(&l, &who(&p), "/v1/chat/completions", &chat(false, false, 200), &store, NOW).unwrap().unwrap();
    assert!(x.response_head(200, Some("application/json")));
    let body = json!({"choices": [], "usage": {"prompt_tokens": 20, "completion_tokens": 30}}).to_string();
    let (a, b) = body.split_at(10);
    assert_eq!(x.response_chunk(a.as_bytes(), false), ChunkStep::Continue, "never held");
    assert_eq!(x.response_chunk(b.as_bytes(), true), ChunkStep::Continue);
    assert_eq!(x.finish(&l, &store, NOW).unwrap(), Usage { prompt: 20, completion: 30, reported: true });
    assert_eq!(remaining_tokens(&l, &store), "950");
}

#[test]
fn an_error_status_gives_the_tokens_back() {
    let l = limits(json!([{"name": "tpm", "tokens": {"limit": 1000, "per": "minute"}}]));
    let p = principal();
    let store = MemoryStore::new();
    let (mut x, _) = Exchange::begin(&l, &who(&p), "/v1/chat/completions", &chat(false, false, 500), &store, NOW).unwrap().unwrap();
    assert!(!x.response_head(429, Some("application/json")));
    x.finish(&l, &store, NOW).unwrap();
    assert_eq!(remaining_tokens(&l, &store), "1000");
}

#[test]
fn an_aborted_or_usage_less_stream_is_counted_from_its_text_and_marked_estimated() {
    let l = limits(json!([{"name": "tpm", "tokens": {"limit": 1000, "per": "minute", "count": "completion"}}]));
    let p = principal();
    let store = MemoryStore::new();
    let (mut x, _) = Exchange::begin(&l, &who(&p), "/v1/chat/completions", &chat(true, true, 500), &store, NOW).unwrap().unwrap();
    x.response_head(200, Some("text/event-stream"));
    x.response_chunk(delta(&"x".repeat(40)).as_bytes(), false);
    // The client went away: no usage chunk ever came.
    let u = x.finish(&l, &store, NOW).unwrap();
    assert_eq!(u, Usage { prompt: u.prompt, completion: 10, reported: false });
    assert_eq!(remaining_tokens(&l, &store), "990");
    assert_eq!(x.finish(&l, &store, NOW).unwrap().completion, 10, "finishing twice reconciles once");
    assert_eq!(remaining_tokens(&l, &store), "990");
}

#[test]
fn a_broken_stream_is_no_longer_followed_and_nothing_is_lost() {
    let l = limits(json!([{"name": "tpm", "tokens": {"limit": 1000, "per": "minute"}, "on_exceed": "cut"}]));
    let p = principal();
    let store = MemoryStore::new();
    let (mut x, _) = Exchange::begin(&l, &who(&p), "/v1/chat/completions", &chat(true, true, 10), &store, NOW).unwrap().unwrap();
    x.response_head(200, Some("text/event-stream"));
    let huge_line = format!("data: {}", "y".repeat(MAX_EVENT_BYTES + 10));
    let out = run(&mut x, &[delta("ok"), huge_line.clone(), delta("after")]);
    assert!(out.starts_with(&delta("ok")));
    assert!(out.contains(&huge_line), "what Cordon could not frame passes on (redaction judges it)");
    assert!(out.ends_with(&delta("after")));
}
