//! The export format and its offline verification: what `cordonctl audit export` writes and
//! `cordon-verify` (or `cordonctl audit verify`) checks, with nothing but the public keys.
//!
//! JSON lines, each line the one canonical serialisation of a [`Line`] (fields in the order
//! below, no spaces, standard padded base64), the file ending in one newline:
//! a header, the entries in leaf order (each with its inclusion proof against the last head),
//! the batch signatures, the signed tree heads (ascending), and a consistency proof between
//! each pair of consecutive heads. Being canonical, changing any byte of an export makes it
//! fail verification.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use crate::Hash;
use crate::batch::{BatchSignature, NodeKeys};
use crate::chain::{ChainVerifier, chain_hash};
use crate::encoding::decode;
use crate::entry::{Body, Entry, GapReason};
use crate::head::{SignedTreeHead, TreeHead};
use crate::keys::PublicKey;
use crate::merkle::{MerkleError, Tree, leaf_hash, verify_consistency, verify_inclusion};
use crate::record::Ident;

/// The export format version.
pub const EXPORT_VERSION: u32 = 1;

/// One line of an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Line {
    /// The first line.
    Export {
        /// [`EXPORT_VERSION`].
        version: u32,
    },
    /// A chain entry, the `leaf`-th leaf of the tree.
    Entry {
        /// Its leaf index.
        leaf: u64,
        /// Its canonical bytes, base64.
        entry: String,
        /// Its inclusion proof against the export's last head, base64 hashes.
        proof: Vec<String>,
    },
    /// An entry whose content was removed by retention: what stays is its place (node, seq),
    /// its chain hash (covered by the node's batch signature) and its leaf hash (covered by
    /// the signed heads), so the chain and the tree still verify.
    Pruned {
        /// Its leaf index.
        leaf: u64,
        /// The node.
        node: String,
        /// Its sequence number.
        seq: u64,
        /// Its chain hash, base64.
        chain_hash: String,
        /// Its RFC 6962 leaf hash, base64.
        leaf_hash: String,
        /// Its inclusion proof against the export's last head, base64 hashes.
        proof: Vec<String>,
    },
    /// A node's signature over consecutive entries of its chain.
    Batch {
        /// The node.
        node: String,
        /// The node key's id.
        key_id: String,
        /// First seq covered.
        first_seq: u64,
        /// Number of entries covered.
        count: u32,
        /// The signature, base64.
        signature: String,
    },
    /// A signed tree head.
    Head {
        /// Tree size.
        size: u64,
        /// Root, base64.
        root: String,
        /// Signing time, unix ms.
        time_ms: u64,
        /// The control-plane key's id.
        key_id: String,
        /// The signature, base64.
        signature: String,
    },
    /// A consistency proof between the heads of sizes `from` and `to`.
    Consistency {
        /// Older size.
        from: u64,
        /// Newer size.
        to: u64,
        /// The proof, base64 hashes.
        proof: Vec<String>,
    },
}

impl Line {
    /// The line for a signed tree head.
    pub fn head(sth: &SignedTreeHead) -> Self {
        Line::Head {
            size: sth.head.size,
            root: STANDARD.encode(sth.head.root),
            time_ms: sth.head.time_ms,
            key_id: sth.key_id.clone(),
            signature: STANDARD.encode(sth.signature),
        }
    }

    /// The line for a batch signature.
    pub fn batch(b: &BatchSignature) -> Self {
        Line::Batch {
            node: b.node.as_str().to_owned(),
            key_id: b.key_id.clone(),
            first_seq: b.first_seq,
            count: b.count,
            signature: STANDARD.encode(b.signature),
        }
    }

