//! The audit trail in the SQLite store (same file and connection as policy).

use super::store::*;
use crate::store::{SqliteStore, StoreError, StoreResult};
use async_trait::async_trait;
use cordon_audit::batch::BatchSignature;
use cordon_audit::head::{SignedTreeHead, TreeHead};
use cordon_audit::record::Ident;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

/// Audit tables. Entries, batches and heads are append-only, also against ad-hoc SQL; node
/// keys may only change state (revocation), never be deleted or re-pointed.
pub(crate) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS audit_node_keys (
    key_id      TEXT PRIMARY KEY,
    node        TEXT NOT NULL,
    public_key  BLOB NOT NULL,
    state       TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    created_by  TEXT NOT NULL,
    revoked_at  INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS audit_batches (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    node        TEXT NOT NULL,
    key_id      TEXT NOT NULL,
    first_seq   INTEGER NOT NULL,
    count       INTEGER NOT NULL,
    signature   BLOB NOT NULL,
    received_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_entries (
    leaf        INTEGER PRIMARY KEY,
    node        TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    time_ms     INTEGER NOT NULL,
    decision    TEXT NOT NULL,
    reason      TEXT NOT NULL,
    model       TEXT NOT NULL,
    team        TEXT NOT NULL,
    user_name   TEXT NOT NULL,
    status      INTEGER NOT NULL,
    entry       BLOB NOT NULL,
    chain_hash  BLOB NOT NULL,
    leaf_hash   BLOB NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS audit_entries_node_seq ON audit_entries (node, seq);
CREATE INDEX IF NOT EXISTS audit_entries_time ON audit_entries (time_ms);
CREATE TABLE IF NOT EXISTS audit_heads (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    size        INTEGER NOT NULL,
    root        BLOB NOT NULL,
    time_ms     INTEGER NOT NULL,
    key_id      TEXT NOT NULL,
    signature   BLOB NOT NULL
);
DROP TRIGGER IF EXISTS audit_entries_no_update;
CREATE TRIGGER audit_entries_no_update BEFORE UPDATE ON audit_entries
    WHEN NOT (length(NEW.entry) = 0 AND length(OLD.entry) > 0 AND NEW.decision = 'pruned'
              AND NEW.reason = '' AND NEW.model = '' AND NEW.team = '' AND NEW.user_name = '' AND NEW.status = 0
              AND NEW.leaf IS OLD.leaf AND NEW.node IS OLD.node AND NEW.seq IS OLD.seq AND NEW.time_ms IS OLD.time_ms
              AND NEW.chain_hash IS OLD.chain_hash AND NEW.leaf_hash IS OLD.leaf_hash)
    BEGIN SELECT RAISE(ABORT, 'audit entries are append-only (retention may only prune content)'); END;
CREATE TRIGGER IF NOT EXISTS audit_entries_no_delete BEFORE DELETE ON audit_entries
    BEGIN SELECT RAISE(ABORT, 'audit entries are append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_batches_no_update BEFORE UPDATE ON audit_batches
    BEGIN SELECT RAISE(ABORT, 'audit batches are append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_batches_no_delete BEFORE DELETE ON audit_batches
    BEGIN SELECT RAISE(ABORT, 'audit batches are append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_heads_no_update BEFORE UPDATE ON audit_heads
    BEGIN SELECT RAISE(ABORT, 'signed tree heads are append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_heads_no_delete BEFORE DELETE ON audit_heads
    BEGIN SELECT RAISE(ABORT, 'signed tree heads are append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_node_keys_no_delete BEFORE DELETE ON audit_node_keys
    BEGIN SELECT RAISE(ABORT, 'node keys are never deleted (revoke them)'); END;
CREATE TRIGGER IF NOT EXISTS audit_node_keys_fixed BEFORE UPDATE OF key_id, node, public_key, created_at, created_by ON audit_node_keys
    BEGIN SELECT RAISE(ABORT, 'a node key can only be revoked'); END;
"#;

const ROW_COLUMNS: &str = "leaf, node, seq, time_ms, decision, reason, model, team, user_name, status, entry, chain_hash, leaf_hash";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AuditRow> {
    Ok(AuditRow {
        leaf: r.get(0)?,
        node: r.get(1)?,
        seq: r.get(2)?,
        time_ms: r.get(3)?,
        decision: r.get(4)?,
        reason: r.get(5)?,
        model: r.get(6)?,
        team: r.get(7)?,
        user: r.get(8)?,
        status: r.get(9)?,
        entry: r.get(10)?,
        chain_hash: r.get(11)?,
        leaf_hash: r.get(12)?,
    })
}

/// key_id, node, public_key, state, created_at, created_by, revoked_at as stored.
type NodeKeyRow = (String, String, Vec<u8>, String, i64, String, i64);

fn node_key(r: &rusqlite::Row<'_>) -> rusqlite::Result<NodeKeyRow> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?))
}

fn to_node_key(
    (key_id, node, pk, state, created_at_ms, created_by, revoked_at_ms): (String, String, Vec<u8>, String, i64, String, i64),
) -> StoreResult<StoredNodeKey> {
    let public_key = <[u8; 32]>::try_from(pk.as_slice()).map_err(|_| StoreError::Corrupt(format!("node key {key_id} is not 32 bytes")))?;
    Ok(StoredNodeKey { node, key_id, public_key, active: state == "active", created_at_ms, created_by, revoked_at_ms })
}

fn u64_of(v: i64, what: &str) -> StoreResult<u64> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("negative {what}: {v}")))
}

fn i64_of(v: u64, what: &str) -> StoreResult<i64> {
    i64::try_from(v).map_err(|_| StoreError::Corrupt(format!("{what} too large: {v}")))
}

fn batches(c: &Connection) -> StoreResult<Vec<BatchSignature>> {
    let mut stmt = c.prepare("SELECT node, key_id, first_seq, count, signature FROM audit_batches ORDER BY id")?;
    let rows = stmt.query_map([], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?, r.get::<_, i64>(3)?, r.get::<_, Vec<u8>>(4)?))
    })?;
    rows.map(|r| {
        let (node, key_id, first_seq, count, sig) = r?;
        Ok(BatchSignature {
            node: Ident::new("node", &node).map_err(|e| StoreError::Corrupt(format!("batch node: {e}")))?,
            key_id,
            first_seq: u64_of(first_seq, "batch first_seq")?,
            count: u32::try_from(count).map_err(|_| StoreError::Corrupt(format!("batch count {count}")))?,
            signature: <[u8; 64]>::try_from(sig.as_slice()).map_err(|_| StoreError::Corrupt("batch signature is not 64 bytes".into()))?,
        })
    })
    .collect()
}

fn heads(c: &Connection) -> StoreResult<Vec<SignedTreeHead>> {
    let mut stmt = c.prepare("SELECT size, root, time_ms, key_id, signature FROM audit_heads ORDER BY id")?;
    let rows = stmt.query_map([], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?, r.get::<_, i64>(2)?, r.get::<_, String>(3)?, r.get::<_, Vec<u8>>(4)?))
    })?;
    rows.map(|r| {
        let (size, root, time_ms, key_id, sig) = r?;
        Ok(SignedTreeHead {
            head: TreeHead {
                size: u64_of(size, "head size")?,
                root: <[u8; 32]>::try_from(root.as_slice()).map_err(|_| StoreError::Corrupt("head root is not 32 bytes".into()))?,
                time_ms: u64_of(time_ms, "head time")?,
            },
            key_id,
            signature: <[u8; 64]>::try_from(sig.as_slice()).map_err(|_| StoreError::Corrupt("head signature is not 64 bytes".into()))?,
        })
    })
    .collect()
}

