//! The wire form of rules (`shardsign.v1.Policy`): parsed once, bounded, every problem named;
//! and shown back to its owner (amounts in wei). The signed key policy (`signed`) carries it too.

use std::collections::BTreeSet;

use shardsign_eth::{Address, U256, parse_amount};
use shardsign_proto::v1 as api;

use crate::approval::Approvers;
use crate::error::PolicyError;
use crate::messages::MessageRules;
use crate::rules::{
    Cap, ContractCallRule, MAX_ALLOWLIST, MAX_CHAIN_IDS, MAX_REQUESTS_PER_MINUTE, Rules, RulesFor,
};
use crate::tokens::{
    DEFAULT_PERMIT_VALIDITY_SECS, MAX_PERMIT_VALIDITY_SECS, TokenRule, parse_tokens,
};
use crate::typed_data::{MAX_TYPED_DATA_RULES, TypedDataRule};

const MAX_FIELD_LEN: usize = 100;

impl Cap {
    fn parse(field: &'static str, text: &str) -> Result<Cap, PolicyError> {
        let text = text.trim();
        if text.len() > MAX_FIELD_LEN {
            return Err(PolicyError::invalid(field, "longer than 100 characters"));
        }
        if text.is_empty() {
            return Ok(Cap::Max(U256::ZERO));
        }
        if text.eq_ignore_ascii_case("unlimited") {
            return Ok(Cap::Unlimited);
        }
        parse_amount(field, text)
            .map(Cap::Max)
            .map_err(|e| PolicyError::invalid(field, e.to_string()))
    }

    fn to_wire(self) -> String {
        match self {
            Cap::Unlimited => "unlimited".into(),
            Cap::Max(max) => max.to_string(),
        }
    }
}

fn parse_selector(text: &str) -> Result<Option<[u8; 4]>, PolicyError> {
    if text == "*" {
        return Ok(None);
    }
    let hex_digits = text.strip_prefix("0x").ok_or_else(|| {
        PolicyError::invalid(
            "allowed_contract_calls",
            "selector: expected 0x and 8 hex digits, or *",
        )
    })?;
    let bytes = hex::decode(hex_digits)
        .ok()
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .ok_or_else(|| {
            PolicyError::invalid(
                "allowed_contract_calls",
                format!("selector `{text}`: expected 0x and 8 hex digits, or *"),
            )
        })?;
    Ok(Some(bytes))
}

fn parse_address(field: &'static str, text: &str) -> Result<Address, PolicyError> {
    if text.len() > MAX_FIELD_LEN {
        return Err(PolicyError::invalid(
            field,
            "an entry is longer than 100 characters",
        ));
    }
    Address::parse(field, text).map_err(|e| PolicyError::invalid(field, e.to_string()))
}

/// The recipients (`*` for any) and contract calls a policy allows.
fn allowlists(
    policy: &api::Policy,
) -> Result<(bool, BTreeSet<Address>, Vec<ContractCallRule>), PolicyError> {
    let mut any_recipient = false;
    let mut recipients = BTreeSet::new();
    for entry in &policy.allowed_recipients {
        if entry == "*" {
            any_recipient = true;
        } else {
            recipients.insert(parse_address("allowed_recipients", entry)?);
        }
    }
    let contract_calls = policy
        .allowed_contract_calls
        .iter()
        .map(|call| {
            Ok(ContractCallRule {
                to: if call.to == "*" {
                    None
                } else {
                    Some(parse_address("allowed_contract_calls", &call.to)?)
                },
                selector: parse_selector(&call.selector)?,
            })
        })
        .collect::<Result<Vec<_>, PolicyError>>()?;
    Ok((any_recipient, recipients, contract_calls))
}

