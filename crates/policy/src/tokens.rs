//! ERC-20 token rules: a policy names tokens by (chain id, contract) with their decimals and a
//! symbol, and says how much one call may move or grant, to whom, and whether an unlimited
//! approval is allowed. Calls to a listed token are decoded strictly (`shardsign_eth::erc20`);
//! EIP-2612 permits and EIP-3009 transfer authorizations in the token's EIP-712 domain are read
//! from the checked document and held to the same rules, within a validity window. Amounts are
//! written and shown in the token's own units ("250usdc", "300 USDC > 250 USDC").

use std::collections::BTreeSet;

use shardsign_eth::erc20::{Erc20Call, Erc20Error};
use shardsign_eth::typed_data::Value;
use shardsign_eth::{Address, U256, format_units, parse_units};
use shardsign_proto::v1 as api;

use shardsign_request::{Payload, TypedDataPayload};

use crate::error::{PolicyError, Refusal};
use crate::rules::{Cap, ContractCallRule, Rules, RulesFor};

/// Most token entries in one policy.
pub const MAX_TOKENS: usize = 64;
/// Most recipients and most spenders per token.
pub const MAX_TOKEN_ALLOWLIST: usize = 1000;
/// Most decimals a token may declare (no real token has more than 24).
pub const MAX_DECIMALS: u32 = 36;
/// How long a permit or transfer authorization may stay valid when the policy does not say.
pub const DEFAULT_PERMIT_VALIDITY_SECS: u32 = 3600;
/// The longest validity window a policy may allow.
pub const MAX_PERMIT_VALIDITY_SECS: u32 = 365 * 86_400;
const MAX_SYMBOL_LEN: usize = 16;

/// One listed token and its rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRule {
    pub chain_id: u64,
    pub address: Address,
    pub decimals: u32,
    pub symbol: String,
    pub max_amount_per_tx: Cap,
    /// Rolling 24 h of what calls move or grant, per chain (counted by ledgers, not here).
    pub max_amount_per_24h: Cap,
    pub any_recipient: bool,
    pub recipients: BTreeSet<Address>,
    pub any_spender: bool,
    pub spenders: BTreeSet<Address>,
    pub allow_unlimited_approval: bool,
    /// Amount above which a call or document is parked for approval (`None`: never).
    pub require_approval_above: Option<U256>,
}

impl TokenRule {
    /// An amount in this token's units: `250.5 USDC`.
    pub fn shown(&self, amount: U256) -> String {
        format_units(amount, self.decimals, &self.symbol)
    }

    /// "USDC (0xA0b8…) on chain 1": how a refusal names the token.
    pub fn named(&self) -> String {
        format!(
            "{} ({}) on chain {}",
            self.symbol,
            self.address.to_checksum(),
            self.chain_id
        )
    }

    fn check_amount(&self, method: &str, amount: U256) -> Result<(), Refusal> {
        if self.max_amount_per_tx.allows(amount) {
            return Ok(());
        }
        let max = match self.max_amount_per_tx {
            Cap::Max(max) => max,
            Cap::Unlimited => U256::MAX,
        };
        Err(Refusal::new(
            "tokens.max_amount_per_tx",
            format!(
                "{method} of {} > {} ({})",
                self.shown(amount),
                self.shown(max),
                self.named()
            ),
        ))
    }

    fn check_recipient(&self, method: &str, to: Address) -> Result<(), Refusal> {
        if self.any_recipient || self.recipients.contains(&to) {
            return Ok(());
        }
        Err(Refusal::new(
            "tokens.allowed_recipients",
            format!(
                "{method} to {} is not allowed for {}",
                to.to_checksum(),
                self.named()
            ),
        ))
    }

    fn check_grant(&self, method: &str, spender: Address, amount: U256) -> Result<(), Refusal> {
        // Taking an allowance away never gives anyone spending power.
        if amount.is_zero() {
            return Ok(());
        }
        if !(self.any_spender || self.spenders.contains(&spender)) {
            return Err(Refusal::new(
                "tokens.allowed_spenders",
                format!(
                    "{method} for spender {} is not allowed for {}",
                    spender.to_checksum(),
                    self.named()
                ),
            ));
        }
        if amount == U256::MAX {
            if self.allow_unlimited_approval {
                return Ok(());
            }
            return Err(Refusal::new(
                "tokens.allow_unlimited_approval",
                format!(
                    "{method} of an unlimited allowance (2^256-1) for {}: an allowance that is never spent down",
                    self.named()
                ),
            ));
        }
        self.check_amount(method, amount)
    }

    /// Checks one decoded call against this token's rules.
    pub fn check_call(&self, call: &Erc20Call) -> Result<(), Refusal> {
        let method = call.method();
        match *call {
            Erc20Call::Transfer { to, amount } | Erc20Call::TransferFrom { to, amount, .. } => {
                self.check_recipient(method, to)?;
                self.check_amount(method, amount)
            }
            Erc20Call::Approve { spender, amount }
            | Erc20Call::IncreaseAllowance { spender, amount } => {
                self.check_grant(method, spender, amount)
            }
        }
    }
}

/// A signed EIP-712 document that moves or grants a listed token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenDocument {
    /// EIP-2612 `Permit(owner, spender, value, nonce, deadline)`: an allowance.
    Permit {
        spender: Address,
        value: U256,
        deadline: U256,
    },
    /// EIP-3009 `TransferWithAuthorization` / `ReceiveWithAuthorization`: a transfer (x402's
    /// "exact" EVM payments are these).
    Transfer {
        method: &'static str,
        to: Address,
        value: U256,
        valid_before: U256,
    },
    /// Permit2 (`PermitSingle`, `PermitBatch`, the `...TransferFrom` kinds): what the spender may
    /// take of one listed token, every element of a batch summed; `U256::MAX` when an element is
    /// Permit2's unlimited allowance.
    Permit2 {
        method: &'static str,
        spender: Address,
        amount: U256,
        deadline: U256,
    },
}

