//! The structured detectors meet recall >= 0.99 and precision >= 0.98 on the generated corpus.

use cordon_redact::Engine;
use cordon_redact::corpus::{evaluate, generate};
use std::sync::Arc;

#[test]
fn structured_detectors_meet_goals() {
    let engine = Arc::new(Engine::default_set(b"corpus").unwrap());
    let samples = generate(150, 7);
    let scores = evaluate(&engine, &samples);
    let mut failures = Vec::new();
    for (name, s) in &scores {
        println!("{name:<16} tp={} fp={} fn={} precision={:.4} recall={:.4}", s.tp, s.fp, s.fn_, s.precision(), s.recall());
        if s.recall() < 0.99 || s.precision() < 0.98 {
            failures.push(name.clone());
        }
    }
    assert_eq!(scores.len(), 16, "every built-in has samples");
    assert!(failures.is_empty(), "below goal: {failures:?}");
}
