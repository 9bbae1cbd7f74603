//! The `cordon.redact` HTTP filter: request prompts are scanned (JSON stays valid, length fixed
//! up) before anything goes upstream; streamed responses are scanned event by event as they pass
//! (rewrite and Continue, no whole-stream buffering); JSON responses are scanned whole. All
//! decisions are `cordon-redact`'s; this is glue.

use crate::host::Shared;
use cordon_core::redaction::{self, OnUnscannable};
use cordon_core::{CompiledPolicy, Refusal};
use cordon_redact::{Detection, Direction, Engine, JsonVerdict, SseFormat, SseRedactor};
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, LogLevel};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

enum Response {
    /// Not scanned (not text, or already ended).
    Pass,
    /// A streamed response, scanned as it flows.
    Stream(Box<SseRedactor>),
    /// A JSON response, buffered and scanned whole.
    Json,
    /// The stream was ended early (blocked or unscannable): drop whatever else arrives.
    Ended,
}

pub struct RedactFilter {
    shared: Rc<Shared>,
    policy: Option<Rc<CompiledPolicy>>,
    engine: Option<Arc<Engine>>,
    format: Option<SseFormat>,
    scan_request: bool,
    response: Response,
    /// Outcome counts for this request (detector, direction, action) — for audit and metrics.
    outcomes: BTreeMap<(Direction, String, &'static str), u64>,
    refused: bool,
}

fn log(level: LogLevel, msg: &str) {
    let _ = proxy_wasm::hostcalls::log(level, msg);
}

fn is_identity(encoding: Option<&str>) -> bool {
    encoding.is_none_or(|e| e.trim().is_empty() || e.trim().eq_ignore_ascii_case("identity"))
}

impl RedactFilter {
    pub fn new(shared: Rc<Shared>) -> Self {
        let policy = shared.policy.borrow().clone();
        Self {
            shared,
            policy,
            engine: None,
            format: None,
            scan_request: false,
            response: Response::Pass,
            outcomes: BTreeMap::new(),
            refused: false,
        }
    }

    fn on_unscannable(&self) -> OnUnscannable {
        self.policy.as_ref().map_or(OnUnscannable::Block, |p| p.redaction().on_unscannable)
    }

    fn refuse(&mut self, refusal: &Refusal) -> Action {
        self.refused = true;
        // Our own local reply flows through the response hooks: let it pass untouched.
        self.response = Response::Pass;
        self.shared.decisions.count(refusal.code());
        log(LogLevel::Info, &format!("redact: refused {} ({})", refusal.status(), refusal.code()));
        self.send_http_response(
            u32::from(refusal.status()),
            vec![("content-type", "application/json"), ("x-cordon-error", refusal.code())],
            Some(&refusal.body()),
        );
        Action::Pause
    }

    fn record(&mut self, dir: Direction, detections: &[Detection]) {
        for d in detections {
            *self.outcomes.entry((dir, d.detector.to_string(), d.action.as_str())).or_default() += 1;
            self.shared.count_redaction(dir.as_str(), &d.detector, d.action.as_str());
        }
    }

    /// Counts an unscannable body let through under `on_unscannable: pass` (never silently).
    fn passed_unscanned(&self, dir: Direction, why: &str) {
        self.shared.count_redaction(dir.as_str(), "unscannable", "pass");
        log(LogLevel::Warn, &format!("redact: {} body passed unscanned by policy (on_unscannable: pass): {why}", dir.as_str()));
    }

