//! Soft identification: decides which profile an event belongs to, when two profiles
//! are the same person and may be merged, when they must not be, and how a merge is
//! undone or a profile erased.
//!
//! The graph links identifiers (userId, email_sha256, phone_sha256, anonymousId, in that
//! priority order) to profiles. Rules, applied to every event in order:
//! - Blocked values (`null`, `anonymous`, `test@test.com`'s hash, ...) never match.
//! - The event joins the profile of its highest-priority known identifier. If that
//!   identifier is new and the profile could not take it (a second userId, or the limit
//!   for its kind reached), a new profile is made for it instead: the lower-priority
//!   identifier is dropped from the match (Segment Unify's rule).
//! - Every other profile the event's identifiers point to is merged into that one,
//!   unless both carry different userIds or the merged profile would exceed a limit:
//!   then a conflict is recorded for review and nothing is merged.
//! - New identifiers are linked while the profile is under its limit for their kind;
//!   past it they are recorded as a conflict and left unlinked.
//! - Every merge is logged with a snapshot of the absorbed profile, so it can be undone;
//!   two profiles split by an unmerge are never merged again automatically (a conflict
//!   is recorded instead), so the next event cannot undo the unmerge.
//! - The collector's cookie id links an event only while it is not retired: `reset()` and
//!   a logout retire it, so a shared browser's next visitor does not join the previous
//!   one's profile.
//! - Resolving is idempotent per event: a retried event gets the resolution it got the
//!   first time (with the same absorbed profiles, so its store can repoint their events),
//!   and counts once.
//! - New profile ids are random (from the graph's storage), not derived from anything a
//!   client sends.
//! - What a profile accumulates is capped: at most [`MAX_TRAITS`] trait keys and
//!   [`MAX_TRAITS_BYTES`] of trait JSON (an existing key may still change within the
//!   bytes; new keys past a cap are left out), and a conflict is recorded once per kind,
//!   pair of profiles and identifier, at most [`MAX_CONFLICTS`] per profile.
//!
//! The graph is behind the small [`Graph`] trait: a Durable Object (SQLite) in the
//! worker, [`MemoryGraph`] in tests. The engine is synchronous because Durable Object
//! SQL storage is.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::HashMap;
use tracking_plan::identifiers::{is_blocked_value, sha256_hex};

/// Identifier kinds, highest priority first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum IdKind {
    #[serde(rename = "user_id")]
    UserId,
    #[serde(rename = "email_sha256")]
    Email,
    #[serde(rename = "phone_sha256")]
    Phone,
    #[serde(rename = "anonymous_id")]
    Anonymous,
}

impl IdKind {
    /// Every kind, highest priority first.
    pub const ALL: [IdKind; 4] = [
        IdKind::UserId,
        IdKind::Email,
        IdKind::Phone,
        IdKind::Anonymous,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            IdKind::UserId => "user_id",
            IdKind::Email => "email_sha256",
            IdKind::Phone => "phone_sha256",
            IdKind::Anonymous => "anonymous_id",
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        Some(match s {
            "user_id" | "userId" => IdKind::UserId,
            "email_sha256" | "email" => IdKind::Email,
            "phone_sha256" | "phone" => IdKind::Phone,
            "anonymous_id" | "anonymousId" => IdKind::Anonymous,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Ident {
    pub kind: IdKind,
    pub value: String,
}

impl Ident {
    pub fn new(kind: IdKind, value: impl Into<String>) -> Self {
        Ident {
            kind,
            value: value.into(),
        }
    }
}

/// How many identifiers of each kind one profile may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Limits {
    pub user_id: usize,
    pub email: usize,
    pub phone: usize,
    pub anonymous_id: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            user_id: 1,
            email: 5,
            phone: 5,
            anonymous_id: 5,
        }
    }
}

impl Limits {
    pub fn of(&self, kind: IdKind) -> usize {
        match kind {
            IdKind::UserId => self.user_id,
            IdKind::Email => self.email,
            IdKind::Phone => self.phone,
            IdKind::Anonymous => self.anonymous_id,
        }
    }
}

/// One person as far as the graph knows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    pub id: String,
    pub identifiers: Vec<Ident>,
    /// Traits from identify calls (raw PII already hashed by the pipeline); later values
    /// win.
    pub traits: Map<String, Value>,
    /// The latest consent snapshot seen for this profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent: Option<Value>,
    pub event_count: u64,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    /// What its segments read of its events, kept as they arrive (`crate::activity`).
    #[serde(default, skip_serializing_if = "crate::activity::Activity::is_empty")]
    pub activity: crate::activity::Activity,
}

