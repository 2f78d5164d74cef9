//! API keys in the registry: records and their secret hashes (never secrets).

use std::collections::BTreeSet;

use prost::Message;
use shardsign_policy::{Rules, RulesFor};
use shardsign_proto::v1 as api;

use super::Registry;
use super::db::{Row, args};
use super::shared::changed;
use crate::access::apikeys::{ApiKey, Scopes, SecretHash};
use crate::error::CoordError;

const COLUMNS: &str =
    "id, label, scopes, key_ids, expires_at_ms, created_at_ms, created_by, revoked_at_ms, policy";

fn unreadable(id: &str) -> CoordError {
    CoordError::config("registry", format!("API key `{id}` is unreadable"))
}

/// Builds an API key from its row and the rows of its secrets' hashes (`api_key_id, hash,
/// valid_until_ms`).
fn build_api_key<'r>(
    row: &Row,
    secret_rows: impl Iterator<Item = &'r Row>,
) -> Result<ApiKey, CoordError> {
    let id = row.text(0)?;
    let key_ids: Option<BTreeSet<String>> = row
        .opt_text(3)?
        .map(|text| serde_json::from_str(&text).map_err(|_| unreadable(&id)))
        .transpose()?;
    let policy = api::Policy::decode(row.blob(8)?.as_slice()).map_err(|_| unreadable(&id))?;
    let rules = Rules::from_proto(&policy, RulesFor::ApiKey).map_err(|_| unreadable(&id))?;
    let secrets = secret_rows
        .map(|secret| {
            let hash: [u8; 32] = secret.blob(1)?.try_into().map_err(|_| unreadable(&id))?;
            Ok(SecretHash {
                hash,
                valid_until_ms: secret.opt_int(2)?,
            })
        })
        .collect::<Result<Vec<_>, CoordError>>()?;
    Ok(ApiKey {
        scopes: Scopes::from_column(&row.text(2)?),
        label: row.text(1)?,
        key_ids,
        expires_at_ms: row.opt_int(4)?,
        created_at_ms: row.int(5)?,
        created_by: row.text(6)?,
        revoked_at_ms: row.opt_int(7)?,
        policy,
        rules,
        secrets,
        id,
    })
}

const SECRET_COLUMNS: &str = "api_key_id, hash, valid_until_ms";

impl Registry {
    pub fn insert_api_key(&self, key: &ApiKey, secret_hash: &[u8; 32]) -> Result<(), CoordError> {
        let key_ids = key
            .key_ids
            .as_ref()
            .map(|ids| serde_json::to_string(ids).expect("strings serialise"));
        self.write(|sql| {
            sql.execute(
                &format!(
                    "INSERT INTO api_keys ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL, ?8)"
                ),
                args![
                    &key.id,
                    &key.label,
                    key.scopes.to_column(),
                    key_ids,
                    key.expires_at_ms,
                    key.created_at_ms,
                    &key.created_by,
                    key.policy.encode_to_vec(),
                ],
            )?;
            sql.execute(
                "INSERT INTO api_key_secrets (api_key_id, hash, created_at_ms, valid_until_ms) VALUES (?1, ?2, ?3, NULL)",
                args![&key.id, secret_hash.as_slice(), key.created_at_ms],
            )?;
            changed(sql)
        })?;
        Ok(())
    }

    pub fn load_api_key(&self, id: &str) -> Result<Option<ApiKey>, CoordError> {
        self.read(|sql| {
            let Some(row) = sql.query_opt(
                &format!("SELECT {COLUMNS} FROM api_keys WHERE id = ?1"),
                args![id],
            )?
            else {
                return Ok(None);
            };
            let secrets = sql.query(
                &format!("SELECT {SECRET_COLUMNS} FROM api_key_secrets WHERE api_key_id = ?1"),
                args![id],
            )?;
            build_api_key(&row, secrets.iter()).map(Some)
        })
    }

    /// Every API key, in two queries (a coordinator sharing the registry reloads them all
    /// whenever another changed one).
    pub fn load_api_keys(&self) -> Result<Vec<ApiKey>, CoordError> {
        self.read(|sql| {
            let rows = sql.query(
                &format!("SELECT {COLUMNS} FROM api_keys ORDER BY created_at_ms, id"),
                &[],
            )?;
            let secrets = sql.query(
                &format!("SELECT {SECRET_COLUMNS} FROM api_key_secrets"),
                &[],
            )?;
            let mut by_key: std::collections::HashMap<String, Vec<&Row>> =
                std::collections::HashMap::new();
            for secret in &secrets {
                by_key.entry(secret.text(0)?).or_default().push(secret);
            }
            rows.iter()
                .map(|row| {
                    let mine = by_key.remove(&row.text(0)?).unwrap_or_default();
                    build_api_key(row, mine.into_iter())
                })
                .collect()
        })
    }

