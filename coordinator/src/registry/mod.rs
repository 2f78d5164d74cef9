//! The coordinator's registry: keys (public data only), idempotency records, API keys (hashed),
//! signed key policies, spend counters, approvals and the audit log, behind one interface with
//! two backends (see `db`):
//!
//! - SQLite (the embedded default; one coordinator): WAL, full fsync, so a restart loses
//!   nothing. One write connection behind a mutex serialises every check-and-write (spend
//!   reservation, audit append); reads use their own connection and never wait for the writer.
//!   The writes on the signing path (a response's idempotency record and its audit row) go
//!   through a group-commit writer: one transaction, one fsync for everything waiting, and
//!   nobody answered before their write is on disk.
//! - PostgreSQL (several coordinators sharing one database): every check-and-write is one
//!   transaction that locks what it checks (the spend table for a reservation, the audit table
//!   for an append, the row for a decision), so coordinators cannot overspend or fork the chain.

mod api_keys;
mod approvals;
mod audit;
mod bootstrap;
pub mod db;
mod epochs;
mod key_policies;
mod schema;
mod shared;
mod spend;
#[cfg(test)]
pub mod testing;

pub use approvals::{ApprovalRow, ApprovalState};
pub use key_policies::PolicyUpdate;
pub use shared::Claim;
pub use spend::{Reservation, SpendRequest, SpendSubject};

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use shardsign_groupcommit::{GroupCommit, Ticket};

use crate::error::CoordError;
use db::postgres::{Pool, Target};
use db::sqlite::Lite;
use db::{Dialect, Sql, args};

/// How long a starting coordinator waits for its PostgreSQL registry to answer.
const CONNECT_PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);

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
    backend: Backend,
    /// This process's name on the claims it holds (random per start).
    owner: String,
}

enum Backend {
    Sqlite(Box<SqliteStore>),
    Postgres(Arc<Pool>),
}

struct SqliteStore {
    path: PathBuf,
    /// Every write (and check-and-write) goes through this connection, shared with `writer`.
    conn: Arc<Mutex<Connection>>,
    writer: GroupCommit,
    /// Reads on the signing path (the key, a stored response) use their own read-only
    /// connection: in WAL mode a reader never waits for the writer, so they do not queue behind
    /// a group commit's fsync.
    reader: Mutex<Connection>,
    /// Request ids being signed: the request's hash and until when (see `shared`).
    claims: Mutex<std::collections::HashMap<String, ([u8; 32], std::time::Instant)>>,
}

fn locked(conn: &Mutex<Connection>) -> std::sync::MutexGuard<'_, Connection> {
    conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
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

fn row_to_key(row: &db::Row) -> Result<KeyRecord, CoordError> {
    let key_id = row.text(0)?;
    let allowed_chain_ids = serde_json::from_str(&row.text(4)?).map_err(|_| {
        CoordError::config(
            "registry",
            format!("chain ids of key `{key_id}` are unreadable"),
        )
    })?;
    Ok(KeyRecord {
        label: row.text(1)?,
        public_key: row.blob(2)?,
        address: row.text(3)?,
        allowed_chain_ids,
        created_at: row.int(5)?,
        disabled: row.text(6)? == "disabled",
        epoch: row.int(7)? as u64,
        epoch_changed_at: row.int(8)?,
        key_id,
    })
}

fn new_owner() -> String {
    hex::encode(rand::random::<[u8; 8]>())
}

fn open_reader(path: &Path) -> Result<Connection, CoordError> {
    let reader = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    reader.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(reader)
}

const KEY_COLUMNS: &str = "key_id, label, public_key, address, allowed_chain_ids, created_at, status, epoch, epoch_changed_at";

