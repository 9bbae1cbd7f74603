//! Test fixtures: signing keys, their JWKS, and token minting.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rsa::signature::{SignatureEncoding, Signer};
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};
use sha2::Sha256;
use std::sync::OnceLock;

/// A signing key of each algorithm.
pub enum Signer_ {
    Rs(Box<rsa::pkcs1v15::SigningKey<Sha256>>, rsa::RsaPublicKey),
    Es(p256::ecdsa::SigningKey),
    Ed(ed25519_dalek::SigningKey),
}

pub struct TestKey {
    pub kid: String,
    pub signer: Signer_,
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

impl TestKey {
    pub fn alg(&self) -> &'static str {
        match self.signer {
            Signer_::Rs(..) => "RS256",
            Signer_::Es(_) => "ES256",
            Signer_::Ed(_) => "EdDSA",
        }
    }

    pub fn jwk(&self) -> Value {
        match &self.signer {
            Signer_::Rs(_, public) => {
                json!({"kty":"RSA","kid":self.kid,"alg":"RS256","n":b64(&public.n().to_bytes_be()),"e":b64(&public.e().to_bytes_be())})
            }
            Signer_::Es(k) => {
                let point = k.verifying_key().to_encoded_point(false);
                json!({"kty":"EC","kid":self.kid,"crv":"P-256","x":b64(point.x().unwrap()),"y":b64(point.y().unwrap())})
            }
            Signer_::Ed(k) => json!({"kty":"OKP","kid":self.kid,"crv":"Ed25519","x":b64(k.verifying_key().as_bytes())}),
        }
    }

    pub fn sign(&self, claims: &Value) -> String {
        let header = json!({"alg": self.alg(), "typ": "JWT", "kid": self.kid});
        let signing_input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
        let sig = match &self.signer {
            Signer_::Rs(k, _) => k.sign(signing_input.as_bytes()).to_vec(),
            Signer_::Es(k) => {
                let s: p256::ecdsa::Signature = k.sign(signing_input.as_bytes());
                s.to_bytes().to_vec()
            }
            Signer_::Ed(k) => k.sign(signing_input.as_bytes()).to_bytes().to_vec(),
        };
        format!("{signing_input}.{}", b64(&sig))
    }
}

/// One key of each algorithm, with the kids the test JWKS uses.
fn generate() -> [TestKey; 3] {
    let mut rng = rand::thread_rng();
    let rsa_key = rsa::RsaPrivateKey::new(&mut rng, 2048).unwrap();
    let public = rsa_key.to_public_key();
    [
        TestKey { kid: "rs".into(), signer: Signer_::Rs(Box::new(rsa::pkcs1v15::SigningKey::new(rsa_key)), public) },
        TestKey { kid: "es".into(), signer: Signer_::Es(p256::ecdsa::SigningKey::random(&mut rng)) },
        TestKey { kid: "ed".into(), signer: Signer_::Ed(ed25519_dalek::SigningKey::generate(&mut rng)) },
    ]
}

/// The trusted keys, generated once per test binary: RSA generation is slow.
pub fn keys() -> &'static [TestKey; 3] {
    static KEYS: OnceLock<[TestKey; 3]> = OnceLock::new();
    KEYS.get_or_init(generate)
}

/// A second, untrusted key of each algorithm with the same kids (for bad-signature tests).
pub fn rogue_keys() -> &'static [TestKey; 3] {
    static KEYS: OnceLock<[TestKey; 3]> = OnceLock::new();
    KEYS.get_or_init(generate)
}

pub const NOW: u64 = 1_800_000_000;
pub const ISSUER: &str = "https://idp.example.com";

/// The JWKS of `keys()`.
pub fn jwks() -> Value {
    json!({"keys": keys().iter().map(TestKey::jwk).collect::<Vec<_>>()})
}

/// Claims valid at NOW for the test provider.
pub fn claims() -> Value {
    json!({"iss": ISSUER, "aud": "cordon", "sub": "alice", "groups": ["research", "all"], "exp": NOW + 600, "iat": NOW - 10})
}

/// A policy JSON with API keys, a JWT provider, SPIFFE mappings, routes and model rules.
pub fn policy_json() -> Value {
    use crate::identity::apikey::digest;
    use crate::policy::compile::hex;
    json!({
        "identity": {
            "api_keys": [
                {"id": "k-alice", "sha256": hex(&digest("sk-alice")), "principal": {"user": "alice", "team": "research", "app": "notebook"}},
                {"id": "k-bob", "sha256": hex(&digest("sk-bob")), "principal": {"user": "bob", "team": "support"}, "status": "revoked"},
                {"id": "k-carol", "sha256": hex(&digest("sk-carol")), "principal": {"user": "carol", "team": "support"}, "expires_at": NOW - 1},
                {"id": "k-svc", "sha256": hex(&digest("sk-svc")), "principal": {"user": "svc", "team": "support"}}
            ],
            "jwt_providers": [
                {"name": "corp", "issuer": ISSUER, "audiences": ["cordon"], "jwks": jwks(), "clock_skew_secs": 30, "claims": {"user": "sub", "team": "groups"}}
            ],
            "spiffe": [
                {"id": "spiffe://cluster.local/ns/prod/sa/*", "principal": {"app": "prod-app", "team": "support"}}
            ]
        },
        "routes": [
            {"name": "mesh-only", "path_prefix": "/internal/", "accept": [["mesh", "api_key"]]},
            {"name": "openai", "path_prefix": "/v1/", "accept": [["api_key"], ["jwt"], ["mesh"]]}
        ],
        "models": [
            {"match": {"team": "research"}, "allow": ["gpt-4o*", "claude-*"]},
            {"match": {"team": "support"}, "allow": ["gpt-4o-mini"]}
        ],
        "upstreams": [
            {"cluster": "openai", "secret_env": "OPENAI_API_KEY"},
            {"cluster": "anthropic", "secret_env": "ANTHROPIC_API_KEY", "header": "x-api-key", "prefix": ""}
        ]
    })
}

/// The compiled test policy with OPENAI_API_KEY present and ANTHROPIC_API_KEY missing.
pub fn compiled() -> crate::policy::CompiledPolicy {
    let p = crate::policy::Policy::from_json(policy_json().to_string().as_bytes()).unwrap();
    crate::policy::CompiledPolicy::compile(&p, &|name: &str| (name == "OPENAI_API_KEY").then(|| "sk-provider-secret".to_string())).unwrap()
}
