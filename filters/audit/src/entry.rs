//! A chain entry: what is encoded, hashed, chained and signed. Either an audit record or a
//! gap record stating which sequence numbers were dropped.

use crate::Hash;
use crate::record::{AuditRecord, Ident};

/// One entry of a node's chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The node (Envoy) that wrote it.
    pub node: Ident,
    /// Its sequence number in the node's chain, from 0.
    pub seq: u64,
    /// The chain hash of the entry before it ([`crate::chain::GENESIS`] for seq 0).
    pub prev: Hash,
    /// When it was written, unix milliseconds.
    pub time_ms: u64,
    /// What it says.
    pub body: Body,
}

/// What an entry says.
// Nearly every entry is a record, so boxing it would only add an allocation per request.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// One request's audit record.
    Record(AuditRecord),
    /// Records that were dropped.
    Gap(Gap),
}

/// Sequence numbers `from..=to` were assigned to records that were dropped, never sent.
/// The gap entry itself takes the next number, `to + 1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    /// First dropped sequence number.
    pub from: u64,
    /// Last dropped sequence number.
    pub to: u64,
    /// Why they were dropped.
    pub reason: GapReason,
}

/// Why records were dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GapReason {
    /// The node's audit buffer was full (control plane unreachable or slow).
    BufferFull = 1,
    /// The node was shutting down with records it could not send.
    Shutdown = 2,
    /// The node's previous run ended (killed, crashed) before these arrived: numbers it had
    /// sealed but not delivered, and one per exchange it still had in flight, as it last
    /// reported them to the control plane. Sealed by the next run of the node.
    Restart = 3,
}

impl GapReason {
    /// The reason as a stable lower-case word.
    pub fn as_str(self) -> &'static str {
        match self {
            GapReason::BufferFull => "buffer_full",
            GapReason::Shutdown => "shutdown",
            GapReason::Restart => "restart",
        }
    }
}
