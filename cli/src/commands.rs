//! The API commands: keys, signing, API keys, policies, audit, cluster status.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{Context, anyhow, bail};
use clap::{Args, Subcommand};
use prost::Message;
use serde_json::{Value, json};
use shardsign_client::TransactionBuilder;
use shardsign_client::api;
use shardsign_eth::parse_amount;
use shardsign_policy::OperatorPolicyKey;

use crate::context::{Global, read_secret};
use crate::output::Out;
use crate::policy_file::PolicyFile;

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Run the key-generation ceremony on all three nodes; prints the new key and address.
    Create {
        #[arg(long)]
        label: String,
        /// Chain ids the key may sign for (repeat or comma-separate).
        #[arg(long = "chain-id", value_delimiter = ',', required = true)]
        chain_ids: Vec<u64>,
        /// The key id (default: generated).
        #[arg(long)]
        key_id: Option<String>,
    },
    List,
    Show {
        key_id: String,
    },
    Disable {
        key_id: String,
    },
}

#[derive(Subcommand)]
pub enum SignCommand {
    /// Sign a transaction: EIP-1559 by default, legacy (EIP-155) with --gas-price.
    Tx(TxArgs),
    /// Sign an EIP-191 personal message.
    Message {
        #[arg(long)]
        key: String,
        /// The message text (UTF-8).
        #[arg(long, conflicts_with = "hex")]
        message: Option<String>,
        /// The message bytes as hex.
        #[arg(long)]
        hex: Option<String>,
    },
}

#[derive(Args)]
pub struct TxArgs {
    #[arg(long)]
    key: String,
    #[arg(long)]
    chain_id: u64,
    #[arg(long, default_value_t = 0)]
    nonce: u64,
    /// Recipient; omit to create a contract.
    #[arg(long)]
    to: Option<String>,
    /// Amount: wei, or with a unit (0.1eth, 20gwei).
    #[arg(long, default_value = "0")]
    value: String,
    #[arg(long, default_value_t = 21_000)]
    gas: u64,
    /// EIP-1559 fee cap.
    #[arg(long, default_value = "30gwei")]
    max_fee: String,
    /// EIP-1559 tip.
    #[arg(long, default_value = "1gwei")]
    priority_fee: String,
    /// Legacy gas price: makes an EIP-155 legacy transaction.
    #[arg(long)]
    gas_price: Option<String>,
    /// Call data as hex.
    #[arg(long, default_value = "")]
    data: String,
}

