//! `shardsign-coordinator backup --out DIR`: the registry (API-key hashes, key policies, spend
//! counters, idempotency records, the audit log) and the API-key hashing key, copied while the
//! coordinator runs. The registry copy is one read transaction (`VACUUM INTO`: consistent, no
//! free pages); its audit chain is verified before the command says it is done. Both files are
//! 0600 in a new 0700 directory: the hashing key turns a stolen registry into checkable hashes.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use crate::config::CoordinatorConfig;
use crate::error::CoordError;
use crate::registry::Registry;

pub const REGISTRY_FILE: &str = "registry.db";
pub const HMAC_KEY_FILE: &str = "api-key-hmac.key";

/// What a backup holds.
#[derive(Debug, Clone)]
pub struct CoordinatorBackup {
    pub dir: PathBuf,
    pub audit_records: u64,
    pub audit_head: [u8; 32],
}

fn failed(what: &str, path: &Path, error: impl std::fmt::Display) -> CoordError {
    CoordError::config("backup", format!("{what} {}: {error}", path.display()))
}

/// Copies the registry and the hashing key into `out` (a directory that must not exist).
pub fn backup(config: &CoordinatorConfig, out: &Path) -> Result<CoordinatorBackup, CoordError> {
    if out.exists() {
        return Err(CoordError::config(
            "backup",
            format!("{} exists; refusing to overwrite it", out.display()),
        ));
    }
    let database = match &config.database {
        crate::config::Database::Sqlite(path) => path,
        crate::config::Database::Postgres(target) => {
            return Err(CoordError::config(
                "backup",
                format!(
                    "the registry is in PostgreSQL ({}): back it up with pg_dump, and keep a copy of {}",
                    target.describe(),
                    config.api_key_hmac_key_file.display()
                ),
            ));
        }
    };
    if !database.exists() {
        return Err(failed("no registry at", database, "missing"));
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(out)
        .map_err(|e| failed("cannot create", out, e))?;
    let registry_copy = out.join(REGISTRY_FILE);
    let target = registry_copy
        .to_str()
        .ok_or_else(|| CoordError::config("backup", "the output path must be valid UTF-8"))?;
    let conn = Connection::open_with_flags(database, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.execute("VACUUM INTO ?1", [target])?;
    drop(conn);
    std::fs::set_permissions(&registry_copy, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| failed("cannot restrict", &registry_copy, e))?;
    let key_copy = out.join(HMAC_KEY_FILE);
    std::fs::copy(&config.api_key_hmac_key_file, &key_copy)
        .map_err(|e| failed("cannot copy", &config.api_key_hmac_key_file, e))?;
    std::fs::set_permissions(&key_copy, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| failed("cannot restrict", &key_copy, e))?;
    for file in [&registry_copy, &key_copy] {
        std::fs::File::open(file)
            .and_then(|f| f.sync_all())
            .map_err(|e| failed("cannot sync", file, e))?;
    }
    let report = Registry::open(&registry_copy)?.verify_audit()?;
    if let Some((seq, problem)) = report.broken {
        return Err(CoordError::config(
            "backup",
            format!("the copied audit log is broken at record {seq}: {problem}"),
        ));
    }
    Ok(CoordinatorBackup {
        dir: out.to_path_buf(),
        audit_records: report.records,
        audit_head: report.head_hash,
    })
}
