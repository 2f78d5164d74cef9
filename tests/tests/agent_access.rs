//! Agent access on a shared cluster (three node processes and a coordinator): scopes and key
//! bindings, the key-expiry header, each policy rule at its limit and one unit above, signing
//! key policies enforced by the coordinator, and by the nodes when a compromised coordinator
//! calls them directly.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use prost::Message;
use shardsign_eth::{Limits, UnsignedTransaction, parse_amount};
use shardsign_policy::{KeyStatementHeader, OperatorPolicyKey};
use shardsign_proto::node::v1::node_client::NodeClient;
use shardsign_proto::v1::sign_transaction_request::Transaction;
use shardsign_proto::v1::{
    ContractCall, CreateApiKeyRequest, Eip1559Transaction, GetKeyPolicyRequest, Key,
    ListKeysRequest, Policy, SignMessageRequest, SignTransactionRequest, SignTransactionResponse,
    SignedStatement, WhoAmIRequest,
};
use shardsign_tests::full::{Cluster, permissive_policy, unix_now};
use shardsign_tests::relay::{self, Payload};
use tonic::transport::Channel;
use tonic::{Code, Status};

const ALICE: &str = "0x00000000000000000000000000000000000A11cE";
const BOB: &str = "0x0000000000000000000000000000000000000B0b";
const TOKEN: &str = "0x000000000000000000000000000000000000070C";
const TRANSFER: [u8; 4] = [0xa9, 0x05, 0x9c, 0xbb];

struct Shared {
    cluster: Cluster,
    /// A key whose own policy allows everything: API-key policies are what is tested on it.
    key: Key,
    /// A key with a tight signing-key policy (1 ETH per tx, to ALICE only, 30 gwei).
    tight: Key,
    /// The tight key's first (looser) policy, now superseded.
    tight_v1: SignedStatement,
}

fn tight_key_rules() -> Policy {
    Policy {
        allowed_chain_ids: vec![1],
        max_value_per_tx: "1eth".into(),
        allowed_recipients: vec![ALICE.into()],
        max_fee_per_gas: "30gwei".into(),
        max_total_fee: "unlimited".into(),
        ..Default::default()
    }
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let cluster = Cluster::start();
            let runtime = tokio::runtime::Runtime::new().expect("runtime");
            let shared = runtime.block_on(async {
                let key = cluster.ceremony("agent-access", &[1, 5]).await;
                cluster.allow_everything(&key).await;
                let tight = cluster.ceremony("tight", &[1]).await;
                let mut loose = tight_key_rules();
                loose.max_value_per_tx = "unlimited".into();
                let tight_v1 =
                    cluster.signed_policy(&tight.key_id, loose, cluster.next_policy_version());
                cluster
                    .admin()
                    .set_key_policy(shardsign_proto::v1::SetKeyPolicyRequest {
                        statement: Some(tight_v1.clone()),
                    })
                    .await
                    .expect("v1");
                let response = cluster
                    .set_key_policy(&tight.key_id, tight_key_rules())
                    .await
                    .expect("v2");
                assert_eq!(response.nodes_updated, vec![1, 2, 3]);
                Shared {
                    cluster,
                    key,
                    tight,
                    tight_v1,
                }
            });
            sender.send(shared).expect("send");
            loop {
                std::thread::park();
            }
        });
        receiver.recv().expect("shared cluster")
    })
}

/// The policy the table starts from; each test loosens nothing and tightens one rule.
fn base_policy() -> Policy {
    Policy {
        allowed_chain_ids: vec![1],
        max_value_per_tx: "1eth".into(),
        max_value_per_24h: "unlimited".into(),
        allowed_recipients: vec![ALICE.into()],
        allowed_contract_calls: vec![ContractCall {
            to: TOKEN.into(),
            selector: "0xa9059cbb".into(),
        }],
        allow_contract_creation: false,
        max_fee_per_gas: "30gwei".into(),
        max_total_fee: "0.00063eth".into(),
        requests_per_minute: 1000,
        allow_message_signing: false,
        message_rules: None,
        allowed_typed_data: Vec::new(),
        allowed_delegates: Vec::new(),
        allow_any_chain_authorization: false,
        tokens: Vec::new(),
        max_permit_validity_secs: 0,
        require_approval_above: String::new(),
        approvers: None,
    }
}

