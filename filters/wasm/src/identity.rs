//! The `cordon.identity` HTTP filter: identity, header hygiene, credential injection, model
//! access, and rate and token limits, applied as `cordon-core` decides.
//!
//! Limits run in this role rather than a third one: the principal and the model are already in
//! hand here (no second body parse, no hand-over through headers a misordered chain could
//! spoof), and each role costs a fixed price per request in Envoy.

use crate::host::Shared;
use crate::shared_counters::SharedData;
use cordon_core::pipeline::{self, BodyStage, ResponseStage};
use cordon_core::ratelimit::Caller;
use cordon_core::ratelimit::exchange::{ChunkStep, Exchange};
use cordon_core::ratelimit::fleet::{FleetOutcome, RlsResponse};
use cordon_core::ratelimit::usage::{Piece, SharedReading};
use cordon_core::{Admitted, CompiledPolicy, HeadVerdict, Refusal, RequestHead};
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, LogLevel};
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

pub struct IdentityFilter {
    shared: Rc<Shared>,
    /// The policy snapshot this request runs under from start to end.
    policy: Option<Rc<CompiledPolicy>>,
    admitted: Option<Admitted>,
    refused: bool,
    /// The request's metering under the rate and token limits, if any limit matched.
    exchange: Option<Exchange>,
    /// Whether the response body is read (token usage) or rewritten (cut, usage chunk).
    watch_response: bool,
    path: String,
    /// This request's audit draft, when audit delivery is set up.
    audit: Option<u64>,
    /// The request body's length after this role rewrote it, if it did.
    rewritten_len: Option<usize>,
    /// The fleet check in flight (the request waits for it).
    rls_call: Option<u32>,
    /// This HTTP context's id.
    context_id: u32,
    /// Keep the request's headers and body, as this role leaves them, for the role after it in
    /// the same context (`cordon.gateway`): it reads them from here instead of from Envoy.
    keep_request: bool,
    /// The request headers as rewritten by this role (when `keep_request`).
    kept_headers: Option<Vec<(String, String)>>,
    /// The request body as this role read it or rewrote it (when `keep_request`).
    kept_body: Option<Vec<u8>>,
}

impl IdentityFilter {
    pub fn new(shared: Rc<Shared>, context_id: u32) -> Self {
        let policy = shared.policy.borrow().clone();
        Self {
            shared,
            policy,
            admitted: None,
            refused: false,
            exchange: None,
            watch_response: false,
            path: String::new(),
            audit: None,
            rewritten_len: None,
            rls_call: None,
            context_id,
            keep_request: false,
            kept_headers: None,
            kept_body: None,
        }
    }

    /// Keeps the request's headers and body as this role leaves them for the next role in the
    /// same context, which then reads no host copy of its own (`cordon.gateway`).
    pub fn keep_request(&mut self) {
        self.keep_request = true;
    }

    /// The request headers as this role rewrote them, once (when kept).
    pub fn take_kept_headers(&mut self) -> Option<Vec<(String, String)>> {
        self.kept_headers.take()
    }

    /// The request body as this role read or rewrote it, once (when kept and read).
    pub fn take_kept_body(&mut self) -> Option<Vec<u8>> {
        self.kept_body.take()
    }

    fn property(&self, path: &[&str]) -> Option<String> {
        self.get_property(path.to_vec()).and_then(|b| String::from_utf8(b).ok()).filter(|s| !s.is_empty())
    }

    fn refuse(&mut self, refusal: &Refusal) -> Action {
        self.refused = true;
        crate::audit_trail::with(self.audit, |d| d.refused(refusal));
        self.shared.decisions.count(refusal.code());
        let _ = proxy_wasm::hostcalls::log(LogLevel::Info, &format!("refused {} ({})", refusal.status(), refusal.code()));
        crate::host::send_refusal(refusal);
        Action::Pause
    }

    fn now(&self) -> u64 {
        self.get_current_time().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
    }

    fn now_ns(&self) -> u64 {
        self.get_current_time().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }

