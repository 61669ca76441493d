//! Sightline's browser SDK: a Rust engine compiled to WebAssembly. `engine` decides
//! (consent, event building, redaction and soft-login hashing, the queue and its bound,
//! batches, backoff and retries, cross-tab ownership) on the rules `tracking-plan`
//! shares with the collector; `browser` is the thin adapter that reaches the page
//! through `web-sys` and exports the API through `wasm-bindgen`.
//!
//! The shipped build (`--features no-std`, scripts/build.sh) leaves std out: std with
//! `serde-wasm-bindgen`'s `to_value` for the three objects that cross to JS
//! (`consent.get()`, `stats()`, `softLogin()`) made the wasm 9.1 KB larger (3.9 KB gzip,
//! measured), and `serde-wasm-bindgen` needs std (through its serde, js-sys and
//! wasm-bindgen dependencies). So those objects are a few `Reflect::set` calls. A panic
//! traps, as it does with std and `panic = "abort"`.

#![cfg_attr(all(target_arch = "wasm32", feature = "no-std"), no_std)]

extern crate alloc;

pub mod engine;

#[cfg(target_arch = "wasm32")]
mod browser;

#[cfg(all(target_arch = "wasm32", feature = "no-std"))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    core::arch::wasm32::unreachable()
}

/// A free-list allocator instead of std's dlmalloc: 3.4 KB gzip (8 KB raw) less of
/// what every visitor downloads (measured). Free blocks are kept sorted and coalesced;
/// the SDK's heap is a few hundred live strings, so a first-fit search stays short.
#[cfg(target_arch = "wasm32")]
#[global_allocator]
// SAFETY: wasm32-unknown-unknown without threads: the SDK runs on one thread.
static ALLOC: lol_alloc::AssumeSingleThreaded<lol_alloc::FreeListAllocator> =
    unsafe { lol_alloc::AssumeSingleThreaded::new(lol_alloc::FreeListAllocator::new()) };
