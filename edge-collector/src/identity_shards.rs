//! Identity over several shards: decides where each part of a source's identity graph
//! lives when it is spread over `n` Durable Objects, and how one call that touches
//! several of them reads, locks and commits, all or nothing, so that a call that dies at
//! any point is finished or undone by the next one that meets its locks, or by a
//! shard's alarm ([`sweep`]).
//!
//! Placement (FNV-1a, [`crate::dedup::shard_of`]): an identifier's link and retirement
//! on the shard of its value; a profile, its merge records and the conflicts about it on
//! the shard of its id (a merge record and a conflict on both profiles' shards, so each
//! profile's shard answers everything about it); an event's kept resolution on the shard
//! of its dedup key's visitor. A new profile's id is drawn until it falls on its
//! visitor's shard, so a returning visitor is one read and one apply on one shard; for
//! a visitor off the call's primary it is drawn before the call and locked with its
//! first reads ([`observe_start`]), as a new profile off the primary must be before the
//! commit.
//!
//! The rules stay in [`crate::identity`]: a call runs them over a [`Snapshot`], the part
//! of the graph read so far. What they read and the snapshot lacks is read, and locked,
//! from its shard, and the rules run again from the start, until nothing is missing.
//! Their writes are the call's changes ([`Op`]), compacted and split by shard.
//!
//! [`transact`] commits them: alone on the call's primary, in one call there; otherwise
//! the primary keeps the call's fate (the other shards' parts) with its own part, then
//! the rest is applied ([`finish`]). A call that meets a lock after its lease asks the
//! lock's primary ([`recover`]): committed, the call is finished; not, it is aborted and
//! can no longer commit. Of two live calls that meet, the older waits and the younger
//! starts over (wait-die).

use crate::dedup::shard_of;
use crate::identity::{
    Conflict, Graph, Ident, Limits, MergeRecord, Observation, Profile, Resolution,
};
use crate::FastMap as HashMap;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::future::Future;

/// How long a call's locks hold before another call may ask the primary about it:
/// longer than a live call takes between its first read and its commit.
pub const LEASE_MS: i64 = 15 * 1000;
/// Rounds of reads a call may take before it gives up ([`ShardError::TooManyRounds`]).
/// Resolving a request takes two (identifiers, then the profiles they point to) and one
/// more per merge chain; an unmerge or erasure three.
pub const MAX_ROUNDS: usize = 8;

pub fn shard_of_ident(id: &Ident, n: u32) -> u32 {
    shard_of(&id.value, n)
}

pub fn shard_of_profile(id: &str, n: u32) -> u32 {
    shard_of(id, n)
}

/// The shard of an event's resolution: its dedup key's visitor, as the key's dedup claim.
pub fn shard_of_resolution(key: &str, n: u32) -> u32 {
    crate::dedup::shard_of_key(key, n)
}

/// What a call asks one shard to read (and lock).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reads {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub idents: Vec<Ident>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<String>,
    /// Profiles whose merge records and conflicts are wanted too (most calls need
    /// only the document: a merge, an unmerge or an erasure reads these).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub records: Vec<String>,
}

impl Reads {
    fn is_empty(&self) -> bool {
        self.idents.is_empty()
            && self.profiles.is_empty()
            && self.keys.is_empty()
            && self.records.is_empty()
    }
    fn lock_keys(&self) -> Vec<String> {
        let idents = self.idents.iter().map(ident_lock);
        let mut ids: Vec<&String> = self.profiles.iter().chain(&self.records).collect();
        ids.sort_unstable();
        ids.dedup();
        let profiles = ids.into_iter().map(|p| format!("p\u{1f}{p}"));
        let keys = self.keys.iter().map(|k| format!("r\u{1f}{k}"));
        idents.chain(profiles).chain(keys).collect()
    }
}

fn ident_lock(i: &Ident) -> String {
    format!("i\u{1f}{}\u{1f}{}", i.kind.as_str(), i.value)
}

/// What a shard holds about one profile: its document and, when asked for, its records.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bundle {
    pub id: String,
    pub profile: Option<Profile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records: Option<Records>,
}

/// A profile's merge records (into it, and of it) and the conflicts about it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Records {
    #[serde(default)]
    pub merges_into: Vec<MergeRecord>,
    #[serde(default)]
    pub merges_of: Vec<MergeRecord>,
    #[serde(default)]
    pub conflicts: Vec<Conflict>,
}

/// An identifier as a shard holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Linked {
    pub ident: Ident,
    pub profile: Option<String>,
    pub retired: bool,
}

/// What a shard read.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Found {
    #[serde(default)]
    pub idents: Vec<Linked>,
    #[serde(default)]
    pub bundles: Vec<Bundle>,
    #[serde(default)]
    pub resolutions: Vec<(String, Option<Resolution>)>,
}

/// One change to the graph, as the [`Graph`] method of the same name makes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Op {
    SaveProfile {
        profile: Profile,
    },
    DeleteProfile {
        id: String,
    },
    Link {
        ident: Ident,
        profile: String,
    },
    Unlink {
        ident: Ident,
    },
    SaveMerge {
        merge: MergeRecord,
    },
    /// A merge record, by id; kept on both profiles' shards.
    DeleteMerge {
        id: String,
        into: String,
        absorbed: String,
    },
    SaveConflict {
        conflict: Conflict,
    },
    /// The conflicts about `profile`, and their copies on the other profiles' shards.
    DeleteConflicts {
        profile: String,
        others: Vec<String>,
    },
    SaveResolution {
        key: String,
        resolution: Resolution,
        at_ms: i64,
    },
    /// On every shard: resolutions live where their events' visitors do.
    DeleteResolutionsOf {
        profile: String,
    },
    Retire {
        ident: Ident,
        at_ms: i64,
    },
}