#[async_trait]
impl AuditStore for SqliteStore {
    async fn node_keys(&self) -> StoreResult<Vec<StoredNodeKey>> {
        self.with(|c| {
            let mut stmt = c.prepare("SELECT key_id, node, public_key, state, created_at, created_by, revoked_at FROM audit_node_keys ORDER BY created_at, key_id")?;
            let rows = stmt.query_map([], node_key)?;
            rows.map(|r| to_node_key(r?)).collect()
        })
        .await
    }

    async fn insert_node_key(&self, k: StoredNodeKey) -> StoreResult<()> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let exists: Option<i64> = tx.query_row("SELECT 1 FROM audit_node_keys WHERE key_id = ?1", [&k.key_id], |r| r.get(0)).optional()?;
            if exists.is_some() {
                return Err(StoreError::DuplicateKey(k.key_id));
            }
            tx.execute(
                "INSERT INTO audit_node_keys (key_id, node, public_key, state, created_at, created_by, revoked_at) VALUES (?1, ?2, ?3, 'active', ?4, ?5, 0)",
                params![k.key_id, k.node, k.public_key.to_vec(), k.created_at_ms, k.created_by],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn revoke_node_keys(&self, node: &str, at_ms: i64) -> StoreResult<Vec<StoredNodeKey>> {
        let node = node.to_owned();
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute("UPDATE audit_node_keys SET state = 'revoked', revoked_at = ?1 WHERE node = ?2 AND state = 'active'", params![at_ms, node])?;
            let out = {
                let mut stmt = tx.prepare(
                    "SELECT key_id, node, public_key, state, created_at, created_by, revoked_at FROM audit_node_keys WHERE node = ?1 AND revoked_at = ?2",
                )?;
                let rows = stmt.query_map(params![node, at_ms], node_key)?;
                rows.map(|r| to_node_key(r?)).collect::<StoreResult<Vec<_>>>()?
            };
            tx.commit()?;
            Ok(out)
        })
        .await
    }

    async fn chain_tips(&self) -> StoreResult<Vec<ChainTip>> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT e.node, e.seq, e.chain_hash, t.n FROM audit_entries e
                 JOIN (SELECT node, MAX(seq) AS m, COUNT(*) AS n FROM audit_entries GROUP BY node) t ON e.node = t.node AND e.seq = t.m
                 ORDER BY e.node",
            )?;
            let rows =
                stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, Vec<u8>>(2)?, r.get::<_, i64>(3)?)))?;
            rows.map(|r| {
                let (node, seq, hash, n) = r?;
                Ok(ChainTip { node, last_seq: u64_of(seq, "seq")?, last_hash: hash, entries: u64_of(n, "count")? })
            })
            .collect()
        })
        .await
    }

    async fn chain_hashes(&self, node: &str, from: u64, to: u64) -> StoreResult<Vec<(u64, Vec<u8>)>> {
        let (node, from, to) = (node.to_owned(), i64_of(from, "seq")?, i64_of(to, "seq")?);
        self.with(move |c| {
            let mut stmt = c.prepare("SELECT seq, chain_hash FROM audit_entries WHERE node = ?1 AND seq BETWEEN ?2 AND ?3 ORDER BY seq")?;
            let rows = stmt.query_map(params![node, from, to], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))?;
            rows.map(|r| {
                let (s, h) = r?;
                Ok((u64_of(s, "seq")?, h))
            })
            .collect()
        })
        .await
    }

    async fn append_batch(&self, b: BatchSignature, received_ms: i64, rows: Vec<AuditRow>) -> StoreResult<()> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute(
                "INSERT INTO audit_batches (node, key_id, first_seq, count, signature, received_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![b.node.as_str(), b.key_id, i64_of(b.first_seq, "seq")?, i64::from(b.count), b.signature.to_vec(), received_ms],
            )?;
            {
                let mut stmt = tx.prepare(&format!(
                    "INSERT INTO audit_entries ({ROW_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
                ))?;
                for r in &rows {
                    stmt.execute(params![
                        r.leaf,
                        r.node,
                        r.seq,
                        r.time_ms,
                        r.decision,
                        r.reason,
                        r.model,
                        r.team,
                        r.user,
                        r.status,
                        r.entry,
                        r.chain_hash,
                        r.leaf_hash
                    ])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn append_head(&self, h: SignedTreeHead) -> StoreResult<()> {
        self.with(move |c| {
            c.execute(
                "INSERT INTO audit_heads (size, root, time_ms, key_id, signature) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    i64_of(h.head.size, "size")?,
                    h.head.root.to_vec(),
                    i64_of(h.head.time_ms, "time")?,
                    h.key_id,
                    h.signature.to_vec()
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn rows(&self) -> StoreResult<Vec<AuditRow>> {
        self.with(|c| {
            let mut stmt = c.prepare(&format!("SELECT {ROW_COLUMNS} FROM audit_entries ORDER BY leaf"))?;
            let rows = stmt.query_map([], row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn leaf_hashes(&self) -> StoreResult<Vec<Vec<u8>>> {
        self.with(|c| {
            let mut stmt = c.prepare("SELECT leaf_hash FROM audit_entries ORDER BY leaf")?;
            let rows = stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn batches(&self) -> StoreResult<Vec<BatchSignature>> {
        self.with(|c| batches(c)).await
    }

    async fn heads(&self) -> StoreResult<Vec<SignedTreeHead>> {
        self.with(|c| heads(c)).await
    }

    async fn entry(&self, node: &str, seq: u64) -> StoreResult<Option<AuditRow>> {
        let (node, seq) = (node.to_owned(), i64_of(seq, "seq")?);
        self.with(move |c| {
            Ok(c.query_row(&format!("SELECT {ROW_COLUMNS} FROM audit_entries WHERE node = ?1 AND seq = ?2"), params![node, seq], row)
                .optional()?)
        })
        .await
    }

    async fn query(&self, f: AuditFilter) -> StoreResult<Vec<AuditRow>> {
        self.with(move |c| {
            // Empty / 0 filters match everything, so one statement serves every combination.
            let sql = format!(
                "SELECT {ROW_COLUMNS} FROM audit_entries
                 WHERE (?1 = '' OR node = ?1) AND (?2 = 0 OR time_ms >= ?2) AND (?3 = 0 OR time_ms <= ?3)
                   AND (?4 = '' OR decision = ?4) AND (?5 = '' OR team = ?5) AND (?6 = '' OR user_name = ?6) AND (?7 = '' OR model = ?7)
                 ORDER BY leaf LIMIT ?8"
            );
            let mut stmt = c.prepare(&sql)?;
            let rows =
                stmt.query_map(params![f.node, f.since_ms, f.until_ms, f.decision, f.team, f.user, f.model, i64::from(f.limit)], row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn prune(&self, before_ms: i64, below_leaf: i64) -> StoreResult<u64> {
        self.with(move |c| {
            let n = c.execute(
                "UPDATE audit_entries SET entry = X'', decision = 'pruned', reason = '', model = '', team = '', user_name = '', status = 0
                 WHERE time_ms < ?1 AND leaf < ?2 AND length(entry) > 0",
                params![before_ms, below_leaf],
            )?;
            Ok(n as u64)
        })
        .await
    }
}
