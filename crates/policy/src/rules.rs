//! Rules over what may be signed. Parsed once from the wire `Policy` (bounded, validated, every
//! problem named), then checked per request without allocation on the allowed path.

use std::collections::BTreeSet;
use std::fmt;

use shardsign_eth::{Address, Authorization, U256, UnsignedTransaction, format_eth};
use shardsign_request::Payload;

use crate::approval::Approvers;
use crate::error::Refusal;
use crate::messages::MessageRules;
use crate::tokens::{TokenRule, check_token_call};
use crate::typed_data::TypedDataRule;

/// Most chain ids in one policy.
pub const MAX_CHAIN_IDS: usize = 64;
/// Most recipients, and most contract-call entries, in one policy.
pub const MAX_ALLOWLIST: usize = 1000;
/// Highest requests_per_minute.
pub const MAX_REQUESTS_PER_MINUTE: u32 = 1_000_000;

/// An upper bound on an amount of wei.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cap {
    Unlimited,
    Max(U256),
}

impl Cap {
    /// `Ok` when `value` is within the cap.
    pub fn allows(&self, value: U256) -> bool {
        match self {
            Cap::Unlimited => true,
            Cap::Max(max) => value <= *max,
        }
    }
}

/// How an amount is shown in a refusal.
#[derive(Clone, Copy)]
enum Unit {
    Ether,
    Gwei,
}

struct Shown(U256, Unit);

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.1 {
            Unit::Ether => f.write_str(&format_eth(self.0)),
            Unit::Gwei => {
                let gwei = U256::from(1_000_000_000u64);
                let (whole, fraction) = (self.0 / gwei, self.0 % gwei);
                if fraction.is_zero() {
                    write!(f, "{whole} gwei")
                } else {
                    let fraction = format!("{fraction:0>9}");
                    write!(f, "{whole}.{} gwei", fraction.trim_end_matches('0'))
                }
            }
        }
    }
}

/// One allowed contract call: `None` is "any".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContractCallRule {
    pub to: Option<Address>,
    pub selector: Option<[u8; 4]>,
}

/// Which kind of policy is being parsed: the per-API-key one has two rules more (the rolling
/// 24 h value and the request rate), which nodes cannot enforce and so must not be given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RulesFor {
    ApiKey,
    SigningKey,
}

/// A parsed policy. Every rule denies until granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    pub chain_ids: BTreeSet<u64>,
    pub max_value_per_tx: Cap,
    pub max_value_per_24h: Cap,
    pub any_recipient: bool,
    pub recipients: BTreeSet<Address>,
    pub contract_calls: Vec<ContractCallRule>,
    pub allow_contract_creation: bool,
    pub max_fee_per_gas: Cap,
    pub max_total_fee: Cap,
    pub requests_per_minute: u32,
    pub allow_message_signing: bool,
    /// What a message must look like, once message signing is allowed.
    pub messages: MessageRules,
    /// The EIP-712 domains and primary types allowed (none: typed data is refused).
    pub typed_data: Vec<TypedDataRule>,
    /// EIP-7702 delegate contracts a key may authorize (none: every authorization is refused).
    pub delegates: BTreeSet<Address>,
    /// Whether an authorization for chain id 0 (every chain) is allowed.
    pub allow_any_chain_authorization: bool,
    /// ERC-20 tokens with their own rules; calls to them are decoded.
    pub tokens: Vec<TokenRule>,
    /// Longest an EIP-2612 permit or EIP-3009 authorization for a listed token may stay valid.
    pub max_permit_validity_secs: u32,
    /// Ether value above which a transaction is parked for approval (`None`: never). Signing
    /// key policies only.
    pub require_approval_above: Option<U256>,
    /// Who approves parked requests; set whenever an approval threshold is.
    pub approvers: Option<Approvers>,
}

