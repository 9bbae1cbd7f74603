//! Generates prost messages for every .proto here, and tonic clients/servers only when the
//! `grpc` feature is on, so the wasm filter can build with `default-features = false` and link
//! nothing from tonic.
//!
//! The `.proto` files are parsed by `protox`, a protobuf compiler written in Rust that carries
//! the well-known types (`google/protobuf/*.proto`): building needs no system `protoc` and no
//! Debian package, so a fresh machine builds with nothing installed by hand.

use std::path::PathBuf;

use prost::Message as _;

const PROTOS: &[&str] =
    &["cordon/v1/discovery.proto", "cordon/v1/audit.proto", "cordon/admin/v1/admin.proto", "envoy/service/ratelimit/v3/rls.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let grpc = std::env::var_os("CARGO_FEATURE_GRPC").is_some();
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    for p in PROTOS {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(PROTOS, ["."]).map_err(|e| format!("proto/ does not compile: {e}"))?;
    // The reflection service (control plane) serves this descriptor set.
    std::fs::write(out.join("cordon_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_server(grpc)
        .build_client(grpc)
        .type_attribute(
            ".cordon.admin.v1",
            "#[cfg_attr(feature = \"serde\", derive(serde::Serialize, serde::Deserialize), serde(default))]",
        )
        .compile_fds(fds)?;
    Ok(())
}
