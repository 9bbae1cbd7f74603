//! Batches: a node signs consecutive entries of its chain with its Ed25519 key.
//!
//! Signed message = "cordon-audit/batch/v1\0" || u16 len || node || u16 len || key id ||
//! u64 first seq || u32 count || the chain hash of each entry in order. Domain separation
//! keeps a batch signature from ever being valid as a tree head or a policy bundle signature.

use thiserror::Error;

use crate::Hash;
use crate::chain::chain_hash;
use crate::encoding::{DecodeError, decode};
use crate::entry::Entry;
use crate::keys::{KeyError, PublicKey, Signer};
use crate::record::Ident;

const DOMAIN: &[u8] = b"cordon-audit/batch/v1\0";

/// The most entries in one batch.
pub const MAX_BATCH_ENTRIES: usize = 65_536;

/// Why a batch was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BatchError {
    /// The batch holds no entries, or more than [`MAX_BATCH_ENTRIES`].
    #[error("batch of node {node} holds {count} entries (1..=65536 allowed)")]
    BadSize {
        /// The node.
        node: Ident,
        /// The count.
        count: usize,
    },
    /// No trusted key has this key id.
    #[error("batch of node {node} is signed by unknown key {key_id}")]
    UnknownKey {
        /// The node.
        node: Ident,
        /// The key id.
        key_id: String,
    },
    /// The key is trusted, but for another node.
    #[error("batch of node {node} is signed by key {key_id}, which is registered for node {owner}, not {node}")]
    KeyNotForNode {
        /// The node the batch claims.
        node: Ident,
        /// The key id.
        key_id: String,
        /// The node the key belongs to.
        owner: Ident,
    },
    /// The signature does not verify.
    #[error("batch of node {node} seq {first_seq}..={last_seq}: signature by {key_id} does not verify (entries or batch altered)")]
    BadSignature {
        /// The node.
        node: Ident,
        /// The key id.
        key_id: String,
        /// First seq.
        first_seq: u64,
        /// Last seq.
        last_seq: u64,
    },
    /// An entry is not canonical.
    #[error("batch of node {node}, entry {index}: {error}")]
    Decode {
        /// The node.
        node: Ident,
        /// The entry's index in the batch.
        index: usize,
        /// What is wrong.
        error: DecodeError,
    },
    /// An entry's node or seq is not the one its place in the batch implies.
    #[error("batch of node {node} starting at seq {first_seq}: entry {index} is node {entry_node} seq {entry_seq}")]
    Misplaced {
        /// The node.
        node: Ident,
        /// First seq.
        first_seq: u64,
        /// The entry's index.
        index: usize,
        /// The entry's node.
        entry_node: Ident,
        /// The entry's seq.
        entry_seq: u64,
    },
    /// A trusted key could not be parsed.
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// Consecutive entries of one node's chain and the node's signature over them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// The node.
    pub node: Ident,
    /// The signing key's id.
    pub key_id: String,
    /// The seq of the first entry.
    pub first_seq: u64,
    /// The entries' canonical bytes, seq `first_seq`, `first_seq + 1`, ...
    pub entries: Vec<Vec<u8>>,
    /// Ed25519 signature of [`batch_message`].
    pub signature: [u8; 64],
}

/// A batch's signature without its entries, as stored and exported beside the entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchSignature {
    /// The node.
    pub node: Ident,
    /// The signing key's id.
    pub key_id: String,
    /// The seq of the first entry.
    pub first_seq: u64,
    /// How many consecutive entries it covers.
    pub count: u32,
    /// Ed25519 signature of [`batch_message`].
    pub signature: [u8; 64],
}

impl Batch {
    /// The signature part, to keep once the entries are stored.
    pub fn signature_part(&self) -> BatchSignature {
        BatchSignature {
            node: self.node.clone(),
            key_id: self.key_id.clone(),
            first_seq: self.first_seq,
            count: u32::try_from(self.entries.len()).unwrap_or(u32::MAX),
            signature: self.signature,
        }
    }
}

