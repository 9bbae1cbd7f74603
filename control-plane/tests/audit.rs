//! Audit ingestion against a real server: acks, replay, skip-ahead, gaps, node keys, restart,
//! and tampering with the rows behind the server's back. Every test runs on both stores: in
//! module `sqlite` (a file database) and in module `postgres` (a PostgreSQL server the test
//! starts itself, see `support::pg`).

mod support;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use cordon_audit::encoding::{decode, encode};
use cordon_audit::entry::Body;
use cordon_audit::export::{Trust, parse_head, parse_public_key, verify_export};
use cordon_audit::head::TreeHead;
use cordon_audit::keys::Signer;
use cordon_audit::merkle::{leaf_hash, verify_inclusion};
use cordon_audit::record::Decision;
use cordon_control_plane::server::Running;
use cordon_control_plane::store::{PolicyStore, PostgresStore, SqliteStore};
use cordon_proto::admin::v1::*;
use std::sync::Arc;
use support::audit::AuditNode;
use support::pg::PgServer;
use support::server::*;

/// Each test below is run once per store.
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name(super::Backend::Sqlite).await
            })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name(super::Backend::Postgres).await
            })*
        }
    };
}

on_both_stores!(
    batches_are_acked_replayed_gapped_and_keys_enforced,
    a_restarted_control_plane_continues_the_trail,
    audit_tables_refuse_update_and_delete,
    verify_names_an_edited_row,
    verify_names_a_deleted_row,
    verify_names_an_inserted_row,
    verify_names_reordered_rows,
    verify_names_a_forged_tree_head,
    verify_names_deleted_tree_heads,
    retention_prunes_content_and_the_trail_still_verifies,
);

#[derive(Clone, Copy)]
enum Backend {
    Sqlite,
    Postgres,
}

/// A database the test owns: a SQLite file in a temp dir, or a fresh PostgreSQL server.
struct Db {
    dir: tempfile::TempDir,
    pg: Option<(PgServer, String)>,
}

impl Db {
    async fn new(b: Backend) -> Db {
        let dir = tempfile::tempdir().unwrap();
        let pg = match b {
            Backend::Sqlite => None,
            Backend::Postgres => {
                let pg = PgServer::start();
                let url = pg.fresh_db("cordon").await;
                Some((pg, url))
            }
        };
        Db { dir, pg }
    }

    /// A store on the database, as a control plane opens it.
    async fn store(&self) -> Arc<dyn PolicyStore> {
        match &self.pg {
            None => Arc::new(SqliteStore::open(&self.dir.path().join("cordon.db")).unwrap()),
            Some((_, url)) => Arc::new(PostgresStore::connect(url).await.unwrap()),
        }
    }

    /// A connection of someone with direct access to the database (file owner; PostgreSQL
    /// superuser).
    async fn attacker(&self) -> Attacker {
        match &self.pg {
            None => Attacker::Sqlite(rusqlite::Connection::open(self.dir.path().join("cordon.db")).unwrap()),
            Some((_, url)) => {
                let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
                tokio::spawn(conn);
                Attacker::Postgres(client)
            }
        }
    }
}

/// Direct SQL against the store. Statements use `$1`, `$2`... for BLOB/BYTEA parameters (both
/// databases accept that spelling).
enum Attacker {
    Sqlite(rusqlite::Connection),
    Postgres(tokio_postgres::Client),
}

impl Attacker {
    async fn execute(&self, sql: &str, blobs: &[Vec<u8>]) -> Result<u64, String> {
        match self {
            Attacker::Sqlite(c) => c.execute(sql, rusqlite::params_from_iter(blobs)).map(|n| n as u64).map_err(|e| e.to_string()),
            Attacker::Postgres(c) => {
                let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                    blobs.iter().map(|b| b as &(dyn tokio_postgres::types::ToSql + Sync)).collect();
                c.execute(sql, &params).await.map_err(|e| match e.as_db_error() {
                    Some(db) => db.message().to_owned(),
                    None => e.to_string(),
                })
            }
        }
    }

