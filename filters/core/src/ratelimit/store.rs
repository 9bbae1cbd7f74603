//! Counter state shared by every worker of one Envoy: a fixed table of slots per limit in a
//! compare-and-swap store (proxy-wasm shared data in Envoy, a map in tests).
//!
//! Bounded state: a limit keeps at most `slots` counters. A key hashes to two candidate slots;
//! it takes its own slot if present, else an empty one, else one whose counter has fully
//! replenished (nothing is lost), else it **evicts** the candidate with the least outstanding
//! usage. An evicted key restarts with a full allowance: under a key space larger than `slots`
//! with every counter busy, the limiter errs towards admitting (the eviction is counted so an
//! operator sees it and raises `slots`).

use super::meter::Meter;
use sha2::{Digest, Sha256};
use std::cell::RefCell;
use std::collections::HashMap;

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// Another worker wrote the slot since it was read: read again and retry.
    #[error("compare-and-swap mismatch")]
    CasMismatch,
    /// The host refused the operation.
    #[error("shared state unavailable: {0}")]
    Unavailable(String),
}

/// A compare-and-swap key-value store.
pub trait CasStore {
    /// The value and its version, if the key exists.
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError>;
    /// Writes `value` if the key's version is still `cas` (`None`: the key did not exist, so
    /// the write is unconditional; two first writers race and one update is lost).
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError>;
}

/// How many times a contended update is retried before the store counts as unavailable.
const MAX_ATTEMPTS: usize = 32;

/// A counter's identity: 64 bits of SHA-256 over the limit name and the key values, so callers
/// cannot craft two keys that share a counter.
pub fn key_hash(limit: &str, values: &[&str]) -> u64 {
    let mut h = Sha256::new();
    h.update(limit.as_bytes());
    for v in values {
        h.update([0x1f]);
        h.update(v.as_bytes());
    }
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(d.get(..8).unwrap_or(&[0; 8]));
    u64::from_be_bytes(b)
}

fn encode(key: u64, tat: u64) -> [u8; 16] {
    let mut v = [0u8; 16];
    let (k, t) = v.split_at_mut(8);
    k.copy_from_slice(&key.to_be_bytes());
    t.copy_from_slice(&tat.to_be_bytes());
    v
}

fn decode(v: &[u8]) -> Option<(u64, u64)> {
    let k: [u8; 8] = v.get(..8)?.try_into().ok()?;
    let t: [u8; 8] = v.get(8..16)?.try_into().ok()?;
    Some((u64::from_be_bytes(k), u64::from_be_bytes(t)))
}

/// Creates every missing slot of a limit's table as an empty counter, so that later updates
/// are all compare-and-swap. Envoy's shared data ignores the version when it creates a key: two
/// workers creating the same counter under traffic could lose one update. Creating the table
/// when a worker adopts the policy closes that window for all but the instant two workers adopt
/// it at once. Returns the number of slots created.
pub fn prepare(store: &dyn CasStore, limit: &str, slots: u32) -> Result<usize, StoreError> {
    // Adoption runs on a request (the first after a push, per worker): one read when another
    // worker already built the table, not one per slot.
    let marker = format!("cordon.rl.{limit}.prepared.{slots}");
    if store.get(&marker)?.is_some() {
        return Ok(0);
    }
    let mut created = 0;
    for idx in 0..u64::from(slots.max(1)) {
        let name = format!("cordon.rl.{limit}.{idx}");
        if store.get(&name)?.is_none() {
            store.set(&name, &encode(0, 0), None)?;
            created += 1;
        }
    }
    store.set(&marker, b"1", None)?;
    Ok(created)
}

/// What an update found and did, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Updated {
    /// Another key's busy counter was evicted to make room.
    pub evicted: bool,
    /// Compare-and-swap retries needed (contention between workers).
    pub retries: usize,
}

