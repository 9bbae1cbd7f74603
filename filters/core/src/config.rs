//! The plugin configuration Envoy hands to the filter (`configuration` of the wasm plugin).

use crate::bundle::TrustedKey;
use crate::policy::{Policy, PolicyError};
use serde::Deserialize;

/// What the filter does before any policy is available.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColdStart {
    /// Refuse with 503 `policy_unavailable` (fail closed).
    #[default]
    Deny,
}

/// The filter's static configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// The static policy; absent means "wait for the control plane" and cold-start applies.
    #[serde(default)]
    pub policy: Option<Policy>,
    /// Behaviour while no policy is loaded.
    #[serde(default)]
    pub cold_start: ColdStart,
    /// How many verified JWTs each worker caches.
    #[serde(default = "default_token_cache")]
    pub token_cache_size: usize,
    /// The policy stream to the control plane (only the `cordon.policy_stream` singleton uses it).
    #[serde(default)]
    pub control_plane: Option<ControlPlane>,
}

/// Where and how the singleton reaches the control plane.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlPlane {
    /// The Envoy cluster (HTTP/2, optionally mTLS) that points at the control plane.
    pub cluster: String,
    /// Node id sent to the control plane; defaults to Envoy's own `node.id`.
    #[serde(default)]
    pub node_id: Option<String>,
    /// Public keys whose signatures on policy bundles are accepted.
    pub trusted_keys: Vec<TrustedKey>,
    /// First reconnect delay.
    #[serde(default = "default_initial_backoff")]
    pub reconnect_initial_ms: u64,
    /// Largest reconnect delay.
    #[serde(default = "default_max_backoff")]
    pub reconnect_max_ms: u64,
}

fn default_initial_backoff() -> u64 {
    250
}

fn default_max_backoff() -> u64 {
    15_000
}

fn default_token_cache() -> usize {
    4096
}

impl FilterConfig {
    /// Parses the plugin configuration; errors name the field (e.g. `policy.routes[0].accept`).
    pub fn from_json(bytes: &[u8]) -> Result<Self, PolicyError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self { policy: None, cold_start: ColdStart::Deny, token_cache_size: default_token_cache(), control_plane: None });
        }
        let de = &mut serde_json::Deserializer::from_slice(bytes);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            PolicyError::Syntax { path, message: e.into_inner().to_string() }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_configuration_means_no_policy() {
        let c = FilterConfig::from_json(b"").unwrap();
        assert_eq!(c.policy, None);
        assert_eq!(c.cold_start, ColdStart::Deny);
    }

    #[test]
    fn errors_name_the_field() {
        let e = FilterConfig::from_json(br#"{"policy":{"routes":[{"name":"r","path_prefix":"/","accept":[["password"]]}]}}"#).unwrap_err();
        assert_eq!(e.path(), "policy.routes[0].accept[0][0]");
        assert!(e.to_string().contains("unknown variant `password`"), "{e}");
        let e = FilterConfig::from_json(
            br#"{"policy":{"identity":{"api_keys":[{"id":"k","sha256":"00","principal":{"user":"u"},"colour":1}]}}}"#,
        )
        .unwrap_err();
        assert_eq!(e.path(), "policy.identity.api_keys[0].colour");
    }
}
