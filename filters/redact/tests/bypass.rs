//! What normalisation handles and what it does not: each documented claim is tested here
//! (see `src/normalize.rs` and README.md).

use cordon_redact::json::JsonVerdict;
use cordon_redact::{Direction, Engine, redact_request};
use std::sync::Arc;

fn engine() -> Arc<Engine> {
    Arc::new(Engine::default_set(b"k").unwrap())
}

fn detected(s: &str) -> Vec<String> {
    engine().redact(Direction::Request, s.as_bytes()).detections.iter().map(|d| d.detector.to_string()).collect()
}

// ---- handled ----

#[test]
fn zero_width_characters_are_removed() {
    for zw in ["\u{200B}", "\u{200C}", "\u{200D}", "\u{2060}", "\u{FEFF}", "\u{00AD}"] {
        let s = format!("4242{zw}4242{zw}4242{zw}4242");
        assert_eq!(detected(&s), vec!["card"], "{zw:?}");
    }
}

#[test]
fn fullwidth_forms_are_folded() {
    assert_eq!(detected("ＡＫＩＡＩＯＳＦＯＤＮＮ７ＥＸＡＭＰＬＥ"), vec!["aws_access_key"]);
    assert_eq!(detected("ｊｏｈｎ＠ｅｘａｍｐｌｅ．ｃｏｍ"), vec!["email"]);
}

#[test]
fn json_unicode_escapes_are_decoded() {
    let body = r#"{"messages":[{"role":"user","content":"\u006a\u006f\u0068\u006e\u0040example.com"}]}"#;
    match redact_request(&engine(), body.as_bytes()).unwrap() {
        JsonVerdict::Forward { detections, .. } => assert_eq!(detections.len(), 1),
        JsonVerdict::Block { .. } => panic!("no block configured"),
    }
}

#[test]
fn long_zero_width_runs_are_truncated_in_output() {
    let out = engine().redact(Direction::Request, "a\u{200B}\u{200B}\u{200B}\u{200B}b".as_bytes());
    assert_eq!(String::from_utf8(out.bytes).unwrap(), "a\u{200B}\u{200B}b");
}

// ---- not handled (documented bypasses) ----

#[test]
fn homoglyphs_are_not_normalised() {
    // Cyrillic А, К, І instead of Latin A, K, I.
    assert!(detected("\u{0410}\u{041A}\u{0406}\u{0410}IOSFODNN7EXAMPLE").iter().all(|d| d != "aws_access_key"));
    // Arabic-Indic digits.
    assert!(detected("٤٢٤٢ ٤٢٤٢ ٤٢٤٢ ٤٢٤٢").is_empty());
}

#[test]
fn base64_is_not_decoded() {
    // base64("4242 4242 4242 4242") and base64("john@example.com")
    assert!(detected("NDI0MiA0MjQyIDQyNDIgNDI0Mg==").is_empty());
    assert!(detected("am9obkBleGFtcGxlLmNvbQ==").is_empty());
}

#[test]
fn url_encoding_and_html_entities_are_not_decoded() {
    assert!(detected("mailto:john%40example.com").is_empty());
    assert!(detected("john&#64;example.com").is_empty());
    assert!(detected("4242%204242%204242%204242").iter().all(|d| d != "card"));
}

#[test]
fn spelled_out_values_are_not_detected() {
    assert!(detected("john at example dot com").is_empty());
    assert!(detected("four two four two, four two four two").is_empty());
}

#[test]
fn invalid_utf8_passes_through_unchanged() {
    let input = b"ok \xff\xfe 4242 4242 4242 4242 \xc3";
    let out = engine().redact(Direction::Response, input);
    assert_eq!(out.bytes, b"ok \xff\xfe [CARD] \xc3".to_vec());
}
