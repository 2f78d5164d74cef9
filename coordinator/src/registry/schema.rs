//! The registry's schema, one list of migrations per dialect. Version N is the same change in
//! both; a database records how many it has applied (SQLite: `PRAGMA user_version`;
//! PostgreSQL: the `schema_version` table, changed under an advisory lock so that coordinators
//! starting together migrate once).

pub const SQLITE: &[&str] = &[
    "CREATE TABLE keys (
         key_id TEXT PRIMARY KEY,
         label TEXT NOT NULL,
         public_key BLOB NOT NULL,
         address TEXT NOT NULL,
         allowed_chain_ids TEXT NOT NULL,
         created_at INTEGER NOT NULL,
         status TEXT NOT NULL
     );
     CREATE TABLE requests (
         request_id TEXT PRIMARY KEY,
         request_hash BLOB NOT NULL,
         response BLOB NOT NULL,
         created_at INTEGER NOT NULL
     );",
    // Agent access: API keys, signed key policies, spend counters, the audit log.
    "CREATE TABLE api_keys (
         id TEXT PRIMARY KEY,
         label TEXT NOT NULL,
         scopes TEXT NOT NULL,
         key_ids TEXT,
         expires_at_ms INTEGER,
         created_at_ms INTEGER NOT NULL,
         created_by TEXT NOT NULL,
         revoked_at_ms INTEGER,
         policy BLOB NOT NULL
     );
     CREATE TABLE api_key_secrets (
         api_key_id TEXT NOT NULL REFERENCES api_keys(id),
         hash BLOB NOT NULL,
         created_at_ms INTEGER NOT NULL,
         valid_until_ms INTEGER
     );
     CREATE INDEX api_key_secrets_by_key ON api_key_secrets(api_key_id);
     CREATE TABLE key_policies (
         key_id TEXT PRIMARY KEY,
         version INTEGER NOT NULL,
         signed BLOB NOT NULL
     );
     CREATE TABLE spends (
         id INTEGER PRIMARY KEY,
         api_key_id TEXT NOT NULL,
         at_ms INTEGER NOT NULL,
         value TEXT NOT NULL
     );
     CREATE INDEX spends_by_key ON spends(api_key_id, at_ms);
     CREATE TABLE audit (
         seq INTEGER PRIMARY KEY,
         at_ms INTEGER NOT NULL,
         api_key_id TEXT NOT NULL,
         operation TEXT NOT NULL,
         key_id TEXT NOT NULL,
         decision TEXT NOT NULL,
         detail TEXT NOT NULL,
         tx_hash BLOB NOT NULL,
         request_id TEXT NOT NULL,
         peer TEXT NOT NULL,
         prev_hash BLOB NOT NULL,
         hash BLOB NOT NULL
     );
     CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
         BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
     CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
         BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;",
    // One-off facts (the bootstrap credential's use).
    "CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);",
    // A wei on chain 1 is not a wei on chain 137: the 24 h cap counts per chain. Spends written
    // before this did not say their chain (0) and age out within 24 h. `subject` says whose cap
    // a row counts toward: an API key's, or a signing key's policy (then `api_key_id` holds the
    // key id).
    "ALTER TABLE spends ADD COLUMN chain_id INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE spends ADD COLUMN subject TEXT NOT NULL DEFAULT 'api_key';
     CREATE INDEX spends_by_subject ON spends(subject, api_key_id, chain_id, at_ms);",
    // Epochs: a key's shares are at epoch 0 after the ceremony and one more after each refresh.
    // A refresh's commit certificate (the three nodes' votes, as the commit request sent to
    // them) is kept so that a node that missed the commit can be given it later.
    "ALTER TABLE keys ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE keys ADD COLUMN epoch_changed_at INTEGER NOT NULL DEFAULT 0;
     UPDATE keys SET epoch_changed_at = created_at;
     CREATE TABLE refresh_commits (
         key_id TEXT NOT NULL,
         epoch INTEGER NOT NULL,
         commit_request BLOB NOT NULL,
         at INTEGER NOT NULL,
         PRIMARY KEY (key_id, epoch)
     );",
    // Token spends: `asset` is '' for ether, else the token contract (lowercase 0x hex) whose
    // amount `value` then holds.
    "ALTER TABLE spends ADD COLUMN asset TEXT NOT NULL DEFAULT '';",
    // Requests parked for human approval (see `approvals`): the id is the request hash.
    "CREATE TABLE approvals (
         approval_id TEXT PRIMARY KEY,
         state TEXT NOT NULL,
         key_id TEXT NOT NULL,
         request_id TEXT NOT NULL,
         api_key_id TEXT NOT NULL,
         chain_id INTEGER NOT NULL,
         rule TEXT NOT NULL,
         detail TEXT NOT NULL,
         created_at INTEGER NOT NULL,
         expires_at INTEGER NOT NULL,
         payload_kind TEXT NOT NULL,
         payload BLOB NOT NULL,
         statement BLOB NOT NULL,
         signatures BLOB NOT NULL,
         approvers TEXT NOT NULL,
         quorum INTEGER NOT NULL,
         decided_at INTEGER NOT NULL,
         rejected_by TEXT NOT NULL,
         reason TEXT NOT NULL
     );
     CREATE INDEX approvals_by_state ON approvals(state, expires_at);",
    // Coordinators sharing the registry (PostgreSQL) use these; SQLite has the same schema so
    // that one migration list describes both. `generation` counts the changes that coordinators
    // cache (API keys, key policies, disabled keys): a coordinator seeing it move reloads.
    // `request_claims`: a request id being signed, and by whom until when. `rate_limits`: each
    // API key's request budget (the time its next request is due, GCRA), in microseconds.
    "INSERT INTO meta (name, value) VALUES ('generation', 0);
     CREATE TABLE request_claims (
         request_id TEXT PRIMARY KEY,
         request_hash BLOB NOT NULL,
         owner TEXT NOT NULL,
         expires_at_ms INTEGER NOT NULL
     );
     CREATE TABLE rate_limits (
         api_key_id TEXT PRIMARY KEY,
         due_us INTEGER NOT NULL
     );",
    // A spend reserved for a signing in flight counts until `pending_until_ms`; the signing's
    // closing write clears it (NULL: kept for the window). A reservation whose coordinator died
    // mid-request stops counting then, instead of holding its cap for 24 h.
    "ALTER TABLE spends ADD COLUMN pending_until_ms INTEGER;",
];

