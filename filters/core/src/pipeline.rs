//! The request pipeline as the filter runs it: a verdict on the request head (route, identity,
//! header plan, what to read next), then on the body (model access), then on the response.

use crate::access;
use crate::body;
use crate::encoding;
use crate::headers::{self, HeaderPlan};
use crate::identity::{self, Credentials, Identity, jwt::TokenCache};
use crate::policy::{CompiledPolicy, RoutePolicy};
use crate::refusal::Refusal;

/// The parts of a request head the decisions need.
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a> {
    /// `:method`.
    pub method: &'a str,
    /// `:path`, possibly with a query string.
    pub path: &'a str,
    /// All request headers, names lower-case as Envoy delivers them; borrowed, so an adapter
    /// can lend the host's header map without copying it.
    pub headers: &'a [(&'a str, &'a str)],
    /// The downstream mTLS peer's URI SAN, if any.
    pub peer_uri_san: Option<&'a str>,
    /// The Envoy cluster the route selected, if known.
    pub cluster: Option<&'a str>,
    /// Unix time in seconds.
    pub now: u64,
}

impl<'a> RequestHead<'a> {
    fn header(&self, name: &str) -> Option<&'a str> {
        headers::first(self.headers, name)
    }
}

/// What the filter must read of the request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyStage {
    /// Nothing: the request carries no model to check.
    None,
    /// Buffer the body up to `limit` bytes and check its `model`.
    ReadModel {
        /// Largest body accepted.
        limit: u64,
    },
}

/// What the filter must do with the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseStage {
    /// Pass it through untouched.
    PassThrough,
    /// Buffer the model list (up to `limit` bytes) and drop models the caller may not use.
    FilterModelList {
        /// Largest list accepted.
        limit: u64,
    },
}

/// A request that passed the head checks.
#[derive(Debug, PartialEq, Eq)]
pub struct Admitted {
    /// Who the caller is.
    pub identity: Identity,
    /// The policy route that governs the request.
    pub route: String,
    /// Header changes to apply before the request goes upstream.
    pub headers: HeaderPlan,
    /// What to do with the request body.
    pub body: BodyStage,
    /// What to do with the response.
    pub response: ResponseStage,
}

/// The verdict on a request head.
#[derive(Debug, PartialEq, Eq)]
pub enum HeadVerdict {
    /// Send this error to the client.
    Refuse(Refusal),
    /// Continue under these terms.
    Admit(Box<Admitted>),
}

fn route_for<'p>(policy: &'p CompiledPolicy, path: &str) -> Option<&'p RoutePolicy> {
    policy.routes.iter().find(|r| path.starts_with(&r.path_prefix))
}

fn bearer<'a>(head: &RequestHead<'a>) -> Option<&'a str> {
    let value = head.header("authorization")?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// Judges a request head: route, identity, upstream credential, and what to read next.
pub fn evaluate_head(policy: &CompiledPolicy, cache: &mut TokenCache, head: &RequestHead<'_>) -> HeadVerdict {
    match admit_head(policy, cache, head) {
        Ok(admitted) => HeadVerdict::Admit(Box::new(admitted)),
        Err(refusal) => HeadVerdict::Refuse(refusal),
    }
}

fn admit_head(policy: &CompiledPolicy, cache: &mut TokenCache, head: &RequestHead<'_>) -> Result<Admitted, Refusal> {
    let path = head.path.split(['?', '#']).next().unwrap_or_default();
    let route = route_for(policy, path).ok_or(Refusal::RouteNotGoverned)?;
    let creds = Credentials { bearer: bearer(head), x_api_key: head.header("x-api-key").map(str::trim), peer_uri_san: head.peer_uri_san };
    let identity = identity::resolve(policy, cache, route, &creds, head.now)?;

    let credential = match head.cluster.and_then(|c| policy.upstream(c)) {
        Some(secret) => Some((secret, secret.value().ok_or(Refusal::UpstreamCredentialUnavailable)?)),
        None => None,
    };
    let mut plan = headers::plan(head.headers, &identity, credential, policy.digest());

    let limits = policy.limits();
    let (body, response) = if head.method.eq_ignore_ascii_case("GET") && path == "/v1/models" {
        // The list is rewritten, so it must arrive uncompressed.
        plan.set.push(("accept-encoding".into(), "identity".into()));
        (BodyStage::None, ResponseStage::FilterModelList { limit: limits.max_model_list_bytes })
    } else if let Some(model) = path.strip_prefix("/v1/models/").filter(|_| head.method.eq_ignore_ascii_case("GET")) {
        // The upstream decodes `%XX`: judge the name it will see.
        access::authorize(policy, &identity.principal, &percent_decode(model)?)?;
        (BodyStage::None, ResponseStage::PassThrough)
    } else if head.method.eq_ignore_ascii_case("POST") {
        encoding::require_identity(head.header("content-encoding"))?;
        if let Some(len) = head.header("content-length").and_then(|v| v.trim().parse::<u64>().ok()) {
            body::check_size(len, limits.max_request_body_bytes)?;
        }
        (BodyStage::ReadModel { limit: limits.max_request_body_bytes }, ResponseStage::PassThrough)
    } else {
        (BodyStage::None, ResponseStage::PassThrough)
    };
    Ok(Admitted { identity, route: route.name.clone(), headers: plan, body, response })
}

/// Decodes `%XX` escapes of a path segment; a malformed escape or invalid UTF-8 is an invalid
/// model name (refused, never passed on for the upstream to interpret).
fn percent_decode(segment: &str) -> Result<String, Refusal> {
    let bad = |why: &str| Refusal::InvalidModelName(why.to_owned());
    let mut out = Vec::with_capacity(segment.len());
    let mut bytes = segment.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex = [bytes.next(), bytes.next()];
            let digit = |c: Option<u8>| c.and_then(|c| char::from(c).to_digit(16));
            match (digit(hex[0]), digit(hex[1])) {
                (Some(h), Some(l)) => out.push(((h << 4) | l) as u8),
                _ => return Err(bad("a malformed percent-escape in the path")),
            }
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).map_err(|_| bad("the decoded path segment is not UTF-8"))
}

/// Judges the complete request body of an admitted request: the model it names must be allowed.
pub fn evaluate_body(policy: &CompiledPolicy, admitted: &Admitted, body_bytes: &[u8]) -> Result<String, Refusal> {
    if let BodyStage::ReadModel { limit } = admitted.body {
        body::check_size(body_bytes.len() as u64, limit)?;
    }
    let model = body::model_of(body_bytes)?;
    access::authorize(policy, &admitted.identity.principal, &model)?;
    Ok(model)
}

#[cfg(test)]
mod tests;
