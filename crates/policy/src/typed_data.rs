//! Which EIP-712 documents a key may sign: deny by default, allowed per domain and primary type.
//!
//! A document is allowed when one entry matches all of: its domain's `chainId` (the entry's
//! `chain_id`, 0 for a domain without one; a non-zero one must be among the policy's chains), its
//! `verifyingContract` (the entry's, empty for a domain without one), its `name` and `version`
//! when the entry sets them, and its primary type (one of the entry's). A domain with neither a
//! chainId nor a verifyingContract binds the signature to nothing but its name, so such an entry
//! must name it.
//!
//! Some primary types approve actions of an account: a Safe owner's `SafeTx` / `SafeMessage` /
//! `SafeOp`, an ERC-4337 `UserOperation` / `PackedUserOperation`, a delegation framework's
//! `Delegation`, and meta-transactions (`ForwardRequest` of ERC-2771 forwarders,
//! `MetaTransaction`), which execute calls as the signer. Such a type is allowed only by an entry
//! that pins both the chain and the verifying contract: an allowlisted app name alone never lets a
//! key approve account actions.

use shardsign_eth::Address;
use shardsign_eth::typed_data::TypedData;
use shardsign_proto::v1 as api;

use crate::error::{PolicyError, Refusal};
use crate::typed_fields::{FieldCondition, MAX_CONDITIONS};

/// Primary types that approve account actions (see the module docs).
pub const ACCOUNT_APPROVAL_TYPES: &[&str] = &[
    "SafeTx",
    "SafeMessage",
    "SafeOp",
    "UserOperation",
    "PackedUserOperation",
    "Delegation",
    "ForwardRequest",
    "MetaTransaction",
];

/// Most typed-data entries in one policy, and most primary types in one entry.
pub const MAX_TYPED_DATA_RULES: usize = 100;
pub const MAX_PRIMARY_TYPES: usize = 32;
const MAX_TEXT_LEN: usize = 100;

/// One allowed domain and the primary types it may sign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypedDataRule {
    /// 0: the domain has no chainId.
    pub chain_id: u64,
    pub verifying_contract: Option<Address>,
    pub name: Option<String>,
    pub version: Option<String>,
    pub primary_types: Vec<String>,
    /// Conditions on the message's values; all must hold.
    pub conditions: Vec<FieldCondition>,
}

impl TypedDataRule {
    /// Parses one wire entry; `chains` are the policy's allowed chain ids.
    pub fn from_proto(
        rule: &api::TypedDataRule,
        chains: &[u64],
        index: usize,
    ) -> Result<TypedDataRule, PolicyError> {
        let field = "allowed_typed_data";
        let problem = |what: String| PolicyError::invalid(field, format!("entry {index}: {what}"));
        if rule.chain_id != 0 && !chains.contains(&rule.chain_id) {
            return Err(problem(format!(
                "chain_id {} is not one of allowed_chain_ids",
                rule.chain_id
            )));
        }
        let verifying_contract = match rule.verifying_contract.as_str() {
            "" => None,
            text if text.len() > MAX_TEXT_LEN => {
                return Err(problem("verifying_contract is too long".into()));
            }
            text => Some(
                Address::parse(field, text)
                    .map_err(|e| problem(format!("verifying_contract: {e}")))?,
            ),
        };
        let text = |value: &str, what: &str| -> Result<Option<String>, PolicyError> {
            match value {
                "" => Ok(None),
                v if v.len() > MAX_TEXT_LEN || v.chars().any(char::is_control) => Err(problem(
                    format!("{what}: at most {MAX_TEXT_LEN} bytes, no control characters"),
                )),
                v => Ok(Some(v.to_string())),
            }
        };
        let name = text(&rule.name, "name")?;
        let version = text(&rule.version, "version")?;
        if rule.chain_id == 0 && verifying_contract.is_none() && name.is_none() {
            return Err(problem(
                "a domain with neither a chainId nor a verifyingContract must be allowed by name"
                    .into(),
            ));
        }
        if rule.primary_types.is_empty() || rule.primary_types.len() > MAX_PRIMARY_TYPES {
            return Err(problem(format!(
                "primary_types: 1 to {MAX_PRIMARY_TYPES} names"
            )));
        }
        for primary in &rule.primary_types {
            if primary.is_empty()
                || primary.len() > 64
                || primary
                    .chars()
                    .any(|c| !(c.is_ascii_alphanumeric() || c == '_' || c == '$'))
            {
                return Err(problem(format!(
                    "primary_types: `{}` is not a struct name",
                    primary
                        .chars()
                        .take(64)
                        .collect::<String>()
                        .escape_default()
                )));
            }
            if ACCOUNT_APPROVAL_TYPES.contains(&primary.as_str())
                && (rule.chain_id == 0 || verifying_contract.is_none())
            {
                return Err(problem(format!(
                    "{primary} approves account actions: allow it only with both chain_id and verifying_contract"
                )));
            }
        }
        if rule.conditions.len() > MAX_CONDITIONS {
            return Err(problem(format!("at most {MAX_CONDITIONS} conditions")));
        }
        let conditions = rule
            .conditions
            .iter()
            .map(|condition| FieldCondition::from_proto(condition, index))
            .collect::<Result<_, _>>()?;
        Ok(TypedDataRule {
            chain_id: rule.chain_id,
            verifying_contract,
            name,
            version,
            primary_types: rule.primary_types.clone(),
            conditions,
        })
    }

