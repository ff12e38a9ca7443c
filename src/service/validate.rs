//! Input rules, checked before anything reaches the database or the kernel.

use super::error::ApiError;
use crate::keys::PublicKey;
use crate::overlay::Ipv4Cidr;
use crate::policy::valid_tag;
use serde::Deserialize;

pub const MAX_TAGS: usize = 32;

/// For an optional field that may be left out but not be `null`: the document gives it a type,
/// not null, and `"name": null` must be a 400, not a silent "unchanged".
pub fn non_null<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// `Some(None)` for an explicit `null` (clears the field), `None` when the field is absent.
pub fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// Characters that would let text break out of a line or disguise itself.
fn forbidden(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

/// Names: 1–64 characters, any script, no control or bidi-override characters, not blank.
pub fn name(field: &str, value: &str) -> Result<String, ApiError> {
    let n = value.chars().count();
    if !(1..=64).contains(&n) {
        return Err(ApiError::invalid(field, "must be 1 to 64 characters"));
    }
    if value.chars().any(forbidden) {
        return Err(ApiError::invalid(
            field,
            "must not contain control characters",
        ));
    }
    if value.trim().is_empty() {
        return Err(ApiError::invalid(field, "must not be blank"));
    }
    Ok(value.to_string())
}

/// A policy name may also be empty.
pub fn optional_name(field: &str, value: &str) -> Result<String, ApiError> {
    if value.is_empty() {
        Ok(String::new())
    } else {
        name(field, value)
    }
}

pub fn email(value: &str) -> Result<String, ApiError> {
    let bad = || ApiError::invalid("email", "must be an email address");
    if !(3..=254).contains(&value.len()) || value.chars().any(|c| c.is_whitespace() || forbidden(c))
    {
        return Err(bad());
    }
    let (local, domain) = value.split_once('@').ok_or_else(bad)?;
    if local.is_empty()
        || domain.is_empty()
        || domain.contains('@')
        || !domain.contains('.') && domain != "localhost"
    {
        return Err(bad());
    }
    Ok(value.to_string())
}

pub fn tenant_cidr(value: &str) -> Result<Ipv4Cidr, ApiError> {
    let cidr: Ipv4Cidr = value.parse().map_err(|e| ApiError::invalid("cidr", e))?;
    cidr.validate_tenant()
        .map_err(|e| ApiError::invalid("cidr", e))?;
    Ok(cidr)
}

pub fn public_key(value: &str) -> Result<PublicKey, ApiError> {
    PublicKey::from_base64(value).map_err(|e| ApiError::invalid("public_key", e))
}

pub fn tags(values: &[String]) -> Result<Vec<String>, ApiError> {
    if values.len() > MAX_TAGS {
        return Err(ApiError::invalid(
            "tags",
            format!("at most {MAX_TAGS} tags"),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(values.len());
    for t in values {
        if !valid_tag(t) {
            return Err(ApiError::invalid(
                "tags",
                "each tag is 1 to 64 letters, digits or -_.:",
            ));
        }
        if !out.contains(t) {
            out.push(t.clone());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(name("name", "Ünïcødé 🚀 \"quoted\" 'x'").is_ok());
        assert!(name("name", &"x".repeat(64)).is_ok());
        assert!(
            name("name", &"é".repeat(64)).is_ok(),
            "characters, not bytes"
        );
        for bad in [
            "",
            " ",
            "a\nb",
            "a\rb",
            "a\0b",
            "a\u{7f}",
            "a\u{2028}b",
            "evil\u{202e}txt.exe",
            "\t",
        ] {
            assert!(name("name", bad).is_err(), "{bad:?}");
        }
        assert!(name("name", &"x".repeat(65)).is_err());
    }

    #[test]
    fn emails() {
        assert!(email("a@b.co").is_ok());
        assert!(email("admin@localhost").is_ok());
        for bad in [
            "", "a", "a@", "@b.c", "a b@c.d", "a@b@c.d", "a@nodot", "a\n@b.c",
        ] {
            assert!(email(bad).is_err(), "{bad:?}");
        }
    }
}