impl Rules {
    /// Checks a transaction against every per-transaction rule (not the rolling 24 h value and
    /// not the request rate, which need state: the coordinator checks those).
    pub fn check_transaction(&self, tx: &UnsignedTransaction) -> Result<(), Refusal> {
        let chain_id = tx.chain_id();
        if !self.chain_ids.contains(&chain_id) {
            return Err(Refusal::new(
                "allowed_chain_ids",
                format!("chain id {chain_id} is not in {:?}", self.chain_ids),
            ));
        }
        self.check_destination(tx)?;
        let value = tx.value();
        if !self.max_value_per_tx.allows(value) {
            return Err(over(
                "max_value_per_tx",
                value,
                self.max_value_per_tx,
                Unit::Ether,
            ));
        }
        let fee_per_gas = tx.max_fee_per_gas();
        if !self.max_fee_per_gas.allows(fee_per_gas) {
            return Err(over(
                "max_fee_per_gas",
                fee_per_gas,
                self.max_fee_per_gas,
                Unit::Gwei,
            ));
        }
        let total_fee = tx.max_total_fee();
        if !self.max_total_fee.allows(total_fee) {
            return Err(over(
                "max_total_fee",
                total_fee,
                self.max_total_fee,
                Unit::Ether,
            ));
        }
        self.check_authorization_list(tx)
    }

    /// A set-code transaction installs code in every authority it carries, so each tuple meets
    /// the same rules as a `SignAuthorization` request, whoever signed it, and must be usable on
    /// the transaction's chain (the network skips a tuple for another chain; we refuse it).
    fn check_authorization_list(&self, tx: &UnsignedTransaction) -> Result<(), Refusal> {
        let chain_id = tx.chain_id();
        for (index, tuple) in tx.authorization_list().iter().enumerate() {
            let authorization = &tuple.authorization;
            if authorization.chain_id != 0 && authorization.chain_id != chain_id {
                return Err(Refusal::new(
                    "allowed_chain_ids",
                    format!(
                        "authorization_list[{index}] is for chain {}, not this transaction's chain {chain_id}",
                        authorization.chain_id
                    ),
                ));
            }
            self.check_authorization(authorization).map_err(|refusal| {
                Refusal::new(
                    refusal.rule,
                    format!("authorization_list[{index}]: {}", refusal.detail),
                )
            })?;
        }
        Ok(())
    }

    fn check_destination(&self, tx: &UnsignedTransaction) -> Result<(), Refusal> {
        let data = tx.data();
        match tx.to() {
            None if self.allow_contract_creation => Ok(()),
            None => Err(Refusal::new(
                "allow_contract_creation",
                "this key may not create contracts",
            )),
            Some(to) if data.is_empty() => {
                if self.any_recipient || self.recipients.contains(&to) {
                    Ok(())
                } else {
                    Err(Refusal::new(
                        "allowed_recipients",
                        format!("{} is not an allowed recipient", to.to_checksum()),
                    ))
                }
            }
            Some(to) => {
                let chain_id = tx.chain_id();
                if let Some(token) = self
                    .tokens
                    .iter()
                    .find(|token| token.chain_id == chain_id && token.address == to)
                {
                    return check_token_call(token, data, &self.contract_calls);
                }
                let selector: Option<[u8; 4]> = data.get(..4).and_then(|s| s.try_into().ok());
                let allowed = self.contract_calls.iter().any(|rule| {
                    rule.to.is_none_or(|allowed| allowed == to)
                        && rule
                            .selector
                            .is_none_or(|allowed| Some(allowed) == selector)
                });
                if allowed {
                    Ok(())
                } else {
                    Err(Refusal::new(
                        "allowed_contract_calls",
                        format!(
                            "call to {} with selector {} is not allowed",
                            to.to_checksum(),
                            selector.map_or_else(
                                || "(none: data shorter than 4 bytes)".into(),
                                |s| format!("0x{}", hex::encode(s))
                            )
                        ),
                    ))
                }
            }
        }
    }