impl Op {
    /// The shards this change is made on.
    pub fn shards(&self, n: u32) -> Vec<u32> {
        let p = |id: &str| shard_of_profile(id, n);
        let mut out = match self {
            Op::SaveProfile { profile } => vec![p(&profile.id)],
            Op::DeleteProfile { id } => vec![p(id)],
            Op::Link { ident, .. } | Op::Unlink { ident } | Op::Retire { ident, .. } => {
                vec![shard_of_ident(ident, n)]
            }
            Op::SaveMerge { merge } => vec![p(&merge.into), p(&merge.absorbed.id)],
            Op::DeleteMerge { into, absorbed, .. } => vec![p(into), p(absorbed)],
            Op::SaveConflict { conflict } => {
                let other = conflict.other_profile.as_deref();
                std::iter::once(p(&conflict.profile))
                    .chain(other.map(p))
                    .collect()
            }
            Op::DeleteConflicts { profile, others } => std::iter::once(profile)
                .chain(others)
                .map(|o| p(o))
                .collect(),
            Op::SaveResolution { key, .. } => vec![shard_of_resolution(key, n)],
            Op::DeleteResolutionsOf { .. } => (0..n.max(1)).collect(),
        };
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Makes this change on one shard's graph.
    pub fn apply(&self, g: &mut impl Graph) {
        match self {
            Op::SaveProfile { profile } => g.save_profile(profile.clone()),
            Op::DeleteProfile { id } => g.delete_profile(id),
            Op::Link { ident, profile } => g.link(ident, profile),
            Op::Unlink { ident } => g.unlink(ident),
            Op::SaveMerge { merge } => g.save_merge(merge),
            Op::DeleteMerge { id, .. } => g.delete_merge(id),
            Op::SaveConflict { conflict } => g.save_conflict(conflict),
            Op::DeleteConflicts { profile, .. } => g.delete_conflicts(profile),
            Op::SaveResolution {
                key,
                resolution,
                at_ms,
            } => g.save_resolution(key, resolution, *at_ms),
            Op::DeleteResolutionsOf { profile } => g.delete_resolutions_of(profile),
            Op::Retire { ident, at_ms } => g.retire(ident, *at_ms),
        }
    }
}

/// A call's changes, by shard, each shard's in the order they were made.
pub type Changes = Vec<(u32, Vec<Op>)>;

/// Splits changes by shard, each shard's compacted ([`compact`]).
pub fn by_shard(ops: &[Op], n: u32) -> Changes {
    let mut out: Changes = Vec::new();
    for op in compact(ops) {
        for s in op.shards(n) {
            match out.iter_mut().find(|(x, _)| *x == s) {
                Some((_, v)) => v.push(op.clone()),
                None => out.push((s, vec![op.clone()])),
            }
        }
    }
    out.sort_by_key(|(s, _)| *s);
    out
}

/// What an op writes, when it overwrites one thing (a later op on the same thing
/// makes it moot); `None` for an op that adds (a conflict) or clears by profile.
fn written(op: &Op) -> Option<(u8, String)> {
    let ident = |i: &Ident| format!("{}\u{1f}{}", i.kind.as_str(), i.value);
    Some(match op {
        Op::SaveProfile { profile } => (0, profile.id.clone()),
        Op::DeleteProfile { id } => (0, id.clone()),
        Op::Link { ident: i, .. } | Op::Unlink { ident: i } => (1, ident(i)),
        Op::SaveResolution { key, .. } => (2, key.clone()),
        Op::Retire { ident: i, .. } => (3, ident(i)),
        Op::SaveMerge { merge } => (4, merge.id.clone()),
        Op::DeleteMerge { id, .. } => (4, id.clone()),
        Op::SaveConflict { .. } => return None,
        Op::DeleteConflicts { .. } | Op::DeleteResolutionsOf { .. } => return None,
    })
}

/// Drops the ops a later op on the same thing overwrites: a batch of one visitor's 100
/// events saves its profile 100 times and needs it written once. Ops that clear by
/// profile (conflicts, resolutions) are kept in place and nothing moves across them.
pub fn compact(ops: &[Op]) -> Vec<Op> {
    let mut seen: std::collections::HashSet<(u8, String)> = std::collections::HashSet::new();
    let mut kept: Vec<&Op> = Vec::new();
    for op in ops.iter().rev() {
        match (written(op), op) {
            (Some(w), _) => {
                if seen.insert(w) {
                    kept.push(op);
                }
            }
            (None, Op::SaveConflict { .. }) => kept.push(op),
            (None, _) => {
                seen.clear();
                kept.push(op);
            }
        }
    }
    kept.into_iter().rev().cloned().collect()
}

/// Applies compacted ops to a shard's graph: links, profile documents and resolutions
/// in batches (a few statements each), the rest one by one, in order across the ops
/// that clear by profile.
fn apply_all(g: &mut impl Graph, ops: &[Op]) {
    let mut links: Vec<(Ident, Option<String>)> = Vec::new();
    let mut profiles: Vec<Profile> = Vec::new();
    let mut kept: Vec<(String, Resolution, i64)> = Vec::new();
    let flush = |g: &mut _, links: &mut Vec<_>, profiles: &mut Vec<_>, kept: &mut Vec<_>| {
        Graph::link_all(g, &std::mem::take(links));
        Graph::save_profiles(g, std::mem::take(profiles));
        Graph::save_resolutions(g, &std::mem::take(kept));
    };
    for op in ops {
        match op {
            Op::Link { ident, profile } => links.push((ident.clone(), Some(profile.clone()))),
            Op::Unlink { ident } => links.push((ident.clone(), None)),
            Op::SaveProfile { profile } => profiles.push(profile.clone()),
            Op::SaveResolution {
                key,
                resolution,
                at_ms,
            } => kept.push((key.clone(), resolution.clone(), *at_ms)),
            Op::DeleteConflicts { .. } | Op::DeleteResolutionsOf { .. } => {
                flush(g, &mut links, &mut profiles, &mut kept);
                op.apply(g);
            }
            other => other.apply(g),
        }
    }
    flush(g, &mut links, &mut profiles, &mut kept);
}

/// The part of the graph a call has read, with the changes of the run in progress.
/// Implements [`Graph`] for the rules; notes what they read that it does not hold.
pub struct Snapshot {
    n: u32,
    base: Known,
    run: Known,
    missing: RefCell<Reads>,
    ops: Vec<Op>,
    /// Profile ids drawn so far, reused in order by each run so runs agree.
    fresh: Vec<String>,
    drawn: usize,
    /// The shard a new profile should live on (the identifier that makes it).
    pub home: Option<u32>,
    new_id: Box<dyn FnMut() -> String>,
    /// Profile ids drawn before the call's first reads, each on its shard ([`reserve`]).
    reserved: Vec<(u32, String)>,
}

#[derive(Clone, Default)]
struct Known {
    links: HashMap<Ident, Option<String>>,
    retired: HashMap<Ident, bool>,
    bundles: HashMap<String, Bundle>,
    resolutions: HashMap<String, Option<Resolution>>,
}

/// A new profile id draw gives up on its home shard after this many tries.
const HOME_TRIES: usize = 256;

impl Snapshot {
    /// An empty snapshot of a graph over `n` shards; `new_id` draws a random profile id.
    pub fn new(n: u32, new_id: Box<dyn FnMut() -> String>) -> Self {
        Snapshot {
            n: n.max(1),
            base: Known::default(),
            run: Known::default(),
            missing: RefCell::default(),
            ops: Vec::new(),
            fresh: Vec::new(),
            drawn: 0,
            home: None,
            new_id,
            reserved: Vec::new(),
        }
    }

