//! Backups of a node's store. A backup is an online, consistent copy of the store file
//! (`VACUUM INTO`: a snapshot of one read transaction, without free pages, so no deleted
//! ciphertext rides along), still encrypted under the node's key-encryption key: it holds live
//! shares and must be kept like one. `verify_backup` opens it with the KEK and lists its keys;
//! `restore` puts it in place of a store (moving any existing one aside, never deleting it) and
//! sets a session floor: the restored node refuses every session id made before the restore,
//! since it cannot know which ids were claimed after the backup was taken.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use sha2::{Digest, Sha256};
use shardsign_tss::KeyShare;

use shardsign_seal::{AgeIdentity, AgeRecipient, age_decrypt, age_encrypt};
use zeroize::Zeroizing;

use super::{
    DB_FILE, MIGRATIONS, Opener, Store, apply_pragmas, migrate, share_aad, sqlite_uri_path, unlock,
    unlock_with, wrap_data_key,
};
use crate::crypto;
use crate::error::NodeError;
use crate::kek::KekSource;

/// The meta row that holds the session floor (Unix ms, 8 bytes big-endian).
pub(crate) const SESSION_FLOOR_META: &str = "session_floor_ms";

/// What `backup` wrote.
#[derive(Debug, Clone)]
pub struct BackupSummary {
    pub path: PathBuf,
    pub bytes: u64,
    pub active_keys: u64,
    pub sha256: String,
}

/// One key in a backup, its share decrypted and checked (never shown).
#[derive(Debug, Clone)]
pub struct BackupKey {
    pub key_id: String,
    pub public_key: String,
    pub status: String,
    pub created_at: i64,
    /// The share's epoch: a backup older than the key's last refresh holds a stale (older-epoch)
    /// share, which still interpolates to the same key with the other old shares.
    pub epoch: u64,
}

/// What a backup holds, as its KEK opens it.
#[derive(Debug, Clone)]
pub struct BackupReport {
    pub node_id: u8,
    pub cluster_id: String,
    pub identity_fingerprint: String,
    pub keys: Vec<BackupKey>,
}

fn io(what: &str, path: &Path, error: std::io::Error) -> NodeError {
    NodeError::config("backup", format!("{what} {}: {error}", path.display()))
}

/// `path` + `.partial`: written first, renamed into place when complete.
fn partial_of(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

/// Where a backup's data key, wrapped to an age recipient, lives.
pub fn wrapped_key_path(backup: &Path) -> PathBuf {
    let mut name = backup.as_os_str().to_owned();
    name.push(".data-key.age");
    PathBuf::from(name)
}

fn sync_dir(path: &Path) -> Result<(), NodeError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("cannot sync", dir, e))
}

impl Store {
    /// Copies the store in `data_dir` to `out` (0600) while the node may be running.
    pub fn backup(data_dir: &Path, out: &Path) -> Result<BackupSummary, NodeError> {
        let db = Self::db_path(data_dir);
        if !db.exists() {
            return Err(NodeError::NoStore(data_dir.to_path_buf()));
        }
        if out.exists() {
            return Err(NodeError::config(
                "backup",
                format!("{} exists; refusing to overwrite it", out.display()),
            ));
        }
        let out_text = out
            .to_str()
            .ok_or_else(|| NodeError::config("backup", "the output path must be valid UTF-8"))?;
        let partial = partial_of(out);
        let _ = std::fs::remove_file(&partial);
        let conn = Connection::open_with_flags(&db, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute("VACUUM INTO ?1", [format!("{out_text}.partial")])?;
        drop(conn);
        std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| io("cannot restrict", &partial, e))?;
        let bytes = std::fs::read(&partial).map_err(|e| io("cannot read", &partial, e))?;
        std::fs::File::open(&partial)
            .and_then(|f| f.sync_all())
            .map_err(|e| io("cannot sync", &partial, e))?;
        std::fs::rename(&partial, out).map_err(|e| io("cannot rename to", out, e))?;
        sync_dir(out)?;
        let copy = Connection::open_with_flags(
            format!("file:{}?immutable=1", sqlite_uri_path(out)),
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI,
        )?;
        let active_keys: i64 = copy.query_row(
            "SELECT COUNT(*) FROM keys WHERE status = 'active'",
            [],
            |r| r.get(0),
        )?;
        Ok(BackupSummary {
            path: out.to_path_buf(),
            bytes: bytes.len() as u64,
            active_keys: active_keys as u64,
            sha256: hex::encode(Sha256::digest(&bytes)),
        })
    }

