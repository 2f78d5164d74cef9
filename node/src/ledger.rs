//! What this node co-signed for each key, so that a key policy's `max_value_per_24h` (per chain),
//! its tokens' `max_amount_per_24h` (per chain and token) and `requests_per_minute` bound a
//! compromised coordinator: each node counts on its own, so
//! every signature charges both co-signers, and three honest nodes capped at C let at most
//! 1.5 C a day through (2 C if the coordinator also controls one node).
//!
//! A session is charged when it starts (checked and reserved under one lock, so concurrent
//! sessions never overspend) and the charge is written with the session's claim, which is on
//! disk before any signature fragment leaves. The charge becomes final when this node's round-3
//! fragment leaves: a relay that takes the fragment and lets the session time out does not get
//! the amount back. It is given back only when the session ended before that (refused, aborted,
//! timed out early); the deletion rides on the next claim's commit, so a crash in between keeps
//! it charged (never the other way round).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use shardsign_eth::{Address, U256, format_eth};
use shardsign_policy::tokens::token_spend;
use shardsign_policy::{Cap, Refusal, Rules};
use shardsign_request::Payload;

use crate::error::NodeError;
use crate::store::{Charge, Store};

const WINDOW_MS: i64 = 24 * 60 * 60 * 1000;
const RATE_WINDOW_MS: i64 = 60 * 1000;

/// What a sum counts: ether on a chain (`None`), or a token on a chain.
type Asset = (u64, Option<Address>);

/// A key's charges within the window, oldest first, and their sum per chain and asset (kept as
/// charges come and go, so that checking a request does not walk a day of charges).
#[derive(Default)]
struct KeyWindow {
    charges: VecDeque<Charge>,
    sums: HashMap<Asset, U256>,
}

/// The (asset, amount) pairs one charge counts: its ether, and its token if any.
fn amounts(charge: &Charge) -> impl Iterator<Item = (Asset, U256)> + '_ {
    std::iter::once(((charge.chain_id, None), charge.value)).chain(
        charge
            .token
            .map(|(token, amount)| ((charge.chain_id, Some(token)), amount)),
    )
}

impl KeyWindow {
    fn new(charges: Vec<Charge>) -> Self {
        let mut window = KeyWindow::default();
        for charge in charges {
            window.push(charge);
        }
        window
    }

    fn push(&mut self, charge: Charge) {
        for (asset, amount) in amounts(&charge) {
            let sum = self.sums.entry(asset).or_insert(U256::ZERO);
            *sum = sum.saturating_add(amount);
        }
        self.charges.push_back(charge);
    }

    fn forget(&mut self, charge: &Charge) {
        for (asset, amount) in amounts(charge) {
            if let Some(sum) = self.sums.get_mut(&asset) {
                *sum = sum.saturating_sub(amount);
                if *sum == U256::ZERO {
                    self.sums.remove(&asset);
                }
            }
        }
    }

    fn prune(&mut self, now_ms: i64) {
        while self
            .charges
            .front()
            .is_some_and(|c| c.at_ms <= now_ms - WINDOW_MS)
        {
            if let Some(charge) = self.charges.pop_front() {
                self.forget(&charge);
            }
        }
    }

    fn remove(&mut self, charge_id: [u8; 16]) {
        if let Some(position) = self.charges.iter().position(|c| c.charge_id == charge_id)
            && let Some(charge) = self.charges.remove(position)
        {
            self.forget(&charge);
        }
    }

    fn spent(&self, chain_id: u64) -> U256 {
        self.spent_of((chain_id, None))
    }

    fn spent_of(&self, asset: Asset) -> U256 {
        self.sums.get(&asset).copied().unwrap_or(U256::ZERO)
    }

    fn recent(&self, now_ms: i64) -> usize {
        self.charges
            .iter()
            .rev()
            .take_while(|c| c.at_ms > now_ms - RATE_WINDOW_MS)
            .count()
    }
}

