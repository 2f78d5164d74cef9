//! Signed transactions: the raw bytes a node broadcasts, their hash, strict decoding of raw bytes
//! of any supported type, and recovery of the sender.

use ruint::aliases::U256;

use crate::address::Address;
use crate::error::EthError;
use crate::keccak::keccak256;
use crate::limits::Limits;
use crate::rlp::ListReader;
use crate::signature::Signature;
use crate::tx::{
    EIP1559_TYPE, EIP2930_TYPE, EIP7702_TYPE, UnsignedTransaction, check_encoded_len,
    eip1559_fields, eip2930_fields, eip7702_fields, legacy_fields, read_eip1559_fields,
    read_eip2930_fields, read_eip7702_fields, read_legacy_fields,
};

/// A transaction with its signature, as broadcast to the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedTransaction {
    tx: UnsignedTransaction,
    signature: Signature,
    raw: Vec<u8>,
}

impl SignedTransaction {
    pub(crate) fn new(tx: UnsignedTransaction, signature: Signature) -> Self {
        let raw = encode_signed(&tx, &signature);
        SignedTransaction { tx, signature, raw }
    }

    pub fn transaction(&self) -> &UnsignedTransaction {
        &self.tx
    }

    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    /// The raw signed transaction (EIP-2718 envelope for typed transactions).
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    /// The transaction hash: keccak-256 of the raw bytes.
    pub fn hash(&self) -> [u8; 32] {
        keccak256(&self.raw)
    }

    /// `v` as encoded: `recovery_id + 35 + 2 * chain_id` for legacy (EIP-155), the y-parity
    /// (0 or 1) for typed transactions.
    pub fn v(&self) -> u128 {
        let parity = u128::from(self.signature.recovery_id().to_u8());
        match &self.tx {
            UnsignedTransaction::Legacy(tx) => parity + 35 + 2 * u128::from(tx.chain_id),
            _ => parity,
        }
    }

    /// The address that signed this transaction.
    pub fn recover_sender(&self) -> Result<Address, EthError> {
        self.signature.recover_address(&self.tx.signing_hash())
    }

    /// Decodes raw signed bytes of any supported type, strictly: canonical RLP, exact field
    /// counts, no trailing bytes, EIP-155 chain id required, low-s (EIP-2), then the same
    /// validation as an unsigned transaction.
    pub fn decode(raw: &[u8], limits: &Limits) -> Result<Self, EthError> {
        check_encoded_len(raw, limits)?;
        let (tx, signature) = match raw.first() {
            None => return Err(EthError::Empty),
            Some(&EIP2930_TYPE) => {
                let mut list = ListReader::whole("transaction", &raw[1..])?;
                let tx = read_eip2930_fields(&mut list, limits)?;
                let signature = read_typed_signature(&mut list)?;
                list.finish(11)?;
                (UnsignedTransaction::Eip2930(tx), signature)
            }
            Some(&EIP1559_TYPE) => {
                let mut list = ListReader::whole("transaction", &raw[1..])?;
                let tx = read_eip1559_fields(&mut list, limits)?;
                let signature = read_typed_signature(&mut list)?;
                list.finish(12)?;
                (UnsignedTransaction::Eip1559(tx), signature)
            }
            Some(&EIP7702_TYPE) => {
                let mut list = ListReader::whole("transaction", &raw[1..])?;
                let tx = read_eip7702_fields(&mut list, limits)?;
                let signature = read_typed_signature(&mut list)?;
                list.finish(13)?;
                (UnsignedTransaction::Eip7702(tx), signature)
            }
            Some(&first) if first >= 0xc0 => {
                let mut list = ListReader::whole("transaction", raw)?;
                let mut tx = read_legacy_fields(&mut list, limits)?;
                let v = list.u256("v")?;
                let (chain_id, parity) = split_eip155_v(v)?;
                tx.chain_id = chain_id;
                let signature = read_rs(&mut list, parity)?;
                list.finish(9)?;
                (UnsignedTransaction::Legacy(tx), signature)
            }
            Some(&other) => return Err(EthError::UnsupportedType(other)),
        };
        tx.validate(limits)?;
        if !signature.is_low_s() {
            return Err(EthError::InvalidSignature(
                "s is in the upper half of the curve order (EIP-2)",
            ));
        }
        let decoded = SignedTransaction::new(tx, signature);
        // Canonical input re-encodes to itself; anything else was not what it claimed to be.
        if decoded.raw != raw {
            return Err(EthError::Rlp {
                field: "transaction",
                reason: "not canonical".into(),
            });
        }
        Ok(decoded)
    }
}

