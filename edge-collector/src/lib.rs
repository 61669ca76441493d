//! Sightline's edge collector. The pipeline is plain Rust that decides what happens to
//! every request and every event, tested natively: `ingest` (the request and the order
//! of steps), `pii`, `enrich`, `consent`, `dedup`, `identity`, `sources` and the `store`
//! contract. The Cloudflare Workers adapter (`worker_adapter`, wasm32 only) only moves
//! bytes between the runtime, D1, Durable Objects, Queues, R2 and that pipeline.

pub mod consent;
pub mod dedup;
pub mod enrich;
pub mod identity;
pub mod ingest;
pub mod pii;
pub mod sources;
pub mod store;

#[cfg(target_arch = "wasm32")]
mod worker_adapter;
