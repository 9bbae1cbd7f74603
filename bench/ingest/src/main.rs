//! Audit ingest on one core: records/s through the control plane's full path (batch signature,
//! chain check, deduplication, SQLite append-only commit, Merkle append, head signing) against
//! a baseline measured in the same run: the same rows appended to a fresh store of the same
//! kind with no verification at all. The ratio is what verification costs; the goal (issue 9)
//! is >= 20,000 records/s for the full path.
//!
//! Run pinned to one core: `taskset -c 1 target/release/cordon-ingest-bench [records] [batch]`.

use base64::Engine;
use cordon_audit::chain::Chain;
use cordon_audit::encoding::decode;
use cordon_audit::keys::Signer;
use cordon_audit::merkle::leaf_hash;
use cordon_audit::record::{AuditRecord, Decision, Ident};
use cordon_control_plane::audit::AuditLog;
use cordon_control_plane::audit::ingest::columns;
use cordon_control_plane::audit::store::{AuditRow, AuditStore};
use cordon_control_plane::store::SqliteStore;
use cordon_proto::v1::AuditBatch;
use std::sync::Arc;
use std::time::Instant;

const NODE: &str = "bench-node";

fn record(i: u64) -> AuditRecord {
    let mut r = AuditRecord::new(Ident::escaped(&format!("req-{i:08}")), Decision::Allow, Ident::escaped("ok"));
    r.principal.user = Some(Ident::escaped("alice"));
    r.principal.team = Some(Ident::escaped("research"));
    r.principal.key_id = Some(Ident::escaped("k-alice"));
    r.model = Some(Ident::escaped("gpt-4o-mini"));
    r.route = Some(Ident::escaped("openai"));
    r.status = Some(200);
    r.duration_ms = 120;
    r.bytes_in = 400;
    r.bytes_out = 900;
    r
}

fn batches(n: u64, per: usize, signer: &Signer) -> Vec<AuditBatch> {
    let node = Ident::escaped(NODE);
    let mut chain = Chain::genesis(node.clone());
    let mut out = Vec::new();
    let mut pending = Vec::with_capacity(per);
    let mut first = 0;
    for i in 0..n {
        let s = chain.seal_record(1_796_036_400_000 + i, record(i)).unwrap_or_else(|e| panic!("{e}"));
        if pending.is_empty() {
            first = s.seq;
        }
        pending.push(s.bytes);
        if pending.len() == per || i + 1 == n {
            let b = signer.sign_batch(&node, first, std::mem::take(&mut pending));
            out.push(AuditBatch {
                node_id: NODE.into(),
                key_id: b.key_id,
                first_seq: first,
                entries: b.entries,
                signature: b.signature.to_vec(),
                ..Default::default()
            });
        }
    }
    out
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<u64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let n = args.first().copied().unwrap_or(50_000);
    let per = args.get(1).copied().unwrap_or(256) as usize;
    let rounds = 5;
    let node_signer = Signer::from_seed(&[3; 32]);
    let input = batches(n, per, &node_signer);
    let pk = base64::engine::general_purpose::STANDARD.encode(node_signer.public_key());
    println!("{n} records in batches of {per}, {rounds} rounds (full path and baseline interleaved), SQLite on a temp dir");

    let (mut full, mut base) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        // Full path: what ShipAudit runs for each batch.
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = Arc::new(SqliteStore::open(&dir.path().join("cp.db")).unwrap_or_else(|e| panic!("{e}")));
        let log = AuditLog::open(store, Signer::from_seed(&[9; 32])).await.unwrap_or_else(|e| panic!("{e}"));
        log.register(NODE, &pk, "bench").await.unwrap_or_else(|e| panic!("{e}"));
        let t = Instant::now();
        for b in &input {
            let ack = log.ingest(b.clone()).await;
            assert!(ack.error.is_empty(), "{}", ack.error);
        }
        log.sign_head().await.unwrap_or_else(|e| panic!("{e}"));
        let full_rps = n as f64 / t.elapsed().as_secs_f64();

        // Baseline: the same rows, appended without any verification.
        let dir2 = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store2 = SqliteStore::open(&dir2.path().join("cp.db")).unwrap_or_else(|e| panic!("{e}"));
        let prepared: Vec<_> = input
            .iter()
            .scan(0i64, |leaf, b| {
                let rows: Vec<AuditRow> = b
                    .entries
                    .iter()
                    .map(|bytes| {
                        let e = decode(bytes).unwrap_or_else(|e| panic!("{e}"));
                        let (decision, reason, model, team, user, status) = columns(&e);
                        *leaf += 1;
                        AuditRow {
                            leaf: *leaf - 1,
                            node: NODE.into(),
                            seq: e.seq as i64,
                            time_ms: e.time_ms as i64,
                            decision,
                            reason,
                            model,
                            team,
                            user,
                            status,
                            entry: bytes.clone(),
                            chain_hash: cordon_audit::chain::chain_hash(bytes).to_vec(),
                            leaf_hash: leaf_hash(bytes).to_vec(),
                        }
                    })
                    .collect();
                let sig = cordon_audit::batch::BatchSignature {
                    node: Ident::escaped(NODE),
                    key_id: b.key_id.clone(),
                    first_seq: b.first_seq,
                    count: b.entries.len() as u32,
                    signature: <[u8; 64]>::try_from(b.signature.as_slice()).unwrap_or([0; 64]),
                };
                Some((sig, rows))
            })
            .collect();
        let t = Instant::now();
        for (sig, rows) in prepared {
            store2.append_batch(sig, 0, rows).await.unwrap_or_else(|e| panic!("{e}"));
        }
        let base_rps = n as f64 / t.elapsed().as_secs_f64();
        println!(
            "  round {}: full {:>9.0} records/s   baseline (inserts only) {:>9.0} records/s   ratio {:.2}",
            round + 1,
            full_rps,
            base_rps,
            full_rps / base_rps
        );
        full.push(full_rps);
        base.push(base_rps);
    }
    let ratios: Vec<f64> = full.iter().zip(&base).map(|(f, b)| f / b).collect();
    let (fm, bm, rm) = (median(full.clone()), median(base.clone()), median(ratios.clone()));
    println!(
        "median: full {fm:.0} records/s, baseline {bm:.0} records/s, full/baseline {rm:.2} (range {:.2}..{:.2})",
        ratios.iter().cloned().fold(f64::MAX, f64::min),
        ratios.iter().cloned().fold(0.0, f64::max)
    );
    println!("goal >= 20000 records/s for the full path: {}", if fm >= 20_000.0 { "met" } else { "NOT met" });
}
