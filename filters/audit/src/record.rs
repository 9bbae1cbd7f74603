//! The audit record: one per request, written when the exchange ends.
//!
//! The types cannot carry prompt or response text: content appears only as keyed 32-byte
//! digests, and every string is an [`Ident`], a bounded run of printable ASCII without spaces.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use thiserror::Error;

use crate::Hash;

/// The longest identifier, in bytes (the longest model name the filter accepts).
pub const MAX_IDENT_BYTES: usize = 256;
/// The most distinct (detector, direction, action) counts in one record.
pub const MAX_REDACTION_KINDS: usize = 256;
/// The most distinct fail-open paths in one record.
pub const MAX_FAIL_OPEN_PATHS: usize = 64;

/// Why a record could not be built. Messages never echo the rejected value: it may be
/// something that must not reach the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RecordError {
    /// An identifier was empty.
    #[error("{field}: identifier is empty")]
    Empty {
        /// The field being set.
        field: &'static str,
    },
    /// An identifier was longer than [`MAX_IDENT_BYTES`].
    #[error("{field}: identifier is {len} bytes, at most {MAX_IDENT_BYTES} are allowed")]
    TooLong {
        /// The field being set.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
    },
    /// An identifier held a byte outside printable ASCII (0x21..=0x7E).
    #[error("{field}: byte {at} is not printable ASCII without spaces")]
    NotPrintable {
        /// The field being set.
        field: &'static str,
        /// The offset of the first offending byte.
        at: usize,
    },
    /// More distinct redaction counts than [`MAX_REDACTION_KINDS`].
    #[error("more than {MAX_REDACTION_KINDS} distinct redaction counts")]
    TooManyRedactionKinds,
    /// More distinct fail-open paths than [`MAX_FAIL_OPEN_PATHS`].
    #[error("more than {MAX_FAIL_OPEN_PATHS} distinct fail-open paths")]
    TooManyFailOpenPaths,
    /// A redaction count overflowed.
    #[error("redaction count overflowed")]
    CountOverflow,
    /// The content digest key is shorter than 32 bytes.
    #[error("the content digest key must be at least 32 bytes, got {0}")]
    WeakContentKey(usize),
}

/// A bounded identifier: 1..=256 bytes of printable ASCII without spaces.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ident(String);

impl Ident {
    /// Validates `value` as an identifier; `field` names it in the error.
    pub fn new(field: &'static str, value: &str) -> Result<Self, RecordError> {
        Self::check(field, value.as_bytes())?;
        Ok(Self(value.to_owned()))
    }

    /// An identifier from any text, never refused: bytes outside printable ASCII, and `%`,
    /// are percent-escaped (`%C3%A9`), the result is cut at [`MAX_IDENT_BYTES`] on an escape
    /// boundary, and empty text becomes `-`. For values a record must keep whatever they hold
    /// (a user name in any script), recognisably.
    pub fn escaped(value: &str) -> Self {
        let mut out = String::with_capacity(value.len().min(MAX_IDENT_BYTES));
        for b in value.bytes() {
            let plain = (0x21..=0x7e).contains(&b) && b != b'%';
            if out.len() + if plain { 1 } else { 3 } > MAX_IDENT_BYTES {
                break;
            }
            if plain {
                out.push(char::from(b));
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        if out.is_empty() {
            out.push('-');
        }
        Self(out)
    }

    /// Checks the identifier rules on raw bytes.
    pub(crate) fn check(field: &'static str, value: &[u8]) -> Result<(), RecordError> {
        if value.is_empty() {
            return Err(RecordError::Empty { field });
        }
        if value.len() > MAX_IDENT_BYTES {
            return Err(RecordError::TooLong { field, len: value.len() });
        }
        if let Some(at) = value.iter().position(|b| !(0x21..=0x7e).contains(b)) {
            return Err(RecordError::NotPrintable { field, at });
        }
        Ok(())
    }

    /// The identifier as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who made the request, as identity resolved it. Never the key itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Principal {
    /// The user, if known.
    pub user: Option<Ident>,
    /// The team, if known.
    pub team: Option<Ident>,
    /// The calling app, if known.
    pub app: Option<Ident>,
    /// The id of the API key used (not the key).
    pub key_id: Option<Ident>,
}

/// The policy the decision was made under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRef {
    /// The policy version.
    pub version: Ident,
    /// SHA-256 of the signed policy bundle.
    pub bundle_sha256: Hash,
}

/// What Cordon decided about the exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Decision {
    /// Let through.
    Allow = 1,
    /// Refused by Cordon (identity, model, limit, redaction block, ...).
    Refuse = 2,
    /// Let through, but the exchange failed (upstream error, client abort); the reason says which.
    Fail = 3,
}

