use super::*;

/// The example of EIP-712 itself (its hashes are in the EIP's reference implementation).
const MAIL: &str = r#"{
  "types": {
    "EIP712Domain": [
      {"name": "name", "type": "string"},
      {"name": "version", "type": "string"},
      {"name": "chainId", "type": "uint256"},
      {"name": "verifyingContract", "type": "address"}
    ],
    "Person": [{"name": "name", "type": "string"}, {"name": "wallet", "type": "address"}],
    "Mail": [
      {"name": "from", "type": "Person"},
      {"name": "to", "type": "Person"},
      {"name": "contents", "type": "string"}
    ]
  },
  "primaryType": "Mail",
  "domain": {
    "name": "Ether Mail",
    "version": "1",
    "chainId": 1,
    "verifyingContract": "0xCcCCccccCCCCcCCCCCCcCcCccCcCCCcCcccccccC"
  },
  "message": {
    "from": {"name": "Cow", "wallet": "0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826"},
    "to": {"name": "Bob", "wallet": "0xbBbBBBBbbBBBbbbBbbBbbbbBBbBbbbbBbBbbBBbB"},
    "contents": "Hello, Bob!"
  }
}"#;

fn hex32(text: &str) -> [u8; 32] {
    hex::decode(text).unwrap().try_into().unwrap()
}

fn parse(document: &str) -> Result<TypedData, TypedDataError> {
    TypedData::parse(document.as_bytes(), &Limits::DEFAULT)
}

/// The Mail example with `edit` applied to its JSON value.
fn mail_with(edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let mut value: serde_json::Value = serde_json::from_str(MAIL).unwrap();
    edit(&mut value);
    value.to_string()
}

fn refusal(document: &str) -> String {
    parse(document).unwrap_err().to_string()
}

#[test]
fn the_eip712_mail_example_hashes_as_the_eip_says() {
    let typed = parse(MAIL).unwrap();
    assert_eq!(
        typed.domain_separator,
        hex32("f2cee375fa42b42143804025fc449deafd50cc031ca257e0b194a650a912090f")
    );
    assert_eq!(
        typed.struct_hash,
        hex32("c52c0ee5d84264471806290a3f2c4cecfc5490626bf912d01f240d7a274b371e")
    );
    assert_eq!(
        typed.signing_hash(),
        hex32("be609aee343fb3c4b28e1df9e632fca64fcfaede20f02e86244efddf30957bd2")
    );
    assert_eq!(typed.primary_type, "Mail");
    assert_eq!(typed.domain.name.as_deref(), Some("Ether Mail"));
    assert_eq!(typed.domain.chain_id, Some(U256::from(1u8)));
    assert_eq!(
        typed.domain.verifying_contract.unwrap().to_checksum(),
        "0xCcCCccccCCCCcCCCCCCcCcCccCcCCCcCcccccccC"
    );
}

#[test]
fn the_message_values_are_kept_with_their_paths_and_the_domains_are_not() {
    let typed = parse(MAIL).unwrap();
    let paths: Vec<&str> = typed.message.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        [
            "message.from.name",
            "message.from.wallet",
            "message.to.name",
            "message.to.wallet",
            "message.contents"
        ]
    );
    assert_eq!(
        typed.value("message.to.wallet"),
        Some(&Value::Address(
            Address::parse("a", "0xbBbBBBBbbBBBbbbBbbBbbbbBBbBbbbbBbBbbBBbB").unwrap()
        ))
    );
    assert_eq!(
        typed.value("message.contents"),
        Some(&Value::String("Hello, Bob!".into()))
    );
    assert_eq!(typed.value("domain.name"), None);
    let array = one("uint16[]", "[1, \"0x2\"]").unwrap();
    assert_eq!(
        array.value("message.v[1]"),
        Some(&Value::Uint(U256::from(2u8)))
    );
}