    /// Checks any payload against the rules that apply to its kind.
    pub fn check(&self, payload: &Payload) -> Result<(), Refusal> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        self.check_at(payload, now)
    }

    /// [`Self::check`] at `now_unix` (what a permit's deadline is measured from).
    pub fn check_at(&self, payload: &Payload, now_unix: u64) -> Result<(), Refusal> {
        match payload {
            Payload::Transaction(tx) => self.check_transaction(tx),
            Payload::PersonalMessage(message) => self.check_message(message),
            Payload::TypedData(typed) => {
                crate::typed_data::check(&self.typed_data, &typed.typed, typed.chain_id)?;
                crate::tokens::check_typed(self, typed, now_unix)
            }
            Payload::Authorization(authorization) => self.check_authorization(authorization),
        }
    }

    /// The approval rule `payload` crosses, if any: a transaction's value over
    /// `require_approval_above`, or a listed token's amount (moved or granted, as the 24 h caps
    /// count it) over that token's. Checked after [`Self::check`]; an approval lifts only this.
    pub fn approval_needed(&self, payload: &Payload) -> Option<Refusal> {
        let value = payload.value();
        if let Some(limit) = self.require_approval_above
            && value > limit
        {
            return Some(Refusal::new(
                "require_approval_above",
                format!("{} > {}", format_eth(value), format_eth(limit)),
            ));
        }
        let (token, amount) = crate::tokens::token_spend(self, payload)?;
        let limit = token.require_approval_above?;
        (amount > limit).then(|| {
            Refusal::new(
                "tokens.require_approval_above",
                format!(
                    "{} > {} ({})",
                    token.shown(amount),
                    token.shown(limit),
                    token.named()
                ),
            )
        })
    }

    /// EIP-7702: the delegate must be listed, and "every chain" must be allowed explicitly.
    pub fn check_authorization(&self, authorization: &Authorization) -> Result<(), Refusal> {
        if !self.delegates.contains(&authorization.address) {
            return Err(Refusal::new(
                "allowed_delegates",
                format!(
                    "delegate {} is not allowed: an authorization hands the account's whole balance to its code",
                    authorization.address.to_checksum()
                ),
            ));
        }
        match authorization.chain_id {
            0 if !self.allow_any_chain_authorization => Err(Refusal::new(
                "allow_any_chain_authorization",
                "chain id 0 makes the authorization valid on every chain",
            )),
            0 => Ok(()),
            chain_id if !self.chain_ids.contains(&chain_id) => Err(Refusal::new(
                "allowed_chain_ids",
                format!("chain {chain_id} is not allowed"),
            )),
            _ => Ok(()),
        }
    }

    /// EIP-191 message signing.
    pub fn check_message(&self, message: &[u8]) -> Result<(), Refusal> {
        if !self.allow_message_signing {
            return Err(Refusal::new(
                "allow_message_signing",
                "this key may not sign EIP-191 messages",
            ));
        }
        self.messages.check(message)
    }
}

fn over(rule: &'static str, value: U256, cap: Cap, unit: Unit) -> Refusal {
    let max = match cap {
        Cap::Max(max) => max,
        Cap::Unlimited => U256::MAX,
    };
    Refusal::new(
        rule,
        format!("{} > {}", Shown(value, unit), Shown(max, unit)),
    )
}

#[cfg(test)]
mod tests {
    use shardsign_eth::parse_amount;
    use shardsign_proto::v1 as api;

    use super::*;
    use crate::error::PolicyError;
    use shardsign_eth::{Eip1559Transaction, LegacyTransaction};

    const ALICE: &str = "0x00000000000000000000000000000000000a11ce";
    const TOKEN: &str = "0x000000000000000000000000000000000000070c";

    fn eth(text: &str) -> U256 {
        parse_amount("t", text).unwrap()
    }

    fn tx(to: Option<&str>, value: &str, data: Vec<u8>) -> UnsignedTransaction {
        UnsignedTransaction::Eip1559(Eip1559Transaction {
            chain_id: 1,
            nonce: 0,
            max_priority_fee_per_gas: eth("1gwei"),
            max_fee_per_gas: eth("30gwei"),
            gas_limit: 21_000,
            to: to.map(|a| Address::parse("to", a).unwrap()),
            value: eth(value),
            data,
            access_list: Vec::new(),
        })
    }

