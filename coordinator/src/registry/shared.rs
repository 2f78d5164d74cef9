//! What coordinators sharing one registry agree on through it: the change counter that tells a
//! coordinator its cached API keys and key policies are stale, claims on request ids (so that
//! two coordinators never sign one request at once), and each API key's request rate.
//!
//! With SQLite there is one coordinator: claims live in its memory (no write, so no fsync, on
//! the signing path) and the rate limiter stays in memory (`access::ratelimit`).

use std::time::{Duration, Instant};

use super::db::{Dialect, Sql, args};
use super::{Backend, Registry};
use crate::error::CoordError;

/// Whether a request id could be claimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// This coordinator signs it; release the claim when done.
    Claimed,
    /// Another signing of the same request holds it (on this coordinator or another).
    Busy,
    /// Another request under the same id holds it.
    OtherRequest,
}

/// PostgreSQL's clock in milliseconds: leases compare against one clock, not each
/// coordinator's own.
const DB_NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

/// Counts one change of what coordinators cache, in the changing transaction.
pub(super) fn changed(sql: &mut dyn Sql) -> Result<(), CoordError> {
    sql.execute(
        "UPDATE meta SET value = value + 1 WHERE name = 'generation'",
        &[],
    )?;
    Ok(())
}

impl Registry {
    /// The change counter (see the module's comment).
    pub fn generation(&self) -> Result<i64, CoordError> {
        let row = self
            .read(|sql| sql.query_opt("SELECT value FROM meta WHERE name = 'generation'", &[]))?;
        Ok(row.map(|row| row.int(0)).transpose()?.unwrap_or(0))
    }

    /// Records `value` under `name` if nothing is recorded; returns whether what is recorded
    /// equals `value` (coordinators sharing a registry must agree on some settings).
    pub fn agree_on(&self, name: &str, value: i64) -> Result<bool, CoordError> {
        self.write(|sql| {
            sql.execute(
                "INSERT INTO meta (name, value) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                args![name, value],
            )?;
            let held = sql
                .query_opt("SELECT value FROM meta WHERE name = ?1", args![name])?
                .map(|row| row.int(0))
                .transpose()?;
            Ok(held == Some(value))
        })
    }

    /// Claims `request_id` for `lease` (a coordinator that dies holding it frees it then).
    pub fn claim_request(
        &self,
        request_id: &str,
        request_hash: &[u8; 32],
        lease: Duration,
    ) -> Result<Claim, CoordError> {
        match &self.backend {
            Backend::Sqlite(store) => {
                let mut claims = store
                    .claims
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                let now = Instant::now();
                claims.retain(|_, (_, until)| *until > now);
                match claims.get(request_id) {
                    Some((hash, _)) if hash == request_hash => Ok(Claim::Busy),
                    Some(_) => Ok(Claim::OtherRequest),
                    None => {
                        claims.insert(request_id.to_string(), (*request_hash, now + lease));
                        Ok(Claim::Claimed)
                    }
                }
            }
            Backend::Postgres(_) => {
                let owner = self.owner.clone();
                let lease_ms = lease.as_millis() as i64;
                self.write(|sql| {
                    sql.relax_durability()?;
                    let claimed = sql.query_opt(
                        &format!(
                            "INSERT INTO request_claims (request_id, request_hash, owner, expires_at_ms)
                             VALUES (?1, ?2, ?3, ?4 + {DB_NOW_MS})
                             ON CONFLICT (request_id) DO UPDATE SET request_hash = excluded.request_hash,
                                 owner = excluded.owner, expires_at_ms = excluded.expires_at_ms
                             WHERE request_claims.expires_at_ms <= {DB_NOW_MS}
                             RETURNING owner"
                        ),
                        args![request_id, request_hash.as_slice(), owner, lease_ms],
                    )?;
                    if claimed.is_some() {
                        return Ok(Claim::Claimed);
                    }
                    let held = sql.query_opt(
                        "SELECT request_hash FROM request_claims WHERE request_id = ?1",
                        args![request_id],
                    )?;
                    Ok(match held {
                        Some(row) if row.blob(0)? != request_hash => Claim::OtherRequest,
                        _ => Claim::Busy,
                    })
                })
            }
        }
    }

    /// Extends this coordinator's claim on `request_id` by `lease` from now; `false`: it no
    /// longer holds it.
    pub fn renew_claim(&self, request_id: &str, lease: Duration) -> Result<bool, CoordError> {
        if self.dialect() != Dialect::Postgres {
            return Ok(true);
        }
        let owner = self.owner.clone();
        let lease_ms = lease.as_millis() as i64;
        let renewed = self.write(|sql| {
            sql.relax_durability()?;
            sql.execute(
                &format!(
                    "UPDATE request_claims SET expires_at_ms = ?3 + {DB_NOW_MS}
                     WHERE request_id = ?1 AND owner = ?2"
                ),
                args![request_id, owner, lease_ms],
            )
        })?;
        Ok(renewed == 1)
    }

    /// Gives up this coordinator's claim on `request_id` (done, or failed).
    pub fn release_claim(&self, request_id: &str) -> Result<(), CoordError> {
        match &self.backend {
            Backend::Sqlite(store) => {
                store
                    .claims
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .remove(request_id);
                Ok(())
            }
            Backend::Postgres(_) => {
                let owner = self.owner.clone();
                self.write(|sql| {
                    sql.relax_durability()?;
                    sql.execute(
                        "DELETE FROM request_claims WHERE request_id = ?1 AND owner = ?2",
                        args![request_id, owner],
                    )
                })?;
                Ok(())
            }
        }
    }

