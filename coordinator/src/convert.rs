//! Public API transactions -> `shardsign_eth` transactions, with every error naming its field.

use shardsign_eth::{
    AccessListItem, Address, Eip1559Transaction, Eip2930Transaction, LegacyTransaction, Limits,
    UnsignedTransaction, parse_u256,
};
use shardsign_proto::v1::{self as api, sign_transaction_request::Transaction};

use crate::error::CoordError;

/// Largest chain id accepted: EIP-2294's bound, so that a legacy `v` fits in 64 bits.
pub const MAX_CHAIN_ID: u64 = u64::MAX / 2 - 36;

fn quantity(field: &'static str, text: &str) -> Result<shardsign_eth::U256, CoordError> {
    if text.is_empty() {
        return Ok(shardsign_eth::U256::ZERO);
    }
    Ok(parse_u256(field, text)?)
}

fn to(text: &str) -> Result<Option<Address>, CoordError> {
    if text.is_empty() {
        return Ok(None);
    }
    Ok(Some(Address::parse("to", text)?))
}

fn access_list(
    items: &[api::AccessListItem],
    limits: &Limits,
) -> Result<Vec<AccessListItem>, CoordError> {
    if items.len() > limits.max_access_list_items {
        return Err(CoordError::invalid(
            "access_list",
            format!(
                "{} entries is over the limit of {}",
                items.len(),
                limits.max_access_list_items
            ),
        ));
    }
    items
        .iter()
        .map(|item| {
            let address = Address::parse("access_list.address", &item.address)?;
            let storage_keys = item
                .storage_keys
                .iter()
                .map(|key| {
                    <[u8; 32]>::try_from(key.as_slice()).map_err(|_| {
                        CoordError::invalid(
                            "access_list.storage_keys",
                            "each storage key is 32 bytes",
                        )
                    })
                })
                .collect::<Result<_, _>>()?;
            Ok(AccessListItem {
                address,
                storage_keys,
            })
        })
        .collect()
}

fn chain_id(value: u64) -> Result<u64, CoordError> {
    if value > MAX_CHAIN_ID {
        return Err(CoordError::invalid(
            "chain_id",
            format!("must be at most {MAX_CHAIN_ID}"),
        ));
    }
    Ok(value)
}

/// Converts and validates a request's transaction.
pub fn transaction(
    transaction: Option<&Transaction>,
    limits: &Limits,
) -> Result<UnsignedTransaction, CoordError> {
    let tx: UnsignedTransaction = match transaction {
        None => {
            return Err(CoordError::invalid(
                "transaction",
                "one of legacy, eip2930, eip1559 or unsigned_rlp is required",
            ));
        }
        Some(Transaction::UnsignedRlp(bytes)) => {
            let tx = UnsignedTransaction::decode_signing_payload(bytes, limits)?;
            chain_id(tx.chain_id())?;
            return Ok(tx);
        }
        Some(Transaction::Legacy(t)) => LegacyTransaction {
            chain_id: chain_id(t.chain_id)?,
            nonce: t.nonce,
            gas_price: quantity("gas_price", &t.gas_price)?,
            gas_limit: t.gas_limit,
            to: to(&t.to)?,
            value: quantity("value", &t.value)?,
            data: t.data.clone(),
        }
        .into(),
        Some(Transaction::Eip2930(t)) => Eip2930Transaction {
            chain_id: chain_id(t.chain_id)?,
            nonce: t.nonce,
            gas_price: quantity("gas_price", &t.gas_price)?,
            gas_limit: t.gas_limit,
            to: to(&t.to)?,
            value: quantity("value", &t.value)?,
            data: t.data.clone(),
            access_list: access_list(&t.access_list, limits)?,
        }
        .into(),
        Some(Transaction::Eip1559(t)) => Eip1559Transaction {
            chain_id: chain_id(t.chain_id)?,
            nonce: t.nonce,
            max_priority_fee_per_gas: quantity(
                "max_priority_fee_per_gas",
                &t.max_priority_fee_per_gas,
            )?,
            max_fee_per_gas: quantity("max_fee_per_gas", &t.max_fee_per_gas)?,
            gas_limit: t.gas_limit,
            to: to(&t.to)?,
            value: quantity("value", &t.value)?,
            data: t.data.clone(),
            access_list: access_list(&t.access_list, limits)?,
        }
        .into(),
    };
    tx.validate(limits)?;
    Ok(tx)
}
