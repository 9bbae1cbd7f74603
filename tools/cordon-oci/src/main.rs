//! `cordon-oci`: writes Cordon's release images as OCI image layouts (a directory with
//! `oci-layout`, `index.json` and `blobs/sha256/…`), reproducibly: the same inputs give the same
//! bytes, so the same manifest digest, on every run and every machine.
//!
//! - `wasm`: the filter module in the Wasm image "compat" variant that Istio's `WasmPlugin` and
//!   Envoy Gateway's `EnvoyExtensionPolicy` pull: exactly one `application/vnd.oci.image.layer.v1.tar+gzip`
//!   layer holding `plugin.wasm`, and the manifest annotation `module.wasm.image/variant: compat`.
//! - `control-plane`: the control-plane binary (and `cordonctl`), the shared libraries it links,
//!   `/etc/passwd` with a non-root user, and an image config that runs as that user.
//!
//! The descriptors, manifest, config and index are `oci-spec` types; the layer is written with
//! the `tar` crate and compressed with `flate2`. What makes it reproducible: entries in path
//! order, every mtime the `--created` time (SOURCE_DATE_EPOCH), owners numeric with no names,
//! a gzip header with no time and a fixed OS byte, and JSON with its object keys sorted (the
//! `oci-spec` annotation maps are hash maps, whose order changes from run to run).

use clap::{Parser, Subcommand};
use flate2::{Compression, GzBuilder};
use oci_spec::image::{
    Arch, ConfigBuilder, Descriptor, ImageConfigurationBuilder, ImageIndexBuilder, ImageManifestBuilder, MediaType, Os, RootFsBuilder,
    Sha256Digest,
};
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::error::Error;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::str::FromStr;

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// The non-root user the control-plane image runs as (the "nonroot" id distroless images use).
const CP_UID: u64 = 65532;
const CP_HOME: &str = "var/lib/cordon";
const CP_PORT: u16 = 18000;

#[derive(Parser)]
#[command(about = "Write Cordon's release images as reproducible OCI image layouts")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The filter module as a Wasm image, "compat" variant (one tar+gzip layer with plugin.wasm).
    Wasm {
        /// The module (dist/cordon.wasm).
        #[arg(long)]
        module: PathBuf,
        #[command(flatten)]
        meta: Meta,
    },
    /// The control plane: binaries under /usr/local/bin, their shared libraries, a non-root user.
    ControlPlane {
        /// A binary to put in /usr/local/bin; the first is the entrypoint. Repeat for more.
        #[arg(long = "binary", required = true)]
        binaries: Vec<PathBuf>,
        /// A shared library the binaries link (as `ldd` lists it), stored at the same path. Repeat.
        #[arg(long = "lib")]
        libs: Vec<PathBuf>,
        /// Platform architecture in the config (OCI/Go names: amd64, arm64).
        #[arg(long, default_value = "amd64")]
        arch: String,
        #[command(flatten)]
        meta: Meta,
    },
}

#[derive(clap::Args)]
struct Meta {
    /// The layout directory to write (replaced if it exists).
    #[arg(long)]
    out: PathBuf,
    /// The tag, recorded as the manifest's `org.opencontainers.image.ref.name` in index.json.
    #[arg(long)]
    tag: String,
    /// Creation time in seconds since the epoch: the config's `created`, every file's mtime.
    #[arg(long, env = "SOURCE_DATE_EPOCH", default_value_t = 0)]
    created: u64,
    /// Source revision (git commit) for the `org.opencontainers.image.revision` annotation.
    #[arg(long)]
    revision: Option<String>,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cordon-oci: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Wasm { module, meta } => wasm_image(&module, &meta),
        Cmd::ControlPlane { binaries, libs, arch, meta } => control_plane_image(&binaries, &libs, &arch, &meta),
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()).into())
}

fn wasm_image(module: &Path, meta: &Meta) -> Result<()> {
    let wasm = read(module)?;
    if !wasm.starts_with(b"\0asm") {
        return Err(format!("{} is not a WebAssembly module", module.display()).into());
    }
    let module_sha = hex::encode(Sha256::digest(&wasm));
    let entries = vec![Entry::file("plugin.wasm", wasm, 0o644, 0)];
    let mut annotations = standard_annotations(
        meta,
        "cordon-wasm",
        "Cordon proxy-wasm filter module (roles cordon.identity, cordon.redact, cordon.policy_stream)",
    );
    annotations.insert("module.wasm.image/variant".into(), "compat".into());
    annotations.insert("io.cordon.module.sha256".into(), module_sha.clone());
    let image = Image { entries, arch: Arch::Wasm, os: Os::Other("wasip1".into()), config: None, annotations };
    let digest = image.write(meta)?;
    println!("{}: manifest {digest} (plugin.wasm sha256 {module_sha})", meta.out.display());
    Ok(())
}

