//! The policy stream in the native module: one background thread per Envoy process (a
//! current-thread tokio runtime with a tonic client) holds the gRPC stream to the control plane.
//! It is the dynamic-module counterpart of the wasm `cordon.policy_stream` singleton and runs the
//! same host-free state machine (`cordon_core::discovery::PolicyStream`: verify with
//! `bundle::verify`, refuse replays, ACK or NACK); this file only moves bytes.
//!
//! A verified policy reaches the workers through shared state, not messages: the thread swaps
//! an `Arc` under a mutex and bumps a generation counter; each worker thread keeps the `Arc` it
//! last saw and re-reads it only when the generation moved, so a request costs one atomic load
//! (and the `Arc` clone every filter takes anyway). No worker needs waking: the next request on
//! each worker picks the new policy up, and a request runs under one policy from start to end.

use crate::abi::{self, LogLevel};
use cordon_core::CompiledPolicy;
use cordon_core::bundle::{BundleView, POLICY_TYPE_URL, VerifiedBundle};
use cordon_core::config::{ControlPlane, Dial};
use cordon_core::discovery::{Backoff, Outcome, PolicyStream, RequestFields, ResponseView};
use cordon_proto::v1 as pb;
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

const FILTER_BUILD: &str = concat!("cordon-dynamic/", env!("CARGO_PKG_VERSION"));

/// A policy the control plane pushed, as the workers read it.
pub struct Pushed {
    /// The bundle's version.
    pub version: String,
    /// Hex SHA-256 of the bundle's policy (stamped into audit records).
    pub sha256: String,
    /// The compiled policy.
    pub policy: Arc<CompiledPolicy>,
}

/// The policy in force from the control plane; written by the stream thread only.
static CURRENT: Mutex<Option<Arc<Pushed>>> = Mutex::new(None);
/// Bumped after every write of `CURRENT`; 0 means nothing was ever pushed.
static GENERATION: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// What this worker thread last read: (generation, policy).
    static SEEN: RefCell<(u64, Option<Arc<Pushed>>)> = const { RefCell::new((0, None)) };
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Poisoned only if a holder panicked between two plain assignments; the value is whole.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The pushed policy in force, if any. One atomic load per call; the mutex is taken only by the
/// first call on each thread after a push.
pub fn current() -> Option<Arc<Pushed>> {
    let generation = GENERATION.load(Ordering::Acquire);
    if generation == 0 {
        return None;
    }
    SEEN.with(|seen| {
        let Ok(mut seen) = seen.try_borrow_mut() else { return lock(&CURRENT).clone() };
        if seen.0 != generation {
            // Read the value after the generation: it is at least as new as `generation`.
            *seen = (generation, lock(&CURRENT).clone());
        }
        seen.1.clone()
    })
}

/// Makes `pushed` the policy in force for every request that starts from now on.
fn publish(pushed: Pushed) {
    abi::log(
        LogLevel::Info,
        &format!("policy stream: workers now run version {} (sha256 {})", pushed.version, pushed.sha256.get(..16).unwrap_or_default()),
    );
    let mut current = lock(&CURRENT);
    *current = Some(Arc::new(pushed));
    GENERATION.fetch_add(1, Ordering::Release);
}

/// The control plane the running stream thread was started for (one per process).
static STARTED: Mutex<Option<ControlPlane>> = Mutex::new(None);

/// Starts the process's policy stream for `cp` unless it already runs for the same settings
/// (Envoy creates a filter configuration per listener and again on every config update).
pub fn ensure_started(cp: &ControlPlane) -> Result<(), String> {
    let mut started = lock(&STARTED);
    if let Some(running) = started.as_ref() {
        return if running == cp {
            Ok(())
        } else {
            Err("this Envoy already streams policy with another control_plane section; one control plane per process \
                 (restart Envoy to change control_plane, or give every filter the same section)"
                .into())
        };
    }
    if cp.trusted_keys.is_empty() {
        return Err("control_plane.trusted_keys is empty: no bundle could ever be accepted".into());
    }
    let dialer = Dialer::new(cp)?;
    abi::pin_library().map_err(|e| format!("cannot keep the module loaded for its policy thread: {e}"))?;
    let runner = Runner { cp: cp.clone(), dialer, node_id: node_id(cp), stream: PolicyStream::new() };
    std::thread::Builder::new()
        .name("cordon-policy".into())
        .spawn(move || runner.run())
        .map_err(|e| format!("cannot start the policy-stream thread: {e}"))?;
    *started = Some(cp.clone());
    Ok(())
}

/// The node id: `control_plane.node_id`, else the host name (the pod name in Kubernetes). The
/// dynamic-module ABI does not expose Envoy's own `node.id`.
pub fn node_id(cp: &ControlPlane) -> String {
    cp.node_id.clone().filter(|n| !n.is_empty()).unwrap_or_else(host_name)
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "cordon-node".into())
}

