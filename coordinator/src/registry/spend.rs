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

/// One spend to reserve: `value` of `asset` (`None`: ether) on `chain_id` toward `subject`'s
/// cap `cap` for that chain and asset.
#[derive(Debug, Clone, Copy)]
pub struct SpendRequest<'a> {
    pub subject: SpendSubject<'a>,
    pub chain_id: u64,
    pub asset: Option<Address>,
    pub value: U256,
    pub cap: U256,
}

/// The result of asking to spend.
#[derive(Debug, PartialEq, Eq)]
pub enum Reservation {
    /// All reserved, under these row ids (release them if signing fails).
    Reserved(Vec<i64>),
    /// Request `index` is over its cap: what was already spent in its window. Nothing was
    /// reserved.
    Over { index: usize, spent: U256 },
}

fn asset_column(asset: Option<Address>) -> String {
    asset.map_or_else(String::new, |token| format!("0x{}", hex::encode(token.0)))
}

impl Registry {
    /// Reserves every spend of one request, or none: all in one transaction (one commit on the
    /// signing path however many caps apply), each checked against its window's total.
    pub fn reserve_spends(
        &self,
        spends: &[SpendRequest<'_>],
        now_ms: i64,
    ) -> Result<Reservation, CoordError> {
        if spends.is_empty() {
            return Ok(Reservation::Reserved(Vec::new()));
        }
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let mut ids = Vec::with_capacity(spends.len());
        for (index, spend) in spends.iter().enumerate() {
            let (kind, id) = spend.subject.columns();
            let asset = asset_column(spend.asset);
            tx.execute(
                "DELETE FROM spends WHERE subject = ?1 AND api_key_id = ?2 AND at_ms <= ?3",
                params![kind, id, now_ms - WINDOW_MS],
            )?;
            let spent = window_total(&tx, kind, id, spend.chain_id, &asset)?;
            if spent
                .checked_add(spend.value)
                .is_none_or(|total| total > spend.cap)
            {
                // Dropping the transaction rolls back what this request reserved so far.
                return Ok(Reservation::Over { index, spent });
            }
            tx.execute(
                "INSERT INTO spends (subject, api_key_id, at_ms, value, chain_id, asset) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![kind, id, now_ms, spend.value.to_string(), spend.chain_id as i64, asset],
            )?;
            ids.push(tx.last_insert_rowid());
        }
        tx.commit()?;
        Ok(Reservation::Reserved(ids))
    }

    /// What `subject` spent of `asset` on `chain_id` in the 24 h before `now_ms` (read only).
    pub fn spent(
        &self,
        subject: SpendSubject<'_>,
        chain_id: u64,
        asset: Option<Address>,
        now_ms: i64,
    ) -> Result<U256, CoordError> {
        let (kind, id) = subject.columns();
        let conn = self.conn();
        let mut statement = conn.prepare_cached(
            "SELECT value FROM spends WHERE subject = ?1 AND api_key_id = ?2 AND chain_id = ?3 AND asset = ?4 AND at_ms > ?5",
        )?;
        let values = statement.query_map(
            params![
                kind,
                id,
                chain_id as i64,
                asset_column(asset),
                now_ms - WINDOW_MS
            ],
            |r| r.get::<_, String>(0),
        )?;
        sum(values)
    }

    /// Gives back a reservation whose signing failed.
    pub fn release_spend(&self, reservation: i64) -> Result<(), CoordError> {
        self.conn()
            .execute("DELETE FROM spends WHERE id = ?1", [reservation])?;
        Ok(())
    }
}

/// The window's total for one subject, chain and asset, inside a transaction.
fn window_total(
    tx: &rusqlite::Transaction<'_>,
    kind: &str,
    id: &str,
    chain_id: u64,
    asset: &str,
) -> Result<U256, CoordError> {
    let mut statement = tx.prepare_cached(
        "SELECT value FROM spends WHERE subject = ?1 AND api_key_id = ?2 AND chain_id = ?3 AND asset = ?4",
    )?;
    let values = statement.query_map(params![kind, id, chain_id as i64, asset], |r| {
        r.get::<_, String>(0)
    })?;
    sum(values)
}

fn sum(values: impl Iterator<Item = rusqlite::Result<String>>) -> Result<U256, CoordError> {
    let mut total = U256::ZERO;
    for value in values {
        let value: U256 = value?
            .parse()
            .map_err(|_| CoordError::config("registry", "a spend record is unreadable"))?;
        total = total.saturating_add(value);
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one<'a>(
        subject: SpendSubject<'a>,
        chain_id: u64,
        asset: Option<Address>,
        value: U256,
        cap: U256,
    ) -> SpendRequest<'a> {
        SpendRequest {
            subject,
            chain_id,
            asset,
            value,
            cap,
        }
    }

