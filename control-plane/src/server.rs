//! Assembles the control plane: one port serving gRPC (policy discovery, admin, health,
//! reflection) and HTTP (admin JSON, /metrics, /healthz), over plain HTTP/1.1 and h2c, or over
//! TLS (ALPN h2 / http/1.1) with optional mandatory client certificates (see [`crate::tls`]).

use crate::admin::Admin;
use crate::audit::AuditLog;
use crate::audit::service::AuditGrpc;
use crate::auth::Tokens;
use crate::discovery::{Discovery, DiscoveryGrpc};
use crate::grpc::AdminGrpc;
use crate::metrics::Metrics;
use crate::nodes::Nodes;
use crate::ratelimit::RlsGrpc;
use crate::service::PolicyService;
use crate::signing::BundleSigner;
use crate::store::{PolicyStore, StoreError};
use crate::tls::PeerCertificate;
use cordon_proto::admin::v1::policy_admin_server::PolicyAdminServer;
use cordon_proto::rls::rate_limit_service_server::RateLimitServiceServer;
use cordon_proto::v1::audit_service_server::AuditServiceServer;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Start-up failures.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The store could not be read.
    #[error("reading the policy store at start-up: {0}")]
    Store(#[from] StoreError),
    /// Reflection descriptors are broken (a build problem).
    #[error("gRPC reflection set-up: {0}")]
    Reflection(String),
    /// Socket trouble.
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
}

/// What the server needs.
pub struct ServerConfig {
    /// Where policy, keys and the admin log live.
    pub store: Arc<dyn PolicyStore>,
    /// Signs bundles.
    pub signer: BundleSigner,
    /// Admin tokens.
    pub tokens: Tokens,
    /// How often to look for versions written by other replicas (shared PostgreSQL).
    pub poll_interval: Duration,
    /// HTTP/2 keep-alive ping interval: finds dead nodes behind half-open connections.
    pub keepalive: Duration,
    /// TLS for every connection on the port (`None`: plaintext, for loopback demos).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// How often a new audit tree head is signed while entries arrive (at most 1 s).
    pub head_interval: Duration,
    /// Where the rate-limit service keeps fleet-wide counters (memory unless Redis is given).
    pub rate_limit_counters: Arc<dyn crate::ratelimit::Counters>,
}

/// Largest audit batch message: 65,536 entries of a few hundred bytes.
const MAX_AUDIT_MESSAGE: usize = 64 * 1024 * 1024;

impl ServerConfig {
    /// Defaults for everything but store, signer and tokens.
    pub fn new(store: Arc<dyn PolicyStore>, signer: BundleSigner, tokens: Tokens) -> Self {
        Self {
            store,
            signer,
            tokens,
            poll_interval: Duration::from_secs(1),
            keepalive: Duration::from_secs(30),
            tls: None,
            head_interval: Duration::from_millis(500),
            rate_limit_counters: Arc::new(crate::ratelimit::memory::MemoryCounters::new()),
        }
    }
}

