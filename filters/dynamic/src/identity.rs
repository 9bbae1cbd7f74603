//! The `cordon.identity` role as a native filter: identity, header hygiene, credential
//! injection, model access, and rate and token limits, applied as `cordon-core` decides. The
//! same steps as the wasm adapter's `identity.rs`, over the dynamic-module ABI.

use crate::abi::{Attribute, CalloutEvent, DataStatus, Direction, HeaderKind, HeadersStatus, HttpFilter, LogLevel, Stream};
use crate::audit_trail;
use crate::counters::ProcessStore;
use crate::fleet::Reply;
use crate::shared::{Shared, send_refusal};
use cordon_core::audit::assembly::Role;
use cordon_core::pipeline::{self, BodyStage, ResponseStage};
use cordon_core::ratelimit::Caller;
use cordon_core::ratelimit::exchange::{ChunkStep, Exchange};
use cordon_core::ratelimit::fleet::{FleetOutcome, RlsResponse};
use cordon_core::ratelimit::usage::{Piece, SharedReading};
use cordon_core::{Admitted, CompiledPolicy, HeadVerdict, Refusal, RequestHead};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// What the request does once its body has been judged.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Next {
    /// Go on upstream.
    Continue,
    /// Refused: a local reply went out.
    Stop,
    /// Held until the rate-limit service answers (`HttpFilter::http_stream` resumes it).
    Wait,
}

pub struct IdentityFilter {
    shared: Arc<Shared>,
    /// The policy snapshot this request runs under from start to end.
    policy: Option<Arc<CompiledPolicy>>,
    admitted: Option<Admitted>,
    refused: bool,
    /// The request's metering under the rate and token limits, if any limit matched.
    exchange: Option<Exchange>,
    /// Whether the response body is read (token usage) or rewritten (cut, usage chunk).
    watch_response: bool,
    path: String,
    /// Test builds only: the hook that must panic (`x-cordon-test-panic`).
    fault: Option<String>,
    /// This request's audit draft, when audit delivery is set up.
    audit: Option<u64>,
    /// The fleet check in flight (the request waits for it).
    rls: Option<Reply>,
    /// The next role in the same filter reads the request head and body from this role
    /// (`cordon.gateway`), not from Envoy.
    keep_request: bool,
    /// The request head as this role left it (when `keep_request` and admitted).
    kept_head: Option<KeptHead>,
    /// The request body as this role read or rewrote it (when `keep_request` and read).
    kept_body: Option<Vec<u8>>,
}

/// What the next role in the same filter reads of the request head, as this role left it
/// (what Envoy would answer it after the header plan).
pub struct KeptHead {
    pub method: String,
    pub path: String,
    pub content_encoding: Option<String>,
}

/// What `request_headers` keeps of the header map once it is given back.
struct HeadRead {
    /// Test builds only: the hook that must panic.
    fault: Option<String>,
    /// `x-request-id`, read only when audit records are kept.
    request_id: Option<String>,
    path: String,
    /// The verdict on the head; `None` without a policy.
    verdict: Option<HeadVerdict>,
    /// Bit `i`: the plan's `i`-th header is absent once its removals are done (an add will do).
    adds: u64,
    /// The head as the plan leaves it, when kept for the next role (`keep_request`).
    kept: Option<KeptHead>,
}

fn now() -> std::time::Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

fn now_ns() -> u64 {
    u64::try_from(now().as_nanos()).unwrap_or(u64::MAX)
}

impl IdentityFilter {
    pub fn new(shared: Arc<Shared>) -> Self {
        let policy = shared.policy();
        Self {
            shared,
            policy,
            admitted: None,
            refused: false,
            exchange: None,
            watch_response: false,
            path: String::new(),
            fault: None,
            audit: None,
            rls: None,
            keep_request: false,
            kept_head: None,
            kept_body: None,
        }
    }

    /// The next role in this same filter reads the request head and body from this role,
    /// which then keeps them (`cordon.gateway`).
    pub fn keep_request(&mut self) {
        self.keep_request = true;
    }

    /// The request head as this role left it, once (when kept and admitted).
    pub fn take_kept_head(&mut self) -> Option<KeptHead> {
        self.kept_head.take()
    }