/// Reads the counter of `key` in `limit`'s slot table, lets `f` judge it (`0` for a new key) and
/// stores what `f` returns (`None`: leave it). `f` may run several times under contention.
pub fn update<T>(
    store: &dyn CasStore,
    limit: &str,
    slots: u32,
    key: u64,
    now: u64,
    meter: &Meter,
    mut f: impl FnMut(u64) -> (Option<u64>, T),
) -> Result<(T, Updated), StoreError> {
    let slots = u64::from(slots.max(1));
    let candidates = [key % slots, key.rotate_left(32) % slots];
    let distinct = if candidates[0] == candidates[1] { 1 } else { 2 };
    let mut retries = 0;
    for _ in 0..MAX_ATTEMPTS {
        // Host calls dominate the cost: the second candidate is read only when the first is
        // not this key's own counter (the common case is one read and one write).
        let mut read = Vec::with_capacity(2);
        for idx in candidates.iter().take(distinct) {
            let name = format!("cordon.rl.{limit}.{idx}");
            let current = store.get(&name)?;
            let parsed = current.as_ref().and_then(|(v, _)| decode(v));
            let own = matches!(parsed, Some((k, _)) if k == key);
            read.push((name, current.map(|(_, cas)| cas), parsed));
            if own {
                break;
            }
        }
        // Own slot, then empty, then replenished, then the least loaded (evicted).
        let pick = read
            .iter()
            .position(|(_, _, p)| matches!(p, Some((k, _)) if *k == key))
            .map(|i| (i, false))
            .or_else(|| read.iter().position(|(_, _, p)| p.is_none()).map(|i| (i, false)))
            .or_else(|| read.iter().position(|(_, _, p)| matches!(p, Some((_, state)) if meter.idle(*state, now))).map(|i| (i, false)))
            .unwrap_or_else(|| {
                let least = read
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, (_, _, p))| p.map_or(0, |(_, state)| meter.load(state, now)))
                    .map_or(0, |(i, _)| i);
                (least, true)
            });
        let Some((name, cas, parsed)) = read.get(pick.0) else { break };
        let tat = match parsed {
            Some((k, tat)) if *k == key => *tat,
            _ => 0,
        };
        let (new, out) = f(tat);
        let Some(new) = new else { return Ok((out, Updated { evicted: false, retries })) };
        match store.set(name, &encode(key, new), *cas) {
            Ok(()) => return Ok((out, Updated { evicted: pick.1, retries })),
            Err(StoreError::CasMismatch) => retries += 1,
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Unavailable(format!("counter for limit '{limit}' still contended after {MAX_ATTEMPTS} attempts")))
}

/// An in-process store with the same semantics as Envoy's shared data (versions grow with each
/// write); for tests and benchmarks. `contend` makes the next N writes fail with a mismatch.
#[derive(Debug, Default)]
pub struct MemoryStore {
    map: RefCell<HashMap<String, (Vec<u8>, u32)>>,
    contend: RefCell<usize>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The next `n` conditional writes fail as if another worker had written first.
    pub fn contend(&self, n: usize) {
        *self.contend.borrow_mut() = n;
    }

    /// Number of keys held.
    pub fn len(&self) -> usize {
        self.map.borrow().len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.map.borrow().is_empty()
    }
}

impl CasStore for MemoryStore {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        Ok(self.map.borrow().get(key).cloned())
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        let mut map = self.map.borrow_mut();
        let version = map.get(key).map_or(0, |(_, v)| *v);
        let mut contend = self.contend.borrow_mut();
        if *contend > 0 && cas.is_some() {
            *contend -= 1;
            if let Some(entry) = map.get_mut(key) {
                entry.1 = version.wrapping_add(1);
            }
            return Err(StoreError::CasMismatch);
        }
        if let Some(c) = cas
            && c != version
        {
            return Err(StoreError::CasMismatch);
        }
        map.insert(key.to_owned(), (value.to_vec(), version.wrapping_add(1)));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratelimit::gcra::Gcra;

    const RATE: Meter = Meter::Rate(Gcra::new(10, 100));

    fn bump(store: &MemoryStore, slots: u32, key: u64, now: u64) -> Updated {
        update(store, "l", slots, key, now, &RATE, |tat| (Some(tat.max(now) + 10), ())).unwrap().1
    }

