//! The hand-over from the policy-stream singleton to the worker VMs: Envoy shared data (one map
//! per `vm_id`, visible to every worker). The singleton verified the bundle; workers only compile.
//!
//! Two keys, so the per-request check copies a few bytes, not the policy: the version, written
//! last, and the bundle `<version>\n<sha256>\n<policy json>`.

use proxy_wasm::hostcalls;

const VERSION_KEY: &str = "cordon.policy.version";
const BUNDLE_KEY: &str = "cordon.policy.bundle";

/// A policy handed over by the singleton.
pub struct Published {
    pub version: String,
    pub sha256: String,
    pub policy_json: Vec<u8>,
}

/// Publishes a verified policy to every worker.
pub fn publish(version: &str, sha256_hex: &str, policy_json: &[u8]) -> Result<(), String> {
    if let Some(e) = crate::faults::publish_refused(policy_json) {
        return Err(e);
    }
    let mut bundle = Vec::with_capacity(version.len() + sha256_hex.len() + policy_json.len() + 2);
    bundle.extend_from_slice(version.as_bytes());
    bundle.push(b'\n');
    bundle.extend_from_slice(sha256_hex.as_bytes());
    bundle.push(b'\n');
    bundle.extend_from_slice(policy_json);
    hostcalls::set_shared_data(BUNDLE_KEY, Some(&bundle), None).map_err(|s| format!("set_shared_data(bundle): {s:?}"))?;
    hostcalls::set_shared_data(VERSION_KEY, Some(version.as_bytes()), None).map_err(|s| format!("set_shared_data(version): {s:?}"))
}

/// The published version, if any (cheap: a few bytes).
pub fn version() -> Option<String> {
    let (value, _) = hostcalls::get_shared_data(VERSION_KEY).ok()?;
    value.and_then(|v| String::from_utf8(v).ok()).filter(|v| !v.is_empty())
}

/// The published bundle, if any.
pub fn bundle() -> Option<Published> {
    let (value, _) = hostcalls::get_shared_data(BUNDLE_KEY).ok()?;
    let value = value?;
    let mut parts = value.splitn(3, |b| *b == b'\n');
    let version = String::from_utf8(parts.next()?.to_vec()).ok()?;
    let sha256 = String::from_utf8(parts.next()?.to_vec()).ok()?;
    let policy_json = parts.next()?.to_vec();
    Some(Published { version, sha256, policy_json })
}
