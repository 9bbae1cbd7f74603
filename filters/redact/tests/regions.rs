//! Phone numbers in the national formats of the regions a policy names (`phone_regions`).

use cordon_redact::{ConfigError, Direction, Engine, RedactConfig, StreamRedactor};
use std::sync::Arc;

fn engine(regions: &[&str]) -> Arc<Engine> {
    let cfg = RedactConfig { phone_regions: regions.iter().map(|r| r.to_string()).collect(), ..RedactConfig::default() };
    Arc::new(Engine::new(&cfg, b"test-key").unwrap())
}

fn red(e: &Arc<Engine>, s: &str) -> String {
    String::from_utf8(e.redact(Direction::Response, s.as_bytes()).bytes).unwrap()
}

const SIX: &[&str] = &["US", "GB", "DE", "FR", "GR", "IN", "ES", "BR", "RU", "BY"];

#[test]
fn national_formats_of_named_regions() {
    let e = engine(SIX);
    for (text, want) in [
        ("GR 210 123 4567 ok", "GR [PHONE] ok"),
        ("GR 2101234567 ok", "GR [PHONE] ok"),
        ("ES 912 345 678 ok", "ES [PHONE] ok"),
        ("ES 612345678 ok", "ES [PHONE] ok"),
        ("DE 030 1234567 ok", "DE [PHONE] ok"),
        ("DE (030) 123 4567 ok", "DE [PHONE] ok"),
        ("FR 01 23 45 67 89 ok", "FR [PHONE] ok"),
        ("GB 020 7946 0958 ok", "GB [PHONE] ok"),
        ("US (415) 555-2671 ok", "US [PHONE] ok"),
        ("US 415.555.2671 ok", "US [PHONE] ok"),
        ("BR (11) 96123-4567 ok", "BR [PHONE] ok"),
        ("RU 8 (912) 345-67-89 ok", "RU [PHONE] ok"),
        ("BY 8 029 491-19-11 ok", "BY [PHONE] ok"),
        ("IN 098765 43210 ok", "IN [PHONE] ok"),
        // `+CC` forms stay for every country.
        ("+30 2101234567 and +81 3-1234-5678", "[PHONE] and [PHONE]"),
    ] {
        assert_eq!(red(&e, text), want, "{text}");
    }
}

#[test]
fn adjacent_values_with_regions() {
    let e = engine(SIX);
    assert_eq!(red(&engine(&["ES"]), "room 12 912 345 678"), "room 12 [PHONE]");
    // With Brazil named too, `12 91234 5678` is also a Brazilian mobile number: the short number
    // is taken in (nothing leaks).
    assert_eq!(red(&e, "room 12 912 345 678"), "room [PHONE]");
    assert_eq!(red(&e, "912 345 678 912 345 678"), "[PHONE] [PHONE]");
    assert_eq!(red(&e, "030 1234567 030 1234567"), "[PHONE] [PHONE]");
    assert_eq!(red(&e, "612345678, 4111 1111 1111 1111"), "[PHONE], [CARD]");
    assert_eq!(red(&e, "cards 4111111111111111 5555555555554444 end"), "cards [CARD] [CARD] end");
    assert_eq!(red(&e, "IBAN DE89 3704 0044 0532 0130 00"), "IBAN [IBAN]");
}

#[test]
fn dates_times_and_short_numbers_are_not_phones() {
    let e = engine(SIX);
    for text in ["on 2024-05-12 10:30", "v 1.2.3", "at 12:30:45", "ratio 2101234567/3", "pi 3.1415926535", "id 12345"] {
        assert_eq!(red(&e, text), text);
    }
}

#[test]
fn regions_replace_the_broad_national_default() {
    // Without regions, a trunk-0 number of 10-11 digits is a phone number anywhere; with `ES`
    // named, national numbers are Spain's (no trunk prefix, 9 digits).
    assert_eq!(red(&engine(&[]), "call 020 7946 0958"), "call [PHONE]");
    assert_eq!(red(&engine(&["ES"]), "call 020 7946 0958"), "call 020 7946 0958");
    assert_eq!(red(&engine(&["ES"]), "call 912 345 678"), "call [PHONE]");
    assert_eq!(red(&engine(&[]), "call 912 345 678"), "call 912 345 678");
}

