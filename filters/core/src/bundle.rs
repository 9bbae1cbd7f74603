//! Signed policy bundles from the control plane: verified before anything is applied.
//!
//! This module is the one definition of the bundle contract, used by the filter, the control
//! plane (which signs) and its tests alike: the type URL, the key id, and the signed message
//! [`signed_message`]. The filter holds the public keys in its static configuration. An unsigned,
//! wrongly signed or tampered bundle is refused (NACKed) and the last good policy stays in force.
//! The signed `serial` only grows, so the filter can refuse an old bundle replayed to it (see
//! [`crate::discovery::PolicyStream`]).

use crate::policy::{CompiledPolicy, Policy, PolicyError, SecretSource};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// Type URL of a policy bundle inside a discovery response.
pub const POLICY_TYPE_URL: &str = "type.googleapis.com/cordon.v1.PolicyBundle";

/// Domain-separation prefix of the signed message; names the format version, so a signature over
/// another message format can never verify as this one.
const SIGNED_MESSAGE_PREFIX: &[u8] = b"cordon.policy-bundle.v2\n";

/// The exact bytes a bundle signature covers:
/// `"cordon.policy-bundle.v2\n" || serial (u64 big-endian) || sha256 (32 bytes) || UTF-8(version)`.
/// Every field before the version has a fixed length, so the encoding is unambiguous.
pub fn signed_message(serial: u64, version: &str, sha256: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(SIGNED_MESSAGE_PREFIX.len() + 8 + sha256.len() + version.len());
    m.extend_from_slice(SIGNED_MESSAGE_PREFIX);
    m.extend_from_slice(&serial.to_be_bytes());
    m.extend_from_slice(sha256);
    m.extend_from_slice(version.as_bytes());
    m
}

/// A public key trusted to sign policy bundles, as written in the filter configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedKey {
    /// `ed25519:` + first 16 hex digits of SHA-256 of the public key bytes.
    pub key_id: String,
    /// The 32-byte Ed25519 public key, standard base64.
    pub public_key: String,
}

/// The bundle fields as received (decoded from protobuf by the adapter).
#[derive(Debug, Clone, Copy)]
pub struct BundleView<'a> {
    /// Opaque version string.
    pub version: &'a str,
    /// Signed, strictly increasing per control plane: the filter refuses one at or below the
    /// serial it runs (replay of an older, validly signed bundle).
    pub serial: u64,
    /// Canonical policy JSON.
    pub policy_json: &'a [u8],
    /// SHA-256 of `policy_json`, 32 raw bytes.
    pub sha256: &'a [u8],
    /// Ed25519 signature, 64 bytes.
    pub signature: &'a [u8],
    /// Which trusted key signed it.
    pub key_id: &'a str,
}

/// Why a bundle was refused; the message becomes the NACK's `error_detail`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    /// The bundle has no version.
    #[error("bundle has an empty version")]
    MissingVersion,
    /// `sha256` does not match the policy bytes.
    #[error("bundle sha256 does not match its policy content (corrupted or tampered)")]
    DigestMismatch,
    /// The bundle is not signed.
    #[error("bundle is unsigned; this filter only accepts bundles signed by a trusted key")]
    Unsigned,
    /// The signing key is not among the filter's trusted keys.
    #[error("bundle signed by unknown key '{0}'; add its public key to control_plane.trusted_keys")]
    UnknownKey(String),
    /// The signature does not verify.
    #[error("bundle signature does not verify with key '{0}'")]
    BadSignature(String),
    /// A trusted key in the configuration is malformed.
    #[error("trusted key '{0}' is not a base64 32-byte Ed25519 public key")]
    BadTrustedKey(String),
    /// The policy inside does not validate.
    #[error("{0}")]
    Policy(#[from] PolicyError),
}

/// A bundle that verified and whose policy compiled.
#[derive(Debug)]
pub struct VerifiedBundle {
    /// The bundle's version.
    pub version: String,
    /// The bundle's signed serial.
    pub serial: u64,
    /// Lower-case hex SHA-256 of the policy (stamped into audit records).
    pub sha256_hex: String,
    /// The compiled policy.
    pub policy: CompiledPolicy,
}

/// The key id for a public key: `ed25519:` + first 16 hex digits of its SHA-256 (one scheme
/// for policy-bundle keys and audit node keys, defined in `cordon-audit`).
pub use cordon_audit::key_id;

