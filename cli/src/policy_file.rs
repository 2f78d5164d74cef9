//! Reading policy files from disk: checked against the published JSON Schema
//! (`docs/policy.schema.json`, see `schema`), then parsed by `shardsign_policy::file`.

use std::io::Read;
use std::path::Path;

use shardsign_policy::file::MAX_POLICY_FILE_BYTES;
pub use shardsign_policy::file::PolicyFile;
use shardsign_proto::v1 as api;

/// Reads and parses a policy file, reading no more than the format's limit (plus one byte, to
/// tell an oversized file from one exactly at the limit).
pub fn read(path: &Path) -> anyhow::Result<api::Policy> {
    let file = std::fs::File::open(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let mut text = Vec::new();
    file.take(MAX_POLICY_FILE_BYTES as u64 + 1)
        .read_to_end(&mut text)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    if text.len() <= MAX_POLICY_FILE_BYTES {
        let document: serde_json::Value = serde_json::from_slice(&text)
            .map_err(|e| anyhow::anyhow!("{}: not JSON: {e}", path.display()))?;
        crate::schema::check_policy(&document).map_err(|e| {
            anyhow::anyhow!(
                "{}: does not fit the policy schema (docs/policy.schema.json): {e}",
                path.display()
            )
        })?;
    }
    PolicyFile::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}
