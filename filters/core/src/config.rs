//! The plugin configuration Envoy hands to the filter (`configuration` of the wasm plugin).

use crate::bundle::TrustedKey;
use crate::policy::{Policy, PolicyError};
use cordon_audit::digest::ContentKey;
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
    /// Audit delivery (only the `cordon.policy_stream` singleton uses it): the node key and
    /// buffer bounds. Absent: the node writes no audit trail.
    #[serde(default)]
    pub audit: Option<AuditDelivery>,
}

/// How the node signs and buffers its audit records.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditDelivery {
    /// The environment variable (handed to the VM) that holds the node key: a base64 Ed25519
    /// seed of 32 bytes (`cordonctl nodes keygen`). Never the key itself in configuration.
    pub node_key_env: String,
    /// Records kept until the control plane acknowledges them.
    #[serde(default = "default_audit_buffer")]
    pub buffer_records: usize,
    /// Records per signed batch.
    #[serde(default = "default_audit_batch")]
    pub batch_records: usize,
    /// How long a record may wait for others to fill its batch (ms): one signature and one
    /// send per batch instead of per record, at the price of that much delay.
    #[serde(default = "default_audit_linger")]
    pub linger_ms: u64,
    /// The environment variable holding the content-digest key (base64, at least 32 bytes):
    /// records then carry keyed SHA-256 digests of the content after redaction. Absent: no
    /// digests. Give every Envoy of a fleet the same key so digests compare across nodes.
    #[serde(default)]
    pub content_key_env: Option<String>,
}

fn default_audit_linger() -> u64 {
    100
}

fn default_audit_buffer() -> usize {
    10_000
}

fn default_audit_batch() -> usize {
    256
}

/// Why the node key cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditKeyError {
    /// The variable is not set.
    #[error("the node key variable '{0}' is not set (add it to vm_config.environment_variables)")]
    Missing(String),
    /// The value is not a base64 32-byte seed.
    #[error("the node key in '{0}' is not a base64 32-byte Ed25519 seed (make one with `cordonctl nodes keygen`)")]
    Malformed(String),
    /// The content-digest key variable is named but not set.
    #[error("the content-digest key variable '{0}' is not set (add it to vm_config.environment_variables)")]
    ContentKeyMissing(String),
    /// The content-digest key is not base64 of at least 32 bytes.
    #[error("the content-digest key in '{0}' is not base64 of at least 32 random bytes (make one with `head -c 32 /dev/urandom | base64`)")]
    ContentKeyMalformed(String),
}

impl AuditDelivery {
    /// The node's signer, from the runtime secret `node_key_env` names.
    pub fn signer(&self, secrets: &dyn crate::policy::SecretSource) -> Result<cordon_audit::keys::Signer, AuditKeyError> {
        use base64::Engine as _;
        let value = secrets.secret(&self.node_key_env).ok_or_else(|| AuditKeyError::Missing(self.node_key_env.clone()))?;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(value.trim())
            .map_err(|_| AuditKeyError::Malformed(self.node_key_env.clone()))?;
        let seed = <[u8; 32]>::try_from(raw.as_slice()).map_err(|_| AuditKeyError::Malformed(self.node_key_env.clone()))?;
        Ok(cordon_audit::keys::Signer::from_seed(&seed))
    }

    /// The content-digest key from the runtime secret `content_key_env` names, if one is named.
    pub fn content_key(&self, secrets: &dyn crate::policy::SecretSource) -> Result<Option<ContentKey>, AuditKeyError> {
        let Some(name) = &self.content_key_env else { return Ok(None) };
        content_key_from(name, secrets).map(Some)
    }
}

