//! Strict decoding of the ERC-20 calls that move or grant tokens: `transfer`, `transferFrom`,
//! `approve` and `increaseAllowance`. Exact length, canonical padding (an address word's top 12
//! bytes are zero): a call a token contract would read differently from us is refused, never
//! guessed at, because a policy's amount and recipient checks are only as good as this reading.

use ruint::aliases::U256;
use thiserror::Error;

use crate::address::Address;

/// `transfer(address,uint256)`.
pub const TRANSFER: [u8; 4] = [0xa9, 0x05, 0x9c, 0xbb];
/// `transferFrom(address,address,uint256)`.
pub const TRANSFER_FROM: [u8; 4] = [0x23, 0xb8, 0x72, 0xdd];
/// `approve(address,uint256)`.
pub const APPROVE: [u8; 4] = [0x09, 0x5e, 0xa7, 0xb3];
/// `increaseAllowance(address,uint256)` (OpenZeppelin's, on many stablecoins).
pub const INCREASE_ALLOWANCE: [u8; 4] = [0x39, 0x50, 0x93, 0x51];

/// One decoded token call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Erc20Call {
    Transfer {
        to: Address,
        amount: U256,
    },
    TransferFrom {
        from: Address,
        to: Address,
        amount: U256,
    },
    Approve {
        spender: Address,
        amount: U256,
    },
    IncreaseAllowance {
        spender: Address,
        amount: U256,
    },
}

/// Why calldata for a known selector is not a well-formed call.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Erc20Error {
    #[error("{method}: calldata is {len} bytes; the call takes exactly {expected}")]
    Length {
        method: &'static str,
        len: usize,
        expected: usize,
    },
    #[error(
        "{method}: argument {index} is not a canonical address (its top 12 bytes are not zero)"
    )]
    AddressPadding { method: &'static str, index: usize },
}

impl Erc20Call {
    /// Reads `data` as one of the four calls: `Ok(None)` for any other selector (or data shorter
    /// than a selector), an error for a known selector with malformed arguments.
    pub fn decode(data: &[u8]) -> Result<Option<Erc20Call>, Erc20Error> {
        let Some((selector, args)) = data.split_first_chunk::<4>() else {
            return Ok(None);
        };
        let call = match *selector {
            TRANSFER => {
                let [to, amount] = words("transfer", args)?;
                Erc20Call::Transfer {
                    to: address("transfer", 0, to)?,
                    amount: U256::from_be_bytes(amount),
                }
            }
            TRANSFER_FROM => {
                let [from, to, amount] = words("transferFrom", args)?;
                Erc20Call::TransferFrom {
                    from: address("transferFrom", 0, from)?,
                    to: address("transferFrom", 1, to)?,
                    amount: U256::from_be_bytes(amount),
                }
            }
            APPROVE => {
                let [spender, amount] = words("approve", args)?;
                Erc20Call::Approve {
                    spender: address("approve", 0, spender)?,
                    amount: U256::from_be_bytes(amount),
                }
            }
            INCREASE_ALLOWANCE => {
                let [spender, amount] = words("increaseAllowance", args)?;
                Erc20Call::IncreaseAllowance {
                    spender: address("increaseAllowance", 0, spender)?,
                    amount: U256::from_be_bytes(amount),
                }
            }
            _ => return Ok(None),
        };
        Ok(Some(call))
    }

    pub fn method(&self) -> &'static str {
        match self {
            Erc20Call::Transfer { .. } => "transfer",
            Erc20Call::TransferFrom { .. } => "transferFrom",
            Erc20Call::Approve { .. } => "approve",
            Erc20Call::IncreaseAllowance { .. } => "increaseAllowance",
        }
    }
}

