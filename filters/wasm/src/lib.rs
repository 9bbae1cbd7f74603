//! The Cordon proxy-wasm module: one `wasm32-wasip1` module whose filter roles are selected by
//! the plugin's `root_id`. This crate is glue: it reads host state (headers, body, connection
//! properties, the clock, runtime secrets), asks `cordon-core` for a verdict, and applies it.
//! Decisions never live here; a bug seen in Envoy is reproduced as a `cordon-core` test first.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing, clippy::string_slice))]

mod audit_stream;
mod audit_trail;
mod faults;
mod fleet;
mod gateway;
mod host;
mod identity;
mod metrics;
mod policy_stream;
mod redact;
mod shared_counters;
mod shared_policy;

use proxy_wasm::traits::RootContext;
use proxy_wasm::types::LogLevel;

/// Root id of the identity and model-access role.
pub const ROOT_IDENTITY: &str = "cordon.identity";
/// Root id of the streaming redaction role.
pub const ROOT_REDACT: &str = "cordon.redact";
/// Root id of the combined role: identity, limits and redaction in one HTTP context.
pub const ROOT_GATEWAY: &str = "cordon.gateway";
/// Root id of the singleton service that holds the policy stream to the control plane.
pub const ROOT_POLICY_STREAM: &str = "cordon.policy_stream";

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    // abort() in wasm says nothing; this leaves the reason in Envoy's log.
    std::panic::set_hook(Box::new(|info| {
        let _ = proxy_wasm::hostcalls::log(LogLevel::Critical, &format!("panic: {info}"));
    }));
    proxy_wasm::set_root_context(|context_id| -> Box<dyn RootContext> { Box::new(host::Root::new(context_id)) });
}}
