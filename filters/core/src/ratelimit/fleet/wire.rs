//! The fleet check on the wire, shared by both adapters: the core request and answer as Envoy's
//! RLS v3 protobuf messages, and — for an adapter without a gRPC client (the dynamic module,
//! which only has HTTP callouts) — the unary gRPC call as a plain HTTP/2 exchange: its request
//! headers and length-prefixed body, and what a reply must show before it counts as an answer.
//!
//! A reply counts only when it is proven OK: HTTP 200, a gRPC content type, `grpc-status: 0` (in
//! the trailers, or in the headers of a trailers-only reply) and exactly one uncompressed
//! message. Anything else is "no answer", and the policy's `on_unavailable` decides.

use super::{Code, DescriptorStatus, RlsRequest, RlsResponse};
use cordon_proto::rls as pb;
use prost::Message;

/// The `:path` of `ShouldRateLimit`.
pub const PATH: &str = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit";
/// Largest reply body read; a longer one is no answer (an RLS answer is a few hundred bytes).
pub const MAX_REPLY_BYTES: usize = 1 << 20;

/// Why a reply is not an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The message is not a `RateLimitResponse`.
    #[error("undecodable answer: {0}")]
    Undecodable(String),
    /// The HTTP status is not 200 (Envoy's own replies: 503 no upstream, 504 timeout).
    #[error("HTTP status {0}")]
    HttpStatus(String),
    /// The reply is not gRPC.
    #[error("not a gRPC reply (content-type {0:?})")]
    ContentType(String),
    /// Neither trailers nor headers carry `grpc-status`: the call's outcome is unknown.
    #[error("no gRPC status in the reply")]
    NoStatus,
    /// The service answered with an error status.
    #[error("gRPC status {0}")]
    Status(String),
    /// The message is compressed, which Cordon never asks for.
    #[error("compressed gRPC message")]
    Compressed,
    /// The body is not exactly one length-prefixed message.
    #[error("malformed gRPC body ({0} bytes)")]
    Framing(usize),
    /// The body exceeds [`MAX_REPLY_BYTES`].
    #[error("reply larger than {MAX_REPLY_BYTES} bytes")]
    TooLarge,
    /// The exchange ended without a reply (reset, connection failure, callout refused).
    #[error("{0}")]
    NoReply(String),
}

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
pub fn decode(bytes: &[u8]) -> Result<RlsResponse, WireError> {
    let r = pb::RateLimitResponse::decode(bytes).map_err(|e| WireError::Undecodable(e.to_string()))?;
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

/// The HTTP/2 request headers of a unary `ShouldRateLimit` call to `authority` (the cluster's
/// name: Envoy routes by cluster, the service ignores the authority).
pub fn call_headers(authority: &str) -> Vec<(&'static str, String)> {
    vec![
        (":method", "POST".into()),
        (":path", PATH.into()),
        (":authority", authority.into()),
        (":scheme", "http".into()),
        ("content-type", "application/grpc".into()),
        ("te", "trailers".into()),
    ]
}

/// The HTTP body of a unary call: `req` as one uncompressed, length-prefixed gRPC message.
pub fn call_body(req: &RlsRequest) -> Vec<u8> {
    let msg = encode(req);
    let len = u32::try_from(msg.len()).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(5 + msg.len());
    out.push(0);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&msg);
    out
}

fn find<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim())
}

/// Reads the reply of a unary call made over HTTP: the answer only when the reply proves the
/// call succeeded (see the module documentation); `trailers` is empty for a trailers-only reply.
pub fn read_reply(headers: &[(String, String)], body: &[u8], trailers: &[(String, String)]) -> Result<RlsResponse, WireError> {
    let status = find(headers, ":status").unwrap_or("none");
    if status != "200" {
        return Err(WireError::HttpStatus(status.to_owned()));
    }
    let content_type = find(headers, "content-type").unwrap_or_default();
    if !content_type.to_ascii_lowercase().starts_with("application/grpc") {
        return Err(WireError::ContentType(content_type.to_owned()));
    }
    // A trailers-only reply (an error, typically) carries its status in the headers.
    let grpc_status = find(trailers, "grpc-status").or_else(|| find(headers, "grpc-status")).ok_or(WireError::NoStatus)?;
    if grpc_status != "0" {
        return Err(WireError::Status(grpc_status.to_owned()));
    }
    if body.len() > MAX_REPLY_BYTES {
        return Err(WireError::TooLarge);
    }
    let (flag, rest) = body.split_first().ok_or(WireError::Framing(0))?;
    let len = rest.get(..4).and_then(|b| <[u8; 4]>::try_from(b).ok()).map(u32::from_be_bytes).ok_or(WireError::Framing(body.len()))?;
    let msg = rest.get(4..).unwrap_or_default();
    match flag {
        0 => {}
        1 => return Err(WireError::Compressed),
        _ => return Err(WireError::Framing(body.len())),
    }
    if usize::try_from(len).ok() != Some(msg.len()) {
        return Err(WireError::Framing(body.len()));
    }
    decode(msg)
}

#[cfg(test)]
mod tests {
    use super::super::{Descriptor, Unit};
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn ok_headers() -> Vec<(String, String)> {
        h(&[(":status", "200"), ("content-type", "application/grpc")])
    }