fn encode_signed(tx: &UnsignedTransaction, signature: &Signature) -> Vec<u8> {
    let parity = u64::from(signature.recovery_id().to_u8());
    let r = U256::from_be_bytes(signature.r());
    let s = U256::from_be_bytes(signature.s());
    let (type_byte, mut list) = match tx {
        UnsignedTransaction::Legacy(tx) => {
            let mut list = legacy_fields(tx);
            let v =
                U256::from(parity) + U256::from(35u64) + U256::from(tx.chain_id) * U256::from(2u64);
            list.u256(&v);
            (None, list)
        }
        UnsignedTransaction::Eip2930(tx) => {
            let mut list = eip2930_fields(tx);
            list.u64(parity);
            (Some(EIP2930_TYPE), list)
        }
        UnsignedTransaction::Eip1559(tx) => {
            let mut list = eip1559_fields(tx);
            list.u64(parity);
            (Some(EIP1559_TYPE), list)
        }
        UnsignedTransaction::Eip7702(tx) => {
            let mut list = eip7702_fields(tx);
            list.u64(parity);
            (Some(EIP7702_TYPE), list)
        }
    };
    list.u256(&r).u256(&s);
    let mut out = Vec::new();
    out.extend(type_byte);
    list.finish_into(&mut out);
    out
}

/// Splits an EIP-155 `v` into (chain id, y parity). 27/28 are unprotected and refused.
fn split_eip155_v(v: U256) -> Result<(u64, u8), EthError> {
    if v == U256::from(27u64) || v == U256::from(28u64) {
        return Err(EthError::ChainIdMissing);
    }
    if v < U256::from(35u64) {
        return Err(EthError::InvalidSignature(
            "v must be 27, 28 or at least 35 (EIP-155)",
        ));
    }
    let offset = v - U256::from(35u64);
    let parity = u8::from(offset.bit(0));
    let chain_id = u64::try_from(offset >> 1).map_err(|_| EthError::ValueOverflow {
        field: "chain_id",
        bits: 64,
    })?;
    Ok((chain_id, parity))
}

fn read_typed_signature(list: &mut ListReader<'_>) -> Result<Signature, EthError> {
    let parity = list.u64("y_parity")?;
    let parity = u8::try_from(parity)
        .ok()
        .filter(|p| *p <= 1)
        .ok_or(EthError::InvalidSignature("y_parity must be 0 or 1"))?;
    read_rs(list, parity)
}

fn read_rs(list: &mut ListReader<'_>, parity: u8) -> Result<Signature, EthError> {
    let r = list.u256("r")?;
    let s = list.u256("s")?;
    Signature::new(r.to_be_bytes(), s.to_be_bytes(), parity)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tx::LegacyTransaction;

    /// The worked example in the EIP-155 text.
    fn eip155_example() -> LegacyTransaction {
        LegacyTransaction {
            chain_id: 1,
            nonce: 9,
            gas_price: U256::from(20_000_000_000u64),
            gas_limit: 21000,
            to: Some(Address::parse("to", "0x3535353535353535353535353535353535353535").unwrap()),
            value: U256::from(1_000_000_000_000_000_000u64),
            data: vec![],
        }
    }

    #[test]
    fn eip155_worked_example_signing_payload_and_hash() {
        let tx = UnsignedTransaction::Legacy(eip155_example());
        assert_eq!(
            hex::encode(tx.signing_payload()),
            "ec098504a817c800825208943535353535353535353535353535353535353535880de0b6b3a764000080018080"
        );
        assert_eq!(
            hex::encode(tx.signing_hash()),
            "daf5a779ae972f972197303d7b574746c7ef83eadac0f2791ad23db92e4c8e53"
        );
    }

    #[test]
    fn eip155_worked_example_signed_raw_transaction() {
        let tx = UnsignedTransaction::Legacy(eip155_example());
        let key = k256::ecdsa::SigningKey::from_slice(&[0x46; 32]).unwrap();
        let signed = tx.into_signed(crate::signature::sign_prehash(
            &key,
            &UnsignedTransaction::Legacy(eip155_example()).signing_hash(),
        ));
        assert_eq!(signed.v(), 37);
        assert_eq!(
            hex::encode(signed.raw()),
            "f86c098504a817c800825208943535353535353535353535353535353535353535880de0b6b3a76400008025a028ef61340bd939bc2195fe537567866003e1a15d3c71ff63e1590620aa636276a067cbe9d8997f761aecb703304b3800ccf555c9f3dc64214b297fb1966a3b6d83"
        );
        let decoded = SignedTransaction::decode(signed.raw(), &Limits::DEFAULT).unwrap();
        assert_eq!(decoded, signed);
        assert_eq!(
            decoded.recover_sender().unwrap(),
            Address::from_public_key(key.verifying_key())
        );
    }
}
