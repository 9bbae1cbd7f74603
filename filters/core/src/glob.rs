//! Wildcard patterns (`gpt-4o*`, `spiffe://cluster.local/ns/prod/*`): `*` matches any run of
//! characters, everything else is literal. No `?` or classes: operators read these in policy
//! reviews and must see at a glance what they allow.

use serde::{Deserialize, Serialize};

/// A compiled wildcard pattern.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Glob {
    source: String,
    parts: Vec<String>,
}

/// Why a pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GlobError {
    /// The pattern is empty and would match nothing useful.
    #[error("pattern is empty")]
    Empty,
}

impl Glob {
    /// Compiles a pattern; `*` is the only wildcard.
    pub fn new(pattern: &str) -> Result<Self, GlobError> {
        if pattern.is_empty() {
            return Err(GlobError::Empty);
        }
        Ok(Self { source: pattern.to_owned(), parts: pattern.split('*').map(str::to_owned).collect() })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether `text` matches the whole pattern.
    pub fn matches(&self, text: &str) -> bool {
        // parts = literal segments separated by '*'; one part means no wildcard.
        let (first, rest) = match self.parts.split_first() {
            Some(v) => v,
            None => return false,
        };
        if rest.is_empty() {
            return text == first;
        }
        let Some(mut remaining) = text.strip_prefix(first.as_str()) else { return false };
        let (last, middle) = match rest.split_last() {
            Some(v) => v,
            None => return false,
        };
        for part in middle {
            match remaining.split_once(part.as_str()) {
                Some((_, after)) => remaining = after,
                None => return false,
            }
        }
        remaining.len() >= last.len() && remaining.ends_with(last.as_str())
    }
}

impl TryFrom<String> for Glob {
    type Error = GlobError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Glob::new(&value)
    }
}

impl From<Glob> for String {
    fn from(value: Glob) -> Self {
        value.source
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn g(p: &str) -> Glob {
        Glob::new(p).unwrap()
    }

    #[test]
    fn literal_matches_only_itself() {
        assert!(g("gpt-4o").matches("gpt-4o"));
        assert!(!g("gpt-4o").matches("gpt-4o-mini"));
    }

    #[test]
    fn prefix_suffix_and_middle_wildcards() {
        assert!(g("gpt-4o*").matches("gpt-4o-mini"));
        assert!(g("gpt-4o*").matches("gpt-4o"));
        assert!(!g("gpt-4o*").matches("gpt-4"));
        assert!(g("*-mini").matches("gpt-4o-mini"));
        assert!(g("claude-*-sonnet*").matches("claude-3-5-sonnet-latest"));
        assert!(!g("claude-*-sonnet*").matches("claude-3-opus"));
        assert!(g("*").matches(""));
    }

    #[test]
    fn overlapping_prefix_and_suffix_do_not_double_count() {
        // "ab*ba" must not match "aba": the prefix and suffix may not share the middle 'b'.
        assert!(!g("ab*ba").matches("aba"));
        assert!(g("ab*ba").matches("abba"));
    }

    #[test]
    fn empty_pattern_is_refused() {
        assert_eq!(Glob::new(""), Err(GlobError::Empty));
    }

    proptest! {
        #[test]
        fn star_around_any_literal_matches_text_containing_it(pre in "[a-z-]{0,6}", lit in "[a-z0-9]{1,6}", post in "[a-z-]{0,6}") {
            let text = format!("{pre}{lit}{post}");
            let around = format!("*{}*", lit);
            let prefix = format!("{}*", pre);
            prop_assert!(g(&around).matches(&text));
            prop_assert!(g(&prefix).matches(&text));
            prop_assert!(g(&text).matches(&text));
        }
    }
}
