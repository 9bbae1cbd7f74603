//! Cost per SSE event of the response redactor, natively: 64 OpenAI chat deltas per stream, each
//! pushed as its own chunk (as Envoy hands them to the filter), against a baseline measured in the
//! same run: parsing each event's JSON into a `serde_json::Value` and writing it back, which is
//! the least a JSON-rewriting proxy does per event.
//!
//! `cargo run -p cordon-redact --release --example sse_event [-- streams]`

use cordon_redact::{Engine, SseFormat, SseRedactor};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

fn event(content: &str) -> String {
    format!(
        "data: {{\"id\":\"chatcmpl-0123456789abcdef01234567\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\
         \"model\":\"gpt-4o-mini\",\"system_fingerprint\":null,\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{content}\"}},\
         \"logprobs\":null,\"finish_reason\":null}}]}}\n\n"
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let streams: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(2000);
    let engine = Arc::new(Engine::default_set(b"bench-key").expect("default set compiles"));
    let events: Vec<String> =
        (0..64).map(|i| event(&if i % 16 == 15 { format!("mail{i}@example.com ") } else { format!("word{i} ") })).collect();
    let n = (streams * events.len()) as f64;
    let (mut ours, mut base) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..streams {
            let mut r = SseRedactor::new(engine.clone(), SseFormat::OpenAiChat);
            for e in &events {
                black_box(r.push(e.as_bytes()).expect("valid stream").bytes.len());
            }
            black_box(r.finish().expect("valid stream").bytes.len());
        }
        ours.push(t.elapsed().as_secs_f64() / n * 1e6);
        let t = Instant::now();
        for _ in 0..streams {
            for e in &events {
                let json = &e.as_bytes()[6..e.len() - 2];
                let v: serde_json::Value = serde_json::from_slice(json).expect("valid event");
                black_box(serde_json::to_vec(&v).expect("serialises").len());
            }
        }
        base.push(t.elapsed().as_secs_f64() / n * 1e6);
    }
    let (o, b) = (median(ours), median(base));
    println!("{streams} streams x 64 chat deltas, one event per push, median of 5 runs");
    println!("SSE redactor (default set): {o:.2} us/event; baseline Value parse + write: {b:.2} us/event; ratio {:.2}", o / b);
}