    fn answer() -> Vec<u8> {
        pb::RateLimitResponse {
            overall_code: 2,
            statuses: vec![pb::rate_limit_response::DescriptorStatus {
                code: 2,
                limit_remaining: 0,
                duration_until_reset: Some(prost_types::Duration { seconds: 7, nanos: 5 }),
                ..Default::default()
            }],
        }
        .encode_to_vec()
    }

    fn framed(msg: &[u8]) -> Vec<u8> {
        let mut out = vec![0];
        out.extend_from_slice(&u32::try_from(msg.len()).unwrap().to_be_bytes());
        out.extend_from_slice(msg);
        out
    }

    fn request() -> RlsRequest {
        RlsRequest {
            domain: "cordon".into(),
            descriptors: vec![Descriptor { entries: vec![("cordon_limit".into(), "l".into())], limit: Some((5, Unit::Day)), hits: 3 }],
            hits_addend: 3,
        }
    }

    #[test]
    fn the_call_body_is_one_length_prefixed_request_message() {
        let body = call_body(&request());
        assert_eq!(body[0], 0, "uncompressed");
        assert_eq!(u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize, body.len() - 5);
        let sent = pb::RateLimitRequest::decode(&body[5..]).unwrap();
        assert_eq!(sent.domain, "cordon");
        assert_eq!(sent.hits_addend, 3);
        assert_eq!(sent.descriptors[0].entries[0].value, "l");
        assert_eq!(sent.descriptors[0].limit.unwrap().unit, Unit::Day as i32);
        assert_eq!(sent.descriptors[0].hits_addend, Some(3));
    }

    #[test]
    fn the_call_headers_name_the_method_and_ask_for_trailers() {
        let hs = call_headers("rls_cluster");
        let get = |n: &str| hs.iter().find(|(k, _)| *k == n).map(|(_, v)| v.as_str());
        assert_eq!(get(":path"), Some(PATH));
        assert_eq!(get(":method"), Some("POST"));
        assert_eq!(get(":authority"), Some("rls_cluster"));
        assert_eq!(get("content-type"), Some("application/grpc"));
        assert_eq!(get("te"), Some("trailers"));
    }

    #[test]
    fn an_ok_reply_with_its_status_in_the_trailers_is_the_answer() {
        let got = read_reply(&ok_headers(), &framed(&answer()), &h(&[("grpc-status", "0")])).unwrap();
        assert_eq!(got.overall, Code::OverLimit);
        assert_eq!(got.statuses[0].reset_ns, Some(7_000_000_005));
    }

    #[test]
    fn a_reply_without_a_grpc_status_is_not_an_answer_even_with_a_good_message() {
        // E.g. a reply cut before its trailers: the message may be followed by an error status.
        assert_eq!(read_reply(&ok_headers(), &framed(&answer()), &[]), Err(WireError::NoStatus));
    }

    #[test]
    fn error_statuses_in_trailers_or_a_trailers_only_reply_are_not_answers() {
        assert_eq!(read_reply(&ok_headers(), &framed(&answer()), &h(&[("grpc-status", "8")])), Err(WireError::Status("8".into())));
        let mut trailers_only = ok_headers();
        trailers_only.push(("grpc-status".into(), "14".into()));
        assert_eq!(read_reply(&trailers_only, &[], &[]), Err(WireError::Status("14".into())));
    }

    #[test]
    fn envoys_own_error_replies_and_non_grpc_replies_are_not_answers() {
        let ok = h(&[("grpc-status", "0")]);
        assert_eq!(read_reply(&h(&[(":status", "504")]), b"upstream request timeout", &[]), Err(WireError::HttpStatus("504".into())));
        assert_eq!(read_reply(&[], &[], &ok), Err(WireError::HttpStatus("none".into())));
        let html = h(&[(":status", "200"), ("content-type", "text/html")]);
        assert_eq!(read_reply(&html, &framed(&answer()), &ok), Err(WireError::ContentType("text/html".into())));
    }

    #[test]
    fn only_exactly_one_uncompressed_message_is_read() {
        let ok = h(&[("grpc-status", "0")]);
        let msg = framed(&answer());
        assert_eq!(read_reply(&ok_headers(), &[], &ok), Err(WireError::Framing(0)));
        assert_eq!(read_reply(&ok_headers(), &msg[..3], &ok), Err(WireError::Framing(3)));
        assert_eq!(read_reply(&ok_headers(), &msg[..msg.len() - 1], &ok), Err(WireError::Framing(msg.len() - 1)));
        let two = [msg.clone(), msg.clone()].concat();
        assert_eq!(read_reply(&ok_headers(), &two, &ok), Err(WireError::Framing(two.len())));
        let mut compressed = msg.clone();
        compressed[0] = 1;
        assert_eq!(read_reply(&ok_headers(), &compressed, &ok), Err(WireError::Compressed));
        assert!(matches!(read_reply(&ok_headers(), &framed(b"\xff\xff"), &ok), Err(WireError::Undecodable(_))));
        // An empty message is a valid (all-default) answer: its overall code is UNKNOWN.
        assert_eq!(read_reply(&ok_headers(), &framed(&[]), &ok).unwrap().overall, Code::Unknown);
    }
}
