//! Shared test material: an example record and proptest strategies for entries.
#![allow(dead_code)]

use cordon_audit::entry::{Body, Entry, Gap, GapReason};
use cordon_audit::record::*;
use proptest::prelude::*;

pub fn id(s: &str) -> Ident {
    Ident::new("test", s).unwrap()
}

/// The example record of the golden vector: every optional field set.
pub fn example_record() -> AuditRecord {
    let mut r = AuditRecord::new(id("req-1"), Decision::Allow, id("ok"));
    r.principal = Principal { user: Some(id("alice")), team: Some(id("payments")), app: Some(id("checkout")), key_id: Some(id("k1")) };
    r.model = Some(id("gpt-4o"));
    r.upstream = Some(id("openai"));
    r.route = Some(id("/v1/chat/completions"));
    r.policy = Some(PolicyRef { version: id("v7"), bundle_sha256: [0xab; 32] });
    r.rate_limit = Some(RateLimitOutcome { limited: false, bucket: id("team:payments/tokens/min"), limit: 1000, remaining: 958 });
    r.redactions.add(id("email"), Direction::Request, Action::Mask, 2).unwrap();
    r.redactions.add(id("aws_key"), Direction::Response, Action::Block, 1).unwrap();
    r.usage = Some(TokenUsage { prompt: 12, completion: 30, total: 42, source: UsageSource::Reported });
    r.status = Some(200);
    r.duration_ms = 1234;
    r.bytes_in = 250;
    r.bytes_out = 4096;
    r.request_digest = Some([0x11; 32]);
    r.response_digest = Some([0x22; 32]);
    r.fail_open.insert(id("on_unscannable_pass")).unwrap();
    r
}

pub fn example_entry() -> Entry {
    Entry { node: id("envoy-a"), seq: 7, prev: [0x33; 32], time_ms: 1_767_225_600_000, body: Body::Record(example_record()) }
}

pub fn ident() -> impl Strategy<Value = Ident> {
    "[!-~]{1,40}".prop_map(|s| Ident::new("test", &s).unwrap())
}

fn hash() -> impl Strategy<Value = [u8; 32]> {
    any::<[u8; 32]>()
}

pub fn record() -> impl Strategy<Value = AuditRecord> {
    (
        (ident(), prop::option::of(ident()), prop::option::of(ident()), prop::option::of(ident()), prop::option::of(ident())),
        (prop::option::of(ident()), prop::option::of(ident()), prop::option::of(ident()), prop::option::of((ident(), hash()))),
        (0u8..3, ident(), prop::option::of((any::<bool>(), ident(), any::<u64>(), any::<u64>()))),
        prop::collection::vec((ident(), any::<bool>(), 0u8..5, 1u64..1000), 0..5),
        (prop::option::of((any::<u64>(), any::<u64>(), any::<u64>(), any::<bool>())), prop::option::of(any::<u16>())),
        (any::<u64>(), any::<u64>(), any::<u64>(), prop::option::of(hash()), prop::option::of(hash())),
        prop::collection::vec(ident(), 0..4),
    )
        .prop_map(|(p, m, d, reds, u, n, fo)| {
            let decision = [Decision::Allow, Decision::Refuse, Decision::Fail][usize::from(d.0)];
            let mut r = AuditRecord::new(p.0, decision, d.1);
            r.principal = Principal { user: p.1, team: p.2, app: p.3, key_id: p.4 };
            r.model = m.0;
            r.upstream = m.1;
            r.route = m.2;
            r.policy = m.3.map(|(version, bundle_sha256)| PolicyRef { version, bundle_sha256 });
            r.rate_limit = d.2.map(|(limited, bucket, limit, remaining)| RateLimitOutcome { limited, bucket, limit, remaining });
            for (det, dir, act, n) in reds {
                let dir = if dir { Direction::Request } else { Direction::Response };
                let act = [Action::Allow, Action::Mask, Action::Redact, Action::Block, Action::Pseudonymize][usize::from(act)];
                r.redactions.add(det, dir, act, n).unwrap();
            }
            r.usage = u.0.map(|(prompt, completion, total, rep)| TokenUsage {
                prompt,
                completion,
                total,
                source: if rep { UsageSource::Reported } else { UsageSource::Estimated },
            });
            r.status = u.1;
            (r.duration_ms, r.bytes_in, r.bytes_out, r.request_digest, r.response_digest) = n;
            for f in fo {
                r.fail_open.insert(f).unwrap();
            }
            r
        })
}

