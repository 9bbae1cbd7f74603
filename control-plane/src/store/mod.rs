//! The policy store: versions with history, API keys, and the append-only admin log.
//!
//! Two backends implement [`PolicyStore`]: SQLite (one file, the embedded default) and
//! PostgreSQL (when several control-plane replicas share state). Both run the same test suite
//! (`control-plane/tests/store.rs`).
//!
//! Concurrency between replicas is optimistic: [`PolicyStore::append_version`] names the
//! version it was built on and fails with [`StoreError::Conflict`] if another writer got there
//! first; the caller rebuilds on the new latest version and retries.

mod postgres;
mod sqlite;

pub(crate) use postgres::PgConn;
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

use async_trait::async_trait;

/// Errors from a store backend.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another writer appended a version since the caller read the latest one.
    #[error("policy changed concurrently: expected latest version {expected}, found {found}; retry")]
    Conflict {
        /// The version the caller built on.
        expected: u64,
        /// The latest version actually stored.
        found: u64,
    },
    /// An API key with this id already exists (ids are never reused, even after revocation).
    #[error("API key `{0}` already exists; key ids are never reused, pick another id")]
    DuplicateKey(String),
    /// The key to change does not exist.
    #[error("no API key with id `{0}`")]
    UnknownKey(String),
    /// SQLite failed.
    #[error("SQLite store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL failed.
    #[error("PostgreSQL store: {}", postgres_text(.0))]
    Postgres(#[from] tokio_postgres::Error),
    /// A stored row does not hold what the schema promises (manual edits, corruption).
    #[error("store holds an unreadable row: {0}")]
    Corrupt(String),
    /// The audit entries in the database do not continue where this control plane's tree ends:
    /// another replica appended to the shared trail, or rows were changed behind its back.
    #[error(
        "audit trail: this control plane's next leaf is {expected} but the database continues at {stored}: another control-plane \
         replica is ingesting audit batches into the same database, or rows were changed; send every node's audit stream to one \
         replica, run `cordonctl audit verify`, and restart this replica to reload the trail"
    )]
    AuditDiverged {
        /// The leaf this control plane would append next.
        expected: u64,
        /// The leaf the database continues at.
        stored: u64,
    },
    /// A tree head older or smaller than one already stored (another replica signs heads).
    #[error(
        "audit trail: refusing to store a tree head of size {size} at {time_ms} ms after one of size {stored_size} at {stored_time_ms} ms: \
         another control-plane replica signs heads for the same database; send every node's audit stream to one replica and restart \
         the others"
    )]
    AuditHeadBehind {
        /// Size of the refused head.
        size: u64,
        /// Its time, unix ms.
        time_ms: u64,
        /// Largest stored size.
        stored_size: u64,
        /// Latest stored time, unix ms.
        stored_time_ms: u64,
    },
    /// The blocking SQLite worker went away.
    #[error("SQLite worker task failed: {0}")]
    Worker(String),
}

/// tokio-postgres displays a server error as just "db error"; the server's message (and its
/// detail, e.g. which key a unique violation hit) is what an operator needs.
fn postgres_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!("{}: {} ({detail})", db.severity(), db.message()),
            None => format!("{}: {}", db.severity(), db.message()),
        },
        None => {
            let mut text = e.to_string();
            let mut cause = std::error::Error::source(e);
            while let Some(c) = cause {
                text.push_str(": ");
                text.push_str(&c.to_string());
                cause = c.source();
            }
            text
        }
    }
}

/// Result alias for store calls.
pub type StoreResult<T> = Result<T, StoreError>;

/// A version to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewVersion {
    /// Admin token name that caused it.
    pub author: String,
    /// Unix milliseconds.
    pub created_at_ms: i64,
    /// What made it ("apply", "rollback to 3", "key revoke k1").
    pub reason: String,
    /// Operator's free text.
    pub message: String,
    /// The policy document as authored (YAML), without store-managed API keys.
    pub source: String,
    /// The canonical policy JSON pushed to filters (store keys merged in).
    pub content: String,
    /// Hex SHA-256 of `content`.
    pub sha256: String,
    /// Unified diff of the effective policy against the previous version.
    pub diff: String,
}

