//! Fleet-wide limits, the host half: makes the gRPC calls with the protobuf messages
//! `cordon-core` encodes and decodes (`ratelimit::fleet::wire`, shared with the dynamic module), and sends end-of-exchange settlements from the root context (an HTTP
//! context's own calls are cancelled when it is destroyed, right after its log hook).

use cordon_core::ratelimit::fleet::wire;
use cordon_core::ratelimit::fleet::{RlsRequest, RlsResponse};
use cordon_proto::rls as pb;
use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, LogLevel};
use std::time::Duration;

/// The answer to a call that has completed: its body, or why there is none.
pub fn answer(status_code: u32, size: usize) -> Result<RlsResponse, String> {
    if status_code != 0 {
        return Err(format!("gRPC status {status_code}"));
    }
    let body = hostcalls::get_buffer(BufferType::GrpcReceiveBuffer, 0, size).ok().flatten().unwrap_or_default();
    wire::decode(&body).map_err(|e| e.to_string())
}

/// Sends `req` on behalf of the root context `root` (so it outlives the HTTP context `own`);
/// its answer is not awaited. A failure is logged: the reservation then stays counted.
pub fn send_detached(root: u32, own: u32, cluster: &str, timeout_ms: u64, req: &RlsRequest) {
    let bytes = wire::encode(req);
    let _ = hostcalls::set_effective_context(root);
    let sent = hostcalls::dispatch_grpc_call(cluster, pb::SERVICE, pb::METHOD, vec![], Some(&bytes), Duration::from_millis(timeout_ms));
    let _ = hostcalls::set_effective_context(own);
    if let Err(status) = sent {
        let _ =
            hostcalls::log(LogLevel::Warn, &format!("rate limits: could not send the token settlement to cluster '{cluster}': {status:?}"));
    }
}
