//! PostgreSQL backend, for several control-plane replicas sharing one history. Writers
//! serialise on a table lock inside the append transaction, so version numbers stay gap-free
//! and a replica building on a stale latest version gets `Conflict` instead of a fork.

use super::*;
use std::sync::Arc;
use tokio::sync::Mutex;
use tokio_postgres::{Client, NoTls, Row};

/// The PostgreSQL-backed store. The audit trail ([`crate::audit::postgres`]) lives in the same
/// database on a connection of its own, so audit ingest never waits behind policy calls.
pub struct PostgresStore {
    conn: PgConn,
    audit: Arc<crate::audit::postgres::PostgresAuditStore>,
}

/// One connection and the URL to reopen it with.
pub(crate) struct PgConn {
    url: String,
    client: Mutex<Client>,
}

impl PgConn {
    pub(crate) async fn open(url: &str) -> StoreResult<Self> {
        Ok(Self { url: url.to_string(), client: Mutex::new(connect(url).await?) })
    }

    /// The client, reconnecting first if the server closed the connection (restart, failover).
    pub(crate) async fn client(&self) -> StoreResult<tokio::sync::MutexGuard<'_, Client>> {
        let mut guard = self.client.lock().await;
        if guard.is_closed() {
            *guard = connect(&self.url).await?;
        }
        Ok(guard)
    }
}

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS versions (
    number      BIGINT PRIMARY KEY,
    author      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    reason      TEXT NOT NULL,
    message     TEXT NOT NULL,
    source      TEXT NOT NULL,
    content     TEXT NOT NULL,
    sha256      TEXT NOT NULL,
    diff        TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys (
    id          TEXT PRIMARY KEY,
    sha256      TEXT NOT NULL,
    user_name   TEXT NOT NULL,
    team        TEXT NOT NULL,
    app         TEXT,
    state       TEXT NOT NULL,
    expires_at  BIGINT,
    created_at  BIGINT NOT NULL,
    created_by  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS admin_log (
    seq         BIGSERIAL PRIMARY KEY,
    at          BIGINT NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    target      TEXT NOT NULL,
    outcome     TEXT NOT NULL
);
-- History and the admin log are append-only, also against ad-hoc SQL.
CREATE OR REPLACE FUNCTION cordon_append_only() RETURNS trigger AS $$
BEGIN RAISE EXCEPTION '% is append-only', TG_TABLE_NAME; END; $$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS versions_append_only ON versions;
CREATE TRIGGER versions_append_only BEFORE UPDATE OR DELETE ON versions
    FOR EACH ROW EXECUTE FUNCTION cordon_append_only();
DROP TRIGGER IF EXISTS admin_log_append_only ON admin_log;
CREATE TRIGGER admin_log_append_only BEFORE UPDATE OR DELETE ON admin_log
    FOR EACH ROW EXECUTE FUNCTION cordon_append_only();
"#;

const VERSION_COLUMNS: &str = "number, author, created_at, reason, message, source, content, sha256, diff";

async fn connect(url: &str) -> StoreResult<Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "PostgreSQL connection closed; the next call reconnects");
        }
    });
    Ok(client)
}

impl PostgresStore {
    /// Connects with a libpq-style URL or key=value string and creates the schema if needed.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let conn = PgConn::open(url).await?;
        {
            let client = conn.client().await?;
            // Replicas starting together race on CREATE ... IF NOT EXISTS; an advisory lock
            // makes schema set-up one at a time.
            client.batch_execute("SELECT pg_advisory_lock(727001)").await?;
            let created = async {
                client.batch_execute(SCHEMA).await?;
                client.batch_execute(crate::audit::postgres::SCHEMA).await
            }
            .await;
            client.batch_execute("SELECT pg_advisory_unlock(727001)").await?;
            created?;
        }
        let audit = Arc::new(crate::audit::postgres::PostgresAuditStore::new(PgConn::open(url).await?));
        Ok(Self { conn, audit })
    }

    /// The policy connection.
    async fn client(&self) -> StoreResult<tokio::sync::MutexGuard<'_, Client>> {
        self.conn.client().await
    }
}

fn version_from_row(row: &Row) -> StoreResult<StoredVersion> {
    Ok(StoredVersion {
        number: to_u64(row.try_get(0)?, "version number")?,
        version: NewVersion {
            author: row.try_get(1)?,
            created_at_ms: row.try_get(2)?,
            reason: row.try_get(3)?,
            message: row.try_get(4)?,
            source: row.try_get(5)?,
            content: row.try_get(6)?,
            sha256: row.try_get(7)?,
            diff: row.try_get(8)?,
        },
    })
}

fn key_from_row(r: &Row) -> StoreResult<StoredKey> {
    let state: String = r.try_get(5)?;
    let expires: Option<i64> = r.try_get(6)?;
    Ok(StoredKey {
        id: r.try_get(0)?,
        sha256: r.try_get(1)?,
        user: r.try_get(2)?,
        team: r.try_get(3)?,
        app: r.try_get(4)?,
        state: KeyState::parse(&state)?,
        expires_at: expires.map(|e| to_u64(e, "expires_at")).transpose()?,
        created_at_ms: r.try_get(7)?,
        created_by: r.try_get(8)?,
    })
}

