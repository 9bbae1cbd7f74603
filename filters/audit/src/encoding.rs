//! The canonical encoding of an [`Entry`]: exactly the bytes that are hashed, chained, signed
//! and put in the Merkle tree. Version 1, byte by byte, is in `docs/audit.md`.
//!
//! Integers are fixed-width big-endian, strings and lists carry a `u16` length, optional
//! fields a `0x00`/`0x01` tag, enums a one-byte tag, lists are strictly ascending. So every
//! entry has exactly one encoding, and [`decode`] refuses anything else: unknown versions and
//! tags, unsorted or repeated list items, zero counts, invalid identifiers and trailing bytes.

use std::collections::{BTreeMap, BTreeSet};

use thiserror::Error;

use crate::Hash;
use crate::entry::{Body, Entry, Gap, GapReason};
use crate::record::{
    Action, AuditRecord, Decision, Direction, FailOpenPaths, Ident, MAX_FAIL_OPEN_PATHS, MAX_REDACTION_KINDS, PolicyRef, Principal,
    RateLimitOutcome, RecordError, RedactionCounts, TokenUsage, UsageSource,
};

/// The encoding version this crate writes and the only one it reads.
pub const VERSION: u8 = 1;
/// Kind tag of an audit record entry.
pub const KIND_RECORD: u8 = 1;
/// Kind tag of a gap entry.
pub const KIND_GAP: u8 = 2;

/// Why bytes are not a canonical entry.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The bytes end inside a field.
    #[error("truncated: {field} at byte {at} runs past the end")]
    Truncated {
        /// The field being read.
        field: &'static str,
        /// Its offset.
        at: usize,
    },
    /// The version byte is not one this build reads.
    #[error("unknown encoding version {0} (this build reads version {VERSION})")]
    UnknownVersion(u8),
    /// A tag byte has no meaning for its field.
    #[error("{field}: tag {value} at byte {at} is not defined")]
    BadTag {
        /// The field being read.
        field: &'static str,
        /// The tag.
        value: u8,
        /// Its offset.
        at: usize,
    },
    /// A string field is not a valid identifier.
    #[error("invalid identifier: {0}")]
    BadIdent(#[from] RecordError),
    /// The field is valid but not in its one canonical form.
    #[error("{field}: not canonical at byte {at} ({why})")]
    NotCanonical {
        /// The field being read.
        field: &'static str,
        /// Its offset.
        at: usize,
        /// What rule it breaks.
        why: &'static str,
    },
    /// Bytes follow the end of the entry.
    #[error("{0} trailing bytes after the entry")]
    TrailingBytes(usize),
}

/// Encodes `entry` canonically.
pub fn encode(entry: &Entry) -> Vec<u8> {
    let mut w = Vec::with_capacity(256);
    w.push(VERSION);
    w.push(match entry.body {
        Body::Record(_) => KIND_RECORD,
        Body::Gap(_) => KIND_GAP,
    });
    put_ident(&mut w, &entry.node);
    put_u64(&mut w, entry.seq);
    w.extend_from_slice(&entry.prev);
    put_u64(&mut w, entry.time_ms);
    match &entry.body {
        Body::Record(r) => put_record(&mut w, r),
        Body::Gap(g) => {
            put_u64(&mut w, g.from);
            put_u64(&mut w, g.to);
            w.push(g.reason as u8);
        }
    }
    w
}

fn put_u64(w: &mut Vec<u8>, v: u64) {
    w.extend_from_slice(&v.to_be_bytes());
}

fn put_u16(w: &mut Vec<u8>, v: u16) {
    w.extend_from_slice(&v.to_be_bytes());
}

/// Lists and identifiers are bounded far below `u16::MAX` by construction.
fn put_len(w: &mut Vec<u8>, len: usize) {
    put_u16(w, u16::try_from(len).unwrap_or(u16::MAX));
}

fn put_ident(w: &mut Vec<u8>, v: &Ident) {
    put_len(w, v.as_str().len());
    w.extend_from_slice(v.as_str().as_bytes());
}

