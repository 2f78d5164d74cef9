//! The API commands: keys, signing, API keys, policies, audit, cluster status; one module each.
//! What several of them share (durations, secret files, cluster status) is here.

mod apikeys;
mod approvals;
mod audit;
mod audit_archive;
mod keys;
mod membership;
mod policy;
mod sign;

use anyhow::{Context, anyhow};
use serde_json::{Value, json};
use shardsign_client::api;

use crate::context::Global;
use crate::output::Out;

pub use apikeys::{ApiKeysCommand, apikeys};
pub use approvals::{ApprovalsCommand, approvals};
pub use audit::{AuditCommand, audit};
pub use keys::{KeysCommand, create_key, keys};
pub use membership::{
    MembershipCommand, membership, read_key as read_membership_key, replace_node,
    write_new_key as write_new_membership_key,
};
pub use policy::{PolicyCommand, policy, set_key_policy};
pub use sign::{SignCommand, sign};

/// `3600s`, `90m`, `12h`, `30d`, or plain seconds.
pub fn parse_duration_secs(text: &str) -> anyhow::Result<i64> {
    shardsign_provision::parse_duration_secs(text).map_err(|e| anyhow!(e))
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
            let bans: Vec<Value> = n
                .bans
                .iter()
                .map(|b| json!({"banned_node_id": b.banned_node_id, "reason": b.reason, "at_unix_ms": b.at_unix_ms}))
                .collect();
            json!({"node_id": n.node_id, "address": n.address, "reachable": n.reachable,
                "version": n.version, "key_count": n.key_count, "fingerprint": n.fingerprint,
                "error": n.error, "bans": bans, "membership_version": n.membership_version,
                "awaiting_relearn": n.awaiting_relearn})
        })
        .collect();
    out.show(
        &json!({"nodes": nodes, "can_sign": status.can_sign, "can_create_keys": status.can_create_keys,
                "warnings": status.warnings}),
        || {
            let mut lines: Vec<String> = status
                .nodes
                .iter()
                .map(|n| {
                    if n.reachable {
                        format!(
                            "node {}  {}  up  v{}  {} keys  membership {}{}",
                            n.node_id,
                            n.address,
                            n.version,
                            n.key_count,
                            n.membership_version,
                            if n.awaiting_relearn {
                                "  RESTORED: signs nothing until it re-learns from both peers"
                            } else {
                                ""
                            }
                        )
                    } else {
                        format!("node {}  {}  DOWN  {}", n.node_id, n.address, n.error)
                    }
                })
                .collect();
            for node in &status.nodes {
                for ban in &node.bans {
                    lines.push(format!(
                        "BAN: node {} has banned node {} ({}); their pair is never scheduled",
                        node.node_id, ban.banned_node_id, ban.reason
                    ));
                }
            }
            for warning in &status.warnings {
                lines.push(format!("WARNING: {warning}"));
            }
            lines.push(format!(
                "can sign: {}   can create keys: {}",
                status.can_sign, status.can_create_keys
            ));
            lines.join("\n")
        },
    );
    Ok(())
}
