//! `shardsign approvals`: approvers' side of human approval. An approver never signs what the
//! coordinator merely says: `show`, `approve` and `reject` decode the parked payload themselves,
//! recompute the request hash from it (key, chain, payload, request id) and check the statement
//! to sign is for exactly that request, before showing or signing anything.

use std::path::PathBuf;

use anyhow::{Context, anyhow, bail};
use clap::Subcommand;
use prost::Message as _;
use serde_json::{Value, json};
use shardsign_client::api;
use shardsign_eth::erc20::Erc20Call;
use shardsign_eth::typed_data::{self, TypedData};
use shardsign_eth::{Authorization, Limits, UnsignedTransaction, format_eth};
use shardsign_policy::approval::{self, ApprovalRequest};

use super::membership::{read_key, write_new_key};
use crate::context::Global;
use crate::output::Out;

#[derive(Subcommand)]
pub enum ApprovalsCommand {
    /// Create an approver key (secret to a 0600 file, kept by the approver; prints the public
    /// key for the signing key policy's `approvers.public_keys`).
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Parked requests waiting for approval (with --all, decided ones too).
    List {
        #[arg(long)]
        all: bool,
        /// Only this signing key's.
        #[arg(long)]
        key: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// One parked request: what would be signed (decoded here), why it waits, who signed.
    Show { approval_id: String },
    /// Approve: sign the parked request's statement with your approver key.
    Approve {
        approval_id: String,
        /// Your approver key file (`shardsign approvals keygen`).
        #[arg(long)]
        key: PathBuf,
    },
    /// Reject: a signed rejection; final for this request.
    Reject {
        approval_id: String,
        #[arg(long)]
        key: PathBuf,
        /// Why (at most 256 characters; the caller and the audit log see it).
        #[arg(long, default_value = "")]
        reason: String,
    },
}

/// What would be signed, decoded from the record's bytes: a description and its chain id.
fn describe(kind: &str, payload: &[u8]) -> anyhow::Result<(Value, u64)> {
    match kind {
        "tx" => {
            let tx = UnsignedTransaction::decode_signing_payload(payload, &Limits::DEFAULT)
                .map_err(|e| anyhow!("the parked transaction does not decode: {e}"))?;
            let mut value = json!({
                "kind": "transaction",
                "chain_id": tx.chain_id(),
                "to": tx.to().map(|a| a.to_checksum()),
                "value": format_eth(tx.value()),
                "data_bytes": tx.data().len(),
            });
            if let Ok(Some(call)) = Erc20Call::decode(tx.data()) {
                value["erc20"] = match call {
                    Erc20Call::Transfer { to, amount } => {
                        json!({"method": "transfer", "to": to.to_checksum(), "amount": amount.to_string()})
                    }
                    Erc20Call::TransferFrom { from, to, amount } => {
                        json!({"method": "transferFrom",
                        "from": from.to_checksum(), "to": to.to_checksum(), "amount": amount.to_string()})
                    }
                    Erc20Call::Approve { spender, amount } => json!({"method": "approve",
                        "spender": spender.to_checksum(), "amount": amount.to_string()}),
                    Erc20Call::IncreaseAllowance { spender, amount } => {
                        json!({"method": "increaseAllowance",
                        "spender": spender.to_checksum(), "amount": amount.to_string()})
                    }
                };
            }
            Ok((value, tx.chain_id()))
        }
        "typed_data" => {
            let typed = TypedData::parse(payload, &typed_data::Limits::DEFAULT)
                .map_err(|e| anyhow!("the parked document does not parse: {e}"))?;
            let chain_id = typed
                .domain
                .chain_id
                .and_then(|id| u64::try_from(id).ok())
                .unwrap_or(0);
            let fields: Vec<Value> = typed
                .message
                .iter()
                .map(|(path, value)| json!({"path": path, "value": format!("{value:?}")}))
                .collect();
            Ok((
                json!({"kind": "typed_data", "primary_type": typed.primary_type,
                    "domain_name": typed.domain.name, "chain_id": chain_id,
                    "verifying_contract": typed.domain.verifying_contract.map(|a| a.to_checksum()),
                    "message": fields}),
                chain_id,
            ))
        }
        "authorization" => {
            let authorization = Authorization::decode_signing_payload(payload)
                .map_err(|e| anyhow!("the parked authorization does not decode: {e}"))?;
            Ok((
                json!({"kind": "authorization", "chain_id": authorization.chain_id,
                    "delegate": authorization.address.to_checksum(), "nonce": authorization.nonce}),
                authorization.chain_id,
            ))
        }
        "message" => Ok((
            json!({"kind": "message", "text": String::from_utf8_lossy(payload)}),
            0,
        )),
        other => bail!("unknown payload kind `{other}`"),
    }
}

/// A record checked against itself: the payload decodes, the request hash recomputed from it
/// is the approval id, and the statement to sign approves exactly that request.
struct Checked {
    description: Value,
    request: ApprovalRequest,
    statement: api::Statement,
}

fn check(record: &api::ApprovalRecord) -> anyhow::Result<Checked> {
    let (description, chain_id) = describe(&record.payload_kind, &record.payload)?;
    let request = ApprovalRequest {
        key_id: record.key_id.clone(),
        chain_id,
        payload_hash: approval::payload_hash(&record.payload_kind, &record.payload),
        request_id: record.request_id.clone(),
    };
    if request.id() != record.approval_id || chain_id != record.chain_id {
        bail!(
            "approval {}: the request hash recomputed from the payload is {}; the coordinator's record does not match what it would sign — do not approve",
            record.approval_id,
            request.id()
        );
    }
    let statement = api::Statement::decode(record.statement.as_slice())
        .map_err(|_| anyhow!("the record's statement does not decode"))?;
    let body = api::Approval::decode(statement.body.as_slice())
        .map_err(|_| anyhow!("the record's statement body does not decode"))?;
    if statement.kind != api::StatementKind::Approval as i32
        || statement.subject != record.approval_id
        || body.request_hash != request.hash()
        || body.decision != api::approval::Decision::Approve as i32
        || statement.not_after_unix != record.expires_at_unix
    {
        bail!(
            "approval {}: the statement to sign is not an approval of this request until its expiry — do not approve",
            record.approval_id
        );
    }
    Ok(Checked {
        description,
        request,
        statement,
    })
}

fn record_json(record: &api::ApprovalRecord, description: Option<&Value>) -> Value {
    let signers: Vec<String> = record
        .signatures
        .iter()
        .map(|s| hex::encode(&s.public_key))
        .collect();
    json!({
        "approval_id": record.approval_id, "state": record.state, "key_id": record.key_id,
        "request_id": record.request_id, "api_key_id": record.api_key_id,
        "chain_id": record.chain_id, "rule": record.rule, "detail": record.detail,
        "created_at_unix": record.created_at_unix, "expires_at_unix": record.expires_at_unix,
        "approved_by": signers, "quorum": record.quorum, "approvers": record.approvers,
        "decided_at_unix": record.decided_at_unix, "rejected_by": record.rejected_by,
        "reason": record.reason, "request": description,
    })
}

fn human(record: &api::ApprovalRecord, description: Option<&Value>) -> String {
    let mut text = format!(
        "{}  {}  key {}  {}: {}\n  request {} from API key {}; {} of {} approvals; expires {}",
        record.approval_id,
        record.state,
        record.key_id,
        record.rule,
        record.detail,
        record.request_id,
        record.api_key_id,
        record.signatures.len(),
        record.quorum,
        expiry(record.expires_at_unix),
    );
    if !record.rejected_by.is_empty() {
        text.push_str(&format!(
            "\n  rejected by {}: {}",
            record.rejected_by, record.reason
        ));
    }
    if let Some(description) = description {
        text.push_str(&format!(
            "\n  what would be signed (decoded here): {}",
            serde_json::to_string_pretty(description).unwrap_or_default()
        ));
    }
    text
}

/// When a request expires, relative to now: "in 23h 59m (unix 1800000000)".
fn expiry(unix: i64) -> String {
    let left = unix - super::policy::unix_now();
    if left <= 0 {
        return format!("passed (unix {unix})");
    }
    format!("in {}h {:02}m (unix {unix})", left / 3600, left % 3600 / 60)
}

pub async fn approvals(command: ApprovalsCommand, global: &Global, out: Out) -> anyhow::Result<()> {
    if let ApprovalsCommand::Keygen { out: path } = &command {
        let public = write_new_key(path)?;
        out.show(&json!({"public_key": public, "secret_file": path}), || {
            format!(
                "approver key written to {} (keep it to yourself: whoever holds it approves for you)\napprover public key: {public}",
                path.display()
            )
        });
        return Ok(());
    }
    let client = global.client().await?;
    let mut stub = client.approvals();
    let get = |id: String| {
        let mut stub = client.approvals();
        async move {
            stub.get_approval(api::GetApprovalRequest { approval_id: id })
                .await
                .map(|r| r.into_inner())
                .map_err(shardsign_client::ClientError::from)
        }
    };
    match command {
        ApprovalsCommand::Keygen { .. } => unreachable!("handled above"),
        ApprovalsCommand::List { all, key, limit } => {
            let list = stub
                .list_approvals(api::ListApprovalsRequest {
                    include_decided: all,
                    key_id: key.unwrap_or_default(),
                    limit,
                })
                .await
                .map_err(shardsign_client::ClientError::from)?
                .into_inner();
            let rows: Vec<Value> = list
                .approvals
                .iter()
                .map(|r| record_json(r, None))
                .collect();
            out.show(&json!({"approvals": rows}), || {
                if list.approvals.is_empty() {
                    return "no parked requests".into();
                }
                list.approvals
                    .iter()
                    .map(|r| human(r, None))
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        ApprovalsCommand::Show { approval_id } => {
            let record = get(approval_id).await?;
            let checked = check(&record)?;
            // The cluster the statement is for: an approver with keys for several clusters
            // sees which one they would approve in.
            let mut shown = record_json(&record, Some(&checked.description));
            shown["cluster_id"] = json!(checked.statement.cluster_id);
            out.show(&shown, || {
                format!(
                    "cluster {}\n{}",
                    checked.statement.cluster_id,
                    human(&record, Some(&checked.description))
                )
            });
        }
        ApprovalsCommand::Approve { approval_id, key } => {
            let signer = read_key(&key)?;
            let record = get(approval_id).await?;
            let checked = check(&record)?;
            let mut signed = api::SignedStatement {
                statement: record.statement.clone(),
                signatures: Vec::new(),
            };
            approval::add_signature(&signer, &mut signed)?;
            let decided = decide(&client, &record.approval_id, signed).await?;
            out.show(&record_json(&decided, Some(&checked.description)), || {
                format!(
                    "approved by {} ({} of {} approvals): approval {} is {}",
                    hex::encode(signer.verifying_key().to_bytes()),
                    decided.signatures.len(),
                    decided.quorum,
                    decided.approval_id,
                    decided.state
                )
            });
        }
        ApprovalsCommand::Reject {
            approval_id,
            key,
            reason,
        } => {
            if reason.len() > approval::MAX_REASON_LEN {
                bail!("--reason: at most {} bytes", approval::MAX_REASON_LEN);
            }
            let signer = read_key(&key)?;
            let record = get(approval_id).await?;
            let checked = check(&record)?;
            let statement = checked.request.statement(
                &checked.statement.cluster_id,
                api::approval::Decision::Reject,
                &reason,
                checked.statement.issued_at_unix,
                checked.statement.not_after_unix,
            );
            let mut signed = api::SignedStatement {
                statement: statement.encode_to_vec(),
                signatures: Vec::new(),
            };
            approval::add_signature(&signer, &mut signed)?;
            let decided = decide(&client, &record.approval_id, signed).await?;
            out.show(&record_json(&decided, Some(&checked.description)), || {
                format!(
                    "approval {} is {} (final)",
                    decided.approval_id, decided.state
                )
            });
        }
    }
    Ok(())
}

async fn decide(
    client: &shardsign_client::Client,
    approval_id: &str,
    signed: api::SignedStatement,
) -> anyhow::Result<api::ApprovalRecord> {
    client
        .approvals()
        .decide_approval(api::DecideApprovalRequest {
            approval_id: approval_id.to_string(),
            signed_statement: signed.encode_to_vec(),
        })
        .await
        .map(|r| r.into_inner())
        .map_err(shardsign_client::ClientError::from)
        .context("the coordinator refused the decision")
}