impl Profile {
    fn count(&self, kind: IdKind) -> usize {
        self.identifiers.iter().filter(|i| i.kind == kind).count()
    }

    fn values(&self, kind: IdKind) -> impl Iterator<Item = &str> {
        self.identifiers
            .iter()
            .filter(move |i| i.kind == kind)
            .map(|i| i.value.as_str())
    }

    /// Carries a userId or a hashed email or phone.
    pub fn identified(&self) -> bool {
        self.identifiers.iter().any(|i| i.kind != IdKind::Anonymous)
    }

    fn can_take(&self, id: &Ident, limits: &Limits) -> bool {
        self.identifiers.contains(id) || self.count(id.kind) < limits.of(id.kind)
    }
}

/// A merge, with what is needed to undo it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MergeRecord {
    pub id: String,
    pub at_ms: i64,
    pub into: String,
    /// The absorbed profile as it was just before the merge.
    pub absorbed: Profile,
    /// The identifier of the event that joined the two.
    pub via: Ident,
    /// Trait keys the surviving profile took from the absorbed one.
    #[serde(default)]
    pub traits_taken: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undone_at_ms: Option<i64>,
}

/// A merge or link the guardrails refused, for review.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Conflict {
    pub at_ms: i64,
    /// `different_user_ids`, `limit_reached` or `merge_over_limit`.
    pub kind: String,
    pub profile: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub other_profile: Option<String>,
    pub identifier: Ident,
}

/// What an event brings to the graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Observation {
    /// The event's dedup key: a retry with the same key gets the same resolution.
    #[serde(default)]
    pub key: String,
    pub identifiers: Vec<Ident>,
    /// The anonymous id in the collector's cookie, used unless retired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<Ident>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traits: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent: Option<Value>,
    pub at_ms: i64,
    /// What the event leaves on its profile's activity (sources with segments or
    /// destinations only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activity: Option<crate::activity::Observed>,
}

/// The profile an event was resolved to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resolution {
    pub profile_id: String,
    pub identified: bool,
    /// Profiles merged into this one by this event: their stored events now belong here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub absorbed: Vec<String>,
}

/// Storage of the graph. Implementations only store; every decision is in this module.
pub trait Graph {
    fn profile_of(&self, id: &Ident) -> Option<String>;
    fn profile(&self, id: &str) -> Option<Profile>;
    /// Reads a profile to change it: the caller saves it ([`Graph::save_profile`]) or
    /// deletes it before it reads the profile again. Storage that keeps profiles in
    /// memory hands it over instead of copying it.
    fn take_profile(&mut self, id: &str) -> Option<Profile> {
        self.profile(id)
    }
    fn save_profile(&mut self, p: Profile);
    fn delete_profile(&mut self, id: &str);
    fn link(&mut self, id: &Ident, profile: &str);
    fn unlink(&mut self, id: &Ident);
    fn save_merge(&mut self, m: &MergeRecord);
    /// Merges into `profile`, newest first.
    fn merges_into(&self, profile: &str) -> Vec<MergeRecord>;
    fn delete_merges_into(&mut self, profile: &str);
    fn save_conflict(&mut self, c: &Conflict);
    /// Conflicts about `profile`, newest first.
    fn conflicts(&self, profile: &str) -> Vec<Conflict>;
    fn delete_conflicts(&mut self, profile: &str);
    /// Merges in which `profile` was the absorbed one.
    fn merges_of(&self, profile: &str) -> Vec<MergeRecord>;
    fn delete_merge(&mut self, id: &str);
    /// The resolution an event (by its dedup key) got.
    fn resolution(&self, key: &str) -> Option<Resolution>;
    fn save_resolution(&mut self, key: &str, r: &Resolution, at_ms: i64);
    fn delete_resolutions_of(&mut self, profile: &str);
    /// A fresh random profile id (`p_` and 24 hex digits).
    fn new_profile_id(&mut self) -> String;
    fn is_retired(&self, id: &Ident) -> bool;
    fn retire(&mut self, id: &Ident, at_ms: i64);

