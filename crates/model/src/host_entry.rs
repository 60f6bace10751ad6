//! A manifest's `hosts` entry, which may depend on the connection's config: a pattern
//! (`api.github.com`), a pattern with config labels (`{config.subdomain}.zendesk.com`), or
//! a config list of patterns (`{config.credential_hosts*}`). Resolved per invocation into
//! [`HostPattern`]s, which the outbound gate checks as before.

use std::fmt;

use airlock_contract::connector::is_dns_label;
use serde_json::Value;

use crate::hosts::HostPattern;

/// The prefix of a config variable in a host entry.
const CONFIG_PREFIX: &str = "config.";

/// How many patterns a config list may hold.
pub const MAX_CONFIG_HOSTS: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostEntry {
    Fixed(HostPattern),
    /// A pattern in which each `{config.NAME}` is one DNS label of the config.
    Labels(String),
    /// `{config.NAME*}`: the config property `NAME`, a list of explicit host patterns (exact
    /// or `*.suffix`: a bare `*` from a config would hand the credential to every host).
    List(String),
}

/// A host entry that does not parse, or does not resolve with a connection's config. The
/// message names the config property, never its value's meaning beyond "not a label".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostEntryError(pub String);

impl fmt::Display for HostEntryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HostEntryError {}

fn config_names(entry: &str) -> Result<Vec<&str>, HostEntryError> {
    let mut names = Vec::new();
    let mut rest = entry;
    while let Some(start) = rest.find('{') {
        let after = &rest[start + 1..];
        let end = after
            .find('}')
            .ok_or_else(|| HostEntryError(format!("{entry:?}: a `{{` without its `}}`")))?;
        let name = after[..end].strip_prefix(CONFIG_PREFIX).ok_or_else(|| {
            HostEntryError(format!(
                "{entry:?}: only `{{config.NAME}}` may appear in a host"
            ))
        })?;
        names.push(name);
        rest = &after[end + 1..];
    }
    Ok(names)
}

impl HostEntry {
    pub fn parse(entry: &str) -> Result<HostEntry, HostEntryError> {
        if !entry.contains('{') {
            return entry
                .parse()
                .map(HostEntry::Fixed)
                .map_err(|e: crate::hosts::HostPatternError| HostEntryError(e.to_string()));
        }
        if let Some(name) = entry
            .strip_prefix("{config.")
            .and_then(|rest| rest.strip_suffix("*}"))
        {
            check_name(entry, name)?;
            return Ok(HostEntry::List(name.to_owned()));
        }
        let names = config_names(entry)?;
        for name in &names {
            check_name(entry, name)?;
        }
        // The domain stays the manifest's: config labels pick a subdomain, never the rest.
        let tail = entry.rsplit('}').next().unwrap_or_default();
        if !tail.starts_with('.') || !tail[1..].contains(|c: char| c.is_ascii_alphanumeric()) {
            return Err(HostEntryError(format!(
                "{entry:?}: config labels must be followed by the manifest's own domain (`{{config.NAME}}.example.com`)"
            )));
        }
        // With every label filled in, the entry must be an explicit pattern.
        let probe = fill(entry, |_| Ok("a".to_owned()))?;
        match probe.parse::<HostPattern>() {
            Ok(pattern) if pattern.is_explicit() => Ok(HostEntry::Labels(entry.to_owned())),
            _ => Err(HostEntryError(format!(
                "{entry:?}: not a host pattern once its config labels are filled in"
            ))),
        }
    }

    /// The config properties this entry reads.
    pub fn config_names(&self) -> Vec<&str> {
        match self {
            HostEntry::Fixed(_) => Vec::new(),
            HostEntry::Labels(entry) => config_names(entry).unwrap_or_default(),
            HostEntry::List(name) => vec![name.as_str()],
        }
    }

