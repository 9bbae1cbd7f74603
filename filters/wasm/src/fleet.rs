//! Fleet-wide limits, the host half: encodes `cordon-core`'s RLS request as Envoy's protobuf,
//! decodes the answer, and sends end-of-exchange settlements from the root context (an HTTP
//! context's own calls are cancelled when it is destroyed, right after its log hook).

use cordon_core::ratelimit::fleet::{Code, DescriptorStatus, RlsRequest, RlsResponse};
use cordon_proto::rls as pb;
use prost::Message;
use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, LogLevel};
use std::time::Duration;

/// The protobuf `RateLimitRequest` of a core request.
pub fn encode(req: &RlsRequest) -> Vec<u8> {
    pb::RateLimitRequest {
        domain: req.domain.clone(),
        hits_addend: req.hits_addend,
        descriptors: req
            .descriptors
            .iter()
            .map(|d| pb::RateLimitDescriptor {
                entries: d.entries.iter().map(|(k, v)| pb::rate_limit_descriptor::Entry { key: k.clone(), value: v.clone() }).collect(),
                limit: d.limit.map(|(n, unit)| pb::rate_limit_descriptor::RateLimitOverride { requests_per_unit: n, unit: unit as i32 }),
                hits_addend: Some(d.hits),
            })
            .collect(),
    }
    .encode_to_vec()
}

/// The core view of a protobuf `RateLimitResponse`.
pub fn decode(bytes: &[u8]) -> Result<RlsResponse, String> {
    let r = pb::RateLimitResponse::decode(bytes).map_err(|e| format!("undecodable answer: {e}"))?;
    Ok(RlsResponse {
        overall: Code::from_wire(r.overall_code),
        statuses: r
            .statuses
            .iter()
            .map(|s| DescriptorStatus {
                code: Code::from_wire(s.code),
                has_limit: s.current_limit.is_some(),
                remaining: u64::from(s.limit_remaining),
                reset_ns: s.duration_until_reset.and_then(|d| {
                    let secs = u64::try_from(d.seconds).ok()?;
                    let nanos = u64::try_from(d.nanos).ok()?;
                    Some(secs.saturating_mul(1_000_000_000).saturating_add(nanos))
                }),
            })
            .collect(),
    })
}

/// The answer to a call that has completed: its body, or why there is none.
pub fn answer(status_code: u32, size: usize) -> Result<RlsResponse, String> {
    if status_code != 0 {
        return Err(format!("gRPC status {status_code}"));
    }
    let body = hostcalls::get_buffer(BufferType::GrpcReceiveBuffer, 0, size).ok().flatten().unwrap_or_default();
    decode(&body)
}

/// Sends `req` on behalf of the root context `root` (so it outlives the HTTP context `own`);
/// its answer is not awaited. A failure is logged: the reservation then stays counted.
pub fn send_detached(root: u32, own: u32, cluster: &str, timeout_ms: u64, req: &RlsRequest) {
    let bytes = encode(req);
    let _ = hostcalls::set_effective_context(root);
    let sent = hostcalls::dispatch_grpc_call(cluster, pb::SERVICE, pb::METHOD, vec![], Some(&bytes), Duration::from_millis(timeout_ms));
    let _ = hostcalls::set_effective_context(own);
    if let Err(status) = sent {
        let _ =
            hostcalls::log(LogLevel::Warn, &format!("rate limits: could not send the token settlement to cluster '{cluster}': {status:?}"));
    }
}