    // Many reads or writes at once, for a call that resolves a request's events
    // ([`observe_all`]): storage may do each in a few statements. The defaults go one by
    // one.

    /// Whether [`observe_all`] should read what a call needs up front and write at the
    /// end, in batches: for storage where each read or write is a statement. In memory
    /// that is only overhead (6% more of the pipeline benchmark's instructions,
    /// callgrind).
    fn reads_in_batches(&self) -> bool {
        false
    }

    /// The identifiers among `ids` that are linked, with their profiles.
    fn profiles_of(&self, ids: &[Ident]) -> Vec<(Ident, String)> {
        let linked = |i: &Ident| self.profile_of(i).map(|p| (i.clone(), p));
        ids.iter().filter_map(linked).collect()
    }
    /// The profiles among `ids` that exist.
    fn profiles(&self, ids: &[String]) -> Vec<Profile> {
        ids.iter().filter_map(|i| self.profile(i)).collect()
    }
    /// The resolutions kept for `keys`, by key.
    fn resolutions(&self, keys: &[String]) -> Vec<(String, Resolution)> {
        let kept = |k: &String| self.resolution(k).map(|r| (k.clone(), r));
        keys.iter().filter_map(kept).collect()
    }
    /// The identifiers among `ids` that are retired.
    fn retired_among(&self, ids: &[Ident]) -> Vec<Ident> {
        ids.iter().filter(|i| self.is_retired(i)).cloned().collect()
    }
    /// Links (`Some`) and unlinks (`None`) identifiers.
    fn link_all(&mut self, links: &[(Ident, Option<String>)]) {
        for (id, profile) in links {
            match profile {
                Some(p) => self.link(id, p),
                None => self.unlink(id),
            }
        }
    }
    fn save_profiles(&mut self, profiles: Vec<Profile>) {
        for p in profiles {
            self.save_profile(p);
        }
    }
    /// Keeps resolutions: (event key, resolution, at ms).
    fn save_resolutions(&mut self, resolutions: &[(String, Resolution, i64)]) {
        for (k, r, at) in resolutions {
            self.save_resolution(k, r, *at);
        }
    }
}

/// Usable identifiers of an observation: not blocked, not empty, each once, highest
/// priority first.
pub fn usable(ids: &[Ident]) -> Vec<Ident> {
    usable_of(ids.to_vec())
}

fn usable_of(mut ids: Vec<Ident>) -> Vec<Ident> {
    ids.retain(|i| !i.value.trim().is_empty() && !is_blocked_value(&i.value));
    ids.sort();
    ids.dedup();
    ids
}

fn merge_id(into: &str, absorbed: &str, at_ms: i64) -> String {
    format!(
        "m_{}",
        &sha256_hex(&format!("{into}:{absorbed}:{at_ms}"))[..20]
    )
}

/// Trait keys one profile keeps at most.
pub const MAX_TRAITS: usize = 200;
/// Serialized trait bytes one profile keeps at most.
pub const MAX_TRAITS_BYTES: usize = 16 * 1024;
/// Conflicts recorded per profile at most (the oldest stay: they are the ones to review).
pub const MAX_CONFLICTS: usize = 100;

/// Records a conflict unless the same one (kind, profiles, identifier) is already there,
/// or the profile has its share.
fn record_conflict(g: &mut impl Graph, c: Conflict) {
    let known = g.conflicts(&c.profile);
    let same = |k: &Conflict| {
        k.kind == c.kind && k.other_profile == c.other_profile && k.identifier == c.identifier
    };
    if known.len() < MAX_CONFLICTS && !known.iter().any(same) {
        g.save_conflict(&c);
    }
}

fn value_bytes(v: &Value) -> usize {
    serde_json::to_string(v).map_or(usize::MAX, |s| s.len())
}

/// Lays traits over a profile's, within the caps (`only_new`: keys it already has stay
/// as they are, as when a merged profile's traits fill in). Returns the keys added.
fn merge_traits(
    into: &mut Map<String, Value>,
    traits: &Map<String, Value>,
    only_new: bool,
) -> Vec<String> {
    let entry = |k: &str, v: &Value| k.len() + 4 + value_bytes(v);
    let mut bytes: usize = into.iter().map(|(k, v)| entry(k, v)).sum();
    let mut added = Vec::new();
    for (k, v) in traits {
        let old = into.get(k).map(|o| entry(k, o));
        if only_new && old.is_some() {
            continue;
        }
        let after = (bytes - old.unwrap_or(0)).saturating_add(entry(k, v));
        if after <= MAX_TRAITS_BYTES && (old.is_some() || into.len() < MAX_TRAITS) {
            if old.is_none() {
                added.push(k.clone());
            }
            into.insert(k.clone(), v.clone());
            bytes = after;
        }
    }
    added
}

