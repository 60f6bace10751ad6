//! Declarative definitions as uploaded: JSON or YAML text, turned into the one JSON form
//! that is stored, digested and loaded, so the same definition written either way is the
//! same version.

use serde_json::Value;

/// How a definition was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    Json,
    Yaml,
}

impl Syntax {
    /// From a media type (`application/json`, `application/yaml`, `text/yaml`, ...), or
    /// `None` when it names neither.
    pub fn from_media_type(media_type: &str) -> Option<Syntax> {
        let essence = media_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "application/json" => Some(Syntax::Json),
            "application/yaml" | "application/x-yaml" | "text/yaml" | "text/x-yaml" => {
                Some(Syntax::Yaml)
            }
            _ => None,
        }
    }

    /// From a file name's extension: `.yaml` and `.yml` are YAML, anything else JSON.
    pub fn from_path(path: &std::path::Path) -> Syntax {
        match path.extension().and_then(|e| e.to_str()) {
            Some("yaml" | "yml") => Syntax::Yaml,
            _ => Syntax::Json,
        }
    }
}

/// Why a definition's text was refused before its checks.
#[derive(Debug, thiserror::Error)]
pub enum DefinitionTextError {
    #[error("the definition is not valid JSON: {0}")]
    Json(String),
    #[error("the definition is not valid YAML: {0}")]
    Yaml(String),
    #[error("a definition is a JSON object (with `format`, `name`, `version`, ...)")]
    NotAnObject,
}

/// The stored form of a definition: compact JSON of the parsed document.
pub fn canonical(bytes: &[u8], syntax: Syntax) -> Result<Vec<u8>, DefinitionTextError> {
    let value: Value =
        match syntax {
            Syntax::Json => serde_json::from_slice(bytes)
                .map_err(|e| DefinitionTextError::Json(e.to_string()))?,
            Syntax::Yaml => serde_norway::from_slice(bytes)
                .map_err(|e| DefinitionTextError::Yaml(e.to_string()))?,
        };
    if !value.is_object() {
        return Err(DefinitionTextError::NotAnObject);
    }
    serde_json::to_vec(&value).map_err(|e| DefinitionTextError::Json(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_yaml_of_one_definition_are_the_same_bytes() {
        let json = br#"{"format": "airlock.declarative/v1", "name": "crm", "actions": [{"n": 478, "s": "478"}]}"#;
        let yaml =
            b"format: airlock.declarative/v1\nname: crm\nactions:\n  - n: 478\n    s: '478'\n";
        let from_json = canonical(json, Syntax::Json).expect("json");
        assert_eq!(from_json, canonical(yaml, Syntax::Yaml).expect("yaml"));
        // Types survive: a number stays a number, a quoted number a string.
        let value: Value = serde_json::from_slice(&from_json).expect("json");
        assert_eq!(value["actions"][0]["n"], serde_json::json!(478));
        assert_eq!(value["actions"][0]["s"], serde_json::json!("478"));
    }

    #[test]
    fn refuses_what_is_not_an_object() {
        assert!(matches!(
            canonical(b"[1]", Syntax::Json),
            Err(DefinitionTextError::NotAnObject)
        ));
        assert!(matches!(
            canonical(b"- a", Syntax::Yaml),
            Err(DefinitionTextError::NotAnObject)
        ));
        assert!(matches!(
            canonical(b"{", Syntax::Json),
            Err(DefinitionTextError::Json(_))
        ));
        assert!(matches!(
            canonical(b"a: [", Syntax::Yaml),
            Err(DefinitionTextError::Yaml(_))
        ));
        assert_eq!(
            Syntax::from_media_type("application/yaml; charset=utf-8"),
            Some(Syntax::Yaml)
        );
        assert_eq!(Syntax::from_media_type("application/wasm"), None);
    }
}
