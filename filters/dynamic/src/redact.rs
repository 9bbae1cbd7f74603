//! The `cordon.redact` role as a native filter: moves bytes between Envoy and
//! `cordon_core::redaction::session::Session`, which makes every decision (what is scanned, which
//! encodings are readable, size caps, `on_unscannable`), and applies the step it returns. The
//! same steps as the wasm adapter's `redact.rs`.
//!
//! Body sizes and reads are "what Envoy buffered for this filter plus this hook's chunk": for a
//! body the session holds, that is the body so far; for a stream it lets flow, only the chunk
//! (nothing is buffered), exactly the proxy-wasm semantics the session was written against.

use crate::abi::{DataStatus, Direction, HeaderKind, HeadersStatus, HttpFilter, LogLevel, Stream};
use crate::shared::{Shared, send_refusal};
use cordon_core::Refusal;
use cordon_core::audit::assembly::Role;
use cordon_core::ratelimit::usage::{Piece, SharedReading};
use cordon_core::redaction::session::{BodyStep, Event, FORCED_REQUEST_HEADERS, Head, HeadStep, ResponseHead, Session};
use std::sync::Arc;

pub struct RedactFilter {
    shared: Arc<Shared>,
    /// Boxed: each hook lends it out by moving a pointer, not the whole session.
    session: Option<Box<Session>>,
    /// This request's audit draft (joined from the role before, or opened), when audit
    /// delivery is set up.
    audit: Option<u64>,
    /// A local reply was sent.
    refused: bool,
}

fn log(level: LogLevel, msg: &str) {
    crate::abi::log(level, msg);
}

impl RedactFilter {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared, session: None, audit: None, refused: false }
    }

    fn refuse(&mut self, s: &Stream, refusal: &Refusal) {
        self.refused = true;
        crate::audit_trail::with(self.audit, |d| d.refused(refusal));
        self.shared.count(s, refusal.code());
        log(LogLevel::Info, &format!("redact: refused {} ({})", refusal.status(), refusal.code()));
        send_refusal(s, refusal);
    }

    /// Counts and logs what the session reported (detector names and reasons, never content).
    fn drain_events(&mut self, s: &Stream) {
        let Some(session) = self.session.as_mut().filter(|s| s.has_events()) else { return };
        let events: Vec<Event> = session.drain_events().collect();
        for event in events {
            match event {
                Event::Detected { direction, detector, action } => self.shared.count_redaction(s, direction.as_str(), &detector, action),
                Event::PassedUnscanned(open) => {
                    self.shared.count_redaction(s, open.direction.as_str(), "unscannable", "pass");
                    log(
                        LogLevel::Warn,
                        &format!(
                            "redact: {} body passed unscanned by policy (on_unscannable: pass): {}",
                            open.direction.as_str(),
                            open.why
                        ),
                    );
                }
                Event::StreamEnded(refusal) => {
                    crate::audit_trail::with(self.audit, |d| d.ended(refusal.code()));
                    self.shared.count(s, refusal.code());
                    log(LogLevel::Warn, &format!("redact: ended the stream ({})", refusal.code()));
                }
            }
        }
    }

    fn head_status(&mut self, s: &Stream, step: HeadStep, kind: HeaderKind) -> HeadersStatus {
        match step {
            HeadStep::Continue => HeadersStatus::Continue,
            HeadStep::Hold => HeadersStatus::StopIteration,
            HeadStep::ContinueUnsized => {
                s.set_header(kind, "content-length", None);
                HeadersStatus::Continue
            }
            HeadStep::HoldUnsized => {
                s.set_header(kind, "content-length", None);
                HeadersStatus::StopIteration
            }
            HeadStep::Refuse(refusal) => {
                self.refuse(s, &refusal);
                HeadersStatus::StopIteration
            }
        }
    }

    fn body_status(&mut self, s: &Stream, step: BodyStep, direction: Direction) -> DataStatus {
        match step {
            BodyStep::Continue => DataStatus::Continue,
            BodyStep::Hold => DataStatus::StopIterationAndBuffer,
            BodyStep::Replace(body) => {
                s.replace_body(direction, &body);
                if direction == Direction::Request {
                    s.set_header(HeaderKind::Request, "content-length", Some(&body.len().to_string()));
                }
                DataStatus::Continue
            }
            BodyStep::Refuse(refusal) => {
                self.refuse(s, &refusal);
                DataStatus::StopIterationNoBuffer
            }
        }
    }
}

impl RedactFilter {
    /// Joins the audit draft the role before it opened in this same filter (`cordon.gateway`:
    /// no filter-state round trip).
    pub fn adopt_audit(&mut self, key: Option<u64>) {
        self.audit = crate::audit_trail::join(key, Role::Redact);
    }

    /// Whether this role answered the request itself (a local reply is on its way).
    pub fn refused(&self) -> bool {
        self.refused
    }

