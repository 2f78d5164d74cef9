//! Parsing of numeric quantities from text (decimal or 0x-hex), with overflow named by field.

use ruint::aliases::U256;

use crate::error::EthError;

/// Parses a 256-bit unsigned quantity: decimal digits, or hex with a `0x` prefix.
/// A value above 2^256-1 is `ValueOverflow` for `field`.
pub fn parse_u256(field: &'static str, text: &str) -> Result<U256, EthError> {
    let text = text.trim();
    // Bound the work before parsing: 2^256 has 78 decimal digits and 64 hex digits.
    if text.len() > 80 {
        return if is_number_text(text) {
            Err(EthError::ValueOverflow { field, bits: 256 })
        } else {
            Err(EthError::InvalidNumber { field })
        };
    }
    let (digits, radix) = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => (hex, 16),
        None => (text, 10),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return Err(EthError::InvalidNumber { field });
    }
    U256::from_str_radix(digits, radix as u64).map_err(|err| match err {
        ruint::ParseError::BaseConvertError(ruint::BaseConvertError::Overflow) => {
            EthError::ValueOverflow { field, bits: 256 }
        }
        _ => EthError::InvalidNumber { field },
    })
}

/// Parses a 64-bit unsigned quantity (nonce, gas limit, chain id) like [`parse_u256`].
pub fn parse_u64(field: &'static str, text: &str) -> Result<u64, EthError> {
    let value = parse_u256(field, text).map_err(|err| match err {
        EthError::ValueOverflow { field, .. } => EthError::ValueOverflow { field, bits: 64 },
        other => other,
    })?;
    u64::try_from(value).map_err(|_| EthError::ValueOverflow { field, bits: 64 })
}

fn is_number_text(text: &str) -> bool {
    let digits = text.strip_prefix("0x").unwrap_or(text);
    !digits.is_empty() && digits.chars().all(|c| c.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_and_hex_parse() {
        assert_eq!(parse_u256("value", "1000").unwrap(), U256::from(1000u64));
        assert_eq!(parse_u256("value", "0x3e8").unwrap(), U256::from(1000u64));
        assert_eq!(
            parse_u256("value", &U256::MAX.to_string()).unwrap(),
            U256::MAX
        );
    }

    #[test]
    fn two_to_the_256_overflows_with_the_field_named() {
        let two_256 =
            "115792089237316195423570985008687907853269984665640564039457584007913129639936";
        assert_eq!(
            parse_u256("value", two_256),
            Err(EthError::ValueOverflow {
                field: "value",
                bits: 256
            })
        );
        assert_eq!(
            parse_u256("value", &format!("0x1{}", "0".repeat(64))),
            Err(EthError::ValueOverflow {
                field: "value",
                bits: 256
            })
        );
        assert_eq!(
            parse_u256("value", &"9".repeat(200)),
            Err(EthError::ValueOverflow {
                field: "value",
                bits: 256
            })
        );
    }

    #[test]
    fn garbage_is_invalid_number() {
        for bad in ["", "0x", "-1", "1.5", "12a", "0xg"] {
            assert_eq!(
                parse_u256("gas_price", bad),
                Err(EthError::InvalidNumber { field: "gas_price" })
            );
        }
    }

    #[test]
    fn u64_overflow_says_64_bits() {
        assert_eq!(
            parse_u64("nonce", "18446744073709551615").unwrap(),
            u64::MAX
        );
        assert_eq!(
            parse_u64("nonce", "18446744073709551616"),
            Err(EthError::ValueOverflow {
                field: "nonce",
                bits: 64
            })
        );
    }
}
