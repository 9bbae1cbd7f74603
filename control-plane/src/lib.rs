//! The Cordon control plane: policy store with history, the xDS-style policy stream to the
//! filters, the admin API (gRPC + JSON over HTTP), metrics. The client, `cordonctl`, is its own crate (`control-plane/cordonctl`) so it links
//! no store and no server.

pub mod admin;
pub mod audit;
pub mod auth;
pub mod discovery;
pub mod grpc;
pub mod http;
pub mod metrics;
pub mod nodes;
pub mod policy;
pub mod ratelimit;
pub mod server;
pub mod service;
pub mod signing;
pub mod store;
pub mod tls;
