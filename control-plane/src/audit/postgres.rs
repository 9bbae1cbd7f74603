//! The audit trail in the PostgreSQL store: same database as policy, its own connection.
//!
//! Several control-plane replicas may share the database, but each holds the Merkle tree and
//! the chain tips in memory, so audit ingest has one writer at a time: an append whose leaves
//! do not continue the stored table, or a head older than one already stored, is refused
//! ([`StoreError::AuditDiverged`], [`StoreError::AuditHeadBehind`]) instead of forking the log.

use super::store::*;
use crate::store::{PgConn, StoreError, StoreResult};
use async_trait::async_trait;
use cordon_audit::batch::BatchSignature;
use cordon_audit::head::{SignedTreeHead, TreeHead};
use cordon_audit::record::Ident;
use tokio_postgres::Row;

/// Audit tables. Entries, batches and heads are append-only, also against ad-hoc SQL (UPDATE,
/// DELETE and TRUNCATE are refused by triggers); node keys may only be revoked, never deleted
/// or re-pointed. Uses `cordon_append_only()` from the policy schema, which runs first.
pub(crate) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS audit_node_keys (
    key_id      TEXT PRIMARY KEY,
    node        TEXT NOT NULL,
    public_key  BYTEA NOT NULL,
    state       TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    created_by  TEXT NOT NULL,
    revoked_at  BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS audit_batches (
    id          BIGSERIAL PRIMARY KEY,
    node        TEXT NOT NULL,
    key_id      TEXT NOT NULL,
    first_seq   BIGINT NOT NULL,
    count       BIGINT NOT NULL,
    signature   BYTEA NOT NULL,
    received_at BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_entries (
    leaf        BIGINT PRIMARY KEY,
    node        TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    time_ms     BIGINT NOT NULL,
    decision    TEXT NOT NULL,
    reason      TEXT NOT NULL,
    model       TEXT NOT NULL,
    team        TEXT NOT NULL,
    user_name   TEXT NOT NULL,
    status      BIGINT NOT NULL,
    entry       BYTEA NOT NULL,
    chain_hash  BYTEA NOT NULL,
    leaf_hash   BYTEA NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS audit_entries_node_seq ON audit_entries (node, seq);
CREATE INDEX IF NOT EXISTS audit_entries_time ON audit_entries (time_ms);
CREATE TABLE IF NOT EXISTS audit_heads (
    id          BIGSERIAL PRIMARY KEY,
    size        BIGINT NOT NULL,
    root        BYTEA NOT NULL,
    time_ms     BIGINT NOT NULL,
    key_id      TEXT NOT NULL,
    signature   BYTEA NOT NULL
);
CREATE OR REPLACE FUNCTION cordon_audit_entry_guard() RETURNS trigger AS $$
BEGIN
    -- Retention may blank an entry's content and derived columns; nothing else changes, ever.
    IF TG_OP = 'UPDATE' AND length(NEW.entry) = 0 AND length(OLD.entry) > 0 AND NEW.decision = 'pruned'
       AND NEW.reason = '' AND NEW.model = '' AND NEW.team = '' AND NEW.user_name = '' AND NEW.status = 0
       AND NEW.leaf = OLD.leaf AND NEW.node = OLD.node AND NEW.seq = OLD.seq AND NEW.time_ms = OLD.time_ms
       AND NEW.chain_hash = OLD.chain_hash AND NEW.leaf_hash = OLD.leaf_hash THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'audit entries are append-only (retention may only prune content)';
END; $$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS audit_entries_append_only ON audit_entries;
CREATE TRIGGER audit_entries_append_only BEFORE UPDATE OR DELETE ON audit_entries
    FOR EACH ROW EXECUTE FUNCTION cordon_audit_entry_guard();
DROP TRIGGER IF EXISTS audit_entries_no_truncate ON audit_entries;
CREATE TRIGGER audit_entries_no_truncate BEFORE TRUNCATE ON audit_entries
    FOR EACH STATEMENT EXECUTE FUNCTION cordon_append_only();
DROP TRIGGER IF EXISTS audit_batches_append_only ON audit_batches;
CREATE TRIGGER audit_batches_append_only BEFORE UPDATE OR DELETE ON audit_batches
    FOR EACH ROW EXECUTE FUNCTION cordon_append_only();
DROP TRIGGER IF EXISTS audit_batches_no_truncate ON audit_batches;
CREATE TRIGGER audit_batches_no_truncate BEFORE TRUNCATE ON audit_batches
    FOR EACH STATEMENT EXECUTE FUNCTION cordon_append_only();
DROP TRIGGER IF EXISTS audit_heads_append_only ON audit_heads;
CREATE TRIGGER audit_heads_append_only BEFORE UPDATE OR DELETE ON audit_heads
    FOR EACH ROW EXECUTE FUNCTION cordon_append_only();
DROP TRIGGER IF EXISTS audit_heads_no_truncate ON audit_heads;
CREATE TRIGGER audit_heads_no_truncate BEFORE TRUNCATE ON audit_heads
    FOR EACH STATEMENT EXECUTE FUNCTION cordon_append_only();
CREATE OR REPLACE FUNCTION cordon_audit_node_key_guard() RETURNS trigger AS $$
BEGIN
    IF TG_OP <> 'UPDATE' THEN
        RAISE EXCEPTION 'node keys are never deleted (revoke them)';
    END IF;
    IF NEW.key_id IS DISTINCT FROM OLD.key_id OR NEW.node IS DISTINCT FROM OLD.node
       OR NEW.public_key IS DISTINCT FROM OLD.public_key OR NEW.created_at IS DISTINCT FROM OLD.created_at
       OR NEW.created_by IS DISTINCT FROM OLD.created_by OR OLD.state <> 'active' OR NEW.state <> 'revoked' THEN
        RAISE EXCEPTION 'a node key can only be revoked';
    END IF;
    RETURN NEW;
END; $$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS audit_node_keys_guard ON audit_node_keys;
CREATE TRIGGER audit_node_keys_guard BEFORE UPDATE OR DELETE ON audit_node_keys
    FOR EACH ROW EXECUTE FUNCTION cordon_audit_node_key_guard();
DROP TRIGGER IF EXISTS audit_node_keys_no_truncate ON audit_node_keys;
CREATE TRIGGER audit_node_keys_no_truncate BEFORE TRUNCATE ON audit_node_keys
    FOR EACH STATEMENT EXECUTE FUNCTION cordon_append_only();
"#;

const ROW_COLUMNS: &str = "leaf, node, seq, time_ms, decision, reason, model, team, user_name, status, entry, chain_hash, leaf_hash";
const KEY_COLUMNS: &str = "key_id, node, public_key, state, created_at, created_by, revoked_at";

/// The PostgreSQL audit store (see [`crate::store::PostgresStore`], which opens it).
pub struct PostgresAuditStore {
    conn: PgConn,
}

impl PostgresAuditStore {
    pub(crate) fn new(conn: PgConn) -> Self {
        Self { conn }
    }
}

fn row(r: &Row) -> StoreResult<AuditRow> {
    Ok(AuditRow {
        leaf: r.try_get(0)?,
        node: r.try_get(1)?,
        seq: r.try_get(2)?,
        time_ms: r.try_get(3)?,
        decision: r.try_get(4)?,
        reason: r.try_get(5)?,
        model: r.try_get(6)?,
        team: r.try_get(7)?,
        user: r.try_get(8)?,
        status: r.try_get(9)?,
        entry: r.try_get(10)?,
        chain_hash: r.try_get(11)?,
        leaf_hash: r.try_get(12)?,
    })
}

fn node_key(r: &Row) -> StoreResult<StoredNodeKey> {
    let key_id: String = r.try_get(0)?;
    let pk: Vec<u8> = r.try_get(2)?;
    let state: String = r.try_get(3)?;
    let public_key = <[u8; 32]>::try_from(pk.as_slice()).map_err(|_| StoreError::Corrupt(format!("node key {key_id} is not 32 bytes")))?;
    Ok(StoredNodeKey {
        node: r.try_get(1)?,
        key_id,
        public_key,
        active: state == "active",
        created_at_ms: r.try_get(4)?,
        created_by: r.try_get(5)?,
        revoked_at_ms: r.try_get(6)?,
    })
}

fn u64_of(v: i64, what: &str) -> StoreResult<u64> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("negative {what}: {v}")))
}

