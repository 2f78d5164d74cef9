//! One error type for the crate; every variant names the field or rule it is about.

use thiserror::Error;

/// What went wrong with an Ethereum value, transaction or signature.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EthError {
    #[error("{field}: expected 20 bytes (40 hex digits) for an address, got {len}")]
    AddressLength { field: &'static str, len: usize },
    #[error("{field}: address checksum (EIP-55) does not match; check the mixed-case spelling")]
    AddressChecksum { field: &'static str },
    #[error("{field}: not valid hex")]
    InvalidHex { field: &'static str },
    #[error("{field}: not a number (expected decimal digits or 0x-prefixed hex)")]
    InvalidNumber { field: &'static str },
    #[error("{field}: value does not fit in {bits} bits")]
    ValueOverflow { field: &'static str, bits: u32 },
    #[error("chain_id: 0 is not a valid chain id")]
    ChainIdZero,
    #[error(
        "chain_id: missing; unprotected (pre-EIP-155) transactions can be replayed on any chain and are refused"
    )]
    ChainIdMissing,
    #[error("gas_limit: must be greater than 0")]
    GasLimitZero,
    #[error(
        "max_priority_fee_per_gas: {priority} is above max_fee_per_gas {max_fee}; the tip cannot exceed the fee cap"
    )]
    PriorityFeeAboveMaxFee { priority: String, max_fee: String },
    #[error("data: {len} bytes is over the limit of {max} bytes")]
    DataTooLarge { len: usize, max: usize },
    #[error("access_list: {len} entries is over the limit of {max}")]
    AccessListTooLong { len: usize, max: usize },
    #[error("access_list: {count} storage keys in all is over the limit of {max}")]
    TooManyStorageKeys { count: usize, max: usize },
    #[error("authorization_list: {len} authorizations is over the limit of {max}")]
    AuthorizationListTooLong { len: usize, max: usize },
    #[error(
        "authorization_list: empty; a set-code (EIP-7702) transaction carries at least one authorization"
    )]
    AuthorizationListEmpty,
    #[error("authorization_list[{index}]: {reason}")]
    Authorization { index: usize, reason: String },
    #[error("to: required; a set-code (EIP-7702) transaction cannot create a contract")]
    SetCodeWithoutTo,
    #[error("transaction: {len} bytes is over the limit of {max} bytes")]
    EncodingTooLarge { len: usize, max: usize },
    #[error("transaction: empty input")]
    Empty,
    #[error("transaction: type 0x{tx_type:02x} is not supported (supported: legacy, 0x01, 0x02, 0x04){hint}", tx_type = .0, hint = unsupported_hint(*.0))]
    UnsupportedType(u8),
    #[error("{field}: malformed RLP ({reason})")]
    Rlp { field: &'static str, reason: String },
    #[error("{field}: {count} trailing bytes after the RLP item")]
    TrailingBytes { field: &'static str, count: usize },
    #[error("{field}: expected {expected} list items, got {got}")]
    FieldCount {
        field: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("signature: {0}")]
    InvalidSignature(&'static str),
}

impl EthError {
    pub(crate) fn rlp(field: &'static str, err: alloy_rlp::Error) -> Self {
        EthError::Rlp {
            field,
            reason: err.to_string(),
        }
    }
}

/// Why a known but unsupported transaction type is refused.
fn unsupported_hint(tx_type: u8) -> &'static str {
    match tx_type {
        0x03 => {
            "; blob (EIP-4844) transactions are refused: a rollup's blobs are not an agent's to sign"
        }
        _ => "",
    }
}
