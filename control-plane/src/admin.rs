//! The admin operations, shared by the gRPC and the JSON-over-HTTP front ends: authenticate,
//! authorise by role, perform, and write every call (allowed or not) to the admin log.

use crate::audit::store::{AuditFilter, StoredNodeKey};
use crate::audit::{AuditError, AuditLog};
use crate::auth::{Caller, Credentials, Role, Tokens};
use crate::nodes::{Nodes, now_ms};
use crate::policy::DocumentError;
use crate::service::{Outcome, PolicyService, ServiceError, version_string};
use crate::store::{KeyState, NewLogEntry, StoredKey, StoredVersion};
use cordon_audit::export::Line;
use cordon_proto::admin::v1::*;
use std::sync::Arc;

/// Why an admin call failed; each maps to a gRPC status and an HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// No or unknown bearer token (or client certificate).
    #[error("missing or unknown admin token (send `authorization: Bearer <token>`, or a client certificate the admin tokens name)")]
    Unauthenticated,
    /// The token lacks the role.
    #[error("`{action}` needs the {role} role")]
    Forbidden {
        /// The operation.
        action: &'static str,
        /// The missing role.
        role: &'static str,
    },
    /// The policy or request is invalid.
    #[error("{message}")]
    Invalid {
        /// Human summary.
        message: String,
        /// Structured errors (line/column/path), when about a document.
        errors: Vec<ValidationError>,
    },
    /// Unknown version or key.
    #[error("{0}")]
    NotFound(String),
    /// Duplicate key id and similar.
    #[error("{0}")]
    Conflict(String),
    /// Store or other server-side failure.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Converts a document error into the structured form.
pub fn validation_error(e: &DocumentError) -> ValidationError {
    match e {
        DocumentError::Yaml { message, line, column } => {
            ValidationError { message: message.clone(), path: String::new(), line: *line, column: *column }
        }
        other => ValidationError { message: other.to_string(), path: other.path(), line: 0, column: 0 },
    }
}

impl From<ServiceError> for AdminError {
    fn from(e: ServiceError) -> Self {
        use crate::store::StoreError;
        match e {
            ServiceError::Document(d) => {
                AdminError::Invalid { message: format!("policy refused: {d}"), errors: vec![validation_error(&d)] }
            }
            ServiceError::NotFound(m) => AdminError::NotFound(m),
            ServiceError::BadRequest(m) => AdminError::Invalid { message: m, errors: vec![] },
            ServiceError::Store(StoreError::DuplicateKey(id)) => AdminError::Conflict(StoreError::DuplicateKey(id).to_string()),
            ServiceError::Store(StoreError::UnknownKey(id)) => AdminError::NotFound(format!("no API key with id `{id}`")),
            ServiceError::Contention => AdminError::Conflict(ServiceError::Contention.to_string()),
            ServiceError::Store(s) => AdminError::Internal(s.to_string()),
        }
    }
}

impl From<AuditError> for AdminError {
    fn from(e: AuditError) -> Self {
        match e {
            AuditError::NotFound(m) => AdminError::NotFound(m),
            AuditError::Invalid(m) => AdminError::Invalid { message: m, errors: vec![] },
            AuditError::Conflict(m) => AdminError::Conflict(m),
            other => AdminError::Internal(other.to_string()),
        }
    }
}

/// The admin API.
pub struct Admin {
    service: Arc<PolicyService>,
    nodes: Arc<Nodes>,
    tokens: Tokens,
    audit: Arc<AuditLog>,
}

fn node_key_info(k: &StoredNodeKey) -> NodeKeyInfo {
    use base64::Engine;
    NodeKeyInfo {
        node_id: k.node.clone(),
        key_id: k.key_id.clone(),
        public_key: base64::engine::general_purpose::STANDARD.encode(k.public_key),
        status: if k.active { "active".into() } else { "revoked".into() },
        created_at_unix_ms: k.created_at_ms,
        created_by: k.created_by.clone(),
        revoked_at_unix_ms: k.revoked_at_ms,
    }
}

fn version_info(v: &StoredVersion, with_diff: bool) -> PolicyVersion {
    PolicyVersion {
        number: v.number,
        version: version_string(v.number),
        author: v.version.author.clone(),
        created_at_unix_ms: v.version.created_at_ms,
        sha256: v.version.sha256.clone(),
        reason: v.version.reason.clone(),
        message: v.version.message.clone(),
        diff: if with_diff { v.version.diff.clone() } else { String::new() },
    }
}

