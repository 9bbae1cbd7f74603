//! Cordon's wire contracts, generated from the `.proto` files beside this crate (the source of
//! truth; read them for the protocol's semantics).
//!
//! * [`v1`]: policy discovery — the xDS-shaped stream between each Envoy's filter and the
//!   control plane, and the signed [`v1::PolicyBundle`] (its contract, signed message, key id and
//!   type URL, is defined once in `cordon_core::bundle`).
//! * [`admin::v1`]: the admin API used by `cordonctl`.
//! * [`rls`]: Envoy's rate-limit service API, for fleet-wide limits.
//!
//! With `default-features = false` only the prost messages are built (what the wasm filter
//! needs); the `grpc` feature adds tonic clients and servers.

#![allow(clippy::all, missing_docs)]

/// Policy discovery messages and (with `grpc`) the `PolicyDiscoveryService`.
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/cordon.v1.rs"));

    /// The gRPC path a node opens (`:path` of the stream), for proxy-wasm's `open_grpc_stream`.
    pub const POLICY_SERVICE: &str = "cordon.v1.PolicyDiscoveryService";
    /// The method name within [`POLICY_SERVICE`].
    pub const POLICY_METHOD: &str = "StreamPolicies";
    /// The gRPC service a node ships its audit chain to.
    pub const AUDIT_SERVICE: &str = "cordon.v1.AuditService";
    /// The method name within [`AUDIT_SERVICE`].
    pub const AUDIT_METHOD: &str = "ShipAudit";
}

/// Envoy's rate-limit service API (RLS v3), the subset Cordon speaks: fleet-wide limits ask it
/// (`ShouldRateLimit`), the control plane serves it.
pub mod rls {
    include!(concat!(env!("OUT_DIR"), "/envoy.service.ratelimit.v3.rs"));

    /// The gRPC service of `ShouldRateLimit`, for proxy-wasm's `dispatch_grpc_call`.
    pub const SERVICE: &str = "envoy.service.ratelimit.v3.RateLimitService";
    /// The method name within [`SERVICE`].
    pub const METHOD: &str = "ShouldRateLimit";
}

/// Admin API.
pub mod admin {
    /// Version 1 of the admin API.
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/cordon.admin.v1.rs"));
    }
}

/// Encoded `FileDescriptorSet` of every Cordon proto, for gRPC server reflection.
#[cfg(feature = "grpc")]
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/cordon_descriptor.bin"));

#[cfg(test)]
mod tests {
    use super::v1::*;
    use prost::Message;

    #[test]
    fn bundle_roundtrips_inside_an_any() {
        let bundle = PolicyBundle {
            version: "3".into(),
            policy_json: b"{}".to_vec(),
            sha256: vec![7; 32],
            signature: vec![1; 64],
            key_id: "ed25519:0011223344556677".into(),
            serial: 3,
        };
        let any = prost_types::Any { type_url: "type.googleapis.com/cordon.v1.PolicyBundle".into(), value: bundle.encode_to_vec() };
        let resp = DiscoveryResponse { version_info: "3".into(), resources: vec![any], nonce: "n1".into(), ..Default::default() };
        let decoded = DiscoveryResponse::decode(resp.encode_to_vec().as_slice()).unwrap();
        let back = PolicyBundle::decode(decoded.resources[0].value.as_slice()).unwrap();
        assert_eq!(back, bundle);
    }

    /// Field numbers must match envoy.service.discovery.v3 so xDS tooling decodes our streams:
    /// DiscoveryRequest.response_nonce is field 5 (tag 0x2a), error_detail field 6 (tag 0x32).
    #[test]
    fn request_field_numbers_match_envoy() {
        let req = DiscoveryRequest {
            response_nonce: "a".into(),
            error_detail: Some(Status { code: 3, message: "b".into(), details: vec![] }),
            ..Default::default()
        };
        let bytes = req.encode_to_vec();
        assert_eq!(bytes, vec![0x2a, 1, b'a', 0x32, 5, 0x08, 3, 0x12, 1, b'b']);
    }
}