fn i64_of(v: u64, what: &str) -> StoreResult<i64> {
    i64::try_from(v).map_err(|_| StoreError::Corrupt(format!("{what} too large: {v}")))
}

#[async_trait]
impl AuditStore for PostgresAuditStore {
    async fn node_keys(&self) -> StoreResult<Vec<StoredNodeKey>> {
        let c = self.conn.client().await?;
        c.query(&format!("SELECT {KEY_COLUMNS} FROM audit_node_keys ORDER BY created_at, key_id"), &[])
            .await?
            .iter()
            .map(node_key)
            .collect()
    }

    async fn insert_node_key(&self, k: StoredNodeKey) -> StoreResult<()> {
        let c = self.conn.client().await?;
        // The primary key settles races between replicas; the conflict is reported by name.
        let n = c
            .execute(
                "INSERT INTO audit_node_keys (key_id, node, public_key, state, created_at, created_by, revoked_at)
                 VALUES ($1, $2, $3, 'active', $4, $5, 0) ON CONFLICT (key_id) DO NOTHING",
                &[&k.key_id, &k.node, &k.public_key.as_slice(), &k.created_at_ms, &k.created_by],
            )
            .await?;
        if n == 0 {
            return Err(StoreError::DuplicateKey(k.key_id));
        }
        Ok(())
    }

