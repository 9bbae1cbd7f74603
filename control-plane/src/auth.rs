//! Admin callers: bearer tokens from a runtime secret, each with a name and roles.
//!
//! Token file / `CORDON_ADMIN_TOKENS` format: one token per line, `NAME ROLES TOKEN`, where
//! ROLES is a comma-separated subset of `viewer,operator,auditor`; `#` starts a comment.
//! Only SHA-256 digests of the tokens are kept in memory after loading.
//!
//! Instead of a token, the third field may be `cert-dns:NAME`: the caller is then whoever
//! presents a TLS client certificate (verified by the server against `--tls-client-ca`) with
//! NAME among its DNS subject alternative names. A bearer token, when sent, takes precedence.

use crate::tls::PeerCertificate;
use sha2::{Digest, Sha256};

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Read policy, history, status and keys.
    Viewer,
    /// Viewer + change policy and keys.
    Operator,
    /// Viewer + read the admin log.
    Auditor,
}

impl Role {
    fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            "auditor" => Some(Role::Auditor),
            _ => None,
        }
    }

    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Auditor => "auditor",
        }
    }
}

/// An authenticated admin caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's name, written to the admin log as the actor.
    pub name: String,
    /// Granted roles.
    pub roles: Vec<Role>,
}

impl Caller {
    /// Whether the caller holds `role` (every role includes viewer rights).
    pub fn may(&self, role: Role) -> bool {
        role == Role::Viewer && !self.roles.is_empty() || self.roles.contains(&role)
    }
}

/// Malformed token configuration.
#[derive(Debug, thiserror::Error)]
pub enum TokenConfigError {
    /// A line does not have the `NAME ROLES TOKEN` shape.
    #[error("admin tokens, line {line}: expected `NAME ROLES TOKEN` (ROLES: comma-separated viewer,operator,auditor)")]
    Shape {
        /// 1-based line.
        line: usize,
    },
    /// Unknown role name.
    #[error("admin tokens, line {line}: unknown role `{role}` (use viewer, operator, auditor)")]
    Role {
        /// 1-based line.
        line: usize,
        /// What was written.
        role: String,
    },
    /// `cert-dns:` with an empty or malformed name.
    #[error("admin tokens, line {line}: `cert-dns:` needs a DNS name, e.g. cert-dns:alice.admin.cordon.internal")]
    CertName {
        /// 1-based line.
        line: usize,
    },
    /// Tokens shorter than 16 characters are guessable.
    #[error("admin tokens, line {line}: token is shorter than 16 characters")]
    Weak {
        /// 1-based line.
        line: usize,
    },
}

struct Entry {
    name: String,
    roles: Vec<Role>,
    digest: [u8; 32],
}

/// A caller identified by a client certificate.
struct CertEntry {
    name: String,
    roles: Vec<Role>,
    dns: String,
}

/// The set of valid admin tokens (and client-certificate identities).
pub struct Tokens {
    entries: Vec<Entry>,
    certs: Vec<CertEntry>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.entries.iter().map(|e| &e.name).chain(self.certs.iter().map(|c| &c.name))).finish()
    }
}

/// What an admin request presented.
#[derive(Debug, Clone, Copy, Default)]
pub struct Credentials<'a> {
    /// The bearer token, if any.
    pub token: Option<&'a str>,
    /// The verified TLS client certificate of the connection, if any.
    pub cert: Option<&'a PeerCertificate>,
}

impl<'a> Credentials<'a> {
    /// Only a bearer token.
    pub fn token(token: Option<&'a str>) -> Self {
        Credentials { token, cert: None }
    }
}

fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    // Constant-time: the digest comparison must not leak how many leading bytes matched.
    a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Tokens {
    /// Parses the token file format.
    pub fn parse(text: &str) -> Result<Tokens, TokenConfigError> {
        let mut entries = vec![];
        let mut certs = vec![];
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let l = raw.split('#').next().unwrap_or("").trim();
            if l.is_empty() {
                continue;
            }
            let parts: Vec<&str> = l.split_whitespace().collect();
            let [name, roles, token] = parts.as_slice() else {
                return Err(TokenConfigError::Shape { line });
            };
            let roles = roles
                .split(',')
                .map(|r| Role::parse(r).ok_or_else(|| TokenConfigError::Role { line, role: r.to_string() }))
                .collect::<Result<Vec<_>, _>>()?;
            if let Some(dns) = token.strip_prefix("cert-dns:") {
                if rustls_pki_types::DnsName::try_from(dns).is_err() {
                    return Err(TokenConfigError::CertName { line });
                }
                certs.push(CertEntry { name: name.to_string(), roles, dns: dns.to_ascii_lowercase() });
                continue;
            }
            if token.len() < 16 {
                return Err(TokenConfigError::Weak { line });
            }
            entries.push(Entry { name: name.to_string(), roles, digest: Sha256::digest(token.as_bytes()).into() });
        }
        Ok(Tokens { entries, certs })
    }

    /// Whether no token or certificate identity is configured (then every admin call is refused).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.certs.is_empty()
    }

    /// The caller the credentials stand for: the bearer token if one was sent, else the client
    /// certificate (first `cert-dns:` entry whose name the certificate carries).
    pub fn authenticate_credentials(&self, c: Credentials<'_>) -> Option<Caller> {
        if let Some(t) = c.token {
            return self.authenticate(t);
        }
        let cert = c.cert?;
        self.certs.iter().find(|e| cert.has_dns_name(&e.dns)).map(|e| Caller { name: e.name.clone(), roles: e.roles.clone() })
    }

    /// The caller a presented bearer token stands for.
    pub fn authenticate(&self, token: &str) -> Option<Caller> {
        let d: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        // Check every entry so timing does not reveal which one matched.
        for e in &self.entries {
            if ct_eq(&e.digest, &d) && found.is_none() {
                found = Some(Caller { name: e.name.clone(), roles: e.roles.clone() });
            }
        }
        found
    }
}

/// Extracts the token from an `Authorization: Bearer <token>` value.
pub fn bearer(header: Option<&str>) -> Option<&str> {
    let h = header?.trim();
    let (scheme, rest) = h.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim()).filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_and_authenticate() {
        let t = Tokens::parse("# ops\nalice operator,auditor 0123456789abcdefXYZ\nbob viewer bbbbbbbbbbbbbbbbbbbb\n").unwrap();
        let a = t.authenticate("0123456789abcdefXYZ").unwrap();
        assert_eq!(a.name, "alice");
        assert!(a.may(Role::Operator) && a.may(Role::Auditor) && a.may(Role::Viewer));
        let b = t.authenticate("bbbbbbbbbbbbbbbbbbbb").unwrap();
        assert!(b.may(Role::Viewer) && !b.may(Role::Operator) && !b.may(Role::Auditor));
        assert!(t.authenticate("nope").is_none());
        assert!(matches!(Tokens::parse("x admin 0123456789abcdefg"), Err(TokenConfigError::Role { line: 1, .. })));
        assert!(matches!(Tokens::parse("x viewer short"), Err(TokenConfigError::Weak { line: 1 })));
        assert!(matches!(Tokens::parse("x viewer"), Err(TokenConfigError::Shape { line: 1 })));
        assert_eq!(bearer(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer(Some("Basic abc")), None);
        let c = Tokens::parse("ci operator cert-dns:ci.admin.test\n").unwrap();
        assert!(!c.is_empty());
        assert!(c.authenticate_credentials(Credentials::token(None)).is_none());
        assert!(matches!(Tokens::parse("x viewer cert-dns:"), Err(TokenConfigError::CertName { line: 1 })));
    }
}
