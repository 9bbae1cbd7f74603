//! The worker side of the audit trail: the roles of a request share one draft
//! (`cordon_core::audit::assembly`), found by a per-stream key kept in Envoy filter state
//! (set by the first role, read by the next; a client cannot set it), and the finished record
//! is handed to the singleton's shared queue. Nothing here decides what a record says.

use cordon_audit::digest::ContentKey;
use cordon_audit::record::AuditRecord;
use cordon_core::CompiledPolicy;
use cordon_core::audit::assembly::{Assembly, Left, Role};
use cordon_core::audit::draft::{Draft, Ending};
use cordon_core::audit::{DeliveryState, OnAuditUnavailable, admits, in_flight};
use proxy_wasm::hostcalls;
use proxy_wasm::types::LogLevel;
use std::cell::{Cell, RefCell};
use std::time::UNIX_EPOCH;

/// The shared queue the singleton registers and the workers enqueue finished records to.
pub const QUEUE: &str = "cordon.audit.records";
/// Shared-data key of the delivery state the singleton publishes.
pub const STATE_KEY: &str = "cordon.audit.state";
/// Shared-data key naming the environment variable of the content-digest key (set by the
/// singleton when records carry digests; never the key itself).
pub const CONTENT_KEY_ENV: &str = "cordon.audit.content_key_env";
/// Filter-state property holding the request's draft key.
const KEY_PROPERTY: &str = "cordon_audit_key";
/// Open drafts per worker; beyond it the oldest is finished early, marked incomplete.
const MAX_OPEN: usize = 65_536;
/// How long a worker waits before asking again for a queue that did not resolve.
const RESOLVE_RETRY_MS: u64 = 1_000;
/// Requests between two looks at the clock while the queue is unresolved: a node without audit
/// delivery then pays no host call per request for it (the singleton registers the queue while
/// Envoy starts, before listeners take traffic, so a node with audit resolves it at once).
const RESOLVE_EVERY: u32 = 64;

