//! The Cordon audit trail, host-free: one definition of what is recorded, hashed and signed,
//! shared by the wasm filter, the control plane and the offline verifier `cordon-verify`.
//!
//! Plain Rust with no host calls and no clock: time comes in as unix milliseconds, keys come in
//! as bytes. See `docs/audit.md` for the byte-level reference.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing, clippy::string_slice))]

pub mod batch;
pub mod chain;
pub mod digest;
pub mod encoding;
pub mod entry;
#[cfg(feature = "export")]
pub mod export;
pub mod head;
pub mod keys;
pub mod merkle;
pub mod record;

use sha2::{Digest, Sha256};

/// A SHA-256 output.
pub type Hash = [u8; 32];

/// The key id of an Ed25519 public key: `ed25519:` + the first 16 hex digits of its SHA-256
/// (the scheme of `cordon_core::bundle::key_id`).
pub fn key_id(public_key: &[u8; 32]) -> String {
    let digest = Sha256::digest(public_key);
    format!("ed25519:{}", hex(digest.get(..8).unwrap_or_default()))
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        for nibble in [b >> 4, b & 0x0f] {
            out.push(char::from_digit(u32::from(nibble), 16).unwrap_or('0'));
        }
    }
    out
}
