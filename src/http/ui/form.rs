//! A submitted form (`application/x-www-form-urlencoded`), read once. Values are wiped when the
//! form is dropped: a form may carry a password.

use crate::http::error::ApiError;
use zeroize::Zeroize;

pub struct Form(Vec<(String, String)>);

impl Form {
    pub fn parse(body: &[u8]) -> Result<Form, ApiError> {
        serde_urlencoded::from_bytes(body)
            .map(Form)
            .map_err(|_| ApiError::bad_request("the form could not be read"))
    }

    pub fn empty() -> Form {
        Form(Vec::new())
    }

    /// The first value of a field, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a field (a field repeated, like checked boxes of one name).
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// A field's value, or "" when absent.
    pub fn text(&self, name: &str) -> &str {
        self.get(name).unwrap_or("")
    }
}

impl Drop for Form {
    fn drop(&mut self) {
        for (_, v) in &mut self.0 {
            v.zeroize();
        }
    }
}

/// Tags as typed in one field: separated by commas or spaces.
pub fn tags(text: &str) -> Vec<String> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_and_tags() {
        let f = Form::parse(b"name=a+b%26c&tags=x%2C+y&name=second").unwrap();
        assert_eq!(f.get("name"), Some("a b&c"));
        assert_eq!(tags(f.text("tags")), ["x", "y"]);
        assert_eq!(f.get("nope"), None);
        assert_eq!(tags(""), Vec::<String>::new());
    }
}