/// The content-digest key held in the variable `name`.
pub fn content_key_from(name: &str, secrets: &dyn crate::policy::SecretSource) -> Result<ContentKey, AuditKeyError> {
    use base64::Engine as _;
    let value = secrets.secret(name).ok_or_else(|| AuditKeyError::ContentKeyMissing(name.to_owned()))?;
    let raw =
        base64::engine::general_purpose::STANDARD.decode(value.trim()).map_err(|_| AuditKeyError::ContentKeyMalformed(name.to_owned()))?;
    ContentKey::new(&raw).map_err(|_| AuditKeyError::ContentKeyMalformed(name.to_owned()))
}

/// Where and how the singleton reaches the control plane.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlPlane {
    /// The Envoy cluster (HTTP/2, optionally mTLS) that points at the control plane (the wasm
    /// build; the native dynamic module dials `address` itself instead).
    #[serde(default)]
    pub cluster: String,
    /// `http://host:port` or `https://host:port` of the control plane, dialled by the native
    /// dynamic module's own gRPC client (the wasm build ignores it and uses `cluster`).
    #[serde(default)]
    pub address: Option<String>,
    /// TLS for `address` (the native dynamic module): the CA that issued the control plane's
    /// certificate and, for mTLS, this node's client certificate and key (files, never inline).
    #[serde(default)]
    pub tls: Option<ControlPlaneTls>,
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
    /// The `:authority` of the gRPC streams to the control plane (default: the cluster's name).
    /// Needed when the cluster's name is not a valid host, as Istio's `outbound|PORT||HOST` names
    /// are: the control plane refuses a request with such an authority.
    #[serde(default)]
    pub authority: Option<String>,
}

/// The files the native dynamic module's gRPC client uses to reach the control plane over TLS.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlPlaneTls {
    /// PEM file of the CA(s) that issued the control plane's certificate.
    pub ca_file: String,
    /// PEM file of this node's client certificate (mTLS); needs `key_file`.
    #[serde(default)]
    pub cert_file: Option<String>,
    /// PEM file of the client certificate's private key; needs `cert_file`.
    #[serde(default)]
    pub key_file: Option<String>,
    /// Name checked against the control plane's certificate (default: the host of `address`).
    #[serde(default)]
    pub server_name: Option<String>,
}

/// Where the native dynamic module dials the control plane, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dial {
    /// The URI given to the gRPC client (`http://` or `https://`).
    pub uri: String,
    /// TLS settings; present exactly when `uri` is `https://`.
    pub tls: Option<ControlPlaneTls>,
}

/// Why the native dynamic module cannot dial the control plane as configured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialError {
    /// No `address`: the native module has no Envoy cluster to borrow.
    #[error(
        "control_plane.address is not set: the dynamic module dials the control plane itself (e.g. \"https://cp.internal:18000\"); `cluster` is only used by the wasm build"
    )]
    MissingAddress,
    /// The address is not `http://host:port` or `https://host:port`.
    #[error("control_plane.address '{0}' must be http://host:port or https://host:port")]
    BadAddress(String),
    /// `https://` without the CA to check the control plane's certificate against.
    #[error("control_plane.address is https:// but control_plane.tls.ca_file is not set")]
    HttpsWithoutTls,
    /// TLS files with a plaintext address.
    #[error("control_plane.tls is set but control_plane.address is http://; use https:// to dial with TLS")]
    TlsWithoutHttps,
    /// Only one of the client certificate and its key.
    #[error("control_plane.tls.cert_file and control_plane.tls.key_file must be set together (mTLS needs both)")]
    HalfClientIdentity,
}

impl ControlPlane {
    /// Validates `address` and `tls` for the native dynamic module's gRPC client.
    pub fn dial(&self) -> Result<Dial, DialError> {
        let address = self.address.as_deref().map(str::trim).filter(|a| !a.is_empty()).ok_or(DialError::MissingAddress)?;
        let (https, rest) = if let Some(rest) = address.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = address.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(DialError::BadAddress(address.to_owned()));
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let port_ok = rest.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
        if !port_ok || rest.contains('/') || rest.contains('@') || rest.bytes().any(|b| !b.is_ascii_graphic()) {
            return Err(DialError::BadAddress(address.to_owned()));
        }
        match (&self.tls, https) {
            (None, true) => return Err(DialError::HttpsWithoutTls),
            (Some(_), false) => return Err(DialError::TlsWithoutHttps),
            (Some(t), true) if t.cert_file.is_some() != t.key_file.is_some() => return Err(DialError::HalfClientIdentity),
            _ => {}
        }
        Ok(Dial { uri: format!("{}://{rest}", if https { "https" } else { "http" }), tls: self.tls.clone() })
    }

