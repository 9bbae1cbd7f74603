//! Fault injection for the end-to-end tests only: compiled in by the `test-faults` cargo feature
//! (a separate library, `dist/test-faults/libcordon_dynamic.so`), never in the shipped module.
//! It makes a hook panic on request, to prove that the panic is caught at the ABI boundary, the
//! stream fails closed, and Envoy (and the next request) carry on.

/// Request header that makes a hook panic: `request` in the request-headers hook, `response` in
/// the response-headers hook.
pub const PANIC_HEADER: &str = "x-cordon-test-panic";

/// Panics when the request asks for it (only in a `test-faults` build).
#[allow(clippy::panic)]
pub fn maybe_panic(requested: Option<&str>, phase: &str) {
    if cfg!(feature = "test-faults") && requested == Some(phase) {
        panic!("test fault: panicking in the {phase} hook on request");
    }
}

/// A policy whose JSON contains this marker cannot be published to the workers (the same
/// marker as the wasm build's), to prove a failed publish is NACKed with the version in force.
const PUBLISH_MARKER: &[u8] = b"cordon-test-fault-publish";

/// Refuses to publish a policy carrying the marker (only in a `test-faults` build).
pub fn publish_refused(policy_json: &[u8]) -> Option<String> {
    (cfg!(feature = "test-faults") && policy_json.windows(PUBLISH_MARKER.len()).any(|w| w == PUBLISH_MARKER))
        .then(|| "test fault: publish refused for a policy carrying the marker".to_owned())
}
