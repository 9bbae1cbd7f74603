//! The `cordon.policy_stream` singleton (an `envoy.bootstrap.wasm` service with `singleton: true`
//! and the same `vm_id` as the HTTP filters): it holds the one gRPC stream per Envoy to the
//! control plane, verifies each pushed bundle, publishes it to the workers through shared data,
//! and ACKs or NACKs. One stream per Envoy rather than per worker keeps the control plane's fan-out
//! equal to the number of Envoys and gives one consistent ACK per node.

use crate::shared_policy;
use cordon_core::bundle::{POLICY_TYPE_URL, VerifiedBundle};
use cordon_core::config::{ControlPlane, FilterConfig};
use cordon_core::discovery::{Backoff, Outcome, PolicyStream, RequestFields, ResponseView};
use cordon_proto::v1 as pb;
use prost::Message;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, RootContext};
use proxy_wasm::types::{ContextType, LogLevel};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const TICK: Duration = Duration::from_millis(100);
const FILTER_BUILD: &str = concat!("cordon-filter/", env!("CARGO_PKG_VERSION"));

fn log(level: LogLevel, msg: &str) {
    let _ = hostcalls::log(level, msg);
}

fn now_ms() -> u64 {
    hostcalls::get_current_time().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map_or(0, |d| d.as_millis() as u64)
}

pub struct PolicyStreamService {
    config: Option<ControlPlane>,
    node_id: String,
    stream: PolicyStream,
    backoff: Backoff,
    token: Option<u32>,
    reconnect_at_ms: u64,
    /// Audit delivery on its own stream, when configured.
    audit: Option<crate::audit_stream::AuditShipping>,
    /// The gRPC upstream handed to Envoy (`ControlPlane::grpc_upstream`).
    upstream: String,
}

impl Default for PolicyStreamService {
    fn default() -> Self {
        Self {
            config: None,
            node_id: String::new(),
            stream: PolicyStream::new(),
            backoff: Backoff::new(250, 15_000),
            token: None,
            reconnect_at_ms: 0,
            audit: None,
            upstream: String::new(),
        }
    }
}

impl PolicyStreamService {
    fn connect(&mut self) {
        let Some(cfg) = &self.config else { return };
        match self.open_grpc_stream(&self.upstream, pb::POLICY_SERVICE, pb::POLICY_METHOD, vec![]) {
            Ok(token) => {
                self.token = Some(token);
                let hello = self.stream.hello();
                self.send(token, &hello);
                log(LogLevel::Info, &format!("policy stream: connecting to cluster '{}' as node '{}'", cfg.cluster, self.node_id));
            }
            Err(status) => {
                log(LogLevel::Warn, &format!("policy stream: cannot open stream to cluster '{}': {status:?}", cfg.cluster));
                self.schedule_reconnect();
            }
        }
    }