/// The approval rules: the ether threshold and the approvers, who must be listed whenever any
/// threshold (ether or token) is set. Only a signing key's policy may have them: it is the one
/// the operator signs and the nodes enforce, so only it can name who approves.
fn approval_rules(
    policy: &api::Policy,
    tokens: &[TokenRule],
    kind: RulesFor,
) -> Result<(Option<U256>, Option<Approvers>), PolicyError> {
    let native = match Cap::parse("require_approval_above", &policy.require_approval_above)? {
        _ if policy.require_approval_above.trim().is_empty() => None,
        Cap::Unlimited => None,
        Cap::Max(limit) => Some(limit),
    };
    let any_threshold =
        native.is_some() || tokens.iter().any(|t| t.require_approval_above.is_some());
    if kind == RulesFor::ApiKey && (any_threshold || policy.approvers.is_some()) {
        return Err(PolicyError::invalid(
            "require_approval_above",
            "approval rules belong in the signing key's policy (signed by the operator, enforced by the nodes), not an API key's",
        ));
    }
    let approvers = policy
        .approvers
        .as_ref()
        .map(Approvers::from_proto)
        .transpose()?;
    if any_threshold && approvers.is_none() {
        return Err(PolicyError::invalid(
            "approvers",
            "require_approval_above is set, so the policy must list approvers (public_keys and quorum)",
        ));
    }
    Ok((native, approvers))
}

/// The message rules; absent, the safe defaults.
fn message_rules(rules: Option<&api::MessageRules>) -> Result<MessageRules, PolicyError> {
    match rules {
        None => Ok(MessageRules::default()),
        Some(m) => MessageRules::new(
            m.allow_hash_shaped,
            m.allow_binary,
            m.max_len,
            m.allowed_prefixes.clone(),
        ),
    }
}

impl Rules {
    /// Parses and bounds a wire policy.
    pub fn from_proto(policy: &api::Policy, kind: RulesFor) -> Result<Rules, PolicyError> {
        if policy.allowed_chain_ids.len() > MAX_CHAIN_IDS {
            return Err(PolicyError::invalid(
                "allowed_chain_ids",
                format!("at most {MAX_CHAIN_IDS} chain ids"),
            ));
        }
        if policy.allowed_chain_ids.contains(&0) {
            return Err(PolicyError::invalid(
                "allowed_chain_ids",
                "0 is not a chain id",
            ));
        }
        if policy.allowed_recipients.len() > MAX_ALLOWLIST
            || policy.allowed_contract_calls.len() > MAX_ALLOWLIST
            || policy.allowed_delegates.len() > MAX_ALLOWLIST
        {
            return Err(PolicyError::invalid(
                "allowed_recipients",
                format!(
                    "at most {MAX_ALLOWLIST} recipients, {MAX_ALLOWLIST} contract calls and {MAX_ALLOWLIST} delegates"
                ),
            ));
        }
        if policy.requests_per_minute > MAX_REQUESTS_PER_MINUTE {
            return Err(PolicyError::invalid(
                "requests_per_minute",
                format!("at most {MAX_REQUESTS_PER_MINUTE}"),
            ));
        }
        let (any_recipient, recipients, contract_calls) = allowlists(policy)?;
        if policy.allowed_typed_data.len() > MAX_TYPED_DATA_RULES {
            return Err(PolicyError::invalid(
                "allowed_typed_data",
                format!("at most {MAX_TYPED_DATA_RULES} entries"),
            ));
        }
        let typed_data = policy
            .allowed_typed_data
            .iter()
            .enumerate()
            .map(|(index, rule)| TypedDataRule::from_proto(rule, &policy.allowed_chain_ids, index))
            .collect::<Result<Vec<_>, _>>()?;
        let tokens = parse_tokens(&policy.tokens, &policy.allowed_chain_ids, kind)?;
        let (require_approval_above, approvers) = approval_rules(policy, &tokens, kind)?;
        Ok(Rules {
            chain_ids: policy.allowed_chain_ids.iter().copied().collect(),
            max_value_per_tx: Cap::parse("max_value_per_tx", &policy.max_value_per_tx)?,
            // On a signing key's policy (enforced by each node on what it co-signs) empty means
            // no cap and 0 no rate limit: policies signed before the nodes kept a ledger left
            // them empty. On an API key empty means 0, as for every amount.
            max_value_per_24h: match kind {
                RulesFor::SigningKey if policy.max_value_per_24h.trim().is_empty() => {
                    Cap::Unlimited
                }
                _ => Cap::parse("max_value_per_24h", &policy.max_value_per_24h)?,
            },
            any_recipient,
            recipients,
            contract_calls,
            allow_contract_creation: policy.allow_contract_creation,
            max_fee_per_gas: Cap::parse("max_fee_per_gas", &policy.max_fee_per_gas)?,
            max_total_fee: Cap::parse("max_total_fee", &policy.max_total_fee)?,
            requests_per_minute: match (kind, policy.requests_per_minute) {
                (RulesFor::SigningKey, 0) => u32::MAX,
                (_, rate) => rate,
            },
            allow_message_signing: policy.allow_message_signing,
            messages: message_rules(policy.message_rules.as_ref())?,
            typed_data,
            delegates: policy
                .allowed_delegates
                .iter()
                .map(|entry| parse_address("allowed_delegates", entry))
                .collect::<Result<_, _>>()?,
            allow_any_chain_authorization: policy.allow_any_chain_authorization,
            tokens,
            max_permit_validity_secs: match policy.max_permit_validity_secs {
                0 => DEFAULT_PERMIT_VALIDITY_SECS,
                secs if secs > MAX_PERMIT_VALIDITY_SECS => {
                    return Err(PolicyError::invalid(
                        "max_permit_validity_secs",
                        format!("at most {MAX_PERMIT_VALIDITY_SECS} (365 days)"),
                    ));
                }
                secs => secs,
            },
            require_approval_above,
            approvers,
        })
    }