    /// A random profile id, on shard `home` if one is given (after [`HOME_TRIES`]
    /// draws, wherever the last fell).
    fn draw(&mut self, home: Option<u32>) -> String {
        let mut id = (self.new_id)();
        if let Some(home) = home {
            for _ in 0..HOME_TRIES {
                if shard_of_profile(&id, self.n) == home {
                    break;
                }
                id = (self.new_id)();
            }
        }
        id
    }

    /// Whether this attempt read profile `id` (so a locking call holds its lock).
    fn was_read(&self, id: &str) -> bool {
        self.base.bundles.contains_key(id)
    }

    /// Adds what a shard read.
    pub fn learn(&mut self, found: Found) {
        for l in found.idents {
            self.base.retired.insert(l.ident.clone(), l.retired);
            self.base.links.insert(l.ident, l.profile);
        }
        for b in found.bundles {
            match self.base.bundles.get_mut(&b.id) {
                Some(known) if b.records.is_none() => known.profile = b.profile,
                _ => {
                    self.base.bundles.insert(b.id.clone(), b);
                }
            }
        }
        self.base.resolutions.extend(found.resolutions);
    }

    /// Drops what was read, for a new attempt (others may have changed it since); the
    /// profile ids drawn stay, unused.
    pub fn forget_reads(&mut self) {
        self.base = Known::default();
    }

    /// Starts a run of the rules from what has been read.
    pub fn begin(&mut self) {
        self.run = self.base.clone();
        self.missing = RefCell::default();
        self.ops.clear();
        self.drawn = 0;
        self.home = None;
    }

    /// What the run read that is not held, by shard.
    pub fn missing(&self) -> Vec<(u32, Reads)> {
        split_reads(&self.missing.borrow(), self.n)
    }

    /// The run's changes, in order.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// Whether `id` is a profile id this call drew (so no other call knows it).
    pub fn is_new(&self, id: &str) -> bool {
        self.fresh.iter().any(|f| f == id)
    }

    /// An identifier about to change must have been read, so that it is locked and the
    /// change made knowing its current state (a merge relinks the absorbed profile's
    /// identifiers, which the event did not carry): otherwise it is read, and the run
    /// redone.
    fn must_read(&self, id: &Ident) {
        if !self.base.links.contains_key(id) {
            self.miss_ident(id);
        }
    }

    fn miss_ident(&self, id: &Ident) {
        let mut m = self.missing.borrow_mut();
        if !m.idents.contains(id) {
            m.idents.push(id.clone());
        }
    }

    fn bundle(&self, id: &str) -> Option<&Bundle> {
        let b = self.run.bundles.get(id);
        if b.is_none() {
            let mut m = self.missing.borrow_mut();
            if !m.profiles.iter().any(|p| p == id) {
                m.profiles.push(id.to_string());
            }
        }
        b
    }

    /// A profile's records; noted missing if they were not read.
    fn records(&self, id: &str) -> Option<&Records> {
        let r = self.run.bundles.get(id).and_then(|b| b.records.as_ref());
        if r.is_none() {
            let mut m = self.missing.borrow_mut();
            if !m.records.iter().any(|p| p == id) {
                m.records.push(id.to_string());
            }
        }
        r
    }

