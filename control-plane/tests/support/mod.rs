#![allow(dead_code)]
pub mod pg;
pub mod pki;
pub mod server;
