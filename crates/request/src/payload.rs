//! What a request asks a key to sign. Each kind knows its wire encoding (what the coordinator
//! sends the nodes), its strict decoding (how a node learns what it signs) and its signing hash.

use shardsign_eth::typed_data::{self, TypedData};
use shardsign_eth::{
    Authorization, Limits, MAX_PERSONAL_MESSAGE_LEN, U256, UnsignedTransaction, personal_sign_hash,
};

use crate::error::RequestError;

/// The kinds of payload, by name (part of idempotency fingerprints and metric labels: stable).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PayloadKind {
    Transaction,
    PersonalMessage,
    TypedData,
    Authorization,
}

impl PayloadKind {
    /// A short stable name.
    pub fn name(self) -> &'static str {
        match self {
            PayloadKind::Transaction => "tx",
            PayloadKind::PersonalMessage => "message",
            PayloadKind::TypedData => "typed_data",
            PayloadKind::Authorization => "authorization",
        }
    }
}

/// A validated payload. Built only through its checked constructors or [`Payload::decode`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// An unsigned, validated transaction.
    Transaction(UnsignedTransaction),
    /// An EIP-191 `personal_sign` message of at most [`MAX_PERSONAL_MESSAGE_LEN`] bytes.
    PersonalMessage(Vec<u8>),
    /// An EIP-712 document: its exact bytes (what the nodes are sent, and parse themselves) and
    /// what they say.
    TypedData(TypedDataPayload),
    /// An EIP-7702 authorization tuple.
    Authorization(Authorization),
}

/// A checked EIP-712 document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypedDataPayload {
    pub document: Vec<u8>,
    pub typed: TypedData,
    /// The domain's chainId, when it names one (checked to fit 64 bits).
    pub chain_id: Option<u64>,
}

impl Payload {
    /// A transaction, validated against `limits`.
    pub fn transaction(tx: UnsignedTransaction, limits: &Limits) -> Result<Payload, RequestError> {
        tx.validate(limits)?;
        Ok(Payload::Transaction(tx))
    }

    /// A personal message; `field` names where it came from, for the error.
    pub fn personal_message(
        field: &'static str,
        message: Vec<u8>,
    ) -> Result<Payload, RequestError> {
        if message.len() > MAX_PERSONAL_MESSAGE_LEN {
            return Err(RequestError::invalid(
                field,
                format!(
                    "{} bytes is over the limit of {MAX_PERSONAL_MESSAGE_LEN}",
                    message.len()
                ),
            ));
        }
        Ok(Payload::PersonalMessage(message))
    }

    /// An EIP-712 document (`eth_signTypedData_v4` JSON), parsed strictly; `field` names where
    /// it came from (the error adds the path inside the document).
    pub fn typed_data(field: &'static str, document: Vec<u8>) -> Result<Payload, RequestError> {
        let typed = TypedData::parse(&document, &typed_data::Limits::DEFAULT)
            .map_err(|e| RequestError::invalid(field, e.to_string()))?;
        let chain_id = match typed.domain.chain_id {
            None => None,
            Some(id) => Some(u64::try_from(id).ok().filter(|id| *id != 0).ok_or_else(|| {
                RequestError::invalid(
                    field,
                    format!("domain.chainId: {id} is not a chain id this service signs for (1 to 2^64-1)"),
                )
            })?),
        };
        Ok(Payload::TypedData(TypedDataPayload {
            document,
            typed,
            chain_id,
        }))
    }

    /// Decodes the bytes [`Payload::encode`] produced, strictly (a node's view of the request).
    pub fn decode(
        kind: PayloadKind,
        bytes: Vec<u8>,
        limits: &Limits,
    ) -> Result<Payload, RequestError> {
        match kind {
            PayloadKind::Transaction => Ok(Payload::Transaction(
                UnsignedTransaction::decode_signing_payload(&bytes, limits)?,
            )),
            PayloadKind::PersonalMessage => Self::personal_message("personal_message", bytes),
            PayloadKind::TypedData => Self::typed_data("typed_data", bytes),
            PayloadKind::Authorization => Ok(Payload::Authorization(
                Authorization::decode_signing_payload(&bytes)?,
            )),
        }
    }

    pub fn kind(&self) -> PayloadKind {
        match self {
            Payload::Transaction(_) => PayloadKind::Transaction,
            Payload::PersonalMessage(_) => PayloadKind::PersonalMessage,
            Payload::TypedData(_) => PayloadKind::TypedData,
            Payload::Authorization(_) => PayloadKind::Authorization,
        }
    }