fn control_plane_image(binaries: &[PathBuf], libs: &[PathBuf], arch: &str, meta: &Meta) -> Result<()> {
    let mut entries = vec![
        Entry::file(
            "etc/passwd",
            format!("root:x:0:0:root:/root:/sbin/nologin\ncordon:x:{CP_UID}:{CP_UID}:cordon:/{CP_HOME}:/sbin/nologin\n").into_bytes(),
            0o644,
            0,
        ),
        Entry::file("etc/group", format!("root:x:0:\ncordon:x:{CP_UID}:\n").into_bytes(), 0o644, 0),
        Entry::file("etc/nsswitch.conf", b"hosts: files dns\n".to_vec(), 0o644, 0),
        Entry::dir("tmp", 0o1777, 0),
        Entry::dir(CP_HOME, 0o700, CP_UID),
    ];
    let mut entrypoint = None;
    for bin in binaries {
        let name = bin.file_name().and_then(|n| n.to_str()).ok_or_else(|| format!("{}: no file name", bin.display()))?;
        let path = format!("usr/local/bin/{name}");
        entrypoint.get_or_insert_with(|| format!("/{path}"));
        entries.push(Entry::file(&path, read(bin)?, 0o755, 0));
    }
    for lib in libs {
        let path = lib.to_str().ok_or("library path is not UTF-8")?.trim_start_matches('/');
        if path.is_empty() || path.split('/').any(|c| c == ".." || c == ".") {
            return Err(format!("{}: give the library's absolute path as ldd prints it", lib.display()).into());
        }
        entries.push(Entry::file(path, read(lib)?, 0o755, 0));
    }
    let config = ConfigBuilder::default()
        .user(format!("{CP_UID}:{CP_UID}"))
        .entrypoint(vec![entrypoint.ok_or("no binary")?])
        .env(vec!["PATH=/usr/local/bin".to_string(), format!("CORDON_LISTEN=0.0.0.0:{CP_PORT}")])
        .exposed_ports(vec![format!("{CP_PORT}/tcp")])
        .working_dir(format!("/{CP_HOME}"))
        .build()?;
    let annotations = standard_annotations(
        meta,
        "cordon-control-plane",
        "Cordon control plane (policy stream, admin API, signed audit trail) and cordonctl",
    );
    let image = Image { entries, arch: Arch::from(arch), os: Os::Linux, config: Some(config), annotations };
    let digest = image.write(meta)?;
    println!("{}: manifest {digest}", meta.out.display());
    Ok(())
}

fn standard_annotations(meta: &Meta, title: &str, description: &str) -> BTreeMap<String, String> {
    let mut a = BTreeMap::new();
    a.insert("org.opencontainers.image.title".into(), title.into());
    a.insert("org.opencontainers.image.description".into(), description.into());
    a.insert("org.opencontainers.image.version".into(), meta.tag.clone());
    a.insert("org.opencontainers.image.created".into(), rfc3339(meta.created));
    a.insert("org.opencontainers.image.licenses".into(), "Apache-2.0".into());
    if let Some(rev) = &meta.revision {
        a.insert("org.opencontainers.image.revision".into(), rev.clone());
    }
    a
}

struct Image {
    entries: Vec<Entry>,
    arch: Arch,
    os: Os,
    config: Option<oci_spec::image::Config>,
    annotations: BTreeMap<String, String>,
}

