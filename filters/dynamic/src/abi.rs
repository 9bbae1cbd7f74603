//! The Envoy dynamic-module ABI, as far as an HTTP filter needs it, and the crate's only unsafe
//! code.
//!
//! These declarations are written from the ABI's documentation (Envoy's
//! `source/extensions/dynamic_modules/abi/abi.h`, read at the version of Envoy 1.40); nothing is
//! generated or copied. `scripts/check-dynamic-abi.sh` checks that every symbol imported here
//! exists in the pinned Envoy binary (read from the built library's undefined symbols) and that
//! every HTTP-filter hook the binary looks up is exported, so an Envoy upgrade that renames or
//! drops part of the ABI fails loudly instead of at load time or, worse, at run time.
//!
//! Two directions:
//! * **hooks** (`envoy_dynamic_module_on_*`): Envoy calls them. Every hook catches panics and
//!   fails closed (a local reply, or a null pointer Envoy treats as a failed initialisation):
//!   a panic never unwinds into Envoy.
//! * **callbacks** (`envoy_dynamic_module_callback_*`): we call them, only through the safe
//!   wrappers [`Stream`] and [`ConfigHost`], and only with the pointer Envoy handed to the hook
//!   that is running.
//!
//! Enums cross the boundary as `u32` (C `enum`s are `int`-sized on the platforms Envoy runs on).
#![allow(unsafe_code)]

use std::cell::{Cell, RefCell};
use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// The ABI version this module is written against (Envoy 1.40 reports `v0.2.0`). Envoy only
/// warns on a mismatch, so the real guard is `scripts/check-dynamic-abi.sh` and the end-to-end
/// tests against the pinned binary.
pub const ABI_VERSION: &[u8] = b"v0.2.0\0";

// ------------------------------------------------------------------------------------------
// Types shared with Envoy.
// ------------------------------------------------------------------------------------------

/// A byte range owned by Envoy, valid until the running hook returns (or a setter is called).
#[repr(C)]
#[derive(Clone, Copy)]
struct EnvoyBuffer {
    ptr: *const u8,
    len: usize,
}

impl EnvoyBuffer {
    const EMPTY: Self = Self { ptr: std::ptr::null(), len: 0 };

    /// Copies the bytes out. Safety: `ptr` is null or valid for `len` bytes (Envoy's contract
    /// while the hook runs).
    unsafe fn to_vec(self) -> Vec<u8> {
        if self.ptr.is_null() || self.len == 0 {
            return Vec::new();
        }
        // SAFETY: non-null and valid for `len` bytes per the ABI contract above.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }.to_vec()
    }

    /// Borrows the bytes. Safety: as [`EnvoyBuffer::to_vec`], and the caller bounds the returned
    /// lifetime to the time the bytes stay valid.
    unsafe fn as_slice<'a>(self) -> &'a [u8] {
        if self.ptr.is_null() || self.len == 0 {
            return &[];
        }
        // SAFETY: non-null and valid for `len` bytes for as long as the caller uses the slice.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// A byte range owned by the module, lent to Envoy for the duration of one callback.
#[repr(C)]
#[derive(Clone, Copy)]
struct ModuleBuffer {
    ptr: *const u8,
    len: usize,
}

impl ModuleBuffer {
    fn of(bytes: &[u8]) -> Self {
        Self { ptr: bytes.as_ptr(), len: bytes.len() }
    }
    const NULL: Self = Self { ptr: std::ptr::null(), len: 0 };
}

/// A header owned by Envoy's header map.
#[repr(C)]
#[derive(Clone, Copy)]
struct EnvoyHeader {
    key: EnvoyBuffer,
    value: EnvoyBuffer,
}

/// A header owned by the module (local replies).
#[repr(C)]
#[derive(Clone, Copy)]
struct ModuleHeader {
    key: ModuleBuffer,
    value: ModuleBuffer,
}

/// Which header map a header callback works on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum HeaderKind {
    Request = 0,
    Response = 2,
}

/// Which body a body callback works on: the chunk of the current hook, or what Envoy buffered
/// before it (after a `StopIterationAndBuffer`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
enum BodyKind {
    ReceivedRequest = 0,
    BufferedRequest = 1,
    ReceivedResponse = 2,
    BufferedResponse = 3,
}

/// Direction of a body operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Request,
    Response,
}

impl Direction {
    fn received(self) -> BodyKind {
        match self {
            Direction::Request => BodyKind::ReceivedRequest,
            Direction::Response => BodyKind::ReceivedResponse,
        }
    }
    fn buffered(self) -> BodyKind {
        match self {
            Direction::Request => BodyKind::BufferedRequest,
            Direction::Response => BodyKind::BufferedResponse,
        }
    }
}

/// Envoy's log levels (`spdlog`), as the ABI numbers them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
#[allow(dead_code)]
pub enum LogLevel {
    Trace = 0,
    Debug = 1,
    Info = 2,
    Warn = 3,
    Error = 4,
    Critical = 5,
}

/// Attributes (Envoy's attribute vocabulary) the filter reads, numbered as the ABI's
/// `envoy_dynamic_module_type_attribute_id`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Attribute {
    /// `connection.uri_san_peer_certificate`
    ConnectionUriSanPeerCertificate = 37,
    /// `xds.cluster_name`
    XdsClusterName = 57,
}

/// Integer attributes the audit trail reads when a stream ends (same numbering).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum IntAttribute {
    /// `request.total_size`
    RequestTotalSize = 14,
    /// `response.code`
    ResponseCode = 15,
    /// `response.total_size`
    ResponseTotalSize = 22,
}

/// What a header hook tells Envoy (`FilterHeadersStatus`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum HeadersStatus {
    Continue = 0,
    /// Hold the headers (and everything after them) until a later hook continues.
    StopIteration = 1,
}

/// What a body hook tells Envoy (`FilterDataStatus`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum DataStatus {
    Continue = 0,
    /// Keep this chunk in Envoy's buffer and wait for more.
    StopIterationAndBuffer = 1,
    /// Stop without buffering (after a local reply).
    StopIterationNoBuffer = 3,
}

// ------------------------------------------------------------------------------------------
// Callbacks: implemented by Envoy, resolved when Envoy dlopen()s the module.
// ------------------------------------------------------------------------------------------

