//! The policy stream: xDS state-of-the-world semantics over `PolicyDiscoveryService`.
//!
//! Per stream, one task owns all state (no locks on the hot path): the version the node runs,
//! the one response in flight (nonce + version), and the version it last NACKed. It wakes on
//! a request from the node or on a new snapshot, and sends only when no response is pending
//! (xDS flow control), the node does not already run the current version, and the node has not
//! NACKed that very version (no redundant pushes).

use crate::metrics::Metrics;
use crate::nodes::Nodes;
use crate::service::{PolicyService, Snapshot};
use cordon_proto::v1::policy_discovery_service_server::PolicyDiscoveryService;
use cordon_proto::v1::{DiscoveryRequest, DiscoveryResponse, POLICY_TYPE_URL};
use prost::Message;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// Responses buffered per stream. One is ever pending under flow control; a little slack lets
/// an error follow it.
const OUTBOUND_BUFFER: usize = 4;

/// The gRPC service.
pub struct Discovery {
    service: Arc<PolicyService>,
    nodes: Arc<Nodes>,
    metrics: Arc<Metrics>,
    next_stream: AtomicU64,
}

impl Discovery {
    /// A discovery service publishing what `service` serves.
    pub fn new(service: Arc<PolicyService>, nodes: Arc<Nodes>, metrics: Arc<Metrics>) -> Self {
        Self { service, nodes, metrics, next_stream: AtomicU64::new(1) }
    }
}

struct Pending {
    nonce: String,
    version: String,
    sent_at: Instant,
    published_at: Instant,
}

struct StreamState {
    stream_id: u64,
    node: String,
    running: String,
    pending: Option<Pending>,
    nacked: Option<String>,
    nonce_counter: u64,
    started: Instant,
}

fn type_ok(t: &str) -> bool {
    t.is_empty() || t == POLICY_TYPE_URL
}

fn metadata_json(node: &cordon_proto::v1::Node) -> String {
    fn value(v: &prost_types::Value) -> serde_json::Value {
        use prost_types::value::Kind;
        match &v.kind {
            Some(Kind::NullValue(_)) | None => serde_json::Value::Null,
            Some(Kind::NumberValue(n)) => serde_json::json!(n),
            Some(Kind::StringValue(s)) => serde_json::json!(s),
            Some(Kind::BoolValue(b)) => serde_json::json!(b),
            Some(Kind::StructValue(s)) => strukt(s),
            Some(Kind::ListValue(l)) => serde_json::Value::Array(l.values.iter().map(value).collect()),
        }
    }
    fn strukt(s: &prost_types::Struct) -> serde_json::Value {
        serde_json::Value::Object(s.fields.iter().map(|(k, v)| (k.clone(), value(v))).collect())
    }
    node.metadata.as_ref().map(|m| strukt(m).to_string()).unwrap_or_else(|| "{}".into())
}

impl Discovery {
    /// Sends the current snapshot if the node should get it now.
    async fn maybe_push(
        &self,
        st: &mut StreamState,
        snap: Option<Arc<Snapshot>>,
        tx: &mpsc::Sender<Result<DiscoveryResponse, Status>>,
    ) -> bool {
        let Some(snap) = snap else { return true };
        let version = &snap.bundle.version;
        if st.pending.is_some() || &st.running == version || st.nacked.as_ref() == Some(version) {
            return true;
        }
        st.nonce_counter += 1;
        let nonce = format!("{}-{}", st.stream_id, st.nonce_counter);
        let resp = DiscoveryResponse {
            version_info: version.clone(),
            resources: vec![prost_types::Any { type_url: POLICY_TYPE_URL.into(), value: snap.bundle.encode_to_vec() }],
            canary: false,
            type_url: POLICY_TYPE_URL.into(),
            nonce: nonce.clone(),
        };
        if tx.send(Ok(resp)).await.is_err() {
            return false;
        }
        self.metrics.pushes.inc();
        self.nodes.sent(&st.node, st.stream_id, version, &nonce);
        st.pending = Some(Pending { nonce, version: version.clone(), sent_at: Instant::now(), published_at: snap.published_at });
        true
    }