    /// Ends the metering once (response end, or the exchange aborted): reconcile reservations.
    fn finish_exchange(&mut self) {
        let (Some(policy), Some(mut x)) = (self.policy.clone(), self.exchange.take()) else { return };
        let now = self.now_ns();
        match x.finish(policy.rate_limits(), &SharedData, now) {
            Ok(usage) => {
                crate::audit_trail::with(self.audit, |d| {
                    d.usage(&usage);
                    if x.was_cut() {
                        d.ended(x.cut_code());
                    }
                });
                let limits = policy.rate_limits();
                if let (Some(svc), Some(req)) = (limits.service(), x.fleet_settlement(limits, now)) {
                    crate::fleet::send_detached(self.shared.root_context, self.context_id, &svc.cluster, svc.timeout_ms, &req);
                }
            }
            Err(e) => {
                let _ = proxy_wasm::hostcalls::log(LogLevel::Warn, &format!("rate limits: could not reconcile usage: {}", e.message()));
            }
        }
    }
}

impl IdentityFilter {
    /// Whether this role answered the request itself (a local reply is on its way).
    pub fn refused(&self) -> bool {
        self.refused
    }

    /// The request body's length if this role rewrote it (the next role must read that much).
    pub fn rewritten_len(&self) -> Option<usize> {
        self.rewritten_len
    }

    /// This request's audit draft key, for the roles after this one in the same context.
    pub fn audit_key(&self) -> Option<u64> {
        self.audit
    }

    /// The usage reader for redaction to run in its pass over the response stream, when the
    /// limits follow one (the combined role: one framing and one scan per event).
    pub fn shared_reader(&self) -> Option<SharedReading> {
        if !self.watch_response {
            return None;
        }
        self.exchange.as_ref().and_then(Exchange::shared_reader)
    }

    /// Whether this role reads the response body as it streams (token usage, a cut).
    pub fn watches_response(&self) -> bool {
        self.watch_response
    }

    /// A response body chunk, with what redaction's pass over it read and the body as redaction
    /// left it in Envoy, when it has it (combined role: no second read from Envoy).
    pub fn response_body(&mut self, body_size: usize, end_of_stream: bool, pieces: Option<&[Piece]>, body: Option<Vec<u8>>) -> Action {
        if self.watch_response {
            let chunk = match body {
                Some(body) => body,
                None => self.get_http_response_body(0, body_size).unwrap_or_default(),
            };
            let step = self.exchange.as_mut().map_or(ChunkStep::Continue, |x| x.response_chunk_read(&chunk, pieces, end_of_stream));
            if let ChunkStep::Replace(bytes) = step {
                self.set_http_response_body(0, body_size, &bytes);
            }
            if end_of_stream {
                self.watch_response = false;
                self.finish_exchange();
            }
            return Action::Continue;
        }
        self.model_list_body(body_size, end_of_stream)
    }
}

impl Context for IdentityFilter {
    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, response_size: usize) {
        if self.fleet_answered(token_id, status_code, response_size) == Some(true) {
            self.resume_http_request();
        }
    }
}

