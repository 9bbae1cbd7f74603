use super::*;
use crate::identity::jwt::TokenCache;
use crate::testkit::{NOW, claims, compiled, keys};

fn hdrs<'a>(pairs: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    pairs.to_vec()
}

fn head<'a>(method: &'a str, path: &'a str, headers: &'a [(&'a str, &'a str)]) -> RequestHead<'a> {
    RequestHead { method, path, headers, peer_uri_san: None, cluster: Some("openai"), now: NOW }
}

fn admit(policy: &CompiledPolicy, h: &RequestHead<'_>) -> Result<Admitted, Refusal> {
    match evaluate_head(policy, &mut TokenCache::new(16), h) {
        HeadVerdict::Admit(a) => Ok(*a),
        HeadVerdict::Refuse(r) => Err(r),
    }
}

fn set<'a>(a: &'a Admitted, name: &str) -> Option<&'a str> {
    a.headers.set.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

#[test]
fn api_key_by_bearer_and_x_api_key() {
    let p = compiled();
    for h in [hdrs(&[("authorization", "Bearer sk-alice")]), hdrs(&[("x-api-key", "sk-alice")])] {
        let a = admit(&p, &head("POST", "/v1/chat/completions", &h)).unwrap();
        assert_eq!(set(&a, "x-cordon-user"), Some("alice"));
        assert_eq!(set(&a, "x-cordon-team"), Some("research"));
        assert_eq!(set(&a, "x-cordon-key-id"), Some("k-alice"));
        assert_eq!(set(&a, "x-cordon-auth"), Some("api_key"));
        assert_eq!(a.body, BodyStage::ReadModel { limit: 1024 * 1024 });
    }
}

#[test]
fn key_refusals() {
    let p = compiled();
    let cases = [
        (hdrs(&[]), "missing_credentials"),
        (hdrs(&[("authorization", "Bearer sk-unknown")]), "invalid_api_key"),
        (hdrs(&[("authorization", "Bearer sk-bob")]), "revoked_api_key"),
        (hdrs(&[("authorization", "Bearer sk-carol")]), "expired_api_key"),
        (hdrs(&[("authorization", "Basic c2stYWxpY2U=")]), "missing_credentials"),
    ];
    for (h, code) in cases {
        let r = admit(&p, &head("POST", "/v1/chat/completions", &h)).unwrap_err();
        assert_eq!(r.code(), code);
        assert_eq!(r.status(), 401);
    }
}

#[test]
fn jwt_route() {
    let p = compiled();
    let token = keys()[0].sign(&claims());
    let bearer = format!("Bearer {token}");
    let h = hdrs(&[("authorization", &bearer)]);
    let a = admit(&p, &head("POST", "/v1/chat/completions", &h)).unwrap();
    assert_eq!(set(&a, "x-cordon-user"), Some("alice"));
    assert_eq!(set(&a, "x-cordon-auth"), Some("jwt"));
    let mut c = claims();
    c["exp"] = serde_json::json!(NOW - 1000);
    let bearer = format!("Bearer {}", keys()[0].sign(&c));
    let h = hdrs(&[("authorization", &bearer)]);
    assert_eq!(admit(&p, &head("POST", "/v1/chat/completions", &h)).unwrap_err(), Refusal::TokenExpired);
}

#[test]
fn mesh_and_combinations() {
    let p = compiled();
    let none = hdrs(&[]);
    let mut h = head("GET", "/v1/models", &none);
    h.peer_uri_san = Some("spiffe://cluster.local/ns/prod/sa/web");
    let a = admit(&p, &h).unwrap();
    assert_eq!(set(&a, "x-cordon-app"), Some("prod-app"));
    assert_eq!(set(&a, "x-cordon-auth"), Some("mesh"));
    h.peer_uri_san = Some("spiffe://cluster.local/ns/dev/sa/web");
    assert_eq!(admit(&p, &h).unwrap_err(), Refusal::UnknownMeshIdentity);

    // /internal/ needs mesh AND an API key; the mesh names the app, the key names the user.
    let key = hdrs(&[("x-api-key", "sk-svc")]);
    let mut h = head("POST", "/internal/chat", &key);
    assert_eq!(admit(&p, &h).unwrap_err(), Refusal::MeshIdentityMissing);
    h.peer_uri_san = Some("spiffe://cluster.local/ns/prod/sa/web");
    let a = admit(&p, &h).unwrap();
    assert_eq!(set(&a, "x-cordon-app"), Some("prod-app"));
    assert_eq!(set(&a, "x-cordon-user"), Some("svc"));
    assert_eq!(set(&a, "x-cordon-auth"), Some("mesh,api_key"));
    let bad = hdrs(&[("x-api-key", "sk-bob")]);
    let mut h = head("POST", "/internal/chat", &bad);
    h.peer_uri_san = Some("spiffe://cluster.local/ns/prod/sa/web");
    assert_eq!(admit(&p, &h).unwrap_err(), Refusal::RevokedApiKey);
}

