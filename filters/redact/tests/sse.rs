//! SSE adapters: split invariance per format, deltas redacted as one continuous stream,
//! pass-through of other events, block events, broken input.

use cordon_redact::sse::SseFramer;
use cordon_redact::{Action, Direction, Engine, RedactConfig, Rule, SseError, SseFormat, SseRedactor};
use proptest::prelude::*;
use serde_json::{Value, json};
use std::sync::Arc;

fn engine() -> Arc<Engine> {
    Arc::new(Engine::default_set(b"k").unwrap())
}

const PIECES: &[&str] = &[
    "Hello ",
    "world. ",
    "Contact ",
    "john.doe@example.com",
    " or ",
    "4242 4242 4242 4242",
    " key ",
    "AKIAIOSFODNN7EXAMPLE",
    "é日本",
    "\n",
    "ｊｏｈｎ＠ｅｘａｍｐｌｅ．ｃｏｍ",
    "\"quoted\" ",
    "\\",
    "DE89 3704 0044 0532 0130 00",
    "192.168.1.20",
    "sk-proj-abcdefghijklmnopqrstuvwxyz012345",
    " done",
];

/// JSON-encode a string, forcing `\uXXXX` escapes for some characters (splits inside escapes).
fn enc(s: &str, escape_all: bool) -> String {
    if !escape_all {
        return serde_json::to_string(s).unwrap();
    }
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '@' | '4' | 'A' | '.' | 'é' => out.push_str(&format!("\\u{:04x}", c as u32)),
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn split_text(text: &str, cuts: &[usize]) -> Vec<String> {
    let mut idx: Vec<usize> = cuts.iter().map(|c| c % (text.len() + 1)).filter(|&c| text.is_char_boundary(c)).collect();
    idx.push(0);
    idx.push(text.len());
    idx.sort();
    idx.dedup();
    idx.windows(2).map(|w| text[w[0]..w[1]].to_string()).collect()
}

fn openai_chat(deltas: &[String], args: &[String], crlf: bool, esc: bool) -> Vec<u8> {
    let nl = if crlf { "\r\n" } else { "\n" };
    let mut out = String::new();
    let head = r#""id":"c1","object":"chat.completion.chunk","created":1,"model":"m""#;
    out += &format!(": keep-alive{nl}{nl}");
    out += &format!(
        "data: {{{head},\"choices\":[{{\"index\":0,\"delta\":{{\"role\":\"assistant\",\"content\":\"\"}},\"finish_reason\":null}}]}}{nl}{nl}"
    );
    for d in deltas {
        out += &format!(
            "data: {{{head},\"choices\":[{{\"index\":0,\"delta\":{{\"content\":{}}},\"finish_reason\":null}}]}}{nl}{nl}",
            enc(d, esc)
        );
    }
    for a in args {
        out += &format!(
            "data: {{{head},\"choices\":[{{\"index\":1,\"delta\":{{\"tool_calls\":[{{\"index\":0,\"function\":{{\"arguments\":{}}}}}]}},\"finish_reason\":null}}]}}{nl}{nl}",
            enc(a, esc)
        );
    }
    out += &format!("data: {{{head},\"choices\":[{{\"index\":0,\"delta\":{{}},\"finish_reason\":\"stop\"}}]}}{nl}{nl}");
    out += &format!("data: {{{head},\"choices\":[],\"usage\":{{\"prompt_tokens\":1,\"completion_tokens\":2,\"total_tokens\":3}}}}{nl}{nl}");
    out += &format!("data: [DONE]{nl}{nl}");
    out.into_bytes()
}

fn anthropic(deltas: &[String], json_parts: &[String], crlf: bool, esc: bool) -> Vec<u8> {
    let nl = if crlf { "\r\n" } else { "\n" };
    let mut out = String::new();
    out += &format!(
        "event: message_start{nl}data: {{\"type\":\"message_start\",\"message\":{{\"id\":\"m\",\"usage\":{{\"input_tokens\":1}}}}}}{nl}{nl}"
    );
    out += &format!(
        "event: content_block_start{nl}data: {{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{{\"type\":\"text\",\"text\":\"\"}}}}{nl}{nl}"
    );
    out += &format!("event: ping{nl}data: {{\"type\": \"ping\"}}{nl}{nl}");
    for d in deltas {
        out += &format!(
            "event: content_block_delta{nl}data: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":{}}}}}{nl}{nl}",
            enc(d, esc)
        );
    }
    out += &format!("event: content_block_stop{nl}data: {{\"type\":\"content_block_stop\",\"index\":0}}{nl}{nl}");
    out += &format!(
        "event: content_block_start{nl}data: {{\"type\":\"content_block_start\",\"index\":1,\"content_block\":{{\"type\":\"tool_use\",\"id\":\"t\",\"name\":\"f\",\"input\":{{}}}}}}{nl}{nl}"
    );
    for d in json_parts {
        out += &format!(
            "event: content_block_delta{nl}data: {{\"type\":\"content_block_delta\",\"index\":1,\"delta\":{{\"type\":\"input_json_delta\",\"partial_json\":{}}}}}{nl}{nl}",
            enc(d, esc)
        );
    }
    out += &format!("event: content_block_stop{nl}data: {{\"type\":\"content_block_stop\",\"index\":1}}{nl}{nl}");
    out += &format!(
        "event: message_delta{nl}data: {{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"end_turn\"}},\"usage\":{{\"output_tokens\":9}}}}{nl}{nl}"
    );
    out += &format!("event: message_stop{nl}data: {{\"type\":\"message_stop\"}}{nl}{nl}");
    out.into_bytes()
}

