//! The node's encrypted store: one SQLite database (WAL, full fsync, file mode 0600) holding the
//! node identity and key shares only as AEAD ciphertext under a random data key, which the KEK
//! wraps. Associated data binds each ciphertext to this node, cluster and row, so a blob copied
//! to another row or node does not decrypt. Unlocking reads only; nothing is written until the
//! KEK has proved right.

use std::fs::{DirBuilder, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use shardsign_groupcommit::{GroupCommit, Ticket};
use shardsign_seal::NodeSecret;
use shardsign_tss::{KeyShare, PartyId, PublicPackage};
use zeroize::Zeroizing;

use crate::crypto;
use crate::error::NodeError;
use crate::kek::{KdfParams, KekSource};
pub use crate::share_cache::LoadedKey;
use crate::share_cache::ShareCache;

pub mod backup;
mod bans;
mod ceremony;
mod charges;
mod membership;
mod refresh;
mod relearn;
pub use bans::Ban;
pub use ceremony::Aborted;
pub use charges::Charge;
pub use membership::{MembershipChangeRecord, RepairedShare};
pub use refresh::{NewShare, PendingRefresh, RefreshAborted};

const DB_FILE: &str = "node.db";
/// Longest security-event detail stored.
const MAX_SECURITY_DETAIL: usize = 1024;
/// Security events are kept this long...
pub const SECURITY_EVENT_RETENTION_SECS: i64 = 90 * 86_400;
/// ...and at most this many (the newest).
pub const MAX_SECURITY_EVENTS: u64 = 100_000;

/// Schema migrations, applied in order; `PRAGMA user_version` counts the applied ones.
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE meta (name TEXT PRIMARY KEY, value BLOB NOT NULL);
     CREATE TABLE keys (
         key_id TEXT PRIMARY KEY,
         public_key BLOB NOT NULL,
         share_ciphertext BLOB NOT NULL,
         allowed_chain_ids TEXT NOT NULL,
         created_at INTEGER NOT NULL
     );
     CREATE TABLE used_sessions (
         session_id BLOB PRIMARY KEY,
         kind TEXT NOT NULL,
         created_at INTEGER NOT NULL
     );
     CREATE TABLE security_events (
         id INTEGER PRIMARY KEY AUTOINCREMENT,
         at INTEGER NOT NULL,
         session_id BLOB,
         kind TEXT NOT NULL,
         detail TEXT NOT NULL
     );",
    // Two-phase key generation: a share is pending until the coordinator finalizes it.
    "ALTER TABLE keys ADD COLUMN status TEXT NOT NULL DEFAULT 'active';
     ALTER TABLE keys ADD COLUMN pending_session BLOB;",
    // Operator-signed key policies: the newest version seen per key (signature kept).
    "CREATE TABLE key_policies (
         key_id TEXT PRIMARY KEY,
         version INTEGER NOT NULL,
         signed BLOB NOT NULL
     );",
    // Peers caught cheating, by identity (a replaced node gets its index back, not the ban).
    "CREATE TABLE bans (
         peer_signing_key BLOB PRIMARY KEY,
         node_id INTEGER NOT NULL,
         reason TEXT NOT NULL,
         at_ms INTEGER NOT NULL
     );",
    // What this node co-signed per key and chain in the last 24 h (keys whose policy caps it).
    "CREATE TABLE charges (
         charge_id BLOB PRIMARY KEY,
         session_id BLOB NOT NULL,
         key_id TEXT NOT NULL,
         chain_id INTEGER NOT NULL,
         value TEXT NOT NULL,
         at_ms INTEGER NOT NULL
     );
     CREATE INDEX charges_by_key ON charges(key_id, at_ms);",
    // A committed share keeps its ceremony's session id (abort matches it); `sealed` once the
    // key is registered (shares from before are); ceremonies this node aborted, never committed.
    "ALTER TABLE keys RENAME COLUMN pending_session TO ceremony_session;
     ALTER TABLE keys ADD COLUMN sealed INTEGER NOT NULL DEFAULT 1;
     CREATE TABLE aborted_ceremonies (
         session_id BLOB PRIMARY KEY,
         key_id TEXT NOT NULL,
         at INTEGER NOT NULL
     );",
    // The group's public key package (every party's verifying share; public), agreed in the
    // ceremony's confirmation round: what share repair checks terms against. NULL for keys made
    // before it was kept.
    "ALTER TABLE keys ADD COLUMN public_package BLOB;",
    // Epochs: a key's share is at epoch 0 after its ceremony and one more after each refresh.
    // The next epoch's share waits in `pending_refreshes` (one per key, with this node's vote)
    // until the commit certificate or an abort; refreshes this node aborted are never voted for.
    "ALTER TABLE keys ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE keys ADD COLUMN epoch_changed_at INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE keys ADD COLUMN epoch_session BLOB;
     UPDATE keys SET epoch_changed_at = created_at;
     CREATE TABLE pending_refreshes (
         key_id TEXT PRIMARY KEY,
         session_id BLOB NOT NULL,
         from_epoch INTEGER NOT NULL,
         share_ciphertext BLOB NOT NULL,
         public_package BLOB NOT NULL,
         vote_payload BLOB NOT NULL,
         vote BLOB NOT NULL,
         created_at INTEGER NOT NULL
     );
     CREATE TABLE aborted_refreshes (
         session_id BLOB PRIMARY KEY,
         key_id TEXT NOT NULL,
         at INTEGER NOT NULL
     );",
    // Membership changes applied (signed by a quorum of membership keys; the statement kept),
    // and shares rebuilt by repair (`hollow` until the complete refresh that follows commits).
    "CREATE TABLE membership_changes (
         version INTEGER PRIMARY KEY,
         node_id INTEGER NOT NULL,
         identity BLOB NOT NULL,
         replaced_signing_key BLOB NOT NULL,
         statement BLOB NOT NULL,
         applied_at INTEGER NOT NULL
     );
     ALTER TABLE keys ADD COLUMN hollow INTEGER NOT NULL DEFAULT 0;",
    // Token charges: what a session moved or granted of a token the key policy lists (NULL
    // token: the charge is ether only).
    "ALTER TABLE charges ADD COLUMN token BLOB;
     ALTER TABLE charges ADD COLUMN token_amount TEXT NOT NULL DEFAULT '0';",
];

