//! The bans a node holds, on disk: written before the node answers the session that caught the
//! cheat, so a restart cannot forget one. Nothing here deletes a ban: only a membership change
//! (a replaced node has a new identity) ends one.

use rusqlite::params;

use super::Store;
use crate::error::NodeError;

/// A peer identity this node refuses every session with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ban {
    /// The banned peer's Ed25519 identity key.
    pub peer_signing_key: [u8; 32],
    /// The index the peer had when it was caught.
    pub node_id: u8,
    /// What the engine caught.
    pub reason: String,
    pub at_ms: i64,
}

impl Store {
    /// Persists `ban`; a peer already banned keeps its first ban. Returns the ban held.
    pub fn record_ban(&self, ban: &Ban) -> Result<Ban, NodeError> {
        let conn = self.conn();
        conn.execute(
            "INSERT OR IGNORE INTO bans (peer_signing_key, node_id, reason, at_ms) VALUES (?1, ?2, ?3, ?4)",
            params![ban.peer_signing_key.as_slice(), ban.node_id, ban.reason, ban.at_ms],
        )?;
        let held = conn.query_row(
            "SELECT node_id, reason, at_ms FROM bans WHERE peer_signing_key = ?1",
            [ban.peer_signing_key.as_slice()],
            |row| {
                Ok(Ban {
                    peer_signing_key: ban.peer_signing_key,
                    node_id: row.get(0)?,
                    reason: row.get(1)?,
                    at_ms: row.get(2)?,
                })
            },
        )?;
        Ok(held)
    }

    /// Every ban held, oldest first.
    pub fn bans(&self) -> Result<Vec<Ban>, NodeError> {
        let conn = self.conn();
        let mut statement = conn
            .prepare("SELECT peer_signing_key, node_id, reason, at_ms FROM bans ORDER BY at_ms")?;
        let rows = statement.query_map([], |row| {
            Ok((
                row.get::<_, Vec<u8>>(0)?,
                row.get::<_, u8>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, i64>(3)?,
            ))
        })?;
        rows.map(|row| {
            let (key, node_id, reason, at_ms) = row?;
            let peer_signing_key = key
                .try_into()
                .map_err(|_| NodeError::Corrupt("a ban's identity key is not 32 bytes".into()))?;
            Ok(Ban {
                peer_signing_key,
                node_id,
                reason,
                at_ms,
            })
        })
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use shardsign_tss::PartyId;
    use zeroize::Zeroizing;

    use super::*;
    use crate::kek::KekSource;

    #[test]
    fn a_ban_survives_a_restart_and_the_first_one_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let kek = KekSource::KeyFile(Zeroizing::new([7; 32]));
        let (store, _) = Store::init(dir.path(), PartyId::new(1).unwrap(), "c", &kek).unwrap();
        let first = Ban {
            peer_signing_key: [2; 32],
            node_id: 2,
            reason: "multiplication check failed".into(),
            at_ms: 1_000,
        };
        assert_eq!(store.record_ban(&first).unwrap(), first);
        let again = Ban {
            reason: "another abort".into(),
            at_ms: 2_000,
            ..first.clone()
        };
        assert_eq!(
            store.record_ban(&again).unwrap(),
            first,
            "the first ban is kept"
        );
        drop(store);
        let (store, _) = Store::open(dir.path(), &kek).unwrap();
        assert_eq!(store.bans().unwrap(), vec![first]);
    }
}
