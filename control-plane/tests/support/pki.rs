//! A test PKI (rcgen) and a TLS control plane on a free loopback port.

use cordon_control_plane::auth::Tokens;
use cordon_control_plane::server::{self, Running, ServerConfig};
use cordon_control_plane::signing::BundleSigner;
use cordon_control_plane::store::SqliteStore;
use cordon_control_plane::tls::{TlsFiles, server_config};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::server::SEED;

/// A CA and the PEM files it issued, in a temporary directory.
pub struct Pki {
    pub dir: PathBuf,
    pub issuer: Issuer<'static, KeyPair>,
    pub ca: PathBuf,
}

impl Pki {
    pub fn new(dir: &Path, name: &str) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, format!("{name} CA"));
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let ca = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&ca, cert.pem()).unwrap();
        Pki { dir: dir.to_path_buf(), issuer: Issuer::new(params, key), ca }
    }

    /// (cert, key) files for a leaf with these SANs.
    pub fn leaf(&self, file: &str, sans: &[&str], usage: ExtendedKeyUsagePurpose) -> (PathBuf, PathBuf) {
        let mut params = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, file);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let (c, k) = (self.dir.join(format!("{file}.pem")), self.dir.join(format!("{file}.key")));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    pub fn client(&self, file: &str, dns: &str) -> (PathBuf, PathBuf) {
        self.leaf(file, &[dns], ExtendedKeyUsagePurpose::ClientAuth)
    }
}

pub struct Setup {
    pub _dir: tempfile::TempDir,
    pub pki: Pki,
    pub other: Pki,
    pub server: (PathBuf, PathBuf),
}

pub fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "cordon");
    let other = Pki::new(dir.path(), "other");
    let server = pki.leaf("server", &["localhost", "127.0.0.1"], ExtendedKeyUsagePurpose::ServerAuth);
    Setup { _dir: dir, pki, other, server }
}

pub async fn start_tls(s: &Setup, client_ca: bool, tokens: Tokens) -> Running {
    let files = TlsFiles { cert: s.server.0.clone(), key: s.server.1.clone(), client_ca: client_ca.then(|| s.pki.ca.clone()) };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut cfg = ServerConfig::new(Arc::new(SqliteStore::open_in_memory().unwrap()), BundleSigner::from_seed(SEED), tokens);
    cfg.tls = Some(server_config(&files).unwrap());
    server::start(listener, cfg).await.unwrap()
}