    /// The request body as this role read or rewrote it, once (when kept and read).
    pub fn take_kept_body(&mut self) -> Option<Vec<u8>> {
        self.kept_body.take()
    }

    /// Whether this role answered the request itself (a local reply is on its way).
    pub fn refused(&self) -> bool {
        self.refused
    }

    /// This request's audit draft key, for the role after this one in the same filter.
    pub fn audit_key(&self) -> Option<u64> {
        self.audit
    }

    /// The usage reader for redaction to run in its pass over the response stream, when the
    /// limits follow one (`cordon.gateway`: one framing and one scan per event).
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

    /// A response body hook after redaction in the same filter (`cordon.gateway`), with what
    /// redaction's pass read (`pieces`) and the body as redaction left it in Envoy, when it has
    /// it: no second read from Envoy. What this role reads is what Envoy now passes on, the
    /// bytes it held back included, as the filter after redaction in a chain would be given.
    pub fn response_body_after(&mut self, s: &Stream, end_of_stream: bool, pieces: Option<&[Piece]>, body: Option<Vec<u8>>) -> DataStatus {
        if !self.watch_response || self.refused {
            return self.response_body(s, end_of_stream);
        }
        let chunk = body.unwrap_or_else(|| s.body(Direction::Response));
        let step = self.exchange.as_mut().map_or(ChunkStep::Continue, |x| x.response_chunk_read(&chunk, pieces, end_of_stream));
        if let ChunkStep::Replace(bytes) = step {
            s.replace_body(Direction::Response, &bytes);
        }
        if end_of_stream {
            self.watch_response = false;
            self.finish_exchange();
        }
        DataStatus::Continue
    }

    fn refuse(&mut self, s: &Stream, refusal: &Refusal) {
        self.refused = true;
        audit_trail::with(self.audit, |d| d.refused(refusal));
        self.shared.count(s, refusal.code());
        crate::abi::log(LogLevel::Info, &format!("refused {} ({})", refusal.status(), refusal.code()));
        send_refusal(s, refusal);
    }

    /// Ends the metering once (response end, or the stream ended early): reconcile reservations.
    fn finish_exchange(&mut self) {
        let (Some(policy), Some(mut x)) = (self.policy.clone(), self.exchange.take()) else { return };
        let now = now_ns();
        match x.finish(policy.rate_limits(), &ProcessStore, now) {
            Ok(usage) => {
                audit_trail::with(self.audit, |d| {
                    d.usage(&usage);
                    if x.was_cut() {
                        d.ended(x.cut_code());
                    }
                });
                let limits = policy.rate_limits();
                if let (Some(svc), Some(req)) = (limits.service(), x.fleet_settlement(limits, now)) {
                    self.shared.settlements.send(svc, &req);
                }
            }
            Err(e) => crate::abi::log(LogLevel::Warn, &format!("rate limits: could not reconcile usage: {}", e.message())),
        }
    }

    fn filters_model_list(&self) -> bool {
        matches!(self.admitted.as_ref().map(|a| a.response), Some(ResponseStage::FilterModelList { .. }))
    }

    /// The complete request body is in: check the model, then meter the request.
    fn judge_body(&mut self, s: &Stream, policy: &CompiledPolicy, body: &[u8]) -> Next {
        let Some(admitted) = self.admitted.as_ref() else { return Next::Continue };
        let model = match pipeline::evaluate_body(policy, admitted, body) {
            Ok(model) => model,
            Err(r) => {
                self.refuse(s, &r);
                return Next::Stop;
            }
        };
        audit_trail::with(self.audit, |d| d.model(&model));
        let who = Caller { principal: &admitted.identity.principal, key_id: admitted.identity.key_id.as_deref(), model: &model };
        match Exchange::begin(policy.rate_limits(), &who, &self.path, body, &ProcessStore, now_ns()) {
            Err(r) => {
                self.refuse(s, &r);
                return Next::Stop;
            }
            Ok(None) => {}
            Ok(Some((x, rewritten))) => {
                self.shared.count_evictions(s, x.evictions());
                if let Some((name, limit, remaining)) = x.tightest(policy.rate_limits()) {
                    audit_trail::with(self.audit, |d| d.rate_limit(name, limit, remaining));
                }
                if let Some(new) = rewritten {
                    s.replace_body(Direction::Request, &new);
                    s.set_header(HeaderKind::Request, "content-length", Some(&new.len().to_string()));
                    if self.keep_request {
                        self.kept_body = Some(new);
                    }
                }
                let call = match (x.fleet_request(), policy.rate_limits().service()) {
                    (Some(req), Some(svc)) => Some(crate::fleet::start_check(s, svc, req)),
                    _ => None,
                };
                self.exchange = Some(x);
                match call {
                    // Wait for the fleet-wide verdict.
                    Some(Ok(id)) => {
                        self.rls = Some(Reply::new(id));
                        return Next::Wait;
                    }
                    Some(Err(why)) => return if self.judge_fleet(s, Err(why)) { Next::Continue } else { Next::Stop },
                    None => {}
                }
            }
        }
        self.shared.count(s, "allowed");
        Next::Continue
    }

