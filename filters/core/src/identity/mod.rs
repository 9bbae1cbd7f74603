//! Identity: who the caller is, by API key, JWT or mesh (SPIFFE) identity, combined as the
//! route's policy says.

pub mod apikey;
pub mod jwt;
pub mod spiffe;

#[cfg(test)]
mod jwt_tests;

use crate::policy::{AuthMethod, CompiledPolicy, Principal, RoutePolicy};
use crate::refusal::Refusal;
use jwt::TokenCache;

/// The credentials a request presented, as read from headers and the connection.
#[derive(Debug, Default, Clone, Copy)]
pub struct Credentials<'a> {
    /// The value after `Authorization: Bearer `.
    pub bearer: Option<&'a str>,
    /// The `x-api-key` header.
    pub x_api_key: Option<&'a str>,
    /// The downstream peer certificate's URI SAN (SPIFFE id), when the connection is mTLS.
    pub peer_uri_san: Option<&'a str>,
}

/// A caller that passed identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Who the caller is.
    pub principal: Principal,
    /// The methods that established it, in policy order.
    pub methods: Vec<AuthMethod>,
    /// The API key id, when an API key was one of the methods.
    pub key_id: Option<String>,
}

struct Established {
    principal: Principal,
    key_id: Option<String>,
}

fn try_method(
    policy: &CompiledPolicy,
    cache: &mut TokenCache,
    method: AuthMethod,
    creds: &Credentials<'_>,
    now: u64,
) -> Result<Established, Refusal> {
    match method {
        AuthMethod::ApiKey => {
            // An Anthropic-style x-api-key wins; otherwise a bearer that is not JWT-shaped.
            let presented = creds.x_api_key.or(creds.bearer.filter(|b| !jwt::looks_like_jwt(b))).ok_or(Refusal::MissingCredentials)?;
            let key = apikey::authenticate(&policy.keys, presented, now)?;
            Ok(Established { principal: key.principal.clone(), key_id: Some(key.id.clone()) })
        }
        AuthMethod::Jwt => {
            let token = creds.bearer.filter(|b| jwt::looks_like_jwt(b)).ok_or(Refusal::MissingCredentials)?;
            let verified = cache.verify(&policy.jwt, token, now)?;
            Ok(Established { principal: verified.principal, key_id: None })
        }
        AuthMethod::Mesh => {
            let principal = spiffe::authenticate(&policy.spiffe, creds.peer_uri_san)?;
            Ok(Established { principal: principal.clone(), key_id: None })
        }
    }
}

fn merge(into: &mut Principal, from: Principal) {
    // The first method that names a field wins: in [mesh, api_key], the mesh says which app and
    // the key says which user.
    into.user = into.user.take().or(from.user);
    into.team = into.team.take().or(from.team);
    into.app = into.app.take().or(from.app);
}

/// Resolves the caller's identity under `route`: the first alternative whose methods all succeed
/// wins. When none does, the refusal names the most specific failure (a bad credential beats a
/// missing one), so a caller with a revoked key hears "revoked", not "missing".
pub fn resolve(
    policy: &CompiledPolicy,
    cache: &mut TokenCache,
    route: &RoutePolicy,
    creds: &Credentials<'_>,
    now: u64,
) -> Result<Identity, Refusal> {
    let mut outcomes: Vec<(AuthMethod, Result<Established, Refusal>)> = Vec::new();
    let mut first_failure: Option<Refusal> = None;
    for alternative in &route.accept {
        let mut identity = Identity { principal: Principal::default(), methods: Vec::new(), key_id: None };
        let mut failed = false;
        for &method in alternative {
            // Each method is tried once per request even if several alternatives name it.
            if !outcomes.iter().any(|(m, _)| *m == method) {
                outcomes.push((method, try_method(policy, cache, method, creds, now)));
            }
            let Some((_, outcome)) = outcomes.iter().find(|(m, _)| *m == method) else { continue };
            match outcome {
                Ok(est) => {
                    merge(&mut identity.principal, est.principal.clone());
                    identity.key_id = identity.key_id.or(est.key_id.clone());
                    identity.methods.push(method);
                }
                Err(refusal) => {
                    let specific = !matches!(refusal, Refusal::MissingCredentials | Refusal::MeshIdentityMissing);
                    let replace = match &first_failure {
                        None => true,
                        Some(prev) => specific && matches!(prev, Refusal::MissingCredentials | Refusal::MeshIdentityMissing),
                    };
                    if replace {
                        first_failure = Some(refusal.clone());
                    }
                    failed = true;
                    break;
                }
            }
        }
        if !failed {
            return Ok(identity);
        }
    }
    Err(first_failure.unwrap_or(Refusal::MissingCredentials))
}
