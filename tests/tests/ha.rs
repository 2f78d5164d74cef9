//! Two coordinators sharing one PostgreSQL registry in front of the same three nodes (a
//! throw-away database on the server `SHARDSIGN_TEST_POSTGRES` names): caps, rate limits and
//! revocations hold across them, and a coordinator killed under load loses no request.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use shardsign_client::{Client, ClientConfig, Credential, TransactionBuilder};
use shardsign_proto::v1::{
    CreateApiKeyRequest, DisableKeyRequest, ListAuditRequest, RevokeApiKeyRequest,
    SetApiKeyPolicyRequest, VerifyAuditRequest,
};
use shardsign_tests::full::{Cluster, Signer, one_wei_transfer, permissive_policy};
use tonic::Code;

/// An API key for `key_id` made through the first coordinator.
async fn api_key(
    cluster: &Cluster,
    key_id: &str,
    policy: shardsign_proto::v1::Policy,
) -> (String, String) {
    let created = cluster
        .create_api_key(CreateApiKeyRequest {
            label: "ha agent".into(),
            scopes: vec!["read".into(), "sign".into()],
            key_ids: vec![key_id.to_string()],
            policy: Some(policy),
            ..Default::default()
        })
        .await;
    (created.info.unwrap().id, created.api_key)
}

fn transfer(key_id: &str, nonce: u64, value: &str) -> shardsign_proto::v1::SignTransactionRequest {
    let mut request = one_wei_transfer(key_id, nonce);
    if let Some(shardsign_proto::v1::sign_transaction_request::Transaction::Eip1559(tx)) =
        request.transaction.as_mut()
    {
        tx.value = value.into();
    }
    request
}