    async fn revoke_node_keys(&self, node: &str, at_ms: i64) -> StoreResult<Vec<StoredNodeKey>> {
        let c = self.conn.client().await?;
        c.query(
            &format!(
                "UPDATE audit_node_keys SET state = 'revoked', revoked_at = $1 WHERE node = $2 AND state = 'active' RETURNING {KEY_COLUMNS}"
            ),
            &[&at_ms, &node],
        )
        .await?
        .iter()
        .map(node_key)
        .collect()
    }

    async fn chain_tips(&self) -> StoreResult<Vec<ChainTip>> {
        let c = self.conn.client().await?;
        c.query(
            "SELECT e.node, e.seq, e.chain_hash, t.n FROM audit_entries e
             JOIN (SELECT node, MAX(seq) AS m, COUNT(*) AS n FROM audit_entries GROUP BY node) t ON e.node = t.node AND e.seq = t.m
             ORDER BY e.node",
            &[],
        )
        .await?
        .iter()
        .map(|r| {
            Ok(ChainTip {
                node: r.try_get(0)?,
                last_seq: u64_of(r.try_get(1)?, "seq")?,
                last_hash: r.try_get(2)?,
                entries: u64_of(r.try_get(3)?, "count")?,
            })
        })
        .collect()
    }

    async fn chain_hashes(&self, node: &str, from: u64, to: u64) -> StoreResult<Vec<(u64, Vec<u8>)>> {
        let (from, to) = (i64_of(from, "seq")?, i64_of(to, "seq")?);
        let c = self.conn.client().await?;
        c.query("SELECT seq, chain_hash FROM audit_entries WHERE node = $1 AND seq BETWEEN $2 AND $3 ORDER BY seq", &[&node, &from, &to])
            .await?
            .iter()
            .map(|r| Ok((u64_of(r.try_get(0)?, "seq")?, r.try_get(1)?)))
            .collect()
    }