    pub fn to_proto(&self) -> api::TypedDataRule {
        api::TypedDataRule {
            chain_id: self.chain_id,
            verifying_contract: self
                .verifying_contract
                .map(|a| a.to_checksum())
                .unwrap_or_default(),
            name: self.name.clone().unwrap_or_default(),
            version: self.version.clone().unwrap_or_default(),
            primary_types: self.primary_types.clone(),
            conditions: self
                .conditions
                .iter()
                .map(FieldCondition::to_proto)
                .collect(),
        }
    }

    /// The first condition that does not hold, with why.
    fn failed_condition(&self, typed: &TypedData) -> Option<String> {
        self.conditions
            .iter()
            .find_map(|condition| condition.check(typed).err())
    }

    fn matches(&self, typed: &TypedData, chain_id: Option<u64>) -> bool {
        let domain = &typed.domain;
        self.chain_id == chain_id.unwrap_or(0)
            && self.verifying_contract == domain.verifying_contract
            && self
                .name
                .as_ref()
                .is_none_or(|n| domain.name.as_ref() == Some(n))
            && self
                .version
                .as_ref()
                .is_none_or(|v| domain.version.as_ref() == Some(v))
            && self.primary_types.contains(&typed.primary_type)
    }
}

/// Checks a document (`chain_id`: its domain's, already known to fit 64 bits) against `rules`.
pub fn check(
    rules: &[TypedDataRule],
    typed: &TypedData,
    chain_id: Option<u64>,
) -> Result<(), Refusal> {
    let mut failed = None;
    for rule in rules.iter().filter(|rule| rule.matches(typed, chain_id)) {
        match rule.failed_condition(typed) {
            None => return Ok(()),
            Some(why) => failed = failed.or(Some(why)),
        }
    }
    if let Some(why) = failed {
        return Err(Refusal::new(
            "allowed_typed_data.conditions",
            format!("{} in an allowed domain, but {why}", typed.primary_type),
        ));
    }
    let domain = &typed.domain;
    let shown = |value: &Option<String>| match value {
        Some(v) => format!(
            "`{}`",
            v.chars().take(40).collect::<String>().escape_default()
        ),
        None => "none".to_string(),
    };
    Err(Refusal::new(
        "allowed_typed_data",
        format!(
            "no entry allows {} in the domain (chainId {}, verifyingContract {}, name {}, version {})",
            typed.primary_type,
            chain_id.map_or_else(|| "none".to_string(), |c| c.to_string()),
            domain
                .verifying_contract
                .map_or_else(|| "none".to_string(), |a| a.to_checksum()),
            shown(&domain.name),
            shown(&domain.version),
        ),
    ))
}

