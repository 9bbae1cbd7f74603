//! Cordon streaming redaction engine (host-independent).
//!
//! Detectors find sensitive values (e-mail, phone, cards, IBAN, SSN, IPs, credentials, custom
//! patterns and keywords) in normalised text; actions (allow, mask, redact, pseudonymize, block)
//! rewrite them per direction. [`StreamRedactor`] guarantees that streamed output equals
//! one-shot output for any split of the input into chunks, with a bounded holdback.
//! [`sse`] and [`json`] adapt the engine to the providers' wire formats.
//!
//! No host calls, clocks or threads: everything here runs natively and in `wasm32-wasip1`.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing, clippy::string_slice))]
#![warn(missing_docs)]

pub mod config;
// The labelled-corpus generator is used only by tests and examples (the wasm filter never calls
// it, so it never sees request or response bytes): it indexes its own constant tables and
// generated strings, and a panic there fails a test run, not traffic.
#[allow(clippy::indexing_slicing, clippy::string_slice)]
pub mod corpus;
pub mod detect;
pub mod engine;
pub mod json;
pub mod normalize;
pub mod sse;

pub use config::{Action, ConfigError, CustomRegex, Direction, KeywordList, RedactConfig, Rule};
pub use engine::{Block, Detection, Engine, Output, StreamRedactor};
pub use json::{JsonError, JsonVerdict, redact_request, redact_response};
pub use sse::{SseError, SseFormat, SseObserver, SseOutput, SseRedactor};
