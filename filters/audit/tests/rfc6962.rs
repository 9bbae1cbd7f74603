//! The Merkle code against the public RFC 6962 proof vectors of transparency-dev/merkle
//! (tests/data/rfc6962, Apache-2.0): every happy path verifies, every other case is rejected.

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use cordon_audit::Hash;
use cordon_audit::merkle::{verify_consistency, verify_inclusion};
use serde::Deserialize;
use sha2::{Digest, Sha256};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Inclusion {
    leaf_idx: u64,
    tree_size: u64,
    root: String,
    leaf_hash: String,
    proof: Option<Vec<String>>,
    desc: String,
    want_err: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Consistency {
    size1: u64,
    size2: u64,
    root1: String,
    root2: String,
    proof: Option<Vec<String>>,
    desc: String,
    want_err: bool,
}

/// Leaf hashes and proof nodes are typed `[u8; 32]` in the API, so a vector holding one of
/// another length is rejected where it is decoded (the reference code rejects it with a size
/// check too).
fn strict(b64: &str) -> Option<Hash> {
    Hash::try_from(STANDARD.decode(b64).unwrap().as_slice()).ok()
}

/// Roots are compared as opaque values in the vectors, some of them placeholders of other
/// lengths ("don't care 1", ""). A 32-byte root passes through; any other is mapped injectively
/// to 32 bytes, so equal placeholders stay equal and none can equal a real hash: the verifier,
/// not the decoder, has to reject those cases.
fn root(b64: &str) -> Hash {
    let raw = STANDARD.decode(b64).unwrap();
    match Hash::try_from(raw.as_slice()) {
        Ok(h) => h,
        Err(_) => Sha256::new().chain_update(b"not a 32-byte value:").chain_update(&raw).finalize().into(),
    }
}

fn proof(p: Option<Vec<String>>) -> Option<Vec<Hash>> {
    p.unwrap_or_default().iter().map(|s| strict(s)).collect()
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|x| x == "json") {
            out.push(p);
        }
    }
}

fn vectors(kind: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/rfc6962").join(kind), &mut out);
    out.sort();
    out
}

#[test]
fn inclusion_vectors() {
    let paths = vectors("inclusion");
    assert_eq!(paths.len(), 98, "the vector set is incomplete");
    let (mut happy, mut rejected) = (0, 0);
    for p in &paths {
        let v: Inclusion = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
        let got = match (strict(&v.leaf_hash), proof(v.proof)) {
            (Some(leaf), Some(path)) => verify_inclusion(&leaf, v.leaf_idx, v.tree_size, &path, &root(&v.root)).map_err(|e| e.to_string()),
            _ => Err("not a 32-byte hash".to_owned()),
        };
        assert_eq!(got.is_err(), v.want_err, "{} ({}): {got:?}", p.display(), v.desc);
        if v.want_err { rejected += 1 } else { happy += 1 }
    }
    assert_eq!((happy, rejected), (6, 92));
}

#[test]
fn consistency_vectors() {
    let paths = vectors("consistency");
    assert_eq!(paths.len(), 98, "the vector set is incomplete");
    let (mut happy, mut rejected) = (0, 0);
    for p in &paths {
        let v: Consistency = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
        let got = match proof(v.proof) {
            Some(path) => verify_consistency(v.size1, v.size2, &path, &root(&v.root1), &root(&v.root2)).map_err(|e| e.to_string()),
            None => Err("not a 32-byte hash".to_owned()),
        };
        assert_eq!(got.is_err(), v.want_err, "{} ({}): {got:?}", p.display(), v.desc);
        if v.want_err { rejected += 1 } else { happy += 1 }
    }
    assert_eq!((happy, rejected), (6, 92));
}
