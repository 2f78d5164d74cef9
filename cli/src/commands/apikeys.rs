//! `shardsign apikeys`: create, list, rotate, revoke, set-policy, whoami.

use std::path::PathBuf;

use clap::Subcommand;
use serde_json::{Value, json};
use shardsign_client::api;

use super::parse_duration_secs;
use crate::context::Global;
use crate::output::Out;
use crate::policy_file::{self, PolicyFile};

#[derive(Subcommand)]
pub enum ApiKeysCommand {
    /// Create an API key; its secret is printed once.
    Create {
        #[arg(long)]
        label: String,
        /// read, sign, admin, approve (comma-separated; approve: the approvals service only).
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

/// A duration option in seconds; absent is 0 (never expires).
fn seconds_or_never(text: Option<&str>) -> anyhow::Result<i64> {
    Ok(text.map(parse_duration_secs).transpose()?.unwrap_or(0))
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
            let request = api::CreateApiKeyRequest {
                label,
                scopes,
                key_ids: keys,
                all_keys,
                expires_in_seconds: seconds_or_never(expires_in.as_deref())?,
                policy: policy_file.as_deref().map(policy_file::read).transpose()?,
            };
            let response = admin
                .create_api_key(request)
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
                    policy: Some(policy_file::read(&policy_file)?),
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
