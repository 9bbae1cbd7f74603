//! What the audit trail keeps, as a backend-neutral trait: registered node keys, entries (one
//! row per Merkle leaf), the batch signatures that cover them, and every signed tree head.
//!
//! Entry, batch and head rows are append-only (database triggers refuse UPDATE and DELETE);
//! the columns beside an entry's canonical bytes (node, seq, time, decision, ...) are derived
//! from the bytes for querying and are re-checked against them by `verify`.

use crate::store::StoreResult;
use async_trait::async_trait;
use cordon_audit::batch::BatchSignature;
use cordon_audit::head::SignedTreeHead;

/// A registered node public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredNodeKey {
    /// The node it is registered for.
    pub node: String,
    /// `ed25519:` + 16 hex digits.
    pub key_id: String,
    /// Raw Ed25519 public key.
    pub public_key: [u8; 32],
    /// Still accepted for new batches.
    pub active: bool,
    /// Unix ms.
    pub created_at_ms: i64,
    /// Admin token name.
    pub created_by: String,
    /// Unix ms, 0 while active.
    pub revoked_at_ms: i64,
}

/// One stored entry (one leaf of the tree), as read back. Hashes stay raw bytes so a row
/// whose column was edited to a wrong length is reported, not a read failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    /// Leaf index as stored.
    pub leaf: i64,
    /// Node column.
    pub node: String,
    /// Seq column.
    pub seq: i64,
    /// Entry time column, unix ms.
    pub time_ms: i64,
    /// "allow" / "refuse" / "fail" / "gap".
    pub decision: String,
    /// Reason code column ("" for gaps).
    pub reason: String,
    /// Model column.
    pub model: String,
    /// Team column.
    pub team: String,
    /// User column.
    pub user: String,
    /// HTTP status column (0 when none).
    pub status: i64,
    /// The canonical entry bytes (what the node signed).
    pub entry: Vec<u8>,
    /// Stored chain hash.
    pub chain_hash: Vec<u8>,
    /// Stored RFC 6962 leaf hash.
    pub leaf_hash: Vec<u8>,
}

/// Filters of `cordonctl audit query`; empty / 0 means unfiltered.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Node.
    pub node: String,
    /// Inclusive lower bound on entry time, unix ms.
    pub since_ms: i64,
    /// Inclusive upper bound.
    pub until_ms: i64,
    /// Decision ("gap" for gap entries).
    pub decision: String,
    /// Team.
    pub team: String,
    /// User.
    pub user: String,
    /// Model.
    pub model: String,
    /// At most this many rows (oldest first).
    pub limit: u32,
}

/// Where a node's chain stands in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainTip {
    /// Node.
    pub node: String,
    /// Highest stored seq.
    pub last_seq: u64,
    /// Chain hash of that entry.
    pub last_hash: Vec<u8>,
    /// Entries stored.
    pub entries: u64,
}

/// Persistence of the audit trail.
#[async_trait]
pub trait AuditStore: Send + Sync + 'static {
    /// Every registered node key, active or revoked, oldest first.
    async fn node_keys(&self) -> StoreResult<Vec<StoredNodeKey>>;
    /// Registers a key; [`crate::store::StoreError::DuplicateKey`] if its key id exists.
    async fn insert_node_key(&self, key: StoredNodeKey) -> StoreResult<()>;
    /// Revokes every active key of `node`; returns them.
    async fn revoke_node_keys(&self, node: &str, at_ms: i64) -> StoreResult<Vec<StoredNodeKey>>;
    /// Each node's chain tip.
    async fn chain_tips(&self) -> StoreResult<Vec<ChainTip>>;
    /// Stored chain hashes of `node`'s entries `from..=to`, by seq.
    async fn chain_hashes(&self, node: &str, from: u64, to: u64) -> StoreResult<Vec<(u64, Vec<u8>)>>;
    /// Appends a batch signature and its new entries (leaves already numbered) atomically.
    async fn append_batch(&self, batch: BatchSignature, received_ms: i64, rows: Vec<AuditRow>) -> StoreResult<()>;
    /// Appends a signed tree head.
    async fn append_head(&self, head: SignedTreeHead) -> StoreResult<()>;
    /// Every stored entry, in leaf order.
    async fn rows(&self) -> StoreResult<Vec<AuditRow>>;
    /// Leaf hashes in leaf order (start-up rebuild of the tree).
    async fn leaf_hashes(&self) -> StoreResult<Vec<Vec<u8>>>;
    /// Every batch signature, in arrival order.
    async fn batches(&self) -> StoreResult<Vec<BatchSignature>>;
    /// Every signed head, in signing order.
    async fn heads(&self) -> StoreResult<Vec<SignedTreeHead>>;
    /// One entry by node and seq.
    async fn entry(&self, node: &str, seq: u64) -> StoreResult<Option<AuditRow>>;
    /// Entries matching `filter`, oldest first.
    async fn query(&self, filter: AuditFilter) -> StoreResult<Vec<AuditRow>>;
    /// Retention: blanks the content (entry bytes and derived columns; decision `pruned`) of
    /// entries written before `before_ms` with a leaf below `below_leaf`, keeping their place,
    /// chain hash and leaf hash; returns how many were pruned.
    async fn prune(&self, before_ms: i64, below_leaf: i64) -> StoreResult<u64>;
}

/// The decision column of a pruned entry.
pub const PRUNED: &str = "pruned";
