//! The bootstrap credential is single-use: when it creates the first admin API key, the time is
//! stored here, and from then on it is refused — even if every admin key is later revoked.
//! Recovering admin access is a local command on the coordinator's host (`admin recover`).

use super::Registry;
use super::db::args;
use crate::error::CoordError;

const BOOTSTRAP_USED_AT: &str = "bootstrap_used_at_ms";

impl Registry {
    /// When the bootstrap credential was used, if it was.
    pub fn bootstrap_used_at(&self) -> Result<Option<i64>, CoordError> {
        self.read(|sql| {
            sql.query_opt(
                "SELECT value FROM meta WHERE name = ?1",
                args![BOOTSTRAP_USED_AT],
            )?
            .map(|row| row.int(0))
            .transpose()
        })
    }

    /// Marks the bootstrap credential used at `at_ms`. `false`: it had been used already (the
    /// caller lost a race and must be refused).
    pub fn use_bootstrap(&self, at_ms: i64) -> Result<bool, CoordError> {
        let inserted = self.write(|sql| {
            sql.execute(
                "INSERT INTO meta (name, value) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                args![BOOTSTRAP_USED_AT, at_ms],
            )
        })?;
        Ok(inserted == 1)
    }
}