/// Resolves one event to a profile, linking and merging under the guardrails.
/// `None` when the event has no usable identifier (every one blocked).
pub fn observe(g: &mut impl Graph, obs: &Observation, limits: &Limits) -> Option<Resolution> {
    if !obs.key.is_empty() {
        if let Some(r) = g.resolution(&obs.key) {
            return Some(r);
        }
    }
    let mut ids = obs.identifiers.clone();
    if let Some(c) = obs.cookie.as_ref().filter(|c| !g.is_retired(c)) {
        ids.push(c.clone());
    }
    let ids = usable_of(ids);
    let top = ids.first()?.clone();
    let matched: Vec<(Ident, String)> = ids
        .iter()
        .filter_map(|i| g.profile_of(i).map(|p| (i.clone(), p)))
        .collect();
    // Links are only made below, so this holds until then.
    let top_linked = matched.first().is_some_and(|(i, _)| *i == top);

    // The profile of the highest-priority known identifier, unless the top identifier is
    // new and that profile cannot take it: then it goes back as it was (saved unchanged).
    let winner = match matched.first() {
        Some((_, pid)) => g.take_profile(pid),
        None => None,
    };
    let winner = match winner {
        Some(w) if !top_linked && !w.can_take(&top, limits) => {
            g.save_profile(w);
            None
        }
        w => w,
    };
    let mut winner = winner.unwrap_or_else(|| {
        let mut id = g.new_profile_id();
        while g.profile(&id).is_some() {
            id = g.new_profile_id();
        }
        let mut p = Profile {
            id,
            first_seen_ms: obs.at_ms,
            last_seen_ms: obs.at_ms,
            ..Profile::default()
        };
        // A new profile has no stored events: its activity is current from the start.
        if let Some(a) = &obs.activity {
            p.activity.spec = a.spec.clone();
        }
        p
    });
    // The top identifier joins first, so the merge guardrails below see it.
    if !top_linked && !winner.identifiers.contains(&top) {
        winner.identifiers.push(top.clone());
        g.link(&top, &winner.id);
    }

    // Merge every other profile the event points to, under the guardrails.
    let mut others: Vec<(Ident, String)> = Vec::new();
    for (i, pid) in &matched {
        if *pid != winner.id && !others.iter().any(|(_, p)| p == pid) {
            others.push((i.clone(), pid.clone()));
        }
    }
    let mut absorbed = Vec::new();
    for (via, pid) in others {
        let Some(other) = g.profile(&pid) else {
            continue;
        };
        let refusal = merge_refusal(&winner, &other, limits)
            .or_else(|| was_unmerged(g, &winner.id, &other.id).then_some("previously_unmerged"));
        if let Some(kind) = refusal {
            record_conflict(
                g,
                Conflict {
                    at_ms: obs.at_ms,
                    kind: kind.into(),
                    profile: winner.id.clone(),
                    other_profile: Some(other.id.clone()),
                    identifier: via,
                },
            );
            continue;
        }
        absorbed.push(other.id.clone());
        absorb(g, &mut winner, other, via, obs.at_ms);
    }

    // Link the event's new identifiers while the profile has room for them.
    for id in &ids {
        if winner.identifiers.contains(id) {
            continue;
        }
        // Linked elsewhere: a refused merge, already recorded. (The links the merges
        // above made are to the winner, of identifiers it now holds.)
        if matched.iter().any(|(i, p)| i == id && *p != winner.id) {
            continue;
        }
        if winner.can_take(id, limits) {
            winner.identifiers.push(id.clone());
            g.link(id, &winner.id);
        } else {
            record_conflict(
                g,
                Conflict {
                    at_ms: obs.at_ms,
                    kind: "limit_reached".into(),
                    profile: winner.id.clone(),
                    other_profile: None,
                    identifier: id.clone(),
                },
            );
        }
    }

    if let Some(traits) = &obs.traits {
        merge_traits(&mut winner.traits, traits, false);
    }
    if obs.consent.is_some() && winner.consent != obs.consent {
        winner.consent = obs.consent.clone();
    }
    if let Some(a) = &obs.activity {
        winner.activity.note_consent(&a.consent, obs.at_ms);
        if let Some(f) = &a.fact {
            winner.activity.record(f.clone(), a.keep_since_ms);
        }
    }
    winner.identifiers.sort();
    winner.event_count += 1;
    winner.first_seen_ms = winner.first_seen_ms.min(obs.at_ms);
    winner.last_seen_ms = winner.last_seen_ms.max(obs.at_ms);
    let r = Resolution {
        profile_id: winner.id.clone(),
        identified: winner.identified(),
        absorbed,
    };
    g.save_profile(winner);
    if !obs.key.is_empty() {
        g.save_resolution(&obs.key, &r, obs.at_ms);
    }
    Some(r)
}

