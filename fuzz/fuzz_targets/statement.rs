//! Signed statements (key policies, disable statements, legacy signed policies, and approvers'
//! APPROVAL statements with selector bit 8), as a node and the coordinator verify them. Structure-aware: besides raw bytes, the harness holds the
//! operator key and signs what the fuzzer writes (a whole `Statement`, or a valid header around
//! the fuzzer's body), so the fuzzer gets past the signature into the header and body checks.
#![no_main]

use std::sync::OnceLock;

use ed25519_dalek::{Signer, SigningKey};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use shardsign_policy::approval::{ApprovalRequest, Approvers};
use shardsign_policy::signed::{KeyStatementHeader, OperatorPolicyKey, PolicyVerifier};
use shardsign_proto::v1 as api;

const SEED: [u8; 32] = [0x42; 32];
const CLUSTER: &str = "fuzz";

struct Fixture {
    key: SigningKey,
    verifier: PolicyVerifier,
    /// The fixture key as the only approver (quorum 1).
    approvers: Approvers,
}

/// The request the fuzzed approvals are checked against.
fn approval_request() -> ApprovalRequest {
    ApprovalRequest {
        key_id: "fuzz-key".into(),
        chain_id: 1,
        payload_hash: [7; 32],
        request_id: "fuzz-request".into(),
    }
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
        let approvers = Approvers::from_proto(&api::Approvers {
            public_keys: vec![operator.public_hex()],
            quorum: 1,
            valid_secs: 0,
        })
        .expect("one approver");
        Fixture {
            key,
            verifier,
            approvers,
        }
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Approvals as a node checks the one it is given with a parked request.
fn approval(fixture: &Fixture, mode: u8, rest: &[u8]) {
    let request = approval_request();
    let kind = api::StatementKind::Approval;
    let signed = match mode % 4 {
        0 => rest.to_vec(),
        1 => sign(&fixture.key, kind, rest.to_vec()),
        // A valid header for the request around the fuzzer's body (`mode & 2`: the library's own
        // statement with the fuzzer's bytes as the reason, so the fuzzer reaches the end).
        2 => {
            let mut statement = request.statement(
                CLUSTER,
                api::approval::Decision::Approve,
                "",
                1_700_000_000,
                1_700_086_400,
            );
            statement.body = rest.to_vec();
            sign(&fixture.key, kind, statement.encode_to_vec())
        }
        _ => {
            let reason = String::from_utf8_lossy(rest);
            let statement = request.statement(
                CLUSTER,
                api::approval::Decision::Approve,
                &reason,
                1_700_000_000,
                1_700_086_400,
            );
            sign(&fixture.key, kind, statement.encode_to_vec())
        }
    };
    let _ = fixture
        .approvers
        .verify(CLUSTER, &signed, &request.hash(), 1_700_000_100);
    if let Ok(envelope) = api::SignedStatement::decode(signed.as_slice()) {
        let _ = fixture
            .approvers
            .check(CLUSTER, &envelope, &request.hash(), 1_700_000_100);
    }
}

fuzz_target!(|data: &[u8]| {
    let fixture = fixture();
    let (mode, rest) = shardsign_fuzz::selector(data);
    if mode & 8 != 0 {
        return approval(fixture, mode, rest);
    }
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
