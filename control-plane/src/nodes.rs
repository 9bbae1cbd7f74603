//! What the control plane knows about each node: what it runs, what it was sent, what it
//! refused. Feeds `cordonctl status` and `/metrics`.

use crate::metrics::{Metrics, NodeLabel};
use cordon_proto::admin::v1::NodeStatus;
use prometheus_client::metrics::gauge::Gauge;
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
    /// This node's `node_policy_version` gauge, looked up once per stream (on its first ACK).
    gauge: Option<Gauge>,
}

/// One node's entry. The registry map is locked only to find or create it (stream open) and
/// to read or prune it (status); per-push updates lock just this node's entry, so 10,000
/// streams updating their own nodes do not queue on one registry lock.
type Slot = Arc<Mutex<Entry>>;

fn lock(slot: &Slot) -> std::sync::MutexGuard<'_, Entry> {
    // Entries are plain data; a panic elsewhere cannot leave them half-written in a way that
    // matters, so a poisoned lock is still usable.
    slot.lock().unwrap_or_else(|p| p.into_inner())
}

/// The registry of nodes, shared by all streams.
pub struct Nodes {
    entries: Mutex<HashMap<String, Slot>>,
    metrics: Arc<Metrics>,
}

/// A stream's handle on its node's entry: updates apply only while this stream is the node's
/// newest one (a newer stream for the same id replaces an older one).
pub struct NodeHandle {
    slot: Slot,
    stream_id: u64,
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

fn set(dst: &mut String, src: &str) {
    // Reuses the allocation: a push and its ACK rewrite the same few short strings.
    dst.clear();
    dst.push_str(src);
}

impl Nodes {
    /// An empty registry.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { entries: Mutex::new(HashMap::new()), metrics }
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, Slot>) -> T) -> T {
        let mut g = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }

    /// A stream opened for `node`. A newer stream for the same id replaces an older one.
    pub fn connect(&self, node: &str, stream_id: u64, cluster: &str, metadata_json: String, running: &str) -> NodeHandle {
        let now = now_ms();
        // The entry is reset under the map lock, so `status` cannot prune it in between.
        let (slot, was_connected) = self.with(|m| {
            let slot = Arc::clone(m.entry(node.to_string()).or_default());
            let mut e = lock(&slot);
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
            if let Ok(n) = running.parse::<i64>() {
                let g = self.metrics.node_version.get_or_create(&NodeLabel { node: node.to_string() }).clone();
                g.set(n);
                e.gauge = Some(g);
            }
            drop(e);
            (slot, was_connected)
        });
        if !was_connected {
            self.metrics.connected_nodes.inc();
        }
        NodeHandle { slot, stream_id }
    }

    /// The stream `stream_id` of `node` ended.
    pub fn disconnect(&self, node: &str, stream_id: u64) {
        let Some(slot) = self.with(|m| m.get(node).cloned()) else { return };
        self.disconnect_slot(node, &slot, stream_id);
    }

    /// The stream holding `handle` ended.
    pub fn disconnect_handle(&self, node: &str, handle: &NodeHandle) {
        self.disconnect_slot(node, &handle.slot, handle.stream_id);
    }

    fn disconnect_slot(&self, node: &str, slot: &Slot, stream_id: u64) {
        let now = now_ms();
        let removed = {
            let mut e = lock(slot);
            if e.stream_id == stream_id && e.connected {
                e.connected = false;
                e.last_seen_ms = now;
                e.pending_nonce.clear();
                e.pending_version.clear();
                e.gauge = None;
                true
            } else {
                false
            }
        };
        if removed {
            self.metrics.connected_nodes.dec();
            self.metrics.node_version.remove(&NodeLabel { node: node.to_string() });
        }
    }

    /// How many connected nodes have ACKed `current` (cheap: no per-node copies).
    pub fn synced(&self, current: &str) -> usize {
        let slots: Vec<Slot> = self.with(|m| m.values().cloned().collect());
        slots
            .iter()
            .filter(|s| {
                let e = lock(s);
                e.connected && e.acked_version == current
            })
            .count()
    }

    /// Every known node against `current`, sorted by id; forgets long-gone nodes.
    pub fn status(&self, current: &str) -> Vec<NodeStatus> {
        let cutoff = now_ms() - i64::try_from(FORGET_AFTER.as_millis()).unwrap_or(i64::MAX);
        let mut out: Vec<NodeStatus> = self.with(|m| {
            m.retain(|_, s| {
                let e = lock(s);
                e.connected || e.last_seen_ms >= cutoff
            });
            m.iter()
                .map(|(id, s)| {
                    let e = lock(s);
                    NodeStatus {
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
                    }
                })
                .collect()
        });
        out.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        out
    }
}

impl NodeHandle {
    fn update(&self, f: impl FnOnce(&mut Entry)) {
        let now = now_ms();
        let mut e = lock(&self.slot);
        if e.stream_id == self.stream_id {
            e.last_seen_ms = now;
            f(&mut e);
        }
    }

    /// A response was sent.
    pub fn sent(&self, version: &str, nonce: &str) {
        self.update(|e| {
            set(&mut e.pending_version, version);
            set(&mut e.pending_nonce, nonce);
        });
    }

    /// The node ACKed `version`; `metrics` supplies its version gauge on first use.
    pub fn acked(&self, node: &str, version: &str, metrics: &Metrics) {
        self.update(|e| {
            set(&mut e.acked_version, version);
            e.pending_version.clear();
            e.pending_nonce.clear();
            if let Ok(n) = version.parse::<i64>() {
                e.gauge.get_or_insert_with(|| metrics.node_version.get_or_create(&NodeLabel { node: node.to_string() }).clone()).set(n);
            }
        });
    }

    /// The node NACKed `version` and still runs `running`.
    pub fn nacked(&self, version: &str, running: &str, error: &str) {
        self.update(|e| {
            set(&mut e.acked_version, running);
            set(&mut e.last_nack_version, version);
            set(&mut e.last_nack_error, error);
            e.pending_version.clear();
            e.pending_nonce.clear();
        });
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
