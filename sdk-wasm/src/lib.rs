//! Sightline's browser SDK, its WebAssembly half: the decisions that must be the same in
//! the page and in the collector, compiled from `tracking-plan` (the one source of truth):
//! how an email or phone is normalized and hashed for a soft login, which strings in an
//! event are raw emails or phone numbers (and their digests), and which query parameters
//! are UTM fields or click ids.
//!
//! Everything else the SDK decides (consent, the queue, batches, retries) is plain data
//! handling in `js/engine.js`: the same engine compiled to wasm weighed about 20 KB gzip
//! more for every visitor (measured), against an install budget of 17 KB in all.
//!
//! The boundary is three raw exports (`sl_alloc`, `sl_call`, `sl_free`) and one small JS
//! function (`js/wasm.js`) instead of wasm-bindgen's generated glue: with three string
//! functions, the generated glue was 1.6 KB gzip, a tenth of the budget. Arguments go in
//! as one UTF-8 string of fields separated by U+001F; results come back as `key␟value␞`
//! records, so neither side needs a JSON codec for them.

#![cfg_attr(all(target_arch = "wasm32", feature = "no-std"), no_std)]

extern crate alloc;

use alloc::string::String;
use alloc::vec::Vec;
use tracking_plan::campaign::{self, Param};
use tracking_plan::identifiers::{self as idf, EmailVariant, PhoneVariant};

/// The shipped build (`--features no-std`) leaves std out: a panic traps, as it does
/// with std and `panic = "abort"`, but without std's panic machinery. Tests build with
/// std (their harness needs it).
#[cfg(all(target_arch = "wasm32", feature = "no-std"))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    core::arch::wasm32::unreachable()
}

#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOC: bump::Bump = bump::Bump::new();

/// The allocator: a bump pointer that starts over whenever nothing is allocated.
///
/// Hand-written for size (lol_alloc's free list cost 120 bytes gzip more of what every
/// visitor downloads, measured), and sound here because this module keeps no state between
/// calls: each [`sl_call`] frees its arguments, and the adapter frees each result right
/// after reading it, so every call starts from an empty heap. Memory grows only as far
/// as the largest single call needs.
#[cfg(target_arch = "wasm32")]
mod bump {
    use core::alloc::{GlobalAlloc, Layout};
    use core::arch::wasm32::{memory_grow, memory_size};
    use core::cell::Cell;

    const PAGE: usize = 65536;

    extern "C" {
        /// The first byte after the static data (set by the linker).
        static __heap_base: u8;
    }

    pub struct Bump {
        next: Cell<usize>,
        live: Cell<usize>,
    }

    // SAFETY: wasm32-unknown-unknown without threads: the SDK runs on one thread.
    unsafe impl Sync for Bump {}

    impl Bump {
        pub const fn new() -> Bump {
            Bump {
                next: Cell::new(0),
                live: Cell::new(0),
            }
        }
    }

    unsafe impl GlobalAlloc for Bump {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let start = self
                .next
                .get()
                .max(core::ptr::addr_of!(__heap_base) as usize);
            let at = (start + layout.align() - 1) & !(layout.align() - 1);
            let Some(end) = at.checked_add(layout.size()) else {
                return core::ptr::null_mut();
            };
            let have = memory_size(0) * PAGE;
            if end > have && memory_grow(0, (end - have).div_ceil(PAGE)) == usize::MAX {
                return core::ptr::null_mut();
            }
            self.next.set(end);
            self.live.set(self.live.get() + 1);
            at as *mut u8
        }

        unsafe fn dealloc(&self, _: *mut u8, _: Layout) {
            let live = self.live.get().saturating_sub(1);
            self.live.set(live);
            if live == 0 {
                self.next.set(0);
            }
        }
    }
}

/// Separates fields (unit separator) and records (record separator) in results.
const FS: char = '\u{1f}';
const RS: char = '\u{1e}';

fn field(out: &mut String, key: &str, value: &str) {
    out.push_str(key);
    out.push(FS);
    out.push_str(value);
    out.push(RS);
}

