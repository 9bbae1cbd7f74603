//! The policy stream: xDS state-of-the-world semantics over `PolicyDiscoveryService`.
//!
//! Per stream, one task owns all state (no locks on the hot path): the version the node runs,
//! the one response in flight (nonce + version), and the version it last NACKed. It wakes on
//! a request from the node or on a new snapshot, and sends only when no response is pending
//! (xDS flow control), the node does not already run the current version, and the node has not
//! NACKed that very version (no redundant pushes).
//!
//! Fan-out cost: a version's `DiscoveryResponse` is encoded once (see
//! [`Snapshot::encoded_response`]); each stream's response is those shared bytes plus its own
//! nonce field, written by [`DiscoveryCodec`]. A stream's node-status updates lock only that
//! node's entry ([`NodeHandle`]), not the whole registry.

use crate::metrics::Metrics;
use crate::nodes::{NodeHandle, Nodes};
use crate::service::{PolicyService, Snapshot};
use cordon_core::bundle::POLICY_TYPE_URL;
use cordon_proto::v1::{DiscoveryRequest, POLICY_METHOD, POLICY_SERVICE};
use prost::Message;
use prost::bytes::BufMut;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{Body, BoxFuture, Service, StdError, http};
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

/// One response as it goes out: the version's shared encoding and this stream's nonce.
pub struct Outbound {
    snap: Arc<Snapshot>,
    nonce: String,
}

type Outbox = mpsc::Sender<Result<Outbound, Status>>;

struct Pending {
    nonce: String,
    snap: Arc<Snapshot>,
    sent_at: Instant,
}

struct StreamState {
    stream_id: u64,
    node: String,
    handle: NodeHandle,
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
    async fn maybe_push(&self, st: &mut StreamState, snap: Option<Arc<Snapshot>>, tx: &Outbox) -> bool {
        let Some(snap) = snap else { return true };
        let version = &snap.bundle.version;
        if st.pending.is_some() || &st.running == version || st.nacked.as_ref() == Some(version) {
            return true;
        }
        st.nonce_counter += 1;
        let nonce = format!("{}-{}", st.stream_id, st.nonce_counter);
        if tx.send(Ok(Outbound { snap: Arc::clone(&snap), nonce: nonce.clone() })).await.is_err() {
            return false;
        }
        self.metrics.pushes.inc();
        st.handle.sent(version, &nonce);
        st.pending = Some(Pending { nonce, snap, sent_at: Instant::now() });
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
        let version = &p.snap.bundle.version;
        match req.error_detail {
            Some(err) => {
                self.metrics.nacks.inc();
                tracing::warn!(node = %st.node, version = %version, error = %err.message, "policy NACKed; node keeps its previous version");
                st.running = req.version_info;
                st.handle.nacked(version, &st.running, &err.message);
                st.nacked = Some(version.clone());
            }
            None => {
                st.running = req.version_info;
                st.handle.acked(&st.node, &st.running, &self.metrics);
                if &st.running == version {
                    let from = p.snap.published_at.max(st.started).min(p.sent_at);
                    self.metrics.push_latency.observe(from.elapsed().as_secs_f64());
                }
            }
        }
        Ok(())
    }

    async fn run(&self, mut inbound: Streaming<DiscoveryRequest>, tx: Outbox) {
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
        let handle = self.nodes.connect(&node.id, stream_id, &node.cluster, metadata_json(node), &first.version_info);
        let mut st = StreamState {
            stream_id,
            node: node.id.clone(),
            handle,
            running: first.version_info.clone(),
            pending: None,
            nacked: None,
            nonce_counter: 0,
            started: Instant::now(),
        };
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
        self.nodes.disconnect_handle(&st.node, &st.handle);
        tracing::info!(node = %st.node, "policy stream closed");
    }
}

/// Writes an [`Outbound`] as a `DiscoveryResponse` (the shared bytes, then field 5 `nonce`)
/// and reads `DiscoveryRequest`s as prost does.
#[derive(Debug, Clone, Copy, Default)]
pub struct DiscoveryCodec;

/// Encoder half of [`DiscoveryCodec`].
#[derive(Debug, Clone, Copy, Default)]
pub struct OutboundEncoder;

/// Decoder half of [`DiscoveryCodec`].
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestDecoder;

