//! The RFC 6962 / RFC 9162 Merkle tree: hashes, an append-only in-memory tree, and inclusion
//! and consistency proofs with their verification.
//!
//! The tree keeps every complete subtree: level 0 holds the leaf hashes, level `l` the hash of
//! each aligned, complete run of `2^l` leaves. That is at most `2n` hashes (64 MB at 10^6
//! leaves), one append costs one hash amortised (`log2 n` at worst), and any subtree the
//! RFC's algorithms ask for is `O(log n)` stored hashes plus the few hashes of its incomplete
//! right edge, so a proof costs `O(log² n)` hashes at most without touching the leaves.

use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::Hash;

/// Why a Merkle proof or a tree query was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MerkleError {
    /// The leaf index is not inside the tree of the given size.
    #[error("leaf index {index} is outside a tree of size {size}")]
    IndexOutOfRange {
        /// The leaf index asked for.
        index: u64,
        /// The tree size it was asked against.
        size: u64,
    },
    /// The tree holds fewer leaves than the size asked for.
    #[error("tree size {asked} is larger than the {held} leaves held")]
    SizeTooLarge {
        /// The size asked for.
        asked: u64,
        /// The leaves the tree holds.
        held: u64,
    },
    /// A consistency proof was asked from a larger tree to a smaller one.
    #[error("first tree size {size1} is larger than second tree size {size2}")]
    SizesReversed {
        /// The first (older) size.
        size1: u64,
        /// The second (newer) size.
        size2: u64,
    },
    /// Every tree is consistent with the empty tree, so such a proof proves nothing.
    #[error("a consistency proof from the empty tree proves nothing")]
    EmptyFirstTree,
    /// The proof has the wrong number of hashes for the sizes and index.
    #[error("proof has the wrong number of hashes")]
    WrongProofLength,
    /// The proof does not lead to the expected root.
    #[error("proof does not lead to the expected root")]
    RootMismatch,
}

/// Leaf hash: SHA-256(0x00 || data).
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(data);
    h.finalize().into()
}

/// Interior node hash: SHA-256(0x01 || left || right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The root of the empty tree: SHA-256 of the empty string (RFC 6962 §2.1).
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The largest power of two strictly below `n` (`n >= 2`): where RFC 6962 splits a tree.
fn split(n: u64) -> u64 {
    1u64 << (63 - (n - 1).leading_zeros())
}

/// An append-only Merkle tree over leaf hashes, holding every complete subtree.
#[derive(Debug, Clone, Default)]
pub struct Tree {
    levels: Vec<Vec<Hash>>,
}

impl Tree {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of leaves.
    pub fn len(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }

    /// Whether the tree has no leaves.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends `data` as a leaf (hashing it with the 0x00 prefix); returns its index.
    pub fn append(&mut self, data: &[u8]) -> u64 {
        self.push_leaf_hash(leaf_hash(data))
    }

    /// Appends an already computed leaf hash; returns its index.
    pub fn push_leaf_hash(&mut self, leaf: Hash) -> u64 {
        let index = self.len();
        let mut hash = leaf;
        let mut level = 0;
        loop {
            if self.levels.len() <= level {
                self.levels.push(Vec::new());
            }
            let Some(row) = self.levels.get_mut(level) else { break };
            row.push(hash);
            // An odd count means the new hash has no right sibling yet.
            if row.len() % 2 == 1 {
                break;
            }
            match (row.get(row.len() - 2), row.last()) {
                (Some(l), Some(r)) => hash = node_hash(l, r),
                _ => break,
            }
            level += 1;
        }
        index
    }

    /// The leaf hash at `index`.
    pub fn leaf(&self, index: u64) -> Option<Hash> {
        self.levels.first()?.get(usize::try_from(index).ok()?).copied()
    }

    /// The root of the whole tree.
    pub fn root(&self) -> Hash {
        self.root_at(self.len()).unwrap_or_else(|_| empty_root())
    }

    /// The root the tree had when it held `size` leaves.
    pub fn root_at(&self, size: u64) -> Result<Hash, MerkleError> {
        self.check_size(size)?;
        if size == 0 {
            return Ok(empty_root());
        }
        self.subtree(0, size).ok_or(MerkleError::SizeTooLarge { asked: size, held: self.len() })
    }

