//! Policy decoder and compiler: a pushed bundle is input too. Any bytes either decode and
//! compile, or fail with an error that names what is wrong; never a panic. A policy that
//! compiled survives its own canonical re-encoding.
#![no_main]

use cordon_core::{CompiledPolicy, Policy};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(policy) = Policy::from_json(data) else { return };
    let secrets = |name: &str| (name == "FUZZ_SECRET").then(|| "fuzz-secret-value-of-some-length".to_owned());
    if CompiledPolicy::compile(&policy, &secrets).is_ok() {
        let again = serde_json::to_vec(&policy).expect("a decoded policy re-encodes");
        let back = Policy::from_json(&again).expect("a re-encoded policy decodes");
        assert!(CompiledPolicy::compile(&back, &secrets).is_ok(), "re-encoded policy no longer compiles");
    }
});
