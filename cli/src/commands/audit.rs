//! `shardsign audit`: verify the hash chain, list records.

use std::path::PathBuf;

use anyhow::bail;
use clap::Subcommand;
use serde_json::{Value, json};
use shardsign_client::api;

use super::audit_archive;
use crate::context::Global;
use crate::output::Out;

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
    /// Write the records made before DATE as an archive segment (JSON lines: the records, the
    /// hash they continue from and the head hash the live chain links to). Rows stay in the
    /// database: the audit log is append-only.
    Export {
        /// YYYY-MM-DD (UTC), YYYY-MM-DDTHH:MM:SSZ or @UNIX_SECONDS.
        #[arg(long)]
        before: String,
        /// Start after this record (the previous segment's last), for incremental archives.
        #[arg(long, default_value_t = 0)]
        after: u64,
        #[arg(long)]
        out: PathBuf,
    },
    /// Verify a segment file offline: every record's hash and link, and its closing line.
    VerifySegment { file: PathBuf },
}

pub async fn audit(command: AuditCommand, global: &Global, out: Out) -> anyhow::Result<()> {
    if let AuditCommand::VerifySegment { file } = &command {
        return audit_archive::verify_file(file, out);
    }
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
        AuditCommand::Export {
            before,
            after,
            out: path,
        } => {
            let before_ms = audit_archive::parse_date(&before)?;
            audit_archive::export(&mut admin, before_ms, after, &path, out).await?;
        }
        AuditCommand::VerifySegment { file } => audit_archive::verify_file(&file, out)?,
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