impl Registry {
    /// Opens (creating and migrating) the embedded SQLite registry at `path`.
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
        if applied > schema::SQLITE.len() {
            return Err(CoordError::config(
                "database",
                "the schema is newer than this binary",
            ));
        }
        for (index, migration) in schema::SQLITE.iter().enumerate().skip(applied) {
            let tx = conn.transaction()?;
            tx.execute_batch(migration)?;
            tx.pragma_update(None, "user_version", (index + 1) as i64)?;
            tx.commit()?;
        }
        let reader = open_reader(path)?;
        let conn = Arc::new(Mutex::new(conn));
        let writer = GroupCommit::start(conn.clone(), "registry-writer").map_err(|e| {
            CoordError::config("database", format!("cannot start the writer thread: {e}"))
        })?;
        Ok(Registry {
            backend: Backend::Sqlite(Box::new(SqliteStore {
                path: path.to_path_buf(),
                conn,
                writer,
                reader: Mutex::new(reader),
                claims: Mutex::default(),
            })),
            owner: new_owner(),
        })
    }

    /// Connects to a PostgreSQL registry shared with other coordinators, migrating it first
    /// (under an advisory lock, so coordinators starting together migrate once).
    pub fn connect(target: Target) -> Result<Self, CoordError> {
        let pool = Pool::new(target);
        // A database starting beside the coordinator (a container, a host booting) is waited
        // for a while; then the coordinator says it cannot reach it.
        let waiting_since = std::time::Instant::now();
        loop {
            match pool.run(|conn| Ok(conn.client.simple_query("SELECT 1")?.len())) {
                Ok(_) => break,
                Err(CoordError::Unavailable(why)) if waiting_since.elapsed() < CONNECT_PATIENCE => {
                    tracing::warn!(reason = why, "waiting for the registry database");
                    std::thread::sleep(std::time::Duration::from_secs(1));
                }
                Err(error) => return Err(error),
            }
        }
        pool.run(|conn| {
            let mut tx = conn.client.transaction()?;
            // Any constant: one lock for "the schema is changing".
            tx.batch_execute(
                "SELECT pg_advisory_xact_lock(7100);
                 CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL);",
            )?;
            let applied = tx
                .query_opt("SELECT version FROM schema_version", &[])?
                .map(|row| row.get::<_, i64>(0))
                .unwrap_or(0) as usize;
            if applied > schema::POSTGRES.len() {
                return Err(CoordError::config(
                    "database",
                    "the schema is newer than this binary",
                ));
            }
            for migration in &schema::POSTGRES[applied..] {
                tx.batch_execute(migration)?;
            }
            let version = schema::POSTGRES.len() as i64;
            tx.execute("DELETE FROM schema_version", &[])?;
            tx.execute(
                "INSERT INTO schema_version (version) VALUES ($1)",
                &[&version],
            )?;
            tx.commit()?;
            Ok(())
        })?;
        Ok(Registry {
            backend: Backend::Postgres(Arc::new(pool)),
            owner: new_owner(),
        })
    }

    /// Opens the registry the configuration names.
    pub fn open_configured(database: &crate::config::Database) -> Result<Self, CoordError> {
        match database {
            crate::config::Database::Sqlite(path) => Registry::open(path),
            crate::config::Database::Postgres(target) => Registry::connect((**target).clone()),
        }
    }

    pub fn dialect(&self) -> Dialect {
        match &self.backend {
            Backend::Sqlite(_) => Dialect::Sqlite,
            Backend::Postgres(_) => Dialect::Postgres,
        }
    }

    /// Whether other coordinators may change this registry (their changes must be looked for).
    pub fn is_shared(&self) -> bool {
        self.dialect() == Dialect::Postgres
    }

    /// Runs `work` in one write transaction: all of it is stored, or none.
    pub(crate) fn write<T: Send>(
        &self,
        work: impl FnOnce(&mut dyn Sql) -> Result<T, CoordError> + Send,
    ) -> Result<T, CoordError> {
        match &self.backend {
            Backend::Sqlite(store) => {
                let mut conn = locked(&store.conn);
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let result = work(&mut Lite(&tx))?;
                tx.commit()?;
                Ok(result)
            }
            Backend::Postgres(pool) => pool.transaction(work),
        }
    }

    /// Runs `work`'s reads; they never wait for a writer's commit.
    pub(crate) fn read<T: Send>(
        &self,
        work: impl FnOnce(&mut dyn Sql) -> Result<T, CoordError> + Send,
    ) -> Result<T, CoordError> {
        match &self.backend {
            Backend::Sqlite(store) => work(&mut Lite(&locked(&store.reader))),
            Backend::Postgres(pool) => pool.autocommit(work),
        }
    }

    /// Runs a long read (the audit walk) without holding the signing path's reader: SQLite
    /// gets a connection of its own for it.
    pub(crate) fn read_long<T: Send>(
        &self,
        work: impl FnOnce(&mut dyn Sql) -> Result<T, CoordError> + Send,
    ) -> Result<T, CoordError> {
        match &self.backend {
            Backend::Sqlite(store) => work(&mut Lite(&open_reader(&store.path)?)),
            Backend::Postgres(pool) => pool.autocommit(work),
        }
    }

    pub fn insert_key(&self, key: &KeyRecord) -> Result<(), CoordError> {
        let chains = serde_json::to_string(&key.allowed_chain_ids).expect("numbers serialise");
        let inserted = self.write(|sql| {
            sql.execute(
                "INSERT INTO keys (key_id, label, public_key, address, allowed_chain_ids, created_at, status, epoch, epoch_changed_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'active', 0, ?6) ON CONFLICT DO NOTHING",
                args![&key.key_id, &key.label, &key.public_key, &key.address, chains, key.created_at],
            )
        })?;
        if inserted == 0 {
            return Err(CoordError::KeyExists(key.key_id.clone()));
        }
        Ok(())
    }

    pub fn get_key(&self, key_id: &str) -> Result<KeyRecord, CoordError> {
        let row = self.read(|sql| {
            sql.query_opt(
                &format!("SELECT {KEY_COLUMNS} FROM keys WHERE key_id = ?1"),
                args![key_id],
            )
        })?;
        row_to_key(&row.ok_or_else(|| CoordError::KeyNotFound(key_id.to_string()))?)
    }

    pub fn key_exists(&self, key_id: &str) -> Result<bool, CoordError> {
        Ok(self
            .read(|sql| sql.query_opt("SELECT 1 FROM keys WHERE key_id = ?1", args![key_id]))?
            .is_some())
    }

    pub fn list_keys(&self) -> Result<Vec<KeyRecord>, CoordError> {
        self.read(|sql| {
            sql.query(
                &format!("SELECT {KEY_COLUMNS} FROM keys ORDER BY created_at, key_id"),
                &[],
            )
        })?
        .iter()
        .map(row_to_key)
        .collect()
    }

    pub fn disable_key(&self, key_id: &str) -> Result<KeyRecord, CoordError> {
        let updated = self.write(|sql| {
            sql.execute(
                "UPDATE keys SET status = 'disabled' WHERE key_id = ?1",
                args![key_id],
            )
            .and_then(|updated| shared::changed(sql).map(|()| updated))
        })?;
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
        self.read(|sql| stored_response(sql, request_id, request_hash))
    }

    /// Deletes the idempotency records older than the window; returns how many.
    pub fn prune_idempotency(&self) -> Result<usize, CoordError> {
        let cutoff = now() - IDEMPOTENCY_WINDOW_SECS;
        Ok(self.write(|sql| {
            sql.execute("DELETE FROM requests WHERE created_at <= ?1", args![cutoff])
        })? as usize)
    }

    /// Makes a signing request's outcome durable: its audit row and, for a signature, its
    /// idempotency record, in one transaction (on SQLite, one group commit). The ticket answers
    /// once both are on disk.
    pub fn complete_signing(
        &self,
        entry: crate::audit::AuditEntry,
        record: Option<IdempotencyRecord>,
        keep: Vec<i64>,
    ) -> Ticket<Result<Completed, CoordError>> {
        match &self.backend {
            Backend::Sqlite(store) => store
                .writer
                .submit(move |conn| complete(&mut Lite(conn), entry, record, &keep)),
            Backend::Postgres(pool) => {
                let (reply, ticket) = Ticket::channel();
                let pool = pool.clone();
                // A thread of its own, so that the caller awaits the ticket instead of blocking
                // a runtime worker for the round trips and the commit.
                let spawned = std::thread::Builder::new()
                    .name("registry-complete".into())
                    .spawn(move || {
                        let _ = reply.send(
                            pool.transaction_here(move |sql| complete(sql, entry, record, &keep)),
                        );
                    });
                if let Err(error) = spawned {
                    tracing::error!(%error, "cannot start a thread to store a signing's outcome");
                }
                ticket
            }
        }
    }
}