/// A running server.
pub struct Running {
    /// The bound address.
    pub addr: SocketAddr,
    /// The policy service (tests and embedding use it directly).
    pub service: Arc<PolicyService>,
    /// Node registry.
    pub nodes: Arc<Nodes>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Running {
    /// Stops accepting, ends policy streams, and waits (bounded) for connections to finish.
    pub async fn shutdown(self) {
        self.service.close();
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }
}

/// Starts serving on `listener`.
pub async fn start(listener: TcpListener, cfg: ServerConfig) -> Result<Running, ServerError> {
    let metrics = Arc::new(Metrics::new());
    let nodes = Arc::new(Nodes::new(Arc::clone(&metrics)));
    let audit = Arc::new(AuditLog::open(cfg.store.audit_store(), cfg.signer.audit_signer()).await?);
    let service = Arc::new(PolicyService::new(cfg.store, cfg.signer, Arc::clone(&metrics)));
    service.refresh().await?;
    let discovery = Arc::new(Discovery::new(Arc::clone(&service), Arc::clone(&nodes), Arc::clone(&metrics)));
    let admin = Arc::new(Admin::new(Arc::clone(&service), Arc::clone(&nodes), cfg.tokens, Arc::clone(&audit)));

    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter.set_serving::<DiscoveryGrpc>().await;
    health_reporter.set_serving::<PolicyAdminServer<AdminGrpc>>().await;
    health_reporter.set_serving::<AuditServiceServer<AuditGrpc>>().await;
    health_reporter.set_serving::<RateLimitServiceServer<RlsGrpc>>().await;
    tracing::info!(backend = cfg.rate_limit_counters.name(), "rate-limit service (envoy.service.ratelimit.v3) on the same port");
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(cordon_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServerError::Reflection(e.to_string()))?;

    let router = tonic::service::Routes::new(DiscoveryGrpc(discovery))
        .add_service(PolicyAdminServer::new(AdminGrpc(Arc::clone(&admin))))
        .add_service(AuditServiceServer::new(AuditGrpc(Arc::clone(&audit))).max_decoding_message_size(MAX_AUDIT_MESSAGE))
        .add_service(RateLimitServiceServer::new(RlsGrpc::new(Arc::clone(&cfg.rate_limit_counters))))
        .add_service(health)
        .add_service(reflection)
        .into_axum_router()
        .merge(crate::http::router(admin, Arc::clone(&metrics)));

    let addr = listener.local_addr()?;
    let (stop, stop_rx) = watch::channel(false);

    // Other replicas may append versions to a shared store; pick them up promptly.
    let poll_service = Arc::clone(&service);
    let mut poll_stop = stop_rx.clone();
    let poll_interval = cfg.poll_interval;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(poll_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if let Err(e) = poll_service.refresh().await {
                        tracing::warn!(error = %e, "polling the store for new versions failed; will retry");
                    }
                }
                _ = poll_stop.changed() => break,
            }
        }
    });

    // Tree heads: at least every second while entries arrive (and only then).
    {
        let audit = Arc::clone(&audit);
        let mut head_stop = stop_rx.clone();
        let interval = cfg.head_interval;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        if let Err(e) = audit.sign_head().await {
                            tracing::warn!(error = %e, "signing the audit tree head failed; will retry");
                        }
                    }
                    _ = head_stop.changed() => break,
                }
            }
        });
    }

    let keepalive = cfg.keepalive;
    let tls = cfg.tls.map(tokio_rustls::TlsAcceptor::from);
    let task = tokio::spawn(async move {
        let mut stop_rx = stop_rx;
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http2()
            .timer(hyper_util::rt::TokioTimer::new())
            .keep_alive_interval(Some(keepalive))
            .keep_alive_timeout(Duration::from_secs(20))
            // Many nodes may share one upstream connection (e.g. through a proxy or the bench).
            .max_concurrent_streams(100_000);
        let builder = Arc::new(builder);
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(s) => s,
                        Err(e) => {
                            // EMFILE and friends: back off instead of spinning.
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    let (builder, router, watcher, tls) = (Arc::clone(&builder), router.clone(), graceful.watcher(), tls.clone());
                    tokio::spawn(async move {
                        let result = match tls {
                            None => serve_connection(&builder, watcher, stream, router).await,
                            Some(acceptor) => {
                                // The handshake runs in the connection's task: a slow or silent
                                // client cannot hold up accepting others.
                                let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                                    Ok(Ok(s)) => s,
                                    Ok(Err(e)) => {
                                        tracing::info!(%peer, error = %e, "TLS handshake refused");
                                        return;
                                    }
                                    Err(_) => {
                                        tracing::info!(%peer, "TLS handshake timed out");
                                        return;
                                    }
                                };
                                let cert = stream.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| PeerCertificate::from_der(c.clone().into_owned()));
                                let router = match cert {
                                    Some(cert) => router.layer(axum::Extension(cert)),
                                    None => router,
                                };
                                serve_connection(&builder, watcher, stream, router).await
                            }
                        };
                        if let Err(e) = result {
                            tracing::debug!(error = %e, "connection ended with an error");
                        }
                    });
                }
                _ = stop_rx.changed() => break,
            }
        }
        drop(listener);
        let _ = tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await;
    });

    Ok(Running { addr, service, nodes, metrics, stop, task })
}

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves one accepted connection (plain TCP or TLS) until it ends or the server shuts down.
async fn serve_connection<IO>(
    builder: &auto::Builder<TokioExecutor>,
    watcher: hyper_util::server::graceful::Watcher,
    io: IO,
    router: axum::Router,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = TowerToHyperService::new(router);
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc).into_owned();
    watcher.watch(conn).await
}
