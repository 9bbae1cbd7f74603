//! Policy lifecycle: apply, rollback, keys — each building the effective policy, validating it
//! like the filters do, appending a version, and publishing the signed bundle to every stream.
//!
//! API-key changes create a new policy version: filters only know versions, and a revocation
//! must reach them like any other change (with history, diff and ACK tracking).

use crate::metrics::Metrics;
use crate::nodes::now_ms;
use crate::policy::{self, DocumentError};
use crate::signing::BundleSigner;
use crate::store::{KeyChange, KeyState, NewVersion, PolicyStore, StoreError, StoredKey, StoredVersion};
use cordon_core::bundle::POLICY_TYPE_URL;
use cordon_proto::v1::{DiscoveryResponse, PolicyBundle};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::watch;

/// How often a conflicting write is rebuilt on the newer version before giving up.
const MAX_ATTEMPTS: usize = 5;

/// What is served to nodes right now.
#[derive(Debug)]
pub struct Snapshot {
    /// Store version number.
    pub number: u64,
    /// The signed bundle (its `version` is the pushed version string).
    pub bundle: PolicyBundle,
    /// The `DiscoveryResponse` carrying `bundle`, encoded once for every stream, with all
    /// fields but `nonce`. `nonce` is field 5, the last, so these bytes followed by a stream's
    /// encoded nonce field are exactly prost's encoding of that stream's whole response.
    pub encoded_response: Vec<u8>,
    /// When this replica started serving it; push latency is measured from here.
    pub published_at: Instant,
}

/// Errors of policy operations.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The document (or the policy it would produce) is invalid.
    #[error("policy refused: {0}")]
    Document(#[from] DocumentError),
    /// A rollback target or key that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A request that can never succeed as written.
    #[error("{0}")]
    BadRequest(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Other writers kept winning.
    #[error("policy kept changing concurrently ({MAX_ATTEMPTS} attempts); retry")]
    Contention,
}

/// Result of apply / rollback / key changes.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The version now current (new, or unchanged current; for a dry run, the base).
    pub version: Option<StoredVersion>,
    /// Whether a new version was (or, for a dry run, would be) created.
    pub changed: bool,
    /// Diff against the previous version.
    pub diff: String,
}

/// The policy service shared by the admin API and the discovery streams.
pub struct PolicyService {
    store: Arc<dyn PolicyStore>,
    signer: BundleSigner,
    snapshot: watch::Sender<Option<Arc<Snapshot>>>,
    metrics: Arc<Metrics>,
}

/// The `DiscoveryResponse` for `bundle` without a nonce, encoded.
pub fn encode_response(bundle: &PolicyBundle) -> Vec<u8> {
    use prost::Message;
    DiscoveryResponse {
        version_info: bundle.version.clone(),
        resources: vec![prost_types::Any { type_url: POLICY_TYPE_URL.into(), value: bundle.encode_to_vec() }],
        canary: false,
        type_url: POLICY_TYPE_URL.into(),
        nonce: String::new(),
    }
    .encode_to_vec()
}

/// Pushed version string of a store version number.
pub fn version_string(number: u64) -> String {
    number.to_string()
}

fn content_of(v: &Option<StoredVersion>) -> &str {
    v.as_ref().map(|v| v.version.content.as_str()).unwrap_or("")
}

fn label(v: &Option<StoredVersion>) -> String {
    v.as_ref().map(|v| format!("version {}", v.number)).unwrap_or_else(|| "(none)".into())
}

impl PolicyService {
    /// A service over `store`, serving nothing until [`PolicyService::refresh`] runs.
    pub fn new(store: Arc<dyn PolicyStore>, signer: BundleSigner, metrics: Arc<Metrics>) -> Self {
        let (snapshot, _) = watch::channel(None);
        Self { store, signer, snapshot, metrics }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn PolicyStore> {
        &self.store
    }

    /// The signer.
    pub fn signer(&self) -> &BundleSigner {
        &self.signer
    }

    /// Streams subscribe here for new versions.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<Snapshot>>> {
        self.snapshot.subscribe()
    }

    /// What is being served now.
    pub fn current(&self) -> Option<Arc<Snapshot>> {
        self.snapshot.borrow().clone()
    }

    /// The pushed version string now served ("" before any policy).
    pub fn current_version(&self) -> String {
        self.current().map(|s| s.bundle.version.clone()).unwrap_or_default()
    }

    /// Ends every policy stream (shutdown): dropping all senders closes subscribers' watches.
    pub fn close(&self) {
        self.snapshot.send_replace(None);
    }

    /// Serves `v` if it is newer than what is served.
    fn publish(&self, v: &StoredVersion) {
        self.snapshot.send_if_modified(|cur| {
            if cur.as_ref().is_some_and(|c| c.number >= v.number) {
                return false;
            }
            let bundle = self.signer.bundle(&version_string(v.number), v.number, v.version.content.as_bytes());
            let encoded_response = encode_response(&bundle);
            *cur = Some(Arc::new(Snapshot { number: v.number, bundle, encoded_response, published_at: Instant::now() }));
            self.metrics.current_version.set(i64::try_from(v.number).unwrap_or(i64::MAX));
            true
        });
    }

    /// Picks up versions written by other replicas (or at start-up).
    pub async fn refresh(&self) -> Result<(), StoreError> {
        let served = self.current().map(|s| s.number).unwrap_or(0);
        if self.store.latest_number().await? > served
            && let Some(v) = self.store.latest().await?
        {
            self.publish(&v);
        }
        Ok(())
    }