/// Field number of `DiscoveryResponse.nonce`, the message's last field.
const NONCE_FIELD: u32 = 5;

/// Appends `out`'s encoding to `dst`: identical to prost encoding the whole response.
fn encode_outbound(out: &Outbound, dst: &mut impl BufMut) {
    dst.put_slice(&out.snap.encoded_response);
    if !out.nonce.is_empty() {
        prost::encoding::string::encode(NONCE_FIELD, &out.nonce, dst);
    }
}

impl Encoder for OutboundEncoder {
    type Item = Outbound;
    type Error = Status;

    fn encode(&mut self, item: Outbound, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.reserve(item.snap.encoded_response.len() + item.nonce.len() + 11);
        encode_outbound(&item, dst);
        Ok(())
    }
}

impl Decoder for RequestDecoder {
    type Item = DiscoveryRequest;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<DiscoveryRequest>, Status> {
        DiscoveryRequest::decode(src).map(Some).map_err(|e| Status::internal(e.to_string()))
    }
}

impl Codec for DiscoveryCodec {
    type Encode = Outbound;
    type Decode = DiscoveryRequest;
    type Encoder = OutboundEncoder;
    type Decoder = RequestDecoder;

    fn encoder(&mut self) -> OutboundEncoder {
        OutboundEncoder
    }
    fn decoder(&mut self) -> RequestDecoder {
        RequestDecoder
    }
}

/// The `cordon.v1.PolicyDiscoveryService` gRPC service over [`Discovery`] (one task per
/// stream shares it). Hand-written instead of tonic's generated server so responses can be
/// written by [`DiscoveryCodec`] from each version's shared encoding; the wire format is the
/// generated service's.
#[derive(Clone)]
pub struct DiscoveryGrpc(pub Arc<Discovery>);

struct StreamPolicies(Arc<Discovery>);

impl tonic::server::StreamingService<DiscoveryRequest> for StreamPolicies {
    type Response = Outbound;
    type ResponseStream = ReceiverStream<Result<Outbound, Status>>;
    type Future = std::future::Ready<Result<Response<Self::ResponseStream>, Status>>;

    fn call(&mut self, request: Request<Streaming<DiscoveryRequest>>) -> Self::Future {
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(OUTBOUND_BUFFER);
        let me = Arc::clone(&self.0);
        tokio::spawn(async move { me.run(inbound, tx).await });
        std::future::ready(Ok(Response::new(ReceiverStream::new(rx))))
    }
}

impl tonic::server::NamedService for DiscoveryGrpc {
    const NAME: &'static str = POLICY_SERVICE;
}

impl<B> Service<http::Request<B>> for DiscoveryGrpc
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let path = req.uri().path();
        let ours = path.strip_prefix('/').and_then(|p| p.strip_prefix(POLICY_SERVICE)).and_then(|p| p.strip_prefix('/'));
        if ours == Some(POLICY_METHOD) {
            let method = StreamPolicies(Arc::clone(&self.0));
            return Box::pin(async move { Ok(tonic::server::Grpc::new(DiscoveryCodec).streaming(method, req).await) });
        }
        Box::pin(async move { Ok(Status::unimplemented("").into_http()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cordon_proto::v1::{DiscoveryResponse, PolicyBundle};
    use std::time::Instant;

    #[test]
    fn shared_encoding_plus_nonce_is_prost_encoding_of_the_response() {
        let bundle = PolicyBundle { version: "42".into(), policy_json: b"{\"models\":[]}".to_vec(), ..Default::default() };
        let snap = Arc::new(Snapshot {
            number: 42,
            encoded_response: crate::service::encode_response(&bundle),
            bundle: bundle.clone(),
            published_at: Instant::now(),
        });
        let out = Outbound { snap, nonce: "7-3".into() };
        let mut ours = vec![];
        encode_outbound(&out, &mut ours);
        let expected = DiscoveryResponse {
            version_info: "42".into(),
            resources: vec![prost_types::Any { type_url: POLICY_TYPE_URL.into(), value: bundle.encode_to_vec() }],
            canary: false,
            type_url: POLICY_TYPE_URL.into(),
            nonce: "7-3".into(),
        };
        assert_eq!(ours, expected.encode_to_vec());
        assert_eq!(DiscoveryResponse::decode(ours.as_slice()).unwrap(), expected);
    }
}