#[test]
fn every_split_gives_the_one_shot_output() {
    let e = engine(SIX);
    let text = "a (030) 123 4567, 912 345 678 8 (912) 345-67-89 x 210 123 4567.";
    let whole = e.redact(Direction::Response, text.as_bytes());
    for cut in 0..=text.len() {
        let mut s = StreamRedactor::new(e.clone(), Direction::Response);
        let mut out = s.push(&text.as_bytes()[..cut]).bytes;
        out.extend(s.push(&text.as_bytes()[cut..]).bytes);
        out.extend(s.finish().bytes);
        assert_eq!(out, whole.bytes, "split at {cut}");
        assert!(s.held_bytes() <= s.holdback_bound());
    }
    assert_eq!(e.holdback_bound(), engine(&[]).holdback_bound(), "holdback bound unchanged");
}

#[test]
fn unknown_regions_are_rejected_with_their_position() {
    let cfg = RedactConfig { phone_regions: vec!["US".into(), "XX".into()], ..RedactConfig::default() };
    match Engine::new(&cfg, b"k") {
        Err(e @ ConfigError::UnknownPhoneRegion { index: 1, .. }) => {
            assert!(e.to_string().starts_with("phone_regions[1]: unknown region `XX`"))
        }
        other => panic!("{other:?}"),
    }
}

/// The "Phone numbers by region" table of docs/redaction.md against the engine.
#[test]
fn regions_table_matches_the_engine() {
    const DOC: &str = include_str!("../../../docs/redaction.md");
    let table = DOC.split("<!-- regions:begin -->").nth(1).and_then(|t| t.split("<!-- regions:end -->").next()).expect("markers");
    let default = engine(&[]);
    let mut rows = 0;
    for line in table.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.trim_matches('|').split(" | ").map(|c| c.trim().trim_matches('`')).collect();
        let [region, example, by_default] = cells[..] else { panic!("bad row {line:?}") };
        assert_eq!(red(&engine(&[region]), example), "[PHONE]", "{region} {example}");
        let fired = default.redact(Direction::Response, example.as_bytes()).detections.iter().any(|d| &*d.detector == "phone");
        assert_eq!(fired, by_default.starts_with("yes"), "default set on {example}");
        rows += 1;
    }
    assert!(rows >= 8);
}

mod split_invariance {
    use super::*;
    use proptest::prelude::*;

    /// Pieces of national numbers of the named regions, other values and near misses.
    const PIECES: &[&str] = &[
        "210 123 4567",
        "912 345 678",
        "(030) 123 4567",
        "8 (912) 345-67-89",
        "01 23 45 67 89",
        "4111 1111 1111 1111",
        "+30 2101234567",
        "12",
        "0",
        " ",
        "-",
        ".",
        "(",
        ")",
        ", ",
        "x",
        "2024-05-12 10:30",
        "3.1415926535",
        "john@example.com",
        "\u{200B}",
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn streaming_equals_one_shot_with_regions(
            parts in prop::collection::vec(prop::sample::select(PIECES), 0..14),
            cuts in prop::collection::vec(0usize..200, 0..6),
        ) {
            let e = engine(SIX);
            let text: String = parts.concat();
            let bytes = text.as_bytes();
            let whole = e.redact(Direction::Response, bytes);
            let mut points: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
            points.sort_unstable();
            let mut s = StreamRedactor::new(e.clone(), Direction::Response);
            let (mut out, mut last) = (Vec::new(), 0);
            for p in points {
                out.extend(s.push(&bytes[last..p]).bytes);
                prop_assert!(s.held_bytes() <= s.holdback_bound());
                last = p;
            }
            out.extend(s.push(&bytes[last..]).bytes);
            out.extend(s.finish().bytes);
            prop_assert_eq!(out, whole.bytes, "{:?}", text);
        }
    }
}
