//! One identity call's view of the graph: decides nothing. It keeps the profiles a call
//! reads and writes, so a batch of one visitor's events reads and parses the profile
//! document once and writes it once, not once per event. Profiles are written when the
//! call ends ([`Cached::finish`]), in the same synchronous turn, so a Durable Object
//! commits them together with the rest of the call.
//!
//! Over storage that reads and writes in batches ([`Graph::reads_in_batches`], SQL),
//! it also reads what a request's events will need in four batch reads up front
//! ([`Cached::prefetch`]: their resolutions, whether their cookie ids are retired, their
//! identifiers' links and those profiles), and keeps identifier links and resolutions
//! to write them at the end too, in multi-row statements. Everything else is written
//! through as it happens.
//!
//! Measured in the worker (`scripts/bench.sh load`, `Server-Timing: identity-object`):
//! see the README's "Identity at scale".

use crate::identity::{
    usable, Conflict, Graph, Ident, MergeRecord, Observation, Profile, Resolution,
};
use crate::{FastMap as HashMap, FastSet as HashSet};
use std::cell::RefCell;

pub struct Cached<'g, G: Graph> {
    inner: &'g mut G,
    /// Whether links and resolutions are kept here and written at the end (storage that
    /// reads and writes in batches, [`Graph::reads_in_batches`]); otherwise they are
    /// written through, as keeping them costs more than it saves in memory.
    buffered: bool,
    /// Profiles read or written in this call (`None`: known not to exist, or deleted).
    profiles: RefCell<HashMap<String, Option<Profile>>>,
    /// Profiles changed in this call, in the order first changed.
    dirty: Vec<String>,
    /// Identifier links read or written (`None`: not linked).
    links: RefCell<HashMap<Ident, Option<String>>>,
    /// Links changed in this call, in the order first changed (and as a set).
    relinked: Vec<Ident>,
    relinked_set: HashSet<Ident>,
    /// Resolutions read or kept (`None`: none kept for the key).
    resolutions: RefCell<HashMap<String, Option<Resolution>>>,
    /// Resolutions kept in this call: (key, at ms), in order.
    resolved: Vec<(String, i64)>,
    /// Whether identifiers are retired, as read or written.
    retired: RefCell<HashMap<Ident, bool>>,
}

impl<'g, G: Graph> Cached<'g, G> {
    pub fn new(inner: &'g mut G) -> Self {
        Cached {
            buffered: inner.reads_in_batches(),
            inner,
            profiles: RefCell::default(),
            dirty: Vec::new(),
            links: RefCell::default(),
            relinked: Vec::new(),
            relinked_set: HashSet::default(),
            resolutions: RefCell::default(),
            resolved: Vec::new(),
            retired: RefCell::default(),
        }
    }

    /// Reads, in four batch reads, what resolving `observations` starts from (a profile
    /// id missing from the cache later, or an identifier, is read on its own then).
    pub fn prefetch(&mut self, observations: &[Observation]) {
        if !self.buffered {
            return;
        }
        let keys = distinct(
            observations
                .iter()
                .filter(|o| !o.key.is_empty())
                .map(|o| o.key.clone()),
        );
        let cookies = distinct(observations.iter().filter_map(|o| o.cookie.clone()));
        let ids = distinct(
            observations
                .iter()
                .flat_map(|o| usable(&[o.identifiers.as_slice(), o.cookie.as_slice()].concat())),
        );

        let kept = self.inner.resolutions(&keys);
        self.resolutions.get_mut().extend(answered(keys, kept));
        let retired = self
            .inner
            .retired_among(&cookies)
            .into_iter()
            .map(|c| (c, ()));
        let retired = answered(cookies, retired).map(|(c, r)| (c, r.is_some()));
        self.retired.get_mut().extend(retired);
        let linked = self.inner.profiles_of(&ids);
        let pids = distinct(linked.iter().map(|(_, p)| p.clone()));
        self.links.get_mut().extend(answered(ids, linked));
        let found = self
            .inner
            .profiles(&pids)
            .into_iter()
            .map(|p| (p.id.clone(), p));
        self.profiles.get_mut().extend(answered(pids, found));
    }

    /// The resolutions kept in this call, taken to be written.
    fn take_kept(&mut self) -> Vec<(String, Resolution, i64)> {
        let resolutions = self.resolutions.get_mut();
        std::mem::take(&mut self.resolved)
            .into_iter()
            .filter_map(|(k, at)| {
                let r = resolutions.get(&k)?.clone()?;
                Some((k, r, at))
            })
            .collect()
    }

    fn touch(&mut self, id: &str) {
        if !self.dirty.iter().any(|d| d == id) {
            self.dirty.push(id.to_string());
        }
    }

    fn relink(&mut self, id: &Ident, profile: Option<&str>) {
        self.links
            .get_mut()
            .insert(id.clone(), profile.map(str::to_string));
        if !self.buffered {
            return match profile {
                Some(p) => self.inner.link(id, p),
                None => self.inner.unlink(id),
            };
        }
        if self.relinked_set.insert(id.clone()) {
            self.relinked.push(id.clone());
        }
    }