impl Image {
    /// Writes the layout and returns the manifest digest (`sha256:…`).
    fn write(self, meta: &Meta) -> Result<String> {
        let out = &meta.out;
        if out.exists() {
            std::fs::remove_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
        }
        std::fs::create_dir_all(out.join("blobs/sha256"))?;
        let (tar, gz) = layer(self.entries, meta.created)?;
        let diff_id = hex::encode(Sha256::digest(&tar));
        let layer_desc = put_blob(out, MediaType::ImageLayerGzip, &gz)?;

        let mut config = ImageConfigurationBuilder::default()
            .created(rfc3339(meta.created))
            .architecture(self.arch)
            .os(self.os)
            .rootfs(RootFsBuilder::default().typ("layers").diff_ids(vec![format!("sha256:{diff_id}")]).build()?)
            .build()?;
        if let Some(mut c) = self.config {
            c.set_labels(Some(hash_map(&self.annotations)));
            config.set_config(Some(c));
        }
        let config_desc = put_blob(out, MediaType::ImageConfig, &canonical_json(&config)?)?;

        let manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(config_desc)
            .layers(vec![layer_desc])
            .annotations(hash_map(&self.annotations))
            .build()?;
        let mut manifest_desc = put_blob(out, MediaType::ImageManifest, &canonical_json(&manifest)?)?;
        manifest_desc.set_annotations(Some(HashMap::from([("org.opencontainers.image.ref.name".to_string(), meta.tag.clone())])));
        let digest = manifest_desc.digest().to_string();

        let index =
            ImageIndexBuilder::default().schema_version(2u32).media_type(MediaType::ImageIndex).manifests(vec![manifest_desc]).build()?;
        std::fs::write(out.join("index.json"), canonical_json(&index)?)?;
        std::fs::write(out.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        Ok(digest)
    }
}

fn hash_map(m: &BTreeMap<String, String>) -> HashMap<String, String> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// Stores a blob under `blobs/sha256/<hex>` and returns its descriptor.
fn put_blob(out: &Path, media_type: MediaType, bytes: &[u8]) -> Result<Descriptor> {
    let hex = hex::encode(Sha256::digest(bytes));
    std::fs::write(out.join("blobs/sha256").join(&hex), bytes)?;
    Ok(Descriptor::new(media_type, bytes.len() as u64, Sha256Digest::from_str(&hex)?))
}

/// Compact JSON with every object's keys in sorted order, so the bytes (and digests) do not
/// depend on hash-map iteration order.
fn canonical_json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>> {
    fn sort(v: Value) -> Value {
        match v {
            Value::Object(map) => {
                let sorted: BTreeMap<String, Value> = map.into_iter().map(|(k, v)| (k, sort(v))).collect();
                Value::Object(sorted.into_iter().collect())
            }
            Value::Array(items) => Value::Array(items.into_iter().map(sort).collect()),
            other => other,
        }
    }
    Ok(serde_json::to_vec(&sort(serde_json::to_value(value)?))?)
}

enum Body {
    Dir,
    File(Vec<u8>),
}

struct Entry {
    path: String,
    body: Body,
    mode: u32,
    owner: u64,
}

impl Entry {
    fn file(path: &str, bytes: Vec<u8>, mode: u32, owner: u64) -> Entry {
        Entry { path: path.to_string(), body: Body::File(bytes), mode, owner }
    }
    fn dir(path: &str, mode: u32, owner: u64) -> Entry {
        Entry { path: path.to_string(), body: Body::Dir, mode, owner }
    }
}

/// The layer as (tar, tar+gzip). Parent directories are added (root-owned, 0755); entries are
/// written in path order with fixed mtimes and numeric owners only.
fn layer(mut entries: Vec<Entry>, mtime: u64) -> Result<(Vec<u8>, Vec<u8>)> {
    let mut paths: BTreeMap<String, usize> = BTreeMap::new();
    for (i, e) in entries.iter().enumerate() {
        if paths.insert(e.path.clone(), i).is_some() {
            return Err(format!("{} is in the layer twice", e.path).into());
        }
    }
    let mut parents = Vec::new();
    for e in &entries {
        let mut p = e.path.as_str();
        while let Some((parent, _)) = p.rsplit_once('/') {
            if !paths.contains_key(parent) && !parents.iter().any(|d: &Entry| d.path == parent) {
                parents.push(Entry::dir(parent, 0o755, 0));
            }
            p = parent;
        }
    }
    entries.extend(parents);
    entries.sort_by(|a, b| a.path.cmp(&b.path));

    let mut tar = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_ustar();
        h.set_mode(e.mode);
        h.set_uid(e.owner);
        h.set_gid(e.owner);
        h.set_mtime(mtime);
        match e.body {
            Body::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                tar.append_data(&mut h, format!("{}/", e.path), std::io::empty())?;
            }
            Body::File(bytes) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(bytes.len() as u64);
                tar.append_data(&mut h, &e.path, bytes.as_slice())?;
            }
        }
    }
    let tar = tar.into_inner()?;
    let mut gz = GzBuilder::new().mtime(0).operating_system(255).write(Vec::new(), Compression::best());
    gz.write_all(&tar)?;
    Ok((tar, gz.finish()?))
}

/// `YYYY-MM-DDTHH:MM:SSZ` for seconds since the epoch (civil-from-days, proleptic Gregorian).
fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_matches_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_767_225_599), "2025-12-31T23:59:59Z");
    }

    #[test]
    fn layer_bytes_do_not_depend_on_entry_order() {
        let a = layer(vec![Entry::file("a/b", b"1".to_vec(), 0o644, 0), Entry::file("c", b"2".to_vec(), 0o644, 0)], 7).unwrap();
        let b = layer(vec![Entry::file("c", b"2".to_vec(), 0o644, 0), Entry::file("a/b", b"1".to_vec(), 0o644, 0)], 7).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn canonical_json_sorts_keys() {
        let v: HashMap<&str, u8> = HashMap::from([("z", 1), ("a", 2), ("m", 3)]);
        assert_eq!(canonical_json(&v).unwrap(), br#"{"a":2,"m":3,"z":1}"#);
    }
}
