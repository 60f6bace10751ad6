//! The one rule for the display names tenants give their things (tenants, connections,
//! workflows): 1-200 characters, not all whitespace, nothing `airlock_contract::names`
//! forbids anywhere (leading and trailing whitespace is then dropped), and the JSON Schema
//! `pattern`s the document states for it and for other clean strings.

use airlock_contract::names::{FORBIDDEN, regex_class};

use super::error::ApiError;

/// The longest name, in characters (not bytes: the limit the document and the message state).
pub(crate) const MAX_NAME_CHARS: usize = 200;

/// The trimmed name, or a 422 on `name` that calls it "the `noun` name". The length and the
/// characters are checked before trimming, so the rule is the document's `maxLength` and
/// [`display_name_pattern`] exactly.
pub(crate) fn check_name(name: &str, noun: &str) -> Result<String, ApiError> {
    airlock_contract::names::check(name)
        .map_err(|e| ApiError::validation("name", format!("the {noun} name {e}")))?;
    let trimmed = name.trim();
    if trimmed.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(ApiError::validation(
            "name",
            format!("a {noun} name is 1-{MAX_NAME_CHARS} characters, not all whitespace"),
        ));
    }
    Ok(trimmed.to_owned())
}

/// A string with no forbidden character.
pub(crate) fn clean_pattern() -> String {
    format!("^[^{}]*$", regex_class(FORBIDDEN))
}

/// A clean string with at least one character that is not whitespace (what `trim` drops).
pub(crate) fn display_name_pattern() -> String {
    let forbidden = regex_class(FORBIDDEN);
    let blank = regex_class(&blank_ranges());
    format!("^[^{forbidden}]*[^{forbidden}{blank}][^{forbidden}]*$")
}

/// The whitespace `str::trim` drops that the names rule allows, as ranges.
fn blank_ranges() -> Vec<(char, char)> {
    let mut ranges: Vec<(char, char)> = Vec::new();
    let blanks = ('\0'..=char::MAX)
        .filter(|c| c.is_whitespace() && airlock_contract::names::is_clean(&c.to_string()));
    for c in blanks {
        match ranges.last_mut() {
            Some((_, high)) if u32::from(*high) + 1 == u32::from(c) => *high = c,
            _ => ranges.push((c, c)),
        }
    }
    ranges
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use super::*;

    #[test]
    fn blanks_are_the_allowed_whitespace() {
        let ranges = blank_ranges();
        assert!(ranges.contains(&(' ', ' ')), "{ranges:?}");
        assert!(ranges.contains(&('\u{3000}', '\u{3000}')), "{ranges:?}");
        assert!(!ranges.iter().any(|(low, _)| *low == '\n'), "{ranges:?}");
    }

    #[test]
    fn the_rule_checks_the_name_as_sent() {
        assert_eq!(check_name("  Acme ", "tenant").unwrap(), "Acme");
        assert!(check_name("\nAcme", "tenant").is_err());
        assert!(check_name(" \u{3000} ", "tenant").is_err());
        assert!(check_name(&format!(" {}", "a".repeat(200)), "tenant").is_err());
        assert!(check_name(&"é".repeat(200), "tenant").is_ok());
    }
}
