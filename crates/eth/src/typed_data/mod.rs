//! EIP-712 typed data, as `eth_signTypedData_v4` sends it: `{types, primaryType, domain,
//! message}` in JSON. The whole document is parsed and every value checked against its declared
//! type before the hash is computed; no hash is ever taken from outside.
//!
//! Strict where wallets are lenient, because a value two readers see differently is how a signer
//! is tricked: a repeated JSON key, an unknown or recursive type, a missing or extra field, an
//! integer outside its width, a `bytesN` of another length, a float where an integer belongs, a
//! mixed-case address with a wrong checksum, and anything over the size limits are refused, each
//! with the path of the offending field (`message.details.amount: ... does not fit uint160`).
//! Integers are JSON integers within 64 bits or strings (decimal, or `0x` hex; a negative `intN`
//! in decimal with `-`).
//! `EIP712Domain` must be declared with the standard fields in the standard order (a subset of
//! name, version, chainId, verifyingContract, salt), and at least one of them.

mod json;
mod types;

use ruint::aliases::U256;
use thiserror::Error;

use crate::address::Address;
use crate::keccak::keccak256;
use json::Json;
pub use types::{Field, Type, Types};

/// Bounds on a document, checked before and while it is read.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The whole JSON document.
    pub max_document_bytes: usize,
    pub max_structs: usize,
    pub max_fields: usize,
    pub max_name_len: usize,
    /// Elements of one array (dynamic or fixed).
    pub max_array_len: usize,
    /// `T[][]...`: how many array dimensions one type may have.
    pub max_array_nesting: usize,
    /// How deep structs and arrays may nest in a value.
    pub max_depth: usize,
}

impl Limits {
    pub const DEFAULT: Limits = Limits {
        max_document_bytes: 64 * 1024,
        max_structs: 64,
        max_fields: 64,
        max_name_len: 64,
        max_array_len: 1024,
        max_array_nesting: 4,
        max_depth: 16,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

/// What is wrong with a document, and where (`message.to`, `types.Mail[1].type`, `domain`).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{path}: {problem}")]
pub struct TypedDataError {
    pub path: String,
    pub problem: String,
}

/// An untrusted key as it may appear in a path: at most 64 characters, control characters
/// escaped (a path reaches log lines and error messages).
fn shown_key(key: &str) -> String {
    key.chars()
        .take(64)
        .collect::<String>()
        .escape_default()
        .to_string()
}

fn err(path: &str, problem: impl Into<String>) -> TypedDataError {
    TypedDataError {
        path: path.to_string(),
        problem: problem.into(),
    }
}

/// The domain's values, for policies (which domains and contracts a key may sign for).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Domain {
    pub name: Option<String>,
    pub version: Option<String>,
    pub chain_id: Option<U256>,
    pub verifying_contract: Option<Address>,
    pub salt: Option<[u8; 32]>,
}

/// One atomic value of the message as checked and hashed, for policies that look inside a
/// document (token amounts, recipients, deadlines).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Address(Address),
    /// `uintN`.
    Uint(U256),
    /// `intN`, as its 32-byte two's-complement word.
    Int([u8; 32]),
    Bool(bool),
    /// `bytes` and `bytesN`.
    Bytes(Vec<u8>),
    String(String),
}

/// A checked document and its EIP-712 signing hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypedData {
    pub domain: Domain,
    pub primary_type: String,
    pub domain_separator: [u8; 32],
    pub struct_hash: [u8; 32],
    /// Every atomic value of the message with its path (`message.details[0].token`), in
    /// document order: exactly what was hashed.
    pub message: Vec<(String, Value)>,
}

/// The standard domain fields, in the order EIP-712 gives them.
const DOMAIN_FIELDS: [(&str, &str); 5] = [
    ("name", "string"),
    ("version", "string"),
    ("chainId", "uint256"),
    ("verifyingContract", "address"),
    ("salt", "bytes32"),
];

