//! Conversions between the wire and [`Payload`]: the public API's transaction messages (every
//! error naming its field) and the node protocol's payload oneof.

use shardsign_eth::{
    AccessListItem, Address, Authorization, Eip1559Transaction, Eip2930Transaction,
    Eip7702Transaction, LegacyTransaction, Limits, Signature, SignedAuthorization, U256,
    UnsignedTransaction, parse_u256,
};
use shardsign_proto::node::v1::start_sign_request::Payload as NodePayload;
use shardsign_proto::v1::{self as api, sign_transaction_request::Transaction};

use crate::error::RequestError;
use crate::payload::{Payload, PayloadKind};

/// Largest chain id accepted: EIP-2294's bound, so that a legacy `v` fits in 64 bits.
pub const MAX_CHAIN_ID: u64 = u64::MAX / 2 - 36;

/// A public API transaction (any of its forms) as a validated payload.
pub fn transaction(
    transaction: Option<&Transaction>,
    limits: &Limits,
) -> Result<Payload, RequestError> {
    let tx: UnsignedTransaction = match transaction {
        None => {
            return Err(RequestError::invalid(
                "transaction",
                "one of legacy, eip2930, eip1559, eip7702 or unsigned_rlp is required",
            ));
        }
        Some(Transaction::UnsignedRlp(bytes)) => {
            let tx = UnsignedTransaction::decode_signing_payload(bytes, limits)?;
            chain_id(tx.chain_id())?;
            return Ok(Payload::Transaction(tx));
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
        Some(Transaction::Eip7702(t)) => Eip7702Transaction {
            chain_id: chain_id(t.chain_id)?,
            nonce: t.nonce,
            max_priority_fee_per_gas: quantity(
                "max_priority_fee_per_gas",
                &t.max_priority_fee_per_gas,
            )?,
            max_fee_per_gas: quantity("max_fee_per_gas", &t.max_fee_per_gas)?,
            gas_limit: t.gas_limit,
            to: to(&t.to)?.ok_or(shardsign_eth::EthError::SetCodeWithoutTo)?,
            value: quantity("value", &t.value)?,
            data: t.data.clone(),
            access_list: access_list(&t.access_list, limits)?,
            authorization_list: authorization_list(&t.authorization_list, limits)?,
        }
        .into(),
    };
    Payload::transaction(tx, limits)
}

/// A public API `personal_sign` message as a payload.
pub fn personal_message(message: Vec<u8>) -> Result<Payload, RequestError> {
    Payload::personal_message("message", message)
}

/// A public API EIP-712 document as a payload.
pub fn typed_data(document: Vec<u8>) -> Result<Payload, RequestError> {
    Payload::typed_data("typed_data", document)
}

/// A public API EIP-7702 authorization as a payload.
pub fn authorization(request: &api::SignAuthorizationRequest) -> Result<Payload, RequestError> {
    if request.chain_id > MAX_CHAIN_ID {
        return Err(RequestError::invalid(
            "chain_id",
            format!("above {MAX_CHAIN_ID}, the largest chain id accepted"),
        ));
    }
    Ok(Payload::Authorization(shardsign_eth::Authorization {
        chain_id: request.chain_id,
        address: Address::parse("address", &request.address)?,
        nonce: request.nonce,
    }))
}

/// The node protocol's form of a payload.
pub fn to_node(payload: &Payload) -> NodePayload {
    match payload.kind() {
        PayloadKind::Transaction => NodePayload::Transaction(payload.encode()),
        PayloadKind::PersonalMessage => NodePayload::PersonalMessage(payload.encode()),
        PayloadKind::TypedData => NodePayload::TypedData(payload.encode()),
        PayloadKind::Authorization => NodePayload::Authorization(payload.encode()),
    }
}

/// A node's strict reading of the payload it is asked to sign.
pub fn from_node(payload: Option<NodePayload>, limits: &Limits) -> Result<Payload, RequestError> {
    let (kind, bytes) = match payload {
        Some(NodePayload::Transaction(bytes)) => (PayloadKind::Transaction, bytes),
        Some(NodePayload::PersonalMessage(bytes)) => (PayloadKind::PersonalMessage, bytes),
        Some(NodePayload::TypedData(bytes)) => (PayloadKind::TypedData, bytes),
        Some(NodePayload::Authorization(bytes)) => (PayloadKind::Authorization, bytes),
        None => {
            return Err(RequestError::invalid(
                "payload",
                "a transaction, a personal_message, typed_data or an authorization is required",
            ));
        }
    };
    Payload::decode(kind, bytes, limits)
}

fn quantity(field: &'static str, text: &str) -> Result<U256, RequestError> {
    if text.is_empty() {
        return Ok(U256::ZERO);
    }
    Ok(parse_u256(field, text)?)
}

fn to(text: &str) -> Result<Option<Address>, RequestError> {
    if text.is_empty() {
        return Ok(None);
    }
    Ok(Some(Address::parse("to", text)?))
}

fn access_list(
    items: &[api::AccessListItem],
    limits: &Limits,
) -> Result<Vec<AccessListItem>, RequestError> {
    if items.len() > limits.max_access_list_items {
        return Err(RequestError::invalid(
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
                        RequestError::invalid(
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

/// Signed tuples, bounded before any is parsed. Errors name the tuple by index; the tuples' own
/// rules (non-empty list, low s) are the transaction's validation.
fn authorization_list(
    tuples: &[api::SignedAuthorization],
    limits: &Limits,
) -> Result<Vec<SignedAuthorization>, RequestError> {
    if tuples.len() > limits.max_authorizations {
        return Err(RequestError::invalid(
            "authorization_list",
            format!(
                "{} authorizations is over the limit of {}",
                tuples.len(),
                limits.max_authorizations
            ),
        ));
    }
    tuples
        .iter()
        .enumerate()
        .map(|(index, tuple)| {
            signed_authorization(tuple)
                .map_err(|reason| shardsign_eth::EthError::Authorization { index, reason })
        })
        .collect::<Result<_, _>>()
        .map_err(RequestError::from)
}

fn signed_authorization(tuple: &api::SignedAuthorization) -> Result<SignedAuthorization, String> {
    let scalar = |name: &str, bytes: &[u8]| {
        <[u8; 32]>::try_from(bytes)
            .map_err(|_| format!("{name}: expected 32 bytes, got {}", bytes.len()))
    };
    let parity =
        u8::try_from(tuple.y_parity).map_err(|_| "y_parity: must be 0 or 1".to_string())?;
    let signature = Signature::new(scalar("r", &tuple.r)?, scalar("s", &tuple.s)?, parity)
        .map_err(|err| err.to_string())?;
    Ok(SignedAuthorization {
        authorization: Authorization {
            chain_id: tuple.chain_id,
            address: Address::parse("address", &tuple.address).map_err(|err| err.to_string())?,
            nonce: tuple.nonce,
        },
        signature,
    })
}

fn chain_id(value: u64) -> Result<u64, RequestError> {
    if value > MAX_CHAIN_ID {
        return Err(RequestError::invalid(
            "chain_id",
            format!("must be at most {MAX_CHAIN_ID}"),
        ));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_crosses_the_node_protocol_unchanged() {
        let limits = Limits::DEFAULT;
        let tx = transaction(
            Some(&Transaction::Eip1559(api::Eip1559Transaction {
                chain_id: 1,
                nonce: 1,
                max_priority_fee_per_gas: "1".into(),
                max_fee_per_gas: "2".into(),
                gas_limit: 21_000,
                to: "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed".into(),
                value: "1".into(),
                ..Default::default()
            })),
            &limits,
        )
        .unwrap();
        let message = personal_message(b"hi".to_vec()).unwrap();
        for payload in [tx, message] {
            assert_eq!(
                from_node(Some(to_node(&payload)), &limits).unwrap(),
                payload
            );
        }
        let missing = from_node(None, &limits).unwrap_err();
        assert!(missing.to_string().starts_with("payload: "), "{missing}");
    }

    #[test]
    fn a_chain_id_too_large_for_a_legacy_v_is_refused() {
        let error = transaction(
            Some(&Transaction::Legacy(api::LegacyTransaction {
                chain_id: MAX_CHAIN_ID + 1,
                gas_limit: 21_000,
                ..Default::default()
            })),
            &Limits::DEFAULT,
        )
        .unwrap_err();
        assert!(error.to_string().starts_with("chain_id: "), "{error}");
    }
}
