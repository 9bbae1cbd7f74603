//! The `cordon.redact` HTTP filter: moves bytes between Envoy and
//! `cordon_core::redaction::session::Session`, which makes every decision (what is scanned, which
//! encodings are readable, size caps, `on_unscannable`), and applies the step it returns.

use crate::host::Shared;
use cordon_core::Refusal;
use cordon_core::audit::assembly::Role;
use cordon_core::ratelimit::usage::{Piece, SharedReading};
use cordon_core::redaction::session::{BodyStep, Event, FORCED_REQUEST_HEADERS, Head, HeadStep, ResponseHead, Session};
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, LogLevel};
use std::rc::Rc;

pub struct RedactFilter {
    shared: Rc<Shared>,
    /// Boxed: each hook lends it out by moving a pointer, not the whole session.
    session: Option<Box<Session>>,
    /// This request's audit draft, shared with the roles before this one.
    audit: Option<u64>,
    /// A local reply was sent.
    refused: bool,
}

fn log(level: LogLevel, msg: &str) {
    let _ = proxy_wasm::hostcalls::log(level, msg);
}

impl RedactFilter {
    pub fn new(shared: Rc<Shared>) -> Self {
        Self { shared, session: None, audit: None, refused: false }
    }

    fn refuse(&mut self, refusal: &Refusal) -> Action {
        self.refused = true;
        crate::audit_trail::with(self.audit, |d| d.refused(refusal));
        self.shared.decisions.count(refusal.code());
        log(LogLevel::Info, &format!("redact: refused {} ({})", refusal.status(), refusal.code()));
        crate::host::send_refusal(refusal);
        Action::Pause
    }

    /// Counts and logs what the session reported (detector names and reasons, never content).
    fn drain_events(&mut self) {
        let Some(session) = self.session.as_mut().filter(|s| s.has_events()) else { return };
        for event in session.drain_events() {
            match event {
                Event::Detected { direction, detector, action } => self.shared.count_redaction(direction.as_str(), &detector, action),
                Event::PassedUnscanned(open) => {
                    self.shared.count_redaction(open.direction.as_str(), "unscannable", "pass");
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
                    self.shared.decisions.count(refusal.code());
                    log(LogLevel::Warn, &format!("redact: ended the stream ({})", refusal.code()));
                }
            }
        }
    }

    fn body_action(&mut self, step: BodyStep, replace: impl FnOnce(&Self, &[u8])) -> Action {
        match step {
            BodyStep::Continue => Action::Continue,
            BodyStep::Hold => Action::Pause,
            BodyStep::Replace(body) => {
                replace(self, &body);
                Action::Continue
            }
            BodyStep::Refuse(refusal) => self.refuse(&refusal),
        }
    }

    fn head_action(&mut self, step: HeadStep, remove_length: impl FnOnce(&Self)) -> Action {
        match step {
            HeadStep::Continue => Action::Continue,
            HeadStep::Hold => Action::Pause,
            HeadStep::ContinueUnsized => {
                remove_length(self);
                Action::Continue
            }
            HeadStep::HoldUnsized => {
                remove_length(self);
                Action::Pause
            }
            HeadStep::Refuse(refusal) => self.refuse(&refusal),
        }
    }
}

impl RedactFilter {
    /// Joins the audit draft a role before it opened in this same context (the combined role:
    /// no filter-state round trip).
    pub fn adopt_audit(&mut self, key: Option<u64>) {
        self.audit = crate::audit_trail::join(key, Role::Redact);
    }

    /// The request head (read from Envoy by this role, or handed over by the role before it in
    /// the same context).
    pub fn request_head(&mut self, head: &Head<'_>) -> Action {
        if self.audit.is_none() {
            self.audit = crate::audit_trail::join_or_open(Role::Redact, || self.get_http_request_header("x-request-id"));
        }
        let policy = self.shared.policy.borrow().clone();
        let (mut session, step) = match Session::start(policy.as_deref(), head) {
            Ok(started) => started,
            Err(refusal) => return self.refuse(&refusal),
        };
        if let Some(key) = crate::audit_trail::content_key(self.audit) {
            session.digest_content(&key);
        }
        self.session = Some(Box::new(session));
        for (name, value) in FORCED_REQUEST_HEADERS {
            self.set_http_request_header(name, Some(value));
        }
        self.drain_events();
        self.head_action(step, |_| {})
    }