impl HttpContext for IdentityFilter {
    /// The exchange ended: a client abort or a reset never reached the end of the response, so
    /// its reservation is reconciled here (counted from what was streamed, else kept).
    fn on_log(&mut self) {
        self.finish_exchange();
        crate::audit_trail::leave(self.audit, cordon_core::audit::assembly::Role::Identity);
    }

    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let headers = self.get_http_request_headers();
        crate::faults::maybe_trap(&headers);
        let pseudo = |name: &str| headers.iter().find(|(k, _)| k == name).map_or("", |(_, v)| v.as_str());
        // Opened before the policy check: a request refused at a cold start is on the record too.
        self.audit = crate::audit_trail::open(cordon_core::audit::assembly::Role::Identity, pseudo("x-request-id"));
        let Some(policy) = self.policy.clone() else {
            return self.refuse(&Refusal::PolicyUnavailable);
        };
        if self.audit.is_some() {
            let (version, sha) = self.shared.policy_ref.borrow().clone();
            crate::audit_trail::with(self.audit, |d| d.policy(&version, &sha));
        }
        if !crate::audit_trail::admits_request(&policy) {
            return self.refuse(&Refusal::AuditUnavailable);
        }
        self.path = pseudo(":path").to_owned();
        // Properties cost a host call each: read them only when the policy can use them.
        let peer = if policy.uses_mesh_identity() { self.property(&["connection", "uri_san_peer_certificate"]) } else { None };
        let cluster = if policy.injects_credentials() { self.property(&["xds", "cluster_name"]) } else { None };
        let borrowed: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let head = RequestHead {
            method: pseudo(":method"),
            path: pseudo(":path"),
            headers: &borrowed,
            peer_uri_san: peer.as_deref(),
            cluster: cluster.as_deref(),
            now: self.now(),
        };
        let verdict = pipeline::evaluate_head(&policy, &mut self.shared.tokens.borrow_mut(), &head);
        let admitted = match verdict {
            HeadVerdict::Refuse(r) => return self.refuse(&r),
            HeadVerdict::Admit(a) => *a,
        };
        crate::audit_trail::with(self.audit, |d| {
            d.identity(&admitted.identity);
            d.route(&admitted.route);
        });
        let rewritten = cordon_core::headers::rewrite(&headers, &admitted.headers);
        self.set_http_request_headers(rewritten.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect());
        if self.keep_request {
            self.kept_headers = Some(rewritten);
        }
        let needs_body = admitted.body != BodyStage::None;
        self.admitted = Some(admitted);
        if !needs_body {
            self.shared.decisions.count("allowed");
            return Action::Continue;
        }
        if end_of_stream {
            // A POST without a body still has to name a model.
            return self.judge_body(&policy, &[]);
        }
        // Hold the headers until the body has named an allowed model.
        Action::Pause
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let (Some(policy), Some(admitted)) = (self.policy.clone(), self.admitted.as_ref()) else {
            return Action::Continue;
        };
        let BodyStage::ReadModel { limit } = admitted.body else {
            return Action::Continue;
        };
        if body_size as u64 > limit {
            return self.refuse(&Refusal::BodyTooLarge { limit });
        }
        if !end_of_stream {
            return Action::Pause;
        }
        let body = self.get_http_request_body(0, body_size).unwrap_or_default();
        let action = self.judge_body(&policy, &body);
        if self.keep_request && self.kept_body.is_none() && !self.refused {
            // Unchanged by this role (a rewritten body was kept by `judge_body`).
            self.kept_body = Some(body);
        }
        action
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        if self.refused {
            return Action::Continue;
        }
        if let Some(mut x) = self.exchange.take() {
            let status = self.get_http_response_header(":status").and_then(|s| s.parse().ok()).unwrap_or(0);
            crate::audit_trail::with(self.audit, |d| d.status(status));
            let content_type = self.get_http_response_header("content-type");
            self.watch_response = x.response_head(status, content_type.as_deref()) && !end_of_stream;
            let rewrites = x.rewrites_stream();
            for (name, value) in x.response_headers() {
                self.set_http_response_header(&name, Some(&value));
            }
            self.exchange = Some(x);
            if rewrites {
                self.set_http_response_header("content-length", None);
            }
            if !self.watch_response {
                self.finish_exchange();
            }
        }
        if end_of_stream || !self.filters_model_list() {
            return Action::Continue;
        }
        if self.get_http_response_header(":status").as_deref() != Some("200") {
            // Errors from upstream carry no model list; pass them through as they are.
            self.admitted = None;
            return Action::Continue;
        }
        // The filtered list has a different length.
        self.set_http_response_header("content-length", None);
        Action::Pause
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.response_body(body_size, end_of_stream, None, None)
    }
}

impl IdentityFilter {
    /// A response body that is not a followed stream: the model list to filter, or nothing.
    fn model_list_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let ResponseStage::FilterModelList { limit } = self.admitted.as_ref().map_or(ResponseStage::PassThrough, |a| a.response) else {
            return Action::Continue;
        };
        if body_size as u64 > limit {
            return self.refuse(&Refusal::UpstreamResponseInvalid);
        }
        if !end_of_stream {
            return Action::Pause;
        }
        let (Some(policy), Some(admitted)) = (self.policy.clone(), self.admitted.as_ref()) else {
            return Action::Continue;
        };
        let body = self.get_http_response_body(0, body_size).unwrap_or_default();
        match cordon_core::access::filter_model_list(&policy, &admitted.identity.principal, &body) {
            Ok(filtered) => {
                self.set_http_response_body(0, body_size, &filtered);
                Action::Continue
            }
            Err(r) => self.refuse(&r),
        }
    }
}

