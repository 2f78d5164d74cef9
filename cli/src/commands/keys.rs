//! `shardsign keys`: the key ceremony with live progress, list, show, refresh, disable.

use std::io::IsTerminal;

use anyhow::bail;
use clap::Subcommand;
use serde_json::{Value, json};
use shardsign_client::api;

use super::policy::{OperatorArgs, next_version, operator, sign_disable};
use crate::context::Global;
use crate::output::Out;

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
    /// Refresh a key's shares on all three nodes (the address stays; the shares move to the
    /// next epoch, and old shares, in backups too, can no longer sign with the new ones).
    Refresh {
        /// The key to refresh.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        key_id: Option<String>,
        /// Refresh every active key, one at a time.
        #[arg(long)]
        all: bool,
        /// The engine's faster refresh, which keeps the nodes' oblivious-transfer state (re-keyed)
        /// instead of setting it up afresh. Never right after a node was rebuilt by repair.
        #[arg(long)]
        fast: bool,
    },
    /// Disable a key for good: signs a disable statement with the operator's policy key and
    /// sends it through the coordinator to every node, which then refuses the key whatever a
    /// coordinator asks.
    Disable {
        key_id: String,
        /// Why (kept in the statement; shown in every refusal).
        #[arg(long, default_value = "")]
        reason: String,
        /// Only the coordinator refuses the key; the nodes are not told (no operator key needed).
        #[arg(long)]
        coordinator_only: bool,
        #[command(flatten)]
        operator: OperatorArgs,
    },
}

fn key_json(key: &api::Key) -> Value {
    json!({
        "key_id": key.key_id, "label": key.label, "address": key.address,
        "public_key": hex::encode(&key.public_key), "created_at_unix": key.created_at_unix,
        "status": if key.status == api::KeyStatus::Disabled as i32 { "disabled" } else { "active" },
        "allowed_chain_ids": key.allowed_chain_ids,
        "epoch": key.epoch, "epoch_changed_at_unix": key.epoch_changed_at_unix,
    })
}

fn key_line(key: &api::Key) -> String {
    let status = if key.status == api::KeyStatus::Disabled as i32 {
        " (disabled)"
    } else {
        ""
    };
    format!(
        "{}  {}  {}  chains {:?}  epoch {} (changed {}){status}",
        key.key_id,
        key.address,
        key.label,
        key.allowed_chain_ids,
        key.epoch,
        crate::output::ago(key.epoch_changed_at_unix)
    )
}

fn show_disabled(out: Out, response: &api::DisableKeyResponse) {
    let key = response.key.clone().unwrap_or_default();
    let mut value = key_json(&key);
    value["nodes_updated"] = json!(response.nodes_updated);
    value["node_errors"] = json!(response.node_errors);
    out.show(&value, || {
        let mut text = format!(
            "disabled {} (nodes told: {:?})",
            key.key_id, response.nodes_updated
        );
        for error in &response.node_errors {
            text.push_str(&format!(
                "\n  {error} (deliver the statement with `shardsign policy disable --out FILE` and `shardsign-node policy put` on its host)"
            ));
        }
        text
    });
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

/// Refreshes one key with live progress; returns the key at its new epoch.
async fn refresh_key(
    client: &shardsign_client::Client,
    out: Out,
    key_id: &str,
    fast: bool,
) -> anyhow::Result<api::Key> {
    use api::refresh_key_event::Event;
    let mut stream = client
        .admin()
        .refresh_key(api::RefreshKeyRequest {
            key_id: key_id.to_string(),
            fast,
        })
        .await
        .map_err(shardsign_client::ClientError::from)?
        .into_inner();
    while let Some(event) = stream
        .message()
        .await
        .map_err(shardsign_client::ClientError::from)?
    {
        match event.event {
            Some(Event::Started(started)) => out.event(
                &json!({"event": "started", "key_id": started.key_id, "from_epoch": started.from_epoch}),
                || {
                    format!(
                        "refreshing `{}` from epoch {}",
                        started.key_id, started.from_epoch
                    )
                },
            ),
            Some(Event::Round(r)) => out.event(&json!({"event": "round", "round": r.round}), || {
                format!("  round {}/4", r.round)
            }),
            Some(Event::Done(key)) => return Ok(key),
            Some(Event::Failed(failed)) => bail!("refresh of `{key_id}` failed: {}", failed.reason),
            None => {}
        }
    }
    bail!("the refresh's event stream ended without a result")
}

/// What an operator must do after a refresh: the shares in older backups still make the key.
const DESTROY_OLD_BACKUPS: &str = "node backups taken before this refresh hold old-epoch shares, which still make the key with each other: destroy them and take new backups (`shardsign-node backup`)";

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
        KeysCommand::Refresh { key_id, all, fast } => {
            let key_ids: Vec<String> = match key_id {
                Some(key_id) => vec![key_id],
                None => client
                    .list_keys()
                    .await?
                    .into_iter()
                    .filter(|k| k.status != api::KeyStatus::Disabled as i32)
                    .map(|k| k.key_id)
                    .collect(),
            };
            let _ = all;
            let mut failures = Vec::new();
            for key_id in &key_ids {
                match refresh_key(&client, out, key_id, fast).await {
                    Ok(key) => out.show(&json!({"event": "done", "key": key_json(&key)}), || {
                        format!(
                            "refreshed {} to epoch {} (address {} unchanged)",
                            key.key_id, key.epoch, key.address
                        )
                    }),
                    Err(error) => {
                        out.event(
                            &json!({"event": "failed", "key_id": key_id, "reason": error.to_string()}),
                            || error.to_string(),
                        );
                        failures.push(key_id.clone());
                    }
                }
            }
            let refreshed = key_ids.len() - failures.len();
            if refreshed > 0 {
                out.event(
                    &json!({"event": "note", "note": DESTROY_OLD_BACKUPS}),
                    || format!("note: {DESTROY_OLD_BACKUPS}"),
                );
            }
            if !failures.is_empty() {
                bail!(
                    "{} of {} keys were not refreshed ({}); they stay on their epoch: run `shardsign keys refresh` for them again",
                    failures.len(),
                    key_ids.len(),
                    failures.join(", ")
                );
            }
        }
        KeysCommand::Disable {
            key_id,
            reason,
            coordinator_only,
            operator: args,
        } => {
            let statement = if coordinator_only {
                None
            } else {
                let signer = operator(global, &args)?;
                let version = next_version(&client, &key_id).await?;
                Some(sign_disable(&signer, &key_id, version, &reason)?)
            };
            let response = client
                .with_retries(|_| {
                    let mut admin = client.admin();
                    let request = api::DisableKeyRequest {
                        key_id: key_id.clone(),
                        statement: statement.clone(),
                    };
                    async move { admin.disable_key(request).await }
                })
                .await?;
            show_disabled(out, &response);
        }
    }
    Ok(())
}