fn responses(deltas: &[String], full: &str, crlf: bool, esc: bool) -> Vec<u8> {
    let nl = if crlf { "\r\n" } else { "\n" };
    let mut out = String::new();
    out += &format!("event: response.created{nl}data: {{\"type\":\"response.created\",\"sequence_number\":0}}{nl}{nl}");
    for (i, d) in deltas.iter().enumerate() {
        out += &format!(
            "event: response.output_text.delta{nl}data: {{\"type\":\"response.output_text.delta\",\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,\"delta\":{},\"sequence_number\":{}}}{nl}{nl}",
            enc(d, esc),
            i + 1
        );
    }
    out += &format!(
        "event: response.output_text.done{nl}data: {{\"type\":\"response.output_text.done\",\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,\"text\":{}}}{nl}{nl}",
        enc(full, esc)
    );
    out += &format!(
        "event: response.completed{nl}data: {{\"type\":\"response.completed\",\"response\":{{\"output\":[{{\"type\":\"message\",\"content\":[{{\"type\":\"output_text\",\"text\":{}}}]}}],\"usage\":{{\"total_tokens\":5}}}}}}{nl}{nl}",
        enc(full, esc)
    );
    out.into_bytes()
}

fn run(fmt: SseFormat, input: &[u8], cuts: &[usize]) -> Result<Vec<u8>, SseError> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    cuts.sort();
    let mut r = SseRedactor::new(engine(), fmt);
    let mut out = Vec::new();
    let mut prev = 0;
    for c in cuts.into_iter().chain(std::iter::once(input.len())) {
        out.extend(r.push(&input[prev..c])?.bytes);
        prev = c;
    }
    out.extend(r.finish()?.bytes);
    Ok(out)
}

/// Parse SSE output into (event name, JSON) pairs (data `[DONE]` as Value::Null).
fn events(out: &[u8]) -> Vec<(Option<String>, Value)> {
    let mut f = SseFramer::new(1 << 20);
    let mut evs = f.push(out).unwrap();
    evs.extend(f.finish().unwrap());
    evs.into_iter()
        .filter_map(|e| {
            let d = e.data?;
            let v = if d == b"[DONE]" { Value::Null } else { serde_json::from_slice(&d).unwrap() };
            Some((e.event, v))
        })
        .collect()
}

