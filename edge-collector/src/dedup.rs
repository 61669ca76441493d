//! Deduplication: decides whether an event was already received, by (write key,
//! messageId), and whether a repeat carries the same content (a retry: `duplicate`) or
//! different content under the same id (a `conflict`, recorded and never merged).
//!
//! Claims are two-phase so that a failed store does not turn a retry into a silent loss:
//! a claim is `pending` until the event is stored and then `committed`; a failed store
//! releases its claims. A pending claim is never answered `duplicate`: while its lease
//! runs, a repeat is answered [`Seen::Pending`] (the request gets a retryable 503); once
//! the lease has run out (the claiming request died) the repeat takes the claim over and
//! stores the event, which is safe because stores are idempotent on the messageId. Each
//! claim names its owner (one id per request), so a slow first owner cannot release the
//! claim of the request that took it over. Seen entries are kept for [`WINDOW_MS`] (14 days; Segment keeps
//! about one).
//!
//! In the worker the table lives in Durable Objects (strongly consistent, unlike KV),
//! sharded by a hash of the event's visitor (its anonymousId, else its userId, else its
//! messageId): a browser batch is one visitor, so it claims and commits on one shard,
//! and dedup throughput grows with the shard count. A retry carries the same visitor as
//! the first try, so it meets its own claim. The one thing a shard cannot see is a
//! messageId reused by another visitor: the store catches that (the D1 hot window keeps
//! each event's fingerprint, see `Insert::Conflict`). [`MemoryDedup`] is the same logic
//! for tests.

use crate::store::StoreError;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::collections::HashMap;

/// How long a seen messageId is remembered.
pub const WINDOW_MS: i64 = 14 * 24 * 3600 * 1000;
/// How long a pending claim holds before another request may take it over: longer than
/// a live request takes from claim to commit, short enough for a sender's retries.
pub const LEASE_MS: i64 = 15 * 1000;
/// Default number of Durable Object shards.
pub const DEFAULT_SHARDS: u32 = 16;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// `writeKey` and messageId, joined by [`key`].
    pub key: String,
    /// Hash of the event's content as sent (see `pipeline::fingerprint`).
    pub fingerprint: String,
    /// The claiming request.
    pub owner: String,
}

/// The dedup key of an event: write key, visitor (the shard route) and messageId.
pub fn key(write_key: &str, visitor: &str, message_id: &str) -> String {
    // Pushed, not `format!`: once per event, and formatting's machinery was 1.2% of the
    // pipeline's instructions (callgrind, `pipeline_bench 100`).
    let mut k = String::with_capacity(write_key.len() + visitor.len() + message_id.len() + 2);
    for (i, part) in [write_key, visitor, message_id].into_iter().enumerate() {
        if i > 0 {
            k.push('\u{1f}');
        }
        k.push_str(part);
    }
    k
}

/// The visitor an event is routed by: its anonymousId, else its userId, else (an event
/// with neither is refused by the shape check, so only in theory) its messageId.
pub fn visitor<'a>(
    anonymous_id: Option<&'a str>,
    user_id: Option<&'a str>,
    message_id: &'a str,
) -> &'a str {
    anonymous_id
        .filter(|a| !a.is_empty())
        .or(user_id.filter(|u| !u.is_empty()))
        .unwrap_or(message_id)
}

/// The visitor part of a dedup key (write key, visitor, messageId).
pub fn visitor_of_key(key: &str) -> &str {
    key.split('\u{1f}').nth(1).unwrap_or(key)
}

/// The shard a dedup key lives on: the hash of its visitor part.
pub fn shard_of_key(key: &str, shards: u32) -> u32 {
    shard_of(visitor_of_key(key), shards)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "seen", rename_all = "lowercase")]
pub enum Seen {
    /// First time: claimed, to be stored.
    New,
    /// Same id, same content.
    Duplicate,
    /// Same id, different content: the first content stays.
    Conflict { first: String },
    /// Claimed by a request that has not stored it yet: retry later.
    Pending,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub fingerprint: String,
    pub committed: bool,
    pub at_ms: i64,
    #[serde(default)]
    pub owner: String,
}

