//! `cordonctl`: the operator's client for the admin API (gRPC).

use clap::{Parser, Subcommand, ValueEnum};
use cordon_proto::admin::v1::policy_admin_client::PolicyAdminClient;
use cordon_proto::admin::v1::*;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

#[derive(Parser)]
#[command(name = "cordonctl", version, about = "Manage Cordon policy, API keys and see which Envoy runs which version")]
struct Cli {
    /// Control plane address.
    #[arg(long, global = true, env = "CORDON_SERVER", default_value = "http://127.0.0.1:18000")]
    server: String,
    /// Admin bearer token.
    #[arg(long, global = true, env = "CORDON_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// File holding the admin bearer token.
    #[arg(long, global = true, env = "CORDON_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// PEM CA certificate that issued the control plane's server certificate (https:// servers).
    #[arg(long, global = true, env = "CORDON_CA_CERT")]
    ca_cert: Option<PathBuf>,
    /// PEM client certificate for control planes that require mTLS (with --client-key).
    #[arg(long, global = true, env = "CORDON_CLIENT_CERT", requires = "client_key")]
    client_cert: Option<PathBuf>,
    /// PEM private key of --client-cert.
    #[arg(long, global = true, env = "CORDON_CLIENT_KEY", requires = "client_cert")]
    client_key: Option<PathBuf>,
    /// Output format.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Output::Table)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Output {
    Table,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Validate, store and push a policy document (YAML or JSON; `-` for stdin).
    Apply {
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Show what would change; store and push nothing.
        #[arg(long)]
        dry_run: bool,
        /// Why (stored with the version).
        #[arg(short = 'm', long, default_value = "")]
        message: String,
    },
    /// Check a document without applying it (errors with line and column).
    Validate {
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// Show how a document differs from the current policy.
    Diff {
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// List policy versions, newest first.
    History {
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Include each version's diff.
        #[arg(long)]
        diff: bool,
    },
    /// Make an earlier version's document current again (as a new version).
    Rollback {
        version: u64,
        #[arg(short = 'm', long, default_value = "")]
        message: String,
    },
    /// Which node runs which version (SYNCED / STALE / NACKED / DISCONNECTED).
    Status,
    /// API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Node audit keys (the Ed25519 keys Envoy nodes sign their audit batches with).
    #[command(subcommand)]
    Nodes(NodesCommand),
    /// The audit trail: per-node state, export, verify, prove, query.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Requests and tokens per day, team, user, key and model, from verified audit records.
    Usage {
        /// First UTC day, YYYY-MM-DD (inclusive).
        #[arg(long, default_value = "")]
        since: String,
        /// Last UTC day, YYYY-MM-DD (inclusive).
        #[arg(long, default_value = "")]
        until: String,
        /// Group by: any of day,team,user,app,key,model (default day,team,key,model).
        #[arg(long, value_delimiter = ',')]
        by: Vec<String>,
    },
    /// Every token budget of the policy in force and what is left of it in the current window,
    /// per counter, fleet-wide (from verified audit records).
    Budgets,
    /// Read the admin log (auditor role).
    Log {
        #[arg(long, default_value_t = 0)]
        after: u64,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Issue a key; its plaintext is printed once and never stored.
    Create {
        #[arg(long)]
        id: String,
        #[arg(long)]
        user: String,
        #[arg(long)]
        team: String,
        #[arg(long, default_value = "")]
        app: String,
        /// Unix seconds after which the key is refused.
        #[arg(long)]
        expires_at: Option<u64>,
    },
    /// Revoke a key.
    Revoke { id: String },
    /// List keys (digests only).
    List,
}

#[derive(Subcommand)]
enum NodesCommand {
    /// Make a node key offline: the secret seed (base64) goes to --seed-out with mode 0600,
    /// for the Envoy's node-key variable; the public key is printed, to `nodes register`.
    Keygen {
        #[arg(long)]
        seed_out: PathBuf,
    },
    /// Register a node's audit public key (32-byte Ed25519, base64).
    Register {
        #[arg(long)]
        node: String,
        #[arg(long)]
        public_key: String,
    },
    /// Revoke every active audit key of a node; its later batches are refused.
    Revoke {
        #[arg(long)]
        node: String,
    },
    /// List registered node keys.
    List,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Each node's audit state: entries stored, next seq, last refusal.
    Nodes,
    /// Write the export (JSON lines: entries, batch signatures, heads, proofs) for cordon-verify.
    Export {
        /// Where to write the export (`-` for stdout).
        #[arg(long, default_value = "-")]
        out: PathBuf,
        /// Also write the node public keys here, one `NODE BASE64` line each (cordon-verify's
        /// --node-keys), and print the control-plane key.
        #[arg(long)]
        keys_out: Option<PathBuf>,
    },
    /// Recompute chains, batch signatures and tree heads from the database; name every changed row.
    Verify,
    /// Offline: the keyed digest of content you hold (e.g. a prompt the app logged), to compare
    /// with a record's request_digest / response_digest. Needs the fleet's content-digest key.
    Digest {
        /// `request` (as sent upstream) or `response` (as passed on to the app).
        #[arg(long)]
        direction: String,
        /// The environment variable holding the content-digest key (base64).
        #[arg(long, default_value = "CORDON_AUDIT_CONTENT_KEY")]
        key_env: String,
        /// The exact bytes (`-` for stdin).
        file: PathBuf,
    },
    /// Retention: prune the content of entries written before a UTC day (operator role). Their
    /// place, chain hash and leaf hash stay: the trail and older exports still verify.
    Retain {
        /// YYYY-MM-DD.
        #[arg(long)]
        before: String,
    },
    /// Inclusion proof of a node's entry against the newest signed tree head.
    Prove { node: String, seq: u64 },
    /// Check that the signed tree head of SIZE2 extends the one of SIZE1 (nothing under the
    /// older head was changed, removed or reordered): fetches both heads and the consistency
    /// proof, and verifies signatures and proof here, with cordon-audit's Merkle code.
    Consistency {
        /// Size of the older head (e.g. the last `head` line of an export you kept).
        size1: u64,
        /// Size of the newer head.
        size2: u64,
        /// The control plane's tree-head public key you trust (base64). Without it the key the
        /// control plane sends is used: that still proves consistency, not who signed.
        #[arg(long, env = "CORDON_CONTROL_PLANE_KEY")]
        control_plane_key: Option<String>,
    },
    /// Stored entries, oldest first.
    Query {
        #[arg(long, default_value = "")]
        node: String,
        /// Unix ms, inclusive.
        #[arg(long, default_value_t = 0)]
        since: i64,
        /// Unix ms, inclusive.
        #[arg(long, default_value_t = 0)]
        until: i64,
        /// allow, refuse, fail, or gap.
        #[arg(long, default_value = "")]
        decision: String,
        #[arg(long, default_value = "")]
        team: String,
        #[arg(long, default_value = "")]
        user: String,
        #[arg(long, default_value = "")]
        model: String,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

/// Why cordonctl failed.
#[derive(Debug, thiserror::Error)]
enum CtlError {
    #[error("{0}")]
    Usage(String),
    #[error("cannot reach the control plane at {server}: {} (check --server / CORDON_SERVER{hint})", source_chain(.source))]
    Connect { server: String, source: tonic::transport::Error, hint: &'static str },
    #[error("{}", status_text(.0))]
    Rpc(#[from] tonic::Status),
    #[error("writing {path}: {source}")]
    Write { path: String, source: std::io::Error },
    #[error("reading {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error(
        "audit consistency {from} -> {to} does NOT verify: {why}; keep the heads you hold and run `cordonctl audit verify` / cordon-verify with them pinned"
    )]
    Inconsistent { from: u64, to: u64, why: String },
    /// Already printed (e.g. validation errors).
    #[error("")]
    Reported,
}

/// The error with its causes (tonic's transport error alone says only "transport error").
fn source_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn status_text(s: &tonic::Status) -> String {
    let hint = match s.code() {
        tonic::Code::Unauthenticated => " (pass --token / CORDON_TOKEN or --token-file)",
        _ => "",
    };
    // Transport failures (e.g. a TLS alert after the handshake) carry the reason in the source.
    let text = match std::error::Error::source(s).map(source_chain) {
        // tonic's message for transport failures repeats the first link of the chain.
        Some(chain) if chain.starts_with(s.message()) => chain,
        Some(chain) => format!("{}: {chain}", s.message()),
        None => s.message().to_string(),
    };
    format!("{text}{hint}")
}

fn read_source(path: &Path) -> Result<String, CtlError> {
    let err = |source| CtlError::Read { path: path.display().to_string(), source };
    if path == Path::new("-") {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).map_err(err)?;
        return Ok(s);
    }
    std::fs::read_to_string(path).map_err(err)
}

fn token(cli: &Cli) -> Result<Option<String>, CtlError> {
    if let Some(t) = &cli.token {
        return Ok(Some(t.trim().to_string()));
    }
    match &cli.token_file {
        Some(p) => Ok(Some(read_source(p)?.trim().to_string())),
        None => Ok(None),
    }
}

fn request<T>(msg: T, token: &Option<String>) -> Result<tonic::Request<T>, CtlError> {
    let mut r = tonic::Request::new(msg);
    if let Some(t) = token {
        let v =
            format!("Bearer {t}").parse().map_err(|_| CtlError::Usage("the token contains characters not allowed in a header".into()))?;
        r.metadata_mut().insert("authorization", v);
    }
    Ok(r)
}

/// Pads columns; the last column is not padded.
fn dash_or(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let n = cells.len();
        let mut s = String::new();
        for (i, c) in cells.into_iter().enumerate() {
            if i + 1 == n {
                s.push_str(&c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out.push_str(&line(r));
    }
    out
}

/// Verifies what `AuditConsistency` returned, trusting nothing the control plane says but the
/// key, and that only when `trusted` is not given.
fn check_consistency(r: &AuditConsistencyResponse, from: u64, to: u64, trusted: Option<&str>) -> Result<String, CtlError> {
    use base64::Engine;
    use cordon_audit::export::{parse_head, parse_public_key};
    let fail = |why: String| CtlError::Inconsistent { from, to, why };
    let key = match trusted {
        Some(k) => parse_public_key(k).map_err(|e| CtlError::Usage(format!("--control-plane-key: {e}")))?,
        None => parse_public_key(&r.control_plane_key).map_err(|e| fail(format!("the control plane sent an unreadable key: {e}")))?,
    };
    let older = parse_head(&r.from_head).map_err(|e| fail(format!("head of size {from}: {e}")))?;
    let newer = parse_head(&r.to_head).map_err(|e| fail(format!("head of size {to}: {e}")))?;
    if (older.head.size, newer.head.size) != (from, to) {
        return Err(fail(format!(
            "the control plane sent heads of sizes {} and {}, not the ones asked for",
            older.head.size, newer.head.size
        )));
    }
    for h in [&older, &newer] {
        h.verify(&key).map_err(|e| fail(e.to_string()))?;
    }
    if newer.head.time_ms < older.head.time_ms {
        return Err(fail(format!("the head of size {to} was signed before the head of size {from}")));
    }
    let mut proof = Vec::with_capacity(r.proof.len());
    for (i, h) in r.proof.iter().enumerate() {
        let bytes = base64::engine::general_purpose::STANDARD.decode(h).ok().and_then(|b| <[u8; 32]>::try_from(b).ok());
        proof.push(bytes.ok_or_else(|| fail(format!("proof hash {i} is not 32 bytes of base64")))?);
    }
    cordon_audit::merkle::verify_consistency(from, to, &proof, &older.head.root, &newer.head.root).map_err(|e| {
        fail(format!("{e}: the head of size {to} does not extend the head of size {from} (history was rewritten, or the heads come from different logs)"))
    })?;
    let b64 = |h: &[u8; 32]| base64::engine::general_purpose::STANDARD.encode(h);
    let whose = if trusted.is_some() {
        "the key given with --control-plane-key"
    } else {
        "the key the control plane sent (pass --control-plane-key to check against one you trust)"
    };
    Ok(format!(
        "consistent: the head of size {to} (root {}, {}) extends the head of size {from} (root {}, {}); {} proof hashes\nheads signed by {} ({whose})\n",
        b64(&newer.head.root),
        time(i64::try_from(newer.head.time_ms).unwrap_or(i64::MAX)),
        b64(&older.head.root),
        time(i64::try_from(older.head.time_ms).unwrap_or(i64::MAX)),
        proof.len(),
        key.key_id(),
    ))
}

fn time(ms: i64) -> String {
    if ms <= 0 {
        return "-".into();
    }
    // RFC 3339 in UTC without pulling in a date crate: civil-from-days (H. Hinnant).
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}")) + "\n"
}

fn version_rows(vs: &[PolicyVersion]) -> Vec<Vec<String>> {
    vs.iter()
        .map(|v| {
            vec![
                v.version.clone(),
                time(v.created_at_unix_ms),
                v.author.clone(),
                v.sha256.chars().take(12).collect(),
                v.reason.clone(),
                v.message.clone(),
            ]
        })
        .collect()
}

const VERSION_HEADER: [&str; 6] = ["VERSION", "CREATED", "AUTHOR", "SHA256", "REASON", "MESSAGE"];

fn print_apply(r: &ApplyResponse, output: Output) -> String {
    if output == Output::Json {
        return json(r);
    }
    let mut s = r.diff.clone();
    let v = r.version.as_ref().map(|v| v.version.clone()).unwrap_or_else(|| "(none)".into());
    s.push_str(&match (r.dry_run, r.changed) {
        (true, true) => format!("dry run: would create a new version after {v}; nothing stored\n"),
        (true, false) => format!("dry run: no change against version {v}\n"),
        (false, true) => format!("applied: version {v} is now current and being pushed\n"),
        (false, false) => format!("unchanged: version {v} already has this policy\n"),
    });
    s
}

fn read_file(path: &Path) -> Result<Vec<u8>, CtlError> {
    std::fs::read(path).map_err(|source| CtlError::Read { path: path.display().to_string(), source })
}

/// TLS settings for an `https://` server: the CA to trust, and a client certificate for mTLS.
fn tls_config(cli: &Cli) -> Result<Option<ClientTlsConfig>, CtlError> {
    let https = cli.server.starts_with("https://");
    if !https {
        if cli.ca_cert.is_some() || cli.client_cert.is_some() {
            return Err(CtlError::Usage(format!("--ca-cert / --client-cert need an https:// server (got `{}`)", cli.server)));
        }
        return Ok(None);
    }
    let Some(ca) = &cli.ca_cert else {
        return Err(CtlError::Usage("an https:// server needs --ca-cert (CORDON_CA_CERT): the PEM CA that issued its certificate".into()));
    };
    let mut cfg = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read_file(ca)?));
    if let (Some(cert), Some(key)) = (&cli.client_cert, &cli.client_key) {
        cfg = cfg.identity(Identity::from_pem(read_file(cert)?, read_file(key)?));
    }
    Ok(Some(cfg))
}

/// Writes a fresh node seed to `path` (0600, refusing to overwrite) and returns the public key.
/// The same HMAC the filter computes (`cordon_audit::digest`), over the file's exact bytes.
fn content_digest(direction: &str, key_env: &str, file: &std::path::Path) -> Result<String, CtlError> {
    use base64::Engine as _;
    use cordon_audit::record::Direction;
    use std::io::Read;
    let direction = match direction {
        "request" => Direction::Request,
        "response" => Direction::Response,
        other => return Err(CtlError::Usage(format!("--direction must be request or response, not `{other}`"))),
    };
    let secret = std::env::var(key_env).map_err(|_| CtlError::Usage(format!("the content-digest key variable {key_env} is not set")))?;
    let raw =
        base64::engine::general_purpose::STANDARD.decode(secret.trim()).map_err(|_| CtlError::Usage(format!("{key_env} is not base64")))?;
    let key = cordon_audit::digest::ContentKey::new(&raw).map_err(|e| CtlError::Usage(format!("{key_env}: {e}")))?;
    let mut content = Vec::new();
    let read = if file.as_os_str() == "-" {
        std::io::stdin().read_to_end(&mut content)
    } else {
        std::fs::File::open(file).and_then(|mut f| f.read_to_end(&mut content))
    };
    read.map_err(|source| CtlError::Read { path: file.display().to_string(), source })?;
    Ok(format!("{}\n", cordon_audit::hex(&key.digest(direction, &content))))
}

fn keygen(path: &std::path::Path) -> Result<String, CtlError> {
    use base64::Engine as _;
    use std::io::{Read, Write};
    let mut seed = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut seed))
        .map_err(|source| CtlError::Read { path: "/dev/urandom".into(), source })?;
    let signer = cordon_audit::keys::Signer::from_seed(&seed);
    let b64 = base64::engine::general_purpose::STANDARD;
    let write = || -> std::io::Result<()> {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(path)?;
        f.write_all(b64.encode(seed).as_bytes())?;
        f.write_all(b"\n")
    };
    write().map_err(|source| CtlError::Write { path: path.display().to_string(), source })?;
    Ok(format!(
        "node key {} written to {} (keep it secret; give it to Envoy as the node_key_env variable)\npublic key: {}\n",
        signer.key_id(),
        path.display(),
        b64.encode(signer.public_key())
    ))
}

/// Each node's audit state as a table (`audit nodes`, and the audit part of `status`).
fn audit_nodes_table(r: &AuditNodesResponse) -> String {
    let rows = r
        .nodes
        .iter()
        .map(|n| {
            vec![
                n.node_id.clone(),
                n.entries.to_string(),
                n.next_seq.to_string(),
                time(n.last_batch_unix_ms),
                // Numbers the node's run has used beyond what is stored: on their way, or owed to
                // exchanges in flight (a `restart` gap names them if the node dies).
                n.claimed_through.map_or("-".into(), |c| (c + 1).saturating_sub(n.next_seq).to_string()),
                n.refused.to_string(),
                if n.last_error.is_empty() { "-".into() } else { format!("{} {}", time(n.last_error_unix_ms), n.last_error) },
            ]
        })
        .collect();
    table(&["NODE", "ENTRIES", "NEXT SEQ", "LAST BATCH", "PENDING", "REFUSED BATCHES", "LAST ERROR"], rows)
}

async fn run(cli: Cli) -> Result<String, CtlError> {
    if let Command::Nodes(NodesCommand::Keygen { seed_out }) = &cli.command {
        return keygen(seed_out);
    }
    if let Command::Audit(AuditCommand::Digest { direction, key_env, file }) = &cli.command {
        return content_digest(direction, key_env, file);
    }
    let token = token(&cli)?;
    let mut endpoint = Channel::from_shared(cli.server.clone())
        .map_err(|e| CtlError::Usage(format!("bad --server `{}`: {e}", cli.server)))?
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(30));
    let tls = tls_config(&cli)?;
    let hint = if tls.is_some() { ", --ca-cert, --client-cert/--client-key" } else { "" };
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls).map_err(|source| CtlError::Connect { server: cli.server.clone(), source, hint })?;
    }
    let channel = endpoint.connect().await.map_err(|source| CtlError::Connect { server: cli.server.clone(), source, hint })?;
    let mut c = PolicyAdminClient::new(channel);
    let out = cli.output;
    Ok(match cli.command {
        Command::Apply { file, dry_run, message } => {
            let source = read_source(&file)?;
            let r = c.apply(request(ApplyRequest { source, dry_run, message }, &token)?).await?.into_inner();
            print_apply(&r, out)
        }
        Command::Validate { file } => {
            let source = read_source(&file)?;
            let r = c.validate(request(ValidateRequest { source }, &token)?).await?.into_inner();
            if out == Output::Json {
                print!("{}", json(&r));
                if !r.valid {
                    return Err(CtlError::Reported);
                }
                return Ok(String::new());
            }
            if r.valid {
                format!("{}: valid\n", file.display())
            } else {
                for e in &r.errors {
                    let at = if e.line > 0 { format!(":{}:{}", e.line, e.column) } else { String::new() };
                    let path = if e.path.is_empty() { String::new() } else { format!(" [{}]", e.path) };
                    eprintln!("{}{at}: {}{path}", file.display(), e.message);
                }
                return Err(CtlError::Reported);
            }
        }
        Command::Diff { file } => {
            let source = read_source(&file)?;
            let r = c.diff(request(DiffRequest { source }, &token)?).await?.into_inner();
            if out == Output::Json {
                json(&r)
            } else if r.changed {
                r.diff
            } else {
                format!("no change against version {}\n", r.base_version)
            }
        }
        Command::History { limit, diff } => {
            let r = c.history(request(HistoryRequest { limit, include_diff: diff }, &token)?).await?.into_inner();
            if out == Output::Json {
                json(&r)
            } else if diff {
                r.versions.iter().map(|v| table(&VERSION_HEADER, version_rows(std::slice::from_ref(v))) + &v.diff + "\n").collect()
            } else {
                table(&VERSION_HEADER, version_rows(&r.versions))
            }
        }
        Command::Rollback { version, message } => {
            let r = c.rollback(request(RollbackRequest { to_version: version, message }, &token)?).await?.into_inner();
            print_apply(&r, out)
        }
        Command::Status => {
            let r = c.status(request(StatusRequest {}, &token)?).await?.into_inner();
            if out == Output::Json {
                json(&r)
            } else {
                let rows = r
                    .nodes
                    .iter()
                    .map(|n| {
                        let detail = if n.state == "NACKED" { n.last_nack_error.clone() } else { String::new() };
                        vec![
                            n.node_id.clone(),
                            n.cluster.clone(),
                            n.state.clone(),
                            if n.acked_version.is_empty() { "-".into() } else { n.acked_version.clone() },
                            if n.pending_version.is_empty() { "-".into() } else { n.pending_version.clone() },
                            time(n.connected_since_unix_ms),
                            detail,
                        ]
                    })
                    .collect();
                let current = if r.current_version.is_empty() { "(none)".to_string() } else { r.current_version.clone() };
                let mut text = format!("current version: {current}\n")
                    + &table(&["NODE", "CLUSTER", "STATE", "ACKED", "PENDING", "CONNECTED SINCE", "LAST NACK"], rows);
                // The audit side of each node (refused batches show here too).
                if let Ok(a) = c.audit_nodes(request(AuditNodesRequest {}, &token)?).await {
                    let a = a.into_inner();
                    if !a.nodes.is_empty() {
                        text += "\naudit trail:\n";
                        text += &audit_nodes_table(&a);
                    }
                }
                text
            }
        }
        Command::Keys(KeysCommand::Create { id, user, team, app, expires_at }) => {
            let req = CreateKeyRequest { id, user, team, app, expires_at: expires_at.unwrap_or(0) };
            let r = c.create_key(request(req, &token)?).await?.into_inner();
            if out == Output::Json {
                json(&r)
            } else {
                let v = r.version.as_ref().map(|v| v.version.clone()).unwrap_or_default();
                let id = r.key.as_ref().map(|k| k.id.clone()).unwrap_or_default();
                format!("{}\n", r.plaintext)
                    + &format!("key `{id}` created in policy version {v}; the key above is shown once and not stored\n")
            }
        }
        Command::Keys(KeysCommand::Revoke { id }) => {
            let r = c.revoke_key(request(RevokeKeyRequest { id }, &token)?).await?.into_inner();
            if out == Output::Json {
                json(&r)
            } else {
                let v = r.version.as_ref().map(|v| v.version.clone()).unwrap_or_default();
                format!("key `{}` revoked; policy version {v}\n", r.key.as_ref().map(|k| k.id.as_str()).unwrap_or(""))
            }
        }
        Command::Keys(KeysCommand::List) => {
            let r = c.list_keys(request(ListKeysRequest {}, &token)?).await?.into_inner();
            if out == Output::Json {
                json(&r)
            } else {
                let rows = r
                    .keys
                    .iter()
                    .map(|k| {
                        let exp = if k.expires_at == 0 {
                            "-".into()
                        } else {
                            time(i64::try_from(k.expires_at).unwrap_or(i64::MAX / 1000) * 1000)
                        };
                        vec![
                            k.id.clone(),
                            k.user.clone(),
                            k.team.clone(),
                            k.app.clone(),
                            k.status.clone(),
                            exp,
                            k.sha256.chars().take(12).collect(),
                        ]
                    })
                    .collect();
                table(&["ID", "USER", "TEAM", "APP", "STATUS", "EXPIRES", "SHA256"], rows)
            }
        }
        Command::Nodes(NodesCommand::Register { node, public_key }) => {
            let r = c.register_node_key(request(RegisterNodeKeyRequest { node_id: node, public_key }, &token)?).await?.into_inner();
            if out == Output::Json {
                json(&r)
            } else {
                let k = r.key.unwrap_or_default();
                format!("registered key {} for node `{}`\n", k.key_id, k.node_id)
            }
        }
        Command::Nodes(NodesCommand::Revoke { node }) => {
            let r = c.revoke_node_key(request(RevokeNodeKeyRequest { node_id: node.clone() }, &token)?).await?.into_inner();
            if out == Output::Json {
                json(&r)
            } else {
                let ids: Vec<&str> = r.keys.iter().map(|k| k.key_id.as_str()).collect();
                format!("revoked {} of node `{node}`; its new batches are refused\n", ids.join(", "))
            }
        }
        Command::Nodes(NodesCommand::Keygen { seed_out }) => keygen(&seed_out)?,
        Command::Nodes(NodesCommand::List) => {
            let r = c.list_node_keys(request(ListNodeKeysRequest {}, &token)?).await?.into_inner();
            if out == Output::Json {
                json(&r)
            } else {
                let rows = r
                    .keys
                    .iter()
                    .map(|k| {
                        vec![
                            k.node_id.clone(),
                            k.key_id.clone(),
                            k.status.clone(),
                            time(k.created_at_unix_ms),
                            k.created_by.clone(),
                            time(k.revoked_at_unix_ms),
                        ]
                    })
                    .collect();
                table(&["NODE", "KEY ID", "STATUS", "REGISTERED", "BY", "REVOKED"], rows)
            }
        }
        Command::Audit(AuditCommand::Nodes) => {
            let r = c.audit_nodes(request(AuditNodesRequest {}, &token)?).await?.into_inner();
            if out == Output::Json { json(&r) } else { audit_nodes_table(&r) }
        }
        Command::Audit(AuditCommand::Export { out: path, keys_out }) => {
            let r = c.audit_export(request(AuditExportRequest {}, &token)?).await?.into_inner();
            if let Some(p) = keys_out {
                // cordon-verify's --node-keys format; revoked keys stay: they signed earlier entries.
                let text: String = r.node_keys.iter().map(|k| format!("{} {}\n", k.node_id, k.public_key)).collect();
                std::fs::write(&p, text).map_err(|source| CtlError::Write { path: p.display().to_string(), source })?;
                eprintln!("node keys written to {}; control-plane key (--control-plane-key): {}", p.display(), r.control_plane_key);
            }
            if path == Path::new("-") {
                r.export
            } else {
                std::fs::write(&path, &r.export).map_err(|source| CtlError::Write { path: path.display().to_string(), source })?;
                format!("wrote {} lines to {}\n", r.export.lines().count(), path.display())
            }
        }
        Command::Audit(AuditCommand::Retain { before }) => {
            let r = c.audit_retain(request(AuditRetainRequest { before_day: before.clone() }, &token)?).await?.into_inner();
            if out == Output::Json {
                json(&r)
            } else {
                format!(
                    "pruned the content of {} entries written before {before} (entries under the signed head of size {}); the trail still verifies\n",
                    r.pruned, r.covered_by_head
                )
            }
        }
        Command::Audit(AuditCommand::Digest { direction, key_env, file }) => content_digest(&direction, &key_env, &file)?,
        Command::Audit(AuditCommand::Verify) => {
            let r = c.audit_verify(request(AuditVerifyRequest {}, &token)?).await?.into_inner();
            if out == Output::Json {
                print!("{}", json(&r));
            } else if r.ok {
                println!(
                    "audit trail verified: {} entries, {} signed heads; chains, batch signatures and heads all check",
                    r.entries, r.heads
                );
            } else {
                for p in &r.problems {
                    eprintln!("{p}");
                }
                eprintln!("audit trail does NOT verify: {} problems in {} entries", r.problems.len(), r.entries);
            }
            if !r.ok {
                return Err(CtlError::Reported);
            }
            String::new()
        }
        Command::Audit(AuditCommand::Prove { node, seq }) => {
            let r = c.audit_prove(request(AuditProveRequest { node_id: node.clone(), seq }, &token)?).await?.into_inner();
            if out == Output::Json {
                json(&r)
            } else {
                format!("node {node} seq {seq} is leaf {}\nentry: {}\nproof: {}\nhead: {}\n", r.leaf, r.entry, r.proof.join(" "), r.head)
            }
        }
        Command::Audit(AuditCommand::Consistency { size1, size2, control_plane_key }) => {
            let q = AuditConsistencyRequest { from_size: size1, to_size: size2 };
            let r = c.audit_consistency(request(q, &token)?).await?.into_inner();
            let text = check_consistency(&r, size1, size2, control_plane_key.as_deref())?;
            if out == Output::Json { json(&r) } else { text }
        }
        Command::Audit(AuditCommand::Query { node, since, until, decision, team, user, model, limit }) => {
            let q = AuditQueryRequest { node_id: node, since_unix_ms: since, until_unix_ms: until, decision, team, user, model, limit };
            let r = c.audit_query(request(q, &token)?).await?.into_inner();
            if out == Output::Json {
                json(&r)
            } else {
                let rows = r
                    .entries
                    .iter()
                    .map(|e| {
                        vec![
                            e.leaf.to_string(),
                            time(e.time_unix_ms),
                            e.node_id.clone(),
                            e.seq.to_string(),
                            e.decision.clone(),
                            e.reason.clone(),
                            e.team.clone(),
                            e.user.clone(),
                            e.model.clone(),
                            if e.status == 0 { "-".into() } else { e.status.to_string() },
                        ]
                    })
                    .collect();
                table(&["LEAF", "TIME", "NODE", "SEQ", "DECISION", "REASON", "TEAM", "USER", "MODEL", "STATUS"], rows)
            }
        }
        Command::Usage { since, until, by } => {
            let r = c.usage(request(UsageRequest { since_day: since, until_day: until, by }, &token)?).await?.into_inner();
            if out == Output::Json {
                json(&r)
            } else {
                let rows = r
                    .rows
                    .iter()
                    .map(|u| {
                        vec![
                            dash_or(&u.day).to_owned(),
                            dash_or(&u.team).to_owned(),
                            dash_or(&u.user).to_owned(),
                            dash_or(&u.app).to_owned(),
                            dash_or(&u.key_id).to_owned(),
                            dash_or(&u.model).to_owned(),
                            u.requests.to_string(),
                            u.refused.to_string(),
                            u.prompt_tokens.to_string(),
                            u.completion_tokens.to_string(),
                            u.total_tokens.to_string(),
                            u.estimated.to_string(),
                        ]
                    })
                    .collect();
                table(
                    &["DAY", "TEAM", "USER", "APP", "KEY", "MODEL", "REQUESTS", "REFUSED", "PROMPT", "COMPLETION", "TOTAL", "ESTIMATED"],
                    rows,
                )
            }
        }
        Command::Budgets => {
            let r = c.budgets(request(BudgetsRequest {}, &token)?).await?.into_inner();
            if out == Output::Json {
                json(&r)
            } else {
                let rows = r
                    .rows
                    .iter()
                    .map(|b| {
                        vec![
                            b.limit.clone(),
                            if b.counter.is_empty() { "(none used)".to_owned() } else { b.counter.clone() },
                            format!("{} {}", b.per, b.window_start_day),
                            b.count.clone(),
                            b.tokens.to_string(),
                            b.used.to_string(),
                            b.remaining.to_string(),
                            b.resets_day.clone(),
                            b.estimated.to_string(),
                        ]
                    })
                    .collect();
                let mut text = format!("policy {}; used = verified audit records across every Envoy\n", dash_or(&r.policy_version));
                text.push_str(&table(&["BUDGET", "COUNTER", "WINDOW", "COUNTS", "TOKENS", "USED", "LEFT", "RESETS", "ESTIMATED"], rows));
                text
            }
        }
        Command::Log { after, limit } => {
            let r = c.admin_log(request(AdminLogRequest { after_seq: after, limit }, &token)?).await?.into_inner();
            if out == Output::Json {
                json(&r)
            } else {
                let rows = r
                    .entries
                    .iter()
                    .map(|e| {
                        vec![e.seq.to_string(), time(e.at_unix_ms), e.actor.clone(), e.action.clone(), e.target.clone(), e.outcome.clone()]
                    })
                    .collect();
                table(&["SEQ", "AT", "ACTOR", "ACTION", "TARGET", "OUTCOME"], rows)
            }
        }
    })
}

/// Entry point of the `cordonctl` binary.
fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cordonctl: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let tls_without_cert = cli.server.starts_with("https://") && cli.client_cert.is_none();
    match rt.block_on(run(cli)) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(CtlError::Reported) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("cordonctl: {e}");
            let transport = matches!(&e, CtlError::Rpc(s) if std::error::Error::source(s).is_some());
            if transport && tls_without_cert {
                eprintln!(
                    "cordonctl: hint: a control plane started with --tls-client-ca closes connections without a client certificate; pass --client-cert and --client-key (CORDON_CLIENT_CERT, CORDON_CLIENT_KEY)"
                );
            }
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_time() {
        assert_eq!(super::time(0), "-");
        assert_eq!(super::time(1_700_000_000_000), "2023-11-14T22:13:20Z");
    }
}