fn key_info(k: &StoredKey) -> ApiKeyInfo {
    ApiKeyInfo {
        id: k.id.clone(),
        sha256: k.sha256.clone(),
        user: k.user.clone(),
        team: k.team.clone(),
        app: k.app.clone().unwrap_or_default(),
        status: k.state.as_str().into(),
        expires_at: k.expires_at.unwrap_or(0),
        created_at_unix_ms: k.created_at_ms,
        created_by: k.created_by.clone(),
    }
}

fn apply_response(o: Outcome, dry_run: bool) -> ApplyResponse {
    ApplyResponse { version: o.version.as_ref().map(|v| version_info(v, false)), changed: o.changed, diff: o.diff, dry_run }
}

impl Admin {
    /// The admin API over `service`, accepting `tokens`.
    pub fn new(service: Arc<PolicyService>, nodes: Arc<Nodes>, tokens: Tokens, audit: Arc<AuditLog>) -> Self {
        Self { service, nodes, tokens, audit }
    }

    /// Authenticates, authorises, runs `op`, and logs the call with its outcome.
    async fn call<T, F, Fut>(&self, who: Credentials<'_>, action: &'static str, role: Role, target: String, op: F) -> Result<T, AdminError>
    where
        F: FnOnce(Caller) -> Fut,
        Fut: std::future::Future<Output = Result<(T, String), AdminError>>,
    {
        let caller = self.tokens.authenticate_credentials(who);
        let actor = caller.as_ref().map(|c| c.name.clone()).unwrap_or_else(|| "anonymous".into());
        let (result, target) = match caller {
            None => (Err(AdminError::Unauthenticated), target),
            Some(c) if !c.may(role) => (Err(AdminError::Forbidden { action, role: role.as_str() }), target),
            Some(c) => match op(c).await {
                Ok((v, t)) => (Ok(v), if t.is_empty() { target } else { t }),
                Err(e) => (Err(e), target),
            },
        };
        let outcome = match &result {
            Ok(_) => "ok".to_string(),
            Err(AdminError::Unauthenticated | AdminError::Forbidden { .. }) => "denied".to_string(),
            Err(e) => format!("error: {e}"),
        };
        let entry = NewLogEntry { at_ms: now_ms(), actor, action: action.into(), target, outcome };
        // The log is part of the contract: a call whose log entry cannot be written reports
        // failure, so nobody believes an unaudited change went through silently.
        self.service.store().append_log(entry).await.map_err(|e| AdminError::Internal(format!("writing the admin log failed: {e}")))?;
        result
    }

    /// Apply (or dry-run) a document.
    pub async fn apply(&self, who: Credentials<'_>, r: ApplyRequest) -> Result<ApplyResponse, AdminError> {
        let role = if r.dry_run { Role::Viewer } else { Role::Operator };
        let action = if r.dry_run { "apply --dry-run" } else { "apply" };
        self.call(who, action, role, String::new(), |c| async move {
            let o = self.service.apply(&c.name, &r.source, &r.message, r.dry_run).await?;
            let target = o.version.as_ref().map(|v| v.number.to_string()).unwrap_or_default();
            Ok((apply_response(o, r.dry_run), target))
        })
        .await
    }

    /// Validate a document.
    pub async fn validate(&self, who: Credentials<'_>, r: ValidateRequest) -> Result<ValidateResponse, AdminError> {
        self.call(who, "validate", Role::Viewer, String::new(), |_| async move {
            match self.service.validate(&r.source).await {
                Ok(()) => Ok((ValidateResponse { valid: true, errors: vec![] }, String::new())),
                Err(ServiceError::Document(d)) => {
                    Ok((ValidateResponse { valid: false, errors: vec![validation_error(&d)] }, String::new()))
                }
                Err(e) => Err(e.into()),
            }
        })
        .await
    }

    /// Diff a document against the current version.
    pub async fn diff(&self, who: Credentials<'_>, r: DiffRequest) -> Result<DiffResponse, AdminError> {
        self.call(who, "diff", Role::Viewer, String::new(), |_| async move {
            let o = self.service.diff(&r.source).await?;
            let base = o.version.as_ref().map(|v| v.number).unwrap_or(0);
            Ok((DiffResponse { base_version: base, diff: o.diff, changed: o.changed }, String::new()))
        })
        .await
    }

