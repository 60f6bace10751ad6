//! Connector and action names, versions, and the DNS label a config value may put in a host.

/// Longest connector or action name, and longest version, in bytes.
pub const MAX_NAME_BYTES: usize = 64;

/// A connector or action name: 1-64 characters of `a-z`, `0-9`, `-`, `_`, starting with a
/// letter. Names are path segments of the API and keys in the store.
pub fn check_name(value: &str) -> Result<(), String> {
    let mut chars = value.chars();
    let starts_with_letter = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    let rest_ok =
        chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !starts_with_letter || !rest_ok || value.len() > MAX_NAME_BYTES {
        return Err(format!(
            "{value:?} must be 1-64 characters of a-z, 0-9, '-', '_', starting with a letter"
        ));
    }
    Ok(())
}

/// `MAJOR.MINOR.PATCH`, optionally followed by semver's pre-release and build parts, whose
/// characters semver limits to ASCII letters, digits, `-` and `.` (a version is a lookup key
/// in the store and a path segment, so nothing else may reach it).
pub fn check_version(version: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '+');
    if version.len() > MAX_NAME_BYTES || !version.chars().all(allowed) {
        return Err(format!(
            "{version:?} must be at most 64 characters of a-z, A-Z, 0-9, '-', '.', '+'"
        ));
    }
    let core = version.split(['-', '+']).next().unwrap_or_default();
    let parts: Vec<&str> = core.split('.').collect();
    let numeric = |p: &&str| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit());
    if parts.len() != 3 || !parts.iter().all(numeric) {
        return Err(format!(
            "{version:?} is not a semantic version MAJOR.MINOR.PATCH"
        ));
    }
    Ok(())
}

/// One DNS label, lowercase: all a connection's config value may put into a host name, so it
/// picks a subdomain of the connector's domain and never another domain. Shared by the
/// manifest's `{config.NAME}` hosts (the gate) and a declarative base URL (the runner).
pub fn is_dns_label(value: &str) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.first() != Some(&b'-')
        && bytes.last() != Some(&b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in ["a", "github", "my-connector_2", &"a".repeat(64)] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "1a", "-a", "A", "a b", "a.b", "é", &"a".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn versions() {
        for good in ["0.1.0", "10.20.30", "1.0.0-rc.1", "1.0.0+build.5"] {
            assert!(check_version(good).is_ok(), "{good}");
        }
        for bad in [
            "", "1", "1.0", "1.0.0.0", "a.b.c", "1.0.0/x", "1.0.0 ", "1..0",
        ] {
            assert!(check_version(bad).is_err(), "{bad}");
        }
        assert!(check_version(&format!("1.0.0-{}", "a".repeat(60))).is_err());
    }
}