impl IdentityFilter {
    fn filters_model_list(&self) -> bool {
        matches!(self.admitted.as_ref().map(|a| a.response), Some(ResponseStage::FilterModelList { .. }))
    }

    fn judge_body(&mut self, policy: &CompiledPolicy, body: &[u8]) -> Action {
        let Some(admitted) = self.admitted.as_ref() else { return Action::Continue };
        let model = match pipeline::evaluate_body(policy, admitted, body) {
            Ok(model) => model,
            Err(r) => return self.refuse(&r),
        };
        crate::audit_trail::with(self.audit, |d| d.model(&model));
        let who = Caller { principal: &admitted.identity.principal, key_id: admitted.identity.key_id.as_deref(), model: &model };
        match Exchange::begin(policy.rate_limits(), &who, &self.path, body, &SharedData, self.now_ns()) {
            Err(r) => return self.refuse(&r),
            Ok(None) => {}
            Ok(Some((x, rewritten))) => {
                crate::metrics::count_evictions(x.evictions());
                crate::metrics::count_cas_retries(x.cas_retries());
                if let Some((name, limit, remaining)) = x.tightest(policy.rate_limits()) {
                    crate::audit_trail::with(self.audit, |d| d.rate_limit(name, limit, remaining));
                }
                if let Some(new) = rewritten {
                    self.set_http_request_body(0, body.len(), &new);
                    self.rewritten_len = Some(new.len());
                    self.set_http_request_header("content-length", Some(&new.len().to_string()));
                    if self.keep_request {
                        self.kept_body = Some(new);
                    }
                }
                let call = match (x.fleet_request(), policy.rate_limits().service()) {
                    (Some(req), Some(svc)) => Some(
                        self.dispatch_grpc_call(
                            &svc.cluster,
                            cordon_proto::rls::SERVICE,
                            cordon_proto::rls::METHOD,
                            vec![],
                            Some(&cordon_core::ratelimit::fleet::wire::encode(req)),
                            Duration::from_millis(svc.timeout_ms),
                        )
                        .map_err(|status| format!("cannot call cluster '{}': {status:?}", svc.cluster)),
                    ),
                    _ => None,
                };
                self.exchange = Some(x);
                match call {
                    // Wait for the fleet-wide verdict.
                    Some(Ok(token)) => {
                        self.rls_call = Some(token);
                        return Action::Pause;
                    }
                    Some(Err(why)) => {
                        if !self.judge_fleet(Err(why)) {
                            return Action::Pause;
                        }
                        return Action::Continue;
                    }
                    None => {}
                }
            }
        }
        self.shared.decisions.count("allowed");
        Action::Continue
    }

    /// The answer to this request's fleet check: `Some(true)` admitted (resume the request),
    /// `Some(false)` refused (a local reply is on its way), `None` when `token` is not it.
    pub fn fleet_answered(&mut self, token: u32, status_code: u32, size: usize) -> Option<bool> {
        if self.rls_call != Some(token) {
            return None;
        }
        self.rls_call = None;
        Some(self.judge_fleet(crate::fleet::answer(status_code, size)))
    }

    /// Applies the fleet verdict; true when the request may go on.
    fn judge_fleet(&mut self, answer: Result<RlsResponse, String>) -> bool {
        let (Some(policy), Some(mut x)) = (self.policy.clone(), self.exchange.take()) else { return true };
        match x.fleet_answer(policy.rate_limits(), answer, &SharedData, self.now_ns()) {
            Ok(outcome) => {
                if let FleetOutcome::FailedOpen(why) = outcome {
                    crate::metrics::count_fail_open();
                    crate::audit_trail::with(self.audit, |d| d.rate_limit_failed_open());
                    let _ = proxy_wasm::hostcalls::log(
                        LogLevel::Warn,
                        &format!(
                            "rate limits: the rate-limit service is unavailable ({why}); fleet limits not applied (on_unavailable: allow)"
                        ),
                    );
                }
                self.exchange = Some(x);
                self.shared.decisions.count("allowed");
                true
            }
            Err(r) => {
                self.refuse(&r);
                false
            }
        }
    }
}
