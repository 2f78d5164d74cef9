//! A typed builder for the transactions the client signs, over crates/eth's types: pick the
//! type by its constructor, set what differs from the defaults, `build()` checks the result
//! (fees present for the type, tip not above the cap, sizes within limits) before any call.

use shardsign_eth::{
    AccessList, Address, Eip1559Transaction, Eip2930Transaction, Eip7702Transaction,
    LegacyTransaction, Limits, SignedAuthorization, U256, UnsignedTransaction, parse_amount,
};

use crate::error::ClientError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Legacy,
    Eip2930,
    Eip1559,
    Eip7702,
}

impl Kind {
    fn has_fee_caps(self) -> bool {
        matches!(self, Kind::Eip1559 | Kind::Eip7702)
    }
}

/// Builds an [`UnsignedTransaction`]. Defaults: nonce 0, value 0, no data, gas limit 21,000,
/// no recipient (set one with [`to`](Self::to), or leave it out to create a contract).
#[derive(Debug, Clone)]
pub struct TransactionBuilder {
    kind: Kind,
    chain_id: u64,
    nonce: u64,
    to: Option<Address>,
    value: U256,
    data: Vec<u8>,
    gas_limit: u64,
    gas_price: Option<U256>,
    max_fee_per_gas: Option<U256>,
    max_priority_fee_per_gas: Option<U256>,
    access_list: AccessList,
    authorization_list: Vec<SignedAuthorization>,
}

fn amount(field: &'static str, text: &str) -> Result<U256, ClientError> {
    parse_amount(field, text).map_err(|e| ClientError::InvalidArgument(e.to_string()))
}

impl TransactionBuilder {
    fn new(kind: Kind, chain_id: u64) -> Self {
        TransactionBuilder {
            kind,
            chain_id,
            nonce: 0,
            to: None,
            value: U256::ZERO,
            data: Vec::new(),
            gas_limit: 21_000,
            gas_price: None,
            max_fee_per_gas: None,
            max_priority_fee_per_gas: None,
            access_list: AccessList::new(),
            authorization_list: Vec::new(),
        }
    }

    /// EIP-7702 set-code: EIP-1559's fees, a `to`, and at least one signed authorization
    /// (from [`Client::sign_authorization`](crate::Client::sign_authorization), then
    /// [`to_tuple`](crate::SignedAuthorization::to_tuple), or another authority's).
    pub fn eip7702(chain_id: u64) -> Self {
        Self::new(Kind::Eip7702, chain_id)
    }

    /// EIP-1559: needs `max_fee_per_gas` and `max_priority_fee_per_gas`.
    pub fn eip1559(chain_id: u64) -> Self {
        Self::new(Kind::Eip1559, chain_id)
    }

    /// EIP-2930: needs `gas_price`.
    pub fn eip2930(chain_id: u64) -> Self {
        Self::new(Kind::Eip2930, chain_id)
    }

    /// Legacy, signed with EIP-155 replay protection: needs `gas_price`.
    pub fn legacy(chain_id: u64) -> Self {
        Self::new(Kind::Legacy, chain_id)
    }

    pub fn nonce(mut self, nonce: u64) -> Self {
        self.nonce = nonce;
        self
    }

    pub fn to(mut self, to: Address) -> Self {
        self.to = Some(to);
        self
    }

    /// The recipient from text (EIP-55 checked when mixed case).
    pub fn to_str(self, to: &str) -> Result<Self, ClientError> {
        let address =
            Address::parse("to", to).map_err(|e| ClientError::InvalidArgument(e.to_string()))?;
        Ok(self.to(address))
    }

    pub fn value(mut self, wei: U256) -> Self {
        self.value = wei;
        self
    }

    /// The value from text: `0.1eth`, `20gwei`, or wei.
    pub fn value_str(self, amount_text: &str) -> Result<Self, ClientError> {
        Ok(self.value(amount("value", amount_text)?))
    }

    pub fn data(mut self, data: Vec<u8>) -> Self {
        self.data = data;
        self
    }

