//! The Ed25519 key that signs every policy bundle. It comes from a runtime secret (an env var
//! or a file named by env/flag), never from the repository; the embedded demo mode may create
//! one in the data directory.

use base64::Engine;
use cordon_proto::v1::{PolicyBundle, signed_message};
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

/// `ed25519:` + first 16 hex digits of SHA-256(public key): names the key in bundles.
pub fn key_id(public: &VerifyingKey) -> String {
    let digest = crate::policy::sha256_hex(public.as_bytes());
    format!("ed25519:{}", &digest[..16])
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

    /// A signed bundle for `version` carrying `policy_json`.
    pub fn bundle(&self, version: &str, policy_json: &[u8]) -> PolicyBundle {
        use sha2::Digest;
        let sha256 = sha2::Sha256::digest(policy_json).to_vec();
        let signature = self.key.sign(&signed_message(version, &sha256)).to_bytes().to_vec();
        PolicyBundle { version: version.to_string(), policy_json: policy_json.to_vec(), sha256, signature, key_id: self.key_id.clone() }
    }
}

/// Why a bundle failed verification (what a filter would NACK with).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// sha256 does not match the policy bytes.
    #[error("bundle sha256 does not match its policy_json")]
    HashMismatch,
    /// Signed by a key the verifier does not know.
    #[error("bundle signed by unknown key `{0}`")]
    UnknownKey(String),
    /// Signature wrong or malformed.
    #[error("bundle signature is invalid")]
    BadSignature,
}

/// The check a filter runs before applying a bundle (reference implementation for the filter
/// side and for tests).
pub fn verify_bundle(bundle: &PolicyBundle, key_id_expected: &str, public: &VerifyingKey) -> Result<(), VerifyError> {
    use sha2::Digest;
    if sha2::Sha256::digest(&bundle.policy_json)[..] != bundle.sha256[..] {
        return Err(VerifyError::HashMismatch);
    }
    if bundle.key_id != key_id_expected {
        return Err(VerifyError::UnknownKey(bundle.key_id.clone()));
    }
    let sig = ed25519_dalek::Signature::from_slice(&bundle.signature).map_err(|_| VerifyError::BadSignature)?;
    public.verify_strict(&bundle.signed_message(), &sig).map_err(|_| VerifyError::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundles_verify_and_tampering_is_caught() {
        let s = BundleSigner::from_seed([9; 32]);
        let b = s.bundle("7", b"{\"models\":[]}");
        verify_bundle(&b, s.key_id(), &s.verifying_key()).unwrap();
        let mut t = b.clone();
        t.version = "8".into();
        assert_eq!(verify_bundle(&t, s.key_id(), &s.verifying_key()), Err(VerifyError::BadSignature));
        let mut t = b.clone();
        t.policy_json = b"{}".to_vec();
        assert_eq!(verify_bundle(&t, s.key_id(), &s.verifying_key()), Err(VerifyError::HashMismatch));
        let other = BundleSigner::from_seed([1; 32]);
        assert!(verify_bundle(&b, other.key_id(), &other.verifying_key()).is_err());
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