/// Uniswap's Permit2, at the same address on every chain.
const PERMIT2: Address = Address([
    0x00, 0x00, 0x00, 0x00, 0x00, 0x22, 0xd4, 0x73, 0x03, 0x0f, 0x11, 0x6d, 0xde, 0xe9, 0xf6, 0xb4,
    0x3a, 0xc7, 0x8b, 0xa3,
]);

/// Permit2's unlimited allowance: the largest uint160.
fn permit2_unlimited() -> U256 {
    (U256::from(1u8) << 160) - U256::from(1u8)
}

/// A Permit2 document: the listed token it grants and what, or why it is refused. `None` for a
/// primary type that grants nothing.
fn permit2_document<'r>(
    rules: &'r Rules,
    typed: &TypedDataPayload,
    chain_id: u64,
) -> Option<Result<(&'r TokenRule, TokenDocument), Refusal>> {
    let document = &typed.typed;
    let (method, elements, batch, deadline_field): (&'static str, &str, bool, &str) =
        match document.primary_type.as_str() {
            "PermitSingle" => ("PermitSingle", "message.details", false, "sigDeadline"),
            "PermitBatch" => ("PermitBatch", "message.details", true, "sigDeadline"),
            "PermitTransferFrom" => ("PermitTransferFrom", "message.permitted", false, "deadline"),
            "PermitWitnessTransferFrom" => (
                "PermitWitnessTransferFrom",
                "message.permitted",
                false,
                "deadline",
            ),
            "PermitBatchTransferFrom" => (
                "PermitBatchTransferFrom",
                "message.permitted",
                true,
                "deadline",
            ),
            "PermitBatchWitnessTransferFrom" => (
                "PermitBatchWitnessTransferFrom",
                "message.permitted",
                true,
                "deadline",
            ),
            _ => return None,
        };
    let refuse = |what: String| {
        Some(Err(Refusal::new(
            "tokens",
            format!("Permit2 {method}: {what}"),
        )))
    };
    let address = |path: &str| match document.value(path) {
        Some(Value::Address(address)) => Some(*address),
        _ => None,
    };
    let uint = |path: &str| match document.value(path) {
        Some(Value::Uint(value)) => Some(*value),
        _ => None,
    };
    let paths: Vec<String> = if batch {
        (0..)
            .map(|i| format!("{elements}[{i}]"))
            .take_while(|element| document.value(&format!("{element}.token")).is_some())
            .collect()
    } else {
        vec![elements.to_string()]
    };
    let (Some(spender), Some(deadline)) = (
        address("message.spender"),
        uint(&format!("message.{deadline_field}")),
    ) else {
        return refuse(format!(
            "must have the standard fields (spender, {deadline_field}) as address and uint values"
        ));
    };
    if paths.is_empty() {
        return refuse("grants nothing (an empty batch)".into());
    }
    let mut listed: Option<&TokenRule> = None;
    let mut total = U256::ZERO;
    for element in &paths {
        let (Some(token), Some(amount)) = (
            address(&format!("{element}.token")),
            uint(&format!("{element}.amount")),
        ) else {
            return refuse(format!(
                "{element} must have the standard fields (token, amount) as address and uint values"
            ));
        };
        let Some(rule) = rules
            .tokens
            .iter()
            .find(|t| t.chain_id == chain_id && t.address == token)
        else {
            return refuse(format!(
                "{element} grants {} on chain {chain_id}, which tokens does not list",
                token.to_checksum()
            ));
        };
        if listed.is_some_and(|first| first.address != rule.address) {
            return refuse(
                "grants more than one listed token; each request may grant one (the ledgers count one token per request)"
                    .into(),
            );
        }
        listed = Some(rule);
        total = if !method.ends_with("TransferFrom") && amount == permit2_unlimited() {
            U256::MAX
        } else {
            total.saturating_add(amount)
        };
    }
    let token = listed?;
    Some(Ok((
        token,
        TokenDocument::Permit2 {
            method,
            spender,
            amount: total,
            deadline,
        },
    )))
}

/// The listed token a document moves or grants, and how: a document in the token's own domain
/// (verifyingContract on chainId), or a Permit2 document naming it. `None` when it concerns no
/// listed token, or is of a primary type that moves nothing; `Err` when a moving primary type
/// lacks the standard fields (a look-alike struct could hide the amount where we do not look),
/// or a Permit2 document grants an unlisted token.
fn token_document<'r>(
    rules: &'r Rules,
    typed: &TypedDataPayload,
) -> Option<Result<(&'r TokenRule, TokenDocument), Refusal>> {
    let contract = typed.typed.domain.verifying_contract?;
    let chain_id = typed.chain_id?;
    if contract == PERMIT2 {
        return permit2_document(rules, typed, chain_id);
    }
    let token = rules
        .tokens
        .iter()
        .find(|token| token.chain_id == chain_id && token.address == contract)?;
    let document = &typed.typed;
    let address = |name: &str| match document.value(&format!("message.{name}")) {
        Some(Value::Address(address)) => Some(*address),
        _ => None,
    };
    let uint = |name: &str| match document.value(&format!("message.{name}")) {
        Some(Value::Uint(value)) => Some(*value),
        _ => None,
    };
    let shape = |fields: &str| {
        Refusal::new(
            "tokens",
            format!(
                "a {} for {} must have the standard fields ({fields}) as address and uint256 values",
                document.primary_type,
                token.named()
            ),
        )
    };
    let read = match document.primary_type.as_str() {
        "Permit" => (|| {
            Some(TokenDocument::Permit {
                spender: address("spender")?,
                value: uint("value")?,
                deadline: uint("deadline")?,
            })
        })()
        .ok_or_else(|| shape("owner, spender, value, nonce, deadline")),
        method @ ("TransferWithAuthorization" | "ReceiveWithAuthorization") => (|| {
            Some(TokenDocument::Transfer {
                method: if method == "TransferWithAuthorization" {
                    "TransferWithAuthorization"
                } else {
                    "ReceiveWithAuthorization"
                },
                to: address("to")?,
                value: uint("value")?,
                valid_before: uint("validBefore")?,
            })
        })()
        .ok_or_else(|| shape("from, to, value, validAfter, validBefore, nonce")),
        _ => return None,
    };
    Some(read.map(|document| (token, document)))
}

