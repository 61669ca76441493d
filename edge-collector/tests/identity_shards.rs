//! The identity graph over several shards (`identity_shards`): the same people,
//! merges, conflicts, unmerges and erasures as one graph; all or nothing when a call
//! dies at any of its shard calls; and two calls at once end as one after the other.

use edge_collector::identity::{
    erase, erasure_plan, observe, random_profile_id, unmerge, Graph, IdKind, Ident, Limits,
    MemoryGraph, Observation, Resolution,
};
use edge_collector::identity_shards::{
    self as shards, observe_each, Call, Fate, Lock, Locks, Op, ReadAnswer, ReadRequest, Reads,
    ShardError, Shards, Snapshot, LEASE_MS,
};
use proptest::prelude::*;
use serde_json::json;
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};

#[derive(Default)]
struct MemoryLocks {
    locks: HashMap<String, Lock>,
    fates: HashMap<String, (Fate, i64)>,
    applied: HashSet<String>,
}

impl Locks for MemoryLocks {
    fn locks(&self, keys: &[String]) -> Vec<(String, Lock)> {
        let held = |k: &String| self.locks.get(k).map(|l| (k.clone(), l.clone()));
        keys.iter().filter_map(held).collect()
    }
    fn put_locks(&mut self, keys: &[String], l: &Lock) {
        for k in keys {
            self.locks.insert(k.clone(), l.clone());
        }
    }
    fn unlock(&mut self, txn: &str) {
        self.locks.retain(|_, l| l.txn != txn);
    }
    fn fate(&self, txn: &str) -> Option<Fate> {
        self.fates.get(txn).map(|(f, _)| f.clone())
    }
    fn put_fate(&mut self, txn: &str, f: &Fate, at_ms: i64) {
        self.fates.insert(txn.into(), (f.clone(), at_ms));
    }
    fn forget(&mut self, txn: &str) {
        self.fates.remove(txn);
    }
    fn committed_before(&self, at_ms: i64) -> Vec<(String, Fate)> {
        let due = |(t, (f, at)): (&String, &(Fate, i64))| {
            (*at < at_ms && *f != Fate::Aborted).then(|| (t.clone(), f.clone()))
        };
        self.fates.iter().filter_map(due).collect()
    }
    fn stale_before(&self, at_ms: i64) -> Vec<(String, u32)> {
        let mut out: Vec<(String, u32)> = Vec::new();
        for l in self.locks.values() {
            if l.until_ms < at_ms && !out.iter().any(|(t, _)| *t == l.txn) {
                out.push((l.txn.clone(), l.primary));
            }
        }
        out
    }
    fn applied(&self, txn: &str) -> bool {
        self.applied.contains(txn)
    }
    fn mark_applied(&mut self, txn: &str, _at_ms: i64) {
        self.applied.insert(txn.into());
    }
}

/// `n` shards in memory. `dies_after` simulates the calling process dying: after that
/// many more calls, every call fails (no release, no forget), as a dead worker makes
/// none.
struct MemoryShards {
    shards: RefCell<Vec<(MemoryGraph, MemoryLocks)>>,
    now_ms: Cell<i64>,
    dies_after: Cell<Option<usize>>,
    calls: Cell<usize>,
    pauses: Cell<u32>,
    locks_at_pause: Cell<usize>,
    finishes_on_pause: RefCell<Option<(u32, String)>>,
    /// Whether the primary finishes a commit (as the worker's objects do) or the
    /// driver does.
    primary_finishes: Cell<bool>,
    /// Whether each call lets others run first (for interleaving calls).
    yields: Cell<bool>,
    /// The budget of the calls `resolve` makes ([`Call::budget`]; 0: none).
    budget: Cell<u32>,
}

/// A future that is pending once.
struct Yield(bool);