thread_local! {
    static ASSEMBLY: RefCell<Assembly> = RefCell::new(Assembly::new(MAX_OPEN));
    /// Tells this VM's draft keys from another VM's (roles given different vm_configs run in
    /// different VMs and cannot share a draft).
    static VM_NONCE: Cell<u64> = const { Cell::new(0) };
    static WARNED_SPLIT: Cell<bool> = const { Cell::new(false) };
    static QUEUE_ID: Cell<Option<u32>> = const { Cell::new(None) };
    static NEXT_RESOLVE_MS: Cell<u64> = const { Cell::new(0) };
    static SINCE_RESOLVE: Cell<u32> = const { Cell::new(0) };
    /// The content-digest key, read once when the queue resolves (the singleton has checked it).
    static CONTENT_KEY: RefCell<Option<ContentKey>> = const { RefCell::new(None) };
    /// This VM's open-draft count key, once announced to the singleton.
    static OPEN_KEY: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Publishes this worker's open-draft count for the singleton's watermark (announcing the key
/// the first time): what a killed Envoy had in flight is then named by the next run.
fn publish_open(q: u32) {
    let count = ASSEMBLY.with(|a| a.borrow().len());
    let key = OPEN_KEY.with(|k| {
        let mut k = k.borrow_mut();
        if k.is_none() {
            let key = in_flight::worker_key(vm_nonce());
            if hostcalls::enqueue_shared_queue(q, Some(&in_flight::hello(&key))).is_err() {
                return None;
            }
            *k = Some(key);
        }
        k.clone()
    });
    if let Some(key) = key {
        let _ = hostcalls::set_shared_data(&key, Some(&in_flight::encode_count(count)), None);
    }
}

fn now_ms() -> u64 {
    hostcalls::get_current_time().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map_or(0, |d| d.as_millis() as u64)
}

/// The singleton's queue, if audit delivery is set up on this Envoy (resolved once, retried
/// at most once a second while it is not).
fn queue() -> Option<u32> {
    if let Some(id) = QUEUE_ID.get() {
        return Some(id);
    }
    let calls = SINCE_RESOLVE.get();
    SINCE_RESOLVE.set(calls.wrapping_add(1));
    if !calls.is_multiple_of(RESOLVE_EVERY) {
        return None;
    }
    let now = now_ms();
    if now < NEXT_RESOLVE_MS.get() {
        return None;
    }
    NEXT_RESOLVE_MS.set(now.saturating_add(RESOLVE_RETRY_MS));
    let vm_id = hostcalls::get_property(vec!["plugin_vm_id"]).ok().flatten().and_then(|b| String::from_utf8(b).ok()).unwrap_or_default();
    let id = hostcalls::resolve_shared_queue(&vm_id, QUEUE).ok().flatten();
    if id.is_some() {
        let name = hostcalls::get_shared_data(CONTENT_KEY_ENV).ok().and_then(|(v, _)| v).and_then(|v| String::from_utf8(v).ok());
        let key = name.and_then(|n| cordon_core::config::content_key_from(&n, &|v: &str| std::env::var(v).ok()).ok());
        CONTENT_KEY.with(|k| *k.borrow_mut() = key);
    }
    QUEUE_ID.set(id);
    id
}

/// The content-digest key, when records carry digests and `key` is an open draft.
pub fn content_key(key: Option<u64>) -> Option<ContentKey> {
    key?;
    CONTENT_KEY.with(|k| k.borrow().clone())
}

fn vm_nonce() -> u64 {
    let n = VM_NONCE.get();
    if n != 0 {
        return n;
    }
    let t = hostcalls::get_current_time().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map_or(1, |d| d.as_nanos() as u64);
    let n = (t ^ (t >> 29)).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    VM_NONCE.set(n);
    n
}

/// Whether policy lets the request in given the node's audit delivery state.
pub fn admits_request(policy: &CompiledPolicy) -> bool {
    let audit = policy.audit();
    if audit.on_unavailable == OnAuditUnavailable::Accept {
        return true; // no host call on the common path
    }
    let state = hostcalls::get_shared_data(STATE_KEY).ok().and_then(|(v, _)| v).and_then(|v| DeliveryState::from_bytes(&v));
    admits(audit, state)
}

/// The first role of a request opens its draft (when audit delivery is set up) and leaves the
/// key for the roles after it.
pub fn open(role: Role, request_id: &str) -> Option<u64> {
    let q = queue()?;
    let (key, evicted) = ASSEMBLY.with(|a| a.borrow_mut().open(role, request_id, now_ms()));
    if let Some(r) = evicted {
        hand_over(&r);
    }
    publish_open(q);
    let _ = hostcalls::set_property(vec![KEY_PROPERTY], Some(format!("{:016x}:{key}", vm_nonce()).as_bytes()));
    Some(key)
}

/// A later role joins the request's draft, or opens one if no role before it did.
pub fn join_or_open(role: Role, request_id: impl FnOnce() -> Option<String>) -> Option<u64> {
    // No audit delivery on this node: no filter-state read either.
    queue()?;
    let found = hostcalls::get_property(vec![KEY_PROPERTY]).ok().flatten().and_then(|b| String::from_utf8(b).ok());
    if let Some((nonce, key)) = found.as_deref().and_then(|s| s.split_once(':')) {
        let same_vm = u64::from_str_radix(nonce, 16).ok() == Some(vm_nonce());
        if same_vm
            && let Ok(key) = key.parse::<u64>()
            && ASSEMBLY.with(|a| a.borrow_mut().join(key, role))
        {
            return Some(key);
        }
        if !same_vm && !WARNED_SPLIT.replace(true) {
            let _ = hostcalls::log(
                LogLevel::Warn,
                "audit: cordon.redact runs in another VM than the role before it (their vm_configs differ): each writes its own \
                 record, correlated by request id; give every Cordon role the same vm_config to get one record per request",
            );
        }
    }
    open(role, &request_id().unwrap_or_default())
}

/// `role` joins the draft `key` of this same VM (known without a filter-state read).
pub fn join(key: Option<u64>, role: Role) -> Option<u64> {
    let key = key?;
    ASSEMBLY.with(|a| a.borrow_mut().join(key, role)).then_some(key)
}

/// Writes into the draft `key`, if it is open.
pub fn with(key: Option<u64>, f: impl FnOnce(&mut Draft)) {
    let Some(key) = key else { return };
    ASSEMBLY.with(|a| {
        if let Some(d) = a.borrow_mut().draft(key) {
            f(d);
        }
    });
}

fn int_property(path: &[&str]) -> Option<u64> {
    let b = hostcalls::get_property(path.to_vec()).ok().flatten()?;
    // Envoy encodes integer properties as 8 little-endian bytes.
    Some(u64::from_le_bytes(<[u8; 8]>::try_from(b.as_slice()).ok()?))
}

/// `role` is done with the request; if it was the last, the record goes to the singleton.
pub fn leave(key: Option<u64>, role: Role) {
    let Some(key) = key else { return };
    let left = ASSEMBLY.with(|a| {
        a.borrow_mut().leave(key, role, || Ending {
            end_ms: now_ms(),
            status: int_property(&["response", "code"]).and_then(|c| u16::try_from(c).ok()).filter(|c| *c != 0),
            bytes_in: int_property(&["request", "total_size"]).unwrap_or(0),
            bytes_out: int_property(&["response", "total_size"]).unwrap_or(0),
        })
    });
    if let Left::Finished(record) = left {
        hand_over(&record);
        if let Some(q) = QUEUE_ID.get() {
            publish_open(q);
        }
    }
}

fn hand_over(record: &AuditRecord) {
    let Some(q) = queue() else { return };
    let bytes = cordon_audit::encoding::encode_record(now_ms(), record);
    if let Err(e) = hostcalls::enqueue_shared_queue(q, Some(&bytes)) {
        // The singleton is gone (VM reload): the record cannot be kept; say so, without content.
        let _ = hostcalls::log(LogLevel::Error, &format!("audit: could not hand a record to the singleton: {e:?}"));
        QUEUE_ID.set(None);
        SINCE_RESOLVE.set(0);
        // A new singleton must hear of this worker's open-draft count again.
        OPEN_KEY.with(|k| k.borrow_mut().take());
    }
}