    pub fn gas_limit(mut self, gas: u64) -> Self {
        self.gas_limit = gas;
        self
    }

    pub fn gas_price(mut self, wei: U256) -> Self {
        self.gas_price = Some(wei);
        self
    }

    pub fn max_fee_per_gas(mut self, wei: U256) -> Self {
        self.max_fee_per_gas = Some(wei);
        self
    }

    pub fn max_priority_fee_per_gas(mut self, wei: U256) -> Self {
        self.max_priority_fee_per_gas = Some(wei);
        self
    }

    /// Both EIP-1559 fees from text (`30gwei`, `1gwei`).
    pub fn fees_str(self, max_fee: &str, tip: &str) -> Result<Self, ClientError> {
        Ok(self
            .max_fee_per_gas(amount("max_fee_per_gas", max_fee)?)
            .max_priority_fee_per_gas(amount("max_priority_fee_per_gas", tip)?))
    }

    pub fn access_list(mut self, list: AccessList) -> Self {
        self.access_list = list;
        self
    }

    /// Appends a signed authorization (set-code transactions only).
    pub fn authorization(mut self, tuple: SignedAuthorization) -> Self {
        self.authorization_list.push(tuple);
        self
    }

    /// The transaction, checked.
    pub fn build(self) -> Result<UnsignedTransaction, ClientError> {
        let missing = |field: &str| {
            ClientError::InvalidArgument(format!("{field}: required for this transaction type"))
        };
        if !self.kind.has_fee_caps()
            && (self.max_fee_per_gas.is_some() || self.max_priority_fee_per_gas.is_some())
        {
            return Err(ClientError::InvalidArgument(
                "max_fee_per_gas/max_priority_fee_per_gas: only EIP-1559 and EIP-7702 transactions have them; use gas_price".into(),
            ));
        }
        if self.kind.has_fee_caps() && self.gas_price.is_some() {
            return Err(ClientError::InvalidArgument(
                "gas_price: EIP-1559 and EIP-7702 transactions use max_fee_per_gas and max_priority_fee_per_gas"
                    .into(),
            ));
        }
        if self.kind != Kind::Eip7702 && !self.authorization_list.is_empty() {
            return Err(ClientError::InvalidArgument(
                "authorization_list: only set-code (EIP-7702) transactions carry authorizations; use eip7702".into(),
            ));
        }
        if self.kind == Kind::Legacy && !self.access_list.is_empty() {
            return Err(ClientError::InvalidArgument(
                "access_list: legacy transactions have none; use eip2930 or eip1559".into(),
            ));
        }
        let tx = match self.kind {
            Kind::Legacy => UnsignedTransaction::Legacy(LegacyTransaction {
                chain_id: self.chain_id,
                nonce: self.nonce,
                gas_price: self.gas_price.ok_or_else(|| missing("gas_price"))?,
                gas_limit: self.gas_limit,
                to: self.to,
                value: self.value,
                data: self.data,
            }),
            Kind::Eip2930 => UnsignedTransaction::Eip2930(Eip2930Transaction {
                chain_id: self.chain_id,
                nonce: self.nonce,
                gas_price: self.gas_price.ok_or_else(|| missing("gas_price"))?,
                gas_limit: self.gas_limit,
                to: self.to,
                value: self.value,
                data: self.data,
                access_list: self.access_list,
            }),
            Kind::Eip1559 => UnsignedTransaction::Eip1559(Eip1559Transaction {
                chain_id: self.chain_id,
                nonce: self.nonce,
                max_priority_fee_per_gas: self
                    .max_priority_fee_per_gas
                    .ok_or_else(|| missing("max_priority_fee_per_gas"))?,
                max_fee_per_gas: self
                    .max_fee_per_gas
                    .ok_or_else(|| missing("max_fee_per_gas"))?,
                gas_limit: self.gas_limit,
                to: self.to,
                value: self.value,
                data: self.data,
                access_list: self.access_list,
            }),
            Kind::Eip7702 => UnsignedTransaction::Eip7702(Eip7702Transaction {
                chain_id: self.chain_id,
                nonce: self.nonce,
                max_priority_fee_per_gas: self
                    .max_priority_fee_per_gas
                    .ok_or_else(|| missing("max_priority_fee_per_gas"))?,
                max_fee_per_gas: self
                    .max_fee_per_gas
                    .ok_or_else(|| missing("max_fee_per_gas"))?,
                gas_limit: self.gas_limit,
                to: self.to.ok_or_else(|| {
                    ClientError::InvalidArgument(
                        shardsign_eth::EthError::SetCodeWithoutTo.to_string(),
                    )
                })?,
                value: self.value,
                data: self.data,
                access_list: self.access_list,
                authorization_list: self.authorization_list,
            }),
        };
        tx.validate(&Limits::DEFAULT)
            .map_err(|e| ClientError::InvalidArgument(e.to_string()))?;
        Ok(tx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TO: &str = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";

    #[test]
    fn builds_each_type_and_checks_it() {
        let tx = TransactionBuilder::eip1559(1)
            .nonce(3)
            .to_str(TO)
            .unwrap()
            .value_str("0.1eth")
            .unwrap()
            .fees_str("30gwei", "1gwei")
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(tx.chain_id(), 1);
        assert_eq!(tx.nonce(), 3);
        assert_eq!(tx.value(), parse_amount("v", "0.1eth").unwrap());
        assert_eq!(tx.max_fee_per_gas(), parse_amount("v", "30gwei").unwrap());

        let legacy = TransactionBuilder::legacy(5)
            .gas_price(U256::from(7u8))
            .build()
            .unwrap();
        assert!(matches!(legacy, UnsignedTransaction::Legacy(_)));
        assert!(matches!(
            TransactionBuilder::eip2930(5)
                .gas_price(U256::from(1u8))
                .build()
                .unwrap(),
            UnsignedTransaction::Eip2930(_)
        ));
    }

    #[test]
    fn mistakes_are_named_before_any_call() {
        let error = |b: TransactionBuilder| b.build().unwrap_err().to_string();
        assert!(error(TransactionBuilder::eip1559(1)).contains("max_priority_fee_per_gas"));
        assert!(error(TransactionBuilder::legacy(1)).contains("gas_price"));
        assert!(
            error(TransactionBuilder::legacy(1).max_fee_per_gas(U256::from(1u8)))
                .contains("only EIP-1559")
        );
        assert!(
            error(
                TransactionBuilder::eip1559(1)
                    .fees_str("1gwei", "2gwei")
                    .unwrap()
            )
            .contains("above max_fee_per_gas")
        );
        assert!(
            error(TransactionBuilder::legacy(0).gas_price(U256::from(1u8))).contains("chain_id")
        );
        assert!(TransactionBuilder::eip1559(1).to_str("0x12").is_err());
        let set_code = || {
            TransactionBuilder::eip7702(1)
                .fees_str("30gwei", "1gwei")
                .unwrap()
        };
        assert!(error(set_code()).contains("to: required"));
        assert!(error(set_code().to_str(TO).unwrap()).contains("at least one authorization"));
        let key = k256::ecdsa::SigningKey::from_slice(&[9; 32]).unwrap();
        let authorization = shardsign_eth::Authorization {
            chain_id: 1,
            address: Address::parse("a", TO).unwrap(),
            nonce: 0,
        };
        let tuple = SignedAuthorization {
            authorization,
            signature: shardsign_eth::sign_prehash(&key, &authorization.signing_hash())
                .normalized_low_s(),
        };
        assert!(
            error(
                TransactionBuilder::eip1559(1)
                    .fees_str("30gwei", "1gwei")
                    .unwrap()
                    .authorization(tuple)
            )
            .contains("only set-code")
        );
        let built = set_code()
            .to_str(TO)
            .unwrap()
            .authorization(tuple)
            .build()
            .unwrap();
        assert_eq!(built.authorization_list(), &[tuple]);
        assert!(TransactionBuilder::eip1559(1).value_str("lots").is_err());
    }
}