/// Storage of one shard's table.
pub trait SeenTable {
    fn get(&self, key: &str) -> Option<Entry>;
    fn put(&mut self, key: &str, e: &Entry);
    fn remove(&mut self, key: &str);
}

/// Decides each claim against the table and records the new ones as pending.
pub fn claim_in(t: &mut impl SeenTable, claims: &[Claim], now_ms: i64) -> Vec<Seen> {
    claims
        .iter()
        .map(|c| {
            match t.get(&c.key) {
                None => {}
                Some(e) if now_ms - e.at_ms > WINDOW_MS => {}
                Some(e) if !e.committed && now_ms - e.at_ms > LEASE_MS => {}
                Some(e) if !e.committed && e.owner != c.owner => return Seen::Pending,
                Some(e) if crate::pipeline::same_content(&e.fingerprint, &c.fingerprint) => {
                    return Seen::Duplicate
                }
                Some(e) => {
                    return Seen::Conflict {
                        first: e.fingerprint,
                    }
                }
            }
            t.put(
                &c.key,
                &Entry {
                    fingerprint: c.fingerprint.clone(),
                    committed: false,
                    at_ms: now_ms,
                    owner: c.owner.clone(),
                },
            );
            Seen::New
        })
        .collect()
}

/// Marks stored events' claims committed.
pub fn commit_in(t: &mut impl SeenTable, keys: &[String], now_ms: i64) {
    for k in keys {
        if let Some(mut e) = t.get(k) {
            e.committed = true;
            e.at_ms = now_ms;
            t.put(k, &e);
        }
    }
}

/// Drops `owner`'s pending claims whose events could not be stored, so a retry is new
/// again. A claim another request took over is left alone.
pub fn release_in(t: &mut impl SeenTable, keys: &[String], owner: &str) {
    for k in keys {
        if t.get(k).is_some_and(|e| !e.committed && e.owner == owner) {
            t.remove(k);
        }
    }
}

/// The shard of a visitor: FNV-1a, hand-written because it is four lines and must never
/// change (a different hash would forget every seen id).
pub fn shard_of(visitor: &str, shards: u32) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in visitor.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h % shards.max(1)
}

/// The dedup service the pipeline calls.
#[allow(async_fn_in_trait)]
pub trait Deduplicator {
    async fn claim(&self, claims: &[Claim], now_ms: i64) -> Result<Vec<Seen>, StoreError>;
    async fn commit(&self, keys: &[String], now_ms: i64) -> Result<(), StoreError>;
    async fn release(&self, keys: &[String], owner: &str) -> Result<(), StoreError>;
}

impl<S: std::hash::BuildHasher> SeenTable for HashMap<String, Entry, S> {
    fn get(&self, key: &str) -> Option<Entry> {
        HashMap::get(self, key).cloned()
    }
    fn put(&mut self, key: &str, e: &Entry) {
        self.insert(key.to_string(), e.clone());
    }
    fn remove(&mut self, key: &str) {
        HashMap::remove(self, key);
    }
}

/// In-memory dedup (tests, benchmarks).
#[derive(Debug, Default)]
pub struct MemoryDedup {
    pub table: RefCell<crate::FastMap<String, Entry>>,
}

