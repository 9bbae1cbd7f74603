//! Ed25519 keys as the audit trail uses them: a signer built from a caller-supplied seed
//! (this crate reads no files or environment) and a public key known by its key id.

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use thiserror::Error;

use crate::key_id;

/// Why a public key or a signature could not be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KeyError {
    /// The 32 bytes are not a valid Ed25519 public key.
    #[error("{0} is not a valid Ed25519 public key")]
    BadPublicKey(String),
}

/// A signing key with its key id.
pub struct Signer {
    key: SigningKey,
    key_id: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer({})", self.key_id)
    }
}

impl Signer {
    /// The signer of the 32-byte Ed25519 `seed` (the runtime secret).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        let key = SigningKey::from_bytes(seed);
        let key_id = key_id(key.verifying_key().as_bytes());
        Self { key, key_id }
    }

    /// The public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// The key id (`ed25519:` + 16 hex digits).
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Signs `message`.
    pub(crate) fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }
}

/// A trusted public key with its key id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    key: VerifyingKey,
    key_id: String,
}

impl PublicKey {
    /// Parses a raw 32-byte Ed25519 public key.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, KeyError> {
        let key_id = key_id(bytes);
        let key = VerifyingKey::from_bytes(bytes).map_err(|_| KeyError::BadPublicKey(key_id.clone()))?;
        // Weak (small-order) keys would let anyone forge; verify_strict refuses them per
        // signature, refusing them here makes the error name the key instead.
        if key.is_weak() {
            return Err(KeyError::BadPublicKey(key_id));
        }
        Ok(Self { key, key_id })
    }

    /// The key id.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The raw key.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// Whether `signature` is this key's strict Ed25519 signature of `message`.
    pub(crate) fn verifies(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        self.key.verify_strict(message, &Signature::from_bytes(signature)).is_ok()
    }
}
