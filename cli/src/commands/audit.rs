//! `shardsign audit`: verify the hash chain, list records.

use anyhow::bail;
use clap::Subcommand;
use serde_json::{Value, json};
use shardsign_client::api;

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
