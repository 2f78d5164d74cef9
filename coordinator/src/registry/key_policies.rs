//! Operator-signed key policies as the coordinator stores and forwards them. The coordinator
//! cannot make one (it has no policy key); it keeps the newest version per key.

use rusqlite::{OptionalExtension, params};

use super::Registry;
use crate::error::CoordError;

/// What storing a policy did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyUpdate {
    Stored,
    /// The same bytes were already stored.
    Unchanged,
    /// A policy with this version or a newer one is stored.
    NotNewer {
        held: u64,
    },
}

impl Registry {
    pub fn put_key_policy(
        &self,
        key_id: &str,
        version: u64,
        signed: &[u8],
    ) -> Result<PolicyUpdate, CoordError> {
        let version =
            i64::try_from(version).map_err(|_| CoordError::invalid("version", "above 2^63 - 1"))?;
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let held: Option<(i64, Vec<u8>)> = tx
            .query_row(
                "SELECT version, signed FROM key_policies WHERE key_id = ?1",
                [key_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        match held {
            Some((_, bytes)) if bytes == signed => return Ok(PolicyUpdate::Unchanged),
            Some((held, _)) if held >= version => {
                return Ok(PolicyUpdate::NotNewer { held: held as u64 });
            }
            _ => {}
        }
        tx.execute(
            "INSERT INTO key_policies (key_id, version, signed) VALUES (?1, ?2, ?3)
             ON CONFLICT(key_id) DO UPDATE SET version = excluded.version, signed = excluded.signed",
            params![key_id, version, signed],
        )?;
        tx.commit()?;
        Ok(PolicyUpdate::Stored)
    }

    pub fn load_key_policies(&self) -> Result<Vec<(String, Vec<u8>)>, CoordError> {
        let conn = self.conn();
        let mut statement = conn.prepare("SELECT key_id, signed FROM key_policies")?;
        let rows = statement.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }
}
