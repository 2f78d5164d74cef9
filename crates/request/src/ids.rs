//! Identifiers that travel with a request, as types: a key id can never be passed where a request
//! id belongs, and each has one validator.

use std::fmt;

use crate::error::RequestError;

/// Longest key id.
pub const MAX_KEY_ID_LEN: usize = 64;
/// Longest request id.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// A signing key's id: 1 to 64 characters of `[A-Za-z0-9_-]` (safe in logs, paths and SQL text).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(String);

/// A string that is not a key id; says what one looks like.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected 1 to {MAX_KEY_ID_LEN} characters of A-Z a-z 0-9 _ -")]
pub struct InvalidKeyId;

impl KeyId {
    pub fn parse(text: &str) -> Result<KeyId, InvalidKeyId> {
        let valid = !text.is_empty()
            && text.len() <= MAX_KEY_ID_LEN
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if valid {
            Ok(KeyId(text.to_string()))
        } else {
            Err(InvalidKeyId)
        }
    }

    /// [`KeyId::parse`] with the error naming the request field `key_id`.
    pub fn field(text: &str) -> Result<KeyId, RequestError> {
        Self::parse(text).map_err(|e| RequestError::invalid("key_id", e.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for KeyId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for KeyId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

/// A caller's idempotency id: 1 to 128 printable ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestId(String);

impl RequestId {
    pub fn parse(text: &str) -> Result<RequestId, RequestError> {
        if text.is_empty()
            || text.len() > MAX_REQUEST_ID_LEN
            || !text.chars().all(|c| c.is_ascii_graphic())
        {
            return Err(RequestError::invalid(
                "request_id",
                format!("expected 1 to {MAX_REQUEST_ID_LEN} printable ASCII characters"),
            ));
        }
        Ok(RequestId(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids_are_1_to_64_safe_characters() {
        for good in ["a", "treasury-1", "A_b-9", &"k".repeat(64)] {
            assert_eq!(KeyId::parse(good).unwrap().as_str(), good);
        }
        for bad in ["", "a b", "a/b", "ключ", "a\n", &"k".repeat(65)] {
            assert_eq!(KeyId::parse(bad), Err(InvalidKeyId), "{bad:?}");
        }
        assert_eq!(
            KeyId::field("a b").unwrap_err().to_string(),
            "key_id: expected 1 to 64 characters of A-Z a-z 0-9 _ -"
        );
    }

    #[test]
    fn request_ids_are_1_to_128_printable_ascii_characters() {
        assert!(RequestId::parse("req-1:retry#2").is_ok());
        assert!(RequestId::parse(&"r".repeat(128)).is_ok());
        for bad in ["", "a b", "é", &"r".repeat(129)] {
            let error = RequestId::parse(bad).unwrap_err();
            assert!(error.to_string().starts_with("request_id: "), "{bad:?}");
        }
    }
}
