//! A node playing the filter's audit side: cordon-audit's `Chain` and `Signer`, shipping
//! batches over a real `ShipAudit` stream.

use cordon_audit::chain::Chain;
use cordon_audit::entry::GapReason;
use cordon_audit::keys::Signer;
use cordon_audit::record::{AuditRecord, Decision, Ident};
use cordon_proto::v1::audit_service_client::AuditServiceClient;
use cordon_proto::v1::{AuditAck, AuditBatch};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

pub struct AuditNode {
    pub id: String,
    pub signer: Signer,
    pub chain: Chain,
    tx: mpsc::Sender<AuditBatch>,
    rx: Streaming<AuditAck>,
}

pub fn record(i: u64, decision: Decision) -> AuditRecord {
    let mut r = AuditRecord::new(Ident::new("request_id", &format!("req-{i}")).unwrap(), decision, Ident::new("reason", "ok").unwrap());
    r.model = Some(Ident::new("model", "gpt-4o").unwrap());
    r.principal.team = Some(Ident::new("team", "ml").unwrap());
    r.principal.user = Some(Ident::new("user", "alice").unwrap());
    r.status = Some(200);
    r
}

impl AuditNode {
    pub async fn connect(addr: std::net::SocketAddr, id: &str, seed: u8) -> AuditNode {
        let channel = tonic::transport::Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
        let mut client = AuditServiceClient::new(channel);
        let (tx, rx) = mpsc::channel(16);
        let rx = client.ship_audit(ReceiverStream::new(rx)).await.unwrap().into_inner();
        AuditNode { id: id.into(), signer: Signer::from_seed(&[seed; 32]), chain: Chain::genesis(Ident::new("node", id).unwrap()), tx, rx }
    }

    pub fn public_key_b64(&self) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(self.signer.public_key())
    }

    pub fn node(&self) -> Ident {
        Ident::new("node", &self.id).unwrap()
    }

    /// Seals `n` records; returns their bytes.
    pub fn seal(&mut self, n: u64, decision: Decision) -> Vec<Vec<u8>> {
        (0..n)
            .map(|_| {
                let seq = self.chain.next_seq();
                self.chain.seal_record(1_700_000_000_000 + seq, record(seq, decision)).unwrap().bytes
            })
            .collect()
    }

    /// Drops `n` records and seals their gap entry; returns its bytes.
    pub fn gap(&mut self, n: u64) -> Vec<u8> {
        for _ in 0..n {
            self.chain.drop_record(GapReason::BufferFull);
        }
        self.chain.seal_gap(1_700_000_000_000 + self.chain.next_seq()).unwrap().bytes
    }

    pub fn batch(&self, first_seq: u64, entries: Vec<Vec<u8>>) -> AuditBatch {
        let b = self.signer.sign_batch(&self.node(), first_seq, entries);
        AuditBatch {
            node_id: self.id.clone(),
            key_id: b.key_id,
            first_seq,
            entries: b.entries,
            signature: b.signature.to_vec(),
            ..Default::default()
        }
    }

    pub async fn ship(&mut self, batch: AuditBatch) -> AuditAck {
        self.tx.send(batch).await.unwrap();
        match tokio::time::timeout(Duration::from_secs(20), self.rx.message()).await {
            Ok(Ok(Some(a))) => a,
            other => panic!("node {} expected an ack, got {other:?}", self.id),
        }
    }
}
