//! Policies as JSON files, field for field the API's `Policy` message:
//!
//! ```json
//! { "allowed_chain_ids": [1], "max_value_per_tx": "0.5eth", "max_value_per_24h": "2eth",
//!   "allowed_recipients": ["0x..."], "allowed_contract_calls": [{"to": "0x...", "selector": "0xa9059cbb"}],
//!   "allow_contract_creation": false, "max_fee_per_gas": "100gwei", "max_total_fee": "0.01eth",
//!   "requests_per_minute": 60, "allow_message_signing": true,
//!   "message_rules": {"allow_hash_shaped": false, "allow_binary": false, "max_len": 1024,
//!                     "allowed_prefixes": ["example.com wants you to sign in"]} }
//! ```
//!
//! `message_rules` may be left out: its defaults (text only, at most 1 KiB, no 32-byte
//! messages, any prefix) are the safe ones. EIP-712 typed data is refused unless
//! `allowed_typed_data` allows the document's domain and primary type (see `typed_data`):
//! `[{"chain_id": 8453, "verifying_contract": "0x8335...2913", "name": "USD Coin", "version": "2",
//! "primary_types": ["TransferWithAuthorization"], "conditions": [{"path": "message.value", "op":
//! "le", "values": ["1000000"]}]}]`. ERC-20 tokens with their own rules go in
//! `tokens`: `[{"chain_id": 1, "address": "0xA0b8...eB48", "decimals": 6, "symbol": "USDC",
//! "max_amount_per_tx": "250usdc", "allowed_recipients": ["0x..."], "allowed_spenders": [],
//! "allow_unlimited_approval": false, "require_approval_above": "1000usdc"}]`. Requests over a
//! `require_approval_above` (ether at the top level, or a token's) wait for `approvers`:
//! `{"public_keys": ["<64 hex digits>", ...], "quorum": 2, "valid_secs": 86400}`.

use serde::{Deserialize, Serialize};
use shardsign_proto::v1 as api;

use crate::error::PolicyError;

