//! Header hygiene: what the filter strips from the client's request and what it sets for the
//! upstream. Clients must never be able to assert an identity by sending `x-cordon-*` headers,
//! and never reach the provider with their own (Cordon) credentials.

use crate::identity::Identity;
use crate::policy::UpstreamSecret;

/// Prefix of the headers that carry the resolved principal upstream.
pub const PRINCIPAL_HEADER_PREFIX: &str = "x-cordon-";

/// Header changes to apply to the request before it goes upstream.
#[derive(PartialEq, Eq, Default)]
pub struct HeaderPlan {
    /// Headers to remove (lower-case names).
    pub remove: Vec<String>,
    /// Headers to set, replacing any value.
    pub set: Vec<(String, String)>,
}

impl std::fmt::Debug for HeaderPlan {
    // Values may hold the injected provider credential: show names only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeaderPlan")
            .field("remove", &self.remove)
            .field("set", &self.set.iter().map(|(k, _)| k).collect::<Vec<_>>())
            .finish()
    }
}

/// The plan for an admitted request: strip spoofable and client-credential headers, set the
/// principal headers and the provider credential.
pub fn plan(
    request_headers: &[(&str, &str)],
    identity: &Identity,
    credential: Option<(&UpstreamSecret, &str)>,
    policy_digest: &str,
) -> HeaderPlan {
    // Built by hand rather than with `format!` and a lower-cased copy of every header name:
    // this runs on every request, and natively those allocations were most of its cost.
    let mut remove: Vec<String> = Vec::with_capacity(4);
    for (name, _) in request_headers {
        if has_principal_prefix(name) {
            remove.push(name.to_ascii_lowercase());
        }
    }
    remove.push("authorization".to_owned());
    remove.push("x-api-key".to_owned());
    remove.sort_unstable();
    remove.dedup();

    let p = &identity.principal;
    let mut set = Vec::with_capacity(7);
    for (name, value) in [("user", &p.user), ("team", &p.team), ("app", &p.app), ("key-id", &identity.key_id)] {
        if let Some(v) = value {
            set.push((principal_header(name), v.clone()));
        }
    }
    let mut methods = String::new();
    for (i, m) in identity.methods.iter().enumerate() {
        if i > 0 {
            methods.push(',');
        }
        methods.push_str(m.as_str());
    }
    set.push((principal_header("auth"), methods));
    set.push((principal_header("policy"), policy_digest.chars().take(16).collect()));
    if let Some((secret, value)) = credential {
        set.push((secret.header.clone(), value.to_owned()));
    }
    HeaderPlan { remove, set }
}

/// Whether `name` starts with `x-cordon-`, in any case.
fn has_principal_prefix(name: &str) -> bool {
    name.as_bytes().get(..PRINCIPAL_HEADER_PREFIX.len()).is_some_and(|p| p.eq_ignore_ascii_case(PRINCIPAL_HEADER_PREFIX.as_bytes()))
}

/// `x-cordon-<suffix>`, allocated once at its final size.
fn principal_header(suffix: &str) -> String {
    let mut name = String::with_capacity(PRINCIPAL_HEADER_PREFIX.len() + suffix.len());
    name.push_str(PRINCIPAL_HEADER_PREFIX);
    name.push_str(suffix);
    name
}

/// The first value of header `name` (any case), as Envoy answers a single-header read.
pub fn first<'a, K: AsRef<str>, V: AsRef<str>>(headers: &'a [(K, V)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k.as_ref().eq_ignore_ascii_case(name)).map(|(_, v)| v.as_ref())
}

/// The first value of header `name` once `plan` is applied to `request_headers`, as
/// [`rewrite`] leaves it: a set header answers its new value, a removed one nothing. For an
/// adapter that applies the plan in place and hands the next role in the same context what it
/// would read from the host, without reading it back.
pub fn first_after<'a>(request_headers: &'a [(&'a str, &'a str)], plan: &'a HeaderPlan, name: &str) -> Option<&'a str> {
    if let Some((_, v)) = plan.set.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)) {
        return Some(v);
    }
    if plan.remove.iter().any(|r| r.eq_ignore_ascii_case(name)) {
        return None;
    }
    first(request_headers, name)
}

