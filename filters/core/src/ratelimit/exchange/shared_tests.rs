//! The combined role's shared pass against the two passes it replaces: redaction, then the
//! limits framing and reading the redacted chunks themselves. On generated streams of the three
//! formats the usage reader knows, split at arbitrary chunk boundaries, both give the same bytes
//! per chunk, the same cut, the same usage and the same redaction outcome.

use super::*;
use crate::CompiledPolicy;
use crate::policy::{Policy, Principal};
use crate::ratelimit::schema::RateLimit;
use crate::ratelimit::store::MemoryStore;
use crate::redaction::session::{BodyStep, Head, ResponseHead, Session};
use cordon_redact::SseObserver;
use proptest::prelude::*;
use serde_json::json;

const NOW: u64 = 1_800_000_000_000_000_000;

fn limits(budget: u64) -> CompiledLimits {
    let v = json!([{"name": "tpm", "tokens": {"limit": budget, "per": "minute", "count": "completion"}, "on_exceed": "cut"}]);
    let rl: Vec<RateLimit> = serde_json::from_value(v).unwrap();
    CompiledLimits::compile(&rl, None).unwrap()
}

/// The default redaction (unscannable streams are ended), one that lets them pass, one that
/// blocks on an email; compiled once.
fn policy(which: u8) -> &'static CompiledPolicy {
    static POLICIES: std::sync::LazyLock<Vec<CompiledPolicy>> = std::sync::LazyLock::new(|| {
        [json!({}), json!({"on_unscannable": "pass"}), json!({"rules": {"detectors": {"email": {"response": "block"}}}})]
            .into_iter()
            .map(|redaction| {
                let p = Policy::from_json(json!({"redaction": redaction}).to_string().as_bytes()).unwrap();
                CompiledPolicy::compile(&p, &|_: &str| None).unwrap()
            })
            .collect()
    });
    &POLICIES[usize::from(which)]
}

const PATHS: [&str; 3] = ["/v1/chat/completions", "/v1/responses", "/v1/messages"];

/// Texts that pass, that are replaced, that are held back across events, and that need escapes.
const TEXTS: [&str; 10] = [
    "Hello there ",
    "write to john.d",
    "oe@example.com now ",
    "",
    "é \"quoted\"\n\ttab ",
    "mail: a.b@example.org",
    "abcdefghijklmnopqrstuvwxyz0123456789 ",
    "sk-",
    "then ",
    "x",
];

/// One provider event (`event:` name, JSON data) of `format` (0 chat, 1 Responses, 2 Anthropic).
fn event(format: usize, what: u8, text: &str, n: u64) -> (Option<&'static str>, String) {
    let (name, data) = match (format, what % 6) {
        (0, 0 | 1) => (None, json!({"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": text}}]})),
        (0, 2) => (None, json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": text}}]}}]})),
        (0, 3) => (None, json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})),
        (0, 4) => (None, json!({"choices": [], "usage": {"prompt_tokens": n, "completion_tokens": n + 3}})),
        (0, _) => return (None, "[DONE]".into()),
        (1, 0 | 1) => (
            Some("response.output_text.delta"),
            json!({"type": "response.output_text.delta", "item_id": "m", "output_index": 0, "content_index": 0, "delta": text}),
        ),
        (1, 2) => (
            Some("response.function_call_arguments.delta"),
            json!({"type": "response.function_call_arguments.delta", "output_index": 1, "delta": text}),
        ),
        (1, 3) => (Some("response.output_text.done"), json!({"type": "response.output_text.done", "output_index": 0, "text": text})),
        (1, 4) => (
            Some("response.completed"),
            json!({"type": "response.completed", "response": {"usage": {"input_tokens": n, "output_tokens": n + 2},
                "output": [{"content": [{"text": text}]}]}}),
        ),
        (1, _) => (None, json!({"type": "response.in_progress"})),
        (_, 0 | 1) => {
            (Some("content_block_delta"), json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}))
        }
        (_, 2) => (
            Some("content_block_delta"),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": text}}),
        ),
        (_, 3) => (Some("content_block_stop"), json!({"type": "content_block_stop", "index": 0})),
        (_, 4) => (Some("message_delta"), json!({"type": "message_delta", "usage": {"output_tokens": n}})),
        (_, _) => (Some("message_start"), json!({"type": "message_start", "message": {"usage": {"input_tokens": n, "output_tokens": 1}}})),
    };
    (name, data.to_string())
}