    /// The wire form (amounts in wei), for showing a policy back to its owner.
    pub fn to_proto(&self, kind: RulesFor) -> api::Policy {
        let mut allowed_recipients: Vec<String> =
            self.recipients.iter().map(Address::to_checksum).collect();
        if self.any_recipient {
            allowed_recipients.insert(0, "*".into());
        }
        api::Policy {
            allowed_chain_ids: self.chain_ids.iter().copied().collect(),
            max_value_per_tx: self.max_value_per_tx.to_wire(),
            max_value_per_24h: match (kind, self.max_value_per_24h) {
                (RulesFor::SigningKey, Cap::Unlimited) => String::new(),
                (_, cap) => cap.to_wire(),
            },
            allowed_recipients,
            allowed_contract_calls: self
                .contract_calls
                .iter()
                .map(|call| api::ContractCall {
                    to: call.to.map_or_else(|| "*".into(), |a| a.to_checksum()),
                    selector: call
                        .selector
                        .map_or_else(|| "*".into(), |s| format!("0x{}", hex::encode(s))),
                })
                .collect(),
            allow_contract_creation: self.allow_contract_creation,
            max_fee_per_gas: self.max_fee_per_gas.to_wire(),
            max_total_fee: self.max_total_fee.to_wire(),
            requests_per_minute: match (kind, self.requests_per_minute) {
                (RulesFor::SigningKey, u32::MAX) => 0,
                (_, rate) => rate,
            },
            allow_message_signing: self.allow_message_signing,
            message_rules: Some(api::MessageRules {
                allow_hash_shaped: self.messages.allow_hash_shaped,
                allow_binary: !self.messages.text_only,
                max_len: u32::try_from(self.messages.max_len).unwrap_or(u32::MAX),
                allowed_prefixes: self.messages.allowed_prefixes.clone(),
            }),
            allowed_typed_data: self
                .typed_data
                .iter()
                .map(TypedDataRule::to_proto)
                .collect(),
            allowed_delegates: self.delegates.iter().map(Address::to_checksum).collect(),
            allow_any_chain_authorization: self.allow_any_chain_authorization,
            tokens: self
                .tokens
                .iter()
                .map(|token| token.to_proto(kind))
                .collect(),
            max_permit_validity_secs: self.max_permit_validity_secs,
            require_approval_above: self
                .require_approval_above
                .map(|limit| limit.to_string())
                .unwrap_or_default(),
            approvers: self.approvers.as_ref().map(Approvers::to_proto),
        }
    }
}
