//! API keys in the registry: records and their secret hashes (never secrets).

use std::collections::BTreeSet;

use prost::Message;
use rusqlite::{OptionalExtension, params};
use shardsign_policy::{Rules, RulesFor};
use shardsign_proto::v1 as api;

use super::Registry;
use crate::access::apikeys::{ApiKey, Scopes, SecretHash};
use crate::error::CoordError;

const COLUMNS: &str =
    "id, label, scopes, key_ids, expires_at_ms, created_at_ms, created_by, revoked_at_ms, policy";

fn unreadable(id: &str) -> CoordError {
    CoordError::config("registry", format!("API key `{id}` is unreadable"))
}

type Row = (
    String,
    String,
    String,
    Option<String>,
    Option<i64>,
    i64,
    String,
    Option<i64>,
    Vec<u8>,
);

fn read_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
        row.get(7)?,
        row.get(8)?,
    ))
}

impl Registry {
    fn build_api_key(&self, conn: &rusqlite::Connection, row: Row) -> Result<ApiKey, CoordError> {
        let (
            id,
            label,
            scopes,
            key_ids,
            expires_at_ms,
            created_at_ms,
            created_by,
            revoked_at_ms,
            policy,
        ) = row;
        let key_ids: Option<BTreeSet<String>> = key_ids
            .map(|text| serde_json::from_str(&text).map_err(|_| unreadable(&id)))
            .transpose()?;
        let policy = api::Policy::decode(policy.as_slice()).map_err(|_| unreadable(&id))?;
        let rules = Rules::from_proto(&policy, RulesFor::ApiKey).map_err(|_| unreadable(&id))?;
        let mut statement = conn.prepare_cached(
            "SELECT hash, valid_until_ms FROM api_key_secrets WHERE api_key_id = ?1",
        )?;
        let secrets = statement
            .query_map([&id], |r| {
                let hash: Vec<u8> = r.get(0)?;
                Ok((hash, r.get::<_, Option<i64>>(1)?))
            })?
            .map(|row| {
                let (hash, valid_until_ms) = row?;
                let hash: [u8; 32] = hash.try_into().map_err(|_| unreadable(&id))?;
                Ok(SecretHash {
                    hash,
                    valid_until_ms,
                })
            })
            .collect::<Result<Vec<_>, CoordError>>()?;
        Ok(ApiKey {
            scopes: Scopes::from_column(&scopes),
            id,
            label,
            key_ids,
            expires_at_ms,
            created_at_ms,
            created_by,
            revoked_at_ms,
            policy,
            rules,
            secrets,
        })
    }

    pub fn insert_api_key(&self, key: &ApiKey, secret_hash: &[u8; 32]) -> Result<(), CoordError> {
        let key_ids = key
            .key_ids
            .as_ref()
            .map(|ids| serde_json::to_string(ids).expect("strings serialise"));
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            &format!(
                "INSERT INTO api_keys ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL, ?8)"
            ),
            params![
                key.id,
                key.label,
                key.scopes.to_column(),
                key_ids,
                key.expires_at_ms,
                key.created_at_ms,
                key.created_by,
                key.policy.encode_to_vec(),
            ],
        )?;
        tx.execute(
            "INSERT INTO api_key_secrets (api_key_id, hash, created_at_ms, valid_until_ms) VALUES (?1, ?2, ?3, NULL)",
            params![key.id, secret_hash.as_slice(), key.created_at_ms],
        )?;
        tx.commit()?;
        Ok(())
    }

    pub fn load_api_key(&self, id: &str) -> Result<Option<ApiKey>, CoordError> {
        let conn = self.conn();
        let row = conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM api_keys WHERE id = ?1"),
                [id],
                read_row,
            )
            .optional()?;
        row.map(|row| self.build_api_key(&conn, row)).transpose()
    }

    pub fn load_api_keys(&self) -> Result<Vec<ApiKey>, CoordError> {
        let conn = self.conn();
        let rows = {
            let mut statement = conn.prepare(&format!(
                "SELECT {COLUMNS} FROM api_keys ORDER BY created_at_ms, id"
            ))?;
            statement
                .query_map([], read_row)?
                .collect::<Result<Vec<_>, _>>()?
        };
        rows.into_iter()
            .map(|row| self.build_api_key(&conn, row))
            .collect()
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
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "UPDATE api_key_secrets SET valid_until_ms = ?2 WHERE api_key_id = ?1 AND valid_until_ms IS NULL",
            params![id, grace_until_ms],
        )?;
        tx.execute(
            "DELETE FROM api_key_secrets WHERE api_key_id = ?1 AND valid_until_ms <= ?2",
            params![id, now_ms],
        )?;
        tx.execute(
            "INSERT INTO api_key_secrets (api_key_id, hash, created_at_ms, valid_until_ms) VALUES (?1, ?2, ?3, NULL)",
            params![id, new_hash.as_slice(), now_ms],
        )?;
        tx.commit()?;
        Ok(())
    }

    pub fn revoke_api_key(&self, id: &str, now_ms: i64) -> Result<(), CoordError> {
        self.conn().execute(
            "UPDATE api_keys SET revoked_at_ms = ?2 WHERE id = ?1 AND revoked_at_ms IS NULL",
            params![id, now_ms],
        )?;
        Ok(())
    }

    pub fn set_api_key_policy(&self, id: &str, policy: &api::Policy) -> Result<(), CoordError> {
        self.conn().execute(
            "UPDATE api_keys SET policy = ?2 WHERE id = ?1",
            params![id, policy.encode_to_vec()],
        )?;
        Ok(())
    }
}
