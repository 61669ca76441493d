//! Sightline's browser SDK: a Rust engine compiled to WebAssembly. `engine` decides
//! (consent, event building, redaction and soft-login hashing, the queue and its bound,
//! batches, backoff and retries, cross-tab ownership) on the rules `tracking-plan`
//! shares with the collector; `browser` is the thin adapter that reaches the page
//! through `web-sys` and exports the API through `wasm-bindgen`.

pub mod engine;

#[cfg(target_arch = "wasm32")]
mod browser;
