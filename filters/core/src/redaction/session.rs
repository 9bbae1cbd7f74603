//! One request's redaction, host-free: the `cordon.redact` role's every decision. The adapter
//! hands in what Envoy shows it (request head, body sizes, response head, chunks) and applies
//! the step it gets back (continue, hold, replace the bytes, refuse); it decides nothing.
//!
//! Decisions made here: which requests are scanned (POST with a body), which encodings are
//! readable (`identity` only), which responses are scanned (SSE and JSON; anything else passes),
//! which stream format an unknown path gets (OpenAI chat), the JSON response cap
//! (`limits.max_response_body_bytes`), and every `on_unscannable` fork. A fail-open path taken
//! (`on_unscannable: pass`) is counted as an event and kept in [`Session::failed_open`] for the
//! audit record.

use super::{OnUnscannable, sse_format, stream_error_event};
use crate::CompiledPolicy;
use crate::encoding::is_identity;
use crate::ratelimit::usage::{Piece, SharedReading};
use crate::refusal::Refusal;
use cordon_audit::Hash;
use cordon_audit::digest::ContentKey;
use cordon_redact::{Detection, Direction, Engine, JsonVerdict, SseFormat, SseOutput, SseRedactor};
use digests::ContentDigests;
use std::collections::BTreeMap;
use std::sync::Arc;

mod digests;

/// Request headers the adapter sets on every request the session governs: responses must
/// arrive in a form Cordon can scan.
pub const FORCED_REQUEST_HEADERS: &[(&str, &str)] = &[("accept-encoding", "identity")];

/// The request head, as the adapter reads it.
#[derive(Debug, Clone, Copy)]
pub struct Head<'a> {
    /// `:method`.
    pub method: &'a str,
    /// `:path`.
    pub path: &'a str,
    /// `content-encoding`, if present.
    pub content_encoding: Option<&'a str>,
    /// Whether the request ends with its headers (no body).
    pub end_of_stream: bool,
}

/// The response head, as the adapter reads it.
#[derive(Debug, Clone, Copy)]
pub struct ResponseHead<'a> {
    /// `content-type`, if present.
    pub content_type: Option<&'a str>,
    /// `content-encoding`, if present.
    pub content_encoding: Option<&'a str>,
    /// Whether the response ends with its headers (no body).
    pub end_of_stream: bool,
}

/// What the adapter does after a header hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadStep {
    /// Let the headers go on.
    Continue,
    /// Hold the headers until the body has been judged (nothing reaches the peer yet).
    Hold,
    /// Let the headers go on without `content-length` (redaction may change the length).
    ContinueUnsized,
    /// Hold the headers, without `content-length`, until the whole body has been judged.
    HoldUnsized,
    /// Send this refusal as the local reply.
    Refuse(Refusal),
}

/// What the adapter does after a body hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyStep {
    /// Let the bytes go on as they are.
    Continue,
    /// Keep buffering (the body is judged whole at its end).
    Hold,
    /// Replace the bytes seen in this hook by these and go on (for a request body, fix
    /// `content-length` to the new length).
    Replace(Vec<u8>),
    /// Send this refusal as the local reply.
    Refuse(Refusal),
}

/// Something the adapter counts or logs (never content: detector names and reasons only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A detector matched and its action was applied.
    Detected {
        /// Request or response.
        direction: Direction,
        /// Detector name.
        detector: Arc<str>,
        /// `mask`, `redact`, `pseudonymize`, `block`, `allow`.
        action: &'static str,
    },
    /// A body was let through unscanned under `on_unscannable: pass`.
    PassedUnscanned(FailOpen),
    /// A stream already under way was ended with an error event for this refusal.
    StreamEnded(Refusal),
}

/// A fail-open path taken: which direction went through unscanned, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailOpen {
    /// Request or response.
    pub direction: Direction,
    /// Why it could not be scanned (no content).
    pub why: String,
}

enum Response {
    /// Not scanned (not text, our own local reply, or already ended).
    Pass,
    /// A streamed response, scanned as it flows.
    Stream(Box<SseRedactor>),
    /// A JSON response, buffered and scanned whole.
    Json,
    /// The stream was ended early (blocked or unscannable): whatever else arrives is dropped.
    Ended,
}

