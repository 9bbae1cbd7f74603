//! Audit shipping in the native module: one process-wide shipper on a background thread (a
//! current-thread tokio runtime with a tonic client), fed by a channel from the workers
//! (`crate::audit_trail`), holding the one `cordon.v1.AuditService/ShipAudit` stream per Envoy.
//! Every decision (sealing, signing, buffering, gaps, what an ack means) is
//! `cordon_core::audit::shipper`'s, exactly as in the wasm singleton; this moves bytes and
//! publishes the delivery state the workers read (one atomic).

use crate::abi::{self, LogLevel};
use crate::policy_stream::Dialer;
use cordon_audit::record::{AuditRecord, Ident};
use cordon_core::audit::shipper::{AckEvent, Bounds, Outgoing, Shipper};
use cordon_core::config::AuditDelivery;
use cordon_core::discovery::Backoff;
use cordon_proto::v1 as pb;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

/// How often a lingering batch is looked at when nothing else happens.
const TICK: Duration = Duration::from_millis(50);

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The audit settings the running shipper was started with (one per process).
static STARTED: Mutex<Option<AuditDelivery>> = Mutex::new(None);

/// Starts the process's shipper for `cfg` unless it already runs with the same settings. An
/// error (above all a missing or malformed node key) rejects the configuration: an Envoy told
/// to keep an audit trail must not run without one.
pub fn ensure_started(cfg: &AuditDelivery, dialer: Dialer, node_id: &str) -> Result<(), String> {
    let mut started = STARTED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(running) = started.as_ref() {
        return if running == cfg { Ok(()) } else { Err("this Envoy already ships its audit trail with another audit section".into()) };
    }
    let signer = cfg.signer(&|name: &str| std::env::var(name).ok()).map_err(|e| e.to_string())?;
    let content_key = cfg.content_key(&|name: &str| std::env::var(name).ok()).map_err(|e| e.to_string())?;
    let node = Ident::new("node", node_id).map_err(|e| format!("node id cannot name an audit chain: {e}"))?;
    abi::log(LogLevel::Info, &format!("audit: node {node} signs with key {}; buffer {} records", signer.key_id(), cfg.buffer_records));
    let shipper = Shipper::new(node, signer, Bounds { buffer: cfg.buffer_records, batch: cfg.batch_records, linger_ms: cfg.linger_ms });
    let (tx, rx) = unbounded_channel();
    abi::pin_library().map_err(|e| format!("cannot keep the module loaded for its audit thread: {e}"))?;
    let runner = Runner { shipper, records: rx, dialer, published: None };
    std::thread::Builder::new()
        .name("cordon-audit".into())
        .spawn(move || runner.run())
        .map_err(|e| format!("cannot start the audit thread: {e}"))?;
    crate::audit_trail::set_up(tx, content_key);
    crate::audit_trail::publish_state(cordon_core::audit::DeliveryState::Open);
    *started = Some(cfg.clone());
    Ok(())
}

struct Runner {
    shipper: Shipper,
    records: UnboundedReceiver<(u64, AuditRecord)>,
    dialer: Dialer,
    published: Option<cordon_core::audit::DeliveryState>,
}

fn batch(out: Outgoing) -> pb::AuditBatch {
    match out {
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
    }
}

impl Runner {
    fn run(mut self) {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                abi::log(LogLevel::Critical, &format!("audit: cannot start its runtime: {e}; records are not shipped"));
                return;
            }
        };
        let mut backoff = Backoff::new(250, 15_000);
        loop {
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| runtime.block_on(self.session(&mut backoff))));
            let why = outcome.unwrap_or_else(|_| "the stream task panicked".to_owned());
            self.shipper.disconnected();
            self.publish_state();
            abi::log(LogLevel::Warn, &format!("audit: stream closed ({why}); {} records buffered, reconnecting", self.shipper.buffered()));
            // Keep taking records while waiting: they are buffered (or become a gap), never lost silently.
            let delay = Duration::from_millis(backoff.next_delay_ms(now_ms().rotate_left(29)));
            runtime.block_on(self.drain_for(delay));
        }
    }

    fn publish_state(&mut self) {
        let state = self.shipper.state();
        if self.published == Some(state) {
            return;
        }
        crate::audit_trail::publish_state(state);
        if state == cordon_core::audit::DeliveryState::Full {
            abi::log(LogLevel::Warn, "audit: buffer full; further records are dropped into a gap entry until the control plane catches up");
        }
        self.published = Some(state);
    }

    fn take(&mut self, record: Option<(u64, AuditRecord)>) {
        if let Some((time_ms, record)) = record {
            self.shipper.push(time_ms, record);
        }
    }

    async fn drain_for(&mut self, delay: Duration) {
        let until = tokio::time::Instant::now() + delay;
        loop {
            tokio::select! {
                r = self.records.recv() => { self.take(r); self.publish_state(); }
                _ = tokio::time::sleep_until(until) => return,
            }
        }
    }

    /// One connection: probe the chain's position, then send batches as acks allow.
    async fn session(&mut self, backoff: &mut Backoff) -> String {
        let channel = match self.dialer.channel().await {
            Ok(c) => c,
            Err(e) => return e,
        };
        let (tx, rx) = tokio::sync::mpsc::channel::<pb::AuditBatch>(4);
        let probe = self.shipper.connected();
        if tx.send(batch(probe)).await.is_err() {
            return "the stream ended".into();
        }
        let mut client = pb::audit_service_client::AuditServiceClient::new(channel);
        let mut acks = match client.ship_audit(tokio_stream::wrappers::ReceiverStream::new(rx)).await {
            Ok(r) => r.into_inner(),
            Err(status) => return format!("grpc status {}: {}", status.code() as i32, status.message()),
        };
        let mut tick = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                r = self.records.recv() => self.take(r),
                _ = tick.tick() => {}
                ack = acks.message() => {
                    let ack = match ack {
                        Ok(Some(ack)) => ack,
                        Ok(None) => return "the control plane ended the stream".into(),
                        Err(status) => return format!("grpc status {}: {}", status.code() as i32, status.message()),
                    };
                    if let Some(claim) = ack.claimed_through {
                        self.shipper.note_claim(claim, now_ms());
                    }
                    match self.shipper.on_ack(ack.next_seq, &ack.prev_hash, &ack.error) {
                        AckEvent::Positioned { next_seq } => {
                            backoff.reset();
                            abi::log(LogLevel::Info, &format!("audit: stream to {} up; control plane expects seq {next_seq}", self.dialer.uri()));
                        }
                        AckEvent::Stored { .. } | AckEvent::Unexpected => {}
                        AckEvent::Refused(why) => return format!("control plane refused the node's batch: {why}"),
                    }
                }
            }
            if let Some(out) = self.shipper.next_batch(now_ms())
                && tx.send(batch(out)).await.is_err()
            {
                return "the stream ended".into();
            }
            // What a killed Envoy would lose, said ahead (at most every WATERMARK_MS).
            if let Some(wm) = self.shipper.watermark(now_ms(), crate::audit_trail::in_flight())
                && tx.send(batch(wm)).await.is_err()
            {
                return "the stream ended".into();
            }
            self.publish_state();
        }
    }
}