/// The two coordinators' signers for `token`, alternately.
fn signers(cluster: &Cluster, token: &str) -> [Signer; 2] {
    [
        cluster.signer_with(Some(token)),
        cluster.second_signer_with(Some(token)),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caps_rates_and_changes_hold_across_two_coordinators() {
    let cluster = Cluster::start_shared();
    let key = cluster.ceremony("ha", &[1]).await;
    cluster.allow_everything(&key).await;
    // The key made through the first coordinator is served by the second.
    let listed = cluster
        .second_signer_with(Some(&cluster.signer_token))
        .list_keys(shardsign_proto::v1::ListKeysRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(listed.keys.iter().any(|k| k.key_id == key.key_id));

    // 16 concurrent 0.01 ETH requests split over both against a 0.05 ETH cap: exactly 5 sign.
    let mut capped = permissive_policy(&[1]);
    capped.max_value_per_24h = "0.05eth".into();
    let (_, token) = api_key(&cluster, &key.key_id, capped).await;
    let [a, b] = signers(&cluster, &token);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..16u64 {
        let mut signer = if i % 2 == 0 { a.clone() } else { b.clone() };
        let request = transfer(&key.key_id, i, "10000000000000000");
        tasks.spawn(async move { signer.sign_transaction(request).await });
    }
    let (mut signed, mut refused) = (0, 0);
    while let Some(joined) = tasks.join_next().await {
        match joined.unwrap() {
            Ok(_) => signed += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
                assert!(
                    status.message().contains("max_value_per_24h"),
                    "{}",
                    status.message()
                );
                refused += 1;
            }
        }
    }
    assert_eq!((signed, refused), (5, 11));

    // 4 requests a minute between both coordinators: the fifth and sixth are refused.
    let mut limited = permissive_policy(&[1]);
    limited.requests_per_minute = 4;
    let (_, token) = api_key(&cluster, &key.key_id, limited).await;
    let mut pair = signers(&cluster, &token);
    let mut codes = Vec::new();
    for i in 0..6u64 {
        let outcome = pair[(i % 2) as usize]
            .sign_transaction(transfer(&key.key_id, 100 + i, "1"))
            .await;
        codes.push(outcome.err().map(|status| status.code()));
    }
    assert_eq!(
        codes,
        [
            None,
            None,
            None,
            None,
            Some(Code::ResourceExhausted),
            Some(Code::ResourceExhausted)
        ]
    );

    // Changes made through the first coordinator are honoured by the second's next request.
    let (id, token) = api_key(&cluster, &key.key_id, permissive_policy(&[1])).await;
    let mut on_second = cluster.second_signer_with(Some(&token));
    on_second
        .sign_transaction(transfer(&key.key_id, 200, "1"))
        .await
        .expect("a key made on the first signs on the second");
    // A policy change: chain 1 no longer allowed.
    cluster
        .admin()
        .set_api_key_policy(SetApiKeyPolicyRequest {
            id: id.clone(),
            policy: Some(permissive_policy(&[5])),
        })
        .await
        .unwrap();
    let status = on_second
        .sign_transaction(transfer(&key.key_id, 201, "1"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    // A revocation.
    cluster
        .admin()
        .revoke_api_key(RevokeApiKeyRequest { id: id.clone() })
        .await
        .unwrap();
    let status = on_second
        .sign_transaction(transfer(&key.key_id, 202, "1"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    // A disabled key.
    let signed = cluster.signed_disable(&key.key_id, cluster.next_policy_version(), "ha test");
    cluster
        .admin()
        .disable_key(DisableKeyRequest {
            key_id: key.key_id.clone(),
            statement: Some(signed),
        })
        .await
        .unwrap();
    let status = cluster
        .second_signer_with(Some(&cluster.signer_token))
        .sign_transaction(transfer(&key.key_id, 203, "1"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");

    // One audit chain with rows from both coordinators, verified by either.
    for mut admin in [cluster.admin(), cluster.second_admin()] {
        let report = admin
            .verify_audit(VerifyAuditRequest {})
            .await
            .unwrap()
            .into_inner();
        assert!(report.intact, "{report:?}");
        assert!(report.records > 30, "{report:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_killed_under_load_loses_no_request() {
    const REQUESTS: usize = 1000;
    const CLIENTS: usize = 16;
    let mut cluster = Cluster::start_shared();
    let key = cluster.ceremony("ha-kill", &[1]).await;
    cluster.allow_everything(&key).await;
    let (first, second) = (
        format!("https://{}", cluster.coordinator.address),
        format!("https://{}", cluster.second().address),
    );
    let done = Arc::new(AtomicUsize::new(0));
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for client_index in 0..CLIENTS {
        // Half the clients start on each coordinator.
        let endpoints = if client_index.is_multiple_of(2) {
            format!("{first},{second}")
        } else {
            format!("{second},{first}")
        };
        let config = ClientConfig::new(
            endpoints,
            Credential::api_key(cluster.signer_token.clone()).unwrap(),
        )
        .with_ca_pem(cluster.nodes.ca.cert_pem());
        let client = Client::connect(config).await.unwrap();
        let (key_id, done, next) = (key.key_id.clone(), done.clone(), next.clone());
        tasks.spawn(async move {
            let mut signed = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::SeqCst);
                if n >= REQUESTS {
                    return signed;
                }
                let tx = TransactionBuilder::eip1559(1)
                    .nonce(n as u64)
                    .to_str("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed")
                    .unwrap()
                    .value_str("1wei")
                    .unwrap()
                    .fees_str("30gwei", "1gwei")
                    .unwrap()
                    .build()
                    .unwrap();
                let request_id = format!("ha-{n}");
                // The client checks the reply is this transaction, signed by the key.
                let reply = client
                    .sign_transaction_with_id(&key_id, &tx, &request_id)
                    .await
                    .unwrap_or_else(|error| panic!("request {n} failed: {error}"));
                signed.push((request_id, reply.tx_hash));
                done.fetch_add(1, Ordering::SeqCst);
            }
        });
    }
    // A third of the way through, the first coordinator dies mid-request.
    while done.load(Ordering::SeqCst) < REQUESTS / 3 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    cluster.coordinator.kill();
    let at_kill = done.load(Ordering::SeqCst);
    let mut replies: HashMap<String, [u8; 32]> = HashMap::new();
    while let Some(joined) = tasks.join_next().await {
        for (request_id, tx_hash) in joined.expect("no client saw a failed request") {
            assert!(replies.insert(request_id, tx_hash).is_none());
        }
    }
    assert_eq!(replies.len(), REQUESTS, "every request answered once");
    // What the failover looked like (for the record; it varies with timing).
    let log = cluster.second().log_text();
    eprintln!(
        "first coordinator killed after {} of {REQUESTS}; on the second: {} request ids taken over from a lapsed or released claim, {} replies of calls that finished meanwhile",
        at_kill,
        log.matches("claimed a request id another call held")
            .count(),
        log.matches("another call signed this request id meanwhile")
            .count()
    );

    // The audit verifies, and no request id was signed for two different payloads.
    let mut admin = cluster.second_admin();
    let report = admin
        .verify_audit(VerifyAuditRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(report.intact, "{report:?}");
    let mut signed_as: HashMap<String, Vec<u8>> = HashMap::new();
    let mut after = 0;
    loop {
        let page = admin
            .list_audit(ListAuditRequest {
                after_seq: after,
                limit: 1000,
            })
            .await
            .unwrap()
            .into_inner();
        let Some(last) = page.records.last() else {
            break;
        };
        after = last.seq;
        for record in page.records {
            if record.operation == "sign_transaction" && record.decision == "allowed" {
                let earlier = signed_as
                    .entry(record.request_id.clone())
                    .or_insert_with(|| record.tx_hash.clone());
                assert_eq!(
                    *earlier, record.tx_hash,
                    "request {} signed twice",
                    record.request_id
                );
            }
        }
    }
    for (request_id, tx_hash) in &replies {
        assert_eq!(
            signed_as.get(request_id).map(Vec::as_slice),
            Some(tx_hash.as_slice()),
            "{request_id} is audited as what its client got"
        );
    }
}
