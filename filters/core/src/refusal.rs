//! Every reason Cordon refuses a request, with its HTTP status and a stable, OpenAI-shaped error
//! body. Codes are part of the public contract: apps and dashboards key on them.

use serde::Serialize;

/// Why a request was refused; each variant maps to one stable error code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No credential the route accepts was presented.
    MissingCredentials,
    /// The API key is not in policy.
    InvalidApiKey,
    /// The API key was revoked.
    RevokedApiKey,
    /// The API key is past its expiry.
    ExpiredApiKey,
    /// The bearer token is not a well-formed JWT.
    MalformedToken,
    /// The token's `alg` is not one Cordon accepts (RS256, ES256, EdDSA).
    UnsupportedTokenAlgorithm,
    /// No key in the issuer's JWKS can verify the token.
    UnknownSigningKey,
    /// The token's signature does not verify.
    InvalidTokenSignature,
    /// The token's `exp` has passed (beyond the allowed clock skew), or it has none.
    TokenExpired,
    /// The token's `nbf` is in the future (beyond the allowed clock skew).
    TokenNotYetValid,
    /// The token's `aud` names none of the provider's audiences.
    InvalidTokenAudience,
    /// The token's `iss` is not a configured provider.
    InvalidTokenIssuer,
    /// A claim the policy maps to the principal is missing or not a string.
    MissingTokenClaim(String),
    /// The route requires mesh identity but the peer presented no SPIFFE certificate.
    MeshIdentityMissing,
    /// The peer's SPIFFE id is not mapped to a principal.
    UnknownMeshIdentity,
    /// No policy route covers this path.
    RouteNotGoverned,
    /// The principal may not use the requested model.
    ModelNotAllowed {
        /// The model the request named.
        model: String,
    },
    /// The requested model name is not printable ASCII of a bounded length (why, without the name).
    InvalidModelName(String),
    /// The request body is not valid JSON (or not UTF-8).
    InvalidJson(String),
    /// The JSON body has no string `model` field.
    MissingModel,
    /// The request body exceeds the configured limit.
    BodyTooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// The body is compressed with an encoding Cordon cannot inspect.
    UnsupportedContentEncoding(String),
    /// No policy has been loaded yet and cold start is configured to refuse.
    PolicyUnavailable,
    /// The upstream's provider credential is not present in the runtime secrets.
    UpstreamCredentialUnavailable,
    /// The upstream response could not be inspected (e.g. a model list that is not JSON).
    UpstreamResponseInvalid,
    /// The request carries data a `block` redaction rule forbids.
    SensitiveDataBlocked {
        /// The detector that matched (never the matched text).
        detector: String,
    },
    /// The request body cannot be scanned for sensitive data (malformed JSON) and policy blocks it.
    UnscannableRequest(String),
    /// The upstream response cannot be scanned (broken SSE, an encoding Cordon cannot read).
    UnscannableResponse(String),
    /// Redaction needs a runtime secret (the pseudonymisation key) that is missing.
    RedactionUnavailable,
    /// A rate limit or token limit refused the request (429).
    RateLimited {
        /// The limit's name.
        limit: String,
        /// Requests or tokens.
        kind: crate::ratelimit::LimitKind,
        /// Seconds until the same request fits (`Retry-After`).
        retry_after_secs: u64,
    },
    /// The shared counters could not be read or written (fail closed).
    RateLimitUnavailable(String),
    /// The model's non-streamed response is larger than Cordon buffers to scan.
    ResponseTooLarge {
        /// The limit in bytes (`limits.max_response_body_bytes`).
        limit: u64,
    },
    /// The model's (non-streamed) response carries data a `block` rule forbids.
    ResponseBlocked {
        /// The detector that matched.
        detector: String,
    },
    /// Policy requires every exchange to be audited (`audit.on_unavailable: refuse`) and the
    /// node's audit buffer is full or audit delivery is not set up (fail closed).
    AuditUnavailable,
}

/// The OpenAI-shaped error envelope: `{"error":{"message","type","code"}}`.
#[derive(Debug, Serialize)]
struct Envelope<'a> {
    error: ErrorBody<'a>,
}

#[derive(Debug, Serialize)]
struct ErrorBody<'a> {
    message: String,
    #[serde(rename = "type")]
    kind: &'a str,
    code: &'a str,
    param: Option<&'a str>,
}