    /// The records of a profile about to change here; `None` if they were not read (a
    /// change to them is still noted as an op, and applied where they are kept).
    fn records_mut(&mut self, id: &str) -> Option<&mut Records> {
        self.run.bundles.get_mut(id)?.records.as_mut()
    }
}

/// Groups reads by the shard that holds them.
pub fn split_reads(r: &Reads, n: u32) -> Vec<(u32, Reads)> {
    fn at(out: &mut Vec<(u32, Reads)>, s: u32) -> &mut Reads {
        let i = match out.iter().position(|(x, _)| *x == s) {
            Some(i) => i,
            None => {
                out.push((s, Reads::default()));
                out.len() - 1
            }
        };
        &mut out[i].1
    }
    let mut out: Vec<(u32, Reads)> = Vec::new();
    for i in &r.idents {
        at(&mut out, shard_of_ident(i, n)).idents.push(i.clone());
    }
    for p in &r.profiles {
        at(&mut out, shard_of_profile(p, n))
            .profiles
            .push(p.clone());
    }
    for key in &r.keys {
        at(&mut out, shard_of_resolution(key, n))
            .keys
            .push(key.clone());
    }
    for p in &r.records {
        at(&mut out, shard_of_profile(p, n)).records.push(p.clone());
    }
    out.sort_by_key(|(s, _)| *s);
    out
}

impl Graph for Snapshot {
    fn profile_of(&self, id: &Ident) -> Option<String> {
        match self.run.links.get(id) {
            Some(p) => p.clone(),
            None => {
                self.miss_ident(id);
                None
            }
        }
    }
    fn profile(&self, id: &str) -> Option<Profile> {
        self.bundle(id).and_then(|b| b.profile.clone())
    }
    fn save_profile(&mut self, p: Profile) {
        if !self.is_new(&p.id) && !self.base.bundles.contains_key(&p.id) {
            self.bundle(&p.id);
        }
        self.ops.push(Op::SaveProfile { profile: p.clone() });
        let id = p.id.clone();
        let b = self.run.bundles.entry(id.clone()).or_default();
        b.id = id;
        b.profile = Some(p);
    }
    fn delete_profile(&mut self, id: &str) {
        self.ops.push(Op::DeleteProfile { id: id.into() });
        if let Some(b) = self.run.bundles.get_mut(id) {
            b.profile = None;
        }
    }
    fn link(&mut self, id: &Ident, profile: &str) {
        self.must_read(id);
        self.ops.push(Op::Link {
            ident: id.clone(),
            profile: profile.into(),
        });
        self.run.links.insert(id.clone(), Some(profile.into()));
    }
    fn unlink(&mut self, id: &Ident) {
        self.must_read(id);
        self.ops.push(Op::Unlink { ident: id.clone() });
        self.run.links.insert(id.clone(), None);
    }
    fn save_merge(&mut self, m: &MergeRecord) {
        self.ops.push(Op::SaveMerge { merge: m.clone() });
        let upsert = |list: &mut Vec<MergeRecord>| match list.iter_mut().find(|x| x.id == m.id) {
            Some(x) => *x = m.clone(),
            None => list.insert(0, m.clone()),
        };
        if let Some(r) = self.records_mut(&m.into) {
            upsert(&mut r.merges_into);
        }
        if let Some(r) = self.records_mut(&m.absorbed.id) {
            upsert(&mut r.merges_of);
        }
    }
    fn merges_into(&self, profile: &str) -> Vec<MergeRecord> {
        self.records(profile)
            .map(|r| r.merges_into.clone())
            .unwrap_or_default()
    }
    fn delete_merges_into(&mut self, profile: &str) {
        for m in self.merges_into(profile) {
            self.delete_merge(&m.id);
        }
    }
    fn save_conflict(&mut self, c: &Conflict) {
        self.ops.push(Op::SaveConflict {
            conflict: c.clone(),
        });
        let other = c.other_profile.clone();
        for id in std::iter::once(c.profile.clone()).chain(other) {
            if let Some(r) = self.records_mut(&id) {
                r.conflicts.insert(0, c.clone());
            }
        }
    }
    fn conflicts(&self, profile: &str) -> Vec<Conflict> {
        self.records(profile)
            .map(|r| r.conflicts.clone())
            .unwrap_or_default()
    }
    fn delete_conflicts(&mut self, profile: &str) {
        let about = self.conflicts(profile);
        let mut others: Vec<String> = Vec::new();
        for c in &about {
            for p in std::iter::once(&c.profile).chain(c.other_profile.as_ref()) {
                if p != profile && !others.contains(p) {
                    others.push(p.clone());
                }
            }
        }
        self.ops.push(Op::DeleteConflicts {
            profile: profile.into(),
            others: others.clone(),
        });
        let involves =
            |c: &Conflict| c.profile == profile || c.other_profile.as_deref() == Some(profile);
        for id in std::iter::once(profile.to_string()).chain(others) {
            if let Some(r) = self.records_mut(&id) {
                r.conflicts.retain(|c| !involves(c));
            }
        }
    }
    fn merges_of(&self, profile: &str) -> Vec<MergeRecord> {
        self.records(profile)
            .map(|r| r.merges_of.clone())
            .unwrap_or_default()
    }
    fn delete_merge(&mut self, id: &str) {
        let found = self.run.bundles.values().find_map(|b| {
            let r = b.records.as_ref()?;
            let mut all = r.merges_into.iter().chain(&r.merges_of);
            all.find(|m| m.id == id).cloned()
        });
        // A record is only deleted after it was read, so it is held.
        let Some(m) = found else { return };
        self.ops.push(Op::DeleteMerge {
            id: id.into(),
            into: m.into.clone(),
            absorbed: m.absorbed.id.clone(),
        });
        for r in self
            .run
            .bundles
            .values_mut()
            .filter_map(|b| b.records.as_mut())
        {
            r.merges_into.retain(|x| x.id != id);
            r.merges_of.retain(|x| x.id != id);
        }
    }
    fn resolution(&self, key: &str) -> Option<Resolution> {
        match self.run.resolutions.get(key) {
            Some(r) => r.clone(),
            None => {
                let mut m = self.missing.borrow_mut();
                if !m.keys.iter().any(|k| k == key) {
                    m.keys.push(key.to_string());
                }
                None
            }
        }
    }
    fn save_resolution(&mut self, key: &str, r: &Resolution, at_ms: i64) {
        self.ops.push(Op::SaveResolution {
            key: key.into(),
            resolution: r.clone(),
            at_ms,
        });
        self.run.resolutions.insert(key.into(), Some(r.clone()));
    }
    fn delete_resolutions_of(&mut self, profile: &str) {
        self.ops.push(Op::DeleteResolutionsOf {
            profile: profile.into(),
        });
        for r in self.run.resolutions.values_mut() {
            if r.as_ref()
                .is_some_and(|r| r.profile_id == profile || r.absorbed.iter().any(|a| a == profile))
            {
                *r = None;
            }
        }
    }
    fn new_profile_id(&mut self) -> String {
        if self.drawn == self.fresh.len() {
            let home = self.home;
            let kept = self.reserved.iter().position(|(s, _)| Some(*s) == home);
            let id = match kept {
                Some(i) => self.reserved.swap_remove(i).1,
                None => self.draw(home),
            };
            self.fresh.push(id);
        }
        let id = self.fresh[self.drawn].clone();
        self.drawn += 1;
        // Drawn at random here: known not to exist, and to have no records (a reserved
        // id was read, as a profile alone).
        let b = self
            .run
            .bundles
            .entry(id.clone())
            .or_insert_with(|| Bundle {
                id: id.clone(),
                profile: None,
                records: None,
            });
        b.records.get_or_insert_with(Records::default);
        id
    }
    fn is_retired(&self, id: &Ident) -> bool {
        match self.run.retired.get(id) {
            Some(r) => *r,
            None => {
                self.miss_ident(id);
                false
            }
        }
    }
    fn retire(&mut self, id: &Ident, at_ms: i64) {
        self.must_read(id);
        self.ops.push(Op::Retire {
            ident: id.clone(),
            at_ms,
        });
        self.run.retired.insert(id.clone(), true);
    }
}

// ---------------------------------------------------------------------------------
// One shard: its locks, the fates it keeps as a primary, and the calls it applied.

/// A lock on one key of a shard's graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Lock {
    pub txn: String,
    pub primary: u32,
    pub until_ms: i64,
    /// When the call holding it began (its first attempt): the older of two calls that
    /// meet waits, the younger starts over ([`transact`]).
    #[serde(default)]
    pub since_ms: i64,
}

/// A call's state as its primary keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Fate {
    /// Committed: its changes, to be applied where they were not yet, and the shards
    /// it locked, to be released.
    Committed { changes: Changes, locked: Vec<u32> },
    /// Given up (by itself, or by a call that met its lock after its lease).
    Aborted,
}

