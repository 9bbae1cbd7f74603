//! Precision and recall per detector on the generated labelled corpus.
//!
//! `cargo run -p cordon-redact --example corpus_report [-- samples-per-detector]`

use cordon_redact::Engine;
use cordon_redact::corpus::{evaluate, generate};
use std::sync::Arc;

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let engine = Arc::new(Engine::default_set(b"corpus").expect("default set"));
    let samples = generate(n, 0xC0D0);
    let scores = evaluate(&engine, &samples);
    println!("{} samples ({n} positives + {n} hard negatives per detector), default set", samples.len());
    println!("{:<16} {:>6} {:>6} {:>6} {:>10} {:>8}", "detector", "TP", "FP", "FN", "precision", "recall");
    for (name, s) in &scores {
        println!("{name:<16} {:>6} {:>6} {:>6} {:>10.4} {:>8.4}", s.tp, s.fp, s.fn_, s.precision(), s.recall());
    }
}