/// Resolves a request's events in order ([`observe`] each), reading and writing each
/// profile document once for the whole call.
pub fn observe_all(
    g: &mut impl Graph,
    observations: &[Observation],
    limits: &Limits,
) -> Vec<Option<Resolution>> {
    let mut cached = crate::graph_cache::Cached::new(g);
    cached.prefetch(observations);
    let out = observations
        .iter()
        .map(|o| observe(&mut cached, o, limits))
        .collect();
    cached.finish();
    out
}

/// The profiles activation asks back after [`observe_all`]: those of the events whose
/// activity is wanted, and those that absorbed another, each once, as they are now.
pub fn wanted_profiles(
    g: &impl Graph,
    observations: &[Observation],
    resolved: &[Option<Resolution>],
) -> Vec<Profile> {
    let mut ids: Vec<&str> = Vec::new();
    for (o, r) in observations.iter().zip(resolved) {
        let (Some(a), Some(r)) = (&o.activity, r) else {
            continue;
        };
        if a.wanted || !r.absorbed.is_empty() {
            ids.push(&r.profile_id);
        }
    }
    ids.sort_unstable();
    ids.dedup();
    ids.into_iter().filter_map(|id| g.profile(id)).collect()
}

/// What one identity call answers: each event's resolution, and the profiles activation
/// reads ([`wanted_profiles`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Observed {
    pub resolutions: Vec<Option<Resolution>>,
    #[serde(default)]
    pub profiles: Vec<Profile>,
}

/// Rebuilds stale profiles' activity from facts read back from the store, then answers
/// the profiles asked for (missing ones are left out).
pub fn activity(g: &mut impl Graph, req: &ActivityRequest) -> Vec<Profile> {
    for (id, facts) in &req.rebuilt {
        let elsewhere: std::collections::HashSet<&str> = req
            .rebuilt
            .iter()
            .filter(|(other, _)| other != id)
            .flat_map(|(_, fs)| fs.iter().map(|f| f.id.as_str()))
            .collect();
        if let Some(mut p) = g.profile(id) {
            p.activity
                .rebuild(facts.clone(), &elsewhere, &req.spec, req.keep_since_ms);
            g.save_profile(p);
        }
    }
    req.profiles.iter().filter_map(|id| g.profile(id)).collect()
}

/// Profiles to read, and stale ones' facts rebuilt from the store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ActivityRequest {
    pub profiles: Vec<String>,
    #[serde(default)]
    pub spec: String,
    #[serde(default)]
    pub keep_since_ms: i64,
    #[serde(default)]
    pub rebuilt: Vec<(String, Vec<crate::segments::Fact>)>,
}

/// Whether an unmerge split these two profiles.
fn was_unmerged(g: &impl Graph, a: &str, b: &str) -> bool {
    let split = |into: &str, other: &str| {
        g.merges_into(into)
            .iter()
            .any(|m| m.absorbed.id == other && m.undone_at_ms.is_some())
    };
    split(a, b) || split(b, a)
}

/// Why two profiles must not be merged, if they must not.
fn merge_refusal(a: &Profile, b: &Profile, limits: &Limits) -> Option<&'static str> {
    let a_users: Vec<&str> = a.values(IdKind::UserId).collect();
    if b.values(IdKind::UserId)
        .any(|u| !a_users.is_empty() && !a_users.contains(&u))
    {
        return Some("different_user_ids");
    }
    for kind in IdKind::ALL {
        let mut all: Vec<&str> = a.values(kind).chain(b.values(kind)).collect();
        all.sort_unstable();
        all.dedup();
        if all.len() > limits.of(kind) {
            return Some("merge_over_limit");
        }
    }
    None
}

