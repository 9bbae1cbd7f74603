//! Export, verify and prove, read from the database. `verify` writes the stored rows as a
//! cordon-audit export and runs cordon-audit's `verify_export` on it (the same code as the
//! offline `cordon-verify`), after row-level checks that only the database can answer
//! (leaf numbering, stored hashes and derived columns against the signed bytes).

use super::AuditError;
use super::ingest::{AuditLog, columns};
use super::store::{AuditRow, PRUNED, StoredNodeKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use cordon_audit::Hash;
use cordon_audit::batch::NodeKeys;
use cordon_audit::chain::chain_hash;
use cordon_audit::encoding::decode;
use cordon_audit::export::{ExportEntry, Line, Trust, verify_export, write_export_entries};
use cordon_audit::head::SignedTreeHead;
use cordon_audit::keys::PublicKey;
use cordon_audit::merkle::{Tree, leaf_hash};
use cordon_audit::record::Ident;

/// The result of `verify`.
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    /// Entry rows read.
    pub entries: u64,
    /// Heads read.
    pub heads: u64,
    /// What is wrong, each naming its row.
    pub problems: Vec<String>,
}

/// The trust a reviewer would hold: every key ever registered (a revoked key stays valid for
/// what it signed before) and the control-plane key.
fn trust(keys: &[StoredNodeKey], control_plane: &[u8; 32]) -> Result<Trust, AuditError> {
    let mut nodes = NodeKeys::default();
    for k in keys {
        let node = Ident::new("node", &k.node).map_err(|e| AuditError::Invalid(format!("stored node key {}: {e}", k.key_id)))?;
        nodes.add(node, &k.public_key).map_err(|e| AuditError::Invalid(e.to_string()))?;
    }
    let control_plane = PublicKey::from_bytes(control_plane).map_err(|e| AuditError::Invalid(e.to_string()))?;
    Ok(Trust { nodes, control_plane, pinned: Vec::new() })
}

/// A stored row as an export leaf: its bytes, or what retention kept of it.
fn export_entry(r: &AuditRow) -> ExportEntry {
    if !r.entry.is_empty() {
        return ExportEntry::Full(r.entry.clone());
    }
    let hash = |v: &[u8]| <[u8; 32]>::try_from(v).unwrap_or([0; 32]);
    ExportEntry::Pruned {
        node: cordon_audit::record::Ident::escaped(&r.node),
        seq: u64::try_from(r.seq).unwrap_or(u64::MAX),
        chain_hash: hash(&r.chain_hash),
        leaf_hash: hash(&r.leaf_hash),
    }
}

fn name(r: &AuditRow) -> String {
    format!("leaf {} (node {} seq {})", r.leaf, r.node, r.seq)
}

/// Row-level checks: numbering, stored hashes, derived columns.
fn check_rows(rows: &[AuditRow], problems: &mut Vec<String>) {
    let mut expected = 0i64;
    for r in rows {
        if r.leaf > expected {
            let what =
                if r.leaf == expected + 1 { format!("leaf {expected} is") } else { format!("leaves {expected}..={} are", r.leaf - 1) };
            problems.push(format!("{what} missing before {}: rows were deleted", name(r)));
        } else if r.leaf < expected {
            problems.push(format!("{}: leaf number out of order: rows were inserted or renumbered", name(r)));
        }
        expected = r.leaf + 1;
        if r.entry.is_empty() {
            // Pruned by retention: only the place and the hashes are left; they are checked
            // against the batch signatures and the heads below.
            let blank = r.decision == PRUNED
                && r.reason.is_empty()
                && r.model.is_empty()
                && r.team.is_empty()
                && r.user.is_empty()
                && r.status == 0;
            if !blank || r.leaf_hash.len() != 32 || r.chain_hash.len() != 32 {
                problems.push(format!("{}: an entry without content that is not a pruned entry: the row was changed", name(r)));
            }
            continue;
        }
        if r.leaf_hash.as_slice() != leaf_hash(&r.entry) {
            problems.push(format!("{}: the entry bytes do not match the stored leaf hash: the row was changed", name(r)));
        }
        if r.chain_hash.as_slice() != chain_hash(&r.entry) {
            problems.push(format!("{}: the entry bytes do not match the stored chain hash: the row was changed", name(r)));
        }
        match decode(&r.entry) {
            Err(e) => problems.push(format!("{}: the entry is not canonical ({e}): the row was changed", name(r))),
            Ok(e) => {
                let (decision, reason, model, team, user, status) = columns(&e);
                let cols = (
                    r.node.as_str(),
                    r.seq,
                    r.time_ms,
                    r.decision.as_str(),
                    r.reason.as_str(),
                    r.model.as_str(),
                    r.team.as_str(),
                    r.user.as_str(),
                    r.status,
                );
                let signed = (
                    e.node.as_str(),
                    i64::try_from(e.seq).unwrap_or(-1),
                    i64::try_from(e.time_ms).unwrap_or(-1),
                    decision.as_str(),
                    reason.as_str(),
                    model.as_str(),
                    team.as_str(),
                    user.as_str(),
                    status,
                );
                if cols != signed {
                    problems.push(format!(
                        "{}: the row's columns differ from its signed entry (node {} seq {} decision {}): the row was changed",
                        name(r),
                        e.node,
                        e.seq,
                        decision
                    ));
                }
            }
        }
    }
}

impl AuditLog {
    /// The export of everything stored, with a fresh head covering every entry.
    pub async fn export(&self) -> Result<String, AuditError> {
        self.sign_head().await?;
        let rows = self.store.rows().await?;
        let entries: Vec<ExportEntry> = rows.iter().map(export_entry).collect();
        let batches = self.store.batches().await?;
        let heads = self.store.heads().await?;
        Ok(write_export_entries(&entries, &batches, &heads)?)
    }

