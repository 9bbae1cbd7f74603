//! The `cordon.gateway` role as a native filter: `cordon.identity` (with limits) and
//! `cordon.redact` in one filter, in the order the two-filter chain runs them: identity then
//! redaction on the way in, redaction then identity on the way out, identity's end first. The
//! same sequencing as the wasm adapter's `gateway.rs`. Natively one filter instead of two saves
//! little of Envoy's own work (about 2 k instructions a request, `docs/benchmarks.md`); what it
//! saves is the second read of the request and of each streamed event. The two roles stay
//! available for operators who put other filters between them.
//!
//! What each role decides is unchanged: this only sequences their hooks, as Envoy would. Two
//! things are handed over instead of read twice. On the way in, redaction takes the request
//! head and body identity already read (as identity left them, which is what redaction would
//! read from Envoy). On the way out, when the limits follow a streamed response, redaction's
//! pass over each event also reads its usage (`cordon_core::ratelimit::usage::SharedReading`),
//! and the limits take those readings and the chunk as redaction left it instead of reading,
//! framing and scanning it again; the outcome is the same (`Exchange::response_chunk_read`).

use crate::abi::{CalloutEvent, DataStatus, HeadersStatus, HttpFilter, Stream};
use crate::identity::IdentityFilter;
use crate::redact::RedactFilter;
use crate::shared::Shared;
use cordon_core::redaction::session::Head;
use std::sync::Arc;

pub struct GatewayFilter {
    identity: IdentityFilter,
    redact: RedactFilter,
    /// Redaction has seen the request headers (it never does when identity refused first).
    redact_started: bool,
}

impl GatewayFilter {
    /// Both roles for one stream, sharing the configuration.
    pub fn new(shared: Arc<Shared>) -> Self {
        let mut identity = IdentityFilter::new(shared.clone());
        // Redaction reads the request's head and body from identity's copies, not from Envoy.
        identity.keep_request();
        Self { identity, redact: RedactFilter::new(shared), redact_started: false }
    }

    fn answered(&self) -> bool {
        self.identity.refused() || self.redact.refused()
    }
}

/// Envoy continues only when every filter in the chain continues; a stop without buffering
/// (a local reply went out) outranks holding, which outranks continuing.
fn headers_both(a: HeadersStatus, b: HeadersStatus) -> HeadersStatus {
    if a as u32 >= b as u32 { a } else { b }
}

fn data_both(a: DataStatus, b: DataStatus) -> DataStatus {
    if a as u32 >= b as u32 { a } else { b }
}

impl HttpFilter for GatewayFilter {
    fn request_headers(&mut self, s: &mut Stream, end_of_stream: bool) -> HeadersStatus {
        let a = self.identity.request_headers(s, end_of_stream);
        if self.identity.refused() {
            return HeadersStatus::StopIteration;
        }
        self.redact.adopt_audit(self.identity.audit_key());
        self.redact_started = true;
        let b = match self.identity.take_kept_head() {
            Some(kept) => {
                let head =
                    Head { method: &kept.method, path: &kept.path, content_encoding: kept.content_encoding.as_deref(), end_of_stream };
                self.redact.request_head(s, &head)
            }
            None => self.redact.request_headers(s, end_of_stream),
        };
        headers_both(a, b)
    }

    fn request_body(&mut self, s: &Stream, end_of_stream: bool) -> DataStatus {
        if self.answered() {
            return DataStatus::StopIterationNoBuffer;
        }
        let a = self.identity.request_body(s, end_of_stream);
        if self.identity.refused() {
            return DataStatus::StopIterationNoBuffer;
        }
        // Identity may have rewritten the body (asking a stream for its usage): redaction reads
        // what is there now, as the next filter in a chain would.
        let b = self.redact.request_body_given(s, end_of_stream, self.identity.take_kept_body());
        data_both(a, b)
    }

    fn response_headers(&mut self, s: &Stream, end_of_stream: bool) -> HeadersStatus {
        let b = if self.redact_started { self.redact.response_headers(s, end_of_stream) } else { HeadersStatus::Continue };
        if self.redact.refused() {
            return HeadersStatus::StopIteration;
        }
        let a = self.identity.response_headers(s, end_of_stream);
        if self.redact_started
            && let Some(reader) = self.identity.shared_reader()
        {
            // The limits read usage in redaction's pass over the stream instead of their own.
            self.redact.share_reading(reader);
        }
        headers_both(b, a)
    }

    fn response_body(&mut self, s: &Stream, end_of_stream: bool) -> DataStatus {
        if !self.redact_started {
            return self.identity.response_body(s, end_of_stream);
        }
        let keep = self.identity.watches_response();
        let (b, body) = self.redact.response_body_kept(s, end_of_stream, keep);
        if b != DataStatus::Continue {
            // Held back (or ended) by redaction: identity sees these bytes only once released,
            // as the filter after redaction in a chain would.
            return b;
        }
        let pieces = self.redact.shared_pieces();
        self.identity.response_body_after(s, end_of_stream, pieces, body)
    }

    fn complete(&mut self, s: &Stream) {
        self.identity.complete(s);
        self.redact.complete(s);
    }

    /// The rate-limit service answered identity's fleet check. Redaction already read the body
    /// (it ran while identity waited): the request goes on once identity admits it.
    fn http_stream(&mut self, s: &Stream, id: u64, event: CalloutEvent) -> bool {
        if self.redact.refused() {
            return false;
        }
        self.identity.http_stream(s, id, event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_combined_status_is_what_envoy_would_do_with_two_filters() {
        use DataStatus::{Continue, StopIterationAndBuffer as Hold, StopIterationNoBuffer as Stop};
        // The request goes on only when both roles let it; a local reply is never buffered for.
        for (a, b, both) in
            [(Continue, Continue, Continue), (Continue, Hold, Hold), (Hold, Continue, Hold), (Hold, Stop, Stop), (Stop, Hold, Stop)]
        {
            assert_eq!(data_both(a, b), both, "{a:?} + {b:?}");
        }
        assert_eq!(headers_both(HeadersStatus::Continue, HeadersStatus::StopIteration), HeadersStatus::StopIteration);
        assert_eq!(headers_both(HeadersStatus::StopIteration, HeadersStatus::Continue), HeadersStatus::StopIteration);
        assert_eq!(headers_both(HeadersStatus::Continue, HeadersStatus::Continue), HeadersStatus::Continue);
    }
}
