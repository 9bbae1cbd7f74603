//! What the control plane knows about each node: what it runs, what it was sent, what it
//! refused. Feeds `cordonctl status` and `/metrics`.

use crate::metrics::{Metrics, NodeLabel};
use cordon_proto::admin::v1::NodeStatus;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Disconnected nodes are forgotten after this long, so the table stays bounded by the fleet.
const FORGET_AFTER: Duration = Duration::from_secs(3600);

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)).unwrap_or(0)
}

#[derive(Debug, Clone, Default)]
struct Entry {
    stream_id: u64,
    cluster: String,
    metadata_json: String,
    connected: bool,
    connected_since_ms: i64,
    last_seen_ms: i64,
    acked_version: String,
    pending_version: String,
    pending_nonce: String,
    last_nack_version: String,
    last_nack_error: String,
}

/// The registry of nodes, shared by all streams.
pub struct Nodes {
    entries: Mutex<HashMap<String, Entry>>,
    metrics: Arc<Metrics>,
}

/// How a node stands against the current version.
pub fn state(connected: bool, acked: &str, nacked: &str, current: &str) -> &'static str {
    if !connected {
        "DISCONNECTED"
    } else if acked == current {
        "SYNCED"
    } else if !nacked.is_empty() && nacked == current {
        "NACKED"
    } else {
        "STALE"
    }
}

impl Nodes {
    /// An empty registry.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { entries: Mutex::new(HashMap::new()), metrics }
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, Entry>) -> T) -> T {
        // Entries are plain data; a panic elsewhere cannot leave them half-written in a way
        // that matters, so a poisoned lock is still usable.
        let mut g = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }

    fn version_gauge(&self, node: &str, version: &str) {
        if let Ok(n) = version.parse::<i64>() {
            self.metrics.node_version.get_or_create(&NodeLabel { node: node.to_string() }).set(n);
        }
    }

    /// A stream opened for `node`. A newer stream for the same id replaces an older one.
    pub fn connect(&self, node: &str, stream_id: u64, cluster: &str, metadata_json: String, running: &str) {
        let now = now_ms();
        self.with(|m| {
            let e = m.entry(node.to_string()).or_default();
            let was_connected = e.connected;
            *e = Entry {
                stream_id,
                cluster: cluster.to_string(),
                metadata_json,
                connected: true,
                connected_since_ms: now,
                last_seen_ms: now,
                // The version the node says it runs counts as acknowledged: it applied it
                // earlier (possibly from another replica) and kept it across the reconnect.
                acked_version: running.to_string(),
                last_nack_version: std::mem::take(&mut e.last_nack_version),
                last_nack_error: std::mem::take(&mut e.last_nack_error),
                ..Entry::default()
            };
            if !was_connected {
                self.metrics.connected_nodes.inc();
            }
        });
        self.version_gauge(node, running);
    }

    /// The stream `stream_id` of `node` ended.
    pub fn disconnect(&self, node: &str, stream_id: u64) {
        let now = now_ms();
        let removed = self.with(|m| match m.get_mut(node) {
            Some(e) if e.stream_id == stream_id && e.connected => {
                e.connected = false;
                e.last_seen_ms = now;
                e.pending_nonce.clear();
                e.pending_version.clear();
                true
            }
            _ => false,
        });
        if removed {
            self.metrics.connected_nodes.dec();
            self.metrics.node_version.remove(&NodeLabel { node: node.to_string() });
        }
    }

    /// A response was sent.
    pub fn sent(&self, node: &str, stream_id: u64, version: &str, nonce: &str) {
        self.update(node, stream_id, |e| {
            e.pending_version = version.to_string();
            e.pending_nonce = nonce.to_string();
        });
    }

    /// The node ACKed `version`.
    pub fn acked(&self, node: &str, stream_id: u64, version: &str) {
        self.update(node, stream_id, |e| {
            e.acked_version = version.to_string();
            e.pending_version.clear();
            e.pending_nonce.clear();
        });
        self.version_gauge(node, version);
    }

    /// The node NACKed `version` and still runs `running`.
    pub fn nacked(&self, node: &str, stream_id: u64, version: &str, running: &str, error: &str) {
        self.update(node, stream_id, |e| {
            e.acked_version = running.to_string();
            e.last_nack_version = version.to_string();
            e.last_nack_error = error.to_string();
            e.pending_version.clear();
            e.pending_nonce.clear();
        });
    }

    fn update(&self, node: &str, stream_id: u64, f: impl FnOnce(&mut Entry)) {
        let now = now_ms();
        self.with(|m| {
            if let Some(e) = m.get_mut(node).filter(|e| e.stream_id == stream_id) {
                e.last_seen_ms = now;
                f(e);
            }
        });
    }

    /// How many connected nodes have ACKed `current` (cheap: no per-node copies).
    pub fn synced(&self, current: &str) -> usize {
        self.with(|m| m.values().filter(|e| e.connected && e.acked_version == current).count())
    }

    /// Every known node against `current`, sorted by id; forgets long-gone nodes.
    pub fn status(&self, current: &str) -> Vec<NodeStatus> {
        let cutoff = now_ms() - i64::try_from(FORGET_AFTER.as_millis()).unwrap_or(i64::MAX);
        let mut out: Vec<NodeStatus> = self.with(|m| {
            m.retain(|_, e| e.connected || e.last_seen_ms >= cutoff);
            m.iter()
                .map(|(id, e)| NodeStatus {
                    node_id: id.clone(),
                    cluster: e.cluster.clone(),
                    state: state(e.connected, &e.acked_version, &e.last_nack_version, current).to_string(),
                    acked_version: e.acked_version.clone(),
                    pending_version: e.pending_version.clone(),
                    pending_nonce: e.pending_nonce.clone(),
                    last_nack_version: e.last_nack_version.clone(),
                    last_nack_error: e.last_nack_error.clone(),
                    connected_since_unix_ms: e.connected_since_ms,
                    last_seen_unix_ms: e.last_seen_ms,
                    connected: e.connected,
                    metadata_json: e.metadata_json.clone(),
                })
                .collect()
        });
        out.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states() {
        assert_eq!(state(true, "3", "", "3"), "SYNCED");
        assert_eq!(state(true, "2", "3", "3"), "NACKED");
        assert_eq!(state(true, "2", "3", "4"), "STALE");
        assert_eq!(state(true, "", "", "1"), "STALE");
        assert_eq!(state(false, "3", "", "3"), "DISCONNECTED");
    }

    #[test]
    fn replaced_stream_does_not_disconnect_the_new_one() {
        let n = Nodes::new(Arc::new(Metrics::new()));
        n.connect("a", 1, "c", "{}".into(), "");
        n.connect("a", 2, "c", "{}".into(), "");
        n.disconnect("a", 1);
        assert!(n.status("1")[0].connected);
        n.disconnect("a", 2);
        assert!(!n.status("1")[0].connected);
    }
}