/// Storage of a shard's locks and fates. Implementations only store.
pub trait Locks {
    /// The locks held on any of `keys`.
    fn locks(&self, keys: &[String]) -> Vec<(String, Lock)>;
    /// Locks every one of `keys` as `l` (replacing what was there).
    fn put_locks(&mut self, keys: &[String], l: &Lock);
    /// Removes every lock `txn` holds here.
    fn unlock(&mut self, txn: &str);
    fn fate(&self, txn: &str) -> Option<Fate>;
    fn put_fate(&mut self, txn: &str, f: &Fate, at_ms: i64);
    fn forget(&mut self, txn: &str);
    /// The committed calls kept here since before `at_ms` (their driver may have died
    /// before finishing them: [`sweep`]).
    fn committed_before(&self, at_ms: i64) -> Vec<(String, Fate)>;
    /// The calls holding locks here whose lease ran out before `at_ms`, each once, with
    /// their primaries.
    fn stale_before(&self, at_ms: i64) -> Vec<(String, u32)>;
    /// Whether this shard applied `txn`'s changes already.
    fn applied(&self, txn: &str) -> bool;
    fn mark_applied(&mut self, txn: &str, at_ms: i64);
}

/// A shard's answer to a read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ReadAnswer {
    Found {
        found: Found,
    },
    /// A key is locked by a live call, which began at `since_ms`.
    Busy {
        txn: String,
        #[serde(default)]
        since_ms: i64,
    },
    /// A key is locked by a call whose lease ran out: ask its primary.
    Stale {
        txn: String,
        primary: u32,
    },
}

/// A read of one shard: locks the keys for `txn` (unless `lock` is false: a read for a
/// view, which changes nothing) and reads them. With `shard` and `n`, also gives the
/// bundles of the profiles the identifiers point to that live here, locked as well, so
/// a visitor whose links and profile are together is read in one call.
pub fn read(g: &impl Graph, t: &mut impl Locks, req: &ReadRequest, now_ms: i64) -> ReadAnswer {
    let mut reads = req.reads.clone();
    let links = g.profiles_of(&reads.idents);
    for (_, p) in &links {
        let here = shard_of_profile(p, req.n) == req.shard;
        if here && !reads.profiles.contains(p) {
            reads.profiles.push(p.clone());
        }
    }
    let keys = reads.lock_keys();
    if req.lock {
        let held = t.locks(&keys);
        if let Some((_, l)) = held.iter().find(|(_, l)| l.txn != req.txn) {
            return if l.until_ms > now_ms {
                ReadAnswer::Busy {
                    txn: l.txn.clone(),
                    since_ms: l.since_ms,
                }
            } else {
                ReadAnswer::Stale {
                    txn: l.txn.clone(),
                    primary: l.primary,
                }
            };
        }
        let l = Lock {
            txn: req.txn.clone(),
            primary: req.primary,
            until_ms: now_ms + LEASE_MS,
            since_ms: req.since_ms,
        };
        t.put_locks(&keys, &l);
    }
    let retired = g.retired_among(&reads.idents);
    let idents = reads
        .idents
        .iter()
        .map(|i| Linked {
            ident: i.clone(),
            profile: links.iter().find(|(x, _)| x == i).map(|(_, p)| p.clone()),
            retired: retired.contains(i),
        })
        .collect();
    let mut ids: Vec<String> = reads.profiles.clone();
    for r in &reads.records {
        if !ids.contains(r) {
            ids.push(r.clone());
        }
    }
    let mut docs = g.profiles(&ids);
    let bundles = ids
        .iter()
        .map(|id| Bundle {
            id: id.clone(),
            profile: docs
                .iter()
                .position(|p| p.id == *id)
                .map(|i| docs.swap_remove(i)),
            records: reads.records.contains(id).then(|| Records {
                merges_into: g.merges_into(id),
                merges_of: g.merges_of(id),
                conflicts: g.conflicts(id),
            }),
        })
        .collect();
    let kept = g.resolutions(&reads.keys);
    let resolutions = reads
        .keys
        .iter()
        .map(|k| {
            (
                k.clone(),
                kept.iter().find(|(x, _)| x == k).map(|(_, r)| r.clone()),
            )
        })
        .collect();
    ReadAnswer::Found {
        found: Found {
            idents,
            bundles,
            resolutions,
        },
    }
}

/// A read, as sent to a shard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadRequest {
    pub txn: String,
    /// When the call began ([`Lock::since_ms`]).
    #[serde(default)]
    pub since_ms: i64,
    pub primary: u32,
    pub lock: bool,
    pub shard: u32,
    pub n: u32,
    pub reads: Reads,
}

/// Applies the whole of a call that read and changed this shard alone, and releases its
/// locks; refused if it was aborted (a call slower than its lease, whose locks another
/// call took over). Nothing else applies such a call (it has no fate to finish it
/// from), so it needs no applied mark.
pub fn apply_alone(
    g: &mut impl Graph,
    t: &mut impl Locks,
    txn: &str,
    ops: &[Op],
) -> Result<(), ShardError> {
    fenced(t, txn, |_| apply_all(g, ops))
}

/// Runs `f` for `txn` unless it was aborted here, then releases its locks here.
fn fenced<L: Locks>(t: &mut L, txn: &str, f: impl FnOnce(&mut L)) -> Result<(), ShardError> {
    let aborted = t.fate(txn) == Some(Fate::Aborted);
    if !aborted {
        f(t);
    }
    t.unlock(txn);
    match aborted {
        true => Err(ShardError::Aborted),
        false => Ok(()),
    }
}

/// Applies `txn`'s changes for this shard, once, and releases its locks here; refused
/// if this shard, as the call's primary, marked it aborted (a call slower than its
/// lease, whose locks another call took over).
pub fn apply(
    g: &mut impl Graph,
    t: &mut impl Locks,
    txn: &str,
    ops: &[Op],
    now_ms: i64,
) -> Result<(), ShardError> {
    fenced(t, txn, |t| {
        if !t.applied(txn) {
            apply_all(g, ops);
            t.mark_applied(txn, now_ms);
        }
    })
}

/// The primary's commit: keeps the call's fate and applies its own part, unless the call
/// was aborted meanwhile (then it must not commit: [`ShardError::Aborted`]).
pub fn commit_primary(
    g: &mut impl Graph,
    t: &mut impl Locks,
    txn: &str,
    me: u32,
    fate: &Fate,
    now_ms: i64,
) -> Result<(), ShardError> {
    if t.fate(txn) == Some(Fate::Aborted) {
        t.unlock(txn);
        return Err(ShardError::Aborted);
    }
    let Fate::Committed { changes, locked } = fate else {
        return Err(ShardError::Unavailable("not a commit".into()));
    };
    // Its own part is applied here and now, with the fate: the fate keeps the others'.
    let (mine, others): (Changes, Changes) = changes.iter().cloned().partition(|(s, _)| *s == me);
    let kept = Fate::Committed {
        changes: others,
        locked: locked.clone(),
    };
    t.put_fate(txn, &kept, now_ms);
    let mine = mine.into_iter().next().map(|(_, o)| o).unwrap_or_default();
    apply(g, t, txn, &mine, now_ms)
}

