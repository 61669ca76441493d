//! Sightline's edge collector. The pipeline (`pipeline/`, one stage per module) is plain
//! Rust that decides what happens to every request and every event, tested natively; the
//! domain rules it applies live beside it: `consent`, `dedup`, `enrich`, `identity`,
//! `erasure`, `sources` and the `store` contract, with typed `reason`s and one `error`
//! enum mapped to HTTP status. The Cloudflare Workers adapter (`worker_adapter`, wasm32
//! only) only moves bytes between the runtime, D1, Durable Objects, Queues, R2 and that
//! core.

pub mod activation;
pub mod activity;
pub mod agent;
pub mod alerts;
pub mod attribution;
pub mod audiences;
pub mod consent;
pub mod cursor;
pub mod dedup;
pub mod destinations;
pub mod enrich;
pub mod erasure;
pub mod error;
pub mod foreign;
pub mod graph_cache;
pub mod identity;
pub mod insights;
pub mod lake;
pub mod pipeline;
pub mod posthog;
pub mod reason;
pub mod segments;
pub mod settings;
pub mod snowplow;
pub mod sources;
pub mod store;

#[cfg(target_arch = "wasm32")]
mod worker_adapter;
