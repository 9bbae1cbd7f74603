//! `cordon.v1.AuditService`: each node's filter holds one `ShipAudit` stream; every batch is
//! answered by one ack, in order.

use super::AuditLog;
use cordon_proto::v1::audit_service_server::AuditService;
use cordon_proto::v1::{AuditAck, AuditBatch};
use std::pin::Pin;
use std::sync::Arc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// The gRPC adapter.
pub struct AuditGrpc(pub Arc<AuditLog>);

type AckStream = Pin<Box<dyn Stream<Item = Result<AuditAck, Status>> + Send>>;

#[tonic::async_trait]
impl AuditService for AuditGrpc {
    type ShipAuditStream = AckStream;

    async fn ship_audit(&self, request: Request<Streaming<AuditBatch>>) -> Result<Response<AckStream>, Status> {
        let log = Arc::clone(&self.0);
        let mut batches = request.into_inner();
        // A small buffer: a node waits for its ack before its next batch anyway.
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            // The node this stream proved to speak for (a verified batch): only its watermarks
            // are kept, so nobody else can plant a claim that a node's next run would gap.
            let mut verified: Option<String> = None;
            loop {
                match batches.message().await {
                    Ok(Some(b)) if b.watermark => {
                        if verified.as_deref() == Some(b.node_id.as_str()) {
                            log.note_claim(&b.node_id, b.claim_through);
                        }
                    }
                    Ok(Some(b)) => {
                        let node = b.node_id.clone();
                        let carries_entries = !b.entries.is_empty();
                        let ack = log.ingest(b).await;
                        if carries_entries && ack.error.is_empty() {
                            verified = Some(node);
                        }
                        if tx.send(Ok(ack)).await.is_err() {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(error = %e, "audit stream ended with an error");
                        break;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