#[cfg(test)]
mod tests {
    use shardsign_eth::typed_data::Limits;

    use super::*;
    use crate::{Rules, RulesFor};

    const USDC: &str = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913";
    const SAFE: &str = "0x00000000000000000000000000000000000005af";

    /// A one-field document of `primary` in the given domain (JSON object text).
    fn document(primary: &str, domain_types: &str, domain: &str) -> (TypedData, Option<u64>) {
        let text = format!(
            r#"{{"types": {{"EIP712Domain": [{domain_types}], "{primary}": [{{"name": "v", "type": "uint256"}}]}},
               "primaryType": "{primary}", "domain": {domain}, "message": {{"v": 1}}}}"#
        );
        let typed = TypedData::parse(text.as_bytes(), &Limits::DEFAULT).unwrap();
        let chain = typed.domain.chain_id.map(|c| u64::try_from(c).unwrap());
        (typed, chain)
    }

    fn usdc(primary: &str, chain: u64, name: &str) -> (TypedData, Option<u64>) {
        document(
            primary,
            r#"{"name": "name", "type": "string"}, {"name": "version", "type": "string"},
               {"name": "chainId", "type": "uint256"}, {"name": "verifyingContract", "type": "address"}"#,
            &format!(
                r#"{{"name": "{name}", "version": "2", "chainId": {chain}, "verifyingContract": "{USDC}"}}"#
            ),
        )
    }

    fn rules(entries: Vec<api::TypedDataRule>) -> Result<Rules, PolicyError> {
        Rules::from_proto(
            &api::Policy {
                allowed_chain_ids: vec![8453],
                allowed_typed_data: entries,
                ..Default::default()
            },
            RulesFor::SigningKey,
        )
    }

    fn entry(chain_id: u64, contract: &str, name: &str, types: &[&str]) -> api::TypedDataRule {
        api::TypedDataRule {
            chain_id,
            verifying_contract: contract.into(),
            name: name.into(),
            version: String::new(),
            primary_types: types.iter().map(|t| t.to_string()).collect(),
            conditions: Vec::new(),
        }
    }

    #[test]
    fn an_entry_allows_only_when_its_conditions_hold() {
        let (typed, chain) = usdc("TransferWithAuthorization", 8453, "USD Coin");
        let condition = |op: &str, value: &str| api::FieldCondition {
            path: "message.v".into(),
            op: op.into(),
            values: vec![value.into()],
        };
        let mut strict = entry(8453, USDC, "", &["TransferWithAuthorization"]);
        strict.conditions = vec![condition("ge", "2")];
        let refused = rules(vec![strict.clone()]).unwrap();
        let refusal = check(&refused.typed_data, &typed, chain).unwrap_err();
        assert_eq!(refusal.rule, "allowed_typed_data.conditions");
        assert!(
            refusal
                .detail
                .contains("TransferWithAuthorization in an allowed domain, but message.v: 1 < 2"),
            "{refusal}"
        );
        // Any entry whose conditions hold allows it.
        let mut loose = strict.clone();
        loose.conditions = vec![condition("le", "1")];
        let allowed = rules(vec![strict.clone(), loose]).unwrap();
        check(&allowed.typed_data, &typed, chain).unwrap();
        assert_eq!(
            Rules::from_proto(
                &allowed.to_proto(RulesFor::SigningKey),
                RulesFor::SigningKey
            )
            .unwrap(),
            allowed
        );
        strict.conditions = vec![condition("ge", "2"); MAX_CONDITIONS + 1];
        assert!(rules(vec![strict]).is_err());
    }

    #[test]
    fn typed_data_is_refused_unless_an_entry_matches_domain_and_primary_type() {
        let (typed, chain) = usdc("TransferWithAuthorization", 8453, "USD Coin");
        let none = rules(Vec::new()).unwrap();
        let refusal = check(&none.typed_data, &typed, chain).unwrap_err();
        assert_eq!(refusal.rule, "allowed_typed_data");
        assert!(
            refusal.to_string().contains(&format!(
                "no entry allows TransferWithAuthorization in the domain (chainId 8453, verifyingContract {USDC}, name `USD Coin`, version `2`)"
            )),
            "{refusal}"
        );
        let allowed = rules(vec![entry(
            8453,
            USDC,
            "USD Coin",
            &["TransferWithAuthorization"],
        )])
        .unwrap();
        check(&allowed.typed_data, &typed, chain).unwrap();
        // Another primary type, another name, another contract, another chain: refused.
        let (permit, chain) = usdc("Permit", 8453, "USD Coin");
        assert!(check(&allowed.typed_data, &permit, chain).is_err());
        let (renamed, chain) = usdc("TransferWithAuthorization", 8453, "USDC");
        assert!(check(&allowed.typed_data, &renamed, chain).is_err());
        let (other_chain, chain) = usdc("TransferWithAuthorization", 1, "USD Coin");
        assert!(check(&allowed.typed_data, &other_chain, chain).is_err());
        // An entry without a name matches any name in that exact domain.
        let any_name = rules(vec![entry(8453, USDC, "", &["TransferWithAuthorization"])]).unwrap();
        check(&any_name.typed_data, &renamed, Some(8453)).unwrap();
        // A domain with only a name needs an entry by that name, with no chain or contract.
        let (named_only, chain) = document(
            "Login",
            r#"{"name": "name", "type": "string"}"#,
            r#"{"name": "Example"}"#,
        );
        assert_eq!(chain, None);
        let by_name = rules(vec![entry(0, "", "Example", &["Login"])]).unwrap();
        check(&by_name.typed_data, &named_only, chain).unwrap();
        assert!(check(&any_name.typed_data, &named_only, chain).is_err());
    }

    #[test]
    fn entries_are_checked_and_account_approvals_need_an_exact_domain() {
        let error = |entries| rules(entries).unwrap_err().to_string();
        assert!(error(vec![entry(0, "", "", &["Login"])]).contains("must be allowed by name"));
        assert!(
            error(vec![entry(1, USDC, "", &["Permit"])])
                .contains("chain_id 1 is not one of allowed_chain_ids")
        );
        assert!(error(vec![entry(8453, USDC, "", &[])]).contains("primary_types: 1 to 32"));
        assert!(error(vec![entry(8453, USDC, "", &["Bad Name"])]).contains("is not a struct name"));
        assert!(error(vec![entry(8453, "0x12", "", &["Permit"])]).contains("verifying_contract"));
        assert!(
            error(vec![entry(8453, "", "Safe", &["SafeTx"])])
                .contains("SafeTx approves account actions: allow it only with both chain_id and verifying_contract")
        );
        assert!(
            error(vec![entry(0, SAFE, "", &["UserOperation"])])
                .contains("UserOperation approves account actions")
        );
        let exact = rules(vec![entry(8453, SAFE, "", &["SafeTx"])]).unwrap();
        let (safe_tx, chain) = document(
            "SafeTx",
            r#"{"name": "chainId", "type": "uint256"}, {"name": "verifyingContract", "type": "address"}"#,
            &format!(r#"{{"chainId": 8453, "verifyingContract": "{SAFE}"}}"#),
        );
        check(&exact.typed_data, &safe_tx, chain).unwrap();
        let many: Vec<_> = (0..101)
            .map(|_| entry(8453, USDC, "", &["Permit"]))
            .collect();
        assert!(error(many).contains("at most 100 entries"));
        // The entries survive the wire form.
        let wire = exact.to_proto(RulesFor::SigningKey);
        assert_eq!(
            Rules::from_proto(&wire, RulesFor::SigningKey).unwrap(),
            exact
        );
    }
}