/// Largest policy file read: far above any policy the limits allow, small enough to parse at once.
pub const MAX_POLICY_FILE_BYTES: usize = 256 * 1024;

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyFile {
    pub allowed_chain_ids: Vec<u64>,
    pub max_value_per_tx: String,
    pub max_value_per_24h: String,
    pub allowed_recipients: Vec<String>,
    pub allowed_contract_calls: Vec<CallFile>,
    pub allow_contract_creation: bool,
    pub max_fee_per_gas: String,
    pub max_total_fee: String,
    pub requests_per_minute: u32,
    pub allow_message_signing: bool,
    pub message_rules: Option<MessageRulesFile>,
    pub allowed_typed_data: Vec<TypedDataRuleFile>,
    pub allowed_delegates: Vec<String>,
    pub allow_any_chain_authorization: bool,
    pub tokens: Vec<TokenRuleFile>,
    pub max_permit_validity_secs: u32,
    pub require_approval_above: String,
    pub approvers: Option<ApproversFile>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApproversFile {
    pub public_keys: Vec<String>,
    pub quorum: u32,
    pub valid_secs: u32,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenRuleFile {
    pub chain_id: u64,
    pub address: String,
    pub decimals: u32,
    pub symbol: String,
    pub max_amount_per_tx: String,
    pub allowed_recipients: Vec<String>,
    pub allowed_spenders: Vec<String>,
    pub allow_unlimited_approval: bool,
    pub max_amount_per_24h: String,
    pub require_approval_above: String,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TypedDataRuleFile {
    pub chain_id: u64,
    pub verifying_contract: String,
    pub name: String,
    pub version: String,
    pub primary_types: Vec<String>,
    pub conditions: Vec<FieldConditionFile>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FieldConditionFile {
    pub path: String,
    pub op: String,
    pub values: Vec<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MessageRulesFile {
    pub allow_hash_shaped: bool,
    pub allow_binary: bool,
    pub max_len: u32,
    pub allowed_prefixes: Vec<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CallFile {
    pub to: String,
    pub selector: String,
}

impl PolicyFile {
    /// Parses a policy file's text (bounded, unknown fields refused) into the API's message. The
    /// values are checked where the policy is used (`Rules::from_proto`), which names the field.
    pub fn parse(text: &[u8]) -> Result<api::Policy, PolicyError> {
        if text.len() > MAX_POLICY_FILE_BYTES {
            return Err(PolicyError::File(format!(
                "{} bytes is over the limit of {MAX_POLICY_FILE_BYTES}",
                text.len()
            )));
        }
        let file: PolicyFile =
            serde_json::from_slice(text).map_err(|e| PolicyError::File(e.to_string()))?;
        Ok(file.into())
    }
}

impl From<PolicyFile> for api::Policy {
    fn from(f: PolicyFile) -> Self {
        api::Policy {
            allowed_chain_ids: f.allowed_chain_ids,
            max_value_per_tx: f.max_value_per_tx,
            max_value_per_24h: f.max_value_per_24h,
            allowed_recipients: f.allowed_recipients,
            allowed_contract_calls: f
                .allowed_contract_calls
                .into_iter()
                .map(|c| api::ContractCall {
                    to: c.to,
                    selector: c.selector,
                })
                .collect(),
            allow_contract_creation: f.allow_contract_creation,
            max_fee_per_gas: f.max_fee_per_gas,
            max_total_fee: f.max_total_fee,
            requests_per_minute: f.requests_per_minute,
            allow_message_signing: f.allow_message_signing,
            message_rules: f.message_rules.map(|m| api::MessageRules {
                allow_hash_shaped: m.allow_hash_shaped,
                allow_binary: m.allow_binary,
                max_len: m.max_len,
                allowed_prefixes: m.allowed_prefixes,
            }),
            allowed_typed_data: f
                .allowed_typed_data
                .into_iter()
                .map(|t| api::TypedDataRule {
                    chain_id: t.chain_id,
                    verifying_contract: t.verifying_contract,
                    name: t.name,
                    version: t.version,
                    primary_types: t.primary_types,
                    conditions: t
                        .conditions
                        .into_iter()
                        .map(|c| api::FieldCondition {
                            path: c.path,
                            op: c.op,
                            values: c.values,
                        })
                        .collect(),
                })
                .collect(),
            allowed_delegates: f.allowed_delegates,
            allow_any_chain_authorization: f.allow_any_chain_authorization,
            max_permit_validity_secs: f.max_permit_validity_secs,
            tokens: f
                .tokens
                .into_iter()
                .map(|t| api::TokenRule {
                    chain_id: t.chain_id,
                    address: t.address,
                    decimals: t.decimals,
                    symbol: t.symbol,
                    max_amount_per_tx: t.max_amount_per_tx,
                    allowed_recipients: t.allowed_recipients,
                    allowed_spenders: t.allowed_spenders,
                    allow_unlimited_approval: t.allow_unlimited_approval,
                    max_amount_per_24h: t.max_amount_per_24h,
                    require_approval_above: t.require_approval_above,
                })
                .collect(),
            require_approval_above: f.require_approval_above,
            approvers: f.approvers.map(|a| api::Approvers {
                public_keys: a.public_keys,
                quorum: a.quorum,
                valid_secs: a.valid_secs,
            }),
        }
    }
}

impl From<&api::Policy> for PolicyFile {
    fn from(p: &api::Policy) -> Self {
        PolicyFile {
            allowed_chain_ids: p.allowed_chain_ids.clone(),
            max_value_per_tx: p.max_value_per_tx.clone(),
            max_value_per_24h: p.max_value_per_24h.clone(),
            allowed_recipients: p.allowed_recipients.clone(),
            allowed_contract_calls: p
                .allowed_contract_calls
                .iter()
                .map(|c| CallFile {
                    to: c.to.clone(),
                    selector: c.selector.clone(),
                })
                .collect(),
            allow_contract_creation: p.allow_contract_creation,
            max_fee_per_gas: p.max_fee_per_gas.clone(),
            max_total_fee: p.max_total_fee.clone(),
            requests_per_minute: p.requests_per_minute,
            allow_message_signing: p.allow_message_signing,
            message_rules: p.message_rules.as_ref().map(|m| MessageRulesFile {
                allow_hash_shaped: m.allow_hash_shaped,
                allow_binary: m.allow_binary,
                max_len: m.max_len,
                allowed_prefixes: m.allowed_prefixes.clone(),
            }),
            allowed_typed_data: p
                .allowed_typed_data
                .iter()
                .map(|t| TypedDataRuleFile {
                    chain_id: t.chain_id,
                    verifying_contract: t.verifying_contract.clone(),
                    name: t.name.clone(),
                    version: t.version.clone(),
                    primary_types: t.primary_types.clone(),
                    conditions: t
                        .conditions
                        .iter()
                        .map(|c| FieldConditionFile {
                            path: c.path.clone(),
                            op: c.op.clone(),
                            values: c.values.clone(),
                        })
                        .collect(),
                })
                .collect(),
            allowed_delegates: p.allowed_delegates.clone(),
            allow_any_chain_authorization: p.allow_any_chain_authorization,
            max_permit_validity_secs: p.max_permit_validity_secs,
            tokens: p
                .tokens
                .iter()
                .map(|t| TokenRuleFile {
                    chain_id: t.chain_id,
                    address: t.address.clone(),
                    decimals: t.decimals,
                    symbol: t.symbol.clone(),
                    max_amount_per_tx: t.max_amount_per_tx.clone(),
                    allowed_recipients: t.allowed_recipients.clone(),
                    allowed_spenders: t.allowed_spenders.clone(),
                    allow_unlimited_approval: t.allow_unlimited_approval,
                    max_amount_per_24h: t.max_amount_per_24h.clone(),
                    require_approval_above: t.require_approval_above.clone(),
                })
                .collect(),
            require_approval_above: p.require_approval_above.clone(),
            approvers: p.approvers.as_ref().map(|a| ApproversFile {
                public_keys: a.public_keys.clone(),
                quorum: a.quorum,
                valid_secs: a.valid_secs,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Rules, RulesFor};

    #[test]
    fn a_policy_file_round_trips_through_the_api_message() {
        let text = br#"{"allowed_chain_ids": [1], "max_value_per_tx": "0.5eth",
            "allowed_contract_calls": [{"to": "0x3535353535353535353535353535353535353535",
                                        "selector": "0xa9059cbb"}],
            "message_rules": {"max_len": 64},
            "tokens": [{"chain_id": 1, "address": "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48",
                        "decimals": 6, "symbol": "USDC", "max_amount_per_tx": "250usdc",
                        "allowed_recipients": ["*"]}]}"#;
        let policy = PolicyFile::parse(text).unwrap();
        assert_eq!(policy.allowed_chain_ids, vec![1]);
        assert_eq!(policy.message_rules.as_ref().unwrap().max_len, 64);
        let rules = Rules::from_proto(&policy, RulesFor::SigningKey).unwrap();
        assert_eq!(rules.tokens[0].symbol, "USDC");
        assert_eq!(
            rules.to_proto(RulesFor::SigningKey).tokens[0].max_amount_per_tx,
            "250 USDC"
        );
        let again = serde_json::to_vec(&PolicyFile::from(&policy)).unwrap();
        assert_eq!(PolicyFile::parse(&again).unwrap(), policy);
    }

    #[test]
    fn unknown_fields_and_oversized_files_are_refused() {
        let unknown = PolicyFile::parse(br#"{"max_value": "1eth"}"#).unwrap_err();
        assert!(
            unknown.to_string().contains("unknown field `max_value`"),
            "{unknown}"
        );
        let mut big = b"{\"allowed_recipients\": [".to_vec();
        big.resize(MAX_POLICY_FILE_BYTES + 1, b' ');
        let oversized = PolicyFile::parse(&big).unwrap_err();
        assert!(
            oversized.to_string().contains("over the limit"),
            "{oversized}"
        );
    }
}