    /// The inclusion proof (audit path) of leaf `index` in the tree of `size` leaves.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, MerkleError> {
        self.check_size(size)?;
        if index >= size {
            return Err(MerkleError::IndexOutOfRange { index, size });
        }
        let mut out = Vec::new();
        self.path(index, 0, size, &mut out).ok_or(MerkleError::SizeTooLarge { asked: size, held: self.len() })?;
        Ok(out)
    }

    /// The consistency proof between the trees of `size1` and `size2` leaves.
    pub fn consistency_proof(&self, size1: u64, size2: u64) -> Result<Vec<Hash>, MerkleError> {
        self.check_size(size2)?;
        if size1 > size2 {
            return Err(MerkleError::SizesReversed { size1, size2 });
        }
        if size1 == 0 {
            return Err(MerkleError::EmptyFirstTree);
        }
        let mut out = Vec::new();
        self.subproof(size1, 0, size2, true, &mut out).ok_or(MerkleError::SizeTooLarge { asked: size2, held: self.len() })?;
        Ok(out)
    }

    fn check_size(&self, size: u64) -> Result<(), MerkleError> {
        if size > self.len() { Err(MerkleError::SizeTooLarge { asked: size, held: self.len() }) } else { Ok(()) }
    }

    /// MTH(D[start..start+size]) for `size >= 1`. The RFC's recursions only ask for ranges
    /// whose power-of-two parts are aligned, so each is one stored hash.
    fn subtree(&self, start: u64, size: u64) -> Option<Hash> {
        if size == 0 {
            return None;
        }
        if size.is_power_of_two() && start.is_multiple_of(size) {
            let level = size.trailing_zeros() as usize;
            return self.levels.get(level)?.get(usize::try_from(start >> level).ok()?).copied();
        }
        let k = split(size);
        Some(node_hash(&self.subtree(start, k)?, &self.subtree(start + k, size - k)?))
    }

    /// PATH(m, D[start..start+n]) of RFC 9162 §2.1.3.1, leaf to root.
    fn path(&self, m: u64, start: u64, n: u64, out: &mut Vec<Hash>) -> Option<()> {
        if n <= 1 {
            return Some(());
        }
        let k = split(n);
        if m < k {
            self.path(m, start, k, out)?;
            out.push(self.subtree(start + k, n - k)?);
        } else {
            self.path(m - k, start + k, n - k, out)?;
            out.push(self.subtree(start, k)?);
        }
        Some(())
    }

    /// SUBPROOF(m, D[start..start+n], b) of RFC 9162 §2.1.4.1.
    fn subproof(&self, m: u64, start: u64, n: u64, whole: bool, out: &mut Vec<Hash>) -> Option<()> {
        if m == n {
            if !whole {
                out.push(self.subtree(start, n)?);
            }
            return Some(());
        }
        let k = split(n);
        if m <= k {
            self.subproof(m, start, k, whole, out)?;
            out.push(self.subtree(start + k, n - k)?);
        } else {
            self.subproof(m - k, start + k, n - k, false, out)?;
            out.push(self.subtree(start, k)?);
        }
        Some(())
    }
}

/// Verifies that `leaf` (a leaf hash) is at `index` in the tree of `size` leaves with `root`
/// (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(leaf: &Hash, index: u64, size: u64, proof: &[Hash], root: &Hash) -> Result<(), MerkleError> {
    if index >= size {
        return Err(MerkleError::IndexOutOfRange { index, size });
    }
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if snode == 0 {
            return Err(MerkleError::WrongProofLength);
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(MerkleError::WrongProofLength);
    }
    if r != *root {
        return Err(MerkleError::RootMismatch);
    }
    Ok(())
}

