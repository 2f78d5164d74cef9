//! Transactions as the cross-check script's JSON: our field names, decimal-string numbers and
//! 0x-hex bytes, so that nothing is lost to floating point on either side.

use serde_json::{Value, json};
use shardsign_eth::{
    AccessListItem, Address, Authorization, Eip1559Transaction, Eip2930Transaction,
    Eip7702Transaction, LegacyTransaction, Signature, SignedAuthorization, U256,
    UnsignedTransaction, parse_u64, parse_u256,
};

pub fn hex0x(bytes: &[u8]) -> String {
    format!("0x{}", hex::encode(bytes))
}

pub fn unhex(text: &str) -> Vec<u8> {
    hex::decode(text.trim_start_matches("0x")).expect("hex from the cross-check")
}

fn access_list_json(list: &[AccessListItem]) -> Value {
    list.iter()
        .map(|item| {
            json!({
                "address": hex0x(&item.address.0),
                "storage_keys": item.storage_keys.iter().map(|k| hex0x(k)).collect::<Vec<_>>(),
            })
        })
        .collect()
}

fn authorization_list_json(list: &[SignedAuthorization]) -> Value {
    list.iter()
        .map(|tuple| {
            json!({
                "chain_id": tuple.authorization.chain_id.to_string(),
                "address": hex0x(&tuple.authorization.address.0),
                "nonce": tuple.authorization.nonce.to_string(),
                "y_parity": tuple.signature.recovery_id().to_u8(),
                "r": hex0x(&tuple.signature.r()),
                "s": hex0x(&tuple.signature.s()),
            })
        })
        .collect()
}

/// The EIP-1559 fee fields (also a set-code transaction's).
fn fee_caps(fields: &mut serde_json::Map<String, Value>, max_fee: &U256, tip: &U256) {
    fields.insert("max_fee_per_gas".into(), max_fee.to_string().into());
    fields.insert("max_priority_fee_per_gas".into(), tip.to_string().into());
}

pub fn to_json(tx: &UnsignedTransaction) -> Value {
    let to = tx.to().map(|a| hex0x(&a.0));
    let mut out = json!({
        "chain_id": tx.chain_id().to_string(),
        "nonce": tx.nonce().to_string(),
        "gas_limit": tx.gas_limit().to_string(),
        "value": tx.value().to_string(),
        "data": hex0x(tx.data()),
        "to": to,
    });
    let fields = out.as_object_mut().expect("object");
    match tx {
        UnsignedTransaction::Legacy(tx) => {
            fields.insert("type".into(), "legacy".into());
            fields.insert("gas_price".into(), tx.gas_price.to_string().into());
        }
        UnsignedTransaction::Eip2930(tx) => {
            fields.insert("type".into(), "eip2930".into());
            fields.insert("gas_price".into(), tx.gas_price.to_string().into());
            fields.insert("access_list".into(), access_list_json(&tx.access_list));
        }
        UnsignedTransaction::Eip1559(tx) => {
            fields.insert("type".into(), "eip1559".into());
            fee_caps(fields, &tx.max_fee_per_gas, &tx.max_priority_fee_per_gas);
            fields.insert("access_list".into(), access_list_json(&tx.access_list));
        }
        UnsignedTransaction::Eip7702(tx) => {
            fields.insert("type".into(), "eip7702".into());
            fee_caps(fields, &tx.max_fee_per_gas, &tx.max_priority_fee_per_gas);
            fields.insert("access_list".into(), access_list_json(&tx.access_list));
            fields.insert(
                "authorization_list".into(),
                authorization_list_json(&tx.authorization_list),
            );
        }
    }
    out
}

fn text<'a>(value: &'a Value, field: &str) -> &'a str {
    value[field]
        .as_str()
        .unwrap_or_else(|| panic!("field {field} missing in {value}"))
}

fn access_list_from(value: &Value) -> Vec<AccessListItem> {
    value["access_list"]
        .as_array()
        .expect("access_list")
        .iter()
        .map(|item| AccessListItem {
            address: Address::parse("address", text(item, "address")).unwrap(),
            storage_keys: item["storage_keys"]
                .as_array()
                .expect("storage_keys")
                .iter()
                .map(|k| unhex(k.as_str().unwrap()).try_into().unwrap())
                .collect(),
        })
        .collect()
}

fn authorization_list_from(value: &Value) -> Vec<SignedAuthorization> {
    value["authorization_list"]
        .as_array()
        .expect("authorization_list")
        .iter()
        .map(|tuple| SignedAuthorization {
            authorization: Authorization {
                chain_id: parse_u64("chain_id", text(tuple, "chain_id")).unwrap(),
                address: Address::parse("address", text(tuple, "address")).unwrap(),
                nonce: parse_u64("nonce", text(tuple, "nonce")).unwrap(),
            },
            signature: Signature::new(
                unhex(text(tuple, "r")).try_into().unwrap(),
                unhex(text(tuple, "s")).try_into().unwrap(),
                u8::try_from(tuple["y_parity"].as_u64().expect("y_parity")).unwrap(),
            )
            .unwrap(),
        })
        .collect()
}

pub fn from_json(value: &Value) -> UnsignedTransaction {
    let chain_id = parse_u64("chain_id", text(value, "chain_id")).unwrap();
    let nonce = parse_u64("nonce", text(value, "nonce")).unwrap();
    let gas_limit = parse_u64("gas_limit", text(value, "gas_limit")).unwrap();
    let to = value["to"]
        .as_str()
        .map(|t| Address::parse("to", t).unwrap());
    let amount = parse_u256("value", text(value, "value")).unwrap();
    let data = unhex(text(value, "data"));
    match text(value, "type") {
        "legacy" => LegacyTransaction {
            chain_id,
            nonce,
            gas_price: parse_u256("gas_price", text(value, "gas_price")).unwrap(),
            gas_limit,
            to,
            value: amount,
            data,
        }
        .into(),
        "eip2930" => Eip2930Transaction {
            chain_id,
            nonce,
            gas_price: parse_u256("gas_price", text(value, "gas_price")).unwrap(),
            gas_limit,
            to,
            value: amount,
            data,
            access_list: access_list_from(value),
        }
        .into(),
        "eip1559" => Eip1559Transaction {
            chain_id,
            nonce,
            max_priority_fee_per_gas: parse_u256(
                "max_priority_fee_per_gas",
                text(value, "max_priority_fee_per_gas"),
            )
            .unwrap(),
            max_fee_per_gas: parse_u256("max_fee_per_gas", text(value, "max_fee_per_gas")).unwrap(),
            gas_limit,
            to,
            value: amount,
            data,
            access_list: access_list_from(value),
        }
        .into(),
        "eip7702" => Eip7702Transaction {
            chain_id,
            nonce,
            max_priority_fee_per_gas: parse_u256(
                "max_priority_fee_per_gas",
                text(value, "max_priority_fee_per_gas"),
            )
            .unwrap(),
            max_fee_per_gas: parse_u256("max_fee_per_gas", text(value, "max_fee_per_gas")).unwrap(),
            gas_limit,
            to: to.expect("a set-code transaction has a `to`"),
            value: amount,
            data,
            access_list: access_list_from(value),
            authorization_list: authorization_list_from(value),
        }
        .into(),
        other => panic!("unknown transaction type {other}"),
    }
}
