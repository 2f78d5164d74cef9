//! `shardsign keys`: the key ceremony with live progress, list, show, disable.

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
