//! Membership changes this node applied, and the shares share repair rebuilt on it. Each change
//! is kept with its signed statement: the node's view of who nodes 1, 2 and 3 are is the
//! configured members overridden, node by node, by the newest change naming them.

use rusqlite::{OptionalExtension, params};
use shardsign_tss::{KeyShare, PartyId, PublicPackage};

use super::{Store, crypto, now, share_aad};
use crate::error::NodeError;

/// One applied membership change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipChangeRecord {
    pub version: u64,
    pub node_id: PartyId,
    /// The new identity: Ed25519 signing key then X25519 key.
    pub identity: [u8; 64],
    /// The signing key of the identity it replaced (never readmitted); `None` on the new node
    /// itself, which was configured with its own identity and never knew the old one.
    pub replaced_signing_key: Option<[u8; 32]>,
}

/// A share rebuilt by repair, as stored until the complete refresh that follows.
pub struct RepairedShare<'a> {
    pub key_id: &'a str,
    pub epoch: u64,
    pub share: &'a KeyShare,
    pub package: &'a PublicPackage,
    pub allowed_chain_ids: &'a [u64],
}

impl Store {
    /// Every applied change, oldest first.
    pub fn membership_changes(&self) -> Result<Vec<MembershipChangeRecord>, NodeError> {
        let conn = self.conn();
        let mut statement = conn.prepare(
            "SELECT version, node_id, identity, replaced_signing_key FROM membership_changes ORDER BY version",
        )?;
        let rows = statement.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, Vec<u8>>(2)?,
                r.get::<_, Vec<u8>>(3)?,
            ))
        })?;
        let mut changes = Vec::new();
        for row in rows {
            let (version, node_id, identity, replaced) = row?;
            let corrupt =
                || NodeError::Corrupt(format!("membership change {version} is unreadable"));
            changes.push(MembershipChangeRecord {
                version: version as u64,
                node_id: u8::try_from(node_id)
                    .ok()
                    .and_then(|n| PartyId::new(n).ok())
                    .ok_or_else(corrupt)?,
                identity: identity.try_into().map_err(|_| corrupt())?,
                replaced_signing_key: match replaced.len() {
                    0 => None,
                    _ => Some(replaced.try_into().map_err(|_| corrupt())?),
                },
            });
        }
        Ok(changes)
    }

    /// Records `change` (with its signed `statement`) unless a change of that version exists;
    /// whether it was recorded now.
    pub fn record_membership_change(
        &self,
        change: &MembershipChangeRecord,
        statement: &[u8],
    ) -> Result<bool, NodeError> {
        let inserted = self.conn().execute(
            "INSERT OR IGNORE INTO membership_changes
                 (version, node_id, identity, replaced_signing_key, statement, applied_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                change.version as i64,
                i64::from(change.node_id.get()),
                change.identity.as_slice(),
                change
                    .replaced_signing_key
                    .map(|k| k.to_vec())
                    .unwrap_or_default(),
                statement,
                now()
            ],
        )?;
        Ok(inserted == 1)
    }

    /// Whether the statement inside `signed` (an encoded `SignedStatement`, whoever signed it)
    /// is one this node applied.
    pub fn membership_statement_applied(&self, signed: &[u8]) -> Result<bool, NodeError> {
        use prost::Message as _;
        use shardsign_proto::v1::SignedStatement;
        let Ok(envelope) = SignedStatement::decode(signed) else {
            return Ok(false);
        };
        let conn = self.conn();
        let mut statement = conn.prepare("SELECT statement FROM membership_changes")?;
        let stored = statement.query_map([], |r| r.get::<_, Vec<u8>>(0))?;
        for row in stored {
            if SignedStatement::decode(row?.as_slice())
                .is_ok_and(|applied| applied.statement == envelope.statement)
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Stores a share rebuilt by repair as the key's current share at `epoch`, marked hollow
    /// until the next refresh commits. Returns false if this node already holds exactly that
    /// (a repeated repair); refuses if it holds the key otherwise.
    pub fn put_repaired_key(&self, repaired: &RepairedShare<'_>) -> Result<bool, NodeError> {
        let RepairedShare {
            key_id,
            epoch,
            share,
            package,
            allowed_chain_ids,
        } = repaired;
        if !share.is_hollow() || !package.matches(share) {
            return Err(NodeError::Corrupt(format!(
                "the repaired share of `{key_id}` does not match its package"
            )));
        }
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let held: Option<(Vec<u8>, i64, bool)> = tx
            .query_row(
                "SELECT public_key, epoch, hollow FROM keys WHERE key_id = ?1",
                [key_id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        if let Some((public_key, held_epoch, hollow)) = held {
            if hollow
                && held_epoch as u64 == *epoch
                && public_key == share.public_key().as_bytes().as_slice()
            {
                return Ok(false);
            }
            return Err(NodeError::KeyExists(key_id.to_string()));
        }
        let ciphertext = crypto::encrypt(
            &self.data_key,
            &share_aad(self.node_id, &self.cluster_id, key_id, *epoch),
            share.to_bytes().as_slice(),
        );
        let chains = serde_json::to_string(allowed_chain_ids).expect("numbers serialise");
        let at = now();
        tx.execute(
            "INSERT INTO keys
                 (key_id, public_key, share_ciphertext, allowed_chain_ids, created_at, status, sealed,
                  public_package, epoch, epoch_changed_at, hollow)
             VALUES (?1, ?2, ?3, ?4, ?5, 'active', 1, ?6, ?7, ?5, 1)",
            params![
                key_id,
                share.public_key().as_bytes().as_slice(),
                ciphertext,
                chains,
                at,
                package.to_bytes(),
                *epoch as i64
            ],
        )?;
        tx.commit()?;
        self.shares.invalidate(key_id);
        Ok(true)
    }
}
