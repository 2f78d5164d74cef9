//! The coordinator's registry: keys (public data only), idempotency records, API keys (hashed),
//! signed key policies, spend counters and the audit log, in one SQLite database (WAL, full
//! fsync), so a restart loses nothing. One connection behind a mutex: every check-and-write
//! (spend reservation, audit append) is serialised. The writes on the signing path (a response's
//! idempotency record and its audit row) go through a group-commit writer: one transaction, one
//! fsync for everything waiting, and nobody answered before their write is on disk.

mod api_keys;
mod approvals;
mod audit;
mod bootstrap;
mod epochs;
mod key_policies;
mod spend;

pub use approvals::{ApprovalRow, ApprovalState};
pub use key_policies::PolicyUpdate;
pub use spend::{Reservation, SpendRequest, SpendSubject};

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use shardsign_groupcommit::{GroupCommit, Ticket};

use crate::error::CoordError;

const MIGRATIONS: &[&str] = &[
    "CREATE TABLE keys (
         key_id TEXT PRIMARY KEY,
         label TEXT NOT NULL,
         public_key BLOB NOT NULL,
         address TEXT NOT NULL,
         allowed_chain_ids TEXT NOT NULL,
         created_at INTEGER NOT NULL,
         status TEXT NOT NULL
     );
     CREATE TABLE requests (
         request_id TEXT PRIMARY KEY,
         request_hash BLOB NOT NULL,
         response BLOB NOT NULL,
         created_at INTEGER NOT NULL
     );",
    // Agent access: API keys, signed key policies, spend counters, the audit log.
    "CREATE TABLE api_keys (
         id TEXT PRIMARY KEY,
         label TEXT NOT NULL,
         scopes TEXT NOT NULL,
         key_ids TEXT,
         expires_at_ms INTEGER,
         created_at_ms INTEGER NOT NULL,
         created_by TEXT NOT NULL,
         revoked_at_ms INTEGER,
         policy BLOB NOT NULL
     );
     CREATE TABLE api_key_secrets (
         api_key_id TEXT NOT NULL REFERENCES api_keys(id),
         hash BLOB NOT NULL,
         created_at_ms INTEGER NOT NULL,
         valid_until_ms INTEGER
     );
     CREATE INDEX api_key_secrets_by_key ON api_key_secrets(api_key_id);
     CREATE TABLE key_policies (
         key_id TEXT PRIMARY KEY,
         version INTEGER NOT NULL,
         signed BLOB NOT NULL
     );
     CREATE TABLE spends (
         id INTEGER PRIMARY KEY,
         api_key_id TEXT NOT NULL,
         at_ms INTEGER NOT NULL,
         value TEXT NOT NULL
     );
     CREATE INDEX spends_by_key ON spends(api_key_id, at_ms);
     CREATE TABLE audit (
         seq INTEGER PRIMARY KEY,
         at_ms INTEGER NOT NULL,
         api_key_id TEXT NOT NULL,
         operation TEXT NOT NULL,
         key_id TEXT NOT NULL,
         decision TEXT NOT NULL,
         detail TEXT NOT NULL,
         tx_hash BLOB NOT NULL,
         request_id TEXT NOT NULL,
         peer TEXT NOT NULL,
         prev_hash BLOB NOT NULL,
         hash BLOB NOT NULL
     );
     CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
         BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
     CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
         BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;",
    // One-off facts (the bootstrap credential's use).
    "CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);",
    // A wei on chain 1 is not a wei on chain 137: the 24 h cap counts per chain. Spends written
    // before this did not say their chain (0) and age out within 24 h. `subject` says whose cap
    // a row counts toward: an API key's, or a signing key's policy (then `api_key_id` holds the
    // key id).
    "ALTER TABLE spends ADD COLUMN chain_id INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE spends ADD COLUMN subject TEXT NOT NULL DEFAULT 'api_key';
     CREATE INDEX spends_by_subject ON spends(subject, api_key_id, chain_id, at_ms);",
    // Epochs: a key's shares are at epoch 0 after the ceremony and one more after each refresh.
    // A refresh's commit certificate (the three nodes' votes, as the commit request sent to
    // them) is kept so that a node that missed the commit can be given it later.
    "ALTER TABLE keys ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE keys ADD COLUMN epoch_changed_at INTEGER NOT NULL DEFAULT 0;
     UPDATE keys SET epoch_changed_at = created_at;
     CREATE TABLE refresh_commits (
         key_id TEXT NOT NULL,
         epoch INTEGER NOT NULL,
         commit_request BLOB NOT NULL,
         at INTEGER NOT NULL,
         PRIMARY KEY (key_id, epoch)
     );",
    // Token spends: `asset` is '' for ether, else the token contract (lowercase 0x hex) whose
    // amount `value` then holds.
    "ALTER TABLE spends ADD COLUMN asset TEXT NOT NULL DEFAULT '';",
    // Requests parked for human approval (see `approvals`): the id is the request hash.
    "CREATE TABLE approvals (
         approval_id TEXT PRIMARY KEY,
         state TEXT NOT NULL,
         key_id TEXT NOT NULL,
         request_id TEXT NOT NULL,
         api_key_id TEXT NOT NULL,
         chain_id INTEGER NOT NULL,
         rule TEXT NOT NULL,
         detail TEXT NOT NULL,
         created_at INTEGER NOT NULL,
         expires_at INTEGER NOT NULL,
         payload_kind TEXT NOT NULL,
         payload BLOB NOT NULL,
         statement BLOB NOT NULL,
         signatures BLOB NOT NULL,
         approvers TEXT NOT NULL,
         quorum INTEGER NOT NULL,
         decided_at INTEGER NOT NULL,
         rejected_by TEXT NOT NULL,
         reason TEXT NOT NULL
     );
     CREATE INDEX approvals_by_state ON approvals(state, expires_at);",
];