#[async_trait]
impl PolicyStore for PostgresStore {
    async fn latest(&self) -> StoreResult<Option<StoredVersion>> {
        let c = self.client().await?;
        let sql = format!("SELECT {VERSION_COLUMNS} FROM versions ORDER BY number DESC LIMIT 1");
        c.query_opt(&sql, &[]).await?.as_ref().map(version_from_row).transpose()
    }

    async fn latest_number(&self) -> StoreResult<u64> {
        let c = self.client().await?;
        let row = c.query_one("SELECT COALESCE(MAX(number), 0)::BIGINT FROM versions", &[]).await?;
        to_u64(row.try_get(0)?, "version number")
    }

    async fn get(&self, number: u64) -> StoreResult<Option<StoredVersion>> {
        let n = to_i64(number, "version number")?;
        let c = self.client().await?;
        let sql = format!("SELECT {VERSION_COLUMNS} FROM versions WHERE number = $1");
        c.query_opt(&sql, &[&n]).await?.as_ref().map(version_from_row).transpose()
    }

    async fn history(&self, limit: u32) -> StoreResult<Vec<StoredVersion>> {
        let c = self.client().await?;
        let sql = format!("SELECT {VERSION_COLUMNS} FROM versions ORDER BY number DESC LIMIT $1");
        c.query(&sql, &[&i64::from(limit)]).await?.iter().map(version_from_row).collect()
    }

    async fn append_version(&self, expected_latest: u64, version: NewVersion, key_change: Option<KeyChange>) -> StoreResult<StoredVersion> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        // EXCLUSIVE blocks other writers (other replicas) but not readers, for this transaction.
        tx.batch_execute("LOCK TABLE versions IN EXCLUSIVE MODE").await?;
        let row = tx.query_one("SELECT COALESCE(MAX(number), 0)::BIGINT FROM versions", &[]).await?;
        let found = to_u64(row.try_get(0)?, "version number")?;
        if found != expected_latest {
            return Err(StoreError::Conflict { expected: expected_latest, found });
        }
        match &key_change {
            Some(KeyChange::Insert(k)) => {
                if tx.query_opt("SELECT 1 FROM api_keys WHERE id = $1", &[&k.id]).await?.is_some() {
                    return Err(StoreError::DuplicateKey(k.id.clone()));
                }
                let expires = k.expires_at.map(|e| to_i64(e, "expires_at")).transpose()?;
                tx.execute(
                    "INSERT INTO api_keys (id, sha256, user_name, team, app, state, expires_at, created_at, created_by)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                    &[&k.id, &k.sha256, &k.user, &k.team, &k.app, &k.state.as_str(), &expires, &k.created_at_ms, &k.created_by],
                )
                .await?;
            }
            Some(KeyChange::SetState(id, state)) => {
                let n = tx.execute("UPDATE api_keys SET state = $1 WHERE id = $2", &[&state.as_str(), id]).await?;
                if n == 0 {
                    return Err(StoreError::UnknownKey(id.clone()));
                }
            }
            None => {}
        }
        let number = found + 1;
        let v = &version;
        tx.execute(
            &format!("INSERT INTO versions ({VERSION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"),
            &[
                &to_i64(number, "version number")?,
                &v.author,
                &v.created_at_ms,
                &v.reason,
                &v.message,
                &v.source,
                &v.content,
                &v.sha256,
                &v.diff,
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(StoredVersion { number, version })
    }

    async fn keys(&self) -> StoreResult<Vec<StoredKey>> {
        let c = self.client().await?;
        c.query("SELECT id, sha256, user_name, team, app, state, expires_at, created_at, created_by FROM api_keys ORDER BY id", &[])
            .await?
            .iter()
            .map(key_from_row)
            .collect()
    }

    async fn append_log(&self, e: NewLogEntry) -> StoreResult<u64> {
        let c = self.client().await?;
        let row = c
            .query_one(
                "INSERT INTO admin_log (at, actor, action, target, outcome) VALUES ($1, $2, $3, $4, $5) RETURNING seq",
                &[&e.at_ms, &e.actor, &e.action, &e.target, &e.outcome],
            )
            .await?;
        to_u64(row.try_get(0)?, "log seq")
    }

    async fn log(&self, after_seq: u64, limit: u32) -> StoreResult<Vec<LogEntry>> {
        let after = to_i64(after_seq, "log seq")?;
        let c = self.client().await?;
        c.query(
            "SELECT seq, at, actor, action, target, outcome FROM admin_log WHERE seq > $1 ORDER BY seq LIMIT $2",
            &[&after, &i64::from(limit)],
        )
        .await?
        .iter()
        .map(|r| {
            Ok(LogEntry {
                seq: to_u64(r.try_get(0)?, "log seq")?,
                entry: NewLogEntry {
                    at_ms: r.try_get(1)?,
                    actor: r.try_get(2)?,
                    action: r.try_get(3)?,
                    target: r.try_get(4)?,
                    outcome: r.try_get(5)?,
                },
            })
        })
        .collect()
    }

    fn audit_store(&self) -> Arc<dyn crate::audit::store::AuditStore> {
        self.audit.clone()
    }
}
