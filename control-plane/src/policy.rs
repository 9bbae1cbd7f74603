//! Turning an authored YAML document plus the store's API keys into the one canonical policy
//! the filters receive, with the same validation the filters run (`cordon_core`).

use crate::store::{KeyState, StoredKey};
use cordon_core::policy::{ApiKey, CompiledPolicy, KeyStatus, Policy, PolicyError, Principal};

/// Why a document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocumentError {
    /// YAML syntax, or a value of the wrong type / an unknown field for the schema.
    #[error("line {line}, column {column}: {message}")]
    Yaml {
        /// What the parser said.
        message: String,
        /// 1-based; 0 if unknown.
        line: u32,
        /// 1-based; 0 if unknown.
        column: u32,
    },
    /// The document parses but breaks a rule of the schema.
    #[error("{0}")]
    Invalid(#[from] PolicyError),
    /// The document lists an API key whose id the store also manages.
    #[error("identity.api_keys: key id `{0}` is managed by `cordonctl keys`; remove it from the document")]
    KeyConflict(String),
}

impl DocumentError {
    /// Field path, when known.
    pub fn path(&self) -> String {
        match self {
            DocumentError::Invalid(e) => e.path().to_string(),
            DocumentError::KeyConflict(_) => "identity.api_keys".into(),
            DocumentError::Yaml { .. } => String::new(),
        }
    }
}

/// Parses an authored document (YAML; JSON is YAML too). An empty document is the empty policy.
pub fn parse_yaml(source: &str) -> Result<Policy, DocumentError> {
    if source.trim().is_empty() {
        return Ok(Policy::default());
    }
    serde_saphyr::from_str::<Policy>(source).map_err(|e| {
        let (line, column) = e
            .location()
            .map(|l| (u32::try_from(l.line()).unwrap_or(u32::MAX), u32::try_from(l.column()).unwrap_or(u32::MAX)))
            .unwrap_or((0, 0));
        // The plain message, without the snippet the default Display renders: we give line
        // and column separately and cordonctl prints them.
        DocumentError::Yaml { message: e.without_snippet().to_string(), line, column }
    })
}

/// The policy the filters get: the document's identities plus every key the store manages.
/// Revoked keys stay in (as revoked) so the filter answers `revoked_api_key`, not "unknown".
pub fn effective(document: &Policy, keys: &[StoredKey]) -> Result<Policy, DocumentError> {
    let mut policy = document.clone();
    for k in keys {
        if policy.identity.api_keys.iter().any(|d| d.id == k.id) {
            return Err(DocumentError::KeyConflict(k.id.clone()));
        }
        policy.identity.api_keys.push(ApiKey {
            id: k.id.clone(),
            sha256: k.sha256.clone(),
            principal: Principal { user: Some(k.user.clone()), team: Some(k.team.clone()), app: k.app.clone() },
            status: match k.state {
                KeyState::Active => KeyStatus::Active,
                KeyState::Revoked => KeyStatus::Revoked,
            },
            expires_at: k.expires_at,
        });
    }
    Ok(policy)
}

/// Runs the filters' own validation. Provider secrets are the data plane's business, so every
/// secret is reported present here.
pub fn validate(policy: &Policy) -> Result<(), DocumentError> {
    let any_secret = |_: &str| Some("x".to_string());
    CompiledPolicy::compile(policy, &any_secret)?;
    Ok(())
}

/// The bytes pushed to filters (the `PolicyBundle.policy_json`).
pub fn canonical_json(policy: &Policy) -> String {
    // Serialising plain data structs to a String cannot fail; fall back to an empty object
    // rather than panic, and validation of that would catch nothing missing anyway.
    serde_json::to_string(policy).unwrap_or_else(|_| "{}".into())
}

/// Pretty JSON for human diffs, from canonical JSON; "" for no policy.
pub fn pretty(canonical: &str) -> String {
    if canonical.is_empty() {
        return String::new();
    }
    match serde_json::from_str::<serde_json::Value>(canonical).and_then(|v| serde_json::to_string_pretty(&v)) {
        Ok(mut s) => {
            s.push('\n');
            s
        }
        Err(_) => canonical.to_string(),
    }
}

/// Unified diff of two canonical policies, labelled with version names.
pub fn diff(old_canonical: &str, new_canonical: &str, old_label: &str, new_label: &str) -> String {
    let (old, new) = (pretty(old_canonical), pretty(new_canonical));
    similar::TextDiff::from_lines(&old, &new).unified_diff().context_radius(3).header(old_label, new_label).to_string()
}

/// Lower-case hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_errors_carry_line_and_column() {
        let err = parse_yaml("models:\n  - allow: [gpt-4o]\n    bogus: 1\n").unwrap_err();
        match err {
            DocumentError::Yaml { line, column, ref message } => {
                assert_eq!(line, 3, "{message}");
                assert!(column > 0, "{message}");
                assert!(message.contains("bogus"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let err = parse_yaml("models: [\n").unwrap_err();
        assert!(matches!(err, DocumentError::Yaml { line, .. } if line >= 1), "{err:?}");
    }

    #[test]
    fn semantic_errors_name_the_field() {
        let p = parse_yaml("models:\n  - allow: []\n").unwrap();
        let err = validate(&p).unwrap_err();
        assert_eq!(err.path(), "models[0].allow");
    }

    #[test]
    fn store_keys_merge_and_conflicts_are_refused() {
        let doc = parse_yaml("models:\n  - allow: ['gpt-4o*']\n").unwrap();
        let key = StoredKey {
            id: "k1".into(),
            sha256: "a".repeat(64),
            user: "u".into(),
            team: "t".into(),
            app: None,
            state: KeyState::Revoked,
            expires_at: None,
            created_at_ms: 0,
            created_by: "ops".into(),
        };
        let eff = effective(&doc, std::slice::from_ref(&key)).unwrap();
        assert_eq!(eff.identity.api_keys[0].status, KeyStatus::Revoked);
        validate(&eff).unwrap();
        let doc2 = effective(&doc, std::slice::from_ref(&key)).unwrap();
        assert_eq!(effective(&doc2, &[key]).unwrap_err(), DocumentError::KeyConflict("k1".into()));
    }

    #[test]
    fn diff_is_unified_and_empty_when_equal() {
        let a = canonical_json(&parse_yaml("models:\n  - allow: [a]\n").unwrap());
        let b = canonical_json(&parse_yaml("models:\n  - allow: [b]\n").unwrap());
        let d = diff(&a, &b, "v1", "v2");
        assert!(d.contains("--- v1") && d.contains("+++ v2") && d.contains("-        \"a\"") && d.contains("+        \"b\""), "{d}");
        assert_eq!(diff(&a, &a, "v1", "v2"), "");
    }
}