    async fn batch(&self, sql: &str) {
        match self {
            Attacker::Sqlite(c) => c.execute_batch(sql).unwrap(),
            Attacker::Postgres(c) => c.batch_execute(sql).await.unwrap(),
        }
    }

    async fn blob(&self, sql: &str) -> Vec<u8> {
        match self {
            Attacker::Sqlite(c) => c.query_row(sql, [], |r| r.get(0)).unwrap(),
            Attacker::Postgres(c) => c.query_one(sql, &[]).await.unwrap().get(0),
        }
    }

    /// Removes the append-only guards of `table`: drops its triggers (SQLite) or disables them
    /// (PostgreSQL; the table owner or a superuser may).
    async fn disable_triggers(&self, table: &str) {
        match self {
            Attacker::Sqlite(c) => {
                let names: Vec<String> = {
                    let mut stmt = c.prepare("SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ?1").unwrap();
                    stmt.query_map([table], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap()
                };
                assert!(!names.is_empty(), "{table} has triggers");
                for n in names {
                    c.execute_batch(&format!("DROP TRIGGER {n}")).unwrap();
                }
            }
            Attacker::Postgres(c) => c.batch_execute(&format!("ALTER TABLE {table} DISABLE TRIGGER ALL")).await.unwrap(),
        }
    }

    /// The statement fails, and says why.
    async fn refused(&self, sql: &str, why: &str) {
        let err = self.execute(sql, &[]).await.expect_err(sql);
        assert!(err.contains(why), "{sql}: {err}");
    }
}

async fn register(r: &Running, node: &AuditNode) {
    let req = RegisterNodeKeyRequest { node_id: node.id.clone(), public_key: node.public_key_b64() };
    admin(r).await.register_node_key(authed(req, OPS_TOKEN)).await.unwrap();
}

async fn verify(r: &Running) -> AuditVerifyResponse {
    admin(r).await.audit_verify(authed(AuditVerifyRequest {}, AUDIT_TOKEN)).await.unwrap().into_inner()
}

async fn audit_state(r: &Running, node: &str) -> AuditNodeState {
    let resp = admin(r).await.audit_nodes(authed(AuditNodesRequest {}, VIEW_TOKEN)).await.unwrap().into_inner();
    resp.nodes.into_iter().find(|n| n.node_id == node).unwrap_or_else(|| panic!("no audit state for {node}"))
}

fn trust_of(e: &AuditExportResponse) -> Trust {
    let mut nodes = cordon_audit::batch::NodeKeys::default();
    for k in &e.node_keys {
        let pk = parse_public_key(&k.public_key).unwrap();
        nodes.add(cordon_audit::record::Ident::new("node", &k.node_id).unwrap(), &pk.to_bytes()).unwrap();
    }
    Trust { nodes, control_plane: parse_public_key(&e.control_plane_key).unwrap(), pinned: vec![] }
}

async fn batches_are_acked_replayed_gapped_and_keys_enforced(b: Backend) {
    let db = Db::new(b).await;
    let r = start_with(db.store().await).await;
    let mut n1 = AuditNode::connect(r.addr, "envoy-1", 1).await;
    let mut stranger = AuditNode::connect(r.addr, "envoy-x", 9).await;

    // Unknown key: refused, and the refusal is visible.
    let entries = stranger.seal(1, Decision::Allow);
    let ack = stranger.ship(stranger.batch(0, entries)).await;
    assert!(ack.error.contains("unknown key") && ack.error.contains("cordonctl nodes register"), "{}", ack.error);
    assert_eq!(ack.next_seq, 0);
    let st = audit_state(&r, "envoy-x").await;
    assert_eq!(st.refused, 1);
    assert!(st.last_error.contains("unknown key"), "{}", st.last_error);

    register(&r, &n1).await;
    let entries = n1.seal(3, Decision::Allow);
    let batch = n1.batch(0, entries);
    let ack = n1.ship(batch.clone()).await;
    assert_eq!(ack.error, "");
    assert_eq!(ack.next_seq, 3);
    assert_eq!(ack.prev_hash, n1.chain.prev().to_vec(), "the ack carries the chain hash of the last stored entry");

    // Replay after a reconnect: acknowledged, not stored twice.
    let ack = n1.ship(batch).await;
    assert_eq!((ack.error.as_str(), ack.next_seq), ("", 3));
    assert_eq!(audit_state(&r, "envoy-1").await.entries, 3);

    // Skip-ahead: seq 5 without the gap entry for 3..=4 is refused with the expected seq.
    let mut ahead = cordon_audit::chain::Chain::resume(n1.node(), 5, n1.chain.prev());
    let sealed = ahead.seal_record(1, support::audit::record(5, Decision::Allow)).unwrap();
    let ack = n1.ship(n1.batch(5, vec![sealed.bytes])).await;
    assert!(ack.error.contains("3..=4 missing") && ack.error.contains("expects seq 3"), "{}", ack.error);
    assert_eq!(ack.next_seq, 3);

    // The gap entry for the dropped records is accepted, and the chain goes on after it.
    let gap = n1.gap(2);
    let mut entries = vec![gap];
    entries.extend(n1.seal(1, Decision::Refuse));
    let ack = n1.ship(n1.batch(5, entries)).await;
    assert_eq!(ack.error, "");
    assert_eq!(ack.next_seq, 7);
    assert_eq!(ack.prev_hash, n1.chain.prev().to_vec());

    // A restarted node resumes from the ack alone.
    let resumed = cordon_audit::chain::Chain::resume(n1.node(), ack.next_seq, ack.prev_hash.clone().try_into().unwrap());
    n1.chain = resumed;
    let entries = n1.seal(1, Decision::Allow);
    assert_eq!(n1.ship(n1.batch(7, entries)).await.error, "");

    // Query by node, decision.
    let q = AuditQueryRequest { node_id: "envoy-1".into(), decision: "refuse".into(), ..Default::default() };
    let found = admin(&r).await.audit_query(authed(q, AUDIT_TOKEN)).await.unwrap().into_inner().entries;
    assert_eq!(found.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![6]);
    let q = AuditQueryRequest { decision: "gap".into(), ..Default::default() };
    assert_eq!(admin(&r).await.audit_query(authed(q, AUDIT_TOKEN)).await.unwrap().into_inner().entries.len(), 1);

    // Verify, export, prove.
    let v = verify(&r).await;
    assert!(v.ok, "{:?}", v.problems);
    assert_eq!(v.entries, 6);
    let e = admin(&r).await.audit_export(authed(AuditExportRequest {}, AUDIT_TOKEN)).await.unwrap().into_inner();
    let summary = verify_export(&e.export, &trust_of(&e)).unwrap();
    assert_eq!(summary.entries, 6);
    assert_eq!(summary.gaps.len(), 1);
    let mut bytes = e.export.clone().into_bytes();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    let changed = String::from_utf8_lossy(&bytes).into_owned();
    assert!(verify_export(&changed, &trust_of(&e)).is_err(), "one changed byte must fail the export");

    let p = admin(&r)
        .await
        .audit_prove(authed(AuditProveRequest { node_id: "envoy-1".into(), seq: 6 }, AUDIT_TOKEN))
        .await
        .unwrap()
        .into_inner();
    let head = parse_head(&p.head).unwrap();
    head.verify(&parse_public_key(&e.control_plane_key).unwrap()).unwrap();
    let proof: Vec<[u8; 32]> = p.proof.iter().map(|h| STANDARD.decode(h).unwrap().try_into().unwrap()).collect();
    verify_inclusion(&leaf_hash(&STANDARD.decode(&p.entry).unwrap()), p.leaf, head.head.size, &proof, &head.head.root).unwrap();

    // Revoked key: refused and visible; the entries it signed before still verify.
    admin(&r).await.revoke_node_key(authed(RevokeNodeKeyRequest { node_id: "envoy-1".into() }, OPS_TOKEN)).await.unwrap();
    let entries = n1.seal(1, Decision::Allow);
    let ack = n1.ship(n1.batch(8, entries)).await;
    assert!(ack.error.contains("revoked"), "{}", ack.error);
    assert!(audit_state(&r, "envoy-1").await.last_error.contains("revoked"));
    assert!(verify(&r).await.ok);

    // Node-key changes are admin actions in the admin log.
    let log = admin(&r).await.admin_log(authed(AdminLogRequest::default(), AUDIT_TOKEN)).await.unwrap().into_inner();
    assert!(log.entries.iter().any(|e| e.action == "nodes register" && e.outcome == "ok"));
    assert!(log.entries.iter().any(|e| e.action == "nodes revoke" && e.target.starts_with("envoy-1")));
    r.shutdown().await;
}

/// A server holding 2 nodes x 3 records (leaves 0..=5, n1 first), verified.
async fn trail(db: &Db) -> Running {
    let r = start_with(db.store().await).await;
    for (id, seed) in [("n1", 1u8), ("n2", 2u8)] {
        let mut n = AuditNode::connect(r.addr, id, seed).await;
        register(&r, &n).await;
        let entries = n.seal(3, Decision::Allow);
        assert_eq!(n.ship(n.batch(0, entries)).await.error, "");
    }
    let v = verify(&r).await;
    assert!(v.ok, "{:?}", v.problems);
    r
}

async fn problems(r: &Running) -> String {
    let v = verify(r).await;
    assert!(!v.ok, "verify must fail after tampering");
    v.problems.join("\n")
}

/// A restart reloads tree, chain tips, keys and heads from the database: replays are
/// recognised, the chain continues, and the new head extends the old one.
async fn a_restarted_control_plane_continues_the_trail(b: Backend) {
    let db = Db::new(b).await;
    let r = start_with(db.store().await).await;
    let mut n = AuditNode::connect(r.addr, "n1", 1).await;
    register(&r, &n).await;
    let first = n.seal(3, Decision::Allow);
    assert_eq!(n.ship(n.batch(0, first.clone())).await.error, "");
    assert!(verify(&r).await.ok);
    r.shutdown().await;

    let r = start_with(db.store().await).await;
    let mut again = AuditNode::connect(r.addr, "n1", 1).await;
    again.chain = n.chain;
    let ack = again.ship(again.batch(0, first)).await;
    assert_eq!((ack.error.as_str(), ack.next_seq), ("", 3), "a replay after the restart is recognised");
    assert_eq!(ack.prev_hash, again.chain.prev().to_vec());
    let more = again.seal(2, Decision::Refuse);
    assert_eq!(again.ship(again.batch(3, more)).await.error, "");
    let v = verify(&r).await;
    assert!(v.ok, "{:?}", v.problems);
    assert_eq!(v.entries, 5);
    let e = admin(&r).await.audit_export(authed(AuditExportRequest {}, AUDIT_TOKEN)).await.unwrap().into_inner();
    let sizes: Vec<u64> = e.export.lines().filter_map(|l| parse_head(l).ok()).map(|h| h.head.size).collect();
    assert!(sizes.contains(&3) && sizes.last() == Some(&5), "heads before and after the restart: {sizes:?}");
    assert_eq!(audit_state(&r, "n1").await.next_seq, 5);
    r.shutdown().await;
}

/// Entries, batches and heads refuse UPDATE and DELETE; node keys refuse DELETE and any
/// change but revocation.
async fn audit_tables_refuse_update_and_delete(b: Backend) {
    let db = Db::new(b).await;
    let r = trail(&db).await;
    let a = db.attacker().await;
    for (table, column) in [("audit_entries", "status"), ("audit_batches", "count"), ("audit_heads", "size")] {
        a.refused(&format!("UPDATE {table} SET {column} = 7"), "append-only").await;
        a.refused(&format!("DELETE FROM {table}"), "append-only").await;
    }
    a.refused("DELETE FROM audit_node_keys", "never deleted").await;
    a.refused("UPDATE audit_node_keys SET node = 'n2' WHERE node = 'n1'", "can only be revoked").await;
    a.refused("UPDATE audit_node_keys SET public_key = public_key || public_key WHERE node = 'n1'", "can only be revoked").await;
    if let Backend::Postgres = b {
        for table in ["audit_entries", "audit_batches", "audit_heads", "audit_node_keys"] {
            a.refused(&format!("TRUNCATE {table}"), "append-only").await;
        }
    }
    // Revocation itself goes through.
    admin(&r).await.revoke_node_key(authed(RevokeNodeKeyRequest { node_id: "n1".into() }, OPS_TOKEN)).await.unwrap();
    let v = verify(&r).await;
    assert!(v.ok, "{:?}", v.problems);
    r.shutdown().await;
}

async fn verify_names_an_edited_row(b: Backend) {
    let db = Db::new(b).await;
    let r = trail(&db).await;
    let a = db.attacker().await;
    a.refused("UPDATE audit_entries SET status = 500 WHERE leaf = 1", "append-only").await;
    a.disable_triggers("audit_entries").await;
    // A careful attacker re-encodes the entry and fixes every derived column and hash.
    let bytes = a.blob("SELECT entry FROM audit_entries WHERE leaf = 1").await;
    let mut entry = decode(&bytes).unwrap();
    if let Body::Record(rec) = &mut entry.body {
        rec.status = Some(500);
    }
    let forged = encode(&entry);
    let (lh, ch) = (leaf_hash(&forged).to_vec(), cordon_audit::chain::chain_hash(&forged).to_vec());
    let sql = "UPDATE audit_entries SET entry = $1, status = 500, leaf_hash = $2, chain_hash = $3 WHERE leaf = 1";
    assert_eq!(a.execute(sql, &[forged, lh, ch]).await.unwrap(), 1);
    let p = problems(&r).await;
    assert!(p.contains("leaf 2 (node n1 seq 2)") && p.contains("does not link"), "{p}");
    assert!(p.contains("signature by") && p.contains("does not verify"), "{p}");
    r.shutdown().await;
}

async fn verify_names_a_deleted_row(b: Backend) {
    let db = Db::new(b).await;
    let r = trail(&db).await;
    let a = db.attacker().await;
    a.refused("DELETE FROM audit_entries WHERE leaf = 1", "append-only").await;
    a.disable_triggers("audit_entries").await;
    assert_eq!(a.execute("DELETE FROM audit_entries WHERE leaf = 1", &[]).await.unwrap(), 1);
    let p = problems(&r).await;
    assert!(p.contains("leaf 1 is missing before leaf 2 (node n1 seq 2)"), "{p}");
    assert!(p.contains("covers seq 1, which is not in the export"), "{p}");
    r.shutdown().await;
}

async fn verify_names_an_inserted_row(b: Backend) {
    let db = Db::new(b).await;
    let r = trail(&db).await;
    let a = db.attacker().await;
    // A forged entry continuing n1's chain, signed by nobody the control plane trusts.
    let prev = a.blob("SELECT chain_hash FROM audit_entries WHERE node = 'n1' AND seq = 2").await;
    let mut forger =
        cordon_audit::chain::Chain::resume(cordon_audit::record::Ident::new("node", "n1").unwrap(), 3, prev.try_into().unwrap());
    let s = forger.seal_record(1, support::audit::record(3, Decision::Allow)).unwrap();
    let sql = "INSERT INTO audit_entries (leaf, node, seq, time_ms, decision, reason, model, team, user_name, status, entry, chain_hash, leaf_hash)
               VALUES (6, 'n1', 3, 1, 'allow', 'ok', 'gpt-4o', 'ml', 'alice', 200, $1, $2, $3)";
    let n = a.execute(sql, &[s.bytes.clone(), s.hash.to_vec(), leaf_hash(&s.bytes).to_vec()]).await;
    assert_eq!(n.unwrap(), 1, "INSERT is what an append-only table allows");
    let p = problems(&r).await;
    assert!(p.contains("leaf 6 (node n1 seq 3): node n1 seq 3 is not covered by a valid batch signature"), "{p}");
    r.shutdown().await;
}

async fn verify_names_reordered_rows(b: Backend) {
    let db = Db::new(b).await;
    let r = trail(&db).await;
    let a = db.attacker().await;
    a.disable_triggers("audit_entries").await;
    a.batch(
        "UPDATE audit_entries SET leaf = -1 WHERE leaf = 1;
         UPDATE audit_entries SET leaf = 1 WHERE leaf = 2;
         UPDATE audit_entries SET leaf = 2 WHERE leaf = -1;",
    )
    .await;
    let p = problems(&r).await;
    assert!(p.contains("leaf 2 (node n1 seq 1)") && p.contains("reordered"), "{p}");
    r.shutdown().await;
}

/// A head row the control plane never signed: another root under its key id, signed by the
/// attacker's key; and an edited root on the head it did sign.
async fn verify_names_a_forged_tree_head(b: Backend) {
    let db = Db::new(b).await;
    let r = trail(&db).await;
    let a = db.attacker().await;
    let e = admin(&r).await.audit_export(authed(AuditExportRequest {}, AUDIT_TOKEN)).await.unwrap().into_inner();
    let genuine = e.export.lines().filter_map(|l| parse_head(l).ok()).next_back().unwrap();
    assert_eq!(genuine.head.size, 6);

    let mut forged = Signer::from_seed(&[66; 32]).sign_head(TreeHead { size: 6, root: [7; 32], time_ms: genuine.head.time_ms + 1 });
    forged.key_id = genuine.key_id.clone();
    let sql = format!(
        "INSERT INTO audit_heads (size, root, time_ms, key_id, signature) VALUES (6, $1, {}, '{}', $2)",
        forged.head.time_ms, forged.key_id
    );
    assert_eq!(a.execute(&sql, &[forged.head.root.to_vec(), forged.signature.to_vec()]).await.unwrap(), 1);
    let p = problems(&r).await;
    assert!(p.contains("tree head of size 6: signature does not verify"), "{p}");
    assert!(p.contains("the entries do not give the root of the head of size 6"), "{p}");

    // Editing the genuine head's root instead is refused, then caught once the guard is off.
    a.refused("UPDATE audit_heads SET time_ms = time_ms + 1", "append-only").await;
    a.disable_triggers("audit_heads").await;
    a.execute("DELETE FROM audit_heads WHERE root = $1", &[forged.head.root.to_vec()]).await.unwrap();
    assert!(verify(&r).await.ok, "the trail verifies again without the forged head");
    let n = a.execute("UPDATE audit_heads SET root = $1 WHERE root = $2", &[vec![9; 32], genuine.head.root.to_vec()]).await;
    assert_eq!(n.unwrap(), 1);
    let p = problems(&r).await;
    assert!(p.contains("tree head of size 6: signature does not verify"), "{p}");
    // The export a reviewer gets now fails against the head they saved earlier.
    let mut trust = trust_of(&e);
    trust.pinned.push(genuine.clone());
    let now = admin(&r).await.audit_export(authed(AuditExportRequest {}, AUDIT_TOKEN)).await.unwrap().into_inner();
    assert!(verify_export(&now.export, &trust).is_err());
    r.shutdown().await;
}

/// Heads removed from the database: the control plane remembers what it signed.
async fn verify_names_deleted_tree_heads(b: Backend) {
    let db = Db::new(b).await;
    let r = trail(&db).await;
    let a = db.attacker().await;
    a.refused("DELETE FROM audit_heads", "append-only").await;
    a.disable_triggers("audit_heads").await;
    a.execute("DELETE FROM audit_heads", &[]).await.unwrap();
    let p = problems(&r).await;
    assert!(p.contains("signed a head of size 6 but the database keeps heads only up to size 0: heads were deleted"), "{p}");
    r.shutdown().await;
}

/// Two replicas on one PostgreSQL database: the second one's tree does not know the first
/// one's entries, so its append is refused by name instead of forking the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_replicas_refuse_to_fork_the_trail() {
    let db = Db::new(Backend::Postgres).await;
    let r1 = start_with(db.store().await).await;
    let mut n1 = AuditNode::connect(r1.addr, "n1", 1).await;
    let mut n2 = AuditNode::connect(r1.addr, "n2", 2).await;
    register(&r1, &n1).await;
    register(&r1, &n2).await;
    let r2 = start_with(db.store().await).await;
    let entries = n1.seal(3, Decision::Allow);
    assert_eq!(n1.ship(n1.batch(0, entries)).await.error, "");