impl Refusal {
    /// The HTTP status the client receives.
    pub fn status(&self) -> u16 {
        use Refusal::*;
        match self {
            MissingCredentials
            | InvalidApiKey
            | RevokedApiKey
            | ExpiredApiKey
            | MalformedToken
            | UnsupportedTokenAlgorithm
            | UnknownSigningKey
            | InvalidTokenSignature
            | TokenExpired
            | TokenNotYetValid
            | InvalidTokenAudience
            | InvalidTokenIssuer
            | MissingTokenClaim(_)
            | MeshIdentityMissing
            | UnknownMeshIdentity => 401,
            RouteNotGoverned | ModelNotAllowed { .. } => 403,
            InvalidJson(_) | MissingModel => 400,
            BodyTooLarge { .. } => 413,
            UnsupportedContentEncoding(_) => 415,
            PolicyUnavailable | UpstreamCredentialUnavailable => 503,
            UpstreamResponseInvalid | UnscannableResponse(_) | ResponseBlocked { .. } | ResponseTooLarge { .. } => 502,
            SensitiveDataBlocked { .. } | UnscannableRequest(_) | InvalidModelName(_) => 400,
            RedactionUnavailable | RateLimitUnavailable(_) | AuditUnavailable => 503,
            RateLimited { .. } => 429,
        }
    }

