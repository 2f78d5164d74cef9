//! x402 "exact" EVM payments as documents: an EIP-3009 `TransferWithAuthorization` in a USDC-style
//! domain (name, version "2", chain, token contract), the shape the token-rule tests, the signing
//! surface tests and the load generator sign.

use serde_json::{Value, json};

/// One payment: `value` base units of the token from `from` to `to`, valid before
/// `valid_before` (Unix seconds), under the 32-byte `nonce`.
pub struct Payment<'a> {
    pub domain_name: &'a str,
    pub chain_id: u64,
    pub token: &'a str,
    pub from: &'a str,
    pub to: &'a str,
    pub value: u64,
    pub valid_before: u64,
    pub nonce: [u8; 32],
}

impl Payment<'_> {
    /// The `eth_signTypedData_v4` document.
    pub fn document(&self) -> Value {
        json!({
            "types": {
                "EIP712Domain": [{"name": "name", "type": "string"}, {"name": "version", "type": "string"},
                                 {"name": "chainId", "type": "uint256"}, {"name": "verifyingContract", "type": "address"}],
                "TransferWithAuthorization": [
                    {"name": "from", "type": "address"}, {"name": "to", "type": "address"},
                    {"name": "value", "type": "uint256"}, {"name": "validAfter", "type": "uint256"},
                    {"name": "validBefore", "type": "uint256"}, {"name": "nonce", "type": "bytes32"}]
            },
            "primaryType": "TransferWithAuthorization",
            "domain": {"name": self.domain_name, "version": "2", "chainId": self.chain_id,
                       "verifyingContract": self.token},
            "message": {"from": self.from, "to": self.to, "value": self.value.to_string(),
                        "validAfter": 0, "validBefore": self.valid_before.to_string(),
                        "nonce": format!("0x{}", hex::encode(self.nonce))}
        })
    }
}

/// A nonce made of `n` (big-endian, left-padded): unique per `n`.
pub fn nonce(n: u64) -> [u8; 32] {
    let mut nonce = [0u8; 32];
    nonce[24..].copy_from_slice(&n.to_be_bytes());
    nonce
}