    /// The trust a reviewer needs for [`AuditLog::export`].
    pub async fn trust(&self) -> Result<Trust, AuditError> {
        trust(&self.keys().await, &self.public_key())
    }

    /// Retention: prunes the content of entries written before `before_ms` that a stored,
    /// signed head already covers (so a reviewer's head still commits to them); their place,
    /// chain hash and leaf hash stay, and the trail still verifies. Returns (pruned, head size).
    pub async fn retain(&self, before_ms: i64) -> Result<(u64, u64), AuditError> {
        self.sign_head().await?;
        let covered = self.store.heads().await?.iter().map(|h| h.head.size).max().unwrap_or(0);
        let pruned = self.store.prune(before_ms, i64::try_from(covered).unwrap_or(i64::MAX)).await?;
        Ok((pruned, covered))
    }

    /// Recomputes chains, signatures and heads from the database; names every row that
    /// changed, went missing, was inserted or moved.
    pub async fn verify(&self) -> Result<VerifyReport, AuditError> {
        // Entries of the last second may not be under a head yet; the head is signed from the
        // in-memory tree built at ingest, never from the rows being checked.
        self.sign_head().await?;
        let rows = self.store.rows().await?;
        let batches = self.store.batches().await?;
        let mut heads = self.store.heads().await?;
        let keys = self.store.node_keys().await?;
        let mut problems = Vec::new();
        check_rows(&rows, &mut problems);
        let held = rows.len() as u64;
        let signed = self.last_head_size().await;
        let stored_max = heads.iter().map(|h| h.head.size).max().unwrap_or(0);
        if signed > stored_max {
            problems.push(format!("this control plane signed a head of size {signed} but the database keeps heads only up to size {stored_max}: heads were deleted"));
        }
        // Heads beyond the stored rows cannot be recomputed: name them, then check the rest.
        heads.retain(|h| {
            let fits = h.head.size <= held;
            if !fits {
                problems.push(format!(
                    "signed head of size {} covers more entries than the {held} rows stored: rows were deleted",
                    h.head.size
                ));
            }
            fits
        });
        let report_heads = heads.len() as u64;
        let entries: Vec<ExportEntry> = rows.iter().map(export_entry).collect();
        let text = write_export_entries(&entries, &batches, &heads)?;
        if let Err(found) = verify_export(&text, &trust(&keys, &self.public_key())?) {
            for p in found {
                // Line 1 is the header, lines 2.. the entries in leaf order.
                let row = p.line.and_then(|l| l.checked_sub(2)).and_then(|i| rows.get(i));
                problems.push(match row {
                    Some(r) => format!("{}: {}", name(r), p.message),
                    None => p.message,
                });
            }
        }
        Ok(VerifyReport { entries: held, heads: report_heads, problems })
    }

    /// The newest stored heads of `from` and `to` entries and the consistency proof between
    /// them, built from the stored leaf hashes (what an export of the database would hold), for
    /// the caller to verify against the heads' signed roots.
    pub async fn consistency(&self, from: u64, to: u64) -> Result<(SignedTreeHead, SignedTreeHead, Vec<Hash>), AuditError> {
        if from == 0 {
            return Err(AuditError::Invalid(
                "a consistency proof from size 0 proves nothing (every tree extends the empty one): give the size of a head you hold"
                    .into(),
            ));
        }
        if from > to {
            return Err(AuditError::Invalid(format!("size {from} is larger than size {to}: give the older (smaller) head first")));
        }
        self.sign_head().await?;
        let heads = self.store.heads().await?;
        let find = |size: u64| {
            heads.iter().rev().find(|h| h.head.size == size).cloned().ok_or_else(|| {
                let mut sizes: Vec<u64> = heads.iter().map(|h| h.head.size).collect();
                sizes.dedup();
                let shown = sizes.iter().rev().take(20).rev().map(u64::to_string).collect::<Vec<_>>().join(", ");
                AuditError::NotFound(format!("no signed tree head of size {size}; the newest signed sizes are: {shown}"))
            })
        };
        let (older, newer) = (find(from)?, find(to)?);
        let mut tree = Tree::new();
        for (i, h) in self.store.leaf_hashes().await?.iter().enumerate() {
            let h = <[u8; 32]>::try_from(h.as_slice())
                .map_err(|_| AuditError::Invalid(format!("stored leaf {i}: leaf hash is not 32 bytes; run `cordonctl audit verify`")))?;
            tree.push_leaf_hash(h);
        }
        let proof = tree.consistency_proof(from, to)?;
        Ok((older, newer, proof))
    }

    /// `node`'s entry `seq`, its leaf index and inclusion proof against the newest signed head.
    pub async fn prove(&self, node: &str, seq: u64) -> Result<(u64, Vec<u8>, Vec<String>, String), AuditError> {
        let row = self
            .store
            .entry(node, seq)
            .await?
            .ok_or_else(|| AuditError::NotFound(format!("no stored entry of node `{node}` with seq {seq}")))?;
        let head = self.sign_head().await?.ok_or_else(|| AuditError::NotFound("no signed tree head yet".into()))?;
        let leaf = u64::try_from(row.leaf).map_err(|_| AuditError::Invalid(format!("{}: negative leaf", name(&row))))?;
        let proof = self.inclusion_proof(leaf, head.head.size).await?;
        Ok((leaf, row.entry, proof.iter().map(|h| STANDARD.encode(h)).collect(), Line::head(&head).to_json()))
    }
}