    /// Takes one request from `api_key_id`'s budget of `per_minute`, counted in the shared
    /// registry so that it holds across coordinators: a token bucket of `per_minute` refilled
    /// continuously, kept as the time the next request is due (GCRA). `Ok(Err(wait))`: over.
    pub fn take_shared_rate(
        &self,
        api_key_id: &str,
        per_minute: u32,
    ) -> Result<Result<(), Duration>, CoordError> {
        if per_minute == 0 {
            return Ok(Err(Duration::MAX));
        }
        if self.dialect() != Dialect::Postgres {
            return Err(CoordError::config(
                "registry",
                "the shared rate limit needs a shared (PostgreSQL) registry",
            ));
        }
        let interval_us = 60_000_000 / i64::from(per_minute);
        // A full minute's budget may be spent at once: the next request may be due this far
        // ahead of now.
        let tolerance_us = 60_000_000 - interval_us;
        self.write(|sql| {
            sql.relax_durability()?;
            // One statement: the next request's due time moves one interval on, unless it is
            // already more than the tolerance ahead of now (then nothing changes, no row).
            let now = "(extract(epoch from statement_timestamp()) * 1000000)::bigint";
            let taken = sql.query_opt(
                &format!(
                    "INSERT INTO rate_limits (api_key_id, due_us) VALUES (?1, {now} + ?2)
                     ON CONFLICT (api_key_id) DO UPDATE
                         SET due_us = GREATEST(rate_limits.due_us, {now}) + ?2
                         WHERE GREATEST(rate_limits.due_us, {now}) - {now} <= ?3
                     RETURNING due_us"
                ),
                args![api_key_id, interval_us, tolerance_us],
            )?;
            if taken.is_some() {
                return Ok(Ok(()));
            }
            let ahead = sql
                .query_opt(
                    &format!("SELECT due_us - {now} FROM rate_limits WHERE api_key_id = ?1"),
                    args![api_key_id],
                )?
                .map(|row| row.int(0))
                .transpose()?
                .unwrap_or(0);
            Ok(Err(Duration::from_micros(
                ahead.saturating_sub(tolerance_us).max(1) as u64,
            )))
        })
    }

    /// Forgets `api_key_id`'s spent budget (its policy changed).
    pub fn forget_shared_rate(&self, api_key_id: &str) -> Result<(), CoordError> {
        if self.dialect() == Dialect::Postgres {
            self.write(|sql| {
                sql.execute(
                    "DELETE FROM rate_limits WHERE api_key_id = ?1",
                    args![api_key_id],
                )
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_move_the_generation() {
        for registry in crate::registry::testing::each_backend() {
            let before = registry.generation().unwrap();
            registry.write(changed).unwrap();
            assert_eq!(
                registry.generation().unwrap(),
                before + 1,
                "{}",
                registry.backend
            );
        }
    }

    #[test]
    fn a_request_id_is_claimed_once_until_released_or_its_lease_ends() {
        for registry in crate::registry::testing::each_backend() {
            let lease = Duration::from_secs(60);
            assert_eq!(
                registry.claim_request("r1", &[1; 32], lease).unwrap(),
                Claim::Claimed
            );
            assert_eq!(
                registry.claim_request("r1", &[1; 32], lease).unwrap(),
                Claim::Busy
            );
            assert_eq!(
                registry.claim_request("r1", &[2; 32], lease).unwrap(),
                Claim::OtherRequest
            );
            registry.release_claim("r1").unwrap();
            assert_eq!(
                registry.claim_request("r1", &[2; 32], lease).unwrap(),
                Claim::Claimed
            );
            // A lease that ended frees the id (its holder died).
            assert_eq!(
                registry
                    .claim_request("r2", &[1; 32], Duration::ZERO)
                    .unwrap(),
                Claim::Claimed
            );
            assert_eq!(
                registry.claim_request("r2", &[1; 32], lease).unwrap(),
                Claim::Claimed
            );
        }
    }

    #[test]
    fn coordinators_sharing_a_registry_see_each_others_claims_and_rate() {
        let target = crate::registry::testing::fresh_postgres_database();
        let a = Registry::connect(target.clone()).unwrap();
        let b = Registry::connect(target).unwrap();
        let lease = Duration::from_secs(60);
        assert_eq!(
            a.claim_request("r", &[1; 32], lease).unwrap(),
            Claim::Claimed
        );
        assert_eq!(b.claim_request("r", &[1; 32], lease).unwrap(), Claim::Busy);
        // B cannot release A's claim.
        b.release_claim("r").unwrap();
        assert_eq!(b.claim_request("r", &[1; 32], lease).unwrap(), Claim::Busy);
        assert!(a.renew_claim("r", lease).unwrap());
        assert!(!b.renew_claim("r", lease).unwrap(), "B does not hold it");
        a.release_claim("r").unwrap();
        assert_eq!(
            b.claim_request("r", &[1; 32], lease).unwrap(),
            Claim::Claimed
        );
        assert!(!a.renew_claim("r", lease).unwrap(), "A no longer holds it");
        // 6 a minute between both: exactly 6, then a wait of about 10 s.
        let mut taken = 0;
        for i in 0..10 {
            let registry = if i % 2 == 0 { &a } else { &b };
            if registry.take_shared_rate("ak", 6).unwrap().is_ok() {
                taken += 1;
            }
        }
        assert_eq!(taken, 6);
        let wait = a.take_shared_rate("ak", 6).unwrap().unwrap_err();
        assert!(
            wait > Duration::from_secs(8) && wait <= Duration::from_secs(10),
            "{wait:?}"
        );
        assert!(a.take_shared_rate("other", 6).unwrap().is_ok());
        assert!(a.take_shared_rate("ak", 0).unwrap().is_err());
        b.forget_shared_rate("ak").unwrap();
        assert!(a.take_shared_rate("ak", 6).unwrap().is_ok());
    }
}