    fn generous() -> api::Policy {
        api::Policy {
            allowed_chain_ids: vec![1],
            max_value_per_tx: "1eth".into(),
            max_value_per_24h: "2eth".into(),
            allowed_recipients: vec![ALICE.into()],
            allowed_contract_calls: vec![api::ContractCall {
                to: TOKEN.into(),
                selector: "0xa9059cbb".into(),
            }],
            allow_contract_creation: false,
            max_fee_per_gas: "30gwei".into(),
            max_total_fee: "0.00063eth".into(),
            requests_per_minute: 10,
            allow_message_signing: false,
            message_rules: None,
            allowed_typed_data: Vec::new(),
            allowed_delegates: Vec::new(),
            allow_any_chain_authorization: false,
            tokens: Vec::new(),
            max_permit_validity_secs: 0,
            require_approval_above: String::new(),
            approvers: None,
        }
    }

    #[test]
    fn an_empty_policy_denies_everything() {
        let rules = Rules::from_proto(&api::Policy::default(), RulesFor::ApiKey).unwrap();
        assert_eq!(
            rules
                .check_transaction(&tx(Some(ALICE), "0", vec![]))
                .unwrap_err()
                .rule,
            "allowed_chain_ids"
        );
        assert_eq!(
            rules.check_message(b"hello").unwrap_err().rule,
            "allow_message_signing"
        );
        assert_eq!(rules.requests_per_minute, 0);
        assert_eq!(rules.max_value_per_24h, Cap::Max(U256::ZERO));
    }

    #[test]
    fn each_rule_allows_at_its_limit_and_refuses_one_above() {
        let rules = Rules::from_proto(&generous(), RulesFor::ApiKey).unwrap();
        rules
            .check_transaction(&tx(Some(ALICE), "1eth", vec![]))
            .unwrap();
        let refusal = rules
            .check_transaction(&tx(Some(ALICE), "1000000000000000001", vec![]))
            .unwrap_err();
        assert_eq!(refusal.rule, "max_value_per_tx");
        assert_eq!(
            refusal.to_string(),
            "policy max_value_per_tx: 1.000000000000000001 ETH > 1 ETH"
        );
        let refusal = rules
            .check_transaction(&tx(Some(TOKEN), "0", vec![]))
            .unwrap_err();
        assert_eq!(refusal.rule, "allowed_recipients");
        rules
            .check_transaction(&tx(Some(TOKEN), "0", vec![0xa9, 0x05, 0x9c, 0xbb, 1]))
            .unwrap();
        let refusal = rules
            .check_transaction(&tx(Some(TOKEN), "0", vec![0x09, 0x5e, 0xa7, 0xb3]))
            .unwrap_err();
        assert_eq!(refusal.rule, "allowed_contract_calls");
        let refusal = rules
            .check_transaction(&tx(Some(ALICE), "0", vec![0xa9, 0x05, 0x9c, 0xbb]))
            .unwrap_err();
        assert_eq!(refusal.rule, "allowed_contract_calls");
        assert_eq!(
            rules
                .check_transaction(&tx(None, "0", vec![1]))
                .unwrap_err()
                .rule,
            "allow_contract_creation"
        );

        let mut fee = tx(Some(ALICE), "0", vec![]);
        if let UnsignedTransaction::Eip1559(inner) = &mut fee {
            inner.max_fee_per_gas = eth("30gwei") + U256::from(1u8);
        }
        let refusal = rules.check_transaction(&fee).unwrap_err();
        assert_eq!(refusal.rule, "max_fee_per_gas");
        assert_eq!(refusal.detail, "30.000000001 gwei > 30 gwei");

        // 21000 * 30 gwei = 0.00063 ETH exactly; one more gas is over.
        let mut total = tx(Some(ALICE), "0", vec![]);
        rules.check_transaction(&total).unwrap();
        if let UnsignedTransaction::Eip1559(inner) = &mut total {
            inner.gas_limit = 21_001;
        }
        assert_eq!(
            rules.check_transaction(&total).unwrap_err().rule,
            "max_total_fee"
        );

        let legacy = UnsignedTransaction::Legacy(LegacyTransaction {
            chain_id: 5,
            nonce: 0,
            gas_price: eth("1gwei"),
            gas_limit: 21_000,
            to: Some(Address::parse("to", ALICE).unwrap()),
            value: U256::ZERO,
            data: vec![],
        });
        assert_eq!(
            rules.check_transaction(&legacy).unwrap_err().to_string(),
            "policy allowed_chain_ids: chain id 5 is not in {1}"
        );
    }

