//! Agreeing on the public key package of a key made before the nodes kept one. Refresh and
//! share repair check against the package, so a key without one cannot be refreshed or repaired.
//!
//! Each node publishes only what it alone can vouch for: its own verifying share (the public
//! point of its own share), signed with its identity key. A node keeps the package built from
//! the three published points only when every signature verifies, its own entry is its own
//! point, and every pair of points interpolates to the key's public key. A coordinator or a
//! lying node can therefore neither invent a point for another node nor slip in a stale one: no
//! package is ever rebuilt from points a node did not publish itself.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};
use shardsign_seal::{Context, open_broadcast, sign_broadcast};
use shardsign_tss::{PARTIES, PublicPackage};

use super::Node;
use crate::error::NodeError;

/// The sealing context's protocol byte for package agreement (no engine protocol uses it).
const AGREEMENT_PROTOCOL: u8 = 0x41;
/// A signed verifying share: version byte, 33-byte point, 33-byte key, 64-byte signature.
pub const MAX_SIGNED_SHARE_LEN: usize = 1 + 33 + 33 + 64;

/// What a published share is bound to: the key and the epoch of the share.
fn agreement_id(key_id: &str, epoch: u64) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(b"shardsign-package-agreement-v1\0");
    hasher.update(key_id.as_bytes());
    hasher.update([0]);
    hasher.update(epoch.to_be_bytes());
    hasher.finalize().into()
}

fn context<'a>(cluster_id: &'a str, id: &'a [u8; 32], from: u8) -> Context<'a> {
    Context {
        cluster_id,
        protocol: AGREEMENT_PROTOCOL,
        session_id: id,
        round: 1,
        from,
        to: 0,
        binding: id,
    }
}

/// The outcome on this node: its own signed share (public), and whether it keeps a package now.
#[derive(Debug)]
pub struct Agreement {
    pub own: Vec<u8>,
    pub stored: bool,
}

impl Node {
    /// This node's side of the agreement on `key_id`'s package at `epoch`: without `published`
    /// it only signs its own verifying share; with every node's signed share it checks them and
    /// keeps the package they make.
    pub fn agree_package(
        &self,
        key_id: &str,
        epoch: u64,
        published: &[(u8, Vec<u8>)],
    ) -> Result<Agreement, NodeError> {
        super::refresh::key_id_field(key_id)?;
        let loaded = self.store.load_key_at(key_id, epoch)?;
        let public_key = loaded.share.public_key();
        let mut payload = Vec::with_capacity(66);
        payload.extend_from_slice(&loaded.share.verifying_share_bytes());
        payload.extend_from_slice(public_key.as_bytes());
        let id = agreement_id(key_id, epoch);
        let own = sign_broadcast(
            &self.secret,
            &context(&self.cluster_id, &id, self.me.get()),
            &payload,
        );
        let kept = self.store.public_package(key_id)?;
        if published.is_empty() || kept.is_some() {
            return Ok(Agreement {
                own,
                stored: kept.is_some(),
            });
        }
        let mut points = BTreeMap::new();
        let members = self.members();
        for party in PARTIES {
            let signed = match published
                .iter()
                .filter(|(node, _)| *node == party.get())
                .collect::<Vec<_>>()
                .as_slice()
            {
                [(_, signed)] => signed,
                [] => {
                    return Err(refused(format!(
                        "node {party}'s verifying share is missing"
                    )));
                }
                _ => {
                    return Err(refused(format!(
                        "node {party}'s verifying share is given twice"
                    )));
                }
            };
            let opened = open_broadcast(
                &members[&party],
                &context(&self.cluster_id, &id, party.get()),
                signed,
            )
            .map_err(|_| {
                refused(format!(
                    "node {party}'s verifying share is not signed by node {party} for key `{key_id}` at epoch {epoch}"
                ))
            })?;
            let (point, key) = opened
                .split_at_checked(33)
                .filter(|(_, key)| key.len() == 33)
                .ok_or_else(|| refused(format!("node {party}'s verifying share is malformed")))?;
            if key != public_key.as_bytes() {
                return Err(refused(format!(
                    "node {party} published a verifying share of another key"
                )));
            }
            if party == self.me && point != loaded.share.verifying_share_bytes().as_slice() {
                return Err(refused(format!(
                    "the share given as this node's (node {party}) is not its own"
                )));
            }
            points.insert(
                party,
                <[u8; 33]>::try_from(point).expect("split at 33 bytes"),
            );
        }
        let package = PublicPackage::from_verifying_shares(&public_key, &points)
            .map_err(|e| refused(e.to_string()))?;
        if !package.matches(&loaded.share) {
            return Err(refused(
                "the agreed package does not name this node's share".into(),
            ));
        }
        self.store.set_public_package(key_id, epoch, &package)?;
        tracing::info!(
            key_id,
            epoch,
            "public key package agreed from the three nodes' signed verifying shares"
        );
        Ok(Agreement { own, stored: true })
    }
}

fn refused(reason: String) -> NodeError {
    NodeError::invalid("shares", reason)
}
