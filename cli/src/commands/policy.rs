//! `shardsign policy`: the operator's policy key, signed key policies (set, show).

use std::path::PathBuf;

use anyhow::{Context, anyhow};
use clap::Subcommand;
use prost::Message;
use serde_json::json;
use shardsign_client::api;
use shardsign_policy::OperatorPolicyKey;

use super::write_secret_file;
use crate::context::{Global, read_secret};
use crate::output::Out;
use crate::policy_file::PolicyFile;

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
