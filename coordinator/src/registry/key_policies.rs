//! Operator-signed key policies as the coordinator stores and forwards them. The coordinator
//! cannot make one (it has no policy key); it keeps the newest version per key.

use super::Registry;
use super::db::args;
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
        self.write(|sql| {
            let held = sql.query_opt(
                &format!(
                    "SELECT version, signed FROM key_policies WHERE key_id = ?1{}",
                    sql.for_update()
                ),
                args![key_id],
            )?;
            if let Some(row) = held {
                if row.blob(1)? == signed {
                    return Ok(PolicyUpdate::Unchanged);
                }
                let held = row.int(0)?;
                if held >= version {
                    return Ok(PolicyUpdate::NotNewer { held: held as u64 });
                }
            }
            // Two first policies of a key stored at once: the newer wins, the other is not
            // newer (the conflict clause decides under the row's lock).
            let stored = sql.execute(
                "INSERT INTO key_policies (key_id, version, signed) VALUES (?1, ?2, ?3)
                 ON CONFLICT(key_id) DO UPDATE SET version = excluded.version, signed = excluded.signed
                 WHERE key_policies.version < excluded.version",
                args![key_id, version, signed],
            )?;
            if stored == 1 {
                super::shared::changed(sql)?;
                return Ok(PolicyUpdate::Stored);
            }
            let held = sql
                .query_opt(
                    "SELECT version FROM key_policies WHERE key_id = ?1",
                    args![key_id],
                )?
                .map(|row| row.int(0))
                .transpose()?
                .unwrap_or(version);
            Ok(PolicyUpdate::NotNewer { held: held as u64 })
        })
    }

    pub fn load_key_policies(&self) -> Result<Vec<(String, Vec<u8>)>, CoordError> {
        self.read(|sql| {
            sql.query("SELECT key_id, signed FROM key_policies", &[])?
                .iter()
                .map(|row| Ok((row.text(0)?, row.blob(1)?)))
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_newer_policy_replaces_the_stored_one() {
        for registry in crate::registry::testing::each_backend() {
            assert_eq!(
                registry.put_key_policy("k", 2, b"v2").unwrap(),
                PolicyUpdate::Stored
            );
            assert_eq!(
                registry.put_key_policy("k", 2, b"v2").unwrap(),
                PolicyUpdate::Unchanged
            );
            assert_eq!(
                registry.put_key_policy("k", 1, b"v1").unwrap(),
                PolicyUpdate::NotNewer { held: 2 }
            );
            assert_eq!(
                registry.put_key_policy("k", 2, b"other").unwrap(),
                PolicyUpdate::NotNewer { held: 2 }
            );
            assert_eq!(
                registry.put_key_policy("k", 3, b"v3").unwrap(),
                PolicyUpdate::Stored
            );
            assert_eq!(
                registry.put_key_policy("j", 1, b"j1").unwrap(),
                PolicyUpdate::Stored
            );
            let mut all = registry.load_key_policies().unwrap();
            all.sort();
            assert_eq!(
                all,
                [
                    ("j".to_string(), b"j1".to_vec()),
                    ("k".to_string(), b"v3".to_vec())
                ]
            );
            assert!(registry.put_key_policy("k", u64::MAX, b"x").is_err());
        }
    }
}