/// A stored version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredVersion {
    /// 1, 2, 3... with no gaps.
    pub number: u64,
    /// Everything it was appended with.
    pub version: NewVersion,
}

/// Lifecycle of a stored API key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// Usable.
    Active,
    /// Refused by the filters.
    Revoked,
}

impl KeyState {
    /// The stored and displayed name.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Active => "active",
            KeyState::Revoked => "revoked",
        }
    }

    fn parse(s: &str) -> StoreResult<Self> {
        match s {
            "active" => Ok(KeyState::Active),
            "revoked" => Ok(KeyState::Revoked),
            other => Err(StoreError::Corrupt(format!("unknown key status `{other}`"))),
        }
    }
}

/// An API key as the store keeps it: only the digest of the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    /// Non-secret id.
    pub id: String,
    /// Lower-case hex SHA-256 of the key.
    pub sha256: String,
    /// Principal fields.
    pub user: String,
    /// Team.
    pub team: String,
    /// App, optional.
    pub app: Option<String>,
    /// Active or revoked.
    pub state: KeyState,
    /// Unix seconds after which the key is refused.
    pub expires_at: Option<u64>,
    /// Unix milliseconds.
    pub created_at_ms: i64,
    /// Admin token name that created it.
    pub created_by: String,
}

/// A key change committed together with the version that carries it to the filters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyChange {
    /// Add a key.
    Insert(StoredKey),
    /// Change a key's state.
    SetState(String, KeyState),
}

/// An admin log entry to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewLogEntry {
    /// Unix milliseconds.
    pub at_ms: i64,
    /// Caller's token name or "anonymous".
    pub actor: String,
    /// The admin operation.
    pub action: String,
    /// What it was about.
    pub target: String,
    /// "ok", "denied", "error: ...".
    pub outcome: String,
}

/// A stored admin log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// Increasing sequence number.
    pub seq: u64,
    /// The entry.
    pub entry: NewLogEntry,
}

/// Persistent state of the control plane.
#[async_trait]
pub trait PolicyStore: Send + Sync + 'static {
    /// The newest version, if any.
    async fn latest(&self) -> StoreResult<Option<StoredVersion>>;
    /// The number of the newest version (0 when empty); cheap, polled by replicas.
    async fn latest_number(&self) -> StoreResult<u64>;
    /// One version.
    async fn get(&self, number: u64) -> StoreResult<Option<StoredVersion>>;
    /// Newest first, at most `limit`.
    async fn history(&self, limit: u32) -> StoreResult<Vec<StoredVersion>>;
    /// Appends `version` as number `expected_latest + 1`, applying `key_change` in the same
    /// transaction. Fails with [`StoreError::Conflict`] if the latest is not `expected_latest`.
    async fn append_version(&self, expected_latest: u64, version: NewVersion, key_change: Option<KeyChange>) -> StoreResult<StoredVersion>;
    /// All API keys, ordered by id.
    async fn keys(&self) -> StoreResult<Vec<StoredKey>>;
    /// Appends to the admin log; returns the entry's sequence number.
    async fn append_log(&self, entry: NewLogEntry) -> StoreResult<u64>;
    /// Entries after `after_seq`, oldest first, at most `limit`.
    async fn log(&self, after_seq: u64, limit: u32) -> StoreResult<Vec<LogEntry>>;
    /// The audit trail kept in the same database.
    fn audit_store(&self) -> std::sync::Arc<dyn crate::audit::store::AuditStore>;
}

/// Turns a stored number back into u64; the schemas only ever store non-negative values.
fn to_u64(v: i64, what: &str) -> StoreResult<u64> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("negative {what}: {v}")))
}

fn to_i64(v: u64, what: &str) -> StoreResult<i64> {
    i64::try_from(v).map_err(|_| StoreError::Corrupt(format!("{what} too large: {v}")))
}
