//! `shardsign membership` (the offline membership keys and the statements they sign) and
//! `shardsign cluster replace-node` (the replacement itself, through the coordinator).
//!
//! A membership statement file is JSON: what it changes, for a human to read before co-signing,
//! and the encoded `SignedStatement` (hex) that the nodes verify. Each signer adds a signature
//! with `membership sign` on the same file; the nodes need a quorum (2 of 3 by default).

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use clap::Subcommand;
use ed25519_dalek::SigningKey;
use prost::Message as _;
use serde::{Deserialize, Serialize};
use serde_json::json;
use shardsign_client::api;
use shardsign_policy::membership;
use zeroize::Zeroizing;

use super::{parse_duration_secs, write_secret_file};
use crate::context::{Global, read_secret};
use crate::output::Out;

#[derive(Subcommand)]
pub enum MembershipCommand {
    /// Create a membership key (secret to a 0600 file, kept offline; prints the public key for
    /// the nodes' `membership_public_keys`). Not the policy key: a membership change hands a
    /// node's share to the identity it names.
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign the change that gives node N's place to a new identity, or add this key's signature
    /// to the statement already in --out (the nodes need a quorum of membership keys).
    Sign {
        /// The new node's identity (`shardsign-node init --json` on the new node).
        #[arg(long)]
        identity: PathBuf,
        /// The membership version: one more than the highest `membership` in `shardsign cluster
        /// status` (1 for the first change).
        #[arg(long)]
        version: u64,
        /// This signer's membership key file.
        #[arg(long)]
        key: PathBuf,
        /// The statement file: created, or co-signed when it exists.
        #[arg(long)]
        out: PathBuf,
        /// How long the change may wait to be applied (`24h`, `7d`; at most 400 days).
        #[arg(long, default_value = "24h")]
        valid_for: String,
    },
}

/// `shardsign-node init --json` output.
#[derive(Deserialize)]
struct IdentityFile {
    node_id: u8,
    cluster_id: String,
    signing_key: String,
    kx_key: String,
    fingerprint: String,
}

impl IdentityFile {
    fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| {
            format!(
                "{}: expected the JSON `shardsign-node init --json` printed on the new node",
                path.display()
            )
        })
    }

    fn bytes(&self) -> anyhow::Result<[u8; 64]> {
        let mut out = [0u8; 64];
        hex::decode_to_slice(&self.signing_key, &mut out[..32])
            .map_err(|_| anyhow!("identity signing_key: expected 64 hex digits"))?;
        hex::decode_to_slice(&self.kx_key, &mut out[32..])
            .map_err(|_| anyhow!("identity kx_key: expected 64 hex digits"))?;
        Ok(out)
    }
}

/// The statement file.
#[derive(Serialize, Deserialize)]
struct StatementFile {
    cluster_id: String,
    node_id: u32,
    version: u64,
    /// The new identity's fingerprint, to compare with what the new node printed.
    fingerprint: String,
    not_after_unix: i64,
    signers: Vec<String>,
    /// The encoded SignedStatement.
    signed_statement_hex: String,
}

impl StatementFile {
    fn read(path: &Path) -> anyhow::Result<(Self, api::SignedStatement)> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let file: StatementFile = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a membership statement file", path.display()))?;
        let bytes = hex::decode(&file.signed_statement_hex)
            .map_err(|_| anyhow!("{}: signed_statement_hex is not hex", path.display()))?;
        let signed = api::SignedStatement::decode(bytes.as_slice())
            .map_err(|_| anyhow!("{}: not an encoded SignedStatement", path.display()))?;
        Ok((file, signed))
    }
}

/// A membership key from its file (64 hex digits of the seed); every copy of the seed wiped.
pub fn read_key(path: &Path) -> anyhow::Result<SigningKey> {
    let text = read_secret(path)?;
    let bytes = Zeroizing::new(
        hex::decode(text.trim())
            .map_err(|_| anyhow!("{}: not a membership key file", path.display()))?,
    );
    let seed = Zeroizing::new(
        <[u8; 32]>::try_from(bytes.as_slice())
            .map_err(|_| anyhow!("{}: not a membership key file", path.display()))?,
    );
    Ok(SigningKey::from_bytes(&seed))
}

/// A new membership key written to `path` (0600); its public half, hex.
pub fn write_new_key(path: &Path) -> anyhow::Result<String> {
    let key = SigningKey::generate(&mut rand_core_06::OsRng);
    write_secret_file(path, &Zeroizing::new(hex::encode(key.to_bytes())))?;
    Ok(hex::encode(key.verifying_key().to_bytes()))
}

