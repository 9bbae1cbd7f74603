//! The per-node chain: each entry carries its sequence number and the chain hash of the entry
//! before it, so a removed, inserted, reordered or altered entry breaks the chain at a place
//! the verifier can name.
//!
//! Chain hash of an entry = SHA-256("cordon-audit/chain/v1\0" || canonical bytes). The first
//! entry (seq 0) has `prev` = [`GENESIS`]. Records the node could not keep (buffer full) still
//! consume sequence numbers; a gap entry right after them states the range, so loss is never
//! silent and the chain stays linked across it.

use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::Hash;
use crate::encoding::encode;
use crate::entry::{Body, Entry, Gap, GapReason};
use crate::record::{AuditRecord, Ident};

/// `prev` of a chain's first entry.
pub const GENESIS: Hash = [0; 32];

const DOMAIN: &[u8] = b"cordon-audit/chain/v1\0";

/// The chain hash of an entry's canonical bytes.
pub fn chain_hash(entry_bytes: &[u8]) -> Hash {
    Sha256::new().chain_update(DOMAIN).chain_update(entry_bytes).finalize().into()
}

/// Where and how a chain breaks, or why the node side refused to extend it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ChainError {
    /// Records were dropped and their gap entry must be sealed before the next record.
    #[error("sequence numbers {from}..={to} were dropped: seal their gap entry first")]
    GapPending {
        /// First dropped.
        from: u64,
        /// Last dropped.
        to: u64,
    },
    /// The entry belongs to another node's chain.
    #[error("entry of node {got} checked against the chain of node {expected}")]
    WrongNode {
        /// The chain's node.
        expected: Ident,
        /// The entry's node.
        got: Ident,
    },
    /// Sequence numbers are missing and no gap entry accounts for them.
    #[error("node {node}: seq {from}..={to} missing (next entry is seq {next}) and no gap entry covers them")]
    Missing {
        /// The node.
        node: Ident,
        /// First missing.
        from: u64,
        /// Last missing.
        to: u64,
        /// The entry found instead.
        next: u64,
    },
    /// The entry's sequence number was already passed: a duplicate or a reordering.
    #[error("node {node}: seq {seq} arrives after seq {last}: duplicated or reordered")]
    Replayed {
        /// The node.
        node: Ident,
        /// The entry's seq.
        seq: u64,
        /// The last seq accepted.
        last: u64,
    },
    /// The entry does not link to the one before it: it or its predecessor was changed.
    #[error("node {node}: seq {seq} does not link to the entry before it (prev hash differs): an entry was altered, removed or inserted")]
    WrongPrev {
        /// The node.
        node: Ident,
        /// The entry's seq.
        seq: u64,
    },
    /// A gap entry's range does not start where the chain stood.
    #[error("node {node}: gap entry seq {seq} states {from}..={to} dropped but the chain expected seq {expected} next")]
    GapMismatch {
        /// The node.
        node: Ident,
        /// The gap entry's seq.
        seq: u64,
        /// Its first dropped seq.
        from: u64,
        /// Its last dropped seq.
        to: u64,
        /// What the chain expected.
        expected: u64,
    },
}

/// An entry sealed into the chain: its number, canonical bytes and chain hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// Its sequence number.
    pub seq: u64,
    /// Its canonical bytes (what is sent, signed and stored).
    pub bytes: Vec<u8>,
    /// Its chain hash (the next entry's `prev`).
    pub hash: Hash,
}

/// The node side of a chain: numbers, links and encodes entries.
#[derive(Debug, Clone)]
pub struct Chain {
    node: Ident,
    next_seq: u64,
    prev: Hash,
    dropped: Option<(u64, u64, GapReason)>,
}

impl Chain {
    /// A new chain for `node`, starting at seq 0.
    pub fn genesis(node: Ident) -> Self {
        Self::resume(node, 0, GENESIS)
    }

    /// Continues a chain whose next seq is `next_seq` after an entry with chain hash `prev`
    /// (e.g. as the control plane last stored it).
    pub fn resume(node: Ident, next_seq: u64, prev: Hash) -> Self {
        Self { node, next_seq, prev, dropped: None }
    }

    /// The seq the next entry will take.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The chain hash the next entry will link to.
    pub fn prev(&self) -> Hash {
        self.prev
    }

    /// The dropped range awaiting its gap entry, if any.
    pub fn pending_gap(&self) -> Option<(u64, u64)> {
        self.dropped.map(|(from, to, _)| (from, to))
    }