    /// The canonical JSON of the line (no newline).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Parses a head line (e.g. one a reviewer kept from an earlier export) into a signed head.
pub fn parse_head(line: &str) -> Result<SignedTreeHead, String> {
    match serde_json::from_str::<Line>(line.trim_end()).map_err(|e| format!("not a head line: {e}"))? {
        Line::Head { size, root, time_ms, key_id, signature } => Ok(SignedTreeHead {
            head: TreeHead { size, root: b64_array(&root, "root")?, time_ms },
            key_id,
            signature: b64_array(&signature, "signature")?,
        }),
        _ => Err("not a head line (type must be \"head\")".to_owned()),
    }
}

/// Parses a base64 Ed25519 public key.
pub fn parse_public_key(b64: &str) -> Result<PublicKey, String> {
    let raw: [u8; 32] = b64_array(b64.trim(), "public key")?;
    PublicKey::from_bytes(&raw).map_err(|e| e.to_string())
}

fn b64_array<const N: usize>(s: &str, what: &str) -> Result<[u8; N], String> {
    let raw = STANDARD.decode(s).map_err(|e| format!("{what} is not base64: {e}"))?;
    <[u8; N]>::try_from(raw.as_slice()).map_err(|_| format!("{what} is {} bytes, expected {N}", raw.len()))
}

fn b64_hashes(v: &[String], what: &str) -> Result<Vec<Hash>, String> {
    v.iter().map(|s| b64_array::<32>(s, what)).collect()
}

/// One leaf of an export: the entry's bytes, or what retention kept of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportEntry {
    /// The canonical entry bytes.
    Full(Vec<u8>),
    /// A pruned entry (see [`Line::Pruned`]).
    Pruned {
        /// The node.
        node: Ident,
        /// Its sequence number.
        seq: u64,
        /// Its chain hash.
        chain_hash: Hash,
        /// Its leaf hash.
        leaf_hash: Hash,
    },
}

impl ExportEntry {
    fn leaf_hash(&self) -> Hash {
        match self {
            ExportEntry::Full(b) => leaf_hash(b),
            ExportEntry::Pruned { leaf_hash, .. } => *leaf_hash,
        }
    }
}

/// Writes an export of `entries` (canonical bytes, in leaf order), their batch signatures and
/// the signed heads (ascending sizes, the last one covering every entry).
pub fn write_export(entries: &[Vec<u8>], batches: &[BatchSignature], heads: &[SignedTreeHead]) -> Result<String, MerkleError> {
    let entries: Vec<ExportEntry> = entries.iter().map(|e| ExportEntry::Full(e.clone())).collect();
    write_export_entries(&entries, batches, heads)
}

/// [`write_export`] for a trail in which retention pruned some entries.
pub fn write_export_entries(entries: &[ExportEntry], batches: &[BatchSignature], heads: &[SignedTreeHead]) -> Result<String, MerkleError> {
    let mut tree = Tree::new();
    for e in entries {
        tree.push_leaf_hash(e.leaf_hash());
    }
    let last = heads.last().map_or(0, |h| h.head.size);
    let mut out = String::new();
    let mut push = |line: Line| {
        out.push_str(&line.to_json());
        out.push('\n');
    };
    push(Line::Export { version: EXPORT_VERSION });
    for (leaf, e) in (0u64..).zip(entries) {
        let proof = if leaf < last { tree.inclusion_proof(leaf, last)? } else { Vec::new() };
        let proof = proof.iter().map(|h| STANDARD.encode(h)).collect();
        push(match e {
            ExportEntry::Full(bytes) => Line::Entry { leaf, entry: STANDARD.encode(bytes), proof },
            ExportEntry::Pruned { node, seq, chain_hash, leaf_hash } => Line::Pruned {
                leaf,
                node: node.as_str().to_owned(),
                seq: *seq,
                chain_hash: STANDARD.encode(chain_hash),
                leaf_hash: STANDARD.encode(leaf_hash),
                proof,
            },
        });
    }
    for b in batches {
        push(Line::batch(b));
    }
    for h in heads {
        push(Line::head(h));
    }
    for pair in heads.windows(2) {
        if let [a, b] = pair
            && a.head.size > 0
            && a.head.size < b.head.size
        {
            let proof = tree.consistency_proof(a.head.size, b.head.size)?;
            push(Line::Consistency { from: a.head.size, to: b.head.size, proof: proof.iter().map(|h| STANDARD.encode(h)).collect() });
        }
    }
    Ok(out)
}

/// What a verifier trusts: node keys, the control-plane key, and heads it already holds.
#[derive(Debug, Clone)]
pub struct Trust {
    /// Registered node keys.
    pub nodes: NodeKeys,
    /// The control plane's tree-head key.
    pub control_plane: PublicKey,
    /// Heads the reviewer obtained earlier: the export must extend each of them.
    pub pinned: Vec<SignedTreeHead>,
}

/// One thing wrong with an export, with the line it concerns (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The line, if the problem sits on one.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "line {l}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// What a verified export holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Entries (leaves).
    pub entries: u64,
    /// Of which audit records.
    pub records: u64,
    /// Of which pruned by retention (their content is gone; their place and hashes verify).
    pub pruned: u64,
    /// Gap entries: node, dropped range, reason.
    pub gaps: Vec<(Ident, u64, u64, GapReason)>,
    /// Entries per node.
    pub nodes: BTreeMap<Ident, u64>,
    /// Signed heads checked.
    pub heads: usize,
    /// The last head.
    pub last_head: TreeHead,
}