pub fn membership(command: MembershipCommand, out: Out) -> anyhow::Result<()> {
    match command {
        MembershipCommand::Keygen { out: path } => {
            let public = write_new_key(&path)?;
            out.show(&json!({"public_key": public, "secret_file": path}), || {
                format!(
                    "membership key written to {} (keep it offline, apart from the other membership keys and the policy key)\nmembership public key: {public}",
                    path.display()
                )
            });
            Ok(())
        }
        MembershipCommand::Sign {
            identity,
            version,
            key,
            out: path,
            valid_for,
        } => {
            let identity = IdentityFile::read(&identity)?;
            let key = read_key(&key)?;
            let (mut file, mut signed) = if path.exists() {
                let (file, signed) = StatementFile::read(&path)?;
                if file.version != version
                    || file.node_id != u32::from(identity.node_id)
                    || file.fingerprint != identity.fingerprint
                {
                    bail!(
                        "{} changes node {} to {} at version {}, not what was asked; sign it as it is, or write a new file",
                        path.display(),
                        file.node_id,
                        file.fingerprint,
                        file.version
                    );
                }
                (file, signed)
            } else {
                let now = super::policy::unix_now();
                let statement = membership::change_statement(
                    &identity.cluster_id,
                    version,
                    u32::from(identity.node_id),
                    &identity.bytes()?,
                    now,
                    parse_duration_secs(&valid_for)?,
                );
                let file = StatementFile {
                    cluster_id: identity.cluster_id.clone(),
                    node_id: u32::from(identity.node_id),
                    version,
                    fingerprint: identity.fingerprint.clone(),
                    not_after_unix: statement.not_after_unix,
                    signers: Vec::new(),
                    signed_statement_hex: String::new(),
                };
                let signed = api::SignedStatement {
                    statement: statement.encode_to_vec(),
                    signatures: Vec::new(),
                };
                (file, signed)
            };
            membership::add_signature(&key, &mut signed)?;
            let public = hex::encode(key.verifying_key().to_bytes());
            if !file.signers.contains(&public) {
                file.signers.push(public);
            }
            file.signed_statement_hex = hex::encode(signed.encode_to_vec());
            std::fs::write(&path, serde_json::to_string_pretty(&file)? + "\n")
                .with_context(|| format!("cannot write {}", path.display()))?;
            out.show(
                &json!({"statement": path, "signatures": file.signers.len(), "node_id": file.node_id, "version": file.version}),
                || {
                    format!(
                        "{}: node {} -> {} (version {}), {} signature(s); the nodes need a quorum of the membership keys",
                        path.display(),
                        file.node_id,
                        file.fingerprint,
                        file.version,
                        file.signers.len()
                    )
                },
            );
            Ok(())
        }
    }
}

/// `shardsign cluster replace-node N --identity FILE --statement FILE`.
pub async fn replace_node(
    global: &Global,
    out: Out,
    node_id: u8,
    identity: &Path,
    statement: &Path,
) -> anyhow::Result<()> {
    use api::replace_node_event::Event;
    let identity = IdentityFile::read(identity)?;
    let (file, signed) = StatementFile::read(statement)?;
    if identity.node_id != node_id || file.node_id != u32::from(node_id) {
        bail!(
            "replace-node {node_id}: the identity file is node {}'s and the statement changes node {}",
            identity.node_id,
            file.node_id
        );
    }
    if file.fingerprint != identity.fingerprint {
        bail!(
            "the statement gives node {node_id}'s place to {}, not to the identity in the file ({})",
            file.fingerprint,
            identity.fingerprint
        );
    }
    let client = global.client().await?;
    let mut stream = client
        .admin()
        .replace_node(api::ReplaceNodeRequest {
            node_id: u32::from(node_id),
            signed_statement: signed.encode_to_vec(),
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
                &json!({"event": "started", "node_id": started.node_id, "membership_version": started.membership_version, "keys": started.keys}),
                || {
                    format!(
                        "node {} replaced in the membership (version {}); {} key(s) to repair and refresh",
                        started.node_id, started.membership_version, started.keys
                    )
                },
            ),
            Some(Event::Key(key)) => out.event(
                &json!({"event": "key", "key_id": key.key_id, "epoch": key.epoch, "repaired": key.repaired}),
                || {
                    if key.repaired {
                        format!("  {}: repaired, now at epoch {}", key.key_id, key.epoch)
                    } else {
                        format!("  {}: already whole on the new node", key.key_id)
                    }
                },
            ),
            Some(Event::Done(done)) => {
                out.show(&json!({"event": "done", "keys": done.keys}), || {
                    format!(
                        "node {node_id} replaced: every key is at a new epoch; destroy every backup taken before (old-epoch shares still make the key)"
                    )
                });
                return Ok(());
            }
            Some(Event::Failed(failed)) => bail!(
                "replace-node {node_id} stopped{}: {} (run it again with the same statement to resume)",
                if failed.key_id.is_empty() {
                    String::new()
                } else {
                    format!(" at key `{}`", failed.key_id)
                },
                failed.reason
            ),
            None => {}
        }
    }
    bail!("the replacement's event stream ended without a result")
}