pub fn entry() -> impl Strategy<Value = Entry> {
    let gap = (0u64..1_000_000, 0u64..1000, any::<bool>()).prop_map(|(from, len, full)| Gap {
        from,
        to: from + len,
        reason: if full { GapReason::BufferFull } else { GapReason::Shutdown },
    });
    let body = prop_oneof![record().prop_map(Body::Record), gap.prop_map(Body::Gap)];
    (ident(), any::<u64>(), hash(), any::<u64>(), body).prop_map(|(node, seq, prev, time_ms, body)| {
        let seq = match &body {
            Body::Gap(g) => g.to + 1,
            Body::Record(_) => seq,
        };
        Entry { node, seq, prev, time_ms, body }
    })
}

/// An honest export: two nodes interleaved, a gap on one, three batches, three heads.
pub struct Fixture {
    pub text: String,
    pub trust: cordon_audit::export::Trust,
    pub heads: Vec<cordon_audit::head::SignedTreeHead>,
}

pub fn fixture() -> Fixture {
    use cordon_audit::batch::NodeKeys;
    use cordon_audit::chain::Chain;
    use cordon_audit::head::TreeHead;
    use cordon_audit::keys::{PublicKey, Signer};
    use cordon_audit::merkle::Tree;

    let (sa, sb, cp) = (Signer::from_seed(&[1; 32]), Signer::from_seed(&[2; 32]), Signer::from_seed(&[9; 32]));
    let (mut a, mut b) = (Chain::genesis(id("envoy-a")), Chain::genesis(id("envoy-b")));
    let a1: Vec<Vec<u8>> = (0..3).map(|t| a.seal_record(t, example_record()).unwrap().bytes).collect();
    let b1: Vec<Vec<u8>> = (0..2).map(|t| b.seal_record(t, example_record()).unwrap().bytes).collect();
    a.drop_record(GapReason::BufferFull);
    a.drop_record(GapReason::BufferFull);
    let mut a2 = vec![a.seal_gap(10).unwrap().bytes];
    a2.push(a.seal_record(11, example_record()).unwrap().bytes);
    let batches = vec![
        sa.sign_batch(&id("envoy-a"), 0, a1.clone()).signature_part(),
        sb.sign_batch(&id("envoy-b"), 0, b1.clone()).signature_part(),
        sa.sign_batch(&id("envoy-a"), 5, a2.clone()).signature_part(),
    ];
    // Ingest order interleaves the nodes.
    let entries: Vec<Vec<u8>> =
        vec![a1[0].clone(), b1[0].clone(), a1[1].clone(), a1[2].clone(), b1[1].clone(), a2[0].clone(), a2[1].clone()];
    let mut tree = Tree::new();
    let mut heads = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        tree.append(e);
        if [2, 5, 7].contains(&(i + 1)) {
            heads.push(cp.sign_head(TreeHead { size: tree.len(), root: tree.root(), time_ms: 100 + i as u64 }));
        }
    }
    let text = cordon_audit::export::write_export(&entries, &batches, &heads).unwrap();
    let mut nodes = NodeKeys::default();
    nodes.add(id("envoy-a"), &sa.public_key()).unwrap();
    nodes.add(id("envoy-b"), &sb.public_key()).unwrap();
    let trust = cordon_audit::export::Trust { nodes, control_plane: PublicKey::from_bytes(&cp.public_key()).unwrap(), pinned: vec![] };
    Fixture { text, trust, heads }
}