/// A registered key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub key_id: String,
    pub label: String,
    pub public_key: Vec<u8>,
    pub address: String,
    pub allowed_chain_ids: Vec<u64>,
    pub created_at: i64,
    pub disabled: bool,
    /// The shares' epoch (0 after the ceremony, one more per refresh) and since when.
    pub epoch: u64,
    pub epoch_changed_at: i64,
}

impl KeyRecord {
    /// The public API's view of the key.
    pub fn to_api(&self) -> shardsign_proto::v1::Key {
        use shardsign_proto::v1 as api;
        api::Key {
            key_id: self.key_id.clone(),
            label: self.label.clone(),
            address: self.address.clone(),
            public_key: self.public_key.clone(),
            created_at_unix: self.created_at,
            status: if self.disabled {
                api::KeyStatus::Disabled
            } else {
                api::KeyStatus::Active
            } as i32,
            allowed_chain_ids: self.allowed_chain_ids.clone(),
            epoch: self.epoch,
            epoch_changed_at_unix: self.epoch_changed_at,
        }
    }
}

pub struct Registry {
    /// Every write (and check-and-write) goes through this connection, shared with `writer`.
    conn: Arc<Mutex<Connection>>,
    writer: GroupCommit,
    /// Reads on the signing path (the key, a stored response) use their own read-only
    /// connection: in WAL mode a reader never waits for the writer, so they do not queue behind
    /// a group commit's fsync.
    reader: Mutex<Connection>,
}

/// A signing request's outcome, on disk.
pub struct Completed {
    /// `Ok(None)`: this call's record was stored (or none was due). `Ok(Some)`: a concurrent call
    /// with the same request stored its response first; return that one. `Err`: the request id
    /// was used for a different request (recorded as such in the audit row).
    pub earlier_response: Result<Option<Vec<u8>>, CoordError>,
}

/// How long a signing response is kept for retries with the same request id. After it, the id
/// may be used again (a retry that late is a new request: the transaction's nonce, not the
/// request id, is what stops it landing twice on chain).
pub const IDEMPOTENCY_WINDOW_SECS: i64 = 24 * 3600;