#[test]
fn missing_extra_and_mistyped_fields_are_refused_with_their_path() {
    let cases: Vec<(String, &str)> = vec![
        (
            mail_with(|v| {
                v["message"]["to"].as_object_mut().unwrap().remove("wallet");
            }),
            "message.to.wallet: missing (a field of Person)",
        ),
        (
            mail_with(|v| v["message"]["to"]["age"] = 3.into()),
            "message.to.age: not a field of Person",
        ),
        (
            mail_with(|v| v["message"]["contents"] = 5.into()),
            "message.contents: expected a string, got a number",
        ),
        (
            mail_with(|v| {
                v["message"]["from"]["wallet"] = "0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD827".into()
            }),
            "message.from.wallet: address checksum (EIP-55) does not match",
        ),
        (
            mail_with(|v| {
                v["message"]["from"]["wallet"] = "cd2a3d9f938e13cd947ec05abc7fe734df8dd826".into()
            }),
            "message.from.wallet: expected a 0x-prefixed address",
        ),
        (
            mail_with(|v| v["domain"]["chainId"] = "01".into()),
            "domain.chainId: `01` is not an integer",
        ),
        (
            mail_with(|v| v["domain"]["chainId"] = 1.5.into()),
            "domain.chainId: a float or an integer over 64 bits is not exact",
        ),
        (
            mail_with(|v| v["domain"]["chainId"] = "-1".into()),
            "domain.chainId: -1 does not fit uint256",
        ),
        (
            mail_with(|v| v["extra"] = 1.into()),
            "extra: not part of a typed-data document",
        ),
        (
            mail_with(|v| v["message"]["to"]["x\ny"] = 1.into()),
            "message.to.x\\ny: not a field of Person",
        ),
        (
            mail_with(|v| v["primaryType"] = "Letter".into()),
            "primaryType: `Letter` is not declared in types",
        ),
        (
            mail_with(|v| v["primaryType"] = "EIP712Domain".into()),
            "primaryType: EIP712Domain is the domain",
        ),
        (
            mail_with(|v| v["types"]["Mail"][2]["type"] = "strin".into()),
            "types.Mail.contents: unknown type `strin`",
        ),
        (
            mail_with(|v| v["types"]["Mail"][2]["type"] = "uint".into()),
            "write the size, e.g. uint256",
        ),
        (
            mail_with(|v| v["types"]["Person"][1]["name"] = "name".into()),
            "types.Person[1]: the field `name` appears twice in `Person`",
        ),
        (
            mail_with(|v| {
                v["types"]["Person"]
                    .as_array_mut()
                    .unwrap()
                    .push(serde_json::json!({"name": "friends", "type": "Person[]"}))
            }),
            "types.Person: refers to itself (Person -> Person)",
        ),
        (
            mail_with(|v| {
                v["types"]["EIP712Domain"] = serde_json::json!([
                    {"name": "chainId", "type": "uint256"},
                    {"name": "name", "type": "string"}
                ])
            }),
            "types.EIP712Domain.name: out of order",
        ),
        (
            mail_with(|v| {
                v["types"]["EIP712Domain"] =
                    serde_json::json!([{"name": "chainId", "type": "uint64"}])
            }),
            "types.EIP712Domain.chainId: must be uint256, not uint64",
        ),
        (
            mail_with(|v| v["types"]["EIP712Domain"] = serde_json::json!([])),
            "types.EIP712Domain: no fields",
        ),
        (
            mail_with(|v| {
                v["types"].as_object_mut().unwrap().remove("EIP712Domain");
            }),
            "types.EIP712Domain: missing",
        ),
        (
            mail_with(|v| v["types"]["address"] = serde_json::json!([])),
            "`address` is not a struct name",
        ),
        (
            mail_with(|v| {
                v["types"]["Unused"] = serde_json::json!([{"name": "a", "type": "bool"}])
            }),
            "types.Unused: not used by Mail",
        ),
    ];
    for (document, expected) in cases {
        let refused = refusal(&document);
        assert!(
            refused.contains(expected),
            "expected `{expected}`, got `{refused}`"
        );
    }
    let repeated = MAIL.replace(
        r#""contents": "Hello, Bob!""#,
        r#""contents": "Hello, Bob!", "contents": "Pay Eve""#,
    );
    assert!(refusal(&repeated).contains("the key `contents` appears twice"));
}