/// Holds an EIP-712 document in a listed token's domain to the token's rules: a permit like an
/// approval, a transfer authorization like a transfer, each valid for at most the policy's
/// window from `now_unix`.
pub(crate) fn check_typed(
    rules: &Rules,
    typed: &TypedDataPayload,
    now_unix: u64,
) -> Result<(), Refusal> {
    let Some(read) = token_document(rules, typed) else {
        return Ok(());
    };
    let (token, document) = read?;
    let latest = U256::from(now_unix) + U256::from(rules.max_permit_validity_secs);
    let (method, valid_until) = match document {
        TokenDocument::Permit {
            spender,
            value,
            deadline,
        } => {
            token.check_grant("Permit", spender, value)?;
            ("Permit deadline", deadline)
        }
        TokenDocument::Transfer {
            method,
            to,
            value,
            valid_before,
        } => {
            token.check_recipient(method, to)?;
            token.check_amount(method, value)?;
            ("validBefore", valid_before)
        }
        TokenDocument::Permit2 {
            method,
            spender,
            amount,
            deadline,
        } => {
            token.check_grant(method, spender, amount)?;
            ("Permit2 deadline", deadline)
        }
    };
    if valid_until > latest {
        return Err(Refusal::new(
            "max_permit_validity_secs",
            format!(
                "{method} {valid_until} is more than {} s from now ({now_unix}) for {}",
                rules.max_permit_validity_secs,
                token.named()
            ),
        ));
    }
    Ok(())
}

/// What a payload moves or grants of a token the rules list: the token's entry and the amount
/// (what `transfer`/`transferFrom` and an EIP-3009 authorization move, what `approve`/
/// `increaseAllowance` and an EIP-2612 permit grant). `None` for anything else, and for calls
/// and documents that do not read (those are refused by `check`).
pub fn token_spend<'r>(rules: &'r Rules, payload: &Payload) -> Option<(&'r TokenRule, U256)> {
    let tx = match payload {
        Payload::Transaction(tx) => tx,
        Payload::TypedData(typed) => {
            let (token, document) = token_document(rules, typed)?.ok()?;
            let amount = match document {
                TokenDocument::Permit { value, .. } | TokenDocument::Transfer { value, .. } => {
                    value
                }
                TokenDocument::Permit2 { amount, .. } => amount,
            };
            return Some((token, amount));
        }
        _ => return None,
    };
    let to = tx.to()?;
    let chain_id = tx.chain_id();
    let token = rules
        .tokens
        .iter()
        .find(|token| token.chain_id == chain_id && token.address == to)?;
    let amount = match Erc20Call::decode(tx.data()).ok()?? {
        Erc20Call::Transfer { amount, .. }
        | Erc20Call::TransferFrom { amount, .. }
        | Erc20Call::Approve { amount, .. }
        | Erc20Call::IncreaseAllowance { amount, .. } => amount,
    };
    Some((token, amount))
}

/// Checks a contract call to `token` (data non-empty): one of the four decoded calls under the
/// token's rules, any other method only with an exact `allowed_contract_calls` entry.
pub(crate) fn check_token_call(
    token: &TokenRule,
    data: &[u8],
    contract_calls: &[ContractCallRule],
) -> Result<(), Refusal> {
    match Erc20Call::decode(data) {
        Ok(Some(call)) => token.check_call(&call),
        Err(error) => Err(malformed(token, &error)),
        Ok(None) => {
            let selector: Option<[u8; 4]> = data.get(..4).and_then(|s| s.try_into().ok());
            let exact = contract_calls.iter().any(|rule| {
                rule.to == Some(token.address) && selector.is_some() && rule.selector == selector
            });
            if exact {
                return Ok(());
            }
            Err(Refusal::new(
                "tokens",
                format!(
                    "call to {} with selector {}: a listed token's other methods need an allowed_contract_calls entry naming this contract and selector",
                    token.named(),
                    selector.map_or_else(
                        || "(none: data shorter than 4 bytes)".into(),
                        |s| format!("0x{}", hex::encode(s))
                    )
                ),
            ))
        }
    }
}

fn malformed(token: &TokenRule, error: &Erc20Error) -> Refusal {
    Refusal::new(
        "tokens",
        format!("malformed call to {}: {error}", token.named()),
    )
}

fn parse_symbol(index: usize, text: &str) -> Result<String, PolicyError> {
    let valid = !text.is_empty()
        && text.len() <= MAX_SYMBOL_LEN
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if !valid {
        return Err(PolicyError::invalid(
            "tokens",
            format!(
                "entry {index}: symbol must be 1 to {MAX_SYMBOL_LEN} ASCII letters, digits, '.', '-' or '_'"
            ),
        ));
    }
    Ok(text.to_string())
}

/// A token amount: `unlimited`, empty (0), or a decimal number followed by the token's own
/// symbol (`250usdc`, `0.5 USDC`). The symbol is required: a bare number could be read as base
/// units or as tokens, and the difference is a factor of 10^decimals.
fn parse_token_amount(
    index: usize,
    text: &str,
    symbol: &str,
    decimals: u32,
) -> Result<Cap, PolicyError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(Cap::Max(U256::ZERO));
    }
    if text.eq_ignore_ascii_case("unlimited") {
        return Ok(Cap::Unlimited);
    }
    let problem = |what: String| PolicyError::invalid("tokens", format!("entry {index}: {what}"));
    if text.len() > 100 {
        return Err(problem(
            "max_amount_per_tx is longer than 100 characters".into(),
        ));
    }
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let unit = unit.trim();
    if unit.is_empty() {
        return Err(problem(format!(
            "max_amount_per_tx `{text}` needs the token's symbol, e.g. `{text}{}`",
            symbol.to_ascii_lowercase()
        )));
    }
    if !unit.eq_ignore_ascii_case(symbol) {
        return Err(problem(format!(
            "max_amount_per_tx `{text}` is in {unit}, not this entry's token {symbol}"
        )));
    }
    parse_units("tokens", number, decimals)
        .map(Cap::Max)
        .map_err(|_| {
            problem(format!(
                "max_amount_per_tx `{text}`: not a number of {symbol} with at most {decimals} decimals"
            ))
        })
}

