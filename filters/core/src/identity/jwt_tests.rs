use super::jwt::{TokenCache, verify};
use crate::refusal::Refusal;
use crate::testkit::{self, NOW, claims, compiled, keys, rogue_keys};
use serde_json::json;

fn token_with(f: impl Fn(&mut serde_json::Value), key: usize) -> String {
    let mut c = claims();
    f(&mut c);
    keys()[key].sign(&c)
}

#[test]
fn every_algorithm_verifies_and_maps_claims() {
    let policy = compiled();
    for (i, key) in keys().iter().enumerate() {
        let v = verify(&policy.jwt, &token_with(|_| {}, i), NOW).unwrap_or_else(|e| panic!("{}: {e:?}", key.alg()));
        assert_eq!(v.principal.user.as_deref(), Some("alice"));
        assert_eq!(v.principal.team.as_deref(), Some("research"), "array claim yields its first string");
        assert_eq!(v.provider, "corp");
    }
}

#[test]
fn bad_signature_for_every_algorithm() {
    let policy = compiled();
    for key in rogue_keys() {
        assert_eq!(verify(&policy.jwt, &key.sign(&claims()), NOW), Err(Refusal::InvalidTokenSignature), "{}", key.alg());
    }
}

#[test]
fn tampered_claims_fail_the_signature() {
    let policy = compiled();
    let token = token_with(|_| {}, 2);
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut c = claims();
    c["sub"] = json!("mallory");
    parts[1] = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, c.to_string());
    assert_eq!(verify(&policy.jwt, &parts.join("."), NOW), Err(Refusal::InvalidTokenSignature));
}

#[test]
fn time_window_with_skew() {
    let policy = compiled();
    let expired = token_with(|c| c["exp"] = json!(NOW - 31), 1);
    assert_eq!(verify(&policy.jwt, &expired, NOW), Err(Refusal::TokenExpired));
    let within_skew = token_with(|c| c["exp"] = json!(NOW - 29), 1);
    assert!(verify(&policy.jwt, &within_skew, NOW).is_ok());
    let future = token_with(|c| c["nbf"] = json!(NOW + 31), 1);
    assert_eq!(verify(&policy.jwt, &future, NOW), Err(Refusal::TokenNotYetValid));
    let no_exp = token_with(
        |c| {
            c.as_object_mut().unwrap().remove("exp");
        },
        1,
    );
    assert_eq!(verify(&policy.jwt, &no_exp, NOW), Err(Refusal::TokenExpired), "tokens without exp are refused");
}

#[test]
fn audience_and_issuer() {
    let policy = compiled();
    assert_eq!(verify(&policy.jwt, &token_with(|c| c["aud"] = json!("other"), 2), NOW), Err(Refusal::InvalidTokenAudience));
    assert!(verify(&policy.jwt, &token_with(|c| c["aud"] = json!(["other", "cordon"]), 2), NOW).is_ok());
    assert_eq!(
        verify(
            &policy.jwt,
            &token_with(
                |c| {
                    c.as_object_mut().unwrap().remove("aud");
                },
                2
            ),
            NOW
        ),
        Err(Refusal::InvalidTokenAudience)
    );
    assert_eq!(verify(&policy.jwt, &token_with(|c| c["iss"] = json!("https://evil.example"), 2), NOW), Err(Refusal::InvalidTokenIssuer));
}

#[test]
fn missing_user_claim() {
    let policy = compiled();
    let t = token_with(
        |c| {
            c.as_object_mut().unwrap().remove("sub");
        },
        2,
    );
    assert_eq!(verify(&policy.jwt, &t, NOW), Err(Refusal::MissingTokenClaim("sub".into())));
}

#[test]
fn malformed_and_alg_none() {
    let policy = compiled();
    assert_eq!(verify(&policy.jwt, "a.b", NOW), Err(Refusal::MalformedToken));
    assert_eq!(verify(&policy.jwt, "eyJ!.e30.", NOW), Err(Refusal::MalformedToken));
    let b = |s: &str| base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, s);
    let none = format!("{}.{}.", b(r#"{"alg":"none"}"#), b(&claims().to_string()));
    assert_eq!(verify(&policy.jwt, &none, NOW), Err(Refusal::UnsupportedTokenAlgorithm));
    let hs = format!("{}.{}.c2ln", b(r#"{"alg":"HS256"}"#), b(&claims().to_string()));
    assert_eq!(verify(&policy.jwt, &hs, NOW), Err(Refusal::UnsupportedTokenAlgorithm), "no HMAC: the JWKS is public");
}

#[test]
fn unknown_kid_is_an_unknown_signing_key() {
    let policy = compiled();
    // A key whose kid and algorithm match nothing in the JWKS.
    let mut c = claims();
    c["sub"] = json!("x");
    let token = keys()[1].sign(&c).replacen(
        &base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            json!({"alg":"ES256","typ":"JWT","kid":"es"}).to_string(),
        ),
        &base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            json!({"alg":"ES256","typ":"JWT","kid":"zz"}).to_string(),
        ),
        1,
    );
    assert_eq!(verify(&policy.jwt, &token, NOW), Err(Refusal::UnknownSigningKey));
}

#[test]
fn cache_serves_until_exp_and_is_bounded() {
    let policy = compiled();
    let mut cache = TokenCache::new(2);
    let t = token_with(|c| c["exp"] = json!(NOW + 100), 0);
    assert!(cache.verify(&policy.jwt, &t, NOW).is_ok());
    assert_eq!(cache.len(), 1);
    // Served from the cache, still judged against the clock: expiry is not cached away.
    assert!(cache.verify(&policy.jwt, &t, NOW + 50).is_ok());
    assert_eq!(cache.verify(&policy.jwt, &t, NOW + 131), Err(Refusal::TokenExpired));
    assert_eq!(cache.len(), 0);
    for i in 0..5 {
        let t = token_with(|c| c["jti"] = json!(i), 2);
        cache.verify(&policy.jwt, &t, NOW).unwrap();
        assert!(cache.len() <= 2);
    }
    // Failed verifications are never cached.
    let bad = rogue_keys()[2].sign(&claims());
    cache.clear();
    assert!(cache.verify(&policy.jwt, &bad, NOW).is_err());
    assert!(cache.is_empty());
}

#[test]
fn jwks_validation_names_the_field() {
    let mut p = testkit::policy_json();
    p["identity"]["jwt_providers"][0]["jwks"]["keys"][1]["crv"] = json!("P-384");
    let policy = crate::policy::Policy::from_json(p.to_string().as_bytes()).unwrap();
    let err = crate::policy::CompiledPolicy::compile(&policy, &|_: &str| None).unwrap_err();
    assert_eq!(err.path(), "identity.jwt_providers[0].jwks.keys[1].crv");
}