#[derive(Subcommand)]
pub enum ApiKeysCommand {
    /// Create an API key; its secret is printed once.
    Create {
        #[arg(long)]
        label: String,
        /// read, sign, admin (comma-separated).
        #[arg(long, value_delimiter = ',', required = true)]
        scopes: Vec<String>,
        /// Signing keys it may use (repeat or comma-separate).
        #[arg(long = "key", value_delimiter = ',')]
        keys: Vec<String>,
        /// Every signing key.
        #[arg(long, conflicts_with = "keys")]
        all_keys: bool,
        /// Lifetime: 3600s, 12h, 30d (default: never expires).
        #[arg(long)]
        expires_in: Option<String>,
        /// The policy as JSON (see `shardsign policy --help`); default: deny everything.
        #[arg(long)]
        policy_file: Option<PathBuf>,
    },
    List,
    /// Issue a new secret; the old one keeps working for the grace period.
    Rotate {
        id: String,
        /// 0s to 30d (default 24h).
        #[arg(long)]
        grace: Option<String>,
    },
    Revoke {
        id: String,
    },
    /// Replace an API key's policy.
    SetPolicy {
        id: String,
        #[arg(long)]
        policy_file: PathBuf,
    },
    /// The presented key: its scopes, keys, policy and expiry.
    Whoami,
}

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Create the operator's policy key (secret to a 0600 file; prints the public key to
    /// configure on nodes and coordinator as `policy_public_key`).
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign a signing key's policy with the operator's policy key and set it on the cluster.
    Set {
        #[arg(long)]
        key: String,
        #[arg(long)]
        policy_file: PathBuf,
        /// The operator's policy key file (default: the dev cluster's).
        #[arg(long)]
        policy_key: Option<PathBuf>,
        /// The cluster id the policy is for (default: the dev cluster's).
        #[arg(long)]
        cluster_id: Option<String>,
        /// Version (default: the current one + 1).
        #[arg(long)]
        version: Option<u64>,
    },
    Show {
        #[arg(long)]
        key: String,
    },
    /// Print the public half of a policy key (for `policy_public_key` in configs).
    PublicKey {
        #[arg(long)]
        policy_key: PathBuf,
    },
}

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Walk the hash chain; exit 1 if it is broken.
    Verify,
    List {
        #[arg(long, default_value_t = 0)]
        after: u64,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

fn key_json(key: &api::Key) -> Value {
    json!({
        "key_id": key.key_id, "label": key.label, "address": key.address,
        "public_key": hex::encode(&key.public_key), "created_at_unix": key.created_at_unix,
        "status": if key.status == api::KeyStatus::Disabled as i32 { "disabled" } else { "active" },
        "allowed_chain_ids": key.allowed_chain_ids,
    })
}

fn key_line(key: &api::Key) -> String {
    let status = if key.status == api::KeyStatus::Disabled as i32 {
        " (disabled)"
    } else {
        ""
    };
    format!(
        "{}  {}  {}  chains {:?}{status}",
        key.key_id, key.address, key.label, key.allowed_chain_ids
    )
}

/// Runs the ceremony with live progress; returns the new key.
pub async fn create_key(
    global: &Global,
    client: &shardsign_client::Client,
    out: Out,
    request: api::CreateKeyRequest,
) -> anyhow::Result<api::Key> {
    let _ = global;
    use api::create_key_event::Event;
    let mut stream = client
        .admin()
        .create_key(request)
        .await
        .map_err(shardsign_client::ClientError::from)?
        .into_inner();
    let terminal = std::io::stderr().is_terminal() && !out.json;
    let (mut joined, mut round) = (0u32, 0u32);
    let bar = |joined: u32, round: u32| {
        let done = (joined + round * 2) as usize; // 3 joins + 4 rounds = 11 steps
        let width = 22;
        let filled = (done * width / 11).min(width);
        format!(
            "\r  key ceremony [{}{}] nodes {joined}/3, round {round}/4",
            "#".repeat(filled),
            " ".repeat(width - filled)
        )
    };
    while let Some(event) = stream
        .message()
        .await
        .map_err(shardsign_client::ClientError::from)?
    {
        match event.event {
            Some(Event::Started(started)) => out.event(
                &json!({"event": "started", "key_id": started.key_id}),
                || format!("key ceremony for `{}` started", started.key_id),
            ),
            Some(Event::NodeJoined(node)) => {
                joined += 1;
                if terminal {
                    eprint!("{}", bar(joined, round));
                } else {
                    out.event(
                        &json!({"event": "node_joined", "node_id": node.node_id}),
                        || format!("  node {} joined", node.node_id),
                    );
                }
            }
            Some(Event::Round(r)) => {
                round = r.round;
                if terminal {
                    eprint!("{}", bar(joined, round));
                } else {
                    out.event(&json!({"event": "round", "round": r.round}), || {
                        format!("  round {}/4", r.round)
                    });
                }
            }
            Some(Event::Done(key)) => {
                if terminal {
                    eprintln!("{}", bar(3, 4));
                }
                return Ok(key);
            }
            Some(Event::Failed(failed)) => {
                if terminal {
                    eprintln!();
                }
                bail!("key ceremony failed: {}", failed.reason);
            }
            None => {}
        }
    }
    bail!("the ceremony's event stream ended without a result")
}

pub async fn keys(command: KeysCommand, global: &Global, out: Out) -> anyhow::Result<()> {
    let client = global.client().await?;
    match command {
        KeysCommand::Create {
            label,
            chain_ids,
            key_id,
        } => {
            let request = api::CreateKeyRequest {
                label,
                allowed_chain_ids: chain_ids,
                key_id: key_id.unwrap_or_default(),
            };
            let key = create_key(global, &client, out, request).await?;
            out.show(&json!({"event": "done", "key": key_json(&key)}), || {
                format!("created key {} with address {}", key.key_id, key.address)
            });
        }
        KeysCommand::List => {
            let keys = client.list_keys().await?;
            out.show(&Value::Array(keys.iter().map(key_json).collect()), || {
                if keys.is_empty() {
                    "no keys".into()
                } else {
                    keys.iter().map(key_line).collect::<Vec<_>>().join("\n")
                }
            });
        }
        KeysCommand::Show { key_id } => {
            let key = client.get_key(&key_id).await?;
            out.show(&key_json(&key), || key_line(&key));
        }
        KeysCommand::Disable { key_id } => {
            let key = client
                .with_retries(|_| {
                    let mut admin = client.admin();
                    let request = api::DisableKeyRequest {
                        key_id: key_id.clone(),
                    };
                    async move { admin.disable_key(request).await }
                })
                .await?;
            out.show(&key_json(&key), || format!("disabled {}", key.key_id));
        }
    }
    Ok(())
}

fn hex_bytes(field: &str, text: &str) -> anyhow::Result<Vec<u8>> {
    hex::decode(text.trim_start_matches("0x")).with_context(|| format!("{field}: not hex"))
}

pub async fn sign(command: SignCommand, global: &Global, out: Out) -> anyhow::Result<()> {
    let client = global.client().await?;
    match command {
        SignCommand::Tx(args) => {
            let builder = match &args.gas_price {
                Some(price) => TransactionBuilder::legacy(args.chain_id)
                    .gas_price(parse_amount("gas_price", price)?),
                None => TransactionBuilder::eip1559(args.chain_id)
                    .fees_str(&args.max_fee, &args.priority_fee)?,
            };
            let mut builder = builder
                .nonce(args.nonce)
                .gas_limit(args.gas)
                .value_str(&args.value)?
                .data(hex_bytes("data", &args.data)?);
            if let Some(to) = &args.to {
                builder = builder.to_str(to)?;
            }
            let tx = builder.build()?;
            let signed = client.sign_transaction(&args.key, &tx).await?;
            out.show(
                &json!({
                    "raw_transaction": format!("0x{}", hex::encode(&signed.raw_transaction)),
                    "tx_hash": format!("0x{}", hex::encode(signed.tx_hash)),
                    "sender": signed.sender, "v": signed.v,
                    "r": format!("0x{}", hex::encode(signed.r)),
                    "s": format!("0x{}", hex::encode(signed.s)),
                }),
                || {
                    format!(
                        "0x{}\ntx hash 0x{}  from {}",
                        hex::encode(&signed.raw_transaction),
                        hex::encode(signed.tx_hash),
                        signed.sender
                    )
                },
            );
        }
        SignCommand::Message { key, message, hex } => {
            let bytes = match (message, hex) {
                (Some(text), None) => text.into_bytes(),
                (None, Some(hex)) => hex_bytes("hex", &hex)?,
                _ => bail!("give --message TEXT or --hex BYTES"),
            };
            let signature = client.sign_message(&key, &bytes).await?;
            out.show(
                &json!({
                    "signature": format!("0x{}", hex::encode(signature.signature)),
                    "message_hash": format!("0x{}", hex::encode(signature.message_hash)),
                    "signer": signature.signer,
                }),
                || {
                    format!(
                        "0x{}  (signer {})",
                        hex::encode(signature.signature),
                        signature.signer
                    )
                },
            );
        }
    }
    Ok(())
}

/// `3600s`, `90m`, `12h`, `30d`, or plain seconds.
pub fn parse_duration_secs(text: &str) -> anyhow::Result<i64> {
    let text = text.trim();
    let (number, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((at, _)) => text.split_at(at),
        None => (text, "s"),
    };
    let number: i64 = number
        .parse()
        .map_err(|_| anyhow!("`{text}`: expected a duration like 3600s, 90m, 12h or 30d"))?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => bail!("`{text}`: the unit is s, m, h or d"),
    };
    number
        .checked_mul(scale)
        .ok_or_else(|| anyhow!("`{text}` is too long"))
}

