//! The node's side of audit delivery, host-free: the chain writer the worker roles hand
//! finished records to (through the adapter's shared queue), and the state of the one
//! `ShipAudit` stream to the control plane.
//!
//! * The chain's position is the control plane's: after every (re)connect the node asks where
//!   its chain stands (an empty batch, answered with `next_seq` and `prev_hash`) and continues
//!   from there, so a restarted Envoy extends its chain instead of forking it.
//! * Records wait, sealed and signed in batches, until acknowledged; one batch is in flight at
//!   a time, and a batch goes out when it is full or its oldest record has waited `linger_ms`:
//!   a signature and a send per batch, not per record, even at low traffic (measured: one batch
//!   per record cost Envoy more than the whole identity role per request).
//! * The buffer is bounded. A record that does not fit is dropped *with its sequence number*,
//!   and a gap entry naming the exact range is sealed as soon as there is room again: loss is
//!   never silent. Records kept before the position is known are sealed once it is.
//! * A killed Envoy cannot say what it loses, so it says it ahead: a **watermark** (at most
//!   every [`WATERMARK_MS`] while it changes) tells the control plane the highest number this
//!   run may have used: what it sealed, plus one for each exchange still in flight. The next
//!   run of the node gets the last watermark with its position and seals a `restart` gap for
//!   every number it names that never arrived.

use super::DeliveryState;
use cordon_audit::Hash;
use cordon_audit::batch::Batch;
use cordon_audit::chain::{Chain, Sealed};
use cordon_audit::entry::GapReason;
use cordon_audit::keys::Signer;
use cordon_audit::record::{AuditRecord, Ident};
use std::collections::VecDeque;

/// Least time between two watermarks (ms).
pub const WATERMARK_MS: u64 = 250;

/// Bounds of the node's audit buffer and batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Records (sealed or not) kept until acknowledged; beyond it, records become a gap.
    pub buffer: usize,
    /// Entries per batch.
    pub batch: usize,
    /// How long a record may wait for others to fill its batch, in milliseconds.
    pub linger_ms: u64,
}

/// What the stream must send next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    /// Ask where the node's chain stands: an empty batch from `node` (`key_id` for the log).
    Probe {
        /// The node.
        node: Ident,
        /// The node key's id.
        key_id: String,
    },
    /// A signed batch of consecutive entries.
    Batch(Batch),
    /// The highest seq this run may have used (sealed, or owed to an exchange in flight); the
    /// control plane keeps it for the node's next run and does not answer it.
    Watermark {
        /// The node.
        node: Ident,
        /// The node key's id.
        key_id: String,
        /// The highest seq claimed.
        claim_through: u64,
    },
}

/// What an acknowledgement meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckEvent {
    /// The chain position is known: the control plane expects `next_seq`.
    Positioned {
        /// The seq the control plane expects next.
        next_seq: u64,
    },
    /// Entries below `next_seq` are stored.
    Stored {
        /// The seq the control plane expects next.
        next_seq: u64,
    },
    /// The control plane refused the batch or the node's chain does not continue its own:
    /// reconnect later (nothing is lost; the entries stay buffered).
    Refused(String),
    /// An acknowledgement nobody asked for (ignored).
    Unexpected,
}

enum Stream {
    /// No stream.
    Down,
    /// Connected; waiting for the answer to the position probe.
    Probing,
    /// Position known; `in_flight` entries from the buffer's head are awaiting their ack.
    Ready { in_flight: usize },
}

/// The node's audit chain writer and delivery state.
pub struct Shipper {
    node: Ident,
    signer: Signer,
    bounds: Bounds,
    chain: Option<Chain>,
    /// Records kept before the chain position is known.
    unsealed: VecDeque<(u64, AuditRecord)>,
    /// Records dropped before the position is known (numbered once it is).
    unnumbered_drops: u64,
    /// Sealed entries not yet acknowledged, ascending and consecutive.
    sealed: VecDeque<Sealed>,
    stream: Stream,
    /// When the oldest entry not yet sent was sealed (unix ms).
    unsent_since: Option<u64>,
    /// The seq the control plane last said it expects (everything below is stored).
    acked: u64,
    dropped_total: u64,
    stored_total: u64,
    /// The previous run's last watermark and when it was learnt, until the position is adopted.
    claim: Option<(u64, u64)>,
    /// The last watermark sent, and when.
    watermark_sent: Option<(u64, u64)>,
}

