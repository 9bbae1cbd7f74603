//! The policy: its schema, parsing with errors that name the field, and compilation into the
//! lookup structures the request path uses.

pub(crate) mod compile;
mod schema;

pub use compile::{CompiledPolicy, SecretSource, UpstreamSecret};
pub use schema::*;

/// Why a policy was refused. Every variant names the offending field as a path such as
/// `identity.api_keys[2].sha256`, so an operator can find it in the document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The document does not parse into the schema (unknown field, wrong type, bad JSON/YAML).
    #[error("policy field `{path}`: {message}")]
    Syntax {
        /// Where in the document.
        path: String,
        /// What the parser said.
        message: String,
    },
    /// The document parses but breaks a rule of the schema.
    #[error("policy field `{path}`: {reason}")]
    Invalid {
        /// Where in the document.
        path: String,
        /// Which rule, in words an operator can act on.
        reason: String,
    },
}

impl PolicyError {
    pub(crate) fn invalid(path: impl Into<String>, reason: impl Into<String>) -> Self {
        PolicyError::Invalid { path: path.into(), reason: reason.into() }
    }

    /// The path of the offending field.
    pub fn path(&self) -> &str {
        match self {
            PolicyError::Syntax { path, .. } | PolicyError::Invalid { path, .. } => path,
        }
    }
}

impl Policy {
    /// Parses a JSON policy document.
    pub fn from_json(bytes: &[u8]) -> Result<Policy, PolicyError> {
        let de = &mut serde_json::Deserializer::from_slice(bytes);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            PolicyError::Syntax { path, message: e.into_inner().to_string() }
        })
    }
}
