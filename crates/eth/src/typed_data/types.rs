//! The `types` of a typed-data document: each struct's fields, each field's type parsed from its
//! Solidity spelling, every reference resolved, and no struct reaching itself. The canonical
//! `encodeType` string (the struct, then every struct it reaches in name order) is built here.

use std::collections::{BTreeMap, BTreeSet};

use super::json::Json;
use super::{Limits, TypedDataError, err};

/// A field's type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Type {
    Address,
    Bool,
    String,
    Bytes,
    /// `bytes1` .. `bytes32`.
    FixedBytes(u8),
    /// `uint8` .. `uint256`, in bits.
    Uint(u16),
    /// `int8` .. `int256`, in bits.
    Int(u16),
    Struct(String),
    /// `T[]` (`None`) or `T[k]`.
    Array(Box<Type>, Option<usize>),
}

impl Type {
    /// The struct this type is made of, if any (through arrays).
    pub fn struct_name(&self) -> Option<&str> {
        match self {
            Type::Struct(name) => Some(name),
            Type::Array(inner, _) => inner.struct_name(),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    /// As written (it is part of the type hash).
    pub spelling: String,
    pub ty: Type,
}

/// Every struct of the document, checked.
#[derive(Debug, Clone)]
pub struct Types {
    pub structs: BTreeMap<String, Vec<Field>>,
}

/// A Solidity identifier as EIP-712 uses one for struct and field names.
fn identifier(text: &str, limits: &Limits) -> bool {
    let mut chars = text.chars();
    text.len() <= limits.max_name_len
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '$')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
}

/// The bits of `uintN` / `intN` spellings' `N`, or of `bytesN`'s `N` (no leading zeros).
fn size(digits: &str) -> Option<u16> {
    if digits.is_empty() || digits.starts_with('0') || digits.len() > 3 {
        return None;
    }
    digits.parse().ok()
}

fn atomic(name: &str) -> Option<Type> {
    match name {
        "address" => return Some(Type::Address),
        "bool" => return Some(Type::Bool),
        "string" => return Some(Type::String),
        "bytes" => return Some(Type::Bytes),
        _ => {}
    }
    if let Some(n) = name.strip_prefix("bytes") {
        return size(n)
            .filter(|n| (1..=32).contains(n))
            .map(|n| Type::FixedBytes(n as u8));
    }
    let (signed, bits) = match (name.strip_prefix("uint"), name.strip_prefix("int")) {
        (Some(bits), _) => (false, bits),
        (None, Some(bits)) => (true, bits),
        _ => return None,
    };
    size(bits)
        .filter(|n| *n % 8 == 0 && (8..=256).contains(n))
        .map(|n| if signed { Type::Int(n) } else { Type::Uint(n) })
}

/// Whether `name` is spelled like an atomic type (so no struct may take it).
fn reserved(name: &str) -> bool {
    atomic(name).is_some()
        || ["uint", "int", "bytes", "fixed", "ufixed", "function"]
            .iter()
            .any(|prefix| {
                name.starts_with(prefix)
                    && name[prefix.len()..]
                        .chars()
                        .all(|c| c.is_ascii_digit() || c == 'x')
            })
}

/// Parses a field's type spelling; struct names are checked against `declared`.
fn parse_type(
    spelling: &str,
    declared: &BTreeSet<&str>,
    path: &str,
    limits: &Limits,
    depth: usize,
) -> Result<Type, TypedDataError> {
    if let Some(open) = spelling.rfind('[') {
        if depth >= limits.max_array_nesting {
            return Err(err(
                path,
                format!(
                    "`{spelling}`: arrays nested deeper than {}",
                    limits.max_array_nesting
                ),
            ));
        }
        let Some(dimension) = spelling[open + 1..].strip_suffix(']') else {
            return Err(err(path, format!("`{spelling}` is not a type")));
        };
        let length = match dimension {
            "" => None,
            digits => {
                let length = digits
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=limits.max_array_len).contains(n) && !digits.starts_with('0'))
                    .ok_or_else(|| {
                        err(
                            path,
                            format!(
                                "`{spelling}`: a fixed array's length must be 1 to {}",
                                limits.max_array_len
                            ),
                        )
                    })?;
                Some(length)
            }
        };
        let inner = parse_type(&spelling[..open], declared, path, limits, depth + 1)?;
        return Ok(Type::Array(Box::new(inner), length));
    }
    if let Some(ty) = atomic(spelling) {
        return Ok(ty);
    }
    if declared.contains(spelling) {
        return Ok(Type::Struct(spelling.to_string()));
    }
    let hint = if ["uint", "int"].contains(&spelling) {
        " (write the size, e.g. uint256)"
    } else {
        ""
    };
    Err(err(
        path,
        format!(
            "unknown type `{}`{hint}",
            spelling
                .chars()
                .take(64)
                .collect::<String>()
                .escape_default()
        ),
    ))
}

