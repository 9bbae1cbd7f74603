//! The node side of the policy stream, as a plain state machine: what to send on connect, and
//! the ACK or NACK for each response. xDS state-of-the-world semantics: an ACK echoes the new
//! version and the response nonce; a NACK echoes the nonce, keeps the last good version and says
//! why. The adapter only encodes these fields as protobuf, publishes what this module verified,
//! and moves bytes. A version counts as applied only once the adapter's publish step succeeded,
//! so a NACK or a later `hello` never names a policy the workers do not run.

pub use crate::bundle::POLICY_TYPE_URL;
use crate::bundle::{self, BundleView, TrustedKey, VerifiedBundle};
use crate::policy::SecretSource;

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

/// What the node makes of one response; either way the adapter sends the fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The policy was verified and published: send this ACK.
    Applied(RequestFields),
    /// The bundle in force was sent again (e.g. after a reconnect): ACK it, nothing to publish.
    Unchanged(RequestFields),
    /// The current policy stays: send this NACK.
    Reject(RequestFields),
}

impl Outcome {
    /// The request to send back.
    pub fn fields(&self) -> &RequestFields {
        match self {
            Outcome::Applied(f) | Outcome::Unchanged(f) | Outcome::Reject(f) => f,
        }
    }
}

/// The adapter's step that makes a verified bundle the policy in force (shared data in Envoy,
/// an `Arc` swap in the native module, which keeps the compiled policy it is handed).
/// An error names what failed; the bundle is then NACKed and not recorded as applied.
pub type Publish<'a> = dyn FnMut(VerifiedBundle) -> Result<(), String> + 'a;

/// The bundle in force: what a resend or a replay is compared against.
#[derive(Debug, Clone, PartialEq, Eq)]
struct InForce {
    version: String,
    serial: u64,
    sha256_hex: String,
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
    applied: Option<InForce>,
}

impl PolicyStream {
    /// A stream state with nothing applied yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The version in force, if any.
    pub fn applied(&self) -> Option<&str> {
        self.applied.as_ref().map(|a| a.version.as_str())
    }

    /// The signed serial of the version in force, if any.
    pub fn applied_serial(&self) -> Option<u64> {
        self.applied.as_ref().map(|a| a.serial)
    }

    /// The first request on a (re)connected stream: node identity and the version already held,
    /// so the control plane does not resend it.
    pub fn hello(&self) -> RequestFields {
        RequestFields {
            version_info: self.applied().unwrap_or_default().to_owned(),
            response_nonce: String::new(),
            error_detail: None,
            include_node: true,
        }
    }

