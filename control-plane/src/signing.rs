//! The Ed25519 key that signs every policy bundle. It comes from a runtime secret (an env var
//! or a file named by env/flag), never from the repository; the embedded demo mode may create
//! one in the data directory.

use base64::Engine;
use cordon_core::bundle::{BundleView, signed_message};
use cordon_proto::v1::PolicyBundle;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use std::path::Path;

/// Why the signing key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SigningKeyError {
    /// The file could not be read or written.
    #[error("signing key file {path}: {source}")]
    Io {
        /// Which file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The secret is not a 32-byte seed in base64 or hex.
    #[error(
        "signing key from {origin} must be a 32-byte Ed25519 seed in base64 or hex ({detail}); create one with `cordon-control-plane keygen`"
    )]
    Malformed {
        /// Env var or file.
        origin: String,
        /// What was wrong.
        detail: String,
    },
}

/// Signs bundles.
#[derive(Clone)]
pub struct BundleSigner {
    key: SigningKey,
    key_id: String,
}

impl std::fmt::Debug for BundleSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BundleSigner").field("key_id", &self.key_id).finish_non_exhaustive()
    }
}

/// `ed25519:` + first 16 hex digits of SHA-256(public key): names the key in bundles (the
/// filter's own definition, `cordon_core::bundle::key_id`).
pub fn key_id(public: &VerifyingKey) -> String {
    cordon_core::bundle::key_id(public.as_bytes())
}

fn decode_seed(text: &str, origin: &str) -> Result<[u8; 32], SigningKeyError> {
    let t = text.trim();
    let bytes = if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
        hex::decode(t).map_err(|e| e.to_string())
    } else {
        base64::engine::general_purpose::STANDARD.decode(t).map_err(|e| e.to_string())
    };
    let bytes = bytes.map_err(|detail| SigningKeyError::Malformed { origin: origin.into(), detail })?;
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| SigningKeyError::Malformed { origin: origin.into(), detail: format!("{} bytes", bytes.len()) })
}

impl BundleSigner {
    /// From a seed.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        let key = SigningKey::from_bytes(&seed);
        let key_id = key_id(&key.verifying_key());
        Self { key, key_id }
    }

    /// The same key as cordon-audit's signer, for tree heads. One control-plane key signs
    /// bundles and heads: reviewers and filters trust one public key, and the signed messages
    /// are domain-separated ("cordon-audit/tree-head/v1" vs the bundle message), so a head
    /// signature can never pass as a bundle signature or the reverse.
    pub fn audit_signer(&self) -> cordon_audit::keys::Signer {
        cordon_audit::keys::Signer::from_seed(&self.key.to_bytes())
    }

    /// A fresh random key.
    pub fn generate() -> Self {
        Self::from_seed(SigningKey::generate(&mut rand::rngs::OsRng).to_bytes())
    }

    /// From the text of an env var (base64 or hex seed).
    pub fn from_secret_text(text: &str, origin: &str) -> Result<Self, SigningKeyError> {
        Ok(Self::from_seed(decode_seed(text, origin)?))
    }

    /// From a file holding a base64 or hex seed.
    pub fn from_file(path: &Path) -> Result<Self, SigningKeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| SigningKeyError::Io { path: path.display().to_string(), source })?;
        Self::from_secret_text(&text, &path.display().to_string())
    }

    /// Loads the key at `path`, or creates it there (mode 0600) if absent: embedded demo mode.
    pub fn load_or_create(path: &Path) -> Result<Self, SigningKeyError> {
        if path.exists() {
            return Self::from_file(path);
        }
        let signer = Self::generate();
        signer.write_seed(path)?;
        Ok(signer)
    }

    /// Writes the seed (base64) to a new file readable only by its owner.
    pub fn write_seed(&self, path: &Path) -> Result<(), SigningKeyError> {
        use std::io::Write;
        #[cfg(unix)]
        use std::os::unix::fs::OpenOptionsExt;
        let io = |source| SigningKeyError::Io { path: path.display().to_string(), source };
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        opts.mode(0o600);
        let mut f = opts.open(path).map_err(io)?;
        let text = base64::engine::general_purpose::STANDARD.encode(self.key.to_bytes());
        f.write_all(format!("{text}\n").as_bytes()).map_err(io)
    }

    /// The key id carried in bundles.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The public key, base64 (standard, padded): what the filter configuration holds.
    pub fn public_key_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.key.verifying_key().as_bytes())
    }

    /// The public key.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// A signed bundle for `version` with the strictly increasing `serial`, carrying `policy_json`.
    pub fn bundle(&self, version: &str, serial: u64, policy_json: &[u8]) -> PolicyBundle {
        use sha2::Digest;
        let sha256 = sha2::Sha256::digest(policy_json).to_vec();
        let signature = self.key.sign(&signed_message(serial, version, &sha256)).to_bytes().to_vec();
        PolicyBundle {
            version: version.to_string(),
            policy_json: policy_json.to_vec(),
            sha256,
            signature,
            key_id: self.key_id.clone(),
            serial,
        }
    }
}

/// The filter's view of a bundle, for `cordon_core::bundle::verify` (the one verifier: the
/// control plane's tests check bundles exactly as a filter does).
pub fn view(bundle: &PolicyBundle) -> BundleView<'_> {
    BundleView {
        version: &bundle.version,
        serial: bundle.serial,
        policy_json: &bundle.policy_json,
        sha256: &bundle.sha256,
        signature: &bundle.signature,
        key_id: &bundle.key_id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted(s: &BundleSigner) -> Vec<cordon_core::bundle::TrustedKey> {
        vec![cordon_core::bundle::TrustedKey { key_id: s.key_id().to_owned(), public_key: s.public_key_base64() }]
    }

    #[test]
    fn bundles_verify_with_the_filters_verifier_and_tampering_is_caught() {
        use cordon_core::bundle::{BundleError, verify};
        let none = |_: &str| None;
        let s = BundleSigner::from_seed([9; 32]);
        let b = s.bundle("7", 7, b"{\"models\":[]}");
        let v = verify(&view(&b), &trusted(&s), &none).unwrap();
        assert_eq!((v.version.as_str(), v.serial), ("7", 7));
        let mut t = b.clone();
        t.version = "8".into();
        assert!(matches!(verify(&view(&t), &trusted(&s), &none), Err(BundleError::BadSignature(_))));
        let mut t = b.clone();
        t.serial = 8;
        assert!(matches!(verify(&view(&t), &trusted(&s), &none), Err(BundleError::BadSignature(_))));
        let mut t = b.clone();
        t.policy_json = b"{}".to_vec();
        assert_eq!(verify(&view(&t), &trusted(&s), &none).unwrap_err(), BundleError::DigestMismatch);
        let other = BundleSigner::from_seed([1; 32]);
        assert!(matches!(verify(&view(&b), &trusted(&other), &none), Err(BundleError::UnknownKey(_))));
    }

    #[test]
    fn secrets_parse_from_hex_or_base64() {
        let hex_seed = "09".repeat(32);
        let a = BundleSigner::from_secret_text(&hex_seed, "env").unwrap();
        let b = BundleSigner::from_secret_text(&base64::engine::general_purpose::STANDARD.encode([9u8; 32]), "env").unwrap();
        assert_eq!(a.public_key_base64(), b.public_key_base64());
        assert!(matches!(BundleSigner::from_secret_text("short", "env"), Err(SigningKeyError::Malformed { .. })));
    }
}