impl TypedData {
    /// Parses and checks a whole `eth_signTypedData_v4` document.
    pub fn parse(document: &[u8], limits: &Limits) -> Result<TypedData, TypedDataError> {
        if document.len() > limits.max_document_bytes {
            return Err(err(
                "document",
                format!(
                    "{} bytes is over the limit of {} bytes",
                    document.len(),
                    limits.max_document_bytes
                ),
            ));
        }
        let root =
            json::parse(document).map_err(|e| err("document", format!("not valid JSON: {e}")))?;
        let Json::Object(entries) = &root else {
            return Err(err(
                "document",
                format!("expected an object, got {}", root.kind()),
            ));
        };
        let part = |key: &str| {
            entries
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v)
                .ok_or_else(|| err(key, "missing"))
        };
        if let Some((extra, _)) = entries
            .iter()
            .find(|(k, _)| !["types", "primaryType", "domain", "message"].contains(&k.as_str()))
        {
            return Err(err(
                &shown_key(extra),
                "not part of a typed-data document (types, primaryType, domain, message)",
            ));
        }
        let types = Types::parse(part("types")?, limits)?;
        check_domain_type(&types)?;
        let primary_type = match part("primaryType")? {
            Json::String(name) => name.clone(),
            other => {
                return Err(err(
                    "primaryType",
                    format!("expected a string, got {}", other.kind()),
                ));
            }
        };
        if primary_type == "EIP712Domain" {
            return Err(err(
                "primaryType",
                "EIP712Domain is the domain, not a message to sign",
            ));
        }
        if !types.structs.contains_key(&primary_type) {
            return Err(err(
                "primaryType",
                format!(
                    "`{}` is not declared in types",
                    primary_type
                        .chars()
                        .take(64)
                        .collect::<String>()
                        .escape_default()
                ),
            ));
        }
        types.refuse_unused(&primary_type)?;
        let encoder = Encoder {
            leaves: std::cell::RefCell::new(Vec::new()),
            type_hashes: types
                .structs
                .keys()
                .map(|name| (name.as_str(), keccak256(types.encode_type(name))))
                .collect(),
            types: &types,
            limits,
        };
        let domain_json = part("domain")?;
        let domain_separator = encoder.hash_struct("EIP712Domain", domain_json, "domain", 0)?;
        let domain = read_domain(domain_json);
        encoder.leaves.borrow_mut().clear();
        let struct_hash = encoder.hash_struct(&primary_type, part("message")?, "message", 0)?;
        Ok(TypedData {
            domain,
            primary_type,
            domain_separator,
            struct_hash,
            message: encoder.leaves.into_inner(),
        })
    }

    /// The message's value at `path` (`message.value`, `message.details[1].amount`).
    pub fn value(&self, path: &str) -> Option<&Value> {
        self.message
            .iter()
            .find(|(at, _)| at == path)
            .map(|(_, value)| value)
    }

    /// `keccak256(0x19 0x01 || domainSeparator || hashStruct(message))`.
    pub fn signing_hash(&self) -> [u8; 32] {
        let mut preimage = [0u8; 66];
        preimage[0] = 0x19;
        preimage[1] = 0x01;
        preimage[2..34].copy_from_slice(&self.domain_separator);
        preimage[34..].copy_from_slice(&self.struct_hash);
        keccak256(preimage)
    }
}

fn check_domain_type(types: &Types) -> Result<(), TypedDataError> {
    let Some(fields) = types.structs.get("EIP712Domain") else {
        return Err(err(
            "types.EIP712Domain",
            "missing (declare the domain's fields)",
        ));
    };
    if fields.is_empty() {
        return Err(err(
            "types.EIP712Domain",
            "no fields; a domain binds the signature to an application (name, chainId, verifyingContract, ...)",
        ));
    }
    let mut next = 0;
    for field in fields {
        let Some(position) = DOMAIN_FIELDS
            .iter()
            .position(|(name, _)| *name == field.name)
        else {
            return Err(err(
                &format!("types.EIP712Domain.{}", field.name),
                "not a domain field (name, version, chainId, verifyingContract, salt)",
            ));
        };
        if position < next {
            return Err(err(
                &format!("types.EIP712Domain.{}", field.name),
                "out of order (name, version, chainId, verifyingContract, salt)",
            ));
        }
        next = position + 1;
        let expected = DOMAIN_FIELDS[position].1;
        if field.spelling != expected {
            return Err(err(
                &format!("types.EIP712Domain.{}", field.name),
                format!("must be {expected}, not {}", field.spelling),
            ));
        }
    }
    Ok(())
}

/// The domain's values, read after the domain hashed (so every value was checked already).
fn read_domain(domain: &Json) -> Domain {
    let mut out = Domain::default();
    let Json::Object(entries) = domain else {
        return out;
    };
    for (key, value) in entries {
        match (key.as_str(), value) {
            ("name", Json::String(s)) => out.name = Some(s.clone()),
            ("version", Json::String(s)) => out.version = Some(s.clone()),
            ("chainId", v) => {
                out.chain_id = integer(v, 256, false, "").ok().map(U256::from_be_bytes)
            }
            ("verifyingContract", Json::String(s)) => {
                out.verifying_contract = Address::parse("verifyingContract", s).ok()
            }
            ("salt", Json::String(s)) => {
                out.salt = hex_bytes(s, "").ok().and_then(|b| b.try_into().ok())
            }
            _ => {}
        }
    }
    out
}

