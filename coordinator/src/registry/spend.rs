//! Rolling 24-hour spend per chain and asset (a wei on chain 1 is not a wei on chain 137, and a
//! listed token's units are counted apart from ether), per API key and
//! per signing key (whose policy's cap the nodes enforce too, each on what it co-signs; counted
//! here as well so that an honest coordinator holds the key to its cap, not to the 1.5 x the
//! nodes' ledgers allow when requests spread over pairs). A reservation is checked and written under the registry's
//! one connection lock, so concurrent requests can never overspend; it is released if signing
//! fails, and it survives a restart because it is a row, not a counter in memory.

use rusqlite::params;
use shardsign_eth::{Address, U256};

use super::Registry;
use crate::error::CoordError;

const WINDOW_MS: i64 = 24 * 60 * 60 * 1000;

/// Whose cap a spend counts toward.
#[derive(Debug, Clone, Copy)]
pub enum SpendSubject<'a> {
    ApiKey(&'a str),
    SigningKey(&'a str),
}

impl SpendSubject<'_> {
    fn columns(&self) -> (&'static str, &str) {
        match self {
            SpendSubject::ApiKey(id) => ("api_key", id),
            SpendSubject::SigningKey(id) => ("key", id),
        }
    }
}

/// The result of asking to spend.
#[derive(Debug, PartialEq, Eq)]
pub enum Reservation {
    /// Reserved under this row id (release it if signing fails).
    Reserved(i64),
    /// Over the cap: what was already spent in the window.
    Over { spent: U256 },
}

impl Registry {
    /// Reserves `value` of `asset` (`None`: ether) on `chain_id` for `subject` if the window's
    /// total of that asset on that chain stays within `cap`.
    pub fn reserve_spend(
        &self,
        subject: SpendSubject<'_>,
        chain_id: u64,
        asset: Option<Address>,
        value: U256,
        cap: U256,
        now_ms: i64,
    ) -> Result<Reservation, CoordError> {
        let (kind, id) = subject.columns();
        let asset = asset.map_or_else(String::new, |token| format!("0x{}", hex::encode(token.0)));
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "DELETE FROM spends WHERE subject = ?1 AND api_key_id = ?2 AND at_ms <= ?3",
            params![kind, id, now_ms - WINDOW_MS],
        )?;
        let spent = {
            let mut statement = tx.prepare_cached(
                "SELECT value FROM spends WHERE subject = ?1 AND api_key_id = ?2 AND chain_id = ?3 AND asset = ?4",
            )?;
            let values = statement.query_map(params![kind, id, chain_id as i64, asset], |r| {
                r.get::<_, String>(0)
            })?;
            let mut spent = U256::ZERO;
            for value in values {
                let value: U256 = value?
                    .parse()
                    .map_err(|_| CoordError::config("registry", "a spend record is unreadable"))?;
                spent = spent.saturating_add(value);
            }
            spent
        };
        if spent.checked_add(value).is_none_or(|total| total > cap) {
            return Ok(Reservation::Over { spent });
        }
        tx.execute(
            "INSERT INTO spends (subject, api_key_id, at_ms, value, chain_id, asset) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![kind, id, now_ms, value.to_string(), chain_id as i64, asset],
        )?;
        let id = tx.last_insert_rowid();
        tx.commit()?;
        Ok(Reservation::Reserved(id))
    }

    /// Gives back a reservation whose signing failed.
    pub fn release_spend(&self, reservation: i64) -> Result<(), CoordError> {
        self.conn()
            .execute("DELETE FROM spends WHERE id = ?1", [reservation])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_total_per_chain_never_exceeds_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(&dir.path().join("r.db")).unwrap();
        let cap = U256::from(10u8);
        let three = U256::from(3u8);
        let mut reserved = Vec::new();
        for _ in 0..3 {
            match registry
                .reserve_spend(SpendSubject::ApiKey("k"), 1, None, three, cap, 1_000)
                .unwrap()
            {
                Reservation::Reserved(id) => reserved.push(id),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            registry
                .reserve_spend(
                    SpendSubject::ApiKey("k"),
                    1,
                    None,
                    U256::from(2u8),
                    cap,
                    1_000
                )
                .unwrap(),
            Reservation::Over {
                spent: U256::from(9u8)
            }
        );
        assert!(matches!(
            registry
                .reserve_spend(
                    SpendSubject::ApiKey("k"),
                    1,
                    None,
                    U256::from(1u8),
                    cap,
                    1_000
                )
                .unwrap(),
            Reservation::Reserved(_)
        ));
        // Another key has its own window; a released reservation frees its value.
        assert!(matches!(
            registry
                .reserve_spend(SpendSubject::ApiKey("other"), 1, None, cap, cap, 1_000)
                .unwrap(),
            Reservation::Reserved(_)
        ));
        registry.release_spend(reserved[0]).unwrap();
        assert!(matches!(
            registry
                .reserve_spend(SpendSubject::ApiKey("k"), 1, None, three, cap, 1_000)
                .unwrap(),
            Reservation::Reserved(_)
        ));
        // A signing key named like the API key has its own window.
        assert!(matches!(
            registry
                .reserve_spend(SpendSubject::SigningKey("k"), 1, None, cap, cap, 1_000)
                .unwrap(),
            Reservation::Reserved(_)
        ));
        // Another chain has its own window too.
        assert!(matches!(
            registry
                .reserve_spend(SpendSubject::ApiKey("k"), 137, None, cap, cap, 1_000)
                .unwrap(),
            Reservation::Reserved(_)
        ));
        // A token on the same chain has its own window, apart from ether.
        let token = Some(Address([0xa0; 20]));
        assert!(matches!(
            registry
                .reserve_spend(SpendSubject::ApiKey("k"), 1, token, cap, cap, 1_000)
                .unwrap(),
            Reservation::Reserved(_)
        ));
        assert_eq!(
            registry
                .reserve_spend(
                    SpendSubject::ApiKey("k"),
                    1,
                    token,
                    U256::from(1u8),
                    cap,
                    1_000
                )
                .unwrap(),
            Reservation::Over { spent: cap }
        );
        // 24 hours later the old spends no longer count.
        assert!(matches!(
            registry
                .reserve_spend(
                    SpendSubject::ApiKey("k"),
                    1,
                    None,
                    cap,
                    cap,
                    1_000 + WINDOW_MS
                )
                .unwrap(),
            Reservation::Reserved(_)
        ));
    }
}