    fn end_stream_with(&mut self, body_size: usize, mut prefix: Vec<u8>, refusal: &Refusal) {
        prefix.extend_from_slice(&redaction::stream_error_event(self.format, refusal));
        self.shared.decisions.count(refusal.code());
        self.set_http_response_body(0, body_size, &prefix);
        self.response = Response::Ended;
    }
}

impl Context for RedactFilter {}

impl HttpContext for RedactFilter {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(policy) = self.policy.clone() else { return self.refuse(&Refusal::PolicyUnavailable) };
        let engine = match policy.redaction().engine() {
            Ok(e) => e.clone(),
            Err(r) => return self.refuse(&r),
        };
        self.engine = Some(engine);
        let path = self.get_http_request_header(":path").unwrap_or_default();
        self.format = redaction::sse_format(&path);
        // Responses must arrive in a form Cordon can scan.
        self.set_http_request_header("accept-encoding", Some("identity"));
        if end_of_stream || self.get_http_request_header(":method").as_deref() != Some("POST") {
            return Action::Continue;
        }
        if !is_identity(self.get_http_request_header("content-encoding").as_deref()) {
            match self.on_unscannable() {
                OnUnscannable::Block => return self.refuse(&Refusal::UnscannableRequest("the body is compressed".into())),
                OnUnscannable::Pass => {
                    self.passed_unscanned(Direction::Request, "compressed body");
                    return Action::Continue;
                }
            }
        }
        self.scan_request = true;
        // Hold the headers: nothing reaches the upstream before the prompt has been scanned.
        Action::Pause
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !self.scan_request {
            return Action::Continue;
        }
        let (Some(policy), Some(engine)) = (self.policy.clone(), self.engine.clone()) else { return Action::Continue };
        let limit = policy.limits().max_request_body_bytes;
        if body_size as u64 > limit {
            return self.refuse(&Refusal::BodyTooLarge { limit });
        }
        if !end_of_stream {
            return Action::Pause;
        }
        let body = self.get_http_request_body(0, body_size).unwrap_or_default();
        match cordon_redact::redact_request(&engine, &body) {
            Ok(JsonVerdict::Forward { body: new, changed, detections }) => {
                self.record(Direction::Request, &detections);
                if changed {
                    self.set_http_request_body(0, body_size, &new);
                    self.set_http_request_header("content-length", Some(&new.len().to_string()));
                }
                Action::Continue
            }
            Ok(JsonVerdict::Block { block, detections }) => {
                self.record(Direction::Request, &detections);
                self.refuse(&Refusal::SensitiveDataBlocked { detector: block.detector.to_string() })
            }
            Err(e) => match self.on_unscannable() {
                OnUnscannable::Block => self.refuse(&Refusal::UnscannableRequest(e.to_string())),
                OnUnscannable::Pass => {
                    self.passed_unscanned(Direction::Request, &e.to_string());
                    Action::Continue
                }
            },
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(engine) = self.engine.clone() else { return Action::Continue };
        if self.refused || end_of_stream {
            return Action::Continue;
        }
        let content_type = self.get_http_response_header("content-type").unwrap_or_default().to_ascii_lowercase();
        let is_sse = content_type.starts_with("text/event-stream");
        let is_json = content_type.starts_with("application/json") || content_type.contains("+json");
        if !is_sse && !is_json {
            return Action::Continue;
        }
        if !is_identity(self.get_http_response_header("content-encoding").as_deref()) {
            return match self.on_unscannable() {
                OnUnscannable::Block => self.refuse(&Refusal::UnscannableResponse("the response is compressed".into())),
                OnUnscannable::Pass => {
                    self.passed_unscanned(Direction::Response, "compressed response");
                    Action::Continue
                }
            };
        }
        // Redaction changes lengths.
        self.set_http_response_header("content-length", None);
        if is_sse {
            self.response = Response::Stream(Box::new(SseRedactor::new(engine, self.format.unwrap_or(SseFormat::OpenAiChat))));
            Action::Continue
        } else {
            self.response = Response::Json;
            Action::Pause
        }
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        match std::mem::replace(&mut self.response, Response::Pass) {
            Response::Pass => Action::Continue,
            Response::Ended => {
                if body_size > 0 {
                    self.set_http_response_body(0, body_size, &[]);
                }
                self.response = Response::Ended;
                Action::Continue
            }
            Response::Stream(mut redactor) => {
                let chunk = self.get_http_response_body(0, body_size).unwrap_or_default();
                let mut result = redactor.push(&chunk);
                if end_of_stream && let Ok(out) = &mut result {
                    match redactor.finish() {
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
                        if let Some(block) = &out.block {
                            let refusal = Refusal::ResponseBlocked { detector: block.detector.to_string() };
                            self.end_stream_with(body_size, out.bytes, &refusal);
                        } else {
                            // Most chunks are whole events that pass unchanged: skip the copy
                            // back into Envoy (a host call and a buffer rewrite per chunk).
                            if out.bytes != chunk {
                                self.set_http_response_body(0, body_size, &out.bytes);
                            }
                            self.response = Response::Stream(redactor);
                        }
                    }
                    Err(e) => match self.on_unscannable() {
                        OnUnscannable::Block => {
                            log(LogLevel::Warn, &format!("redact: ending stream: {e}"));
                            self.end_stream_with(body_size, Vec::new(), &Refusal::UnscannableResponse(e.to_string()));
                        }
                        OnUnscannable::Pass => {
                            // Already-scanned text was emitted; from here on the raw stream flows.
                            self.passed_unscanned(Direction::Response, &e.to_string());
                        }
                    },
                }
                Action::Continue
            }
            Response::Json => {
                self.response = Response::Json;
                let limit = self.policy.as_ref().map_or(0, |p| p.limits().max_model_list_bytes.max(p.limits().max_request_body_bytes) * 4);
                if body_size as u64 > limit {
                    return self.refuse(&Refusal::UnscannableResponse(format!("the response exceeds {limit} bytes")));
                }
                if !end_of_stream {
                    return Action::Pause;
                }
                let Some(engine) = self.engine.clone() else { return Action::Continue };
                let body = self.get_http_response_body(0, body_size).unwrap_or_default();
                self.response = Response::Pass;
                match cordon_redact::redact_response(&engine, &body) {
                    Ok(JsonVerdict::Forward { body: new, changed, detections }) => {
                        self.record(Direction::Response, &detections);
                        if changed {
                            self.set_http_response_body(0, body_size, &new);
                        }
                        Action::Continue
                    }
                    Ok(JsonVerdict::Block { block, detections }) => {
                        self.record(Direction::Response, &detections);
                        self.refuse(&Refusal::ResponseBlocked { detector: block.detector.to_string() })
                    }
                    Err(e) => match self.on_unscannable() {
                        OnUnscannable::Block => self.refuse(&Refusal::UnscannableResponse(e.to_string())),
                        OnUnscannable::Pass => {
                            self.passed_unscanned(Direction::Response, &e.to_string());
                            Action::Continue
                        }
                    },
                }
            }
        }
    }

    fn on_log(&mut self) {
        if !self.outcomes.is_empty() {
            // Counts only: never the matched text.
            let summary: Vec<String> = self.outcomes.iter().map(|((d, det, a), n)| format!("{}:{det}:{a}={n}", d.as_str())).collect();
            log(LogLevel::Debug, &format!("redact: outcomes {}", summary.join(" ")));
        }
    }
}