/// The primary's answer about a call whose lock outlived its lease: its changes if it
/// committed; otherwise it is aborted from now on.
pub fn recover(t: &mut impl Locks, txn: &str, now_ms: i64) -> Fate {
    match t.fate(txn) {
        Some(f) => f,
        None => {
            t.put_fate(txn, &Fate::Aborted, now_ms);
            Fate::Aborted
        }
    }
}

/// Why a call over shards did not complete. Each is retryable: the caller answers
/// `503 in_flight` and the sender retries; nothing was changed, or the change will be
/// completed by the next call that meets its locks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardError {
    /// Another call holds a lock this one needs.
    Busy,
    /// This call was aborted by another after its lease ran out.
    Aborted,
    /// The rules kept reading new parts of the graph.
    TooManyRounds,
    /// A shard could not be reached or answered wrongly.
    Unavailable(String),
}

/// The calls a driver makes to shards: one Durable Object fetch each in the worker.
#[allow(async_fn_in_trait)]
pub trait Shards {
    async fn read(&self, shard: u32, req: &ReadRequest) -> Result<ReadAnswer, ShardError>;
    async fn apply(&self, shard: u32, txn: &str, ops: &[Op]) -> Result<(), ShardError>;
    async fn apply_alone(&self, shard: u32, txn: &str, ops: &[Op]) -> Result<(), ShardError>;
    async fn commit_primary(&self, shard: u32, txn: &str, fate: &Fate) -> Result<(), ShardError>;
    async fn recover(&self, shard: u32, txn: &str) -> Result<Fate, ShardError>;
    async fn release(&self, shard: u32, txn: &str) -> Result<(), ShardError>;
    async fn forget(&self, shard: u32, txn: &str) -> Result<(), ShardError>;
    /// Waits before attempt `attempt` of a call that met a lock ([`backoff_ms`]).
    async fn pause(&self, attempt: u32);
    /// Whether the primary finishes a commit itself ([`finish`], from the object: its
    /// calls to the other shards are then its own subrequests, not the request's).
    fn primary_finishes(&self) -> bool {
        false
    }
    /// The calls this client has made so far, for a call's budget ([`Call::budget`]).
    fn made(&self) -> u32 {
        0
    }
}

/// One call over the shards: its id (names its locks), the shard count, whether it
/// changes anything (a view reads without locks and commits nothing), and its primary.
#[derive(Debug, Clone)]
pub struct Call {
    pub txn: String,
    /// When the call began: of two calls that meet, the older waits ([`Lock::since_ms`]).
    pub since_ms: i64,
    pub n: u32,
    pub lock: bool,
    /// The shard that keeps the call's fate: the shard its new profiles are made on
    /// (its visitor's), so that a new profile is written with the fate, atomically,
    /// before any link to it. `None`: the first shard read.
    pub primary: Option<u32>,
    /// The most shard calls the call may make ([`Shards::made`]; 0: no bound): its
    /// driver is one invocation, which may make 50 subrequests on the free plan. A
    /// call that meets locks then gives up (`Busy`, a retryable 503) when another wait
    /// or attempt might not fit, instead of going over.
    pub budget: u32,
}

/// The subrequests one Workers invocation may make on the free plan (1,000 on paid
/// plans): the budget of a call driven by one invocation.
pub const FREE_PLAN_SUBREQUESTS: u32 = 50;

impl Call {
    /// Whether `more` calls, and then a commit over every shard, still fit the budget.
    fn affords<S: Shards>(&self, shards: &S, more: u32) -> bool {
        // A commit: the primary's call, the other shards' parts, the fate forgotten.
        let commit = self.n + 1;
        self.budget == 0 || shards.made() + more + commit <= self.budget
    }
}

/// Attempts of a call that meets a younger call's lock, or a live lock as the younger:
/// the older waits ([`backoff_ms`]) and reads again, keeping its locks; the younger lets
/// go of its own, waits and starts over (still as old as it was, so it becomes the older
/// in time): as one object would queue the calls (a sender's concurrent batches for one
/// visitor). About 0.3 s of waiting each, far below a lease.
pub const MAX_ATTEMPTS: u32 = 6;

/// The wait before attempt `attempt` (from 1): 10 ms doubling, times 0.5 to 1.5 by
/// `jitter` (0 to 1), so that two calls that met do not meet again.
pub fn backoff_ms(attempt: u32, jitter: f64) -> u64 {
    let base = 10u64 << attempt.saturating_sub(1).min(8);
    (base as f64 * (0.5 + jitter.clamp(0.0, 1.0))) as u64
}

/// Runs `rules` over the shards as one call: reads what they need, round by round
/// (starting with `first`), until they run with nothing missing, then commits their
/// changes. Returns what the last run returned. A call that meets a live lock, or was
/// aborted as stale before it committed, is attempted again ([`MAX_ATTEMPTS`]).
pub async fn transact<S: Shards, T>(
    shards: &S,
    call: &Call,
    first: Reads,
    snap: &mut Snapshot,
    mut rules: impl FnMut(&mut Snapshot) -> T,
) -> Result<T, ShardError> {
    // The driver below is one function per kind of shards, whatever the rules return:
    // generic over it, it was compiled once per operation (the collector's wasm was
    // 1,950,544 bytes with seven copies).
    let mut out = None;
    drive(shards, call, first, snap, &mut |g| out = Some(rules(g))).await?;
    out.ok_or(ShardError::TooManyRounds)
}

async fn drive<S: Shards>(
    shards: &S,
    call: &Call,
    first: Reads,
    snap: &mut Snapshot,
    rules: &mut dyn FnMut(&mut Snapshot),
) -> Result<(), ShardError> {
    let (mut attempt, before) = (0, shards.made());
    // What an attempt costs, as the first one did: another is made only if it fits.
    let mut cost = 0;
    loop {
        let this = Call {
            txn: format!("{}.{attempt}", call.txn),
            ..call.clone()
        };
        let outcome = attempt_once(shards, &this, first.clone(), snap, rules).await;
        if attempt == 0 {
            cost = shards.made().saturating_sub(before);
        }
        match outcome {
            Err(ShardError::Busy | ShardError::Aborted)
                if attempt + 1 < MAX_ATTEMPTS && call.affords(shards, cost) =>
            {
                attempt += 1;
                snap.forget_reads();
                shards.pause(attempt).await;
            }
            done => return done,
        }
    }
}