fn put_opt<T>(w: &mut Vec<u8>, v: Option<&T>, put: impl FnOnce(&mut Vec<u8>, &T)) {
    match v {
        None => w.push(0),
        Some(v) => {
            w.push(1);
            put(w, v);
        }
    }
}

fn put_record(w: &mut Vec<u8>, r: &AuditRecord) {
    put_ident(w, &r.request_id);
    put_opt(w, r.principal.user.as_ref(), put_ident);
    put_opt(w, r.principal.team.as_ref(), put_ident);
    put_opt(w, r.principal.app.as_ref(), put_ident);
    put_opt(w, r.principal.key_id.as_ref(), put_ident);
    put_opt(w, r.model.as_ref(), put_ident);
    put_opt(w, r.upstream.as_ref(), put_ident);
    put_opt(w, r.route.as_ref(), put_ident);
    put_opt(w, r.policy.as_ref(), |w, p| {
        put_ident(w, &p.version);
        w.extend_from_slice(&p.bundle_sha256);
    });
    w.push(r.decision as u8);
    put_ident(w, &r.reason);
    put_opt(w, r.rate_limit.as_ref(), |w, l| {
        w.push(u8::from(l.limited));
        put_ident(w, &l.bucket);
        put_u64(w, l.limit);
        put_u64(w, l.remaining);
    });
    put_len(w, r.redactions.len());
    for (detector, direction, action, n) in r.redactions.iter() {
        put_ident(w, detector);
        w.push(direction as u8);
        w.push(action as u8);
        put_u64(w, n);
    }
    put_opt(w, r.usage.as_ref(), |w, u| {
        put_u64(w, u.prompt);
        put_u64(w, u.completion);
        put_u64(w, u.total);
        w.push(u.source as u8);
    });
    put_opt(w, r.status.as_ref(), |w, s| put_u16(w, *s));
    put_u64(w, r.duration_ms);
    put_u64(w, r.bytes_in);
    put_u64(w, r.bytes_out);
    put_opt(w, r.request_digest.as_ref(), |w, d| w.extend_from_slice(d));
    put_opt(w, r.response_digest.as_ref(), |w, d| w.extend_from_slice(d));
    put_len(w, r.fail_open.len());
    for p in r.fail_open.iter() {
        put_ident(w, p);
    }
}

/// Decodes canonical bytes into an entry, refusing any other form.
pub fn decode(bytes: &[u8]) -> Result<Entry, DecodeError> {
    let mut r = Reader { bytes, at: 0 };
    let version = r.u8("version")?;
    if version != VERSION {
        return Err(DecodeError::UnknownVersion(version));
    }
    let kind_at = r.at;
    let kind = r.u8("kind")?;
    let node = r.ident("node")?;
    let seq = r.u64("seq")?;
    let prev = r.hash("prev")?;
    let time_ms = r.u64("time_ms")?;
    let body = match kind {
        KIND_RECORD => Body::Record(r.record()?),
        KIND_GAP => {
            let from_at = r.at;
            let from = r.u64("gap.from")?;
            let to = r.u64("gap.to")?;
            let reason_at = r.at;
            let reason = match r.u8("gap.reason")? {
                1 => GapReason::BufferFull,
                2 => GapReason::Shutdown,
                3 => GapReason::Restart,
                value => return Err(DecodeError::BadTag { field: "gap.reason", value, at: reason_at }),
            };
            // The gap entry takes the number right after the dropped ones.
            if from > to || to.checked_add(1) != Some(seq) {
                return Err(DecodeError::NotCanonical {
                    field: "gap",
                    at: from_at,
                    why: "a gap must cover from..=to with from <= to and to + 1 = seq",
                });
            }
            Body::Gap(Gap { from, to, reason })
        }
        value => return Err(DecodeError::BadTag { field: "kind", value, at: kind_at }),
    };
    if r.at != bytes.len() {
        return Err(DecodeError::TrailingBytes(bytes.len().saturating_sub(r.at)));
    }
    Ok(Entry { node, seq, prev, time_ms, body })
}

