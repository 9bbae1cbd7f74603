//! Audit ingestion against a real server: acks, replay, skip-ahead, gaps, node keys, and
//! tampering with the SQLite rows behind the server's back.

mod support;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use cordon_audit::encoding::{decode, encode};
use cordon_audit::entry::Body;
use cordon_audit::export::{Trust, parse_head, parse_public_key, verify_export};
use cordon_audit::merkle::{leaf_hash, verify_inclusion};
use cordon_audit::record::Decision;
use cordon_control_plane::server::Running;
use cordon_control_plane::store::SqliteStore;
use cordon_proto::admin::v1::*;
use std::path::Path;
use std::sync::Arc;
use support::audit::AuditNode;
use support::server::*;

async fn register(r: &Running, node: &AuditNode) {
    let req = RegisterNodeKeyRequest { node_id: node.id.clone(), public_key: node.public_key_b64() };
    admin(r).await.register_node_key(authed(req, OPS_TOKEN)).await.unwrap();
}

async fn verify(r: &Running) -> AuditVerifyResponse {
    admin(r).await.audit_verify(authed(AuditVerifyRequest {}, AUDIT_TOKEN)).await.unwrap().into_inner()
}

async fn audit_state(r: &Running, node: &str) -> AuditNodeState {
    let resp = admin(r).await.audit_nodes(authed(AuditNodesRequest {}, VIEW_TOKEN)).await.unwrap().into_inner();
    resp.nodes.into_iter().find(|n| n.node_id == node).unwrap_or_else(|| panic!("no audit state for {node}"))
}

fn trust_of(e: &AuditExportResponse) -> Trust {
    let mut nodes = cordon_audit::batch::NodeKeys::default();
    for k in &e.node_keys {
        let pk = parse_public_key(&k.public_key).unwrap();
        nodes.add(cordon_audit::record::Ident::new("node", &k.node_id).unwrap(), &pk.to_bytes()).unwrap();
    }
    Trust { nodes, control_plane: parse_public_key(&e.control_plane_key).unwrap(), pinned: vec![] }
}

