//! 20-byte account addresses: derivation from a secp256k1 public key, EIP-55 checksummed text.

use std::fmt;
use std::str::FromStr;

use k256::ecdsa::VerifyingKey;

use crate::error::EthError;
use crate::keccak::keccak256;

/// An Ethereum account address. `Display` writes the EIP-55 checksummed form.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Address(pub [u8; 20]);

impl Address {
    /// The address of a public key: the last 20 bytes of keccak256 of the uncompressed point
    /// without its 0x04 tag.
    pub fn from_public_key(key: &VerifyingKey) -> Self {
        let point = key.to_sec1_point(false);
        let hash = keccak256(&point.as_bytes()[1..]);
        let mut out = [0u8; 20];
        out.copy_from_slice(&hash[12..]);
        Address(out)
    }

    /// Parses an address from text. Accepts an optional `0x`, and either a single-case spelling
    /// (no checksum) or a mixed-case spelling whose EIP-55 checksum is right. `field` names the
    /// input in errors.
    pub fn parse(field: &'static str, text: &str) -> Result<Self, EthError> {
        let digits = text
            .strip_prefix("0x")
            .or_else(|| text.strip_prefix("0X"))
            .unwrap_or(text);
        if digits.len() != 40 {
            return Err(EthError::AddressLength {
                field,
                len: digits.len() / 2,
            });
        }
        let mut bytes = [0u8; 20];
        hex::decode_to_slice(digits, &mut bytes).map_err(|_| EthError::InvalidHex { field })?;
        let address = Address(bytes);
        let has_lower = digits.bytes().any(|b| b.is_ascii_lowercase());
        let has_upper = digits.bytes().any(|b| b.is_ascii_uppercase());
        if has_lower && has_upper && address.to_checksum()[2..] != *digits {
            return Err(EthError::AddressChecksum { field });
        }
        Ok(address)
    }

    /// Builds an address from raw bytes, checking the length.
    pub fn from_slice(field: &'static str, bytes: &[u8]) -> Result<Self, EthError> {
        let array: [u8; 20] = bytes.try_into().map_err(|_| EthError::AddressLength {
            field,
            len: bytes.len(),
        })?;
        Ok(Address(array))
    }

    /// The EIP-55 mixed-case checksummed spelling, with `0x`.
    pub fn to_checksum(&self) -> String {
        let lower = hex::encode(self.0);
        let hash = keccak256(lower.as_bytes());
        let mut out = String::with_capacity(42);
        out.push_str("0x");
        for (i, c) in lower.chars().enumerate() {
            let nibble = (hash[i / 2] >> (if i % 2 == 0 { 4 } else { 0 })) & 0x0f;
            if c.is_ascii_alphabetic() && nibble >= 8 {
                out.push(c.to_ascii_uppercase());
            } else {
                out.push(c);
            }
        }
        out
    }

    pub fn as_bytes(&self) -> &[u8; 20] {
        &self.0
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_checksum())
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address({})", self.to_checksum())
    }
}

impl FromStr for Address {
    type Err = EthError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Address::parse("address", s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Test vectors from the EIP-55 text.
    const EIP55_VECTORS: [&str; 4] = [
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
        "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
        "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
        "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
    ];

    #[test]
    fn checksum_matches_eip55_vectors() {
        for vector in EIP55_VECTORS {
            let parsed = Address::parse("to", &vector.to_lowercase()).unwrap();
            assert_eq!(parsed.to_checksum(), vector);
            assert_eq!(Address::parse("to", vector).unwrap(), parsed);
        }
    }

    #[test]
    fn wrong_checksum_is_rejected_and_named() {
        let wrong = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD";
        assert_eq!(
            Address::parse("to", wrong),
            Err(EthError::AddressChecksum { field: "to" })
        );
    }

    #[test]
    fn single_case_spellings_need_no_checksum() {
        let upper = "0x5AAEB6053F3E94C9B9A09F33669435E7EF1BEAED";
        assert!(Address::parse("to", upper).is_ok());
        assert!(Address::parse("to", &upper.to_lowercase()).is_ok());
    }

    #[test]
    fn wrong_length_and_bad_hex_are_named() {
        assert_eq!(
            Address::parse("to", "0x1234"),
            Err(EthError::AddressLength {
                field: "to",
                len: 2
            })
        );
        assert_eq!(
            Address::parse("to", "0xzzaeb6053f3e94c9b9a09f33669435e7ef1beaed"),
            Err(EthError::InvalidHex { field: "to" })
        );
        assert_eq!(
            Address::from_slice("to", &[0u8; 19]),
            Err(EthError::AddressLength {
                field: "to",
                len: 19
            })
        );
    }

    #[test]
    fn address_of_private_key_one_is_known() {
        // The address of the key with secret scalar 1 (the generator point) is well known.
        let key = k256::ecdsa::SigningKey::from_slice(&{
            let mut k = [0u8; 32];
            k[31] = 1;
            k
        })
        .unwrap();
        let address = Address::from_public_key(key.verifying_key());
        assert_eq!(
            address.to_checksum(),
            "0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf"
        );
    }
}
