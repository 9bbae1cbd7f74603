//! Audit pipeline throughput on one core against baselines measured in the same run, and
//! proof size and time at 10^6 leaves. Run: `cargo run -p cordon-audit-bench --release`.
//!
//! Variants, interleaved per round (a, b, c, a, b, c, ...), medians over the rounds:
//! - a: encode the entry only (the baseline);
//! - b: SHA-256 of the same canonical bytes (a second, lower baseline);
//! - c: the full path: seal (encode + chain hash), sign in batches of 256, then as the control
//!   plane would: verify the batch (signature + decode), check the chain, append to the tree.

use std::hint::black_box;
use std::time::Instant;

use cordon_audit::batch::NodeKeys;
use cordon_audit::chain::{Chain, ChainVerifier};
use cordon_audit::encoding::encode;
use cordon_audit::entry::{Body, Entry};
use cordon_audit::keys::Signer;
use cordon_audit::merkle::{Tree, verify_consistency, verify_inclusion};
use cordon_audit::record::*;
use sha2::{Digest, Sha256};

const BATCH: usize = 256;

fn id(s: &str) -> Ident {
    Ident::new("bench", s).unwrap_or_else(|e| panic!("{e}"))
}

fn record(i: usize) -> AuditRecord {
    let mut r = AuditRecord::new(id(&format!("req-{i:08}")), Decision::Allow, id("ok"));
    r.principal = Principal { user: Some(id("alice")), team: Some(id("payments")), app: Some(id("checkout")), key_id: Some(id("k1")) };
    r.model = Some(id("gpt-4o"));
    r.upstream = Some(id("openai"));
    r.route = Some(id("/v1/chat/completions"));
    r.policy = Some(PolicyRef { version: id("v7"), bundle_sha256: [0xab; 32] });
    r.redactions.add(id("email"), Direction::Request, Action::Mask, 2).unwrap_or_default();
    r.usage = Some(TokenUsage { prompt: 12, completion: 30, total: 42, source: UsageSource::Reported });
    r.status = Some(200);
    r.duration_ms = 1234;
    r.bytes_in = 250;
    r.bytes_out = 4096;
    r.request_digest = Some([0x11; 32]);
    r.response_digest = Some([0x22; 32]);
    r
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let n: usize = std::env::var("RECORDS").ok().and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let rounds: usize = std::env::var("ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    let records: Vec<AuditRecord> = (0..n).map(record).collect();
    let node = id("envoy-a");
    let entries: Vec<Entry> = records
        .iter()
        .enumerate()
        .map(|(i, r)| Entry { node: node.clone(), seq: i as u64, prev: [0; 32], time_ms: i as u64, body: Body::Record(r.clone()) })
        .collect();
    let bytes: Vec<Vec<u8>> = entries.iter().map(encode).collect();
    let signer = Signer::from_seed(&[7; 32]);
    let mut keys = NodeKeys::default();
    keys.add(node.clone(), &signer.public_key()).unwrap_or_else(|e| panic!("{e}"));
    println!("audit pipeline, {n} records/round, {rounds} rounds, one thread; entry size {} bytes", bytes[0].len());

    let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let t = Instant::now();
        for e in &entries {
            black_box(encode(black_box(e)));
        }
        a.push(n as f64 / t.elapsed().as_secs_f64());

        let t = Instant::now();
        for x in &bytes {
            black_box(Sha256::digest(black_box(x)));
        }
        b.push(n as f64 / t.elapsed().as_secs_f64());

        let t = Instant::now();
        let mut chain = Chain::genesis(node.clone());
        let mut verifier = ChainVerifier::genesis(node.clone());
        let mut tree = Tree::new();
        let mut pending = Vec::with_capacity(BATCH);
        let mut first = 0;
        for (i, r) in records.iter().enumerate() {
            let sealed = chain.seal_record(i as u64, r.clone()).unwrap_or_else(|e| panic!("{e}"));
            pending.push(sealed.bytes);
            if pending.len() == BATCH || i + 1 == n {
                let batch = signer.sign_batch(&node, first, std::mem::take(&mut pending));
                let decoded = keys.verify(&batch).unwrap_or_else(|e| panic!("{e}"));
                for (entry, raw) in decoded.iter().zip(&batch.entries) {
                    verifier.check(entry, raw).unwrap_or_else(|e| panic!("{e}"));
                    tree.append(raw);
                }
                first = chain.next_seq();
            }
        }
        black_box(tree.root());
        c.push(n as f64 / t.elapsed().as_secs_f64());
    }
    let (ma, mb, mc) = (median(&mut a), median(&mut b), median(&mut c));
    println!("  a encode only             {:>12.0} records/s  ({:.2} µs/record)", ma, 1e6 / ma);
    println!("  b SHA-256 of the bytes    {:>12.0} records/s  ({:.2} µs/record)", mb, 1e6 / mb);
    println!("  c full path (seal, sign/{BATCH}, verify, chain, Merkle) {:>12.0} records/s  ({:.2} µs/record)", mc, 1e6 / mc);
    println!("  ratios (medians): c/a throughput {:.3}, c/b throughput {:.3}; c costs {:.1}x the encode", mc / ma, mc / mb, ma / mc);

    // Proofs at 10^6 leaves.
    let leaves: u64 = std::env::var("LEAVES").ok().and_then(|s| s.parse().ok()).unwrap_or(1_000_000);
    let t = Instant::now();
    let mut tree = Tree::new();
    for i in 0..leaves {
        tree.append(&bytes[(i % n as u64) as usize]);
    }
    let build = t.elapsed().as_secs_f64();
    let root = tree.root();
    let samples = 2000u64;
    let (mut gen_t, mut ver_t, mut sizes, mut cgen_t, mut cver_t, mut csizes) = (vec![], vec![], vec![], vec![], vec![], vec![]);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..samples {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let m = x % leaves;
        let t = Instant::now();
        let p = tree.inclusion_proof(m, leaves).unwrap_or_else(|e| panic!("{e}"));
        gen_t.push(t.elapsed().as_secs_f64() * 1e6);
        let leaf = tree.leaf(m).unwrap_or_default();
        let t = Instant::now();
        verify_inclusion(&leaf, m, leaves, &p, &root).unwrap_or_else(|e| panic!("{e}"));
        ver_t.push(t.elapsed().as_secs_f64() * 1e6);
        sizes.push((p.len() * 32) as f64);

        let size1 = 1 + m;
        let r1 = tree.root_at(size1).unwrap_or_else(|e| panic!("{e}"));
        let t = Instant::now();
        let c = tree.consistency_proof(size1, leaves).unwrap_or_else(|e| panic!("{e}"));
        cgen_t.push(t.elapsed().as_secs_f64() * 1e6);
        let t = Instant::now();
        verify_consistency(size1, leaves, &c, &r1, &root).unwrap_or_else(|e| panic!("{e}"));
        cver_t.push(t.elapsed().as_secs_f64() * 1e6);
        csizes.push((c.len() * 32) as f64);
    }
    let sha_t = {
        let t = Instant::now();
        for i in 0..samples {
            black_box(Sha256::digest(black_box(i.to_be_bytes())));
        }
        t.elapsed().as_secs_f64() * 1e6 / samples as f64
    };
    println!("proofs at {leaves} leaves (tree built in {build:.2} s, {samples} random leaves):");
    println!(
        "  inclusion:   median {:.0} bytes, generate {:.1} µs, verify {:.1} µs",
        median(&mut sizes),
        median(&mut gen_t),
        median(&mut ver_t)
    );
    println!(
        "  consistency: median {:.0} bytes, generate {:.1} µs, verify {:.1} µs",
        median(&mut csizes),
        median(&mut cgen_t),
        median(&mut cver_t)
    );
    println!("  baseline: one SHA-256 of 8 bytes {:.3} µs; inclusion verify = {:.1} of them", sha_t, median(&mut ver_t) / sha_t);
}