/// The request's header list after `plan`: removed and replaced names dropped (any case), set
/// headers appended. The adapter writes it back in one host call instead of one per header,
/// because each host call crosses the wasm boundary.
pub fn rewrite(request_headers: &[(String, String)], plan: &HeaderPlan) -> Vec<(String, String)> {
    let dropped = |name: &str| plan.remove.iter().chain(plan.set.iter().map(|(k, _)| k)).any(|r| r.eq_ignore_ascii_case(name));
    let mut out: Vec<(String, String)> = request_headers.iter().filter(|(k, _)| !dropped(k)).cloned().collect();
    out.extend(plan.set.iter().cloned());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_answers_as_envoy_does_any_case_first_value() {
        let h = [("Content-Encoding", "gzip"), ("x-a", "1"), ("x-A", "2")];
        assert_eq!(first(&h, "content-encoding"), Some("gzip"));
        assert_eq!(first(&h, "X-A"), Some("1"));
        assert_eq!(first(&h, ":path"), None);
    }

    #[test]
    fn first_after_answers_what_the_rewritten_list_answers() {
        let h = [(":path", "/v1/chat"), ("content-encoding", "gzip"), ("x-api-key", "k"), ("x-cordon-user", "root")];
        let plan = HeaderPlan {
            remove: vec!["x-api-key".into(), "content-encoding".into()],
            set: vec![("x-cordon-user".into(), "ada".into()), ("authorization".into(), "Bearer up".into())],
        };
        let owned: Vec<(String, String)> = h.iter().map(|&(k, v)| (k.to_owned(), v.to_owned())).collect();
        let rewritten = rewrite(&owned, &plan);
        for name in [":path", "content-encoding", "x-api-key", "x-cordon-user", "authorization", "accept"] {
            assert_eq!(first_after(&h, &plan, name), first(&rewritten, name), "{name}");
        }
    }

    #[test]
    fn plan_strips_principal_headers_in_any_case_and_sets_the_resolved_ones() {
        use crate::policy::{AuthMethod, Principal};
        let headers = [
            ("X-Cordon-User", "root"),
            ("x-cordon-team", "ops"),
            ("x-cordon", "not a principal header"),
            ("X-CORDON-USER", "again"),
            ("accept", "*/*"),
        ];
        let identity = Identity {
            principal: Principal { user: Some("alice".into()), team: None, app: Some("nb".into()) },
            methods: vec![AuthMethod::ApiKey, AuthMethod::Mesh],
            key_id: Some("k-1".into()),
        };
        let plan = plan(&headers, &identity, None, "0123456789abcdef0123");
        assert_eq!(plan.remove, ["authorization", "x-api-key", "x-cordon-team", "x-cordon-user"]);
        let set: Vec<(&str, &str)> = plan.set.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            set,
            [
                ("x-cordon-user", "alice"),
                ("x-cordon-app", "nb"),
                ("x-cordon-key-id", "k-1"),
                ("x-cordon-auth", "api_key,mesh"),
                ("x-cordon-policy", "0123456789abcdef"),
            ]
        );
    }

    #[test]
    fn rewrite_drops_removed_and_replaced_headers_and_keeps_the_rest_in_order() {
        let headers: Vec<(String, String)> = [
            (":method", "POST"),
            (":path", "/v1/x"),
            ("Authorization", "Bearer k"),
            ("x-cordon-user", "root"),
            ("accept", "*/*"),
            ("x-trace", "1"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let plan = HeaderPlan {
            remove: vec!["authorization".into(), "x-cordon-user".into()],
            set: vec![("x-cordon-user".into(), "alice".into()), ("accept".into(), "application/json".into())],
        };
        let out = rewrite(&headers, &plan);
        let names: Vec<&str> = out.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, [":method", ":path", "x-trace", "x-cordon-user", "accept"]);
        assert_eq!(out[3].1, "alice");
        assert_eq!(out[4].1, "application/json");
    }
}