    async fn append_batch(&self, b: BatchSignature, received_ms: i64, rows: Vec<AuditRow>) -> StoreResult<()> {
        let mut c = self.conn.client().await?;
        let tx = c.transaction().await?;
        // One writer at a time (readers go on): the new leaves must continue the stored ones.
        tx.batch_execute("LOCK TABLE audit_entries IN EXCLUSIVE MODE").await?;
        if let Some(first) = rows.first() {
            let stored: i64 = tx.query_one("SELECT COALESCE(MAX(leaf) + 1, 0)::BIGINT FROM audit_entries", &[]).await?.try_get(0)?;
            if stored != first.leaf {
                return Err(StoreError::AuditDiverged { expected: u64_of(first.leaf, "leaf")?, stored: u64_of(stored, "leaf")? });
            }
        }
        tx.execute(
            "INSERT INTO audit_batches (node, key_id, first_seq, count, signature, received_at) VALUES ($1, $2, $3, $4, $5, $6)",
            &[&b.node.as_str(), &b.key_id, &i64_of(b.first_seq, "seq")?, &i64::from(b.count), &b.signature.as_slice(), &received_ms],
        )
        .await?;
        // One statement for the whole batch: column arrays, unnested row by row.
        let col = |f: fn(&AuditRow) -> i64| rows.iter().map(f).collect::<Vec<i64>>();
        let text = |f: fn(&AuditRow) -> &str| rows.iter().map(f).collect::<Vec<&str>>();
        let bytes = |f: fn(&AuditRow) -> &[u8]| rows.iter().map(f).collect::<Vec<&[u8]>>();
        tx.execute(
            &format!(
                "INSERT INTO audit_entries ({ROW_COLUMNS})
                 SELECT * FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::BIGINT[], $4::BIGINT[], $5::TEXT[], $6::TEXT[], $7::TEXT[],
                                      $8::TEXT[], $9::TEXT[], $10::BIGINT[], $11::BYTEA[], $12::BYTEA[], $13::BYTEA[])"
            ),
            &[
                &col(|r| r.leaf),
                &text(|r| &r.node),
                &col(|r| r.seq),
                &col(|r| r.time_ms),
                &text(|r| &r.decision),
                &text(|r| &r.reason),
                &text(|r| &r.model),
                &text(|r| &r.team),
                &text(|r| &r.user),
                &col(|r| r.status),
                &bytes(|r| &r.entry),
                &bytes(|r| &r.chain_hash),
                &bytes(|r| &r.leaf_hash),
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn append_head(&self, h: SignedTreeHead) -> StoreResult<()> {
        let (size, time_ms) = (i64_of(h.head.size, "size")?, i64_of(h.head.time_ms, "time")?);
        let mut c = self.conn.client().await?;
        let tx = c.transaction().await?;
        // Heads are stored in signing order and must never go back in size or time.
        tx.batch_execute("LOCK TABLE audit_heads IN EXCLUSIVE MODE").await?;
        let last = tx.query_one("SELECT COALESCE(MAX(size), 0)::BIGINT, COALESCE(MAX(time_ms), 0)::BIGINT FROM audit_heads", &[]).await?;
        let (stored_size, stored_time): (i64, i64) = (last.try_get(0)?, last.try_get(1)?);
        if size < stored_size || time_ms < stored_time {
            return Err(StoreError::AuditHeadBehind {
                size: h.head.size,
                time_ms: h.head.time_ms,
                stored_size: u64_of(stored_size, "head size")?,
                stored_time_ms: u64_of(stored_time, "head time")?,
            });
        }
        tx.execute(
            "INSERT INTO audit_heads (size, root, time_ms, key_id, signature) VALUES ($1, $2, $3, $4, $5)",
            &[&size, &h.head.root.as_slice(), &time_ms, &h.key_id, &h.signature.as_slice()],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn rows(&self) -> StoreResult<Vec<AuditRow>> {
        let c = self.conn.client().await?;
        c.query(&format!("SELECT {ROW_COLUMNS} FROM audit_entries ORDER BY leaf"), &[]).await?.iter().map(row).collect()
    }

    async fn leaf_hashes(&self) -> StoreResult<Vec<Vec<u8>>> {
        let c = self.conn.client().await?;
        c.query("SELECT leaf_hash FROM audit_entries ORDER BY leaf", &[]).await?.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    async fn batches(&self) -> StoreResult<Vec<BatchSignature>> {
        let c = self.conn.client().await?;
        c.query("SELECT node, key_id, first_seq, count, signature FROM audit_batches ORDER BY id", &[])
            .await?
            .iter()
            .map(|r| {
                let node: String = r.try_get(0)?;
                let count: i64 = r.try_get(3)?;
                let sig: Vec<u8> = r.try_get(4)?;
                Ok(BatchSignature {
                    node: Ident::new("node", &node).map_err(|e| StoreError::Corrupt(format!("batch node: {e}")))?,
                    key_id: r.try_get(1)?,
                    first_seq: u64_of(r.try_get(2)?, "batch first_seq")?,
                    count: u32::try_from(count).map_err(|_| StoreError::Corrupt(format!("batch count {count}")))?,
                    signature: <[u8; 64]>::try_from(sig.as_slice())
                        .map_err(|_| StoreError::Corrupt("batch signature is not 64 bytes".into()))?,
                })
            })
            .collect()
    }

    async fn heads(&self) -> StoreResult<Vec<SignedTreeHead>> {
        let c = self.conn.client().await?;
        c.query("SELECT size, root, time_ms, key_id, signature FROM audit_heads ORDER BY id", &[])
            .await?
            .iter()
            .map(|r| {
                let root: Vec<u8> = r.try_get(1)?;
                let sig: Vec<u8> = r.try_get(4)?;
                Ok(SignedTreeHead {
                    head: TreeHead {
                        size: u64_of(r.try_get(0)?, "head size")?,
                        root: <[u8; 32]>::try_from(root.as_slice()).map_err(|_| StoreError::Corrupt("head root is not 32 bytes".into()))?,
                        time_ms: u64_of(r.try_get(2)?, "head time")?,
                    },
                    key_id: r.try_get(3)?,
                    signature: <[u8; 64]>::try_from(sig.as_slice())
                        .map_err(|_| StoreError::Corrupt("head signature is not 64 bytes".into()))?,
                })
            })
            .collect()
    }

    async fn entry(&self, node: &str, seq: u64) -> StoreResult<Option<AuditRow>> {
        let seq = i64_of(seq, "seq")?;
        let c = self.conn.client().await?;
        c.query_opt(&format!("SELECT {ROW_COLUMNS} FROM audit_entries WHERE node = $1 AND seq = $2"), &[&node, &seq])
            .await?
            .as_ref()
            .map(row)
            .transpose()
    }

    async fn query(&self, f: AuditFilter) -> StoreResult<Vec<AuditRow>> {
        let c = self.conn.client().await?;
        // Empty / 0 filters match everything, so one statement serves every combination.
        let sql = format!(
            "SELECT {ROW_COLUMNS} FROM audit_entries
             WHERE ($1::TEXT = '' OR node = $1) AND ($2::BIGINT = 0 OR time_ms >= $2) AND ($3::BIGINT = 0 OR time_ms <= $3)
               AND ($4::TEXT = '' OR decision = $4) AND ($5::TEXT = '' OR team = $5) AND ($6::TEXT = '' OR user_name = $6)
               AND ($7::TEXT = '' OR model = $7)
             ORDER BY leaf LIMIT $8::BIGINT"
        );
        c.query(&sql, &[&f.node, &f.since_ms, &f.until_ms, &f.decision, &f.team, &f.user, &f.model, &i64::from(f.limit)])
            .await?
            .iter()
            .map(row)
            .collect()
    }

    async fn prune(&self, before_ms: i64, below_leaf: i64) -> StoreResult<u64> {
        let c = self.conn.client().await?;
        let n = c
            .execute(
                "UPDATE audit_entries SET entry = ''::BYTEA, decision = 'pruned', reason = '', model = '', team = '', user_name = '', status = 0
                 WHERE time_ms < $1 AND leaf < $2 AND length(entry) > 0",
                &[&before_ms, &below_leaf],
            )
            .await?;
        Ok(n)
    }
}