unsafe extern "C" {
    fn envoy_dynamic_module_callback_log(level: u32, message: ModuleBuffer);

    fn envoy_dynamic_module_callback_http_filter_config_define_counter(
        config_envoy_ptr: *mut c_void,
        name: ModuleBuffer,
        label_names: *const ModuleBuffer,
        label_names_len: usize,
        counter_id: *mut usize,
    ) -> u32;
    fn envoy_dynamic_module_callback_http_filter_config_define_gauge(
        config_envoy_ptr: *mut c_void,
        name: ModuleBuffer,
        label_names: *const ModuleBuffer,
        label_names_len: usize,
        gauge_id: *mut usize,
    ) -> u32;
    fn envoy_dynamic_module_callback_http_filter_config_set_gauge(
        config_envoy_ptr: *mut c_void,
        id: usize,
        label_values: *const ModuleBuffer,
        label_values_len: usize,
        value: u64,
    ) -> u32;
    fn envoy_dynamic_module_callback_http_filter_increment_counter(
        filter_envoy_ptr: *mut c_void,
        id: usize,
        label_values: *const ModuleBuffer,
        label_values_len: usize,
        value: u64,
    ) -> u32;

    fn envoy_dynamic_module_callback_http_get_header(
        filter_envoy_ptr: *mut c_void,
        kind: u32,
        key: ModuleBuffer,
        result: *mut EnvoyBuffer,
        index: usize,
        optional_count: *mut usize,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_get_headers_size(filter_envoy_ptr: *mut c_void, kind: u32) -> usize;
    fn envoy_dynamic_module_callback_http_get_headers(filter_envoy_ptr: *mut c_void, kind: u32, result: *mut EnvoyHeader) -> bool;
    fn envoy_dynamic_module_callback_http_set_header(
        filter_envoy_ptr: *mut c_void,
        kind: u32,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_add_header(
        filter_envoy_ptr: *mut c_void,
        kind: u32,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;

    fn envoy_dynamic_module_callback_http_send_response(
        filter_envoy_ptr: *mut c_void,
        status: u32,
        headers: *const ModuleHeader,
        headers_len: usize,
        body: ModuleBuffer,
        details: ModuleBuffer,
    );

    fn envoy_dynamic_module_callback_http_get_body_size(filter_envoy_ptr: *mut c_void, kind: u32) -> usize;
    fn envoy_dynamic_module_callback_http_get_body_chunks_size(filter_envoy_ptr: *mut c_void, kind: u32) -> usize;
    fn envoy_dynamic_module_callback_http_get_body_chunks(filter_envoy_ptr: *mut c_void, kind: u32, result: *mut EnvoyBuffer) -> bool;
    fn envoy_dynamic_module_callback_http_append_body(filter_envoy_ptr: *mut c_void, kind: u32, data: ModuleBuffer) -> bool;
    fn envoy_dynamic_module_callback_http_drain_body(filter_envoy_ptr: *mut c_void, kind: u32, bytes: usize) -> bool;
    fn envoy_dynamic_module_callback_http_received_buffered_request_body(filter_envoy_ptr: *mut c_void) -> bool;
    fn envoy_dynamic_module_callback_http_received_buffered_response_body(filter_envoy_ptr: *mut c_void) -> bool;

    fn envoy_dynamic_module_callback_http_filter_get_attribute_string(
        filter_envoy_ptr: *mut c_void,
        attribute: u32,
        result: *mut EnvoyBuffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_filter_get_attribute_int(filter_envoy_ptr: *mut c_void, attribute: u32, result: *mut u64)
    -> bool;

    fn envoy_dynamic_module_callback_http_set_filter_state_bytes(
        filter_envoy_ptr: *mut c_void,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_get_filter_state_bytes(
        filter_envoy_ptr: *mut c_void,
        key: ModuleBuffer,
        result: *mut EnvoyBuffer,
    ) -> bool;

    // Outgoing HTTP (fleet-wide limits): a stream started by a filter (its events arrive in the
    // `on_http_filter_http_stream_*` hooks; it is reset when the filter is destroyed), resuming
    // a held request, and a configuration's own callouts, made on the main thread from a
    // scheduled event so they outlive the stream that asked for them.
    fn envoy_dynamic_module_callback_http_filter_start_http_stream(
        filter_envoy_ptr: *mut c_void,
        stream_id_out: *mut u64,
        cluster_name: ModuleBuffer,
        headers: *const ModuleHeader,
        headers_len: usize,
        body: ModuleBuffer,
        end_stream: bool,
        timeout_ms: u64,
    ) -> u32;
    fn envoy_dynamic_module_callback_http_filter_continue_decoding(filter_envoy_ptr: *mut c_void);
    fn envoy_dynamic_module_callback_http_filter_config_http_callout(
        config_envoy_ptr: *mut c_void,
        callout_id_out: *mut u64,
        cluster_name: ModuleBuffer,
        headers: *const ModuleHeader,
        headers_len: usize,
        body: ModuleBuffer,
        timeout_ms: u64,
    ) -> u32;
    fn envoy_dynamic_module_callback_http_filter_config_scheduler_new(config_envoy_ptr: *mut c_void) -> *mut c_void;
    fn envoy_dynamic_module_callback_http_filter_config_scheduler_commit(scheduler: *mut c_void, event_id: u64);
    fn envoy_dynamic_module_callback_http_filter_config_scheduler_delete(scheduler: *mut c_void);
}

// The dynamic loader (glibc), to keep this library mapped while our own thread runs its code.
#[repr(C)]
struct DlInfo {
    dli_fname: *const std::ffi::c_char,
    dli_fbase: *mut c_void,
    dli_sname: *const std::ffi::c_char,
    dli_saddr: *mut c_void,
}

unsafe extern "C" {
    fn dladdr(addr: *const c_void, info: *mut DlInfo) -> i32;
    fn dlopen(filename: *const std::ffi::c_char, flags: i32) -> *mut c_void;
}

const RTLD_LAZY: i32 = 0x1;
const RTLD_NOLOAD: i32 = 0x4;
const RTLD_NODELETE: i32 = 0x1000;

/// Keeps this library loaded until the process exits, whatever `do_not_close` says: the policy
/// thread runs the library's code, and an unload (`dlclose` once no configuration uses the
/// module) would pull that code from under it and crash Envoy.
pub fn pin_library() -> Result<(), String> {
    let mut info = DlInfo {
        dli_fname: std::ptr::null(),
        dli_fbase: std::ptr::null_mut(),
        dli_sname: std::ptr::null(),
        dli_saddr: std::ptr::null_mut(),
    };
    // SAFETY: `dladdr` only reads the address (one of our own functions) and fills `info`.
    let found = unsafe { dladdr(pin_library as *const c_void, &mut info) };
    if found == 0 || info.dli_fname.is_null() {
        return Err("dladdr found no library for the module's own code".into());
    }
    // SAFETY: `dli_fname` is a NUL-terminated path owned by the loader; RTLD_NOLOAD only takes
    // another reference to the already loaded library, RTLD_NODELETE makes it permanent. The
    // handle is deliberately never closed.
    let handle = unsafe { dlopen(info.dli_fname, RTLD_LAZY | RTLD_NOLOAD | RTLD_NODELETE) };
    if handle.is_null() { Err("dlopen(RTLD_NODELETE) of the module failed".into()) } else { Ok(()) }
}

// ------------------------------------------------------------------------------------------
// The safe surface the rest of the crate uses.
// ------------------------------------------------------------------------------------------

/// Logs under Envoy's `dynamic_modules` logger.
pub fn log(level: LogLevel, message: &str) {
    // SAFETY: the buffer is valid for the call; Envoy copies what it keeps.
    unsafe { envoy_dynamic_module_callback_log(level as u32, ModuleBuffer::of(message.as_bytes())) }
}

/// Envoy's side of one filter configuration, while one of its hooks runs on the main thread
/// (`config_new`: metrics can only be defined then; `config_scheduled`: callouts).
pub struct ConfigHost {
    ptr: *mut c_void,
}

/// Why Envoy did not start an outgoing HTTP call (`envoy_dynamic_module_type_http_callout_init_result`).
pub fn callout_init_error(code: u32) -> &'static str {
    match code {
        1 => "missing required headers",
        2 => "no such cluster",
        3 => "duplicate callout id",
        4 => "cannot create the request (no healthy upstream?)",
        _ => "unknown error",
    }
}

fn module_headers(headers: &[(&str, String)]) -> Vec<ModuleHeader> {
    headers.iter().map(|(k, v)| ModuleHeader { key: ModuleBuffer::of(k.as_bytes()), value: ModuleBuffer::of(v.as_bytes()) }).collect()
}

/// A configuration's pointer kept beyond its hooks, to make its scheduler from any thread. Envoy
/// keeps the configuration alive until `config_destroy`, which drops the factory holding this.
#[derive(Clone, Copy)]
pub struct ConfigHandle(usize);

/// A configuration's scheduler: `commit` (any thread) runs `FilterFactory::scheduled` on the
/// main thread. Deleted when dropped.
pub struct ConfigScheduler(usize);

impl ConfigHandle {
    /// A new scheduler for this configuration.
    pub fn scheduler(self) -> Option<ConfigScheduler> {
        // SAFETY: the configuration is alive (see `ConfigHandle`); Envoy allocates the scheduler,
        // which holds a weak reference to the configuration and its main-thread dispatcher.
        let ptr = unsafe { envoy_dynamic_module_callback_http_filter_config_scheduler_new(self.0 as *mut c_void) };
        (!ptr.is_null()).then_some(ConfigScheduler(ptr as usize))
    }
}

impl ConfigScheduler {
    /// Asks for `FilterFactory::scheduled(event_id)` on the main thread.
    pub fn commit(&self, event_id: u64) {
        // SAFETY: a live scheduler from `scheduler_new`; posting is thread-safe in Envoy.
        unsafe { envoy_dynamic_module_callback_http_filter_config_scheduler_commit(self.0 as *mut c_void, event_id) }
    }
}

impl Drop for ConfigScheduler {
    fn drop(&mut self) {
        // SAFETY: deleted exactly once, here.
        unsafe { envoy_dynamic_module_callback_http_filter_config_scheduler_delete(self.0 as *mut c_void) }
    }
}

impl ConfigHost {
    /// This configuration's pointer, for [`ConfigHandle::scheduler`] later.
    pub fn handle(&self) -> ConfigHandle {
        ConfigHandle(self.ptr as usize)
    }

    /// Sends an HTTP request to `cluster` on the configuration's behalf (main thread only); its
    /// reply comes to `FilterFactory::callout_done`. The callout id, or why it was not sent.
    pub fn http_callout(&self, cluster: &str, headers: &[(&str, String)], body: &[u8], timeout_ms: u64) -> Result<u64, u32> {
        let raw = module_headers(headers);
        let mut id = 0u64;
        // SAFETY: the config pointer of the running hook; every buffer lives until the call
        // returns and Envoy copies what it sends.
        let result = unsafe {
            envoy_dynamic_module_callback_http_filter_config_http_callout(
                self.ptr,
                &mut id,
                ModuleBuffer::of(cluster.as_bytes()),
                raw.as_ptr(),
                raw.len(),
                ModuleBuffer::of(body),
                timeout_ms,
            )
        };
        if result == 0 { Ok(id) } else { Err(result) }
    }

    /// Defines a counter named `name` (Envoy prefixes the metrics namespace); its id for
    /// [`Stream::increment_counter`].
    pub fn define_counter(&self, name: &str) -> Option<usize> {
        let mut id = 0usize;
        // SAFETY: `ptr` is the config pointer of the running hook; the name buffer and the out
        // pointer are valid for the call; no labels.
        let result = unsafe {
            envoy_dynamic_module_callback_http_filter_config_define_counter(
                self.ptr,
                ModuleBuffer::of(name.as_bytes()),
                std::ptr::null(),
                0,
                &mut id,
            )
        };
        (result == 0).then_some(id)
    }

    /// Defines a gauge named `name` and sets it to `value` (a figure fixed for the lifetime of
    /// the configuration).
    pub fn set_gauge(&self, name: &str, value: u64) {
        let mut id = 0usize;
        // SAFETY: as in `define_counter`; the id is used at once on the same config.
        unsafe {
            if envoy_dynamic_module_callback_http_filter_config_define_gauge(
                self.ptr,
                ModuleBuffer::of(name.as_bytes()),
                std::ptr::null(),
                0,
                &mut id,
            ) == 0
            {
                envoy_dynamic_module_callback_http_filter_config_set_gauge(self.ptr, id, std::ptr::null(), 0, value);
            }
        }
    }
}

/// Envoy's side of one HTTP stream, while one of its hooks runs. Not `Send`: it is only valid on
/// the worker thread and during the hook it was made for.
pub struct Stream<'a> {
    ptr: *mut c_void,
    /// Shared with every hook of the stream, nested ones included.
    replied: &'a Cell<bool>,
    /// The body's shape, read once per hook for both its length and its read (a hook is one
    /// `Stream`); forgotten when the hook changes the body.
    shape: Cell<Option<(Direction, BodyShape)>>,
}

/// What the body so far is made of, in bytes.
#[derive(Clone, Copy, Debug)]
struct BodyShape {
    /// What Envoy buffered for us (0 when this hook's chunk *is* that buffer).
    buffered: usize,
    /// This hook's chunk.
    received: usize,
}

fn utf8(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

impl Stream<'_> {
    /// Lends every header of `kind` to `f`, pseudo-headers included, in Envoy's order, as pairs
    /// borrowed from Envoy's header map rather than copies (a request hook reads the whole map).
    ///
    /// The pairs are valid only until the map changes. `&mut self` keeps every other call on
    /// this stream (the only way the module can change the map) out of `f`, and `f` must work
    /// for any lifetime of the pairs, so nothing borrowed from them outlives this call. Names or
    /// values that are not UTF-8 are lent as lossy copies (they can then never match a key digest
    /// or a name).
    pub fn with_headers<R>(&mut self, kind: HeaderKind, f: impl for<'h> FnOnce(&'h [(&'h str, &'h str)]) -> R) -> R {
        // SAFETY: `ptr` is the running hook's filter pointer.
        let n = unsafe { envoy_dynamic_module_callback_http_get_headers_size(self.ptr, kind as u32) };
        if n == 0 {
            return f(&[]);
        }
        let mut raw = vec![EnvoyHeader { key: EnvoyBuffer::EMPTY, value: EnvoyBuffer::EMPTY }; n];
        // SAFETY: `raw` has room for the `n` headers Envoy just reported.
        if !unsafe { envoy_dynamic_module_callback_http_get_headers(self.ptr, kind as u32, raw.as_mut_ptr()) } {
            return f(&[]);
        }
        // SAFETY: Envoy filled each entry with buffers into its header map, valid until the map
        // changes; nothing can change it before this function returns (see above), and the
        // slices do not outlive it.
        let bytes = |b: EnvoyBuffer| unsafe { b.as_slice() };
        let mut pairs: Vec<(&str, &str)> = Vec::with_capacity(n);
        for h in &raw {
            match (std::str::from_utf8(bytes(h.key)), std::str::from_utf8(bytes(h.value))) {
                (Ok(k), Ok(v)) => pairs.push((k, v)),
                _ => break,
            }
        }
        if pairs.len() == n {
            return f(&pairs);
        }
        drop(pairs);
        let lossy: Vec<_> = raw.iter().map(|h| (String::from_utf8_lossy(bytes(h.key)), String::from_utf8_lossy(bytes(h.value)))).collect();
        let pairs: Vec<(&str, &str)> = lossy.iter().map(|(k, v)| (k.as_ref(), v.as_ref())).collect();
        f(&pairs)
    }

    /// The first value of header `name`, if present.
    pub fn header(&self, kind: HeaderKind, name: &str) -> Option<String> {
        let mut out = EnvoyBuffer::EMPTY;
        // SAFETY: key and out pointer valid for the call; the optional count pointer may be null.
        let ok = unsafe {
            envoy_dynamic_module_callback_http_get_header(
                self.ptr,
                kind as u32,
                ModuleBuffer::of(name.as_bytes()),
                &mut out,
                0,
                std::ptr::null_mut(),
            )
        };
        // SAFETY: on success `out` is null or valid until the hook returns; we copy now.
        (ok && !out.ptr.is_null()).then(|| utf8(unsafe { out.to_vec() }))
    }

    /// Sets header `name` to `value` (replacing every value), or removes it (`None`).
    pub fn set_header(&self, kind: HeaderKind, name: &str, value: Option<&str>) {
        let value = value.map_or(ModuleBuffer::NULL, |v| ModuleBuffer::of(v.as_bytes()));
        // SAFETY: buffers valid for the call; Envoy copies them into the header map.
        unsafe { envoy_dynamic_module_callback_http_set_header(self.ptr, kind as u32, ModuleBuffer::of(name.as_bytes()), value) };
    }

    /// Adds a value of header `name`, leaving any it has: for a header known to be absent,
    /// cheaper than [`Stream::set_header`], which first removes every value.
    pub fn add_header(&self, kind: HeaderKind, name: &str, value: &str) {
        // SAFETY: buffers valid for the call; Envoy copies them into the header map.
        unsafe {
            envoy_dynamic_module_callback_http_add_header(
                self.ptr,
                kind as u32,
                ModuleBuffer::of(name.as_bytes()),
                ModuleBuffer::of(value.as_bytes()),
            )
        };
    }

    /// Appends the body `kind` to `out`: one allocation at its final size, no copy in between
    /// (a streamed chunk is read on every hook; per-slice copies and the slice list were most
    /// of what reading it cost).
    fn append_body(&self, kind: BodyKind, out: &mut Vec<u8>) {
        // SAFETY: `ptr` is the running hook's filter pointer.
        let n = unsafe { envoy_dynamic_module_callback_http_get_body_chunks_size(self.ptr, kind as u32) };
        if n == 0 {
            return;
        }
        // A chunk is one or a few slices: their list on the stack unless there are more.
        let mut few = [EnvoyBuffer::EMPTY; 4];
        let mut many = Vec::new();
        let slices: &mut [EnvoyBuffer] = match few.get_mut(..n) {
            Some(few) => few,
            None => {
                many.resize(n, EnvoyBuffer::EMPTY);
                &mut many
            }
        };
        // SAFETY: `slices` has room for the `n` slices Envoy just reported.
        if !unsafe { envoy_dynamic_module_callback_http_get_body_chunks(self.ptr, kind as u32, slices.as_mut_ptr()) } {
            return;
        }
        out.reserve(slices.iter().map(|c| c.len).sum());
        for c in slices.iter() {
            // SAFETY: each slice is valid until the hook returns; copied now.
            out.extend_from_slice(unsafe { c.as_slice() });
        }
    }

    fn body_of(&self, kind: BodyKind) -> Vec<u8> {
        let mut out = Vec::new();
        self.append_body(kind, &mut out);
        out
    }

    fn body_size(&self, kind: BodyKind) -> usize {
        // SAFETY: a plain query on the running hook's filter.
        unsafe { envoy_dynamic_module_callback_http_get_body_size(self.ptr, kind as u32) }
    }

    /// Whether the chunk of this hook *is* Envoy's buffer (a filter before us buffered and
    /// resumed), in which case buffered and received must not be added up.
    fn received_is_buffered(&self, direction: Direction) -> bool {
        // SAFETY: plain queries on the running hook's filter.
        unsafe {
            match direction {
                Direction::Request => envoy_dynamic_module_callback_http_received_buffered_request_body(self.ptr),
                Direction::Response => envoy_dynamic_module_callback_http_received_buffered_response_body(self.ptr),
            }
        }
    }

    fn shape(&self, direction: Direction) -> BodyShape {
        if let Some((d, shape)) = self.shape.get()
            && d == direction
        {
            return shape;
        }
        let received = self.body_size(direction.received());
        let buffered = if self.received_is_buffered(direction) { 0 } else { self.body_size(direction.buffered()) };
        let shape = BodyShape { buffered, received };
        self.shape.set(Some((direction, shape)));
        shape
    }

    /// Bytes of the body so far: what Envoy buffered for us plus this hook's chunk.
    pub fn body_len(&self, direction: Direction) -> usize {
        let shape = self.shape(direction);
        shape.buffered.saturating_add(shape.received)
    }

    /// The body so far: what Envoy buffered for us, then this hook's chunk.
    pub fn body(&self, direction: Direction) -> Vec<u8> {
        let mut all = Vec::new();
        self.append_body_so_far(direction, &mut all);
        all
    }

    /// [`Self::body`], appended to `out` (a caller's room kept from chunk to chunk).
    pub fn append_body_so_far(&self, direction: Direction, out: &mut Vec<u8>) {
        let shape = self.shape(direction);
        if shape.buffered > 0 {
            self.append_body(direction.buffered(), out);
        }
        if shape.received > 0 {
            self.append_body(direction.received(), out);
        }
    }

    /// Only this hook's chunk.
    pub fn chunk(&self, direction: Direction) -> Vec<u8> {
        self.body_of(direction.received())
    }

    /// Replaces the whole body so far (buffered and this chunk) with `bytes`. Envoy moves this
    /// hook's chunk behind its buffer when the hook continues, so the new bytes go there.
    pub fn replace_body(&self, direction: Direction, bytes: &[u8]) {
        let received_is_buffered = self.received_is_buffered(direction);
        self.shape.set(None);
        // SAFETY: plain operations on the running hook's filter; `bytes` valid for the call.
        unsafe {
            if !received_is_buffered {
                envoy_dynamic_module_callback_http_drain_body(self.ptr, direction.buffered() as u32, usize::MAX);
            }
            envoy_dynamic_module_callback_http_drain_body(self.ptr, direction.received() as u32, usize::MAX);
            envoy_dynamic_module_callback_http_append_body(self.ptr, direction.received() as u32, ModuleBuffer::of(bytes));
        }
    }

    /// Replaces only this hook's chunk (streamed responses).
    pub fn replace_chunk(&self, direction: Direction, bytes: &[u8]) {
        self.shape.set(None);
        // SAFETY: as in `replace_body`.
        unsafe {
            envoy_dynamic_module_callback_http_drain_body(self.ptr, direction.received() as u32, usize::MAX);
            envoy_dynamic_module_callback_http_append_body(self.ptr, direction.received() as u32, ModuleBuffer::of(bytes));
        }
    }

    /// Sends a local reply; the stream goes no further. At most once per stream. Should Envoy run
    /// this stream's response hooks before it returns, they see a busy filter and pass.
    pub fn send_response(&self, status: u16, headers: &[(&str, &str)], body: &[u8], details: &str) {
        if self.replied.replace(true) {
            return;
        }
        let raw: Vec<ModuleHeader> = headers
            .iter()
            .map(|(k, v)| ModuleHeader { key: ModuleBuffer::of(k.as_bytes()), value: ModuleBuffer::of(v.as_bytes()) })
            .collect();
        // SAFETY: every buffer lives until the call returns; Envoy copies the reply.
        unsafe {
            envoy_dynamic_module_callback_http_send_response(
                self.ptr,
                u32::from(status),
                raw.as_ptr(),
                raw.len(),
                ModuleBuffer::of(body),
                ModuleBuffer::of(details.as_bytes()),
            )
        }
    }

    /// A string attribute (`connection.*`, `xds.*`), if Envoy has one.
    pub fn attribute(&self, attribute: Attribute) -> Option<String> {
        let mut out = EnvoyBuffer::EMPTY;
        // SAFETY: out pointer valid for the call; result valid until the hook returns, copied now.
        let ok = unsafe { envoy_dynamic_module_callback_http_filter_get_attribute_string(self.ptr, attribute as u32, &mut out) };
        (ok && !out.ptr.is_null()).then(|| utf8(unsafe { out.to_vec() })).filter(|s| !s.is_empty())
    }

    /// An integer attribute (`request.total_size`, `response.code`, ...), if Envoy has one.
    pub fn attribute_int(&self, attribute: IntAttribute) -> Option<u64> {
        let mut out = 0u64;
        // SAFETY: out pointer valid for the call.
        let ok = unsafe { envoy_dynamic_module_callback_http_filter_get_attribute_int(self.ptr, attribute as u32, &mut out) };
        ok.then_some(out)
    }

    /// Sets a bytes value in this stream's filter state (shared by every filter of the stream;
    /// a client cannot set it).
    pub fn set_filter_state(&self, key: &str, value: &[u8]) -> bool {
        // SAFETY: both buffers valid for the call; Envoy copies them.
        unsafe {
            envoy_dynamic_module_callback_http_set_filter_state_bytes(self.ptr, ModuleBuffer::of(key.as_bytes()), ModuleBuffer::of(value))
        }
    }

    /// A bytes value from this stream's filter state.
    pub fn filter_state(&self, key: &str) -> Option<Vec<u8>> {
        let mut out = EnvoyBuffer::EMPTY;
        // SAFETY: out pointer valid for the call; result valid until the hook returns, copied now.
        let ok = unsafe { envoy_dynamic_module_callback_http_get_filter_state_bytes(self.ptr, ModuleBuffer::of(key.as_bytes()), &mut out) };
        ok.then(|| unsafe { out.to_vec() })
    }

    /// Starts an HTTP request to `cluster` (the whole request: headers, then `body` ending the
    /// stream); its reply arrives as [`CalloutEvent`]s in [`HttpFilter::http_stream`]. Envoy
    /// resets it if the filter is destroyed first. Its id, or why it was not started.
    pub fn start_http_stream(&self, cluster: &str, headers: &[(&str, String)], body: &[u8], timeout_ms: u64) -> Result<u64, u32> {
        let raw = module_headers(headers);
        let mut id = 0u64;
        // SAFETY: the running hook's filter pointer; every buffer lives until the call returns
        // and Envoy copies the headers and the body into its request.
        let result = unsafe {
            envoy_dynamic_module_callback_http_filter_start_http_stream(
                self.ptr,
                &mut id,
                ModuleBuffer::of(cluster.as_bytes()),
                raw.as_ptr(),
                raw.len(),
                ModuleBuffer::of(body),
                true,
                timeout_ms,
            )
        };
        if result == 0 { Ok(id) } else { Err(result) }
    }

    /// Adds `n` to a counter defined by [`ConfigHost::define_counter`] on this stream's config.
    pub fn increment_counter(&self, id: usize, n: u64) {
        // SAFETY: `id` came from this filter's config; no labels.
        unsafe { envoy_dynamic_module_callback_http_filter_increment_counter(self.ptr, id, std::ptr::null(), 0, n) };
    }
}

// ------------------------------------------------------------------------------------------
// The module's side: what the safe code implements.
// ------------------------------------------------------------------------------------------

/// One filter configuration (one `DynamicModuleFilter` in Envoy's config). Shared by every
/// worker, hence `Send + Sync`.
pub trait FilterFactory: Send + Sync {
    /// A filter for one new HTTP stream.
    fn new_filter(&self) -> Box<dyn HttpFilter>;
    /// An event committed to a [`ConfigScheduler`], on the main thread.
    fn scheduled(&self, _host: &ConfigHost, _event_id: u64) {}
    /// The reply to a [`ConfigHost::http_callout`]: `None` when there is none (reset, too
    /// large); else its headers and body (Envoy hands no trailers to this hook).
    fn callout_done(&self, _callout_id: u64, _reply: Option<CalloutReply<'_>>) {}
}

/// A one-shot callout's reply: headers (`:status` included) and body.
pub type CalloutReply<'a> = (&'a [(String, String)], &'a [u8]);

/// What arrives for an HTTP stream a filter started ([`Stream::start_http_stream`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CalloutEvent {
    /// Response headers (`:status` included).
    Headers(Vec<(String, String)>),
    /// A piece of the response body.
    Data(Vec<u8>),
    /// Response trailers (where gRPC puts its status).
    Trailers(Vec<(String, String)>),
    /// The response is complete.
    Complete,
    /// The stream failed (connection failure, reset) and will say nothing more.
    Reset,
}

/// One HTTP stream's filter. Defaults pass everything through.
pub trait HttpFilter {
    fn request_headers(&mut self, _s: &mut Stream, _end_of_stream: bool) -> HeadersStatus {
        HeadersStatus::Continue
    }
    fn request_body(&mut self, _s: &Stream, _end_of_stream: bool) -> DataStatus {
        DataStatus::Continue
    }
    fn response_headers(&mut self, _s: &Stream, _end_of_stream: bool) -> HeadersStatus {
        HeadersStatus::Continue
    }
    fn response_body(&mut self, _s: &Stream, _end_of_stream: bool) -> DataStatus {
        DataStatus::Continue
    }
    /// The stream ended (completed, reset or aborted), before the filter is dropped.
    fn complete(&mut self, _s: &Stream) {}
    /// An event of an HTTP stream this filter started; `true` resumes the held request
    /// (Envoy's `continue_decoding`) once the hook has returned.
    fn http_stream(&mut self, _s: &Stream, _id: u64, _event: CalloutEvent) -> bool {
        false
    }
}

/// What the module builds a configuration with: `crate::new_factory`.
type NewFactory = fn(&ConfigHost, &str, &[u8]) -> Option<Box<dyn FilterFactory>>;
const NEW_FACTORY: NewFactory = crate::new_factory;

/// The reply when the filter itself failed (a panic): the request never goes upstream.
const FAILURE_BODY: &[u8] = br#"{"error":{"message":"The Cordon filter failed while handling this request; it was not forwarded.","type":"server_error","code":"filter_failure","param":null}}"#;

/// One stream's filter and its failure state. Only ever reached through a shared reference:
/// if Envoy ever ran a hook *inside* another hook of the same stream (e.g. our local reply
/// passing this filter's response hooks before `send_response` returns; Envoy 1.40 does not, as
/// the debug log shows), nothing here is borrowed mutably across a callback into Envoy.
struct FilterBox {
    filter: RefCell<Box<dyn HttpFilter>>,
    /// A hook panicked: the stream was failed closed and the filter is not called again.
    poisoned: Cell<bool>,
    /// A local reply went out for this stream.
    replied: Cell<bool>,
    /// Events of a stream the filter started that Envoy delivered inline, while the hook that
    /// started it still ran (e.g. an immediate local reply: no healthy upstream, overflow):
    /// handed to the filter as soon as that hook returns.
    deferred: RefCell<Vec<(u64, CalloutEvent)>>,
}

/// Runs `f` and turns a panic into `None` (the panic hook has logged it).
fn guarded<T>(f: impl FnOnce() -> T) -> Option<T> {
    catch_unwind(AssertUnwindSafe(f)).ok()
}

/// Which way a hook's data flows, for what a failed stream does with it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Request,
    Response,
}

/// Runs one stream hook for `filter_module_ptr`, failing the stream closed on a panic.
///
/// * `passive`: what Envoy is told when the filter is not run: a hook re-entered while another
///   of the same stream runs (that is our own local reply on its way out), or a response hook
///   of a failed stream (the only response left is our failure reply, which must go out).
/// * `failed`: what a request hook of a failed stream returns (nothing goes upstream), and
///   what the hook that panicked returns.
fn stream_hook<T: Copy>(
    filter_envoy_ptr: *mut c_void,
    filter_module_ptr: *const c_void,
    side: Side,
    passive: T,
    failed: T,
    f: impl FnOnce(&mut dyn HttpFilter, &mut Stream<'_>) -> T,
) -> T {
    resumable_hook(filter_envoy_ptr, filter_module_ptr, side, passive, failed, None, f)
}

/// [`stream_hook`] for a hook that may start an outgoing stream: events Envoy delivered inline
/// meanwhile are handed to the filter once `f` returns, and if they resume the request the
/// hook returns `resumed` instead (Envoy is still inside this hook: continuing is the answer).
fn resumable_hook<T: Copy>(
    filter_envoy_ptr: *mut c_void,
    filter_module_ptr: *const c_void,
    side: Side,
    passive: T,
    failed: T,
    resumed: Option<T>,
    f: impl FnOnce(&mut dyn HttpFilter, &mut Stream<'_>) -> T,
) -> T {
    if filter_module_ptr.is_null() {
        return passive;
    }
    // SAFETY: a non-null `filter_module_ptr` is the `FilterBox` we leaked in `on_http_filter_new`;
    // Envoy hands it back only on this stream's worker until `on_http_filter_destroy`. Shared
    // reference only (see `FilterBox`).
    let slot = unsafe { &*(filter_module_ptr as *const FilterBox) };
    if slot.poisoned.get() {
        return if side == Side::Response { passive } else { failed };
    }
    let Ok(mut filter) = slot.filter.try_borrow_mut() else {
        // Re-entered from inside another hook of this stream: our own local reply on its way out.
        log(LogLevel::Debug, "cordon: hook re-entered during a local reply; passing it");
        return passive;
    };
    let mut stream = Stream { ptr: filter_envoy_ptr, replied: &slot.replied, shape: Cell::new(None) };
    let outcome = guarded(|| f(filter.as_mut(), &mut stream));
    drop(filter);
    match outcome {
        Some(status) => {
            let resume = drain_deferred(filter_envoy_ptr, slot);
            match resumed {
                Some(r) if resume && !slot.poisoned.get() => r,
                _ => status,
            }
        }
        None => {
            fail_closed(slot, &stream);
            failed
        }
    }
}

/// After a panic: the stream is failed closed and the filter not called again.
fn fail_closed(slot: &FilterBox, stream: &Stream<'_>) {
    slot.poisoned.set(true);
    // Fail closed: a local reply if none went out yet (once the response has started, Envoy
    // resets the stream instead), and stop iteration.
    let _ = guarded(|| {
        stream.send_response(
            500,
            &[("content-type", "application/json"), ("x-cordon-error", "filter_failure")],
            FAILURE_BODY,
            "cordon_filter_failure",
        )
    });
}

/// Hands one event of a stream the filter started to it (deferred if another of its hooks is
/// running); whether the filter asks to resume the request.
fn run_callout(filter_envoy_ptr: *mut c_void, slot: &FilterBox, id: u64, event: CalloutEvent) -> bool {
    if slot.poisoned.get() {
        return false;
    }
    let Ok(mut filter) = slot.filter.try_borrow_mut() else {
        // Delivered inline by the hook that started the stream: handed over when it returns.
        slot.deferred.borrow_mut().push((id, event));
        return false;
    };
    let stream = Stream { ptr: filter_envoy_ptr, replied: &slot.replied, shape: Cell::new(None) };
    let outcome = guarded(|| filter.http_stream(&stream, id, event));
    drop(filter);
    outcome.unwrap_or_else(|| {
        fail_closed(slot, &stream);
        false
    })
}

/// Hands over the events deferred while a hook ran; whether one asks to resume the request.
fn drain_deferred(filter_envoy_ptr: *mut c_void, slot: &FilterBox) -> bool {
    let mut resume = false;
    loop {
        let batch = slot.deferred.take();
        if batch.is_empty() {
            return resume;
        }
        for (id, event) in batch {
            resume |= run_callout(filter_envoy_ptr, slot, id, event);
        }
    }
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_on_program_init() -> *const u8 {
    if cfg!(panic = "abort") {
        // Built without unwinding (e.g. `--release`): a panic could not be caught and would
        // abort Envoy. Refuse to load; build with `--profile dynamic` (scripts/build-dynamic.sh).
        log(LogLevel::Critical, "cordon: this build aborts on panic; refusing to load (build with --profile dynamic)");
        return std::ptr::null();
    }
    let ok = guarded(|| {
        std::panic::set_hook(Box::new(|info| {
            // Panic messages carry code locations and our own text, never request content.
            log(LogLevel::Critical, &format!("cordon: panic: {info}"));
        }));
    });
    if ok.is_some() { ABI_VERSION.as_ptr() } else { std::ptr::null() }
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    config_envoy_ptr: *mut c_void,
    name: EnvoyBuffer,
    config: EnvoyBuffer,
) -> *const c_void {
    guarded(|| {
        // SAFETY: both buffers are valid for the duration of this hook; copied now.
        let (name, config) = unsafe { (utf8(name.to_vec()), config.to_vec()) };
        let host = ConfigHost { ptr: config_envoy_ptr };
        NEW_FACTORY(&host, &name, &config).map(|factory| Box::into_raw(Box::new(factory)) as *const c_void)
    })
    .flatten()
    .unwrap_or(std::ptr::null())
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(config_module_ptr: *const c_void) {
    if config_module_ptr.is_null() {
        return;
    }
    // SAFETY: the pointer is the `Box<Box<dyn FilterFactory>>` leaked in `config_new`; Envoy
    // destroys each config exactly once, after its last filter.
    let factory = unsafe { Box::from_raw(config_module_ptr as *mut Box<dyn FilterFactory>) };
    let _ = guarded(move || drop(factory));
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_on_http_filter_new(config_module_ptr: *const c_void, _filter_envoy_ptr: *mut c_void) -> *const c_void {
    if config_module_ptr.is_null() {
        return std::ptr::null();
    }
    // SAFETY: the config outlives its filters (Envoy's contract); shared, never mutated.
    let factory = unsafe { &*(config_module_ptr as *const Box<dyn FilterFactory>) };
    // A null filter makes Envoy close the stream: fail closed.
    guarded(|| {
        let slot = FilterBox {
            filter: RefCell::new(factory.new_filter()),
            poisoned: Cell::new(false),
            replied: Cell::new(false),
            deferred: RefCell::new(Vec::new()),
        };
        Box::into_raw(Box::new(slot)) as *const c_void
    })
    .unwrap_or(std::ptr::null())
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    filter_envoy_ptr: *mut c_void,
    filter_module_ptr: *const c_void,
    end_of_stream: bool,
) -> u32 {
    resumable_hook(
        filter_envoy_ptr,
        filter_module_ptr,
        Side::Request,
        HeadersStatus::Continue,
        HeadersStatus::StopIteration,
        Some(HeadersStatus::Continue),
        |f, s| f.request_headers(s, end_of_stream),
    ) as u32
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_on_http_filter_request_body(
    filter_envoy_ptr: *mut c_void,
    filter_module_ptr: *const c_void,
    end_of_stream: bool,
) -> u32 {
    resumable_hook(
        filter_envoy_ptr,
        filter_module_ptr,
        Side::Request,
        DataStatus::Continue,
        DataStatus::StopIterationNoBuffer,
        Some(DataStatus::Continue),
        |f, s| f.request_body(s, end_of_stream),
    ) as u32
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(
    _filter_envoy_ptr: *mut c_void,
    _filter_module_ptr: *const c_void,
) -> u32 {
    0 // Continue
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
    filter_envoy_ptr: *mut c_void,
    filter_module_ptr: *const c_void,
    end_of_stream: bool,
) -> u32 {
    stream_hook(filter_envoy_ptr, filter_module_ptr, Side::Response, HeadersStatus::Continue, HeadersStatus::StopIteration, |f, s| {
        f.response_headers(s, end_of_stream)
    }) as u32
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_on_http_filter_response_body(
    filter_envoy_ptr: *mut c_void,
    filter_module_ptr: *const c_void,
    end_of_stream: bool,
) -> u32 {
    stream_hook(filter_envoy_ptr, filter_module_ptr, Side::Response, DataStatus::Continue, DataStatus::StopIterationNoBuffer, |f, s| {
        f.response_body(s, end_of_stream)
    }) as u32
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_on_http_filter_response_trailers(
    _filter_envoy_ptr: *mut c_void,
    _filter_module_ptr: *const c_void,
) -> u32 {
    0 // Continue
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(filter_envoy_ptr: *mut c_void, filter_module_ptr: *const c_void) {
    stream_hook(filter_envoy_ptr, filter_module_ptr, Side::Response, (), (), |f, s| f.complete(s));
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_on_http_filter_destroy(filter_module_ptr: *const c_void) {
    if filter_module_ptr.is_null() {
        return;
    }
    // SAFETY: the `FilterBox` leaked in `on_http_filter_new`; Envoy destroys it exactly once.
    let slot = unsafe { Box::from_raw(filter_module_ptr as *mut FilterBox) };
    let _ = guarded(move || drop(slot));
}

/// Copies headers Envoy lent to a hook. Safety: `ptr` is null or valid for `len` entries whose
/// buffers are valid while the hook runs.
unsafe fn copy_headers(ptr: *const EnvoyHeader, len: usize) -> Vec<(String, String)> {
    if ptr.is_null() || len == 0 {
        return Vec::new();
    }
    // SAFETY: per the function's contract.
    let raw = unsafe { std::slice::from_raw_parts(ptr, len) };
    // SAFETY: each buffer is valid while the hook runs; copied now.
    raw.iter().map(|h| unsafe { (utf8(h.key.to_vec()), utf8(h.value.to_vec())) }).collect()
}

/// Copies body chunks Envoy lent to a hook, in order. Safety: as for [`copy_headers`].
unsafe fn copy_chunks(ptr: *const EnvoyBuffer, len: usize) -> Vec<u8> {
    if ptr.is_null() || len == 0 {
        return Vec::new();
    }
    // SAFETY: per the function's contract.
    let raw = unsafe { std::slice::from_raw_parts(ptr, len) };
    let mut out = Vec::with_capacity(raw.iter().map(|c| c.len).sum());
    for c in raw {
        // SAFETY: valid while the hook runs; copied now.
        out.extend_from_slice(unsafe { c.as_slice() });
    }
    out
}

/// Hands one event of a stream the filter started to it, and resumes the request if it asks.
fn callout_event(filter_envoy_ptr: *mut c_void, filter_module_ptr: *const c_void, id: u64, event: CalloutEvent) {
    if filter_module_ptr.is_null() {
        return;
    }
    // SAFETY: as in `stream_hook`.
    let slot = unsafe { &*(filter_module_ptr as *const FilterBox) };
    if slot.filter.try_borrow_mut().is_err() {
        // Delivered inline by the hook that started the stream: handed over when it returns.
        slot.deferred.borrow_mut().push((id, event));
        return;
    }
    let resume = run_callout(filter_envoy_ptr, slot, id, event) | drain_deferred(filter_envoy_ptr, slot);
    if resume && !slot.poisoned.get() {
        // SAFETY: the running hook's filter pointer; outside any borrow of the filter, so the
        // hooks Envoy runs while continuing reach it normally.
        unsafe { envoy_dynamic_module_callback_http_filter_continue_decoding(filter_envoy_ptr) }
    }
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_headers(
    filter_envoy_ptr: *mut c_void,
    filter_module_ptr: *const c_void,
    stream_id: u64,
    headers: *const EnvoyHeader,
    headers_len: usize,
    _end_stream: bool,
) {
    // SAFETY: Envoy's headers, valid during this hook.
    let headers = unsafe { copy_headers(headers, headers_len) };
    callout_event(filter_envoy_ptr, filter_module_ptr, stream_id, CalloutEvent::Headers(headers));
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_data(
    filter_envoy_ptr: *mut c_void,
    filter_module_ptr: *const c_void,
    stream_id: u64,
    data: *const EnvoyBuffer,
    data_len: usize,
    _end_stream: bool,
) {
    // SAFETY: Envoy's chunks, valid during this hook.
    let data = unsafe { copy_chunks(data, data_len) };
    callout_event(filter_envoy_ptr, filter_module_ptr, stream_id, CalloutEvent::Data(data));
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_trailers(
    filter_envoy_ptr: *mut c_void,
    filter_module_ptr: *const c_void,
    stream_id: u64,
    trailers: *const EnvoyHeader,
    trailers_len: usize,
) {
    // SAFETY: Envoy's trailers, valid during this hook.
    let trailers = unsafe { copy_headers(trailers, trailers_len) };
    callout_event(filter_envoy_ptr, filter_module_ptr, stream_id, CalloutEvent::Trailers(trailers));
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_complete(
    filter_envoy_ptr: *mut c_void,
    filter_module_ptr: *const c_void,
    stream_id: u64,
) {
    callout_event(filter_envoy_ptr, filter_module_ptr, stream_id, CalloutEvent::Complete);
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_reset(
    filter_envoy_ptr: *mut c_void,
    filter_module_ptr: *const c_void,
    stream_id: u64,
    _reason: u32,
) {
    callout_event(filter_envoy_ptr, filter_module_ptr, stream_id, CalloutEvent::Reset);
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_on_http_filter_config_scheduled(
    config_envoy_ptr: *mut c_void,
    config_module_ptr: *const c_void,
    event_id: u64,
) {
    if config_module_ptr.is_null() {
        return;
    }
    // SAFETY: the factory leaked in `config_new`; Envoy only schedules for a live configuration.
    let factory = unsafe { &*(config_module_ptr as *const Box<dyn FilterFactory>) };
    let host = ConfigHost { ptr: config_envoy_ptr };
    let _ = guarded(|| factory.scheduled(&host, event_id));
}

// Hooks Envoy requires to exist but this filter never triggers (no one-shot filter callouts, no
// filter scheduler, not a terminal filter): they do nothing.

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
    _filter_envoy_ptr: *mut c_void,
    _filter_module_ptr: *const c_void,
    _callout_id: u64,
    _result: u32,
    _headers: *const EnvoyHeader,
    _headers_len: usize,
    _body: *const EnvoyBuffer,
    _body_len: usize,
) {
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(
    _filter_envoy_ptr: *mut c_void,
    _filter_module_ptr: *const c_void,
    _event_id: u64,
) {
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(
    _filter_envoy_ptr: *mut c_void,
    _filter_module_ptr: *const c_void,
) {
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(
    _filter_envoy_ptr: *mut c_void,
    _filter_module_ptr: *const c_void,
) {
}

// Optional hooks (Envoy runs without them) exported anyway, so the ABI check can demand every
// hook name the binary knows: a new hook in an Envoy upgrade then shows up in the check.

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_on_http_filter_local_reply(
    _filter_envoy_ptr: *mut c_void,
    _filter_module_ptr: *const c_void,
    _status: u32,
    _details: EnvoyBuffer,
    _reset_imminent: bool,
) -> u32 {
    0 // Continue: send the local reply as it is
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_on_http_filter_config_http_callout_done(
    _config_envoy_ptr: *mut c_void,
    config_module_ptr: *const c_void,
    callout_id: u64,
    result: u32,
    headers: *const EnvoyHeader,
    headers_len: usize,
    body: *const EnvoyBuffer,
    body_len: usize,
) {
    if config_module_ptr.is_null() {
        return;
    }
    // SAFETY: as in `config_scheduled`.
    let factory = unsafe { &*(config_module_ptr as *const Box<dyn FilterFactory>) };
    // SAFETY: Envoy's headers and chunks, valid during this hook (null on failure).
    let reply = (result == 0).then(|| unsafe { (copy_headers(headers, headers_len), copy_chunks(body, body_len)) });
    let _ = guarded(|| factory.callout_done(callout_id, reply.as_ref().map(|(h, b)| (h.as_slice(), b.as_slice()))));
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_headers(
    _config_envoy_ptr: *mut c_void,
    _config_module_ptr: *const c_void,
    _stream_id: u64,
    _headers: *const EnvoyHeader,
    _headers_len: usize,
    _end_stream: bool,
) {
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_data(
    _config_envoy_ptr: *mut c_void,
    _config_module_ptr: *const c_void,
    _stream_id: u64,
    _data: *const EnvoyBuffer,
    _data_len: usize,
    _end_stream: bool,
) {
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_trailers(
    _config_envoy_ptr: *mut c_void,
    _config_module_ptr: *const c_void,
    _stream_id: u64,
    _trailers: *const EnvoyHeader,
    _trailers_len: usize,
) {
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_complete(
    _config_envoy_ptr: *mut c_void,
    _config_module_ptr: *const c_void,
    _stream_id: u64,
) {
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_reset(
    _config_envoy_ptr: *mut c_void,
    _config_module_ptr: *const c_void,
    _stream_id: u64,
    _reason: u32,
) {
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_new(_name: EnvoyBuffer, _config: EnvoyBuffer) -> *const c_void {
    // No per-route configuration: refusing it makes such a config fail loudly at load.
    std::ptr::null()
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_destroy(_config_module_ptr: *const c_void) {}

#[cfg(test)]
mod tests {
    //! The boundary itself, without Envoy: a fake host implements the callbacks this module
    //! imports (the linker resolves them to these definitions in the test binary), so the hook
    //! plumbing (panic guard, failed streams, re-entry, body assembly) is tested natively. The
    //! end-to-end tests run the same code in the real Envoy.
    use super::*;

    #[derive(Default)]
    struct Fake {
        replies: Vec<(u32, Vec<u8>)>,
        buffered: Vec<Vec<u8>>,
        received: Vec<Vec<u8>>,
        received_is_buffered: bool,
        /// A filter pointer whose response-headers hook `send_response` runs re-entrantly.
        reenter: Option<(*mut c_void, *const c_void)>,
        reentered: Vec<u32>,
    }

    thread_local! {
        static FAKE: RefCell<Fake> = RefCell::new(Fake::default());
    }

    fn with<T>(f: impl FnOnce(&mut Fake) -> T) -> T {
        FAKE.with(|h| f(&mut h.borrow_mut()))
    }

    fn chunks(kind: u32) -> Vec<Vec<u8>> {
        with(|h| if kind == BodyKind::BufferedRequest as u32 { h.buffered.clone() } else { h.received.clone() })
    }

    #[unsafe(no_mangle)]
    extern "C" fn envoy_dynamic_module_callback_log(_level: u32, _message: ModuleBuffer) {}

    #[unsafe(no_mangle)]
    extern "C" fn envoy_dynamic_module_callback_http_send_response(
        _filter: *mut c_void,
        status: u32,
        _headers: *const ModuleHeader,
        _headers_len: usize,
        body: ModuleBuffer,
        _details: ModuleBuffer,
    ) {
        // SAFETY: the module passes a valid body buffer.
        let bytes = unsafe { std::slice::from_raw_parts(body.ptr, body.len) }.to_vec();
        let reenter = with(|h| {
            h.replies.push((status, bytes));
            h.reenter
        });
        if let Some((envoy, module)) = reenter {
            let status = envoy_dynamic_module_on_http_filter_response_headers(envoy, module, true);
            with(|h| h.reentered.push(status));
        }
    }

    #[unsafe(no_mangle)]
    extern "C" fn envoy_dynamic_module_callback_http_get_body_chunks_size(_filter: *mut c_void, kind: u32) -> usize {
        chunks(kind).len()
    }

    #[unsafe(no_mangle)]
    extern "C" fn envoy_dynamic_module_callback_http_get_body_size(_filter: *mut c_void, kind: u32) -> usize {
        chunks(kind).iter().map(Vec::len).sum()
    }

    #[unsafe(no_mangle)]
    extern "C" fn envoy_dynamic_module_callback_http_get_body_chunks(_filter: *mut c_void, kind: u32, result: *mut EnvoyBuffer) -> bool {
        // The slices must outlive the call: leak them (test only).
        for (i, c) in chunks(kind).into_iter().enumerate() {
            let c: &'static [u8] = Box::leak(c.into_boxed_slice());
            // SAFETY: the module sized `result` with `get_body_chunks_size`.
            unsafe { *result.add(i) = EnvoyBuffer { ptr: c.as_ptr(), len: c.len() } };
        }
        true
    }

    #[unsafe(no_mangle)]
    extern "C" fn envoy_dynamic_module_callback_http_received_buffered_request_body(_filter: *mut c_void) -> bool {
        with(|h| h.received_is_buffered)
    }

    // The rest of the imported callbacks: inert in this fake host.

    #[unsafe(no_mangle)]
    extern "C" fn envoy_dynamic_module_callback_http_received_buffered_response_body(_filter: *mut c_void) -> bool {
        false
    }

    #[unsafe(no_mangle)]
    extern "C" fn envoy_dynamic_module_callback_http_append_body(_filter: *mut c_void, _kind: u32, _data: ModuleBuffer) -> bool {
        false
    }

    #[unsafe(no_mangle)]
    extern "C" fn envoy_dynamic_module_callback_http_drain_body(_filter: *mut c_void, _kind: u32, _bytes: usize) -> bool {
        false
    }

    #[unsafe(no_mangle)]
    extern "C" fn envoy_dynamic_module_callback_http_get_header(
        _filter: *mut c_void,
        _kind: u32,
        _key: ModuleBuffer,
        _result: *mut EnvoyBuffer,
        _index: usize,
        _count: *mut usize,
    ) -> bool {
        false
    }

    #[unsafe(no_mangle)]
    extern "C" fn envoy_dynamic_module_callback_http_get_headers_size(_filter: *mut c_void, _kind: u32) -> usize {
        0
    }

    #[unsafe(no_mangle)]
    extern "C" fn envoy_dynamic_module_callback_http_get_headers(_filter: *mut c_void, _kind: u32, _result: *mut EnvoyHeader) -> bool {
        false
    }

    #[unsafe(no_mangle)]
    extern "C" fn envoy_dynamic_module_callback_http_set_header(
        _filter: *mut c_void,
        _kind: u32,
        _key: ModuleBuffer,
        _value: ModuleBuffer,
    ) -> bool {
        false
    }

    #[unsafe(no_mangle)]
    extern "C" fn envoy_dynamic_module_callback_http_filter_get_attribute_string(
        _filter: *mut c_void,
        _attribute: u32,
        _result: *mut EnvoyBuffer,
    ) -> bool {
        false
    }

    #[unsafe(no_mangle)]
    extern "C" fn envoy_dynamic_module_callback_http_filter_get_attribute_int(
        _filter: *mut c_void,
        _attribute: u32,
        _result: *mut u64,
    ) -> bool {
        false
    }

    #[unsafe(no_mangle)]
    extern "C" fn envoy_dynamic_module_callback_http_set_filter_state_bytes(
        _filter: *mut c_void,
        _key: ModuleBuffer,
        _value: ModuleBuffer,
    ) -> bool {
        false
    }

    #[unsafe(no_mangle)]
    extern "C" fn envoy_dynamic_module_callback_http_get_filter_state_bytes(
        _filter: *mut c_void,
        _key: ModuleBuffer,
        _result: *mut EnvoyBuffer,
    ) -> bool {
        false
    }

    #[unsafe(no_mangle)]
    extern "C" fn envoy_dynamic_module_callback_http_filter_config_define_counter(
        _config: *mut c_void,
        _name: ModuleBuffer,
        _labels: *const ModuleBuffer,
        _labels_len: usize,
        _id: *mut usize,
    ) -> u32 {
        1
    }

    #[unsafe(no_mangle)]
    extern "C" fn envoy_dynamic_module_callback_http_filter_config_define_gauge(
        _config: *mut c_void,
        _name: ModuleBuffer,
        _labels: *const ModuleBuffer,
        _labels_len: usize,
        _id: *mut usize,
    ) -> u32 {
        1
    }

    #[unsafe(no_mangle)]
    extern "C" fn envoy_dynamic_module_callback_http_filter_config_set_gauge(
        _config: *mut c_void,
        _id: usize,
        _labels: *const ModuleBuffer,
        _labels_len: usize,
        _value: u64,
    ) -> u32 {
        1
    }

    #[unsafe(no_mangle)]
    extern "C" fn envoy_dynamic_module_callback_http_filter_start_http_stream(
        _filter: *mut c_void,
        _id: *mut u64,
        _cluster: ModuleBuffer,
        _headers: *const ModuleHeader,
        _headers_len: usize,
        _body: ModuleBuffer,
        _end_stream: bool,
        _timeout_ms: u64,
    ) -> u32 {
        2
    }

    #[unsafe(no_mangle)]
    extern "C" fn envoy_dynamic_module_callback_http_filter_continue_decoding(_filter: *mut c_void) {}

    #[unsafe(no_mangle)]
    extern "C" fn envoy_dynamic_module_callback_http_filter_config_http_callout(
        _config: *mut c_void,
        _id: *mut u64,
        _cluster: ModuleBuffer,
        _headers: *const ModuleHeader,
        _headers_len: usize,
        _body: ModuleBuffer,
        _timeout_ms: u64,
    ) -> u32 {
        2
    }

    #[unsafe(no_mangle)]
    extern "C" fn envoy_dynamic_module_callback_http_filter_config_scheduler_new(_config: *mut c_void) -> *mut c_void {
        std::ptr::null_mut()
    }

    #[unsafe(no_mangle)]
    extern "C" fn envoy_dynamic_module_callback_http_filter_config_scheduler_commit(_scheduler: *mut c_void, _id: u64) {}

    #[unsafe(no_mangle)]
    extern "C" fn envoy_dynamic_module_callback_http_filter_config_scheduler_delete(_scheduler: *mut c_void) {}

    #[unsafe(no_mangle)]
    extern "C" fn envoy_dynamic_module_callback_http_filter_increment_counter(
        _filter: *mut c_void,
        _id: usize,
        _labels: *const ModuleBuffer,
        _labels_len: usize,
        _value: u64,
    ) -> u32 {
        1
    }

    /// A filter that panics on request headers when asked, and reports what it saw otherwise.
    struct Probe {
        panic: bool,
        seen: std::rc::Rc<RefCell<Vec<String>>>,
    }

    impl HttpFilter for Probe {
        fn request_headers(&mut self, s: &mut Stream, _end_of_stream: bool) -> HeadersStatus {
            self.seen.borrow_mut().push("request_headers".into());
            if self.panic {
                std::panic::panic_any("probe panic");
            }
            s.send_response(403, &[], b"no", "probe");
            HeadersStatus::StopIteration
        }
        fn request_body(&mut self, s: &Stream, _end_of_stream: bool) -> DataStatus {
            self.seen.borrow_mut().push(format!(
                "body {} {:?}",
                s.body_len(Direction::Request),
                String::from_utf8_lossy(&s.body(Direction::Request))
            ));
            DataStatus::Continue
        }
        fn response_headers(&mut self, _s: &Stream, _end_of_stream: bool) -> HeadersStatus {
            self.seen.borrow_mut().push("response_headers".into());
            HeadersStatus::StopIteration
        }
    }

    fn probe(panic: bool) -> (*const c_void, std::rc::Rc<RefCell<Vec<String>>>) {
        let seen = std::rc::Rc::new(RefCell::new(Vec::new()));
        let filter: Box<dyn HttpFilter> = Box::new(Probe { panic, seen: seen.clone() });
        let slot = FilterBox {
            filter: RefCell::new(filter),
            poisoned: Cell::new(false),
            replied: Cell::new(false),
            deferred: RefCell::new(Vec::new()),
        };
        (Box::into_raw(Box::new(slot)) as *const c_void, seen)
    }

    const ENVOY: *mut c_void = std::ptr::dangling_mut::<c_void>(); // never dereferenced by the fake host

    #[test]
    fn abi_version_is_a_c_string() {
        assert_eq!(ABI_VERSION.last(), Some(&0));
        assert!(ABI_VERSION.starts_with(b"v0."));
    }

    #[test]
    fn a_panicking_hook_fails_the_stream_closed_once_and_never_runs_again() {
        with(|h| *h = Fake::default());
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let (module, seen) = probe(true);
        let status = envoy_dynamic_module_on_http_filter_request_headers(ENVOY, module, false);
        std::panic::set_hook(prev);
        assert_eq!(status, HeadersStatus::StopIteration as u32);
        let replies = with(|h| h.replies.clone());
        assert_eq!(replies.len(), 1);
        assert_eq!(replies[0].0, 500);
        assert!(String::from_utf8_lossy(&replies[0].1).contains("filter_failure"));
        // Request data of a failed stream never goes on; our own 500 passes the response hooks.
        assert_eq!(envoy_dynamic_module_on_http_filter_request_body(ENVOY, module, true), DataStatus::StopIterationNoBuffer as u32);
        assert_eq!(envoy_dynamic_module_on_http_filter_response_headers(ENVOY, module, true), HeadersStatus::Continue as u32);
        assert_eq!(*seen.borrow(), ["request_headers"], "the filter is not called after its panic");
        envoy_dynamic_module_on_http_filter_destroy(module);
    }

    #[test]
    fn a_hook_re_entered_during_a_local_reply_passes_without_touching_the_filter() {
        let (module, seen) = probe(false);
        with(|h| {
            *h = Fake::default();
            h.reenter = Some((ENVOY, module));
        });
        let status = envoy_dynamic_module_on_http_filter_request_headers(ENVOY, module, true);
        assert_eq!(status, HeadersStatus::StopIteration as u32);
        assert_eq!(with(|h| h.reentered.clone()), [HeadersStatus::Continue as u32]);
        assert_eq!(*seen.borrow(), ["request_headers"]);
        // A second local reply on the same stream is not sent.
        assert_eq!(with(|h| h.replies.len()), 1);
        envoy_dynamic_module_on_http_filter_destroy(module);
    }

    #[test]
    fn the_body_is_what_envoy_buffered_then_this_chunk_unless_they_are_the_same_buffer() {
        let (module, seen) = probe(false);
        with(|h| {
            *h = Fake::default();
            h.buffered = vec![b"ab".to_vec(), b"c".to_vec()];
            h.received = vec![b"de".to_vec()];
        });
        envoy_dynamic_module_on_http_filter_request_body(ENVOY, module, true);
        with(|h| h.received_is_buffered = true);
        envoy_dynamic_module_on_http_filter_request_body(ENVOY, module, true);
        assert_eq!(*seen.borrow(), ["body 5 \"abcde\"", "body 2 \"de\""]);
        envoy_dynamic_module_on_http_filter_destroy(module);
    }

    #[test]
    fn a_body_in_more_slices_than_the_stack_list_holds_is_read_whole_and_in_order() {
        let (module, seen) = probe(false);
        with(|h| {
            *h = Fake::default();
            h.buffered = (b'a'..=b'f').map(|c| vec![c]).collect();
            h.received = (b'g'..=b'm').map(|c| vec![c, c]).collect();
        });
        envoy_dynamic_module_on_http_filter_request_body(ENVOY, module, true);
        assert_eq!(*seen.borrow(), ["body 20 \"abcdefgghhiijjkkllmm\""]);
        envoy_dynamic_module_on_http_filter_destroy(module);
    }

    /// A filter that starts an outgoing stream in its request-headers hook; `inline` makes the
    /// "host" deliver the reply's completion right away, inside that hook (Envoy does so for an
    /// immediate local reply: no healthy upstream, overflow).
    struct Caller {
        inline: bool,
        me: std::rc::Rc<Cell<*const c_void>>,
        seen: std::rc::Rc<RefCell<Vec<String>>>,
    }

    impl HttpFilter for Caller {
        fn request_headers(&mut self, _s: &mut Stream, _end_of_stream: bool) -> HeadersStatus {
            if self.inline {
                envoy_dynamic_module_on_http_filter_http_stream_complete(ENVOY, self.me.get(), 7);
            }
            self.seen.borrow_mut().push("started".into());
            HeadersStatus::StopIteration
        }
        fn http_stream(&mut self, _s: &Stream, id: u64, event: CalloutEvent) -> bool {
            self.seen.borrow_mut().push(format!("{id} {event:?}"));
            event == CalloutEvent::Complete
        }
    }

    fn caller(inline: bool) -> (*const c_void, std::rc::Rc<RefCell<Vec<String>>>) {
        let seen = std::rc::Rc::new(RefCell::new(Vec::new()));
        let me = std::rc::Rc::new(Cell::new(std::ptr::null()));
        let filter: Box<dyn HttpFilter> = Box::new(Caller { inline, me: me.clone(), seen: seen.clone() });
        let slot = FilterBox {
            filter: RefCell::new(filter),
            poisoned: Cell::new(false),
            replied: Cell::new(false),
            deferred: RefCell::new(Vec::new()),
        };
        let ptr = Box::into_raw(Box::new(slot)) as *const c_void;
        me.set(ptr);
        (ptr, seen)
    }

    #[test]
    fn a_reply_delivered_inside_the_hook_that_asked_for_it_is_handed_over_when_the_hook_returns() {
        let (module, seen) = caller(true);
        // The filter held the request, but its verdict arrived meanwhile: the hook continues.
        assert_eq!(envoy_dynamic_module_on_http_filter_request_headers(ENVOY, module, false), HeadersStatus::Continue as u32);
        assert_eq!(*seen.borrow(), ["started", "7 Complete"]);
        envoy_dynamic_module_on_http_filter_destroy(module);
    }

    #[test]
    fn a_later_reply_reaches_the_filter_from_its_own_hook() {
        let (module, seen) = caller(false);
        assert_eq!(envoy_dynamic_module_on_http_filter_request_headers(ENVOY, module, false), HeadersStatus::StopIteration as u32);
        let headers =
            [EnvoyHeader { key: EnvoyBuffer { ptr: b":status".as_ptr(), len: 7 }, value: EnvoyBuffer { ptr: b"200".as_ptr(), len: 3 } }];
        envoy_dynamic_module_on_http_filter_http_stream_headers(ENVOY, module, 7, headers.as_ptr(), 1, false);
        let chunks = [EnvoyBuffer { ptr: b"ab".as_ptr(), len: 2 }, EnvoyBuffer { ptr: b"c".as_ptr(), len: 1 }];
        envoy_dynamic_module_on_http_filter_http_stream_data(ENVOY, module, 7, chunks.as_ptr(), 2, true);
        envoy_dynamic_module_on_http_filter_http_stream_reset(ENVOY, module, 8, 0);
        assert_eq!(
            *seen.borrow(),
            ["started", "7 Headers([(\":status\", \"200\")])", "7 Data([97, 98, 99])", "8 Reset"],
            "headers and chunks are copied out whole, in order"
        );
        envoy_dynamic_module_on_http_filter_destroy(module);
    }

    #[test]
    fn null_pointers_from_envoy_are_passed_not_dereferenced() {
        assert_eq!(envoy_dynamic_module_on_http_filter_request_headers(ENVOY, std::ptr::null(), true), HeadersStatus::Continue as u32);
        envoy_dynamic_module_on_http_filter_destroy(std::ptr::null());
        envoy_dynamic_module_on_http_filter_config_destroy(std::ptr::null());
        assert!(envoy_dynamic_module_on_http_filter_new(std::ptr::null(), ENVOY).is_null());
    }
}
