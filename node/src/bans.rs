//! The peers this node refuses to run sessions with. dkls23 demands a ban when a counterparty
//! fails a multiplication (OT) consistency check: the reused OT state leaks a little each time,
//! and continuing to sign with that party could let it extract the key. Only this node's own
//! evidence sets a ban (the accusation cannot be verified by anyone else: sealed messages are
//! deniable), it is keyed by the peer's identity rather than its index, it is written to the
//! store before the session that caught the cheat answers, and nothing the coordinator sends
//! can lift it.

use std::collections::BTreeMap;
use std::sync::RwLock;

use shardsign_seal::PublicIdentity;
use shardsign_tss::PartyId;

use crate::error::NodeError;
pub use crate::store::Ban;
use crate::store::Store;

pub struct Bans {
    me: PartyId,
    by_identity: RwLock<BTreeMap<[u8; 32], Ban>>,
}

impl Bans {
    /// The bans in the store.
    pub fn load(me: PartyId, store: &Store) -> Result<Bans, NodeError> {
        let by_identity = store
            .bans()?
            .into_iter()
            .map(|ban| (ban.peer_signing_key, ban))
            .collect();
        Ok(Bans {
            me,
            by_identity: RwLock::new(by_identity),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<[u8; 32], Ban>> {
        self.by_identity
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn refusal(&self, peer: PartyId, ban: &Ban) -> NodeError {
        NodeError::Banned {
            me: self.me,
            peer,
            reason: ban.reason.clone(),
            at_ms: ban.at_ms,
        }
    }

    /// Refuses a session with `peer` (whose identity is `identity`) if it is banned.
    pub fn check(&self, peer: PartyId, identity: &PublicIdentity) -> Result<(), NodeError> {
        match self.read().get(&identity.signing_key()) {
            Some(ban) => Err(self.refusal(peer, ban)),
            None => Ok(()),
        }
    }

    /// Refuses a session with all members (key generation) while any of them is banned.
    pub fn check_all<'a>(
        &self,
        members: impl IntoIterator<Item = (&'a PartyId, &'a PublicIdentity)>,
    ) -> Result<(), NodeError> {
        members
            .into_iter()
            .filter(|(party, _)| **party != self.me)
            .try_for_each(|(party, identity)| self.check(*party, identity))
    }

    /// Bans `peer` for `reason`: on disk first, then here. Returns the refusal to answer with.
    pub fn ban(
        &self,
        store: &Store,
        peer: PartyId,
        identity: &PublicIdentity,
        reason: &str,
        at_ms: i64,
    ) -> Result<NodeError, NodeError> {
        let held = store.record_ban(&Ban {
            peer_signing_key: identity.signing_key(),
            node_id: peer.get(),
            reason: reason.to_string(),
            at_ms,
        })?;
        let refusal = self.refusal(peer, &held);
        self.by_identity
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(held.peer_signing_key, held);
        Ok(refusal)
    }

    /// Takes every ban in the store (after a restored node learned its peers' bans).
    pub fn reload(&self, store: &Store) -> Result<(), NodeError> {
        let loaded = store
            .bans()?
            .into_iter()
            .map(|ban| (ban.peer_signing_key, ban));
        self.by_identity
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .extend(loaded);
        Ok(())
    }

    pub fn list(&self) -> Vec<Ban> {
        self.read().values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use shardsign_seal::NodeSecret;
    use zeroize::Zeroizing;

    use super::*;
    use crate::kek::KekSource;

    #[test]
    fn a_banned_peer_is_refused_by_identity_with_who_why_and_when() {
        let dir = tempfile::tempdir().unwrap();
        let kek = KekSource::KeyFile(Zeroizing::new([3; 32]));
        let me = PartyId::new(1).unwrap();
        let (store, _) = Store::init(dir.path(), me, "c", &kek).unwrap();
        let bans = Bans::load(me, &store).unwrap();
        let two = PartyId::new(2).unwrap();
        let cheater = NodeSecret::generate().public();
        let replacement = NodeSecret::generate().public();
        bans.check(two, &cheater).unwrap();
        bans.ban(&store, two, &cheater, "OT consistency check failed", 1_000)
            .unwrap();
        let refusal = bans.check(two, &cheater).unwrap_err().to_string();
        assert!(
            refusal.starts_with(
                "node 1 has banned node 2 (OT consistency check failed at 1970-01-01 00:00:01 UTC)"
            ),
            "{refusal}"
        );
        // A replaced node 2 (another identity) is not covered; a reload keeps the ban.
        bans.check(two, &replacement).unwrap();
        let reloaded = Bans::load(me, &store).unwrap();
        assert!(reloaded.check(two, &cheater).is_err());
        assert_eq!(reloaded.list().len(), 1);
    }
}
