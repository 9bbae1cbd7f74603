//! The `cordon.identity` HTTP filter: identity, header hygiene, credential injection and model
//! access, applied as `cordon-core` decides.

use crate::host::Shared;
use cordon_core::pipeline::{self, BodyStage, ResponseStage};
use cordon_core::{Admitted, CompiledPolicy, HeadVerdict, Refusal, RequestHead};
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, LogLevel};
use std::rc::Rc;
use std::time::UNIX_EPOCH;

pub struct IdentityFilter {
    shared: Rc<Shared>,
    /// The policy snapshot this request runs under from start to end.
    policy: Option<Rc<CompiledPolicy>>,
    admitted: Option<Admitted>,
    refused: bool,
}

impl IdentityFilter {
    pub fn new(shared: Rc<Shared>) -> Self {
        let policy = shared.policy.borrow().clone();
        Self { shared, policy, admitted: None, refused: false }
    }

    fn property(&self, path: &[&str]) -> Option<String> {
        self.get_property(path.to_vec()).and_then(|b| String::from_utf8(b).ok()).filter(|s| !s.is_empty())
    }

    fn refuse(&mut self, refusal: &Refusal) -> Action {
        self.refused = true;
        self.shared.decisions.count(refusal.code());
        let _ = proxy_wasm::hostcalls::log(LogLevel::Info, &format!("refused {} ({})", refusal.status(), refusal.code()));
        self.send_http_response(
            u32::from(refusal.status()),
            vec![("content-type", "application/json"), ("x-cordon-error", refusal.code())],
            Some(&refusal.body()),
        );
        Action::Pause
    }

    fn now(&self) -> u64 {
        self.get_current_time().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
    }
}

impl Context for IdentityFilter {}

impl HttpContext for IdentityFilter {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(policy) = self.policy.clone() else {
            return self.refuse(&Refusal::PolicyUnavailable);
        };
        let headers = self.get_http_request_headers();
        crate::faults::maybe_trap(&headers);
        let pseudo = |name: &str| headers.iter().find(|(k, _)| k == name).map_or("", |(_, v)| v.as_str());
        // Properties cost a host call each: read them only when the policy can use them.
        let peer = if policy.uses_mesh_identity() { self.property(&["connection", "uri_san_peer_certificate"]) } else { None };
        let cluster = if policy.injects_credentials() { self.property(&["xds", "cluster_name"]) } else { None };
        let head = RequestHead {
            method: pseudo(":method"),
            path: pseudo(":path"),
            headers: &headers,
            peer_uri_san: peer.as_deref(),
            cluster: cluster.as_deref(),
            now: self.now(),
        };
        let verdict = pipeline::evaluate_head(&policy, &mut self.shared.tokens.borrow_mut(), &head);
        let admitted = match verdict {
            HeadVerdict::Refuse(r) => return self.refuse(&r),
            HeadVerdict::Admit(a) => *a,
        };
        let rewritten = cordon_core::headers::rewrite(&headers, &admitted.headers);
        self.set_http_request_headers(rewritten.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect());
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
        self.judge_body(&policy, &body)
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        if self.refused || end_of_stream || !self.filters_model_list() {
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
        match pipeline::evaluate_body(policy, admitted, body) {
            Ok(_model) => {
                self.shared.decisions.count("allowed");
                Action::Continue
            }
            Err(r) => self.refuse(&r),
        }
    }
}
