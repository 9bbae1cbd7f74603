//! Print misclassified corpus samples for one detector (development aid).
//!
//! `cargo run -p cordon-redact --example corpus_debug -- phone`

use cordon_redact::corpus::generate;
use cordon_redact::{Direction, Engine};
use std::sync::Arc;

fn main() {
    let det = std::env::args().nth(1).unwrap_or_else(|| "phone".into());
    let engine = Arc::new(Engine::default_set(b"corpus").expect("default set"));
    let mut shown = 0;
    for s in generate(
        std::env::args().nth(2).and_then(|n| n.parse().ok()).unwrap_or(300),
        std::env::args().nth(3).and_then(|n| n.parse().ok()).unwrap_or(0xC0D0),
    ) {
        let out = engine.redact(Direction::Response, s.text.as_bytes());
        let fired: Vec<String> = out.detections.iter().map(|d| d.detector.to_string()).collect();
        let hit = fired.contains(&det);
        let wrong = (s.positive && s.label == det && !hit) || (hit && !(s.positive && s.label == det));
        if wrong && shown < 25 {
            shown += 1;
            println!(
                "{} {:<14} {:?} -> {:?} {:?}",
                if s.positive { "+" } else { "-" },
                s.label,
                s.text,
                fired,
                String::from_utf8_lossy(&out.bytes)
            );
        }
    }
}