/// A one-field document of `ty` holding `value` (JSON text).
fn one(ty: &str, value: &str) -> Result<TypedData, TypedDataError> {
    parse(&format!(
        r#"{{"types": {{"EIP712Domain": [{{"name": "chainId", "type": "uint256"}}],
            "T": [{{"name": "v", "type": "{ty}"}}]}},
          "primaryType": "T", "domain": {{"chainId": 1}}, "message": {{"v": {value}}}}}"#
    ))
}

#[test]
fn integers_are_checked_against_their_width() {
    let max160 = (U256::from(1u8) << 160) - U256::from(1u8);
    assert!(one("uint160", &format!("\"{max160}\"")).is_ok());
    let over = one("uint160", &format!("\"{}\"", U256::from(1u8) << 160)).unwrap_err();
    assert_eq!(
        over.to_string(),
        "message.v: 1461501637330902918203684832716283019655932542976 does not fit uint160"
    );
    assert!(one("uint8", "255").is_ok());
    assert!(
        one("uint8", "256")
            .unwrap_err()
            .to_string()
            .contains("256 does not fit uint8")
    );
    assert!(one("int8", "-128").is_ok());
    assert!(one("int8", "\"-128\"").is_ok());
    assert!(
        one("int8", "-129")
            .unwrap_err()
            .to_string()
            .contains("-129 does not fit int8")
    );
    assert!(
        one("int8", "128")
            .unwrap_err()
            .to_string()
            .contains("128 does not fit int8")
    );
    assert!(one("uint8", "\"0xff\"").is_ok());
    assert!(one("uint8", "\"0x100\"").is_err());
    assert!(one("uint256", "\"+1\"").is_err());
    assert!(one("uint256", "\" 1\"").is_err());
    assert!(
        one("uint256", "true")
            .unwrap_err()
            .to_string()
            .contains("expected an integer for uint256")
    );
    assert!(
        one("uint7", "1")
            .unwrap_err()
            .to_string()
            .contains("unknown type `uint7`")
    );
    assert!(one("uint264", "1").is_err());
    // -1 as int256 is all ones; as the same value in both spellings.
    assert_eq!(
        one("int256", "-1").unwrap().struct_hash,
        one("int256", "\"-1\"").unwrap().struct_hash
    );
}

#[test]
fn bytes_arrays_and_booleans_are_checked_exactly() {
    assert!(one("bytes4", "\"0x01020304\"").is_ok());
    assert!(
        one("bytes4", "\"0x010203\"")
            .unwrap_err()
            .to_string()
            .contains("3 bytes is not bytes4")
    );
    assert!(one("bytes01", "\"0x01\"").is_err());
    assert!(one("bytes33", "\"0x01\"").is_err());
    assert!(
        one("bytes", "\"0x0\"")
            .unwrap_err()
            .to_string()
            .contains("not valid hex")
    );
    assert!(one("bytes", "\"0x\"").is_ok());
    assert!(
        one("bool", "1")
            .unwrap_err()
            .to_string()
            .contains("expected true or false")
    );
    assert!(one("uint8[2]", "[1, 2]").is_ok());
    assert!(
        one("uint8[2]", "[1]")
            .unwrap_err()
            .to_string()
            .contains("1 elements; the type has exactly 2")
    );
    assert!(one("uint8[2][]", "[[1, 2], [3, 4]]").is_ok());
    assert!(
        one("uint8[2][]", "[[1, 2], [3]]")
            .unwrap_err()
            .to_string()
            .contains("message.v[1]")
    );
    assert!(one("uint8[0]", "[]").is_err());
    assert!(
        one("uint8[][][][][]", "[]")
            .unwrap_err()
            .to_string()
            .contains("arrays nested deeper")
    );
    let long = format!("[{}]", vec!["1"; 1025].join(","));
    assert!(
        one("uint8[]", &long)
            .unwrap_err()
            .to_string()
            .contains("1025 elements; at most 1024")
    );
    assert!(
        one("string", "null")
            .unwrap_err()
            .to_string()
            .contains("got null")
    );
}

#[test]
fn documents_over_the_size_limit_are_refused_before_parsing() {
    let big = format!("\"{}\"", "a".repeat(70_000));
    assert!(
        one("string", &big)
            .unwrap_err()
            .to_string()
            .starts_with("document: ")
    );
    assert!(refusal("[]").contains("document: expected an object"));
    assert!(refusal("{").contains("document: not valid JSON"));
}