fn api_key_json(info: &api::ApiKeyInfo) -> Value {
    let status = match api::ApiKeyStatus::try_from(info.status) {
        Ok(api::ApiKeyStatus::Active) => "active",
        Ok(api::ApiKeyStatus::Revoked) => "revoked",
        Ok(api::ApiKeyStatus::Expired) => "expired",
        _ => "unknown",
    };
    json!({
        "id": info.id, "label": info.label, "scopes": info.scopes, "key_ids": info.key_ids,
        "all_keys": info.all_keys, "expires_at_unix": info.expires_at_unix,
        "created_at_unix": info.created_at_unix, "created_by": info.created_by, "status": status,
        "previous_secret_valid_until_unix": info.previous_secret_valid_until_unix,
        "policy": info.policy.as_ref().map(|p| serde_json::to_value(PolicyFile::from(p)).unwrap_or_default()),
    })
}

fn api_key_line(info: &api::ApiKeyInfo) -> String {
    let value = api_key_json(info);
    format!(
        "{}  {}  scopes {}  keys {}  {}",
        info.id,
        info.label,
        info.scopes.join(","),
        if info.all_keys {
            "all".to_string()
        } else {
            info.key_ids.join(",")
        },
        value["status"].as_str().unwrap_or("")
    )
}

fn show_new_secret(out: Out, response: &api::CreateApiKeyResponse) {
    let info = response.info.clone().unwrap_or_default();
    out.show(
        &json!({"api_key": response.api_key, "info": api_key_json(&info)}),
        || {
            format!(
                "{}\n\nAPI key {} — shown once: store it in the agent's secret store now.",
                response.api_key, info.id
            )
        },
    );
}

