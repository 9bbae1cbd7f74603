//! SQLite backend: one file, no set-up. rusqlite is blocking, so each call runs on tokio's
//! blocking pool; one connection behind a mutex is plenty for an admin workload, and SQLite
//! serialises writers anyway.

use super::*;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// The SQLite-backed store.
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS versions (
    number      INTEGER PRIMARY KEY,
    author      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
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
    expires_at  INTEGER,
    created_at  INTEGER NOT NULL,
    created_by  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS admin_log (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    at          INTEGER NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    target      TEXT NOT NULL,
    outcome     TEXT NOT NULL
);
-- History and the admin log are append-only, also against ad-hoc SQL.
CREATE TRIGGER IF NOT EXISTS versions_no_update BEFORE UPDATE ON versions
    BEGIN SELECT RAISE(ABORT, 'policy history is append-only'); END;
CREATE TRIGGER IF NOT EXISTS versions_no_delete BEFORE DELETE ON versions
    BEGIN SELECT RAISE(ABORT, 'policy history is append-only'); END;
CREATE TRIGGER IF NOT EXISTS admin_log_no_update BEFORE UPDATE ON admin_log
    BEGIN SELECT RAISE(ABORT, 'admin log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS admin_log_no_delete BEFORE DELETE ON admin_log
    BEGIN SELECT RAISE(ABORT, 'admin log is append-only'); END;
"#;

const VERSION_COLUMNS: &str = "number, author, created_at, reason, message, source, content, sha256, diff";

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path`.
    pub fn open(path: &Path) -> StoreResult<Self> {
        let conn = Connection::open(path)?;
        // WAL lets readers proceed while a writer commits; busy_timeout rides out a second
        // process (e.g. a backup) holding the lock briefly.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        Self::init(conn)
    }

    /// A private in-memory database (tests).
    pub fn open_in_memory() -> StoreResult<Self> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> StoreResult<Self> {
        conn.execute_batch(SCHEMA)?;
        conn.execute_batch(crate::audit::sqlite::SCHEMA)?;
        Ok(Self { conn: Arc::new(Mutex::new(conn)) })
    }

    pub(crate) async fn with<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock poisons it; the connection itself is still
            // consistent (SQLite rolled back), so keep serving.
            let mut guard = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut guard)
        })
        .await
        .map_err(|e| StoreError::Worker(e.to_string()))?
    }
}

fn version_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, NewVersion)> {
    Ok((
        row.get(0)?,
        NewVersion {
            author: row.get(1)?,
            created_at_ms: row.get(2)?,
            reason: row.get(3)?,
            message: row.get(4)?,
            source: row.get(5)?,
            content: row.get(6)?,
            sha256: row.get(7)?,
            diff: row.get(8)?,
        },
    ))
}

fn stored((n, version): (i64, NewVersion)) -> StoreResult<StoredVersion> {
    Ok(StoredVersion { number: to_u64(n, "version number")?, version })
}

fn latest_number(conn: &Connection) -> StoreResult<u64> {
    let n: i64 = conn.query_row("SELECT COALESCE(MAX(number), 0) FROM versions", [], |r| r.get(0))?;
    to_u64(n, "version number")
}

fn apply_key_change(conn: &Connection, change: &KeyChange) -> StoreResult<()> {
    match change {
        KeyChange::Insert(k) => {
            let exists: Option<i64> = conn.query_row("SELECT 1 FROM api_keys WHERE id = ?1", [&k.id], |r| r.get(0)).optional()?;
            if exists.is_some() {
                return Err(StoreError::DuplicateKey(k.id.clone()));
            }
            let expires = k.expires_at.map(|e| to_i64(e, "expires_at")).transpose()?;
            conn.execute(
                "INSERT INTO api_keys (id, sha256, user_name, team, app, state, expires_at, created_at, created_by)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![k.id, k.sha256, k.user, k.team, k.app, k.state.as_str(), expires, k.created_at_ms, k.created_by],
            )?;
        }
        KeyChange::SetState(id, state) => {
            let n = conn.execute("UPDATE api_keys SET state = ?1 WHERE id = ?2", params![state.as_str(), id])?;
            if n == 0 {
                return Err(StoreError::UnknownKey(id.clone()));
            }
        }
    }
    Ok(())
}

#[async_trait]
impl PolicyStore for SqliteStore {
    async fn latest(&self) -> StoreResult<Option<StoredVersion>> {
        self.with(|c| {
            let sql = format!("SELECT {VERSION_COLUMNS} FROM versions ORDER BY number DESC LIMIT 1");
            c.query_row(&sql, [], version_from_row).optional()?.map(stored).transpose()
        })
        .await
    }

    async fn latest_number(&self) -> StoreResult<u64> {
        self.with(|c| latest_number(c)).await
    }

    async fn get(&self, number: u64) -> StoreResult<Option<StoredVersion>> {
        let n = to_i64(number, "version number")?;
        self.with(move |c| {
            let sql = format!("SELECT {VERSION_COLUMNS} FROM versions WHERE number = ?1");
            c.query_row(&sql, [n], version_from_row).optional()?.map(stored).transpose()
        })
        .await
    }

    async fn history(&self, limit: u32) -> StoreResult<Vec<StoredVersion>> {
        self.with(move |c| {
            let sql = format!("SELECT {VERSION_COLUMNS} FROM versions ORDER BY number DESC LIMIT ?1");
            let mut stmt = c.prepare(&sql)?;
            let rows = stmt.query_map([i64::from(limit)], version_from_row)?;
            rows.map(|r| stored(r?)).collect()
        })
        .await
    }

    async fn append_version(&self, expected_latest: u64, version: NewVersion, key_change: Option<KeyChange>) -> StoreResult<StoredVersion> {
        self.with(move |c| {
            // IMMEDIATE takes the write lock up front, so the check-then-insert is atomic.
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let found = latest_number(&tx)?;
            if found != expected_latest {
                return Err(StoreError::Conflict { expected: expected_latest, found });
            }
            if let Some(change) = &key_change {
                apply_key_change(&tx, change)?;
            }
            let number = found + 1;
            let v = &version;
            tx.execute(
                &format!("INSERT INTO versions ({VERSION_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"),
                params![
                    to_i64(number, "version number")?,
                    v.author,
                    v.created_at_ms,
                    v.reason,
                    v.message,
                    v.source,
                    v.content,
                    v.sha256,
                    v.diff
                ],
            )?;
            tx.commit()?;
            Ok(StoredVersion { number, version })
        })
        .await
    }

    async fn keys(&self) -> StoreResult<Vec<StoredKey>> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT id, sha256, user_name, team, app, state, expires_at, created_at, created_by
                 FROM api_keys ORDER BY id",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, Option<i64>>(6)?,
                    r.get::<_, i64>(7)?,
                    r.get::<_, String>(8)?,
                ))
            })?;
            rows.map(|r| {
                let (id, sha256, user, team, app, state, expires, created_at_ms, created_by) = r?;
                Ok(StoredKey {
                    id,
                    sha256,
                    user,
                    team,
                    app,
                    state: KeyState::parse(&state)?,
                    expires_at: expires.map(|e| to_u64(e, "expires_at")).transpose()?,
                    created_at_ms,
                    created_by,
                })
            })
            .collect()
        })
        .await
    }

    async fn append_log(&self, e: NewLogEntry) -> StoreResult<u64> {
        self.with(move |c| {
            c.execute(
                "INSERT INTO admin_log (at, actor, action, target, outcome) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![e.at_ms, e.actor, e.action, e.target, e.outcome],
            )?;
            to_u64(c.last_insert_rowid(), "log seq")
        })
        .await
    }

    fn audit_store(&self) -> Arc<dyn crate::audit::store::AuditStore> {
        Arc::new(self.clone())
    }

    async fn log(&self, after_seq: u64, limit: u32) -> StoreResult<Vec<LogEntry>> {
        let after = to_i64(after_seq, "log seq")?;
        self.with(move |c| {
            let mut stmt =
                c.prepare("SELECT seq, at, actor, action, target, outcome FROM admin_log WHERE seq > ?1 ORDER BY seq LIMIT ?2")?;
            let rows = stmt.query_map(params![after, i64::from(limit)], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    NewLogEntry { at_ms: r.get(1)?, actor: r.get(2)?, action: r.get(3)?, target: r.get(4)?, outcome: r.get(5)? },
                ))
            })?;
            rows.map(|r| {
                let (seq, entry) = r?;
                Ok(LogEntry { seq: to_u64(seq, "log seq")?, entry })
            })
            .collect()
        })
        .await
    }
}
