//! API keys in the registry: records and their secret hashes (never secrets).

use std::collections::BTreeSet;

use prost::Message;
use shardsign_policy::{Rules, RulesFor};
use shardsign_proto::v1 as api;

use super::Registry;
use super::db::{Row, Sql, args};
use super::shared::changed;
use crate::access::apikeys::{ApiKey, Scopes, SecretHash};
use crate::error::CoordError;

const COLUMNS: &str =
    "id, label, scopes, key_ids, expires_at_ms, created_at_ms, created_by, revoked_at_ms, policy";

fn unreadable(id: &str) -> CoordError {
    CoordError::config("registry", format!("API key `{id}` is unreadable"))
}

/// Builds an API key from its row and its secrets' hashes.
fn build_api_key(sql: &mut dyn Sql, row: &Row) -> Result<ApiKey, CoordError> {
    let id = row.text(0)?;
    let key_ids: Option<BTreeSet<String>> = row
        .opt_text(3)?
        .map(|text| serde_json::from_str(&text).map_err(|_| unreadable(&id)))
        .transpose()?;
    let policy = api::Policy::decode(row.blob(8)?.as_slice()).map_err(|_| unreadable(&id))?;
    let rules = Rules::from_proto(&policy, RulesFor::ApiKey).map_err(|_| unreadable(&id))?;
    let secrets = sql
        .query(
            "SELECT hash, valid_until_ms FROM api_key_secrets WHERE api_key_id = ?1",
            args![&id],
        )?
        .iter()
        .map(|secret| {
            let hash: [u8; 32] = secret.blob(0)?.try_into().map_err(|_| unreadable(&id))?;
            Ok(SecretHash {
                hash,
                valid_until_ms: secret.opt_int(1)?,
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
            let row = sql.query_opt(
                &format!("SELECT {COLUMNS} FROM api_keys WHERE id = ?1"),
                args![id],
            )?;
            row.map(|row| build_api_key(sql, &row)).transpose()
        })
    }

    pub fn load_api_keys(&self) -> Result<Vec<ApiKey>, CoordError> {
        self.read(|sql| {
            let rows = sql.query(
                &format!("SELECT {COLUMNS} FROM api_keys ORDER BY created_at_ms, id"),
                &[],
            )?;
            rows.iter().map(|row| build_api_key(sql, row)).collect()
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
