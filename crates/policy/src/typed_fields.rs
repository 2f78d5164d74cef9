//! Conditions on the values inside an EIP-712 message, for an allowed domain and primary type:
//! `message.to` equal to an address, `message.value` at most an amount, every
//! `message.details[].token` one of a list. A condition reads the checked document's values
//! (exactly what was hashed, `TypedData::message`); a path that matches no value fails, so a
//! misspelt path refuses rather than allows.

use shardsign_eth::typed_data::{TypedData, Value};
use shardsign_eth::{Address, U256, parse_u256};
use shardsign_proto::v1 as api;

use crate::error::PolicyError;

/// Most conditions in one typed-data entry.
pub const MAX_CONDITIONS: usize = 16;
/// Most values in one `in` condition.
pub const MAX_CONDITION_VALUES: usize = 64;
const MAX_PATH_LEN: usize = 200;
const MAX_VALUE_LEN: usize = 100;

/// How a value is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    In,
    Le,
    Ge,
}

impl Op {
    fn parse(text: &str) -> Option<Op> {
        Some(match text {
            "eq" => Op::Eq,
            "in" => Op::In,
            "le" => Op::Le,
            "ge" => Op::Ge,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Op::Eq => "eq",
            Op::In => "in",
            Op::Le => "le",
            Op::Ge => "ge",
        }
    }
}

/// One condition: every value at `path` (`[]` standing for any array index) must meet it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldCondition {
    pub path: String,
    pub op: Op,
    pub values: Vec<String>,
}

/// Whether a value's path (`message.details[3].token`) is the pattern's (`message.details[].token`).
fn path_matches(pattern: &str, path: &str) -> bool {
    let mut rest = path;
    let mut parts = pattern.split("[]").peekable();
    while let Some(part) = parts.next() {
        let Some(after) = rest.strip_prefix(part) else {
            return false;
        };
        rest = after;
        if parts.peek().is_some() {
            let Some(index) = rest.strip_prefix('[') else {
                return false;
            };
            let digits = index.bytes().take_while(u8::is_ascii_digit).count();
            let Some(after) = index[digits..].strip_prefix(']').filter(|_| digits > 0) else {
                return false;
            };
            rest = after;
        }
    }
    rest.is_empty()
}

/// A signed integer's word made comparable as unsigned (flip the sign bit).
fn signed_key(word: [u8; 32]) -> U256 {
    U256::from_be_bytes(word) ^ (U256::from(1u8) << 255)
}

fn parse_signed(text: &str) -> Option<U256> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let magnitude = parse_u256("condition", digits).ok()?;
    if magnitude >= U256::from(1u8) << 255 && !(negative && magnitude == U256::from(1u8) << 255) {
        return None;
    }
    let word = if negative {
        (!magnitude).wrapping_add(U256::from(1u8))
    } else {
        magnitude
    };
    Some(signed_key(word.to_be_bytes()))
}

/// What a value is, for messages.
fn shown(value: &Value) -> String {
    match value {
        Value::Address(address) => address.to_checksum(),
        Value::Uint(number) => number.to_string(),
        Value::Int(word) => {
            let raw = U256::from_be_bytes(*word);
            if raw.bit(255) {
                format!("-{}", (!raw).wrapping_add(U256::from(1u8)))
            } else {
                raw.to_string()
            }
        }
        Value::Bool(b) => b.to_string(),
        Value::Bytes(bytes) => format!("0x{}", hex::encode(bytes)),
        Value::String(text) => format!(
            "`{}`",
            text.chars().take(40).collect::<String>().escape_default()
        ),
    }
}