#[derive(Default)]
struct Books {
    /// Keys whose window was loaded from the store.
    keys: HashMap<String, KeyWindow>,
    /// Sessions whose charge was given back, to delete with the next claim.
    given_back: Vec<[u8; 16]>,
}

#[derive(Default)]
pub struct Ledger {
    books: Mutex<Books>,
}

/// A session's charge while the session runs. Dropped before [`Reservation::finalize`], it gives
/// the charge back.
pub struct Reservation {
    ledger: Arc<Ledger>,
    key_id: String,
    charge_id: [u8; 16],
    settled: bool,
}

impl Reservation {
    /// The round-3 fragment has left: the charge stays, whatever happens to the session.
    pub fn finalize(mut self) {
        self.settled = true;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.settled {
            self.ledger.give_back(&self.key_id, self.charge_id);
        }
    }
}

impl std::fmt::Debug for Reservation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reservation")
            .field("key_id", &self.key_id)
            .field("settled", &self.settled)
            .finish()
    }
}

/// What `reserve` hands back: the guard and the row to write with the claim.
pub type Reserved = (Reservation, Charge);

impl Ledger {
    fn books(&self) -> MutexGuard<'_, Books> {
        self.books
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Charges `session_id` for `payload` under `rules`, or refuses with the rule and the values.
    /// `None` when the policy caps neither value, nor a token, nor rate (nothing is counted then).
    pub fn reserve(
        self: &Arc<Self>,
        store: &Store,
        key_id: &str,
        session_id: [u8; 32],
        payload: &Payload,
        rules: &Rules,
        now_ms: i64,
    ) -> Result<Option<Reserved>, NodeError> {
        let rate = rules.requests_per_minute;
        let token_caps = rules
            .tokens
            .iter()
            .any(|token| token.max_amount_per_24h != Cap::Unlimited);
        if rules.max_value_per_24h == Cap::Unlimited && rate == u32::MAX && !token_caps {
            return Ok(None);
        }
        let chain_id = payload.chain_id().unwrap_or(0);
        let value = payload.value();
        let spend = token_spend(rules, payload);
        let mut books = self.books();
        if !books.keys.contains_key(key_id) {
            let charges = store.charges_since(key_id, now_ms)?;
            books
                .keys
                .insert(key_id.to_string(), KeyWindow::new(charges));
        }
        let window = books.keys.get_mut(key_id).expect("inserted above");
        window.prune(now_ms);
        if rate != u32::MAX && window.recent(now_ms) >= rate as usize {
            return Err(NodeError::RateLimited(Refusal::new(
                "requests_per_minute",
                format!(
                    "{rate} sessions for key `{key_id}` in the last minute on this node; retry later"
                ),
            )));
        }
        if let Cap::Max(cap) = rules.max_value_per_24h
            && value > U256::ZERO
        {
            let spent = window.spent(chain_id);
            if spent.checked_add(value).is_none_or(|total| total > cap) {
                return Err(NodeError::PolicyRefused(Refusal::new(
                    "max_value_per_24h",
                    format!(
                        "{} co-signed by this node on chain {chain_id} in the last 24 h + {} > {}",
                        format_eth(spent),
                        format_eth(value),
                        format_eth(cap)
                    ),
                )));
            }
        }
        if let Some((token, amount)) = spend
            && let Cap::Max(cap) = token.max_amount_per_24h
            && amount > U256::ZERO
        {
            let spent = window.spent_of((chain_id, Some(token.address)));
            if spent.checked_add(amount).is_none_or(|total| total > cap) {
                return Err(NodeError::PolicyRefused(Refusal::new(
                    "tokens.max_amount_per_24h",
                    format!(
                        "{} co-signed by this node in the last 24 h + {} > {} ({})",
                        token.shown(spent),
                        token.shown(amount),
                        token.shown(cap),
                        token.named()
                    ),
                )));
            }
        }
        let charge = Charge {
            charge_id: rand::random(),
            session_id,
            key_id: key_id.to_string(),
            chain_id,
            value,
            token: spend.map(|(token, amount)| (token.address, amount)),
            at_ms: now_ms,
        };
        window.push(charge.clone());
        let reservation = Reservation {
            ledger: self.clone(),
            key_id: key_id.to_string(),
            charge_id: charge.charge_id,
            settled: false,
        };
        Ok(Some((reservation, charge)))
    }

