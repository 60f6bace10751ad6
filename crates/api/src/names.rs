//! The one rule for the display names tenants give their things (tenants, connections,
//! workflows): trimmed, 1-200 characters, nothing `airlock_contract::names` forbids.

use super::error::ApiError;

/// The longest name, in characters (not bytes: the limit the document and the message state).
const MAX_NAME_CHARS: usize = 200;

/// The trimmed name, or a 422 on `name` that calls it "the `noun` name".
pub(crate) fn check_name(name: &str, noun: &str) -> Result<String, ApiError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(ApiError::validation(
            "name",
            format!("a {noun} name is 1-{MAX_NAME_CHARS} characters"),
        ));
    }
    airlock_contract::names::check(name)
        .map_err(|e| ApiError::validation("name", format!("the {noun} name {e}")))?;
    Ok(name.to_owned())
}
