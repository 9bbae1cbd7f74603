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
//!   configuration), the JWT cache, the counters.
//! * `identity` is the `cordon.identity` role; `counters` is the rate limiter's compare-and-swap
//!   store, one per process (the native equivalent of proxy-wasm shared data).
//!
//! The module runs unsandboxed in Envoy's address space: see `docs/dynamic-module.md` for the
//! trust model and version pinning.
#![deny(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing, clippy::string_slice))]

mod abi;
mod counters;
mod faults;
mod identity;
mod shared;

use abi::{ConfigHost, FilterFactory, LogLevel};

/// Filter name (`filter_name` in Envoy's config) of the identity and model-access role.
pub const ROLE_IDENTITY: &str = "cordon.identity";

/// Builds one filter configuration; `None` makes Envoy reject the configuration.
fn new_factory(host: &ConfigHost, name: &str, config: &[u8]) -> Option<Box<dyn FilterFactory>> {
    match name {
        ROLE_IDENTITY => match shared::Shared::configure(host, config) {
            Ok(shared) => Some(Box::new(identity::Factory::new(shared))),
            Err(e) => {
                abi::log(LogLevel::Critical, &format!("cordon: invalid filter configuration for {name}: {e}"));
                None
            }
        },
        other => {
            abi::log(LogLevel::Critical, &format!("cordon: unknown filter_name '{other}'; expected '{ROLE_IDENTITY}'"));
            None
        }
    }
}