    /// Writes the backup's data key encrypted to the operator's offline `age` recipient, beside
    /// it (`<backup>.data-key.age`, 0600): with the matching identity the backup restores
    /// without the node's passphrase or key file (`restore --age-identity`).
    pub fn wrap_backup_for(
        backup: &Path,
        kek: &KekSource,
        recipient: &AgeRecipient,
    ) -> Result<PathBuf, NodeError> {
        let unlocked = unlock(backup, kek)?;
        let wrapped = age_encrypt(recipient, unlocked.data_key.as_slice());
        let path = wrapped_key_path(backup);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| io("cannot create", &path, e))?;
        file.write_all(&wrapped)
            .and_then(|_| file.sync_all())
            .map_err(|e| io("cannot write", &path, e))?;
        Ok(path)
    }

    /// Opens a backup with `kek` (nothing is written) and decrypts and checks every share.
    pub fn verify_backup(path: &Path, kek: &KekSource) -> Result<BackupReport, NodeError> {
        Self::verify_backup_with(path, Opener::Kek(kek))
    }

    fn verify_backup_with(path: &Path, opener: Opener<'_>) -> Result<BackupReport, NodeError> {
        if !path.is_file() {
            return Err(NodeError::config(
                "backup",
                format!("{} is not a file", path.display()),
            ));
        }
        let unlocked = unlock_with(path, opener)?;
        let conn = Connection::open_with_flags(
            format!("file:{}?immutable=1", sqlite_uri_path(path)),
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI,
        )?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version as usize > MIGRATIONS.len() {
            return Err(NodeError::Corrupt(format!(
                "the backup is from a newer version (schema {version}); restore it with that version"
            )));
        }
        let mut statement = conn.prepare(
            "SELECT key_id, public_key, share_ciphertext, status, created_at, public_package, epoch FROM keys ORDER BY created_at, key_id",
        )?;
        let rows = statement.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, Vec<u8>>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, Option<Vec<u8>>>(5)?,
                r.get::<_, i64>(6)?,
            ))
        })?;
        let mut keys = Vec::new();
        for row in rows {
            let (key_id, public_key, ciphertext, status, created_at, package, epoch) = row?;
            let epoch = epoch as u64;
            let share = crypto::decrypt(
                &unlocked.data_key,
                &share_aad(unlocked.node_id, &unlocked.cluster_id, &key_id, epoch),
                &ciphertext,
            )
            .ok_or_else(|| {
                NodeError::Corrupt(format!("the share of `{key_id}` does not decrypt"))
            })?;
            let share = KeyShare::from_bytes(&share)
                .map_err(|e| NodeError::Corrupt(format!("the share of `{key_id}`: {e}")))?;
            if share.public_key().as_bytes().as_slice() != public_key.as_slice() {
                return Err(NodeError::Corrupt(format!(
                    "the share of `{key_id}` is for another key than its row says"
                )));
            }
            if let Some(package) = package {
                let package = shardsign_tss::PublicPackage::from_bytes(&package)
                    .map_err(|e| NodeError::Corrupt(format!("`{key_id}`: {e}")))?;
                if !package.matches(&share) {
                    return Err(NodeError::Corrupt(format!(
                        "the share of `{key_id}` is not the one its public key package names"
                    )));
                }
            }
            keys.push(BackupKey {
                key_id,
                public_key: hex::encode(public_key),
                status,
                created_at,
                epoch,
            });
        }
        Ok(BackupReport {
            node_id: unlocked.node_id.get(),
            cluster_id: unlocked.cluster_id,
            identity_fingerprint: unlocked.identity.public().fingerprint(),
            keys,
        })
    }

    /// Restores `backup` as the store in `data_dir` (the node must be stopped). An existing store
    /// is moved aside to `node.db.before-restore-<unix seconds>`. With `recovery` (the operator's
    /// age identity and the backup's wrapped data key) the backup opens without the node's old
    /// KEK and its data key is wrapped under `kek` from then on. Returns what was restored and
    /// where the old store went.
    pub fn restore(
        data_dir: &Path,
        backup: &Path,
        kek: &KekSource,
        recovery: Option<&AgeIdentity>,
        expected: (u8, &str),
        now_ms: i64,
    ) -> Result<(BackupReport, Option<PathBuf>), NodeError> {
        let recovered = match recovery {
            None => None,
            Some(identity) => {
                let path = wrapped_key_path(backup);
                let wrapped = std::fs::read(&path).map_err(|e| io("cannot read", &path, e))?;
                let key = age_decrypt(identity, &wrapped).map_err(|e| {
                    NodeError::config("restore", format!("{}: {e}", path.display()))
                })?;
                let key: [u8; 32] = key.as_slice().try_into().map_err(|_| {
                    NodeError::Corrupt("the wrapped data key is not 32 bytes".into())
                })?;
                Some(Zeroizing::new(key))
            }
        };
        let report = match &recovered {
            None => Self::verify_backup(backup, kek)?,
            Some(key) => Self::verify_backup_with(backup, Opener::DataKey(key.clone()))?,
        };
        // Before any file is touched: a backup of another node never replaces this one's store.
        if (report.node_id, report.cluster_id.as_str()) != expected {
            return Err(NodeError::config(
                "restore",
                format!(
                    "{} is a backup of node {} of cluster {}, not of this node ({}, {})",
                    backup.display(),
                    report.node_id,
                    report.cluster_id,
                    expected.0,
                    expected.1
                ),
            ));
        }
        let socket = crate::local_admin::socket_path(data_dir);
        if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
            return Err(NodeError::config(
                "restore",
                "the node is running (its admin socket answers); stop it first",
            ));
        }
        std::fs::create_dir_all(data_dir).map_err(|e| io("cannot create", data_dir, e))?;
        std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| io("cannot restrict", data_dir, e))?;
        let db = Self::db_path(data_dir);
        let moved = if db.exists() {
            let aside = data_dir.join(format!("{DB_FILE}.before-restore-{}", now_ms / 1000));
            for suffix in ["", "-wal", "-shm"] {
                let from = PathBuf::from(format!("{}{suffix}", db.display()));
                if from.exists() {
                    let to = PathBuf::from(format!("{}{suffix}", aside.display()));
                    std::fs::rename(&from, &to).map_err(|e| io("cannot move aside", &from, e))?;
                }
            }
            Some(aside)
        } else {
            None
        };
        let partial = partial_of(&db);
        {
            let bytes = std::fs::read(backup).map_err(|e| io("cannot read", backup, e))?;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&partial)
                .map_err(|e| io("cannot create", &partial, e))?;
            file.write_all(&bytes)
                .and_then(|_| file.sync_all())
                .map_err(|e| io("cannot write", &partial, e))?;
        }
        std::fs::rename(&partial, &db).map_err(|e| io("cannot rename to", &db, e))?;
        sync_dir(&db)?;
        let mut conn = Connection::open_with_flags(&db, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
        apply_pragmas(&conn)?;
        migrate(&mut conn)?;
        // One transaction: a restored store always refuses older session ids and always
        // re-learns from its peers before it signs.
        {
            let tx = conn.transaction()?;
            for name in [SESSION_FLOOR_META, super::relearn::RELEARN_META] {
                tx.execute(
                    "INSERT OR REPLACE INTO meta (name, value) VALUES (?1, ?2)",
                    params![name, now_ms.to_be_bytes().as_slice()],
                )?;
            }
            tx.commit()?;
        }
        if let Some(key) = &recovered {
            let node_id = shardsign_tss::PartyId::new(report.node_id)
                .map_err(|_| NodeError::Corrupt("node id is not 1, 2 or 3".into()))?;
            let (kdf, data_key) = wrap_data_key(kek, node_id, &report.cluster_id, key)?;
            let tx = conn.transaction()?;
            tx.execute("UPDATE meta SET value = ?1 WHERE name = 'kdf'", [kdf])?;
            tx.execute(
                "UPDATE meta SET value = ?1 WHERE name = 'data_key'",
                [data_key],
            )?;
            tx.commit()?;
        }
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .optional()?;
        Ok((report, moved))
    }
}

