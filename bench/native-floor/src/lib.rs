//! The floor under the native module's cost in Envoy: a dynamic module that makes, per request,
//! the ABI calls `cordon.identity` and `cordon.redact` make in `libcordon_dynamic.so` for the
//! bench's request (`bench/cost/instructions.py`, variants nf and nfr) and decides nothing. What
//! a role costs above this floor is Cordon's own code; the floor is what Envoy charges any
//! dynamic module for that work (hook dispatch, the header map read and written, the body held
//! and read, a counter).
//!
//! The filter configuration (a `StringValue`) names the role whose calls are made:
//! * `identity`: the whole request header map read (`get_headers_size`, `get_headers`), the
//!   `authorization` removal, six principal headers added, the headers held for the body, the
//!   body's size asked (received, buffered, whether they are the same) and the body read once,
//!   the `decision_allowed` counter, `:status` read from the response.
//! * `redact`: three request-header reads, the forced `accept-encoding`, the request body held
//!   and read; two response-header reads, the `content-length` removal, the response body held
//!   and read.
//!
//! The declarations below are a handful of lines of the ABI Cordon's own adapter
//! (`filters/dynamic/src/abi.rs`) declares. They are not shared with it on purpose: that module
//! is private to the product crate, its safe wrappers add the product's choices (panic guards,
//! failure replies, copies), and the floor must stay a module any vendor could write, with no
//! dependency on Cordon's code. `scripts/check-dynamic-abi.sh` checks this library's symbols
//! against the pinned Envoy like the product's (`bench/cost/instructions.py` runs it).
#![allow(unsafe_code, clippy::missing_safety_doc)]

use std::ffi::c_void;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct Buffer {
    ptr: *const u8,
    len: usize,
}