    /// The bytes the nodes are sent: a transaction's signing payload, or the message itself.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Payload::Transaction(tx) => tx.signing_payload(),
            Payload::PersonalMessage(message) => message.clone(),
            Payload::TypedData(typed) => typed.document.clone(),
            Payload::Authorization(authorization) => authorization.signing_payload(),
        }
    }

    /// The hash the signature covers.
    pub fn signing_hash(&self) -> [u8; 32] {
        match self {
            Payload::Transaction(tx) => tx.signing_hash(),
            Payload::PersonalMessage(message) => personal_sign_hash(message),
            Payload::TypedData(typed) => typed.typed.signing_hash(),
            Payload::Authorization(authorization) => authorization.signing_hash(),
        }
    }

    /// The chain a transaction is for; `None` for payloads bound to no chain.
    pub fn chain_id(&self) -> Option<u64> {
        match self {
            Payload::Transaction(tx) => Some(tx.chain_id()),
            Payload::PersonalMessage(_) => None,
            Payload::TypedData(typed) => typed.chain_id,
            // Chain id 0 is "every chain": no one chain to check (the policy decides).
            Payload::Authorization(authorization) => {
                Some(authorization.chain_id).filter(|id| *id != 0)
            }
        }
    }

    /// The native value it moves (zero for payloads that move none).
    pub fn value(&self) -> U256 {
        match self {
            Payload::Transaction(tx) => tx.value(),
            Payload::PersonalMessage(_) | Payload::TypedData(_) | Payload::Authorization(_) => {
                U256::ZERO
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use shardsign_eth::{Address, Eip1559Transaction};

    use super::*;

    fn transfer() -> UnsignedTransaction {
        Eip1559Transaction {
            chain_id: 11155111,
            nonce: 7,
            max_priority_fee_per_gas: U256::from(1_000_000_000u64),
            max_fee_per_gas: U256::from(30_000_000_000u64),
            gas_limit: 21_000,
            to: Some(Address::parse("to", "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed").unwrap()),
            value: U256::from(10u64).pow(U256::from(16u64)),
            data: Vec::new(),
            access_list: Vec::new(),
        }
        .into()
    }

    #[test]
    fn a_payload_decodes_from_its_encoding_to_the_same_payload_and_hash() {
        let limits = Limits::DEFAULT;
        for payload in [
            Payload::transaction(transfer(), &limits).unwrap(),
            Payload::personal_message("message", b"hello".to_vec()).unwrap(),
        ] {
            let decoded = Payload::decode(payload.kind(), payload.encode(), &limits).unwrap();
            assert_eq!(decoded, payload);
            assert_eq!(decoded.signing_hash(), payload.signing_hash());
        }
    }

    #[test]
    fn hashes_are_the_ethereum_ones() {
        let tx = transfer();
        let payload = Payload::Transaction(tx.clone());
        assert_eq!(payload.signing_hash(), tx.signing_hash());
        assert_eq!(payload.chain_id(), Some(11155111));
        assert_eq!(payload.value(), tx.value());
        let message = Payload::PersonalMessage(b"hi".to_vec());
        assert_eq!(message.signing_hash(), personal_sign_hash(b"hi"));
        assert_eq!((message.chain_id(), message.value()), (None, U256::ZERO));
    }

    #[test]
    fn an_oversized_message_is_refused_naming_its_field() {
        let error = Payload::personal_message("message", vec![b'a'; MAX_PERSONAL_MESSAGE_LEN + 1])
            .unwrap_err();
        assert!(error.to_string().starts_with("message: "), "{error}");
        let error = Payload::decode(
            PayloadKind::PersonalMessage,
            vec![b'a'; MAX_PERSONAL_MESSAGE_LEN + 1],
            &Limits::DEFAULT,
        )
        .unwrap_err();
        assert!(
            error.to_string().starts_with("personal_message: "),
            "{error}"
        );
    }

    #[test]
    fn a_malformed_transaction_is_an_invalid_transaction_error() {
        let error =
            Payload::decode(PayloadKind::Transaction, vec![0xc0], &Limits::DEFAULT).unwrap_err();
        assert!(
            matches!(error, RequestError::InvalidTransaction(_)),
            "{error:?}"
        );
    }
}
