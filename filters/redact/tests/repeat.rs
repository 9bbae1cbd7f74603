//! An event that repeats the previous one around another string is read by comparing bytes
//! (`sse::plan::Repeat`) instead of scanning it in full: the redactor's output, and its errors,
//! must be exactly what the full scan gives, for any stream of events and any split of it.
//! The full scan is forced by an observer that reads values (`SseObserver::READS`).

use cordon_redact::{Engine, SseError, SseFormat, SseObserver, SseRedactor};
use proptest::prelude::*;
use std::sync::Arc;

/// Observes nothing, but says it reads values: every event is scanned in full.
struct FullScan;

impl SseObserver for FullScan {
    type Visitor<'d> = ();
    fn visitor<'d>(&self, _data: &'d [u8]) -> Self::Visitor<'d> {}
    fn passed(&mut self, _raw_len: usize, _event: Option<&str>, _data: Option<&[u8]>, _read: Option<()>) {}
    fn written(&mut self, _len: usize) {}
}

/// The redactor's output for `input` pushed in pieces at `cuts`, with or without the repeat path.
fn run(engine: &Arc<Engine>, fmt: SseFormat, input: &[u8], cuts: &[usize], full: bool) -> Result<Vec<u8>, SseError> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    cuts.sort();
    let mut r = SseRedactor::new(engine.clone(), fmt);
    let mut out = Vec::new();
    let mut prev = 0;
    for c in cuts.into_iter().chain(std::iter::once(input.len())) {
        let o = if full { r.push_observed(&input[prev..c], &mut FullScan)? } else { r.push(&input[prev..c])? };
        out.extend(o.bytes);
        prev = c;
    }
    out.extend(if full { r.finish_observed(&mut FullScan)? } else { r.finish()? }.bytes);
    Ok(out)
}

/// Values where a string usually is: strings (plain, escaped, secret-bearing, invalid) and
/// fragments that are not one string but could pass for one between the same bytes.
const VALUES: &[&str] = &[
    r#""Hello ""#,
    r#""world. ""#,
    r#""mail john.doe@example.com ""#,
    r#""4242 4242 ""#,
    r#""4242 4242""#,
    r#""\u00e9\n\"q\" ""#,
    r#""\ud83d\ude00""#,
    r#""""#,
    "\"tab\tinside\"",
    "\"bell\u{1}\"",
    r#""\ud800 lone""#,
    r#""bad \x escape""#,
    r#""a","content":"b""#,
    r#""a"  "#,
    r#""unterminated"#,
    r#""a" , "b""#,
    "null",
    "42",
    r#"{"a":"b"}"#,
    r#""AKIA""#,
    r#""IOSFODNN7EXAMPLE ""#,
    "\"é日本 \"",
    "\"😀 john.doe@exämple.com\"",
    r#""response.output_text.delta""#,
    r#""content_block_delta""#,
    // `<FF>` and `<C3>` stand for bytes that are not UTF-8 here (see `stream`).
    r#""raw <FF> byte""#,
    r#""cut <C3>""#,
];

/// What follows a chat delta's content: the usual tail, a finish, an extra field after the text.
const CHAT_TAILS: &[&str] = &[
    r#"},"logprobs":null,"finish_reason":null}]}"#,
    r#"},"logprobs":null,"finish_reason":"stop"}]}"#,
    r#","role":"assistant"},"finish_reason":null}]}"#,
    r#"},"finish_reason":null}],"obfuscation":"x1"}"#,
    r#"},"finish_reason":null}]} "#,
    r#"}}]}"#,
    r#"},"finish_reason":null}]}}"#,
];

const CHAT_HEADS: &[&str] = &[
    r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"#,
    r#"{"id":"c1","choices":[{"index":1,"delta":{"content":"#,
    r#"{"id":"c1","choices":[{"index":0,"delta":{"content":"x","content":"#,
];

const ANTHROPIC_HEADS: &[&str] = &[
    r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"#,
    r#"{"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"#,
    r#"{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"#,
];