    #[test]
    fn wildcards_and_round_trip() {
        let mut policy = generous();
        policy.allowed_recipients = vec!["*".into()];
        policy.allowed_contract_calls = vec![api::ContractCall {
            to: "*".into(),
            selector: "*".into(),
        }];
        policy.max_value_per_tx = "unlimited".into();
        policy.allow_message_signing = true;
        let rules = Rules::from_proto(&policy, RulesFor::ApiKey).unwrap();
        rules
            .check_transaction(&tx(Some(TOKEN), "1000eth", vec![1, 2]))
            .unwrap();
        rules.check_message(b"hello").unwrap();
        assert_eq!(
            rules.check_message(&[b'a'; 32]).unwrap_err().rule,
            "message_allow_hash_shaped"
        );
        let again = Rules::from_proto(&rules.to_proto(RulesFor::ApiKey), RulesFor::ApiKey).unwrap();
        assert_eq!(again, rules);
    }

    #[test]
    fn bad_policies_name_the_field() {
        type Mutation = Box<dyn Fn(&mut api::Policy)>;
        let cases: Vec<(Mutation, &str)> = vec![
            (
                Box::new(|p| p.allowed_chain_ids = vec![0]),
                "allowed_chain_ids",
            ),
            (
                Box::new(|p| p.allowed_chain_ids = (1..=65).collect()),
                "allowed_chain_ids",
            ),
            (
                Box::new(|p| p.max_value_per_tx = "lots".into()),
                "max_value_per_tx",
            ),
            (
                Box::new(|p| p.max_fee_per_gas = "1.5wei".into()),
                "max_fee_per_gas",
            ),
            (
                Box::new(|p| p.allowed_recipients = vec!["0x12".into()]),
                "allowed_recipients",
            ),
            (
                Box::new(|p| {
                    p.allowed_contract_calls = vec![api::ContractCall {
                        to: "*".into(),
                        selector: "a9059cbb".into(),
                    }]
                }),
                "allowed_contract_calls",
            ),
            (
                Box::new(|p| p.requests_per_minute = MAX_REQUESTS_PER_MINUTE + 1),
                "requests_per_minute",
            ),
            (
                Box::new(|p| p.allowed_recipients = vec![ALICE.into(); MAX_ALLOWLIST + 1]),
                "allowed_recipients",
            ),
        ];
        for (mutate, field) in cases {
            let mut policy = generous();
            mutate(&mut policy);
            match Rules::from_proto(&policy, RulesFor::ApiKey).unwrap_err() {
                PolicyError::Invalid { field: got, .. } => assert_eq!(got, field),
                other => panic!("{other:?}"),
            }
        }
        // A signing key's policy may carry a 24 h cap and a rate (the nodes keep the ledger);
        // left empty they mean none, where an API key's empty cap means 0.
        let key_rules = Rules::from_proto(&generous(), RulesFor::SigningKey).unwrap();
        assert!(matches!(key_rules.max_value_per_24h, Cap::Max(_)));
        let mut unset = generous();
        unset.max_value_per_24h.clear();
        unset.requests_per_minute = 0;
        let key_rules = Rules::from_proto(&unset, RulesFor::SigningKey).unwrap();
        assert_eq!(key_rules.max_value_per_24h, Cap::Unlimited);
        assert_eq!(key_rules.requests_per_minute, u32::MAX);
        assert_eq!(
            key_rules.to_proto(RulesFor::SigningKey).max_value_per_24h,
            ""
        );
        let api_rules = Rules::from_proto(&unset, RulesFor::ApiKey).unwrap();
        assert_eq!(api_rules.max_value_per_24h, Cap::Max(U256::ZERO));
    }