    /// A request body chunk; `body` is the whole body when the role before this one in the same
    /// context already holds it (read once from Envoy, not twice).
    pub fn request_body(&mut self, body_size: usize, end_of_stream: bool, body: Option<Vec<u8>>) -> Action {
        let Some(mut session) = self.session.take() else { return Action::Continue };
        let step = session.request_body(body_size, end_of_stream, || {
            body.unwrap_or_else(|| self.get_http_request_body(0, body_size).unwrap_or_default())
        });
        self.session = Some(session);
        self.drain_events();
        self.body_action(step, |this, body| {
            this.set_http_request_body(0, body_size, body);
            this.set_http_request_header("content-length", Some(&body.len().to_string()));
        })
    }

    /// Whether this role answered the request itself (a local reply is on its way).
    pub fn refused(&self) -> bool {
        self.refused
    }

    /// Runs the limits' usage reader in this role's pass over the response stream (combined role).
    pub fn share_reading(&mut self, reading: SharedReading) {
        if let Some(session) = self.session.as_mut() {
            session.share_reading(reading);
        }
    }

    /// What the last response body hook emitted, as the shared reader read it.
    pub fn shared_pieces(&self) -> Option<&[Piece]> {
        self.session.as_deref().and_then(Session::shared_pieces)
    }

    /// The response-body step, the body's size after it (changed when redaction replaced it),
    /// and, with `keep`, the body as Envoy now holds it when this step read or wrote it: for a
    /// role that reads the body after redaction in the same context, without reading it from
    /// Envoy again.
    pub fn response_body(&mut self, body_size: usize, end_of_stream: bool, keep: bool) -> (Action, usize, Option<Vec<u8>>) {
        let Some(mut session) = self.session.take() else { return (Action::Continue, body_size, None) };
        let mut read = None;
        let step = session.response_body(body_size, end_of_stream, |room| {
            // The host hands the body over in memory it allocated for it: taken as the room.
            *room = self.get_http_response_body(0, body_size).unwrap_or_default();
            if keep {
                read = Some(room.clone());
            }
        });
        self.session = Some(session);
        self.drain_events();
        // What was read is what Envoy holds only if it was not replaced.
        let (size, mut now) = match &step {
            BodyStep::Replace(body) => (body.len(), None),
            _ => (body_size, read),
        };
        let action = self.body_action(step, |this, body| {
            this.set_http_response_body(0, body_size, body);
            if keep {
                now = Some(body.to_vec());
            }
        });
        (action, size, now)
    }
}

impl Context for RedactFilter {}

impl HttpContext for RedactFilter {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let method = self.get_http_request_header(":method").unwrap_or_default();
        let path = self.get_http_request_header(":path").unwrap_or_default();
        let encoding = self.get_http_request_header("content-encoding");
        self.request_head(&Head { method: &method, path: &path, content_encoding: encoding.as_deref(), end_of_stream })
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.request_body(body_size, end_of_stream, None)
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(mut session) = self.session.take() else { return Action::Continue };
        let content_type = self.get_http_response_header("content-type");
        let encoding = self.get_http_response_header("content-encoding");
        let head = ResponseHead { content_type: content_type.as_deref(), content_encoding: encoding.as_deref(), end_of_stream };
        let step = session.response_head(&head);
        self.session = Some(session);
        self.drain_events();
        self.head_action(step, |this| this.set_http_response_header("content-length", None))
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.response_body(body_size, end_of_stream, false).0
    }

    fn on_log(&mut self) {
        if let Some(session) = self.session.as_mut() {
            let (request, response) = session.content_digests();
            crate::audit_trail::with(self.audit, |d| {
                d.redactions(session.outcomes());
                d.failed_open(session.failed_open());
                d.digests(request, response);
            });
        }
        crate::audit_trail::leave(self.audit, Role::Redact);
        let Some(session) = &self.session else { return };
        if !session.outcomes().is_empty() {
            // Counts only: never the matched text.
            let summary: Vec<String> = session.outcomes().iter().map(|((d, det, a), n)| format!("{}:{det}:{a}={n}", d.as_str())).collect();
            log(LogLevel::Debug, &format!("redact: outcomes {}", summary.join(" ")));
        }
    }
}
