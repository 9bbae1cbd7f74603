//! Host-independent decisions of the Cordon filters.
//!
//! Everything that decides lives here and takes plain inputs (bytes, header lists, a clock value
//! in seconds, a secret lookup), so it is tested natively and compiled to wasm unchanged. The
//! proxy-wasm adapter (`cordon-filter`) only reads host state, calls into this crate and applies
//! the verdict.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing, clippy::string_slice))]

pub mod access;
pub mod audit;
pub mod body;
pub mod bundle;
pub mod config;
pub mod discovery;
pub mod encoding;
pub mod glob;
pub mod headers;
pub mod identity;
pub mod pipeline;
pub mod policy;
pub mod ratelimit;
pub mod redaction;
pub mod refusal;

#[cfg(test)]
mod testkit;

pub use config::FilterConfig;
pub use pipeline::{Admitted, HeadVerdict, RequestHead};
pub use policy::{CompiledPolicy, Policy, PolicyError};
pub use refusal::Refusal;
