//! JWT verification against JWKS carried in policy (RS256, ES256, EdDSA), with `iss`, `aud`,
//! `exp` and `nbf` checked against an injected clock, and a bounded cache of verified tokens:
//! one RS256 verification in Envoy's V8 costs about ten times the whole proxy hop, so a token is
//! verified once and trusted from the cache until its `exp`.

use crate::policy::{ClaimMapping, Jwk, JwtProvider, PolicyError, Principal};
use crate::refusal::Refusal;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// An algorithm Cordon accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
    /// ECDSA P-256 with SHA-256.
    Es256,
    /// Ed25519.
    EdDsa,
}

impl Algorithm {
    fn from_header(alg: &str) -> Option<Self> {
        match alg {
            "RS256" => Some(Self::Rs256),
            "ES256" => Some(Self::Es256),
            "EdDSA" => Some(Self::EdDsa),
            _ => None,
        }
    }
}

enum VerifyingKey {
    Rs256(rsa::pkcs1v15::VerifyingKey<Sha256>),
    Es256(p256::ecdsa::VerifyingKey),
    EdDsa(ed25519_dalek::VerifyingKey),
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            VerifyingKey::Rs256(_) => "RS256",
            VerifyingKey::Es256(_) => "ES256",
            VerifyingKey::EdDsa(_) => "EdDSA",
        })
    }
}

impl VerifyingKey {
    fn algorithm(&self) -> Algorithm {
        match self {
            VerifyingKey::Rs256(_) => Algorithm::Rs256,
            VerifyingKey::Es256(_) => Algorithm::Es256,
            VerifyingKey::EdDsa(_) => Algorithm::EdDsa,
        }
    }

    fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        use rsa::signature::Verifier;
        match self {
            VerifyingKey::Rs256(k) => rsa::pkcs1v15::Signature::try_from(signature).is_ok_and(|s| k.verify(message, &s).is_ok()),
            VerifyingKey::Es256(k) => p256::ecdsa::Signature::from_slice(signature).is_ok_and(|s| k.verify(message, &s).is_ok()),
            VerifyingKey::EdDsa(k) => ed25519_dalek::Signature::from_slice(signature).is_ok_and(|s| k.verify(message, &s).is_ok()),
        }
    }
}

#[derive(Debug)]
struct CompiledKey {
    kid: Option<String>,
    key: VerifyingKey,
}

/// A JWT provider with its keys parsed.
#[derive(Debug)]
pub struct CompiledProvider {
    name: String,
    issuer: String,
    audiences: Vec<String>,
    keys: Vec<CompiledKey>,
    skew: u64,
    claims: ClaimMapping,
}

fn b64(field: &Option<String>, path: &str, name: &str) -> Result<Vec<u8>, PolicyError> {
    let text = field.as_deref().ok_or_else(|| PolicyError::invalid(format!("{path}.{name}"), "required for this key type"))?;
    URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).map_err(|_| PolicyError::invalid(format!("{path}.{name}"), "must be base64url"))
}

