//! Key epochs in the registry: the epoch a key's shares are at, moved forward with the refresh's
//! commit certificate in one transaction, so that the registry never names an epoch whose
//! certificate it cannot hand to a node that missed the commit.

use prost::Message as _;
use shardsign_proto::node::v1::FinalizeRefreshRequest;

use super::db::args;
use super::{KeyRecord, Registry, now};
use crate::error::CoordError;

impl Registry {
    /// Moves `key_id` from `from_epoch` to the next, keeping `commit` (the request carrying the
    /// three votes) for nodes that miss it. Refuses if the key is no longer at `from_epoch`.
    pub fn record_refresh(
        &self,
        key_id: &str,
        from_epoch: u64,
        commit: &FinalizeRefreshRequest,
    ) -> Result<KeyRecord, CoordError> {
        self.write(|sql| {
            let at = now();
            let updated = sql.execute(
                "UPDATE keys SET epoch = ?2 + 1, epoch_changed_at = ?3 WHERE key_id = ?1 AND epoch = ?2",
                args![key_id, from_epoch as i64, at],
            )?;
            if updated == 0 {
                return Err(CoordError::RefreshFailed(format!(
                    "key `{key_id}` is no longer at epoch {from_epoch} in the registry (another refresh moved it)"
                )));
            }
            sql.execute(
                "INSERT INTO refresh_commits (key_id, epoch, commit_request, at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(key_id, epoch) DO UPDATE SET commit_request = excluded.commit_request, at = excluded.at",
                args![key_id, from_epoch as i64 + 1, commit.encode_to_vec(), at],
            )
        })?;
        self.get_key(key_id)
    }

    /// The commit request that moved `key_id` to `epoch`, if this registry made it.
    pub fn refresh_commit(
        &self,
        key_id: &str,
        epoch: u64,
    ) -> Result<Option<FinalizeRefreshRequest>, CoordError> {
        let bytes = self
            .read(|sql| {
                sql.query_opt(
                    "SELECT commit_request FROM refresh_commits WHERE key_id = ?1 AND epoch = ?2",
                    args![key_id, epoch as i64],
                )
            })?
            .map(|row| row.blob(0))
            .transpose()?;
        bytes
            .map(|bytes| {
                FinalizeRefreshRequest::decode(bytes.as_slice()).map_err(|_| {
                    CoordError::config(
                        "registry",
                        format!("the commit certificate of `{key_id}` epoch {epoch} is unreadable"),
                    )
                })
            })
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refresh_moves_the_epoch_once_and_keeps_its_certificate() {
        for registry in crate::registry::testing::each_backend() {
            registry
                .insert_key(&KeyRecord {
                    key_id: "k".into(),
                    label: "key".into(),
                    public_key: vec![2; 33],
                    address: "0x00".into(),
                    allowed_chain_ids: vec![1, 137],
                    created_at: 5,
                    disabled: false,
                    epoch: 0,
                    epoch_changed_at: 5,
                })
                .unwrap();
            assert!(matches!(
                registry.insert_key(&registry.get_key("k").unwrap()),
                Err(CoordError::KeyExists(_))
            ));
            let commit = FinalizeRefreshRequest {
                key_id: "k".into(),
                ..Default::default()
            };
            let moved = registry.record_refresh("k", 0, &commit).unwrap();
            assert_eq!(
                (moved.epoch, moved.allowed_chain_ids.clone()),
                (1, vec![1, 137])
            );
            // Another refresh from epoch 0 lost the race.
            assert!(registry.record_refresh("k", 0, &commit).is_err());
            assert_eq!(registry.refresh_commit("k", 1).unwrap(), Some(commit));
            assert_eq!(registry.refresh_commit("k", 2).unwrap(), None);
            assert!(registry.disable_key("k").unwrap().disabled);
            assert!(matches!(
                registry.disable_key("nope"),
                Err(CoordError::KeyNotFound(_))
            ));
            // The bootstrap credential is used once.
            assert_eq!(registry.bootstrap_used_at().unwrap(), None);
            assert!(registry.use_bootstrap(42).unwrap());
            assert!(!registry.use_bootstrap(43).unwrap());
            assert_eq!(registry.bootstrap_used_at().unwrap(), Some(42));
        }
    }
}