#[tokio::test]
async fn batches_are_acked_replayed_gapped_and_keys_enforced() {
    let r = start().await;
    let mut n1 = AuditNode::connect(r.addr, "envoy-1", 1).await;
    let mut stranger = AuditNode::connect(r.addr, "envoy-x", 9).await;

    // Unknown key: refused, and the refusal is visible.
    let entries = stranger.seal(1, Decision::Allow);
    let ack = stranger.ship(stranger.batch(0, entries)).await;
    assert!(ack.error.contains("unknown key") && ack.error.contains("cordonctl nodes register"), "{}", ack.error);
    assert_eq!(ack.next_seq, 0);
    let st = audit_state(&r, "envoy-x").await;
    assert_eq!(st.refused, 1);
    assert!(st.last_error.contains("unknown key"), "{}", st.last_error);

    register(&r, &n1).await;
    let entries = n1.seal(3, Decision::Allow);
    let batch = n1.batch(0, entries);
    let ack = n1.ship(batch.clone()).await;
    assert_eq!(ack.error, "");
    assert_eq!(ack.next_seq, 3);
    assert_eq!(ack.prev_hash, n1.chain.prev().to_vec(), "the ack carries the chain hash of the last stored entry");

    // Replay after a reconnect: acknowledged, not stored twice.
    let ack = n1.ship(batch).await;
    assert_eq!((ack.error.as_str(), ack.next_seq), ("", 3));
    assert_eq!(audit_state(&r, "envoy-1").await.entries, 3);

    // Skip-ahead: seq 5 without the gap entry for 3..=4 is refused with the expected seq.
    let mut ahead = cordon_audit::chain::Chain::resume(n1.node(), 5, n1.chain.prev());
    let sealed = ahead.seal_record(1, support::audit::record(5, Decision::Allow)).unwrap();
    let ack = n1.ship(n1.batch(5, vec![sealed.bytes])).await;
    assert!(ack.error.contains("3..=4 missing") && ack.error.contains("expects seq 3"), "{}", ack.error);
    assert_eq!(ack.next_seq, 3);

    // The gap entry for the dropped records is accepted, and the chain goes on after it.
    let gap = n1.gap(2);
    let mut entries = vec![gap];
    entries.extend(n1.seal(1, Decision::Refuse));
    let ack = n1.ship(n1.batch(5, entries)).await;
    assert_eq!(ack.error, "");
    assert_eq!(ack.next_seq, 7);
    assert_eq!(ack.prev_hash, n1.chain.prev().to_vec());

    // A restarted node resumes from the ack alone.
    let resumed = cordon_audit::chain::Chain::resume(n1.node(), ack.next_seq, ack.prev_hash.clone().try_into().unwrap());
    n1.chain = resumed;
    let entries = n1.seal(1, Decision::Allow);
    assert_eq!(n1.ship(n1.batch(7, entries)).await.error, "");

    // Query by node, decision.
    let q = AuditQueryRequest { node_id: "envoy-1".into(), decision: "refuse".into(), ..Default::default() };
    let found = admin(&r).await.audit_query(authed(q, AUDIT_TOKEN)).await.unwrap().into_inner().entries;
    assert_eq!(found.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![6]);
    let q = AuditQueryRequest { decision: "gap".into(), ..Default::default() };
    assert_eq!(admin(&r).await.audit_query(authed(q, AUDIT_TOKEN)).await.unwrap().into_inner().entries.len(), 1);

    // Verify, export, prove.
    let v = verify(&r).await;
    assert!(v.ok, "{:?}", v.problems);
    assert_eq!(v.entries, 6);
    let e = admin(&r).await.audit_export(authed(AuditExportRequest {}, AUDIT_TOKEN)).await.unwrap().into_inner();
    let summary = verify_export(&e.export, &trust_of(&e)).unwrap();
    assert_eq!(summary.entries, 6);
    assert_eq!(summary.gaps.len(), 1);
    let mut bytes = e.export.clone().into_bytes();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    let changed = String::from_utf8_lossy(&bytes).into_owned();
    assert!(verify_export(&changed, &trust_of(&e)).is_err(), "one changed byte must fail the export");

    let p = admin(&r)
        .await
        .audit_prove(authed(AuditProveRequest { node_id: "envoy-1".into(), seq: 6 }, AUDIT_TOKEN))
        .await
        .unwrap()
        .into_inner();
    let head = parse_head(&p.head).unwrap();
    head.verify(&parse_public_key(&e.control_plane_key).unwrap()).unwrap();
    let proof: Vec<[u8; 32]> = p.proof.iter().map(|h| STANDARD.decode(h).unwrap().try_into().unwrap()).collect();
    verify_inclusion(&leaf_hash(&STANDARD.decode(&p.entry).unwrap()), p.leaf, head.head.size, &proof, &head.head.root).unwrap();

    // Revoked key: refused and visible; the entries it signed before still verify.
    admin(&r).await.revoke_node_key(authed(RevokeNodeKeyRequest { node_id: "envoy-1".into() }, OPS_TOKEN)).await.unwrap();
    let entries = n1.seal(1, Decision::Allow);
    let ack = n1.ship(n1.batch(8, entries)).await;
    assert!(ack.error.contains("revoked"), "{}", ack.error);
    assert!(audit_state(&r, "envoy-1").await.last_error.contains("revoked"));
    assert!(verify(&r).await.ok);

    // Node-key changes are admin actions in the admin log.
    let log = admin(&r).await.admin_log(authed(AdminLogRequest::default(), AUDIT_TOKEN)).await.unwrap().into_inner();
    assert!(log.entries.iter().any(|e| e.action == "nodes register" && e.outcome == "ok"));
    assert!(log.entries.iter().any(|e| e.action == "nodes revoke" && e.target.starts_with("envoy-1")));
    r.shutdown().await;
}

/// A server on a file database holding 2 nodes x 3 records (leaves 0..=5, n1 first).
async fn trail(dir: &Path) -> Running {
    let store = Arc::new(SqliteStore::open(&dir.join("cordon.db")).unwrap());
    let r = start_with(store).await;
    for (id, seed) in [("n1", 1u8), ("n2", 2u8)] {
        let mut n = AuditNode::connect(r.addr, id, seed).await;
        register(&r, &n).await;
        let entries = n.seal(3, Decision::Allow);
        assert_eq!(n.ship(n.batch(0, entries)).await.error, "");
    }
    let v = verify(&r).await;
    assert!(v.ok, "{:?}", v.problems);
    r
}

fn attacker(dir: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(dir.join("cordon.db")).unwrap()
}

async fn problems(r: &Running) -> String {
    let v = verify(r).await;
    assert!(!v.ok, "verify must fail after tampering");
    v.problems.join("\n")
}

