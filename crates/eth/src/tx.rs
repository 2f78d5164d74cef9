//! Unsigned transactions of the four supported types (legacy, EIP-2930, EIP-1559, EIP-7702), their validation, their signing payloads
//! (what is hashed and signed) and the strict decoding of those payloads.

use ruint::aliases::U256;

use crate::address::Address;
use crate::authorization::SignedAuthorization;
use crate::error::EthError;
use crate::keccak::keccak256;
use crate::limits::Limits;
use crate::rlp::{ListBuilder, ListReader};
use crate::signature::Signature;
use crate::signed::SignedTransaction;

/// EIP-2718 type byte of EIP-2930 transactions.
pub(crate) const EIP2930_TYPE: u8 = 0x01;
/// EIP-2718 type byte of EIP-1559 transactions.
pub(crate) const EIP1559_TYPE: u8 = 0x02;
/// EIP-2718 type byte of EIP-7702 set-code transactions.
pub(crate) const EIP7702_TYPE: u8 = 0x04;

/// The transaction types this crate encodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TxType {
    Legacy,
    Eip2930,
    Eip1559,
    Eip7702,
}

/// One entry of an EIP-2930 access list.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AccessListItem {
    pub address: Address,
    pub storage_keys: Vec<[u8; 32]>,
}

/// An EIP-2930 access list.
pub type AccessList = Vec<AccessListItem>;

/// A legacy transaction, always signed with EIP-155 replay protection.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LegacyTransaction {
    pub chain_id: u64,
    pub nonce: u64,
    pub gas_price: U256,
    pub gas_limit: u64,
    /// `None` creates a contract from `data`.
    pub to: Option<Address>,
    pub value: U256,
    pub data: Vec<u8>,
}

/// An EIP-2930 transaction (type 0x01).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Eip2930Transaction {
    pub chain_id: u64,
    pub nonce: u64,
    pub gas_price: U256,
    pub gas_limit: u64,
    pub to: Option<Address>,
    pub value: U256,
    pub data: Vec<u8>,
    pub access_list: AccessList,
}

/// An EIP-1559 transaction (type 0x02).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Eip1559Transaction {
    pub chain_id: u64,
    pub nonce: u64,
    pub max_priority_fee_per_gas: U256,
    pub max_fee_per_gas: U256,
    pub gas_limit: u64,
    pub to: Option<Address>,
    pub value: U256,
    pub data: Vec<u8>,
    pub access_list: AccessList,
}

/// An EIP-7702 set-code transaction (type 0x04): EIP-1559 fields plus signed authorizations that
/// set each authority's code to its delegate. It always calls an existing account (`to`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Eip7702Transaction {
    pub chain_id: u64,
    pub nonce: u64,
    pub max_priority_fee_per_gas: U256,
    pub max_fee_per_gas: U256,
    pub gas_limit: u64,
    pub to: Address,
    pub value: U256,
    pub data: Vec<u8>,
    pub access_list: AccessList,
    pub authorization_list: Vec<SignedAuthorization>,
}

/// A transaction waiting for its signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnsignedTransaction {
    Legacy(LegacyTransaction),
    Eip2930(Eip2930Transaction),
    Eip1559(Eip1559Transaction),
    Eip7702(Eip7702Transaction),
}

impl From<LegacyTransaction> for UnsignedTransaction {
    fn from(tx: LegacyTransaction) -> Self {
        UnsignedTransaction::Legacy(tx)
    }
}

impl From<Eip2930Transaction> for UnsignedTransaction {
    fn from(tx: Eip2930Transaction) -> Self {
        UnsignedTransaction::Eip2930(tx)
    }
}

impl From<Eip1559Transaction> for UnsignedTransaction {
    fn from(tx: Eip1559Transaction) -> Self {
        UnsignedTransaction::Eip1559(tx)
    }
}

impl From<Eip7702Transaction> for UnsignedTransaction {
    fn from(tx: Eip7702Transaction) -> Self {
        UnsignedTransaction::Eip7702(tx)
    }
}

impl UnsignedTransaction {
    pub fn tx_type(&self) -> TxType {
        match self {
            UnsignedTransaction::Legacy(_) => TxType::Legacy,
            UnsignedTransaction::Eip2930(_) => TxType::Eip2930,
            UnsignedTransaction::Eip1559(_) => TxType::Eip1559,
            UnsignedTransaction::Eip7702(_) => TxType::Eip7702,
        }
    }

    pub fn chain_id(&self) -> u64 {
        match self {
            UnsignedTransaction::Legacy(tx) => tx.chain_id,
            UnsignedTransaction::Eip2930(tx) => tx.chain_id,
            UnsignedTransaction::Eip1559(tx) => tx.chain_id,
            UnsignedTransaction::Eip7702(tx) => tx.chain_id,
        }
    }