impl FieldCondition {
    pub fn from_proto(condition: &api::FieldCondition, entry: usize) -> Result<Self, PolicyError> {
        let problem = |what: String| {
            PolicyError::invalid(
                "allowed_typed_data",
                format!("entry {entry}: conditions: {what}"),
            )
        };
        let path = condition.path.as_str();
        let valid_path = path.len() <= MAX_PATH_LEN
            && path.starts_with("message.")
            && path.len() > "message.".len()
            && path
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '$' | '.' | '[' | ']'))
            && path.replace("[]", "").chars().all(|c| c != '[' && c != ']')
            && !path.contains("..")
            && !path.ends_with('.');
        if !valid_path {
            return Err(problem(format!(
                "path `{}` must be message.<field>[.<field>...], with [] for every array element",
                path.chars().take(60).collect::<String>().escape_default()
            )));
        }
        let op = Op::parse(&condition.op).ok_or_else(|| {
            problem(format!(
                "{path}: op must be eq, in, le or ge, not `{}`",
                condition
                    .op
                    .chars()
                    .take(20)
                    .collect::<String>()
                    .escape_default()
            ))
        })?;
        let count = condition.values.len();
        let count_ok = match op {
            Op::In => (1..=MAX_CONDITION_VALUES).contains(&count),
            _ => count == 1,
        };
        if !count_ok {
            return Err(problem(format!(
                "{path}: {} takes {}",
                op.name(),
                if op == Op::In {
                    "1 to 64 values"
                } else {
                    "exactly one value"
                }
            )));
        }
        if let Some(long) = condition
            .values
            .iter()
            .find(|v| v.len() > MAX_VALUE_LEN || v.chars().any(char::is_control))
        {
            return Err(problem(format!(
                "{path}: a value of {} bytes; at most {MAX_VALUE_LEN}, no control characters",
                long.len()
            )));
        }
        Ok(FieldCondition {
            path: path.to_string(),
            op,
            values: condition.values.clone(),
        })
    }

    pub fn to_proto(&self) -> api::FieldCondition {
        api::FieldCondition {
            path: self.path.clone(),
            op: self.op.name().into(),
            values: self.values.clone(),
        }
    }

    /// Every value at the path meets the condition; `Err` says which did not, and why.
    pub fn check(&self, typed: &TypedData) -> Result<(), String> {
        let mut matched = 0;
        for (path, value) in &typed.message {
            if path_matches(&self.path, path) {
                matched += 1;
                self.check_value(path, value)?;
            }
        }
        if matched == 0 {
            return Err(format!(
                "{}: no such value in the {} message (a condition needs it)",
                self.path, typed.primary_type
            ));
        }
        Ok(())
    }

    fn check_value(&self, path: &str, value: &Value) -> Result<(), String> {
        let unreadable = |what: &str| {
            format!("{path}: the condition's value is not {what} (the field is {what})",)
        };
        // Each value as a comparable number, or as an equality key.
        let holds = match value {
            Value::Uint(number) => {
                let wanted = self
                    .values
                    .iter()
                    .map(|v| parse_u256("condition", v).ok())
                    .collect::<Option<Vec<U256>>>()
                    .ok_or_else(|| unreadable("an unsigned integer"))?;
                self.compare(*number, &wanted)
            }
            Value::Int(word) => {
                let wanted = self
                    .values
                    .iter()
                    .map(|v| parse_signed(v))
                    .collect::<Option<Vec<U256>>>()
                    .ok_or_else(|| unreadable("an integer"))?;
                self.compare(signed_key(*word), &wanted)
            }
            other => {
                if matches!(self.op, Op::Le | Op::Ge) {
                    return Err(format!(
                        "{path}: {} compares integers; the field is {}",
                        self.op.name(),
                        kind(other)
                    ));
                }
                let mut any = false;
                for wanted in &self.values {
                    let equal = match other {
                        Value::Address(address) => Address::parse("condition", wanted)
                            .map(|w| w == *address)
                            .map_err(|_| unreadable("an address"))?,
                        Value::Bool(b) => match wanted.as_str() {
                            "true" => *b,
                            "false" => !*b,
                            _ => return Err(unreadable("true or false")),
                        },
                        Value::Bytes(bytes) => {
                            let decoded = wanted
                                .strip_prefix("0x")
                                .and_then(|h| hex::decode(h).ok())
                                .ok_or_else(|| unreadable("0x hex bytes"))?;
                            decoded == *bytes
                        }
                        Value::String(text) => text == wanted,
                        Value::Uint(_) | Value::Int(_) => false,
                    };
                    any |= equal;
                }
                any
            }
        };
        if holds {
            return Ok(());
        }
        let listed: Vec<&str> = self.values.iter().take(3).map(String::as_str).collect();
        let more = if self.values.len() > 3 { ", ..." } else { "" };
        Err(match self.op {
            Op::Eq => format!("{path}: {} is not {}", shown(value), listed[0]),
            Op::In => format!(
                "{path}: {} is not one of [{}{more}]",
                shown(value),
                listed.join(", ")
            ),
            Op::Le => format!("{path}: {} > {}", shown(value), listed[0]),
            Op::Ge => format!("{path}: {} < {}", shown(value), listed[0]),
        })
    }

    fn compare(&self, value: U256, wanted: &[U256]) -> bool {
        match self.op {
            Op::Eq | Op::In => wanted.contains(&value),
            Op::Le => value <= wanted[0],
            Op::Ge => value >= wanted[0],
        }
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Address(_) => "an address",
        Value::Uint(_) | Value::Int(_) => "an integer",
        Value::Bool(_) => "a bool",
        Value::Bytes(_) => "bytes",
        Value::String(_) => "a string",
    }
}

#[cfg(test)]
mod tests {
    use shardsign_eth::typed_data::Limits;

    use super::*;

    const BOB: &str = "0xbBbBBBBbbBBBbbbBbbBbbbbBBbBbbbbBbBbbBBbB";
    const CAROL: &str = "0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826";

