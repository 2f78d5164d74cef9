//! The `shardsign` CLI against a real cluster, as an operator and a script would use it: the
//! ceremony with progress events, a signed key policy, an agent key, signing (checked with
//! eth-account), a policy refusal as one clear line with a non-zero exit, API-key rotation and
//! revocation, the audit check and cluster status, all with `--json`.

use serde_json::{Value, json};
use shardsign_tests::cli::Cli;
use shardsign_tests::eth_account;
use shardsign_tests::full::Cluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_and_an_agent_work_through_the_cli() {
    let cluster = Cluster::start();
    let cli = Cli::new(&cluster);

    // The ceremony: progress events, then the key.
    let output = cli.run(
        &[
            "--json",
            "keys",
            "create",
            "--label",
            "cli",
            "--chain-id",
            "1,5",
            "--key-id",
            "cli-key",
        ],
        None,
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let events: Vec<Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"started"));
    assert_eq!(kinds.iter().filter(|k| **k == "node_joined").count(), 3);
    assert_eq!(kinds.iter().filter(|k| **k == "round").count(), 4);
    let address = events.last().unwrap()["key"]["address"]
        .as_str()
        .unwrap()
        .to_string();

    // A signed key policy and an agent key, from JSON files.
    std::fs::write(
        cli.path("key-policy.json"),
        json!({"allowed_chain_ids": [1, 5], "max_value_per_tx": "1eth", "allowed_recipients": ["*"],
               "max_fee_per_gas": "100gwei", "max_total_fee": "0.1eth"})
        .to_string(),
    )
    .unwrap();
    let policy_key = cli.path("policy.key").display().to_string();
    let key_policy_file = cli.path("key-policy.json").display().to_string();
    let set = cli.json(
        &[
            "policy",
            "set",
            "--key",
            "cli-key",
            "--policy-file",
            &key_policy_file,
            "--policy-key",
            &policy_key,
            "--cluster-id",
            "test-cluster",
        ],
        None,
    );
    assert_eq!(set["version"], 1);
    assert_eq!(set["nodes_updated"], json!([1, 2, 3]));
    std::fs::write(
        cli.path("agent.json"),
        json!({"allowed_chain_ids": [1], "max_value_per_tx": "0.1eth", "max_value_per_24h": "1eth", "allowed_recipients": ["*"],
               "max_fee_per_gas": "100gwei", "max_total_fee": "0.1eth", "requests_per_minute": 100})
        .to_string(),
    )
    .unwrap();
    let agent_file = cli.path("agent.json").display().to_string();
    let created = cli.json(
        &[
            "apikeys",
            "create",
            "--label",
            "agent",
            "--scopes",
            "sign,read",
            "--key",
            "cli-key",
            "--policy-file",
            &agent_file,
            "--expires-in",
            "3d",
        ],
        None,
    );
    let agent = created["api_key"].as_str().unwrap().to_string();
    let agent_id = created["info"]["id"].as_str().unwrap().to_string();
    let whoami = cli.json(&["apikeys", "whoami"], Some(&agent));
    assert_eq!(whoami["id"], agent_id.as_str());
    assert_eq!(whoami["policy"]["max_value_per_tx"], "100000000000000000");

    // Sign: legacy and EIP-1559; eth-account recovers the key's address from both.
    let mut raws = Vec::new();
    for extra in [vec![], vec!["--gas-price", "20gwei"]] {
        let mut args = vec![
            "sign",
            "tx",
            "--key",
            "cli-key",
            "--chain-id",
            "1",
            "--nonce",
            "3",
            "--to",
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
            "--value",
            "0.05eth",
        ];
        args.extend(extra);
        let signed = cli.json(&args, Some(&agent));
        assert_eq!(signed["sender"], address.as_str());
        raws.push(signed["raw_transaction"].as_str().unwrap().to_string());
    }
    let reply = eth_account::call(&json!({ "recover_txs": raws }));
    for recovered in reply["recovered_txs"].as_array().unwrap() {
        assert_eq!(recovered["sender"], address.as_str());
    }
    let message = cli.run(
        &["sign", "message", "--key", "cli-key", "--message", "hi"],
        Some(&agent),
    );
    assert!(
        !message.status.success(),
        "messages are not granted to this agent"
    );

    // Coordinators behind a list of endpoints: the first one down, the CLI (the Rust client)
    // fails over to the next and signs.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let down = format!("https://{}", closed.local_addr().unwrap());
    drop(closed);
    let listed = format!("{down},https://{}", cluster.coordinator.address);
    let failed_over = cli.run_at(
        Some(&listed),
        &[
            "--json",
            "sign",
            "tx",
            "--key",
            "cli-key",
            "--chain-id",
            "1",
            "--nonce",
            "9",
            "--to",
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
            "--value",
            "0.01eth",
            "--request-id",
            "cli-failover",
        ],
        Some(&agent),
    );
    assert!(
        failed_over.status.success(),
        "{}",
        String::from_utf8_lossy(&failed_over.stderr)
    );
    let only_down = cli.run_at(Some(&down), &["keys", "list"], None);
    assert!(!only_down.status.success());
    assert!(
        String::from_utf8_lossy(&only_down.stderr).contains("cannot connect to"),
        "{}",
        String::from_utf8_lossy(&only_down.stderr)
    );

    // A refusal: one line, the rule and the values, exit code 1, no backtrace.
    let refused = cli.run(
        &[
            "sign",
            "tx",
            "--key",
            "cli-key",
            "--chain-id",
            "1",
            "--to",
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
            "--value",
            "0.5eth",
        ],
        Some(&agent),
    );
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(
        stderr.trim(),
        "error: refused: policy max_value_per_tx: 0.5 ETH > 0.1 ETH",
        "{stderr}"
    );
    let bad = cli.run(
        &[
            "sign",
            "tx",
            "--key",
            "cli-key",
            "--chain-id",
            "1",
            "--to",
            "0x12",
        ],
        Some(&agent),
    );
    assert_eq!(bad.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&bad.stderr).lines().count(), 1);

    // Rotate and revoke.
    let rotated = cli.json(&["apikeys", "rotate", &agent_id, "--grace", "0s"], None);
    let new_agent = rotated["api_key"].as_str().unwrap().to_string();
    let old = cli.run(&["apikeys", "whoami"], Some(&agent));
    // With no grace the old secret is gone at once.
    assert!(String::from_utf8_lossy(&old.stderr).contains("unauthenticated: invalid API key"));
    cli.json(&["apikeys", "whoami"], Some(&new_agent));
    let revoked = cli.json(&["apikeys", "revoke", &agent_id], None);
    assert_eq!(revoked["status"], "revoked");
    let after = cli.run(&["apikeys", "whoami"], Some(&new_agent));
    assert!(String::from_utf8_lossy(&after.stderr).contains("revoked"));
    let listed = cli.json(&["apikeys", "list"], None);
    assert!(
        !listed.to_string().contains(&new_agent[25..]),
        "no secret in listings"
    );

    // Audit, status, keys.
    let audit = cli.json(&["audit", "verify"], None);
    assert_eq!(audit["intact"], true);
    archive_audit_segments(&cli, audit["records"].as_u64().unwrap());
    let status = cli.json(&["cluster", "status"], None);
    assert_eq!(status["can_sign"], true);
    let keys = cli.json(&["keys", "list"], None);
    assert!(
        keys.as_array()
            .unwrap()
            .iter()
            .any(|k| k["key_id"] == "cli-key")
    );
    // A refresh: progress, the key at epoch 1 with its address, and the note about old backups.
    let output = cli.run(&["--json", "keys", "refresh", "cli-key"], None);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let events: Vec<Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let done = events.iter().find(|e| e["event"] == "done").expect("done");
    assert_eq!(done["key"]["epoch"], 1);
    assert_eq!(done["key"]["address"], address.as_str());
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "note" && e["note"].as_str().unwrap().contains("destroy them")),
        "{events:?}"
    );
    let shown = cli.json(&["keys", "show", "cli-key"], None);
    assert_eq!(shown["epoch"], 1);
    // The fast refresh (OT state kept, re-keyed): the next epoch, the same address.
    let fast = cli.run(&["--json", "keys", "refresh", "cli-key", "--fast"], None);
    assert!(
        fast.status.success(),
        "{}",
        String::from_utf8_lossy(&fast.stderr)
    );
    let done = String::from_utf8_lossy(&fast.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|e| e["event"] == "done")
        .expect("done");
    assert_eq!(done["key"]["epoch"], 2);
    assert_eq!(done["key"]["address"], address.as_str());
    let shown = cli.json(&["policy", "show", "--key", "cli-key"], None);
    assert_eq!(shown["version"], 1);
    // Renewal re-signs the same rules as the next version with a fresh validity; one that
    // expires within 7 days is a warning in cluster status.
    let renewed = cli.json(
        &[
            "policy",
            "renew",
            "--all",
            "--policy-key",
            &policy_key,
            "--cluster-id",
            "test-cluster",
            "--valid-for",
            "3d",
        ],
        None,
    );
    assert_eq!(renewed["version"], 2, "{renewed}");
    let shown = cli.json(&["policy", "show", "--key", "cli-key"], None);
    assert_eq!(shown["version"], 2);
    assert_eq!(
        shown["rules"]["max_value_per_tx"], "1eth",
        "the same rules, re-signed"
    );
    let validity =
        shown["not_after_unix"].as_i64().unwrap() - shown["issued_at_unix"].as_i64().unwrap();
    assert_eq!(validity, 3 * 86_400);
    let status = cli.json(&["cluster", "status"], None);
    let warnings = status["warnings"].as_array().unwrap();
    assert!(
        warnings.iter().any(|w| w
            .as_str()
            .unwrap()
            .contains("key policy of `cli-key` (v2) expires at")),
        "{status}"
    );

    // The coordinator gone: the client says unavailable, in one line.
    let mut cluster = cluster;
    cluster.coordinator.stop();
    let down = cli.run(&["keys", "list"], None);
    assert_eq!(down.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&down.stderr);
    assert!(
        stderr.starts_with("error: unavailable: cannot connect"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

/// `audit export --before` writes the records before a date as a segment that verifies offline
/// and that the live chain links to; a second segment continues from the first; an edited
/// segment fails naming its record.
fn archive_audit_segments(cli: &Cli, records: u64) {
    assert!(records >= 4, "enough records to split: {records}");
    let everything = cli.path("all.jsonl");
    let tomorrow = format!("@{}", shardsign_request::unix_now_ms() / 1000 + 86_400);
    let all = cli.json(
        &[
            "audit",
            "export",
            "--before",
            &tomorrow,
            "--out",
            everything.to_str().unwrap(),
        ],
        None,
    );
    assert!(all["records"].as_u64().unwrap() >= records, "{all}");
    // Two segments: records 1..=3, then from 4 on; the second continues from the first's head.
    let first_path = cli.path("first.jsonl");
    let text = std::fs::read_to_string(&everything).unwrap();
    let third: Value = serde_json::from_str(text.lines().nth(3).unwrap()).unwrap();
    let cut_ms = third["at_ms"].as_i64().unwrap() + 1;
    let cut = format!("@{}.{:03}", cut_ms / 1000, cut_ms % 1000);
    let first = cli.json(
        &[
            "audit",
            "export",
            "--before",
            &cut,
            "--out",
            first_path.to_str().unwrap(),
        ],
        None,
    );
    let last = first["last_seq"].as_u64().unwrap();
    assert!(last >= 3, "{first}");
    assert!(first["next_record_links"].as_u64().is_some(), "{first}");
    let second_path = cli.path("second.jsonl");
    let after = last.to_string();
    let second = cli.json(
        &[
            "audit",
            "export",
            "--before",
            &tomorrow,
            "--after",
            &after,
            "--out",
            second_path.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(second["first_seq"].as_u64().unwrap(), last + 1);
    assert_eq!(second["prev_hash"], first["head_hash"]);
    let verified = cli.json(
        &["audit", "verify-segment", first_path.to_str().unwrap()],
        None,
    );
    assert_eq!(verified["head_hash"], first["head_hash"]);
    // An edited record: the segment no longer verifies, and the error names the record.
    let edited_path = cli.path("edited.jsonl");
    let mut lines: Vec<String> = std::fs::read_to_string(&first_path)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    let mut record: Value = serde_json::from_str(&lines[2]).unwrap();
    record["detail"] = Value::from("edited afterwards");
    lines[2] = record.to_string();
    std::fs::write(&edited_path, lines.join("\n")).unwrap();
    let output = cli.run(
        &["audit", "verify-segment", edited_path.to_str().unwrap()],
        None,
    );
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("altered"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