    pub fn nonce(&self) -> u64 {
        match self {
            UnsignedTransaction::Legacy(tx) => tx.nonce,
            UnsignedTransaction::Eip2930(tx) => tx.nonce,
            UnsignedTransaction::Eip1559(tx) => tx.nonce,
            UnsignedTransaction::Eip7702(tx) => tx.nonce,
        }
    }

    pub fn gas_limit(&self) -> u64 {
        match self {
            UnsignedTransaction::Legacy(tx) => tx.gas_limit,
            UnsignedTransaction::Eip2930(tx) => tx.gas_limit,
            UnsignedTransaction::Eip1559(tx) => tx.gas_limit,
            UnsignedTransaction::Eip7702(tx) => tx.gas_limit,
        }
    }

    /// The recipient; `None` for contract creation.
    pub fn to(&self) -> Option<Address> {
        match self {
            UnsignedTransaction::Legacy(tx) => tx.to,
            UnsignedTransaction::Eip2930(tx) => tx.to,
            UnsignedTransaction::Eip1559(tx) => tx.to,
            UnsignedTransaction::Eip7702(tx) => Some(tx.to),
        }
    }

    pub fn value(&self) -> U256 {
        match self {
            UnsignedTransaction::Legacy(tx) => tx.value,
            UnsignedTransaction::Eip2930(tx) => tx.value,
            UnsignedTransaction::Eip1559(tx) => tx.value,
            UnsignedTransaction::Eip7702(tx) => tx.value,
        }
    }

    pub fn data(&self) -> &[u8] {
        match self {
            UnsignedTransaction::Legacy(tx) => &tx.data,
            UnsignedTransaction::Eip2930(tx) => &tx.data,
            UnsignedTransaction::Eip1559(tx) => &tx.data,
            UnsignedTransaction::Eip7702(tx) => &tx.data,
        }
    }

    pub fn access_list(&self) -> &[AccessListItem] {
        match self {
            UnsignedTransaction::Legacy(_) => &[],
            UnsignedTransaction::Eip2930(tx) => &tx.access_list,
            UnsignedTransaction::Eip1559(tx) => &tx.access_list,
            UnsignedTransaction::Eip7702(tx) => &tx.access_list,
        }
    }

    /// The signed EIP-7702 authorizations a set-code transaction carries; empty for the others.
    pub fn authorization_list(&self) -> &[SignedAuthorization] {
        match self {
            UnsignedTransaction::Eip7702(tx) => &tx.authorization_list,
            _ => &[],
        }
    }

    /// The most the sender can pay per unit of gas: the gas price, or the EIP-1559 fee cap.
    pub fn max_fee_per_gas(&self) -> U256 {
        match self {
            UnsignedTransaction::Legacy(tx) => tx.gas_price,
            UnsignedTransaction::Eip2930(tx) => tx.gas_price,
            UnsignedTransaction::Eip1559(tx) => tx.max_fee_per_gas,
            UnsignedTransaction::Eip7702(tx) => tx.max_fee_per_gas,
        }
    }

    /// The most the transaction can cost in fees: gas limit times the fee cap (saturating).
    pub fn max_total_fee(&self) -> U256 {
        self.max_fee_per_gas()
            .saturating_mul(U256::from(self.gas_limit()))
    }

    /// Checks the rules no signer should waive: a chain id (EIP-155 replay protection), a non-zero
    /// gas limit, a tip no larger than the fee cap, a set-code transaction's non-empty
    /// authorization list, and the size limits.
    pub fn validate(&self, limits: &Limits) -> Result<(), EthError> {
        if self.chain_id() == 0 {
            return Err(EthError::ChainIdZero);
        }
        if self.gas_limit() == 0 {
            return Err(EthError::GasLimitZero);
        }
        let fee_caps = match self {
            UnsignedTransaction::Eip1559(tx) => {
                Some((tx.max_priority_fee_per_gas, tx.max_fee_per_gas))
            }
            UnsignedTransaction::Eip7702(tx) => {
                Some((tx.max_priority_fee_per_gas, tx.max_fee_per_gas))
            }
            _ => None,
        };
        if let Some((priority, max_fee)) = fee_caps
            && priority > max_fee
        {
            return Err(EthError::PriorityFeeAboveMaxFee {
                priority: priority.to_string(),
                max_fee: max_fee.to_string(),
            });
        }
        if let UnsignedTransaction::Eip7702(tx) = self {
            let count = tx.authorization_list.len();
            if count == 0 {
                return Err(EthError::AuthorizationListEmpty);
            }
            if count > limits.max_authorizations {
                return Err(EthError::AuthorizationListTooLong {
                    len: count,
                    max: limits.max_authorizations,
                });
            }
            for (index, tuple) in tx.authorization_list.iter().enumerate() {
                if !tuple.signature.is_low_s() {
                    return Err(EthError::Authorization {
                        index,
                        reason: "signature: s is in the upper half of the curve order; EIP-7702 skips such a tuple".into(),
                    });
                }
            }
        }
        if self.data().len() > limits.max_data_len {
            return Err(EthError::DataTooLarge {
                len: self.data().len(),
                max: limits.max_data_len,
            });
        }
        let list = self.access_list();
        if list.len() > limits.max_access_list_items {
            return Err(EthError::AccessListTooLong {
                len: list.len(),
                max: limits.max_access_list_items,
            });
        }
        let keys: usize = list.iter().map(|item| item.storage_keys.len()).sum();
        if keys > limits.max_storage_keys {
            return Err(EthError::TooManyStorageKeys {
                count: keys,
                max: limits.max_storage_keys,
            });
        }
        Ok(())
    }