/// Decodes `0x`-prefixed hex.
fn hex_bytes(text: &str, path: &str) -> Result<Vec<u8>, TypedDataError> {
    let digits = text
        .strip_prefix("0x")
        .ok_or_else(|| err(path, "expected 0x-prefixed hex"))?;
    hex::decode(digits).map_err(|_| err(path, "not valid hex (an even number of hex digits)"))
}

/// An integer value of `bits` width, signed or not, as its 32-byte two's-complement word.
fn integer(value: &Json, bits: u16, signed: bool, path: &str) -> Result<[u8; 32], TypedDataError> {
    let type_name = format!("{}int{bits}", if signed { "" } else { "u" });
    let (negative, magnitude) = match value {
        Json::Unsigned(n) => (false, U256::from(*n)),
        Json::Negative(n) => (true, U256::from(n.unsigned_abs())),
        Json::Inexact => {
            return Err(err(
                path,
                format!(
                    "a float or an integer over 64 bits is not exact; write the {type_name} as a string"
                ),
            ));
        }
        Json::String(text) => {
            let (negative, digits) = match text.strip_prefix('-') {
                Some(rest) => (true, rest),
                None => (false, text.as_str()),
            };
            // Hex for non-negative values only (`-0x..` is spelled differently by every library).
            let parsed = if let Some(hex) = digits.strip_prefix("0x").filter(|_| !negative) {
                (!hex.is_empty() && hex.len() <= 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
                    .then(|| U256::from_str_radix(hex, 16).ok())
                    .flatten()
            } else {
                let canonical = !digits.is_empty()
                    && digits.len() <= 78
                    && digits.bytes().all(|b| b.is_ascii_digit())
                    && (digits == "0" || !digits.starts_with('0'));
                canonical
                    .then(|| U256::from_str_radix(digits, 10).ok())
                    .flatten()
            };
            let magnitude = parsed.ok_or_else(|| {
                let shown: String = text.chars().take(80).collect();
                err(
                    path,
                    format!(
                        "`{}` is not an integer (decimal digits, or 0x hex)",
                        shown.escape_default()
                    ),
                )
            })?;
            (negative && !magnitude.is_zero(), magnitude)
        }
        other => {
            return Err(err(
                path,
                format!("expected an integer for {type_name}, got {}", other.kind()),
            ));
        }
    };
    let shown = || format!("{}{magnitude}", if negative { "-" } else { "" });
    let fits = if negative {
        // -2^(bits-1) is the smallest.
        signed && magnitude <= U256::from(1u8) << (bits as usize - 1)
    } else if signed {
        magnitude < U256::from(1u8) << (bits as usize - 1)
    } else {
        bits == 256 || magnitude < U256::from(1u8) << bits as usize
    };
    if !fits {
        return Err(err(path, format!("{} does not fit {type_name}", shown())));
    }
    let word = if negative {
        (!magnitude).wrapping_add(U256::from(1u8))
    } else {
        magnitude
    };
    Ok(word.to_be_bytes::<32>())
}

struct Encoder<'a> {
    types: &'a Types,
    limits: &'a Limits,
    /// `keccak256(encodeType(name))` per struct, computed once per document (an array of a
    /// thousand structs would otherwise build the same string a thousand times).
    type_hashes: std::collections::BTreeMap<&'a str, [u8; 32]>,
    /// The atomic values read so far, with their paths.
    leaves: std::cell::RefCell<Vec<(String, Value)>>,
}