/// The exact bytes a batch signature covers.
pub fn batch_message(node: &Ident, key_id: &str, first_seq: u64, entry_hashes: &[Hash]) -> Vec<u8> {
    let mut m = Vec::with_capacity(DOMAIN.len() + 64 + 32 * entry_hashes.len());
    m.extend_from_slice(DOMAIN);
    for s in [node.as_str(), key_id] {
        m.extend_from_slice(&u16::try_from(s.len()).unwrap_or(u16::MAX).to_be_bytes());
        m.extend_from_slice(s.as_bytes());
    }
    m.extend_from_slice(&first_seq.to_be_bytes());
    m.extend_from_slice(&u32::try_from(entry_hashes.len()).unwrap_or(u32::MAX).to_be_bytes());
    for h in entry_hashes {
        m.extend_from_slice(h);
    }
    m
}

impl Signer {
    /// Signs consecutive entries of `node`'s chain starting at `first_seq`.
    pub fn sign_batch(&self, node: &Ident, first_seq: u64, entries: Vec<Vec<u8>>) -> Batch {
        let hashes: Vec<Hash> = entries.iter().map(|e| chain_hash(e)).collect();
        self.sign_hashed_batch(node, first_seq, entries, &hashes)
    }

    /// [`Signer::sign_batch`] for a writer that already holds each entry's chain hash (the
    /// chain computed it when sealing): the same signature without hashing every entry again.
    /// `hashes[i]` must be `chain_hash(&entries[i])`.
    pub fn sign_hashed_batch(&self, node: &Ident, first_seq: u64, entries: Vec<Vec<u8>>, hashes: &[Hash]) -> Batch {
        let signature = self.sign(&batch_message(node, self.key_id(), first_seq, hashes));
        Batch { node: node.clone(), key_id: self.key_id().to_owned(), first_seq, entries, signature }
    }
}

/// The node keys a verifier trusts, each bound to the node it was registered for.
#[derive(Debug, Clone, Default)]
pub struct NodeKeys(Vec<(Ident, PublicKey)>);

impl NodeKeys {
    /// Trusts `public_key` for `node`.
    pub fn add(&mut self, node: Ident, public_key: &[u8; 32]) -> Result<(), KeyError> {
        self.0.push((node, PublicKey::from_bytes(public_key)?));
        Ok(())
    }

    /// Verifies `batch`'s signature, its entries' encoding and placement; returns the
    /// decoded entries. Chain links are checked by [`crate::chain::ChainVerifier`].
    pub fn verify(&self, batch: &Batch) -> Result<Vec<Entry>, BatchError> {
        let node = || batch.node.clone();
        let count = batch.entries.len();
        if count == 0 || count > MAX_BATCH_ENTRIES {
            return Err(BatchError::BadSize { node: node(), count });
        }
        let hashes: Vec<Hash> = batch.entries.iter().map(|e| chain_hash(e)).collect();
        let last_seq = batch.first_seq.saturating_add(count as u64 - 1);
        self.verify_signature(&batch.node, &batch.key_id, batch.first_seq, &hashes, &batch.signature)?;
        let mut out = Vec::with_capacity(count);
        for (index, bytes) in batch.entries.iter().enumerate() {
            let entry = decode(bytes).map_err(|error| BatchError::Decode { node: node(), index, error })?;
            if entry.node != batch.node || Some(entry.seq) != batch.first_seq.checked_add(index as u64) || entry.seq > last_seq {
                return Err(BatchError::Misplaced {
                    node: node(),
                    first_seq: batch.first_seq,
                    index,
                    entry_node: entry.node,
                    entry_seq: entry.seq,
                });
            }
            out.push(entry);
        }
        Ok(out)
    }

    /// Verifies a batch signature given the entries' chain hashes.
    pub fn verify_signature(
        &self,
        node: &Ident,
        key_id: &str,
        first_seq: u64,
        hashes: &[Hash],
        signature: &[u8; 64],
    ) -> Result<(), BatchError> {
        let Some((owner, _)) = self.0.iter().find(|(_, k)| k.key_id() == key_id) else {
            return Err(BatchError::UnknownKey { node: node.clone(), key_id: key_id.to_owned() });
        };
        let Some((_, key)) = self.0.iter().find(|(n, k)| n == node && k.key_id() == key_id) else {
            return Err(BatchError::KeyNotForNode { node: node.clone(), key_id: key_id.to_owned(), owner: owner.clone() });
        };
        if key.verifies(&batch_message(node, key_id, first_seq, hashes), signature) {
            return Ok(());
        }
        Err(BatchError::BadSignature {
            node: node.clone(),
            key_id: key_id.to_owned(),
            first_seq,
            last_seq: first_seq.saturating_add((hashes.len() as u64).saturating_sub(1)),
        })
    }
}