/// Soft login: normalizes and hashes an email and/or a phone number (empty: not given;
/// `country`: the default for national numbers). Returns `key␟value␞` records:
/// `email_sha256`, `phone_sha256` (E.164) and `phone_sha256_meta` (digits only), or
/// `error␟email: <code>` / `error␟phone: <code>` for a value that cannot be used
/// (`invalid_email`, `invalid_phone_length`, `blocked`, …). Raw values never leave here.
pub fn hash_ids(email: &str, phone: &str, country: &str) -> String {
    let mut out = String::new();
    if !email.trim().is_empty() {
        match idf::hash_email(email, EmailVariant::Standard) {
            Ok(h) => field(&mut out, "email_sha256", &h),
            Err(e) => field(&mut out, "error", &(String::from("email: ") + e.code())),
        }
    }
    if !phone.trim().is_empty() {
        match (
            idf::hash_phone(phone, country, PhoneVariant::E164),
            idf::hash_phone(phone, country, PhoneVariant::Meta),
        ) {
            (Ok(h), Ok(meta)) => {
                field(&mut out, "phone_sha256", &h);
                field(&mut out, "phone_sha256_meta", &meta);
            }
            (Err(e), _) | (_, Err(e)) => {
                field(&mut out, "error", &(String::from("phone: ") + e.code()))
            }
        }
    }
    out
}

/// `s` with every raw email and phone number replaced by its SHA-256 (the collector's
/// rule, `tracking_plan::identifiers::redact_str`), or `None` when it holds none.
pub fn redact(s: &str, country: &str) -> Option<String> {
    idf::redact_str(s, Some(country)).map(|(h, _)| h)
}

/// The campaign in decoded query parameters (`key␟value␟key␟value…`): `key␟value␞`
/// records, UTM fields by their Segment name (`source`, `medium`, `name`, `term`,
/// `content`; normalized), click ids by their parameter name prefixed with `+`
/// (`+gclid␟…`). Empty when there is none. Control characters are dropped from values.
/// `s`, the value of a field named `key`, with raw PII replaced under the shared
/// field rules (a `phone` field's national number in any format, an `email` field's
/// value with an `@`), or `None` when it holds none.
pub fn redact_field(key: &str, s: &str, country: &str) -> Option<String> {
    let kind = tracking_plan::pii::field_kind(key);
    tracking_plan::pii::scrub_field(kind, s, Some(country)).map(|(h, _)| h)
}

pub fn campaign(params: &str) -> String {
    let mut out = String::new();
    let mut it = params.split(FS);
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        let (prefix, key, value) = match campaign::param(k, v) {
            Some(Param::Utm(f, v)) => ("", f, v),
            Some(Param::Click(id, v)) => ("+", id, v),
            None => continue,
        };
        out.push_str(prefix);
        let clean: String = value.chars().filter(|c| *c >= ' ').collect();
        field(&mut out, key, &clean);
    }
    out
}

/// Allocates `len` bytes for the arguments of the next [`sl_call`].
#[no_mangle]
pub extern "C" fn sl_alloc(len: usize) -> *mut u8 {
    let mut v = Vec::<u8>::with_capacity(len);
    let p = v.as_mut_ptr();
    core::mem::forget(v);
    p
}

/// Frees a result of [`sl_call`].
///
/// # Safety
/// `ptr` and `len` must be a result of `sl_call`, freed once.
#[no_mangle]
pub unsafe extern "C" fn sl_free(ptr: *mut u8, len: usize) {
    drop(Vec::from_raw_parts(ptr, len, len));
}

/// Runs `op` on the arguments at `ptr` (from [`sl_alloc`], `len` bytes, taken over and
/// freed here): 1 [`hash_ids`] (`country␟email␟phone`), 2 [`redact`] (`country␟text`),
/// 3 [`campaign`], 4 [`redact_field`] (`country␟key␟text`). Returns `ptr << 32 | len` of the UTF-8 result (free it with
/// [`sl_free`]), or -1 for none (nothing to redact, an unknown op, or arguments that
/// are not UTF-8).
///
/// # Safety
/// `ptr` must come from `sl_alloc(len)` with `len` bytes written, and not be used again.
#[no_mangle]
pub unsafe extern "C" fn sl_call(op: u32, ptr: *mut u8, len: usize) -> i64 {
    let input = Vec::from_raw_parts(ptr, len, len);
    let Ok(args) = core::str::from_utf8(&input) else {
        return -1;
    };
    let (first, rest) = args.split_once(FS).unwrap_or((args, ""));
    let out = match op {
        1 => {
            let (email, phone) = rest.split_once(FS).unwrap_or((rest, ""));
            Some(hash_ids(email, phone, first))
        }
        2 => redact(rest, first),
        3 => Some(campaign(args)),
        4 => {
            let (key, text) = rest.split_once(FS).unwrap_or((rest, ""));
            redact_field(key, text, first)
        }
        _ => None,
    };
    match out {
        Some(s) => {
            let b = s.into_bytes().into_boxed_slice();
            let (p, n) = (b.as_ptr() as i64, b.len() as i64);
            core::mem::forget(b);
            p << 32 | n
        }
        None => -1,
    }
}