/// A key this node holds a share of (public data only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub key_id: String,
    pub public_key: Vec<u8>,
    pub allowed_chain_ids: Vec<u64>,
    pub created_at: i64,
    /// `active`, or `pending` until finalized.
    pub status: String,
    /// The key generation's session id (empty for keys from before it was kept).
    pub ceremony_session: Vec<u8>,
    /// Registered: no abort deletes it.
    pub sealed: bool,
    /// The share's epoch and when it became current (Unix seconds).
    pub epoch: u64,
    pub epoch_changed_at: i64,
    /// A refresh this node voted for that is neither committed nor aborted: its session id and
    /// this node's signed vote.
    pub pending_refresh: Option<(Vec<u8>, Vec<u8>)>,
    /// Whether this node keeps the key's public key package (keys made before nodes kept it
    /// have none until the nodes agree on one: `sessions::package`).
    pub has_public_package: bool,
    /// Rebuilt by share repair and not refreshed since (signs nothing until then).
    pub hollow: bool,
}

/// The unlocked store.
pub struct Store {
    conn: Arc<Mutex<Connection>>,
    /// Batches the session claims of concurrent signing requests into one fsync.
    writer: GroupCommit,
    shares: ShareCache,
    data_key: Zeroizing<[u8; 32]>,
    node_id: PartyId,
    cluster_id: String,
    path: PathBuf,
    /// Session ids made before this (Unix ms) are refused: set when the store is restored from
    /// a backup, which cannot know the ids claimed after it was taken.
    session_floor_ms: i64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("node_id", &self.node_id)
            .field("cluster_id", &self.cluster_id)
            .field("data_key", &"***")
            .finish()
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn data_key_aad(node_id: PartyId, cluster_id: &str) -> Vec<u8> {
    format!("shardsign-data-key-v1\0{}\0{cluster_id}", node_id.get()).into_bytes()
}

fn identity_aad(node_id: PartyId, cluster_id: &str) -> Vec<u8> {
    format!("shardsign-identity-v1\0{}\0{cluster_id}", node_id.get()).into_bytes()
}

/// What a share's ciphertext is bound to: node, cluster, key and epoch (epoch 0 keeps the form
/// shares had before epochs, so that they still decrypt), so a row cannot be swapped for another
/// key's or another epoch's share.
fn share_aad(node_id: PartyId, cluster_id: &str, key_id: &str, epoch: u64) -> Vec<u8> {
    let mut aad = format!(
        "shardsign-share-v1\0{}\0{cluster_id}\0{key_id}",
        node_id.get()
    );
    if epoch > 0 {
        aad.push_str(&format!("\0epoch {epoch}"));
    }
    aad.into_bytes()
}

/// What the KEK opens in a store's meta rows.
pub(crate) struct Unlocked {
    pub node_id: PartyId,
    pub cluster_id: String,
    pub data_key: Zeroizing<[u8; 32]>,
    pub identity: NodeSecret,
}

/// How a store file is opened: with the node's KEK, or with its data key itself (recovered from
/// a backup's wrapping to the operator's offline `age` key).
pub(crate) enum Opener<'a> {
    Kek(&'a KekSource),
    DataKey(Zeroizing<[u8; 32]>),
}

/// Reads the meta rows of the store file at `path` without writing anything (`immutable=1`: no
/// locks, no WAL or shared-memory files; the meta rows live in the main file, init checkpoints
/// them there) and decrypts the data key (unless given) and the identity.
pub(crate) fn unlock(path: &Path, kek: &KekSource) -> Result<Unlocked, NodeError> {
    unlock_with(path, Opener::Kek(kek))
}

pub(crate) fn unlock_with(path: &Path, opener: Opener<'_>) -> Result<Unlocked, NodeError> {
    let opener_kind = match opener {
        Opener::Kek(_) => OpenerKind::Kek,
        Opener::DataKey(_) => OpenerKind::DataKey,
    };
    let uri = format!("file:{}?immutable=1", sqlite_uri_path(path));
    let conn = Connection::open_with_flags(
        uri,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI,
    )?;
    let node_id = PartyId::new(*meta(&conn, "node_id")?.first().unwrap_or(&0))
        .map_err(|_| NodeError::Corrupt("node id is not 1, 2 or 3".into()))?;
    let cluster_id = String::from_utf8(meta(&conn, "cluster_id")?)
        .map_err(|_| NodeError::Corrupt("cluster id is not UTF-8".into()))?;
    // With a recovered data key, an identity that does not open means the key is not this store's.
    let wrong_identity = || match opener_kind {
        OpenerKind::DataKey => NodeError::WrongKek,
        OpenerKind::Kek => NodeError::Corrupt("identity does not decrypt".into()),
    };
    let data_key = match opener {
        Opener::DataKey(key) => key,
        Opener::Kek(kek) => {
            let params: KdfParams = serde_json::from_slice(&meta(&conn, "kdf")?)
                .map_err(|_| NodeError::Corrupt("KDF parameters are unreadable".into()))?;
            let kek_bytes = params.derive(kek)?;
            let data_key_bytes = crypto::decrypt(
                &kek_bytes,
                &data_key_aad(node_id, &cluster_id),
                &meta(&conn, "data_key")?,
            )
            .ok_or(NodeError::WrongKek)?;
            let mut data_key = Zeroizing::new([0u8; 32]);
            if data_key_bytes.len() != 32 {
                return Err(NodeError::Corrupt("data key has the wrong length".into()));
            }
            data_key.copy_from_slice(&data_key_bytes);
            data_key
        }
    };
    let identity_bytes = crypto::decrypt(
        &data_key,
        &identity_aad(node_id, &cluster_id),
        &meta(&conn, "identity")?,
    )
    .ok_or_else(wrong_identity)?;
    let identity = NodeSecret::from_bytes(&identity_bytes)
        .map_err(|_| NodeError::Corrupt("identity is malformed".into()))?;
    Ok(Unlocked {
        node_id,
        cluster_id,
        data_key,
        identity,
    })
}

#[derive(Clone, Copy)]
enum OpenerKind {
    Kek,
    DataKey,
}

/// The data key wrapped under `kek` (fresh KDF parameters): the `kdf` and `data_key` meta rows.
pub(crate) fn wrap_data_key(
    kek: &KekSource,
    node_id: PartyId,
    cluster_id: &str,
    data_key: &[u8; 32],
) -> Result<(Vec<u8>, Vec<u8>), NodeError> {
    let params = KdfParams::for_source(kek);
    let kek_bytes = params.derive(kek)?;
    Ok((
        serde_json::to_vec(&params).expect("KDF params serialise"),
        crypto::encrypt(&kek_bytes, &data_key_aad(node_id, cluster_id), data_key),
    ))
}

/// A path as the path part of an SQLite `file:` URI (`%`, `?` and `#` escaped).
fn sqlite_uri_path(path: &Path) -> String {
    path.to_string_lossy()
        .replace('%', "%25")
        .replace('?', "%3f")
        .replace('#', "%23")
}

fn apply_pragmas(conn: &Connection) -> Result<(), NodeError> {
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // FULL: a commit is on disk before it returns, including in WAL mode.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Deleted rows (an aborted ceremony's share, a replaced policy) are overwritten with zeros,
    // not left in free pages for whoever copies the file later.
    conn.pragma_update(None, "secure_delete", "ON")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(())
}

fn migrate(conn: &mut Connection) -> Result<(), NodeError> {
    let applied: usize =
        conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))? as usize;
    if applied > MIGRATIONS.len() {
        return Err(NodeError::Corrupt(format!(
            "schema version {applied} is newer than this binary supports ({})",
            MIGRATIONS.len()
        )));
    }
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(applied) {
        let tx = conn.transaction()?;
        tx.execute_batch(migration)?;
        tx.pragma_update(None, "user_version", (index + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

fn meta(conn: &Connection, name: &str) -> Result<Vec<u8>, NodeError> {
    conn.query_row("SELECT value FROM meta WHERE name = ?1", [name], |r| {
        r.get(0)
    })
    .optional()?
    .ok_or_else(|| NodeError::Corrupt(format!("meta entry `{name}` is missing")))
}

impl Store {
    pub fn db_path(data_dir: &Path) -> PathBuf {
        data_dir.join(DB_FILE)
    }

    /// Creates the data directory (0700) and a new store with a fresh identity and data key.
    /// Refuses to touch an existing store.
    pub fn init(
        data_dir: &Path,
        node_id: PartyId,
        cluster_id: &str,
        kek: &KekSource,
    ) -> Result<(Store, NodeSecret), NodeError> {
        let path = Self::db_path(data_dir);
        if path.exists() {
            return Err(NodeError::StoreExists(data_dir.to_path_buf()));
        }
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(data_dir)
            .map_err(|e| NodeError::io(data_dir, e))?;
        std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| NodeError::io(data_dir, e))?;
        // Create the file 0600 ourselves so it is never readable by others, even briefly.
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| NodeError::io(&path, e))?;

        let params = KdfParams::for_source(kek);
        let kek_bytes = params.derive(kek)?;
        let data_key = Zeroizing::new(rand::random::<[u8; 32]>());
        let identity = NodeSecret::generate();

        let mut conn = Connection::open(&path)?;
        apply_pragmas(&conn)?;
        migrate(&mut conn)?;
        let tx = conn.transaction()?;
        let insert = |name: &str, value: &[u8]| {
            tx.execute(
                "INSERT INTO meta (name, value) VALUES (?1, ?2)",
                params![name, value],
            )
        };
        insert("node_id", &[node_id.get()])?;
        insert("cluster_id", cluster_id.as_bytes())?;
        insert(
            "kdf",
            serde_json::to_string(&params)
                .expect("KDF params serialise")
                .as_bytes(),
        )?;
        insert(
            "data_key",
            &crypto::encrypt(
                &kek_bytes,
                &data_key_aad(node_id, cluster_id),
                data_key.as_slice(),
            ),
        )?;
        insert(
            "identity",
            &crypto::encrypt(
                &data_key,
                &identity_aad(node_id, cluster_id),
                identity.to_bytes().as_slice(),
            ),
        )?;
        let public = identity.public();
        insert(
            "identity_public",
            &[public.signing_key(), public.kx_key()].concat(),
        )?;
        tx.commit()?;
        // Move the meta rows into the main file, where unlocking reads them.
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        let store = Store::assemble(conn, data_key, node_id, cluster_id.to_string(), path)?;
        Ok((store, identity))
    }

    /// Unlocks an existing store. The KEK is checked on a read-only connection, so a wrong
    /// passphrase leaves every file as it was.
    pub fn open(data_dir: &Path, kek: &KekSource) -> Result<(Store, NodeSecret), NodeError> {
        let path = Self::db_path(data_dir);
        if !path.exists() {
            return Err(NodeError::NoStore(data_dir.to_path_buf()));
        }
        let Unlocked {
            node_id,
            cluster_id,
            data_key,
            identity,
        } = unlock(&path, kek)?;
        let mut conn = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
        apply_pragmas(&conn)?;
        migrate(&mut conn)?;
        let store = Store::assemble(conn, data_key, node_id, cluster_id, path)?;
        Ok((store, identity))
    }

    /// An unlocked store over an open connection, with its writer thread and share cache.
    fn assemble(
        conn: Connection,
        data_key: Zeroizing<[u8; 32]>,
        node_id: PartyId,
        cluster_id: String,
        path: PathBuf,
    ) -> Result<Self, NodeError> {
        let session_floor_ms = conn
            .query_row(
                "SELECT value FROM meta WHERE name = ?1",
                [backup::SESSION_FLOOR_META],
                |r| r.get::<_, Vec<u8>>(0),
            )
            .optional()?
            .map(|bytes| {
                <[u8; 8]>::try_from(bytes.as_slice())
                    .map(i64::from_be_bytes)
                    .map_err(|_| NodeError::Corrupt("the session floor is malformed".into()))
            })
            .transpose()?
            .unwrap_or(i64::MIN);
        let conn = Arc::new(Mutex::new(conn));
        let writer = GroupCommit::start(conn.clone(), "store-writer")
            .map_err(|e| NodeError::config("store", format!("cannot start the writer: {e}")))?;
        Ok(Store {
            conn,
            writer,
            shares: ShareCache::default(),
            data_key,
            node_id,
            cluster_id,
            path,
            session_floor_ms,
        })
    }

    /// Session ids made before this (Unix ms) are refused (see `backup`).
    pub fn session_floor_ms(&self) -> i64 {
        self.session_floor_ms
    }

    pub fn node_id(&self) -> PartyId {
        self.node_id
    }

    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written (transactions roll
        // back), so a poisoned lock is still safe to use.
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records `session_id` as used; refuses one seen before (across restarts too).
    pub fn claim_session(&self, session_id: &[u8; 32], kind: &str) -> Result<(), NodeError> {
        let inserted = self.conn().execute(
            "INSERT OR IGNORE INTO used_sessions (session_id, kind, created_at) VALUES (?1, ?2, ?3)",
            params![session_id.as_slice(), kind, now()],
        )?;
        if inserted == 0 {
            return Err(NodeError::SessionReused);
        }
        Ok(())
    }

    /// Whether `session_id` was claimed before (a read; the claim itself is [`Self::claim_session_later`]).
    pub fn session_used(&self, session_id: &[u8; 32]) -> Result<bool, NodeError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT 1 FROM used_sessions WHERE session_id = ?1",
                [session_id.as_slice()],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// Queues the durable claim of `session_id` — with the session's charge, if its key's policy
    /// caps what this node co-signs, and the deletion of charges given back since — into the
    /// next group commit; the ticket answers
    /// once it is on disk, or with [`NodeError::SessionReused`] if the id was claimed before.
    pub fn claim_session_later(
        &self,
        session_id: &[u8; 32],
        kind: &'static str,
        charge: Option<Charge>,
        given_back: Vec<[u8; 16]>,
    ) -> Ticket<Result<(), NodeError>> {
        let session_id = *session_id;
        self.writer.submit(move |conn| {
            let inserted = conn.execute(
                "INSERT OR IGNORE INTO used_sessions (session_id, kind, created_at) VALUES (?1, ?2, ?3)",
                params![session_id.as_slice(), kind, now()],
            )?;
            if inserted == 0 {
                return Err(NodeError::SessionReused);
            }
            charges::write(conn, charge.as_ref(), &given_back)?;
            Ok(())
        })
    }

    pub fn key_exists(&self, key_id: &str) -> Result<bool, NodeError> {
        Ok(self
            .conn()
            .query_row("SELECT 1 FROM keys WHERE key_id = ?1", [key_id], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// Stores a new share as pending (unusable until [`Self::commit_key`]), all or nothing.
    pub fn put_pending_key(
        &self,
        key_id: &str,
        session_id: &[u8; 32],
        share: &KeyShare,
        package: &PublicPackage,
        allowed_chain_ids: &[u64],
    ) -> Result<(), NodeError> {
        if !package.matches(share) {
            return Err(NodeError::Corrupt(format!(
                "the public key package of `{key_id}` does not match this node's share"
            )));
        }
        let ciphertext = crypto::encrypt(
            &self.data_key,
            &share_aad(self.node_id, &self.cluster_id, key_id, 0),
            share.to_bytes().as_slice(),
        );
        let chains = serde_json::to_string(allowed_chain_ids).expect("numbers serialise");
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let inserted = tx.execute(
            "INSERT OR IGNORE INTO keys
                 (key_id, public_key, share_ciphertext, allowed_chain_ids, created_at, status, ceremony_session, sealed, public_package)
             VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6, 0, ?7)",
            params![key_id, share.public_key().as_bytes().as_slice(), ciphertext, chains, now(), session_id.as_slice(), package.to_bytes()],
        )?;
        if inserted == 0 {
            return Err(NodeError::KeyExists(key_id.to_string()));
        }
        tx.commit()?;
        Ok(())
    }

    /// The group's public key package of `key_id` (any status), if this node kept one.
    pub fn public_package(&self, key_id: &str) -> Result<Option<PublicPackage>, NodeError> {
        let bytes: Option<Option<Vec<u8>>> = self
            .conn()
            .query_row(
                "SELECT public_package FROM keys WHERE key_id = ?1",
                [key_id],
                |r| r.get(0),
            )
            .optional()?;
        bytes
            .ok_or_else(|| NodeError::KeyNotFound(key_id.to_string()))?
            .map(|bytes| {
                PublicPackage::from_bytes(&bytes).map_err(|e| NodeError::Corrupt(e.to_string()))
            })
            .transpose()
    }

    /// Records the agreed package of `key_id` at `epoch` where none is kept yet; the same package
    /// again is a no-op. Refused if the key moved to another epoch meanwhile or already has
    /// another package (a package, once kept, only changes with a refresh).
    pub fn set_public_package(
        &self,
        key_id: &str,
        epoch: u64,
        package: &PublicPackage,
    ) -> Result<(), NodeError> {
        let bytes = package.to_bytes();
        let conn = self.conn();
        let updated = conn.execute(
            "UPDATE keys SET public_package = ?3
             WHERE key_id = ?1 AND epoch = ?2 AND public_package IS NULL",
            params![key_id, epoch as i64, bytes],
        )?;
        if updated == 1 {
            return Ok(());
        }
        let row: Option<(i64, Option<Vec<u8>>)> = conn
            .query_row(
                "SELECT epoch, public_package FROM keys WHERE key_id = ?1",
                [key_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        match row {
            None => Err(NodeError::KeyNotFound(key_id.to_string())),
            Some((current, _)) if current as u64 != epoch => Err(NodeError::EpochMismatch {
                key_id: key_id.to_string(),
                requested: epoch,
                current: current as u64,
            }),
            Some((_, Some(kept))) if kept == bytes => Ok(()),
            Some(_) => Err(NodeError::invalid(
                "shares",
                format!("key `{key_id}` already has another public key package at epoch {epoch}"),
            )),
        }
    }

    /// The share of an active key and the chain ids it may sign for, from the share cache when
    /// it was used recently (see `share_cache` for why that is safe).
    pub fn load_key(&self, key_id: &str) -> Result<LoadedKey, NodeError> {
        let now = Instant::now();
        if let Some(cached) = self.shares.get(key_id, now) {
            return Ok(cached);
        }
        let generation = self.shares.generation();
        let (share, allowed_chain_ids, epoch) = self.decrypt_key(key_id)?;
        let loaded = LoadedKey {
            share: Arc::new(share),
            allowed_chain_ids,
            epoch,
        };
        self.shares.insert(key_id, loaded.clone(), generation, now);
        Ok(loaded)
    }

    /// [`Self::load_key`], refused (naming both epochs) unless the share is at `epoch`.
    pub fn load_key_at(&self, key_id: &str, epoch: u64) -> Result<LoadedKey, NodeError> {
        let loaded = self.load_key(key_id)?;
        if loaded.epoch != epoch {
            return Err(NodeError::EpochMismatch {
                key_id: key_id.to_string(),
                requested: epoch,
                current: loaded.epoch,
            });
        }
        Ok(loaded)
    }

    fn decrypt_key(&self, key_id: &str) -> Result<(KeyShare, Vec<u64>, u64), NodeError> {
        let row: Option<(Vec<u8>, String, i64)> = self
            .conn()
            .query_row(
                "SELECT share_ciphertext, allowed_chain_ids, epoch FROM keys WHERE key_id = ?1 AND status = 'active'",
                [key_id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let (ciphertext, chains, epoch) =
            row.ok_or_else(|| NodeError::KeyNotFound(key_id.to_string()))?;
        let epoch = epoch as u64;
        let bytes = crypto::decrypt(
            &self.data_key,
            &share_aad(self.node_id, &self.cluster_id, key_id, epoch),
            &ciphertext,
        )
        .ok_or_else(|| NodeError::Corrupt(format!("share of key `{key_id}` does not decrypt")))?;
        let share = KeyShare::from_bytes(&bytes).map_err(|e| NodeError::Corrupt(e.to_string()))?;
        let chains = serde_json::from_str(&chains).map_err(|_| {
            NodeError::Corrupt(format!("chain ids of key `{key_id}` are unreadable"))
        })?;
        Ok((share, chains, epoch))
    }

    /// Active keys, and pending ones too if asked.
    pub fn list_keys(&self, include_pending: bool) -> Result<Vec<KeyRecord>, NodeError> {
        let conn = self.conn();
        let mut statement = conn.prepare(
            "SELECT k.key_id, k.public_key, k.allowed_chain_ids, k.created_at, k.status, k.ceremony_session, k.sealed,
                    k.epoch, k.epoch_changed_at, p.session_id, p.vote, k.public_package IS NOT NULL,
                    k.hollow
             FROM keys k LEFT JOIN pending_refreshes p ON p.key_id = k.key_id
             WHERE k.status = 'active' OR ?1 ORDER BY k.created_at, k.key_id",
        )?;
        let rows = statement.query_map([include_pending], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, Option<Vec<u8>>>(5)?,
                r.get::<_, bool>(6)?,
                r.get::<_, i64>(7)?,
                r.get::<_, i64>(8)?,
                r.get::<_, Option<Vec<u8>>>(9)?,
                r.get::<_, Option<Vec<u8>>>(10)?,
                r.get::<_, bool>(11)?,
                r.get::<_, bool>(12)?,
            ))
        })?;
        let mut keys = Vec::new();
        for row in rows {
            let (
                key_id,
                public_key,
                chains,
                created_at,
                status,
                ceremony_session,
                sealed,
                epoch,
                epoch_changed_at,
                pending_session,
                pending_vote,
                has_public_package,
                hollow,
            ) = row?;
            let allowed_chain_ids = serde_json::from_str(&chains).map_err(|_| {
                NodeError::Corrupt(format!("chain ids of key `{key_id}` are unreadable"))
            })?;
            keys.push(KeyRecord {
                key_id,
                public_key,
                allowed_chain_ids,
                created_at,
                status,
                ceremony_session: ceremony_session.unwrap_or_default(),
                sealed,
                epoch: epoch as u64,
                epoch_changed_at,
                pending_refresh: pending_session.zip(pending_vote),
                has_public_package,
                hollow,
            });
        }
        Ok(keys)
    }

    /// The newest signed policy held for `key_id`.
    pub fn load_policy(&self, key_id: &str) -> Result<Option<Vec<u8>>, NodeError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT signed FROM key_policies WHERE key_id = ?1",
                [key_id],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Stores a policy only if it is newer than the one held (the check and the write are one
    /// statement, so two concurrent requests cannot roll the version back).
    pub fn store_policy(&self, key_id: &str, version: u64, signed: &[u8]) -> Result<(), NodeError> {
        let version =
            i64::try_from(version).map_err(|_| NodeError::invalid("version", "above 2^63 - 1"))?;
        self.conn().execute(
            "INSERT INTO key_policies (key_id, version, signed) VALUES (?1, ?2, ?3)
             ON CONFLICT(key_id) DO UPDATE SET version = excluded.version, signed = excluded.signed
             WHERE excluded.version > key_policies.version",
            params![key_id, version, signed],
        )?;
        Ok(())
    }

    pub fn record_security_event(&self, session_id: Option<&[u8; 32]>, kind: &str, detail: &str) {
        // A detail can quote what a peer or the coordinator sent: bounded before it is stored.
        let mut cut = detail.len().min(MAX_SECURITY_DETAIL);
        while !detail.is_char_boundary(cut) {
            cut -= 1;
        }
        let result = self.conn().execute(
            "INSERT INTO security_events (at, session_id, kind, detail) VALUES (?1, ?2, ?3, ?4)",
            params![now(), session_id.map(|s| s.to_vec()), kind, &detail[..cut]],
        );
        if let Err(error) = result {
            tracing::error!(%error, "could not record a security event in the store");
        }
    }

    /// Deletes security events older than `max_age_secs`, and the oldest beyond `max_rows` (a
    /// coordinator that keeps sending refused input must not grow the store without bound).
    /// Returns how many went.
    pub fn prune_security_events(
        &self,
        max_age_secs: i64,
        max_rows: u64,
    ) -> Result<usize, NodeError> {
        let conn = self.conn();
        let aged = conn.execute(
            "DELETE FROM security_events WHERE at <= ?1",
            [now() - max_age_secs],
        )?;
        let over = conn.execute(
            "DELETE FROM security_events WHERE id <= (SELECT id FROM security_events ORDER BY id DESC LIMIT 1 OFFSET ?1)",
            [max_rows as i64],
        )?;
        Ok(aged + over)
    }

    /// Forgets session ids claimed more than `memory_secs` ago. Safe once the ids are older than
    /// a node accepts (`SESSION_ID_MEMORY_SECS`): a replay of a forgotten id is refused for its
    /// age before the store is asked.
    /// Forgets the session ids claimed, and the refreshes aborted, before the memory window:
    /// an older session id is refused anyway, so no session can use them again.
    pub fn prune_used_sessions(&self, memory_secs: i64) -> Result<usize, NodeError> {
        let conn = self.conn();
        let before = now() - memory_secs;
        conn.execute("DELETE FROM aborted_refreshes WHERE at < ?1", [before])?;
        Ok(conn.execute("DELETE FROM used_sessions WHERE created_at < ?1", [before])?)
    }

    pub fn used_session_count(&self) -> Result<u64, NodeError> {
        Ok(self
            .conn()
            .query_row("SELECT COUNT(*) FROM used_sessions", [], |r| {
                r.get::<_, i64>(0)
            })? as u64)
    }

    pub fn security_event_count(&self) -> Result<u64, NodeError> {
        Ok(self
            .conn()
            .query_row("SELECT COUNT(*) FROM security_events", [], |r| {
                r.get::<_, i64>(0)
            })? as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh store of node 1 in `dir`, sealed with key file 3.
    fn test_store(dir: &Path) -> Store {
        Store::init(dir, PartyId::new(1).unwrap(), "test", &key_file_source(3))
            .unwrap()
            .0
    }

    fn key_file_source(byte: u8) -> KekSource {
        KekSource::KeyFile(Zeroizing::new([byte; 32]))
    }

    #[test]
    fn init_open_and_refuse_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("node");
        let (store, identity) =
            Store::init(&data, PartyId::new(2).unwrap(), "test", &key_file_source(1)).unwrap();
        drop(store);
        let mode = std::fs::metadata(&data).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let mode = std::fs::metadata(Store::db_path(&data))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        assert!(matches!(
            Store::init(&data, PartyId::new(2).unwrap(), "test", &key_file_source(1)),
            Err(NodeError::StoreExists(_))
        ));
        let (store, reopened) = Store::open(&data, &key_file_source(1)).unwrap();
        assert_eq!(reopened.public(), identity.public());
        assert_eq!(store.node_id().get(), 2);
        assert!(matches!(
            Store::open(&data, &key_file_source(2)),
            Err(NodeError::WrongKek)
        ));
        let passphrase = KekSource::Passphrase(Zeroizing::new("a long passphrase".into()));
        assert!(matches!(
            Store::open(&data, &passphrase),
            Err(NodeError::KekKindMismatch { .. })
        ));
    }

    #[test]
    fn session_ids_are_claimed_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = test_store(dir.path());
        store.claim_session(&[1; 32], "sign").unwrap();
        assert!(matches!(
            store.claim_session(&[1; 32], "sign"),
            Err(NodeError::SessionReused)
        ));
        drop(store);
        let (store, _) = Store::open(dir.path(), &key_file_source(3)).unwrap();
        assert!(matches!(
            store.claim_session(&[1; 32], "keygen"),
            Err(NodeError::SessionReused)
        ));
    }

    #[test]
    fn only_session_ids_claimed_before_the_memory_window_are_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let store = test_store(dir.path());
        store.claim_session(&[1; 32], "sign").unwrap();
        store.claim_session(&[2; 32], "sign").unwrap();
        let memory = shardsign_request::SESSION_ID_MEMORY_SECS;
        store
            .conn()
            .execute(
                "UPDATE used_sessions SET created_at = ?1 WHERE session_id = ?2",
                params![now() - memory - 1, [1u8; 32].as_slice()],
            )
            .unwrap();
        assert_eq!(store.prune_used_sessions(memory).unwrap(), 1);
        assert_eq!(store.used_session_count().unwrap(), 1);
        assert!(matches!(
            store.claim_session(&[2; 32], "sign"),
            Err(NodeError::SessionReused)
        ));
    }

    #[test]
    fn a_group_committed_claim_is_on_disk_when_its_ticket_answers() {
        let dir = tempfile::tempdir().unwrap();
        let store = test_store(dir.path());
        let tickets: Vec<_> = (0..50u8)
            .map(|i| store.claim_session_later(&[i; 32], "sign", None, Vec::new()))
            .collect();
        let again = store.claim_session_later(&[7; 32], "sign", None, Vec::new());
        for ticket in tickets {
            ticket.wait_blocking().expect("claimed");
        }
        assert!(matches!(
            again.wait_blocking(),
            Err(NodeError::SessionReused)
        ));
        assert!(store.session_used(&[49; 32]).unwrap());
        assert!(!store.session_used(&[50; 32]).unwrap());
        drop(store);
        let (store, _) = Store::open(dir.path(), &key_file_source(3)).unwrap();
        assert!(store.session_used(&[0; 32]).unwrap());
        assert!(matches!(
            store
                .claim_session_later(&[3; 32], "sign", None, Vec::new())
                .wait_blocking(),
            Err(NodeError::SessionReused)
        ));
    }

    #[test]
    fn a_charge_is_on_disk_with_its_claim_and_a_given_back_one_is_deleted_by_the_next() {
        let dir = tempfile::tempdir().unwrap();
        Store::init(
            dir.path(),
            PartyId::new(1).unwrap(),
            "test",
            &key_file_source(4),
        )
        .unwrap();
        let (store, _) = Store::open(dir.path(), &key_file_source(4)).unwrap();
        let charge = |id: u8, at_ms: i64| Charge {
            charge_id: [id; 16],
            session_id: [id; 32],
            key_id: "k".into(),
            chain_id: 1,
            value: shardsign_eth::U256::from(id),
            // Charge 2 also moved a token: it survives the reopen with its amount.
            token: (id == 2).then(|| {
                (
                    shardsign_eth::Address([0xcc; 20]),
                    shardsign_eth::U256::MAX - shardsign_eth::U256::from(id),
                )
            }),
            at_ms,
        };
        let now = 10 * 86_400_000;
        store
            .claim_session_later(&[1; 32], "sign", Some(charge(1, now)), Vec::new())
            .wait_blocking()
            .unwrap();
        store
            .claim_session_later(&[2; 32], "sign", Some(charge(2, now)), Vec::new())
            .wait_blocking()
            .unwrap();
        drop(store);
        let (store, _) = Store::open(dir.path(), &key_file_source(4)).unwrap();
        assert_eq!(
            store.charges_since("k", now).unwrap(),
            vec![charge(1, now), charge(2, now)]
        );
        // Charge 1 given back: deleted with the next claim, which also prunes what aged out.
        store
            .claim_session_later(&[3; 32], "sign", None, vec![[1; 16]])
            .wait_blocking()
            .unwrap();
        assert_eq!(store.charges_since("k", now).unwrap(), vec![charge(2, now)]);
        assert!(
            store
                .charges_since("k", now + 86_400_000)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn security_events_are_bounded_in_size_age_and_number() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::init(
            dir.path(),
            PartyId::new(1).unwrap(),
            "test",
            &key_file_source(6),
        )
        .unwrap();
        store.record_security_event(None, "policy_rejected", &"x".repeat(100_000));
        let stored: String = store
            .conn()
            .query_row("SELECT detail FROM security_events", [], |r| r.get(0))
            .unwrap();
        assert_eq!(stored.len(), MAX_SECURITY_DETAIL);
        for i in 0..9 {
            store.record_security_event(None, "seal_failed", &format!("event {i}"));
        }
        // The oldest go beyond the row limit; the newest stay.
        assert_eq!(
            store
                .prune_security_events(SECURITY_EVENT_RETENTION_SECS, 4)
                .unwrap(),
            6
        );
        assert_eq!(store.security_event_count().unwrap(), 4);
        let newest: String = store
            .conn()
            .query_row(
                "SELECT detail FROM security_events ORDER BY id DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(newest, "event 8");
        // And everything past the age limit.
        store
            .conn()
            .execute("UPDATE security_events SET at = at - 100", [])
            .unwrap();
        assert_eq!(store.prune_security_events(50, 100).unwrap(), 4);
        assert_eq!(store.security_event_count().unwrap(), 0);
    }
}