    /// Applies the fleet verdict, as the wasm build does; true when the request may go on.
    fn judge_fleet(&mut self, s: &Stream, answer: Result<RlsResponse, String>) -> bool {
        let (Some(policy), Some(mut x)) = (self.policy.clone(), self.exchange.take()) else { return true };
        match x.fleet_answer(policy.rate_limits(), answer, &ProcessStore, now_ns()) {
            Ok(outcome) => {
                if let FleetOutcome::FailedOpen(why) = outcome {
                    self.shared.count_fail_open(s);
                    audit_trail::with(self.audit, |d| d.rate_limit_failed_open());
                    crate::abi::log(
                        LogLevel::Warn,
                        &format!(
                            "rate limits: the rate-limit service is unavailable ({why}); fleet limits not applied (on_unavailable: allow)"
                        ),
                    );
                }
                self.exchange = Some(x);
                self.shared.count(s, "allowed");
                true
            }
            Err(r) => {
                self.refuse(s, &r);
                false
            }
        }
    }
}

impl HttpFilter for IdentityFilter {
    fn request_headers(&mut self, s: &mut Stream, end_of_stream: bool) -> HeadersStatus {
        let policy = self.policy.clone();
        // Connection attributes are read before the header map is lent: nothing else can be
        // called on the stream while it is.
        let wants = |f: fn(&CompiledPolicy) -> bool| policy.as_deref().is_some_and(f);
        let peer = if wants(CompiledPolicy::uses_mesh_identity) { s.attribute(Attribute::ConnectionUriSanPeerCertificate) } else { None };
        let cluster = if wants(CompiledPolicy::injects_credentials) { s.attribute(Attribute::XdsClusterName) } else { None };
        let shared = &self.shared;
        let keep = self.keep_request;
        // The head is judged on the map as Envoy holds it (no copy); only what outlives the
        // borrow is copied out: the path, the request id when records are kept, the verdict.
        let read = s.with_headers(HeaderKind::Request, |headers| {
            let find = |name: &str| headers.iter().find(|(k, _)| *k == name).map(|&(_, v)| v);
            let fault = if cfg!(feature = "test-faults") { find(crate::faults::PANIC_HEADER).map(str::to_owned) } else { None };
            crate::faults::maybe_panic(fault.as_deref(), "request");
            let request_id = audit_trail::enabled().then(|| find("x-request-id").unwrap_or_default().to_owned());
            let path = find(":path").unwrap_or_default();
            let verdict = policy.as_deref().map(|policy| {
                let head = RequestHead {
                    method: find(":method").unwrap_or_default(),
                    path,
                    headers,
                    peer_uri_san: peer.as_deref(),
                    cluster: cluster.as_deref(),
                    now: now().as_secs(),
                };
                let mut verdict = shared.with_tokens(policy, |tokens| pipeline::evaluate_head(policy, tokens, &head));
                let mut adds = 0;
                if let HeadVerdict::Admit(admitted) = &mut verdict {
                    let carried = |name: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
                    // Removing a header the request does not carry still costs Envoy a scan of
                    // the map: keep only the removals of headers it has.
                    let plan = &mut admitted.headers;
                    plan.remove.retain(|name| carried(name));
                    // A header absent once the removals are done is added, not set: a set first
                    // removes, another scan of the map.
                    for (i, (name, _)) in plan.set.iter().enumerate() {
                        if !carried(name) || plan.remove.iter().any(|r| r.eq_ignore_ascii_case(name)) {
                            adds |= 1u64.checked_shl(i as u32).unwrap_or(0);
                        }
                    }
                }
                // The head as the plan leaves it, for the next role in this filter (only what
                // it reads).
                let kept = match &verdict {
                    HeadVerdict::Admit(admitted) if keep => {
                        let after = |name: &str| cordon_core::headers::first_after(headers, &admitted.headers, name);
                        Some(KeptHead {
                            method: after(":method").unwrap_or_default().to_owned(),
                            path: after(":path").unwrap_or_default().to_owned(),
                            content_encoding: after("content-encoding").map(str::to_owned),
                        })
                    }
                    _ => None,
                };
                (verdict, adds, kept)
            });
            let (verdict, adds, kept) = match verdict {
                Some((v, a, k)) => (Some(v), a, k),
                None => (None, 0, None),
            };
            HeadRead { fault, request_id, path: path.to_owned(), verdict, adds, kept }
        });
        self.fault = read.fault;
        // Opened before the policy check: a request refused at a cold start is on the record too.
        self.audit = audit_trail::open(s, Role::Identity, read.request_id.as_deref().unwrap_or_default());
        let (Some(policy), Some(verdict)) = (policy, read.verdict) else {
            self.refuse(s, &Refusal::PolicyUnavailable);
            return HeadersStatus::StopIteration;
        };
        if self.audit.is_some() {
            let (version, sha) = self.shared.policy_ref(&policy);
            audit_trail::with(self.audit, |d| d.policy(&version, &sha));
        }
        // A policy that refuses requests without an audit trail fails closed here while records
        // cannot be kept (delivery not set up, or the buffer full), exactly as the wasm build.
        if !audit_trail::admits_request(&policy) {
            self.refuse(s, &Refusal::AuditUnavailable);
            return HeadersStatus::StopIteration;
        }
        self.path = read.path;
        let admitted = match verdict {
            HeadVerdict::Refuse(r) => {
                self.refuse(s, &r);
                return HeadersStatus::StopIteration;
            }
            HeadVerdict::Admit(a) => *a,
        };
        audit_trail::with(self.audit, |d| {
            d.identity(&admitted.identity);
            d.route(&admitted.route);
        });
        // Natively each header change is a direct call (no boundary to amortise), so the plan
        // is applied as it is rather than as a rewritten list.
        for name in &admitted.headers.remove {
            s.set_header(HeaderKind::Request, name, None);
        }
        for (i, (name, value)) in admitted.headers.set.iter().enumerate() {
            if read.adds & 1u64.checked_shl(i as u32).unwrap_or(0) != 0 {
                s.add_header(HeaderKind::Request, name, value);
            } else {
                s.set_header(HeaderKind::Request, name, Some(value));
            }
        }
        self.kept_head = read.kept;
        let needs_body = admitted.body != BodyStage::None;
        self.admitted = Some(admitted);
        if !needs_body {
            self.shared.count(s, "allowed");
            return HeadersStatus::Continue;
        }
        if end_of_stream {
            // A POST without a body still has to name a model.
            return match self.judge_body(s, &policy, &[]) {
                Next::Continue => HeadersStatus::Continue,
                Next::Stop | Next::Wait => HeadersStatus::StopIteration,
            };
        }
        // Hold the headers until the body has named an allowed model.
        HeadersStatus::StopIteration
    }

