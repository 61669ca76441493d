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
pub mod identity_shards;
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

/// The hasher of the maps a request's work fills (the identity call's cache, the
/// in-memory graph and dedup table): foldhash instead of std's SipHash, which took the
/// pipeline from 230.3 M to 218.2 M instructions (callgrind, `pipeline_bench 100`;
/// `tracking-plan`'s PII memos made the same change). Like SipHash in the worker, it is not keyed by
/// real randomness (wasm32-unknown-unknown has none to seed std's either); what bounds
/// a crafted request's collisions is that these maps live for one call and hold what
/// one request of at most 500 KB brings.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
/// A set with [`FastMap`]'s hasher.
pub type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;
