//! Random valid transactions of each type, with values spread over their whole ranges.

use rand::{Rng, RngExt};
use shardsign_eth::{
    AccessListItem, Address, Authorization, Eip1559Transaction, Eip2930Transaction,
    Eip7702Transaction, LegacyTransaction, SignedAuthorization, TxType, U256, UnsignedTransaction,
    sign_prehash,
};

/// A value of up to 256 bits, biased towards small and boundary values.
fn amount(rng: &mut impl Rng) -> U256 {
    match rng.random_range(0..10) {
        0 => U256::ZERO,
        1 => U256::MAX,
        2 => U256::from(rng.random::<u64>()),
        _ => {
            let bytes: [u8; 32] = rng.random();
            U256::from_be_bytes(bytes) >> rng.random_range(0..256)
        }
    }
}

fn chain_id(rng: &mut impl Rng) -> u64 {
    match rng.random_range(0..4) {
        0 => 1,
        1 => 11_155_111,
        2 => rng.random_range(1..=u64::from(u32::MAX)),
        _ => rng.random_range(1..=u64::MAX / 2 - 36),
    }
}

fn access_list(rng: &mut impl Rng) -> Vec<AccessListItem> {
    (0..rng.random_range(0..4))
        .map(|_| AccessListItem {
            address: Address(rng.random()),
            storage_keys: (0..rng.random_range(0..4)).map(|_| rng.random()).collect(),
        })
        .collect()
}

fn data(rng: &mut impl Rng) -> Vec<u8> {
    let len = match rng.random_range(0..5) {
        0 => 0,
        1 => 4,
        2 => 68,
        _ => rng.random_range(0..1500),
    };
    (0..len).map(|_| rng.random()).collect()
}

/// One to four authorizations, each signed by its own random authority, for the transaction's
/// chain or for any chain (0) or another one (what the encoding must carry, whatever policy says).
fn authorization_list(rng: &mut impl Rng, tx_chain_id: u64) -> Vec<SignedAuthorization> {
    (0..rng.random_range(1..=4))
        .map(|_| {
            let authorization = Authorization {
                chain_id: match rng.random_range(0..3) {
                    0 => 0,
                    1 => tx_chain_id,
                    _ => rng.random::<u64>() >> rng.random_range(0..64),
                },
                address: Address(rng.random()),
                nonce: match rng.random_range(0..3) {
                    0 => 0,
                    1 => u64::MAX,
                    _ => rng.random::<u64>() >> rng.random_range(0..64),
                },
            };
            let authority = loop {
                if let Ok(key) = k256::ecdsa::SigningKey::from_slice(&rng.random::<[u8; 32]>()) {
                    break key;
                }
            };
            SignedAuthorization {
                authorization,
                signature: sign_prehash(&authority, &authorization.signing_hash())
                    .normalized_low_s(),
            }
        })
        .collect()
}

fn fee_caps(rng: &mut impl Rng) -> (U256, U256) {
    let max_fee_per_gas = amount(rng);
    let max_priority_fee_per_gas = if max_fee_per_gas.is_zero() {
        U256::ZERO
    } else {
        max_fee_per_gas >> rng.random_range(0..256)
    };
    (max_priority_fee_per_gas, max_fee_per_gas)
}

/// A random valid transaction of `kind`.
pub fn random_tx(rng: &mut impl Rng, kind: TxType) -> UnsignedTransaction {
    let to = if rng.random_range(0..10) == 0 {
        None
    } else {
        Some(Address(rng.random()))
    };
    let nonce = if rng.random() {
        rng.random()
    } else {
        rng.random_range(0..1000)
    };
    let shift = rng.random_range(0..40);
    let gas_limit = rng.random_range(1..=u64::MAX >> shift);
    match kind {
        TxType::Legacy => LegacyTransaction {
            chain_id: chain_id(rng),
            nonce,
            gas_price: amount(rng),
            gas_limit,
            to,
            value: amount(rng),
            data: data(rng),
        }
        .into(),
        TxType::Eip2930 => Eip2930Transaction {
            chain_id: chain_id(rng),
            nonce,
            gas_price: amount(rng),
            gas_limit,
            to,
            value: amount(rng),
            data: data(rng),
            access_list: access_list(rng),
        }
        .into(),
        TxType::Eip1559 => {
            let (max_priority_fee_per_gas, max_fee_per_gas) = fee_caps(rng);
            Eip1559Transaction {
                chain_id: chain_id(rng),
                nonce,
                max_priority_fee_per_gas,
                max_fee_per_gas,
                gas_limit,
                to,
                value: amount(rng),
                data: data(rng),
                access_list: access_list(rng),
            }
            .into()
        }
        TxType::Eip7702 => {
            let (max_priority_fee_per_gas, max_fee_per_gas) = fee_caps(rng);
            let chain_id = chain_id(rng);
            Eip7702Transaction {
                chain_id,
                nonce,
                max_priority_fee_per_gas,
                max_fee_per_gas,
                gas_limit,
                to: Address(rng.random()),
                value: amount(rng),
                data: data(rng),
                access_list: access_list(rng),
                authorization_list: authorization_list(rng, chain_id),
            }
            .into()
        }
    }
}