    fn document() -> TypedData {
        let text = serde_json::json!({
            "types": {
                "EIP712Domain": [{"name": "chainId", "type": "uint256"}],
                "Detail": [{"name": "token", "type": "address"}, {"name": "amount", "type": "uint160"}],
                "Order": [{"name": "to", "type": "address"}, {"name": "value", "type": "uint256"},
                          {"name": "delta", "type": "int32"}, {"name": "memo", "type": "string"},
                          {"name": "urgent", "type": "bool"}, {"name": "tag", "type": "bytes4"},
                          {"name": "details", "type": "Detail[]"}]
            },
            "primaryType": "Order",
            "domain": {"chainId": 1},
            "message": {"to": BOB, "value": "250", "delta": -5, "memo": "rent", "urgent": false,
                        "tag": "0xdeadbeef",
                        "details": [{"token": BOB, "amount": 10}, {"token": CAROL, "amount": 20}]}
        })
        .to_string();
        TypedData::parse(text.as_bytes(), &Limits::DEFAULT).unwrap()
    }

    fn condition(path: &str, op: &str, values: &[&str]) -> FieldCondition {
        FieldCondition::from_proto(
            &api::FieldCondition {
                path: path.into(),
                op: op.into(),
                values: values.iter().map(|v| v.to_string()).collect(),
            },
            0,
        )
        .unwrap()
    }

    #[test]
    fn each_op_holds_at_its_limit_and_fails_one_over() {
        let typed = document();
        let bob_lower = BOB.to_lowercase();
        let table: Vec<(&str, &str, Vec<&str>, bool)> = vec![
            ("message.value", "le", vec!["250"], true),
            ("message.value", "le", vec!["249"], false),
            ("message.value", "ge", vec!["250"], true),
            ("message.value", "ge", vec!["251"], false),
            ("message.value", "eq", vec!["0xfa"], true),
            ("message.value", "in", vec!["1", "250"], true),
            ("message.value", "in", vec!["1", "251"], false),
            ("message.delta", "ge", vec!["-5"], true),
            ("message.delta", "ge", vec!["-4"], false),
            ("message.delta", "le", vec!["-5"], true),
            ("message.delta", "le", vec!["-6"], false),
            ("message.to", "eq", vec![BOB], true),
            ("message.to", "eq", vec![CAROL], false),
            ("message.to", "in", vec![CAROL, &bob_lower], true),
            ("message.memo", "eq", vec!["rent"], true),
            ("message.memo", "eq", vec!["Rent"], false),
            ("message.urgent", "eq", vec!["false"], true),
            ("message.urgent", "eq", vec!["true"], false),
            ("message.tag", "eq", vec!["0xdeadbeef"], true),
            ("message.tag", "eq", vec!["0xdeadbeee"], false),
            // Every element of an array.
            ("message.details[].amount", "le", vec!["20"], true),
            ("message.details[].amount", "le", vec!["19"], false),
            ("message.details[].token", "in", vec![BOB, CAROL], true),
            ("message.details[].token", "eq", vec![BOB], false),
            // No such value: refused, never allowed.
            ("message.amount", "le", vec!["1000"], false),
            ("message.details", "le", vec!["1000"], false),
            // Comparing what does not compare.
            ("message.to", "le", vec!["1"], false),
            ("message.value", "eq", vec!["lots"], false),
        ];
        for (path, op, values, holds) in table {
            let result = condition(path, op, &values).check(&typed);
            assert_eq!(result.is_ok(), holds, "{path} {op} {values:?}: {result:?}");
        }
        assert_eq!(
            condition("message.details[].amount", "le", &["19"])
                .check(&typed)
                .unwrap_err(),
            "message.details[1].amount: 20 > 19"
        );
        assert_eq!(
            condition("message.to", "in", &[CAROL])
                .check(&typed)
                .unwrap_err(),
            format!("message.to: {BOB} is not one of [{CAROL}]")
        );
    }

    #[test]
    fn bad_conditions_name_the_problem() {
        let bad = |path: &str, op: &str, values: &[&str]| {
            FieldCondition::from_proto(
                &api::FieldCondition {
                    path: path.into(),
                    op: op.into(),
                    values: values.iter().map(|v| v.to_string()).collect(),
                },
                2,
            )
            .unwrap_err()
            .to_string()
        };
        assert!(bad("to", "eq", &["1"]).contains("entry 2: conditions: path `to`"));
        assert!(bad("message.", "eq", &["1"]).contains("path"));
        assert!(bad("message.a[0]", "eq", &["1"]).contains("path"));
        assert!(bad("message.a..b", "eq", &["1"]).contains("path"));
        assert!(bad("message.a", "lt", &["1"]).contains("op must be eq, in, le or ge"));
        assert!(bad("message.a", "eq", &["1", "2"]).contains("exactly one value"));
        assert!(bad("message.a", "in", &[]).contains("1 to 64 values"));
        let long = "9".repeat(101);
        assert!(bad("message.a", "le", &[&long]).contains("at most 100"));
        assert!(path_matches("message.a[].b[].c", "message.a[0].b[12].c"));
        assert!(!path_matches("message.a[].b", "message.a[].b"));
        assert!(!path_matches("message.a[].b", "message.a[0].bc"));
        assert!(!path_matches("message.a", "message.ab"));
    }
}
