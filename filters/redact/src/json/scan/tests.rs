use super::*;
use proptest::prelude::*;
use serde_json::Value;

fn pointer(path: &[Seg]) -> String {
    path.iter()
        .map(|s| match s {
            Seg::Key(k) => format!("/{}", k.replace('~', "~0").replace('/', "~1")),
            Seg::Idx(i) => format!("/{i}"),
        })
        .collect()
}

fn strings_of(doc: &[u8]) -> Result<Vec<(String, String)>, ScanError> {
    struct V<'d>(&'d [u8], Vec<(String, String)>);
    impl<'a> Visit<'a> for V<'_> {
        fn value(&mut self, path: &[Seg<'a>], kind: &Kind) {
            if let Kind::Str { raw, .. } = kind {
                self.1.push((pointer(path), decode(&self.0[raw.clone()]).into_owned()));
            }
        }
    }
    let mut v = V(doc, Vec::new());
    scan(doc, &mut v)?;
    Ok(v.1)
}

fn serde_strings(v: &Value, at: String, out: &mut Vec<(String, String)>) {
    match v {
        Value::String(s) => out.push((at, s.clone())),
        Value::Array(a) => a.iter().enumerate().for_each(|(i, x)| serde_strings(x, format!("{at}/{i}"), out)),
        Value::Object(m) => m.iter().for_each(|(k, x)| serde_strings(x, format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")), out)),
        _ => {}
    }
}

/// Whether serde_json accepts the document (the reference), or `None` for the one documented
/// difference (a number too large for an f64).
fn reference(doc: &[u8]) -> Option<bool> {
    match serde_json::from_slice::<Value>(doc) {
        Ok(_) => Some(true),
        Err(e) if e.to_string().contains("number out of range") => None,
        Err(_) => Some(false),
    }
}

#[test]
fn strict_where_serde_is_strict() {
    let bad: &[&[u8]] = &[
        b"",
        b" ",
        b"{",
        b"{\"a\":1,}",
        b"[1,]",
        b"[01]",
        b"[1.]",
        b"[.5]",
        b"[1e]",
        b"[-]",
        b"[+1]",
        b"{\"a\" 1}",
        b"{a:1}",
        b"\"\\ud800\"",
        b"\"\\udc00\"",
        b"\"\\ud800\\u0041\"",
        b"\"\\x\"",
        b"\"\\u12\"",
        b"\"a\nb\"",
        b"\"\xff\"",
        b"\"\xc3\"",
        b"[tru]",
        b"nul",
        b"{} {}",
        b"[1] x",
        b"'a'",
        b"[NaN]",
    ];
    for d in bad {
        assert_eq!(reference(d), Some(false), "reference accepts {:?}", String::from_utf8_lossy(d));
        assert!(strings_of(d).is_err(), "scanner accepts {:?}", String::from_utf8_lossy(d));
    }
    let good: &[&[u8]] = &[
        b"0",
        b" -0.5e+10 ",
        b"\"\"",
        b"\"\\ud83d\\ude00 \\u00e9 \\/ \\\" \xc3\xa9\"",
        b"{\"a\":[1,{\"b\":null,\"c\":true,\"d\":false}],\"\":\"x\"}",
        b"[[],{},[{}]]",
    ];
    for d in good {
        assert_eq!(reference(d), Some(true));
        let mut want = Vec::new();
        serde_strings(&serde_json::from_slice(d).unwrap(), String::new(), &mut want);
        assert_eq!(strings_of(d).unwrap(), want, "{:?}", String::from_utf8_lossy(d));
    }
}

#[test]
fn every_lane_of_the_wide_string_search() {
    for len in 0..20 {
        for at in 0..len {
            for (c, ok) in [(b'\x01', false), (b'\x1f', false), (b'\n', false), (b'\x7f', true), (b' ', true), (b'!', true), (b'#', true)] {
                let mut doc = vec![b'"'];
                doc.extend((0..len).map(|i| if i == at { c } else { b"az~Z"[i % 4] }));
                doc.push(b'"');
                assert_eq!(strings_of(&doc).is_ok(), ok, "{c:#x} at {at} of {len}");
            }
            // A quote ends the string there (what follows is trailing), an escape is read.
            let mut doc: Vec<u8> = std::iter::once(b'"').chain((0..len).map(|i| if i == at { b'"' } else { b'x' })).chain(*b"\"").collect();
            assert_eq!(strings_of(&doc).unwrap_err().what, "trailing characters");
            doc[at + 1] = b'\\';
            doc.insert(at + 2, b'"');
            assert_eq!(strings_of(&doc).unwrap()[0].1.len(), len, "escaped quote at {at} of {len}");
        }
    }
}

#[test]
fn depth_limit_is_serdes() {
    for n in [126, 127, 128, 129] {
        let doc = format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert_eq!(strings_of(doc.as_bytes()).is_ok(), reference(doc.as_bytes()).unwrap(), "depth {n}");
    }
    // Far past the limit: an error, not a stack overflow.
    assert!(strings_of("[".repeat(1 << 20).as_bytes()).is_err());
}

#[test]
fn containers_close_with_their_span() {
    struct C(Vec<(String, Range<usize>)>);
    impl<'a> Visit<'a> for C {
        fn value(&mut self, _: &[Seg<'a>], _: &Kind) {}
        fn close(&mut self, path: &[Seg<'a>], raw: Range<usize>) {
            self.0.push((pointer(path), raw));
        }
    }
    let doc = br#"{"id": {"a": [1, 2]} , "x": []}"#;
    let mut c = C(Vec::new());
    scan(doc, &mut c).unwrap();
    let spans: Vec<(String, &str)> = c.0.iter().map(|(p, r)| (p.clone(), std::str::from_utf8(&doc[r.clone()]).unwrap())).collect();
    assert_eq!(
        spans,
        [("/id/a".into(), "[1, 2]"), ("/id".into(), r#"{"a": [1, 2]}"#), ("/x".into(), "[]"), ("".into(), &*String::from_utf8_lossy(doc))]
    );
}

/// Pieces that make near-JSON: most random documents are almost valid, so both acceptance and
/// every kind of refusal are exercised.
fn piece() -> impl Strategy<Value = &'static str> {
    prop::sample::select(
        &[
            "{",
            "}",
            "[",
            "]",
            ",",
            ":",
            " ",
            "\"",
            "\"a\"",
            "\"k\":",
            "1",
            "-",
            "0",
            ".",
            "e",
            "+",
            "2",
            "true",
            "false",
            "null",
            "\\",
            "\\u",
            "d83d",
            "de00",
            "dc00",
            "00e9",
            "\\n",
            "\\\"",
            "é",
            "\u{1F600}",
            "\n",
            "x",
        ][..],
    )
}

fn valid_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((any::<String>(), inner), 0..6).prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

    /// The scanner accepts exactly what serde_json accepts.
    #[test]
    fn accepts_what_serde_accepts(parts in prop::collection::vec(piece(), 1..24)) {
        let doc = parts.concat();
        if let Some(ok) = reference(doc.as_bytes()) {
            prop_assert_eq!(strings_of(doc.as_bytes()).is_ok(), ok, "{:?}", doc);
        }
    }

    /// Arbitrary bytes too (invalid UTF-8 anywhere).
    #[test]
    fn accepts_what_serde_accepts_bytes(doc in prop::collection::vec(prop::sample::select(&b"{}[],:\" \\u0d8e1-.ntrfalsx\xc3\xa9\xff"[..]), 0..40)) {
        if let Some(ok) = reference(&doc) {
            prop_assert_eq!(strings_of(&doc).is_ok(), ok, "{:?}", String::from_utf8_lossy(&doc));
        }
    }

    /// On valid documents, every string is found at its path and decodes to serde_json's text,
    /// compact or pretty, escaped or not.
    #[test]
    fn strings_and_paths_match_serde(v in valid_json(), pretty in any::<bool>()) {
        let doc = if pretty { serde_json::to_vec_pretty(&v).unwrap() } else { serde_json::to_vec(&v).unwrap() };
        let mut want = Vec::new();
        serde_strings(&v, String::new(), &mut want);
        prop_assert_eq!(strings_of(&doc).unwrap(), want);
    }
}

proptest! {
    /// A number reads as an index as `str::parse::<u64>` reads its digits (the reading before
    /// the digits were folded by hand): overflow, signs, fractions and exponents included.
    #[test]
    fn as_u64_is_parse(raw in prop_oneof![
        "-?(0|[1-9][0-9]{0,21})(\\.[0-9]{1,3})?([eE][+-]?[0-9]{1,2})?",
        Just("18446744073709551615".to_string()),
        Just("18446744073709551616".to_string()),
    ]) {
        let parsed = if raw == "-0" {
            Some(0)
        } else if !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit()) {
            raw.parse::<u64>().ok()
        } else {
            None
        };
        prop_assert_eq!(as_u64(raw.as_bytes()), parsed);
    }
}