    /// History, newest first.
    pub async fn history(&self, who: Credentials<'_>, r: HistoryRequest) -> Result<HistoryResponse, AdminError> {
        self.call(who, "history", Role::Viewer, String::new(), |_| async move {
            let limit = if r.limit == 0 { 50 } else { r.limit.min(1000) };
            let versions = self.service.store().history(limit).await.map_err(ServiceError::from)?;
            let versions = versions.iter().map(|v| version_info(v, r.include_diff)).collect();
            Ok((HistoryResponse { versions }, String::new()))
        })
        .await
    }

    /// Roll back to a version's document.
    pub async fn rollback(&self, who: Credentials<'_>, r: RollbackRequest) -> Result<ApplyResponse, AdminError> {
        self.call(who, "rollback", Role::Operator, r.to_version.to_string(), |c| async move {
            let o = self.service.rollback(&c.name, r.to_version, &r.message).await?;
            Ok((apply_response(o, false), String::new()))
        })
        .await
    }

    /// Per-node status.
    pub async fn status(&self, who: Credentials<'_>, _r: StatusRequest) -> Result<StatusResponse, AdminError> {
        self.call(who, "status", Role::Viewer, String::new(), |_| async move {
            let current = self.service.current_version();
            let nodes = self.nodes.status(&current);
            Ok((StatusResponse { current_version: current, nodes }, String::new()))
        })
        .await
    }

    /// Create an API key.
    pub async fn create_key(&self, who: Credentials<'_>, r: CreateKeyRequest) -> Result<CreateKeyResponse, AdminError> {
        self.call(who, "keys create", Role::Operator, r.id.clone(), |c| async move {
            let key = StoredKey {
                id: r.id,
                sha256: String::new(),
                user: r.user,
                team: r.team,
                app: Some(r.app).filter(|a| !a.is_empty()),
                state: KeyState::Active,
                expires_at: Some(r.expires_at).filter(|e| *e != 0),
                created_at_ms: 0,
                created_by: String::new(),
            };
            let (plaintext, key, o) = self.service.create_key(&c.name, key).await?;
            let resp =
                CreateKeyResponse { key: Some(key_info(&key)), plaintext, version: o.version.as_ref().map(|v| version_info(v, false)) };
            Ok((resp, String::new()))
        })
        .await
    }

    /// Revoke an API key.
    pub async fn revoke_key(&self, who: Credentials<'_>, r: RevokeKeyRequest) -> Result<RevokeKeyResponse, AdminError> {
        self.call(who, "keys revoke", Role::Operator, r.id.clone(), |c| async move {
            let (key, o) = self.service.revoke_key(&c.name, &r.id).await?;
            Ok((
                RevokeKeyResponse { key: Some(key_info(&key)), version: o.version.as_ref().map(|v| version_info(v, false)) },
                String::new(),
            ))
        })
        .await
    }

    /// List API keys (digests only).
    pub async fn list_keys(&self, who: Credentials<'_>, _r: ListKeysRequest) -> Result<ListKeysResponse, AdminError> {
        self.call(who, "keys list", Role::Viewer, String::new(), |_| async move {
            let keys = self.service.store().keys().await.map_err(ServiceError::from)?;
            Ok((ListKeysResponse { keys: keys.iter().map(key_info).collect() }, String::new()))
        })
        .await
    }

    /// Read the admin log.
    pub async fn admin_log(&self, who: Credentials<'_>, r: AdminLogRequest) -> Result<AdminLogResponse, AdminError> {
        self.call(who, "admin log", Role::Auditor, String::new(), |_| async move {
            let limit = if r.limit == 0 { 100 } else { r.limit.min(1000) };
            let entries = self.service.store().log(r.after_seq, limit).await.map_err(ServiceError::from)?;
            let entries = entries
                .into_iter()
                .map(|e| AdminLogEntry {
                    seq: e.seq,
                    at_unix_ms: e.entry.at_ms,
                    actor: e.entry.actor,
                    action: e.entry.action,
                    target: e.entry.target,
                    outcome: e.entry.outcome,
                })
                .collect();
            Ok((AdminLogResponse { entries }, String::new()))
        })
        .await
    }

    /// Register a node's audit public key.
    pub async fn register_node_key(&self, who: Credentials<'_>, r: RegisterNodeKeyRequest) -> Result<RegisterNodeKeyResponse, AdminError> {
        self.call(who, "nodes register", Role::Operator, r.node_id.clone(), |c| async move {
            let k = self.audit.register(&r.node_id, &r.public_key, &c.name).await?;
            let target = format!("{} {}", k.node, k.key_id);
            Ok((RegisterNodeKeyResponse { key: Some(node_key_info(&k)) }, target))
        })
        .await
    }

