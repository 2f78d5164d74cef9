//! Ethereum encodings for shardsign: unsigned transactions (EIP-155 legacy, EIP-2930, EIP-1559,
//! EIP-7702 set-code), their signing hashes, signed raw transactions, sender recovery, EIP-55
//! addresses, EIP-191 `personal_sign`, EIP-712 typed data and EIP-7702 authorizations.
//!
//! Pure functions over bytes: no I/O, nothing of ours below it. Every decoder is strict (canonical
//! RLP, no trailing bytes, bounded sizes) and every error names the field it is about, because the
//! node re-derives what it signs from these decoders and must never be talked into a different hash.

mod address;
mod amount;
mod authorization;
pub mod erc20;
mod error;
mod keccak;
mod limits;
mod personal;
mod quantity;
mod rlp;
mod signature;
mod signed;
mod tx;
pub mod typed_data;

pub use address::Address;
pub use amount::{format_eth, format_units, parse_amount, parse_units};
pub use authorization::{AUTHORIZATION_MAGIC, Authorization, SignedAuthorization};
pub use error::EthError;
pub use keccak::keccak256;
pub use limits::Limits;
pub use personal::{MAX_PERSONAL_MESSAGE_LEN, personal_sign_hash, personal_signature_bytes};
pub use quantity::{parse_u64, parse_u256};
pub use ruint::aliases::U256;
pub use signature::{RecoveryId, Signature, sign_prehash};
pub use signed::SignedTransaction;
pub use tx::{
    AccessList, AccessListItem, Eip1559Transaction, Eip2930Transaction, Eip7702Transaction,
    LegacyTransaction, TxType, UnsignedTransaction,
};
