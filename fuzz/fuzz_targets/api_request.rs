//! The public API's request conversions that live in libraries: `SignTransaction` (every
//! transaction form, field-named errors), `SignMessage`, the ids, and the policies carried by
//! `CreateApiKey` / `SetApiKeyPolicy`. The first byte picks the message type; the rest is its
//! protobuf encoding. An accepted transaction survives the node's strict decoding unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use shardsign_eth::Limits;
use shardsign_policy::{Rules, RulesFor};
use shardsign_proto::v1 as api;
use shardsign_request::{KeyId, Payload, RequestId, proto};

fn node_reads_it_back(payload: &Payload) {
    let again = proto::from_node(Some(proto::to_node(payload)), &Limits::default())
        .expect("what the coordinator accepts the nodes accept");
    assert_eq!(&again, payload);
}

fuzz_target!(|data: &[u8]| {
    let (which, bytes) = shardsign_fuzz::selector(data);
    match which % 4 {
        0 => {
            let Ok(request) = api::SignTransactionRequest::decode(bytes) else {
                return;
            };
            let _ = KeyId::parse(&request.key_id);
            let _ = RequestId::parse(&request.request_id);
            if let Ok(payload) =
                proto::transaction(request.transaction.as_ref(), &Limits::default())
            {
                node_reads_it_back(&payload);
            }
        }
        1 => {
            let Ok(request) = api::SignMessageRequest::decode(bytes) else {
                return;
            };
            let _ = RequestId::parse(&request.request_id);
            if let Ok(payload) = proto::personal_message(request.message) {
                node_reads_it_back(&payload);
            }
        }
        2 => {
            let Ok(request) = api::CreateApiKeyRequest::decode(bytes) else {
                return;
            };
            for key_id in &request.key_ids {
                let _ = KeyId::parse(key_id);
            }
            if let Some(policy) = request.policy {
                rules_round_trip(&policy, RulesFor::ApiKey);
            }
        }
        _ => {
            let Ok(request) = api::SetApiKeyPolicyRequest::decode(bytes) else {
                return;
            };
            if let Some(policy) = request.policy {
                rules_round_trip(&policy, RulesFor::ApiKey);
                rules_round_trip(&policy, RulesFor::SigningKey);
            }
        }
    }
});

/// Accepted rules write back to a policy that parses to the same rules.
fn rules_round_trip(policy: &api::Policy, kind: RulesFor) {
    if let Ok(rules) = Rules::from_proto(policy, kind) {
        let again = Rules::from_proto(&rules.to_proto(kind), kind).expect("written rules parse");
        assert_eq!(again, rules);
    }
}