async fn attempt_once<S: Shards>(
    shards: &S,
    call: &Call,
    first: Reads,
    snap: &mut Snapshot,
    rules: &mut dyn FnMut(&mut Snapshot),
) -> Result<(), ShardError> {
    let n = call.n.max(1);
    let mut c = Driving {
        call,
        n,
        primary: call.primary,
        locked: Vec::new(),
    };
    let mut wanted = split_reads(&first, n);
    for _ in 0..MAX_ROUNDS {
        if let Err(e) = c.fetch(shards, wanted, snap).await {
            c.release_all(shards).await;
            return Err(e);
        }
        snap.begin();
        rules(snap);
        wanted = snap.missing();
        if !wanted.is_empty() {
            continue;
        }
        if !call.lock {
            return Ok(());
        }
        return c.commit(shards, snap).await;
    }
    c.release_all(shards).await;
    Err(ShardError::TooManyRounds)
}

/// A call in progress: its primary once chosen, and the shards it holds locks on.
struct Driving<'c> {
    call: &'c Call,
    n: u32,
    primary: Option<u32>,
    locked: Vec<u32>,
}

impl Driving<'_> {
    fn request(&mut self, shard: u32, reads: Reads) -> ReadRequest {
        let primary = *self.primary.get_or_insert(shard);
        if self.call.lock && !self.locked.contains(&shard) {
            self.locked.push(shard);
        }
        ReadRequest {
            txn: self.call.txn.clone(),
            since_ms: self.call.since_ms,
            primary,
            lock: self.call.lock,
            shard,
            n: self.n,
            reads,
        }
    }

    /// One round of reads, of every shard at once (a round costs one shard's wait, not
    /// the sum of them).
    async fn fetch<S: Shards>(
        &mut self,
        shards: &S,
        wanted: Vec<(u32, Reads)>,
        snap: &mut Snapshot,
    ) -> Result<(), ShardError> {
        let requests: Vec<(u32, ReadRequest)> = wanted
            .into_iter()
            .filter(|(_, reads)| !reads.is_empty())
            .map(|(shard, reads)| (shard, self.request(shard, reads)))
            .collect();
        let call = self.call;
        let reads = requests.iter().map(|(shard, req)| -> Part<'_> {
            Box::pin(async move { read_one(shards, call, *shard, req).await.map(Some) })
        });
        for found in at_once(reads).await {
            snap.learn(found?.unwrap_or_default());
        }
        Ok(())
    }

    /// Commits the run's changes: in one call when they and the locks are all on the
    /// primary; otherwise through the primary's fate, then [`finish`].
    async fn commit<S: Shards>(&mut self, shards: &S, snap: &Snapshot) -> Result<(), ShardError> {
        let changes = by_shard(snap.ops(), self.n);
        let primary = match self.primary {
            Some(p) => p,
            None if changes.is_empty() => return Ok(()),
            None => *self.primary.insert(changes[0].0),
        };
        let txn = &self.call.txn;
        let alone = |s: &u32| *s == primary;
        if self.locked.iter().all(alone) && changes.iter().all(|(s, _)| alone(s)) {
            let ops = changes
                .into_iter()
                .next()
                .map(|(_, o)| o)
                .unwrap_or_default();
            if ops.is_empty() && self.locked.is_empty() {
                return Ok(());
            }
            return shards.apply_alone(primary, txn, &ops).await;
        }
        if let Err(e) = self.lock_new(shards, snap, &changes).await {
            self.release_all(shards).await;
            return Err(e);
        }
        let fate = Fate::Committed {
            changes,
            locked: self.locked.clone(),
        };
        if let Err(e) = shards.commit_primary(primary, txn, &fate).await {
            self.release_all(shards).await;
            return Err(e);
        }
        // Committed: from here on, what a failure leaves is finished by whoever meets
        // the call's locks, or by the primary's sweep.
        let Fate::Committed { changes, locked } = &fate else {
            return Ok(());
        };
        if shards.primary_finishes() {
            return Ok(());
        }
        finish(shards, txn, primary, changes, locked).await
    }

    /// Locks the profiles the call made on shards other than its primary before it
    /// commits: a call that meets a link to one of them before its shard applied it
    /// then meets its lock (and finishes the call) instead of finding no profile. (One
    /// made on the primary is written there with the fate, before any link to it.)
    async fn lock_new<S: Shards>(
        &mut self,
        shards: &S,
        snap: &Snapshot,
        changes: &Changes,
    ) -> Result<(), ShardError> {
        for (shard, ops) in changes {
            if Some(*shard) == self.primary {
                continue;
            }
            let profiles: Vec<String> = ops
                .iter()
                .filter_map(|o| match o {
                    Op::SaveProfile { profile }
                        if snap.is_new(&profile.id) && !snap.was_read(&profile.id) =>
                    {
                        Some(profile.id.clone())
                    }
                    _ => None,
                })
                .collect();
            if profiles.is_empty() {
                continue;
            }
            let reads = Reads {
                profiles,
                ..Reads::default()
            };
            let req = self.request(*shard, reads);
            match shards.read(*shard, &req).await? {
                ReadAnswer::Found { .. } => {}
                _ => return Err(ShardError::Busy),
            }
        }
        Ok(())
    }

    async fn release_all<S: Shards>(&self, shards: &S) {
        for s in &self.locked {
            // Best effort: a lock not released runs out with its lease.
            let _ = shards.release(*s, &self.call.txn).await;
        }
    }
}

/// One shard call of several made at once: a read's answer, or nothing.
type Part<'a> = std::pin::Pin<Box<dyn Future<Output = Result<Option<Found>, ShardError>> + 'a>>;

/// Runs shard calls at once, their answers in order. Boxed, so that the reads and the
/// commits share one instance of `join_all` (4 KB less wasm than two).
async fn at_once<'a>(
    parts: impl Iterator<Item = Part<'a>>,
) -> Vec<Result<Option<Found>, ShardError>> {
    futures_util::future::join_all(parts).await
}

