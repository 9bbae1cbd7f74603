//! Fleet-wide limits, the host half of the native module: the unary `ShouldRateLimit` gRPC call
//! made as a plain HTTP/2 request through Envoy (the module has Envoy's HTTP callouts, not its
//! gRPC client), with the messages, framing and reply checks of `cordon_core::ratelimit::fleet::wire`
//! (shared with the wasm build).
//!
//! * The check: a stream the identity filter starts ([`start_check`]), so its reply arrives with
//!   headers, body **and trailers** — where gRPC puts the status of an ordinary reply — and
//!   [`Reply::answer`] accepts it only when it proves the call succeeded.
//! * Settlements at the end of an exchange: the filter is destroyed right after its last hook,
//!   which would reset a stream it started, so [`Settlements`] hands them to the configuration:
//!   a scheduled event runs them on the main thread as the configuration's own callouts, which
//!   outlive the request (the wasm build sends them from its root context for the same reason).
//!   Their answer is not awaited, as in the wasm build; a failure Envoy can see is logged.

use crate::abi::{self, CalloutEvent, CalloutReply, ConfigHandle, ConfigHost, ConfigScheduler, LogLevel, Stream};
use cordon_core::ratelimit::fleet::wire::{self, WireError};
use cordon_core::ratelimit::fleet::{RlsRequest, RlsResponse};
use cordon_core::ratelimit::schema::RateLimitService;
use std::sync::Mutex;

/// Starts the fleet check of `req`; the stream's id, or why there is none.
pub fn start_check(s: &Stream, svc: &RateLimitService, req: &RlsRequest) -> Result<u64, String> {
    s.start_http_stream(&svc.cluster, &wire::call_headers(&svc.cluster), &wire::call_body(req), svc.timeout_ms)
        .map_err(|code| format!("cannot call cluster '{}': {}", svc.cluster, abi::callout_init_error(code)))
}

/// The reply of a check in flight, gathered event by event.
pub struct Reply {
    id: u64,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    trailers: Vec<(String, String)>,
    too_large: bool,
}

impl Reply {
    pub fn new(id: u64) -> Self {
        Self { id, headers: Vec::new(), body: Vec::new(), trailers: Vec::new(), too_large: false }
    }

    /// Takes one event of stream `id`: `None` while the reply is incomplete (or `id` is another
    /// stream), else the answer or why there is none.
    pub fn take(&mut self, id: u64, event: CalloutEvent) -> Option<Result<RlsResponse, String>> {
        if id != self.id {
            return None;
        }
        match event {
            CalloutEvent::Headers(h) => self.headers = h,
            CalloutEvent::Data(d) => {
                if self.body.len().saturating_add(d.len()) > wire::MAX_REPLY_BYTES {
                    self.too_large = true;
                } else {
                    self.body.extend_from_slice(&d);
                }
            }
            CalloutEvent::Trailers(t) => self.trailers = t,
            CalloutEvent::Complete if self.too_large => return Some(Err(WireError::TooLarge.to_string())),
            CalloutEvent::Complete => return Some(wire::read_reply(&self.headers, &self.body, &self.trailers).map_err(|e| e.to_string())),
            CalloutEvent::Reset => return Some(Err("the call was reset (connection failure or timeout)".into())),
        }
        None
    }
}

struct Settlement {
    cluster: String,
    timeout_ms: u64,
    body: Vec<u8>,
}

#[derive(Default)]
struct Queue {
    scheduler: Option<ConfigScheduler>,
    calls: Vec<Settlement>,
}

/// Settlement calls waiting for the main thread, per filter configuration.
pub struct Settlements {
    config: ConfigHandle,
    queue: Mutex<Queue>,
}

/// Most settlements kept waiting; beyond that they are dropped (logged): the reservations then
/// stay counted until their window ends, the conservative side.
const MAX_QUEUED: usize = 10_000;

impl Settlements {
    pub fn new(config: ConfigHandle) -> Self {
        Self { config, queue: Mutex::new(Queue::default()) }
    }

