//! Ingest: verify a node's batch (signature, encoding, chain), deduplicate, store, append to
//! the tree, and answer with where the node's chain stands.

use super::AuditError;
use super::store::{AuditRow, AuditStore, StoredNodeKey};
use super::tree::LogTree;
use crate::nodes::now_ms;
use crate::store::{StoreError, StoreResult};
use cordon_audit::Hash;
use cordon_audit::batch::{Batch, NodeKeys};
use cordon_audit::chain::{ChainVerifier, GENESIS, chain_hash};
use cordon_audit::entry::{Body, Entry};
use cordon_audit::keys::Signer;
use cordon_audit::merkle::{Tree, leaf_hash};
use cordon_audit::record::{Decision, Ident};
use cordon_proto::v1::{AuditAck, AuditBatch};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::Mutex as AsyncMutex;

/// Where a node's chain stands in the store.
#[derive(Debug, Clone, Copy)]
struct Tip {
    next_seq: u64,
    prev: Hash,
    entries: u64,
    last_batch_ms: i64,
}

impl Default for Tip {
    fn default() -> Self {
        Tip { next_seq: 0, prev: GENESIS, entries: 0, last_batch_ms: 0 }
    }
}

/// How a node's batches fared since start-up (refusals are not stored: they are not part of
/// the trail, but an operator must see them).
#[derive(Debug, Clone, Default)]
pub struct Refusals {
    /// The last refusal's text.
    pub last_error: String,
    /// When.
    pub last_error_ms: i64,
    /// How many.
    pub refused: u64,
}

/// One node's audit state for `cordonctl audit nodes`.
#[derive(Debug, Clone)]
pub struct NodeAuditState {
    /// Node.
    pub node: String,
    /// Entries stored.
    pub entries: u64,
    /// Seq expected next.
    pub next_seq: u64,
    /// Last stored batch, unix ms (0 since start-up).
    pub last_batch_ms: i64,
    /// Refusals since start-up.
    pub refusals: Refusals,
    /// The node's last watermark: the highest seq its run may have used (sealed or in flight).
    pub claimed_through: Option<u64>,
}

/// Ingest state guarded together: chains and tree must advance with the store, in one order.
struct State {
    tips: HashMap<String, Tip>,
    log: LogTree,
    keys: Vec<StoredNodeKey>,
    /// Active keys only: what new batches are checked against.
    active: NodeKeys,
}

/// Refusals are kept for at most this many nodes, so unknown node ids cannot grow memory.
const MAX_REFUSAL_NODES: usize = 10_000;

/// The audit log of the control plane.
pub struct AuditLog {
    pub(super) store: Arc<dyn AuditStore>,
    pub(super) signer: Signer,
    state: AsyncMutex<State>,
    refusals: Mutex<HashMap<String, Refusals>>,
    ledger: Mutex<super::ledger::Ledger>,
    /// Each node's last watermark (in memory: a control-plane restart forgets them).
    claims: Mutex<HashMap<String, u64>>,
}

fn active_keys(keys: &[StoredNodeKey]) -> NodeKeys {
    let mut out = NodeKeys::default();
    for k in keys.iter().filter(|k| k.active) {
        if let Ok(node) = Ident::new("node", &k.node) {
            // Keys were validated when registered; a bad stored key just trusts nothing.
            let _ = out.add(node, &k.public_key);
        }
    }
    out
}

fn hash32(v: &[u8]) -> Option<Hash> {
    <[u8; 32]>::try_from(v).ok()
}

/// The derived, queryable columns of an entry.
pub fn columns(entry: &Entry) -> (String, String, String, String, String, i64) {
    match &entry.body {
        Body::Gap(_) => ("gap".into(), String::new(), String::new(), String::new(), String::new(), 0),
        Body::Record(r) => {
            let decision = match r.decision {
                Decision::Allow => "allow",
                Decision::Refuse => "refuse",
                Decision::Fail => "fail",
            };
            let s = |v: &Option<Ident>| v.as_ref().map(|i| i.as_str().to_owned()).unwrap_or_default();
            (
                decision.into(),
                r.reason.as_str().to_owned(),
                s(&r.model),
                s(&r.principal.team),
                s(&r.principal.user),
                i64::from(r.status.unwrap_or(0)),
            )
        }
    }
}

