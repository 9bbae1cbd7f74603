//! The policy document as operators write it (JSON in the plugin configuration, YAML through the
//! control plane). This is the one schema: the control plane validates with these same types.

use crate::glob::Glob;
use serde::{Deserialize, Serialize};

/// A whole policy: identities, governed routes, model access, upstream credentials and limits.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Who callers can be.
    #[serde(default)]
    pub identity: IdentityPolicy,
    /// Governed path prefixes and the identity methods each accepts; first match wins.
    #[serde(default)]
    pub routes: Vec<RoutePolicy>,
    /// Which principals may use which models; anything not allowed is denied.
    #[serde(default)]
    pub models: Vec<ModelRule>,
    /// Provider credentials injected per upstream cluster.
    #[serde(default)]
    pub upstreams: Vec<UpstreamCredential>,
    /// Body size limits.
    #[serde(default)]
    pub limits: BodyLimits,
    /// Rate limits and token limits (every matching limit applies).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rate_limits: Vec<crate::ratelimit::schema::RateLimit>,
    /// How tokens are estimated before the model reports usage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_estimate: Option<crate::ratelimit::schema::TokenEstimate>,
    /// The rate-limit service `scope: fleet` limits ask.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_service: Option<crate::ratelimit::schema::RateLimitService>,
    /// Streaming redaction (the `cordon.redact` role); absent means the default detector set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redaction: Option<crate::redaction::RedactionPolicy>,
    /// The audit trail: what requests do when their record cannot be kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<crate::audit::AuditPolicy>,
}

/// The three ways a caller can prove who it is.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityPolicy {
    /// API keys, stored as SHA-256 digests only.
    #[serde(default)]
    pub api_keys: Vec<ApiKey>,
    /// JWT issuers with their JWKS.
    #[serde(default)]
    pub jwt_providers: Vec<JwtProvider>,
    /// SPIFFE ids (from the mesh mTLS peer certificate) mapped to principals.
    #[serde(default)]
    pub spiffe: Vec<SpiffeMapping>,
}

/// Who a caller is once identified.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Principal {
    /// The person or service account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The team that owns the caller; model access and limits key on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// The calling application.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
}

/// One API key: its digest, the principal it stands for, and its lifecycle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKey {
    /// A non-secret identifier for logs, audit and revocation.
    pub id: String,
    /// Lower-case hex SHA-256 of the key; the key itself is never stored.
    pub sha256: String,
    /// The principal the key authenticates as.
    pub principal: Principal,
    /// Whether the key is usable.
    #[serde(default)]
    pub status: KeyStatus,
    /// Unix time (seconds) after which the key is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
}

/// Lifecycle state of an API key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyStatus {
    /// Usable.
    #[default]
    Active,
    /// Refused with `revoked_api_key`.
    Revoked,
}

/// A JWT issuer trusted by policy. The JWKS travels with the policy: the filter never fetches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtProvider {
    /// A name for logs and audit.
    pub name: String,
    /// The exact `iss` value tokens must carry.
    pub issuer: String,
    /// Accepted `aud` values; a token must name at least one.
    pub audiences: Vec<String>,
    /// The issuer's public keys (RFC 7517).
    pub jwks: Jwks,
    /// Tolerance for `exp` and `nbf`, in seconds.
    #[serde(default = "default_clock_skew")]
    pub clock_skew_secs: u64,
    /// Which claims become the principal's fields.
    #[serde(default)]
    pub claims: ClaimMapping,
}

fn default_clock_skew() -> u64 {
    60
}

/// A JSON Web Key Set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Jwks {
    /// The keys.
    pub keys: Vec<Jwk>,
}

/// One JSON Web Key; fields Cordon does not use (x5c, key_ops, ...) are accepted and ignored,
/// because operators paste JWKS documents straight from their identity provider.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Jwk {
    /// Key type: `RSA`, `EC` or `OKP`.
    pub kty: String,
    /// Key id, matched against the token header's `kid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// Intended algorithm, if the JWKS states it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    /// Curve for EC (`P-256`) and OKP (`Ed25519`) keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    /// RSA modulus (base64url).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    /// RSA exponent (base64url).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
    /// EC x coordinate or Ed25519 public key (base64url).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    /// EC y coordinate (base64url).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
}

