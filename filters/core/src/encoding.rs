//! Content encodings: Cordon only inspects bodies it can read, and refuses to wave through a
//! body it cannot (fail closed).

use crate::refusal::Refusal;

/// Accepts an absent or `identity` content-encoding; anything else is refused.
pub fn require_identity(content_encoding: Option<&str>) -> Result<(), Refusal> {
    match content_encoding.map(str::trim) {
        None | Some("") => Ok(()),
        Some(enc) if enc.eq_ignore_ascii_case("identity") => Ok(()),
        Some(enc) => Err(Refusal::UnsupportedContentEncoding(enc.chars().take(32).collect())),
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