fn absorb(g: &mut impl Graph, into: &mut Profile, other: Profile, via: Ident, at_ms: i64) {
    for id in &other.identifiers {
        if !into.identifiers.contains(id) {
            into.identifiers.push(id.clone());
        }
        g.link(id, &into.id);
    }
    let traits_taken = merge_traits(&mut into.traits, &other.traits, true);
    into.activity.absorb(&other.activity);
    into.event_count += other.event_count;
    into.first_seen_ms = into.first_seen_ms.min(other.first_seen_ms);
    into.last_seen_ms = into.last_seen_ms.max(other.last_seen_ms);
    g.delete_profile(&other.id);
    g.save_merge(&MergeRecord {
        id: merge_id(&into.id, &other.id, at_ms),
        at_ms,
        into: into.id.clone(),
        absorbed: other,
        via,
        traits_taken,
        undone_at_ms: None,
    });
}

/// The result of undoing a merge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Unmerged {
    pub merge_id: String,
    /// The profile that comes back, under its old id.
    pub restored: Profile,
    /// Identifiers moved back from the surviving profile to the restored one.
    pub moved: Vec<Ident>,
}

/// Undoes a merge into `profile`: the latest one still in effect, or `merge_id`. The
/// absorbed profile comes back with its identifiers (those still on `profile`), traits
/// and counts as they were at the merge.
pub fn unmerge(
    g: &mut impl Graph,
    profile: &str,
    merge_id: Option<&str>,
    at_ms: i64,
) -> Result<Unmerged, String> {
    let mut winner = g
        .profile(profile)
        .ok_or_else(|| format!("no profile {profile}"))?;
    let mut record = g
        .merges_into(profile)
        .into_iter()
        .find(|m| m.undone_at_ms.is_none() && merge_id.is_none_or(|id| m.id == id))
        .ok_or_else(|| format!("no merge to undo on profile {profile}"))?;
    let mut restored = record.absorbed.clone();
    let mut moved = Vec::new();
    restored.identifiers.retain(|id| {
        let here = g.profile_of(id).as_deref() == Some(profile);
        if here {
            moved.push(id.clone());
        }
        here
    });
    for id in &moved {
        g.link(id, &restored.id);
    }
    winner.identifiers.retain(|id| !moved.contains(id));
    winner.activity.release(&mut restored.activity);
    winner.event_count = winner.event_count.saturating_sub(restored.event_count);
    // Traits that came with the merge leave with it, unless they changed since.
    for k in &record.traits_taken {
        if winner.traits.get(k) == restored.traits.get(k) {
            winner.traits.remove(k);
        }
    }
    winner.identifiers.sort();
    g.save_profile(winner);
    g.save_profile(restored.clone());
    record.undone_at_ms = Some(at_ms);
    g.save_merge(&record);
    Ok(Unmerged {
        merge_id: record.id,
        restored,
        moved,
    })
}

/// Everything that belongs to a profile now, so the caller can delete the rest of its
/// data: never what belongs to a profile that was unmerged from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Erased {
    /// The profile and every profile merged into it (merges still in effect).
    pub profile_ids: Vec<String>,
    /// Every identifier linked to the profile now.
    pub identifiers: Vec<Ident>,
}

impl Erased {
    /// Adds what `other` covers (the same person in another graph: the graph of an
    /// earlier shard count), each profile and identifier once.
    pub fn absorb(&mut self, other: Erased) {
        for p in other.profile_ids {
            if !self.profile_ids.contains(&p) {
                self.profile_ids.push(p);
            }
        }
        for i in other.identifiers {
            if !self.identifiers.contains(&i) {
                self.identifiers.push(i);
            }
        }
    }
}

/// What erasing `profile` covers, without changing anything (so a job can be recorded
/// before the data goes, and resumed).
pub fn erasure_plan(g: &impl Graph, profile: &str) -> Option<Erased> {
    let p = g.profile(profile)?;
    let mut out = Erased {
        profile_ids: vec![p.id.clone()],
        identifiers: p.identifiers.clone(),
    };
    for m in g.merges_into(profile) {
        if m.undone_at_ms.is_none() && !out.profile_ids.contains(&m.absorbed.id) {
            out.profile_ids.push(m.absorbed.id.clone());
        }
    }
    Some(out)
}

