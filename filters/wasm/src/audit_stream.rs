//! The singleton's audit delivery: it registers the shared queue the workers hand finished
//! records to, and holds the one `cordon.v1.AuditService/ShipAudit` stream per Envoy. Every
//! decision (sealing, signing, buffering, gaps, what an ack means) is
//! `cordon_core::audit::shipper`'s; this moves bytes and publishes the delivery state.

use crate::audit_trail::{CONTENT_KEY_ENV, QUEUE, STATE_KEY};
use cordon_audit::encoding::decode_record;
use cordon_audit::record::Ident;
use cordon_core::audit::shipper::{AckEvent, Bounds, Outgoing, Shipper, WATERMARK_MS};
use cordon_core::audit::{DeliveryState, in_flight};
use cordon_core::config::AuditDelivery;
use cordon_core::discovery::Backoff;
use cordon_proto::v1 as pb;
use prost::Message;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::Context;
use proxy_wasm::types::LogLevel;
use std::time::UNIX_EPOCH;

fn log(level: LogLevel, msg: &str) {
    let _ = hostcalls::log(level, msg);
}

fn now_ms() -> u64 {
    hostcalls::get_current_time().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map_or(0, |d| d.as_millis() as u64)
}

/// The singleton's audit delivery.
pub struct AuditShipping {
    cluster: String,
    /// What Envoy is handed for the stream: the cluster, or a GrpcService naming the authority.
    upstream: String,
    shipper: Shipper,
    queue: u32,
    token: Option<u32>,
    backoff: Backoff,
    reconnect_at_ms: u64,
    published: Option<DeliveryState>,
    /// The workers' open-draft count keys (announced through the queue).
    workers: Vec<String>,
    next_watermark_ms: u64,
}

/// Worker VMs whose open drafts are summed (a VM reload announces a new key; the old one stays).
const MAX_WORKERS: usize = 1024;

impl AuditShipping {
    /// Sets up delivery for `node` to the control plane behind `cluster`; `Err` says why the
    /// configuration cannot work (the node key above all).
    pub fn configure(cluster: &str, upstream: &str, node: &str, cfg: &AuditDelivery) -> Result<Self, String> {
        let signer = cfg.signer(&|name: &str| std::env::var(name).ok()).map_err(|e| e.to_string())?;
        let node = Ident::new("node", node).map_err(|e| format!("node id cannot name an audit chain: {e}"))?;
        // Checked here so a missing key stops Envoy instead of silently dropping digests; the
        // workers read the key themselves (same vm_config), only its variable's name is shared.
        if cfg.content_key(&|name: &str| std::env::var(name).ok()).map_err(|e| e.to_string())?.is_some() {
            let name = cfg.content_key_env.as_deref().unwrap_or_default();
            hostcalls::set_shared_data(CONTENT_KEY_ENV, Some(name.as_bytes()), None)
                .map_err(|s| format!("set_shared_data({CONTENT_KEY_ENV}): {s:?}"))?;
        }
        let queue = hostcalls::register_shared_queue(QUEUE).map_err(|s| format!("register_shared_queue: {s:?}"))?;
        log(LogLevel::Info, &format!("audit: node {node} signs with key {}; buffer {} records", signer.key_id(), cfg.buffer_records));
        let shipper = Shipper::new(node, signer, Bounds { buffer: cfg.buffer_records, batch: cfg.batch_records, linger_ms: cfg.linger_ms });
        let mut me = Self {
            cluster: cluster.to_owned(),
            upstream: upstream.to_owned(),
            shipper,
            queue,
            token: None,
            backoff: Backoff::new(250, 15_000),
            reconnect_at_ms: 0,
            published: None,
            workers: Vec::new(),
            next_watermark_ms: 0,
        };
        me.publish_state();
        Ok(me)
    }

    /// Whether `token` is this stream's.
    pub fn owns(&self, token: u32) -> bool {
        self.token == Some(token)
    }

    fn publish_state(&mut self) {
        let state = self.shipper.state();
        if self.published == Some(state) {
            return;
        }
        if hostcalls::set_shared_data(STATE_KEY, Some(state.as_bytes()), None).is_ok() {
            self.published = Some(state);
        }
        if state == DeliveryState::Full {
            log(LogLevel::Warn, "audit: buffer full; further records are dropped into a gap entry until the control plane catches up");
        }
    }

    fn connect(&mut self) {
        match self.open_grpc_stream(&self.upstream, pb::AUDIT_SERVICE, pb::AUDIT_METHOD, vec![]) {
            Ok(token) => {
                self.token = Some(token);
                let probe = self.shipper.connected();
                self.send(token, probe);
            }
            Err(status) => {
                log(LogLevel::Warn, &format!("audit: cannot open stream to cluster '{}': {status:?}", self.cluster));
                self.schedule_reconnect();
            }
        }
    }