/// A stream's bytes: events with varied line endings, names given or left out, comments,
/// data over several lines, now and then a last event without its blank line, or broken JSON.
fn stream(format: usize, evs: &[(u8, usize, u64, u8)], unterminated: bool) -> Vec<u8> {
    let mut out = String::new();
    for (i, &(what, text, n, shape)) in evs.iter().enumerate() {
        let (name, data) = event(format, what, TEXTS[text % TEXTS.len()], n);
        let nl = ["\n", "\n", "\n", "\r\n", "\r"][usize::from(shape % 5)];
        if shape / 5 % 7 == 1 {
            out.push_str(&format!(": ping{nl}{nl}"));
        }
        if let Some(name) = name.filter(|_| shape / 5 % 3 != 2) {
            out.push_str(&format!("event: {name}{nl}"));
        }
        let data = match shape / 35 {
            // Pretty JSON on several `data:` lines.
            1 if data.starts_with('{') => {
                let v: serde_json::Value = serde_json::from_str(&data).unwrap();
                serde_json::to_string_pretty(&v).unwrap()
            }
            2 => data.chars().take(data.chars().count() / 2).collect(),
            _ => data,
        };
        for line in data.split('\n') {
            out.push_str(&format!("data: {line}{nl}"));
        }
        if !(unterminated && i + 1 == evs.len()) {
            out.push_str(nl);
        }
    }
    out.into_bytes()
}

/// What one run gave: per chunk, the bytes the client got; then the cut, the usage, and what
/// redaction recorded.
type Outcome = (Vec<Vec<u8>>, bool, Usage, Vec<String>);

fn run(format: usize, which: u8, budget: u64, include_usage: bool, bytes: &[u8], cuts: &[usize], share: bool) -> Outcome {
    let path = PATHS[format];
    let (mut s, _) =
        Session::start(Some(policy(which)), &Head { method: "POST", path, content_encoding: None, end_of_stream: false }).unwrap();
    s.response_head(&ResponseHead { content_type: Some("text/event-stream"), content_encoding: None, end_of_stream: false });
    let l = limits(budget);
    let store = MemoryStore::new();
    let (p, who_) = (Principal { user: Some("u".into()), team: None, app: None }, "gpt-4o");
    let who = Caller { principal: &p, key_id: Some("k"), model: who_ };
    let mut body = json!({"model": "gpt-4o", "max_tokens": 5, "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    if include_usage {
        body["stream_options"] = json!({"include_usage": true});
    }
    let (mut x, _) = Exchange::begin(&l, &who, path, body.to_string().as_bytes(), &store, NOW).unwrap().unwrap();
    assert!(x.response_head(200, Some("text/event-stream")));
    if share {
        s.share_reading(x.shared_reader().unwrap());
    }
    let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    bounds.extend([0, bytes.len()]);
    bounds.sort_unstable();
    bounds.dedup();
    let mut got = Vec::new();
    for (i, w) in bounds.windows(2).enumerate() {
        let chunk = &bytes[w[0]..w[1]];
        let end = i + 2 == bounds.len();
        let redacted = match s.response_body(chunk.len(), end, |b| b.extend_from_slice(chunk)) {
            BodyStep::Continue => chunk.to_vec(),
            BodyStep::Replace(b) => b,
            other => panic!("{other:?}"),
        };
        let pieces = if share { s.shared_pieces() } else { None };
        let step = x.response_chunk_read(&redacted, pieces, end);
        got.push(match step {
            ChunkStep::Continue => redacted,
            ChunkStep::Replace(b) => b,
        });
    }
    let usage = x.finish(&l, &store, NOW).unwrap();
    let mut recorded: Vec<String> = s.drain_events().map(|e| format!("{e:?}")).collect();
    recorded.extend(s.outcomes().iter().map(|o| format!("{o:?}")));
    (got, x.was_cut(), usage, recorded)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn the_shared_pass_gives_what_the_two_passes_give(
        format in 0..3usize,
        which in prop_oneof![4 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8)],
        budget in 6..160u64,
        include_usage in any::<bool>(),
        evs in prop::collection::vec((0..6u8, 0..10usize, 0..40u64, prop_oneof![8 => 0..5u8, 2 => 5..35u8, 1 => 35..80u8, 1 => 80..110u8]), 1..14),
        unterminated in prop::bool::weighted(0.1),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        let bytes = stream(format, &evs, unterminated);
        let two = run(format, which, budget, include_usage, &bytes, &cuts, false);
        let one = run(format, which, budget, include_usage, &bytes, &cuts, true);
        prop_assert_eq!(one, two, "{}", String::from_utf8_lossy(&bytes));
    }
}

