//! Human amounts of ether: `0.5eth`, `20 gwei`, `123` (wei), `0x1bc16d674ec80000` (wei), and
//! the reverse, for messages a person reads ("2.5 ETH > 1 ETH").

use ruint::aliases::U256;

use crate::error::EthError;
use crate::quantity::parse_u256;

const UNITS: &[(&str, u32)] = &[("ether", 18), ("eth", 18), ("gwei", 9), ("wei", 0)];

/// Parses an amount in wei from text: a plain number is wei; a number (decimals allowed) followed
/// by `eth`/`ether`, `gwei` or `wei` is scaled. More decimals than the unit has is an error, not
/// a silent rounding.
pub fn parse_amount(field: &'static str, text: &str) -> Result<U256, EthError> {
    let text = text.trim();
    if text.len() > 100 {
        return Err(EthError::InvalidNumber { field });
    }
    let lower = text.to_ascii_lowercase();
    let Some((number, decimals)) = UNITS.iter().find_map(|(unit, decimals)| {
        lower
            .strip_suffix(unit)
            .map(|number| (number.trim_end(), *decimals))
    }) else {
        return parse_u256(field, text);
    };
    parse_units(field, number, decimals)
}

/// Parses a decimal number (`250`, `0.5`, `.25`) scaled by `10^decimals`: the base units of a
/// token with that many decimals. More fraction digits than `decimals` is an error, never a
/// rounding.
pub fn parse_units(field: &'static str, number: &str, decimals: u32) -> Result<U256, EthError> {
    if number.len() > 100 || decimals > 77 {
        return Err(EthError::InvalidNumber { field });
    }
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits_only = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    if whole.is_empty() && fraction.is_empty()
        || !digits_only(whole)
        || !digits_only(fraction)
        || fraction.len() > decimals as usize
    {
        return Err(EthError::InvalidNumber { field });
    }
    let scale = U256::from(10u8).pow(U256::from(decimals));
    let whole = if whole.is_empty() {
        U256::ZERO
    } else {
        parse_u256(field, whole)?
    };
    let fraction_value = if fraction.is_empty() {
        U256::ZERO
    } else {
        let padded = format!("{fraction:0<width$}", width = decimals as usize);
        parse_u256(field, &padded)?
    };
    whole
        .checked_mul(scale)
        .and_then(|w| w.checked_add(fraction_value))
        .ok_or(EthError::ValueOverflow { field, bits: 256 })
}

/// Formats wei as ether with only the decimals needed: `2.5 ETH`, `0 ETH`, `0.000000001 ETH`.
pub fn format_eth(wei: U256) -> String {
    format_units(wei, 18, "ETH")
}

/// Formats base units of a token with `decimals` decimals: `format_units(2_500_000, 6, "USDC")`
/// is `2.5 USDC`.
pub fn format_units(value: U256, decimals: u32, symbol: &str) -> String {
    let decimals = decimals.min(77);
    let scale = U256::from(10u8).pow(U256::from(decimals));
    let whole = value / scale;
    let fraction = value % scale;
    if fraction.is_zero() {
        return format!("{whole} {symbol}");
    }
    let fraction = format!("{fraction:0>width$}", width = decimals as usize);
    format!("{whole}.{} {symbol}", fraction.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wei(text: &str) -> U256 {
        text.parse().unwrap()
    }

    #[test]
    fn amounts_parse_with_units() {
        assert_eq!(
            parse_amount("v", "1eth").unwrap(),
            wei("1000000000000000000")
        );
        assert_eq!(
            parse_amount("v", "0.5 ETH").unwrap(),
            wei("500000000000000000")
        );
        assert_eq!(
            parse_amount("v", ".25ether").unwrap(),
            wei("250000000000000000")
        );
        assert_eq!(parse_amount("v", "20gwei").unwrap(), wei("20000000000"));
        assert_eq!(parse_amount("v", "1.5 gwei").unwrap(), wei("1500000000"));
        assert_eq!(parse_amount("v", "123wei").unwrap(), wei("123"));
        assert_eq!(parse_amount("v", "123").unwrap(), wei("123"));
        assert_eq!(parse_amount("v", "0x10").unwrap(), wei("16"));
        for bad in [
            "",
            "eth",
            "1.2.3eth",
            "0.1wei",
            "1e18",
            "-1eth",
            "0.0000000001gwei",
            "abc",
        ] {
            assert!(parse_amount("v", bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            parse_amount("v", &format!("{}eth", "9".repeat(70))).unwrap_err(),
            EthError::ValueOverflow {
                field: "v",
                bits: 256
            }
        );
    }

    #[test]
    fn token_units_parse_and_format_with_their_decimals() {
        assert_eq!(parse_units("v", "250", 6).unwrap(), wei("250000000"));
        assert_eq!(parse_units("v", "0.000001", 6).unwrap(), wei("1"));
        assert_eq!(parse_units("v", "7", 0).unwrap(), wei("7"));
        for bad in ["", ".", "0.0000001", "1,5", "-1", "1e6"] {
            assert!(parse_units("v", bad, 6).is_err(), "{bad:?}");
        }
        assert_eq!(format_units(wei("250000000"), 6, "USDC"), "250 USDC");
        assert_eq!(format_units(wei("2500001"), 6, "USDC"), "2.500001 USDC");
        assert_eq!(format_units(wei("5"), 0, "NFT"), "5 NFT");
    }

    #[test]
    fn amounts_format_as_ether() {
        assert_eq!(format_eth(wei("0")), "0 ETH");
        assert_eq!(format_eth(wei("2500000000000000000")), "2.5 ETH");
        assert_eq!(format_eth(wei("1000000000000000000")), "1 ETH");
        assert_eq!(format_eth(wei("1000000000")), "0.000000001 ETH");
        assert_eq!(format_eth(wei("1")), "0.000000000000000001 ETH");
    }
}