struct EntryLine {
    line: usize,
    bytes: Vec<u8>,
    proof: Vec<Hash>,
    entry: Option<Entry>,
    /// For a pruned entry: its node, seq, chain hash and leaf hash.
    pruned: Option<(Ident, u64, Hash, Hash)>,
    signed: bool,
}

impl EntryLine {
    fn place(&self) -> Option<(&Ident, u64)> {
        match (&self.entry, &self.pruned) {
            (Some(e), _) => Some((&e.node, e.seq)),
            (None, Some((node, seq, _, _))) => Some((node, *seq)),
            _ => None,
        }
    }

    fn chain_hash(&self) -> Hash {
        self.pruned.as_ref().map_or_else(|| chain_hash(&self.bytes), |p| p.2)
    }

    fn leaf_hash(&self) -> Hash {
        self.pruned.as_ref().map_or_else(|| leaf_hash(&self.bytes), |p| p.3)
    }
}

/// Verifies an export offline: canonical form, batch signatures, chains and gaps, tree heads,
/// inclusion of every entry, consistency between heads and with pinned heads.
pub fn verify_export(text: &str, trust: &Trust) -> Result<Summary, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut bad = |line: Option<usize>, message: String| problems.push(Problem { line, message });

    if !text.ends_with('\n') {
        bad(None, "the export does not end with a newline: it was truncated or altered".to_owned());
    }
    let mut entries: Vec<EntryLine> = Vec::new();
    let mut batches = Vec::new();
    let mut heads: Vec<(usize, SignedTreeHead)> = Vec::new();
    let mut consistency = Vec::new();
    for (i, raw) in text.split_terminator('\n').enumerate() {
        let line = i + 1;
        let parsed = match serde_json::from_str::<Line>(raw) {
            Ok(p) => p,
            Err(e) => {
                bad(Some(line), format!("not an export line: {e}"));
                continue;
            }
        };
        if parsed.to_json() != raw {
            bad(Some(line), "not in canonical form (fields, spacing or escapes differ from what the exporter writes)".to_owned());
        }
        match (line, parsed) {
            (1, Line::Export { version: EXPORT_VERSION }) => {}
            (1, Line::Export { version }) => {
                bad(Some(line), format!("export version {version} is not supported (this verifier reads {EXPORT_VERSION})"))
            }
            (1, _) => bad(Some(line), "the first line must be the export header".to_owned()),
            (_, Line::Export { .. }) => bad(Some(line), "a second export header".to_owned()),
            (_, Line::Entry { leaf, entry, proof }) => {
                let index = entries.len() as u64;
                if leaf != index {
                    bad(
                        Some(line),
                        format!(
                            "entry says it is leaf {leaf} but it is entry {index} of the export: entries before it were deleted, inserted or reordered"
                        ),
                    );
                }
                let bytes = STANDARD.decode(&entry).unwrap_or_else(|e| {
                    bad(Some(line), format!("leaf {index}: entry is not base64: {e}"));
                    Vec::new()
                });
                let decoded = match decode(&bytes) {
                    Ok(e) => Some(e),
                    Err(e) => {
                        bad(Some(line), format!("leaf {index}: not a canonical entry: {e}"));
                        None
                    }
                };
                let proof = b64_hashes(&proof, "proof hash").unwrap_or_else(|e| {
                    bad(Some(line), format!("leaf {index}: {e}"));
                    Vec::new()
                });
                entries.push(EntryLine { line, bytes, proof, entry: decoded, pruned: None, signed: false });
            }
            (_, Line::Pruned { leaf, node, seq, chain_hash, leaf_hash, proof }) => {
                let index = entries.len() as u64;
                if leaf != index {
                    bad(
                        Some(line),
                        format!(
                            "pruned entry says it is leaf {leaf} but it is entry {index} of the export: entries before it were deleted, inserted or reordered"
                        ),
                    );
                }
                let parts =
                    (Ident::new("node", &node), b64_array::<32>(&chain_hash, "chain hash"), b64_array::<32>(&leaf_hash, "leaf hash"));
                let pruned = match parts {
                    (Ok(n), Ok(c), Ok(l)) => Some((n, seq, c, l)),
                    (Err(e), _, _) => {
                        bad(Some(line), format!("leaf {index}: {e}"));
                        None
                    }
                    (_, Err(e), _) | (_, _, Err(e)) => {
                        bad(Some(line), format!("leaf {index}: {e}"));
                        None
                    }
                };
                let proof = b64_hashes(&proof, "proof hash").unwrap_or_else(|e| {
                    bad(Some(line), format!("leaf {index}: {e}"));
                    Vec::new()
                });
                entries.push(EntryLine { line, bytes: Vec::new(), proof, entry: None, pruned, signed: false });
            }
            (_, Line::Batch { node, key_id, first_seq, count, signature }) => {
                match (Ident::new("node", &node), b64_array::<64>(&signature, "signature")) {
                    (Ok(node), Ok(signature)) => batches.push((line, BatchSignature { node, key_id, first_seq, count, signature })),
                    (Err(e), _) => bad(Some(line), format!("batch: {e}")),
                    (_, Err(e)) => bad(Some(line), format!("batch: {e}")),
                }
            }
            (_, Line::Head { size, root, time_ms, key_id, signature }) => {
                match (b64_array::<32>(&root, "root"), b64_array::<64>(&signature, "signature")) {
                    (Ok(root), Ok(signature)) => {
                        heads.push((line, SignedTreeHead { head: TreeHead { size, root, time_ms }, key_id, signature }))
                    }
                    (Err(e), _) | (_, Err(e)) => bad(Some(line), format!("head: {e}")),
                }
            }
            (_, Line::Consistency { from, to, proof }) => match b64_hashes(&proof, "proof hash") {
                Ok(proof) => consistency.push((line, from, to, proof)),
                Err(e) => bad(Some(line), format!("consistency: {e}")),
            },
        }
    }

    // Where each (node, seq) sits, first occurrence.
    let mut at: HashMap<(Ident, u64), usize> = HashMap::new();
    for (i, e) in entries.iter().enumerate() {
        if let Some((node, seq)) = e.place() {
            at.entry((node.clone(), seq)).or_insert(i);
        }
    }

    // Batch signatures.
    for (line, b) in &batches {
        let mut hashes = Vec::new();
        let mut members = Vec::new();
        for k in 0..u64::from(b.count) {
            let seq = b.first_seq.saturating_add(k);
            match at.get(&(b.node.clone(), seq)) {
                Some(&i) => {
                    members.push(i);
                    hashes.push(entries.get(i).map_or([0; 32], EntryLine::chain_hash));
                }
                None => bad(
                    Some(*line),
                    format!("batch of node {} covers seq {seq}, which is not in the export: the entry was deleted", b.node),
                ),
            }
        }
        if members.len() != b.count as usize {
            continue;
        }
        match trust.nodes.verify_signature(&b.node, &b.key_id, b.first_seq, &hashes, &b.signature) {
            Ok(()) => {
                for i in members {
                    if let Some(e) = entries.get_mut(i) {
                        e.signed = true;
                    }
                }
            }
            Err(e) => bad(Some(*line), e.to_string()),
        }
    }
    for e in &entries {
        if let (Some((node, seq)), false) = (e.place(), e.signed) {
            bad(Some(e.line), format!("node {node} seq {seq} is not covered by a valid batch signature"));
        }
    }

    // Chains, per node in leaf order; the first break of each node is named.
    let mut by_node: BTreeMap<Ident, Vec<usize>> = BTreeMap::new();
    for (i, e) in entries.iter().enumerate() {
        if let Some((node, _)) = e.place() {
            by_node.entry(node.clone()).or_default().push(i);
        }
    }
    let mut gaps = Vec::new();
    let mut records = 0u64;
    let mut pruned = 0u64;
    for (node, idxs) in &by_node {
        // Duplicates and reordering first: the chain check alone would only see a hole.
        let mut seen: HashMap<u64, usize> = HashMap::new();
        let mut max_seen: Option<(u64, usize)> = None;
        let mut broken = false;
        for &i in idxs {
            let Some(e) = entries.get(i) else { continue };
            let Some((_, seq)) = e.place() else { continue };
            let line = &e.line;
            if let Some(&first) = seen.get(&seq) {
                let first_line = entries.get(first).map_or(0, |f| f.line);
                let same = entries.get(first).is_some_and(|f| f.chain_hash() == e.chain_hash());
                let what = if same { "an identical copy" } else { "a different entry with the same number" };
                bad(Some(*line), format!("node {node} seq {seq} appears again ({what} of line {first_line}): an entry was inserted"));
                broken = true;
                break;
            }
            seen.insert(seq, i);
            if let Some((max, max_line)) = max_seen
                && seq < max
            {
                bad(Some(*line), format!("node {node} seq {seq} comes after seq {max} (line {max_line}): entries were reordered"));
                broken = true;
                break;
            }
            max_seen = Some((seq, *line));
        }
        if broken {
            continue;
        }
        let mut verifier = ChainVerifier::genesis(node.clone());
        for &i in idxs {
            if let Some(EntryLine { line, pruned: Some((_, seq, hash, _)), .. }) = entries.get(i) {
                // Its content is gone: its place and chain hash (signed by the node) carry on.
                if let Err(e) = verifier.skip_pruned(*seq, *hash) {
                    bad(Some(*line), format!("{e} (checking of node {node} stops here)"));
                    break;
                }
                pruned += 1;
                continue;
            }
            let Some(EntryLine { line, bytes, entry: Some(entry), .. }) = entries.get(i) else { continue };
            if let Err(e) = verifier.check(entry, bytes) {
                bad(Some(*line), format!("{e} (checking of node {node} stops here)"));
                break;
            }
            match &entry.body {
                Body::Record(_) => records += 1,
                Body::Gap(g) => gaps.push((node.clone(), g.from, g.to, g.reason)),
            }
        }
    }

    // Heads: signatures, order, roots recomputed from the entries.
    let mut tree = Tree::new();
    for e in &entries {
        tree.push_leaf_hash(e.leaf_hash());
    }
    let held = tree.len();
    let mut prev: Option<&SignedTreeHead> = None;
    for (line, h) in &heads {
        if let Err(e) = h.verify(&trust.control_plane) {
            bad(Some(*line), e.to_string());
        }
        if let Some(p) = prev
            && (h.head.size < p.head.size || h.head.time_ms < p.head.time_ms)
        {
            bad(Some(*line), format!("head of size {} is older or smaller than the head before it (size {})", h.head.size, p.head.size));
        }
        prev = Some(h);
        match tree.root_at(h.head.size) {
            Ok(root) if root == h.head.root => {}
            Ok(_) => bad(
                Some(*line),
                format!(
                    "the entries do not give the root of the head of size {}: an entry before leaf {} was changed, deleted, inserted or reordered",
                    h.head.size, h.head.size
                ),
            ),
            Err(_) => {
                bad(Some(*line), format!("head of size {} but the export holds only {held} entries: entries were deleted", h.head.size))
            }
        }
    }
    let last = heads.last().map(|(_, h)| h.head);
    match last {
        None => bad(None, "the export holds no signed tree head".to_owned()),
        Some(last) => {
            if last.size < held {
                let line = entries.get(usize::try_from(last.size).unwrap_or(usize::MAX)).map(|e| e.line);
                bad(line, format!("entries from leaf {} on are not covered by any signed tree head", last.size));
            }
            for (leaf, e) in (0u64..).zip(&entries) {
                if leaf < last.size
                    && let Err(err) = verify_inclusion(&e.leaf_hash(), leaf, last.size, &e.proof, &last.root)
                {
                    bad(Some(e.line), format!("leaf {leaf}: inclusion proof against the head of size {} fails: {err}", last.size));
                }
            }
        }
    }
    for (line, from, to, proof) in &consistency {
        let find = |size: u64| heads.iter().find(|(_, h)| h.head.size == size).map(|(_, h)| h.head.root);
        match (find(*from), find(*to)) {
            (Some(r1), Some(r2)) => {
                if let Err(e) = verify_consistency(*from, *to, proof, &r1, &r2) {
                    bad(Some(*line), format!("consistency proof from size {from} to {to} fails: {e}"));
                }
            }
            _ => bad(Some(*line), format!("consistency proof from size {from} to {to} names a head that is not in the export")),
        }
    }
    for pinned in &trust.pinned {
        let size = pinned.head.size;
        if let Err(e) = pinned.verify(&trust.control_plane) {
            bad(None, format!("the pinned head: {e}"));
        }
        match tree.root_at(size) {
            Ok(root) if root == pinned.head.root => {}
            Ok(_) => bad(
                None,
                format!("the export rewrites history: its first {size} entries do not give the root of the head of size {size} you hold"),
            ),
            Err(_) => {
                bad(None, format!("the export holds {held} entries, fewer than the {size} of the head you hold: entries were removed"))
            }
        }
    }

    if !problems.is_empty() {
        return Err(problems);
    }
    let mut nodes = BTreeMap::new();
    for (node, idxs) in by_node {
        nodes.insert(node, idxs.len() as u64);
    }
    Ok(Summary {
        entries: held,
        records,
        pruned,
        gaps,
        nodes,
        heads: heads.len(),
        last_head: last.unwrap_or(TreeHead { size: 0, root: [0; 32], time_ms: 0 }),
    })
}