fn collect(fmt: SseFormat, out: &[u8]) -> (String, String) {
    let mut a = String::new();
    let mut b = String::new();
    for (_, v) in events(out) {
        match fmt {
            SseFormat::OpenAiChat => {
                for ch in v["choices"].as_array().into_iter().flatten() {
                    if let Some(t) = ch["delta"]["content"].as_str() {
                        assert_eq!(ch["index"], 0);
                        a += t;
                    }
                    for tc in ch["delta"]["tool_calls"].as_array().into_iter().flatten() {
                        assert_eq!(ch["index"], 1);
                        b += tc["function"]["arguments"].as_str().unwrap();
                    }
                }
            }
            SseFormat::Anthropic => {
                if v["type"] == "content_block_delta" {
                    if v["index"] == 0 {
                        a += v["delta"]["text"].as_str().unwrap();
                    } else {
                        b += v["delta"]["partial_json"].as_str().unwrap();
                    }
                }
            }
            SseFormat::OpenAiResponses => {
                if v["type"] == "response.output_text.delta" {
                    a += v["delta"].as_str().unwrap();
                }
                if v["type"] == "response.output_text.done" {
                    b = v["text"].as_str().unwrap().to_string();
                }
            }
        }
    }
    (a, b)
}

fn one_shot(s: &str) -> String {
    String::from_utf8(engine().redact(Direction::Response, s.as_bytes()).bytes).unwrap()
}

fn text_strategy() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(PIECES), 1..12).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn openai_chat_split_invariance(text in text_strategy(), args in text_strategy(), dcuts in prop::collection::vec(any::<usize>(), 0..10),
                                    bcuts in prop::collection::vec(any::<usize>(), 0..10), crlf: bool, esc: bool) {
        let input = openai_chat(&split_text(&text, &dcuts), &split_text(&args, &dcuts), crlf, esc);
        let whole = run(SseFormat::OpenAiChat, &input, &[]).unwrap();
        let split = run(SseFormat::OpenAiChat, &input, &bcuts).unwrap();
        prop_assert_eq!(&whole, &split);
        let (a, b) = collect(SseFormat::OpenAiChat, &whole);
        prop_assert_eq!(a, one_shot(&text));
        prop_assert_eq!(b, one_shot(&args));
        let s = String::from_utf8_lossy(&whole);
        prop_assert!(s.ends_with("data: [DONE]\n\n") || s.ends_with("data: [DONE]\r\n\r\n"));
    }

    #[test]
    fn anthropic_split_invariance(text in text_strategy(), args in text_strategy(), dcuts in prop::collection::vec(any::<usize>(), 0..10),
                                  bcuts in prop::collection::vec(any::<usize>(), 0..10), crlf: bool, esc: bool) {
        let input = anthropic(&split_text(&text, &dcuts), &split_text(&args, &dcuts), crlf, esc);
        let whole = run(SseFormat::Anthropic, &input, &[]).unwrap();
        let split = run(SseFormat::Anthropic, &input, &bcuts).unwrap();
        prop_assert_eq!(&whole, &split);
        let (a, b) = collect(SseFormat::Anthropic, &whole);
        prop_assert_eq!(a, one_shot(&text));
        prop_assert_eq!(b, one_shot(&args));
        // Every delta of block 0 comes before its content_block_stop.
        let evs = events(&whole);
        let stop0 = evs.iter().position(|(_, v)| v["type"] == "content_block_stop" && v["index"] == 0).unwrap();
        prop_assert!(evs[stop0..].iter().all(|(_, v)| !(v["type"] == "content_block_delta" && v["index"] == 0)));
    }

    #[test]
    fn responses_split_invariance(text in text_strategy(), dcuts in prop::collection::vec(any::<usize>(), 0..10),
                                  bcuts in prop::collection::vec(any::<usize>(), 0..10), crlf: bool, esc: bool) {
        let input = responses(&split_text(&text, &dcuts), &text, crlf, esc);
        let whole = run(SseFormat::OpenAiResponses, &input, &[]).unwrap();
        let split = run(SseFormat::OpenAiResponses, &input, &bcuts).unwrap();
        prop_assert_eq!(&whole, &split);
        let (a, b) = collect(SseFormat::OpenAiResponses, &whole);
        prop_assert_eq!(&a, &one_shot(&text));
        prop_assert_eq!(&b, &a);
    }
}