/// Exactly `N` 32-byte words.
fn words<const N: usize>(method: &'static str, args: &[u8]) -> Result<[[u8; 32]; N], Erc20Error> {
    let error = || Erc20Error::Length {
        method,
        len: args.len() + 4,
        expected: 4 + 32 * N,
    };
    if args.len() != 32 * N {
        return Err(error());
    }
    let mut out = [[0u8; 32]; N];
    for (word, chunk) in out.iter_mut().zip(args.chunks_exact(32)) {
        word.copy_from_slice(chunk);
    }
    Ok(out)
}

fn address(method: &'static str, index: usize, word: [u8; 32]) -> Result<Address, Erc20Error> {
    if word[..12].iter().any(|b| *b != 0) {
        return Err(Erc20Error::AddressPadding { method, index });
    }
    let mut bytes = [0u8; 20];
    bytes.copy_from_slice(&word[12..]);
    Ok(Address(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keccak::keccak256;

    fn word_of(address: [u8; 20]) -> Vec<u8> {
        [&[0u8; 12][..], &address].concat()
    }

    fn amount_word(value: u64) -> Vec<u8> {
        U256::from(value).to_be_bytes::<32>().to_vec()
    }

    #[test]
    fn selectors_are_the_signatures_hashes() {
        for (selector, signature) in [
            (TRANSFER, "transfer(address,uint256)"),
            (TRANSFER_FROM, "transferFrom(address,address,uint256)"),
            (APPROVE, "approve(address,uint256)"),
            (INCREASE_ALLOWANCE, "increaseAllowance(address,uint256)"),
        ] {
            assert_eq!(selector, keccak256(signature.as_bytes())[..4]);
        }
    }

    #[test]
    fn each_call_decodes_exactly() {
        let data = [&TRANSFER[..], &word_of([7; 20]), &amount_word(250)].concat();
        assert_eq!(
            Erc20Call::decode(&data).unwrap(),
            Some(Erc20Call::Transfer {
                to: Address([7; 20]),
                amount: U256::from(250u64)
            })
        );
        let data = [
            &TRANSFER_FROM[..],
            &word_of([1; 20]),
            &word_of([2; 20]),
            &amount_word(3),
        ]
        .concat();
        assert_eq!(
            Erc20Call::decode(&data).unwrap(),
            Some(Erc20Call::TransferFrom {
                from: Address([1; 20]),
                to: Address([2; 20]),
                amount: U256::from(3u64)
            })
        );
        let max = [&APPROVE[..], &word_of([9; 20]), &[0xff; 32]].concat();
        assert_eq!(
            Erc20Call::decode(&max).unwrap(),
            Some(Erc20Call::Approve {
                spender: Address([9; 20]),
                amount: U256::MAX
            })
        );
        assert_eq!(Erc20Call::decode(&[]).unwrap(), None);
        assert_eq!(Erc20Call::decode(&[0xa9, 0x05, 0x9c]).unwrap(), None);
        assert_eq!(
            Erc20Call::decode(&[0xde, 0xad, 0xbe, 0xef, 1]).unwrap(),
            None
        );
    }

    #[test]
    fn malformed_calls_are_refused_not_guessed() {
        let good = [&TRANSFER[..], &word_of([7; 20]), &amount_word(250)].concat();
        let short = &good[..good.len() - 1];
        let long = [&good[..], &[0]].concat();
        for data in [short, &long[..], &TRANSFER[..]] {
            assert!(
                matches!(
                    Erc20Call::decode(data),
                    Err(Erc20Error::Length {
                        method: "transfer",
                        expected: 68,
                        ..
                    })
                ),
                "{} bytes",
                data.len()
            );
        }
        let mut dirty = good.clone();
        dirty[4] = 1;
        assert_eq!(
            Erc20Call::decode(&dirty),
            Err(Erc20Error::AddressPadding {
                method: "transfer",
                index: 0
            })
        );
        let text = Erc20Call::decode(short).unwrap_err().to_string();
        assert_eq!(
            text,
            "transfer: calldata is 67 bytes; the call takes exactly 68"
        );
    }
}