/// Reads one shard for `call`. A stale lock met is settled, then the read asked again
/// (a settled call's locks are gone; a few tries, in case others' are met in turn).
async fn read_one<S: Shards>(
    shards: &S,
    call: &Call,
    shard: u32,
    req: &ReadRequest,
) -> Result<Found, ShardError> {
    let (mut settled, mut waited) = (0, 0);
    loop {
        match shards.read(shard, req).await? {
            ReadAnswer::Found { found } => return Ok(found),
            ReadAnswer::Stale { txn, primary } if settled < 3 => {
                settled += 1;
                settle(shards, shard, &txn, primary).await?;
            }
            // Wait-die: the older call waits for the younger, keeping its locks; the
            // younger lets go and starts over. Waits only go from older to younger, so
            // no two calls wait for each other.
            ReadAnswer::Busy { txn, since_ms }
                if (call.since_ms, &call.txn) < (since_ms, &txn)
                    && waited + 1 < MAX_ATTEMPTS
                    && call.affords(shards, 1) =>
            {
                waited += 1;
                shards.pause(waited).await;
            }
            _ => return Err(ShardError::Busy),
        }
    }
}

/// Finishes or undoes a call whose lock outlived its lease.
async fn settle<S: Shards>(shards: &S, at: u32, txn: &str, primary: u32) -> Result<(), ShardError> {
    match shards.recover(primary, txn).await? {
        Fate::Committed { changes, locked } => {
            finish(shards, txn, primary, &changes, &locked).await?;
            // Named in `locked` already; a lock must not outlive a finished call.
            shards.release(at, txn).await
        }
        Fate::Aborted => shards.release(at, txn).await,
    }
}

/// The rest of a committed call: every shard applies its part (once: a shard that did
/// already skips it) and releases its locks, then the primary forgets the call.
pub async fn finish<S: Shards>(
    shards: &S,
    txn: &str,
    primary: u32,
    changes: &Changes,
    locked: &[u32],
) -> Result<(), ShardError> {
    // Every other shard at once: its part applied, or its locks released where it has
    // none. The fate is forgotten only once all of them are done.
    let applies = changes.iter().map(|(s, ops)| (*s, Some(ops)));
    let releases = locked
        .iter()
        .filter(|s| !changes.iter().any(|(c, _)| c == *s))
        .map(|s| (*s, None));
    let parts =
        applies
            .chain(releases)
            .filter(|(s, _)| *s != primary)
            .map(|(s, ops)| -> Part<'_> {
                Box::pin(async move {
                    match ops {
                        Some(ops) => shards.apply(s, txn, ops).await.map(|()| None),
                        None => shards.release(s, txn).await.map(|()| None),
                    }
                })
            });
    for done in at_once(parts).await {
        done?;
    }
    shards.forget(primary, txn).await
}

/// What a shard's alarm runs, so that no change is half made, and no lock held, for
/// much longer than a lease even where no other call meets them: it settles the calls
/// whose locks here outlived their lease (`stale`, [`Locks::stale_before`]) and, as a
/// primary, finishes the committed calls it kept for longer than a lease (`due`,
/// [`Locks::committed_before`]), whose drivers died between the commit and its end.
pub async fn sweep<S: Shards>(
    shards: &S,
    me: u32,
    stale: Vec<(String, u32)>,
    due: Vec<(String, Fate)>,
) -> Result<(), ShardError> {
    for (txn, primary) in stale {
        settle(shards, me, &txn, primary).await?;
    }
    for (txn, fate) in due {
        if let Fate::Committed { changes, locked } = fate {
            finish(shards, &txn, me, &changes, &locked).await?;
        }
    }
    Ok(())
}

/// What resolving `observations` reads first: their kept resolutions and their
/// identifiers (cookie ids included); the profiles those point to come in the next round
/// unless they live on the same shard.
pub fn first_reads(observations: &[Observation]) -> Reads {
    let ids = observations
        .iter()
        .flat_map(|o| o.identifiers.iter().chain(o.cookie.as_ref()).cloned());
    let mut keys: Vec<String> = observations
        .iter()
        .filter(|o| !o.key.is_empty())
        .map(|o| o.key.clone())
        .collect();
    keys.sort_unstable();
    keys.dedup();
    Reads {
        // Each once (`usable` sorts and dedups).
        idents: crate::identity::usable(&ids.collect::<Vec<_>>()),
        keys,
        ..Reads::default()
    }
}

/// Resolves `observations` in order over a snapshot, as [`crate::identity::observe`]
/// does one by one. Each new profile is made on the shard of its event's visitor (the
/// dedup key's route: the anonymousId, where its resolutions and most of its later
/// events' reads are), else of its top identifier.
pub fn observe_each(
    snap: &mut Snapshot,
    observations: &[Observation],
    limits: &Limits,
) -> Vec<Option<Resolution>> {
    let n = snap.n;
    observations
        .iter()
        .map(|o| {
            snap.home = if o.key.is_empty() {
                let ids = [o.identifiers.as_slice(), o.cookie.as_slice()].concat();
                crate::identity::usable(&ids)
                    .first()
                    .map(|i| shard_of_ident(i, n))
            } else {
                Some(shard_of_resolution(&o.key, n))
            };
            crate::identity::observe(snap, o, limits)
        })
        .collect()
}

/// Draws a profile id for each visitor of `observations` whose shard is not the
/// call's primary, onto that shard, and adds it to the call's `first` reads: read
/// (absent) and locked with the visitor's own identifiers, it is the id of a new
/// profile made for that visitor ([`Snapshot::new_profile_id`]). A new profile off
/// the primary must be locked before the commit, and without these ids that took a
/// round of its own (`Driving::lock_new`: one more call to each such shard).
fn reserve(
    snap: &mut Snapshot,
    observations: &[Observation],
    primary: Option<u32>,
    first: &mut Reads,
) {
    let mut visitors: Vec<&str> = observations
        .iter()
        .filter(|o| !o.key.is_empty())
        .map(|o| crate::dedup::visitor_of_key(&o.key))
        .collect();
    visitors.sort_unstable();
    visitors.dedup();
    for v in visitors {
        let home = crate::dedup::shard_of(v, snap.n);
        if Some(home) != primary {
            let id = snap.draw(Some(home));
            first.profiles.push(id.clone());
            snap.reserved.push((home, id));
        }
    }
}

/// How a call resolving `observations` starts: its primary, and its first reads with
/// the profile ids it reserves (`reserve`).
pub fn observe_start(snap: &mut Snapshot, observations: &[Observation]) -> (Option<u32>, Reads) {
    let primary = primary_of(observations, snap.n);
    let mut first = first_reads(observations);
    reserve(snap, observations, primary, &mut first);
    (primary, first)
}

/// The primary of a call resolving `observations`: the shard of its first event's
/// visitor, where [`observe_each`] makes that visitor's new profile.
pub fn primary_of(observations: &[Observation], n: u32) -> Option<u32> {
    let key = observations.iter().find(|o| !o.key.is_empty())?;
    Some(shard_of_resolution(&key.key, n))
}