#[test]
fn secrets_split_across_three_events_at_every_offset() {
    // Three events, every pair of split offsets, two formats: keep the text short.
    for (secret, label, frag) in [
        ("4242 4242 4242 4242", "[CARD]", "4242"),
        ("john.doe@example.com", "[EMAIL]", "doe@"),
        ("AKIAIOSFODNN7EXAMPLE", "[AWS_ACCESS_KEY]", "AKIA"),
    ] {
        let text = format!("a {secret} b");
        for i in 1..text.len() {
            for j in i..text.len() {
                let deltas = vec![text[..i].to_string(), text[i..j].to_string(), text[j..].to_string()];
                let fmts = if (i + j) % 2 == 0 { [SseFormat::OpenAiChat] } else { [SseFormat::Anthropic] };
                for fmt in fmts {
                    let input = match fmt {
                        SseFormat::OpenAiChat => openai_chat(&deltas, &[], false, false),
                        _ => anthropic(&deltas, &[], false, false),
                    };
                    let out = run(fmt, &input, &[]).unwrap();
                    let (a, _) = collect(fmt, &out);
                    assert_eq!(a, format!("a {label} b"));
                    assert!(!String::from_utf8_lossy(&out).contains(frag));
                }
            }
        }
    }
}

#[test]
fn pass_through_events_are_byte_identical_and_in_order() {
    let input = openai_chat(&["hi".into()], &[], true, false);
    let out = run(SseFormat::OpenAiChat, &input, &[]).unwrap();
    let s = String::from_utf8(out).unwrap();
    assert!(s.starts_with(": keep-alive\r\n\r\n"));
    assert!(s.contains("\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2,\"total_tokens\":3}}\r\n\r\n"));
    let usage = s.find("usage").unwrap();
    let stop = s.find("\"finish_reason\":\"stop\"").unwrap();
    assert!(stop < usage && usage < s.find("[DONE]").unwrap());
}

fn blocking(det: &str) -> Arc<Engine> {
    let mut cfg = RedactConfig::default();
    cfg.detectors.insert(det.into(), Rule { request: Action::Block, response: Action::Block, ..Rule::default() });
    Arc::new(Engine::new(&cfg, b"k").unwrap())
}

#[test]
fn block_mid_stream_stops_the_stream() {
    for (fmt, input) in [
        (SseFormat::OpenAiChat, openai_chat(&["text AKIAIOSF".into(), "ODNN7EXAMPLE more".into()], &[], false, false)),
        (SseFormat::Anthropic, anthropic(&["text AKIAIOSF".into(), "ODNN7EXAMPLE more".into()], &[], false, false)),
        (SseFormat::OpenAiResponses, responses(&["text AKIAIOSF".into(), "ODNN7EXAMPLE more".into()], "x", false, false)),
    ] {
        let mut r = SseRedactor::new(blocking("aws_access_key"), fmt);
        let mut out = r.push(&input).unwrap();
        let fin = r.finish().unwrap();
        assert!(fin.bytes.is_empty());
        let block = out.block.take();
        assert_eq!(block.map(|b| b.detector.to_string()).as_deref(), Some("aws_access_key"), "{fmt:?}");
        let s = String::from_utf8(out.bytes).unwrap();
        // Everything up to the match as well-formed events, nothing of the match or after it.
        assert!(s.ends_with("\n\n"), "{fmt:?}: events end cleanly: {s}");
        assert!(!s.contains("AKIA") && !s.contains("more") && !s.contains("[DONE]"), "{fmt:?}: {s}");
        assert_eq!(collect(fmt, s.as_bytes()).0, "text ", "{fmt:?}: text before the match is delivered: {s}");
    }
}

