//! Recall ≥ 0.99 on every format docs/redaction.md claims and false positives ≤ 1 % on the
//! negative classes, measured on public test vectors written by others (`tests/data/`).

mod external_eval;

use std::path::Path;

#[test]
fn public_test_vectors_meet_goals() {
    let rows = external_eval::evaluate(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data"));
    let mut failures = Vec::new();
    for r in &rows {
        println!(
            "{:<6} {:<22} {:<40} {} n={:<4} rate={:.4} {:?}",
            r.detector,
            r.source,
            r.format,
            if r.positive { "recall" } else { "fp    " },
            r.n,
            r.rate(),
            r.misses
        );
        if !r.meets_goal() {
            failures.push(format!("{} / {} / {}: {:.4} on {} ({:?})", r.detector, r.source, r.format, r.rate(), r.n, r.misses));
        }
    }
    assert!(rows.iter().filter(|r| r.claimed).count() >= 8, "claimed formats measured");
    assert!(failures.is_empty(), "below goal:\n{}", failures.join("\n"));
}
