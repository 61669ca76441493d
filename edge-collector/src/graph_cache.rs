//! One identity call's view of the graph: decides nothing. It keeps the profiles and
//! identifier links a call has read or written, so a batch of one visitor's events
//! reads and parses the profile document once and writes it once, not once per event.
//! Identifier links and everything else are written through as they happen; profiles are
//! written when the call ends ([`Cached::finish`]), in the same synchronous turn, so a
//! Durable Object commits them together with the rest of the call.
//!
//! Measured in the worker (`scripts/bench.sh load`, `Server-Timing: identity-object`):
//! see the README's "Identity at scale".

use crate::identity::{Conflict, Graph, Ident, MergeRecord, Profile, Resolution};
use std::cell::RefCell;
use std::collections::HashMap;

pub struct Cached<'g, G: Graph> {
    inner: &'g mut G,
    /// Profiles read or written in this call (`None`: known not to exist, or deleted).
    profiles: RefCell<HashMap<String, Option<Profile>>>,
    /// Profiles changed in this call, in the order first changed.
    dirty: Vec<String>,
    links: RefCell<HashMap<Ident, Option<String>>>,
}

impl<'g, G: Graph> Cached<'g, G> {
    pub fn new(inner: &'g mut G) -> Self {
        Cached {
            inner,
            profiles: RefCell::default(),
            dirty: Vec::new(),
            links: RefCell::default(),
        }
    }

    fn touch(&mut self, id: &str) {
        if !self.dirty.iter().any(|d| d == id) {
            self.dirty.push(id.to_string());
        }
    }

    /// Writes the changed profiles to the graph underneath.
    pub fn finish(self) {
        let mut profiles = self.profiles.into_inner();
        for id in &self.dirty {
            match profiles.remove(id).flatten() {
                Some(p) => self.inner.save_profile(&p),
                None => self.inner.delete_profile(id),
            }
        }
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
    fn save_profile(&mut self, p: &Profile) {
        self.touch(&p.id);
        self.profiles
            .get_mut()
            .insert(p.id.clone(), Some(p.clone()));
    }
    fn delete_profile(&mut self, id: &str) {
        self.touch(id);
        self.profiles.get_mut().insert(id.to_string(), None);
    }
    fn link(&mut self, id: &Ident, profile: &str) {
        self.links
            .get_mut()
            .insert(id.clone(), Some(profile.to_string()));
        self.inner.link(id, profile);
    }
    fn unlink(&mut self, id: &Ident) {
        self.links.get_mut().insert(id.clone(), None);
        self.inner.unlink(id);
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
        self.inner.resolution(key)
    }
    fn save_resolution(&mut self, key: &str, r: &Resolution, at_ms: i64) {
        self.inner.save_resolution(key, r, at_ms)
    }
    fn delete_resolutions_of(&mut self, profile: &str) {
        self.inner.delete_resolutions_of(profile)
    }
    fn new_profile_id(&mut self) -> String {
        self.inner.new_profile_id()
    }
    fn is_retired(&self, id: &Ident) -> bool {
        self.inner.is_retired(id)
    }
    fn retire(&mut self, id: &Ident, at_ms: i64) {
        self.inner.retire(id, at_ms)
    }
}
