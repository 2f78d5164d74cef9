//! An API key's whole life on a cluster of its own (it restarts the coordinator and edits its
//! database): create, use, rotate with a grace period, revoke, expire; the rolling 24-hour cap
//! under 16 concurrent requests and across a restart; the audit chain verified, then broken on
//! purpose; and at the end, no API-key secret anywhere in logs, databases or audit records.

use std::time::{Duration, Instant};

use shardsign_proto::v1::sign_transaction_request::Transaction;
use shardsign_proto::v1::{
    ApiKeyStatus, CreateApiKeyRequest, Eip1559Transaction, Key, ListApiKeysRequest,
    ListAuditRequest, Policy, RevokeApiKeyRequest, RotateApiKeyRequest, SignTransactionRequest,
    SignTransactionResponse, VerifyAuditRequest, WhoAmIRequest,
};
use shardsign_tests::full::{Cluster, permissive_policy};
use tonic::{Code, Status};

async fn sign(
    cluster: &Cluster,
    token: &str,
    key: &Key,
    value: &str,
) -> Result<SignTransactionResponse, Status> {
    cluster
        .signer_with(Some(token))
        .sign_transaction(SignTransactionRequest {
            key_id: key.key_id.clone(),
            request_id: format!("req-{}", hex::encode(rand::random::<[u8; 12]>())),
            transaction: Some(Transaction::Eip1559(Eip1559Transaction {
                chain_id: 1,
                nonce: 0,
                max_priority_fee_per_gas: "1".into(),
                max_fee_per_gas: "1000000000".into(),
                gas_limit: 21_000,
                to: "0x00000000000000000000000000000000000A11cE".into(),
                value: value.into(),
                data: vec![],
                access_list: vec![],
            })),
        })
        .await
        .map(|r| r.into_inner())
}

