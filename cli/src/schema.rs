//! The published JSON Schema of policy files (`docs/policy.schema.json`) and the check of a file
//! against it before it is parsed, so that an operator's editor and this CLI agree on what a
//! policy file may hold. The validator covers the keywords that schema uses (type, properties,
//! additionalProperties, required, items, min/maxItems, minimum/maximum, maxLength, pattern,
//! enum, anyOf, local $ref); a keyword it does not know is a bug here, refused by a test.

use std::sync::OnceLock;

use regex::Regex;
use serde_json::Value;

/// The schema, as published.
pub const POLICY_SCHEMA: &str = include_str!("../../docs/policy.schema.json");

fn schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA
        .get_or_init(|| serde_json::from_str(POLICY_SCHEMA).expect("the published schema is JSON"))
}

/// Checks a policy file's JSON against the schema; the error names the path of the first value
/// that does not fit (`tokens[0].decimals: 40 is above the maximum 36`).
pub fn check_policy(document: &Value) -> Result<(), String> {
    check(schema(), schema(), document, "policy")
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_u64() || n.is_i64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn check(root: &Value, schema: &Value, value: &Value, path: &str) -> Result<(), String> {
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        let name = reference
            .strip_prefix("#/$defs/")
            .ok_or_else(|| format!("schema: unsupported $ref {reference}"))?;
        let target = root
            .get("$defs")
            .and_then(|defs| defs.get(name))
            .ok_or_else(|| format!("schema: no definition {name}"))?;
        return check(root, target, value, path);
    }
    if let Some(options) = schema.get("anyOf").and_then(Value::as_array) {
        let mut last = String::new();
        for option in options {
            match check(root, option, value, path) {
                Ok(()) => return Ok(()),
                Err(error) => last = error,
            }
        }
        return Err(last);
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        return Err(format!(
            "{path}: {value} is not one of {}",
            Value::from(allowed.clone())
        ));
    }
    if let Some(wanted) = schema.get("type").and_then(Value::as_str)
        && kind(value) != wanted
    {
        return Err(format!("{path}: expected {wanted}, got {}", kind(value)));
    }
    match value {
        Value::Object(entries) => {
            let properties = schema.get("properties").and_then(Value::as_object);
            for required in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if !entries.contains_key(required) {
                    return Err(format!("{path}.{required}: missing"));
                }
            }
            for (key, item) in entries {
                let shown: String = key
                    .chars()
                    .take(40)
                    .collect::<String>()
                    .escape_default()
                    .to_string();
                match properties.and_then(|p| p.get(key)) {
                    Some(property) => check(root, property, item, &format!("{path}.{key}"))?,
                    None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                        return Err(format!("{path}.{shown}: not a field of this object"));
                    }
                    None => {}
                }
            }
        }
        Value::Array(items) => {
            let bound = |name: &str| schema.get(name).and_then(Value::as_u64);
            if let Some(max) = bound("maxItems")
                && items.len() as u64 > max
            {
                return Err(format!("{path}: {} entries; at most {max}", items.len()));
            }
            if let Some(min) = bound("minItems")
                && (items.len() as u64) < min
            {
                return Err(format!("{path}: {} entries; at least {min}", items.len()));
            }
            if let Some(item_schema) = schema.get("items") {
                for (index, item) in items.iter().enumerate() {
                    check(root, item_schema, item, &format!("{path}[{index}]"))?;
                }
            }
        }
        Value::String(text) => {
            if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
                && text.chars().count() as u64 > max
            {
                return Err(format!("{path}: longer than {max} characters"));
            }
            if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
                let regex = Regex::new(pattern).map_err(|e| format!("schema: bad pattern: {e}"))?;
                if !regex.is_match(text) {
                    let shown: String = text.chars().take(60).collect();
                    return Err(format!(
                        "{path}: `{}` does not match {pattern}",
                        shown.escape_default()
                    ));
                }
            }
        }
        Value::Number(number) => {
            if let Some(min) = schema.get("minimum").and_then(Value::as_u64)
                && number.as_u64().is_none_or(|n| n < min)
            {
                return Err(format!("{path}: {number} is below the minimum {min}"));
            }
            if let Some(max) = schema.get("maximum").and_then(Value::as_u64)
                && number.as_u64().is_none_or(|n| n > max)
            {
                return Err(format!("{path}: {number} is above the maximum {max}"));
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use shardsign_policy::file::PolicyFile;
    use shardsign_proto::v1 as api;

    use super::*;

    /// The keywords `check` implements.
    const KNOWN: &[&str] = &[
        "$schema",
        "$id",
        "title",
        "description",
        "type",
        "properties",
        "additionalProperties",
        "required",
        "items",
        "minItems",
        "maxItems",
        "minimum",
        "maximum",
        "maxLength",
        "pattern",
        "enum",
        "anyOf",
        "$ref",
        "$defs",
    ];

    /// Every keyword in the schema is one the validator knows.
    fn keywords(value: &Value, under_properties: bool, found: &mut Vec<String>) {
        if let Value::Object(entries) = value {
            for (key, item) in entries {
                if !under_properties && key != "$defs" {
                    found.push(key.clone());
                }
                let names_fields = key == "properties" || key == "$defs";
                keywords(item, names_fields && !under_properties, found);
            }
        } else if let Value::Array(items) = value {
            for item in items {
                keywords(item, false, found);
            }
        }
    }

    #[test]
    fn the_validator_knows_every_keyword_the_schema_uses() {
        let mut found = Vec::new();
        keywords(schema(), false, &mut found);
        for keyword in found {
            assert!(
                KNOWN.contains(&keyword.as_str()),
                "unknown keyword {keyword}"
            );
        }
    }

    /// A policy with every field set, as the CLI writes it back.
    fn full() -> Value {
        let policy = api::Policy {
            allowed_chain_ids: vec![1],
            max_value_per_tx: "1eth".into(),
            max_value_per_24h: "2eth".into(),
            allowed_recipients: vec!["*".into()],
            allowed_contract_calls: vec![api::ContractCall {
                to: "0x3535353535353535353535353535353535353535".into(),
                selector: "0xa9059cbb".into(),
            }],
            allow_contract_creation: true,
            max_fee_per_gas: "100gwei".into(),
            max_total_fee: "0.01eth".into(),
            requests_per_minute: 60,
            allow_message_signing: true,
            message_rules: Some(api::MessageRules {
                allow_hash_shaped: false,
                allow_binary: false,
                max_len: 1024,
                allowed_prefixes: vec!["example.com".into()],
            }),
            allowed_typed_data: vec![api::TypedDataRule {
                chain_id: 1,
                verifying_contract: "0x3535353535353535353535353535353535353535".into(),
                name: "USD Coin".into(),
                version: "2".into(),
                primary_types: vec!["TransferWithAuthorization".into()],
                conditions: vec![api::FieldCondition {
                    path: "message.details[].amount".into(),
                    op: "le".into(),
                    values: vec!["10".into()],
                }],
            }],
            allowed_delegates: vec!["0x63c0c19a282a1B52b07dD5a65b58948A07DAE32B".into()],
            allow_any_chain_authorization: false,
            tokens: vec![api::TokenRule {
                chain_id: 1,
                address: "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48".into(),
                decimals: 6,
                symbol: "USDC".into(),
                max_amount_per_tx: "250usdc".into(),
                max_amount_per_24h: "1000usdc".into(),
                allowed_recipients: vec!["*".into()],
                allowed_spenders: vec![],
                allow_unlimited_approval: false,
                require_approval_above: "100usdc".into(),
            }],
            max_permit_validity_secs: 900,
            require_approval_above: "1eth".into(),
            approvers: Some(api::Approvers {
                public_keys: vec!["11".repeat(32), "22".repeat(32)],
                quorum: 2,
                valid_secs: 3600,
            }),
        };
        serde_json::to_value(PolicyFile::from(&policy)).unwrap()
    }

    /// The schema names exactly the fields the file format has, at every level: a field added
    /// to the format without the schema (or the other way round) fails here.
    fn same_fields(schema_node: &Value, value: &Value, path: &str) {
        let node = match schema_node.get("$ref").and_then(Value::as_str) {
            Some(reference) => &schema()["$defs"][reference.trim_start_matches("#/$defs/")],
            None => schema_node,
        };
        if let Some(options) = node.get("anyOf").and_then(Value::as_array) {
            if !value.is_null() {
                let object = options
                    .iter()
                    .find(|o| !o.get("type").is_some_and(|t| t == "null"));
                same_fields(object.expect("an object option"), value, path);
            }
            return;
        }
        match value {
            Value::Object(entries) => {
                let properties = node["properties"].as_object().expect("properties");
                let mut schema_keys: Vec<&String> = properties.keys().collect();
                let mut value_keys: Vec<&String> = entries.keys().collect();
                schema_keys.sort();
                value_keys.sort();
                assert_eq!(schema_keys, value_keys, "fields of {path}");
                for (key, item) in entries {
                    same_fields(&properties[key], item, &format!("{path}.{key}"));
                }
            }
            Value::Array(items) => {
                for item in items {
                    same_fields(&node["items"], item, &format!("{path}[]"));
                }
            }
            _ => {}
        }
    }

    #[test]
    fn the_schema_describes_the_file_format_field_for_field() {
        let full = full();
        same_fields(schema(), &full, "policy");
        check_policy(&full).unwrap();
        check_policy(&serde_json::json!({})).unwrap();
    }

    #[test]
    fn files_that_do_not_fit_are_refused_with_the_path() {
        type Change = Box<dyn Fn(&mut Value)>;
        let cases: Vec<(Change, &str)> = vec![
            (
                Box::new(|v| v["max_value"] = "1eth".into()),
                "policy.max_value: not a field",
            ),
            (
                Box::new(|v| v["tokens"][0]["decimals"] = 40.into()),
                "policy.tokens[0].decimals: 40 is above the maximum 36",
            ),
            (
                Box::new(|v| v["allowed_chain_ids"][0] = 0.into()),
                "policy.allowed_chain_ids[0]: 0 is below the minimum 1",
            ),
            (
                Box::new(|v| v["allowed_chain_ids"][0] = (-1).into()),
                "policy.allowed_chain_ids[0]: -1 is below the minimum 1",
            ),
            (
                Box::new(|v| v["allowed_recipients"][0] = "bob".into()),
                "policy.allowed_recipients[0]: `bob` does not match",
            ),
            (
                Box::new(|v| v["allowed_typed_data"][0]["conditions"][0]["op"] = "lt".into()),
                "policy.allowed_typed_data[0].conditions[0].op: \"lt\" is not one of",
            ),
            (
                Box::new(|v| v["allow_contract_creation"] = "yes".into()),
                "policy.allow_contract_creation: expected boolean, got string",
            ),
            (
                Box::new(|v| {
                    v["allowed_contract_calls"][0]
                        .as_object_mut()
                        .unwrap()
                        .remove("selector")
                        .map(drop)
                        .unwrap_or(())
                }),
                "policy.allowed_contract_calls[0].selector: missing",
            ),
            (
                Box::new(|v| v["message_rules"] = 7.into()),
                "policy.message_rules: expected object, got integer",
            ),
        ];
        for (change, words) in cases {
            let mut value = full();
            change(&mut value);
            let error = check_policy(&value).unwrap_err();
            assert!(error.contains(words), "{error} (wanted {words})");
        }
    }
}
