//! The Cordon control plane: policy store with history, the xDS-style policy stream to the
//! filters, the admin API (gRPC + JSON over HTTP), metrics, and the `cordonctl` client.

pub mod store;
