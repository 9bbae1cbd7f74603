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
    request_headers: &[(String, String)],
    identity: &Identity,
    credential: Option<(&UpstreamSecret, &str)>,
    policy_digest: &str,
) -> HeaderPlan {
    let mut remove: Vec<String> =
        request_headers.iter().map(|(k, _)| k.to_ascii_lowercase()).filter(|k| k.starts_with(PRINCIPAL_HEADER_PREFIX)).collect();
    remove.extend(["authorization".to_owned(), "x-api-key".to_owned()]);
    remove.sort();
    remove.dedup();

    let p = &identity.principal;
    let mut set = Vec::new();
    for (name, value) in [("user", &p.user), ("team", &p.team), ("app", &p.app), ("key-id", &identity.key_id)] {
        if let Some(v) = value {
            set.push((format!("{PRINCIPAL_HEADER_PREFIX}{name}"), v.clone()));
        }
    }
    let methods: Vec<&str> = identity.methods.iter().map(|m| m.as_str()).collect();
    set.push((format!("{PRINCIPAL_HEADER_PREFIX}auth"), methods.join(",")));
    set.push((format!("{PRINCIPAL_HEADER_PREFIX}policy"), policy_digest.chars().take(16).collect()));
    if let Some((secret, value)) = credential {
        set.push((secret.header.clone(), value.to_owned()));
    }
    HeaderPlan { remove, set }
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