    /// The patterns this entry stands for under `config`.
    pub fn resolve(&self, config: &Value) -> Result<Vec<HostPattern>, HostEntryError> {
        match self {
            HostEntry::Fixed(pattern) => Ok(vec![pattern.clone()]),
            HostEntry::Labels(entry) => {
                let host = fill(entry, |name| {
                    let value = config.get(name).and_then(Value::as_str).ok_or_else(|| {
                        HostEntryError(format!("the connection's config has no `{name}`"))
                    })?;
                    if is_dns_label(value) {
                        Ok(value.to_owned())
                    } else {
                        Err(HostEntryError(format!(
                            "the connection's config `{name}` must be one DNS label (a-z, 0-9, `-`)"
                        )))
                    }
                })?;
                host.parse()
                    .map(|pattern| vec![pattern])
                    .map_err(|e: crate::hosts::HostPatternError| HostEntryError(e.to_string()))
            }
            HostEntry::List(name) => {
                let items = match config.get(name) {
                    None | Some(Value::Null) => return Ok(Vec::new()),
                    Some(Value::Array(items)) => items,
                    Some(_) => {
                        return Err(HostEntryError(format!(
                            "the connection's config `{name}` must be a list of host patterns"
                        )));
                    }
                };
                if items.len() > MAX_CONFIG_HOSTS {
                    return Err(HostEntryError(format!(
                        "the connection's config `{name}` lists more than {MAX_CONFIG_HOSTS} hosts"
                    )));
                }
                items
                    .iter()
                    .map(|item| {
                        let pattern = item
                            .as_str()
                            .and_then(|s| s.parse::<HostPattern>().ok())
                            .ok_or_else(|| {
                                HostEntryError(format!(
                                    "the connection's config `{name}` holds something that is not a host pattern"
                                ))
                            })?;
                        if pattern.is_explicit() {
                            Ok(pattern)
                        } else {
                            Err(HostEntryError(format!(
                                "the connection's config `{name}` may not hold `*`: name the hosts its credential is for"
                            )))
                        }
                    })
                    .collect()
            }
        }
    }
}

impl fmt::Display for HostEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostEntry::Fixed(pattern) => pattern.fmt(f),
            HostEntry::Labels(entry) => f.write_str(entry),
            HostEntry::List(name) => write!(f, "{{config.{name}*}}"),
        }
    }
}

fn check_name(entry: &str, name: &str) -> Result<(), HostEntryError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(HostEntryError(format!(
            "{entry:?}: `{name}` is not a config property name"
        )))
    }
}

fn fill(
    entry: &str,
    mut value: impl FnMut(&str) -> Result<String, HostEntryError>,
) -> Result<String, HostEntryError> {
    let mut out = String::new();
    let mut rest = entry;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let end = after
            .find('}')
            .ok_or_else(|| HostEntryError(format!("{entry:?}: a `{{` without its `}}`")))?;
        let name = after[..end]
            .strip_prefix(CONFIG_PREFIX)
            .unwrap_or(&after[..end]);
        out.push_str(&value(name)?);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn resolve(entry: &str, config: Value) -> Result<Vec<String>, HostEntryError> {
        Ok(HostEntry::parse(entry)?
            .resolve(&config)?
            .iter()
            .map(ToString::to_string)
            .collect())
    }

    #[test]
    fn labels_take_one_dns_label_from_the_config() {
        assert_eq!(
            resolve(
                "{config.subdomain}.zendesk.com",
                json!({"subdomain": "acme"})
            )
            .expect("ok"),
            vec!["acme.zendesk.com"]
        );
        for hostile in ["evil.test", "a/b", "EVIL", "", "-a", "a b", "a@b", "a:1"] {
            assert!(
                resolve(
                    "{config.subdomain}.zendesk.com",
                    json!({"subdomain": hostile})
                )
                .is_err(),
                "{hostile:?}"
            );
        }
        assert!(resolve("{config.subdomain}.zendesk.com", json!({})).is_err());
        assert!(resolve("{config.subdomain}.zendesk.com", json!({"subdomain": 1})).is_err());
    }

    #[test]
    fn lists_hold_explicit_patterns_only() {
        assert_eq!(
            resolve(
                "{config.hosts*}",
                json!({"hosts": ["api.crm.test", "*.chat.test"]})
            )
            .expect("ok"),
            vec!["api.crm.test", "*.chat.test"]
        );
        assert_eq!(
            resolve("{config.hosts*}", json!({})).expect("ok"),
            Vec::<String>::new()
        );
        for bad in [
            json!(["*"]),
            json!("api.test"),
            json!([1]),
            json!(["http://x"]),
        ] {
            assert!(
                resolve("{config.hosts*}", json!({"hosts": bad})).is_err(),
                "{bad}"
            );
        }
        let many: Vec<String> = (0..=MAX_CONFIG_HOSTS)
            .map(|i| format!("h{i}.test"))
            .collect();
        assert!(resolve("{config.hosts*}", json!({"hosts": many})).is_err());
    }

    #[test]
    fn refuses_entries_that_are_not_patterns() {
        for bad in [
            "{subdomain}.x.test",
            "{config.a",
            "{config.a b}.x.test",
            "{config.a}",
            "x.{config.a}/p",
        ] {
            assert!(HostEntry::parse(bad).is_err(), "{bad:?}");
        }
        assert!(matches!(
            HostEntry::parse("api.test"),
            Ok(HostEntry::Fixed(_))
        ));
    }
}
