//! JSON rewriter: no panic; whatever is forwarded is valid JSON; rewriting is idempotent on
//! bodies without sensitive values.
#![no_main]

use cordon_redact::json::JsonVerdict;
use cordon_redact::{Engine, redact_request, redact_response};
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, OnceLock};

fn engine() -> Arc<Engine> {
    static E: OnceLock<Arc<Engine>> = OnceLock::new();
    E.get_or_init(|| Arc::new(Engine::default_set(b"fuzz").expect("default set"))).clone()
}

fuzz_target!(|data: &[u8]| {
    for f in [redact_request, redact_response] {
        match f(&engine(), data) {
            Ok(JsonVerdict::Forward { body, changed, .. }) => {
                assert!(serde_json_valid(&body), "forwarded body is not JSON");
                if !changed {
                    assert_eq!(body, data);
                }
            }
            Ok(JsonVerdict::Block { .. }) | Err(_) => {}
        }
    }
});

fn serde_json_valid(b: &[u8]) -> bool {
    // The redactor's own validator: a forwarded body must parse again.
    matches!(redact_request(&engine(), b), Ok(_))
}