/// One request's redaction state.
pub struct Session {
    engine: Arc<Engine>,
    on_unscannable: OnUnscannable,
    format: Option<SseFormat>,
    request_limit: u64,
    response_limit: u64,
    scan_request: bool,
    response: Response,
    events: Vec<Event>,
    outcomes: BTreeMap<(Direction, Arc<str>, &'static str), u64>,
    failed_open: Vec<FailOpen>,
    /// A local reply was sent: it flows back through the response hooks untouched.
    refused: bool,
    /// Whether the request body is read (`Some(true)`), passes unread, or there is none (`None`).
    request_read: Option<bool>,
    /// Keyed content digests for the audit record, when the adapter asked for them.
    digests: Option<ContentDigests>,
    /// The limits' usage reader, run in this session's pass over a stream (combined role).
    shared: Option<SharedReading>,
    /// Room a stream's chunks are read into and redacted into, kept from chunk to chunk so
    /// that a chunk that passes unchanged allocates nothing (boxed: lent by moving a pointer).
    room: Option<Box<ChunkRoom>>,
}

/// See [`Session::room`].
#[derive(Default)]
struct ChunkRoom {
    chunk: Vec<u8>,
    out: SseOutput,
}

impl Session {
    /// Starts redaction for a request under `policy`: 503 without a policy (cold start) or
    /// without the pseudonymisation key the policy needs; otherwise the session and what to do
    /// with the request headers (set [`FORCED_REQUEST_HEADERS`] in every case).
    pub fn start(policy: Option<&CompiledPolicy>, head: &Head<'_>) -> Result<(Session, HeadStep), Refusal> {
        let policy = policy.ok_or(Refusal::PolicyUnavailable)?;
        let redaction = policy.redaction();
        let limits = policy.limits();
        let mut session = Session {
            engine: redaction.engine()?.clone(),
            on_unscannable: redaction.on_unscannable,
            format: sse_format(head.path),
            request_limit: limits.max_request_body_bytes,
            response_limit: limits.max_response_body_bytes,
            scan_request: false,
            response: Response::Pass,
            events: Vec::new(),
            outcomes: BTreeMap::new(),
            failed_open: Vec::new(),
            refused: false,
            request_read: (!head.end_of_stream).then_some(false),
            digests: None,
            shared: None,
            room: None,
        };
        if head.end_of_stream || !head.method.eq_ignore_ascii_case("POST") {
            return Ok((session, HeadStep::Continue));
        }
        if !is_identity(head.content_encoding) {
            let step = match session.unscannable(Direction::Request, "the body is compressed") {
                Some(refusal) => session.refuse_head(refusal),
                None => HeadStep::Continue,
            };
            return Ok((session, step));
        }
        session.scan_request = true;
        session.request_read = Some(true);
        Ok((session, HeadStep::Hold))
    }

    /// Keeps keyed digests of the content this session lets through (request as sent upstream,
    /// response as passed on), for the audit record; call right after [`Session::start`].
    pub fn digest_content(&mut self, key: &ContentKey) {
        self.digests = Some(ContentDigests::new(key, self.request_read));
    }

    /// The request and response content digests, if asked for and the bodies were read whole
    /// (a response the app left early: what was passed on until then).
    pub fn content_digests(&mut self) -> (Option<Hash>, Option<Hash>) {
        self.digests.take().map_or((None, None), ContentDigests::finish)
    }

    /// Reads usage for the limits in this session's own pass over the response stream (the
    /// combined role): after each response body hook, [`Session::shared_pieces`] says what each
    /// emitted event reads as, so the limits neither frame nor scan it again.
    pub fn share_reading(&mut self, reading: SharedReading) {
        self.shared = Some(reading);
    }

    /// What the last response body hook emitted, piece by piece, with each passed event's usage
    /// reading; `None` when the hook did not redact a stream chunk in full (not a stream, a
    /// block, an unscannable stream, or no reader shared).
    pub fn shared_pieces(&self) -> Option<&[Piece]> {
        self.shared.as_ref().and_then(SharedReading::pieces)
    }

    fn digest(&mut self, direction: Direction, bytes: &[u8], end: bool) {
        if let Some(d) = self.digests.as_mut() {
            d.feed(direction, bytes);
            if end {
                d.close(direction);
            }
        }
    }

    /// A refused request went nowhere (nothing to digest); a refused response had its request
    /// forwarded (that digest stands) but the app got Cordon's reply, not the response.
    fn digest_refused(&mut self, refusal: &Refusal) {
        match refusal {
            Refusal::ResponseTooLarge { .. } | Refusal::ResponseBlocked { .. } | Refusal::UnscannableResponse(_) => {
                self.digest_unread(Direction::Response)
            }
            _ => self.digests = None,
        }
    }

    fn digest_unread(&mut self, direction: Direction) {
        if let Some(d) = self.digests.as_mut() {
            d.unread(direction);
        }
    }

