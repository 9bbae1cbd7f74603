//! The export and its offline verification: an honest export verifies; any changed byte, and
//! a deleted, inserted or reordered entry, is refused and named.
#![cfg(feature = "export")]

mod common;

use common::*;
use cordon_audit::export::{Problem, verify_export};
use proptest::prelude::*;

fn problems(text: &str, f: &Fixture) -> Vec<String> {
    verify_export(text, &f.trust).unwrap_err().iter().map(Problem::to_string).collect()
}

fn lines(f: &Fixture) -> Vec<String> {
    f.text.lines().map(str::to_owned).collect()
}

fn join(lines: &[String]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

#[test]
fn an_honest_export_verifies() {
    let f = fixture();
    let s = verify_export(&f.text, &f.trust).unwrap();
    assert_eq!((s.entries, s.records, s.heads), (7, 6, 3));
    assert_eq!(s.gaps.len(), 1);
    assert_eq!((s.gaps[0].1, s.gaps[0].2), (3, 4));
    assert_eq!(s.last_head.size, 7);
}

#[test]
fn a_deleted_entry_is_named() {
    let f = fixture();
    let mut l = lines(&f);
    l.remove(3); // leaf 2: envoy-a seq 1
    let p = problems(&join(&l), &f);
    assert!(p.iter().any(|m| m.starts_with("line 4: entry says it is leaf 3 but it is entry 2")), "{p:#?}");
    assert!(p.iter().any(|m| m.contains("covers seq 1, which is not in the export")), "{p:#?}");
    assert!(p.iter().any(|m| m.contains("envoy-a: seq 1..=1 missing")), "{p:#?}");
}

#[test]
fn an_inserted_entry_is_named() {
    let f = fixture();
    let mut l = lines(&f);
    let copy = l[3].replace("\"leaf\":2", "\"leaf\":3");
    l.insert(4, copy);
    let p = problems(&join(&l), &f);
    assert!(p.iter().any(|m| m.starts_with("line 5: node envoy-a seq 1 appears again (an identical copy of line 4)")), "{p:#?}");
}

#[test]
fn reordered_entries_are_named() {
    let f = fixture();
    let mut l = lines(&f);
    // leaves 2 and 3 are envoy-a seq 1 and 2; swap them with their leaf numbers fixed up.
    let (x, y) = (l[3].replace("\"leaf\":2", "\"leaf\":3"), l[4].replace("\"leaf\":3", "\"leaf\":2"));
    l[3] = y;
    l[4] = x;
    let p = problems(&join(&l), &f);
    assert!(p.iter().any(|m| m.starts_with("line 5: node envoy-a seq 1 comes after seq 2 (line 4): entries were reordered")), "{p:#?}");
    assert!(p.iter().any(|m| m.contains("do not give the root of the head of size 5")), "{p:#?}");
}

#[test]
fn a_rewritten_history_is_caught_by_a_pinned_head() {
    let mut f = fixture();
    // The reviewer holds the size-5 head; the control plane later exports only a
    // rewritten history (the first head and entries dropped).
    f.trust.pinned.push(f.heads[1].clone());
    verify_export(&f.text, &f.trust).unwrap();
    let mut other = fixture();
    other.trust.pinned.push(f.heads[1].clone());
    let mut l = lines(&other);
    l.truncate(4);
    let p = problems(&join(&l), &other);
    assert!(p.iter().any(|m| m.contains("fewer than the 5 of the head you hold")), "{p:#?}");
}

#[test]
fn a_missing_final_newline_or_extra_space_fails() {
    let f = fixture();
    assert!(verify_export(f.text.trim_end(), &f.trust).is_err());
    assert!(verify_export(&f.text.replacen(",", ", ", 1), &f.trust).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn changing_any_byte_fails(at in any::<usize>(), delta in 1u8..=255) {
        let f = fixture();
        let mut bytes = f.text.clone().into_bytes();
        let i = at % bytes.len();
        bytes[i] = bytes[i].wrapping_add(delta);
        // Bytes that are no longer UTF-8 cannot even be read as an export.
        if let Ok(text) = String::from_utf8(bytes) {
            prop_assert!(verify_export(&text, &f.trust).is_err(), "byte {} changed and the export still verified", i);
        }
    }
}

/// The honest export with its first `n` entries pruned by retention (content gone, place and
/// hashes kept), as the control plane writes it after `cordonctl audit retain`.
fn pruned(f: &Fixture, n: u64) -> Vec<String> {
    use base64::Engine;
    use cordon_audit::export::Line;
    let b64 = base64::engine::general_purpose::STANDARD;
    lines(f)
        .into_iter()
        .map(|l| match serde_json::from_str::<Line>(&l).unwrap() {
            Line::Entry { leaf, entry, proof } if leaf < n => {
                let bytes = b64.decode(&entry).unwrap();
                let e = cordon_audit::encoding::decode(&bytes).unwrap();
                Line::Pruned {
                    leaf,
                    node: e.node.as_str().to_owned(),
                    seq: e.seq,
                    chain_hash: b64.encode(cordon_audit::chain::chain_hash(&bytes)),
                    leaf_hash: b64.encode(cordon_audit::merkle::leaf_hash(&bytes)),
                    proof,
                }
                .to_json()
            }
            _ => l,
        })
        .collect()
}

#[test]
fn an_export_with_pruned_entries_still_verifies() {
    let f = fixture();
    let text = join(&pruned(&f, 4));
    assert!(text.contains("\"type\":\"pruned\""));
    let s = verify_export(&text, &f.trust).unwrap_or_else(|p| panic!("{p:?}"));
    assert_eq!((s.entries, s.pruned, s.records + s.pruned + s.gaps.len() as u64), (7, 4, 7));
}

#[test]
fn a_pruned_entry_cannot_be_swapped_or_removed() {
    let f = fixture();
    let honest = pruned(&f, 4);
    let with = |i: usize, from: &str, to: &str| {
        let mut l = honest.clone();
        l[i] = l[i].replacen(from, to, 1);
        assert_ne!(l[i], honest[i]);
        problems(&join(&l), &f).join("\n")
    };
    // Line 2 is leaf 0. Its chain hash is covered by the node's batch signature, its leaf hash
    // by the signed heads: neither can be changed.
    let chain = serde_json::from_str::<serde_json::Value>(&honest[1]).unwrap()["chain_hash"].as_str().unwrap().to_owned();
    let leaf = serde_json::from_str::<serde_json::Value>(&honest[1]).unwrap()["leaf_hash"].as_str().unwrap().to_owned();
    let flip = |h: &str| format!("{}{}", if h.starts_with('A') { "B" } else { "A" }, &h[1..]);
    assert!(with(1, &chain, &flip(&chain)).contains("signature"), "a forged chain hash breaks the batch signature");
    let p = with(1, &leaf, &flip(&leaf));
    assert!(p.contains("root") || p.contains("inclusion"), "{p}");
    let mut gone = honest.clone();
    gone.remove(1);
    assert!(!problems(&join(&gone), &f).is_empty(), "removing a pruned entry is caught");
}