impl Deduplicator for MemoryDedup {
    async fn claim(&self, claims: &[Claim], now_ms: i64) -> Result<Vec<Seen>, StoreError> {
        Ok(claim_in(&mut *self.table.borrow_mut(), claims, now_ms))
    }
    async fn commit(&self, keys: &[String], now_ms: i64) -> Result<(), StoreError> {
        commit_in(&mut *self.table.borrow_mut(), keys, now_ms);
        Ok(())
    }
    async fn release(&self, keys: &[String], owner: &str) -> Result<(), StoreError> {
        release_in(&mut *self.table.borrow_mut(), keys, owner);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn c(k: &str, fp: &str) -> Claim {
        cw(k, fp, "r1")
    }

    fn cw(k: &str, fp: &str, owner: &str) -> Claim {
        Claim {
            key: k.into(),
            fingerprint: fp.into(),
            owner: owner.into(),
        }
    }

    #[test]
    fn new_duplicate_conflict() {
        let mut t = HashMap::new();
        assert_eq!(claim_in(&mut t, &[c("a", "1")], 0), vec![Seen::New]);
        commit_in(&mut t, &["a".into()], 0);
        assert_eq!(
            claim_in(&mut t, &[c("a", "1"), c("a", "2"), c("b", "1")], 10),
            vec![
                Seen::Duplicate,
                Seen::Conflict { first: "1".into() },
                Seen::New
            ]
        );
    }

    #[test]
    fn a_repeat_inside_one_batch_is_a_duplicate() {
        let mut t = HashMap::new();
        assert_eq!(
            claim_in(&mut t, &[c("a", "1"), c("a", "1")], 0),
            vec![Seen::New, Seen::Duplicate]
        );
    }

    #[test]
    fn a_pending_claim_is_never_a_duplicate_for_another_request() {
        let mut t = HashMap::new();
        claim_in(&mut t, &[cw("a", "1", "r1")], 0);
        assert_eq!(
            claim_in(&mut t, &[cw("a", "1", "r2")], 5),
            vec![Seen::Pending]
        );
        assert_eq!(
            claim_in(&mut t, &[cw("a", "2", "r2")], 5),
            vec![Seen::Pending]
        );
        // The lease runs out (r1 died): r2 takes the claim over.
        assert_eq!(
            claim_in(&mut t, &[cw("a", "1", "r2")], 1 + LEASE_MS),
            vec![Seen::New]
        );
        // r1 wakes up and fails: it cannot release r2's claim.
        release_in(&mut t, &["a".into()], "r1");
        assert_eq!(
            claim_in(&mut t, &[cw("a", "1", "r3")], 2 + LEASE_MS),
            vec![Seen::Pending]
        );
        commit_in(&mut t, &["a".into()], 3 + LEASE_MS);
        assert_eq!(
            claim_in(&mut t, &[cw("a", "1", "r3")], 4 + LEASE_MS),
            vec![Seen::Duplicate]
        );
    }

    #[test]
    fn released_and_expired_claims_are_new_again() {
        let mut t = HashMap::new();
        claim_in(&mut t, &[c("a", "1")], 0);
        release_in(&mut t, &["a".into()], "r1");
        assert_eq!(claim_in(&mut t, &[c("a", "1")], 1), vec![Seen::New]);
        commit_in(&mut t, &["a".into()], 3);
        release_in(&mut t, &["a".into()], "r1"); // committed claims are not released
        assert_eq!(
            claim_in(&mut t, &[c("a", "1")], 4 + 7 * 24 * 3600 * 1000),
            vec![Seen::Duplicate],
            "remembered for at least 7 days"
        );
        assert_eq!(
            claim_in(&mut t, &[c("a", "1")], 4 + WINDOW_MS),
            vec![Seen::New]
        );
    }

    #[test]
    fn a_visitors_batch_lives_on_one_shard_and_visitors_spread() {
        let one: HashSet<u32> = (0..100)
            .map(|i| shard_of_key(&key("wk", "anon-1", &format!("m{i}")), 16))
            .collect();
        assert_eq!(one.len(), 1, "100 events of one visitor: one shard");
        let many: HashSet<u32> = (0..200)
            .map(|i| shard_of_key(&key("wk", &format!("anon-{i}"), "m"), 16))
            .collect();
        assert_eq!(many.len(), 16, "visitors spread over every shard");
        assert_eq!(visitor(Some(""), Some("u1"), "m"), "u1");
        assert_eq!(visitor(None, None, "m"), "m");
        assert_eq!(visitor(Some("a"), Some("u"), "m"), "a");
    }

    #[test]
    fn shards_are_stable_and_spread() {
        assert_eq!(shard_of("abc", 16), shard_of("abc", 16));
        let mut used = std::collections::HashSet::new();
        for i in 0..200 {
            used.insert(shard_of(&format!("id-{i}"), 16));
        }
        assert_eq!(used.len(), 16);
        assert_eq!(shard_of("x", 0), 0);
    }
}