/// How the module's gRPC clients reach the control plane (the policy stream and audit shipping
/// dial the same address with the same TLS files).
#[derive(Clone)]
pub struct Dialer {
    dial: Dial,
    tls: Option<ClientTlsConfig>,
}

impl Dialer {
    /// Validates `address`/`tls` and reads the TLS files now, so a wrong path rejects the
    /// configuration instead of retrying forever.
    pub fn new(cp: &ControlPlane) -> Result<Self, String> {
        let dial = cp.dial().map_err(|e| e.to_string())?;
        let tls = tls_config(&dial)?;
        Ok(Self { dial, tls })
    }

    /// The address dialled.
    pub fn uri(&self) -> &str {
        &self.dial.uri
    }

    /// A connected HTTP/2 channel; the error says why not (with its causes).
    pub async fn channel(&self) -> Result<Channel, String> {
        let mut endpoint = Endpoint::from_shared(self.dial.uri.clone())
            .map_err(|e| format!("cannot connect: {e}"))?
            .connect_timeout(Duration::from_secs(5))
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10));
        if let Some(tls) = &self.tls {
            endpoint = endpoint.tls_config(tls.clone()).map_err(|e| format!("cannot connect: {e}"))?;
        }
        endpoint.connect().await.map_err(|e| format!("cannot connect: {}", error_chain(&e)))
    }
}

fn tls_config(dial: &Dial) -> Result<Option<ClientTlsConfig>, String> {
    let Some(t) = &dial.tls else { return Ok(None) };
    let read = |what: &str, path: &str| std::fs::read(path).map_err(|e| format!("control_plane.tls.{what} '{path}': {e}"));
    let mut cfg = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read("ca_file", &t.ca_file)?));
    if let (Some(cert), Some(key)) = (&t.cert_file, &t.key_file) {
        cfg = cfg.identity(Identity::from_pem(read("cert_file", cert)?, read("key_file", key)?));
    }
    if let Some(name) = &t.server_name {
        cfg = cfg.domain_name(name.clone());
    }
    Ok(Some(cfg))
}

/// Why a stream ended.
#[derive(Debug, thiserror::Error)]
enum Closed {
    #[error("{0}")]
    Connect(String),
    #[error("grpc status {code}: {message}", code = .0.code() as i32, message = .0.message())]
    Status(tonic::Status),
    #[error("the control plane ended the stream")]
    Ended,
    #[error("undecodable response: {0}")]
    Undecodable(String),
}

struct Runner {
    cp: ControlPlane,
    dialer: Dialer,
    node_id: String,
    stream: PolicyStream,
}