/// The pieces are what the limits read when they tile the chunk: a reading that says more
/// text than the bytes hold cuts the stream, which reading the bytes would not.
#[test]
fn readings_stand_for_the_events_they_describe_and_bytes_are_read_otherwise() {
    let l = limits(30);
    let p = Principal { user: Some("u".into()), team: None, app: None };
    let who = Caller { principal: &p, key_id: Some("k"), model: "gpt-4o" };
    let body = json!({"model": "gpt-4o", "max_tokens": 5, "stream": true, "stream_options": {"include_usage": true}}).to_string();
    let begin = || {
        let store = MemoryStore::new();
        let (mut x, _) = Exchange::begin(&l, &who, PATHS[0], body.as_bytes(), &store, NOW).unwrap().unwrap();
        x.response_head(200, Some("text/event-stream"));
        x
    };
    let chunk = format!("data: {}\n\n", json!({"choices": [{"index": 0, "delta": {"content": "hi"}}]}));
    // A reading from a redactor's pass over a long text.
    let mut reader = begin().shared_reader().unwrap();
    let long = format!("data: {}\n\n", json!({"choices": [{"index": 0, "delta": {"content": "y".repeat(400)}}]}));
    let (ev, data) = (long.as_bytes(), &long.as_bytes()[6..long.len() - 2]);
    let mut seen = reader.visitor(data);
    cordon_redact::json::scan::scan(data, &mut seen).unwrap();
    reader.passed(ev.len(), None, Some(data), Some(seen));
    reader.complete();
    let Some([Piece::Read { reading, .. }]) = reader.pieces() else { panic!("one read piece") };
    let lying = [Piece::Read { len: chunk.len(), reading: *reading }];
    let mut x = begin();
    assert!(matches!(x.response_chunk_read(chunk.as_bytes(), Some(&lying), false), ChunkStep::Replace(_)));
    assert!(x.was_cut(), "the reading was taken");
    // Pieces that do not tile the chunk are not trusted: the bytes are read.
    let short = [Piece::Read { len: chunk.len() - 1, reading: *reading }];
    let mut x = begin();
    assert_eq!(x.response_chunk_read(chunk.as_bytes(), Some(&short), false), ChunkStep::Continue);
    assert!(!x.was_cut());
}

/// An ordinary stream cut at event boundaries goes the shared way in every chunk, a redacted
/// event among them (written by redaction, framed by the limits).
#[test]
fn an_ordinary_stream_is_read_from_redactions_pass() {
    let (mut s, _) =
        Session::start(Some(policy(0)), &Head { method: "POST", path: PATHS[0], content_encoding: None, end_of_stream: false }).unwrap();
    s.response_head(&ResponseHead { content_type: Some("text/event-stream"), content_encoding: None, end_of_stream: false });
    s.share_reading(SharedReading::new(SseFormat::OpenAiChat));
    let mut kinds = Vec::new();
    for (i, text) in ["Hello ", "mail a.b@example.org now ", "bye"].iter().enumerate() {
        let (_, data) = event(0, 0, text, 0);
        let chunk = format!("data: {data}\n\n").into_bytes();
        let redacted = match s.response_body(chunk.len(), i == 2, |b| b.extend_from_slice(&chunk)) {
            BodyStep::Continue => chunk,
            BodyStep::Replace(b) => b,
            other => panic!("{other:?}"),
        };
        let pieces = s.shared_pieces().expect("a stream chunk redacted in full");
        assert!(tiles(pieces, &redacted), "{pieces:?}");
        kinds.extend(pieces.iter().map(|p| matches!(p, Piece::Written(_))));
    }
    assert!(kinds.contains(&true) && kinds.contains(&false), "{kinds:?}");
}