    #[test]
    fn authorizations_need_a_listed_delegate_and_an_explicit_any_chain() {
        let delegate = Address::parse("d", TOKEN).unwrap();
        let authorization = |chain_id| Authorization {
            chain_id,
            address: delegate,
            nonce: 3,
        };
        let mut policy = generous();
        let rules = Rules::from_proto(&policy, RulesFor::SigningKey).unwrap();
        assert_eq!(
            rules
                .check_authorization(&authorization(1))
                .unwrap_err()
                .rule,
            "allowed_delegates"
        );
        policy.allowed_delegates = vec![TOKEN.into()];
        let rules = Rules::from_proto(&policy, RulesFor::SigningKey).unwrap();
        rules.check_authorization(&authorization(1)).unwrap();
        assert_eq!(
            rules
                .check_authorization(&authorization(0))
                .unwrap_err()
                .rule,
            "allow_any_chain_authorization"
        );
        assert_eq!(
            rules
                .check_authorization(&authorization(5))
                .unwrap_err()
                .rule,
            "allowed_chain_ids"
        );
        policy.allow_any_chain_authorization = true;
        let rules = Rules::from_proto(&policy, RulesFor::SigningKey).unwrap();
        rules.check_authorization(&authorization(0)).unwrap();
        assert_eq!(
            Rules::from_proto(&rules.to_proto(RulesFor::SigningKey), RulesFor::SigningKey).unwrap(),
            rules
        );
        policy.allowed_delegates = vec!["0x12".into()];
        assert!(Rules::from_proto(&policy, RulesFor::SigningKey).is_err());
    }

    #[test]
    fn every_tuple_of_a_set_code_transaction_meets_the_authorization_rules() {
        use shardsign_eth::{Eip7702Transaction, SignedAuthorization, sign_prehash};
        let key = k256::ecdsa::SigningKey::from_slice(&[7; 32]).unwrap();
        let tuple = |chain_id, delegate: &str| {
            let authorization = Authorization {
                chain_id,
                address: Address::parse("d", delegate).unwrap(),
                nonce: 0,
            };
            SignedAuthorization {
                authorization,
                signature: sign_prehash(&key, &authorization.signing_hash()).normalized_low_s(),
            }
        };
        let set_code = |tuples: Vec<SignedAuthorization>| {
            UnsignedTransaction::Eip7702(Eip7702Transaction {
                chain_id: 1,
                nonce: 0,
                max_priority_fee_per_gas: eth("1gwei"),
                max_fee_per_gas: eth("30gwei"),
                gas_limit: 21_000,
                to: Address::parse("to", ALICE).unwrap(),
                value: U256::ZERO,
                data: Vec::new(),
                access_list: Vec::new(),
                authorization_list: tuples,
            })
        };
        let mut policy = generous();
        policy.allowed_delegates = vec![TOKEN.into()];
        let rules = Rules::from_proto(&policy, RulesFor::SigningKey).unwrap();
        rules
            .check_transaction(&set_code(vec![tuple(1, TOKEN), tuple(1, TOKEN)]))
            .unwrap();
        let refusal = rules
            .check_transaction(&set_code(vec![tuple(1, TOKEN), tuple(1, ALICE)]))
            .unwrap_err();
        assert_eq!(refusal.rule, "allowed_delegates");
        assert!(
            refusal
                .detail
                .starts_with("authorization_list[1]: delegate "),
            "{refusal}"
        );
        let refusal = rules
            .check_transaction(&set_code(vec![tuple(5, TOKEN)]))
            .unwrap_err();
        assert_eq!(refusal.rule, "allowed_chain_ids");
        assert!(refusal.detail.contains("chain 5"), "{refusal}");
        assert_eq!(
            rules
                .check_transaction(&set_code(vec![tuple(0, TOKEN)]))
                .unwrap_err()
                .rule,
            "allow_any_chain_authorization"
        );
        // The call itself still meets the transaction rules.
        policy.allowed_recipients.clear();
        let rules = Rules::from_proto(&policy, RulesFor::SigningKey).unwrap();
        assert_eq!(
            rules
                .check_transaction(&set_code(vec![tuple(1, TOKEN)]))
                .unwrap_err()
                .rule,
            "allowed_recipients"
        );
    }