    fn reserved(reservation: Reservation) -> Vec<i64> {
        match reservation {
            Reservation::Reserved(ids) => ids,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_window_total_per_chain_and_asset_never_exceeds_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(&dir.path().join("r.db")).unwrap();
        let cap = U256::from(10u8);
        let three = U256::from(3u8);
        let api = SpendSubject::ApiKey("k");
        let reserve =
            |spend: SpendRequest<'_>, at: i64| registry.reserve_spends(&[spend], at).unwrap();
        let mut ids = Vec::new();
        for _ in 0..3 {
            ids.extend(reserved(reserve(one(api, 1, None, three, cap), 1_000)));
        }
        assert_eq!(
            reserve(one(api, 1, None, U256::from(2u8), cap), 1_000),
            Reservation::Over {
                index: 0,
                spent: U256::from(9u8)
            }
        );
        assert_eq!(
            registry.spent(api, 1, None, 1_000).unwrap(),
            U256::from(9u8)
        );
        reserved(reserve(one(api, 1, None, U256::from(1u8), cap), 1_000));
        // Another key, a signing key named alike, another chain: windows of their own.
        reserved(reserve(
            one(SpendSubject::ApiKey("other"), 1, None, cap, cap),
            1_000,
        ));
        reserved(reserve(
            one(SpendSubject::SigningKey("k"), 1, None, cap, cap),
            1_000,
        ));
        reserved(reserve(one(api, 137, None, cap, cap), 1_000));
        // A released reservation frees its value.
        registry.release_spend(ids[0]).unwrap();
        reserved(reserve(one(api, 1, None, three, cap), 1_000));
        // A token on the same chain has its own window, apart from ether.
        let token = Some(Address([0xa0; 20]));
        reserved(reserve(one(api, 1, token, cap, cap), 1_000));
        assert_eq!(
            reserve(one(api, 1, token, U256::from(1u8), cap), 1_000),
            Reservation::Over {
                index: 0,
                spent: cap
            }
        );
        // 24 hours later the old spends no longer count.
        reserved(reserve(one(api, 1, None, cap, cap), 1_000 + WINDOW_MS));
    }

    #[test]
    fn a_request_reserves_all_its_spends_or_none() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(&dir.path().join("r.db")).unwrap();
        let cap = U256::from(10u8);
        let token = Some(Address([0xa0; 20]));
        let both = |value: u64| {
            [
                one(SpendSubject::ApiKey("k"), 1, None, U256::from(value), cap),
                one(
                    SpendSubject::SigningKey("key"),
                    1,
                    token,
                    U256::from(value),
                    U256::from(5u8),
                ),
            ]
        };
        assert_eq!(
            reserved(registry.reserve_spends(&both(4), 1_000).unwrap()).len(),
            2
        );
        // The second is over its cap (4 + 4 > 5): the first is not reserved either.
        assert_eq!(
            registry.reserve_spends(&both(4), 1_000).unwrap(),
            Reservation::Over {
                index: 1,
                spent: U256::from(4u8)
            }
        );
        assert_eq!(
            registry
                .spent(SpendSubject::ApiKey("k"), 1, None, 1_000)
                .unwrap(),
            U256::from(4u8)
        );
        assert!(matches!(
            registry.reserve_spends(&[], 1_000).unwrap(),
            Reservation::Reserved(ids) if ids.is_empty()
        ));
    }
}