    /// Revoke a node's audit keys.
    pub async fn revoke_node_key(&self, who: Credentials<'_>, r: RevokeNodeKeyRequest) -> Result<RevokeNodeKeyResponse, AdminError> {
        self.call(who, "nodes revoke", Role::Operator, r.node_id.clone(), |_| async move {
            let keys = self.audit.revoke(&r.node_id).await?;
            let target = format!("{} {}", r.node_id, keys.iter().map(|k| k.key_id.as_str()).collect::<Vec<_>>().join(","));
            Ok((RevokeNodeKeyResponse { keys: keys.iter().map(node_key_info).collect() }, target))
        })
        .await
    }

    /// List node audit keys.
    pub async fn list_node_keys(&self, who: Credentials<'_>, _r: ListNodeKeysRequest) -> Result<ListNodeKeysResponse, AdminError> {
        self.call(who, "nodes list", Role::Viewer, String::new(), |_| async move {
            let keys = self.audit.keys().await;
            Ok((ListNodeKeysResponse { keys: keys.iter().map(node_key_info).collect() }, String::new()))
        })
        .await
    }

    /// Each node's audit state.
    pub async fn audit_nodes(&self, who: Credentials<'_>, _r: AuditNodesRequest) -> Result<AuditNodesResponse, AdminError> {
        self.call(who, "audit nodes", Role::Viewer, String::new(), |_| async move {
            let nodes = self.audit.nodes().await;
            let nodes = nodes
                .into_iter()
                .map(|n| AuditNodeState {
                    node_id: n.node,
                    entries: n.entries,
                    next_seq: n.next_seq,
                    last_batch_unix_ms: n.last_batch_ms,
                    last_error: n.refusals.last_error,
                    last_error_unix_ms: n.refusals.last_error_ms,
                    refused: n.refusals.refused,
                    claimed_through: n.claimed_through,
                })
                .collect();
            Ok((AuditNodesResponse { nodes }, String::new()))
        })
        .await
    }

    /// The cordon-audit export with the keys to check it.
    pub async fn audit_export(&self, who: Credentials<'_>, _r: AuditExportRequest) -> Result<AuditExportResponse, AdminError> {
        self.call(who, "audit export", Role::Auditor, String::new(), |_| async move {
            use base64::Engine;
            let audit = &self.audit;
            let export = audit.export().await?;
            let keys = audit.keys().await;
            Ok((
                AuditExportResponse {
                    export,
                    control_plane_key: base64::engine::general_purpose::STANDARD.encode(audit.public_key()),
                    node_keys: keys.iter().map(node_key_info).collect(),
                },
                String::new(),
            ))
        })
        .await
    }

    /// Verify the stored trail.
    pub async fn audit_verify(&self, who: Credentials<'_>, _r: AuditVerifyRequest) -> Result<AuditVerifyResponse, AdminError> {
        self.call(who, "audit verify", Role::Auditor, String::new(), |_| async move {
            let r = self.audit.verify().await?;
            let target = if r.problems.is_empty() { "ok".to_string() } else { format!("{} problems", r.problems.len()) };
            Ok((AuditVerifyResponse { ok: r.problems.is_empty(), entries: r.entries, heads: r.heads, problems: r.problems }, target))
        })
        .await
    }

    /// Inclusion proof of one entry.
    pub async fn audit_prove(&self, who: Credentials<'_>, r: AuditProveRequest) -> Result<AuditProveResponse, AdminError> {
        self.call(who, "audit prove", Role::Auditor, format!("{} {}", r.node_id, r.seq), |_| async move {
            use base64::Engine;
            let (leaf, entry, proof, head) = self.audit.prove(&r.node_id, r.seq).await?;
            let entry = base64::engine::general_purpose::STANDARD.encode(entry);
            Ok((AuditProveResponse { leaf, entry, proof, head }, String::new()))
        })
        .await
    }

