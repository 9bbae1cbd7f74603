//! Signed tree heads: the control plane's signed statement "the log held `size` entries with
//! this root at this time".
//!
//! Signed message = "cordon-audit/tree-head/v1\0" || u64 size || root || u64 time_ms.

use thiserror::Error;

use crate::Hash;
use crate::keys::{PublicKey, Signer};

const DOMAIN: &[u8] = b"cordon-audit/tree-head/v1\0";

/// Why a tree head was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HeadError {
    /// The head names a key other than the trusted control-plane key.
    #[error("tree head of size {size} is signed by {got}, not the trusted control-plane key {want}")]
    WrongKey {
        /// The head's size.
        size: u64,
        /// The key id in the head.
        got: String,
        /// The trusted key id.
        want: String,
    },
    /// The signature does not verify.
    #[error("tree head of size {size}: signature does not verify (size, root or time altered)")]
    BadSignature {
        /// The head's size.
        size: u64,
    },
}

/// A tree head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeHead {
    /// Number of leaves.
    pub size: u64,
    /// The Merkle root over them.
    pub root: Hash,
    /// When it was signed, unix milliseconds.
    pub time_ms: u64,
}

/// A tree head with the control plane's signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedTreeHead {
    /// The head.
    pub head: TreeHead,
    /// The signing key's id.
    pub key_id: String,
    /// Ed25519 signature of [`head_message`].
    pub signature: [u8; 64],
}

/// The exact bytes a tree head signature covers.
pub fn head_message(head: &TreeHead) -> Vec<u8> {
    let mut m = Vec::with_capacity(DOMAIN.len() + 48);
    m.extend_from_slice(DOMAIN);
    m.extend_from_slice(&head.size.to_be_bytes());
    m.extend_from_slice(&head.root);
    m.extend_from_slice(&head.time_ms.to_be_bytes());
    m
}

impl Signer {
    /// Signs a tree head.
    pub fn sign_head(&self, head: TreeHead) -> SignedTreeHead {
        SignedTreeHead { head, key_id: self.key_id().to_owned(), signature: self.sign(&head_message(&head)) }
    }
}

impl SignedTreeHead {
    /// Verifies the signature with the control plane's public key.
    pub fn verify(&self, control_plane: &PublicKey) -> Result<(), HeadError> {
        if self.key_id != control_plane.key_id() {
            return Err(HeadError::WrongKey { size: self.head.size, got: self.key_id.clone(), want: control_plane.key_id().to_owned() });
        }
        if !control_plane.verifies(&head_message(&self.head), &self.signature) {
            return Err(HeadError::BadSignature { size: self.head.size });
        }
        Ok(())
    }
}
