//! Validation and compilation: a `Policy` becomes a `CompiledPolicy` (hash maps, parsed keys)
//! or a `PolicyError` naming the field. A policy that does not compile is never half-applied.

use super::PolicyError;
use super::schema::*;
use crate::identity::apikey::{KeyDigest, parse_digest};
use crate::identity::jwt::CompiledProvider;
use crate::redaction::CompiledRedaction;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::fmt;

/// Where provider credentials come from at run time (environment variables handed to the VM).
pub trait SecretSource {
    /// The secret's value, if present.
    fn secret(&self, name: &str) -> Option<String>;
}

impl<F: Fn(&str) -> Option<String>> SecretSource for F {
    fn secret(&self, name: &str) -> Option<String> {
        self(name)
    }
}

/// A provider credential ready to inject; its `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq)]
pub struct UpstreamSecret {
    /// Header to set.
    pub header: String,
    /// Full header value (prefix + secret), or `None` when the secret is missing at run time.
    value: Option<String>,
    /// The secret's name, for operator messages.
    pub secret_env: String,
}

impl UpstreamSecret {
    /// The header value to inject, if the secret was present.
    pub fn value(&self) -> Option<&str> {
        self.value.as_deref()
    }
}

impl fmt::Debug for UpstreamSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamSecret")
            .field("header", &self.header)
            .field("secret_env", &self.secret_env)
            .field("value", &self.value.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A validated policy in the form the request path uses.
#[derive(Debug)]
pub struct CompiledPolicy {
    pub(crate) keys: HashMap<KeyDigest, ApiKey>,
    pub(crate) jwt: Vec<CompiledProvider>,
    pub(crate) spiffe: Vec<SpiffeMapping>,
    pub(crate) routes: Vec<RoutePolicy>,
    pub(crate) models: Vec<ModelRule>,
    pub(crate) upstreams: HashMap<String, UpstreamSecret>,
    pub(crate) limits: BodyLimits,
    redaction: CompiledRedaction,
    rate_limits: crate::ratelimit::CompiledLimits,
    audit: crate::audit::AuditPolicy,
    digest: String,
}

impl CompiledPolicy {
    /// Validates and compiles `policy`, resolving provider credentials through `secrets`.
    pub fn compile(policy: &Policy, secrets: &dyn SecretSource) -> Result<Self, PolicyError> {
        Self::compile_for(policy, secrets, true)
    }

    /// As [`CompiledPolicy::compile`], for a host role that never redacts (the native
    /// `cordon.identity` on its own). A policy without a `redaction` section gets no redaction
    /// engine: it would be the default detector set, which always compiles, so nothing is left
    /// unvalidated, and building it costs the process about 1 MB of heap and a 4 MB peak while
    /// its automata are built. With a `redaction` section the engine is built as usual (it
    /// validates the section). `redaction().engine()` answers `redaction_unavailable` on a
    /// policy compiled without one: a role that redacts fails closed, it is never handed an
    /// engine that matches nothing.
    pub fn compile_without_redaction(policy: &Policy, secrets: &dyn SecretSource) -> Result<Self, PolicyError> {
        Self::compile_for(policy, secrets, false)
    }

    fn compile_for(policy: &Policy, secrets: &dyn SecretSource, redacts: bool) -> Result<Self, PolicyError> {
        let keys = compile_keys(&policy.identity.api_keys)?;
        let jwt = compile_providers(&policy.identity.jwt_providers)?;
        for (i, m) in policy.identity.spiffe.iter().enumerate() {
            require_principal(&m.principal, &format!("identity.spiffe[{i}].principal"))?;
        }
        let routes = if policy.routes.is_empty() { default_routes() } else { validate_routes(&policy.routes)? };
        for (i, rule) in policy.models.iter().enumerate() {
            if rule.allow.is_empty() {
                return Err(PolicyError::invalid(format!("models[{i}].allow"), "must list at least one model pattern"));
            }
        }
        let upstreams = compile_upstreams(&policy.upstreams, secrets)?;
        let l = &policy.limits;
        if l.max_request_body_bytes == 0 || l.max_model_list_bytes == 0 || l.max_response_body_bytes == 0 {
            return Err(PolicyError::invalid("limits", "limits must be greater than zero"));
        }
        let redaction = match &policy.redaction {
            None if !redacts => CompiledRedaction::without_engine(),
            section => CompiledRedaction::compile(section.as_ref(), secrets)?,
        };
        let rate_limits = crate::ratelimit::CompiledLimits::compile_with_service(
            &policy.rate_limits,
            policy.token_estimate.as_ref(),
            policy.rate_limit_service.as_ref(),
        )?;
        let canonical = serde_json::to_vec(policy).map_err(|e| PolicyError::invalid("", e.to_string()))?;
        Ok(Self {
            keys,
            jwt,
            spiffe: policy.identity.spiffe.clone(),
            routes,
            models: policy.models.clone(),
            upstreams,
            limits: policy.limits.clone(),
            redaction,
            rate_limits,
            audit: policy.audit.unwrap_or_default(),
            digest: hex(&Sha256::digest(&canonical)),
        })
    }

    /// The audit section (default: `on_unavailable: accept`).
    pub fn audit(&self) -> crate::audit::AuditPolicy {
        self.audit
    }

    /// SHA-256 of the canonical policy JSON: identifies exactly which policy decided.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// Names of runtime secrets the policy needs but the runtime does not have.
    pub fn missing_secrets(&self) -> Vec<&str> {
        let upstreams = self.upstreams.values().filter(|u| u.value.is_none()).map(|u| u.secret_env.as_str());
        upstreams.chain(self.redaction.missing_secret()).collect()
    }

    /// The compiled rate limits and token estimation.
    pub fn rate_limits(&self) -> &crate::ratelimit::CompiledLimits {
        &self.rate_limits
    }

    /// The compiled redaction policy.
    pub fn redaction(&self) -> &CompiledRedaction {
        &self.redaction
    }

    /// The credential to inject for requests to `cluster`, if policy configures one.
    pub fn upstream(&self, cluster: &str) -> Option<&UpstreamSecret> {
        self.upstreams.get(cluster)
    }

    /// Whether any route accepts mesh identity: if not, the adapter need not read the peer
    /// certificate (a host call per request).
    pub fn uses_mesh_identity(&self) -> bool {
        self.routes.iter().flat_map(|r| r.accept.iter().flatten()).any(|m| *m == AuthMethod::Mesh)
    }

    /// Whether any upstream credential is configured: if not, the route's cluster is not needed.
    pub fn injects_credentials(&self) -> bool {
        !self.upstreams.is_empty()
    }

    /// The body limits.
    pub fn limits(&self) -> &BodyLimits {
        &self.limits
    }
}

/// Lower-case hex of bytes.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(out, "{b:02x}");
    }
    out
}