    /// Consistency proof between two signed heads.
    pub async fn audit_consistency(
        &self,
        who: Credentials<'_>,
        r: AuditConsistencyRequest,
    ) -> Result<AuditConsistencyResponse, AdminError> {
        self.call(who, "audit consistency", Role::Auditor, format!("{} {}", r.from_size, r.to_size), |_| async move {
            use base64::Engine;
            let b64 = &base64::engine::general_purpose::STANDARD;
            let (older, newer, proof) = self.audit.consistency(r.from_size, r.to_size).await?;
            Ok((
                AuditConsistencyResponse {
                    from_head: Line::head(&older).to_json(),
                    to_head: Line::head(&newer).to_json(),
                    proof: proof.iter().map(|h| b64.encode(h)).collect(),
                    control_plane_key: b64.encode(self.audit.public_key()),
                },
                String::new(),
            ))
        })
        .await
    }

    /// Retention: prune the content of entries written before a UTC day (operator role; the
    /// run, with its count, is in the admin log).
    pub async fn audit_retain(&self, who: Credentials<'_>, r: AuditRetainRequest) -> Result<AuditRetainResponse, AdminError> {
        self.call(who, "audit retain", Role::Operator, format!("before {}", r.before_day), |_| async move {
            let ms = day_start_ms(&r.before_day)
                .ok_or_else(|| AuditError::Invalid(format!("--before: `{}` is not a date like 2026-11-30", r.before_day)))?;
            let (pruned, covered) = self.audit.retain(ms).await?;
            Ok((
                AuditRetainResponse { pruned, covered_by_head: covered },
                format!("before {}: {pruned} entries pruned (head size {covered})", r.before_day),
            ))
        })
        .await
    }

    /// Every budget of the policy in force and what is left of it in its current window,
    /// fleet-wide, from verified audit records.
    pub async fn budgets(&self, who: Credentials<'_>, _r: BudgetsRequest) -> Result<BudgetsResponse, AdminError> {
        self.call(who, "budgets", Role::Viewer, String::new(), |_| async move {
            let Some(snapshot) = self.service.current() else {
                return Ok((BudgetsResponse::default(), String::new()));
            };
            let policy = cordon_core::Policy::from_json(&snapshot.bundle.policy_json)
                .map_err(|e| AuditError::Invalid(format!("the policy in force does not parse: {e}")))?;
            let rows = self
                .audit
                .budgets(&policy.rate_limits, u64::try_from(now_ms()).unwrap_or(0))
                .into_iter()
                .map(|s| BudgetRow {
                    remaining: s.remaining(),
                    limit: s.limit,
                    counter: s.counter,
                    per: format!("{:?}", s.per).to_ascii_lowercase(),
                    window_start_day: s.window_start_day,
                    resets_day: s.resets_day,
                    count: format!("{:?}", s.count).to_ascii_lowercase(),
                    tokens: s.tokens,
                    used: s.used,
                    estimated: s.estimated,
                })
                .collect();
            Ok((BudgetsResponse { policy_version: snapshot.bundle.version.clone(), rows }, String::new()))
        })
        .await
    }

    /// Usage per day, team, user, key and model from verified audit records.
    pub async fn usage(&self, who: Credentials<'_>, r: UsageRequest) -> Result<UsageResponse, AdminError> {
        self.call(who, "usage", Role::Viewer, String::new(), |_| async move {
            let by = crate::audit::ledger::GroupBy::parse(&r.by).map_err(AuditError::Invalid)?;
            for (name, day) in [("--since", &r.since_day), ("--until", &r.until_day)] {
                let ok = day.is_empty()
                    || (day.len() == 10
                        && day.bytes().enumerate().all(|(i, b)| if i == 4 || i == 7 { b == b'-' } else { b.is_ascii_digit() }));
                if !ok {
                    return Err(AuditError::Invalid(format!("{name}: `{day}` is not a date like 2026-11-30")).into());
                }
            }
            let rows = self
                .audit
                .usage(&r.since_day, &r.until_day, by)
                .into_iter()
                .map(|(k, c)| UsageRow {
                    day: k.day,
                    team: k.team,
                    user: k.user,
                    app: k.app,
                    key_id: k.key_id,
                    model: k.model,
                    requests: c.requests,
                    refused: c.refused,
                    prompt_tokens: c.prompt,
                    completion_tokens: c.completion,
                    total_tokens: c.total,
                    estimated: c.estimated,
                })
                .collect();
            Ok((UsageResponse { rows }, String::new()))
        })
        .await
    }