pub async fn apikeys(command: ApiKeysCommand, global: &Global, out: Out) -> anyhow::Result<()> {
    let client = global.client().await?;
    let mut admin = client.admin();
    match command {
        ApiKeysCommand::Create {
            label,
            scopes,
            keys,
            all_keys,
            expires_in,
            policy_file,
        } => {
            let policy = policy_file.as_deref().map(PolicyFile::read).transpose()?;
            let response = admin
                .create_api_key(api::CreateApiKeyRequest {
                    label,
                    scopes,
                    key_ids: keys,
                    all_keys,
                    expires_in_seconds: expires_in
                        .as_deref()
                        .map(parse_duration_secs)
                        .transpose()?
                        .unwrap_or(0),
                    policy,
                })
                .await
                .map_err(shardsign_client::ClientError::from)?
                .into_inner();
            show_new_secret(out, &response);
        }
        ApiKeysCommand::List => {
            let keys = admin
                .list_api_keys(api::ListApiKeysRequest {})
                .await
                .map_err(shardsign_client::ClientError::from)?
                .into_inner()
                .api_keys;
            out.show(
                &Value::Array(keys.iter().map(api_key_json).collect()),
                || keys.iter().map(api_key_line).collect::<Vec<_>>().join("\n"),
            );
        }
        ApiKeysCommand::Rotate { id, grace } => {
            let response = admin
                .rotate_api_key(api::RotateApiKeyRequest {
                    id,
                    grace_seconds: grace.as_deref().map(parse_duration_secs).transpose()?,
                })
                .await
                .map_err(shardsign_client::ClientError::from)?
                .into_inner();
            show_new_secret(out, &response);
        }
        ApiKeysCommand::Revoke { id } => {
            let info = admin
                .revoke_api_key(api::RevokeApiKeyRequest { id })
                .await
                .map_err(shardsign_client::ClientError::from)?
                .into_inner();
            out.show(&api_key_json(&info), || format!("revoked {}", info.id));
        }
        ApiKeysCommand::SetPolicy { id, policy_file } => {
            let info = admin
                .set_api_key_policy(api::SetApiKeyPolicyRequest {
                    id,
                    policy: Some(PolicyFile::read(&policy_file)?),
                })
                .await
                .map_err(shardsign_client::ClientError::from)?
                .into_inner();
            out.show(&api_key_json(&info), || {
                format!("policy of {} replaced", info.id)
            });
        }
        ApiKeysCommand::Whoami => {
            let info = client.who_am_i().await?;
            out.show(&api_key_json(&info), || api_key_line(&info));
        }
    }
    Ok(())
}