    /// Seals `record`, written at `time_ms`, as the next entry.
    pub fn seal_record(&mut self, time_ms: u64, record: AuditRecord) -> Result<Sealed, ChainError> {
        if let Some((from, to, _)) = self.dropped {
            return Err(ChainError::GapPending { from, to });
        }
        Ok(self.seal(time_ms, Body::Record(record)))
    }

    /// Notes that a record was dropped (it could not be kept): it consumes the next seq,
    /// which the gap entry will name. Returns that seq.
    pub fn drop_record(&mut self, reason: GapReason) -> u64 {
        let seq = self.next_seq;
        self.dropped = Some(match self.dropped {
            Some((from, _, first_reason)) => (from, seq, first_reason),
            None => (seq, seq, reason),
        });
        self.next_seq = seq.saturating_add(1);
        seq
    }

    /// Notes that `count` numbers from the next one on stand for records that will never
    /// arrive (see [`GapReason::Restart`]); the gap entry names them. Constant time.
    pub fn drop_records(&mut self, count: u64, reason: GapReason) {
        let Some(last) = count.checked_sub(1) else { return };
        let from = self.next_seq;
        let to = from.saturating_add(last);
        self.dropped = Some(match self.dropped {
            Some((first, _, first_reason)) => (first, to, first_reason),
            None => (from, to, reason),
        });
        self.next_seq = to.saturating_add(1);
    }

    /// Seals the gap entry for the dropped records, if there are any.
    pub fn seal_gap(&mut self, time_ms: u64) -> Option<Sealed> {
        let (from, to, reason) = self.dropped.take()?;
        Some(self.seal(time_ms, Body::Gap(Gap { from, to, reason })))
    }

    fn seal(&mut self, time_ms: u64, body: Body) -> Sealed {
        let entry = Entry { node: self.node.clone(), seq: self.next_seq, prev: self.prev, time_ms, body };
        let bytes = encode(&entry);
        let hash = chain_hash(&bytes);
        let seq = self.next_seq;
        self.next_seq = seq.saturating_add(1);
        self.prev = hash;
        Sealed { seq, bytes, hash }
    }
}

/// The checking side of a chain: accepts entries in order and names the first break.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    node: Ident,
    next_seq: u64,
    prev: Hash,
}

impl ChainVerifier {
    /// Checks `node`'s chain from seq 0.
    pub fn genesis(node: Ident) -> Self {
        Self::resume(node, 0, GENESIS)
    }

    /// Checks `node`'s chain from `next_seq`, after an entry with chain hash `prev`.
    pub fn resume(node: Ident, next_seq: u64, prev: Hash) -> Self {
        Self { node, next_seq, prev }
    }

    /// The seq expected next.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The chain hash of the last accepted entry.
    pub fn prev(&self) -> Hash {
        self.prev
    }

    /// Accepts an entry pruned by retention, known only by its `seq` and chain hash (signed by
    /// the node): the chain goes on from it. Its own link to the entry before it cannot be
    /// checked (its bytes are gone); `seq` must not go backwards.
    pub fn skip_pruned(&mut self, seq: u64, hash: Hash) -> Result<(), ChainError> {
        if seq < self.next_seq {
            return Err(ChainError::Replayed { node: self.node.clone(), seq, last: self.next_seq.saturating_sub(1) });
        }
        self.next_seq = seq.saturating_add(1);
        self.prev = hash;
        Ok(())
    }

    /// Accepts `entry`, decoded from `bytes`, as the next entry; returns its chain hash.
    /// On error the verifier is unchanged.
    pub fn check(&mut self, entry: &Entry, bytes: &[u8]) -> Result<Hash, ChainError> {
        if entry.node != self.node {
            return Err(ChainError::WrongNode { expected: self.node.clone(), got: entry.node.clone() });
        }
        let node = || self.node.clone();
        if entry.seq < self.next_seq {
            return Err(ChainError::Replayed { node: node(), seq: entry.seq, last: self.next_seq.saturating_sub(1) });
        }
        match &entry.body {
            Body::Gap(g) if g.from != self.next_seq => {
                return Err(ChainError::GapMismatch { node: node(), seq: entry.seq, from: g.from, to: g.to, expected: self.next_seq });
            }
            Body::Record(_) if entry.seq > self.next_seq => {
                return Err(ChainError::Missing { node: node(), from: self.next_seq, to: entry.seq - 1, next: entry.seq });
            }
            _ => {}
        }
        if entry.prev != self.prev {
            return Err(ChainError::WrongPrev { node: node(), seq: entry.seq });
        }
        let hash = chain_hash(bytes);
        self.next_seq = entry.seq.saturating_add(1);
        self.prev = hash;
        Ok(hash)
    }
}
