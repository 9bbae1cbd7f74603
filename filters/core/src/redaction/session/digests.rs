//! Keyed digests of the content a session let through, for the audit record: the request body
//! as it went upstream and the response body as `cordon.redact` passed it on to the app, both
//! after redaction (`cordon_audit::digest`). A body Cordon did not read in full (passed unscanned,
//! refused, or never completed) has no digest: the record then says nothing it cannot stand by.

use cordon_audit::Hash;
use cordon_audit::digest::{ContentDigest, ContentKey};
use cordon_audit::record::Direction;

enum Part {
    /// Content is being fed; `fed` tells an empty body from one that never began.
    Open { digest: ContentDigest, fed: bool },
    /// The body ended and every forwarded byte was fed.
    Done(Hash),
    /// Some of the body went on without being read: no digest.
    Unread,
}

impl Part {
    fn feed(&mut self, bytes: &[u8]) {
        if let Part::Open { digest, fed } = self {
            digest.update(bytes);
            *fed = true;
        }
    }

    fn close(&mut self) {
        if let Part::Open { digest, .. } = std::mem::replace(self, Part::Unread) {
            *self = Part::Done(digest.finish());
        }
    }

    /// The digest, or what a body still open at the end amounts to: a response cut short by the
    /// app leaving was forwarded up to there (digest of that prefix), a request body that never
    /// ended never went upstream (none).
    fn finish(self, partial_counts: bool) -> Option<Hash> {
        match self {
            Part::Done(h) => Some(h),
            Part::Open { digest, fed } if fed && partial_counts => Some(digest.finish()),
            Part::Open { .. } | Part::Unread => None,
        }
    }
}

/// The request and response digests of one session.
pub(super) struct ContentDigests {
    request: Part,
    response: Part,
}

impl ContentDigests {
    /// Digests under `key`; the request part starts done (empty) when the request has no body,
    /// unread when its body passes without being read.
    pub(super) fn new(key: &ContentKey, request_read: Option<bool>) -> Self {
        let request = match request_read {
            None => Part::Done(key.digest(Direction::Request, b"")),
            Some(true) => Part::Open { digest: key.start(Direction::Request), fed: false },
            Some(false) => Part::Unread,
        };
        ContentDigests { request, response: Part::Open { digest: key.start(Direction::Response), fed: false } }
    }

    fn part(&mut self, direction: cordon_redact::Direction) -> &mut Part {
        match direction {
            cordon_redact::Direction::Request => &mut self.request,
            cordon_redact::Direction::Response => &mut self.response,
        }
    }

    /// Bytes forwarded in `direction`.
    pub(super) fn feed(&mut self, direction: cordon_redact::Direction, bytes: &[u8]) {
        self.part(direction).feed(bytes);
    }

    /// The body in `direction` ended; everything forwarded was fed.
    pub(super) fn close(&mut self, direction: cordon_redact::Direction) {
        self.part(direction).close();
    }

    /// Bytes in `direction` went (or will go) on unread, or the body was refused.
    pub(super) fn unread(&mut self, direction: cordon_redact::Direction) {
        *self.part(direction) = Part::Unread;
    }

    /// The request and response digests.
    pub(super) fn finish(self) -> (Option<Hash>, Option<Hash>) {
        (self.request.finish(false), self.response.finish(true))
    }
}
