//! `cordon-control-plane`: serves policy to Cordon filters and the admin API to cordonctl.

use clap::{Parser, Subcommand};
use cordon_control_plane::auth::Tokens;
use cordon_control_plane::server::{self, ServerConfig};
use cordon_control_plane::signing::BundleSigner;
use cordon_control_plane::store::{PolicyStore, PostgresStore, SqliteStore};
use cordon_control_plane::tls::TlsFiles;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(version, about = "Cordon control plane: policy store, policy stream to Envoy filters, admin API")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address for gRPC (policy stream, admin, health, reflection) and HTTP (admin JSON, /metrics).
    #[arg(long, env = "CORDON_LISTEN", default_value = "127.0.0.1:18000")]
    listen: SocketAddr,
    /// Embedded mode: SQLite database (and, if not given otherwise, a generated signing key and
    /// admin token) in this directory.
    #[arg(long, env = "CORDON_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// PostgreSQL instead of SQLite, e.g. "host=db user=cordon dbname=cordon" (several replicas).
    #[arg(long, env = "CORDON_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// File holding the Ed25519 signing seed (base64 or hex). Alternatively set
    /// CORDON_SIGNING_KEY to the seed itself.
    #[arg(long, env = "CORDON_SIGNING_KEY_FILE")]
    signing_key_file: Option<PathBuf>,
    /// File with admin tokens, one `NAME ROLES TOKEN` per line. Alternatively set
    /// CORDON_ADMIN_TOKENS to the same text.
    #[arg(long, env = "CORDON_ADMIN_TOKENS_FILE")]
    admin_tokens_file: Option<PathBuf>,
    /// How often to check the store for versions written by other replicas.
    #[arg(long, env = "CORDON_POLL_INTERVAL_MS", default_value_t = 1000)]
    poll_interval_ms: u64,
    /// Serve TLS on the port with this PEM certificate chain (needs --tls-key).
    #[arg(long, env = "CORDON_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert (a runtime secret; never logged).
    #[arg(long, env = "CORDON_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// PEM CA certificate(s): every connection (Envoy nodes, cordonctl, HTTP) must then present
    /// a client certificate issued by one of them (mTLS). Needs --tls-cert.
    #[arg(long, env = "CORDON_TLS_CLIENT_CA", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// Keep fleet-wide rate-limit counters in this Redis (`redis://[:password@]host:port/db`),
    /// shared by every replica; without it they live in this process (one replica only).
    #[arg(long, env = "CORDON_RATELIMIT_REDIS_URL", hide_env_values = true)]
    ratelimit_redis_url: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Create a new signing key file and print its public key.
    Keygen {
        /// Where to write the seed (created with mode 0600; never overwritten).
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the public key the filters must trust (same key options as serving).
    PublicKey,
}

