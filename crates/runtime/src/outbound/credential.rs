//! Auth types (the manifest's `auth`), the connection's credential, and how the gate attaches
//! one to a request bound for an explicitly declared host.

use base64::Engine as _;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use url::Url;
use url::form_urlencoded;

use super::TokenRefresher;
use airlock_model::auth::{ApiKeyLocation, AuthSpec};
use airlock_secrets::Secret;

/// The connection's credential, decrypted for the duration of one invocation. It never enters
/// the guest; the gate attaches it to requests for declared hosts.
#[derive(Debug, Clone, Default)]
pub enum Credential {
    #[default]
    None,
    ApiKey(Secret),
    Basic {
        username: String,
        password: Secret,
    },
    /// Header name and value; only names listed in the auth spec are sent.
    CustomHeaders(Vec<(String, Secret)>),
    OAuth2 {
        access_token: Secret,
        /// Asked for a new token when an upstream answers 401 to this one; `None`: the 401
        /// goes back to the guest as is.
        refresher: Option<TokenRefresher>,
    },
}

impl Credential {
    /// An OAuth2 bearer token that the gate does not refresh.
    pub fn oauth2(access_token: Secret) -> Credential {
        Credential::OAuth2 {
            access_token,
            refresher: None,
        }
    }
}

/// A credential that cannot be attached. The messages never contain the credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("the connection's credential does not fit the connector's auth type `{0}`")]
    Mismatch(&'static str),
    #[error("the connector's auth header name {0:?} is not a valid header name")]
    BadHeaderName(String),
    #[error("the connection's credential is not a valid HTTP header value")]
    BadHeaderValue,
}

/// Header names the credential occupies under `spec`. On a credentialed request the guest's
/// headers with these names are removed, so a guest cannot pre-empt or shadow the credential.
pub fn reserved_headers(spec: &AuthSpec) -> Result<Vec<HeaderName>, CredentialError> {
    let parse = |name: &str| {
        HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| CredentialError::BadHeaderName(name.to_owned()))
    };
    Ok(match spec {
        AuthSpec::None => Vec::new(),
        AuthSpec::ApiKey {
            in_: ApiKeyLocation::Header,
            name,
            ..
        } => vec![parse(name)?],
        AuthSpec::ApiKey {
            in_: ApiKeyLocation::Query,
            ..
        } => Vec::new(),
        AuthSpec::Basic | AuthSpec::OAuth2 { .. } => vec![AUTHORIZATION],
        AuthSpec::CustomHeader { headers } => headers
            .iter()
            .map(|name| parse(name))
            .collect::<Result<_, _>>()?,
    })
}

/// Attaches `credential` the way `spec` says, replacing what the guest put in the same place.
/// Called only for hops whose host an explicit declared pattern names.
///
/// `Credential::None` attaches nothing (a connection without a credential still gets the
/// reserved headers stripped by the caller); a credential of the wrong shape is an error
/// rather than a silent unauthenticated request.
pub fn apply(
    spec: &AuthSpec,
    credential: &Credential,
    url: &mut Url,
    headers: &mut HeaderMap,
) -> Result<(), CredentialError> {
    let mismatch = || CredentialError::Mismatch(spec.type_name());
    match (spec, credential) {
        (AuthSpec::None, _) | (_, Credential::None) => {}
        (AuthSpec::ApiKey { in_, name, prefix }, Credential::ApiKey(key)) => match in_ {
            ApiKeyLocation::Header => {
                let value = format!("{}{}", prefix.as_deref().unwrap_or(""), key.expose());
                insert(headers, name, &value)?;
            }
            ApiKeyLocation::Query => set_query_param(url, name, key.expose()),
        },
        (AuthSpec::Basic, Credential::Basic { username, password }) => {
            let value = format!("Basic {}", basic_blob(username, password));
            insert(headers, AUTHORIZATION.as_str(), &value)?;
        }
        (AuthSpec::OAuth2 { .. }, Credential::OAuth2 { access_token, .. }) => {
            let value = format!("Bearer {}", access_token.expose());
            insert(headers, AUTHORIZATION.as_str(), &value)?;
        }
        (AuthSpec::CustomHeader { headers: names }, Credential::CustomHeaders(values)) => {
            for name in names {
                let value = values
                    .iter()
                    .find(|(candidate, _)| candidate.eq_ignore_ascii_case(name));
                if let Some((_, value)) = value {
                    insert(headers, name, value.expose())?;
                }
            }
        }
        _ => return Err(mismatch()),
    }
    Ok(())
}

/// Every string that reveals the credential if it appears in a response, a log or an output:
/// the raw values, and for basic auth the `user:password` pair and the blob the gate encodes
/// it to. The scrubber adds encodings of each (base64 among them).
///
/// The `prefix+key` header value needs no pattern of its own: it contains the key, so
/// scrubbing the key already redacts it, and leaves the harmless prefix readable
/// (`Bearer ***`), which tells whoever reads a log what kind of credential was there.
pub fn secret_forms(credential: &Credential) -> Vec<Secret> {
    let mut forms = Vec::new();
    match credential {
        Credential::None => {}
        Credential::ApiKey(key) => forms.push(key.clone()),
        Credential::Basic { username, password } => {
            forms.push(password.clone());
            // The pair's base64 is the `Authorization` blob, which the scrubber derives (in
            // both alphabets, padded or not, and inside longer base64) from the pair; the blob
            // is a form of its own too, because an upstream that reflects the header it got
            // base64-encoded encodes the blob a second time.
            forms.push(Secret::from(format!("{username}:{}", password.expose())));
            forms.push(Secret::from(basic_blob(username, password)));
        }
        Credential::CustomHeaders(values) => {
            forms.extend(values.iter().map(|(_, value)| value.clone()));
        }
        Credential::OAuth2 { access_token, .. } => forms.push(access_token.clone()),
    }
    forms
}