impl AuditLog {
    /// Loads chain tips, keys and the tree from `store`; `signer` signs tree heads.
    pub async fn open(store: Arc<dyn AuditStore>, signer: Signer) -> StoreResult<Self> {
        let mut tree = Tree::new();
        for (i, h) in store.leaf_hashes().await?.iter().enumerate() {
            let h = hash32(h).ok_or_else(|| StoreError::Corrupt(format!("audit leaf {i}: leaf hash is not 32 bytes")))?;
            tree.push_leaf_hash(h);
        }
        let last_head = store.heads().await?.pop();
        if let Some(h) = &last_head
            && tree.root_at(h.head.size).ok() != Some(h.head.root)
        {
            // Serving goes on (refusing to start would let a DB edit stop audit ingest), but
            // loudly: `cordonctl audit verify` names the rows.
            tracing::error!(
                size = h.head.size,
                "stored audit entries do not match the last signed tree head; run `cordonctl audit verify`"
            );
        }
        let mut tips = HashMap::new();
        for t in store.chain_tips().await? {
            let prev = hash32(&t.last_hash).ok_or_else(|| StoreError::Corrupt(format!("node {}: chain hash is not 32 bytes", t.node)))?;
            tips.insert(t.node, Tip { next_seq: t.last_seq.saturating_add(1), prev, entries: t.entries, last_batch_ms: 0 });
        }
        let keys = store.node_keys().await?;
        let active = active_keys(&keys);
        let state = State { tips, log: LogTree { tree, last_head }, keys, active };
        // The usage ledger is derived from the stored (verified) entries.
        let mut ledger = super::ledger::Ledger::default();
        for row in store.rows().await? {
            if let Ok(entry) = cordon_audit::encoding::decode(&row.entry) {
                ledger.add(&entry);
            }
        }
        Ok(Self {
            store,
            signer,
            state: AsyncMutex::new(state),
            refusals: Mutex::new(HashMap::new()),
            ledger: Mutex::new(ledger),
            claims: Mutex::new(HashMap::new()),
        })
    }