    fn schedule_reconnect(&mut self) {
        self.token = None;
        // Sub-second clock bits are jitter enough to spread a fleet's reconnects.
        let random = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::from(d.subsec_nanos()) ^ now_ms().rotate_left(17));
        let delay = self.backoff.next_delay_ms(random);
        self.reconnect_at_ms = now_ms().saturating_add(delay);
    }

    fn send(&self, token: u32, fields: &RequestFields) {
        let req = pb::DiscoveryRequest {
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
                user_agent_name: "cordon-filter".into(),
            }),
            resource_names: vec![],
            type_url: POLICY_TYPE_URL.into(),
            response_nonce: fields.response_nonce.clone(),
            error_detail: fields.error_detail.as_ref().map(|m| pb::Status { code: 3, message: m.clone(), details: vec![] }),
        };
        self.send_grpc_stream_message(token, Some(&req.encode_to_vec()), false);
    }

    fn handle(&mut self, token: u32, bytes: &[u8]) {
        let Some(cfg) = self.config.clone() else { return };
        let resp = match pb::DiscoveryResponse::decode(bytes) {
            Ok(r) => r,
            Err(e) => {
                log(LogLevel::Error, &format!("policy stream: undecodable response ({e}); reconnecting"));
                self.cancel_grpc_stream(token);
                self.schedule_reconnect();
                return;
            }
        };
        let bundles: Vec<Option<pb::PolicyBundle>> =
            resp.resources.iter().map(|any| pb::PolicyBundle::decode(any.value.as_slice()).ok()).collect();
        let views: Vec<(&str, Option<cordon_core::bundle::BundleView<'_>>)> = resp
            .resources
            .iter()
            .zip(&bundles)
            .map(|(any, b)| {
                let view = b.as_ref().map(|b| cordon_core::bundle::BundleView {
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
        let mut publish = |v: VerifiedBundle| shared_policy::publish(&v.version, &v.sha256_hex, json);
        let outcome = self.stream.on_response(&view, &cfg.trusted_keys, &|name: &str| std::env::var(name).ok(), &mut publish);
        match &outcome {
            Outcome::Applied(ack) => log(
                LogLevel::Info,
                &format!("policy stream: applied version {} (serial {:?})", ack.version_info, self.stream.applied_serial()),
            ),
            Outcome::Unchanged(ack) => {
                log(LogLevel::Info, &format!("policy stream: version {} re-sent, already in force", ack.version_info))
            }
            Outcome::Reject(nack) => log(
                LogLevel::Warn,
                &format!(
                    "policy stream: NACK version '{}' (keeping '{}'): {}",
                    resp.version_info,
                    nack.version_info,
                    nack.error_detail.as_deref().unwrap_or("")
                ),
            ),
        }
        self.send(token, outcome.fields());
        self.backoff.reset();
    }
}

impl Context for PolicyStreamService {
    fn on_grpc_stream_message(&mut self, token_id: u32, message_size: usize) {
        if let Some(a) = self.audit.as_mut().filter(|a| a.owns(token_id)) {
            a.on_message(token_id, message_size);
            return;
        }
        if self.token != Some(token_id) {
            return;
        }
        let bytes = self.get_grpc_stream_message(0, message_size).unwrap_or_default();
        self.handle(token_id, &bytes);
    }

    fn on_grpc_stream_close(&mut self, token_id: u32, status_code: u32) {
        if let Some(a) = self.audit.as_mut().filter(|a| a.owns(token_id)) {
            a.on_close(status_code);
            return;
        }
        if self.token != Some(token_id) {
            return;
        }
        log(
            LogLevel::Warn,
            &format!("policy stream: closed (grpc status {status_code}); keeping version {:?} and reconnecting", self.stream.applied()),
        );
        self.schedule_reconnect();
    }
}

impl RootContext for PolicyStreamService {
    fn on_configure(&mut self, _size: usize) -> bool {
        let raw = self.get_plugin_configuration().unwrap_or_default();
        let config = match FilterConfig::from_json(&raw) {
            Ok(c) => c,
            Err(e) => {
                log(LogLevel::Critical, &format!("invalid policy-stream configuration: {e}"));
                return false;
            }
        };
        let Some(cp) = config.control_plane else {
            log(LogLevel::Critical, "the cordon.policy_stream service needs a `control_plane` section (cluster, trusted_keys)");
            return false;
        };
        if cp.cluster.is_empty() {
            log(LogLevel::Critical, "control_plane.cluster is empty: name the Envoy cluster (HTTP/2) that points at the control plane");
            return false;
        }
        if cp.trusted_keys.is_empty() {
            log(LogLevel::Critical, "control_plane.trusted_keys is empty: no bundle could ever be accepted");
            return false;
        }
        // Envoy's own node id (`xds.node.id`).
        let envoy_node = hostcalls::get_property(vec!["xds", "node", "id"])
            .ok()
            .flatten()
            .and_then(|b| String::from_utf8(b).ok())
            .filter(|s| !s.is_empty());
        self.node_id = cp.node_id.clone().or(envoy_node).unwrap_or_else(|| "cordon-node".into());
        self.backoff = Backoff::new(cp.reconnect_initial_ms, cp.reconnect_max_ms);
        self.upstream = match cp.grpc_upstream() {
            Ok(u) => u,
            Err(e) => {
                log(LogLevel::Critical, &e);
                return false;
            }
        };
        if let Some(audit) = &config.audit {
            match crate::audit_stream::AuditShipping::configure(&cp.cluster, &self.upstream, &self.node_id, audit) {
                Ok(a) => self.audit = Some(a),
                Err(e) => {
                    // Fail closed: an Envoy told to keep an audit trail must not run without one.
                    log(LogLevel::Critical, &format!("audit: {e}"));
                    return false;
                }
            }
        }
        self.config = Some(cp);
        self.set_tick_period(TICK);
        self.connect();
        true
    }

    fn on_tick(&mut self) {
        if self.token.is_none() && now_ms() >= self.reconnect_at_ms {
            self.connect();
        }
        if let Some(a) = &mut self.audit {
            a.on_tick();
        }
    }

    fn on_queue_ready(&mut self, queue_id: u32) {
        if let Some(a) = &mut self.audit {
            a.on_queue_ready(queue_id);
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        None
    }
}
