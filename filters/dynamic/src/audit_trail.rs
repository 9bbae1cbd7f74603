//! The worker side of the audit trail in the native module: the roles of a request share one
//! draft (`cordon_core::audit::assembly`, one per worker thread: every hook of a stream runs on
//! its worker), found by a per-stream key kept in Envoy filter state (set by the first role,
//! read by the next; a client cannot set it). A finished record goes over a channel to the one
//! process-wide shipper (`crate::audit_stream`), which replaces the wasm build's shared queue.
//! Nothing here decides what a record says.

use crate::abi::{IntAttribute, Stream};
use cordon_audit::digest::ContentKey;
use cordon_audit::record::AuditRecord;
use cordon_core::CompiledPolicy;
use cordon_core::audit::assembly::{Assembly, Left, Role};
use cordon_core::audit::draft::{Draft, Ending};
use cordon_core::audit::{DeliveryState, OnAuditUnavailable, admits};
use std::cell::{Cell, RefCell};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc::UnboundedSender;

/// Filter-state key holding the request's draft key.
const KEY_PROPERTY: &str = "cordon_audit_key";
/// Open drafts per worker; beyond it the oldest is finished early, marked incomplete.
const MAX_OPEN: usize = 65_536;

/// Where finished records go: the shipper's channel, once audit delivery is set up.
static RECORDS: OnceLock<UnboundedSender<(u64, AuditRecord)>> = OnceLock::new();
/// The content-digest key, when records carry digests (checked when the shipper starts).
static CONTENT_KEY: OnceLock<ContentKey> = OnceLock::new();
/// Drafts open across every worker: exchanges in flight, for the shipper's watermark.
static IN_FLIGHT: AtomicU64 = AtomicU64::new(0);
/// The delivery state the shipper publishes (0: not set up yet).
static STATE: AtomicU8 = AtomicU8::new(0);

thread_local! {
    static ASSEMBLY: RefCell<Assembly> = RefCell::new(Assembly::new(MAX_OPEN));
    /// Tells this worker's draft keys from another thread's.
    static NONCE: Cell<u64> = const { Cell::new(0) };
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn nonce() -> u64 {
    let n = NONCE.get();
    if n != 0 {
        return n;
    }
    let t = SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64);
    let here = &NONCE as *const _ as u64;
    let n = (t ^ here.rotate_left(32)).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    NONCE.set(n);
    n
}

/// Called once by the shipper: from now on the roles write records (with content digests
/// under `content_key`, if given).
pub fn set_up(records: UnboundedSender<(u64, AuditRecord)>, content_key: Option<ContentKey>) -> bool {
    if let Some(k) = content_key {
        let _ = CONTENT_KEY.set(k);
    }
    RECORDS.set(records).is_ok()
}

/// The content-digest key, when records carry digests and `key` is an open draft.
pub fn content_key(key: Option<u64>) -> Option<&'static ContentKey> {
    key?;
    CONTENT_KEY.get()
}

/// Exchanges in flight across the process (drafts opened and not yet handed over).
pub fn in_flight() -> u64 {
    IN_FLIGHT.load(Ordering::Relaxed)
}

fn state_code(state: DeliveryState) -> u8 {
    match state {
        DeliveryState::Open => 1,
        DeliveryState::Full => 2,
    }
}

/// The shipper publishes its delivery state.
pub fn publish_state(state: DeliveryState) {
    STATE.store(state_code(state), Ordering::Release);
}

fn state() -> Option<DeliveryState> {
    match STATE.load(Ordering::Acquire) {
        1 => Some(DeliveryState::Open),
        2 => Some(DeliveryState::Full),
        _ => None,
    }
}

/// Whether policy lets the request in given the node's audit delivery state.
pub fn admits_request(policy: &CompiledPolicy) -> bool {
    let audit = policy.audit();
    audit.on_unavailable == OnAuditUnavailable::Accept || admits(audit, state())
}

fn with_assembly<T>(f: impl FnOnce(&mut Assembly) -> T) -> Option<T> {
    ASSEMBLY.with(|a| a.try_borrow_mut().ok().map(|mut a| f(&mut a)))
}

/// Whether audit delivery is set up (a request's id is worth reading).
pub fn enabled() -> bool {
    RECORDS.get().is_some()
}

/// The first role of a request opens its draft (when audit delivery is set up) and leaves the
/// key in filter state for the roles after it.
pub fn open(s: &Stream, role: Role, request_id: &str) -> Option<u64> {
    RECORDS.get()?;
    let (key, evicted) = with_assembly(|a| a.open(role, request_id, now_ms()))?;
    IN_FLIGHT.fetch_add(1, Ordering::Relaxed);
    if let Some(r) = evicted {
        hand_over(r);
    }
    s.set_filter_state(KEY_PROPERTY, format!("{:016x}:{key}", nonce()).as_bytes());
    Some(key)
}

/// A later role joins the request's draft, or opens one if no role before it did.
pub fn join_or_open(s: &Stream, role: Role, request_id: impl FnOnce() -> Option<String>) -> Option<u64> {
    RECORDS.get()?;
    let found = s.filter_state(KEY_PROPERTY).and_then(|b| String::from_utf8(b).ok());
    if let Some((n, key)) = found.as_deref().and_then(|v| v.split_once(':'))
        && u64::from_str_radix(n, 16).ok() == Some(nonce())
        && let Ok(key) = key.parse::<u64>()
        && with_assembly(|a| a.join(key, role)) == Some(true)
    {
        return Some(key);
    }
    open(s, role, &request_id().unwrap_or_default())
}

/// `role` joins the draft `key` the role before it opened in this same filter
/// (`cordon.gateway`: known without a filter-state read).
pub fn join(key: Option<u64>, role: Role) -> Option<u64> {
    let key = key?;
    (with_assembly(|a| a.join(key, role)) == Some(true)).then_some(key)
}

/// Writes into the draft `key`, if it is open.
pub fn with(key: Option<u64>, f: impl FnOnce(&mut Draft)) {
    let Some(key) = key else { return };
    with_assembly(|a| {
        if let Some(d) = a.draft(key) {
            f(d);
        }
    });
}

/// `role` is done with the request; if it was the last, the record goes to the shipper.
pub fn leave(s: &Stream, key: Option<u64>, role: Role) {
    let Some(key) = key else { return };
    let ending = || Ending {
        end_ms: now_ms(),
        status: s.attribute_int(IntAttribute::ResponseCode).and_then(|c| u16::try_from(c).ok()).filter(|c| *c != 0),
        bytes_in: s.attribute_int(IntAttribute::RequestTotalSize).unwrap_or(0),
        bytes_out: s.attribute_int(IntAttribute::ResponseTotalSize).unwrap_or(0),
    };
    if let Some(Left::Finished(record)) = with_assembly(|a| a.leave(key, role, ending)) {
        hand_over(*record);
    }
}

fn hand_over(record: AuditRecord) {
    let _ = IN_FLIGHT.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| Some(n.saturating_sub(1)));
    if let Some(tx) = RECORDS.get()
        && tx.send((now_ms(), record)).is_err()
    {
        // The shipper thread is gone: the record cannot be kept; say so, without content.
        crate::abi::log(crate::abi::LogLevel::Error, "audit: the shipper is gone; a record was lost");
    }
}