#[test]
fn broken_input_is_an_error() {
    let mut r = SseRedactor::new(engine(), SseFormat::OpenAiChat);
    assert!(matches!(r.push(b"data: {not json}\n\n"), Err(SseError::BadJson { .. })));
    let mut r = SseRedactor::new(engine(), SseFormat::OpenAiChat);
    r.push(b"data: {\"choices\":[]").unwrap();
    assert!(matches!(r.finish(), Err(SseError::Truncated(_))));
    let mut r = SseRedactor::new(engine(), SseFormat::Anthropic);
    let big = vec![b'a'; (1 << 20) + 10];
    assert!(matches!(r.push(&big), Err(SseError::EventTooLarge { .. })));
}

#[test]
fn framer_handles_split_line_endings_and_multiline_data() {
    let input = b"event: x\r\ndata: a\r\ndata: b\r\n\r\n: c\n\ndata:d\r\r";
    for cut in 0..input.len() {
        let mut f = SseFramer::new(1024);
        let mut evs = f.push(&input[..cut]).unwrap();
        evs.extend(f.push(&input[cut..]).unwrap());
        evs.extend(f.finish().unwrap());
        assert_eq!(evs.len(), 3, "cut {cut}");
        assert_eq!(evs[0].data.as_deref(), Some(&b"a\nb"[..]));
        assert_eq!(evs[0].event.as_deref(), Some("x"));
        assert_eq!(evs[1].data, None);
        assert_eq!(evs[2].data.as_deref(), Some(&b"d"[..]));
        let raw: Vec<u8> = evs.iter().flat_map(|e| e.raw.clone()).collect();
        assert_eq!(raw, input.to_vec());
    }
    let _ = json!({});
}

#[test]
fn every_single_split_point_of_a_small_stream() {
    let deltas: Vec<String> = ["mail jo", "hn.doe@exa", "mple.com ok"].iter().map(|s| s.to_string()).collect();
    for (fmt, input) in [
        (SseFormat::OpenAiChat, openai_chat(&deltas, &[], true, true)),
        (SseFormat::Anthropic, anthropic(&deltas, &[], false, true)),
        (SseFormat::OpenAiResponses, responses(&deltas, &deltas.concat(), true, true)),
    ] {
        let whole = run(fmt, &input, &[]).unwrap();
        assert_eq!(collect(fmt, &whole).0, "mail [EMAIL] ok");
        // Covers splits inside `\uXXXX` escapes, inside `\r\n`, and between `data:` and payload.
        for cut in 0..=input.len() {
            assert_eq!(run(fmt, &input, &[cut]).unwrap(), whole, "{fmt:?} cut {cut}");
        }
    }
}

/// An event whose JSON spans several `data:` lines (SSE joins them with `\n`) and is rewritten
/// goes out as lines a client joins back into the same JSON: every line keeps its `data:`.
#[test]
fn a_rewritten_multiline_event_keeps_a_data_field_per_line() {
    let input = "data: {\"choices\":[{\"index\":0,\ndata: \"delta\":{\"content\":\"mail john.doe@example.com now\"}}]}\n\ndata: [DONE]\n\n";
    let out = run(SseFormat::OpenAiChat, input.as_bytes(), &[]).unwrap();
    let text = String::from_utf8(out.clone()).unwrap();
    assert!(!text.contains("john.doe"), "{text}");
    for line in text.lines().filter(|l| !l.is_empty()) {
        assert!(line.starts_with("data:"), "a line without a field name is dropped by clients: {line:?} in {text:?}");
    }
    let evs = events(&out);
    assert_eq!(evs[0].1["choices"][0]["delta"]["content"].as_str().map(|s| s.contains("[EMAIL]")), Some(true), "{text}");
}