/// Encodes a record and the time it was written, outside any chain: what a worker hands to
/// the node's chain writer, which seals it ([`crate::chain::Chain::seal_record`]). The same
/// field encoding as in an entry, after the version byte and the time.
pub fn encode_record(time_ms: u64, record: &AuditRecord) -> Vec<u8> {
    let mut w = Vec::with_capacity(192);
    w.push(VERSION);
    put_u64(&mut w, time_ms);
    put_record(&mut w, record);
    w
}

/// Decodes [`encode_record`]'s bytes, refusing any other form.
pub fn decode_record(bytes: &[u8]) -> Result<(u64, AuditRecord), DecodeError> {
    let mut r = Reader { bytes, at: 0 };
    let version = r.u8("version")?;
    if version != VERSION {
        return Err(DecodeError::UnknownVersion(version));
    }
    let time_ms = r.u64("time_ms")?;
    let record = r.record()?;
    if r.at != bytes.len() {
        return Err(DecodeError::TrailingBytes(bytes.len().saturating_sub(r.at)));
    }
    Ok((time_ms, record))
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, field: &'static str, n: usize) -> Result<&'a [u8], DecodeError> {
        let out =
            self.at.checked_add(n).and_then(|end| self.bytes.get(self.at..end)).ok_or(DecodeError::Truncated { field, at: self.at })?;
        self.at += n;
        Ok(out)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(field, 1)?.first().copied().unwrap_or(0))
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        let mut b = [0u8; 2];
        b.copy_from_slice(self.take(field, 2)?);
        Ok(u16::from_be_bytes(b))
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(field, 8)?);
        Ok(u64::from_be_bytes(b))
    }

    fn hash(&mut self, field: &'static str) -> Result<Hash, DecodeError> {
        let mut b = [0u8; 32];
        b.copy_from_slice(self.take(field, 32)?);
        Ok(b)
    }

    fn ident(&mut self, field: &'static str) -> Result<Ident, DecodeError> {
        let len = usize::from(self.u16(field)?);
        let raw = self.take(field, len)?;
        Ident::check(field, raw)?;
        // check() admits only ASCII, so this cannot fail.
        let text = std::str::from_utf8(raw).map_err(|_| DecodeError::NotCanonical { field, at: self.at, why: "not ASCII" })?;
        Ok(Ident::new(field, text)?)
    }

    fn bool(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        let at = self.at;
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            value => Err(DecodeError::BadTag { field, value, at }),
        }
    }

    fn opt<T>(&mut self, field: &'static str, read: impl FnOnce(&mut Self) -> Result<T, DecodeError>) -> Result<Option<T>, DecodeError> {
        if self.bool(field)? { Ok(Some(read(self)?)) } else { Ok(None) }
    }

    fn tag(&mut self, field: &'static str, max: u8) -> Result<u8, DecodeError> {
        let at = self.at;
        let value = self.u8(field)?;
        if value == 0 || value > max {
            return Err(DecodeError::BadTag { field, value, at });
        }
        Ok(value)
    }

    fn record(&mut self) -> Result<AuditRecord, DecodeError> {
        let request_id = self.ident("request_id")?;
        let principal = Principal {
            user: self.opt("user", |r| r.ident("user"))?,
            team: self.opt("team", |r| r.ident("team"))?,
            app: self.opt("app", |r| r.ident("app"))?,
            key_id: self.opt("key_id", |r| r.ident("key_id"))?,
        };
        let model = self.opt("model", |r| r.ident("model"))?;
        let upstream = self.opt("upstream", |r| r.ident("upstream"))?;
        let route = self.opt("route", |r| r.ident("route"))?;
        let policy =
            self.opt("policy", |r| Ok(PolicyRef { version: r.ident("policy.version")?, bundle_sha256: r.hash("policy.bundle_sha256")? }))?;
        let decision = match self.tag("decision", 3)? {
            1 => Decision::Allow,
            2 => Decision::Refuse,
            _ => Decision::Fail,
        };
        let reason = self.ident("reason")?;
        let rate_limit = self.opt("rate_limit", |r| {
            Ok(RateLimitOutcome {
                limited: r.bool("rate_limit.limited")?,
                bucket: r.ident("rate_limit.bucket")?,
                limit: r.u64("rate_limit.limit")?,
                remaining: r.u64("rate_limit.remaining")?,
            })
        })?;
        let redactions = self.redactions()?;
        let usage = self.opt("usage", |r| {
            Ok(TokenUsage {
                prompt: r.u64("usage.prompt")?,
                completion: r.u64("usage.completion")?,
                total: r.u64("usage.total")?,
                source: if r.tag("usage.source", 2)? == 1 { UsageSource::Reported } else { UsageSource::Estimated },
            })
        })?;
        let status = self.opt("status", |r| r.u16("status"))?;
        let duration_ms = self.u64("duration_ms")?;
        let bytes_in = self.u64("bytes_in")?;
        let bytes_out = self.u64("bytes_out")?;
        let request_digest = self.opt("request_digest", |r| r.hash("request_digest"))?;
        let response_digest = self.opt("response_digest", |r| r.hash("response_digest"))?;
        let fail_open = self.fail_open()?;
        Ok(AuditRecord {
            request_id,
            principal,
            model,
            upstream,
            route,
            policy,
            decision,
            reason,
            rate_limit,
            redactions,
            usage,
            status,
            duration_ms,
            bytes_in,
            bytes_out,
            request_digest,
            response_digest,
            fail_open,
        })
    }

    fn redactions(&mut self) -> Result<RedactionCounts, DecodeError> {
        let at = self.at;
        let n = usize::from(self.u16("redactions")?);
        if n > MAX_REDACTION_KINDS {
            return Err(DecodeError::NotCanonical { field: "redactions", at, why: "more than 256 counts" });
        }
        let mut seen = BTreeMap::new();
        let mut out = RedactionCounts::default();
        for _ in 0..n {
            let at = self.at;
            let detector = self.ident("redaction.detector")?;
            let direction = if self.tag("redaction.direction", 2)? == 1 { Direction::Request } else { Direction::Response };
            let action = match self.tag("redaction.action", 5)? {
                1 => Action::Allow,
                2 => Action::Mask,
                3 => Action::Redact,
                4 => Action::Block,
                _ => Action::Pseudonymize,
            };
            let count = self.u64("redaction.count")?;
            if count == 0 {
                return Err(DecodeError::NotCanonical { field: "redaction.count", at, why: "zero counts are left out" });
            }
            let key = (detector.clone(), direction, action);
            if seen.last_key_value().is_some_and(|(last, _)| *last >= key) {
                return Err(DecodeError::NotCanonical {
                    field: "redactions",
                    at,
                    why: "counts must be strictly ascending by detector, direction, action",
                });
            }
            seen.insert(key, ());
            out.add(detector, direction, action, count)?;
        }
        Ok(out)
    }

    fn fail_open(&mut self) -> Result<FailOpenPaths, DecodeError> {
        let at = self.at;
        let n = usize::from(self.u16("fail_open")?);
        if n > MAX_FAIL_OPEN_PATHS {
            return Err(DecodeError::NotCanonical { field: "fail_open", at, why: "more than 64 paths" });
        }
        let mut seen: BTreeSet<Ident> = BTreeSet::new();
        let mut out = FailOpenPaths::default();
        for _ in 0..n {
            let at = self.at;
            let p = self.ident("fail_open")?;
            if seen.last().is_some_and(|last| *last >= p) {
                return Err(DecodeError::NotCanonical { field: "fail_open", at, why: "paths must be strictly ascending" });
            }
            seen.insert(p.clone());
            out.insert(p)?;
        }
        Ok(out)
    }
}
