use std::fmt;

use zeroize::Zeroizing;

use crate::error::ClientError;

/// Length of every API key (`ss_live_` + 16 hex + `_` + 64 hex).
pub const API_KEY_LEN: usize = 89;

/// What the client presents. Never printed; wiped on drop.
#[derive(Clone)]
pub struct Credential(Zeroizing<String>);

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credential({})", self.public_id())
    }
}

impl Credential {
    /// An API key, checked for shape (prefix, length, hex) before any call is made.
    pub fn api_key(key: impl Into<String>) -> Result<Self, ClientError> {
        let key = Zeroizing::new(key.into());
        let key_text = key.trim();
        let shaped = key_text.len() == API_KEY_LEN
            && key_text.is_ascii()
            && (key_text.starts_with("ss_live_") || key_text.starts_with("ss_test_"))
            && key_text.as_bytes()[24] == b'_'
            && key_text[8..24]
                .chars()
                .chain(key_text[25..].chars())
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c));
        if !shaped {
            return Err(ClientError::Config(
                "the API key is malformed: expected ss_live_<16 hex>_<64 hex> (or ss_test_)".into(),
            ));
        }
        Ok(Credential(Zeroizing::new(key_text.to_string())))
    }

    /// The coordinator's bootstrap token (it can only create the first admin key).
    pub fn bootstrap(token: impl Into<String>) -> Self {
        Credential(Zeroizing::new(token.into()))
    }

    /// The public part: an API key's id, or `bootstrap`.
    pub fn public_id(&self) -> String {
        if self.0.len() == API_KEY_LEN && self.0.starts_with("ss_") {
            self.0[..24].to_string()
        } else {
            "bootstrap".into()
        }
    }

    pub(crate) fn header(&self) -> Zeroizing<String> {
        Zeroizing::new(format!("Bearer {}", self.0.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked_and_never_printed() {
        let key = format!("ss_test_{}_{}", "0123456789abcdef", "ab".repeat(32));
        let credential = Credential::api_key(&key).unwrap();
        let shown = format!("{credential:?}");
        assert_eq!(shown, "Credential(ss_test_0123456789abcdef)");
        for bad in [
            key.replace("ss_test_", "sk_test_"),
            key[..88].to_string(),
            key.to_uppercase(),
            format!("{}é", &key[..87]),
        ] {
            let error = Credential::api_key(bad.clone()).unwrap_err().to_string();
            assert!(!error.contains(&bad[25..]), "{error}");
        }
    }
}
