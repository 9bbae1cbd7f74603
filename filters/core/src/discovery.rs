//! The node side of the policy stream, as a plain state machine: what to send on connect, and
//! the ACK or NACK for each response. xDS state-of-the-world semantics: an ACK echoes the new
//! version and the response nonce; a NACK echoes the nonce, keeps the last good version and says
//! why. The adapter only encodes these fields as protobuf and moves bytes.

use crate::bundle::{self, BundleView, TrustedKey, VerifiedBundle};
use crate::policy::SecretSource;

/// Type URL of a policy bundle inside a discovery response.
pub const POLICY_TYPE_URL: &str = "type.googleapis.com/cordon.v1.PolicyBundle";

/// The request a node sends, in plain fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestFields {
    /// The version the node runs after handling the response ("" before any).
    pub version_info: String,
    /// The nonce being answered ("" on the first request).
    pub response_nonce: String,
    /// Set on a NACK.
    pub error_detail: Option<String>,
    /// Whether to include the node identity (first request of a stream).
    pub include_node: bool,
}

/// What the node makes of one response.
#[derive(Debug)]
pub enum Outcome {
    /// Apply this policy, then send the ACK.
    Apply(Box<VerifiedBundle>, RequestFields),
    /// Keep the current policy and send the NACK.
    Reject(RequestFields),
}

/// A response, in plain fields (decoded by the adapter).
#[derive(Debug, Clone, Copy)]
pub struct ResponseView<'a> {
    /// The response's version.
    pub version_info: &'a str,
    /// The response's nonce.
    pub nonce: &'a str,
    /// The type URL of each resource, with its bundle when it decoded.
    pub resources: &'a [(&'a str, Option<BundleView<'a>>)],
}

/// Node-side stream state: the version in force survives reconnects.
#[derive(Debug, Default)]
pub struct PolicyStream {
    applied: Option<String>,
}

impl PolicyStream {
    /// A stream state with nothing applied yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The version in force, if any.
    pub fn applied(&self) -> Option<&str> {
        self.applied.as_deref()
    }

    /// The first request on a (re)connected stream: node identity and the version already held,
    /// so the control plane does not resend it.
    pub fn hello(&self) -> RequestFields {
        RequestFields {
            version_info: self.applied.clone().unwrap_or_default(),
            response_nonce: String::new(),
            error_detail: None,
            include_node: true,
        }
    }

    /// Judges one response: verify, compile, and produce the ACK or NACK.
    pub fn on_response(&mut self, resp: &ResponseView<'_>, trusted: &[TrustedKey], secrets: &dyn SecretSource) -> Outcome {
        let nack = |this: &Self, why: String| {
            Outcome::Reject(RequestFields {
                version_info: this.applied.clone().unwrap_or_default(),
                response_nonce: resp.nonce.to_owned(),
                error_detail: Some(why),
                include_node: false,
            })
        };
        let bundle = match resp.resources {
            [(type_url, Some(b))] if *type_url == POLICY_TYPE_URL => b,
            [(type_url, None)] if *type_url == POLICY_TYPE_URL => return nack(self, "policy bundle does not decode".into()),
            [(type_url, _)] => return nack(self, format!("unexpected resource type '{type_url}', want {POLICY_TYPE_URL}")),
            other => return nack(self, format!("expected exactly one policy bundle, got {}", other.len())),
        };
        if bundle.version != resp.version_info {
            return nack(self, format!("bundle version '{}' differs from response version '{}'", bundle.version, resp.version_info));
        }
        match bundle::verify(bundle, trusted, secrets) {
            Ok(verified) => {
                self.applied = Some(verified.version.clone());
                let ack = RequestFields {
                    version_info: verified.version.clone(),
                    response_nonce: resp.nonce.to_owned(),
                    error_detail: None,
                    include_node: false,
                };
                Outcome::Apply(Box::new(verified), ack)
            }
            Err(e) => nack(self, e.to_string()),
        }
    }
}

/// Reconnect delays: exponential with jitter, so a fleet does not reconnect in lockstep when the
/// control plane comes back.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial_ms: u64,
    max_ms: u64,
    attempt: u32,
}

impl Backoff {
    /// Delays start near `initial_ms` and never exceed `max_ms`.
    pub fn new(initial_ms: u64, max_ms: u64) -> Self {
        Self { initial_ms: initial_ms.max(1), max_ms: max_ms.max(initial_ms.max(1)), attempt: 0 }
    }

    /// The next delay; `random` is any random number (the caller owns randomness).
    pub fn next_delay_ms(&mut self, random: u64) -> u64 {
        let ceiling = self.initial_ms.saturating_mul(1u64 << self.attempt.min(20)).min(self.max_ms);
        self.attempt = self.attempt.saturating_add(1);
        // "Equal jitter": at least half the ceiling, so retries still back off.
        ceiling / 2 + random % (ceiling / 2 + 1)
    }

