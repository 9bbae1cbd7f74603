//! Cordon proxy-wasm adapter.
