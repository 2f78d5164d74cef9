//! EIP-7702 authorizations: an account lets `address`'s code run as its own. The signed message
//! is `keccak256(0x05 || rlp([chain_id, address, nonce]))`. Chain id 0 means "any chain" (the
//! policy must say so explicitly); ids above 2^64-1 are refused, as are nonces above 2^64-1 (the
//! EIP's bound).

use ruint::aliases::U256;

use crate::address::Address;
use crate::error::EthError;
use crate::keccak::keccak256;
use crate::rlp::{ListBuilder, ListReader};
use crate::signature::Signature;

/// The EIP-7702 magic byte that prefixes an authorization's signed message.
pub const AUTHORIZATION_MAGIC: u8 = 0x05;

/// An unsigned authorization tuple.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Authorization {
    /// 0: valid on every chain.
    pub chain_id: u64,
    /// The delegate: the contract whose code the account will run.
    pub address: Address,
    pub nonce: u64,
}

impl Authorization {
    /// `0x05 || rlp([chain_id, address, nonce])`: what the signature's hash covers.
    pub fn signing_payload(&self) -> Vec<u8> {
        let mut list = ListBuilder::with_capacity(48);
        list.u64(self.chain_id)
            .to(&Some(self.address))
            .u64(self.nonce);
        let mut out = vec![AUTHORIZATION_MAGIC];
        list.finish_into(&mut out);
        out
    }

    pub fn signing_hash(&self) -> [u8; 32] {
        keccak256(self.signing_payload())
    }

    /// Decodes a signing payload strictly: the magic byte, canonical RLP, exactly three fields,
    /// a 20-byte address, nothing after.
    pub fn decode_signing_payload(payload: &[u8]) -> Result<Self, EthError> {
        match payload.first() {
            Some(&AUTHORIZATION_MAGIC) => {}
            _ => {
                return Err(EthError::Rlp {
                    field: "authorization",
                    reason: "an authorization's signing payload starts with 0x05".into(),
                });
            }
        }
        if payload.len() > 64 {
            return Err(EthError::EncodingTooLarge {
                len: payload.len(),
                max: 64,
            });
        }
        let mut list = ListReader::whole("authorization", &payload[1..])?;
        let chain_id = list.u64("chain_id")?;
        let address = list.to()?.ok_or(EthError::AddressLength {
            field: "address",
            len: 0,
        })?;
        let nonce = list.u64("nonce")?;
        list.finish(3)?;
        Ok(Authorization {
            chain_id,
            address,
            nonce,
        })
    }
}

/// A signed authorization tuple, as it travels in a set-code transaction's `authorization_list`:
/// `[chain_id, address, nonce, y_parity, r, s]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignedAuthorization {
    pub authorization: Authorization,
    pub signature: Signature,
}

impl SignedAuthorization {
    /// The account this tuple delegates: the signer of the authorization hash.
    pub fn authority(&self) -> Result<Address, EthError> {
        self.signature
            .recover_address(&self.authorization.signing_hash())
    }

    pub(crate) fn encode_into(&self, list: &mut ListBuilder) {
        let mut tuple = ListBuilder::with_capacity(112);
        tuple
            .u64(self.authorization.chain_id)
            .to(&Some(self.authorization.address))
            .u64(self.authorization.nonce)
            .u64(u64::from(self.signature.recovery_id().to_u8()))
            .u256(&U256::from_be_bytes(self.signature.r()))
            .u256(&U256::from_be_bytes(self.signature.s()));
        list.raw(&tuple.finish());
    }

    /// Reads one tuple strictly. A tuple the network would skip (y parity other than 0 or 1,
    /// r or s out of range, a chain id or nonce above 2^64-1) is refused here rather than
    /// signed into a transaction that silently does less than it says; a high `s` is refused by
    /// the transaction's validation.
    pub(crate) fn decode_from(tuple: &mut ListReader<'_>) -> Result<Self, EthError> {
        let chain_id = tuple.u64("chain_id")?;
        let address = tuple.to()?.ok_or(EthError::AddressLength {
            field: "address",
            len: 0,
        })?;
        let nonce = tuple.u64("nonce")?;
        let parity = u8::try_from(tuple.u64("y_parity")?)
            .map_err(|_| EthError::InvalidSignature("y_parity must be 0 or 1"))?;
        let r = tuple.u256("r")?;
        let s = tuple.u256("s")?;
        tuple.finish(6)?;
        let signature = Signature::new(r.to_be_bytes(), s.to_be_bytes(), parity)?;
        Ok(SignedAuthorization {
            authorization: Authorization {
                chain_id,
                address,
                nonce,
            },
            signature,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delegate() -> Address {
        Address::parse("address", "0x5ce9454909639d2d17a3f753ce7d93fa0b9ab12e").unwrap()
    }

    #[test]
    fn the_payload_is_magic_then_the_tuple_and_decodes_back_exactly() {
        let authorization = Authorization {
            chain_id: 1337,
            address: delegate(),
            nonce: 1,
        };
        let payload = authorization.signing_payload();
        assert_eq!(
            hex::encode(&payload),
            "05d9820539945ce9454909639d2d17a3f753ce7d93fa0b9ab12e01"
        );
        assert_eq!(
            Authorization::decode_signing_payload(&payload).unwrap(),
            authorization
        );
        let any_chain = Authorization {
            chain_id: 0,
            nonce: 0,
            ..authorization
        };
        assert_eq!(
            Authorization::decode_signing_payload(&any_chain.signing_payload()).unwrap(),
            any_chain
        );
    }

    #[test]
    fn other_bytes_are_refused() {
        let payload = Authorization {
            chain_id: 1,
            address: delegate(),
            nonce: 7,
        }
        .signing_payload();
        assert!(Authorization::decode_signing_payload(&payload[1..]).is_err());
        let mut trailing = payload.clone();
        trailing.push(0);
        assert!(Authorization::decode_signing_payload(&trailing).is_err());
        // A chain id of 2^64 (nine bytes) does not fit.
        let mut list = ListBuilder::with_capacity(48);
        list.u256(&(ruint::aliases::U256::from(1u8) << 64))
            .to(&Some(delegate()))
            .u64(0);
        let mut too_big = vec![AUTHORIZATION_MAGIC];
        list.finish_into(&mut too_big);
        assert!(Authorization::decode_signing_payload(&too_big).is_err());
        // An empty address is not a delegate.
        let mut list = ListBuilder::with_capacity(48);
        list.u64(1).to(&None).u64(0);
        let mut empty = vec![AUTHORIZATION_MAGIC];
        list.finish_into(&mut empty);
        assert!(Authorization::decode_signing_payload(&empty).is_err());
        // Four fields.
        let mut list = ListBuilder::with_capacity(48);
        list.u64(1).to(&Some(delegate())).u64(0).u64(0);
        let mut four = vec![AUTHORIZATION_MAGIC];
        list.finish_into(&mut four);
        assert!(Authorization::decode_signing_payload(&four).is_err());
    }
}