    /// Adds a new current secret; the current ones become valid until `grace_until_ms`. Secrets
    /// whose grace ended are deleted.
    pub fn rotate_api_key(
        &self,
        id: &str,
        new_hash: &[u8; 32],
        now_ms: i64,
        grace_until_ms: i64,
    ) -> Result<(), CoordError> {
        self.write(|sql| {
            sql.execute(
                "UPDATE api_key_secrets SET valid_until_ms = ?2 WHERE api_key_id = ?1 AND valid_until_ms IS NULL",
                args![id, grace_until_ms],
            )?;
            sql.execute(
                "DELETE FROM api_key_secrets WHERE api_key_id = ?1 AND valid_until_ms <= ?2",
                args![id, now_ms],
            )?;
            sql.execute(
                "INSERT INTO api_key_secrets (api_key_id, hash, created_at_ms, valid_until_ms) VALUES (?1, ?2, ?3, NULL)",
                args![id, new_hash.as_slice(), now_ms],
            )?;
            changed(sql)
        })?;
        Ok(())
    }

    pub fn revoke_api_key(&self, id: &str, now_ms: i64) -> Result<(), CoordError> {
        self.write(|sql| {
            sql.execute(
                "UPDATE api_keys SET revoked_at_ms = ?2 WHERE id = ?1 AND revoked_at_ms IS NULL",
                args![id, now_ms],
            )?;
            changed(sql)
        })?;
        Ok(())
    }

    pub fn set_api_key_policy(&self, id: &str, policy: &api::Policy) -> Result<(), CoordError> {
        let policy = policy.encode_to_vec();
        self.write(|sql| {
            sql.execute(
                "UPDATE api_keys SET policy = ?2 WHERE id = ?1",
                args![id, policy],
            )?;
            changed(sql)
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str, created_at_ms: i64) -> ApiKey {
        let policy = api::Policy::default();
        ApiKey {
            id: id.into(),
            label: format!("label {id}"),
            scopes: Scopes::parse(&["sign".to_string()]).unwrap(),
            key_ids: Some(BTreeSet::from(["k1".to_string()])),
            expires_at_ms: None,
            created_at_ms,
            created_by: "test".into(),
            revoked_at_ms: None,
            rules: Rules::from_proto(&policy, RulesFor::ApiKey).unwrap(),
            policy,
            secrets: Vec::new(),
        }
    }

    #[test]
    fn api_keys_round_trip_with_their_secrets_and_every_change_is_counted() {
        for registry in crate::registry::testing::each_backend() {
            let before = registry.generation().unwrap();
            registry.insert_api_key(&key("a", 1), &[1; 32]).unwrap();
            registry.insert_api_key(&key("b", 2), &[2; 32]).unwrap();
            registry.rotate_api_key("a", &[3; 32], 10, 100).unwrap();
            registry.revoke_api_key("b", 20).unwrap();
            assert_eq!(
                registry.generation().unwrap(),
                before + 4,
                "{}",
                registry.backend
            );
            let all = registry.load_api_keys().unwrap();
            assert_eq!(
                all.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(),
                ["a", "b"]
            );
            let hashes = |k: &ApiKey| {
                let mut h: Vec<_> = k
                    .secrets
                    .iter()
                    .map(|s| (s.hash[0], s.valid_until_ms))
                    .collect();
                h.sort();
                h
            };
            // The rotated key's old secret is valid until the grace ends; the new one has no end.
            assert_eq!(hashes(&all[0]), [(1, Some(100)), (3, None)]);
            assert_eq!(hashes(&all[1]), [(2, None)]);
            assert_eq!(all[1].revoked_at_ms, Some(20));
            let one = registry.load_api_key("a").unwrap().unwrap();
            assert_eq!(hashes(&one), hashes(&all[0]));
            assert_eq!(one.key_ids, all[0].key_ids);
            assert!(registry.load_api_key("missing").unwrap().is_none());
        }
    }
}
