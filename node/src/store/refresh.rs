//! How a refresh ends on disk. The next epoch's share waits beside the current one, with this
//! node's vote, until the commit certificate makes it current (the old share is then erased:
//! `secure_delete` zeroes its freed pages and the WAL is checkpointed and truncated, so its
//! ciphertext lingers neither in free pages nor in old WAL frames) or an abort deletes it. A
//! node that aborted a refresh never stores (so never votes for) it afterwards.

use rusqlite::{OptionalExtension, params};
use shardsign_tss::{KeyShare, PublicPackage};

use super::{Store, crypto, now, share_aad};
use crate::error::NodeError;

/// A refresh this node voted for, neither committed nor aborted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRefresh {
    pub session_id: Vec<u8>,
    pub from_epoch: u64,
    /// What every node's vote signs (see `sessions::refresh`).
    pub vote_payload: Vec<u8>,
    /// This node's signed vote.
    pub vote: Vec<u8>,
}

/// What an abort found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshAborted {
    /// The refresh's pending share was deleted.
    Deleted,
    /// This node held no share of it.
    NothingHeld,
}

/// The new share and what the node agreed about it, as stored with its vote.
pub struct NewShare<'a> {
    pub share: &'a KeyShare,
    pub package: &'a PublicPackage,
    pub vote_payload: &'a [u8],
    pub vote: &'a [u8],
}

impl Store {
    /// The current epoch of an active key.
    pub fn key_epoch(&self, key_id: &str) -> Result<u64, NodeError> {
        let epoch: Option<i64> = self
            .conn()
            .query_row(
                "SELECT epoch FROM keys WHERE key_id = ?1 AND status = 'active'",
                [key_id],
                |r| r.get(0),
            )
            .optional()?;
        epoch
            .map(|e| e as u64)
            .ok_or_else(|| NodeError::KeyNotFound(key_id.to_string()))
    }