#[tokio::test]
async fn verify_names_an_edited_row() {
    let dir = tempfile::tempdir().unwrap();
    let r = trail(dir.path()).await;
    let db = attacker(dir.path());
    assert!(db.execute("UPDATE audit_entries SET status = 500 WHERE leaf = 1", []).is_err(), "the trigger refuses UPDATE");
    db.execute_batch("DROP TRIGGER audit_entries_no_update").unwrap();
    // A careful attacker re-encodes the entry and fixes every derived column and hash.
    let bytes: Vec<u8> = db.query_row("SELECT entry FROM audit_entries WHERE leaf = 1", [], |r| r.get(0)).unwrap();
    let mut entry = decode(&bytes).unwrap();
    if let Body::Record(rec) = &mut entry.body {
        rec.status = Some(500);
    }
    let forged = encode(&entry);
    db.execute(
        "UPDATE audit_entries SET entry = ?1, status = 500, leaf_hash = ?2, chain_hash = ?3 WHERE leaf = 1",
        rusqlite::params![forged, leaf_hash(&forged).to_vec(), cordon_audit::chain::chain_hash(&forged).to_vec()],
    )
    .unwrap();
    let p = problems(&r).await;
    assert!(p.contains("leaf 2 (node n1 seq 2)") && p.contains("does not link"), "{p}");
    assert!(p.contains("signature by") && p.contains("does not verify"), "{p}");
    r.shutdown().await;
}

#[tokio::test]
async fn verify_names_a_deleted_row() {
    let dir = tempfile::tempdir().unwrap();
    let r = trail(dir.path()).await;
    let db = attacker(dir.path());
    assert!(db.execute("DELETE FROM audit_entries WHERE leaf = 1", []).is_err(), "the trigger refuses DELETE");
    db.execute_batch("DROP TRIGGER audit_entries_no_delete").unwrap();
    db.execute("DELETE FROM audit_entries WHERE leaf = 1", []).unwrap();
    let p = problems(&r).await;
    assert!(p.contains("leaf 1 is missing before leaf 2 (node n1 seq 2)"), "{p}");
    assert!(p.contains("covers seq 1, which is not in the export"), "{p}");
    r.shutdown().await;
}

#[tokio::test]
async fn verify_names_an_inserted_row() {
    let dir = tempfile::tempdir().unwrap();
    let r = trail(dir.path()).await;
    let db = attacker(dir.path());
    // A forged entry continuing n1's chain, signed by nobody the control plane trusts.
    let mut forger = cordon_audit::chain::Chain::resume(cordon_audit::record::Ident::new("node", "n1").unwrap(), 3, {
        let h: Vec<u8> = db.query_row("SELECT chain_hash FROM audit_entries WHERE node = 'n1' AND seq = 2", [], |r| r.get(0)).unwrap();
        h.try_into().unwrap()
    });
    let s = forger.seal_record(1, support::audit::record(3, Decision::Allow)).unwrap();
    db.execute(
        "INSERT INTO audit_entries (leaf, node, seq, time_ms, decision, reason, model, team, user_name, status, entry, chain_hash, leaf_hash)
         VALUES (6, 'n1', 3, 1, 'allow', 'ok', 'gpt-4o', 'ml', 'alice', 200, ?1, ?2, ?3)",
        rusqlite::params![s.bytes, s.hash.to_vec(), leaf_hash(&s.bytes).to_vec()],
    )
    .unwrap();
    let p = problems(&r).await;
    assert!(p.contains("leaf 6 (node n1 seq 3): node n1 seq 3 is not covered by a valid batch signature"), "{p}");
    r.shutdown().await;
}

#[tokio::test]
async fn verify_names_reordered_rows() {
    let dir = tempfile::tempdir().unwrap();
    let r = trail(dir.path()).await;
    let db = attacker(dir.path());
    db.execute_batch(
        "DROP TRIGGER audit_entries_no_update;
         UPDATE audit_entries SET leaf = -1 WHERE leaf = 1;
         UPDATE audit_entries SET leaf = 1 WHERE leaf = 2;
         UPDATE audit_entries SET leaf = 2 WHERE leaf = -1;",
    )
    .unwrap();
    let p = problems(&r).await;
    assert!(p.contains("leaf 2 (node n1 seq 1)") && p.contains("reordered"), "{p}");
    r.shutdown().await;
}