fn basic_blob(username: &str, password: &Secret) -> String {
    let plain = Secret::from(format!("{username}:{}", password.expose()));
    base64::engine::general_purpose::STANDARD.encode(plain.expose())
}

fn insert(headers: &mut HeaderMap, name: &str, value: &str) -> Result<(), CredentialError> {
    let name = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| CredentialError::BadHeaderName(name.to_owned()))?;
    let mut value = HeaderValue::from_str(value).map_err(|_| CredentialError::BadHeaderValue)?;
    // Keeps the value out of HPACK tables and out of `Debug` output of the header map.
    value.set_sensitive(true);
    headers.insert(name, value);
    Ok(())
}

/// Sets `name=value` in the query, dropping every parameter of that name the guest wrote.
/// The other parameters are kept byte for byte: re-serializing the whole query through
/// `query_pairs_mut` would re-encode them (`%20` to `+`, ...), which some APIs treat
/// differently.
fn set_query_param(url: &mut Url, name: &str, value: &str) {
    let mut kept: Vec<String> = url
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty())
        .filter(|pair| {
            let raw_name = pair.split('=').next().unwrap_or("");
            let decoded: String = form_urlencoded::parse(raw_name.as_bytes())
                .map(|(key, _)| key.into_owned())
                .collect();
            decoded != name
        })
        .map(str::to_owned)
        .collect();
    let encoded: String = form_urlencoded::Serializer::new(String::new())
        .append_pair(name, value)
        .finish();
    kept.push(encoded);
    url.set_query(Some(&kept.join("&")));
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use super::*;

    #[test]
    fn deserializes_every_auth_type_from_manifest_json() {
        let parse = |json: &str| serde_json::from_str::<AuthSpec>(json).unwrap();
        assert_eq!(parse(r#"{"type":"none"}"#), AuthSpec::None);
        assert_eq!(
            parse(r#"{"type":"api_key","in":"header","name":"Authorization","prefix":"Bearer "}"#),
            AuthSpec::ApiKey {
                in_: ApiKeyLocation::Header,
                name: "Authorization".into(),
                prefix: Some("Bearer ".into())
            }
        );
        assert_eq!(
            parse(r#"{"type":"api_key","in":"query","name":"key"}"#),
            AuthSpec::ApiKey {
                in_: ApiKeyLocation::Query,
                name: "key".into(),
                prefix: None
            }
        );
        assert_eq!(parse(r#"{"type":"basic"}"#), AuthSpec::Basic);
        assert_eq!(
            parse(r#"{"type":"custom_header","headers":["X-Api-Key","X-Org"]}"#),
            AuthSpec::CustomHeader {
                headers: vec!["X-Api-Key".into(), "X-Org".into()]
            }
        );
        assert_eq!(
            parse(r#"{"type":"oauth2","token_url":"https://t.test/token","scopes":["a"]}"#),
            AuthSpec::OAuth2 {
                token_url: "https://t.test/token".into(),
                authorization_url: None,
                scopes: vec!["a".into()]
            }
        );
        assert!(
            serde_json::from_str::<AuthSpec>(r#"{"type":"api_key","in":"cookie","name":"k"}"#)
                .is_err()
        );
        assert!(serde_json::from_str::<AuthSpec>(r#"{"type":"kerberos"}"#).is_err());
    }

    #[test]
    fn serializes_back_to_manifest_json() {
        for json in [
            r#"{"type":"none"}"#,
            r#"{"type":"api_key","in":"header","name":"Authorization","prefix":"Bearer "}"#,
            r#"{"type":"api_key","in":"query","name":"key"}"#,
            r#"{"type":"basic"}"#,
            r#"{"type":"custom_header","headers":["X-Api-Key"]}"#,
            r#"{"type":"oauth2","token_url":"https://t.test/token","scopes":["a"]}"#,
        ] {
            let spec: AuthSpec = serde_json::from_str(json).unwrap();
            assert_eq!(serde_json::to_string(&spec).unwrap(), json);
        }
    }

    #[test]
    fn query_key_replaces_same_named_params_and_keeps_the_rest_verbatim() {
        let mut url = Url::parse("https://a.test/p?key=guest&q=a%20b+c&key=again&x").unwrap();
        set_query_param(&mut url, "key", "s3cr&t");
        assert_eq!(url.query(), Some("q=a%20b+c&x&key=s3cr%26t"));
    }

    #[test]
    fn mismatched_credential_is_an_error_without_the_value() {
        let err = apply(
            &AuthSpec::Basic,
            &Credential::ApiKey(Secret::from("top-secret")),
            &mut Url::parse("https://a.test/").unwrap(),
            &mut HeaderMap::new(),
        )
        .unwrap_err();
        assert!(!err.to_string().contains("top-secret"));
        assert_eq!(err, CredentialError::Mismatch("basic"));
    }

    #[test]
    fn secret_forms_include_derived_values() {
        let forms = secret_forms(&Credential::ApiKey(Secret::from("k1")));
        let forms: Vec<&str> = forms.iter().map(Secret::expose).collect();
        assert_eq!(forms, ["k1"]);

        let forms = secret_forms(&Credential::Basic {
            username: "u".into(),
            password: Secret::from("p"),
        });
        let forms: Vec<&str> = forms.iter().map(Secret::expose).collect();
        assert_eq!(forms, ["p", "u:p", "dTpw"]);
    }
}