    /// Query stored entries.
    pub async fn audit_query(&self, who: Credentials<'_>, r: AuditQueryRequest) -> Result<AuditQueryResponse, AdminError> {
        self.call(who, "audit query", Role::Auditor, String::new(), |_| async move {
            let limit = if r.limit == 0 { 100 } else { r.limit.min(10_000) };
            let filter = AuditFilter {
                node: r.node_id,
                since_ms: r.since_unix_ms,
                until_ms: r.until_unix_ms,
                decision: r.decision,
                team: r.team,
                user: r.user,
                model: r.model,
                limit,
            };
            let rows = self.audit.query(filter).await.map_err(AuditError::from)?;
            let entries = rows
                .into_iter()
                .map(|e| AuditEntryInfo {
                    leaf: u64::try_from(e.leaf).unwrap_or(0),
                    node_id: e.node,
                    seq: u64::try_from(e.seq).unwrap_or(0),
                    time_unix_ms: e.time_ms,
                    reason: gap_reason(&e.entry).unwrap_or(e.reason),
                    decision: e.decision,
                    model: e.model,
                    team: e.team,
                    user: e.user,
                    status: u32::try_from(e.status).unwrap_or(0),
                    ..record_details(&e.entry)
                })
                .collect();
            Ok((AuditQueryResponse { entries }, String::new()))
        })
        .await
    }
}

/// A gap entry's reason and range (`restart 2..=6`), for `audit query`.
fn gap_reason(entry: &[u8]) -> Option<String> {
    let e = cordon_audit::encoding::decode(entry).ok()?;
    let cordon_audit::entry::Body::Gap(g) = e.body else { return None };
    Some(format!("{} {}..={}", g.reason.as_str(), g.from, g.to))
}

/// The details of a stored record for `audit query` (empty for gaps and undecodable rows,
/// which `audit verify` names).
fn record_details(entry: &[u8]) -> AuditEntryInfo {
    use cordon_audit::entry::Body;
    use cordon_audit::record::{Action, Direction, UsageSource};
    let Ok(e) = cordon_audit::encoding::decode(entry) else { return AuditEntryInfo::default() };
    let Body::Record(r) = e.body else { return AuditEntryInfo::default() };
    let name = |i: &Option<cordon_audit::record::Ident>| i.as_ref().map(|i| i.as_str().to_owned()).unwrap_or_default();
    AuditEntryInfo {
        request_id: r.request_id.as_str().to_owned(),
        key_id: name(&r.principal.key_id),
        policy_version: r.policy.as_ref().map(|p| p.version.as_str().to_owned()).unwrap_or_default(),
        usage: r
            .usage
            .as_ref()
            .map(|u| {
                let src = if u.source == UsageSource::Reported { "reported" } else { "estimated" };
                format!("{}/{}/{} {src}", u.prompt, u.completion, u.total)
            })
            .unwrap_or_default(),
        rate_limit: r
            .rate_limit
            .as_ref()
            .map(|l| format!("{} {} {}{}", l.bucket, l.limit, l.remaining, if l.limited { " limited" } else { "" }))
            .unwrap_or_default(),
        redactions: r
            .redactions
            .iter()
            .map(|(det, dir, act, n)| {
                let dir = if dir == Direction::Request { "request" } else { "response" };
                let act = match act {
                    Action::Allow => "allow",
                    Action::Mask => "mask",
                    Action::Redact => "redact",
                    Action::Block => "block",
                    Action::Pseudonymize => "pseudonymize",
                };
                format!("{dir}:{det}:{act}={n}")
            })
            .collect(),
        fail_open: r.fail_open.iter().map(|p| p.as_str().to_owned()).collect(),
        duration_ms: r.duration_ms,
        request_digest: r.request_digest.map(|h| cordon_audit::hex(&h)).unwrap_or_default(),
        response_digest: r.response_digest.map(|h| cordon_audit::hex(&h)).unwrap_or_default(),
        ..AuditEntryInfo::default()
    }
}

/// Unix ms of 00:00 UTC of a `YYYY-MM-DD` day (the proleptic Gregorian calendar).
fn day_start_ms(day: &str) -> Option<i64> {
    let mut parts = day.split('-');
    let (y, m, d) = (parts.next()?.parse::<i64>().ok()?, parts.next()?.parse::<u32>().ok()?, parts.next()?.parse::<u32>().ok()?);
    if parts.next().is_some() || day.len() != 10 || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let ms = cordon_core::ratelimit::window::days_from_civil(y, m, d) * 86_400_000;
    (cordon_core::ratelimit::window::utc_date(ms) == day).then_some(ms)
}