    /// The stable machine-readable code.
    pub fn code(&self) -> &'static str {
        use Refusal::*;
        match self {
            MissingCredentials => "missing_credentials",
            InvalidApiKey => "invalid_api_key",
            RevokedApiKey => "revoked_api_key",
            ExpiredApiKey => "expired_api_key",
            MalformedToken => "malformed_token",
            UnsupportedTokenAlgorithm => "unsupported_token_algorithm",
            UnknownSigningKey => "unknown_signing_key",
            InvalidTokenSignature => "invalid_token_signature",
            TokenExpired => "token_expired",
            TokenNotYetValid => "token_not_yet_valid",
            InvalidTokenAudience => "invalid_token_audience",
            InvalidTokenIssuer => "invalid_token_issuer",
            MissingTokenClaim(_) => "missing_token_claim",
            MeshIdentityMissing => "mesh_identity_missing",
            UnknownMeshIdentity => "unknown_mesh_identity",
            RouteNotGoverned => "route_not_governed",
            ModelNotAllowed { .. } => "model_not_allowed",
            InvalidModelName(_) => "invalid_model_name",
            InvalidJson(_) => "invalid_json",
            MissingModel => "missing_model",
            BodyTooLarge { .. } => "request_too_large",
            UnsupportedContentEncoding(_) => "unsupported_content_encoding",
            PolicyUnavailable => "policy_unavailable",
            UpstreamCredentialUnavailable => "upstream_credential_unavailable",
            UpstreamResponseInvalid => "upstream_response_invalid",
            SensitiveDataBlocked { .. } => "sensitive_data_blocked",
            UnscannableRequest(_) => "unscannable_request",
            UnscannableResponse(_) => "unscannable_response",
            RedactionUnavailable => "redaction_unavailable",
            RateLimited { kind: crate::ratelimit::LimitKind::Requests, .. } => "rate_limit_exceeded",
            RateLimited { kind: crate::ratelimit::LimitKind::Tokens, .. } => "token_limit_exceeded",
            RateLimited { kind: crate::ratelimit::LimitKind::Budget, .. } => "budget_exceeded",
            RateLimited { kind: crate::ratelimit::LimitKind::Concurrency, .. } => "concurrency_limit_exceeded",
            RateLimitUnavailable(_) => "rate_limit_unavailable",
            ResponseTooLarge { .. } => "response_too_large",
            ResponseBlocked { .. } => "response_blocked",
            AuditUnavailable => "audit_unavailable",
        }
    }

    /// The OpenAI error `type` the code belongs to.
    pub fn error_type(&self) -> &'static str {
        match self.status() {
            401 => "authentication_error",
            403 => "permission_error",
            400 | 413 | 415 => "invalid_request_error",
            429 => "rate_limit_error",
            _ => "server_error",
        }
    }

    /// A human-readable message; never contains credentials or prompt content.
    pub fn message(&self) -> String {
        use Refusal::*;
        match self {
            MissingCredentials => "No credentials accepted by this route were provided. Send an API key as 'Authorization: Bearer <key>' or 'x-api-key', or a JWT, as the route requires.".into(),
            InvalidApiKey => "Incorrect API key provided.".into(),
            RevokedApiKey => "This API key has been revoked.".into(),
            ExpiredApiKey => "This API key has expired.".into(),
            MalformedToken => "The bearer token is not a well-formed JWT.".into(),
            UnsupportedTokenAlgorithm => "The token's signing algorithm is not accepted (RS256, ES256 or EdDSA).".into(),
            UnknownSigningKey => "The token was signed by a key the issuer's JWKS does not contain.".into(),
            InvalidTokenSignature => "The token's signature is invalid.".into(),
            TokenExpired => "The token has expired.".into(),
            TokenNotYetValid => "The token is not valid yet (nbf).".into(),
            InvalidTokenAudience => "The token's audience is not accepted.".into(),
            InvalidTokenIssuer => "The token's issuer is not accepted.".into(),
            MissingTokenClaim(claim) => format!("The token lacks the string claim '{claim}' required by policy."),
            MeshIdentityMissing => "This route requires a mesh (mTLS SPIFFE) identity and none was presented.".into(),
            UnknownMeshIdentity => "The mesh identity of the caller is not allowed.".into(),
            RouteNotGoverned => "This path is not covered by the gateway policy.".into(),
            ModelNotAllowed { model } => format!("The model '{model}' does not exist or you do not have access to it."),
            InvalidModelName(why) => {
                format!("The model name must be 1 to 256 printable ASCII characters without spaces: {why}.")
            }
            InvalidJson(why) => format!("The request body is not valid JSON: {why}."),
            MissingModel => "The request body must be a JSON object with a string 'model' field.".into(),
            BodyTooLarge { limit } => format!("The request body exceeds the limit of {limit} bytes."),
            UnsupportedContentEncoding(enc) => format!("Request bodies with content-encoding '{enc}' cannot be inspected; send them uncompressed."),
            PolicyUnavailable => "The gateway has no policy loaded yet; try again shortly.".into(),
            UpstreamCredentialUnavailable => "The gateway has no credential for this upstream; contact the operator.".into(),
            UpstreamResponseInvalid => "The upstream response could not be inspected.".into(),
            SensitiveDataBlocked { detector } => format!("The request contains data that policy does not allow to leave the boundary ({detector})."),
            UnscannableRequest(why) => format!("The request body could not be scanned for sensitive data: {why}."),
            UnscannableResponse(why) => format!("The upstream response could not be scanned for sensitive data: {why}."),
            RedactionUnavailable => "The gateway's redaction key is not configured; contact the operator.".into(),
            RateLimited { limit, kind, retry_after_secs } => {
                let what = match kind {
                    crate::ratelimit::LimitKind::Requests => "Rate limit '{limit}' on requests",
                    crate::ratelimit::LimitKind::Tokens => "Rate limit '{limit}' on tokens",
                    crate::ratelimit::LimitKind::Budget => "Token budget '{limit}'",
                    crate::ratelimit::LimitKind::Concurrency => "Concurrency limit '{limit}' (requests in flight)",
                };
                format!("{} reached; retry in {retry_after_secs} s.", what.replace("{limit}", limit))
            }
            RateLimitUnavailable(why) => format!("The gateway's rate-limit state is unavailable ({why}); try again shortly."),
            ResponseTooLarge { limit } => {
                format!("The model's response exceeds the {limit} bytes the gateway scans; ask for a shorter response or stream it.")
            }
            ResponseBlocked { detector } => format!("The model's response contained data that policy does not allow to leave the boundary ({detector})."),
            AuditUnavailable => "The gateway cannot record this request in its audit trail right now and policy requires it; try again shortly.".into(),
        }
    }

    /// Response headers that go with the refusal besides `content-type` and `x-cordon-error`:
    /// `retry-after` and the limit's name for a 429.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        match self {
            Refusal::RateLimited { limit, retry_after_secs, .. } => {
                vec![("retry-after", retry_after_secs.to_string()), ("x-cordon-limit", limit.clone())]
            }
            _ => Vec::new(),
        }
    }

    /// The JSON body sent to the client.
    pub fn body(&self) -> Vec<u8> {
        let envelope = Envelope { error: ErrorBody { message: self.message(), kind: self.error_type(), code: self.code(), param: None } };
        // Serialising a struct of strings cannot fail; fall back to a fixed body all the same.
        serde_json::to_vec(&envelope)
            .unwrap_or_else(|_| br#"{"error":{"message":"refused","type":"server_error","code":"internal_error"}}"#.to_vec())
    }

    /// Every code, in declaration order; used to register one metric per code.
    pub fn all_codes() -> &'static [&'static str] {
        &[
            "missing_credentials",
            "invalid_api_key",
            "revoked_api_key",
            "expired_api_key",
            "malformed_token",
            "unsupported_token_algorithm",
            "unknown_signing_key",
            "invalid_token_signature",
            "token_expired",
            "token_not_yet_valid",
            "invalid_token_audience",
            "invalid_token_issuer",
            "missing_token_claim",
            "mesh_identity_missing",
            "unknown_mesh_identity",
            "route_not_governed",
            "model_not_allowed",
            "invalid_model_name",
            "invalid_json",
            "missing_model",
            "request_too_large",
            "unsupported_content_encoding",
            "policy_unavailable",
            "upstream_credential_unavailable",
            "upstream_response_invalid",
            "sensitive_data_blocked",
            "unscannable_request",
            "unscannable_response",
            "redaction_unavailable",
            "rate_limit_exceeded",
            "token_limit_exceeded",
            "budget_exceeded",
            "concurrency_limit_exceeded",
            "rate_limit_unavailable",
            "response_too_large",
            "response_blocked",
            "audit_unavailable",
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_openai_shaped() {
        let v: serde_json::Value = serde_json::from_slice(&Refusal::ModelNotAllowed { model: "gpt-4o".into() }.body()).unwrap();
        assert_eq!(v["error"]["code"], "model_not_allowed");
        assert_eq!(v["error"]["type"], "permission_error");
        assert!(v["error"]["message"].as_str().unwrap().contains("gpt-4o"));
    }

    #[test]
    fn every_code_is_listed_once() {
        let samples = [
            Refusal::MissingCredentials,
            Refusal::InvalidApiKey,
            Refusal::RevokedApiKey,
            Refusal::ExpiredApiKey,
            Refusal::MalformedToken,
            Refusal::UnsupportedTokenAlgorithm,
            Refusal::UnknownSigningKey,
            Refusal::InvalidTokenSignature,
            Refusal::TokenExpired,
            Refusal::TokenNotYetValid,
            Refusal::InvalidTokenAudience,
            Refusal::InvalidTokenIssuer,
            Refusal::MissingTokenClaim("sub".into()),
            Refusal::MeshIdentityMissing,
            Refusal::UnknownMeshIdentity,
            Refusal::RouteNotGoverned,
            Refusal::ModelNotAllowed { model: "m".into() },
            Refusal::InvalidModelName("x".into()),
            Refusal::InvalidJson("x".into()),
            Refusal::MissingModel,
            Refusal::BodyTooLarge { limit: 1 },
            Refusal::UnsupportedContentEncoding("gzip".into()),
            Refusal::PolicyUnavailable,
            Refusal::UpstreamCredentialUnavailable,
            Refusal::UpstreamResponseInvalid,
            Refusal::SensitiveDataBlocked { detector: "card".into() },
            Refusal::UnscannableRequest("x".into()),
            Refusal::UnscannableResponse("x".into()),
            Refusal::RedactionUnavailable,
            Refusal::RateLimited { limit: "l".into(), kind: crate::ratelimit::LimitKind::Requests, retry_after_secs: 1 },
            Refusal::RateLimited { limit: "l".into(), kind: crate::ratelimit::LimitKind::Tokens, retry_after_secs: 1 },
            Refusal::RateLimited { limit: "l".into(), kind: crate::ratelimit::LimitKind::Budget, retry_after_secs: 1 },
            Refusal::RateLimited { limit: "l".into(), kind: crate::ratelimit::LimitKind::Concurrency, retry_after_secs: 1 },
            Refusal::RateLimitUnavailable("x".into()),
            Refusal::ResponseTooLarge { limit: 1 },
            Refusal::ResponseBlocked { detector: "card".into() },
            Refusal::AuditUnavailable,
        ];
        let codes: Vec<_> = samples.iter().map(Refusal::code).collect();
        assert_eq!(codes, Refusal::all_codes());
    }
}
