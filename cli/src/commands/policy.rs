//! `shardsign policy`: the operator's policy key, signed key policies (set, show).

use std::path::PathBuf;

use anyhow::{Context, anyhow};
use clap::{Args, Subcommand};
use prost::Message;
use serde_json::json;
use shardsign_client::api;
use shardsign_policy::{KeyStatementHeader, MAX_VALIDITY_SECS, OperatorPolicyKey};

use super::{parse_duration_secs, write_secret_file};
use crate::context::{Global, read_secret};
use crate::output::Out;
use crate::policy_file::{self, PolicyFile};

/// Who signs a statement, for which cluster.
#[derive(Args)]
pub struct OperatorArgs {
    /// The operator's policy key file (default: the dev cluster's).
    #[arg(long)]
    policy_key: Option<PathBuf>,
    /// The cluster id the statement is for (default: the dev cluster's).
    #[arg(long)]
    cluster_id: Option<String>,
}

/// Who signs a policy, for which cluster, and for how long.
#[derive(Args)]
pub struct SignerArgs {
    #[command(flatten)]
    operator: OperatorArgs,
    /// How long the policy is valid (e.g. 30d, 12h); nodes refuse to sign under an expired
    /// one. At most 400d.
    #[arg(long, default_value = "30d")]
    valid_for: String,
}

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Dry run: would this signing request pass both policies and the coordinator's 24 h
    /// budgets now? Takes what `shardsign sign` takes; nothing is signed or counted. Exits
    /// non-zero when the request would be refused.
    Check {
        #[command(subcommand)]
        what: super::sign::SignCommand,
    },
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
        /// Version (default: the current one + 1).
        #[arg(long)]
        version: Option<u64>,
        #[command(flatten)]
        signer: SignerArgs,
    },
    /// Sign a policy into a file, without the coordinator: for `shardsign-node policy put` on a
    /// node's host (the path around a coordinator that withholds a policy).
    Sign {
        #[arg(long)]
        key: String,
        #[arg(long)]
        policy_file: PathBuf,
        /// The version: higher than the one the nodes hold.
        #[arg(long)]
        version: u64,
        /// Where to write the encoded signed policy.
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        signer: SignerArgs,
    },
    /// Sign a statement that disables a key for good into a file, without the coordinator: for
    /// `shardsign-node policy put` on each node's host (`shardsign keys disable` sends it through
    /// the coordinator).
    Disable {
        #[arg(long)]
        key: String,
        /// The version: higher than the one the nodes hold.
        #[arg(long)]
        version: u64,
        /// Why (kept in the statement; shown in every refusal).
        #[arg(long, default_value = "")]
        reason: String,
        /// Where to write the encoded signed statement.
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        operator: OperatorArgs,
    },
    /// Re-sign current policies with the next version and a fresh validity (before they expire).
    Renew {
        /// The key whose policy to renew (or --all).
        #[arg(long, required_unless_present = "all", conflicts_with = "all")]
        key: Option<String>,
        /// Every key that has a policy.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        signer: SignerArgs,
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

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `rules` for `key_id` as version `version`, valid from now for `valid_for_secs`.
fn sign_policy(
    policy_key: &OperatorPolicyKey,
    cluster_id: &str,
    key_id: &str,
    rules: api::Policy,
    version: u64,
    valid_for_secs: i64,
) -> anyhow::Result<api::SignedStatement> {
    let issued_at_unix = unix_now();
    let header = KeyStatementHeader {
        cluster_id,
        key_id,
        version,
        issued_at_unix,
    };
    Ok(policy_key.sign_key_policy(
        header,
        &rules,
        issued_at_unix.saturating_add(valid_for_secs),
    )?)
}

/// A statement that disables `key_id` for good, as version `version`.
pub fn sign_disable(
    (policy_key, cluster_id): &(OperatorPolicyKey, String),
    key_id: &str,
    version: u64,
    reason: &str,
) -> anyhow::Result<api::SignedStatement> {
    let header = KeyStatementHeader {
        cluster_id,
        key_id,
        version,
        issued_at_unix: unix_now(),
    };
    Ok(policy_key.sign_key_disable(header, reason)?)
}

/// Writes an encoded signed statement to `path`, for a node's local path.
fn write_statement(path: &std::path::Path, signed: &api::SignedStatement) -> anyhow::Result<()> {
    std::fs::write(path, signed.encode_to_vec())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Signs a policy into `path` (the encoded `SignedStatement`), for a node's local path.
fn sign_to_file(
    (operator, cluster_id): (OperatorPolicyKey, String),
    key: &str,
    rules: api::Policy,
    version: u64,
    valid_for_secs: i64,
    path: &std::path::Path,
    out: Out,
) -> anyhow::Result<()> {
    let signed = sign_policy(&operator, &cluster_id, key, rules, version, valid_for_secs)?;
    write_statement(path, &signed)?;
    out.show(&json!({"key_id": key, "version": version, "file": path}), || {
        format!(
            "policy v{version} of `{key}` signed into {} (shardsign-node policy put --config NODE.toml FILE on each node's host)",
            path.display()
        )
    });
    Ok(())
}

/// Signs and sets a key policy; returns the response.
pub async fn set_key_policy(
    client: &shardsign_client::Client,
    policy_key: &OperatorPolicyKey,
    cluster_id: &str,
    key_id: &str,
    rules: api::Policy,
    version: Option<u64>,
    valid_for_secs: i64,
) -> anyhow::Result<api::SetKeyPolicyResponse> {
    let version = match version {
        Some(version) => version,
        None => next_version(client, key_id).await?,
    };
    let signed = sign_policy(
        policy_key,
        cluster_id,
        key_id,
        rules,
        version,
        valid_for_secs,
    )?;
    Ok(client
        .admin()
        .set_key_policy(api::SetKeyPolicyRequest {
            statement: Some(signed),
        })
        .await
        .map_err(shardsign_client::ClientError::from)?
        .into_inner())
}

/// A new operator policy key: the secret to a 0600 file, the public half printed.
fn keygen(path: &std::path::Path, out: Out) -> anyhow::Result<()> {
    let key = OperatorPolicyKey::generate();
    write_secret_file(path, &key.to_secret_hex())?;
    out.show(&json!({"public_key": key.public_hex(), "secret_file": path}), || {
        format!(
            "operator policy key written to {} (keep it off the coordinator)\npolicy_public_key = \"{}\"",
            path.display(),
            key.public_hex()
        )
    });
    Ok(())
}

/// The operator's policy key and the cluster id to sign for (defaults: the dev cluster's).
pub fn operator(
    global: &Global,
    args: &OperatorArgs,
) -> anyhow::Result<(OperatorPolicyKey, String)> {
    let state = global.dev_state();
    let key_path = args
        .policy_key
        .clone()
        .or_else(|| state.as_ref().map(|s| s.policy_key_file.clone()))
        .ok_or_else(|| anyhow!("give --policy-key FILE (the operator's policy key)"))?;
    let cluster_id = args
        .cluster_id
        .clone()
        .or_else(|| state.as_ref().map(|s| s.cluster_id.clone()))
        .ok_or_else(|| anyhow!("give --cluster-id"))?;
    Ok((
        OperatorPolicyKey::from_secret_hex(&read_secret(&key_path)?)?,
        cluster_id,
    ))
}

/// A validity like `30d`, bounded to what nodes accept.
fn validity(text: &str) -> anyhow::Result<i64> {
    let secs = parse_duration_secs(text)?;
    if !(1..=MAX_VALIDITY_SECS).contains(&secs) {
        anyhow::bail!(
            "--valid-for {text}: expected 1s to {}d",
            MAX_VALIDITY_SECS / 86_400
        );
    }
    Ok(secs)
}

fn show_set(out: Out, response: &api::SetKeyPolicyResponse) {
    out.show(
        &json!({"key_id": response.key_id, "version": response.version,
                "nodes_updated": response.nodes_updated, "node_errors": response.node_errors}),
        || {
            let mut line = format!(
                "policy v{} set for {} (nodes updated: {:?})",
                response.version, response.key_id, response.nodes_updated
            );
            for error in &response.node_errors {
                line.push_str(&format!(
                    "\n  {error} (it gets the policy with its next signing request)"
                ));
            }
            line
        },
    );
}

/// The version after the key's statement in force (1 when it has none).
pub async fn next_version(client: &shardsign_client::Client, key_id: &str) -> anyhow::Result<u64> {
    Ok(current_policy(client, key_id)
        .await?
        .map_or(1, |current| current.version + 1))
}

/// The key's statement in force (its policy, or the statement that disabled it); `None` when it
/// has none.
async fn current_policy(
    client: &shardsign_client::Client,
    key_id: &str,
) -> anyhow::Result<Option<api::KeyPolicyRecord>> {
    match client
        .admin()
        .get_key_policy(api::GetKeyPolicyRequest {
            key_id: key_id.to_string(),
        })
        .await
    {
        Ok(record) => Ok(Some(record.into_inner())),
        Err(status) if status.code() == tonic::Code::FailedPrecondition => Ok(None),
        Err(status) => Err(shardsign_client::ClientError::from(status).into()),
    }
}

/// Re-signs the current rules of `keys` (every key with a policy when `None`) as the next
/// version, valid for `valid_for_secs` from now.
async fn renew(
    global: &Global,
    keys: Option<Vec<String>>,
    (operator, cluster_id): (OperatorPolicyKey, String),
    valid_for_secs: i64,
    out: Out,
) -> anyhow::Result<()> {
    let client = global.client().await?;
    let all = keys.is_none();
    let keys = match keys {
        Some(keys) => keys,
        None => client
            .list_keys()
            .await?
            .into_iter()
            .map(|k| k.key_id)
            .collect(),
    };
    for key_id in keys {
        let Some(policy) = current_policy(&client, &key_id).await? else {
            if all {
                continue;
            }
            anyhow::bail!("key `{key_id}` has no policy to renew; set one with `policy set`");
        };
        if policy.disabled {
            if all {
                continue;
            }
            anyhow::bail!("key `{key_id}` is disabled for good; there is nothing to renew");
        }
        let rules = policy.rules.unwrap_or_default();
        let version = Some(policy.version + 1);
        let response = set_key_policy(
            &client,
            &operator,
            &cluster_id,
            &key_id,
            rules,
            version,
            valid_for_secs,
        )
        .await?;
        show_set(out, &response);
    }
    Ok(())
}

/// The current policy of `key`, its rules as a policy file, and its validity.
async fn show(global: &Global, key: &str, out: Out) -> anyhow::Result<()> {
    let client = global.client().await?;
    let policy = current_policy(&client, key)
        .await?
        .ok_or_else(|| anyhow!("key `{key}` has no policy"))?;
    let rules = policy
        .rules
        .as_ref()
        .map(PolicyFile::from)
        .unwrap_or_default();
    let value = json!({"key_id": policy.key_id, "version": policy.version,
                       "disabled": policy.disabled, "disabled_reason": policy.disabled_reason,
                       "rules": rules,
                       "issued_at_unix": policy.issued_at_unix,
                       "not_after_unix": policy.not_after_unix});
    out.show(&value, || {
        serde_json::to_string_pretty(&value).unwrap_or_default()
    });
    Ok(())
}

pub async fn policy(command: PolicyCommand, global: &Global, out: Out) -> anyhow::Result<()> {
    match command {
        PolicyCommand::Check { what } => super::sign::check(what, global, out).await?,
        PolicyCommand::Keygen { out: path } => keygen(&path, out)?,
        PolicyCommand::Set {
            key,
            policy_file,
            version,
            signer,
        } => {
            let (operator, cluster_id) = operator(global, &signer.operator)?;
            let valid_for = validity(&signer.valid_for)?;
            let client = global.client().await?;
            let rules = policy_file::read(&policy_file)?;
            let response = set_key_policy(
                &client,
                &operator,
                &cluster_id,
                &key,
                rules,
                version,
                valid_for,
            )
            .await?;
            show_set(out, &response);
        }
        PolicyCommand::Sign {
            key,
            policy_file,
            version,
            out: path,
            signer,
        } => {
            let valid_for = validity(&signer.valid_for)?;
            let rules = policy_file::read(&policy_file)?;
            let signer = operator(global, &signer.operator)?;
            sign_to_file(signer, &key, rules, version, valid_for, &path, out)?;
        }
        PolicyCommand::Renew {
            key,
            all: _,
            signer,
        } => {
            let valid_for = validity(&signer.valid_for)?;
            let signer = operator(global, &signer.operator)?;
            renew(global, key.map(|k| vec![k]), signer, valid_for, out).await?;
        }
        PolicyCommand::Disable {
            key,
            version,
            reason,
            out: path,
            operator: args,
        } => {
            let signed = sign_disable(&operator(global, &args)?, &key, version, &reason)?;
            write_statement(&path, &signed)?;
            out.show(&json!({"key_id": key, "version": version, "file": path}), || {
                format!(
                    "disable statement v{version} of `{key}` signed into {} (shardsign-node policy put --config NODE.toml FILE on each node's host)",
                    path.display()
                )
            });
        }
        PolicyCommand::PublicKey { policy_key } => {
            let key = OperatorPolicyKey::from_secret_hex(&read_secret(&policy_key)?)?;
            out.show(&json!({"public_key": key.public_hex()}), || {
                key.public_hex()
            });
        }
        PolicyCommand::Show { key } => show(global, &key, out).await?,
    }
    Ok(())
}
