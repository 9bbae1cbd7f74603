//! The filter's audit delivery (`cordon_core::audit::shipper`, the code the singleton runs)
//! against the real control plane: position probe, batches, a full buffer's gap, and a node
//! and a control plane that restart.

mod support;

use base64::Engine;
use cordon_audit::keys::Signer;
use cordon_audit::record::{Decision, Ident};
use cordon_control_plane::server::Running;
use cordon_control_plane::store::SqliteStore;
use cordon_core::audit::shipper::{AckEvent, Bounds, Outgoing, Shipper};
use cordon_proto::admin::v1::*;
use cordon_proto::v1::audit_service_client::AuditServiceClient;
use cordon_proto::v1::{AuditAck, AuditBatch};
use std::sync::Arc;
use support::audit::record;
use support::server::*;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

const NODE: &str = "envoy-z";
const NODE_SEED: [u8; 32] = [5; 32];

struct Link {
    tx: mpsc::Sender<AuditBatch>,
    rx: Streaming<AuditAck>,
}

impl Link {
    async fn open(r: &Running) -> Link {
        let mut client = AuditServiceClient::new(channel(r).await);
        let (tx, rx) = mpsc::channel(4);
        let rx = client.ship_audit(ReceiverStream::new(rx)).await.unwrap().into_inner();
        Link { tx, rx }
    }

    /// Sends what the shipper asks for, the way the singleton converts it, and hands back the ack.
    async fn exchange(&mut self, s: &mut Shipper, out: Outgoing) -> AckEvent {
        let msg = match out {
            Outgoing::Probe { node, key_id } => AuditBatch { node_id: node.as_str().into(), key_id, ..Default::default() },
            Outgoing::Watermark { node, key_id, claim_through } => {
                let msg = AuditBatch { node_id: node.as_str().into(), key_id, watermark: true, claim_through, ..Default::default() };
                self.tx.send(msg).await.unwrap();
                return AckEvent::Unexpected; // never answered
            }
            Outgoing::Batch(b) => AuditBatch {
                node_id: b.node.as_str().into(),
                key_id: b.key_id,
                first_seq: b.first_seq,
                entries: b.entries,
                signature: b.signature.to_vec(),
                ..Default::default()
            },
        };
        self.tx.send(msg).await.unwrap();
        let ack = tokio::time::timeout(PATIENCE, self.rx.message()).await.unwrap().unwrap().unwrap();
        if let Some(claim) = ack.claimed_through {
            s.note_claim(claim, 1_700_000_000_000);
        }
        s.on_ack(ack.next_seq, &ack.prev_hash, &ack.error)
    }
}

fn shipper(buffer: usize) -> Shipper {
    Shipper::new(Ident::new("node", NODE).unwrap(), Signer::from_seed(&NODE_SEED), Bounds { buffer, batch: 2, linger_ms: 0 })
}

/// Connects and sends until nothing is left; returns the control plane's last next_seq.
async fn deliver(r: &Running, s: &mut Shipper) -> u64 {
    let mut link = Link::open(r).await;
    let probe = s.connected();
    let AckEvent::Positioned { next_seq: mut next } = link.exchange(s, probe).await else { panic!("the probe must position the chain") };
    while let Some(out) = s.next_batch(1_700_000_000_000) {
        match link.exchange(s, out).await {
            AckEvent::Stored { next_seq } => next = next_seq,
            other => panic!("batch not stored: {other:?}"),
        }
    }
    next
}

async fn entries(r: &Running) -> Vec<(u64, String)> {
    let resp = admin(r).await.audit_query(authed(AuditQueryRequest { node_id: NODE.into(), ..Default::default() }, AUDIT_TOKEN)).await;
    resp.unwrap().into_inner().entries.into_iter().map(|e| (e.seq, e.decision)).collect()
}