fn parse_list(
    index: usize,
    what: &'static str,
    entries: &[String],
) -> Result<(bool, BTreeSet<Address>), PolicyError> {
    if entries.len() > MAX_TOKEN_ALLOWLIST {
        return Err(PolicyError::invalid(
            "tokens",
            format!("entry {index}: at most {MAX_TOKEN_ALLOWLIST} entries in {what}"),
        ));
    }
    let mut any = false;
    let mut set = BTreeSet::new();
    for entry in entries {
        if entry == "*" {
            any = true;
        } else {
            let address = Address::parse(what, entry)
                .map_err(|e| PolicyError::invalid("tokens", format!("entry {index}: {e}")))?;
            set.insert(address);
        }
    }
    Ok((any, set))
}

impl TokenRule {
    fn from_proto(
        index: usize,
        rule: &api::TokenRule,
        chain_ids: &[u64],
        kind: RulesFor,
    ) -> Result<Self, PolicyError> {
        if !chain_ids.contains(&rule.chain_id) {
            return Err(PolicyError::invalid(
                "tokens",
                format!(
                    "entry {index}: chain {} is not in allowed_chain_ids",
                    rule.chain_id
                ),
            ));
        }
        if rule.decimals > MAX_DECIMALS {
            return Err(PolicyError::invalid(
                "tokens",
                format!("entry {index}: decimals must be at most {MAX_DECIMALS}"),
            ));
        }
        let address = Address::parse("address", &rule.address)
            .map_err(|e| PolicyError::invalid("tokens", format!("entry {index}: {e}")))?;
        let symbol = parse_symbol(index, &rule.symbol)?;
        let (any_recipient, recipients) =
            parse_list(index, "allowed_recipients", &rule.allowed_recipients)?;
        let (any_spender, spenders) =
            parse_list(index, "allowed_spenders", &rule.allowed_spenders)?;
        // Empty (and "unlimited"): never parked.
        let require_approval_above = if rule.require_approval_above.trim().is_empty() {
            None
        } else {
            match parse_token_amount(index, &rule.require_approval_above, &symbol, rule.decimals)? {
                Cap::Unlimited => None,
                Cap::Max(limit) => Some(limit),
            }
        };
        Ok(TokenRule {
            chain_id: rule.chain_id,
            address,
            decimals: rule.decimals,
            max_amount_per_tx: parse_token_amount(
                index,
                &rule.max_amount_per_tx,
                &symbol,
                rule.decimals,
            )?,
            // As for ether: on a signing key's policy empty is no cap, on an API key 0.
            max_amount_per_24h: match kind {
                RulesFor::SigningKey if rule.max_amount_per_24h.trim().is_empty() => Cap::Unlimited,
                _ => parse_token_amount(index, &rule.max_amount_per_24h, &symbol, rule.decimals)?,
            },
            symbol,
            any_recipient,
            recipients,
            any_spender,
            spenders,
            allow_unlimited_approval: rule.allow_unlimited_approval,
            require_approval_above,
        })
    }

    fn wire_amount(&self, cap: Cap) -> String {
        match cap {
            Cap::Unlimited => "unlimited".into(),
            // "250 USDC": the space keeps a symbol that starts with a digit ("1INCH") apart
            // from the number.
            Cap::Max(max) => format_units(max, self.decimals, &self.symbol),
        }
    }

    pub(crate) fn to_proto(&self, kind: RulesFor) -> api::TokenRule {
        let list = |any: bool, set: &BTreeSet<Address>| {
            let mut out: Vec<String> = set.iter().map(Address::to_checksum).collect();
            if any {
                out.insert(0, "*".into());
            }
            out
        };
        api::TokenRule {
            chain_id: self.chain_id,
            address: self.address.to_checksum(),
            decimals: self.decimals,
            symbol: self.symbol.clone(),
            max_amount_per_tx: self.wire_amount(self.max_amount_per_tx),
            max_amount_per_24h: match (kind, self.max_amount_per_24h) {
                (RulesFor::SigningKey, Cap::Unlimited) => String::new(),
                (_, cap) => self.wire_amount(cap),
            },
            allowed_recipients: list(self.any_recipient, &self.recipients),
            allowed_spenders: list(self.any_spender, &self.spenders),
            allow_unlimited_approval: self.allow_unlimited_approval,
            require_approval_above: self
                .require_approval_above
                .map(|limit| self.wire_amount(Cap::Max(limit)))
                .unwrap_or_default(),
        }
    }
}