    /// What the singleton hands Envoy as the gRPC upstream: the cluster's name, or, with an
    /// `authority`, a serialized `envoy.config.core.v3.GrpcService { envoy_grpc { cluster_name,
    /// authority } }` (Envoy takes either: a string that is no such message is a cluster name).
    /// The message stays ASCII (and so a `&str`) for names under 62 bytes each.
    pub fn grpc_upstream(&self) -> Result<String, String> {
        let Some(authority) = &self.authority else { return Ok(self.cluster.clone()) };
        let ok = |v: &str| !v.is_empty() && v.len() < 62 && v.bytes().all(|b| b.is_ascii_graphic());
        if !ok(&self.cluster) || !ok(authority) {
            return Err(
                "control_plane.cluster and control_plane.authority must be printable ASCII, 1 to 61 bytes, when authority is set".into()
            );
        }
        // Lengths below 128 encode as one byte each; field 1 (cluster_name) and 2 (authority) of
        // EnvoyGrpc, inside field 1 (envoy_grpc) of GrpcService, all length-delimited.
        let mut inner = vec![0x0a, self.cluster.len() as u8];
        inner.extend_from_slice(self.cluster.as_bytes());
        inner.extend_from_slice(&[0x12, authority.len() as u8]);
        inner.extend_from_slice(authority.as_bytes());
        let mut msg = vec![0x0a, inner.len() as u8];
        msg.extend(inner);
        String::from_utf8(msg).map_err(|e| e.to_string())
    }
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
            return Ok(Self {
                policy: None,
                cold_start: ColdStart::Deny,
                token_cache_size: default_token_cache(),
                control_plane: None,
                audit: None,
            });
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
    fn grpc_upstream_is_the_cluster_or_a_grpc_service_naming_the_authority() {
        let json = |extra: &str| {
            let text = format!(r#"{{"control_plane":{{"cluster":"outbound|18000||cp.internal","trusted_keys":[]{extra}}}}}"#);
            FilterConfig::from_json(text.as_bytes()).unwrap().control_plane.unwrap()
        };
        assert_eq!(json("").grpc_upstream().unwrap(), "outbound|18000||cp.internal");
        let up = json(r#","authority":"cp.internal""#).grpc_upstream().unwrap();
        // GrpcService{envoy_grpc{cluster_name: "outbound|18000||cp.internal", authority: "cp.internal"}}
        let mut want = vec![0x0a, 2 + 27 + 2 + 11, 0x0a, 27];
        want.extend_from_slice(b"outbound|18000||cp.internal");
        want.extend_from_slice(&[0x12, 11]);
        want.extend_from_slice(b"cp.internal");
        assert_eq!(up.as_bytes(), want.as_slice());
        assert!(json(&format!(r#","authority":"{}""#, "a".repeat(62))).grpc_upstream().is_err());
        assert!(json(r#","authority":"""#).grpc_upstream().is_err());
    }

    #[test]
    fn the_native_module_dials_a_checked_address() {
        let cp = |extra: &str| {
            let text = format!(r#"{{"control_plane":{{"trusted_keys":[]{extra}}}}}"#);
            FilterConfig::from_json(text.as_bytes()).unwrap().control_plane.unwrap()
        };
        assert_eq!(cp("").dial(), Err(DialError::MissingAddress));
        assert!(cp("").dial().unwrap_err().to_string().contains("control_plane.address"));
        let plain = cp(r#","address":"http://127.0.0.1:18000""#).dial().unwrap();
        assert_eq!((plain.uri.as_str(), plain.tls), ("http://127.0.0.1:18000", None));
        for bad in ["127.0.0.1:18000", "grpc://cp:1", "http://cp", "http://cp:0", "http://:80", "http://cp:80/path", "http://u@cp:80"] {
            let e = cp(&format!(r#","address":"{bad}""#)).dial().unwrap_err();
            assert_eq!(e, DialError::BadAddress(bad.to_owned()), "{bad}");
        }
        assert_eq!(cp(r#","address":"https://cp:443""#).dial(), Err(DialError::HttpsWithoutTls));
        assert_eq!(cp(r#","address":"http://cp:80","tls":{"ca_file":"/ca.pem"}"#).dial(), Err(DialError::TlsWithoutHttps));
        let half = cp(r#","address":"https://cp:443","tls":{"ca_file":"/ca.pem","cert_file":"/c.pem"}"#).dial();
        assert_eq!(half, Err(DialError::HalfClientIdentity));
        let mtls =
            cp(r#","address":"https://cp:443/","tls":{"ca_file":"/ca.pem","cert_file":"/c.pem","key_file":"/k.pem"}"#).dial().unwrap();
        assert_eq!(mtls.uri, "https://cp:443");
        assert_eq!(mtls.tls.unwrap().key_file.as_deref(), Some("/k.pem"));
        let e = FilterConfig::from_json(br#"{"control_plane":{"trusted_keys":[],"tls":{"ca_file":"/a","key":"inline"}}}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
    }

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

    #[test]
    fn the_node_key_comes_from_its_variable_and_bad_keys_say_how_to_fix_them() {
        let c = FilterConfig::from_json(br#"{"audit":{"node_key_env":"NODE_KEY"}}"#).unwrap();
        let a = c.audit.unwrap();
        assert_eq!((a.buffer_records, a.batch_records), (10_000, 256));
        let seed = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [9u8; 32]);
        let ok = a.signer(&|n: &str| (n == "NODE_KEY").then(|| seed.clone())).unwrap();
        assert_eq!(ok.public_key(), cordon_audit::keys::Signer::from_seed(&[9; 32]).public_key());
        assert_eq!(a.signer(&|_: &str| None).unwrap_err(), AuditKeyError::Missing("NODE_KEY".into()));
        let short = |_: &str| Some("AAAA".to_string());
        assert!(a.signer(&short).unwrap_err().to_string().contains("cordonctl nodes keygen"));
        let e = FilterConfig::from_json(br#"{"audit":{"node_key":"inline-secret"}}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
    }

    #[test]
    fn the_content_key_is_optional_and_a_named_but_missing_or_short_one_is_refused() {
        let none = FilterConfig::from_json(br#"{"audit":{"node_key_env":"N"}}"#).unwrap().audit.unwrap();
        assert!(none.content_key(&|_: &str| None).unwrap().is_none(), "no variable named: no digests");
        let a = FilterConfig::from_json(br#"{"audit":{"node_key_env":"N","content_key_env":"CK"}}"#).unwrap().audit.unwrap();
        assert_eq!(a.content_key(&|_: &str| None).unwrap_err(), AuditKeyError::ContentKeyMissing("CK".into()));
        let b64 = |n: usize| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, vec![7u8; n]);
        let short = b64(16);
        let e = a.content_key(&|_: &str| Some(short.clone())).unwrap_err();
        assert!(e.to_string().contains("at least 32"), "{e}");
        assert!(a.content_key(&|_: &str| Some("not base64!".into())).is_err());
        let good = b64(32);
        let key = a.content_key(&|_: &str| Some(good.clone())).unwrap().unwrap();
        let direct = ContentKey::new(&[7u8; 32]).unwrap();
        let dir = cordon_audit::record::Direction::Request;
        assert_eq!(key.digest(dir, b"x"), direct.digest(dir, b"x"), "the key is the decoded bytes");
    }
}
