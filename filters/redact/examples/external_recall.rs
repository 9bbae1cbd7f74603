//! Per-detector recall and false positives on public test vectors written by others
//! (`tests/data/*/`), as the markdown table in docs/benchmarks.md.
//!
//! `cargo run -p cordon-redact --release --example external_recall`

#[path = "../tests/external_eval/mod.rs"]
mod external_eval;

use std::path::Path;

fn main() {
    let rows = external_eval::evaluate(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data"));
    println!("| detector | source | format / negative class | claimed | n | recall | false positives | goal |");
    println!("| --- | --- | --- | --- | ---: | ---: | ---: | --- |");
    for r in &rows {
        let (recall, fp) =
            if r.positive { (format!("{:.4}", r.rate()), String::new()) } else { (String::new(), format!("{:.4}", r.rate())) };
        let goal = match (r.claimed, r.meets_goal()) {
            (false, _) => "not claimed",
            (true, true) => "met",
            (true, false) => "**missed**",
        };
        println!(
            "| `{}` | {} | {} | {} | {} | {recall} | {fp} | {goal} |",
            r.detector,
            r.source,
            r.format,
            if r.claimed { "yes" } else { "no" },
            r.n
        );
    }
}
