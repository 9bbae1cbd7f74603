//! The one-pass JSON scanner accepts exactly what serde_json accepts (bar one documented case: a
//! number too large for an f64), and on accepted documents finds every string serde_json finds,
//! decoded the same.
#![no_main]

use cordon_redact::json::Seg;
use cordon_redact::json::scan::{Kind, Visit, decode, scan};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

struct Strings<'d>(&'d [u8], Vec<String>);

impl<'a> Visit<'a> for Strings<'_> {
    fn value(&mut self, _: &[Seg<'a>], kind: &Kind) {
        if let Kind::Str { raw, .. } = kind {
            self.1.push(decode(self.0.get(raw.clone()).unwrap_or_default()).into_owned());
        }
    }
}

fn strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        Value::Object(m) => m.values().for_each(|x| strings(x, out)),
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let reference = serde_json::from_slice::<Value>(data);
    if let Err(e) = &reference
        && e.to_string().contains("number out of range")
    {
        return;
    }
    let mut ours = Strings(data, Vec::new());
    let scanned = scan(data, &mut ours);
    assert_eq!(scanned.is_ok(), reference.is_ok(), "scanner {scanned:?} vs serde_json {reference:?}");
    if let Ok(v) = reference {
        // Duplicate keys: serde_json keeps the last value, the scanner reports every one.
        let mut theirs = Vec::new();
        strings(&v, &mut theirs);
        if theirs.len() == ours.1.len() {
            assert_eq!(ours.1, theirs);
        } else {
            assert!(theirs.iter().all(|s| ours.1.contains(s)));
        }
    }
});