#[test]
fn specific_failure_beats_missing() {
    // Route /v1/ accepts api_key | jwt | mesh. A revoked key must say revoked, not "missing jwt".
    let p = compiled();
    let h = hdrs(&[("authorization", "Bearer sk-bob")]);
    assert_eq!(admit(&p, &head("POST", "/v1/x", &h)).unwrap_err(), Refusal::RevokedApiKey);
}

#[test]
fn spoofed_principal_headers_and_client_credentials_are_stripped() {
    let p = compiled();
    let h =
        hdrs(&[("authorization", "Bearer sk-alice"), ("x-cordon-user", "root"), ("X-Cordon-Team", "admins"), ("x-cordon-anything", "1")]);
    let a = admit(&p, &head("POST", "/v1/chat/completions", &h)).unwrap();
    for name in ["authorization", "x-api-key", "x-cordon-user", "x-cordon-team", "x-cordon-anything"] {
        assert!(a.headers.remove.iter().any(|r| r == name), "{name} removed");
    }
    assert_eq!(set(&a, "x-cordon-user"), Some("alice"));
    assert_eq!(set(&a, "authorization"), Some("Bearer sk-provider-secret"));
    assert!(!format!("{:?}", a.headers).contains("sk-provider-secret"), "Debug never shows the credential");
}

#[test]
fn missing_upstream_secret_fails_closed() {
    let p = compiled();
    let h = hdrs(&[("authorization", "Bearer sk-alice")]);
    let mut rh = head("POST", "/v1/messages", &h);
    rh.cluster = Some("anthropic");
    assert_eq!(admit(&p, &rh).unwrap_err(), Refusal::UpstreamCredentialUnavailable);
    assert_eq!(p.missing_secrets(), vec!["ANTHROPIC_API_KEY"]);
    rh.cluster = Some("internal-llm");
    assert!(admit(&p, &rh).is_ok(), "clusters without a configured credential get none");
}

#[test]
fn ungoverned_path_is_refused() {
    let p = compiled();
    let h = hdrs(&[("authorization", "Bearer sk-alice")]);
    assert_eq!(admit(&p, &head("GET", "/admin", &h)).unwrap_err(), Refusal::RouteNotGoverned);
}

#[test]
fn body_stage_model_access() {
    let p = compiled();
    let h = hdrs(&[("authorization", "Bearer sk-alice")]);
    let a = admit(&p, &head("POST", "/v1/chat/completions", &h)).unwrap();
    assert_eq!(evaluate_body(&p, &a, br#"{"model":"gpt-4o-mini","messages":[]}"#).unwrap(), "gpt-4o-mini");
    assert_eq!(evaluate_body(&p, &a, br#"{"model":"o1","messages":[]}"#).unwrap_err().status(), 403);
    assert_eq!(evaluate_body(&p, &a, br#"{"model":"#).unwrap_err().status(), 400);
    assert_eq!(evaluate_body(&p, &a, br#"{}"#).unwrap_err().code(), "missing_model");
    assert_eq!(evaluate_body(&p, &a, br#"{"model":"gpt-4o-mini\u0000admin"}"#).unwrap_err().code(), "invalid_model_name");
    let big = format!(r#"{{"model":"gpt-4o","messages":[{{"role":"user","content":"{}"}}]}}"#, "x".repeat(1024 * 1024));
    assert_eq!(evaluate_body(&p, &a, big.as_bytes()).unwrap_err().status(), 413);
}

#[test]
fn head_checks_declared_length_and_encoding() {
    let p = compiled();
    let h = hdrs(&[("authorization", "Bearer sk-alice"), ("content-length", "99999999")]);
    assert_eq!(admit(&p, &head("POST", "/v1/chat/completions", &h)).unwrap_err().status(), 413);
    let h = hdrs(&[("authorization", "Bearer sk-alice"), ("content-encoding", "gzip")]);
    assert_eq!(admit(&p, &head("POST", "/v1/chat/completions", &h)).unwrap_err().status(), 415);
}

#[test]
fn model_list_and_retrieve() {
    let p = compiled();
    let h = hdrs(&[("authorization", "Bearer sk-alice")]);
    let a = admit(&p, &head("GET", "/v1/models?limit=5", &h)).unwrap();
    assert_eq!(a.response, ResponseStage::FilterModelList { limit: 1024 * 1024 });
    assert_eq!(set(&a, "accept-encoding"), Some("identity"));
    assert!(admit(&p, &head("GET", "/v1/models/gpt-4o", &h)).is_ok());
    assert_eq!(admit(&p, &head("GET", "/v1/models/o1", &h)).unwrap_err().code(), "model_not_allowed");
    assert_eq!(admit(&p, &head("GET", "/v1/models/gpt-4o%00admin", &h)).unwrap_err().code(), "invalid_model_name");
}