    /// The bytes whose keccak-256 is signed: for legacy `rlp([nonce, gasPrice, gas, to, value,
    /// data, chainId, 0, 0])` (EIP-155), for typed transactions `type || rlp(fields)`.
    pub fn signing_payload(&self) -> Vec<u8> {
        match self {
            UnsignedTransaction::Legacy(tx) => {
                let mut list = legacy_fields(tx);
                list.u64(tx.chain_id).u64(0).u64(0);
                list.finish()
            }
            UnsignedTransaction::Eip2930(tx) => typed(EIP2930_TYPE, &eip2930_fields(tx)),
            UnsignedTransaction::Eip1559(tx) => typed(EIP1559_TYPE, &eip1559_fields(tx)),
            UnsignedTransaction::Eip7702(tx) => typed(EIP7702_TYPE, &eip7702_fields(tx)),
        }
    }

    /// keccak-256 of the signing payload: the 32 bytes that the ECDSA signature covers.
    pub fn signing_hash(&self) -> [u8; 32] {
        keccak256(self.signing_payload())
    }

    /// Decodes a signing payload (the output of [`Self::signing_payload`]) strictly, then
    /// validates it. This is how a signer learns what it is about to sign.
    pub fn decode_signing_payload(payload: &[u8], limits: &Limits) -> Result<Self, EthError> {
        check_encoded_len(payload, limits)?;
        let tx = match payload.first() {
            None => return Err(EthError::Empty),
            Some(&EIP2930_TYPE) => {
                let mut list = ListReader::whole("transaction", &payload[1..])?;
                let tx = read_eip2930_fields(&mut list, limits)?;
                list.finish(8)?;
                UnsignedTransaction::Eip2930(tx)
            }
            Some(&EIP1559_TYPE) => {
                let mut list = ListReader::whole("transaction", &payload[1..])?;
                let tx = read_eip1559_fields(&mut list, limits)?;
                list.finish(9)?;
                UnsignedTransaction::Eip1559(tx)
            }
            Some(&EIP7702_TYPE) => {
                let mut list = ListReader::whole("transaction", &payload[1..])?;
                let tx = read_eip7702_fields(&mut list, limits)?;
                list.finish(10)?;
                UnsignedTransaction::Eip7702(tx)
            }
            Some(&first) if first >= 0xc0 => {
                let mut list = ListReader::whole("transaction", payload)?;
                let mut tx = read_legacy_fields(&mut list, limits)?;
                if list.is_empty() {
                    return Err(EthError::ChainIdMissing);
                }
                tx.chain_id = list.u64("chain_id")?;
                if list.u64("eip155_r")? != 0 || list.u64("eip155_s")? != 0 {
                    return Err(EthError::Rlp {
                        field: "transaction",
                        reason: "EIP-155 signing payload must end with chain_id, 0, 0".into(),
                    });
                }
                list.finish(9)?;
                UnsignedTransaction::Legacy(tx)
            }
            Some(&other) => return Err(EthError::UnsupportedType(other)),
        };
        tx.validate(limits)?;
        Ok(tx)
    }

    /// Attaches a signature over [`Self::signing_hash`]. A high `s` is normalised (EIP-2),
    /// flipping the recovery id, so any valid ECDSA signature yields a valid transaction.
    pub fn into_signed(self, signature: Signature) -> SignedTransaction {
        SignedTransaction::new(self, signature.normalized_low_s())
    }
}

pub(crate) fn check_encoded_len(input: &[u8], limits: &Limits) -> Result<(), EthError> {
    let max = limits.max_encoded_len();
    if input.len() > max {
        return Err(EthError::EncodingTooLarge {
            len: input.len(),
            max,
        });
    }
    Ok(())
}