/// Erases what [`erasure_plan`] found: the identifiers still linked to the profile, its
/// merge records (both directions), its conflicts, its cached resolutions and the
/// profile. Idempotent: erasing again finds nothing left and changes nothing.
pub fn erase(g: &mut impl Graph, plan: &Erased) {
    for id in &plan.identifiers {
        if g.profile_of(id)
            .is_some_and(|p| plan.profile_ids.contains(&p))
        {
            g.unlink(id);
        }
    }
    for pid in &plan.profile_ids {
        for m in g.merges_of(pid) {
            g.delete_merge(&m.id);
        }
        g.delete_merges_into(pid);
        g.delete_conflicts(pid);
        g.delete_resolutions_of(pid);
        g.delete_profile(pid);
    }
}

/// An in-memory graph for tests.
#[derive(Debug, Default, Clone)]
pub struct MemoryGraph {
    pub index: crate::FastMap<Ident, String>,
    pub profiles: crate::FastMap<String, Profile>,
    pub merges: Vec<MergeRecord>,
    pub conflicts: Vec<Conflict>,
    pub resolutions: crate::FastMap<String, Resolution>,
    pub retired: Vec<Ident>,
    /// Have [`observe_all`] read in batches, as it does from SQL storage (for tests).
    pub batch_reads: bool,
}

impl Graph for MemoryGraph {
    fn reads_in_batches(&self) -> bool {
        self.batch_reads
    }
    fn profile_of(&self, id: &Ident) -> Option<String> {
        self.index.get(id).cloned()
    }
    fn profile(&self, id: &str) -> Option<Profile> {
        self.profiles.get(id).cloned()
    }
    fn take_profile(&mut self, id: &str) -> Option<Profile> {
        self.profiles.remove(id)
    }
    fn save_profile(&mut self, p: Profile) {
        self.profiles.insert(p.id.clone(), p);
    }
    fn delete_profile(&mut self, id: &str) {
        self.profiles.remove(id);
    }
    fn link(&mut self, id: &Ident, profile: &str) {
        self.index.insert(id.clone(), profile.to_string());
    }
    fn unlink(&mut self, id: &Ident) {
        self.index.remove(id);
    }
    fn save_merge(&mut self, m: &MergeRecord) {
        match self.merges.iter_mut().find(|x| x.id == m.id) {
            Some(x) => *x = m.clone(),
            None => self.merges.push(m.clone()),
        }
    }
    fn merges_into(&self, profile: &str) -> Vec<MergeRecord> {
        self.merges
            .iter()
            .rev()
            .filter(|m| m.into == profile)
            .cloned()
            .collect()
    }
    fn delete_merges_into(&mut self, profile: &str) {
        self.merges.retain(|m| m.into != profile);
    }
    fn save_conflict(&mut self, c: &Conflict) {
        self.conflicts.push(c.clone());
    }
    fn conflicts(&self, profile: &str) -> Vec<Conflict> {
        self.conflicts
            .iter()
            .rev()
            .filter(|c| c.profile == profile || c.other_profile.as_deref() == Some(profile))
            .cloned()
            .collect()
    }
    fn delete_conflicts(&mut self, profile: &str) {
        self.conflicts
            .retain(|c| c.profile != profile && c.other_profile.as_deref() != Some(profile));
    }
    fn merges_of(&self, profile: &str) -> Vec<MergeRecord> {
        self.merges
            .iter()
            .filter(|m| m.absorbed.id == profile)
            .cloned()
            .collect()
    }
    fn delete_merge(&mut self, id: &str) {
        self.merges.retain(|m| m.id != id);
    }
    fn resolution(&self, key: &str) -> Option<Resolution> {
        self.resolutions.get(key).cloned()
    }
    fn save_resolution(&mut self, key: &str, r: &Resolution, _at_ms: i64) {
        self.resolutions.insert(key.to_string(), r.clone());
    }
    fn delete_resolutions_of(&mut self, profile: &str) {
        self.resolutions
            .retain(|_, r| r.profile_id != profile && !r.absorbed.iter().any(|a| a == profile));
    }
    fn new_profile_id(&mut self) -> String {
        random_profile_id()
    }
    fn is_retired(&self, id: &Ident) -> bool {
        self.retired.contains(id)
    }
    fn retire(&mut self, id: &Ident, _at_ms: i64) {
        if !self.retired.contains(id) {
            self.retired.push(id.clone());
        }
    }
}

