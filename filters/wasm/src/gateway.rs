//! The `cordon.gateway` role: `cordon.identity` (with limits) and `cordon.redact` in one HTTP
//! context, in the order the two-filter chain runs them: identity then redaction on the way
//! in, redaction then identity on the way out, identity's log hook first. One context instead
//! of two halves what Envoy charges per role (context creation and teardown, the calls into
//! the VM for every hook, the policy-version check), measured in `docs/benchmarks.md`; the
//! two roles stay available for operators who compose them with other filters in between.
//!
//! What each role decides is unchanged: this only sequences their hooks, as Envoy would. Two
//! things are shared instead of read twice. On the way in, redaction takes the request head and
//! body identity has already read (as identity left them, which is what redaction would read
//! from Envoy). On the way out, when the limits follow a streamed response, redaction's pass
//! over each event also reads its usage (`cordon_core::ratelimit::usage::SharedReading`), and
//! the limits take those readings for the events redaction passed unchanged instead of framing
//! and scanning the redacted stream again; the outcome is the same
//! (`Exchange::response_chunk_read`).

use crate::host::Shared;
use crate::identity::IdentityFilter;
use crate::redact::RedactFilter;
use cordon_core::redaction::session::Head;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;
use std::rc::Rc;

pub struct GatewayFilter {
    identity: IdentityFilter,
    redact: RedactFilter,
    /// Redaction has seen the request headers (it never does when identity refused first).
    redact_started: bool,
}

impl GatewayFilter {
    pub fn new(shared: Rc<Shared>, context_id: u32) -> Self {
        let mut identity = IdentityFilter::new(shared.clone(), context_id);
        // Redaction reads the request's head and body from identity's copies, not from Envoy.
        identity.keep_request();
        Self { identity, redact: RedactFilter::new(shared), redact_started: false }
    }

    fn answered(&self) -> bool {
        self.identity.refused() || self.redact.refused()
    }
}

/// Envoy continues only when every filter in the chain continues.
fn both(a: Action, b: Action) -> Action {
    if a == Action::Continue && b == Action::Continue { Action::Continue } else { Action::Pause }
}

impl Context for GatewayFilter {
    /// The rate-limit service answered identity's fleet check. Redaction already read the body
    /// (it ran while identity waited): the request goes on once identity admits it.
    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, response_size: usize) {
        if self.redact.refused() {
            return;
        }
        if self.identity.fleet_answered(token_id, status_code, response_size) == Some(true) {
            self.resume_http_request();
        }
    }
}

impl HttpContext for GatewayFilter {
    fn on_http_request_headers(&mut self, num_headers: usize, end_of_stream: bool) -> Action {
        let a = self.identity.on_http_request_headers(num_headers, end_of_stream);
        if self.identity.refused() {
            return Action::Pause;
        }
        self.redact.adopt_audit(self.identity.audit_key());
        self.redact_started = true;
        let b = match self.identity.take_kept_headers() {
            // As Envoy would answer a header read after identity's rewrite: the first value.
            Some(headers) => {
                let get = |name: &str| cordon_core::headers::first(&headers, name);
                let head = Head {
                    method: get(":method").unwrap_or(""),
                    path: get(":path").unwrap_or(""),
                    content_encoding: get("content-encoding"),
                    end_of_stream,
                };
                self.redact.request_head(&head)
            }
            None => self.redact.on_http_request_headers(num_headers, end_of_stream),
        };
        both(a, b)
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if self.answered() {
            return Action::Pause;
        }
        let a = self.identity.on_http_request_body(body_size, end_of_stream);
        if self.identity.refused() {
            return Action::Pause;
        }
        // Identity may have rewritten the body (asking a stream for its usage): redaction reads
        // what is there now, as the next filter in a chain would.
        let size = self.identity.rewritten_len().unwrap_or(body_size);
        let b = self.redact.request_body(size, end_of_stream, self.identity.take_kept_body());
        both(a, b)
    }

    fn on_http_response_headers(&mut self, num_headers: usize, end_of_stream: bool) -> Action {
        let b = if self.redact_started { self.redact.on_http_response_headers(num_headers, end_of_stream) } else { Action::Continue };
        if self.redact.refused() {
            return Action::Pause;
        }
        let a = self.identity.on_http_response_headers(num_headers, end_of_stream);
        if self.redact_started
            && let Some(reader) = self.identity.shared_reader()
        {
            // The limits read usage in redaction's pass over the stream instead of their own.
            self.redact.share_reading(reader);
        }
        both(b, a)
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let keep = self.identity.watches_response();
        let (b, size, body) = if self.redact_started {
            self.redact.response_body(body_size, end_of_stream, keep)
        } else {
            (Action::Continue, body_size, None)
        };
        if b != Action::Continue {
            // Held back (or ended) by redaction: identity sees these bytes only once released,
            // as the filter before redaction in a chain would.
            return b;
        }
        let pieces = if self.redact_started { self.redact.shared_pieces() } else { None };
        self.identity.response_body(size, end_of_stream, pieces, body)
    }

    fn on_log(&mut self) {
        self.identity.on_log();
        self.redact.on_log();
    }
}
