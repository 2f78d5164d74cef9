//! Signed statements (key policies, disable statements, and legacy signed policies), as a node
//! and the coordinator verify them. Structure-aware: besides raw bytes, the harness holds the
//! operator key and signs what the fuzzer writes (a whole `Statement`, or a valid header around
//! the fuzzer's body), so the fuzzer gets past the signature into the header and body checks.
#![no_main]

use std::sync::OnceLock;

use ed25519_dalek::{Signer, SigningKey};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use shardsign_policy::signed::{KeyStatementHeader, OperatorPolicyKey, PolicyVerifier};
use shardsign_proto::v1 as api;

const SEED: [u8; 32] = [0x42; 32];
const CLUSTER: &str = "fuzz";

struct Fixture {
    key: SigningKey,
    verifier: PolicyVerifier,
}

/// The bytes the statement format signs (its documented layout, repeated here on purpose: the
/// fixture checks it against the library's own signature once).
fn sign(key: &SigningKey, kind: api::StatementKind, statement: Vec<u8>) -> Vec<u8> {
    let mut message = b"shardsign statement v1\0".to_vec();
    message.extend_from_slice(kind.as_str_name().as_bytes());
    message.push(0);
    message.extend_from_slice(&statement);
    let signature = key.sign(&message);
    api::SignedStatement {
        statement,
        signatures: vec![api::StatementSignature {
            public_key: key.verifying_key().to_bytes().to_vec(),
            signature: signature.to_bytes().to_vec(),
        }],
    }
    .encode_to_vec()
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let key = SigningKey::from_bytes(&SEED);
        let operator = OperatorPolicyKey::from_secret_hex(&hex(&SEED)).expect("a valid seed");
        let header = KeyStatementHeader {
            cluster_id: CLUSTER,
            key_id: "fuzz-key",
            version: 1,
            issued_at_unix: 1_700_000_000,
        };
        let theirs = operator
            .sign_key_policy(header, &api::Policy::default(), 1_700_086_400)
            .expect("an empty policy signs");
        let ours = sign(
            &key,
            api::StatementKind::KeyPolicy,
            theirs.statement.clone(),
        );
        assert_eq!(
            ours,
            theirs.encode_to_vec(),
            "the harness signs another layout than the library"
        );
        let verifier = PolicyVerifier::from_hex(&operator.public_hex()).expect("a valid key");
        Fixture { key, verifier }
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fuzz_target!(|data: &[u8]| {
    let fixture = fixture();
    let (mode, rest) = shardsign_fuzz::selector(data);
    let kind = if mode & 2 == 0 {
        api::StatementKind::KeyPolicy
    } else {
        api::StatementKind::KeyDisable
    };
    let signed = match mode % 4 {
        // Raw bytes, as received.
        0 => rest.to_vec(),
        // A whole statement of the fuzzer's, signed (the kind in the domain is the selector's).
        1 => sign(&fixture.key, kind, rest.to_vec()),
        // A valid header around the fuzzer's body.
        _ => {
            let statement = api::Statement {
                format: 1,
                kind: kind as i32,
                cluster_id: CLUSTER.into(),
                subject: "fuzz-key".into(),
                version: 1,
                issued_at_unix: 1_700_000_000,
                not_before_unix: 0,
                not_after_unix: if kind == api::StatementKind::KeyPolicy {
                    1_700_086_400
                } else {
                    0
                },
                body: rest.to_vec(),
            };
            sign(&fixture.key, kind, statement.encode_to_vec())
        }
    };
    if let Ok(verified) = fixture.verifier.verify(CLUSTER, &signed) {
        let _ = (
            verified.to_record(),
            verified.expired(0),
            verified.premature(0),
        );
    }
});
