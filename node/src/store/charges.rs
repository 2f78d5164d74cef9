//! The node's ledger on disk: one row per signing session whose key's policy caps what this node
//! co-signs, written in the same group commit as the session's claim (so it is on disk before
//! any signature fragment leaves), deleted only when the session ended before its fragment left.
//! A row older than 24 h no longer counts and is pruned when the key is next charged.

use rusqlite::{Connection, params};
use shardsign_eth::{Address, U256};

use super::Store;
use crate::error::NodeError;

pub(super) const WINDOW_MS: i64 = 24 * 60 * 60 * 1000;

/// What one signing session charged this node for a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    /// Random: names this charge alone (a session id is the coordinator's choice, and two
    /// sessions racing with one id must not give back each other's charge).
    pub charge_id: [u8; 16],
    pub session_id: [u8; 32],
    pub key_id: String,
    /// 0 for a message (it counts toward the rate only).
    pub chain_id: u64,
    pub value: U256,
    /// A token the key's policy lists and what the session moved or granted of it (on
    /// `chain_id`); `None` when it moved no listed token.
    pub token: Option<(Address, U256)>,
    pub at_ms: i64,
}

/// Inside the claim's transaction: the new charge, the deletions of charges given back, and the
/// pruning of the charged key's rows that left the window.
pub(super) fn write(
    conn: &Connection,
    charge: Option<&Charge>,
    given_back: &[[u8; 16]],
) -> Result<(), NodeError> {
    for charge_id in given_back {
        conn.execute(
            "DELETE FROM charges WHERE charge_id = ?1",
            [charge_id.as_slice()],
        )?;
    }
    if let Some(charge) = charge {
        conn.execute(
            "DELETE FROM charges WHERE key_id = ?1 AND at_ms <= ?2",
            params![charge.key_id, charge.at_ms - WINDOW_MS],
        )?;
        insert(conn, charge)?;
    }
    Ok(())
}

/// One charge row.
pub(super) fn insert(conn: &Connection, charge: &Charge) -> Result<(), NodeError> {
    conn.execute(
        "INSERT INTO charges (charge_id, session_id, key_id, chain_id, value, at_ms, token, token_amount) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            charge.charge_id.as_slice(),
            charge.session_id.as_slice(),
            charge.key_id,
            charge.chain_id as i64,
            charge.value.to_string(),
            charge.at_ms,
            charge.token.map(|(token, _)| token.0.to_vec()),
            charge.token.map_or(U256::ZERO, |(_, amount)| amount).to_string(),
        ],
    )?;
    Ok(())
}

impl Store {
    /// The charges of `key_id` within 24 h before `now_ms`, oldest first.
    pub fn charges_since(&self, key_id: &str, now_ms: i64) -> Result<Vec<Charge>, NodeError> {
        let conn = self.conn();
        let mut statement = conn.prepare_cached(
            "SELECT charge_id, session_id, chain_id, value, at_ms, token, token_amount FROM charges WHERE key_id = ?1 AND at_ms > ?2 ORDER BY at_ms",
        )?;
        let rows = statement.query_map(params![key_id, now_ms - WINDOW_MS], |row| {
            Ok((
                row.get::<_, Vec<u8>>(0)?,
                row.get::<_, Vec<u8>>(1)?,
                row.get::<_, i64>(2)?,
                row.get::<_, String>(3)?,
                row.get::<_, i64>(4)?,
                row.get::<_, Option<Vec<u8>>>(5)?,
                row.get::<_, String>(6)?,
            ))
        })?;
        let mut charges = Vec::new();
        for row in rows {
            let (charge_id, session_id, chain_id, value, at_ms, token, token_amount) = row?;
            let corrupt = || NodeError::Corrupt(format!("a charge of `{key_id}` is unreadable"));
            let token = match token {
                None => None,
                Some(bytes) => Some((
                    Address(bytes.try_into().map_err(|_| corrupt())?),
                    token_amount.parse().map_err(|_| corrupt())?,
                )),
            };
            charges.push(Charge {
                charge_id: charge_id.try_into().map_err(|_| corrupt())?,
                session_id: session_id.try_into().map_err(|_| corrupt())?,
                key_id: key_id.to_string(),
                chain_id: chain_id as u64,
                value: value.parse().map_err(|_| corrupt())?,
                token,
                at_ms,
            });
        }
        Ok(charges)
    }
}
