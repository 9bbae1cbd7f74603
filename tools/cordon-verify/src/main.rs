//! `cordon-verify`: checks a Cordon audit export offline with nothing but the public keys.
//!
//! All the checking lives in `cordon_audit::export::verify_export`, the same code the control
//! plane uses; this binary only reads files and prints.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use cordon_audit::batch::NodeKeys;
use cordon_audit::export::{Trust, parse_head, parse_public_key, verify_export};
use cordon_audit::record::Ident;
use cordon_audit::{hex, key_id};

/// Verify a Cordon audit export offline: batch signatures, per-node chains and gaps, signed
/// tree heads, inclusion of every entry and consistency between heads.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The export (JSON lines, from `cordonctl audit export`).
    export: PathBuf,
    /// A node's public key as NODE=BASE64 (repeatable).
    #[arg(long = "node-key", value_name = "NODE=BASE64")]
    node_keys: Vec<String>,
    /// A file of node keys, one `NODE BASE64` per line (`#` starts a comment).
    #[arg(long = "node-keys", value_name = "FILE")]
    node_keys_file: Option<PathBuf>,
    /// The control plane's tree-head public key, base64.
    #[arg(long = "control-plane-key", value_name = "BASE64")]
    control_plane_key: String,
    /// A head line you kept from earlier (file): the export must extend it (repeatable).
    #[arg(long = "pinned-head", value_name = "FILE")]
    pinned: Vec<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("cordon-verify: {e}");
            ExitCode::from(2)
        }
    }
}

fn read(path: &PathBuf) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn add_node_key(keys: &mut NodeKeys, node: &str, b64: &str, whence: &str) -> Result<(), String> {
    let node = Ident::new("node", node.trim()).map_err(|e| format!("{whence}: {e}"))?;
    let key = parse_public_key(b64).map_err(|e| format!("{whence}: node {node}: {e}"))?;
    keys.add(node, &key.to_bytes()).map_err(|e| format!("{whence}: {e}"))
}

fn run(args: &Args) -> Result<bool, String> {
    let mut nodes = NodeKeys::default();
    for spec in &args.node_keys {
        let (node, b64) = spec.split_once('=').ok_or_else(|| format!("--node-key {spec:?}: expected NODE=BASE64"))?;
        add_node_key(&mut nodes, node, b64, "--node-key")?;
    }
    if let Some(path) = &args.node_keys_file {
        for (i, line) in read(path)?.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let (node, b64) =
                line.split_once(char::is_whitespace).ok_or_else(|| format!("{}:{}: expected `NODE BASE64`", path.display(), i + 1))?;
            add_node_key(&mut nodes, node, b64, &format!("{}:{}", path.display(), i + 1))?;
        }
    }
    let control_plane = parse_public_key(&args.control_plane_key).map_err(|e| format!("--control-plane-key: {e}"))?;
    let mut pinned = Vec::new();
    for path in &args.pinned {
        pinned.push(parse_head(&read(path)?).map_err(|e| format!("{}: {e}", path.display()))?);
    }
    let text = read(&args.export)?;
    let trust = Trust { nodes, control_plane: control_plane.clone(), pinned };
    match verify_export(&text, &trust) {
        Ok(s) => {
            println!(
                "OK: {} entries ({} records, {} gap entries, {} pruned by retention) from {} nodes, {} signed tree heads",
                s.entries,
                s.records,
                s.gaps.len(),
                s.pruned,
                s.nodes.len(),
                s.heads
            );
            for (node, n) in &s.nodes {
                println!("  node {node}: {n} entries, chain intact");
            }
            for (node, from, to, reason) in &s.gaps {
                println!("  gap: node {node} dropped seq {from}..={to} ({} records, {})", to - from + 1, reason.as_str());
            }
            println!(
                "  latest head: size {} root {} time_ms {} signed by {}",
                s.last_head.size,
                hex(&s.last_head.root),
                s.last_head.time_ms,
                key_id(&control_plane.to_bytes())
            );
            for p in &trust.pinned {
                println!("  extends the pinned head of size {}", p.head.size);
            }
            Ok(true)
        }
        Err(problems) => {
            println!("FAILED: {} problem(s)", problems.len());
            for p in problems {
                println!("  {p}");
            }
            Ok(false)
        }
    }
}