fn require_principal(p: &Principal, path: &str) -> Result<(), PolicyError> {
    let fields = [&p.user, &p.team, &p.app];
    if fields.iter().all(|f| f.is_none()) {
        return Err(PolicyError::invalid(path, "a principal needs at least one of user, team, app"));
    }
    if fields.iter().any(|f| f.as_deref().is_some_and(|v| v.is_empty() || !is_header_safe(v))) {
        return Err(PolicyError::invalid(path, "principal fields must be non-empty printable ASCII (they are sent upstream as headers)"));
    }
    Ok(())
}

fn is_header_safe(v: &str) -> bool {
    v.bytes().all(|b| (0x20..0x7f).contains(&b))
}

fn compile_keys(keys: &[ApiKey]) -> Result<HashMap<KeyDigest, ApiKey>, PolicyError> {
    let mut out = HashMap::with_capacity(keys.len());
    let mut ids = HashSet::new();
    for (i, key) in keys.iter().enumerate() {
        let path = format!("identity.api_keys[{i}]");
        if key.id.is_empty() {
            return Err(PolicyError::invalid(format!("{path}.id"), "must not be empty"));
        }
        if !ids.insert(key.id.as_str()) {
            return Err(PolicyError::invalid(format!("{path}.id"), format!("duplicate key id '{}'", key.id)));
        }
        let digest = parse_digest(&key.sha256)
            .ok_or_else(|| PolicyError::invalid(format!("{path}.sha256"), "must be the 64-character lower-case hex SHA-256 of the key"))?;
        require_principal(&key.principal, &format!("{path}.principal"))?;
        if out.insert(digest, key.clone()).is_some() {
            return Err(PolicyError::invalid(format!("{path}.sha256"), "the same key digest appears twice"));
        }
    }
    Ok(out)
}

fn compile_providers(providers: &[JwtProvider]) -> Result<Vec<CompiledProvider>, PolicyError> {
    let mut issuers = HashSet::new();
    providers
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let path = format!("identity.jwt_providers[{i}]");
            if !issuers.insert(p.issuer.as_str()) {
                return Err(PolicyError::invalid(format!("{path}.issuer"), "two providers share this issuer"));
            }
            CompiledProvider::compile(p, &path)
        })
        .collect()
}

fn default_routes() -> Vec<RoutePolicy> {
    vec![RoutePolicy {
        name: "default".into(),
        path_prefix: "/".into(),
        accept: vec![vec![AuthMethod::ApiKey], vec![AuthMethod::Jwt], vec![AuthMethod::Mesh]],
    }]
}

fn validate_routes(routes: &[RoutePolicy]) -> Result<Vec<RoutePolicy>, PolicyError> {
    for (i, r) in routes.iter().enumerate() {
        let path = format!("routes[{i}]");
        if !r.path_prefix.starts_with('/') {
            return Err(PolicyError::invalid(format!("{path}.path_prefix"), "must start with '/'"));
        }
        if r.accept.is_empty() {
            return Err(PolicyError::invalid(format!("{path}.accept"), "must list at least one alternative, e.g. [[api_key]]"));
        }
        for (j, alt) in r.accept.iter().enumerate() {
            let unique: HashSet<_> = alt.iter().collect();
            if alt.is_empty() || unique.len() != alt.len() {
                return Err(PolicyError::invalid(format!("{path}.accept[{j}]"), "an alternative lists each method once and at least one"));
            }
        }
    }
    Ok(routes.to_vec())
}

fn compile_upstreams(upstreams: &[UpstreamCredential], secrets: &dyn SecretSource) -> Result<HashMap<String, UpstreamSecret>, PolicyError> {
    let mut out = HashMap::new();
    for (i, u) in upstreams.iter().enumerate() {
        let path = format!("upstreams[{i}]");
        if u.secret_env.is_empty() {
            return Err(PolicyError::invalid(format!("{path}.secret_env"), "must name an environment variable"));
        }
        let header = u.header.to_ascii_lowercase();
        if header.is_empty() || header.starts_with(':') || !header.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(PolicyError::invalid(format!("{path}.header"), "must be a plain header name such as 'authorization'"));
        }
        let value = secrets.secret(&u.secret_env).filter(|s| !s.is_empty()).map(|s| format!("{}{}", u.prefix, s.trim()));
        let secret = UpstreamSecret { header, value, secret_env: u.secret_env.clone() };
        if out.insert(u.cluster.clone(), secret).is_some() {
            return Err(PolicyError::invalid(format!("{path}.cluster"), format!("cluster '{}' has two credentials", u.cluster)));
        }
    }
    Ok(out)
}
