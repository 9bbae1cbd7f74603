//! A real control plane on 127.0.0.1:0 and real tonic clients playing nodes and admins.

use cordon_control_plane::auth::Tokens;
use cordon_control_plane::server::{self, Running, ServerConfig};
use cordon_control_plane::signing::BundleSigner;
use cordon_control_plane::store::{PolicyStore, SqliteStore};
use cordon_core::bundle::POLICY_TYPE_URL;
use cordon_proto::admin::v1::policy_admin_client::PolicyAdminClient;
use cordon_proto::v1::policy_discovery_service_client::PolicyDiscoveryServiceClient;
use cordon_proto::v1::*;
use prost::Message;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::transport::Channel;

pub const OPS_TOKEN: &str = "ops-token-0123456789";
pub const VIEW_TOKEN: &str = "view-token-0123456789";
pub const AUDIT_TOKEN: &str = "audit-token-0123456789";
pub const SEED: [u8; 32] = [42; 32];

/// Upper bound on waiting for something that must happen; a hang fails instead of blocking.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub fn tokens() -> Tokens {
    Tokens::parse(&format!("ops operator {OPS_TOKEN}\nview viewer {VIEW_TOKEN}\naudit auditor {AUDIT_TOKEN}\n")).unwrap()
}

pub async fn start_with(store: Arc<dyn PolicyStore>) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut cfg = ServerConfig::new(store, BundleSigner::from_seed(SEED), tokens());
    cfg.poll_interval = Duration::from_millis(100);
    server::start(listener, cfg).await.unwrap()
}

pub async fn start() -> Running {
    start_with(Arc::new(SqliteStore::open_in_memory().unwrap())).await
}

pub async fn channel(r: &Running) -> Channel {
    Channel::from_shared(format!("http://{}", r.addr)).unwrap().connect().await.unwrap()
}

pub async fn admin(r: &Running) -> PolicyAdminClient<Channel> {
    PolicyAdminClient::new(channel(r).await)
}

pub fn authed<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    req
}

pub fn policy_yaml(model: &str) -> String {
    format!("models:\n  - allow: ['{model}']\n")
}

/// A simulated node: one policy stream.
pub struct Node {
    pub id: String,
    tx: mpsc::Sender<DiscoveryRequest>,
    rx: Streaming<DiscoveryResponse>,
}

impl Node {
    pub async fn connect(r: &Running, id: &str, running: &str) -> Node {
        let mut client = PolicyDiscoveryServiceClient::new(channel(r).await);
        let (tx, rx) = mpsc::channel(16);
        let first = DiscoveryRequest {
            version_info: running.into(),
            node: Some(cordon_proto::v1::Node { id: id.into(), cluster: "test".into(), ..Default::default() }),
            type_url: POLICY_TYPE_URL.into(),
            ..Default::default()
        };
        tx.send(first).await.unwrap();
        let rx = client.stream_policies(ReceiverStream::new(rx)).await.unwrap().into_inner();
        Node { id: id.into(), tx, rx }
    }

    /// The next response (fails after PATIENCE).
    pub async fn recv(&mut self) -> DiscoveryResponse {
        match tokio::time::timeout(PATIENCE, self.rx.message()).await {
            Ok(Ok(Some(m))) => m,
            other => panic!("node {} expected a response, got {other:?}", self.id),
        }
    }

    /// The stream's end status.
    pub async fn recv_error(&mut self) -> tonic::Status {
        match tokio::time::timeout(PATIENCE, self.rx.message()).await {
            Ok(Err(s)) => s,
            other => panic!("node {} expected an error, got {other:?}", self.id),
        }
    }

    pub async fn send(&self, req: DiscoveryRequest) {
        self.tx.send(req).await.unwrap();
    }

    pub async fn ack(&self, resp: &DiscoveryResponse) {
        self.send(DiscoveryRequest {
            version_info: resp.version_info.clone(),
            response_nonce: resp.nonce.clone(),
            type_url: POLICY_TYPE_URL.into(),
            ..Default::default()
        })
        .await
    }

    pub async fn nack(&self, resp: &DiscoveryResponse, running: &str, why: &str) {
        self.send(DiscoveryRequest {
            version_info: running.into(),
            response_nonce: resp.nonce.clone(),
            type_url: POLICY_TYPE_URL.into(),
            error_detail: Some(Status { code: 3, message: why.into(), details: vec![] }),
            ..Default::default()
        })
        .await
    }
}

/// Decodes the one bundle in a response.
pub fn bundle(resp: &DiscoveryResponse) -> PolicyBundle {
    assert_eq!(resp.type_url, POLICY_TYPE_URL);
    assert_eq!(resp.resources.len(), 1);
    assert_eq!(resp.resources[0].type_url, POLICY_TYPE_URL);
    PolicyBundle::decode(resp.resources[0].value.as_slice()).unwrap()
}

/// Waits until `f` holds for the status of node `id` (bounded by PATIENCE).
pub async fn wait_status(
    r: &Running,
    id: &str,
    f: impl Fn(&cordon_proto::admin::v1::NodeStatus) -> bool,
) -> cordon_proto::admin::v1::NodeStatus {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let current = r.service.current_version();
        let st = r.nodes.status(&current).into_iter().find(|n| n.node_id == id);
        if let Some(st) = st.filter(|s| f(s)) {
            return st;
        }
        assert!(tokio::time::Instant::now() < deadline, "node {id} never reached the expected status");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