    /// A request body hook: `size` bytes buffered so far, `read` returns them (called only when
    /// the body is judged, at its end).
    pub fn request_body(&mut self, size: usize, end_of_stream: bool, read: impl FnOnce() -> Vec<u8>) -> BodyStep {
        if !self.scan_request {
            return BodyStep::Continue;
        }
        if size as u64 > self.request_limit {
            return self.refuse(Refusal::BodyTooLarge { limit: self.request_limit });
        }
        if !end_of_stream {
            return BodyStep::Hold;
        }
        self.scan_request = false;
        let body = read();
        match cordon_redact::redact_request(&self.engine, &body) {
            Ok(JsonVerdict::Forward { body: new, changed, detections }) => {
                self.record(Direction::Request, &detections);
                if changed {
                    self.digest(Direction::Request, &new, true);
                    BodyStep::Replace(new)
                } else {
                    self.digest(Direction::Request, &body, true);
                    BodyStep::Continue
                }
            }
            Ok(JsonVerdict::Block { block, detections }) => {
                self.record(Direction::Request, &detections);
                self.refuse(Refusal::SensitiveDataBlocked { detector: block.detector.to_string() })
            }
            Err(e) => match self.unscannable(Direction::Request, &e.to_string()) {
                Some(refusal) => self.refuse(refusal),
                None => {
                    // Unscannable, passed as it is: what went upstream is still known exactly.
                    self.digest(Direction::Request, &body, true);
                    BodyStep::Continue
                }
            },
        }
    }

    /// The response head: SSE is scanned as it flows, JSON whole; anything else passes.
    pub fn response_head(&mut self, head: &ResponseHead<'_>) -> HeadStep {
        if self.refused {
            return HeadStep::Continue;
        }
        if head.end_of_stream {
            self.digest(Direction::Response, b"", true);
            return HeadStep::Continue;
        }
        let content_type = head.content_type.unwrap_or_default().trim().to_ascii_lowercase();
        let is_sse = content_type.starts_with("text/event-stream");
        let is_json = content_type.starts_with("application/json") || content_type.contains("+json");
        if !is_sse && !is_json {
            self.digest_unread(Direction::Response);
            return HeadStep::Continue;
        }
        if !is_identity(head.content_encoding) {
            self.digest_unread(Direction::Response);
            return match self.unscannable(Direction::Response, "the response is compressed") {
                Some(refusal) => self.refuse_head(refusal),
                None => HeadStep::Continue,
            };
        }
        if is_sse {
            // An unknown path streams in the most common format; a stream of another shape is
            // then unscannable (and handled by `on_unscannable`), never passed unread.
            let format = self.format.unwrap_or(SseFormat::OpenAiChat);
            self.response = Response::Stream(Box::new(SseRedactor::new(self.engine.clone(), format)));
            HeadStep::ContinueUnsized
        } else {
            self.response = Response::Json;
            HeadStep::HoldUnsized
        }
    }

    /// A response body hook: for a stream, `size` bytes of this chunk; for JSON, `size` bytes
    /// buffered so far. `read` appends those bytes to the (empty) vector it is given, called
    /// only when they are scanned: the session lends the same room chunk after chunk.
    pub fn response_body(&mut self, size: usize, end_of_stream: bool, read: impl FnOnce(&mut Vec<u8>)) -> BodyStep {
        if let Some(shared) = self.shared.as_mut() {
            shared.begin();
        }
        match std::mem::replace(&mut self.response, Response::Pass) {
            Response::Pass => BodyStep::Continue,
            Response::Ended => {
                self.response = Response::Ended;
                if size > 0 { BodyStep::Replace(Vec::new()) } else { BodyStep::Continue }
            }
            Response::Stream(redactor) => self.stream_chunk(redactor, end_of_stream, read),
            Response::Json => {
                self.response = Response::Json;
                if size as u64 > self.response_limit {
                    self.response = Response::Pass;
                    return self.refuse(Refusal::ResponseTooLarge { limit: self.response_limit });
                }
                if !end_of_stream {
                    return BodyStep::Hold;
                }
                self.response = Response::Pass;
                let mut body = Vec::new();
                read(&mut body);
                self.json_response(&body)
            }
        }
    }

