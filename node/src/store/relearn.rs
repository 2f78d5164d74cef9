//! A restored store's debt to the present: `restore` marks it, and the node signs nothing until
//! it has taken from its peers what only moves forward (see `sessions::relearn`). Here: the mark,
//! what a peer reports from its own store, and the one transaction that adds what was learned
//! and clears the mark (so a crash half way leaves the node still refusing, never half taught).

use rusqlite::{OptionalExtension, params};

use super::charges::WINDOW_MS;
use super::{Ban, Charge, Store};
use crate::error::NodeError;

/// Set by `restore` (the restore's Unix ms), deleted when the node has re-learned.
pub(crate) const RELEARN_META: &str = "relearn_pending_since_ms";

impl Store {
    /// When this store was restored, while the node has not yet re-learned from its peers.
    pub fn relearn_pending_since(&self) -> Result<Option<i64>, NodeError> {
        let bytes: Option<Vec<u8>> = self
            .conn()
            .query_row(
                "SELECT value FROM meta WHERE name = ?1",
                [RELEARN_META],
                |r| r.get(0),
            )
            .optional()?;
        bytes
            .map(|bytes| {
                <[u8; 8]>::try_from(bytes.as_slice())
                    .map(i64::from_be_bytes)
                    .map_err(|_| NodeError::Corrupt("the relearn mark is malformed".into()))
            })
            .transpose()
    }

    /// Every key's current signed statement, as `PutPolicy` took it.
    pub fn key_statements(&self) -> Result<Vec<Vec<u8>>, NodeError> {
        let conn = self.conn();
        let mut statement = conn.prepare("SELECT signed FROM key_policies ORDER BY key_id")?;
        let rows = statement.query_map([], |r| r.get::<_, Vec<u8>>(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The signed membership statements applied here, oldest first.
    pub fn membership_statements(&self) -> Result<Vec<Vec<u8>>, NodeError> {
        let conn = self.conn();
        let mut statement =
            conn.prepare("SELECT statement FROM membership_changes ORDER BY version")?;
        let rows = statement.query_map([], |r| r.get::<_, Vec<u8>>(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every key's charges within 24 h before `now_ms`, oldest first.
    pub fn all_charges_since(&self, now_ms: i64) -> Result<Vec<Charge>, NodeError> {
        let key_ids: Vec<String> = {
            let conn = self.conn();
            let mut statement = conn
                .prepare("SELECT DISTINCT key_id FROM charges WHERE at_ms > ?1 ORDER BY key_id")?;
            let rows = statement.query_map([now_ms - WINDOW_MS], |r| r.get::<_, String>(0))?;
            rows.collect::<Result<_, _>>()?
        };
        let mut charges = Vec::new();
        for key_id in key_ids {
            charges.extend(self.charges_since(&key_id, now_ms)?);
        }
        Ok(charges)
    }

    /// In one transaction: the learned bans (a peer already banned keeps its first ban) and
    /// charges (a session already charged for that key is not charged twice), then the mark
    /// cleared. Returns how many bans and charges were new.
    pub fn finish_relearn(
        &self,
        bans: &[Ban],
        charges: &[Charge],
    ) -> Result<(usize, usize), NodeError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let mut new_bans = 0;
        for ban in bans {
            new_bans += tx.execute(
                "INSERT OR IGNORE INTO bans (peer_signing_key, node_id, reason, at_ms) VALUES (?1, ?2, ?3, ?4)",
                params![ban.peer_signing_key.as_slice(), ban.node_id, ban.reason, ban.at_ms],
            )?;
        }
        let mut new_charges = 0;
        for charge in charges {
            let held: bool = tx.query_row(
                "SELECT EXISTS(SELECT 1 FROM charges WHERE key_id = ?1 AND session_id = ?2)",
                params![charge.key_id, charge.session_id.as_slice()],
                |r| r.get(0),
            )?;
            if held {
                continue;
            }
            super::charges::insert(&tx, charge)?;
            new_charges += 1;
        }
        tx.execute("DELETE FROM meta WHERE name = ?1", [RELEARN_META])?;
        tx.commit()?;
        Ok((new_bans, new_charges))
    }
}