/// A random profile id (native only: the worker's graph asks the runtime's CSPRNG): a
/// SplitMix64 sequence per thread, seeded once from the process's random hasher keys
/// (a new `RandomState` per id was 0.7% of the pipeline benchmark's instructions).
pub fn random_profile_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    thread_local! {
        static STATE: std::cell::Cell<u64> = std::cell::Cell::new({
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(0);
            h.finish()
        });
    }
    let mut out = String::with_capacity(26);
    out.push_str("p_");
    for _ in 0..2 {
        let mut z = STATE.with(|s| {
            let next = s.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
            s.set(next);
            next
        });
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        let bits = z ^ (z >> 31);
        for shift in (0..48).step_by(4).rev() {
            out.push(char::from(
                b"0123456789abcdef"[((bits >> shift) & 0xf) as usize],
            ));
        }
    }
    out
}

/// The identity service the pipeline calls: one call per request, with the observations
/// of its new events in order.
#[allow(async_fn_in_trait)]
pub trait IdentityService {
    async fn observe(
        &self,
        write_key: &str,
        limits: &Limits,
        observations: &[Observation],
    ) -> Result<Observed, crate::store::StoreError>;
    /// Profiles with their activity, after rebuilding the stale ones ([`activity`]).
    async fn activity(
        &self,
        write_key: &str,
        req: &ActivityRequest,
    ) -> Result<Vec<Profile>, crate::store::StoreError>;
    /// What erasing `profile` covers (`None`: no such profile).
    async fn erasure_plan(
        &self,
        write_key: &str,
        profile: &str,
    ) -> Result<Option<Erased>, crate::store::StoreError>;
    /// Erases what a plan covers from the graph (idempotent).
    async fn erase(&self, write_key: &str, plan: &Erased) -> Result<(), crate::store::StoreError>;
    /// Retires a cookie id (logout, `reset()`): it no longer links events.
    async fn retire(
        &self,
        write_key: &str,
        id: &Ident,
        at_ms: i64,
    ) -> Result<(), crate::store::StoreError>;
}

/// In-memory identity, one graph per write key (tests, benchmarks).
#[derive(Debug, Default)]
pub struct MemoryIdentity {
    pub graphs: std::cell::RefCell<HashMap<String, MemoryGraph>>,
}

impl IdentityService for MemoryIdentity {
    async fn observe(
        &self,
        write_key: &str,
        limits: &Limits,
        observations: &[Observation],
    ) -> Result<Observed, crate::store::StoreError> {
        let mut graphs = self.graphs.borrow_mut();
        let g = graphs.entry(write_key.to_string()).or_default();
        let resolutions = observe_all(g, observations, limits);
        let profiles = wanted_profiles(g, observations, &resolutions);
        Ok(Observed {
            resolutions,
            profiles,
        })
    }
    async fn activity(
        &self,
        write_key: &str,
        req: &ActivityRequest,
    ) -> Result<Vec<Profile>, crate::store::StoreError> {
        let mut graphs = self.graphs.borrow_mut();
        let g = graphs.entry(write_key.to_string()).or_default();
        Ok(activity(g, req))
    }
    async fn erasure_plan(
        &self,
        write_key: &str,
        profile: &str,
    ) -> Result<Option<Erased>, crate::store::StoreError> {
        let graphs = self.graphs.borrow();
        Ok(graphs.get(write_key).and_then(|g| erasure_plan(g, profile)))
    }
    async fn erase(&self, write_key: &str, plan: &Erased) -> Result<(), crate::store::StoreError> {
        if let Some(g) = self.graphs.borrow_mut().get_mut(write_key) {
            erase(g, plan);
        }
        Ok(())
    }
    async fn retire(
        &self,
        write_key: &str,
        id: &Ident,
        at_ms: i64,
    ) -> Result<(), crate::store::StoreError> {
        let mut graphs = self.graphs.borrow_mut();
        graphs
            .entry(write_key.to_string())
            .or_default()
            .retire(id, at_ms);
        Ok(())
    }
}