/// The rate-limit outcome of the most constraining limit that applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitOutcome {
    /// Whether the request was limited.
    pub limited: bool,
    /// Which bucket (e.g. `team:payments/tokens/min`).
    pub bucket: Ident,
    /// The bucket's limit.
    pub limit: u64,
    /// What remained after this request.
    pub remaining: u64,
}

/// Which way content flowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    /// App to model.
    Request = 1,
    /// Model to app.
    Response = 2,
}

/// What a detector match led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    /// Detected and let through.
    Allow = 1,
    /// Masked in place.
    Mask = 2,
    /// Replaced by a placeholder.
    Redact = 3,
    /// The exchange was blocked.
    Block = 4,
    /// Replaced by a keyed pseudonym.
    Pseudonymize = 5,
}

/// Redaction outcome counts: detector × direction × action → count (never zero).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedactionCounts(BTreeMap<(Ident, Direction, Action), u64>);

impl RedactionCounts {
    /// Adds `n` matches of `detector` in `direction` that led to `action`.
    pub fn add(&mut self, detector: Ident, direction: Direction, action: Action, n: u64) -> Result<(), RecordError> {
        if n == 0 {
            return Ok(());
        }
        let key = (detector, direction, action);
        if !self.0.contains_key(&key) && self.0.len() >= MAX_REDACTION_KINDS {
            return Err(RecordError::TooManyRedactionKinds);
        }
        let slot = self.0.entry(key).or_insert(0);
        *slot = slot.checked_add(n).ok_or(RecordError::CountOverflow)?;
        Ok(())
    }

    /// The counts in canonical order.
    pub fn iter(&self) -> impl Iterator<Item = (&Ident, Direction, Action, u64)> {
        self.0.iter().map(|((d, dir, a), n)| (d, *dir, *a, *n))
    }

    /// The number of distinct counts.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether nothing was counted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Whether token counts came from the model's `usage` or Cordon's estimate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageSource {
    /// Reported by the model.
    Reported = 1,
    /// Estimated by Cordon.
    Estimated = 2,
}

/// Token usage of the exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenUsage {
    /// Prompt tokens.
    pub prompt: u64,
    /// Completion tokens.
    pub completion: u64,
    /// Total tokens (as reported; not forced to prompt + completion).
    pub total: u64,
    /// Reported or estimated.
    pub source: UsageSource,
}

/// The fail-open paths the exchange took (e.g. `on_unscannable_pass`), each once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FailOpenPaths(BTreeSet<Ident>);

impl FailOpenPaths {
    /// Records that `path` was taken.
    pub fn insert(&mut self, path: Ident) -> Result<(), RecordError> {
        if !self.0.contains(&path) && self.0.len() >= MAX_FAIL_OPEN_PATHS {
            return Err(RecordError::TooManyFailOpenPaths);
        }
        self.0.insert(path);
        Ok(())
    }

    /// The paths in canonical order.
    pub fn iter(&self) -> impl Iterator<Item = &Ident> {
        self.0.iter()
    }