    /// The refresh of `key_id` this node voted for and that is still open, if any.
    pub fn pending_refresh(&self, key_id: &str) -> Result<Option<PendingRefresh>, NodeError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT session_id, from_epoch, vote_payload, vote FROM pending_refreshes WHERE key_id = ?1",
                [key_id],
                |r| {
                    Ok(PendingRefresh {
                        session_id: r.get(0)?,
                        from_epoch: r.get::<_, i64>(1)? as u64,
                        vote_payload: r.get(2)?,
                        vote: r.get(3)?,
                    })
                },
            )
            .optional()?)
    }

    /// Whether this node aborted the refresh `session_id`.
    pub fn refresh_aborted(&self, session_id: &[u8; 32]) -> Result<bool, NodeError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT 1 FROM aborted_refreshes WHERE session_id = ?1",
                [session_id.as_slice()],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// Stores the next epoch's share of `key_id` with this node's vote, all or nothing; refuses
    /// if this node aborted the refresh, the key is no longer at `from_epoch`, or another
    /// refresh of it is open.
    pub fn put_pending_refresh(
        &self,
        key_id: &str,
        session_id: &[u8; 32],
        from_epoch: u64,
        new: NewShare<'_>,
    ) -> Result<(), NodeError> {
        if !new.package.matches(new.share) {
            return Err(NodeError::Corrupt(format!(
                "the refreshed public key package of `{key_id}` does not match this node's new share"
            )));
        }
        let ciphertext = crypto::encrypt(
            &self.data_key,
            &share_aad(self.node_id, &self.cluster_id, key_id, from_epoch + 1),
            new.share.to_bytes().as_slice(),
        );
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let aborted = tx
            .query_row(
                "SELECT 1 FROM aborted_refreshes WHERE session_id = ?1",
                [session_id.as_slice()],
                |_| Ok(()),
            )
            .optional()?
            .is_some();
        if aborted {
            return Err(NodeError::RefreshAborted(key_id.to_string()));
        }
        let current: Option<(i64, Vec<u8>)> = tx
            .query_row(
                "SELECT epoch, public_key FROM keys WHERE key_id = ?1 AND status = 'active'",
                [key_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let (epoch, public_key) =
            current.ok_or_else(|| NodeError::KeyNotFound(key_id.to_string()))?;
        if epoch as u64 != from_epoch {
            return Err(NodeError::EpochMismatch {
                key_id: key_id.to_string(),
                requested: from_epoch,
                current: epoch as u64,
            });
        }
        if public_key.as_slice() != new.share.public_key().as_bytes().as_slice() {
            return Err(NodeError::Corrupt(format!(
                "the refreshed share of `{key_id}` is for another key"
            )));
        }
        let inserted = tx.execute(
            "INSERT OR IGNORE INTO pending_refreshes
                 (key_id, session_id, from_epoch, share_ciphertext, public_package, vote_payload, vote, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                key_id,
                session_id.as_slice(),
                from_epoch as i64,
                ciphertext,
                new.package.to_bytes(),
                new.vote_payload,
                new.vote,
                now()
            ],
        )?;
        if inserted == 0 {
            return Err(NodeError::RefreshPending(key_id.to_string()));
        }
        tx.commit()?;
        Ok(())
    }

    /// Makes the refresh `session_id` of `key_id` current (the caller checked its certificate)
    /// and erases the old share. Idempotent: returns the key's epoch.
    pub fn commit_refresh(&self, key_id: &str, session_id: &[u8; 32]) -> Result<u64, NodeError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let pending: Option<(i64, Vec<u8>, Vec<u8>)> = tx
            .query_row(
                "SELECT from_epoch, share_ciphertext, public_package FROM pending_refreshes
                 WHERE key_id = ?1 AND session_id = ?2",
                params![key_id, session_id.as_slice()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let Some((from_epoch, ciphertext, package)) = pending else {
            // Committed before (the coordinator retries until every node acknowledged)?
            let done: Option<i64> = tx
                .query_row(
                    "SELECT epoch FROM keys WHERE key_id = ?1 AND epoch_session = ?2",
                    params![key_id, session_id.as_slice()],
                    |r| r.get(0),
                )
                .optional()?;
            return done
                .map(|e| e as u64)
                .ok_or_else(|| NodeError::NoPendingRefresh(key_id.to_string()));
        };
        let updated = tx.execute(
            "UPDATE keys SET share_ciphertext = ?3, public_package = ?4, epoch = ?2 + 1,
                 epoch_changed_at = ?5, epoch_session = ?6, hollow = 0
             WHERE key_id = ?1 AND epoch = ?2 AND status = 'active'",
            params![
                key_id,
                from_epoch,
                ciphertext,
                package,
                now(),
                session_id.as_slice()
            ],
        )?;
        if updated != 1 {
            return Err(NodeError::Corrupt(format!(
                "the pending refresh of `{key_id}` starts from epoch {from_epoch}, which is not the key's current one"
            )));
        }
        tx.execute("DELETE FROM pending_refreshes WHERE key_id = ?1", [key_id])?;
        tx.commit()?;
        erase_old_frames(&conn);
        drop(conn);
        self.shares.invalidate(key_id);
        Ok(from_epoch as u64 + 1)
    }

    /// Aborts the refresh `session_id` of `key_id`: deletes its pending share (one this node
    /// voted for only when `proven`: another node's receipt says it never voted) and remembers
    /// the refresh as aborted, so that this node never votes for it afterwards.
    pub fn abort_refresh(
        &self,
        key_id: &str,
        session_id: &[u8; 32],
        proven: bool,
    ) -> Result<RefreshAborted, NodeError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let committed = tx
            .query_row(
                "SELECT 1 FROM keys WHERE key_id = ?1 AND epoch_session = ?2",
                params![key_id, session_id.as_slice()],
                |_| Ok(()),
            )
            .optional()?
            .is_some();
        if committed {
            return Err(NodeError::RefreshCommitted(key_id.to_string()));
        }
        let held = tx
            .query_row(
                "SELECT 1 FROM pending_refreshes WHERE key_id = ?1 AND session_id = ?2",
                params![key_id, session_id.as_slice()],
                |_| Ok(()),
            )
            .optional()?
            .is_some();
        if held && !proven {
            return Err(NodeError::VotedWithoutReceipt(key_id.to_string()));
        }
        if held {
            tx.execute(
                "DELETE FROM pending_refreshes WHERE key_id = ?1 AND session_id = ?2",
                params![key_id, session_id.as_slice()],
            )?;
        }
        tx.execute(
            "INSERT OR IGNORE INTO aborted_refreshes (session_id, key_id, at) VALUES (?1, ?2, ?3)",
            params![session_id.as_slice(), key_id, now()],
        )?;
        tx.commit()?;
        if held {
            erase_old_frames(&conn);
            Ok(RefreshAborted::Deleted)
        } else {
            Ok(RefreshAborted::NothingHeld)
        }
    }
}

/// Moves every WAL frame into the database (where `secure_delete` zeroed the freed pages) and
/// truncates the WAL, so that no earlier version of a page holding a replaced share survives in
/// it. A reader in the way only delays this to the next checkpoint; logged, not an error.
fn erase_old_frames(conn: &rusqlite::Connection) {
    match conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
        r.get::<_, i64>(0)
    }) {
        Ok(0) => {}
        Ok(_) => tracing::warn!(
            "the WAL could not be truncated after erasing a share (a reader was busy); the next checkpoint will"
        ),
        Err(error) => {
            tracing::warn!(%error, "the WAL could not be checkpointed after erasing a share")
        }
    }
}
