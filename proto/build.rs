//! Generates prost messages for every .proto here, and tonic clients/servers only when the
//! `grpc` feature is on, so the wasm filter can build with `default-features = false` and link
//! nothing from tonic. Needs `protoc` (Debian package `protobuf-compiler`).

use std::path::PathBuf;

const PROTOS: &[&str] = &["cordon/v1/discovery.proto", "cordon/admin/v1/admin.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let grpc = std::env::var_os("CARGO_FEATURE_GRPC").is_some();
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    for p in PROTOS {
        println!("cargo:rerun-if-changed={p}");
    }
    tonic_prost_build::configure()
        .build_server(grpc)
        .build_client(grpc)
        .file_descriptor_set_path(out.join("cordon_descriptor.bin"))
        .type_attribute(
            ".cordon.admin.v1",
            "#[cfg_attr(feature = \"serde\", derive(serde::Serialize, serde::Deserialize), serde(default))]",
        )
        .compile_protos(PROTOS, &["."])
        .map_err(|e| format!("protoc failed (install Debian package `protobuf-compiler`): {e}"))?;
    Ok(())
}