    fn stream_chunk(&mut self, mut redactor: Box<SseRedactor>, end_of_stream: bool, read: impl FnOnce(&mut Vec<u8>)) -> BodyStep {
        let mut room = self.room.take().unwrap_or_default();
        room.chunk.clear();
        read(&mut room.chunk);
        let ChunkRoom { chunk, out } = &mut *room;
        let mut result = match self.shared.as_mut() {
            Some(r) => redactor.push_observed_into(chunk, r, out),
            None => redactor.push_observed_into(chunk, &mut (), out),
        }
        .map(|()| std::mem::take(out));
        if end_of_stream && let Ok(out) = &mut result {
            let tail = match self.shared.as_mut() {
                Some(r) => redactor.finish_observed(r),
                None => redactor.finish(),
            };
            match tail {
                Ok(tail) => {
                    out.bytes.extend_from_slice(&tail.bytes);
                    out.detections.extend(tail.detections);
                    out.block = out.block.take().or(tail.block);
                }
                Err(e) => result = Err(e),
            }
        }
        match result {
            Ok(out) => {
                self.record(Direction::Response, &out.detections);
                if let Some(block) = out.block {
                    return self.end_stream(out.bytes, Refusal::ResponseBlocked { detector: block.detector.to_string() });
                }
                if let Some(r) = self.shared.as_mut() {
                    r.complete();
                }
                self.response = Response::Stream(redactor);
                self.digest(Direction::Response, &out.bytes, end_of_stream);
                // Most chunks are whole events that pass unchanged: no copy back into the host,
                // and the room is kept for the next chunk.
                if out.bytes == room.chunk {
                    room.out = out;
                    self.room = Some(room);
                    BodyStep::Continue
                } else {
                    self.room = Some(room);
                    BodyStep::Replace(out.bytes)
                }
            }
            Err(e) => match self.unscannable(Direction::Response, &e.to_string()) {
                Some(refusal) => self.end_stream(Vec::new(), refusal),
                // Already-scanned text was emitted; from here on the raw stream flows.
                None => {
                    self.digest_unread(Direction::Response);
                    BodyStep::Continue
                }
            },
        }
    }

    fn json_response(&mut self, body: &[u8]) -> BodyStep {
        match cordon_redact::redact_response(&self.engine, body) {
            Ok(JsonVerdict::Forward { body: new, changed, detections }) => {
                self.record(Direction::Response, &detections);
                if changed {
                    self.digest(Direction::Response, &new, true);
                    BodyStep::Replace(new)
                } else {
                    self.digest(Direction::Response, body, true);
                    BodyStep::Continue
                }
            }
            Ok(JsonVerdict::Block { block, detections }) => {
                self.record(Direction::Response, &detections);
                self.refuse(Refusal::ResponseBlocked { detector: block.detector.to_string() })
            }
            Err(e) => match self.unscannable(Direction::Response, &e.to_string()) {
                Some(refusal) => self.refuse(refusal),
                None => {
                    self.digest(Direction::Response, body, true);
                    BodyStep::Continue
                }
            },
        }
    }

    /// The stream is under way (headers sent): end it with the provider's error event.
    fn end_stream(&mut self, mut prefix: Vec<u8>, refusal: Refusal) -> BodyStep {
        prefix.extend_from_slice(&stream_error_event(self.format, &refusal));
        // What the app got: the settled text, the error event, then nothing more.
        self.digest(Direction::Response, &prefix, true);
        self.events.push(Event::StreamEnded(refusal));
        self.response = Response::Ended;
        BodyStep::Replace(prefix)
    }

    /// A local reply: it flows back through the response hooks, which must let it pass.
    fn refuse(&mut self, refusal: Refusal) -> BodyStep {
        self.digest_refused(&refusal);
        self.response = Response::Pass;
        self.scan_request = false;
        self.refused = true;
        BodyStep::Refuse(refusal)
    }

    fn refuse_head(&mut self, refusal: Refusal) -> HeadStep {
        self.digest_refused(&refusal);
        self.response = Response::Pass;
        self.scan_request = false;
        self.refused = true;
        HeadStep::Refuse(refusal)
    }

    /// The one `on_unscannable` fork: the refusal to send, or `None` after recording the
    /// fail-open path taken.
    fn unscannable(&mut self, direction: Direction, why: &str) -> Option<Refusal> {
        match self.on_unscannable {
            OnUnscannable::Block => Some(match direction {
                Direction::Request => Refusal::UnscannableRequest(why.to_owned()),
                Direction::Response => Refusal::UnscannableResponse(why.to_owned()),
            }),
            OnUnscannable::Pass => {
                let open = FailOpen { direction, why: why.to_owned() };
                self.failed_open.push(open.clone());
                self.events.push(Event::PassedUnscanned(open));
                None
            }
        }
    }

    fn record(&mut self, direction: Direction, detections: &[Detection]) {
        for d in detections {
            let action = d.action.as_str();
            *self.outcomes.entry((direction, d.detector.clone(), action)).or_default() += 1;
            self.events.push(Event::Detected { direction, detector: d.detector.clone(), action });
        }
    }

    /// Events since the last call, for the adapter's counters and logs.
    pub fn drain_events(&mut self) -> std::vec::Drain<'_, Event> {
        self.events.drain(..)
    }

    /// Whether there are events to drain (most stream chunks have none).
    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// Outcome counts so far (direction, detector, action) → matches: for the audit record.
    pub fn outcomes(&self) -> &BTreeMap<(Direction, Arc<str>, &'static str), u64> {
        &self.outcomes
    }

    /// Every fail-open path taken, in order: the audit record marks the request failed-open.
    pub fn failed_open(&self) -> &[FailOpen] {
        &self.failed_open
    }
}

#[cfg(test)]
mod tests;
