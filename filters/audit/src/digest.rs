//! Keyed content digests: HMAC-SHA256 of the request or response content after redaction.
//!
//! Keyed so that nobody holding the trail can confirm a guess of the content ("was the prompt
//! 'hello'?"); only the holder of the runtime secret can recompute a digest. The direction is
//! part of the message, so a request and a response with equal content digest differently.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::Hash;
use crate::record::{Direction, RecordError};

/// Domain separation of content digests from every other use of the key.
const DOMAIN: &[u8] = b"cordon-audit/content/v1\0";

/// A content digest key, prepared once and cloned per digest.
#[derive(Clone)]
pub struct ContentKey(Hmac<Sha256>);

impl std::fmt::Debug for ContentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ContentKey(..)")
    }
}

impl ContentKey {
    /// Prepares `secret` (at least 32 bytes) as the digest key.
    pub fn new(secret: &[u8]) -> Result<Self, RecordError> {
        if secret.len() < 32 {
            return Err(RecordError::WeakContentKey(secret.len()));
        }
        <Hmac<Sha256> as Mac>::new_from_slice(secret).map(Self).map_err(|_| RecordError::WeakContentKey(secret.len()))
    }

    /// Starts a streamed digest of content flowing in `direction`.
    pub fn start(&self, direction: Direction) -> ContentDigest {
        let mut mac = self.0.clone();
        mac.update(DOMAIN);
        mac.update(&[direction as u8]);
        ContentDigest(mac)
    }

    /// The digest of `content` flowing in `direction`, in one call.
    pub fn digest(&self, direction: Direction, content: &[u8]) -> Hash {
        let mut d = self.start(direction);
        d.update(content);
        d.finish()
    }
}

/// A digest being computed over content that arrives in chunks (e.g. SSE deltas).
#[derive(Clone)]
pub struct ContentDigest(Hmac<Sha256>);

impl ContentDigest {
    /// Feeds the next chunk.
    pub fn update(&mut self, chunk: &[u8]) {
        self.0.update(chunk);
    }

    /// The digest of everything fed.
    pub fn finish(self) -> Hash {
        self.0.finalize().into_bytes().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_equals_whole_and_directions_differ() {
        let key = ContentKey::new(&[7u8; 32]).unwrap();
        let mut d = key.start(Direction::Response);
        d.update(b"hel");
        d.update(b"lo");
        assert_eq!(d.finish(), key.digest(Direction::Response, b"hello"));
        assert_ne!(key.digest(Direction::Request, b"hello"), key.digest(Direction::Response, b"hello"));
        assert_ne!(ContentKey::new(&[8u8; 32]).unwrap().digest(Direction::Request, b"hello"), key.digest(Direction::Request, b"hello"));
    }

    #[test]
    fn matches_hmac_sha256_over_the_domain_message() {
        let secret = [0x0bu8; 32];
        let mut raw = <Hmac<Sha256> as Mac>::new_from_slice(&secret).unwrap();
        raw.update(b"cordon-audit/content/v1\0\x01what do ya want for nothing?");
        let want: Hash = raw.finalize().into_bytes().into();
        assert_eq!(ContentKey::new(&secret).unwrap().digest(Direction::Request, b"what do ya want for nothing?"), want);
    }

    #[test]
    fn short_keys_are_refused() {
        assert_eq!(ContentKey::new(&[1u8; 31]).err(), Some(RecordError::WeakContentKey(31)));
    }
}