impl Runner {
    fn run(mut self) {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                abi::log(LogLevel::Critical, &format!("policy stream: cannot start its runtime: {e}; requests stay refused"));
                return;
            }
        };
        let mut backoff = Backoff::new(self.cp.reconnect_initial_ms, self.cp.reconnect_max_ms);
        loop {
            // A panic here must not end policy delivery silently: it is logged (panic hook) and
            // the stream reconnects; workers keep the policy in force meanwhile.
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| runtime.block_on(self.session(&mut backoff))));
            let why = match outcome {
                Ok(closed) => closed.to_string(),
                Err(_) => "the stream task panicked".to_owned(),
            };
            abi::log(
                LogLevel::Warn,
                &format!("policy stream: closed ({why}); keeping version {:?} and reconnecting", self.stream.applied()),
            );
            // Sub-second clock bits are jitter enough to spread a fleet's reconnects.
            let random = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::from(d.subsec_nanos()));
            std::thread::sleep(Duration::from_millis(backoff.next_delay_ms(random)));
        }
    }

    async fn session(&mut self, backoff: &mut Backoff) -> Closed {
        let channel = match self.dialer.channel().await {
            Ok(c) => c,
            Err(e) => return Closed::Connect(e),
        };
        let (tx, rx) = tokio::sync::mpsc::channel::<pb::DiscoveryRequest>(4);
        // The first request goes in before the call, so the control plane sees the node at once.
        if tx.send(self.request(&self.stream.hello())).await.is_err() {
            return Closed::Ended;
        }
        abi::log(LogLevel::Info, &format!("policy stream: connecting to {} as node '{}'", self.dialer.uri(), self.node_id));
        let mut client = pb::policy_discovery_service_client::PolicyDiscoveryServiceClient::new(channel);
        let mut responses = match client.stream_policies(tokio_stream::wrappers::ReceiverStream::new(rx)).await {
            Ok(r) => r.into_inner(),
            Err(status) => return Closed::Status(status),
        };
        loop {
            let resp = match responses.message().await {
                Ok(Some(resp)) => resp,
                Ok(None) => return Closed::Ended,
                Err(status) if status.code() == tonic::Code::Internal && status.message().contains("decode") => {
                    return Closed::Undecodable(status.message().to_owned());
                }
                Err(status) => return Closed::Status(status),
            };
            let outcome = self.handle(&resp);
            if tx.send(self.request(outcome.fields())).await.is_err() {
                return Closed::Ended;
            }
            backoff.reset();
        }
    }

    fn request(&self, fields: &RequestFields) -> pb::DiscoveryRequest {
        pb::DiscoveryRequest {
            version_info: fields.version_info.clone(),
            node: fields.include_node.then(|| pb::Node {
                id: self.node_id.clone(),
                cluster: String::new(),
                metadata: Some(prost_types::Struct {
                    fields: [(
                        "filter_build".to_string(),
                        prost_types::Value { kind: Some(prost_types::value::Kind::StringValue(FILTER_BUILD.into())) },
                    )]
                    .into_iter()
                    .collect(),
                }),
                user_agent_name: "cordon-dynamic".into(),
            }),
            resource_names: vec![],
            type_url: POLICY_TYPE_URL.into(),
            response_nonce: fields.response_nonce.clone(),
            error_detail: fields.error_detail.as_ref().map(|m| pb::Status { code: 3, message: m.clone(), details: vec![] }),
        }
    }

    /// Judges one response with the core's state machine and publishes what it verified.
    fn handle(&mut self, resp: &pb::DiscoveryResponse) -> Outcome {
        use prost::Message;
        let bundles: Vec<Option<pb::PolicyBundle>> =
            resp.resources.iter().map(|any| pb::PolicyBundle::decode(any.value.as_slice()).ok()).collect();
        let views: Vec<(&str, Option<BundleView<'_>>)> = resp
            .resources
            .iter()
            .zip(&bundles)
            .map(|(any, b)| {
                let view = b.as_ref().map(|b| BundleView {
                    version: &b.version,
                    serial: b.serial,
                    policy_json: &b.policy_json,
                    sha256: &b.sha256,
                    signature: &b.signature,
                    key_id: &b.key_id,
                });
                (any.type_url.as_str(), view)
            })
            .collect();
        let view = ResponseView { version_info: &resp.version_info, nonce: &resp.nonce, resources: &views };
        let json = bundles.first().and_then(|b| b.as_ref()).map(|b| b.policy_json.as_slice()).unwrap_or_default();
        let mut publish_verified = |v: VerifiedBundle| {
            if let Some(e) = crate::faults::publish_refused(json) {
                return Err(e);
            }
            for name in v.policy.missing_secrets() {
                abi::log(
                    LogLevel::Error,
                    &format!(
                        "cordon: runtime secret '{name}' is not set; requests to its upstream get 503 upstream_credential_unavailable"
                    ),
                );
            }
            if let Err(e) = v.policy.rate_limits().prepare(&crate::counters::ProcessStore) {
                return Err(format!("rate limits: could not create counters: {e}"));
            }
            publish(Pushed { version: v.version, sha256: v.sha256_hex, policy: Arc::new(v.policy) });
            Ok(())
        };
        let outcome = self.stream.on_response(&view, &self.cp.trusted_keys, &|name: &str| std::env::var(name).ok(), &mut publish_verified);
        match &outcome {
            Outcome::Applied(ack) => abi::log(
                LogLevel::Info,
                &format!("policy stream: applied version {} (serial {:?})", ack.version_info, self.stream.applied_serial()),
            ),
            Outcome::Unchanged(ack) => {
                abi::log(LogLevel::Info, &format!("policy stream: version {} re-sent, already in force", ack.version_info))
            }
            Outcome::Reject(nack) => abi::log(
                LogLevel::Warn,
                &format!(
                    "policy stream: NACK version '{}' (keeping '{}'): {}",
                    resp.version_info,
                    nack.version_info,
                    nack.error_detail.as_deref().unwrap_or("")
                ),
            ),
        }
        outcome
    }
}

/// A transport error with its causes (tonic's own message is often just "transport error").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_see_a_push_on_their_next_read_and_keep_their_snapshot() {
        let policy = |json: &str| {
            let p = cordon_core::policy::Policy::from_json(json.as_bytes()).unwrap();
            Arc::new(CompiledPolicy::compile(&p, &|_: &str| None).unwrap())
        };
        publish(Pushed { version: "1".into(), sha256: "aa".into(), policy: policy("{}") });
        let first = current().unwrap();
        assert_eq!(first.version, "1");
        // Another thread (a worker) reads the same value.
        let seen = std::thread::spawn(|| current().map(|p| p.version.clone())).join().unwrap();
        assert_eq!(seen.as_deref(), Some("1"));
        publish(Pushed { version: "2".into(), sha256: "bb".into(), policy: policy(r#"{"models":[]}"#) });
        assert_eq!(current().unwrap().version, "2");
        // The snapshot taken before the push is unchanged.
        assert_eq!(first.version, "1");
    }
}