async fn agent(policy: Policy) -> String {
    let shared = shared();
    shared
        .cluster
        .create_api_key(CreateApiKeyRequest {
            label: "agent".into(),
            scopes: vec!["sign".into(), "read".into()],
            key_ids: vec![shared.key.key_id.clone(), shared.tight.key_id.clone()],
            policy: Some(policy),
            ..Default::default()
        })
        .await
        .api_key
}

#[derive(Clone)]
struct Tx {
    chain_id: u64,
    to: &'static str,
    value: String,
    data: Vec<u8>,
    max_fee: String,
    gas: u64,
}

fn transfer(value: &str) -> Tx {
    Tx {
        chain_id: 1,
        to: ALICE,
        value: parse_amount("value", value).unwrap().to_string(),
        data: vec![],
        max_fee: "30000000000".into(),
        gas: 21_000,
    }
}

fn wei(text: &str) -> String {
    parse_amount("amount", text).unwrap().to_string()
}

fn plus_one(text: &str) -> String {
    (parse_amount("amount", text).unwrap() + shardsign_eth::U256::from(1u8)).to_string()
}

async fn sign_with(token: &str, key: &Key, tx: Tx) -> Result<SignTransactionResponse, Status> {
    shared()
        .cluster
        .signer_with(Some(token))
        .sign_transaction(SignTransactionRequest {
            key_id: key.key_id.clone(),
            request_id: format!("req-{}", hex::encode(rand::random::<[u8; 12]>())),
            transaction: Some(Transaction::Eip1559(Eip1559Transaction {
                chain_id: tx.chain_id,
                nonce: 0,
                max_priority_fee_per_gas: "1".into(),
                max_fee_per_gas: tx.max_fee,
                gas_limit: tx.gas,
                to: tx.to.into(),
                value: tx.value,
                data: tx.data,
                access_list: vec![],
            })),
        })
        .await
        .map(|r| r.into_inner())
}