    /// Judges one response: verify, refuse replays, compile, `publish`, and produce the ACK or
    /// NACK. The version is recorded as applied only after `publish` succeeded.
    pub fn on_response(
        &mut self,
        resp: &ResponseView<'_>,
        trusted: &[TrustedKey],
        secrets: &dyn SecretSource,
        publish: &mut Publish<'_>,
    ) -> Outcome {
        let nack = |this: &Self, why: String| {
            Outcome::Reject(RequestFields {
                version_info: this.applied().unwrap_or_default().to_owned(),
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
        let verified = match bundle::verify(bundle, trusted, secrets) {
            Ok(v) => v,
            Err(e) => return nack(self, e.to_string()),
        };
        let ack = RequestFields {
            version_info: verified.version.clone(),
            response_nonce: resp.nonce.to_owned(),
            error_detail: None,
            include_node: false,
        };
        let in_force = InForce { version: verified.version.clone(), serial: verified.serial, sha256_hex: verified.sha256_hex.clone() };
        if let Some(current) = &self.applied {
            if *current == in_force {
                return Outcome::Unchanged(ack);
            }
            if verified.serial <= current.serial {
                return nack(
                    self,
                    format!(
                        "bundle serial {} is not newer than serial {} in force (version '{}'): refusing a replayed or rolled-back bundle; \
                         a rollback must be published as a new version",
                        verified.serial, current.serial, current.version
                    ),
                );
            }
        }
        match publish(verified) {
            Ok(()) => {
                self.applied = Some(in_force);
                Outcome::Applied(ack)
            }
            Err(e) => nack(self, format!("filter could not publish the policy: {e}")),
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
        serial: u64,
        json: Vec<u8>,
        sha: Vec<u8>,
        sig: Vec<u8>,
        kid: String,
    }

    fn signed(version: &str, json: &str) -> Owned {
        signed_serial(version, version.parse().unwrap_or(0), json)
    }

    fn signed_serial(version: &str, serial: u64, json: &str) -> Owned {
        let k = SigningKey::from_bytes(&[9; 32]);
        let sha = Sha256::digest(json.as_bytes()).to_vec();
        let msg = bundle::signed_message(serial, version, &sha);
        Owned {
            version: version.into(),
            serial,
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

    fn view(o: &Owned) -> BundleView<'_> {
        BundleView { version: &o.version, serial: o.serial, policy_json: &o.json, sha256: &o.sha, signature: &o.sig, key_id: &o.kid }
    }

    fn respond_with(stream: &mut PolicyStream, o: &Owned, nonce: &str, publish: &mut Publish<'_>) -> Outcome {
        let resources = [(POLICY_TYPE_URL, Some(view(o)))];
        stream.on_response(&ResponseView { version_info: &o.version, nonce, resources: &resources }, &trusted(), &|_: &str| None, publish)
    }

    fn respond(stream: &mut PolicyStream, o: &Owned, nonce: &str) -> Outcome {
        respond_with(stream, o, nonce, &mut |_| Ok(()))
    }

    fn publish_ok(_: VerifiedBundle) -> Result<(), String> {
        Ok(())
    }

    #[test]
    fn ack_then_nack_keeps_last_good_version() {
        let mut s = PolicyStream::new();
        assert_eq!(s.hello().version_info, "");
        let Outcome::Applied(ack) = respond(&mut s, &signed("1", r#"{"models":[]}"#), "n1") else { panic!("expected apply") };
        assert_eq!(s.applied(), Some("1"));
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
        let view = view(&o);
        for resources in
            [vec![], vec![("type.googleapis.com/other", Some(view))], vec![(POLICY_TYPE_URL, None)], vec![(POLICY_TYPE_URL, Some(view)); 2]]
        {
            let out = s.on_response(
                &ResponseView { version_info: "3", nonce: "n", resources: &resources },
                &trusted(),
                &|_: &str| None,
                &mut publish_ok,
            );
            assert!(matches!(out, Outcome::Reject(_)));
        }
        let resources = [(POLICY_TYPE_URL, Some(view))];
        let out = s.on_response(
            &ResponseView { version_info: "4", nonce: "n", resources: &resources },
            &trusted(),
            &|_: &str| None,
            &mut publish_ok,
        );
        assert!(matches!(out, Outcome::Reject(ref r) if r.error_detail.as_deref().unwrap_or("").contains("differs")));
        assert_eq!(s.applied(), None);
    }

    #[test]
    fn a_failed_publish_is_nacked_with_the_version_still_in_force() {
        let mut s = PolicyStream::new();
        assert!(matches!(respond(&mut s, &signed("1", "{}"), "n1"), Outcome::Applied(_)));
        let mut failing = |_: VerifiedBundle| Err("set_shared_data(bundle): InternalFailure".to_string());
        let out = respond_with(&mut s, &signed("2", r#"{"models":[]}"#), "n2", &mut failing);
        let Outcome::Reject(nack) = out else { panic!("expected a NACK, got {out:?}") };
        assert_eq!(nack.version_info, "1", "the NACK names the version the workers still run, not the one that failed");
        assert_eq!(nack.response_nonce, "n2");
        assert!(nack.error_detail.unwrap_or_default().contains("could not publish"));
        assert_eq!(s.applied(), Some("1"));
        assert_eq!(s.hello().version_info, "1", "after a reconnect the node still reports what it runs");
        // The same bundle, once publishing works again, is applied: the failure left no trace.
        assert!(matches!(respond(&mut s, &signed("2", r#"{"models":[]}"#), "n3"), Outcome::Applied(_)));
        assert_eq!(s.applied(), Some("2"));
    }

    #[test]
    fn an_older_or_equal_serial_is_refused_as_a_replay() {
        let mut s = PolicyStream::new();
        assert!(matches!(respond(&mut s, &signed("5", r#"{"models":[]}"#), "a"), Outcome::Applied(_)));
        // A validly signed bundle from before (e.g. before a key was revoked).
        let mut published = 0;
        let out = respond_with(&mut s, &signed("4", "{}"), "b", &mut |_| {
            published += 1;
            Ok(())
        });
        let Outcome::Reject(nack) = out else { panic!("expected a NACK, got {out:?}") };
        assert_eq!(published, 0, "a replayed bundle is never published");
        assert_eq!(nack.version_info, "5");
        assert!(nack.error_detail.unwrap_or_default().contains("serial 4 is not newer than serial 5"));
        // The same serial with other content is refused too.
        assert!(matches!(respond(&mut s, &signed_serial("5b", 5, "{}"), "c"), Outcome::Reject(_)));
        // The bundle in force, sent again after a reconnect, is ACKed without publishing.
        let mut published = 0;
        let out = respond_with(&mut s, &signed("5", r#"{"models":[]}"#), "d", &mut |_| {
            published += 1;
            Ok(())
        });
        assert!(matches!(out, Outcome::Unchanged(ref f) if f.version_info == "5" && f.error_detail.is_none()));
        assert_eq!(published, 0);
        assert!(matches!(respond(&mut s, &signed("6", "{}"), "e"), Outcome::Applied(_)));
        assert_eq!(s.applied_serial(), Some(6));
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
