//! The chain, batch signatures and tree heads: accepted when honest, and each kind of
//! tampering named.

mod common;

use common::*;
use cordon_audit::batch::{BatchError, NodeKeys};
use cordon_audit::chain::{Chain, ChainError, ChainVerifier, Sealed};
use cordon_audit::encoding::{decode, encode};
use cordon_audit::entry::{Body, GapReason};
use cordon_audit::head::{HeadError, TreeHead};
use cordon_audit::keys::{PublicKey, Signer};
use cordon_audit::merkle::Tree;

fn sealed_chain(n: u64) -> Vec<Sealed> {
    let mut chain = Chain::genesis(id("envoy-a"));
    (0..n).map(|i| chain.seal_record(1000 + i, example_record()).unwrap()).collect()
}

fn verify_all(entries: &[Sealed]) -> Result<(), ChainError> {
    let mut v = ChainVerifier::genesis(id("envoy-a"));
    for s in entries {
        v.check(&decode(&s.bytes).unwrap(), &s.bytes)?;
    }
    Ok(())
}

#[test]
fn an_honest_chain_with_a_gap_verifies() {
    let mut chain = Chain::genesis(id("envoy-a"));
    let mut out = vec![chain.seal_record(1, example_record()).unwrap()];
    assert_eq!(chain.drop_record(GapReason::BufferFull), 1);
    assert_eq!(chain.drop_record(GapReason::BufferFull), 2);
    assert_eq!(chain.seal_record(2, example_record()), Err(ChainError::GapPending { from: 1, to: 2 }));
    let gap = chain.seal_gap(3).unwrap();
    assert_eq!(gap.seq, 3);
    assert!(matches!(decode(&gap.bytes).unwrap().body, Body::Gap(ref g) if (g.from, g.to) == (1, 2)));
    out.push(gap);
    out.push(chain.seal_record(4, example_record()).unwrap());
    assert_eq!(out.last().unwrap().seq, 4);
    verify_all(&out).unwrap();
}

#[test]
fn each_kind_of_break_is_named() {
    let honest = sealed_chain(5);
    let node = id("envoy-a");

    let mut deleted = honest.clone();
    deleted.remove(2);
    assert_eq!(verify_all(&deleted), Err(ChainError::Missing { node: node.clone(), from: 2, to: 2, next: 3 }));

    let mut reordered = honest.clone();
    reordered.swap(2, 3);
    assert_eq!(verify_all(&reordered), Err(ChainError::Missing { node: node.clone(), from: 2, to: 2, next: 3 }));

    let mut duplicated = honest.clone();
    duplicated.insert(3, honest[2].clone());
    assert_eq!(verify_all(&duplicated), Err(ChainError::Replayed { node: node.clone(), seq: 2, last: 2 }));

    // Change a field and re-encode: the entry itself is canonical, the next one no longer links.
    let mut altered = honest.clone();
    let mut e = decode(&altered[2].bytes).unwrap();
    e.time_ms += 1;
    altered[2].bytes = encode(&e);
    assert_eq!(verify_all(&altered), Err(ChainError::WrongPrev { node: node.clone(), seq: 3 }));

    // A forged gap that claims a range not starting where the chain stood.
    let mut forged = Chain::resume(node.clone(), 2, honest[1].hash);
    forged.drop_record(GapReason::Shutdown);
    forged.drop_record(GapReason::Shutdown);
    let mut gapped = honest[..2].to_vec();
    gapped.push(honest[2].clone());
    gapped.push(forged.seal_gap(9).unwrap());
    assert!(matches!(verify_all(&gapped), Err(ChainError::GapMismatch { seq: 4, from: 2, to: 3, expected: 3, .. })));
}

#[test]
fn batches_verify_and_name_what_is_wrong() {
    let signer = Signer::from_seed(&[1; 32]);
    let other = Signer::from_seed(&[2; 32]);
    let mut keys = NodeKeys::default();
    keys.add(id("envoy-a"), &signer.public_key()).unwrap();
    keys.add(id("envoy-b"), &other.public_key()).unwrap();

    let entries: Vec<Vec<u8>> = sealed_chain(3).into_iter().map(|s| s.bytes).collect();
    let batch = signer.sign_batch(&id("envoy-a"), 0, entries.clone());
    assert_eq!(keys.verify(&batch).unwrap().len(), 3);
    assert!(batch.key_id.starts_with("ed25519:") && batch.key_id.len() == 24);

    let mut altered = batch.clone();
    altered.entries[1][40] ^= 1;
    assert!(matches!(keys.verify(&altered), Err(BatchError::BadSignature { first_seq: 0, last_seq: 2, .. })));

    let unknown = Signer::from_seed(&[3; 32]).sign_batch(&id("envoy-a"), 0, entries.clone());
    assert!(matches!(keys.verify(&unknown), Err(BatchError::UnknownKey { .. })));

    let foreign = other.sign_batch(&id("envoy-a"), 0, entries.clone());
    assert!(matches!(keys.verify(&foreign), Err(BatchError::KeyNotForNode { ref owner, .. }) if owner.as_str() == "envoy-b"));

    let shifted = signer.sign_batch(&id("envoy-a"), 1, entries);
    assert!(matches!(keys.verify(&shifted), Err(BatchError::Misplaced { index: 0, entry_seq: 0, .. })));
}

#[test]
fn tree_heads_verify_and_forgeries_fail() {
    let cp = Signer::from_seed(&[9; 32]);
    let cp_key = PublicKey::from_bytes(&cp.public_key()).unwrap();
    let mut tree = Tree::new();
    for s in sealed_chain(4) {
        tree.append(&s.bytes);
    }
    let sth = cp.sign_head(TreeHead { size: 4, root: tree.root(), time_ms: 5 });
    sth.verify(&cp_key).unwrap();

    let mut forged = sth.clone();
    forged.head.size = 3;
    assert_eq!(forged.verify(&cp_key), Err(HeadError::BadSignature { size: 3 }));

    let other = Signer::from_seed(&[8; 32]).sign_head(sth.head);
    assert!(matches!(other.verify(&cp_key), Err(HeadError::WrongKey { .. })));
}

#[test]
fn key_id_matches_the_bundle_scheme() {
    // ed25519: + first 16 hex digits of SHA-256 of the public key, as cordon_core::bundle::key_id.
    let pk = [0u8; 32];
    assert_eq!(cordon_audit::key_id(&pk), "ed25519:66687aadf862bd77");
}

#[test]
fn a_restart_gap_names_a_whole_range_in_one_step_and_verifies() {
    let mut chain = Chain::resume(id("envoy-a"), 5, [7; 32]);
    chain.drop_records(0, GapReason::Restart);
    assert_eq!(chain.pending_gap(), None, "nothing claimed, nothing to name");
    chain.drop_records(3, GapReason::Restart);
    assert_eq!(chain.pending_gap(), Some((5, 7)));
    let gap = chain.seal_gap(10).unwrap();
    assert_eq!(gap.seq, 8);
    let entry = decode(&gap.bytes).unwrap();
    assert!(matches!(entry.body, Body::Gap(ref g) if (g.from, g.to, g.reason) == (5, 7, GapReason::Restart)), "{entry:?}");
    let mut v = ChainVerifier::resume(id("envoy-a"), 5, [7; 32]);
    v.check(&entry, &gap.bytes).unwrap();
    // A claim beyond any real chain costs nothing to name (no loop over the numbers).
    let mut far = Chain::resume(id("envoy-a"), 0, [0; 32]);
    far.drop_records(u64::MAX, GapReason::Restart);
    assert_eq!(far.pending_gap(), Some((0, u64::MAX - 1)));
}