    /// Queues `req` for the main thread (any worker may call this).
    pub fn send(&self, svc: &RateLimitService, req: &RlsRequest) {
        let Ok(mut q) = self.queue.lock() else { return };
        if q.calls.len() >= MAX_QUEUED {
            abi::log(LogLevel::Warn, "rate limits: too many token settlements waiting; one is dropped (its reservation stays counted)");
            return;
        }
        // Made on first use, from a worker: the configuration is fully built by then.
        if q.scheduler.is_none() {
            q.scheduler = self.config.scheduler();
        }
        let Some(scheduler) = q.scheduler.as_ref() else {
            abi::log(LogLevel::Warn, "rate limits: no scheduler for the token settlement; its reservation stays counted");
            return;
        };
        scheduler.commit(0);
        q.calls.push(Settlement { cluster: svc.cluster.clone(), timeout_ms: svc.timeout_ms, body: wire::call_body(req) });
    }

    /// On the main thread: sends every queued settlement as the configuration's callout.
    pub fn flush(&self, host: &ConfigHost) {
        let calls = match self.queue.lock() {
            Ok(mut q) => std::mem::take(&mut q.calls),
            Err(_) => return,
        };
        for c in calls {
            if let Err(code) = host.http_callout(&c.cluster, &wire::call_headers(&c.cluster), &c.body, c.timeout_ms) {
                abi::log(
                    LogLevel::Warn,
                    &format!(
                        "rate limits: could not send the token settlement to cluster '{}': {}",
                        c.cluster,
                        abi::callout_init_error(code)
                    ),
                );
            }
        }
    }

    /// A settlement's reply. Envoy hands this hook no trailers, so only a failure visible in
    /// the headers (no reply, an HTTP error, a trailers-only gRPC error) can be seen and logged.
    pub fn done(reply: Option<CalloutReply<'_>>) {
        let why = match reply {
            None => "no reply (connection failure or timeout)".to_owned(),
            Some((headers, body)) => match wire::read_reply(headers, body, &[]) {
                Ok(_) | Err(WireError::NoStatus) => return,
                Err(e) => e.to_string(),
            },
        };
        abi::log(LogLevel::Warn, &format!("rate limits: a token settlement failed ({why}); the reservation stays counted"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    /// An empty `RateLimitResponse` (overall UNKNOWN), framed.
    const EMPTY_ANSWER: &[u8] = &[0, 0, 0, 0, 0];

    #[test]
    fn a_reply_is_judged_when_the_stream_completes_with_its_trailers() {
        let mut r = Reply::new(3);
        assert_eq!(r.take(3, CalloutEvent::Headers(h(&[(":status", "200"), ("content-type", "application/grpc")]))), None);
        assert_eq!(r.take(3, CalloutEvent::Data(EMPTY_ANSWER[..2].to_vec())), None);
        assert_eq!(r.take(3, CalloutEvent::Data(EMPTY_ANSWER[2..].to_vec())), None);
        // Another stream's events are not this reply's.
        assert_eq!(r.take(4, CalloutEvent::Complete), None);
        assert_eq!(r.take(3, CalloutEvent::Trailers(h(&[("grpc-status", "0")]))), None);
        let answer = r.take(3, CalloutEvent::Complete).and_then(Result::ok);
        assert!(answer.is_some_and(|a| a.statuses.is_empty()));
    }

    #[test]
    fn a_reply_without_trailers_a_reset_or_an_oversized_body_is_no_answer() {
        let mut r = Reply::new(1);
        r.take(1, CalloutEvent::Headers(h(&[(":status", "200"), ("content-type", "application/grpc")])));
        r.take(1, CalloutEvent::Data(EMPTY_ANSWER.to_vec()));
        assert_eq!(r.take(1, CalloutEvent::Complete), Some(Err("no gRPC status in the reply".into())));
        assert!(matches!(Reply::new(1).take(1, CalloutEvent::Reset), Some(Err(why)) if why.contains("reset")));
        let mut big = Reply::new(1);
        big.take(1, CalloutEvent::Data(vec![0; wire::MAX_REPLY_BYTES]));
        big.take(1, CalloutEvent::Data(vec![0; 1]));
        assert_eq!(big.take(1, CalloutEvent::Complete), Some(Err(WireError::TooLarge.to_string())));
    }
}
