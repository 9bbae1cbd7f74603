//! Prometheus metrics served at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Label naming one node.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabel {
    /// Node id.
    pub node: String,
}

/// All control-plane metrics.
pub struct Metrics {
    registry: Registry,
    /// Streams currently open.
    pub connected_nodes: Gauge,
    /// The newest version number this replica serves.
    pub current_version: Gauge,
    /// Version number each connected node last ACKed.
    pub node_version: Family<NodeLabel, Gauge>,
    /// Seconds from a version's publication (or the stream's start, if later) to its ACK.
    pub push_latency: Histogram,
    /// Responses sent.
    pub pushes: Counter,
    /// NACKs received.
    pub nacks: Counter,
    /// Requests ignored for carrying a stale nonce.
    pub stale_nonces: Counter,
}

impl Metrics {
    /// Registers everything.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("cordon_cp");
        let m = Metrics {
            connected_nodes: Gauge::default(),
            current_version: Gauge::default(),
            node_version: Family::default(),
            push_latency: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            pushes: Counter::default(),
            nacks: Counter::default(),
            stale_nonces: Counter::default(),
            registry: Registry::default(),
        };
        registry.register("connected_nodes", "Policy streams currently open", m.connected_nodes.clone());
        registry.register("policy_version", "Newest policy version served", m.current_version.clone());
        registry.register("node_policy_version", "Policy version each node last ACKed", m.node_version.clone());
        registry.register("push_latency_seconds", "Publication (or connect) to ACK", m.push_latency.clone());
        registry.register("pushes", "Policy responses sent", m.pushes.clone());
        registry.register("nacks", "Policy NACKs received", m.nacks.clone());
        registry.register("stale_nonces", "Requests ignored for a stale nonce", m.stale_nonces.clone());
        Metrics { registry, ..m }
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            return "# metrics encoding failed\n".into();
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