impl Types {
    /// Checks `types` (an object of struct name -> [{name, type}, ...]).
    pub fn parse(types: &Json, limits: &Limits) -> Result<Types, TypedDataError> {
        let Json::Object(entries) = types else {
            return Err(err(
                "types",
                format!("expected an object, got {}", types.kind()),
            ));
        };
        if entries.len() > limits.max_structs {
            return Err(err(
                "types",
                format!("{} types; at most {}", entries.len(), limits.max_structs),
            ));
        }
        let declared: BTreeSet<&str> = entries.iter().map(|(name, _)| name.as_str()).collect();
        let mut structs = BTreeMap::new();
        for (name, fields) in entries {
            let path = format!("types.{name}");
            if !identifier(name, limits) || reserved(name) {
                return Err(err(
                    "types",
                    format!(
                        "`{}` is not a struct name (an identifier that is not a Solidity type)",
                        name.chars().take(64).collect::<String>().escape_default()
                    ),
                ));
            }
            let Json::Array(items) = fields else {
                return Err(err(
                    &path,
                    format!("expected an array of fields, got {}", fields.kind()),
                ));
            };
            if items.len() > limits.max_fields {
                return Err(err(
                    &path,
                    format!("{} fields; at most {}", items.len(), limits.max_fields),
                ));
            }
            let mut parsed: Vec<Field> = Vec::with_capacity(items.len());
            for (index, item) in items.iter().enumerate() {
                let field_path = format!("{path}[{index}]");
                let Json::Object(members) = item else {
                    return Err(err(&field_path, "expected {\"name\": ..., \"type\": ...}"));
                };
                let text = |key: &str| match members.iter().find(|(k, _)| k == key) {
                    Some((_, Json::String(value))) => Ok(value.as_str()),
                    Some((_, other)) => Err(err(
                        &format!("{field_path}.{key}"),
                        format!("expected a string, got {}", other.kind()),
                    )),
                    None => Err(err(&format!("{field_path}.{key}"), "missing")),
                };
                let field_name = text("name")?;
                let spelling = text("type")?;
                if let Some((extra, _)) = members.iter().find(|(k, _)| k != "name" && k != "type") {
                    return Err(err(
                        &format!("{field_path}.{extra}"),
                        "not part of a field (only name and type)",
                    ));
                }
                if !identifier(field_name, limits) {
                    return Err(err(&field_path, "the field name is not an identifier"));
                }
                if parsed.iter().any(|f| f.name == field_name) {
                    return Err(err(
                        &field_path,
                        format!("the field `{field_name}` appears twice in `{name}`"),
                    ));
                }
                let ty = parse_type(
                    spelling,
                    &declared,
                    &format!("{path}.{field_name}"),
                    limits,
                    0,
                )?;
                parsed.push(Field {
                    name: field_name.to_string(),
                    spelling: spelling.to_string(),
                    ty,
                });
            }
            structs.insert(name.clone(), parsed);
        }
        let types = Types { structs };
        for name in types.structs.keys() {
            types.refuse_cycle(name)?;
        }
        Ok(types)
    }

    /// Refuses a struct that reaches itself (the document could never end).
    fn refuse_cycle(&self, start: &str) -> Result<(), TypedDataError> {
        let mut stack: Vec<(String, Vec<String>)> =
            vec![(start.to_string(), vec![start.to_string()])];
        let mut seen = BTreeSet::new();
        while let Some((name, trail)) = stack.pop() {
            for field in &self.structs[&name] {
                let Some(next) = field.ty.struct_name() else {
                    continue;
                };
                if next == start {
                    return Err(err(
                        &format!("types.{start}"),
                        format!(
                            "refers to itself ({} -> {next}); recursive types are not accepted",
                            trail.join(" -> ")
                        ),
                    ));
                }
                if seen.insert(next.to_string()) {
                    let mut longer = trail.clone();
                    longer.push(next.to_string());
                    stack.push((next.to_string(), longer));
                }
            }
        }
        Ok(())
    }

    /// Refuses a struct that `primary` does not reach (besides the domain): a document's types
    /// are exactly what the message is made of.
    pub fn refuse_unused(&self, primary: &str) -> Result<(), TypedDataError> {
        let used = self.dependencies(primary);
        match self.structs.keys().find(|name| {
            *name != primary && *name != "EIP712Domain" && !used.contains(name.as_str())
        }) {
            Some(unused) => Err(err(
                &format!("types.{unused}"),
                format!(
                    "not used by {primary}; a document declares only the types its message uses"
                ),
            )),
            None => Ok(()),
        }
    }

    /// Every struct `name` reaches, itself excluded.
    fn dependencies(&self, name: &str) -> BTreeSet<&str> {
        let mut found = BTreeSet::new();
        let mut stack = vec![name];
        while let Some(current) = stack.pop() {
            for field in &self.structs[current] {
                if let Some(next) = field.ty.struct_name()
                    && next != name
                    && found.insert(next)
                {
                    stack.push(next);
                }
            }
        }
        found
    }

    /// `encodeType(name)`: `Name(type field,...)` then each dependency's, in name order.
    pub fn encode_type(&self, name: &str) -> String {
        let one = |name: &str| {
            let fields: Vec<String> = self.structs[name]
                .iter()
                .map(|f| format!("{} {}", f.spelling, f.name))
                .collect();
            format!("{name}({})", fields.join(","))
        };
        let mut out = one(name);
        for dependency in self.dependencies(name) {
            out.push_str(&one(dependency));
        }
        out
    }
}