    /// Writes the changed links, resolutions and profiles to the graph underneath.
    pub fn finish(mut self) {
        let kept = self.take_kept();
        let links = self.links.into_inner();
        let changed: Vec<(Ident, Option<String>)> = self
            .relinked
            .into_iter()
            .map(|i| {
                let p = links.get(&i).cloned().flatten();
                (i, p)
            })
            .collect();
        self.inner.link_all(&changed);
        self.inner.save_resolutions(&kept);
        let mut profiles = self.profiles.into_inner();
        let mut saved = Vec::new();
        for id in &self.dirty {
            match profiles.remove(id).flatten() {
                Some(p) => saved.push(p),
                None => self.inner.delete_profile(id),
            }
        }
        self.inner.save_profiles(saved);
    }
}

impl<G: Graph> Graph for Cached<'_, G> {
    fn profile_of(&self, id: &Ident) -> Option<String> {
        if let Some(p) = self.links.borrow().get(id) {
            return p.clone();
        }
        let p = self.inner.profile_of(id);
        self.links.borrow_mut().insert(id.clone(), p.clone());
        p
    }
    fn profile(&self, id: &str) -> Option<Profile> {
        if let Some(p) = self.profiles.borrow().get(id) {
            return p.clone();
        }
        let p = self.inner.profile(id);
        self.profiles.borrow_mut().insert(id.to_string(), p.clone());
        p
    }
    fn take_profile(&mut self, id: &str) -> Option<Profile> {
        // Out of the cache, or of memory storage underneath, until the caller saves it
        // back (its promise): then [`Cached::finish`] writes it. SQL storage reads it.
        match self.profiles.get_mut().remove(id) {
            Some(p) => p,
            None => self.inner.take_profile(id),
        }
    }
    fn save_profile(&mut self, p: Profile) {
        self.touch(&p.id);
        self.profiles.get_mut().insert(p.id.clone(), Some(p));
    }
    fn delete_profile(&mut self, id: &str) {
        self.touch(id);
        self.profiles.get_mut().insert(id.to_string(), None);
    }
    fn link(&mut self, id: &Ident, profile: &str) {
        self.relink(id, Some(profile));
    }
    fn unlink(&mut self, id: &Ident) {
        self.relink(id, None);
    }
    fn save_merge(&mut self, m: &MergeRecord) {
        self.inner.save_merge(m)
    }
    fn merges_into(&self, profile: &str) -> Vec<MergeRecord> {
        self.inner.merges_into(profile)
    }
    fn delete_merges_into(&mut self, profile: &str) {
        self.inner.delete_merges_into(profile)
    }
    fn save_conflict(&mut self, c: &Conflict) {
        self.inner.save_conflict(c)
    }
    fn conflicts(&self, profile: &str) -> Vec<Conflict> {
        self.inner.conflicts(profile)
    }
    fn delete_conflicts(&mut self, profile: &str) {
        self.inner.delete_conflicts(profile)
    }
    fn merges_of(&self, profile: &str) -> Vec<MergeRecord> {
        self.inner.merges_of(profile)
    }
    fn delete_merge(&mut self, id: &str) {
        self.inner.delete_merge(id)
    }
    fn resolution(&self, key: &str) -> Option<Resolution> {
        if !self.buffered {
            return self.inner.resolution(key);
        }
        if let Some(r) = self.resolutions.borrow().get(key) {
            return r.clone();
        }
        let r = self.inner.resolution(key);
        self.resolutions
            .borrow_mut()
            .insert(key.to_string(), r.clone());
        r
    }
    fn save_resolution(&mut self, key: &str, r: &Resolution, at_ms: i64) {
        if !self.buffered {
            return self.inner.save_resolution(key, r, at_ms);
        }
        self.resolutions
            .get_mut()
            .insert(key.to_string(), Some(r.clone()));
        self.resolved.push((key.to_string(), at_ms));
    }
    fn delete_resolutions_of(&mut self, profile: &str) {
        // Not part of resolving events: what this call kept is written first, and
        // nothing read is trusted after.
        let kept = self.take_kept();
        self.inner.save_resolutions(&kept);
        self.resolutions.get_mut().clear();
        self.inner.delete_resolutions_of(profile)
    }
    fn new_profile_id(&mut self) -> String {
        self.inner.new_profile_id()
    }
    fn is_retired(&self, id: &Ident) -> bool {
        if !self.buffered {
            return self.inner.is_retired(id);
        }
        if let Some(r) = self.retired.borrow().get(id) {
            return *r;
        }
        let r = self.inner.is_retired(id);
        self.retired.borrow_mut().insert(id.clone(), r);
        r
    }
    fn retire(&mut self, id: &Ident, at_ms: i64) {
        self.retired.get_mut().insert(id.clone(), true);
        self.inner.retire(id, at_ms)
    }
}

/// Each item once, in order.
fn distinct<T: Ord>(items: impl Iterator<Item = T>) -> Vec<T> {
    let mut v: Vec<T> = items.collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// Each asked key with what a batch read found for it (`None`: nothing), so the cache
/// knows the misses too.
fn answered<K: Eq + std::hash::Hash, V>(
    asked: Vec<K>,
    found: impl IntoIterator<Item = (K, V)>,
) -> impl Iterator<Item = (K, Option<V>)> {
    let mut found: HashMap<K, V> = found.into_iter().collect();
    asked.into_iter().map(move |k| {
        let v = found.remove(&k);
        (k, v)
    })
}