/// A key whose backed-up share is older than the live one: the backup's share still makes the
/// key together with the other nodes' shares of that old epoch (their old backups).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleKey {
    pub key_id: String,
    pub backup_epoch: u64,
    /// `None`: the live store no longer holds the key at all.
    pub live_epoch: Option<u64>,
}

/// The epochs of the keys in the live store of `data_dir` (read-only; the node may be running),
/// or `None` when there is no store there.
pub fn live_epochs(data_dir: &Path) -> Result<Option<BTreeMap<String, u64>>, NodeError> {
    let path = Store::db_path(data_dir);
    if !path.exists() {
        return Ok(None);
    }
    let conn = Connection::open_with_flags(
        &path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    let mut statement = conn.prepare("SELECT key_id, epoch FROM keys WHERE status = 'active'")?;
    let rows = statement.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    let mut epochs = BTreeMap::new();
    for row in rows {
        let (key_id, epoch) = row?;
        epochs.insert(key_id, epoch as u64);
    }
    Ok(Some(epochs))
}

/// The keys of `report` whose share is older than the live store's (or gone from it).
pub fn stale_keys(report: &BackupReport, live: &BTreeMap<String, u64>) -> Vec<StaleKey> {
    report
        .keys
        .iter()
        .filter(|k| k.status == "active")
        .filter_map(|k| {
            let live_epoch = live.get(&k.key_id).copied();
            (live_epoch != Some(k.epoch) && live_epoch.is_none_or(|e| e > k.epoch)).then(|| {
                StaleKey {
                    key_id: k.key_id.clone(),
                    backup_epoch: k.epoch,
                    live_epoch,
                }
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardsign_tss::PartyId;
    use zeroize::Zeroizing;

    fn kek(byte: u8) -> KekSource {
        KekSource::KeyFile(Zeroizing::new([byte; 32]))
    }

    #[test]
    fn a_backup_opens_only_with_its_kek_and_restores_with_a_session_floor() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("live");
        let (store, identity) = Store::init(&live, PartyId::new(2).unwrap(), "c", &kek(7)).unwrap();
        drop(store);
        let out = dir.path().join("backup");
        let summary = Store::backup(&live, &out).unwrap();
        assert_eq!(summary.active_keys, 0);
        println!("backup of a store without keys: {} bytes", summary.bytes);
        assert!(matches!(
            Store::backup(&live, &out),
            Err(NodeError::Config { .. })
        ));

        let report = Store::verify_backup(&out, &kek(7)).unwrap();
        assert_eq!((report.node_id, report.cluster_id.as_str()), (2, "c"));
        assert_eq!(report.identity_fingerprint, identity.public().fingerprint());
        assert!(matches!(
            Store::verify_backup(&out, &kek(8)),
            Err(NodeError::WrongKek)
        ));
        assert!(matches!(
            Store::restore(&live, &out, &kek(8), None, (2, "c"), 5_000),
            Err(NodeError::WrongKek)
        ));

        // Another node's backup is refused before anything is moved.
        assert!(matches!(
            Store::restore(&live, &out, &kek(7), None, (3, "c"), 5_000),
            Err(NodeError::Config { .. })
        ));
        assert!(Store::db_path(&live).exists());
        // Over an existing store: moved aside, not deleted.
        let (_, moved) =
            Store::restore(&live, &out, &kek(7), None, (2, "c"), 1_700_000_000_000).unwrap();
        let moved = moved.expect("the old store was moved aside");
        assert!(moved.exists(), "{}", moved.display());
        let (store, _) = Store::open(&live, &kek(7)).unwrap();
        assert_eq!(store.session_floor_ms(), 1_700_000_000_000);
        assert_eq!(
            store.relearn_pending_since().unwrap(),
            Some(1_700_000_000_000),
            "a restored store re-learns from its peers before it signs"
        );

        // Into an empty place.
        let fresh = dir.path().join("fresh");
        let (_, moved) = Store::restore(&fresh, &out, &kek(7), None, (2, "c"), 42).unwrap();
        assert!(moved.is_none());
        assert_eq!(
            Store::open(&fresh, &kek(7)).unwrap().0.session_floor_ms(),
            42
        );
    }

    #[test]
    fn a_backup_key_older_than_the_live_one_or_gone_from_it_is_stale() {
        let key = |key_id: &str, epoch: u64| BackupKey {
            key_id: key_id.into(),
            public_key: String::new(),
            status: "active".into(),
            created_at: 0,
            epoch,
        };
        let report = BackupReport {
            node_id: 1,
            cluster_id: "c".into(),
            identity_fingerprint: String::new(),
            keys: vec![
                key("current", 2),
                key("old", 1),
                key("gone", 0),
                key("newer", 3),
            ],
        };
        let live = BTreeMap::from([
            ("current".to_string(), 2),
            ("old".to_string(), 2),
            ("newer".to_string(), 2),
        ]);
        assert_eq!(
            stale_keys(&report, &live),
            [
                StaleKey {
                    key_id: "old".into(),
                    backup_epoch: 1,
                    live_epoch: Some(2)
                },
                StaleKey {
                    key_id: "gone".into(),
                    backup_epoch: 0,
                    live_epoch: None
                },
            ]
        );
    }
}