impl Shipper {
    /// A writer for `node`'s chain, signing with `signer`.
    pub fn new(node: Ident, signer: Signer, bounds: Bounds) -> Self {
        let bounds = Bounds { buffer: bounds.buffer.max(1), batch: bounds.batch.max(1), linger_ms: bounds.linger_ms };
        Self {
            node,
            signer,
            bounds,
            chain: None,
            unsealed: VecDeque::new(),
            unnumbered_drops: 0,
            sealed: VecDeque::new(),
            stream: Stream::Down,
            unsent_since: None,
            acked: 0,
            dropped_total: 0,
            stored_total: 0,
            claim: None,
            watermark_sent: None,
        }
    }

    /// The control plane's answer to the position probe carried the previous run's last
    /// watermark (`claim_through`), learnt at `now_ms`: numbers it names beyond the stored
    /// chain become a `restart` gap, sealed first. Ignored once this run has a position (its
    /// own watermarks are what the control plane holds then).
    pub fn note_claim(&mut self, claim_through: u64, now_ms: u64) {
        if self.chain.is_none() && matches!(self.stream, Stream::Probing) {
            self.claim = Some((claim_through, now_ms));
        }
    }

    /// The watermark to send now, if the stream is ready and the claim changed since the last
    /// one (at most every [`WATERMARK_MS`]). `in_flight`: exchanges the workers hold open.
    pub fn watermark(&mut self, now_ms: u64, in_flight: u64) -> Option<Outgoing> {
        if !matches!(self.stream, Stream::Ready { .. }) {
            return None;
        }
        let next = self.chain.as_ref()?.next_seq();
        let claim_through = next.saturating_add(in_flight).checked_sub(1)?;
        if let Some((last, at)) = self.watermark_sent
            && (last == claim_through || now_ms.saturating_sub(at) < WATERMARK_MS)
        {
            return None;
        }
        self.watermark_sent = Some((claim_through, now_ms));
        Some(Outgoing::Watermark { node: self.node.clone(), key_id: self.signer.key_id().to_owned(), claim_through })
    }

    /// The node key's id.
    pub fn key_id(&self) -> &str {
        self.signer.key_id()
    }

    /// Records and entries held, waiting for acknowledgement.
    pub fn buffered(&self) -> usize {
        self.unsealed.len() + self.sealed.len()
    }

    /// Records dropped into gaps since start.
    pub fn dropped_total(&self) -> u64 {
        self.dropped_total
    }

    /// Entries the control plane acknowledged since start.
    pub fn stored_total(&self) -> u64 {
        self.stored_total
    }

    /// Whether new records are kept or dropped into a gap.
    pub fn state(&self) -> DeliveryState {
        if self.buffered() >= self.bounds.buffer { DeliveryState::Full } else { DeliveryState::Open }
    }

    /// Takes a finished record written at `time_ms`.
    pub fn push(&mut self, time_ms: u64, record: AuditRecord) {
        if self.buffered() >= self.bounds.buffer {
            self.dropped_total += 1;
            match &mut self.chain {
                Some(chain) => {
                    chain.drop_record(GapReason::BufferFull);
                }
                None => self.unnumbered_drops += 1,
            }
            return;
        }
        match &mut self.chain {
            None => self.unsealed.push_back((time_ms, record)),
            Some(chain) => {
                if let Some(gap) = chain.seal_gap(time_ms) {
                    self.sealed.push_back(gap);
                }
                if let Ok(s) = chain.seal_record(time_ms, record) {
                    self.sealed.push_back(s);
                }
                self.unsent_since.get_or_insert(time_ms);
            }
        }
    }

    /// A stream is open: the first message asks for the chain position.
    pub fn connected(&mut self) -> Outgoing {
        self.stream = Stream::Probing;
        Outgoing::Probe { node: self.node.clone(), key_id: self.signer.key_id().to_owned() }
    }

    /// The stream closed: unacknowledged entries are sent again after the next connect.
    pub fn disconnected(&mut self) {
        self.stream = Stream::Down;
        // The next stream's control plane may not have heard the last one.
        self.watermark_sent = None;
    }

    /// Whether a stream is open (probing or ready).
    pub fn is_connected(&self) -> bool {
        !matches!(self.stream, Stream::Down)
    }

    /// Handles the control plane's answer: where it stands for this node, and an error if it
    /// refused the batch.
    pub fn on_ack(&mut self, next_seq: u64, prev_hash: &[u8], error: &str) -> AckEvent {
        match self.stream {
            Stream::Down => AckEvent::Unexpected,
            Stream::Probing => {
                let Ok(prev) = <Hash>::try_from(prev_hash) else {
                    return AckEvent::Refused(format!("position answer carries a {}-byte prev_hash", prev_hash.len()));
                };
                if let Err(e) = self.position(next_seq, prev) {
                    return AckEvent::Refused(e);
                }
                self.stream = Stream::Ready { in_flight: 0 };
                AckEvent::Positioned { next_seq }
            }
            Stream::Ready { in_flight } => {
                if in_flight == 0 {
                    return AckEvent::Unexpected;
                }
                self.stream = Stream::Ready { in_flight: 0 };
                self.release_below(next_seq);
                if error.is_empty() { AckEvent::Stored { next_seq } } else { AckEvent::Refused(error.to_owned()) }
            }
        }
    }