#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Signing(#[from] cordon_control_plane::signing::SigningKeyError),
    #[error(transparent)]
    Tokens(#[from] cordon_control_plane::auth::TokenConfigError),
    #[error(transparent)]
    Store(#[from] cordon_control_plane::store::StoreError),
    #[error(transparent)]
    Server(#[from] server::ServerError),
    #[error(transparent)]
    Tls(#[from] cordon_control_plane::tls::TlsError),
    #[error("--ratelimit-redis-url: {0}")]
    RateLimit(#[from] cordon_control_plane::ratelimit::CounterError),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
}

fn trusted_key_json(s: &BundleSigner) -> String {
    serde_json::json!({ "key_id": s.key_id(), "public_key": s.public_key_base64() }).to_string()
}

fn signer(args: &ServeArgs) -> Result<BundleSigner, StartError> {
    if let Ok(text) = std::env::var("CORDON_SIGNING_KEY") {
        return Ok(BundleSigner::from_secret_text(&text, "CORDON_SIGNING_KEY")?);
    }
    if let Some(path) = &args.signing_key_file {
        return Ok(BundleSigner::from_file(path)?);
    }
    match &args.data_dir {
        Some(dir) => {
            let path = dir.join("signing.key");
            tracing::warn!(path = %path.display(), "no signing key configured; using (or creating) one in the data directory — fine for a demo, use CORDON_SIGNING_KEY(_FILE) in production");
            Ok(BundleSigner::load_or_create(&path)?)
        }
        None => Err(StartError::Config(
            "no signing key: set CORDON_SIGNING_KEY or --signing-key-file (create one with `cordon-control-plane keygen --out FILE`)"
                .into(),
        )),
    }
}

fn random_token() -> String {
    use base64::Engine;
    use rand::RngCore;
    let mut b = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn write_private(path: &Path, text: &str) -> Result<(), StartError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| StartError::Io { what: format!("writing {}", path.display()), source };
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(io)?;
    f.write_all(text.as_bytes()).map_err(io)
}

fn tokens(args: &ServeArgs) -> Result<Tokens, StartError> {
    if let Ok(text) = std::env::var("CORDON_ADMIN_TOKENS") {
        return Ok(Tokens::parse(&text)?);
    }
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|source| StartError::Io { what: format!("reading {}", path.display()), source })
    };
    if let Some(path) = &args.admin_tokens_file {
        return Ok(Tokens::parse(&read(path)?)?);
    }
    match &args.data_dir {
        Some(dir) => {
            let (file, single) = (dir.join("admin-tokens"), dir.join("admin.token"));
            if !file.exists() {
                let token = random_token();
                write_private(&file, &format!("admin operator,auditor {token}\n"))?;
                write_private(&single, &format!("{token}\n"))?;
                eprintln!(
                    "created an admin token (roles operator,auditor) in {}; use: cordonctl --token-file {}",
                    file.display(),
                    single.display()
                );
            }
            Ok(Tokens::parse(&read(&file)?)?)
        }
        None => Err(StartError::Config("no admin tokens: set CORDON_ADMIN_TOKENS or --admin-tokens-file".into())),
    }
}

async fn store(args: &ServeArgs) -> Result<Arc<dyn PolicyStore>, StartError> {
    if let Some(url) = &args.database_url {
        return Ok(Arc::new(PostgresStore::connect(url).await?));
    }
    let Some(dir) = &args.data_dir else {
        return Err(StartError::Config("choose a store: --data-dir DIR (SQLite) or --database-url (PostgreSQL)".into()));
    };
    std::fs::create_dir_all(dir).map_err(|source| StartError::Io { what: format!("creating {}", dir.display()), source })?;
    Ok(Arc::new(SqliteStore::open(&dir.join("cordon.db"))?))
}

fn tls(args: &ServeArgs) -> Result<Option<Arc<rustls::ServerConfig>>, StartError> {
    let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) else {
        return Ok(None);
    };
    let files = TlsFiles { cert: cert.clone(), key: key.clone(), client_ca: args.tls_client_ca.clone() };
    let cfg = cordon_control_plane::tls::server_config(&files)?;
    match &files.client_ca {
        Some(ca) => tracing::info!(cert = %cert.display(), client_ca = %ca.display(), "TLS on; client certificates required"),
        None => tracing::info!(cert = %cert.display(), "TLS on; no client certificates asked for"),
    }
    Ok(Some(cfg))
}

async fn serve(args: ServeArgs) -> Result<(), StartError> {
    // TLS files first: a wrong path fails before anything is created or bound.
    let tls = tls(&args)?;
    if let Some(dir) = &args.data_dir {
        std::fs::create_dir_all(dir).map_err(|source| StartError::Io { what: format!("creating {}", dir.display()), source })?;
    }
    let signer = signer(&args)?;
    let tokens = tokens(&args)?;
    if tokens.is_empty() {
        tracing::warn!("no admin tokens configured: every admin call will be refused");
    }
    let store = store(&args).await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|source| StartError::Io { what: format!("binding {}", args.listen), source })?;
    let trusted = trusted_key_json(&signer);
    let mut cfg = ServerConfig::new(store, signer, tokens);
    cfg.poll_interval = Duration::from_millis(args.poll_interval_ms.max(50));
    cfg.tls = tls;
    if let Some(url) = &args.ratelimit_redis_url {
        cfg.rate_limit_counters = Arc::new(cordon_control_plane::ratelimit::redis::RedisCounters::new(url)?);
    }
    let running = server::start(listener, cfg).await?;
    // One line a script can wait for and parse.
    println!("cordon-control-plane listening on {} trusted_key={trusted}", running.addr);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|source| StartError::Io { what: "installing the SIGTERM handler".into(), source })?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    running.shutdown().await;
    Ok(())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("CORDON_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Keygen { out }) => {
            let s = BundleSigner::generate();
            s.write_seed(&out).map(|()| println!("{}", trusted_key_json(&s))).map_err(StartError::from)
        }
        Some(Command::PublicKey) => signer(&cli.serve).map(|s| println!("{}", trusted_key_json(&s))),
        None => match tokio::runtime::Runtime::new() {
            Ok(rt) => rt.block_on(serve(cli.serve)),
            Err(e) => Err(StartError::Io { what: "starting the runtime".into(), source: e }),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cordon-control-plane: {e}");
            ExitCode::FAILURE
        }
    }
}