    let mut n2_on_r2 = AuditNode::connect(r2.addr, "n2", 2).await;
    let entries = n2.seal(1, Decision::Allow);
    let ack = n2_on_r2.ship(n2_on_r2.batch(0, entries)).await;
    assert!(ack.error.contains("another control-plane replica") && ack.error.contains("next leaf is 0"), "{}", ack.error);
    assert_eq!(ack.next_seq, 0);
    let v = verify(&r1).await;
    assert!(v.ok, "{:?}", v.problems);
    assert_eq!(v.entries, 3);
    drop(n2);
    r2.shutdown().await;
    r1.shutdown().await;
}

/// Retention blanks old entries' content but keeps their place and hashes: `verify`, an
/// export and its offline verification still pass, later records still chain on, the run is in
/// the admin log, and the database still refuses any other change (a pruned row cannot be
/// edited back, and a live row cannot be blanked in a way retention would not).
async fn retention_prunes_content_and_the_trail_still_verifies(b: Backend) {
    let db = Db::new(b).await;
    let r = trail(&db).await;
    // AuditNode's records are written at 2023-11-14 (1_700_000_000_000 ms): before this day.
    let resp =
        admin(&r).await.audit_retain(authed(AuditRetainRequest { before_day: "2024-01-01".into() }, OPS_TOKEN)).await.unwrap().into_inner();
    assert_eq!((resp.pruned, resp.covered_by_head), (6, 6));
    let v = verify(&r).await;
    assert!(v.ok, "{:?}", v.problems);
    let q = admin(&r).await.audit_query(authed(AuditQueryRequest::default(), AUDIT_TOKEN)).await.unwrap().into_inner();
    assert!(q.entries.iter().all(|e| e.decision == "pruned" && e.user.is_empty() && e.model.is_empty()), "{:?}", q.entries);
    let e = admin(&r).await.audit_export(authed(AuditExportRequest {}, AUDIT_TOKEN)).await.unwrap().into_inner();
    let s = verify_export(&e.export, &trust_of(&e)).unwrap_or_else(|p| panic!("{p:?}"));
    assert_eq!((s.entries, s.pruned), (6, 6));
    assert!(!e.export.contains("alice"), "no content of a pruned record is exported");
    // The chain goes on after the pruned entries.
    let mut n = AuditNode::connect(r.addr, "n1", 1).await;
    let ack = n.ship(n.batch(0, vec![])).await;
    n.chain = cordon_audit::chain::Chain::resume(n.node(), ack.next_seq, <[u8; 32]>::try_from(ack.prev_hash.as_slice()).unwrap());
    let more = n.seal(1, Decision::Allow);
    assert_eq!(n.ship(n.batch(3, more)).await.error, "");
    assert!(verify(&r).await.ok);
    // Only an operator may prune, and the run is logged.
    assert!(admin(&r).await.audit_retain(authed(AuditRetainRequest { before_day: "2024-01-01".into() }, VIEW_TOKEN)).await.is_err());
    let bad = admin(&r).await.audit_retain(authed(AuditRetainRequest { before_day: "2024-13-01".into() }, OPS_TOKEN)).await.unwrap_err();
    assert!(bad.message().contains("not a date"), "{bad:?}");
    let log = admin(&r).await.admin_log(authed(AdminLogRequest { after_seq: 0, limit: 100 }, AUDIT_TOKEN)).await.unwrap().into_inner();
    assert!(log.entries.iter().any(|e| e.action == "audit retain" && e.target.contains("6 entries pruned")), "{:?}", log.entries);
    // The database lets retention do exactly this and nothing else.
    let a = db.attacker().await;
    a.refused("UPDATE audit_entries SET user_name = 'mallory' WHERE leaf = 0", "append-only").await;
    a.refused("UPDATE audit_entries SET leaf_hash = chain_hash WHERE leaf = 0", "append-only").await;
    a.refused("DELETE FROM audit_entries WHERE leaf = 0", "append-only").await;
    r.shutdown().await;
}