fn compile_key(jwk: &Jwk, path: &str) -> Result<VerifyingKey, PolicyError> {
    let bad = |field: &str, why: &str| PolicyError::invalid(format!("{path}.{field}"), why.to_string());
    match jwk.kty.as_str() {
        "RSA" => {
            let n = rsa::BigUint::from_bytes_be(&b64(&jwk.n, path, "n")?);
            let e = rsa::BigUint::from_bytes_be(&b64(&jwk.e, path, "e")?);
            if n.bits() < 2048 {
                return Err(bad("n", "RSA keys shorter than 2048 bits are refused"));
            }
            let key = rsa::RsaPublicKey::new(n, e).map_err(|e| bad("n", &e.to_string()))?;
            Ok(VerifyingKey::Rs256(rsa::pkcs1v15::VerifyingKey::new(key)))
        }
        "EC" => {
            if jwk.crv.as_deref() != Some("P-256") {
                return Err(bad("crv", "only P-256 (ES256) EC keys are supported"));
            }
            let (x, y) = (b64(&jwk.x, path, "x")?, b64(&jwk.y, path, "y")?);
            if x.len() != 32 || y.len() != 32 {
                return Err(bad("x", "P-256 coordinates are 32 bytes each"));
            }
            let mut sec1 = Vec::with_capacity(65);
            sec1.push(4);
            sec1.extend_from_slice(&x);
            sec1.extend_from_slice(&y);
            let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1).map_err(|_| bad("x", "not a point on P-256"))?;
            Ok(VerifyingKey::Es256(key))
        }
        "OKP" => {
            if jwk.crv.as_deref() != Some("Ed25519") {
                return Err(bad("crv", "only Ed25519 OKP keys are supported"));
            }
            let x: [u8; 32] = b64(&jwk.x, path, "x")?.try_into().map_err(|_| bad("x", "Ed25519 keys are 32 bytes"))?;
            let key = ed25519_dalek::VerifyingKey::from_bytes(&x).map_err(|_| bad("x", "not a valid Ed25519 key"))?;
            Ok(VerifyingKey::EdDsa(key))
        }
        other => Err(bad("kty", &format!("key type '{other}' is not supported (RSA, EC, OKP)"))),
    }
}

impl CompiledProvider {
    /// Validates a provider and parses its JWKS; `path` prefixes error paths.
    pub fn compile(p: &JwtProvider, path: &str) -> Result<Self, PolicyError> {
        if p.name.is_empty() {
            return Err(PolicyError::invalid(format!("{path}.name"), "must not be empty"));
        }
        if p.issuer.is_empty() {
            return Err(PolicyError::invalid(format!("{path}.issuer"), "must not be empty"));
        }
        if p.audiences.is_empty() || p.audiences.iter().any(String::is_empty) {
            return Err(PolicyError::invalid(format!("{path}.audiences"), "must list at least one non-empty audience"));
        }
        if p.jwks.keys.is_empty() {
            return Err(PolicyError::invalid(format!("{path}.jwks.keys"), "must hold at least one key"));
        }
        let keys = p
            .jwks
            .keys
            .iter()
            .enumerate()
            .map(|(i, jwk)| Ok(CompiledKey { kid: jwk.kid.clone(), key: compile_key(jwk, &format!("{path}.jwks.keys[{i}]"))? }))
            .collect::<Result<_, PolicyError>>()?;
        Ok(Self {
            name: p.name.clone(),
            issuer: p.issuer.clone(),
            audiences: p.audiences.clone(),
            keys,
            skew: p.clock_skew_secs,
            claims: p.claims.clone(),
        })
    }

    /// The provider's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// A token that verified: the principal it maps to and its validity window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    /// The principal from the mapped claims.
    pub principal: Principal,
    /// The provider that issued it.
    pub provider: String,
    exp: u64,
    nbf: Option<u64>,
    skew: u64,
}

impl VerifiedToken {
    fn check_time(&self, now: u64) -> Result<(), Refusal> {
        if now >= self.exp.saturating_add(self.skew) {
            return Err(Refusal::TokenExpired);
        }
        if self.nbf.is_some_and(|nbf| now.saturating_add(self.skew) < nbf) {
            return Err(Refusal::TokenNotYetValid);
        }
        Ok(())
    }
}

fn decode_json(part: &str) -> Result<Value, Refusal> {
    let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|_| Refusal::MalformedToken)?;
    serde_json::from_slice(&bytes).map_err(|_| Refusal::MalformedToken)
}

/// Whether a bearer credential has the shape of a JWT (three base64url parts, JSON header).
pub fn looks_like_jwt(token: &str) -> bool {
    token.starts_with("eyJ") && token.split('.').count() == 3
}

fn claim_string(claims: &Value, name: &str) -> Option<String> {
    match claims.get(name)? {
        Value::String(s) => Some(s.clone()),
        Value::Array(items) => items.iter().find_map(|v| v.as_str().map(str::to_owned)),
        _ => None,
    }
}

fn header_safe(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.is_empty() && s.bytes().all(|b| (0x20..0x7f).contains(&b)))
}