/// Verifies a bundle against `trusted` keys and compiles its policy.
pub fn verify(bundle: &BundleView<'_>, trusted: &[TrustedKey], secrets: &dyn SecretSource) -> Result<VerifiedBundle, BundleError> {
    if bundle.version.is_empty() {
        return Err(BundleError::MissingVersion);
    }
    let digest = Sha256::digest(bundle.policy_json);
    if digest[..] != *bundle.sha256 {
        return Err(BundleError::DigestMismatch);
    }
    if bundle.signature.is_empty() || bundle.key_id.is_empty() {
        return Err(BundleError::Unsigned);
    }
    let key = trusted.iter().find(|k| k.key_id == bundle.key_id).ok_or_else(|| BundleError::UnknownKey(bundle.key_id.to_owned()))?;
    let raw: [u8; 32] = STANDARD
        .decode(key.public_key.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| BundleError::BadTrustedKey(key.key_id.clone()))?;
    let verifying = ed25519_dalek::VerifyingKey::from_bytes(&raw).map_err(|_| BundleError::BadTrustedKey(key.key_id.clone()))?;
    let signature = ed25519_dalek::Signature::from_slice(bundle.signature).map_err(|_| BundleError::BadSignature(key.key_id.clone()))?;
    let message = signed_message(bundle.serial, bundle.version, &digest);
    verifying.verify_strict(&message, &signature).map_err(|_| BundleError::BadSignature(key.key_id.clone()))?;
    let policy = Policy::from_json(bundle.policy_json)?;
    let compiled = CompiledPolicy::compile(&policy, secrets)?;
    Ok(VerifiedBundle {
        version: bundle.version.to_owned(),
        serial: bundle.serial,
        sha256_hex: crate::policy::compile::hex(&digest),
        policy: compiled,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    struct Signed {
        version: String,
        serial: u64,
        json: Vec<u8>,
        sha: Vec<u8>,
        sig: Vec<u8>,
        kid: String,
    }

    fn sign(key: &SigningKey, version: &str, json: &[u8]) -> Signed {
        let sha = Sha256::digest(json).to_vec();
        let serial = version.parse().unwrap_or(0);
        let msg = signed_message(serial, version, &sha);
        Signed {
            version: version.into(),
            serial,
            json: json.to_vec(),
            sha,
            sig: key.sign(&msg).to_bytes().to_vec(),
            kid: key_id(key.verifying_key().as_bytes()),
        }
    }

    fn view(s: &Signed) -> BundleView<'_> {
        BundleView { version: &s.version, serial: s.serial, policy_json: &s.json, sha256: &s.sha, signature: &s.sig, key_id: &s.kid }
    }

    fn trusted(key: &SigningKey) -> Vec<TrustedKey> {
        vec![TrustedKey { key_id: key_id(key.verifying_key().as_bytes()), public_key: STANDARD.encode(key.verifying_key().as_bytes()) }]
    }

    const POLICY: &[u8] = br#"{"models":[{"allow":["gpt-4o-mini"]}]}"#;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    #[test]
    fn a_signed_bundle_verifies_and_compiles() {
        let k = key(1);
        let s = sign(&k, "7", POLICY);
        let v = verify(&view(&s), &trusted(&k), &|_: &str| None).unwrap();
        assert_eq!(v.version, "7");
        assert_eq!(v.sha256_hex.len(), 64);
    }

    #[test]
    fn tampering_unsigned_unknown_and_wrong_keys_are_refused() {
        let k = key(1);
        let s = sign(&k, "7", POLICY);
        let none = |_: &str| None;

        let mut t = sign(&k, "7", POLICY);
        t.json = br#"{"models":[{"allow":["*"]}]}"#.to_vec();
        assert_eq!(verify(&view(&t), &trusted(&k), &none).unwrap_err(), BundleError::DigestMismatch);

        let mut t = sign(&k, "7", POLICY);
        t.version = "8".into(); // replaying a signature under another version
        assert!(matches!(verify(&view(&t), &trusted(&k), &none).unwrap_err(), BundleError::BadSignature(_)));

        let mut t = sign(&k, "7", POLICY);
        t.serial = 8; // an old bundle dressed up as newer than the one in force
        assert!(matches!(verify(&view(&t), &trusted(&k), &none).unwrap_err(), BundleError::BadSignature(_)));

        let mut t = sign(&k, "7", POLICY);
        t.sig.clear();
        assert_eq!(verify(&view(&t), &trusted(&k), &none).unwrap_err(), BundleError::Unsigned);

        assert!(matches!(verify(&view(&s), &trusted(&key(2)), &none).unwrap_err(), BundleError::UnknownKey(_)));

        // Right key id, wrong key material: a forged bundle.
        let forged = sign(&key(3), "7", POLICY);
        let mut f = forged;
        f.kid = s.kid.clone();
        assert!(matches!(verify(&view(&f), &trusted(&k), &none).unwrap_err(), BundleError::BadSignature(_)));
    }

    #[test]
    fn an_invalid_policy_is_refused_with_the_field() {
        let k = key(1);
        let s = sign(&k, "9", br#"{"routes":[{"name":"r","path_prefix":"v1","accept":[["api_key"]]}]}"#);
        let err = verify(&view(&s), &trusted(&k), &|_: &str| None).unwrap_err();
        assert_eq!(err.to_string(), "policy field `routes[0].path_prefix`: must start with '/'");
    }
}
