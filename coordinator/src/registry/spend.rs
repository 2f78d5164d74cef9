//! Rolling 24-hour spend per chain and asset (a wei on chain 1 is not a wei on chain 137, and a
//! listed token's units are counted apart from ether), per API key and
//! per signing key (whose policy's cap the nodes enforce too, each on what it co-signs; counted
//! here as well so that an honest coordinator holds the key to its cap, not to the 1.5 x the
//! nodes' ledgers allow when requests spread over pairs). A reservation is checked and written in
//! one transaction that holds the spend table's lock (SQLite: the registry's one write
//! connection; PostgreSQL: a table lock every coordinator takes), so concurrent requests, on one
//! coordinator or several, can never overspend; it is released if signing fails, and it
//! survives a restart because it is a row, not a counter in memory.

use shardsign_eth::{Address, U256};

use super::Registry;
use super::db::{Sql, args};
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

/// One cap's window: subject kind, subject id, chain id, asset column.
type CapKey<'a> = (&'a str, &'a str, u64, String);

fn asset_column(asset: Option<Address>) -> String {
    asset.map_or_else(String::new, |token| format!("0x{}", hex::encode(token.0)))
}

impl Registry {
    /// Reserves every spend of one request, or none: all in one transaction (one commit on the
    /// signing path however many caps apply), each checked against its window's total. The
    /// reservation counts for `pending_ms` unless the signing's closing write keeps it
    /// ([`Registry::complete_signing`]) or a failure gives it back ([`Registry::release_spend`]):
    /// a coordinator that dies mid-request holds its caps no longer than that.
    pub fn reserve_spends(
        &self,
        spends: &[SpendRequest<'_>],
        now_ms: i64,
        pending_ms: i64,
    ) -> Result<Reservation, CoordError> {
        if spends.is_empty() {
            return Ok(Reservation::Reserved(Vec::new()));
        }
        self.write(|sql| {
            sql.lock_table("spends")?;
            // Every cap is checked before anything is written, so an over-cap request leaves
            // nothing behind (what it sees includes its own earlier spends of the same cap).
            let mut pending: Vec<(CapKey<'_>, U256)> = Vec::new();
            for (index, spend) in spends.iter().enumerate() {
                let (kind, id) = spend.subject.columns();
                let asset = asset_column(spend.asset);
                sql.execute(
                    "DELETE FROM spends WHERE subject = ?1 AND api_key_id = ?2
                         AND (at_ms <= ?3 OR pending_until_ms <= ?4)",
                    args![kind, id, now_ms - WINDOW_MS, now_ms],
                )?;
                let cap_key = (kind, id, spend.chain_id, asset);
                let earlier = pending
                    .iter()
                    .filter(|(key, _)| *key == cap_key)
                    .fold(U256::ZERO, |total, (_, value)| total.saturating_add(*value));
                let spent = window_total(sql, kind, id, spend.chain_id, &cap_key.3, now_ms)?
                    .saturating_add(earlier);
                if spent
                    .checked_add(spend.value)
                    .is_none_or(|total| total > spend.cap)
                {
                    return Ok(Reservation::Over { index, spent });
                }
                pending.push((cap_key, spend.value));
            }
            let mut ids = Vec::with_capacity(pending.len());
            for ((kind, id, chain_id, asset), value) in pending {
                let row = sql.query_opt(
                    "INSERT INTO spends (subject, api_key_id, at_ms, value, chain_id, asset, pending_until_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) RETURNING id",
                    args![kind, id, now_ms, value.to_string(), chain_id as i64, asset, now_ms + pending_ms],
                )?;
                let row = row
                    .ok_or_else(|| CoordError::config("registry", "a spend row was not stored"))?;
                ids.push(row.int(0)?);
            }
            Ok(Reservation::Reserved(ids))
        })
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
        let asset = asset_column(asset);
        self.read(|sql| {
            let rows = sql.query(
                "SELECT value FROM spends WHERE subject = ?1 AND api_key_id = ?2 AND chain_id = ?3 AND asset = ?4 AND at_ms > ?5
                     AND (pending_until_ms IS NULL OR pending_until_ms > ?6)",
                args![kind, id, chain_id as i64, asset, now_ms - WINDOW_MS, now_ms],
            )?;
            sum(&rows)
        })
    }

    /// Gives back a reservation whose signing failed.
    pub fn release_spend(&self, reservation: i64) -> Result<(), CoordError> {
        self.write(|sql| sql.execute("DELETE FROM spends WHERE id = ?1", args![reservation]))?;
        Ok(())
    }
}

/// The window's total for one subject, chain and asset, inside a transaction.
fn window_total(
    sql: &mut dyn Sql,
    kind: &str,
    id: &str,
    chain_id: u64,
    asset: &str,
    now_ms: i64,
) -> Result<U256, CoordError> {
    let rows = sql.query(
        "SELECT value FROM spends WHERE subject = ?1 AND api_key_id = ?2 AND chain_id = ?3 AND asset = ?4
             AND (pending_until_ms IS NULL OR pending_until_ms > ?5)",
        args![kind, id, chain_id as i64, asset, now_ms],
    )?;
    sum(&rows)
}

/// Keeps reservations whose signing completed: they count for the whole window now.
pub(super) fn keep_spends(sql: &mut dyn Sql, reservations: &[i64]) -> Result<(), CoordError> {
    for id in reservations {
        sql.execute(
            "UPDATE spends SET pending_until_ms = NULL WHERE id = ?1",
            args![*id],
        )?;
    }
    Ok(())
}

fn sum(rows: &[super::db::Row]) -> Result<U256, CoordError> {
    let mut total = U256::ZERO;
    for row in rows {
        let value: U256 = row
            .text(0)?
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
        for registry in crate::registry::testing::each_backend() {
            the_window_total_per_chain_and_asset_never_exceeds_the_cap_on(&registry);
        }
    }

    fn the_window_total_per_chain_and_asset_never_exceeds_the_cap_on(registry: &Registry) {
        let cap = U256::from(10u8);
        let three = U256::from(3u8);
        let api = SpendSubject::ApiKey("k");
        let reserve = |spend: SpendRequest<'_>, at: i64| {
            registry.reserve_spends(&[spend], at, WINDOW_MS).unwrap()
        };
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
        for registry in crate::registry::testing::each_backend() {
            a_request_reserves_all_its_spends_or_none_on(&registry);
        }
    }

    fn a_request_reserves_all_its_spends_or_none_on(registry: &Registry) {
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
            reserved(registry.reserve_spends(&both(4), 1_000, WINDOW_MS).unwrap()).len(),
            2
        );
        // The second is over its cap (4 + 4 > 5): the first is not reserved either.
        assert_eq!(
            registry.reserve_spends(&both(4), 1_000, WINDOW_MS).unwrap(),
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
            registry.reserve_spends(&[], 1_000, WINDOW_MS).unwrap(),
            Reservation::Reserved(ids) if ids.is_empty()
        ));
    }

    #[test]
    fn a_reservation_not_kept_stops_counting_when_its_lease_ends() {
        for registry in crate::registry::testing::each_backend() {
            let cap = U256::from(10u8);
            let api = SpendSubject::ApiKey("k");
            let ten = |at: i64| registry.reserve_spends(&[one(api, 1, None, cap, cap)], at, 1_000);
            // Reserved at 1 s, pending until 2 s: the cap is full until then.
            let kept = reserved(ten(1_000).unwrap());
            assert!(matches!(ten(1_500).unwrap(), Reservation::Over { .. }));
            // Its signing completed: kept for the whole window, past the lease.
            registry.write(|sql| keep_spends(sql, &kept)).unwrap();
            assert!(matches!(ten(5_000).unwrap(), Reservation::Over { .. }));
            assert_eq!(registry.spent(api, 1, None, 5_000).unwrap(), cap);
            // A reservation never kept (its coordinator died) stops counting after its lease.
            let other = SpendSubject::SigningKey("key");
            let orphan =
                |at: i64| registry.reserve_spends(&[one(other, 1, None, cap, cap)], at, 1_000);
            reserved(orphan(1_000).unwrap());
            assert!(matches!(orphan(1_999).unwrap(), Reservation::Over { .. }));
            assert_eq!(registry.spent(other, 1, None, 2_001).unwrap(), U256::ZERO);
            reserved(orphan(2_001).unwrap());
        }
    }
}