    /// Builds, validates and (unless `dry_run`) appends a version from `document_source` and
    /// the store's keys with `key_change` applied. Retries on concurrent writes.
    async fn build_and_append(
        &self,
        author: &str,
        reason: &str,
        message: &str,
        document_source: Option<&str>,
        key_change: Option<KeyChange>,
        dry_run: bool,
    ) -> Result<Outcome, ServiceError> {
        for _ in 0..MAX_ATTEMPTS {
            let latest = self.store.latest().await?;
            let source = match document_source {
                Some(s) => s.to_string(),
                None => latest.as_ref().map(|v| v.version.source.clone()).unwrap_or_default(),
            };
            let document = policy::parse_yaml(&source)?;
            let mut keys = self.store.keys().await?;
            match &key_change {
                Some(KeyChange::Insert(k)) => keys.push(k.clone()),
                Some(KeyChange::SetState(id, st)) => {
                    if let Some(k) = keys.iter_mut().find(|k| &k.id == id) {
                        k.state = *st;
                    }
                }
                None => {}
            }
            let effective = policy::effective(&document, &keys)?;
            policy::validate(&effective)?;
            let content = policy::canonical_json(&effective);
            let number = latest.as_ref().map(|v| v.number).unwrap_or(0);
            // Same effective policy → no new version: nodes would be pushed an identical bundle.
            if content_of(&latest) == content {
                return Ok(Outcome { version: latest, changed: false, diff: String::new() });
            }
            let diff = policy::diff(content_of(&latest), &content, &label(&latest), &format!("version {}", number + 1));
            if dry_run {
                return Ok(Outcome { version: latest, changed: true, diff });
            }
            let new = NewVersion {
                author: author.to_string(),
                created_at_ms: now_ms(),
                reason: reason.to_string(),
                message: message.to_string(),
                sha256: policy::sha256_hex(content.as_bytes()),
                source,
                content,
                diff: diff.clone(),
            };
            match self.store.append_version(number, new, key_change.clone()).await {
                Ok(v) => {
                    self.publish(&v);
                    return Ok(Outcome { version: Some(v), changed: true, diff });
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(ServiceError::Contention)
    }

    /// Applies an authored document.
    pub async fn apply(&self, author: &str, source: &str, message: &str, dry_run: bool) -> Result<Outcome, ServiceError> {
        self.build_and_append(author, "apply", message, Some(source), None, dry_run).await
    }

    /// Validates a document as `apply` would (including the store's keys).
    pub async fn validate(&self, source: &str) -> Result<(), ServiceError> {
        let document = policy::parse_yaml(source)?;
        let keys = self.store.keys().await?;
        policy::validate(&policy::effective(&document, &keys)?)?;
        Ok(())
    }

    /// Re-applies the document of version `to` as a new version. Keys stay as they are now.
    pub async fn rollback(&self, author: &str, to: u64, message: &str) -> Result<Outcome, ServiceError> {
        let target = self.store.get(to).await?.ok_or_else(|| ServiceError::NotFound(format!("no policy version {to}")))?;
        self.build_and_append(author, &format!("rollback to {to}"), message, Some(&target.version.source), None, false).await
    }

    /// Creates an API key; returns the plaintext (shown once) and the version carrying it.
    pub async fn create_key(&self, author: &str, mut key: StoredKey) -> Result<(String, StoredKey, Outcome), ServiceError> {
        if key.id.is_empty() || key.user.is_empty() || key.team.is_empty() {
            return Err(ServiceError::BadRequest("a key needs --id, --user and --team".into()));
        }
        let plaintext = new_key_plaintext();
        key.sha256 = policy::sha256_hex(plaintext.as_bytes());
        key.state = KeyState::Active;
        key.created_at_ms = now_ms();
        key.created_by = author.to_string();
        let reason = format!("key create {}", key.id);
        let out = self.build_and_append(author, &reason, "", None, Some(KeyChange::Insert(key.clone())), false).await?;
        Ok((plaintext, key, out))
    }

    /// Revokes an API key (idempotent: revoking a revoked key creates no version).
    pub async fn revoke_key(&self, author: &str, id: &str) -> Result<(StoredKey, Outcome), ServiceError> {
        let keys = self.store.keys().await?;
        let mut key = keys.into_iter().find(|k| k.id == id).ok_or_else(|| ServiceError::NotFound(format!("no API key with id `{id}`")))?;
        if key.state == KeyState::Revoked {
            let latest = self.store.latest().await?;
            return Ok((key, Outcome { version: latest, changed: false, diff: String::new() }));
        }
        let change = KeyChange::SetState(id.to_string(), KeyState::Revoked);
        let out = self.build_and_append(author, &format!("key revoke {id}"), "", None, Some(change), false).await?;
        key.state = KeyState::Revoked;
        Ok((key, out))
    }

    /// Diff of a document against the current version.
    pub async fn diff(&self, source: &str) -> Result<Outcome, ServiceError> {
        self.apply("", source, "", true).await
    }
}

/// A new API key: `ck_` + 32 random bytes, base64url. High entropy, so SHA-256 suffices to
/// store it (no slow hash needed), and the prefix lets secret scanners find leaked keys.
fn new_key_plaintext() -> String {
    use base64::Engine;
    use rand::RngCore;
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    format!("ck_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b))
}