/// The rule allows `at_limit` and refuses `above` with PermissionDenied naming `rule`.
async fn rule_holds(policy: Policy, at_limit: Tx, above: Tx, rule: &str) -> Status {
    let shared = shared();
    let token = agent(policy).await;
    sign_with(&token, &shared.key, at_limit)
        .await
        .unwrap_or_else(|s| panic!("at the limit of {rule}: {s:?}"));
    let status = sign_with(&token, &shared.key, above)
        .await
        .expect_err("one unit above the limit");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().contains(&format!("policy {rule}: ")),
        "{}",
        status.message()
    );
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_allowed_chain_ids() {
    let mut other_chain = transfer("0");
    other_chain.chain_id = 5;
    let status = rule_holds(
        base_policy(),
        transfer("0"),
        other_chain,
        "allowed_chain_ids",
    )
    .await;
    assert!(
        status.message().contains("chain id 5 is not in {1}"),
        "{}",
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_max_value_per_tx() {
    let mut above = transfer("1eth");
    above.value = plus_one("1eth");
    let status = rule_holds(base_policy(), transfer("1eth"), above, "max_value_per_tx").await;
    assert!(
        status
            .message()
            .ends_with("max_value_per_tx: 1.000000000000000001 ETH > 1 ETH"),
        "{}",
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_allowed_recipients() {
    let mut to_bob = transfer("0");
    to_bob.to = BOB;
    rule_holds(base_policy(), transfer("0"), to_bob, "allowed_recipients").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_allowed_contract_calls() {
    let mut call = transfer("0");
    call.to = TOKEN;
    call.data = [TRANSFER.as_slice(), &[0u8; 64]].concat();
    call.gas = 21_000;
    let mut approve = call.clone();
    approve.data[..4].copy_from_slice(&[0x09, 0x5e, 0xa7, 0xb3]);
    rule_holds(base_policy(), call, approve, "allowed_contract_calls").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_allow_contract_creation() {
    let mut create = transfer("0");
    create.to = "";
    create.data = vec![0x60, 0x00];
    let mut allowed = base_policy();
    allowed.allow_contract_creation = true;
    let shared = shared();
    sign_with(&agent(allowed).await, &shared.key, create.clone())
        .await
        .expect("creation allowed when granted");
    let status = sign_with(&agent(base_policy()).await, &shared.key, create)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status.message().contains("policy allow_contract_creation"),
        "{}",
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_max_fee_per_gas() {
    let mut above = transfer("0");
    above.max_fee = plus_one("30gwei");
    above.gas = 20_000;
    let mut at = transfer("0");
    at.max_fee = wei("30gwei");
    let status = rule_holds(base_policy(), at, above, "max_fee_per_gas").await;
    assert!(
        status.message().contains("30.000000001 gwei > 30 gwei"),
        "{}",
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_max_total_fee() {
    // 21000 gas at 30 gwei is exactly 0.00063 ETH.
    let mut policy = base_policy();
    policy.max_fee_per_gas = "unlimited".into();
    let mut above = transfer("0");
    above.gas = 21_001;
    rule_holds(policy, transfer("0"), above, "max_total_fee").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_max_value_per_24h() {
    let mut policy = base_policy();
    policy.max_value_per_24h = "0.02eth".into();
    let shared = shared();
    let token = agent(policy).await;
    for _ in 0..2 {
        sign_with(&token, &shared.key, transfer("0.01eth"))
            .await
            .expect("within the 24 h cap");
    }
    let mut above = transfer("0");
    above.value = "1".into();
    let status = sign_with(&token, &shared.key, above).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status.message().contains(
            "policy max_value_per_24h: 0.02 ETH already signed on chain 1 in the last 24 h + 0.000000000000000001 ETH > 0.02 ETH"
        ),
        "{}",
        status.message()
    );
    // Transfers of nothing are not counted.
    sign_with(&token, &shared.key, transfer("0"))
        .await
        .expect("zero value");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_requests_per_minute() {
    let mut policy = base_policy();
    policy.requests_per_minute = 2;
    let shared = shared();
    let token = agent(policy).await;
    for _ in 0..2 {
        sign_with(&token, &shared.key, transfer("0"))
            .await
            .expect("within the rate");
    }
    let status = sign_with(&token, &shared.key, transfer("0"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status
            .message()
            .contains("policy requests_per_minute: limit of 2 reached; retry in"),
        "{}",
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_allow_message_signing() {
    let shared = shared();
    let message = |token: String| {
        let key_id = shared.key.key_id.clone();
        async move {
            shared
                .cluster
                .signer_with(Some(&token))
                .sign_message(SignMessageRequest {
                    key_id,
                    request_id: format!("msg-{}", hex::encode(rand::random::<[u8; 8]>())),
                    message: b"hello".to_vec(),
                })
                .await
        }
    };
    let mut allowed = base_policy();
    allowed.allow_message_signing = true;
    message(agent(allowed).await).await.expect("granted");
    let status = message(agent(base_policy()).await).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status.message().contains("policy allow_message_signing"),
        "{}",
        status.message()
    );
}

/// Signs `message` with `token` on the shared key.
async fn sign_message_with(token: &str, message: &[u8]) -> Result<(), Status> {
    let shared = shared();
    shared
        .cluster
        .signer_with(Some(token))
        .sign_message(SignMessageRequest {
            key_id: shared.key.key_id.clone(),
            request_id: format!("msg-{}", hex::encode(rand::random::<[u8; 8]>())),
            message: message.to_vec(),
        })
        .await
        .map(|_| ())
}

fn refused_by(result: Result<(), Status>, rule: &str) {
    let status = result.expect_err(rule);
    assert_eq!(status.code(), Code::PermissionDenied, "{rule}: {status:?}");
    assert!(
        status.message().contains(&format!("policy {rule}")),
        "{rule}: {}",
        status.message()
    );
}

/// The node clients (as the coordinator holds them) and `key_id`'s current signed policy: what a
/// compromised coordinator would use to call two nodes directly.
async fn nodes_and_policy(key_id: &str) -> (BTreeMap<u8, NodeClient<Channel>>, Vec<u8>) {
    let shared = shared();
    let clients: BTreeMap<u8, _> = (1..=3u8)
        .zip(shared.cluster.nodes.clients().await)
        .collect();
    let policy = shared
        .cluster
        .admin()
        .get_key_policy(GetKeyPolicyRequest {
            key_id: key_id.to_string(),
        })
        .await
        .unwrap()
        .into_inner()
        .signed;
    (clients, policy)
}

/// `rules` for `key_id`, signed to be valid from `issued_at_unix` to `not_after_unix`.
fn signed_between(key_id: &str, issued_at_unix: i64, not_after_unix: i64) -> SignedStatement {
    let shared = shared();
    let header = KeyStatementHeader {
        issued_at_unix,
        ..shared
            .cluster
            .statement_header(key_id, shared.cluster.next_policy_version())
    };
    shared
        .cluster
        .policy_key
        .sign_key_policy(header, &no_24h_cap(permissive_policy(&[1])), not_after_unix)
        .expect("a well-formed policy")
}

fn no_24h_cap(mut policy: Policy) -> Policy {
    policy.max_value_per_24h.clear();
    policy.requests_per_minute = 0;
    policy
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_key_policy_is_refused_by_the_coordinator_and_by_the_nodes() {
    let shared = shared();
    let now = unix_now();
    let expired = signed_between(&shared.key.key_id, now - 2 * 86_400, now - 60);
    // The coordinator does not take it...
    let refused = shared
        .cluster
        .admin()
        .set_key_policy(shardsign_proto::v1::SetKeyPolicyRequest {
            statement: Some(expired.clone()),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("expired at"), "{refused:?}");
    // ...and the nodes refuse to sign under it (nor do they store it) when a coordinator sends it.
    let (clients, _) = nodes_and_policy(&shared.key.key_id).await;
    let message = b"an ordinary sentence".to_vec();
    let hash = shardsign_eth::personal_sign_hash(&message);
    let error = relay::sign_with_policy(
        &clients,
        [1, 3],
        &shared.key.key_id,
        &Payload::PersonalMessage(message),
        hash,
        &expired.encode_to_vec(),
        None,
        None,
    )
    .await
    .unwrap_err();
    assert_eq!(error.status.code(), Code::FailedPrecondition, "{error:?}");
    assert!(
        error.status.message().contains("expired at")
            && error.status.message().contains("shardsign policy renew"),
        "{}",
        error.status.message()
    );
    // The key still signs under its current policy: the expired one was not kept.
    sign_message_with(&shared.cluster.signer_token, b"still signing")
        .await
        .expect("current policy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_policy_that_expires_stops_signing_and_is_warned_about_before() {
    let shared = shared();
    let key = shared.cluster.ceremony("expiring", &[1]).await;
    let now = unix_now();
    shared
        .cluster
        .admin()
        .set_key_policy(shardsign_proto::v1::SetKeyPolicyRequest {
            statement: Some(signed_between(&key.key_id, now, now + 3)),
        })
        .await
        .expect("a policy valid for 3 s");
    let status = shared
        .cluster
        .admin()
        .cluster_status(shardsign_proto::v1::ClusterStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(
        status
            .warnings
            .iter()
            .any(|w| w.contains(&format!("key policy of `{}`", key.key_id))),
        "{status:?}"
    );
    let sign = || {
        let key_id = key.key_id.clone();
        async move {
            shared
                .cluster
                .signer()
                .sign_message(SignMessageRequest {
                    key_id,
                    request_id: format!("exp-{}", hex::encode(rand::random::<[u8; 8]>())),
                    message: b"before and after".to_vec(),
                })
                .await
        }
    };
    sign().await.expect("valid for now");
    // The expiry is the behaviour under test: poll until the policy's time has passed.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let refused = loop {
        match sign().await {
            Err(status) => break status,
            Ok(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            Ok(_) => panic!("still signing 30 s after the policy expired"),
        }
    };
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("expired at"), "{refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_message_rules() {
    // Defaults: text only, at most 1 KiB, never 32 bytes (a hash ground until printable).
    let mut defaults = base_policy();
    defaults.allow_message_signing = true;
    let token = agent(defaults.clone()).await;
    sign_message_with(&token, &[b'a'; 31])
        .await
        .expect("31 bytes of text");
    refused_by(
        sign_message_with(&token, &[b'a'; 32]).await,
        "message_allow_hash_shaped",
    );
    refused_by(
        sign_message_with(&token, &[0xff, 0x00]).await,
        "message_text_only",
    );
    sign_message_with(&token, &[b'a'; 1024])
        .await
        .expect("1 KiB");
    refused_by(
        sign_message_with(&token, &[b'a'; 1025]).await,
        "message_max_len",
    );
    // An API key's rules only narrow: opening them leaves the signing key's own policy (the
    // default message rules here), which still refuses.
    let mut open = defaults.clone();
    open.message_rules = Some(shardsign_proto::v1::MessageRules {
        allow_hash_shaped: true,
        allow_binary: true,
        max_len: 2048,
        allowed_prefixes: vec![],
    });
    let token = agent(open).await;
    let status = sign_message_with(&token, &[0x07; 32]).await.unwrap_err();
    assert!(
        status.message().contains("message_allow_hash_shaped")
            && status.message().contains("(signing key policy v"),
        "{}",
        status.message()
    );
    let mut siwe = defaults;
    siwe.message_rules = Some(shardsign_proto::v1::MessageRules {
        allowed_prefixes: vec!["app.example wants you to sign in".into()],
        ..Default::default()
    });
    let token = agent(siwe).await;
    sign_message_with(
        &token,
        b"app.example wants you to sign in with your Ethereum account",
    )
    .await
    .expect("the allowed prefix");
    refused_by(
        sign_message_with(&token, b"evil.example wants you to sign in").await,
        "message_allowed_prefixes",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_refuse_a_hash_shaped_message_even_from_the_coordinator() {
    let shared = shared();
    // The key's own signed policy allows messages, under the default message rules.
    let (clients, policy) = nodes_and_policy(&shared.key.key_id).await;
    let direct = |message: Vec<u8>| {
        let clients = clients.clone();
        let policy = policy.clone();
        let key_id = shared.key.key_id.clone();
        async move {
            let hash = shardsign_eth::personal_sign_hash(&message);
            relay::sign_with_policy(
                &clients,
                [2, 3],
                &key_id,
                &Payload::PersonalMessage(message),
                hash,
                &policy,
                None,
                None,
            )
            .await
        }
    };
    direct(b"an ordinary sentence".to_vec())
        .await
        .expect("text signs on the same path");
    let refused = direct(vec![b'a'; 32]).await.unwrap_err();
    assert_eq!(
        refused.status.code(),
        Code::PermissionDenied,
        "{:?}",
        refused.status
    );
    assert!(
        refused
            .status
            .message()
            .contains("policy message_allow_hash_shaped"),
        "{}",
        refused.status.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_api_key_with_no_policy_can_sign_nothing() {
    let shared = shared();
    let token = agent(Policy::default()).await;
    let status = sign_with(&token, &shared.key, transfer("0"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("requests_per_minute: 0"),
        "{}",
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scopes_and_key_bindings_limit_what_a_key_reaches() {
    let shared = shared();
    let cluster = &shared.cluster;
    let reader = cluster
        .create_api_key(CreateApiKeyRequest {
            label: "reader".into(),
            scopes: vec!["read".into()],
            key_ids: vec![shared.tight.key_id.clone()],
            ..Default::default()
        })
        .await
        .api_key;
    let status = sign_with(&reader, &shared.tight, transfer("0"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status.message().contains("lacks the `sign` scope"),
        "{}",
        status.message()
    );
    let keys = cluster
        .signer_with(Some(&reader))
        .list_keys(ListKeysRequest {})
        .await
        .unwrap()
        .into_inner()
        .keys;
    let ids: Vec<_> = keys.iter().map(|k| k.key_id.as_str()).collect();
    assert_eq!(
        ids,
        vec![shared.tight.key_id.as_str()],
        "only the bound key is listed"
    );

    let bound = cluster
        .create_api_key(CreateApiKeyRequest {
            label: "bound".into(),
            scopes: vec!["sign".into()],
            key_ids: vec![shared.tight.key_id.clone()],
            policy: Some(base_policy()),
            ..Default::default()
        })
        .await
        .api_key;
    let status = sign_with(&bound, &shared.key, transfer("0"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status.message().contains("is not allowed to use key"),
        "{}",
        status.message()
    );
    // A key id that does not exist gets the same answer: a caller cannot probe for key ids.
    let missing = Key {
        key_id: "no-such-key".into(),
        ..shared.key.clone()
    };
    let absent = sign_with(&bound, &missing, transfer("0"))
        .await
        .unwrap_err();
    assert_eq!(absent.code(), status.code());
    assert_eq!(
        absent.message(),
        status.message().replace(&shared.key.key_id, "no-such-key")
    );

    let status = cluster
        .admin_with(Some(&bound))
        .list_api_keys(shardsign_proto::v1::ListApiKeysRequest {})
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);

    let me = cluster
        .signer_with(Some(&bound))
        .who_am_i(WhoAmIRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(me.scopes, vec!["sign"]);
    assert_eq!(me.key_ids, vec![shared.tight.key_id.clone()]);
    assert!(bound.contains(&me.id) && !format!("{me:?}").contains(&bound[25..]));

    // The bootstrap credential retires once an admin key exists.
    let status = cluster
        .admin_with(Some(&cluster.bootstrap_token))
        .create_api_key(CreateApiKeyRequest {
            label: "second admin".into(),
            scopes: vec!["admin".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("retired"), "{}", status.message());

    // Keys of another environment, and things that are not keys, are told apart.
    let live = bound.replacen("ss_test_", "ss_live_", 1);
    let status = cluster
        .signer_with(Some(&live))
        .who_am_i(WhoAmIRequest {})
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(
        status.message().contains("accepts ss_test_ keys"),
        "{}",
        status.message()
    );
    let mut wrong_secret = bound.clone();
    let last = wrong_secret.pop().unwrap();
    wrong_secret.push(if last == '0' { '1' } else { '0' });
    let status = cluster
        .signer_with(Some(&wrong_secret))
        .who_am_i(WhoAmIRequest {})
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (Code::Unauthenticated, "invalid API key")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_carry_the_expiry_header_within_seven_days_of_expiry() {
    let shared = shared();
    let cluster = &shared.cluster;
    let create = |days: i64| CreateApiKeyRequest {
        label: format!("expires in {days} days"),
        scopes: vec!["read".into()],
        all_keys: true,
        expires_in_seconds: days * 86_400,
        ..Default::default()
    };
    let soon = cluster.create_api_key(create(3)).await.api_key;
    let response = cluster
        .signer_with(Some(&soon))
        .who_am_i(WhoAmIRequest {})
        .await
        .unwrap();
    let seconds: i64 = response
        .metadata()
        .get("x-key-expires-in")
        .expect("header within 7 days")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (3 * 86_400 - 60..=3 * 86_400).contains(&seconds),
        "{seconds}"
    );
    // On errors too.
    let status = sign_with(&soon, &shared.key, transfer("0"))
        .await
        .unwrap_err();
    assert!(status.metadata().get("x-key-expires-in").is_some());

    let later = cluster.create_api_key(create(30)).await.api_key;
    let response = cluster
        .signer_with(Some(&later))
        .who_am_i(WhoAmIRequest {})
        .await
        .unwrap();
    assert!(response.metadata().get("x-key-expires-in").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_signing_key_policy_is_enforced_before_the_nodes_are_asked() {
    let shared = shared();
    let token = &shared.cluster.signer_token; // its API-key policy allows everything
    sign_with(token, &shared.tight, transfer("1eth"))
        .await
        .expect("within the key policy");
    let mut above = transfer("1eth");
    above.value = plus_one("1eth");
    let status = sign_with(token, &shared.tight, above).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status.message().contains(
            "policy max_value_per_tx: 1.000000000000000001 ETH > 1 ETH (signing key policy v"
        ),
        "{}",
        status.message()
    );
    // An older version cannot replace the newer one.
    let status = shared
        .cluster
        .admin()
        .set_key_policy(shardsign_proto::v1::SetKeyPolicyRequest {
            statement: Some(shared.tight_v1.clone()),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("not newer"),
        "{}",
        status.message()
    );
    // A policy signed by someone else is refused.
    let forged = OperatorPolicyKey::generate()
        .sign_key_policy(
            shared
                .cluster
                .statement_header(&shared.tight.key_id, u64::MAX / 2),
            &no_24h_cap(permissive_policy(&[1])),
            unix_now() + 86_400,
        )
        .unwrap();
    let status = shared
        .cluster
        .admin()
        .set_key_policy(shardsign_proto::v1::SetKeyPolicyRequest {
            statement: Some(forged),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("does not verify"),
        "{}",
        status.message()
    );
}

/// What a compromised coordinator would do: call two nodes directly, with the relay the
/// coordinator uses, for a transfer the key's policy forbids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_refuse_a_transfer_over_the_policy_even_from_the_coordinator() {
    let shared = shared();
    let (clients, current) = nodes_and_policy(&shared.tight.key_id).await;
    let tx = |value: &str| {
        let tx = UnsignedTransaction::Eip1559(shardsign_eth::Eip1559Transaction {
            chain_id: 1,
            nonce: 7,
            max_priority_fee_per_gas: parse_amount("t", "1gwei").unwrap(),
            max_fee_per_gas: parse_amount("t", "30gwei").unwrap(),
            gas_limit: 21_000,
            to: Some(shardsign_eth::Address::parse("to", ALICE).unwrap()),
            value: parse_amount("t", value).unwrap(),
            data: vec![],
            access_list: vec![],
        });
        tx.validate(&Limits::DEFAULT).unwrap();
        tx
    };
    let direct = |tx: UnsignedTransaction, policy: Vec<u8>| {
        let clients = clients.clone();
        let key_id = shared.tight.key_id.clone();
        async move {
            relay::sign_with_policy(
                &clients,
                [1, 2],
                &key_id,
                &Payload::Transaction(tx.clone()),
                tx.signing_hash(),
                &policy,
                None,
                None,
            )
            .await
        }
    };
    // The same path signs what the policy allows: the refusals below are the policy's doing.
    let results = direct(tx("0.5eth"), current.clone())
        .await
        .expect("within the policy");
    assert_eq!(results.len(), 2);

    let refused = direct(tx("2eth"), current.clone()).await.unwrap_err();
    assert_eq!(
        refused.status.code(),
        Code::PermissionDenied,
        "{:?}",
        refused.status
    );
    assert!(
        refused
            .status
            .message()
            .contains("policy max_value_per_tx: 2 ETH > 1 ETH"),
        "{}",
        refused.status.message()
    );
    let missing = direct(tx("2eth"), Vec::new()).await.unwrap_err();
    assert_eq!(
        missing.status.code(),
        Code::FailedPrecondition,
        "{:?}",
        missing.status
    );
    let older = direct(tx("2eth"), shared.tight_v1.encode_to_vec())
        .await
        .unwrap_err();
    assert_eq!(older.status.code(), Code::PermissionDenied);
    assert!(
        older.status.message().contains("is older than version"),
        "{}",
        older.status.message()
    );
    let forged = OperatorPolicyKey::generate()
        .sign_key_policy(
            shared
                .cluster
                .statement_header(&shared.tight.key_id, 1_000_000),
            &Policy {
                allowed_chain_ids: vec![1],
                max_value_per_tx: "unlimited".into(),
                allowed_recipients: vec!["*".into()],
                max_fee_per_gas: "unlimited".into(),
                max_total_fee: "unlimited".into(),
                ..Default::default()
            },
            unix_now() + 86_400,
        )
        .unwrap()
        .encode_to_vec();
    let forged = direct(tx("2eth"), forged).await.unwrap_err();
    assert_eq!(forged.status.code(), Code::PermissionDenied);
    assert!(
        forged.status.message().contains("does not verify"),
        "{}",
        forged.status.message()
    );
    // The nodes recorded the rejected policies as security events.
    let logs = shared.cluster.nodes.logs();
    assert!(
        logs.contains("signed policy rejected"),
        "security events logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_with_signatures_refusals_and_failed_logins() {
    use shardsign_tests::cluster::{metric_value, scrape};
    let shared = shared();
    let coordinator = shared.cluster.coordinator.metrics_address();
    let nodes: Vec<String> = shared
        .cluster
        .nodes
        .nodes
        .iter()
        .map(|n| n.metrics_address())
        .collect();
    let node_signatures = |scrapes: &[String]| -> f64 {
        scrapes
            .iter()
            .map(|s| {
                metric_value(
                    s,
                    "shardsign_node_sessions_completed_total{protocol=\"sign\"}",
                )
            })
            .sum()
    };
    let allowed =
        "shardsign_sign_requests_total{operation=\"sign_transaction\",decision=\"allowed\"}";
    let refused_rule = "shardsign_policy_refusals_total{rule=\"max_value_per_tx\"}";
    let before = scrape(&coordinator);
    let nodes_before: Vec<String> = nodes.iter().map(|a| scrape(a)).collect();

    let token = agent(base_policy()).await;
    for _ in 0..3 {
        sign_with(&token, &shared.key, transfer("0.1eth"))
            .await
            .expect("signed");
    }
    sign_with(&token, &shared.key, transfer("2eth"))
        .await
        .expect_err("over the cap");
    shared
        .cluster
        .signer_with(Some("not-a-key"))
        .who_am_i(WhoAmIRequest {})
        .await
        .expect_err("bad credential");

    let after = scrape(&coordinator);
    let nodes_after: Vec<String> = nodes.iter().map(|a| scrape(a)).collect();
    assert!(
        metric_value(&after, allowed) >= metric_value(&before, allowed) + 3.0,
        "{after}"
    );
    assert!(metric_value(&after, refused_rule) >= metric_value(&before, refused_rule) + 1.0);
    assert!(
        metric_value(&after, "shardsign_auth_failures_total")
            >= metric_value(&before, "shardsign_auth_failures_total") + 1.0
    );
    let latency = "shardsign_sign_duration_seconds_count{operation=\"sign_transaction\"}";
    assert!(metric_value(&after, latency) >= metric_value(&before, latency) + 3.0);
    for node in 1..=3 {
        assert_eq!(
            metric_value(
                &after,
                &format!("shardsign_node_available{{node=\"{node}\"}}")
            ),
            1.0,
            "{after}"
        );
    }
    // Each signature ran a session on two nodes.
    assert!(node_signatures(&nodes_after) >= node_signatures(&nodes_before) + 6.0);
    assert!(
        nodes_after
            .iter()
            .all(|s| metric_value(s, "shardsign_node_keys") >= 2.0)
    );
    // Nothing secret is exported.
    assert!(!after.contains(&token[25..]) && !after.contains("ss_test_"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signing_keys_24h_cap_holds_across_api_keys_at_the_coordinator_and_the_nodes() {
    let shared = shared();
    let key = shared.cluster.ceremony("capped-key", &[1]).await;
    let mut rules = no_24h_cap(permissive_policy(&[1]));
    rules.max_value_per_24h = "2wei".into();
    shared
        .cluster
        .set_key_policy(&key.key_id, rules)
        .await
        .expect("a key policy with a 24 h cap");
    // Two agents, each with room of its own: the key's cap counts both.
    let mut tokens = Vec::new();
    for _ in 0..2 {
        let created = shared
            .cluster
            .create_api_key(CreateApiKeyRequest {
                label: "agent".into(),
                scopes: vec!["sign".into()],
                key_ids: vec![key.key_id.clone()],
                policy: Some(base_policy()),
                ..Default::default()
            })
            .await;
        tokens.push(created.api_key);
    }
    let mut one_wei = transfer("0");
    one_wei.value = "1".into();
    for token in &tokens {
        sign_with(token, &key, one_wei.clone())
            .await
            .expect("within the key's 24 h cap");
    }
    let status = sign_with(&tokens[0], &key, one_wei.clone())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status.message().contains(
            "policy max_value_per_24h: 0.000000000000000002 ETH already signed on chain 1 in the last 24 h + 0.000000000000000001 ETH > 0.000000000000000002 ETH (signing key policy)"
        ),
        "{}",
        status.message()
    );
}