impl Encoder<'_> {
    fn keep(&self, path: &str, value: Value) {
        self.leaves.borrow_mut().push((path.to_string(), value));
    }

    /// `hashStruct(name, value)`: checks `value` has exactly the struct's fields.
    fn hash_struct(
        &self,
        name: &str,
        value: &Json,
        path: &str,
        depth: usize,
    ) -> Result<[u8; 32], TypedDataError> {
        if depth > self.limits.max_depth {
            return Err(err(
                path,
                format!("nested deeper than {} levels", self.limits.max_depth),
            ));
        }
        let Json::Object(entries) = value else {
            return Err(err(
                path,
                format!("expected an object ({name}), got {}", value.kind()),
            ));
        };
        let fields = &self.types.structs[name];
        if let Some((extra, _)) = entries
            .iter()
            .find(|(k, _)| !fields.iter().any(|f| f.name == *k))
        {
            return Err(err(
                &format!("{path}.{}", shown_key(extra)),
                format!("not a field of {name}"),
            ));
        }
        let mut encoded = Vec::with_capacity(32 * (fields.len() + 1));
        encoded.extend_from_slice(&self.type_hashes[name]);
        for field in fields {
            let field_path = format!("{path}.{}", field.name);
            let Some((_, field_value)) = entries.iter().find(|(k, _)| *k == field.name) else {
                return Err(err(&field_path, format!("missing (a field of {name})")));
            };
            encoded.extend_from_slice(&self.encode_value(
                &field.ty,
                field_value,
                &field_path,
                depth + 1,
            )?);
        }
        Ok(keccak256(&encoded))
    }

    /// One value's 32-byte `encodeData` word.
    fn encode_value(
        &self,
        ty: &Type,
        value: &Json,
        path: &str,
        depth: usize,
    ) -> Result<[u8; 32], TypedDataError> {
        let text = || match value {
            Json::String(text) => Ok(text.as_str()),
            other => Err(err(
                path,
                format!("expected a string, got {}", other.kind()),
            )),
        };
        Ok(match ty {
            Type::Address => {
                let text = text()?;
                if !text.starts_with("0x") {
                    return Err(err(path, "expected a 0x-prefixed address"));
                }
                let address = Address::parse("address", text).map_err(|e| {
                    err(
                        path,
                        e.to_string().trim_start_matches("address: ").to_string(),
                    )
                })?;
                self.keep(path, Value::Address(address));
                let mut word = [0u8; 32];
                word[12..].copy_from_slice(address.as_bytes());
                word
            }
            Type::Bool => match value {
                Json::Bool(b) => {
                    self.keep(path, Value::Bool(*b));
                    let mut word = [0u8; 32];
                    word[31] = u8::from(*b);
                    word
                }
                other => {
                    return Err(err(
                        path,
                        format!("expected true or false, got {}", other.kind()),
                    ));
                }
            },
            Type::String => {
                let text = text()?;
                self.keep(path, Value::String(text.to_string()));
                keccak256(text.as_bytes())
            }
            Type::Bytes => {
                let bytes = hex_bytes(text()?, path)?;
                let word = keccak256(&bytes);
                self.keep(path, Value::Bytes(bytes));
                word
            }
            Type::FixedBytes(n) => {
                let bytes = hex_bytes(text()?, path)?;
                if bytes.len() != usize::from(*n) {
                    return Err(err(path, format!("{} bytes is not bytes{n}", bytes.len())));
                }
                let mut word = [0u8; 32];
                word[..bytes.len()].copy_from_slice(&bytes);
                self.keep(path, Value::Bytes(bytes));
                word
            }
            Type::Uint(bits) => {
                let word = integer(value, *bits, false, path)?;
                self.keep(path, Value::Uint(U256::from_be_bytes(word)));
                word
            }
            Type::Int(bits) => {
                let word = integer(value, *bits, true, path)?;
                self.keep(path, Value::Int(word));
                word
            }
            Type::Struct(name) => self.hash_struct(name, value, path, depth)?,
            Type::Array(inner, length) => {
                if depth > self.limits.max_depth {
                    return Err(err(
                        path,
                        format!("nested deeper than {} levels", self.limits.max_depth),
                    ));
                }
                let Json::Array(items) = value else {
                    return Err(err(
                        path,
                        format!("expected an array, got {}", value.kind()),
                    ));
                };
                match length {
                    Some(length) if items.len() != *length => {
                        return Err(err(
                            path,
                            format!("{} elements; the type has exactly {length}", items.len()),
                        ));
                    }
                    None if items.len() > self.limits.max_array_len => {
                        return Err(err(
                            path,
                            format!(
                                "{} elements; at most {}",
                                items.len(),
                                self.limits.max_array_len
                            ),
                        ));
                    }
                    _ => {}
                }
                let mut encoded = Vec::with_capacity(32 * items.len());
                for (index, item) in items.iter().enumerate() {
                    encoded.extend_from_slice(&self.encode_value(
                        inner,
                        item,
                        &format!("{path}[{index}]"),
                        depth + 1,
                    )?);
                }
                keccak256(&encoded)
            }
        })
    }
}

#[cfg(test)]
mod tests;