    fn request_body(&mut self, s: &Stream, end_of_stream: bool) -> DataStatus {
        if self.refused {
            return DataStatus::StopIterationNoBuffer;
        }
        let (Some(policy), Some(admitted)) = (self.policy.clone(), self.admitted.as_ref()) else {
            return DataStatus::Continue;
        };
        let BodyStage::ReadModel { limit } = admitted.body else {
            return DataStatus::Continue;
        };
        if s.body_len(Direction::Request) as u64 > limit {
            self.refuse(s, &Refusal::BodyTooLarge { limit });
            return DataStatus::StopIterationNoBuffer;
        }
        if !end_of_stream {
            return DataStatus::StopIterationAndBuffer;
        }
        let body = s.body(Direction::Request);
        let next = self.judge_body(s, &policy, &body);
        if self.keep_request && self.kept_body.is_none() && !self.refused {
            // Unchanged by this role (a rewritten body was kept by `judge_body`).
            self.kept_body = Some(body);
        }
        match next {
            Next::Continue => DataStatus::Continue,
            Next::Stop => DataStatus::StopIterationNoBuffer,
            // Keep the body: Envoy sends it on when the verdict resumes the request.
            Next::Wait => DataStatus::StopIterationAndBuffer,
        }
    }

    fn response_headers(&mut self, s: &Stream, end_of_stream: bool) -> HeadersStatus {
        crate::faults::maybe_panic(self.fault.as_deref(), "response");
        if self.refused {
            return HeadersStatus::Continue;
        }
        let status = s.header(HeaderKind::Response, ":status");
        if let Some(mut x) = self.exchange.take() {
            let code = status.as_deref().and_then(|v| v.parse().ok()).unwrap_or(0);
            audit_trail::with(self.audit, |d| d.status(code));
            let content_type = s.header(HeaderKind::Response, "content-type");
            self.watch_response = x.response_head(code, content_type.as_deref()) && !end_of_stream;
            let rewrites = x.rewrites_stream();
            for (name, value) in x.response_headers() {
                s.set_header(HeaderKind::Response, &name, Some(&value));
            }
            self.exchange = Some(x);
            if rewrites {
                s.set_header(HeaderKind::Response, "content-length", None);
            }
            if !self.watch_response {
                self.finish_exchange();
            }
        }
        if end_of_stream || !self.filters_model_list() {
            return HeadersStatus::Continue;
        }
        if status.as_deref() != Some("200") {
            // Errors from upstream carry no model list; pass them through as they are.
            self.admitted = None;
            return HeadersStatus::Continue;
        }
        // The filtered list has a different length.
        s.set_header(HeaderKind::Response, "content-length", None);
        HeadersStatus::StopIteration
    }

