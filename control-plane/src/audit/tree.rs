//! The log's Merkle tree (RFC 6962, cordon-audit's `Tree`) and its signed heads.
//!
//! The tree lives in memory, rebuilt from the stored leaf hashes at start-up; heads are
//! signed by the control-plane key (the one that signs policy bundles: see docs/audit.md for
//! why one key) and every head is stored.

use cordon_audit::head::{SignedTreeHead, TreeHead};
use cordon_audit::keys::Signer;
use cordon_audit::merkle::Tree;

/// The tree and what was last signed.
pub struct LogTree {
    /// All leaves.
    pub tree: Tree,
    /// The newest signed head.
    pub last_head: Option<SignedTreeHead>,
}

impl LogTree {
    /// A head to sign, if the tree grew since the last one (or none was signed yet).
    pub fn next_head(&self, signer: &Signer, now_ms: u64) -> Option<SignedTreeHead> {
        let size = self.tree.len();
        if let Some(last) = &self.last_head
            && last.head.size >= size
        {
            return None;
        }
        // Heads must not go back in time, even if the wall clock does.
        let time_ms = self.last_head.as_ref().map_or(now_ms, |h| now_ms.max(h.head.time_ms));
        Some(signer.sign_head(TreeHead { size, root: self.tree.root(), time_ms }))
    }
}