#[tokio::test]
async fn the_filters_shipper_positions_batches_gaps_and_survives_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let open = || Arc::new(SqliteStore::open(&dir.path().join("cp.db")).unwrap());
    let r = start_with(open()).await;
    let public_key = base64::engine::general_purpose::STANDARD.encode(Signer::from_seed(&NODE_SEED).public_key());
    admin(&r).await.register_node_key(authed(RegisterNodeKeyRequest { node_id: NODE.into(), public_key }, OPS_TOKEN)).await.unwrap();

    // Records written while the control plane was not yet reached are sealed from its position.
    let mut s = shipper(4);
    for i in 0..3 {
        s.push(i, record(i, Decision::Allow));
    }
    assert_eq!(deliver(&r, &mut s).await, 3);

    // A full buffer: 4 records kept, 2 dropped, and the gap entry names exactly seq 7..=8.
    for i in 3..9 {
        s.push(i, record(i, Decision::Allow));
    }
    assert_eq!(s.dropped_total(), 2);
    assert_eq!(deliver(&r, &mut s).await, 10);
    let got = entries(&r).await;
    assert_eq!(got.len(), 8);
    assert_eq!(got.last(), Some(&(9, "gap".to_string())), "{got:?}");
    let v = admin(&r).await.audit_verify(authed(AuditVerifyRequest {}, AUDIT_TOKEN)).await.unwrap().into_inner();
    assert!(v.ok, "{:?}", v.problems);

    // Both restart: the control plane from its database, the node with nothing but its key.
    r.shutdown().await;
    let r = start_with(open()).await;
    let mut fresh = shipper(4);
    fresh.push(100, record(100, Decision::Refuse));
    assert_eq!(deliver(&r, &mut fresh).await, 11, "the restarted node continues the chain at seq 10");
    let v = admin(&r).await.audit_verify(authed(AuditVerifyRequest {}, AUDIT_TOKEN)).await.unwrap().into_inner();
    assert!(v.ok, "{:?}", v.problems);
    assert_eq!(entries(&r).await.last(), Some(&(10, "refuse".to_string())));
    r.shutdown().await;
}

#[tokio::test]
async fn a_killed_node_is_named_by_a_restart_gap_and_only_its_own_stream_can_claim() {
    let r = start_with(Arc::new(SqliteStore::open(&tempfile::tempdir().unwrap().keep().join("cp.db")).unwrap())).await;
    let public_key = base64::engine::general_purpose::STANDARD.encode(Signer::from_seed(&NODE_SEED).public_key());
    admin(&r).await.register_node_key(authed(RegisterNodeKeyRequest { node_id: NODE.into(), public_key }, OPS_TOKEN)).await.unwrap();

    // A stranger's watermark (no verified batch on its stream) is not kept.
    let stranger = Link::open(&r).await;
    let planted = AuditBatch { node_id: NODE.into(), watermark: true, claim_through: 1_000, ..Default::default() };
    stranger.tx.send(planted).await.unwrap();

    // The first run delivers 2 records, seals 2 more it never sends, and has 3 exchanges in flight.
    let mut run1 = shipper(100);
    let mut link = Link::open(&r).await;
    let probe = run1.connected();
    assert!(matches!(link.exchange(&mut run1, probe).await, AckEvent::Positioned { next_seq: 0 }));
    for i in 0..2 {
        run1.push(i, record(i, Decision::Allow));
    }
    while let Some(out) = run1.next_batch(1_700_000_000_000) {
        assert!(matches!(link.exchange(&mut run1, out).await, AckEvent::Stored { .. }));
    }
    run1.push(2, record(2, Decision::Allow));
    run1.push(3, record(3, Decision::Allow));
    let wm = run1.watermark(1_700_000_000_000, 3).expect("a watermark");
    link.exchange(&mut run1, wm).await;

    // The next run learns the claim with its position and names seq 2..=6 before its own records.
    let mut run2 = shipper(100);
    run2.push(10, record(10, Decision::Refuse));
    let mut held = None;
    for _ in 0..100 {
        // The watermark is processed asynchronously: wait until the control plane holds it.
        let mut probe_link = Link::open(&r).await;
        let key_id = Signer::from_seed(&NODE_SEED).key_id().to_owned();
        probe_link.tx.send(AuditBatch { node_id: NODE.into(), key_id, ..Default::default() }).await.unwrap();
        let ack = tokio::time::timeout(PATIENCE, probe_link.rx.message()).await.unwrap().unwrap().unwrap();
        held = ack.claimed_through;
        assert_ne!(held, Some(1_000), "a stranger's claim was kept");
        if held == Some(6) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(held, Some(6), "6 used (4 sealed) + 3 in flight, through seq 6");
    drop(link);
    drop(run1); // killed
    assert_eq!(deliver(&r, &mut run2).await, 9);
    let got = entries(&r).await;
    assert_eq!(got.iter().map(|(s, d)| (*s, d.as_str())).collect::<Vec<_>>(), vec![(0, "allow"), (1, "allow"), (7, "gap"), (8, "refuse")]);
    let q = admin(&r)
        .await
        .audit_query(authed(AuditQueryRequest { node_id: NODE.into(), ..Default::default() }, AUDIT_TOKEN))
        .await
        .unwrap()
        .into_inner();
    let gap = q.entries.iter().find(|e| e.decision == "gap").unwrap();
    assert_eq!(gap.reason, "restart 2..=6", "{gap:?}");
    let v = admin(&r).await.audit_verify(authed(AuditVerifyRequest {}, AUDIT_TOKEN)).await.unwrap().into_inner();
    assert!(v.ok, "{:?}", v.problems);
    r.shutdown().await;
}