    /// The request head, read from Envoy by this role or handed over by the role before it in
    /// the same filter.
    pub fn request_head(&mut self, s: &Stream, head: &Head<'_>) -> HeadersStatus {
        if self.audit.is_none() {
            self.audit = crate::audit_trail::join_or_open(s, Role::Redact, || s.header(HeaderKind::Request, "x-request-id"));
        }
        let policy = self.shared.policy();
        let (mut session, step) = match Session::start(policy.as_deref(), head) {
            Ok(started) => started,
            Err(refusal) => {
                self.refuse(s, &refusal);
                return HeadersStatus::StopIteration;
            }
        };
        if let Some(key) = crate::audit_trail::content_key(self.audit) {
            session.digest_content(key);
        }
        self.session = Some(Box::new(session));
        for (name, value) in FORCED_REQUEST_HEADERS {
            s.set_header(HeaderKind::Request, name, Some(value));
        }
        self.drain_events(s);
        self.head_status(s, step, HeaderKind::Request)
    }

    /// A request body hook; `body` is the whole body so far when the role before this one in
    /// the same filter already holds it (read once from Envoy, not twice).
    pub fn request_body_given(&mut self, s: &Stream, end_of_stream: bool, body: Option<Vec<u8>>) -> DataStatus {
        let Some(mut session) = self.session.take() else { return DataStatus::Continue };
        let size = body.as_ref().map_or_else(|| s.body_len(Direction::Request), Vec::len);
        let step = session.request_body(size, end_of_stream, || body.unwrap_or_else(|| s.body(Direction::Request)));
        self.session = Some(session);
        self.drain_events(s);
        self.body_status(s, step, Direction::Request)
    }

    /// Runs the limits' usage reader in this role's pass over the response stream.
    pub fn share_reading(&mut self, reading: SharedReading) {
        if let Some(session) = self.session.as_mut() {
            session.share_reading(reading);
        }
    }

    /// What the last response body hook emitted, as the shared reader read it.
    pub fn shared_pieces(&self) -> Option<&[Piece]> {
        self.session.as_deref().and_then(Session::shared_pieces)
    }

    /// The response-body step and, with `keep`, the body as Envoy now holds it when this step
    /// read or wrote it: for the role that reads the body after redaction in the same filter,
    /// without reading it from Envoy again.
    pub fn response_body_kept(&mut self, s: &Stream, end_of_stream: bool, keep: bool) -> (DataStatus, Option<Vec<u8>>) {
        let Some(mut session) = self.session.take() else { return (DataStatus::Continue, None) };
        let mut read = None;
        let step = session.response_body(s.body_len(Direction::Response), end_of_stream, |body| {
            s.append_body_so_far(Direction::Response, body);
            if keep {
                read = Some(body.clone());
            }
        });
        self.session = Some(session);
        self.drain_events(s);
        // What was read is what Envoy holds only if it was not replaced.
        let now = match &step {
            BodyStep::Replace(body) if keep => Some(body.clone()),
            BodyStep::Replace(_) => None,
            _ => read,
        };
        (self.body_status(s, step, Direction::Response), now)
    }
}

impl HttpFilter for RedactFilter {
    fn request_headers(&mut self, s: &mut Stream, end_of_stream: bool) -> HeadersStatus {
        let method = s.header(HeaderKind::Request, ":method").unwrap_or_default();
        let path = s.header(HeaderKind::Request, ":path").unwrap_or_default();
        let encoding = s.header(HeaderKind::Request, "content-encoding");
        self.request_head(s, &Head { method: &method, path: &path, content_encoding: encoding.as_deref(), end_of_stream })
    }

    fn request_body(&mut self, s: &Stream, end_of_stream: bool) -> DataStatus {
        self.request_body_given(s, end_of_stream, None)
    }

    fn response_headers(&mut self, s: &Stream, end_of_stream: bool) -> HeadersStatus {
        let Some(mut session) = self.session.take() else { return HeadersStatus::Continue };
        let content_type = s.header(HeaderKind::Response, "content-type");
        let encoding = s.header(HeaderKind::Response, "content-encoding");
        let head = ResponseHead { content_type: content_type.as_deref(), content_encoding: encoding.as_deref(), end_of_stream };
        let step = session.response_head(&head);
        self.session = Some(session);
        self.drain_events(s);
        self.head_status(s, step, HeaderKind::Response)
    }

    fn response_body(&mut self, s: &Stream, end_of_stream: bool) -> DataStatus {
        self.response_body_kept(s, end_of_stream, false).0
    }

    fn complete(&mut self, s: &Stream) {
        if let Some(session) = self.session.as_mut() {
            let (request, response) = session.content_digests();
            crate::audit_trail::with(self.audit, |d| {
                d.redactions(session.outcomes());
                d.failed_open(session.failed_open());
                d.digests(request, response);
            });
        }
        crate::audit_trail::leave(s, self.audit, Role::Redact);
        let Some(session) = &self.session else { return };
        if !session.outcomes().is_empty() {
            // Counts only: never the matched text.
            let summary: Vec<String> = session.outcomes().iter().map(|((d, det, a), n)| format!("{}:{det}:{a}={n}", d.as_str())).collect();
            log(LogLevel::Debug, &format!("redact: outcomes {}", summary.join(" ")));
        }
    }
}