    /// The number of paths.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no fail-open path was taken.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// One audit record: what happened to one request. Time and node live in the chain entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// The request id (e.g. `x-request-id`).
    pub request_id: Ident,
    /// Who made the request.
    pub principal: Principal,
    /// The model asked for, if it was read.
    pub model: Option<Ident>,
    /// The upstream (cluster or provider) the request went to.
    pub upstream: Option<Ident>,
    /// The route that matched.
    pub route: Option<Ident>,
    /// The policy in force, if one was loaded.
    pub policy: Option<PolicyRef>,
    /// The decision.
    pub decision: Decision,
    /// The reason code (e.g. `ok`, `model_not_allowed`, `client_abort`).
    pub reason: Ident,
    /// The rate-limit outcome, if limits applied.
    pub rate_limit: Option<RateLimitOutcome>,
    /// Redaction outcome counts.
    pub redactions: RedactionCounts,
    /// Token usage, if known.
    pub usage: Option<TokenUsage>,
    /// The HTTP status sent to the app, if a response was sent.
    pub status: Option<u16>,
    /// Duration of the exchange in milliseconds.
    pub duration_ms: u64,
    /// Bytes received from the app.
    pub bytes_in: u64,
    /// Bytes sent to the app.
    pub bytes_out: u64,
    /// Keyed digest of the request content after redaction ([`crate::digest`]).
    pub request_digest: Option<Hash>,
    /// Keyed digest of the response content after redaction.
    pub response_digest: Option<Hash>,
    /// The fail-open paths taken.
    pub fail_open: FailOpenPaths,
}

impl AuditRecord {
    /// A record with only the required fields set; fill the rest in place.
    pub fn new(request_id: Ident, decision: Decision, reason: Ident) -> Self {
        Self {
            request_id,
            principal: Principal::default(),
            model: None,
            upstream: None,
            route: None,
            policy: None,
            decision,
            reason,
            rate_limit: None,
            redactions: RedactionCounts::default(),
            usage: None,
            status: None,
            duration_ms: 0,
            bytes_in: 0,
            bytes_out: 0,
            request_digest: None,
            response_digest: None,
            fail_open: FailOpenPaths::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_bounded_printable_ascii() {
        assert!(Ident::new("model", "gpt-4o").is_ok());
        assert_eq!(Ident::new("model", ""), Err(RecordError::Empty { field: "model" }));
        assert_eq!(Ident::new("model", "a b"), Err(RecordError::NotPrintable { field: "model", at: 1 }));
        assert_eq!(Ident::new("user", "é"), Err(RecordError::NotPrintable { field: "user", at: 0 }));
        assert!(Ident::new("route", &"x".repeat(256)).is_ok());
        assert_eq!(Ident::new("route", &"x".repeat(257)), Err(RecordError::TooLong { field: "route", len: 257 }));
    }

    #[test]
    fn escaped_identifiers_keep_any_text_within_the_rules() {
        assert_eq!(Ident::escaped("alice").as_str(), "alice");
        assert_eq!(Ident::escaped("José M").as_str(), "Jos%C3%A9%20M");
        assert_eq!(Ident::escaped("50%").as_str(), "50%25");
        assert_eq!(Ident::escaped("").as_str(), "-");
        let long = Ident::escaped(&"é".repeat(200));
        assert!(long.as_str().len() <= MAX_IDENT_BYTES && long.as_str().len().is_multiple_of(3));
        for s in ["a\u{0}b", "\u{202e}x", &"y".repeat(300), " "] {
            let i = Ident::escaped(s);
            assert!(Ident::new("t", i.as_str()).is_ok(), "{s:?} -> {i:?}");
        }
    }

    #[test]
    fn redaction_counts_merge_and_skip_zero() {
        let mut c = RedactionCounts::default();
        let email = Ident::new("detector", "email").unwrap();
        c.add(email.clone(), Direction::Request, Action::Mask, 2).unwrap();
        c.add(email.clone(), Direction::Request, Action::Mask, 3).unwrap();
        c.add(email, Direction::Response, Action::Block, 0).unwrap();
        assert_eq!(c.iter().map(|(_, _, _, n)| n).collect::<Vec<_>>(), vec![5]);
    }
}