    /// Called once a stream delivered a response: the next failure starts from the beginning.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use ed25519_dalek::{Signer, SigningKey};
    use proptest::prelude::*;
    use sha2::{Digest, Sha256};

    struct Owned {
        version: String,
        json: Vec<u8>,
        sha: Vec<u8>,
        sig: Vec<u8>,
        kid: String,
    }

    fn signed(version: &str, json: &str) -> Owned {
        let k = SigningKey::from_bytes(&[9; 32]);
        let sha = Sha256::digest(json.as_bytes()).to_vec();
        let mut msg = version.as_bytes().to_vec();
        msg.extend_from_slice(&sha);
        Owned {
            version: version.into(),
            json: json.into(),
            sha,
            sig: k.sign(&msg).to_bytes().to_vec(),
            kid: bundle::key_id(k.verifying_key().as_bytes()),
        }
    }

    fn trusted() -> Vec<TrustedKey> {
        let k = SigningKey::from_bytes(&[9; 32]);
        vec![TrustedKey {
            key_id: bundle::key_id(k.verifying_key().as_bytes()),
            public_key: base64::engine::general_purpose::STANDARD.encode(k.verifying_key().as_bytes()),
        }]
    }

    fn respond(stream: &mut PolicyStream, o: &Owned, nonce: &str) -> Outcome {
        let view = BundleView { version: &o.version, policy_json: &o.json, sha256: &o.sha, signature: &o.sig, key_id: &o.kid };
        let resources = [(POLICY_TYPE_URL, Some(view))];
        stream.on_response(&ResponseView { version_info: &o.version, nonce, resources: &resources }, &trusted(), &|_: &str| None)
    }

    #[test]
    fn ack_then_nack_keeps_last_good_version() {
        let mut s = PolicyStream::new();
        assert_eq!(s.hello().version_info, "");
        let Outcome::Apply(b, ack) = respond(&mut s, &signed("1", r#"{"models":[]}"#), "n1") else { panic!("expected apply") };
        assert_eq!(b.version, "1");
        assert_eq!((ack.version_info.as_str(), ack.response_nonce.as_str(), ack.error_detail), ("1", "n1", None));

        let Outcome::Reject(nack) = respond(&mut s, &signed("2", r#"{"routes":[{"name":"x"}]}"#), "n2") else { panic!("expected reject") };
        assert_eq!(nack.version_info, "1", "a NACK reports the version still in force");
        assert_eq!(nack.response_nonce, "n2");
        assert!(nack.error_detail.unwrap().contains("routes[0]"));
        assert_eq!(s.applied(), Some("1"));
        // After a reconnect the node says what it already runs.
        assert_eq!(
            s.hello(),
            RequestFields { version_info: "1".into(), response_nonce: String::new(), error_detail: None, include_node: true }
        );
    }

    #[test]
    fn wrong_type_count_or_version_is_nacked() {
        let mut s = PolicyStream::new();
        let o = signed("3", "{}");
        let view = BundleView { version: &o.version, policy_json: &o.json, sha256: &o.sha, signature: &o.sig, key_id: &o.kid };
        for resources in
            [vec![], vec![("type.googleapis.com/other", Some(view))], vec![(POLICY_TYPE_URL, None)], vec![(POLICY_TYPE_URL, Some(view)); 2]]
        {
            let out = s.on_response(&ResponseView { version_info: "3", nonce: "n", resources: &resources }, &trusted(), &|_: &str| None);
            assert!(matches!(out, Outcome::Reject(_)));
        }
        let resources = [(POLICY_TYPE_URL, Some(view))];
        let out = s.on_response(&ResponseView { version_info: "4", nonce: "n", resources: &resources }, &trusted(), &|_: &str| None);
        assert!(matches!(out, Outcome::Reject(ref r) if r.error_detail.as_deref().unwrap_or("").contains("differs")));
        assert_eq!(s.applied(), None);
    }

    proptest! {
        #[test]
        fn backoff_grows_is_bounded_and_resets(initial in 1u64..2000, max in 1u64..60_000, rands in proptest::collection::vec(any::<u64>(), 1..40)) {
            let mut b = Backoff::new(initial, max);
            let cap = max.max(initial);
            let mut prev_ceiling = 0;
            for (i, r) in rands.iter().enumerate() {
                let d = b.next_delay_ms(*r);
                prop_assert!(d <= cap);
                let ceiling = initial.saturating_mul(1u64 << (i as u32).min(20)).min(cap);
                prop_assert!(d >= ceiling / 2);
                prop_assert!(ceiling >= prev_ceiling);
                prev_ceiling = ceiling;
            }
            b.reset();
            prop_assert!(b.next_delay_ms(u64::MAX) <= initial.min(cap));
        }
    }
}
