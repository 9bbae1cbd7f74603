//! The rate limiter's counters for a native module: one compare-and-swap map per process, shared
//! by every worker and every filter configuration (the native equivalent of proxy-wasm shared
//! data, which is per VM id). Each key carries a version that changes on every write.

use cordon_core::ratelimit::store::{CasStore, StoreError};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

type Map = HashMap<String, (Vec<u8>, u32)>;

fn map() -> &'static Mutex<Map> {
    static MAP: OnceLock<Mutex<Map>> = OnceLock::new();
    MAP.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The process-wide store.
pub struct ProcessStore;

impl ProcessStore {
    fn lock() -> Result<std::sync::MutexGuard<'static, Map>, StoreError> {
        // A poisoned lock means a worker panicked mid-update; the map itself is still whole
        // (each update is one insert), so keep counting rather than fail every request.
        Ok(map().lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }
}

impl CasStore for ProcessStore {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        Ok(Self::lock()?.get(key).cloned())
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        // The semantics of Envoy's shared data (and the core's `MemoryStore`): a missing key is
        // version 0, every write bumps the version, a conditional write needs the current one.
        let mut map = Self::lock()?;
        let version = map.get(key).map_or(0, |(_, v)| *v);
        if cas.is_some_and(|c| c != version) {
            return Err(StoreError::CasMismatch);
        }
        map.insert(key.to_owned(), (value.to_vec(), version.wrapping_add(1)));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_and_swap_refuses_a_stale_version() {
        let s = ProcessStore;
        let key = "test-cas-stale";
        s.set(key, b"a", None).unwrap();
        let (_, v1) = s.get(key).unwrap().unwrap();
        s.set(key, b"b", Some(v1)).unwrap();
        assert_eq!(s.set(key, b"c", Some(v1)), Err(StoreError::CasMismatch));
        let (value, v2) = s.get(key).unwrap().unwrap();
        assert_eq!(value, b"b");
        assert_ne!(v1, v2);
        assert_eq!(s.set("test-cas-missing", b"x", Some(7)), Err(StoreError::CasMismatch));
        s.set("test-cas-missing", b"x", Some(0)).unwrap();
    }

    #[test]
    fn the_rate_limiter_runs_on_it() {
        // The core's own table setup and slot updates work against this store.
        cordon_core::ratelimit::store::prepare(&ProcessStore, "test-limit", 8).unwrap();
    }
}