    /// The next batch to send, if the stream is ready, nothing is in flight and entries wait.
    /// A gap awaiting its entry is sealed first (when there is room), so it is delivered even
    /// if no new record arrives.
    pub fn next_batch(&mut self, now_ms: u64) -> Option<Outgoing> {
        if !matches!(self.stream, Stream::Ready { in_flight: 0 }) {
            return None;
        }
        if self.buffered() < self.bounds.buffer
            && let Some(gap) = self.chain.as_mut().and_then(|c| c.seal_gap(now_ms))
        {
            self.sealed.push_back(gap);
        }
        let first = self.sealed.front()?.seq;
        let lingering = self.unsent_since.is_some_and(|t| now_ms.saturating_sub(t) < self.bounds.linger_ms);
        if self.sealed.len() < self.bounds.batch && lingering {
            return None;
        }
        // A batch holds consecutive seqs: it ends before a gap entry, whose seq follows the
        // numbers it names.
        let taken: Vec<&Sealed> = self
            .sealed
            .iter()
            .take(self.bounds.batch)
            .enumerate()
            .take_while(|(i, s)| Some(s.seq) == first.checked_add(*i as u64))
            .map(|(_, s)| s)
            .collect();
        let hashes: Vec<cordon_audit::Hash> = taken.iter().map(|s| s.hash).collect();
        let entries: Vec<Vec<u8>> = taken.iter().map(|s| s.bytes.clone()).collect();
        self.stream = Stream::Ready { in_flight: entries.len() };
        // What stays behind (more than a batch, or after a gap) goes with the next ack.
        self.unsent_since = (self.sealed.len() > entries.len()).then_some(now_ms);
        Some(Outgoing::Batch(self.signer.sign_hashed_batch(&self.node, first, entries, &hashes)))
    }

    /// Adopts the control plane's position for this node.
    fn position(&mut self, next_seq: u64, prev: Hash) -> Result<(), String> {
        match &self.chain {
            None => {
                let mut chain = Chain::resume(self.node.clone(), next_seq, prev);
                if let Some((claim, at)) = self.claim.take()
                    && claim >= next_seq
                {
                    // The previous run used these numbers and they never arrived.
                    chain.drop_records(claim - next_seq + 1, GapReason::Restart);
                    if let Some(gap) = chain.seal_gap(at) {
                        self.sealed.push_back(gap);
                    }
                }
                for _ in 0..self.unnumbered_drops {
                    chain.drop_record(GapReason::BufferFull);
                }
                self.unnumbered_drops = 0;
                for (time_ms, record) in std::mem::take(&mut self.unsealed) {
                    if let Some(gap) = chain.seal_gap(time_ms) {
                        self.sealed.push_back(gap);
                    }
                    if let Ok(s) = chain.seal_record(time_ms, record) {
                        self.sealed.push_back(s);
                    }
                }
                self.chain = Some(chain);
                if !self.sealed.is_empty() {
                    // Waited for the control plane already: no reason to wait longer.
                    self.unsent_since = Some(0);
                }
                self.acked = next_seq;
                Ok(())
            }
            Some(_) => {
                // The control plane may hold more than was acknowledged (an ack lost with the
                // stream), never more than was sealed, and never less than was acknowledged.
                let held_end = self.sealed.back().map_or(self.acked, |s| s.seq.saturating_add(1));
                if next_seq < self.acked || next_seq > held_end {
                    return Err(format!(
                        "the control plane expects seq {next_seq} of node {} but had acknowledged up to seq {} and this node holds up to seq {held_end}: \
                         its stored chain and this node's differ (a reset store, or two Envoys with one node id)",
                        self.node, self.acked
                    ));
                }
                let expected_prev = match self.sealed.iter().position(|s| s.seq.saturating_add(1) == next_seq) {
                    Some(i) => self.sealed.get(i).map(|s| s.hash),
                    None => None,
                };
                if let Some(h) = expected_prev
                    && h != prev
                {
                    return Err(format!(
                        "the control plane's entry {} of node {} differs from this node's",
                        next_seq.saturating_sub(1),
                        self.node
                    ));
                }
                self.release_below(next_seq);
                Ok(())
            }
        }
    }

    fn release_below(&mut self, next_seq: u64) {
        self.acked = self.acked.max(next_seq);
        while self.sealed.front().is_some_and(|s| s.seq < next_seq) {
            self.sealed.pop_front();
            self.stored_total += 1;
        }
    }
}

#[cfg(test)]
mod tests;