fn typed(tx_type: u8, fields: &ListBuilder) -> Vec<u8> {
    let mut out = vec![tx_type];
    fields.finish_into(&mut out);
    out
}

/// The first six legacy fields; EIP-155 payload and signed form append to them.
pub(crate) fn legacy_fields(tx: &LegacyTransaction) -> ListBuilder {
    let mut list = ListBuilder::with_capacity(tx.data.len() + 128);
    list.u64(tx.nonce)
        .u256(&tx.gas_price)
        .u64(tx.gas_limit)
        .to(&tx.to)
        .u256(&tx.value)
        .bytes(&tx.data);
    list
}

pub(crate) fn eip2930_fields(tx: &Eip2930Transaction) -> ListBuilder {
    let mut list = ListBuilder::with_capacity(tx.data.len() + 160);
    list.u64(tx.chain_id)
        .u64(tx.nonce)
        .u256(&tx.gas_price)
        .u64(tx.gas_limit)
        .to(&tx.to)
        .u256(&tx.value)
        .bytes(&tx.data)
        .access_list(&tx.access_list);
    list
}

pub(crate) fn eip1559_fields(tx: &Eip1559Transaction) -> ListBuilder {
    let mut list = ListBuilder::with_capacity(tx.data.len() + 192);
    list.u64(tx.chain_id)
        .u64(tx.nonce)
        .u256(&tx.max_priority_fee_per_gas)
        .u256(&tx.max_fee_per_gas)
        .u64(tx.gas_limit)
        .to(&tx.to)
        .u256(&tx.value)
        .bytes(&tx.data)
        .access_list(&tx.access_list);
    list
}

pub(crate) fn eip7702_fields(tx: &Eip7702Transaction) -> ListBuilder {
    let mut list =
        ListBuilder::with_capacity(tx.data.len() + 192 + tx.authorization_list.len() * 112);
    list.u64(tx.chain_id)
        .u64(tx.nonce)
        .u256(&tx.max_priority_fee_per_gas)
        .u256(&tx.max_fee_per_gas)
        .u64(tx.gas_limit)
        .to(&Some(tx.to))
        .u256(&tx.value)
        .bytes(&tx.data)
        .access_list(&tx.access_list)
        .authorization_list(&tx.authorization_list);
    list
}

pub(crate) fn read_legacy_fields(
    list: &mut ListReader<'_>,
    limits: &Limits,
) -> Result<LegacyTransaction, EthError> {
    Ok(LegacyTransaction {
        chain_id: 0,
        nonce: list.u64("nonce")?,
        gas_price: list.u256("gas_price")?,
        gas_limit: list.u64("gas_limit")?,
        to: list.to()?,
        value: list.u256("value")?,
        data: list.data(limits)?,
    })
}

pub(crate) fn read_eip2930_fields(
    list: &mut ListReader<'_>,
    limits: &Limits,
) -> Result<Eip2930Transaction, EthError> {
    Ok(Eip2930Transaction {
        chain_id: list.u64("chain_id")?,
        nonce: list.u64("nonce")?,
        gas_price: list.u256("gas_price")?,
        gas_limit: list.u64("gas_limit")?,
        to: list.to()?,
        value: list.u256("value")?,
        data: list.data(limits)?,
        access_list: list.access_list(limits)?,
    })
}

pub(crate) fn read_eip1559_fields(
    list: &mut ListReader<'_>,
    limits: &Limits,
) -> Result<Eip1559Transaction, EthError> {
    Ok(Eip1559Transaction {
        chain_id: list.u64("chain_id")?,
        nonce: list.u64("nonce")?,
        max_priority_fee_per_gas: list.u256("max_priority_fee_per_gas")?,
        max_fee_per_gas: list.u256("max_fee_per_gas")?,
        gas_limit: list.u64("gas_limit")?,
        to: list.to()?,
        value: list.u256("value")?,
        data: list.data(limits)?,
        access_list: list.access_list(limits)?,
    })
}

pub(crate) fn read_eip7702_fields(
    list: &mut ListReader<'_>,
    limits: &Limits,
) -> Result<Eip7702Transaction, EthError> {
    Ok(Eip7702Transaction {
        chain_id: list.u64("chain_id")?,
        nonce: list.u64("nonce")?,
        max_priority_fee_per_gas: list.u256("max_priority_fee_per_gas")?,
        max_fee_per_gas: list.u256("max_fee_per_gas")?,
        gas_limit: list.u64("gas_limit")?,
        to: list.to()?.ok_or(EthError::SetCodeWithoutTo)?,
        value: list.u256("value")?,
        data: list.data(limits)?,
        access_list: list.access_list(limits)?,
        authorization_list: list.authorization_list(limits)?,
    })
}
