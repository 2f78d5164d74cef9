//! The refresh schedule (`refresh_every` in the coordinator's config): a key whose epoch is that
//! old is refreshed, one key at a time, oldest epoch first, each audited (`key_refreshed` by
//! `schedule`) and counted (`shardsign_key_refreshes_total{trigger="schedule"}`). The schedule
//! keeps no state of its own: a key's epoch age is its state, so a run that stops half way (a
//! restart, a node down) resumes with the keys still due, key by key.

use std::sync::Arc;
use std::time::Duration;

use shardsign_audit::AuditEntry;

use crate::refresh::Refresher;
use crate::registry::{KeyRecord, Registry, unix_now};

/// How long the schedule waits after a failed refresh before it tries the next key (a node that
/// is down fails every refresh; no point in hammering it).
const AFTER_FAILURE: Duration = Duration::from_secs(60);
/// The longest pause between two looks at the registry.
const MAX_PAUSE: Duration = Duration::from_secs(600);

/// Active keys whose epoch is at least `every` old at `now` (Unix seconds), oldest first.
pub fn due(keys: Vec<KeyRecord>, every: Duration, now: i64) -> Vec<KeyRecord> {
    let every = i64::try_from(every.as_secs()).unwrap_or(i64::MAX);
    let mut due: Vec<KeyRecord> = keys
        .into_iter()
        .filter(|k| !k.disabled && now.saturating_sub(k.epoch_changed_at) >= every)
        .collect();
    due.sort_by_key(|k| (k.epoch_changed_at, k.key_id.clone()));
    due
}

/// Runs the schedule for ever.
pub async fn run(refresher: Arc<Refresher>, registry: Arc<Registry>, every: Duration) {
    if every < Duration::from_secs(3600) {
        tracing::warn!(
            every_secs = every.as_secs(),
            "refresh_every is under an hour: every key is refreshed that often (fine for a test, costly in production)"
        );
    }
    let pause = (every / 4).clamp(Duration::from_secs(1), MAX_PAUSE);
    loop {
        let keys = {
            let registry = registry.clone();
            tokio::task::spawn_blocking(move || registry.list_keys()).await
        };
        let keys = match keys {
            Ok(Ok(keys)) => keys,
            Ok(Err(error)) => {
                tracing::error!(%error, "the refresh schedule cannot read the registry");
                Vec::new()
            }
            Err(_) => Vec::new(),
        };
        for key in due(keys, every, unix_now()) {
            let actor = AuditEntry {
                api_key_id: "schedule".into(),
                ..Default::default()
            };
            match refresher
                .refresh_audited(&key, false, actor, "schedule", |_| {})
                .await
            {
                Ok(done) => {
                    tracing::info!(
                        key_id = done.key_id,
                        epoch = done.epoch,
                        "scheduled refresh done"
                    );
                }
                Err(error) => {
                    tracing::warn!(key_id = key.key_id, %error, "scheduled refresh failed; the key stays due and is tried again");
                    tokio::time::sleep(AFTER_FAILURE.min(every)).await;
                    break;
                }
            }
        }
        tokio::time::sleep(pause).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str, changed: i64, disabled: bool) -> KeyRecord {
        KeyRecord {
            key_id: id.into(),
            label: String::new(),
            public_key: Vec::new(),
            address: String::new(),
            allowed_chain_ids: vec![1],
            created_at: 0,
            disabled,
            epoch: 0,
            epoch_changed_at: changed,
        }
    }

    #[test]
    fn keys_are_due_when_their_epoch_is_old_enough_oldest_first_disabled_never() {
        let day = Duration::from_secs(86_400);
        let now = 100 * 86_400;
        let keys = vec![
            key("fresh", now - 3600, false),
            key("old", now - 40 * 86_400, false),
            key("older", now - 50 * 86_400, false),
            key("disabled", now - 90 * 86_400, true),
            key("exactly", now - 30 * 86_400, false),
        ];
        let due: Vec<String> = due(keys, 30 * day, now)
            .into_iter()
            .map(|k| k.key_id)
            .collect();
        assert_eq!(due, ["older", "old", "exactly"]);
    }
}
