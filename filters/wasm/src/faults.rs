//! Fault injection for the end-to-end tests only: compiled in by the `test-faults` cargo
//! feature (a separate module, `dist/cordon-test-faults.wasm`), never in the shipped module.
//! It lets a test make the VM trap and the policy hand-over fail, which no real input can do on
//! purpose, to prove what Envoy and the filter do then.

/// Request header that makes the VM trap while handling the request headers.
const TRAP_HEADER: &str = "x-cordon-test-trap";
/// A policy whose JSON contains this marker cannot be published to the workers.
const PUBLISH_MARKER: &[u8] = b"cordon-test-fault-publish";

/// Traps (aborts the VM) when the request asks for it.
pub fn maybe_trap(headers: &[(String, String)]) {
    if cfg!(feature = "test-faults") && headers.iter().any(|(k, _)| k == TRAP_HEADER) {
        let _ = proxy_wasm::hostcalls::log(proxy_wasm::types::LogLevel::Warn, "test fault: trapping the VM on request");
        std::process::abort();
    }
}

/// Refuses to publish a policy carrying the marker.
pub fn publish_refused(policy_json: &[u8]) -> Option<String> {
    (cfg!(feature = "test-faults") && policy_json.windows(PUBLISH_MARKER.len()).any(|w| w == PUBLISH_MARKER))
        .then(|| "test fault: publish refused for a policy carrying the marker".to_owned())
}