/// Polls `check` until it returns `Some`, for at most `limit` (a wait on a condition, not a
/// sleep standing in for one).
async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    limit: Duration,
    mut check: impl FnMut() -> F,
) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            started.elapsed() < limit,
            "condition not reached within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_key_lives_rotates_dies_and_leaves_an_intact_trail() {
    let mut cluster = Cluster::start();
    let key = cluster.ceremony("lifecycle", &[1]).await;
    cluster.allow_everything(&key).await;
    let mut secrets: Vec<String> = vec![
        cluster.admin_token.clone(),
        cluster.signer_token.clone(),
        cluster.bootstrap_token.clone(),
    ];

    // Create and use.
    let mut policy = permissive_policy(&[1]);
    policy.max_value_per_24h = "0.05eth".into();
    let created = cluster
        .create_api_key(CreateApiKeyRequest {
            label: "agent-7".into(),
            scopes: vec!["sign".into()],
            key_ids: vec![key.key_id.clone()],
            policy: Some(policy),
            ..Default::default()
        })
        .await;
    let id = created.info.as_ref().unwrap().id.clone();
    let first = created.api_key.clone();
    secrets.push(first.clone());
    assert!(first.starts_with(&format!("ss_test_{id}_")) && first.len() == 89);
    sign(&cluster, &first, &key, "0")
        .await
        .expect("a new key signs");
    let listed = cluster
        .admin()
        .list_api_keys(ListApiKeysRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(
        !format!("{listed:?}").contains(&first[25..]),
        "listing never shows a secret"
    );

    // Rotate with the default grace: old and new both work.
    let rotated = cluster
        .admin()
        .rotate_api_key(RotateApiKeyRequest {
            id: id.clone(),
            grace_seconds: None,
        })
        .await
        .unwrap()
        .into_inner();
    let second = rotated.api_key.clone();
    secrets.push(second.clone());
    let grace_until = rotated.info.unwrap().previous_secret_valid_until_unix;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (now + 86_400 - 60..=now + 86_400 + 1).contains(&grace_until),
        "{grace_until}"
    );
    sign(&cluster, &first, &key, "0")
        .await
        .expect("old secret within its grace");
    sign(&cluster, &second, &key, "0")
        .await
        .expect("new secret");

    // Rotate again with a 2 s grace: the second secret works now and stops after the grace.
    let third = cluster
        .admin()
        .rotate_api_key(RotateApiKeyRequest {
            id: id.clone(),
            grace_seconds: Some(2),
        })
        .await
        .unwrap()
        .into_inner()
        .api_key;
    secrets.push(third.clone());
    let rotated_at = Instant::now();
    sign(&cluster, &second, &key, "0")
        .await
        .expect("inside the grace period");
    let status = eventually(Duration::from_secs(20), || async {
        sign(&cluster, &second, &key, "0").await.err()
    })
    .await;
    assert!(
        rotated_at.elapsed() >= Duration::from_secs(2),
        "not before the grace ends"
    );
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(
        status.message().contains("grace period is over"),
        "{}",
        status.message()
    );
    sign(&cluster, &third, &key, "0")
        .await
        .expect("only the new one after the grace");

    // Revoke: the next call is refused, and says why.
    let revoked = cluster
        .admin()
        .revoke_api_key(RevokeApiKeyRequest { id: id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(revoked.status, ApiKeyStatus::Revoked as i32);
    let status = sign(&cluster, &third, &key, "0").await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(
        status.message().contains("was revoked at"),
        "{}",
        status.message()
    );

    // Expiry: a 2-second key works, carries the header, then says it expired.
    let short = cluster
        .create_api_key(CreateApiKeyRequest {
            label: "short-lived".into(),
            scopes: vec!["read".into()],
            all_keys: true,
            expires_in_seconds: 2,
            ..Default::default()
        })
        .await
        .api_key;
    secrets.push(short.clone());
    let whoami = cluster
        .signer_with(Some(&short))
        .who_am_i(WhoAmIRequest {})
        .await
        .expect("not yet expired");
    assert!(whoami.metadata().get("x-key-expires-in").is_some());
    let status = eventually(Duration::from_secs(20), || async {
        cluster
            .signer_with(Some(&short))
            .who_am_i(WhoAmIRequest {})
            .await
            .err()
    })
    .await;
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(
        status.message().contains("expired at"),
        "{}",
        status.message()
    );

    // The 24 h cap under 16 concurrent requests: 0.05 ETH allows exactly five of 0.01 ETH.
    let mut cap = permissive_policy(&[1]);
    cap.max_value_per_24h = "0.05eth".into();
    let spender = cluster
        .create_api_key(CreateApiKeyRequest {
            label: "spender".into(),
            scopes: vec!["sign".into()],
            all_keys: true,
            policy: Some(cap),
            ..Default::default()
        })
        .await
        .api_key;
    secrets.push(spender.clone());
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let signer = cluster.signer_with(Some(&spender));
        let key_id = key.key_id.clone();
        tasks.spawn(async move {
            let mut signer = signer;
            signer
                .sign_transaction(SignTransactionRequest {
                    key_id,
                    request_id: format!("spend-{}", hex::encode(rand::random::<[u8; 12]>())),
                    transaction: Some(Transaction::Eip1559(Eip1559Transaction {
                        chain_id: 1,
                        nonce: 1,
                        max_priority_fee_per_gas: "1".into(),
                        max_fee_per_gas: "1000000000".into(),
                        gas_limit: 21_000,
                        to: "0x00000000000000000000000000000000000A11cE".into(),
                        value: "10000000000000000".into(),
                        data: vec![],
                        access_list: vec![],
                    })),
                })
                .await
        });
    }
    let (mut signed, mut refused) = (0, 0);
    while let Some(outcome) = tasks.join_next().await {
        match outcome.unwrap() {
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
    assert_eq!((signed, refused), (5, 11), "never more than the cap");

    // A restart keeps the counters (and the keys).
    cluster.coordinator.stop();
    cluster.coordinator.start();
    let status = sign(&cluster, &spender, &key, "1").await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status
            .message()
            .contains("0.05 ETH already signed on chain 1 in the last 24 h"),
        "{}",
        status.message()
    );
    sign(&cluster, &spender, &key, "0")
        .await
        .expect("keys survive the restart");

    // The audit chain is intact and records decisions, never secrets.
    let report = cluster
        .admin()
        .verify_audit(VerifyAuditRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(report.intact, "{report:?}");
    assert!(report.records >= 30, "{report:?}");
    let records = cluster
        .admin()
        .list_audit(ListAuditRequest {
            after_seq: 0,
            limit: 1000,
        })
        .await
        .unwrap()
        .into_inner()
        .records;
    assert_eq!(records.len() as u64, report.records);
    let refused_spend = records
        .iter()
        .find(|r| r.decision == "refused" && r.detail.contains("max_value_per_24h"))
        .expect("refusals are recorded with their rule");
    assert!(records.iter().any(|r| r.decision == "allowed"
        && r.operation == "sign_transaction"
        && r.tx_hash.len() == 32));
    assert!(
        records
            .iter()
            .any(|r| r.operation == "revoke_api_key" && r.detail.contains(&id))
    );
    assert!(
        records
            .iter()
            .any(|r| r.operation == "create_api_key" && r.api_key_id == "bootstrap")
    );

    // Leak test over everything this run wrote.
    let db = cluster.coordinator.dir.join("coordinator.db");
    let mut haystacks = vec![
        (
            "coordinator log",
            cluster.coordinator.log_text().into_bytes(),
        ),
        ("node logs", cluster.nodes.logs().into_bytes()),
        ("audit records", format!("{records:?}").into_bytes()),
    ];
    for suffix in ["", "-wal", "-shm"] {
        let path = db.with_file_name(format!("coordinator.db{suffix}"));
        if let Ok(bytes) = std::fs::read(&path) {
            haystacks.push(("coordinator database", bytes));
        }
    }
    for secret in &secrets {
        // The whole key, and its secret part alone (API keys); bootstrap tokens whole.
        let needles = [secret.as_str(), secret.get(25..).unwrap_or(secret)];
        for (what, bytes) in &haystacks {
            for needle in needles {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                    "a secret was found in the {what}"
                );
            }
        }
    }

    // Edit a record directly in the database: verification names it.
    let conn = rusqlite::Connection::open(&db).unwrap();
    let blocked = conn.execute(
        "UPDATE audit SET decision = 'allowed' WHERE seq = ?1",
        [refused_spend.seq as i64],
    );
    assert!(blocked.is_err(), "the table refuses updates");
    conn.execute_batch("DROP TRIGGER audit_no_update").unwrap();
    conn.execute(
        "UPDATE audit SET decision = 'allowed' WHERE seq = ?1",
        [refused_spend.seq as i64],
    )
    .unwrap();
    drop(conn);
    let report = cluster
        .admin()
        .verify_audit(VerifyAuditRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(!report.intact);
    assert_eq!(report.first_broken_seq, refused_spend.seq, "{report:?}");
    assert!(report.problem.contains("altered"), "{}", report.problem);
    let _ = Policy::default();
}