    /// The control plane's tree-head public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.signer.public_key()
    }

    /// Verifies and stores one batch; always answers (a refusal is an ack with `error`).
    pub async fn ingest(&self, b: AuditBatch) -> AuditAck {
        let mut st = self.state.lock().await;
        let result = self.ingest_locked(&mut st, &b).await;
        let tip = st.tips.get(&b.node_id).copied().unwrap_or_default();
        drop(st);
        let error = match result {
            Ok(()) => String::new(),
            Err(e) => {
                // Never the entries themselves: only the node, range and why.
                tracing::warn!(node = %b.node_id, first_seq = b.first_seq, count = b.entries.len(), error = %e, "audit batch refused");
                self.note_refusal(&b.node_id, &e);
                e
            }
        };
        let claimed_through = self.claims.lock().unwrap_or_else(|p| p.into_inner()).get(&b.node_id).copied();
        AuditAck { next_seq: tip.next_seq, prev_hash: tip.prev.to_vec(), error, claimed_through }
    }

    /// Keeps a node's watermark for its next run. The caller only passes watermarks from a
    /// stream that delivered a verified batch of that node.
    pub fn note_claim(&self, node: &str, claim_through: u64) {
        let mut c = self.claims.lock().unwrap_or_else(|p| p.into_inner());
        if c.len() >= MAX_REFUSAL_NODES && !c.contains_key(node) {
            return;
        }
        c.insert(node.to_owned(), claim_through);
    }

    fn note_refusal(&self, node: &str, error: &str) {
        let mut r = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
        if r.len() >= MAX_REFUSAL_NODES && !r.contains_key(node) {
            return;
        }
        let e = r.entry(node.to_owned()).or_default();
        e.last_error = error.to_owned();
        e.last_error_ms = now_ms();
        e.refused += 1;
    }

    async fn ingest_locked(&self, st: &mut State, b: &AuditBatch) -> Result<(), String> {
        let node = Ident::new("node", &b.node_id).map_err(|e| format!("bad node_id: {e}"))?;
        if b.entries.is_empty() {
            // A position probe (a node after connecting): nothing to store, the ack says where
            // the node's chain stands. It reveals only chain hashes, never entries.
            return Ok(());
        }
        let signature =
            <[u8; 64]>::try_from(b.signature.as_slice()).map_err(|_| format!("signature is {} bytes, expected 64", b.signature.len()))?;
        if let Some(k) = st.keys.iter().find(|k| k.key_id == b.key_id && !k.active) {
            return Err(format!(
                "batch of node {node} is signed by key {} (node {}), which was revoked; register a new key with `cordonctl nodes register`",
                k.key_id, k.node
            ));
        }
        let batch = Batch { node: node.clone(), key_id: b.key_id.clone(), first_seq: b.first_seq, entries: b.entries.clone(), signature };
        let entries = st.active.verify(&batch).map_err(|e| match e {
            cordon_audit::batch::BatchError::UnknownKey { .. } => {
                format!("{e}; register the node's public key with `cordonctl nodes register --node {node} --public-key BASE64`")
            }
            other => other.to_string(),
        })?;
        let tip = st.tips.get(node.as_str()).copied().unwrap_or_default();
        let count = entries.len() as u64;
        let last_seq = b.first_seq.saturating_add(count - 1);

        // Entries already stored (a replay after reconnect): they must be the same entries.
        let skip = tip.next_seq.saturating_sub(b.first_seq).min(count);
        if skip > 0 {
            let stored = self
                .store
                .chain_hashes(node.as_str(), b.first_seq, b.first_seq + skip - 1)
                .await
                .map_err(|e| format!("control plane store: {e}"))?;
            for (i, bytes) in b.entries.iter().take(skip as usize).enumerate() {
                let seq = b.first_seq + i as u64;
                let same = stored.iter().find(|(s, _)| *s == seq).is_some_and(|(_, h)| h.as_slice() == chain_hash(bytes));
                if !same {
                    return Err(format!(
                        "node {node} seq {seq} differs from the entry already stored with that number (the node's chain forked, e.g. its state was reset): resume from seq {}",
                        tip.next_seq
                    ));
                }
            }
        }
        if skip == count {
            return Ok(());
        }

        let mut verifier = ChainVerifier::resume(node.clone(), tip.next_seq, tip.prev);
        let received = now_ms();
        let mut rows = Vec::with_capacity((count - skip) as usize);
        let base = st.log.tree.len();
        for (entry, bytes) in entries.iter().zip(&b.entries).skip(skip as usize) {
            let hash = verifier.check(entry, bytes).map_err(|e| format!("{e}; the control plane expects seq {} next", tip.next_seq))?;
            let (decision, reason, model, team, user, status) = columns(entry);
            let leaf = base + rows.len() as u64;
            rows.push(AuditRow {
                leaf: i64::try_from(leaf).map_err(|_| "log full".to_owned())?,
                node: node.as_str().to_owned(),
                seq: i64::try_from(entry.seq).map_err(|_| format!("seq {} too large", entry.seq))?,
                time_ms: i64::try_from(entry.time_ms).unwrap_or(i64::MAX),
                decision,
                reason,
                model,
                team,
                user,
                status,
                entry: bytes.clone(),
                chain_hash: hash.to_vec(),
                leaf_hash: leaf_hash(bytes).to_vec(),
            });
        }
        let new = rows.len() as u64;
        let leaves: Vec<Hash> = rows.iter().filter_map(|r| hash32(&r.leaf_hash)).collect();
        self.store.append_batch(batch.signature_part(), received, rows).await.map_err(|e| format!("control plane store: {e}"))?;
        for h in leaves {
            st.log.tree.push_leaf_hash(h);
        }
        {
            let mut ledger = self.ledger.lock().unwrap_or_else(|p| p.into_inner());
            for entry in entries.iter().skip(skip as usize) {
                ledger.add(entry);
            }
        }
        let t = st.tips.entry(node.as_str().to_owned()).or_default();
        *t = Tip { next_seq: last_seq.saturating_add(1), prev: verifier.prev(), entries: tip.entries + new, last_batch_ms: received };
        Ok(())
    }

    /// Usage from verified records, days `since..=until` (`YYYY-MM-DD`, empty = unbounded).
    pub fn usage(
        &self,
        since: &str,
        until: &str,
        by: super::ledger::GroupBy,
    ) -> Vec<(super::ledger::LedgerKey, super::ledger::LedgerCounts)> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner()).report(since, until, by)
    }

    /// Where each budget among `limits` stands in its current window at `now_ms`, fleet-wide.
    pub fn budgets(&self, limits: &[cordon_core::ratelimit::schema::RateLimit], now_ms: u64) -> Vec<super::budgets::Standing> {
        super::budgets::standings(limits, &self.ledger.lock().unwrap_or_else(|p| p.into_inner()), now_ms)
    }

    /// Signs and stores a head if entries arrived since the last one; returns the newest head.
    pub async fn sign_head(&self) -> StoreResult<Option<cordon_audit::head::SignedTreeHead>> {
        let mut st = self.state.lock().await;
        if let Some(h) = st.log.next_head(&self.signer, u64::try_from(now_ms()).unwrap_or(0)) {
            self.store.append_head(h.clone()).await?;
            st.log.last_head = Some(h);
        }
        Ok(st.log.last_head.clone())
    }

    /// The size of the newest head this process signed or loaded.
    pub async fn last_head_size(&self) -> u64 {
        self.state.lock().await.log.last_head.as_ref().map_or(0, |h| h.head.size)
    }

    /// An inclusion proof of `leaf` against a head of `size`, from the in-memory tree.
    pub async fn inclusion_proof(&self, leaf: u64, size: u64) -> Result<Vec<Hash>, AuditError> {
        Ok(self.state.lock().await.log.tree.inclusion_proof(leaf, size)?)
    }

    /// Registers a node key.
    pub async fn register(&self, node: &str, public_key_b64: &str, by: &str) -> Result<StoredNodeKey, AuditError> {
        let node = Ident::new("node", node).map_err(|e| AuditError::Invalid(format!("--node: {e}")))?;
        let pk = cordon_audit::export::parse_public_key(public_key_b64).map_err(|e| AuditError::Invalid(format!("--public-key: {e}")))?;
        let key = StoredNodeKey {
            node: node.as_str().to_owned(),
            key_id: pk.key_id().to_owned(),
            public_key: pk.to_bytes(),
            active: true,
            created_at_ms: now_ms(),
            created_by: by.to_owned(),
            revoked_at_ms: 0,
        };
        let mut st = self.state.lock().await;
        self.store.insert_node_key(key.clone()).await.map_err(|e| match e {
            StoreError::DuplicateKey(id) => {
                AuditError::Conflict(format!("key {id} is already registered (keys are never re-registered, even after revocation)"))
            }
            other => other.into(),
        })?;
        self.reload_keys(&mut st).await?;
        Ok(key)
    }

    /// Revokes every active key of `node`.
    pub async fn revoke(&self, node: &str) -> Result<Vec<StoredNodeKey>, AuditError> {
        let mut st = self.state.lock().await;
        let revoked = self.store.revoke_node_keys(node, now_ms()).await?;
        if revoked.is_empty() {
            return Err(AuditError::NotFound(format!("node `{node}` has no active audit key")));
        }
        self.reload_keys(&mut st).await?;
        Ok(revoked)
    }

    async fn reload_keys(&self, st: &mut State) -> StoreResult<()> {
        st.keys = self.store.node_keys().await?;
        st.active = active_keys(&st.keys);
        Ok(())
    }

    /// Every registered key.
    pub async fn keys(&self) -> Vec<StoredNodeKey> {
        self.state.lock().await.keys.clone()
    }

    /// Every node that has stored entries or had a batch refused.
    pub async fn nodes(&self) -> Vec<NodeAuditState> {
        let tips = self.state.lock().await.tips.clone();
        let refusals = self.refusals.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let claims = self.claims.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut names: Vec<&String> = tips.keys().chain(refusals.keys()).collect();
        names.sort();
        names.dedup();
        names
            .into_iter()
            .map(|n| {
                let t = tips.get(n).copied().unwrap_or_default();
                NodeAuditState {
                    node: n.clone(),
                    entries: t.entries,
                    next_seq: t.next_seq,
                    last_batch_ms: t.last_batch_ms,
                    refusals: refusals.get(n).cloned().unwrap_or_default(),
                    claimed_through: claims.get(n).copied(),
                }
            })
            .collect()
    }

    /// Stored entries matching `filter`.
    pub async fn query(&self, filter: super::store::AuditFilter) -> StoreResult<Vec<AuditRow>> {
        self.store.query(filter).await
    }
}
