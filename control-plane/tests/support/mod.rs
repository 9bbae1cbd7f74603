#![allow(dead_code)]
pub mod audit;
pub mod pg;
pub mod pki;
pub mod server;
