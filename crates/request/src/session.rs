//! Session ids that carry their time. A node refuses an id made more than
//! [`SESSION_ID_MAX_AGE_MS`] ago (or more than [`SESSION_ID_MAX_AHEAD_MS`] ahead of its clock),
//! so it only has to remember the ids it claimed within that window: forgetting older ones
//! cannot reopen a replay, since the id itself is refused by then.
//!
//! Layout (32 bytes): Unix time in milliseconds (8 bytes, big-endian) || 24 random bytes.

use std::time::{SystemTime, UNIX_EPOCH};

use thiserror::Error;

pub const SESSION_ID_LEN: usize = 32;
/// How old a session id may be when a node first sees it: covers the time from the
/// coordinator's choice to the last node's start, plus clock skew between the machines.
pub const SESSION_ID_MAX_AGE_MS: i64 = 10 * 60 * 1000;
/// How far ahead of a node's clock a session id may be (the coordinator's clock runs ahead).
pub const SESSION_ID_MAX_AHEAD_MS: i64 = 5 * 60 * 1000;
/// How long a node must remember a claimed id: after this, the id is refused as too old.
pub const SESSION_ID_MEMORY_SECS: i64 = (SESSION_ID_MAX_AGE_MS + SESSION_ID_MAX_AHEAD_MS) / 1000;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SessionIdError {
    #[error("session_id: expected {SESSION_ID_LEN} bytes, got {0}")]
    Length(usize),
    #[error(
        "session_id was made {age_secs} s ago, over the {} s a node accepts: a delayed or replayed request, or the coordinator's clock is behind",
        SESSION_ID_MAX_AGE_MS / 1000
    )]
    TooOld { age_secs: i64 },
    #[error(
        "session_id is {ahead_secs} s ahead of this node's clock, over the {} s allowed: the coordinator's clock is ahead",
        SESSION_ID_MAX_AHEAD_MS / 1000
    )]
    Ahead { ahead_secs: i64 },
}

/// The wall clock in Unix milliseconds (0 before 1970, which no machine running this has).
pub fn unix_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A new session id made at `now_ms`.
pub fn new_session_id(now_ms: i64) -> [u8; SESSION_ID_LEN] {
    let mut id: [u8; SESSION_ID_LEN] = rand::random();
    id[..8].copy_from_slice(&now_ms.to_be_bytes());
    id
}

/// When `id` says it was made (Unix milliseconds).
pub fn session_id_time_ms(id: &[u8]) -> Result<i64, SessionIdError> {
    let id: &[u8; SESSION_ID_LEN] = id
        .try_into()
        .map_err(|_| SessionIdError::Length(id.len()))?;
    let mut time = [0u8; 8];
    time.copy_from_slice(&id[..8]);
    Ok(i64::from_be_bytes(time))
}

/// Checks that `id` is recent at `now_ms`: not older than the accepted age, not too far ahead.
pub fn check_session_id_time(id: &[u8], now_ms: i64) -> Result<(), SessionIdError> {
    let made = session_id_time_ms(id)?;
    let age = now_ms.saturating_sub(made);
    if age > SESSION_ID_MAX_AGE_MS {
        return Err(SessionIdError::TooOld {
            age_secs: age / 1000,
        });
    }
    if age < -SESSION_ID_MAX_AHEAD_MS {
        return Err(SessionIdError::Ahead {
            ahead_secs: age.saturating_neg() / 1000,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    #[test]
    fn a_fresh_id_carries_its_time_and_is_accepted() {
        let id = new_session_id(NOW);
        assert_eq!(session_id_time_ms(&id).unwrap(), NOW);
        check_session_id_time(&id, NOW).unwrap();
        check_session_id_time(&id, NOW + SESSION_ID_MAX_AGE_MS).unwrap();
        check_session_id_time(&id, NOW - SESSION_ID_MAX_AHEAD_MS).unwrap();
        assert_ne!(new_session_id(NOW), id, "the rest is random");
    }

    #[test]
    fn old_future_and_malformed_ids_are_refused() {
        let id = new_session_id(NOW);
        let old = check_session_id_time(&id, NOW + SESSION_ID_MAX_AGE_MS + 1).unwrap_err();
        assert!(
            matches!(old, SessionIdError::TooOld { age_secs: 600 }),
            "{old}"
        );
        let ahead = check_session_id_time(&id, NOW - SESSION_ID_MAX_AHEAD_MS - 1000).unwrap_err();
        assert!(
            matches!(ahead, SessionIdError::Ahead { ahead_secs: 301 }),
            "{ahead}"
        );
        assert_eq!(
            check_session_id_time(&id[..31], NOW),
            Err(SessionIdError::Length(31))
        );
        // Extreme times do not overflow.
        check_session_id_time(&new_session_id(i64::MIN), i64::MAX).unwrap_err();
        check_session_id_time(&new_session_id(i64::MAX), i64::MIN).unwrap_err();
    }

    #[test]
    fn a_node_remembers_ids_for_as_long_as_it_accepts_them() {
        // An id claimed at `claimed` was made no later than claimed + MAX_AHEAD; once the memory
        // is over, it is older than MAX_AGE.
        let claimed = NOW;
        let latest_made = claimed + SESSION_ID_MAX_AHEAD_MS;
        let forgotten_at = claimed + SESSION_ID_MEMORY_SECS * 1000 + 1;
        assert!(check_session_id_time(&new_session_id(latest_made), forgotten_at).is_err());
    }
}