    fn tat_of(store: &MemoryStore, slots: u32, key: u64) -> u64 {
        update(store, "l", slots, key, 0, &RATE, |tat| (None, tat)).unwrap().0
    }

    #[test]
    fn a_key_keeps_its_counter_and_state_stays_bounded() {
        let store = MemoryStore::new();
        for i in 0..10_000u64 {
            bump(&store, 64, key_hash("l", &[&i.to_string()]), 1_000);
        }
        assert!(store.len() <= 64, "{} slots for a limit of 64", store.len());
        let k = key_hash("l", &["alice"]);
        bump(&store, 64, k, 2_000);
        bump(&store, 64, k, 2_000);
        assert_eq!(tat_of(&store, 64, k), 2_020);
    }

    #[test]
    fn replenished_counters_are_reused_before_busy_ones_are_evicted() {
        let store = MemoryStore::new();
        let (a, b, c) = (key_hash("l", &["a"]), key_hash("l", &["b"]), key_hash("l", &["c"]));
        // One slot: b takes over a's counter once a has replenished (tat <= now): no eviction.
        bump(&store, 1, a, 100);
        assert!(!bump(&store, 1, b, 200).evicted);
        // c arrives while b is still busy: b is evicted, and says so.
        assert!(bump(&store, 1, c, 205).evicted);
        assert_eq!(tat_of(&store, 1, b), 0, "an evicted key starts afresh");
    }

    #[test]
    fn contention_is_retried_until_it_clears() {
        let store = MemoryStore::new();
        let k = key_hash("l", &["x"]);
        bump(&store, 8, k, 1);
        store.contend(5);
        let u = bump(&store, 8, k, 1);
        assert_eq!(u.retries, 5);
        assert_eq!(tat_of(&store, 8, k), 21, "the update applied exactly once");
        store.contend(1_000);
        let err = update(&store, "l", 8, k, 1, &RATE, |t| (Some(t + 1), ())).unwrap_err();
        assert!(err.to_string().contains("contended"), "{err}");
    }

    /// Counts reads, to show the common case costs one.
    struct Counting<'a>(&'a MemoryStore, std::cell::Cell<usize>);

    impl CasStore for Counting<'_> {
        fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
            self.1.set(self.1.get() + 1);
            self.0.get(key)
        }
        fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
            self.0.set(key, value, cas)
        }
    }

    #[test]
    fn a_known_key_in_its_first_slot_costs_one_read() {
        let mem = MemoryStore::new();
        prepare(&mem, "l", 64).unwrap();
        let k = (0..).map(|i: u64| key_hash("l", &[&i.to_string()])).find(|h| h % 64 != h.rotate_left(32) % 64).unwrap();
        bump(&mem, 64, k, 10);
        let counting = Counting(&mem, std::cell::Cell::new(0));
        update(&counting, "l", 64, k, 20, &RATE, |tat| (Some(tat + 1), ())).unwrap();
        assert_eq!(counting.1.get(), 1);
    }

    #[test]
    fn prepared_tables_are_updated_by_compare_and_swap_only() {
        let store = MemoryStore::new();
        assert_eq!(prepare(&store, "l", 16).unwrap(), 16);
        let reads = Counting(&store, std::cell::Cell::new(0));
        assert_eq!(prepare(&reads, "l", 16).unwrap(), 0, "idempotent: a second worker creates nothing");
        assert_eq!(reads.1.get(), 1, "and reads only the marker");
        let k = key_hash("l", &["a"]);
        // Every write now carries a version: contention is seen, not lost.
        store.contend(2);
        assert_eq!(bump(&store, 16, k, 50).retries, 2);
        assert_eq!(tat_of(&store, 16, k), 60);
        assert_eq!(store.len(), 17, "16 slots and the marker");
    }

    #[test]
    fn key_hashes_separate_limits_and_values() {
        assert_ne!(key_hash("a", &["x"]), key_hash("b", &["x"]));
        assert_ne!(key_hash("a", &["x", "y"]), key_hash("a", &["xy"]));
        assert_ne!(key_hash("a", &["x", ""]), key_hash("a", &["", "x"]));
    }
}