/// Verifies `token` against the providers at `now` (unix seconds), without the cache.
pub fn verify(providers: &[CompiledProvider], token: &str, now: u64) -> Result<VerifiedToken, Refusal> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(Refusal::MalformedToken);
    };
    let header = decode_json(h)?;
    let claims = decode_json(p)?;
    let signature = URL_SAFE_NO_PAD.decode(s).map_err(|_| Refusal::MalformedToken)?;
    let alg = header.get("alg").and_then(Value::as_str).and_then(Algorithm::from_header).ok_or(Refusal::UnsupportedTokenAlgorithm)?;
    let issuer = claims.get("iss").and_then(Value::as_str).ok_or(Refusal::InvalidTokenIssuer)?;
    let provider = providers.iter().find(|p| p.issuer == issuer).ok_or(Refusal::InvalidTokenIssuer)?;

    let kid = header.get("kid").and_then(Value::as_str);
    // The signing input `header.payload` is the token up to the second dot.
    let signed = token.as_bytes().get(..h.len() + 1 + p.len()).ok_or(Refusal::MalformedToken)?;
    let mut candidates = provider
        .keys
        .iter()
        .filter(|k| k.key.algorithm() == alg && (kid.is_none() || k.kid.is_none() || k.kid.as_deref() == kid))
        .peekable();
    if candidates.peek().is_none() {
        return Err(Refusal::UnknownSigningKey);
    }
    if !candidates.any(|k| k.key.verify(signed, &signature)) {
        return Err(Refusal::InvalidTokenSignature);
    }

    // Only a token with a good signature gets its claims judged.
    let exp = claims.get("exp").and_then(Value::as_u64).ok_or(Refusal::TokenExpired)?;
    let nbf = claims.get("nbf").and_then(Value::as_u64);
    let audience_ok = match claims.get("aud") {
        Some(Value::String(a)) => provider.audiences.iter().any(|x| x == a),
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).any(|a| provider.audiences.iter().any(|x| x == a)),
        _ => false,
    };
    let verified = VerifiedToken {
        principal: Principal {
            user: Some(
                header_safe(claim_string(&claims, &provider.claims.user))
                    .ok_or_else(|| Refusal::MissingTokenClaim(provider.claims.user.clone()))?,
            ),
            team: provider.claims.team.as_deref().and_then(|c| header_safe(claim_string(&claims, c))),
            app: provider.claims.app.as_deref().and_then(|c| header_safe(claim_string(&claims, c))),
        },
        provider: provider.name.clone(),
        exp,
        nbf,
        skew: provider.skew,
    };
    verified.check_time(now)?;
    if !audience_ok {
        return Err(Refusal::InvalidTokenAudience);
    }
    Ok(verified)
}

/// A bounded cache of verified tokens keyed by the token's SHA-256, valid until the token's
/// `exp`. It belongs to one policy: clear it when the policy changes (keys may have rotated).
#[derive(Debug)]
pub struct TokenCache {
    entries: HashMap<[u8; 32], VerifiedToken>,
    capacity: usize,
}

impl TokenCache {
    /// A cache holding at most `capacity` tokens.
    pub fn new(capacity: usize) -> Self {
        Self { entries: HashMap::new(), capacity }
    }

    /// Verifies `token`, from the cache when it was verified before and is still in its window.
    pub fn verify(&mut self, providers: &[CompiledProvider], token: &str, now: u64) -> Result<VerifiedToken, Refusal> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(hit) = self.entries.get(&key) {
            return match hit.check_time(now) {
                Ok(()) => Ok(hit.clone()),
                Err(e) => {
                    self.entries.remove(&key);
                    Err(e)
                }
            };
        }
        let verified = verify(providers, token, now)?;
        if self.entries.len() >= self.capacity {
            self.entries.retain(|_, v| v.check_time(now).is_ok());
            if self.entries.len() >= self.capacity {
                // Bounded memory beats a perfect hit rate; a flood of distinct tokens empties it.
                self.entries.clear();
            }
        }
        if self.capacity > 0 {
            self.entries.insert(key, verified.clone());
        }
        Ok(verified)
    }

    /// Drops every entry (call when the policy changes).
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// How many tokens are cached.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