pub fn write_secret_file(path: &std::path::Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {} (it must not exist yet)", path.display()))?;
    file.write_all(contents.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Signs and sets a key policy; returns the response.
pub async fn set_key_policy(
    client: &shardsign_client::Client,
    policy_key: &OperatorPolicyKey,
    cluster_id: &str,
    key_id: &str,
    rules: api::Policy,
    version: Option<u64>,
) -> anyhow::Result<api::SetKeyPolicyResponse> {
    let mut admin = client.admin();
    let version = match version {
        Some(version) => version,
        None => match admin
            .get_key_policy(api::GetKeyPolicyRequest {
                key_id: key_id.to_string(),
            })
            .await
        {
            Ok(current) => {
                let current = api::KeyPolicy::decode(current.into_inner().policy.as_slice())
                    .context("the current policy is unreadable")?;
                current.version + 1
            }
            Err(status) if status.code() == tonic::Code::FailedPrecondition => 1,
            Err(status) => return Err(shardsign_client::ClientError::from(status).into()),
        },
    };
    let signed = policy_key.sign(&api::KeyPolicy {
        cluster_id: cluster_id.to_string(),
        key_id: key_id.to_string(),
        version,
        rules: Some(rules),
        issued_at_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0),
    })?;
    Ok(admin
        .set_key_policy(api::SetKeyPolicyRequest {
            signed_policy: Some(signed),
        })
        .await
        .map_err(shardsign_client::ClientError::from)?
        .into_inner())
}

pub async fn policy(command: PolicyCommand, global: &Global, out: Out) -> anyhow::Result<()> {
    match command {
        PolicyCommand::Keygen { out: path } => {
            let key = OperatorPolicyKey::generate();
            write_secret_file(&path, &key.to_secret_hex())?;
            out.show(&json!({"public_key": key.public_hex(), "secret_file": path}), || {
                format!(
                    "operator policy key written to {} (keep it off the coordinator)\npolicy_public_key = \"{}\"",
                    path.display(),
                    key.public_hex()
                )
            });
        }
        PolicyCommand::Set {
            key,
            policy_file,
            policy_key,
            cluster_id,
            version,
        } => {
            let state = global.dev_state();
            let key_path = policy_key
                .or_else(|| state.as_ref().map(|s| s.policy_key_file.clone()))
                .ok_or_else(|| anyhow!("give --policy-key FILE (the operator's policy key)"))?;
            let cluster_id = cluster_id
                .or_else(|| state.as_ref().map(|s| s.cluster_id.clone()))
                .ok_or_else(|| anyhow!("give --cluster-id"))?;
            let policy_key = OperatorPolicyKey::from_secret_hex(&read_secret(&key_path)?)?;
            let client = global.client().await?;
            let rules = PolicyFile::read(&policy_file)?;
            let response =
                set_key_policy(&client, &policy_key, &cluster_id, &key, rules, version).await?;
            out.show(
                &json!({"key_id": response.key_id, "version": response.version,
                        "nodes_updated": response.nodes_updated, "node_errors": response.node_errors}),
                || {
                    let mut line = format!(
                        "policy v{} set for {} (nodes updated: {:?})",
                        response.version, response.key_id, response.nodes_updated
                    );
                    for error in &response.node_errors {
                        line.push_str(&format!("\n  {error} (it gets the policy with its next signing request)"));
                    }
                    line
                },
            );
        }
        PolicyCommand::PublicKey { policy_key } => {
            let key = OperatorPolicyKey::from_secret_hex(&read_secret(&policy_key)?)?;
            out.show(&json!({"public_key": key.public_hex()}), || {
                key.public_hex()
            });
        }
        PolicyCommand::Show { key } => {
            let client = global.client().await?;
            let signed = client
                .admin()
                .get_key_policy(api::GetKeyPolicyRequest { key_id: key })
                .await
                .map_err(shardsign_client::ClientError::from)?
                .into_inner();
            let policy = api::KeyPolicy::decode(signed.policy.as_slice())
                .context("the policy is unreadable")?;
            let rules = policy
                .rules
                .as_ref()
                .map(PolicyFile::from)
                .unwrap_or_default();
            let value = json!({"key_id": policy.key_id, "version": policy.version,
                               "cluster_id": policy.cluster_id, "rules": rules});
            out.show(&value, || {
                serde_json::to_string_pretty(&value).unwrap_or_default()
            });
        }
    }
    Ok(())
}

pub async fn audit(command: AuditCommand, global: &Global, out: Out) -> anyhow::Result<()> {
    let client = global.client().await?;
    let mut admin = client.admin();
    match command {
        AuditCommand::Verify => {
            let report = admin
                .verify_audit(api::VerifyAuditRequest {})
                .await
                .map_err(shardsign_client::ClientError::from)?
                .into_inner();
            let value = json!({"intact": report.intact, "records": report.records,
                "first_broken_seq": report.first_broken_seq, "problem": report.problem,
                "head_hash": hex::encode(&report.head_hash)});
            out.show(&value, || {
                if report.intact {
                    format!(
                        "audit log intact: {} records, head {}",
                        report.records,
                        hex::encode(&report.head_hash)
                    )
                } else {
                    format!(
                        "AUDIT LOG BROKEN at record {}: {}",
                        report.first_broken_seq, report.problem
                    )
                }
            });
            if !report.intact {
                bail!("the audit log's hash chain is broken");
            }
        }
        AuditCommand::List { after, limit } => {
            let records = admin
                .list_audit(api::ListAuditRequest {
                    after_seq: after,
                    limit,
                })
                .await
                .map_err(shardsign_client::ClientError::from)?
                .into_inner()
                .records;
            let values: Vec<Value> = records
                .iter()
                .map(|r| {
                    json!({"seq": r.seq, "at_unix_ms": r.at_unix_ms, "api_key_id": r.api_key_id,
                        "operation": r.operation, "key_id": r.key_id, "decision": r.decision,
                        "detail": r.detail, "tx_hash": hex::encode(&r.tx_hash),
                        "request_id": r.request_id, "peer": r.peer})
                })
                .collect();
            out.show(&Value::Array(values), || {
                records
                    .iter()
                    .map(|r| {
                        format!(
                            "{:>6}  {}  {:<18} {:<8} key={} {}",
                            r.seq, r.api_key_id, r.operation, r.decision, r.key_id, r.detail
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
    }
    Ok(())
}

pub async fn cluster_status(global: &Global, out: Out) -> anyhow::Result<()> {
    let client = global.client().await?;
    let status = client
        .with_retries(|_| {
            let mut admin = client.admin();
            async move { admin.cluster_status(api::ClusterStatusRequest {}).await }
        })
        .await?;
    let nodes: Vec<Value> = status
        .nodes
        .iter()
        .map(|n| {
            json!({"node_id": n.node_id, "address": n.address, "reachable": n.reachable,
                "version": n.version, "key_count": n.key_count, "fingerprint": n.fingerprint,
                "error": n.error})
        })
        .collect();
    out.show(
        &json!({"nodes": nodes, "can_sign": status.can_sign, "can_create_keys": status.can_create_keys}),
        || {
            let mut lines: Vec<String> = status
                .nodes
                .iter()
                .map(|n| {
                    if n.reachable {
                        format!("node {}  {}  up  v{}  {} keys", n.node_id, n.address, n.version, n.key_count)
                    } else {
                        format!("node {}  {}  DOWN  {}", n.node_id, n.address, n.error)
                    }
                })
                .collect();
            lines.push(format!(
                "can sign: {}   can create keys: {}",
                status.can_sign, status.can_create_keys
            ));
            lines.join("\n")
        },
    );
    Ok(())
}