/// Claim names mapped to principal fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimMapping {
    /// Claim holding the user (required in the token).
    #[serde(default = "default_user_claim")]
    pub user: String,
    /// Claim holding the team (optional in the token; an array claim yields its first string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// Claim holding the app (optional in the token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
}

fn default_user_claim() -> String {
    "sub".into()
}

impl Default for ClaimMapping {
    fn default() -> Self {
        Self { user: default_user_claim(), team: None, app: None }
    }
}

/// A SPIFFE id pattern mapped to a principal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpiffeMapping {
    /// SPIFFE id or pattern, e.g. `spiffe://cluster.local/ns/prod/sa/*`.
    pub id: Glob,
    /// The principal callers with a matching id become.
    pub principal: Principal,
}

/// A governed path prefix and the identity methods it accepts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutePolicy {
    /// A name for logs and audit.
    pub name: String,
    /// Request paths starting with this prefix are governed by this route.
    pub path_prefix: String,
    /// Alternatives, each a set of methods that must all succeed: `[[mesh, api_key], [jwt]]`
    /// means "mesh identity and an API key, or a JWT".
    pub accept: Vec<Vec<AuthMethod>>,
}

/// A way of proving identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// `Authorization: Bearer <key>` or `x-api-key: <key>`.
    ApiKey,
    /// `Authorization: Bearer <jwt>`.
    Jwt,
    /// The downstream mTLS peer's SPIFFE URI SAN.
    Mesh,
}

impl AuthMethod {
    /// The name used in headers and audit.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::ApiKey => "api_key",
            AuthMethod::Jwt => "jwt",
            AuthMethod::Mesh => "mesh",
        }
    }
}

/// Models a set of principals may use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelRule {
    /// Which principals the rule applies to; an empty selector applies to everyone.
    #[serde(default, rename = "match")]
    pub selector: PrincipalSelector,
    /// Model name patterns, e.g. `gpt-4o*`.
    pub allow: Vec<Glob>,
}

/// Matches principals by field; unset fields match anything.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrincipalSelector {
    /// User pattern.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<Glob>,
    /// Team pattern.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<Glob>,
    /// App pattern.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<Glob>,
}

/// A provider credential injected for requests routed to one Envoy cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamCredential {
    /// The Envoy cluster name the route sends to.
    pub cluster: String,
    /// Name of the runtime secret (environment variable handed to the wasm VM).
    pub secret_env: String,
    /// Header to set, e.g. `authorization` (OpenAI) or `x-api-key` (Anthropic).
    #[serde(default = "default_credential_header")]
    pub header: String,
    /// Text put before the secret, e.g. `Bearer ` (OpenAI); empty for Anthropic's `x-api-key`.
    #[serde(default = "default_credential_prefix")]
    pub prefix: String,
}

fn default_credential_header() -> String {
    "authorization".into()
}

fn default_credential_prefix() -> String {
    "Bearer ".into()
}

/// Limits on what the filter buffers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BodyLimits {
    /// Largest request body read to find the model; larger bodies get 413.
    #[serde(default = "default_request_limit")]
    pub max_request_body_bytes: u64,
    /// Largest `/v1/models` response the filter will filter; larger ones get 502.
    #[serde(default = "default_response_limit")]
    pub max_model_list_bytes: u64,
    /// Largest non-streamed (JSON) model response `cordon.redact` buffers to scan; larger ones
    /// get 502 `response_too_large`, never a truncated or unscanned body. Streams are not capped.
    #[serde(default = "default_json_response_limit")]
    pub max_response_body_bytes: u64,
}

fn default_json_response_limit() -> u64 {
    4 * 1024 * 1024
}

fn default_request_limit() -> u64 {
    1024 * 1024
}

fn default_response_limit() -> u64 {
    1024 * 1024
}

impl Default for BodyLimits {
    fn default() -> Self {
        Self {
            max_request_body_bytes: default_request_limit(),
            max_model_list_bytes: default_response_limit(),
            max_response_body_bytes: default_json_response_limit(),
        }
    }
}
