//! API keys: the presented key is hashed and looked up by digest; policy never holds a key.

use crate::policy::{ApiKey, KeyStatus};
use crate::refusal::Refusal;
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// SHA-256 digest of an API key.
pub type KeyDigest = [u8; 32];

/// Parses a lower-case hex SHA-256 digest.
pub fn parse_digest(hex: &str) -> Option<KeyDigest> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (slot, pair) in out.iter_mut().zip(hex.as_bytes().chunks_exact(2)) {
        let [hi, lo] = *pair else { return None };
        *slot = nibble(hi)? << 4 | nibble(lo)?;
    }
    Some(out)
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// Hashes a presented key.
pub fn digest(key: &str) -> KeyDigest {
    Sha256::digest(key.as_bytes()).into()
}

/// Looks up a presented key and checks its lifecycle at `now` (unix seconds).
pub fn authenticate<'p>(keys: &'p HashMap<KeyDigest, ApiKey>, presented: &str, now: u64) -> Result<&'p ApiKey, Refusal> {
    let key = keys.get(&digest(presented)).ok_or(Refusal::InvalidApiKey)?;
    if key.status == KeyStatus::Revoked {
        return Err(Refusal::RevokedApiKey);
    }
    if key.expires_at.is_some_and(|exp| now >= exp) {
        return Err(Refusal::ExpiredApiKey);
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Principal;
    use crate::policy::compile::hex;

    fn keys() -> HashMap<KeyDigest, ApiKey> {
        let mk = |id: &str, key: &str, status, expires_at| {
            (
                digest(key),
                ApiKey {
                    id: id.into(),
                    sha256: hex(&digest(key)),
                    principal: Principal { user: Some(id.into()), ..Default::default() },
                    status,
                    expires_at,
                },
            )
        };
        [
            mk("live", "sk-live", KeyStatus::Active, None),
            mk("gone", "sk-gone", KeyStatus::Revoked, None),
            mk("old", "sk-old", KeyStatus::Active, Some(1000)),
        ]
        .into_iter()
        .collect()
    }

    #[test]
    fn valid_unknown_revoked_expired() {
        let k = keys();
        assert_eq!(authenticate(&k, "sk-live", 5000).unwrap().id, "live");
        assert_eq!(authenticate(&k, "sk-nope", 5000), Err(Refusal::InvalidApiKey));
        assert_eq!(authenticate(&k, "sk-gone", 5000), Err(Refusal::RevokedApiKey));
        assert_eq!(authenticate(&k, "sk-old", 999).unwrap().id, "old");
        assert_eq!(authenticate(&k, "sk-old", 1000), Err(Refusal::ExpiredApiKey));
    }

    #[test]
    fn digest_round_trips_through_hex() {
        let d = digest("abc");
        assert_eq!(parse_digest(&hex(&d)), Some(d));
        assert_eq!(hex(&d), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(parse_digest(&hex(&d).to_uppercase()), None);
        assert_eq!(parse_digest("abc"), None);
    }
}