/// A signing response to keep for retries with the same request id.
pub struct IdempotencyRecord {
    pub request_id: String,
    pub request_hash: [u8; 32],
    pub response: Vec<u8>,
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn row_to_key(row: &rusqlite::Row<'_>) -> rusqlite::Result<(KeyRecord, String)> {
    Ok((
        KeyRecord {
            key_id: row.get(0)?,
            label: row.get(1)?,
            public_key: row.get(2)?,
            address: row.get(3)?,
            allowed_chain_ids: Vec::new(),
            created_at: row.get(5)?,
            disabled: row.get::<_, String>(6)? == "disabled",
            epoch: row.get::<_, i64>(7)? as u64,
            epoch_changed_at: row.get(8)?,
        },
        row.get(4)?,
    ))
}

fn with_chains((mut key, chains): (KeyRecord, String)) -> Result<KeyRecord, CoordError> {
    key.allowed_chain_ids = serde_json::from_str(&chains).map_err(|_| {
        CoordError::config(
            "registry",
            format!("chain ids of key `{}` are unreadable", key.key_id),
        )
    })?;
    Ok(key)
}

const KEY_COLUMNS: &str = "key_id, label, public_key, address, allowed_chain_ids, created_at, status, epoch, epoch_changed_at";

impl Registry {
    pub fn open(path: &Path) -> Result<Self, CoordError> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
            && !parent.exists()
        {
            // A directory made here is the coordinator's alone.
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(|e| {
                    CoordError::config(
                        "database",
                        format!("cannot create {}: {e}", parent.display()),
                    )
                })?;
        }
        let mut conn = Connection::open(path)?;
        // The registry holds API-key hashes, the audit log and key policies: private to the
        // coordinator's user (SQLite gives its WAL and shared-memory files the same mode).
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|e| {
            CoordError::config(
                "database",
                format!("cannot make {} private: {e}", path.display()),
            )
        })?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let applied: usize =
            conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))? as usize;
        if applied > MIGRATIONS.len() {
            return Err(CoordError::config(
                "database",
                "the schema is newer than this binary",
            ));
        }
        for (index, migration) in MIGRATIONS.iter().enumerate().skip(applied) {
            let tx = conn.transaction()?;
            tx.execute_batch(migration)?;
            tx.pragma_update(None, "user_version", (index + 1) as i64)?;
            tx.commit()?;
        }
        let reader = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        reader.busy_timeout(std::time::Duration::from_secs(5))?;
        let conn = Arc::new(Mutex::new(conn));
        let writer = GroupCommit::start(conn.clone(), "registry-writer").map_err(|e| {
            CoordError::config("database", format!("cannot start the writer thread: {e}"))
        })?;
        Ok(Registry {
            conn,
            writer,
            reader: Mutex::new(reader),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn reader(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.reader
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn insert_key(&self, key: &KeyRecord) -> Result<(), CoordError> {
        let chains = serde_json::to_string(&key.allowed_chain_ids).expect("numbers serialise");
        let inserted = self.conn().execute(
            "INSERT OR IGNORE INTO keys (key_id, label, public_key, address, allowed_chain_ids, created_at, status, epoch, epoch_changed_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'active', 0, ?6)",
            params![key.key_id, key.label, key.public_key, key.address, chains, key.created_at],
        )?;
        if inserted == 0 {
            return Err(CoordError::KeyExists(key.key_id.clone()));
        }
        Ok(())
    }

    pub fn get_key(&self, key_id: &str) -> Result<KeyRecord, CoordError> {
        let row = self
            .reader()
            .query_row(
                &format!("SELECT {KEY_COLUMNS} FROM keys WHERE key_id = ?1"),
                [key_id],
                row_to_key,
            )
            .optional()?;
        with_chains(row.ok_or_else(|| CoordError::KeyNotFound(key_id.to_string()))?)
    }

    pub fn key_exists(&self, key_id: &str) -> Result<bool, CoordError> {
        Ok(self
            .reader()
            .query_row("SELECT 1 FROM keys WHERE key_id = ?1", [key_id], |_| Ok(()))
            .optional()?
            .is_some())
    }

    pub fn list_keys(&self) -> Result<Vec<KeyRecord>, CoordError> {
        let conn = self.reader();
        let mut statement = conn.prepare(&format!(
            "SELECT {KEY_COLUMNS} FROM keys ORDER BY created_at, key_id"
        ))?;
        let rows = statement.query_map([], row_to_key)?;
        rows.map(|row| with_chains(row?)).collect()
    }

    pub fn disable_key(&self, key_id: &str) -> Result<KeyRecord, CoordError> {
        let updated = self.conn().execute(
            "UPDATE keys SET status = 'disabled' WHERE key_id = ?1",
            [key_id],
        )?;
        if updated == 0 {
            return Err(CoordError::KeyNotFound(key_id.to_string()));
        }
        self.get_key(key_id)
    }

    /// The stored response of `request_id`, if any, after checking it was for the same request.
    pub fn idempotent_response(
        &self,
        request_id: &str,
        request_hash: &[u8; 32],
    ) -> Result<Option<Vec<u8>>, CoordError> {
        stored_response(&self.reader(), request_id, request_hash)
    }

    /// Deletes the idempotency records older than the window; returns how many.
    pub fn prune_idempotency(&self) -> Result<usize, CoordError> {
        Ok(self.conn().execute(
            "DELETE FROM requests WHERE created_at <= ?1",
            [now() - IDEMPOTENCY_WINDOW_SECS],
        )?)
    }

    /// Makes a signing request's outcome durable in one group commit: its audit row and, for a
    /// signature, its idempotency record. The ticket answers once both are on disk.
    pub fn complete_signing(
        &self,
        entry: crate::audit::AuditEntry,
        record: Option<IdempotencyRecord>,
    ) -> Ticket<Result<Completed, CoordError>> {
        self.writer.submit(move |conn| {
            let earlier_response = match record {
                Some(record) => insert_response(conn, &record),
                None => Ok(None),
            };
            // A request id reused for another request is still audited, as what it became.
            let entry = match &earlier_response {
                Err(error) => crate::audit::AuditEntry {
                    decision: crate::audit::Decision::of(error).as_str().to_string(),
                    detail: error.to_string(),
                    tx_hash: Vec::new(),
                    ..entry
                },
                Ok(_) => entry,
            };
            audit::append(conn, entry)?;
            Ok(Completed { earlier_response })
        })
    }
}

fn stored_response(
    conn: &Connection,
    request_id: &str,
    request_hash: &[u8; 32],
) -> Result<Option<Vec<u8>>, CoordError> {
    let row: Option<(Vec<u8>, Vec<u8>)> = conn
        .query_row(
            "SELECT request_hash, response FROM requests WHERE request_id = ?1 AND created_at > ?2",
            params![request_id, now() - IDEMPOTENCY_WINDOW_SECS],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    match row {
        None => Ok(None),
        Some((hash, response)) if hash == request_hash => Ok(Some(response)),
        Some(_) => Err(CoordError::RequestIdReused(request_id.to_string())),
    }
}

/// Records a response; if a concurrent call with the same id stored one first, returns that one
/// (the row is read back only then).
fn insert_response(
    conn: &Connection,
    record: &IdempotencyRecord,
) -> Result<Option<Vec<u8>>, CoordError> {
    // An expired record of this id no longer counts: make room for the new one.
    conn.execute(
        "DELETE FROM requests WHERE request_id = ?1 AND created_at <= ?2",
        params![record.request_id, now() - IDEMPOTENCY_WINDOW_SECS],
    )?;
    let inserted = conn.execute(
        "INSERT OR IGNORE INTO requests (request_id, request_hash, response, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![record.request_id, record.request_hash.as_slice(), record.response, now()],
    )?;
    if inserted == 1 {
        return Ok(None);
    }
    stored_response(conn, &record.request_id, &record.request_hash)
}

pub fn unix_now() -> i64 {
    now()
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::AuditEntry;

    #[test]
    fn the_registry_and_a_directory_it_creates_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state").join("registry.db");
        let registry = Registry::open(&path).unwrap();
        registry.verify_audit().unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        assert_eq!(mode(&path), 0o600);
        // A registry that was left readable by others is made private when opened.
        drop(registry);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        Registry::open(&path).unwrap();
        assert_eq!(mode(&path), 0o600);
    }

    fn entry(request_id: &str) -> AuditEntry {
        AuditEntry {
            operation: "sign_message".into(),
            decision: "allowed".into(),
            request_id: request_id.into(),
            tx_hash: vec![1; 32],
            ..Default::default()
        }
    }

    fn record(request_id: &str, hash: u8, response: &[u8]) -> Option<IdempotencyRecord> {
        Some(IdempotencyRecord {
            request_id: request_id.into(),
            request_hash: [hash; 32],
            response: response.to_vec(),
        })
    }

    #[test]
    fn a_completed_signing_stores_its_record_and_audit_row_together() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(&dir.path().join("r.db")).unwrap();
        let first = registry
            .complete_signing(entry("r1"), record("r1", 7, b"first"))
            .wait_blocking()
            .unwrap();
        assert!(matches!(first.earlier_response, Ok(None)));
        assert_eq!(
            registry.idempotent_response("r1", &[7; 32]).unwrap(),
            Some(b"first".to_vec())
        );
        // The same request again (a concurrent retry that signed too): the first response wins.
        let retry = registry
            .complete_signing(entry("r1"), record("r1", 7, b"second"))
            .wait_blocking()
            .unwrap();
        assert_eq!(retry.earlier_response.unwrap(), Some(b"first".to_vec()));
        // Another request under the same id: refused, and still audited as what it became.
        let reused = registry
            .complete_signing(entry("r1"), record("r1", 8, b"other"))
            .wait_blocking()
            .unwrap();
        assert!(matches!(
            reused.earlier_response,
            Err(CoordError::RequestIdReused(_))
        ));
        let rows = registry.list_audit(0, 10).unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[2].entry.decision, "failed");
        assert!(rows[2].entry.tx_hash.is_empty());
        assert!(
            rows[2].entry.detail.contains("already used"),
            "{}",
            rows[2].entry.detail
        );
        let report = registry.verify_audit().unwrap();
        assert_eq!((report.records, report.broken), (3, None));
    }

    #[test]
    fn idempotency_records_expire_after_the_window_and_the_id_can_be_used_again() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(&dir.path().join("r.db")).unwrap();
        for id in ["old", "fresh"] {
            registry
                .complete_signing(entry(id), record(id, 7, b"signed"))
                .wait_blocking()
                .unwrap();
        }
        // "old" was stored a window and a second ago.
        registry
            .conn()
            .execute(
                "UPDATE requests SET created_at = created_at - ?1 WHERE request_id = 'old'",
                [IDEMPOTENCY_WINDOW_SECS + 1],
            )
            .unwrap();
        assert_eq!(registry.idempotent_response("old", &[7; 32]).unwrap(), None);
        assert!(
            registry
                .idempotent_response("fresh", &[7; 32])
                .unwrap()
                .is_some()
        );
        // Another request under the expired id is a new request, not a reuse.
        let again = registry
            .complete_signing(entry("old"), record("old", 8, b"new"))
            .wait_blocking()
            .unwrap();
        assert!(matches!(again.earlier_response, Ok(None)));
        assert_eq!(
            registry.idempotent_response("old", &[8; 32]).unwrap(),
            Some(b"new".to_vec())
        );
        // Pruning deletes only what aged out.
        registry
            .conn()
            .execute(
                "UPDATE requests SET created_at = created_at - ?1 WHERE request_id = 'fresh'",
                [IDEMPOTENCY_WINDOW_SECS + 1],
            )
            .unwrap();
        assert_eq!(registry.prune_idempotency().unwrap(), 1);
        assert!(
            registry
                .idempotent_response("old", &[8; 32])
                .unwrap()
                .is_some()
        );
    }
}