    fn schedule_reconnect(&mut self) {
        self.token = None;
        self.shipper.disconnected();
        let delay = self.backoff.next_delay_ms(now_ms().rotate_left(29));
        self.reconnect_at_ms = now_ms().saturating_add(delay);
    }

    fn send(&self, token: u32, out: Outgoing) {
        let msg = match out {
            Outgoing::Probe { node, key_id } => pb::AuditBatch { node_id: node.as_str().to_owned(), key_id, ..Default::default() },
            Outgoing::Watermark { node, key_id, claim_through } => {
                pb::AuditBatch { node_id: node.as_str().to_owned(), key_id, watermark: true, claim_through, ..Default::default() }
            }
            Outgoing::Batch(b) => pb::AuditBatch {
                node_id: b.node.as_str().to_owned(),
                key_id: b.key_id,
                first_seq: b.first_seq,
                entries: b.entries,
                signature: b.signature.to_vec(),
                ..Default::default()
            },
        };
        self.send_grpc_stream_message(token, Some(&msg.encode_to_vec()), false);
    }

    fn pump(&mut self) {
        if let Some(token) = self.token
            && let Some(out) = self.shipper.next_batch(now_ms())
        {
            self.send(token, out);
        }
        self.send_watermark();
        self.publish_state();
    }

    /// At most every `WATERMARK_MS`: sums the workers' open drafts and sends the watermark if
    /// the claim changed.
    fn send_watermark(&mut self) {
        let now = now_ms();
        let Some(token) = self.token else { return };
        if now < self.next_watermark_ms {
            return;
        }
        self.next_watermark_ms = now.saturating_add(WATERMARK_MS);
        let open: u64 = self
            .workers
            .iter()
            .map(|k| hostcalls::get_shared_data(k).ok().and_then(|(v, _)| v).map_or(0, |v| in_flight::decode_count(&v)))
            .sum();
        if let Some(wm) = self.shipper.watermark(now, open) {
            self.send(token, wm);
        }
    }

    /// Takes every record the workers queued.
    pub fn on_queue_ready(&mut self, queue_id: u32) {
        if queue_id != self.queue {
            return;
        }
        while let Ok(Some(bytes)) = hostcalls::dequeue_shared_queue(self.queue) {
            if let Some(key) = in_flight::announced(&bytes) {
                if !self.workers.iter().any(|k| k == key) && self.workers.len() < MAX_WORKERS {
                    self.workers.push(key.to_owned());
                }
                continue;
            }
            match decode_record(&bytes) {
                Ok((time_ms, record)) => self.shipper.push(time_ms, record),
                Err(e) => log(LogLevel::Error, &format!("audit: a worker handed over an unreadable record ({e}); module versions differ?")),
            }
        }
        self.pump();
    }

    /// Reconnects when due and sends what waits.
    pub fn on_tick(&mut self) {
        if self.token.is_none() && now_ms() >= self.reconnect_at_ms {
            self.connect();
        }
        self.pump();
    }

    /// An ack arrived on the stream.
    pub fn on_message(&mut self, token: u32, size: usize) {
        let bytes = self.get_grpc_stream_message(0, size).unwrap_or_default();
        let ack = match pb::AuditAck::decode(bytes.as_slice()) {
            Ok(a) => a,
            Err(e) => {
                log(LogLevel::Error, &format!("audit: undecodable ack ({e}); reconnecting"));
                self.cancel_grpc_stream(token);
                self.schedule_reconnect();
                return;
            }
        };
        if let Some(claim) = ack.claimed_through {
            self.shipper.note_claim(claim, now_ms());
        }
        match self.shipper.on_ack(ack.next_seq, &ack.prev_hash, &ack.error) {
            AckEvent::Positioned { next_seq } => {
                self.backoff.reset();
                log(LogLevel::Info, &format!("audit: stream to '{}' up; control plane expects seq {next_seq}", self.cluster));
            }
            AckEvent::Stored { .. } | AckEvent::Unexpected => {}
            AckEvent::Refused(why) => {
                log(LogLevel::Error, &format!("audit: control plane refused the node's batch: {why}; retrying after backoff"));
                self.cancel_grpc_stream(token);
                self.schedule_reconnect();
                return;
            }
        }
        self.pump();
    }

    /// The stream closed.
    pub fn on_close(&mut self, status: u32) {
        log(
            LogLevel::Warn,
            &format!("audit: stream closed (grpc status {status}); {} records buffered, reconnecting", self.shipper.buffered()),
        );
        self.schedule_reconnect();
    }
}

impl Context for AuditShipping {}