/// The body of [`Registry::complete_signing`], in the caller's transaction: `keep` are the
/// request's spend reservations, kept when its record is stored.
fn complete(
    sql: &mut dyn Sql,
    entry: crate::audit::AuditEntry,
    record: Option<IdempotencyRecord>,
    keep: &[i64],
) -> Result<Completed, CoordError> {
    let earlier_response = match record {
        Some(record) => insert_response(sql, &record),
        None => Ok(None),
    };
    if earlier_response.is_ok() {
        spend::keep_spends(sql, keep)?;
    }
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
    audit::append(sql, entry)?;
    Ok(Completed { earlier_response })
}

fn stored_response(
    sql: &mut dyn Sql,
    request_id: &str,
    request_hash: &[u8; 32],
) -> Result<Option<Vec<u8>>, CoordError> {
    let row = sql.query_opt(
        "SELECT request_hash, response FROM requests WHERE request_id = ?1 AND created_at > ?2",
        args![request_id, now() - IDEMPOTENCY_WINDOW_SECS],
    )?;
    match row {
        None => Ok(None),
        Some(row) if row.blob(0)? == request_hash => Ok(Some(row.blob(1)?)),
        Some(_) => Err(CoordError::RequestIdReused(request_id.to_string())),
    }
}

/// Records a response; if a concurrent call with the same id stored one first, returns that one
/// (the row is read back only then).
fn insert_response(
    sql: &mut dyn Sql,
    record: &IdempotencyRecord,
) -> Result<Option<Vec<u8>>, CoordError> {
    // An expired record of this id no longer counts: make room for the new one.
    sql.execute(
        "DELETE FROM requests WHERE request_id = ?1 AND created_at <= ?2",
        args![&record.request_id, now() - IDEMPOTENCY_WINDOW_SECS],
    )?;
    let inserted = sql.execute(
        "INSERT INTO requests (request_id, request_hash, response, created_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT DO NOTHING",
        args![&record.request_id, record.request_hash.as_slice(), &record.response, now()],
    )?;
    if inserted == 1 {
        return Ok(None);
    }
    stored_response(sql, &record.request_id, &record.request_hash)
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
        for registry in crate::registry::testing::each_backend() {
            a_completed_signing_stores_its_record_and_audit_row_together_on(&registry);
        }
    }

    fn a_completed_signing_stores_its_record_and_audit_row_together_on(registry: &Registry) {
        let first = registry
            .complete_signing(entry("r1"), record("r1", 7, b"first"), Vec::new())
            .wait_blocking()
            .unwrap();
        assert!(matches!(first.earlier_response, Ok(None)));
        assert_eq!(
            registry.idempotent_response("r1", &[7; 32]).unwrap(),
            Some(b"first".to_vec())
        );
        // The same request again (a concurrent retry that signed too): the first response wins.
        let retry = registry
            .complete_signing(entry("r1"), record("r1", 7, b"second"), Vec::new())
            .wait_blocking()
            .unwrap();
        assert_eq!(retry.earlier_response.unwrap(), Some(b"first".to_vec()));
        // Another request under the same id: refused, and still audited as what it became.
        let reused = registry
            .complete_signing(entry("r1"), record("r1", 8, b"other"), Vec::new())
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
        for registry in crate::registry::testing::each_backend() {
            idempotency_records_expire_after_the_window_and_the_id_can_be_used_again_on(&registry);
        }
    }

    fn idempotency_records_expire_after_the_window_and_the_id_can_be_used_again_on(
        registry: &Registry,
    ) {
        for id in ["old", "fresh"] {
            registry
                .complete_signing(entry(id), record(id, 7, b"signed"), Vec::new())
                .wait_blocking()
                .unwrap();
        }
        // "old" was stored a window and a second ago.
        registry
            .write(|sql| {
                sql.execute(
                    "UPDATE requests SET created_at = created_at - ?1 WHERE request_id = 'old'",
                    args![IDEMPOTENCY_WINDOW_SECS + 1],
                )
            })
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
            .complete_signing(entry("old"), record("old", 8, b"new"), Vec::new())
            .wait_blocking()
            .unwrap();
        assert!(matches!(again.earlier_response, Ok(None)));
        assert_eq!(
            registry.idempotent_response("old", &[8; 32]).unwrap(),
            Some(b"new".to_vec())
        );
        // Pruning deletes only what aged out.
        registry
            .write(|sql| {
                sql.execute(
                    "UPDATE requests SET created_at = created_at - ?1 WHERE request_id = 'fresh'",
                    args![IDEMPOTENCY_WINDOW_SECS + 1],
                )
            })
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