    fn give_back(&self, key_id: &str, charge_id: [u8; 16]) {
        let mut books = self.books();
        if let Some(window) = books.keys.get_mut(key_id) {
            window.remove(charge_id);
        }
        books.given_back.push(charge_id);
    }

    /// Drops every window read from the store (the store gained charges it did not count: a
    /// restored node's re-learned ledger); each is read again on its key's next request.
    pub fn reload(&self) {
        self.books().keys.clear();
    }

    /// Charges given back since the last call, for the next claim to delete on disk.
    pub fn take_given_back(&self) -> Vec<[u8; 16]> {
        std::mem::take(&mut self.books().given_back)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(charges: &[(u64, u64, i64)]) -> KeyWindow {
        KeyWindow::new(
            charges
                .iter()
                .enumerate()
                .map(|(i, &(chain_id, value, at_ms))| Charge {
                    charge_id: [i as u8; 16],
                    session_id: [i as u8; 32],
                    key_id: "k".into(),
                    chain_id,
                    value: U256::from(value),
                    token: (chain_id == 1).then(|| (Address([0xcc; 20]), U256::from(value * 10))),
                    at_ms,
                })
                .collect(),
        )
    }

    #[test]
    fn the_window_counts_per_chain_and_forgets_after_24_hours() {
        let mut w = window(&[(1, 5, 0), (137, 7, 10), (1, 2, WINDOW_MS - 1)]);
        let token = |chain_id| (chain_id, Some(Address([0xcc; 20])));
        assert_eq!(w.spent(1), U256::from(7u8));
        assert_eq!(w.spent(137), U256::from(7u8));
        assert_eq!(w.spent_of(token(1)), U256::from(70u8), "tokens sum apart");
        assert_eq!(w.spent_of(token(137)), U256::ZERO);
        w.prune(WINDOW_MS + 10);
        assert_eq!(w.spent(1), U256::from(2u8), "the first charge aged out");
        assert_eq!(w.spent_of(token(1)), U256::from(20u8));
        assert_eq!(w.spent(137), U256::ZERO);
        assert_eq!(w.recent(WINDOW_MS + 10), 1);
        assert_eq!(w.recent(WINDOW_MS + RATE_WINDOW_MS), 0);
        w.remove([2; 16]);
        assert_eq!(w.spent(1), U256::ZERO, "a removed charge leaves the sum");
        assert_eq!(w.spent_of(token(1)), U256::ZERO);
        assert!(w.charges.is_empty());
    }

    #[test]
    fn a_dropped_reservation_gives_its_charge_back_and_a_final_one_keeps_it() {
        let ledger = Arc::new(Ledger::default());
        ledger
            .books()
            .keys
            .insert("k".into(), window(&[(1, 3, 100)]));
        let reservation = |charge: u8| Reservation {
            ledger: ledger.clone(),
            key_id: "k".into(),
            charge_id: [charge; 16],
            settled: false,
        };
        drop(reservation(0));
        assert_eq!(ledger.books().keys["k"].spent(1), U256::ZERO);
        assert_eq!(ledger.take_given_back(), vec![[0u8; 16]]);
        assert!(ledger.take_given_back().is_empty());
        ledger
            .books()
            .keys
            .insert("k".into(), window(&[(1, 3, 100)]));
        reservation(0).finalize();
        assert_eq!(ledger.books().keys["k"].spent(1), U256::from(3u8));
        assert!(ledger.take_given_back().is_empty());
    }
}
