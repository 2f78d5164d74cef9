//! Reading policy files from disk; the format itself is `shardsign_policy::file`.

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
    PolicyFile::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}