/// The same changes in PostgreSQL's types: `BIGINT` for integers (every integer the registry
/// binds is 64-bit), `BYTEA` for bytes, the append-only audit log by a trigger function.
pub const POSTGRES: &[&str] = &[
    "CREATE TABLE keys (
         key_id TEXT PRIMARY KEY,
         label TEXT NOT NULL,
         public_key BYTEA NOT NULL,
         address TEXT NOT NULL,
         allowed_chain_ids TEXT NOT NULL,
         created_at BIGINT NOT NULL,
         status TEXT NOT NULL
     );
     CREATE TABLE requests (
         request_id TEXT PRIMARY KEY,
         request_hash BYTEA NOT NULL,
         response BYTEA NOT NULL,
         created_at BIGINT NOT NULL
     );",
    "CREATE TABLE api_keys (
         id TEXT PRIMARY KEY,
         label TEXT NOT NULL,
         scopes TEXT NOT NULL,
         key_ids TEXT,
         expires_at_ms BIGINT,
         created_at_ms BIGINT NOT NULL,
         created_by TEXT NOT NULL,
         revoked_at_ms BIGINT,
         policy BYTEA NOT NULL
     );
     CREATE TABLE api_key_secrets (
         api_key_id TEXT NOT NULL REFERENCES api_keys(id),
         hash BYTEA NOT NULL,
         created_at_ms BIGINT NOT NULL,
         valid_until_ms BIGINT
     );
     CREATE INDEX api_key_secrets_by_key ON api_key_secrets(api_key_id);
     CREATE TABLE key_policies (
         key_id TEXT PRIMARY KEY,
         version BIGINT NOT NULL,
         signed BYTEA NOT NULL
     );
     CREATE TABLE spends (
         id BIGSERIAL PRIMARY KEY,
         api_key_id TEXT NOT NULL,
         at_ms BIGINT NOT NULL,
         value TEXT NOT NULL
     );
     CREATE INDEX spends_by_key ON spends(api_key_id, at_ms);
     CREATE TABLE audit (
         seq BIGINT PRIMARY KEY,
         at_ms BIGINT NOT NULL,
         api_key_id TEXT NOT NULL,
         operation TEXT NOT NULL,
         key_id TEXT NOT NULL,
         decision TEXT NOT NULL,
         detail TEXT NOT NULL,
         tx_hash BYTEA NOT NULL,
         request_id TEXT NOT NULL,
         peer TEXT NOT NULL,
         prev_hash BYTEA NOT NULL,
         hash BYTEA NOT NULL
     );
     CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS
         'BEGIN RAISE EXCEPTION ''the audit log is append-only''; END';
     CREATE TRIGGER audit_no_change BEFORE UPDATE OR DELETE ON audit
         FOR EACH ROW EXECUTE FUNCTION audit_append_only();",
    "CREATE TABLE meta (name TEXT PRIMARY KEY, value BIGINT NOT NULL);",
    "ALTER TABLE spends ADD COLUMN chain_id BIGINT NOT NULL DEFAULT 0;
     ALTER TABLE spends ADD COLUMN subject TEXT NOT NULL DEFAULT 'api_key';
     CREATE INDEX spends_by_subject ON spends(subject, api_key_id, chain_id, at_ms);",
    "ALTER TABLE keys ADD COLUMN epoch BIGINT NOT NULL DEFAULT 0;
     ALTER TABLE keys ADD COLUMN epoch_changed_at BIGINT NOT NULL DEFAULT 0;
     UPDATE keys SET epoch_changed_at = created_at;
     CREATE TABLE refresh_commits (
         key_id TEXT NOT NULL,
         epoch BIGINT NOT NULL,
         commit_request BYTEA NOT NULL,
         at BIGINT NOT NULL,
         PRIMARY KEY (key_id, epoch)
     );",
    "ALTER TABLE spends ADD COLUMN asset TEXT NOT NULL DEFAULT '';",
    "CREATE TABLE approvals (
         approval_id TEXT PRIMARY KEY,
         state TEXT NOT NULL,
         key_id TEXT NOT NULL,
         request_id TEXT NOT NULL,
         api_key_id TEXT NOT NULL,
         chain_id BIGINT NOT NULL,
         rule TEXT NOT NULL,
         detail TEXT NOT NULL,
         created_at BIGINT NOT NULL,
         expires_at BIGINT NOT NULL,
         payload_kind TEXT NOT NULL,
         payload BYTEA NOT NULL,
         statement BYTEA NOT NULL,
         signatures BYTEA NOT NULL,
         approvers TEXT NOT NULL,
         quorum BIGINT NOT NULL,
         decided_at BIGINT NOT NULL,
         rejected_by TEXT NOT NULL,
         reason TEXT NOT NULL
     );
     CREATE INDEX approvals_by_state ON approvals(state, expires_at);",
    "INSERT INTO meta (name, value) VALUES ('generation', 0);
     CREATE TABLE request_claims (
         request_id TEXT PRIMARY KEY,
         request_hash BYTEA NOT NULL,
         owner TEXT NOT NULL,
         expires_at_ms BIGINT NOT NULL
     );
     CREATE TABLE rate_limits (
         api_key_id TEXT PRIMARY KEY,
         due_us BIGINT NOT NULL
     );",
    "ALTER TABLE spends ADD COLUMN pending_until_ms BIGINT;",
];

#[cfg(test)]
mod tests {
    #[test]
    fn both_dialects_have_every_version() {
        assert_eq!(super::SQLITE.len(), super::POSTGRES.len());
    }
}