    fn response_body(&mut self, s: &Stream, end_of_stream: bool) -> DataStatus {
        if self.refused {
            return DataStatus::Continue;
        }
        if self.watch_response {
            let chunk = s.chunk(Direction::Response);
            let step = self.exchange.as_mut().map_or(ChunkStep::Continue, |x| x.response_chunk(&chunk, end_of_stream));
            if let ChunkStep::Replace(bytes) = step {
                s.replace_chunk(Direction::Response, &bytes);
            }
            if end_of_stream {
                self.watch_response = false;
                self.finish_exchange();
            }
            return DataStatus::Continue;
        }
        let ResponseStage::FilterModelList { limit } = self.admitted.as_ref().map_or(ResponseStage::PassThrough, |a| a.response) else {
            return DataStatus::Continue;
        };
        if s.body_len(Direction::Response) as u64 > limit {
            self.refuse(s, &Refusal::UpstreamResponseInvalid);
            return DataStatus::StopIterationNoBuffer;
        }
        if !end_of_stream {
            return DataStatus::StopIterationAndBuffer;
        }
        let (Some(policy), Some(admitted)) = (self.policy.clone(), self.admitted.as_ref()) else {
            return DataStatus::Continue;
        };
        let body = s.body(Direction::Response);
        match cordon_core::access::filter_model_list(&policy, &admitted.identity.principal, &body) {
            Ok(filtered) => {
                s.replace_body(Direction::Response, &filtered);
                DataStatus::Continue
            }
            Err(r) => {
                self.refuse(s, &r);
                DataStatus::StopIterationNoBuffer
            }
        }
    }

    /// The stream ended: a client abort or a reset never reached the end of the response, so its
    /// reservation is reconciled here (counted from what was streamed, else kept).
    fn complete(&mut self, s: &Stream) {
        // A check still in flight is reset by Envoy with the filter; its reservations are
        // reconciled here like any other (the fleet ones were never taken).
        self.rls = None;
        self.finish_exchange();
        audit_trail::leave(s, self.audit, Role::Identity);
    }

    /// The rate-limit service's reply, event by event; the verdict resumes or refuses the request.
    fn http_stream(&mut self, s: &Stream, id: u64, event: CalloutEvent) -> bool {
        let Some(answer) = self.rls.as_mut().and_then(|r| r.take(id, event)) else { return false };
        self.rls = None;
        self.judge_fleet(s, answer)
    }
}
