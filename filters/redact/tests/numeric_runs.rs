//! The streaming guarantee on text made of the run detectors' own alphabet: digits, the
//! separators numbers are written with, and capital letters (IBANs, the `KC24…` case the engine
//! fuzz target found). The fragments in `streaming.rs` are whole values, so two of them rarely
//! form one long numeric run; here every input is such runs, where a detector's prefilter can
//! count bytes before a candidate that streaming, starting from its scan position, does not see.

use cordon_redact::{Direction, Engine, Output, StreamRedactor};
use proptest::prelude::*;
use std::sync::Arc;

const ALPHABET: &[u8] = b"0123456789012345678901234567890123456789   --..()+/:ABCDEGKLNRTXZ\n";

fn runs() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop::sample::select(ALPHABET), 0..96)
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(192)
}

fn one_shot(e: &Arc<Engine>, input: &[u8]) -> Output {
    let mut s = StreamRedactor::new(e.clone(), Direction::Response);
    let mut out = s.push(input);
    out.extend(s.finish());
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    /// Streamed in any pieces, numeric runs are redacted exactly as in one piece, and nothing
    /// emitted early is later found to be part of a value.
    #[test]
    fn numeric_runs_split_anywhere_equal_one_shot(input in runs(), cuts in prop::collection::vec(any::<usize>(), 0..10)) {
        let engine = Arc::new(Engine::default_set(b"k").map_err(|e| TestCaseError::fail(e.to_string()))?);
        let one = one_shot(&engine, &input);
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
        cuts.sort();
        let mut s = StreamRedactor::new(engine.clone(), Direction::Response);
        let mut acc = Output::default();
        let mut prev = 0;
        for c in cuts.into_iter().chain(std::iter::once(input.len())) {
            acc.extend(s.push(&input[prev..c]));
            prev = c;
            prop_assert!(one.bytes.starts_with(&acc.bytes), "emitted prefix diverges: {:?}", String::from_utf8_lossy(&acc.bytes));
        }
        acc.extend(s.finish());
        prop_assert_eq!(String::from_utf8_lossy(&acc.bytes), String::from_utf8_lossy(&one.bytes));
    }

    /// Byte by byte, the hardest split.
    #[test]
    fn numeric_runs_byte_at_a_time_equal_one_shot(input in runs()) {
        let engine = Arc::new(Engine::default_set(b"k").map_err(|e| TestCaseError::fail(e.to_string()))?);
        let one = one_shot(&engine, &input);
        let mut s = StreamRedactor::new(engine.clone(), Direction::Response);
        let mut acc = Output::default();
        for b in &input {
            acc.extend(s.push(std::slice::from_ref(b)));
        }
        acc.extend(s.finish());
        prop_assert_eq!(String::from_utf8_lossy(&acc.bytes), String::from_utf8_lossy(&one.bytes));
    }
}
