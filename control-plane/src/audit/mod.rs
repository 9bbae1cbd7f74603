//! The control plane's side of the audit trail: ingest of signed batches from the nodes,
//! append-only storage, the Merkle tree with signed heads, and the views `cordonctl audit`
//! reads. Every check is cordon-audit's own (`NodeKeys`, `ChainVerifier`, `Tree`,
//! `verify_export`): there is one verifier, shared with `cordon-verify`.
//!
//! * [`ingest`]: one batch in, one ack out; per-node chain state.
//! * [`tree`]: the in-memory Merkle tree and the head signer.
//! * [`check`]: export, verify, prove from the database.
//! * [`ledger`]: usage per day, team, user, key and model from verified records.
//! * [`service`]: the `cordon.v1.AuditService` gRPC stream.
//! * [`store`], [`sqlite`], [`postgres`]: persistence.

pub mod budgets;
pub mod check;
pub mod ingest;
pub mod ledger;
pub mod postgres;
pub mod service;
pub mod sqlite;
pub mod store;
pub mod tree;

pub use ingest::AuditLog;

/// Why an audit admin operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The request names something that is not there.
    #[error("{0}")]
    NotFound(String),
    /// The request is malformed.
    #[error("{0}")]
    Invalid(String),
    /// The key id is already registered.
    #[error("{0}")]
    Conflict(String),
    /// Building proofs failed (the stored tree does not match the in-memory one).
    #[error("Merkle tree: {0}; run `cordonctl audit verify`")]
    Merkle(#[from] cordon_audit::merkle::MerkleError),
}