/// Parses a policy's token list: bounded, one entry per (chain, contract), symbols unique per
/// chain (so that "250usdc" can only mean one token there).
pub(crate) fn parse_tokens(
    tokens: &[api::TokenRule],
    chain_ids: &[u64],
    kind: RulesFor,
) -> Result<Vec<TokenRule>, PolicyError> {
    if tokens.len() > MAX_TOKENS {
        return Err(PolicyError::invalid(
            "tokens",
            format!("at most {MAX_TOKENS} entries"),
        ));
    }
    let mut parsed: Vec<TokenRule> = Vec::with_capacity(tokens.len());
    for (index, rule) in tokens.iter().enumerate() {
        let token = TokenRule::from_proto(index, rule, chain_ids, kind)?;
        if let Some(earlier) = parsed.iter().position(|t| {
            t.chain_id == token.chain_id
                && (t.address == token.address || t.symbol.eq_ignore_ascii_case(&token.symbol))
        }) {
            return Err(PolicyError::invalid(
                "tokens",
                format!(
                    "entries {earlier} and {index} name the same token or the same symbol on chain {}: an amount like `1{}` would be ambiguous",
                    token.chain_id,
                    token.symbol.to_ascii_lowercase()
                ),
            ));
        }
        parsed.push(token);
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use shardsign_eth::erc20::{APPROVE, INCREASE_ALLOWANCE, TRANSFER, TRANSFER_FROM};
    use shardsign_eth::{Eip1559Transaction, UnsignedTransaction};

    use super::*;
    use crate::{Rules, RulesFor};

    const USDC: &str = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48";
    const ALICE: [u8; 20] = [0xa1; 20];
    const BOB: [u8; 20] = [0xb0; 20];
    const ROUTER: [u8; 20] = [0x0e; 20];

    fn hex_address(bytes: [u8; 20]) -> String {
        Address(bytes).to_checksum()
    }

    fn policy() -> api::Policy {
        api::Policy {
            allowed_chain_ids: vec![1, 8453],
            max_value_per_tx: "0".into(),
            max_fee_per_gas: "unlimited".into(),
            max_total_fee: "unlimited".into(),
            tokens: vec![api::TokenRule {
                chain_id: 1,
                address: USDC.into(),
                decimals: 6,
                symbol: "USDC".into(),
                max_amount_per_tx: "250usdc".into(),
                allowed_recipients: vec![hex_address(ALICE)],
                allowed_spenders: vec![hex_address(ROUTER)],
                allow_unlimited_approval: false,
                max_amount_per_24h: "unlimited".into(),
                require_approval_above: String::new(),
            }],
            ..Default::default()
        }
    }

    fn word(address: [u8; 20]) -> Vec<u8> {
        [&[0u8; 12][..], &address].concat()
    }

    fn units(value: u64) -> Vec<u8> {
        U256::from(value).to_be_bytes::<32>().to_vec()
    }

    fn call(chain_id: u64, to: &str, data: Vec<u8>) -> UnsignedTransaction {
        UnsignedTransaction::Eip1559(Eip1559Transaction {
            chain_id,
            gas_limit: 60_000,
            to: Some(Address::parse("to", to).unwrap()),
            data,
            ..Default::default()
        })
    }

    fn usdc(data: Vec<u8>) -> UnsignedTransaction {
        call(1, USDC, data)
    }

    fn verdict(rules: &Rules, tx: &UnsignedTransaction) -> Result<(), &'static str> {
        rules.check_transaction(tx).map_err(|refusal| refusal.rule)
    }

    #[test]
    fn each_rule_allows_at_its_limit_and_refuses_one_unit_over() {
        let rules = Rules::from_proto(&policy(), RulesFor::SigningKey).unwrap();
        let limit = 250_000_000u64;
        let table: Vec<(&str, Vec<u8>, Result<(), &'static str>)> = vec![
            (
                "transfer at the cap",
                [&TRANSFER[..], &word(ALICE), &units(limit)].concat(),
                Ok(()),
            ),
            (
                "transfer one unit over",
                [&TRANSFER[..], &word(ALICE), &units(limit + 1)].concat(),
                Err("tokens.max_amount_per_tx"),
            ),
            (
                "transfer to an unlisted recipient",
                [&TRANSFER[..], &word(BOB), &units(1)].concat(),
                Err("tokens.allowed_recipients"),
            ),
            (
                "transferFrom at the cap",
                [&TRANSFER_FROM[..], &word(BOB), &word(ALICE), &units(limit)].concat(),
                Ok(()),
            ),
            (
                "transferFrom one unit over",
                [
                    &TRANSFER_FROM[..],
                    &word(BOB),
                    &word(ALICE),
                    &units(limit + 1),
                ]
                .concat(),
                Err("tokens.max_amount_per_tx"),
            ),
            (
                "transferFrom to an unlisted recipient",
                [&TRANSFER_FROM[..], &word(ALICE), &word(BOB), &units(1)].concat(),
                Err("tokens.allowed_recipients"),
            ),
            (
                "approve at the cap",
                [&APPROVE[..], &word(ROUTER), &units(limit)].concat(),
                Ok(()),
            ),
            (
                "approve one unit over",
                [&APPROVE[..], &word(ROUTER), &units(limit + 1)].concat(),
                Err("tokens.max_amount_per_tx"),
            ),
            (
                "approve an unlisted spender",
                [&APPROVE[..], &word(BOB), &units(1)].concat(),
                Err("tokens.allowed_spenders"),
            ),
            (
                "revoke any spender",
                [&APPROVE[..], &word(BOB), &units(0)].concat(),
                Ok(()),
            ),
            (
                "approve unlimited",
                [&APPROVE[..], &word(ROUTER), &[0xff; 32]].concat(),
                Err("tokens.allow_unlimited_approval"),
            ),
            (
                "increaseAllowance at the cap",
                [&INCREASE_ALLOWANCE[..], &word(ROUTER), &units(limit)].concat(),
                Ok(()),
            ),
            (
                "increaseAllowance one unit over",
                [&INCREASE_ALLOWANCE[..], &word(ROUTER), &units(limit + 1)].concat(),
                Err("tokens.max_amount_per_tx"),
            ),
            (
                "a short transfer",
                [&TRANSFER[..], &word(ALICE), &units(1)[..31]].concat(),
                Err("tokens"),
            ),
            (
                "a dirty address word",
                [&TRANSFER[..], &[1u8; 32][..], &units(1)].concat(),
                Err("tokens"),
            ),
            (
                "another method of the token",
                [&[0x40, 0xc1, 0x0f, 0x19][..], &word(ALICE), &units(1)].concat(),
                Err("tokens"),
            ),
            (
                "data shorter than a selector",
                vec![0xa9, 0x05],
                Err("tokens"),
            ),
        ];
        for (case, data, expected) in table {
            assert_eq!(verdict(&rules, &usdc(data)), expected, "{case}");
        }
        // A plain transfer of ether to the token contract is a native transfer, not a token call.
        assert_eq!(
            verdict(&rules, &usdc(Vec::new())),
            Err("allowed_recipients")
        );
        // The same contract on another chain is not the listed token: the generic rules apply.
        let elsewhere = call(
            8453,
            USDC,
            [&TRANSFER[..], &word(ALICE), &units(1)].concat(),
        );
        assert_eq!(verdict(&rules, &elsewhere), Err("allowed_contract_calls"));
    }

    #[test]
    fn refusals_speak_in_the_tokens_units() {
        let rules = Rules::from_proto(&policy(), RulesFor::SigningKey).unwrap();
        let over = usdc([&TRANSFER[..], &word(ALICE), &units(250_000_001)].concat());
        let refusal = rules.check_transaction(&over).unwrap_err();
        assert_eq!(
            refusal.to_string(),
            format!(
                "policy tokens.max_amount_per_tx: transfer of 250.000001 USDC > 250 USDC (USDC ({}) on chain 1)",
                Address::parse("a", USDC).unwrap().to_checksum()
            )
        );
        let short = usdc([&TRANSFER[..], &word(ALICE)].concat());
        assert!(
            rules
                .check_transaction(&short)
                .unwrap_err()
                .detail
                .contains("transfer: calldata is 36 bytes; the call takes exactly 68"),
        );
    }

    #[test]
    fn other_methods_need_an_exact_contract_call_entry_and_unlimited_needs_saying_so() {
        let mint = [&[0x40, 0xc1, 0x0f, 0x19][..], &word(ALICE), &units(1)].concat();
        let mut with_wildcard = policy();
        with_wildcard.allowed_contract_calls = vec![api::ContractCall {
            to: "*".into(),
            selector: "*".into(),
        }];
        let rules = Rules::from_proto(&with_wildcard, RulesFor::SigningKey).unwrap();
        assert_eq!(verdict(&rules, &usdc(mint.clone())), Err("tokens"));
        let mut exact = policy();
        exact.allowed_contract_calls = vec![api::ContractCall {
            to: USDC.into(),
            selector: "0x40c10f19".into(),
        }];
        exact.tokens[0].allow_unlimited_approval = true;
        exact.tokens[0].max_amount_per_tx = "unlimited".into();
        let rules = Rules::from_proto(&exact, RulesFor::SigningKey).unwrap();
        assert_eq!(verdict(&rules, &usdc(mint)), Ok(()));
        let unlimited = [&APPROVE[..], &word(ROUTER), &[0xff; 32]].concat();
        assert_eq!(verdict(&rules, &usdc(unlimited)), Ok(()));
    }

    #[test]
    fn what_a_call_spends_and_what_an_empty_24_hour_cap_means() {
        let mut with_empty = policy();
        with_empty.tokens[0].max_amount_per_24h = String::new();
        let key = Rules::from_proto(&with_empty, RulesFor::SigningKey).unwrap();
        assert_eq!(key.tokens[0].max_amount_per_24h, Cap::Unlimited);
        let api = Rules::from_proto(&with_empty, RulesFor::ApiKey).unwrap();
        assert_eq!(api.tokens[0].max_amount_per_24h, Cap::Max(U256::ZERO));
        with_empty.tokens[0].max_amount_per_24h = "1000.5 usdc".into();
        let rules = Rules::from_proto(&with_empty, RulesFor::ApiKey).unwrap();
        assert_eq!(
            rules.tokens[0].max_amount_per_24h,
            Cap::Max(U256::from(1_000_500_000u64))
        );

        let spend = |tx: UnsignedTransaction| {
            let payload = Payload::Transaction(tx);
            token_spend(&rules, &payload).map(|(token, amount)| (token.symbol.clone(), amount))
        };
        let usdc_amount = |amount: u64| Some(("USDC".to_string(), U256::from(amount)));
        assert_eq!(
            spend(usdc([&TRANSFER[..], &word(ALICE), &units(7)].concat())),
            usdc_amount(7)
        );
        assert_eq!(
            spend(usdc(
                [&TRANSFER_FROM[..], &word(BOB), &word(ALICE), &units(8)].concat()
            )),
            usdc_amount(8)
        );
        assert_eq!(
            spend(usdc([&APPROVE[..], &word(ROUTER), &units(9)].concat())),
            usdc_amount(9)
        );
        assert_eq!(
            spend(usdc(
                [&INCREASE_ALLOWANCE[..], &word(ROUTER), &units(10)].concat()
            )),
            usdc_amount(10)
        );
        // Not a token spend: another method, malformed data, ether, another chain.
        assert_eq!(spend(usdc(vec![0x40, 0xc1, 0x0f, 0x19])), None);
        assert_eq!(spend(usdc([&TRANSFER[..], &word(ALICE)].concat())), None);
        assert_eq!(spend(usdc(Vec::new())), None);
        assert_eq!(
            spend(call(
                8453,
                USDC,
                [&TRANSFER[..], &word(ALICE), &units(7)].concat()
            )),
            None
        );
        let message = Payload::PersonalMessage(b"hello".to_vec());
        assert!(token_spend(&rules, &message).is_none());
    }

    const NOW: u64 = 1_800_000_000;

    fn domain_types() -> serde_json::Value {
        serde_json::json!([
            {"name": "name", "type": "string"}, {"name": "version", "type": "string"},
            {"name": "chainId", "type": "uint256"}, {"name": "verifyingContract", "type": "address"}
        ])
    }

    fn eip3009(to: [u8; 20], value: u64, valid_before: u64) -> Payload {
        let document = serde_json::json!({
            "types": {
                "EIP712Domain": domain_types(),
                "TransferWithAuthorization": [
                    {"name": "from", "type": "address"}, {"name": "to", "type": "address"},
                    {"name": "value", "type": "uint256"}, {"name": "validAfter", "type": "uint256"},
                    {"name": "validBefore", "type": "uint256"}, {"name": "nonce", "type": "bytes32"}]
            },
            "primaryType": "TransferWithAuthorization",
            "domain": {"name": "USD Coin", "version": "2", "chainId": 1, "verifyingContract": USDC},
            "message": {"from": hex_address(BOB), "to": hex_address(to), "value": value.to_string(),
                        "validAfter": 0, "validBefore": valid_before.to_string(),
                        "nonce": format!("0x{}", "11".repeat(32))}
        });
        Payload::typed_data("typed_data", document.to_string().into_bytes()).unwrap()
    }

    fn permit(spender: [u8; 20], value: &str, deadline: &str, value_type: &str) -> Payload {
        let document = serde_json::json!({
            "types": {
                "EIP712Domain": domain_types(),
                "Permit": [
                    {"name": "owner", "type": "address"}, {"name": "spender", "type": "address"},
                    {"name": "value", "type": value_type}, {"name": "nonce", "type": "uint256"},
                    {"name": "deadline", "type": "uint256"}]
            },
            "primaryType": "Permit",
            "domain": {"name": "USD Coin", "version": "2", "chainId": 1, "verifyingContract": USDC},
            "message": {"owner": hex_address(BOB), "spender": hex_address(spender), "value": value,
                        "nonce": 0, "deadline": deadline}
        });
        Payload::typed_data("typed_data", document.to_string().into_bytes()).unwrap()
    }

    #[test]
    fn permits_and_transfer_authorizations_meet_the_tokens_rules() {
        let mut with_typed = policy();
        with_typed.allowed_typed_data = vec![api::TypedDataRule {
            chain_id: 1,
            verifying_contract: USDC.into(),
            name: String::new(),
            version: String::new(),
            primary_types: vec!["TransferWithAuthorization".into(), "Permit".into()],
            conditions: Vec::new(),
        }];
        with_typed.tokens[0].max_amount_per_24h = "1000usdc".into();
        let rules = Rules::from_proto(&with_typed, RulesFor::SigningKey).unwrap();
        assert_eq!(rules.max_permit_validity_secs, DEFAULT_PERMIT_VALIDITY_SECS);
        let limit = 250_000_000u64;
        let hour = NOW + 3600;
        let verdict = |payload: &Payload| rules.check_at(payload, NOW).map_err(|r| r.rule);
        let table: Vec<(&str, Payload, Result<(), &'static str>)> = vec![
            (
                "transfer at the cap, valid an hour",
                eip3009(ALICE, limit, hour),
                Ok(()),
            ),
            (
                "transfer one unit over",
                eip3009(ALICE, limit + 1, hour),
                Err("tokens.max_amount_per_tx"),
            ),
            (
                "transfer to a stranger",
                eip3009(BOB, 1, hour),
                Err("tokens.allowed_recipients"),
            ),
            (
                "valid a second too long",
                eip3009(ALICE, 1, hour + 1),
                Err("max_permit_validity_secs"),
            ),
            (
                "permit at the cap",
                permit(ROUTER, "250000000", &hour.to_string(), "uint256"),
                Ok(()),
            ),
            (
                "permit one unit over",
                permit(ROUTER, "250000001", &hour.to_string(), "uint256"),
                Err("tokens.max_amount_per_tx"),
            ),
            (
                "permit for a stranger",
                permit(BOB, "1", &hour.to_string(), "uint256"),
                Err("tokens.allowed_spenders"),
            ),
            (
                "unlimited permit",
                permit(ROUTER, &U256::MAX.to_string(), &hour.to_string(), "uint256"),
                Err("tokens.allow_unlimited_approval"),
            ),
            (
                "permit that never expires",
                permit(ROUTER, "1", &U256::MAX.to_string(), "uint256"),
                Err("max_permit_validity_secs"),
            ),
            (
                "a look-alike permit",
                permit(ROUTER, "0x01", &hour.to_string(), "bytes1"),
                Err("tokens"),
            ),
        ];
        for (case, payload, expected) in &table {
            assert_eq!(verdict(payload), *expected, "{case}");
        }
        // What they count against the token's 24 h cap.
        let spent = |payload: &Payload| token_spend(&rules, payload).map(|(_, amount)| amount);
        assert_eq!(spent(&table[0].1), Some(U256::from(limit)));
        assert_eq!(spent(&table[4].1), Some(U256::from(limit)));
        assert_eq!(spent(&table[9].1), None);
        // A longer window when the policy says so.
        with_typed.max_permit_validity_secs = 86_400;
        let rules = Rules::from_proto(&with_typed, RulesFor::SigningKey).unwrap();
        assert!(
            rules
                .check_at(&eip3009(ALICE, 1, NOW + 86_400), NOW)
                .is_ok()
        );
        with_typed.max_permit_validity_secs = MAX_PERMIT_VALIDITY_SECS + 1;
        assert!(Rules::from_proto(&with_typed, RulesFor::SigningKey).is_err());
    }

    const PERMIT2_ADDRESS: &str = "0x000000000022D473030F116dDEE9F6B43aC78BA3";

    /// A Permit2 `PermitSingle` (one element) or `PermitBatch` (`elements`) granting `spender`.
    fn permit2(
        elements: &[(&str, &str)],
        spender: [u8; 20],
        deadline: u64,
        batch: bool,
    ) -> Payload {
        let detail = |(token, amount): &(&str, &str)| serde_json::json!({"token": token, "amount": amount, "expiration": 2_000_000_000u64, "nonce": 0});
        let (primary, details_type, details) = if batch {
            (
                "PermitBatch",
                "PermitDetails[]",
                serde_json::json!(elements.iter().map(detail).collect::<Vec<_>>()),
            )
        } else {
            ("PermitSingle", "PermitDetails", detail(&elements[0]))
        };
        let document = serde_json::json!({
            "types": {
                "EIP712Domain": [{"name": "name", "type": "string"}, {"name": "chainId", "type": "uint256"},
                                 {"name": "verifyingContract", "type": "address"}],
                "PermitDetails": [{"name": "token", "type": "address"}, {"name": "amount", "type": "uint160"},
                                  {"name": "expiration", "type": "uint48"}, {"name": "nonce", "type": "uint48"}],
                primary: [{"name": "details", "type": details_type}, {"name": "spender", "type": "address"},
                          {"name": "sigDeadline", "type": "uint256"}]
            },
            "primaryType": primary,
            "domain": {"name": "Permit2", "chainId": 1, "verifyingContract": PERMIT2_ADDRESS},
            "message": {"details": details, "spender": hex_address(spender), "sigDeadline": deadline.to_string()}
        });
        Payload::typed_data("typed_data", document.to_string().into_bytes()).unwrap()
    }

    #[test]
    fn permit2_grants_meet_the_rules_of_every_token_they_name() {
        let mut with_permit2 = policy();
        with_permit2.allowed_typed_data = vec![api::TypedDataRule {
            chain_id: 1,
            verifying_contract: PERMIT2_ADDRESS.into(),
            name: String::new(),
            version: String::new(),
            primary_types: vec!["PermitSingle".into(), "PermitBatch".into()],
            conditions: Vec::new(),
        }];
        let mut dai = with_permit2.tokens[0].clone();
        dai.address = hex_address(BOB);
        dai.symbol = "DAI".into();
        dai.max_amount_per_tx = "250dai".into();
        dai.max_amount_per_24h = "unlimited".into();
        with_permit2.tokens.push(dai);
        let rules = Rules::from_proto(&with_permit2, RulesFor::SigningKey).unwrap();
        let hour = NOW + 3600;
        let unlimited = permit2_unlimited().to_string();
        let stranger = hex_address(ALICE);
        let table: Vec<(&str, Payload, Result<(), &'static str>)> = vec![
            (
                "single at the cap",
                permit2(&[(USDC, "250000000")], ROUTER, hour, false),
                Ok(()),
            ),
            (
                "single one over",
                permit2(&[(USDC, "250000001")], ROUTER, hour, false),
                Err("tokens.max_amount_per_tx"),
            ),
            (
                "single unlimited",
                permit2(&[(USDC, &unlimited)], ROUTER, hour, false),
                Err("tokens.allow_unlimited_approval"),
            ),
            (
                "single for a stranger",
                permit2(&[(USDC, "1")], BOB, hour, false),
                Err("tokens.allowed_spenders"),
            ),
            (
                "single too long",
                permit2(&[(USDC, "1")], ROUTER, hour + 1, false),
                Err("max_permit_validity_secs"),
            ),
            (
                "single of an unlisted token",
                permit2(&[(&stranger, "1")], ROUTER, hour, false),
                Err("tokens"),
            ),
            (
                "batch summed at the cap",
                permit2(
                    &[(USDC, "200000000"), (USDC, "50000000")],
                    ROUTER,
                    hour,
                    true,
                ),
                Ok(()),
            ),
            (
                "batch summed one over",
                permit2(
                    &[(USDC, "200000000"), (USDC, "50000001")],
                    ROUTER,
                    hour,
                    true,
                ),
                Err("tokens.max_amount_per_tx"),
            ),
            (
                "batch over two tokens",
                permit2(&[(USDC, "1"), (&hex_address(BOB), "1")], ROUTER, hour, true),
                Err("tokens"),
            ),
            (
                "batch with an unlisted token",
                permit2(&[(USDC, "1"), (&stranger, "1")], ROUTER, hour, true),
                Err("tokens"),
            ),
        ];
        for (case, payload, expected) in &table {
            assert_eq!(
                rules.check_at(payload, NOW).map_err(|r| r.rule),
                *expected,
                "{case}"
            );
        }
        let spent = |payload: &Payload| {
            token_spend(&rules, payload).map(|(t, amount)| (t.symbol.clone(), amount))
        };
        assert_eq!(
            spent(&table[6].1),
            Some(("USDC".into(), U256::from(250_000_000u64)))
        );
        assert_eq!(spent(&table[2].1), Some(("USDC".into(), U256::MAX)));
        assert_eq!(spent(&table[8].1), None);
        let two_tokens = rules.check_at(&table[8].1, NOW).unwrap_err();
        assert!(
            two_tokens.detail.contains("more than one listed token"),
            "{two_tokens}"
        );
    }

    #[test]
    fn bad_token_lists_name_the_problem() {
        type Change = Box<dyn Fn(&mut api::Policy)>;
        let cases: Vec<(Change, &str)> = vec![
            (
                Box::new(|p| p.tokens[0].max_amount_per_tx = "250".into()),
                "needs the token's symbol",
            ),
            (
                Box::new(|p| p.tokens[0].max_amount_per_tx = "250dai".into()),
                "is in dai, not this entry's token USDC",
            ),
            (
                Box::new(|p| p.tokens[0].max_amount_per_tx = "0.0000001usdc".into()),
                "at most 6 decimals",
            ),
            (
                Box::new(|p| p.tokens[0].chain_id = 10),
                "chain 10 is not in allowed_chain_ids",
            ),
            (
                Box::new(|p| p.tokens[0].decimals = 37),
                "decimals must be at most 36",
            ),
            (
                Box::new(|p| p.tokens[0].symbol = "US DC".into()),
                "symbol must be",
            ),
            (Box::new(|p| p.tokens[0].address = "0x12".into()), "address"),
            (
                Box::new(|p| p.tokens[0].allowed_spenders = vec!["nobody".into()]),
                "entry 0: allowed_spenders: ",
            ),
            (
                Box::new(|p| {
                    let mut twin = p.tokens[0].clone();
                    twin.address = hex_address(BOB);
                    twin.symbol = "usdc".into();
                    p.tokens.push(twin);
                }),
                "entries 0 and 1 name the same token or the same symbol on chain 1",
            ),
            (
                Box::new(|p| p.tokens = vec![p.tokens[0].clone(); MAX_TOKENS + 1]),
                "at most 64 entries",
            ),
        ];
        for (change, words) in cases {
            let mut bad = policy();
            change(&mut bad);
            let error = Rules::from_proto(&bad, RulesFor::ApiKey)
                .unwrap_err()
                .to_string();
            assert!(error.starts_with("policy tokens: "), "{error}");
            assert!(error.contains(words), "{error} (wanted {words})");
        }
        // The same symbol on two chains is fine.
        let mut two_chains = policy();
        let mut base = two_chains.tokens[0].clone();
        base.chain_id = 8453;
        two_chains.tokens.push(base);
        // A symbol that starts with a digit reads back: the written form keeps a space.
        let mut inch = two_chains.tokens[0].clone();
        inch.address = hex_address(BOB);
        inch.symbol = "1INCH".into();
        inch.decimals = 18;
        inch.max_amount_per_tx = "0.5 1inch".into();
        two_chains.tokens.push(inch);
        let rules = Rules::from_proto(&two_chains, RulesFor::ApiKey).unwrap();
        assert_eq!(
            Rules::from_proto(&rules.to_proto(RulesFor::ApiKey), RulesFor::ApiKey).unwrap(),
            rules
        );
    }
}
