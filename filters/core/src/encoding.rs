//! Content encodings: Cordon only inspects bodies it can read, and refuses to wave through a
//! body it cannot (fail closed).

use crate::refusal::Refusal;

/// Whether a body with this `content-encoding` is readable as it is (absent, empty or
/// `identity`).
pub fn is_identity(content_encoding: Option<&str>) -> bool {
    content_encoding.map(str::trim).is_none_or(|e| e.is_empty() || e.eq_ignore_ascii_case("identity"))
}

/// Accepts an absent or `identity` content-encoding; anything else is refused.
pub fn require_identity(content_encoding: Option<&str>) -> Result<(), Refusal> {
    match content_encoding {
        enc if is_identity(enc) => Ok(()),
        Some(enc) => Err(Refusal::UnsupportedContentEncoding(enc.trim().chars().take(32).collect())),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_identity_passes() {
        assert!(require_identity(None).is_ok());
        assert!(require_identity(Some("identity")).is_ok());
        assert_eq!(require_identity(Some("gzip")), Err(Refusal::UnsupportedContentEncoding("gzip".into())));
        assert_eq!(require_identity(Some("br, gzip")).unwrap_err().code(), "unsupported_content_encoding");
    }
}