/// Verifies that the tree of `size2` leaves with `root2` extends the tree of `size1` leaves
/// with `root1` (RFC 9162 §2.1.4.2).
pub fn verify_consistency(size1: u64, size2: u64, proof: &[Hash], root1: &Hash, root2: &Hash) -> Result<(), MerkleError> {
    if size1 > size2 {
        return Err(MerkleError::SizesReversed { size1, size2 });
    }
    if size1 == 0 {
        return Err(MerkleError::EmptyFirstTree);
    }
    if size1 == size2 {
        if !proof.is_empty() {
            return Err(MerkleError::WrongProofLength);
        }
        return if root1 == root2 { Ok(()) } else { Err(MerkleError::RootMismatch) };
    }
    let mut rest = proof.iter();
    // A first tree that is a complete subtree is its own first proof node.
    let seed = if size1.is_power_of_two() { Some(*root1) } else { rest.next().copied() };
    let Some(seed) = seed else { return Err(MerkleError::WrongProofLength) };
    if proof.is_empty() {
        return Err(MerkleError::WrongProofLength);
    }
    let (mut fnode, mut snode) = (size1 - 1, size2 - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let (mut fr, mut sr) = (seed, seed);
    for c in rest {
        if snode == 0 {
            return Err(MerkleError::WrongProofLength);
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(MerkleError::WrongProofLength);
    }
    if fr != *root1 || sr != *root2 {
        return Err(MerkleError::RootMismatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// MTH straight from RFC 6962 §2.1, over the leaf hashes: the reference the tree is held to.
    fn reference_root(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => empty_root(),
            1 => leaves[0],
            n => {
                let k = split(n as u64) as usize;
                node_hash(&reference_root(&leaves[..k]), &reference_root(&leaves[k..]))
            }
        }
    }

    fn tree_of(n: u64) -> (Tree, Vec<Hash>) {
        let mut t = Tree::new();
        let mut leaves = Vec::new();
        for i in 0..n {
            let data = i.to_be_bytes();
            leaves.push(leaf_hash(&data));
            t.append(&data);
        }
        (t, leaves)
    }

    #[test]
    fn roots_match_the_reference_definition() {
        let (t, leaves) = tree_of(70);
        for n in 0..=70 {
            assert_eq!(t.root_at(n).unwrap(), reference_root(&leaves[..n as usize]), "n={n}");
        }
        assert_eq!(t.root_at(71), Err(MerkleError::SizeTooLarge { asked: 71, held: 70 }));
    }

    #[test]
    fn every_proof_of_small_trees_verifies_and_wrong_claims_fail() {
        let (t, leaves) = tree_of(33);
        for n in 1..=33u64 {
            let root = t.root_at(n).unwrap();
            for m in 0..n {
                let p = t.inclusion_proof(m, n).unwrap();
                verify_inclusion(&leaves[m as usize], m, n, &p, &root).unwrap();
                if n > 1 {
                    assert!(verify_inclusion(&leaves[m as usize], (m + 1) % n, n, &p, &root).is_err());
                }
                let r1 = t.root_at(m + 1).unwrap();
                let c = t.consistency_proof(m + 1, n).unwrap();
                verify_consistency(m + 1, n, &c, &r1, &root).unwrap();
                if m + 1 < n {
                    assert!(verify_consistency(m + 1, n, &c, &root, &r1).is_err());
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn generated_proofs_verify_and_any_bit_flip_fails(n in 1u64..300, a in any::<u64>(), b in any::<u64>(), bit in any::<u16>()) {
            let (t, leaves) = tree_of(n);
            let m = a % n;
            let root = t.root_at(n).unwrap();
            let proof = t.inclusion_proof(m, n).unwrap();
            prop_assert!(verify_inclusion(&leaves[m as usize], m, n, &proof, &root).is_ok());
            // Flip one bit anywhere in the proof, leaf or root.
            let mut parts: Vec<Hash> = proof.clone();
            parts.push(leaves[m as usize]);
            parts.push(root);
            let total = parts.len() * 256;
            let at = bit as usize % total;
            parts[at / 256][(at % 256) / 8] ^= 1 << (at % 8);
            let (p2, rest) = parts.split_at(proof.len());
            prop_assert!(verify_inclusion(&rest[0], m, n, p2, &rest[1]).is_err());

            let size1 = 1 + b % n;
            let r1 = t.root_at(size1).unwrap();
            let c = t.consistency_proof(size1, n).unwrap();
            prop_assert!(verify_consistency(size1, n, &c, &r1, &root).is_ok());
            let mut parts = c.clone();
            parts.push(r1);
            parts.push(root);
            let total = parts.len() * 256;
            let at = bit as usize % total;
            parts[at / 256][(at % 256) / 8] ^= 1 << (at % 8);
            let (c2, rest) = parts.split_at(c.len());
            prop_assert!(verify_consistency(size1, n, c2, &rest[0], &rest[1]).is_err());
        }
    }
}
