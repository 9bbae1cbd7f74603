//! The floor under `cordon.identity`'s cost in Envoy: a module that makes the same host calls
//! per request (the policy-version check, one read of the request headers, the clock, one write
//! of the rewritten headers, a decision counter, holding the headers for the body and reading
//! it once) and decides nothing. `bench/cost/instructions.py` measures it beside the real role:
//! what the role costs above this floor is Cordon's own code; the floor itself is what Envoy
//! and V8 charge any Wasm filter for that work.
//!
//! With the plugin configuration `full`, it also makes the host calls `cordon.gateway` adds for
//! redaction in the same context (three request header reads, the forced `accept-encoding`, the
//! request body read a second time, two response header reads, the `content-length` removal,
//! holding the response body and reading it once): the floor under the full chain.

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MetricType};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(FloorRoot { metric: 0, full: false }) });
}}

struct FloorRoot {
    metric: u32,
    full: bool,
}

impl Context for FloorRoot {}

impl RootContext for FloorRoot {
    fn on_configure(&mut self, _: usize) -> bool {
        self.metric = hostcalls::define_metric(MetricType::Counter, "floor_decision_allowed").unwrap_or(0);
        self.full = self.get_plugin_configuration().is_some_and(|c| c.windows(4).any(|w| w == b"full"));
        true
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        // As Shared::refresh: is there a newer pushed policy?
        let _ = hostcalls::get_shared_data("cordon.policy.version");
        Some(Box::new(Floor { metric: self.metric, full: self.full }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Floor {
    metric: u32,
    full: bool,
}

impl Context for Floor {}

impl HttpContext for Floor {
    fn on_http_request_headers(&mut self, _: usize, end_of_stream: bool) -> Action {
        let headers = self.get_http_request_headers();
        let _ = self.get_current_time();
        let mut out: Vec<(&str, &str)> =
            headers.iter().filter(|(k, _)| k != "authorization").map(|(k, v)| (k.as_str(), v.as_str())).collect();
        out.extend([("x-cordon-user", "alice"), ("x-cordon-team", "research"), ("x-cordon-app", "notebook")]);
        self.set_http_request_headers(out);
        let _ = hostcalls::increment_metric(self.metric, 1);
        if self.full {
            let _ = self.get_http_request_header(":method");
            let _ = self.get_http_request_header(":path");
            let _ = self.get_http_request_header("content-encoding");
            self.set_http_request_header("accept-encoding", Some("identity"));
        }
        if end_of_stream { Action::Continue } else { Action::Pause }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !end_of_stream {
            return Action::Pause;
        }
        let _ = self.get_http_request_body(0, body_size);
        if self.full {
            let _ = self.get_http_request_body(0, body_size);
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _: usize, end_of_stream: bool) -> Action {
        if !self.full {
            return Action::Continue;
        }
        let _ = self.get_http_response_header("content-type");
        let _ = self.get_http_response_header("content-encoding");
        self.set_http_response_header("content-length", None);
        if end_of_stream { Action::Continue } else { Action::Pause }
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !self.full {
            return Action::Continue;
        }
        if !end_of_stream {
            return Action::Pause;
        }
        let _ = self.get_http_response_body(0, body_size);
        Action::Continue
    }
}