    /// Applies one request after the first; returns false to end the stream with `Err`.
    fn on_request(&self, st: &mut StreamState, req: DiscoveryRequest) -> Result<(), Status> {
        if !type_ok(&req.type_url) {
            return Err(Status::invalid_argument(format!("unsupported type_url `{}`; expected {POLICY_TYPE_URL}", req.type_url)));
        }
        let matches_pending = st.pending.as_ref().is_some_and(|p| p.nonce == req.response_nonce);
        if !matches_pending {
            if req.response_nonce.is_empty() && st.pending.is_none() {
                // A re-subscription on the same stream: believe what it says it runs.
                st.running = req.version_info;
            } else {
                // A late answer to an older response: xDS says ignore it.
                self.metrics.stale_nonces.inc();
            }
            return Ok(());
        }
        let Some(p) = st.pending.take() else { return Ok(()) };
        match req.error_detail {
            Some(err) => {
                self.metrics.nacks.inc();
                tracing::warn!(node = %st.node, version = %p.version, error = %err.message, "policy NACKed; node keeps its previous version");
                st.running = req.version_info;
                self.nodes.nacked(&st.node, st.stream_id, &p.version, &st.running, &err.message);
                st.nacked = Some(p.version);
            }
            None => {
                st.running = req.version_info;
                self.nodes.acked(&st.node, st.stream_id, &st.running);
                if st.running == p.version {
                    let from = p.published_at.max(st.started).min(p.sent_at);
                    self.metrics.push_latency.observe(from.elapsed().as_secs_f64());
                }
            }
        }
        Ok(())
    }

    async fn run(&self, mut inbound: Streaming<DiscoveryRequest>, tx: mpsc::Sender<Result<DiscoveryResponse, Status>>) {
        let first = match inbound.message().await {
            Ok(Some(r)) => r,
            Ok(None) | Err(_) => return,
        };
        let Some(node) = first.node.as_ref().filter(|n| !n.id.is_empty()) else {
            let _ = tx.send(Err(Status::invalid_argument("the first DiscoveryRequest must carry node.id"))).await;
            return;
        };
        if !type_ok(&first.type_url) {
            let msg = format!("unsupported type_url `{}`; expected {POLICY_TYPE_URL}", first.type_url);
            let _ = tx.send(Err(Status::invalid_argument(msg))).await;
            return;
        }
        let stream_id = self.next_stream.fetch_add(1, Ordering::Relaxed);
        let mut st = StreamState {
            stream_id,
            node: node.id.clone(),
            running: first.version_info.clone(),
            pending: None,
            nacked: None,
            nonce_counter: 0,
            started: Instant::now(),
        };
        self.nodes.connect(&st.node, stream_id, &node.cluster, metadata_json(node), &st.running);
        tracing::info!(node = %st.node, running = %st.running, "policy stream opened");
        let mut snapshots = self.service.subscribe();
        let snap = snapshots.borrow_and_update().clone();
        let mut alive = self.maybe_push(&mut st, snap, &tx).await;
        while alive {
            tokio::select! {
                msg = inbound.message() => match msg {
                    Ok(Some(req)) => {
                        if let Err(status) = self.on_request(&mut st, req) {
                            let _ = tx.send(Err(status)).await;
                            break;
                        }
                        let snap = snapshots.borrow_and_update().clone();
                        alive = self.maybe_push(&mut st, snap, &tx).await;
                    }
                    Ok(None) | Err(_) => break,
                },
                changed = snapshots.changed() => {
                    if changed.is_err() {
                        break; // service shut down
                    }
                    let snap = snapshots.borrow_and_update().clone();
                    if snap.is_none() {
                        break; // closed for shutdown
                    }
                    alive = self.maybe_push(&mut st, snap, &tx).await;
                }
                () = tx.closed() => break,
            }
        }
        self.nodes.disconnect(&st.node, stream_id);
        tracing::info!(node = %st.node, "policy stream closed");
    }
}

/// gRPC adapter over [`Discovery`] (one task per stream shares it).
pub struct DiscoveryGrpc(pub Arc<Discovery>);

#[tonic::async_trait]
impl PolicyDiscoveryService for DiscoveryGrpc {
    type StreamPoliciesStream = ReceiverStream<Result<DiscoveryResponse, Status>>;

    async fn stream_policies(&self, request: Request<Streaming<DiscoveryRequest>>) -> Result<Response<Self::StreamPoliciesStream>, Status> {
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(OUTBOUND_BUFFER);
        let me = Arc::clone(&self.0);
        tokio::spawn(async move { me.run(inbound, tx).await });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
