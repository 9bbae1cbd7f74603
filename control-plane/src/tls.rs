//! TLS for the one port (rustls with the ring provider): a server certificate, and optionally a
//! client CA that makes client certificates mandatory for every connection (mTLS between Envoy
//! and the control plane, and for admin clients).
//!
//! Certificates and keys are PEM files supplied at run time. Nothing here logs or returns key
//! material: errors name the file and what was wrong, never its contents.

use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where the server's TLS material lives.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// PEM certificate chain (leaf first).
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM CA certificate(s); when set, every connection must present a client certificate
    /// issued by one of them.
    pub client_ca: Option<PathBuf>,
}

/// Why the TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file could not be read.
    #[error("TLS {what} `{path}`: cannot read: {source}")]
    Read {
        /// Which input (certificate, private key, client CA).
        what: &'static str,
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not PEM of the expected kind.
    #[error("TLS {what} `{path}`: not a PEM file with {expected}: {detail}")]
    Pem {
        /// Which input.
        what: &'static str,
        /// The file.
        path: String,
        /// What the file must contain.
        expected: &'static str,
        /// What the PEM parser said (markers only, never contents).
        detail: String,
    },
    /// A client CA certificate is not a usable trust anchor.
    #[error("TLS client CA `{path}`: {detail}")]
    ClientCa {
        /// The file.
        path: String,
        /// Why.
        detail: String,
    },
    /// rustls refused the combination (e.g. the key does not match the certificate).
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { what, path: path.display().to_string(), source })
}

fn certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem_err = |detail: String| TlsError::Pem { what, path: path.display().to_string(), expected: "CERTIFICATE blocks", detail };
    let bytes = read(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes).collect::<Result<Vec<_>, _>>().map_err(|e| pem_err(e.to_string()))?;
    if certs.is_empty() {
        return Err(pem_err("no CERTIFICATE block found".into()));
    }
    Ok(certs)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read("private key", path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError::Pem {
        what: "private key",
        path: path.display().to_string(),
        expected: "a PRIVATE KEY block",
        // pem::Error's text names markers and sections, not key bytes.
        detail: e.to_string(),
    })
}

/// The crypto provider used everywhere (explicit, so another crate's choice of process-wide
/// default cannot change it).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the server configuration: ALPN `h2` and `http/1.1` (gRPC and the HTTP admin API share
/// the port), TLS 1.2 and 1.3, client certificates required when a client CA is given.
pub fn server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let chain = certs("certificate", &files.cert)?;
    let key = private_key(&files.key)?;
    let provider = provider();
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in certs("client CA", ca)? {
                roots.add(c).map_err(|e| TlsError::ClientCa { path: ca.display().to_string(), detail: e.to_string() })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::ClientCa { path: ca.display().to_string(), detail: e.to_string() })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut cfg = builder.with_single_cert(chain, key).map_err(|e| TlsError::Config(e.to_string()))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// The client certificate a connection presented and the TLS handshake verified against the
/// client CA; attached to every request on that connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCertificate {
    der: CertificateDer<'static>,
}

impl PeerCertificate {
    /// The verified leaf certificate.
    pub fn from_der(der: CertificateDer<'static>) -> Self {
        PeerCertificate { der }
    }

    /// Lower-case hex SHA-256 of the leaf certificate's DER (for logs).
    pub fn sha256(&self) -> String {
        hex::encode(Sha256::digest(self.der.as_ref()))
    }

    /// Whether the certificate names `dns` in its subject alternative names (DNS entries;
    /// wildcards in the certificate apply as usual).
    pub fn has_dns_name(&self, dns: &str) -> bool {
        let Ok(name) = rustls_pki_types::ServerName::try_from(dns) else {
            return false;
        };
        webpki::EndEntityCert::try_from(&self.der).is_ok_and(|ee| ee.verify_is_valid_for_subject_name(&name).is_ok())
    }
}