impl std::future::Future for Yield {
    type Output = ();
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.0 {
            return std::task::Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

impl MemoryShards {
    fn new(n: u32) -> Self {
        MemoryShards {
            shards: RefCell::new((0..n).map(|_| Default::default()).collect()),
            now_ms: Cell::new(1_000_000),
            dies_after: Cell::new(None),
            calls: Cell::new(0),
            pauses: Cell::new(0),
            locks_at_pause: Cell::new(0),
            finishes_on_pause: RefCell::new(None),
            primary_finishes: Cell::new(false),
            yields: Cell::new(false),
            budget: Cell::new(0),
        }
    }
    fn n(&self) -> u32 {
        self.shards.borrow().len() as u32
    }
    /// One shard call: with `yields`, it first lets the executor run another call, as
    /// a Durable Object fetch does.
    async fn turn(&self) -> Result<(), ShardError> {
        if self.yields.get() {
            Yield(false).await;
        }
        self.call()
    }
    fn call(&self) -> Result<(), ShardError> {
        self.calls.set(self.calls.get() + 1);
        match self.dies_after.get() {
            Some(0) => Err(ShardError::Unavailable("dead".into())),
            Some(k) => {
                self.dies_after.set(Some(k - 1));
                Ok(())
            }
            None => Ok(()),
        }
    }
    /// Every shard's graph as one: profiles, links, resolutions and retirements are each
    /// on one shard; merge records and conflicts on both profiles' shards (kept once).
    fn merged(&self) -> MemoryGraph {
        let mut all = MemoryGraph::default();
        let n = self.n();
        for (i, (g, _)) in self.shards.borrow().iter().enumerate() {
            for (k, v) in &g.index {
                assert!(
                    all.index.insert(k.clone(), v.clone()).is_none(),
                    "{k:?} on two shards"
                );
            }
            for (k, v) in &g.profiles {
                assert!(all.profiles.insert(k.clone(), v.clone()).is_none());
            }
            for (k, v) in &g.resolutions {
                assert!(all.resolutions.insert(k.clone(), v.clone()).is_none());
            }
            all.retired.extend(g.retired.iter().cloned());
            for m in &g.merges {
                if !all.merges.iter().any(|x| x.id == m.id) {
                    all.merges.push(m.clone());
                }
            }
            // Each conflict once: the copy on its first profile's shard.
            let home = |c: &&edge_collector::identity::Conflict| {
                shards::shard_of_profile(&c.profile, n) == i as u32
            };
            all.conflicts
                .extend(g.conflicts.iter().filter(home).cloned());
        }
        all
    }
    /// Every shard's alarm, a lease from now.
    fn sweep(&self) {
        self.now_ms.set(self.now_ms.get() + LEASE_MS + 1);
        for i in 0..self.n() {
            let now = self.now_ms.get();
            let (stale, due) = {
                let l = &self.shards.borrow()[i as usize].1;
                (l.stale_before(now), l.committed_before(now - LEASE_MS))
            };
            pollster::block_on(shards::sweep(self, i, stale, due)).unwrap();
        }
    }
    fn locks_left(&self) -> usize {
        self.shards
            .borrow()
            .iter()
            .map(|(_, l)| l.locks.len())
            .sum()
    }
}

impl Shards for MemoryShards {
    async fn read(&self, shard: u32, req: &ReadRequest) -> Result<ReadAnswer, ShardError> {
        self.turn().await?;
        let mut s = self.shards.borrow_mut();
        let (g, l) = &mut s[shard as usize];
        Ok(shards::read(g, l, req, self.now_ms.get()))
    }
    async fn apply(&self, shard: u32, txn: &str, ops: &[Op]) -> Result<(), ShardError> {
        self.turn().await?;
        let mut s = self.shards.borrow_mut();
        let (g, l) = &mut s[shard as usize];
        shards::apply(g, l, txn, ops, self.now_ms.get())
    }
    async fn apply_alone(&self, shard: u32, txn: &str, ops: &[Op]) -> Result<(), ShardError> {
        self.turn().await?;
        let mut s = self.shards.borrow_mut();
        let (g, l) = &mut s[shard as usize];
        shards::apply_alone(g, l, txn, ops)
    }
    async fn commit_primary(&self, shard: u32, txn: &str, fate: &Fate) -> Result<(), ShardError> {
        self.turn().await?;
        let done = {
            let mut s = self.shards.borrow_mut();
            let (g, l) = &mut s[shard as usize];
            shards::commit_primary(g, l, txn, shard, fate, self.now_ms.get())
        };
        match fate {
            Fate::Committed { changes, locked } if done.is_ok() && self.primary_finishes.get() => {
                // As the object does: the rest of the commit before its answer.
                shards::finish(self, txn, shard, changes, locked).await
            }
            _ => done,
        }
    }
    fn primary_finishes(&self) -> bool {
        self.primary_finishes.get()
    }
    fn made(&self) -> u32 {
        self.calls.get() as u32
    }
    async fn recover(&self, shard: u32, txn: &str) -> Result<Fate, ShardError> {
        self.turn().await?;
        let mut s = self.shards.borrow_mut();
        Ok(shards::recover(
            &mut s[shard as usize].1,
            txn,
            self.now_ms.get(),
        ))
    }
    async fn release(&self, shard: u32, txn: &str) -> Result<(), ShardError> {
        self.turn().await?;
        self.shards.borrow_mut()[shard as usize].1.unlock(txn);
        Ok(())
    }
    async fn pause(&self, attempt: u32) {
        if self.yields.get() {
            Yield(false).await;
        }
        self.now_ms
            .set(self.now_ms.get() + shards::backoff_ms(attempt, 1.0) as i64);
        self.pauses.set(self.pauses.get() + 1);
        self.locks_at_pause.set(self.locks_left());
        // The other call of a test finishes while this one waits.
        if let Some((shard, txn)) = self.finishes_on_pause.borrow_mut().take() {
            self.shards.borrow_mut()[shard as usize].1.unlock(&txn);
        }
    }
    async fn forget(&self, shard: u32, txn: &str) -> Result<(), ShardError> {
        self.turn().await?;
        self.shards.borrow_mut()[shard as usize].1.forget(txn);
        Ok(())
    }
}

fn snapshot(n: u32) -> Snapshot {
    Snapshot::new(n, Box::new(random_profile_id))
}

/// A snapshot whose new profile ids all fall on shard 0, wherever their visitor is: so
/// new profiles land on shards the call did not read.
fn pinned(n: u32) -> Snapshot {
    Snapshot::new(
        n,
        Box::new(move || loop {
            let id = random_profile_id();
            if shards::shard_of_profile(&id, n) == 0 {
                return id;
            }
        }),
    )
}

fn resolve(
    s: &MemoryShards,
    txn: &str,
    obs: &[Observation],
    limits: &Limits,
) -> Result<Vec<Option<Resolution>>, ShardError> {
    resolve_with(s, snapshot(s.n()), txn, obs, limits)
}

fn resolve_with(
    s: &MemoryShards,
    snap: Snapshot,
    txn: &str,
    obs: &[Observation],
    limits: &Limits,
) -> Resolved {
    pollster::block_on(resolve_async(s, snap, txn, obs, limits))
}

async fn resolve_async(
    s: &MemoryShards,
    mut snap: Snapshot,
    txn: &str,
    obs: &[Observation],
    limits: &Limits,
) -> Resolved {
    let (primary, first) = shards::observe_start(&mut snap, obs);
    let call = Call {
        txn: txn.into(),
        since_ms: s.now_ms.get(),
        n: s.n(),
        lock: true,
        primary,
        budget: s.budget.get(),
    };
    shards::transact(s, &call, first, &mut snap, |g| observe_each(g, obs, limits)).await
}

/// The graph's people, by their sorted identifiers, with what each accumulated.
type Person = (
    Vec<Ident>,
    u64,
    serde_json::Map<String, serde_json::Value>,
    i64,
    i64,
);
fn people(g: &MemoryGraph) -> Vec<Person> {
    let mut v: Vec<_> = g
        .profiles
        .values()
        .map(|p| {
            let mut ids = p.identifiers.clone();
            ids.sort();
            (
                ids,
                p.event_count,
                p.traits.clone(),
                p.first_seen_ms,
                p.last_seen_ms,
            )
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// A merge or conflict named by its people's identifiers (profile ids are random).
fn named(g: &MemoryGraph, id: &str) -> Vec<Ident> {
    g.profiles
        .get(id)
        .map(|p| p.identifiers.clone())
        .unwrap_or_default()
}
/// A conflict: its kind, its people and the identifier it was about.
type Named = (String, Vec<Ident>, Option<Vec<Ident>>, Ident);
fn conflicts(g: &MemoryGraph) -> Vec<Named> {
    let mut v: Vec<_> = g
        .conflicts
        .iter()
        .map(|c| {
            (
                c.kind.clone(),
                named(g, &c.profile),
                c.other_profile.as_deref().map(|o| named(g, o)),
                c.identifier.clone(),
            )
        })
        .collect();
    v.sort();
    v
}

/// An event drawn by the property tests: identifiers (kind, value), traits, cookie,
/// whether it retries an earlier one.
type Drawn = (Vec<(u8, u8)>, u8, u8, u8);
fn events(spec: &[Drawn]) -> Vec<Observation> {
    spec.iter()
        .enumerate()
        .map(|(t, (ids, tr, cookie, retry))| Observation {
            // Keys carry their visitor, as dedup keys do (write key, visitor, messageId).
            key: if *retry == 0 && t > 2 {
                format!("wk\u{1f}v{}\u{1f}m{}", t / 2, t / 2)
            } else {
                format!("wk\u{1f}v{t}\u{1f}m{t}")
            },
            identifiers: ids
                .iter()
                .map(|(k, v)| Ident::new(IdKind::ALL[*k as usize], format!("v{v}-{k}")))
                .collect(),
            cookie: (*cookie < 4).then(|| Ident::new(IdKind::Anonymous, format!("c{cookie}"))),
            traits: (*tr > 0)
                .then(|| json!({"t": tr, format!("k{t}"): t}).as_object().cloned())
                .flatten(),
            at_ms: t as i64,
            ..Observation::default()
        })
        .collect()
}

fn assert_same(one: &MemoryGraph, s: &MemoryShards) -> Result<(), TestCaseError> {
    let many = s.merged();
    prop_assert_eq!(people(one), people(&many));
    prop_assert_eq!(one.index.len(), many.index.len());
    prop_assert_eq!(one.resolutions.len(), many.resolutions.len());
    prop_assert_eq!(one.merges.len(), many.merges.len());
    prop_assert_eq!(conflicts(one), conflicts(&many));
    for (i, p) in &many.index {
        prop_assert!(many
            .profiles
            .get(p)
            .is_some_and(|p| p.identifiers.contains(i)));
    }
    prop_assert_eq!(s.locks_left(), 0, "locks left behind");
    Ok(())
}

proptest! {
    /// A request's events resolved over 1 to 5 shards leave the same people, links,
    /// merges, conflicts and kept resolutions as one graph resolving them in turn, and
    /// each event with the same person. Events carry cookie ids (one retired) and some
    /// are retries of earlier ones.
    #[test]
    fn shards_resolve_as_one_graph(
        spec in proptest::collection::vec(
            (proptest::collection::vec((0u8..4, 0u8..5), 1..4), 0u8..3, 0u8..6, 0u8..8), 1..40),
        cuts in proptest::collection::vec(1usize..8, 1..12),
        n in 1u32..6,
        primary_finishes in any::<bool>(),
    ) {
        let limits = Limits { anonymous_id: 3, email: 2, ..Limits::default() };
        let all = events(&spec);
        let mut one = MemoryGraph::default();
        let s = MemoryShards::new(n);
        s.primary_finishes.set(primary_finishes);
        let c1 = Ident::new(IdKind::Anonymous, "c1");
        one.retire(&c1, 0);
        let mut retire = snapshot(n);
        let call = Call { txn: "t-retire".into(), since_ms: 0, n, lock: true, primary: None, budget: 0 };
        pollster::block_on(shards::transact(&s, &call, Reads::default(), &mut retire,
            |g| g.retire(&c1, 0))).unwrap();
        let singly: Vec<_> = all.iter().map(|o| observe(&mut one, o, &limits)).collect();
        let mut sharded = Vec::new();
        let (mut at, mut cut) = (0, cuts.iter().cycle());
        while at < all.len() {
            let end = (at + cut.next().unwrap()).min(all.len());
            sharded.extend(resolve(&s, &format!("t{at}"), &all[at..end], &limits).unwrap());
            at = end;
        }
        let many = s.merged();
        let person = |g: &MemoryGraph, r: &Option<Resolution>| {
            r.as_ref().map(|r| (named(g, &r.profile_id), r.absorbed.len()))
        };
        for (a, b) in singly.iter().zip(&sharded) {
            prop_assert_eq!(person(&one, a), person(&many, b));
        }
        assert_same(&one, &s)?;
    }

    /// The process driving a call dies after any number of its shard calls; the sender
    /// retries the request after the lease. Every event counts once, and the graph is
    /// the one graph's: a call that committed is finished by the one that meets its
    /// locks, one that did not is undone. With `pin`, new profiles land on a shard the
    /// call did not read (locked before the commit).
    #[test]
    fn a_call_that_dies_is_finished_or_undone(
        spec in proptest::collection::vec(
            (proptest::collection::vec((0u8..4, 0u8..4), 1..4), 0u8..3, 0u8..6, 1u8..8), 1..30),
        cuts in proptest::collection::vec(1usize..6, 1..12),
        deaths in proptest::collection::vec(proptest::option::of(0usize..8), 1..12),
        n in 2u32..5,
        pin in any::<bool>(),
        primary_finishes in any::<bool>(),
    ) {
        let limits = Limits { anonymous_id: 3, email: 2, ..Limits::default() };
        let all = events(&spec);
        let mut one = MemoryGraph::default();
        let s = MemoryShards::new(n);
        s.primary_finishes.set(primary_finishes);
        let snap = || if pin { pinned(n) } else { snapshot(n) };
        let singly: Vec<_> = all.iter().map(|o| observe(&mut one, o, &limits)).collect();
        let mut sharded = Vec::new();
        let (mut at, mut cut, mut death) = (0, cuts.iter().cycle(), deaths.iter().cycle());
        let mut k = 0;
        while at < all.len() {
            let end = (at + cut.next().unwrap()).min(all.len());
            s.dies_after.set(*death.next().unwrap());
            let first = resolve_with(&s, snap(), &format!("t{k}"), &all[at..end], &limits);
            s.dies_after.set(None);
            k += 1;
        let got = match first {
                Ok(r) => r,
                Err(_) => {
                    // The sender retries after the lease; a retry that finds it busy
                    // retries again later.
                    s.now_ms.set(s.now_ms.get() + LEASE_MS + 1);
                    let again = resolve_with(&s, snap(), &format!("t{k}"), &all[at..end], &limits);
                    k += 1;
                    again.unwrap()
                }
            };
            sharded.extend(got);
            at = end;
        }
        // The primaries' alarms finish what was committed and not met again.
        s.sweep();
        let many = s.merged();
        let person = |g: &MemoryGraph, r: &Option<Resolution>| {
            r.as_ref().map(|r| named(g, &r.profile_id))
        };
        for (a, b) in singly.iter().zip(&sharded) {
            prop_assert_eq!(person(&one, a), person(&many, b));
        }
        assert_same(&one, &s)?;
    }
}

fn anon(v: &str) -> Ident {
    Ident::new(IdKind::Anonymous, v)
}
fn user(v: &str) -> Ident {
    Ident::new(IdKind::UserId, v)
}

fn see(s: &MemoryShards, txn: &str, ids: Vec<Ident>, at: i64) -> String {
    let obs = [Observation {
        key: format!("wk\u{1f}{}\u{1f}{txn}", ids[0].value),
        identifiers: ids,
        at_ms: at,
        ..Observation::default()
    }];
    resolve(s, txn, &obs, &Limits::default()).unwrap()[0]
        .clone()
        .unwrap()
        .profile_id
}

/// Runs `rules` as one call over the shards.
fn call<T>(s: &MemoryShards, txn: &str, rules: impl FnMut(&mut Snapshot) -> T) -> T {
    let mut snap = snapshot(s.n());
    let call = Call {
        txn: txn.into(),
        since_ms: s.now_ms.get(),
        n: s.n(),
        lock: true,
        primary: None,
        budget: 0,
    };
    pollster::block_on(shards::transact(
        s,
        &call,
        Reads::default(),
        &mut snap,
        rules,
    ))
    .unwrap()
}

#[test]
fn unmerge_then_erasure_over_shards_removes_exactly_the_person() {
    for n in [2, 3, 7] {
        let s = MemoryShards::new(n);
        let a = see(&s, "t1", vec![anon("a1")], 1);
        let b = see(&s, "t2", vec![user("u-b"), anon("b1")], 2);
        // The shared device's anonymous id joins both: a merge.
        let joined = see(&s, "t3", vec![user("u-b"), anon("a1")], 3);
        assert_eq!(joined, b);
        let g = s.merged();
        assert!(!g.profiles.contains_key(&a), "absorbed");
        assert_eq!(g.merges.len(), 1);

        let undone = call(&s, "t4", |g| unmerge(g, &b, None, 4));
        let undone = undone.unwrap();
        assert_eq!(undone.restored.id, a);
        let g = s.merged();
        assert_eq!(g.index.get(&anon("a1")), Some(&a));
        assert!(g.merges[0].undone_at_ms.is_some());

        // An event joining them again is refused: a conflict, not a merge.
        see(&s, "t5", vec![user("u-b"), anon("a1")], 5);
        let g = s.merged();
        assert!(g.profiles.contains_key(&a) && g.profiles.contains_key(&b));
        assert!(g.conflicts.iter().any(|c| c.kind == "previously_unmerged"));

        let plan = call(&s, "t6", |g| erasure_plan(g, &b)).unwrap();
        call(&s, "t7", |g| erase(g, &plan));
        let g = s.merged();
        assert!(!g.profiles.contains_key(&b));
        assert_eq!(g.index.get(&user("u-b")), None);
        assert_eq!(g.index.get(&anon("b1")), None);
        // The unmerged person stays whole.
        assert!(g.profiles.contains_key(&a));
        assert_eq!(g.index.get(&anon("a1")), Some(&a));
        assert!(g.merges.is_empty());
        assert!(g
            .conflicts
            .iter()
            .all(|c| c.profile != b && c.other_profile.as_deref() != Some(b.as_str())));
        assert!(g.resolutions.values().all(|r| r.profile_id != b));
        assert!(s.shards.borrow().iter().all(|(g, _)| g
            .conflicts
            .iter()
            .all(|c| c.profile != b && c.other_profile.as_deref() != Some(b.as_str()))));
        assert_eq!(s.locks_left(), 0);
    }
}

/// Has call `txn`, begun at `since_ms` and live (its lease running), hold `id`'s lock
/// on `shard`.
fn hold(s: &MemoryShards, shard: u32, id: &Ident, txn: &str, since_ms: i64) {
    let lock = Lock {
        txn: txn.into(),
        primary: shard,
        until_ms: s.now_ms.get() + LEASE_MS,
        since_ms,
    };
    let key = format!("i\u{1f}{}\u{1f}{}", id.kind.as_str(), id.value);
    s.shards.borrow_mut()[shard as usize]
        .1
        .put_locks(&[key], &lock);
}

#[test]
fn a_live_lock_is_busy_and_changes_nothing() {
    let s = MemoryShards::new(3);
    see(&s, "t1", vec![anon("a1")], 1);
    let before = people(&s.merged());
    // Another call holds a1's lock, its lease running.
    let shard = shards::shard_of_ident(&anon("a1"), 3);
    hold(&s, shard, &anon("a1"), "other", 0);
    let obs = [Observation {
        key: "wk\u{1f}a1\u{1f}m2".into(),
        identifiers: vec![anon("a1"), user("u1")],
        at_ms: 2,
        ..Observation::default()
    }];
    assert_eq!(
        resolve(&s, "t2", &obs, &Limits::default()),
        Err(ShardError::Busy)
    );
    // It waited and tried again, then gave up well within the other call's lease.
    assert_eq!(s.pauses.get(), shards::MAX_ATTEMPTS - 1);
    assert_eq!(people(&s.merged()), before);
    // Its own locks were let go; the other call's stays.
    assert_eq!(s.locks_left(), 1);
    // After the lease, the other call (which never committed) is aborted and the
    // event goes through; the aborted call can no longer commit.
    s.now_ms.set(s.now_ms.get() + LEASE_MS + 1);
    assert!(resolve(&s, "t3", &obs, &Limits::default()).is_ok());
    assert_eq!(s.locks_left(), 0);
    let commit = Fate::Committed {
        changes: vec![],
        locked: vec![shard],
    };
    let refused = pollster::block_on(s.commit_primary(shard, "other", &commit));
    assert_eq!(refused, Err(ShardError::Aborted));
    let refused = pollster::block_on(s.apply(shard, "other", &[]));
    assert_eq!(refused, Err(ShardError::Aborted));
    let refused = pollster::block_on(s.apply_alone(shard, "other", &[]));
    assert_eq!(refused, Err(ShardError::Aborted));
}

#[test]
fn a_call_that_meets_a_live_lock_waits_for_it() {
    // A sender's two concurrent batches for one visitor: the second waits for the first,
    // as one object would queue them, instead of answering 503.
    let s = MemoryShards::new(3);
    let first = see(&s, "t1", vec![anon("a1")], 1);
    let shard = shards::shard_of_ident(&anon("a1"), 3);
    hold(&s, shard, &anon("a1"), "other", 0);
    *s.finishes_on_pause.borrow_mut() = Some((shard, "other".into()));
    let again = see(&s, "t2", vec![anon("a1")], 2);
    assert_eq!(again, first);
    assert_eq!(s.pauses.get(), 1);
    assert_eq!(s.merged().profiles[&first].event_count, 2);
    assert_eq!(s.locks_left(), 0);
}

#[test]
fn of_two_calls_that_meet_the_older_waits_keeping_its_locks() {
    let n = 3;
    let s = MemoryShards::new(n);
    // A visitor on a shard after another identifier's, so the call locks that one first.
    let a = (0..)
        .map(|i| anon(&format!("wd-{i}")))
        .find(|a| shards::shard_of_ident(a, n) == 2)
        .unwrap();
    let u = (0..)
        .map(|i| user(&format!("wd-user-{i}")))
        .find(|u| shards::shard_of_ident(u, n) == 0)
        .unwrap();
    let first = see(&s, "t1", vec![a.clone()], 1);
    // A younger call (it began after this one will) holds the visitor's lock.
    hold(&s, 2, &a, "younger", s.now_ms.get() + 1);
    *s.finishes_on_pause.borrow_mut() = Some((2, "younger".into()));
    let again = see(&s, "t2", vec![u.clone(), a.clone()], 2);
    assert_eq!(again, first, "the userId joins the visitor's profile");
    assert_eq!(s.pauses.get(), 1);
    // While it waited, it still held its locks on shard 0 (the userId and the event's
    // key, both there), beside the younger call's.
    assert_eq!(s.locks_at_pause.get(), 3);
    assert_eq!(s.locks_left(), 0);
}

#[test]
fn a_visitor_seen_again_is_one_call_on_one_shard() {
    let s = MemoryShards::new(16);
    see(&s, "t1", vec![anon("a-visitor")], 1);
    s.calls.set(0);
    see(&s, "t2", vec![anon("a-visitor")], 2);
    // One read (links, the profile beside them, the resolution), one apply.
    assert_eq!(s.calls.get(), 2);
}

/// A server batch of `k` new people, each a userId and an anonymousId (their visitor).
fn new_people(k: i64) -> Vec<Observation> {
    (0..k)
        .map(|i| Observation {
            key: format!("wk\u{1f}anon-{i}\u{1f}m{i}"),
            identifiers: vec![user(&format!("user-{i}")), anon(&format!("anon-{i}"))],
            at_ms: i,
            ..Observation::default()
        })
        .collect()
}

#[test]
fn new_people_over_every_shard_are_one_round_of_reads() {
    let n = 8;
    let s = MemoryShards::new(n);
    s.primary_finishes.set(true);
    // A server batch: 100 new people, each a userId and an anonymousId, so new profiles
    // on every shard and links to them on others.
    let obs = new_people(100);
    let resolved = resolve(&s, "t1", &obs, &Limits::default()).unwrap();
    // Each new profile on its visitor's shard.
    for (o, r) in obs.iter().zip(&resolved) {
        let home = shards::shard_of_resolution(&o.key, n);
        assert_eq!(
            shards::shard_of_profile(&r.as_ref().unwrap().profile_id, n),
            home
        );
    }
    // One read of each shard (the new profiles' ids reserved and locked with it), the
    // primary's commit, each other shard's part, the primary forgetting the call: no
    // round of its own to lock the new profiles.
    assert_eq!(s.calls.get(), n as usize + 1 + (n as usize - 1) + 1);
    assert_eq!(s.locks_left(), 0);
}

#[test]
fn a_call_that_meets_locks_gives_up_within_its_budget() {
    let n = 8;
    let obs = new_people(100);
    // An older call holds one of the batch's identifiers: this younger one starts over
    // each time it meets it.
    let calls_with = |budget: u32| {
        let s = MemoryShards::new(n);
        s.primary_finishes.set(true);
        s.budget.set(budget);
        let held = user("user-99");
        hold(&s, shards::shard_of_ident(&held, n), &held, "older", 0);
        let outcome = resolve(&s, "t1", &obs, &Limits::default());
        assert_eq!(outcome, Err(ShardError::Busy));
        assert_eq!(s.locks_left(), 1, "only the older call's lock is left");
        s.calls.get() as u32
    };
    let unbounded = calls_with(0);
    let bounded = calls_with(40);
    // Six attempts of a read of every shard and the releases: more than the budget.
    assert!(unbounded > 40, "{unbounded} calls");
    // With the budget, it stops while another attempt and a commit could still fit.
    assert!(bounded <= 40, "{bounded} calls");
    assert!(bounded < unbounded);
}

/// A call's outcome: each event's resolution, or why it gave up.
type Resolved = Result<Vec<Option<Resolution>>, ShardError>;
/// A call in progress.
type Pending<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Resolved> + 'a>>;

/// Runs `calls` together, polling one of them at each step as `schedule` says: each
/// shard call lets the others run (`yields`), so their reads, locks and commits
/// interleave. Returns each call's outcome.
fn together(mut calls: Vec<Pending<'_>>, schedule: &[usize]) -> Vec<Resolved> {
    let mut out: Vec<Option<Resolved>> = calls.iter().map(|_| None).collect();
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let mut step = 0;
    while out.iter().any(Option::is_none) {
        let open: Vec<usize> = (0..calls.len()).filter(|i| out[*i].is_none()).collect();
        let i = open[schedule[step % schedule.len()] % open.len()];
        step += 1;
        if let std::task::Poll::Ready(r) = calls[i].as_mut().poll(&mut cx) {
            out[i] = Some(r);
        }
        assert!(step < 1_000_000, "the calls never finished");
    }
    out.into_iter().map(Option::unwrap).collect()
}

proptest! {
    /// Two calls over the shards at once, their shard calls interleaved at random:
    /// the graph ends as one graph that resolved the two batches one after the other,
    /// in one order or the other (a call that gave up, busy, is sent again after, as a
    /// sender would). Every event counts once and no lock is left.
    #[test]
    fn concurrent_calls_end_as_one_after_the_other(
        spec in proptest::collection::vec(
            (proptest::collection::vec((0u8..4, 0u8..3), 1..4), 0u8..3, 0u8..6, 1u8..8), 2..16),
        split in 1usize..15,
        schedule in proptest::collection::vec(0usize..2, 1..64),
        n in 2u32..5,
        primary_finishes in any::<bool>(),
    ) {
        let limits = Limits { anonymous_id: 3, email: 2, ..Limits::default() };
        let all = events(&spec);
        let cut = split.min(all.len() - 1);
        let (a, b) = all.split_at(cut);
        let s = MemoryShards::new(n);
        s.primary_finishes.set(primary_finishes);
        s.yields.set(true);
        let calls: Vec<Pending> = vec![
            Box::pin(resolve_async(&s, snapshot(n), "ta", a, &limits)),
            Box::pin(resolve_async(&s, snapshot(n), "tb", b, &limits)),
        ];
        let outcomes = together(calls, &schedule);
        s.yields.set(false);
        // A call that gave up is sent again.
        let mut done = Vec::new();
        for (i, r) in outcomes.into_iter().enumerate() {
            match r {
                Ok(_) => done.push(i),
                Err(e) => {
                    prop_assert_eq!(e, ShardError::Busy);
                    let batch = if i == 0 { a } else { b };
                    resolve(&s, &format!("again{i}"), batch, &limits).unwrap();
                }
            }
        }
        s.sweep();
        let many = s.merged();
        let serial = |first: &[Observation], second: &[Observation]| {
            let mut g = MemoryGraph::default();
            for o in first.iter().chain(second) {
                observe(&mut g, o, &limits);
            }
            g
        };
        let ab = serial(a, b);
        let ba = serial(b, a);
        let same = |one: &MemoryGraph| people(one) == people(&many) && conflicts(one) == conflicts(&many)
            && one.merges.len() == many.merges.len() && one.index.len() == many.index.len();
        prop_assert!(same(&ab) || same(&ba), "neither order: {:?}", people(&many));
        prop_assert_eq!(ab.resolutions.len(), many.resolutions.len());
        prop_assert_eq!(s.locks_left(), 0, "locks left behind");
    }
}
