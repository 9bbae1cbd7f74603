//! The formats table of docs/redaction.md is checked against the engine: every `yes` example
//! comes out as exactly its detector's placeholder, every `no` example does not fire it.

use cordon_redact::{Direction, Engine};
use std::sync::Arc;

const DOC: &str = include_str!("../../../docs/redaction.md");

#[test]
fn formats_table_matches_the_engine() {
    let engine = Arc::new(Engine::default_set(b"doc").unwrap());
    let table =
        DOC.split("<!-- formats:begin -->").nth(1).and_then(|t| t.split("<!-- formats:end -->").next()).expect("formats table markers");
    let mut rows = 0;
    let mut wrong = Vec::new();
    for line in table.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.trim_matches('|').split(" | ").map(str::trim).collect();
        let [det, _format, example, caught] = cells[..] else { panic!("bad row {line:?}") };
        let (det, example) = (det.trim_matches('`'), example.trim_matches('`'));
        let out = engine.redact(Direction::Response, example.as_bytes());
        let text = String::from_utf8(out.bytes).unwrap();
        let fired = out.detections.iter().any(|d| &*d.detector == det);
        let whole = fired && text == format!("[{}]", det.to_uppercase());
        match caught {
            "yes" if !whole => wrong.push(format!("{det} {example:?} should be caught -> {text:?}")),
            "no" if fired => wrong.push(format!("{det} {example:?} should not be caught -> {text:?}")),
            "yes" | "no" => {}
            other => panic!("caught must be yes or no, got {other:?}"),
        }
        rows += 1;
    }
    assert!(rows >= 40, "only {rows} rows read");
    assert!(wrong.is_empty(), "docs/redaction.md formats table disagrees with the engine:\n{}", wrong.join("\n"));
}
