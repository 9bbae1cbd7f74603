//! The rate limiter's counters in Envoy shared data: visible to every worker of this Envoy,
//! updated with compare-and-swap (the core retries on a mismatch).

use cordon_core::ratelimit::store::{CasStore, StoreError};
use proxy_wasm::hostcalls;
use proxy_wasm::types::Status;

/// Envoy's shared data for this VM id.
pub struct SharedData;

impl CasStore for SharedData {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        match hostcalls::get_shared_data(key) {
            Ok((Some(value), cas)) => Ok(Some((value, cas.unwrap_or(0)))),
            Ok((None, _)) | Err(Status::NotFound) => Ok(None),
            Err(s) => Err(StoreError::Unavailable(format!("get_shared_data: {s:?}"))),
        }
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        match hostcalls::set_shared_data(key, Some(value), cas) {
            Ok(()) => Ok(()),
            Err(Status::CasMismatch) => Err(StoreError::CasMismatch),
            Err(s) => Err(StoreError::Unavailable(format!("set_shared_data: {s:?}"))),
        }
    }
}