impl Buffer {
    const NULL: Self = Self { ptr: std::ptr::null(), len: 0 };
    fn of(s: &str) -> Self {
        Self { ptr: s.as_ptr(), len: s.len() }
    }
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct Header {
    key: Buffer,
    value: Buffer,
}

const REQUEST_HEADERS: u32 = 0;
const RESPONSE_HEADERS: u32 = 2;
const RECEIVED_REQUEST: u32 = 0;
const BUFFERED_REQUEST: u32 = 1;
const RECEIVED_RESPONSE: u32 = 2;
const BUFFERED_RESPONSE: u32 = 3;
const CONTINUE: u32 = 0;
const STOP_ITERATION: u32 = 1;
const STOP_AND_BUFFER: u32 = 1;

unsafe extern "C" {
    fn envoy_dynamic_module_callback_http_filter_config_define_counter(
        config: *mut c_void,
        name: Buffer,
        labels: *const Buffer,
        labels_len: usize,
        id: *mut usize,
    ) -> u32;
    fn envoy_dynamic_module_callback_http_filter_increment_counter(
        filter: *mut c_void,
        id: usize,
        labels: *const Buffer,
        labels_len: usize,
        n: u64,
    ) -> u32;
    fn envoy_dynamic_module_callback_http_get_header(
        filter: *mut c_void,
        kind: u32,
        key: Buffer,
        out: *mut Buffer,
        index: usize,
        count: *mut usize,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_get_headers_size(filter: *mut c_void, kind: u32) -> usize;
    fn envoy_dynamic_module_callback_http_get_headers(filter: *mut c_void, kind: u32, out: *mut Header) -> bool;
    fn envoy_dynamic_module_callback_http_set_header(filter: *mut c_void, kind: u32, key: Buffer, value: Buffer) -> bool;
    fn envoy_dynamic_module_callback_http_add_header(filter: *mut c_void, kind: u32, key: Buffer, value: Buffer) -> bool;
    fn envoy_dynamic_module_callback_http_get_body_size(filter: *mut c_void, kind: u32) -> usize;
    fn envoy_dynamic_module_callback_http_get_body_chunks_size(filter: *mut c_void, kind: u32) -> usize;
    fn envoy_dynamic_module_callback_http_get_body_chunks(filter: *mut c_void, kind: u32, out: *mut Buffer) -> bool;
    fn envoy_dynamic_module_callback_http_received_buffered_request_body(filter: *mut c_void) -> bool;
    fn envoy_dynamic_module_callback_http_received_buffered_response_body(filter: *mut c_void) -> bool;
}

/// The principal headers `cordon.identity` adds for the bench's caller (same names, values of
/// the same lengths).
const PRINCIPAL: [(&str, &str); 6] = [
    ("x-cordon-user", "alice"),
    ("x-cordon-team", "research"),
    ("x-cordon-app", "notebook"),
    ("x-cordon-key-id", "k-alice"),
    ("x-cordon-auth", "api_key"),
    ("x-cordon-policy", "0123456789abcdef"),
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Identity,
    Redact,
}

struct Config {
    role: Role,
    counter: usize,
}

/// A stream's filter: only which role's calls it makes (the real roles allocate theirs too).
struct Filter {
    role: Role,
    counter: usize,
}

unsafe fn header(f: *mut c_void, kind: u32, name: &str) -> usize {
    let mut out = Buffer::NULL;
    unsafe { envoy_dynamic_module_callback_http_get_header(f, kind, Buffer::of(name), &mut out, 0, std::ptr::null_mut()) };
    out.len
}

/// As the product's `body_len`: this hook's chunk, plus what Envoy buffered unless they are one.
unsafe fn body_len(f: *mut c_void, received: u32, buffered: u32, same: unsafe extern "C" fn(*mut c_void) -> bool) -> usize {
    let n = unsafe { envoy_dynamic_module_callback_http_get_body_size(f, received) };
    if unsafe { same(f) } { n } else { n + unsafe { envoy_dynamic_module_callback_http_get_body_size(f, buffered) } }
}

/// Borrows every chunk of one body (no copy) and returns the bytes seen.
unsafe fn chunks(f: *mut c_void, kind: u32) -> usize {
    let n = unsafe { envoy_dynamic_module_callback_http_get_body_chunks_size(f, kind) };
    if n == 0 {
        return 0;
    }
    let mut raw = vec![Buffer::NULL; n];
    if !unsafe { envoy_dynamic_module_callback_http_get_body_chunks(f, kind, raw.as_mut_ptr()) } {
        return 0;
    }
    raw.iter().map(|b| b.len).sum()
}

/// As the product's `body`: what Envoy buffered, then this hook's chunk.
unsafe fn body(f: *mut c_void, received: u32, buffered: u32, same: unsafe extern "C" fn(*mut c_void) -> bool) -> usize {
    if unsafe { same(f) } {
        return unsafe { chunks(f, received) };
    }
    unsafe { chunks(f, buffered) + chunks(f, received) }
}

unsafe fn filter<'a>(p: *const c_void) -> &'a Filter {
    unsafe { &*(p as *const Filter) }
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const std::ffi::c_char {
    c"v0.2.0".as_ptr()
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_new(config: *mut c_void, _name: Buffer, raw: Buffer) -> *const c_void {
    let text = if raw.ptr.is_null() { &[][..] } else { unsafe { std::slice::from_raw_parts(raw.ptr, raw.len) } };
    let role = if text.windows(6).any(|w| w == b"redact") { Role::Redact } else { Role::Identity };
    let mut counter = 0;
    if role == Role::Identity {
        unsafe {
            envoy_dynamic_module_callback_http_filter_config_define_counter(
                config,
                Buffer::of("decision_allowed"),
                std::ptr::null(),
                0,
                &mut counter,
            )
        };
    }
    Box::into_raw(Box::new(Config { role, counter })) as *const c_void
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(config: *const c_void) {
    drop(unsafe { Box::from_raw(config as *mut Config) });
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_new(config: *const c_void, _f: *mut c_void) -> *const c_void {
    let c = unsafe { &*(config as *const Config) };
    Box::into_raw(Box::new(Filter { role: c.role, counter: c.counter })) as *const c_void
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(f: *mut c_void, m: *const c_void, end: bool) -> u32 {
    let this = unsafe { filter(m) };
    match this.role {
        Role::Identity => unsafe {
            let n = envoy_dynamic_module_callback_http_get_headers_size(f, REQUEST_HEADERS);
            let mut raw = vec![Header { key: Buffer::NULL, value: Buffer::NULL }; n];
            envoy_dynamic_module_callback_http_get_headers(f, REQUEST_HEADERS, raw.as_mut_ptr());
            drop(raw);
            envoy_dynamic_module_callback_http_set_header(f, REQUEST_HEADERS, Buffer::of("authorization"), Buffer::NULL);
            for (k, v) in PRINCIPAL {
                envoy_dynamic_module_callback_http_add_header(f, REQUEST_HEADERS, Buffer::of(k), Buffer::of(v));
            }
        },
        Role::Redact => unsafe {
            header(f, REQUEST_HEADERS, ":method");
            header(f, REQUEST_HEADERS, ":path");
            header(f, REQUEST_HEADERS, "content-encoding");
            envoy_dynamic_module_callback_http_set_header(f, REQUEST_HEADERS, Buffer::of("accept-encoding"), Buffer::of("identity"));
        },
    }
    if end { CONTINUE } else { STOP_ITERATION }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_body(f: *mut c_void, m: *const c_void, end: bool) -> u32 {
    let this = unsafe { filter(m) };
    let same = envoy_dynamic_module_callback_http_received_buffered_request_body;
    unsafe { body_len(f, RECEIVED_REQUEST, BUFFERED_REQUEST, same) };
    if !end {
        return STOP_AND_BUFFER;
    }
    unsafe { body(f, RECEIVED_REQUEST, BUFFERED_REQUEST, same) };
    if this.role == Role::Identity {
        unsafe { envoy_dynamic_module_callback_http_filter_increment_counter(f, this.counter, std::ptr::null(), 0, 1) };
    }
    CONTINUE
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(f: *mut c_void, m: *const c_void, end: bool) -> u32 {
    match unsafe { filter(m) }.role {
        Role::Identity => {
            unsafe { header(f, RESPONSE_HEADERS, ":status") };
            CONTINUE
        }
        Role::Redact => {
            unsafe {
                header(f, RESPONSE_HEADERS, "content-type");
                header(f, RESPONSE_HEADERS, "content-encoding");
                envoy_dynamic_module_callback_http_set_header(f, RESPONSE_HEADERS, Buffer::of("content-length"), Buffer::NULL);
            }
            if end { CONTINUE } else { STOP_ITERATION }
        }
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_response_body(f: *mut c_void, m: *const c_void, end: bool) -> u32 {
    if unsafe { filter(m) }.role == Role::Identity {
        return CONTINUE;
    }
    let same = envoy_dynamic_module_callback_http_received_buffered_response_body;
    unsafe { body_len(f, RECEIVED_RESPONSE, BUFFERED_RESPONSE, same) };
    if !end {
        return STOP_AND_BUFFER;
    }
    unsafe { body(f, RECEIVED_RESPONSE, BUFFERED_RESPONSE, same) };
    CONTINUE
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_destroy(m: *const c_void) {
    drop(unsafe { Box::from_raw(m as *mut Filter) });
}

// Hooks Envoy looks up but the bench never triggers (or the roles do nothing in): no-ops.

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(_f: *mut c_void, _m: *const c_void) -> u32 {
    CONTINUE
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_trailers(_f: *mut c_void, _m: *const c_void) -> u32 {
    CONTINUE
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(_f: *mut c_void, _m: *const c_void) {}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_local_reply(
    _f: *mut c_void,
    _m: *const c_void,
    _s: u32,
    _d: Buffer,
    _r: bool,
) -> u32 {
    CONTINUE
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
    _f: *mut c_void,
    _m: *const c_void,
    _id: u64,
    _result: u32,
    _h: *const Header,
    _hn: usize,
    _b: *const Buffer,
    _bn: usize,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(_f: *mut c_void, _m: *const c_void, _id: u64) {}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(_f: *mut c_void, _m: *const c_void) {}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(_f: *mut c_void, _m: *const c_void) {}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_headers(
    _f: *mut c_void,
    _m: *const c_void,
    _id: u64,
    _h: *const Header,
    _hn: usize,
    _end: bool,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_data(
    _f: *mut c_void,
    _m: *const c_void,
    _id: u64,
    _d: *const Buffer,
    _dn: usize,
    _end: bool,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_trailers(
    _f: *mut c_void,
    _m: *const c_void,
    _id: u64,
    _h: *const Header,
    _hn: usize,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_complete(_f: *mut c_void, _m: *const c_void, _id: u64) {}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_reset(_f: *mut c_void, _m: *const c_void, _id: u64, _reason: u32) {}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_scheduled(_c: *mut c_void, _m: *const c_void, _id: u64) {}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_callout_done(
    _c: *mut c_void,
    _m: *const c_void,
    _id: u64,
    _result: u32,
    _h: *const Header,
    _hn: usize,
    _b: *const Buffer,
    _bn: usize,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_headers(
    _c: *mut c_void,
    _m: *const c_void,
    _id: u64,
    _h: *const Header,
    _hn: usize,
    _end: bool,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_data(
    _c: *mut c_void,
    _m: *const c_void,
    _id: u64,
    _d: *const Buffer,
    _dn: usize,
    _end: bool,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_trailers(
    _c: *mut c_void,
    _m: *const c_void,
    _id: u64,
    _h: *const Header,
    _hn: usize,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_complete(_c: *mut c_void, _m: *const c_void, _id: u64) {}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_reset(_c: *mut c_void, _m: *const c_void, _id: u64, _reason: u32) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_new(_name: Buffer, _config: Buffer) -> *const c_void {
    std::ptr::null()
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_destroy(_m: *const c_void) {}
