//! Rules for EIP-191 `personal_sign` messages. A signature over 32 bytes can stand for a
//! transaction hash (a Safe owner's approval of a `safeTxHash` is such a signature), and a
//! proposer can grind a hash until it happens to be printable text, so "text only" alone does not
//! protect: a 32-byte message is refused unless `allow_hash_shaped`, whatever it looks like.

use crate::error::{PolicyError, Refusal};

/// Longest message when the policy names no `max_len`.
pub const DEFAULT_MAX_MESSAGE_LEN: usize = 1024;
/// Largest `max_len` a policy may set (the API's own limit on a message).
pub const MAX_MESSAGE_LEN: usize = shardsign_eth::MAX_PERSONAL_MESSAGE_LEN;
/// Most prefixes, and longest prefix, a policy may list.
pub const MAX_PREFIXES: usize = 16;
pub const MAX_PREFIX_LEN: usize = 256;
/// The length of a hash.
const HASH_LEN: usize = 32;

/// What a message must look like to be signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRules {
    pub allow_hash_shaped: bool,
    /// Valid UTF-8 without control characters other than newline.
    pub text_only: bool,
    pub max_len: usize,
    /// When non-empty, the message must start with one of these.
    pub allowed_prefixes: Vec<String>,
}

impl Default for MessageRules {
    fn default() -> Self {
        MessageRules {
            allow_hash_shaped: false,
            text_only: true,
            max_len: DEFAULT_MAX_MESSAGE_LEN,
            allowed_prefixes: Vec::new(),
        }
    }
}

impl MessageRules {
    /// Builds and bounds the rules (`max_len` 0 means the default).
    pub fn new(
        allow_hash_shaped: bool,
        allow_binary: bool,
        max_len: u32,
        allowed_prefixes: Vec<String>,
    ) -> Result<MessageRules, PolicyError> {
        let max_len = match usize::try_from(max_len).unwrap_or(usize::MAX) {
            0 => DEFAULT_MAX_MESSAGE_LEN,
            n if n > MAX_MESSAGE_LEN => {
                return Err(PolicyError::invalid(
                    "message_rules.max_len",
                    format!("at most {MAX_MESSAGE_LEN} bytes"),
                ));
            }
            n => n,
        };
        if allowed_prefixes.len() > MAX_PREFIXES
            || allowed_prefixes
                .iter()
                .any(|p| p.is_empty() || p.len() > MAX_PREFIX_LEN)
        {
            return Err(PolicyError::invalid(
                "message_rules.allowed_prefixes",
                format!("at most {MAX_PREFIXES} prefixes of 1 to {MAX_PREFIX_LEN} bytes"),
            ));
        }
        Ok(MessageRules {
            allow_hash_shaped,
            text_only: !allow_binary,
            max_len,
            allowed_prefixes,
        })
    }

    /// Checks one message against every rule, naming the first that refuses it.
    pub fn check(&self, message: &[u8]) -> Result<(), Refusal> {
        if message.len() > self.max_len {
            return Err(Refusal::new(
                "message_max_len",
                format!("{} bytes > {}", message.len(), self.max_len),
            ));
        }
        if message.len() == HASH_LEN && !self.allow_hash_shaped {
            return Err(Refusal::new(
                "message_allow_hash_shaped",
                "a 32-byte message can be a transaction hash (e.g. a Safe approval); this key may not sign one",
            ));
        }
        if self.text_only && !is_text(message) {
            return Err(Refusal::new(
                "message_text_only",
                "the message is not UTF-8 text without control characters (newline aside)",
            ));
        }
        if !self.allowed_prefixes.is_empty()
            && !self
                .allowed_prefixes
                .iter()
                .any(|prefix| message.starts_with(prefix.as_bytes()))
        {
            return Err(Refusal::new(
                "message_allowed_prefixes",
                format!(
                    "the message starts with none of the {} allowed prefixes",
                    self.allowed_prefixes.len()
                ),
            ));
        }
        Ok(())
    }
}

fn is_text(message: &[u8]) -> bool {
    std::str::from_utf8(message)
        .is_ok_and(|text| text.chars().all(|c| c == '\n' || !c.is_control()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_default_short_text_signs_and_hash_shaped_binary_or_long_messages_do_not() {
        let rules = MessageRules::default();
        rules
            .check(b"I am an agent\nand I approve this message")
            .unwrap();
        rules.check(&[b'a'; 31]).unwrap();
        rules.check(&[b'a'; 33]).unwrap();
        // A hash ground until it is printable is still 32 bytes.
        assert_eq!(
            rules.check(&[b'a'; 32]).unwrap_err().rule,
            "message_allow_hash_shaped"
        );
        assert_eq!(
            rules.check(&[0xff, 0xfe]).unwrap_err().rule,
            "message_text_only"
        );
        assert_eq!(
            rules.check(b"tab\there").unwrap_err().rule,
            "message_text_only"
        );
        rules.check(&[b'a'; DEFAULT_MAX_MESSAGE_LEN]).unwrap();
        let refusal = rules
            .check(&[b'a'; DEFAULT_MAX_MESSAGE_LEN + 1])
            .unwrap_err();
        assert_eq!(
            refusal.to_string(),
            "policy message_max_len: 1025 bytes > 1024"
        );
    }

    #[test]
    fn each_rule_can_be_opened_and_prefixes_narrow() {
        let open = MessageRules::new(true, true, 64, Vec::new()).unwrap();
        open.check(&[0u8; 32]).unwrap();
        open.check(&[0xff; 64]).unwrap();
        assert_eq!(open.check(&[0; 65]).unwrap_err().rule, "message_max_len");
        let siwe = MessageRules::new(
            false,
            false,
            0,
            vec!["example.com wants you to sign in".into()],
        )
        .unwrap();
        siwe.check(b"example.com wants you to sign in with your Ethereum account:\n0x...")
            .unwrap();
        assert_eq!(
            siwe.check(b"evil.example wants you to sign in")
                .unwrap_err()
                .rule,
            "message_allowed_prefixes"
        );
    }

    #[test]
    fn bounds_are_enforced_when_parsing() {
        assert!(MessageRules::new(false, false, (MAX_MESSAGE_LEN + 1) as u32, vec![]).is_err());
        assert!(MessageRules::new(false, false, 0, vec![String::new()]).is_err());
        assert!(MessageRules::new(false, false, 0, vec!["p".into(); MAX_PREFIXES + 1]).is_err());
        assert_eq!(
            MessageRules::new(false, false, 0, vec![]).unwrap(),
            MessageRules::default()
        );
    }
}
