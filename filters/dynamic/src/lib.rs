//! Cordon as an Envoy **dynamic module**: a native shared library (`libcordon_dynamic.so`) that
//! Envoy loads in-process through `envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter`.
//!
//! Like the proxy-wasm adapter (`cordon-filter`), this crate only translates: it reads host state
//! (headers, body, connection attributes, the clock, environment secrets), asks `cordon-core` for
//! a verdict and applies it. Decisions never live here.
//!
//! * `abi` holds every line of unsafe code: our own declarations of the ABI subset an HTTP
//!   filter needs, the exported hooks (each catches panics and fails closed) and safe wrappers.
//! * `shared` is one filter configuration: the static policy (same JSON as the wasm plugin
//!   configuration), the JWT cache, the counters; it reads the pushed policy when there is one.
//! * `policy_stream` is the control plane's policy stream: one background thread per process
//!   (tonic client) that verifies pushed bundles with the core and swaps the policy workers read.
//! * `audit_trail` (workers: one draft per request, shared by the roles through filter state)
//!   and `audit_stream` (one shipper thread per process, fed by a channel) keep the audit trail.
//! * `fleet` asks the rate-limit service for fleet-wide limits over Envoy's HTTP callouts.
//! * `identity` is the `cordon.identity` role, `redact` the `cordon.redact` role, `gateway` the
//!   `cordon.gateway` role (both in one filter, with hand-overs); `counters` is the rate limiter's compare-and-swap
//!   store, one per process (the native equivalent of proxy-wasm shared data).
//!
//! The module runs unsandboxed in Envoy's address space: see `docs/dynamic-module.md` for the
//! trust model and version pinning.
#![deny(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing, clippy::string_slice))]

mod abi;
mod audit_stream;
mod audit_trail;
mod counters;
mod faults;
mod fleet;
mod gateway;
mod identity;
mod policy_stream;
mod redact;
mod shared;

use abi::{ConfigHost, FilterFactory, HttpFilter, LogLevel};

/// Filter name (`filter_name` in Envoy's config) of the identity and model-access role.
pub const ROLE_IDENTITY: &str = "cordon.identity";
/// Filter name of the streaming redaction role.
pub const ROLE_REDACT: &str = "cordon.redact";
/// Filter name of the combined role: identity (with limits) and redaction in one filter.
pub const ROLE_GATEWAY: &str = "cordon.gateway";

/// Builds one filter configuration; `None` makes Envoy reject the configuration.
fn new_factory(host: &ConfigHost, name: &str, config: &[u8]) -> Option<Box<dyn FilterFactory>> {
    if name != ROLE_IDENTITY && name != ROLE_REDACT && name != ROLE_GATEWAY {
        abi::log(
            LogLevel::Critical,
            &format!("cordon: unknown filter_name '{name}'; expected '{ROLE_IDENTITY}', '{ROLE_REDACT}' or '{ROLE_GATEWAY}'"),
        );
        return None;
    }
    let shared = match shared::Shared::configure(host, config, name) {
        Ok(shared) => std::sync::Arc::new(shared),
        Err(e) => {
            abi::log(LogLevel::Critical, &format!("cordon: invalid filter configuration for {name}: {e}"));
            return None;
        }
    };
    let role = match name {
        ROLE_REDACT => Role::Redact,
        ROLE_GATEWAY => Role::Gateway,
        _ => Role::Identity,
    };
    Some(Box::new(RoleFactory { role, shared }))
}

/// The role a configuration's filters play.
#[derive(Clone, Copy)]
enum Role {
    Identity,
    Redact,
    Gateway,
}

/// One filter configuration: a filter of its role per stream, all sharing the configuration.
struct RoleFactory {
    role: Role,
    shared: std::sync::Arc<shared::Shared>,
}

impl FilterFactory for RoleFactory {
    fn new_filter(&self) -> Box<dyn HttpFilter> {
        match self.role {
            Role::Identity => Box::new(identity::IdentityFilter::new(self.shared.clone())),
            Role::Redact => Box::new(redact::RedactFilter::new(self.shared.clone())),
            Role::Gateway => Box::new(gateway::GatewayFilter::new(self.shared.clone())),
        }
    }

    /// Fleet token settlements go out from the main thread; only roles with limits queue any.
    fn scheduled(&self, host: &ConfigHost, _event_id: u64) {
        self.shared.settlements.flush(host);
    }

    fn callout_done(&self, _callout_id: u64, reply: Option<abi::CalloutReply<'_>>) {
        fleet::Settlements::done(reply);
    }
}
