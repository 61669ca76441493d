//! Sightline's edge collector. The pipeline (`ingest`, `sources`, `store`) is plain Rust
//! that decides what happens to every request and every event; it is tested natively.
//! The Cloudflare Workers adapter (`worker_adapter`, wasm32 only) only moves bytes between
//! the runtime, D1 and static assets and that pipeline.

pub mod ingest;
pub mod sources;
pub mod store;

#[cfg(target_arch = "wasm32")]
mod worker_adapter;