const ANTHROPIC_TAILS: &[&str] = &[r#"}}"#, r#"},"x":1}"#, r#"} }"#, r#"}"#];

/// Responses events: the delta last, or `type` last (a string that decides what the event is).
const RESPONSES_HEADS: &[&str] = &[
    r#"{"type":"response.output_text.delta","item_id":"msg_1","output_index":0,"content_index":0,"delta":"#,
    r#"{"item_id":"msg_1","output_index":0,"delta":"d","type":"#,
    r#"{"type":"response.output_text.done","output_index":0,"text":"#,
];

const RESPONSES_TAILS: &[&str] = &[r#"}"#, r#","sequence_number":5}"#, r#","item_id":"msg_2"}"#, r#" }"#];

/// How an event is dressed: plainly, after a comment, with an `id:` line, with its JSON over two
/// `data:` lines, or after an event without data.
fn dress(dressing: usize, event: &str, json: &str) -> String {
    let name = if event.is_empty() { String::new() } else { format!("event: {event}\n") };
    match dressing % 5 {
        1 => format!(": keep-alive\n\n{name}data: {json}\n\n"),
        2 => format!("{name}id: 7\ndata: {json}\n\n"),
        3 => match json.split_once(',') {
            Some((a, b)) => format!("{name}data: {a},\ndata: {b}\n\n"),
            None => format!("{name}data: {json}\n\n"),
        },
        4 => format!("event: ping\n\n{name}data: {json}\n\n"),
        _ => format!("{name}data: {json}\n\n"),
    }
}

/// A stream of events, each a head, a value, a tail and a dressing picked by index (so that
/// consecutive events mostly repeat each other), ended as the format ends a stream.
fn stream(fmt: SseFormat, picks: &[(usize, usize, usize, usize)]) -> Vec<u8> {
    let (heads, tails, event) = match fmt {
        SseFormat::Anthropic => (ANTHROPIC_HEADS, ANTHROPIC_TAILS, "content_block_delta"),
        SseFormat::OpenAiResponses => (RESPONSES_HEADS, RESPONSES_TAILS, "response.output_text.delta"),
        SseFormat::OpenAiChat => (CHAT_HEADS, CHAT_TAILS, ""),
    };
    let mut s = String::new();
    for &(h, v, t, d) in picks {
        let json = format!("{}{}{}", heads[h % heads.len()], VALUES[v % VALUES.len()], tails[t % tails.len()]);
        s.push_str(&dress(d, event, &json));
    }
    s.push_str(match fmt {
        SseFormat::Anthropic => "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        SseFormat::OpenAiResponses => "",
        SseFormat::OpenAiChat => "data: [DONE]\n\n",
    });
    let mut b = s.into_bytes();
    // Bytes a `&str` cannot hold: the event around a repeated string must still be UTF-8.
    for (mark, byte) in [(b"<FF>", 0xFFu8), (b"<C3>", 0xC3)] {
        while let Some(i) = b.windows(4).position(|w| w == mark) {
            b.splice(i..i + 4, [byte]);
        }
    }
    b
}

/// Mostly the same head and tail, now and then another; values vary freely.
fn picks() -> impl Strategy<Value = Vec<(usize, usize, usize, usize)>> {
    let rare = || prop_oneof![6 => Just(0usize), 1 => 0..8usize];
    prop::collection::vec((rare(), any::<usize>(), rare(), rare()), 0..12)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1200))]

    /// Chat, Anthropic and Responses events: the repeat path's output and errors equal the full
    /// scan's.
    #[test]
    fn repeats_read_as_the_full_scan_reads(
        fmt in prop::sample::select(&[SseFormat::OpenAiChat, SseFormat::Anthropic, SseFormat::OpenAiResponses][..]),
        picks in picks(),
        cuts in prop::collection::vec(any::<usize>(), 0..6),
    ) {
        let engine = Arc::new(Engine::default_set(b"k").unwrap());
        let input = stream(fmt, &picks);
        let fast = run(&engine, fmt, &input, &cuts, false).map_err(|e| e.to_string());
        let full = run(&engine, fmt, &input, &cuts, true).map_err(|e| e.to_string());
        prop_assert_eq!(fast, full, "{}", String::from_utf8_lossy(&input));
    }
}

/// The repeat path is taken where it should be, and redacts: a secret split across deltas that
/// repeat each other is still found, and an invalid string in a repeated event is still an error.
#[test]
fn repeated_deltas_are_redacted_and_checked() {
    let engine = Arc::new(Engine::default_set(b"k").unwrap());
    let ev = |content: &str| format!("data: {}{content}{}\n\n", CHAT_HEADS[0], CHAT_TAILS[0]);
    let input: String =
        [r#""mail john.""#, r#""doe@exam""#, r#""ple.com now""#].iter().map(|c| ev(c)).collect::<String>() + "data: [DONE]\n\n";
    let out = String::from_utf8(run(&engine, SseFormat::OpenAiChat, input.as_bytes(), &[], false).unwrap()).unwrap();
    assert!(!out.contains("john") && !out.contains("doe@") && out.contains("[EMAIL]"), "{out}");
    let bad = ev(r#""fine""#) + &ev("\"bell\u{1}\"");
    let err = run(&engine, SseFormat::OpenAiChat, bad.as_bytes(), &[], false).unwrap_err();
    assert!(err.to_string().contains("control character"), "{err}");
}
