//! How a key generation ends on disk. Commit makes the ceremony's share usable (idempotent: the
//! coordinator retries until all three nodes acknowledged) and, once the coordinator registered
//! the key, seals it. Abort deletes the ceremony's share, matched by its session id — a pending
//! one always, a committed one only when another node proved it will never commit (its signed
//! receipt, checked by the caller), a sealed one never — and remembers the ceremony as aborted
//! so that it is never committed afterwards.

use rusqlite::{OptionalExtension, params};

use super::{Store, now};
use crate::error::NodeError;

/// What an abort found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aborted {
    /// The ceremony's share was deleted.
    Deleted,
    /// This node held no share of it.
    NothingHeld,
}

impl Store {
    /// Commits the share `session_id` made for `key_id` (and seals it when `registered`).
    /// Returns whether this node holds that share; refuses a ceremony it aborted.
    pub fn commit_key(
        &self,
        key_id: &str,
        session_id: &[u8; 32],
        registered: bool,
    ) -> Result<bool, NodeError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let aborted = tx
            .query_row(
                "SELECT 1 FROM aborted_ceremonies WHERE session_id = ?1",
                [session_id.as_slice()],
                |_| Ok(()),
            )
            .optional()?
            .is_some();
        if aborted {
            return Err(NodeError::CeremonyAborted(key_id.to_string()));
        }
        let updated = tx.execute(
            "UPDATE keys SET status = 'active', sealed = MAX(sealed, ?3)
             WHERE key_id = ?1 AND ceremony_session = ?2",
            params![key_id, session_id.as_slice(), registered],
        )?;
        tx.commit()?;
        Ok(updated > 0)
    }

    /// Aborts the ceremony `session_id` of `key_id`: see the module's rules. `proven`: another
    /// node's signed receipt says it aborted the ceremony too.
    pub fn abort_key(
        &self,
        key_id: &str,
        session_id: &[u8; 32],
        proven: bool,
    ) -> Result<Aborted, NodeError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let held: Option<(String, bool)> = tx
            .query_row(
                "SELECT status, sealed FROM keys WHERE key_id = ?1 AND ceremony_session = ?2",
                params![key_id, session_id.as_slice()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let outcome = match held {
            None => Aborted::NothingHeld,
            Some((_, true)) => return Err(NodeError::KeySealed(key_id.to_string())),
            Some((status, false)) if status == "active" && !proven => {
                return Err(NodeError::CommittedWithoutReceipt(key_id.to_string()));
            }
            Some(_) => {
                tx.execute(
                    "DELETE FROM keys WHERE key_id = ?1 AND ceremony_session = ?2",
                    params![key_id, session_id.as_slice()],
                )?;
                Aborted::Deleted
            }
        };
        tx.execute(
            "INSERT OR IGNORE INTO aborted_ceremonies (session_id, key_id, at) VALUES (?1, ?2, ?3)",
            params![session_id.as_slice(), key_id, now()],
        )?;
        tx.commit()?;
        if outcome == Aborted::Deleted {
            self.shares.invalidate(key_id);
        }
        Ok(outcome)
    }

    /// Seals the active share of `key_id` (its policy arrived: the key is in use).
    pub fn seal_key(&self, key_id: &str) -> Result<(), NodeError> {
        self.conn().execute(
            "UPDATE keys SET sealed = 1 WHERE key_id = ?1 AND status = 'active' AND sealed = 0",
            [key_id],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use shardsign_tss::PartyId;
    use zeroize::Zeroizing;

    use super::*;
    use crate::kek::KekSource;

    fn share() -> (shardsign_tss::KeyShare, shardsign_tss::PublicPackage) {
        static SHARE: std::sync::OnceLock<(Vec<u8>, Vec<u8>)> = std::sync::OnceLock::new();
        let (share, package) = SHARE.get_or_init(|| {
            let outputs =
                shardsign_tss::local::run_dkg(shardsign_tss::SessionId([7; 32])).expect("dkg");
            (
                outputs[0].share.to_bytes().to_vec(),
                outputs[0].package.to_bytes(),
            )
        });
        (
            shardsign_tss::KeyShare::from_bytes(share).unwrap(),
            shardsign_tss::PublicPackage::from_bytes(package).unwrap(),
        )
    }

    /// A store holding a pending share of `k` made by ceremony [1; 32].
    fn store_with_pending() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let kek = KekSource::KeyFile(Zeroizing::new([5; 32]));
        let (store, _) = Store::init(dir.path(), PartyId::new(1).unwrap(), "test", &kek).unwrap();
        let (share, package) = share();
        store
            .put_pending_key("k", &[1; 32], &share, &package, &[1])
            .unwrap();
        assert_eq!(store.public_package("k").unwrap(), Some(package));
        (dir, store)
    }

    fn status(store: &Store) -> Option<(String, bool)> {
        store
            .list_keys(true)
            .unwrap()
            .into_iter()
            .find(|k| k.key_id == "k")
            .map(|k| (k.status, k.sealed))
    }

    #[test]
    fn a_deleted_share_leaves_no_ciphertext_in_the_file() {
        let (dir, store) = store_with_pending();
        let ciphertext: Vec<u8> = store
            .conn()
            .query_row(
                "SELECT share_ciphertext FROM keys WHERE key_id = 'k'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let needle = &ciphertext[ciphertext.len() / 2..ciphertext.len() / 2 + 64];
        store.abort_key("k", &[1; 32], false).unwrap();
        store
            .conn()
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "the deleted share's ciphertext is still in {}",
                path.display()
            );
        }
    }

    #[test]
    fn an_aborted_ceremony_is_never_committed() {
        let (_dir, store) = store_with_pending();
        assert_eq!(
            store.abort_key("k", &[1; 32], false).unwrap(),
            Aborted::Deleted
        );
        assert_eq!(status(&store), None);
        assert!(matches!(
            store.commit_key("k", &[1; 32], false),
            Err(NodeError::CeremonyAborted(_))
        ));
        // Aborting a ceremony this node holds nothing of still bars it from committing it.
        assert_eq!(
            store.abort_key("k", &[2; 32], false).unwrap(),
            Aborted::NothingHeld
        );
        assert!(store.commit_key("k", &[2; 32], false).is_err());
    }

    #[test]
    fn a_committed_share_needs_a_receipt_and_a_sealed_one_is_never_deleted() {
        let (_dir, store) = store_with_pending();
        assert!(store.commit_key("k", &[1; 32], false).unwrap());
        assert!(
            store.commit_key("k", &[1; 32], false).unwrap(),
            "idempotent"
        );
        assert_eq!(status(&store), Some(("active".into(), false)));
        assert!(matches!(
            store.abort_key("k", &[1; 32], false),
            Err(NodeError::CommittedWithoutReceipt(_))
        ));
        // Another ceremony's id matches nothing.
        assert_eq!(
            store.abort_key("k", &[9; 32], true).unwrap(),
            Aborted::NothingHeld
        );
        assert_eq!(status(&store), Some(("active".into(), false)));
        assert!(
            store.commit_key("k", &[1; 32], true).unwrap(),
            "registered: sealed"
        );
        assert_eq!(status(&store), Some(("active".into(), true)));
        assert!(matches!(
            store.abort_key("k", &[1; 32], true),
            Err(NodeError::KeySealed(_))
        ));
        assert_eq!(status(&store), Some(("active".into(), true)));
    }

    #[test]
    fn a_committed_share_with_a_receipt_is_deleted() {
        let (_dir, store) = store_with_pending();
        assert!(store.commit_key("k", &[1; 32], false).unwrap());
        assert_eq!(
            store.abort_key("k", &[1; 32], true).unwrap(),
            Aborted::Deleted
        );
        assert_eq!(status(&store), None);
        assert!(store.load_key("k").is_err());
    }
}
