//! The JSON a typed-data document arrives as, read strictly: an object with a repeated key is
//! refused (two parsers could each show a different one of them), and a number that is not an
//! integer within 64 bits is kept as `Inexact` so that the caller can refuse it with the field's
//! path (a float cannot carry a 256-bit amount exactly; such values travel as strings).

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Unsigned(u64),
    Negative(i64),
    /// A float, or an integer outside 64 bits.
    Inexact,
    String(String),
    Array(Vec<Json>),
    /// In document order; keys are unique.
    Object(Vec<(String, Json)>),
}

impl Json {
    /// What kind of value this is, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool(_) => "a boolean",
            Json::Unsigned(_) | Json::Negative(_) | Json::Inexact => "a number",
            Json::String(_) => "a string",
            Json::Array(_) => "an array",
            Json::Object(_) => "an object",
        }
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_bool<E>(self, value: bool) -> Result<Json, E> {
        Ok(Json::Bool(value))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Json, E> {
        Ok(Json::Unsigned(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Json, E> {
        Ok(if value < 0 {
            Json::Negative(value)
        } else {
            Json::Unsigned(value as u64)
        })
    }

    fn visit_f64<E>(self, _: f64) -> Result<Json, E> {
        Ok(Json::Inexact)
    }

    fn visit_str<E>(self, value: &str) -> Result<Json, E> {
        Ok(Json::String(value.to_string()))
    }

    fn visit_string<E>(self, value: String) -> Result<Json, E> {
        Ok(Json::String(value))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut entries: Vec<(String, Json)> = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            if entries.iter().any(|(k, _)| *k == key) {
                let shown: String = key.chars().take(64).collect();
                return Err(de::Error::custom(format!(
                    "the key `{}` appears twice in one object",
                    shown.escape_default()
                )));
            }
            let value = map.next_value()?;
            entries.push((key, value));
        }
        Ok(Json::Object(entries))
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Json, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

/// Parses `text` as one JSON value (serde_json bounds the nesting at 128 levels).
pub fn parse(text: &[u8]) -> Result<Json, String> {
    serde_json::from_slice(text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_keys_and_inexact_numbers_are_told_apart() {
        let error = parse(br#"{"to": "a", "to": "b"}"#).unwrap_err();
        assert!(error.contains("the key `to` appears twice"), "{error}");
        assert_eq!(
            parse(b"[1, -2, 1.5, 18446744073709551616]").unwrap(),
            Json::Array(vec![
                Json::Unsigned(1),
                Json::Negative(-2),
                Json::Inexact,
                Json::Inexact
            ])
        );
        assert!(parse(b"{} {}").is_err(), "one value only");
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert!(parse(deep.as_bytes()).is_err(), "nesting is bounded");
    }
}