    fn approver_keys() -> api::Approvers {
        api::Approvers {
            public_keys: (0..3)
                .map(|_| {
                    let key = ed25519_dalek::SigningKey::generate(&mut rand_core_06::OsRng);
                    hex::encode(key.verifying_key().to_bytes())
                })
                .collect(),
            quorum: 2,
            valid_secs: 0,
        }
    }

    #[test]
    fn approval_thresholds_park_one_unit_over_and_never_at_the_limit() {
        let usdc = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48";
        let policy = api::Policy {
            max_value_per_tx: "10eth".into(),
            require_approval_above: "1eth".into(),
            approvers: Some(approver_keys()),
            tokens: vec![api::TokenRule {
                chain_id: 1,
                address: usdc.into(),
                decimals: 6,
                symbol: "USDC".into(),
                max_amount_per_tx: "5000usdc".into(),
                allowed_recipients: vec!["*".into()],
                require_approval_above: "1000usdc".into(),
                ..Default::default()
            }],
            ..generous()
        };
        let rules = Rules::from_proto(&policy, RulesFor::SigningKey).unwrap();
        assert_eq!(rules.approvers.as_ref().unwrap().quorum(), 2);
        let transfer = |units: u64| {
            let mut data = shardsign_eth::erc20::TRANSFER.to_vec();
            data.extend_from_slice(&[0u8; 12]);
            data.extend_from_slice(&Address::parse("a", ALICE).unwrap().0);
            data.extend_from_slice(&U256::from(units).to_be_bytes::<32>());
            Payload::Transaction(tx(Some(usdc), "0", data))
        };
        let native = |value: &str| Payload::Transaction(tx(Some(ALICE), value, vec![]));
        // (case, payload, the rule and the start of the detail when it is parked)
        type Case<'a> = (&'a str, Payload, Option<(&'a str, &'a str)>);
        let table: Vec<Case<'_>> = vec![
            ("ether at the threshold", native("1"), None),
            (
                "ether one wei over",
                native("1000000000000000001wei"),
                Some(("require_approval_above", "1.000000000000000001 ETH > 1 ETH")),
            ),
            ("USDC at the threshold", transfer(1_000_000_000), None),
            (
                "USDC one unit over",
                transfer(1_000_000_001),
                Some((
                    "tokens.require_approval_above",
                    "1000.000001 USDC > 1000 USDC",
                )),
            ),
        ];
        for (name, payload, expected) in table {
            assert!(
                rules.check(&payload).is_ok(),
                "{name}: the other rules allow it"
            );
            let needed = rules.approval_needed(&payload);
            match expected {
                None => assert!(needed.is_none(), "{name}: {needed:?}"),
                Some((rule, detail)) => {
                    let needed = needed.unwrap_or_else(|| panic!("{name}: not parked"));
                    assert_eq!(needed.rule, rule, "{name}");
                    assert!(
                        needed.detail.starts_with(detail),
                        "{name}: {}",
                        needed.detail
                    );
                }
            }
        }
        // The round trip keeps the thresholds and the approvers.
        let again =
            Rules::from_proto(&rules.to_proto(RulesFor::SigningKey), RulesFor::SigningKey).unwrap();
        assert_eq!(again, rules);
    }

    #[test]
    fn approval_rules_need_approvers_and_belong_to_signing_key_policies() {
        let without_approvers = api::Policy {
            require_approval_above: "1eth".into(),
            ..generous()
        };
        let error = Rules::from_proto(&without_approvers, RulesFor::SigningKey).unwrap_err();
        assert!(error.to_string().contains("must list approvers"), "{error}");
        let on_api_key = api::Policy {
            require_approval_above: "1eth".into(),
            approvers: Some(approver_keys()),
            ..generous()
        };
        let error = Rules::from_proto(&on_api_key, RulesFor::ApiKey).unwrap_err();
        assert!(
            error.to_string().contains("signing key's policy"),
            "{error}"
        );
        // No threshold: nothing is parked, approvers or not.
        let rules = Rules::from_proto(&generous(), RulesFor::SigningKey).unwrap();
        assert!(
            rules
                .approval_needed(&Payload::Transaction(tx(Some(ALICE), "1", vec![])))
                .is_none()
        );
    }
}
