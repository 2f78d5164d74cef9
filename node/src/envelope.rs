//! Between the engine's messages and the sealed envelopes the coordinator relays: every direct
//! message is encrypted for its recipient, every broadcast signed, each bound to the session's
//! context. Nothing opens in another session, round, direction or for another request.

use shardsign_proto::node::v1::Envelope;
use shardsign_seal::{
    Context, NodeSecret, OVERHEAD, PublicIdentity, open_broadcast, open_direct, seal_direct,
    sign_broadcast,
};
use shardsign_tss::{MAX_MESSAGE_LEN, Message, PartyId, Protocol, Recipient, SessionId};

use crate::error::NodeError;

/// Largest envelope body accepted, checked before any cryptography.
pub(crate) const MAX_BODY_LEN: usize = MAX_MESSAGE_LEN + OVERHEAD;

/// What every envelope of one session is bound to.
pub(crate) struct SessionContext<'a> {
    pub cluster_id: &'a str,
    pub protocol: Protocol,
    pub session_id: SessionId,
    pub binding: [u8; 32],
    pub me: PartyId,
    pub secret: &'a NodeSecret,
    pub members: std::sync::Arc<std::collections::BTreeMap<PartyId, PublicIdentity>>,
}

impl SessionContext<'_> {
    fn context(&self, round: u8, from: u8, to: u8) -> Context<'_> {
        Context {
            cluster_id: self.cluster_id,
            protocol: self.protocol.to_byte(),
            session_id: self.session_id.as_bytes(),
            round,
            from,
            to,
            binding: &self.binding,
        }
    }

    fn member(&self, party: PartyId) -> Result<&PublicIdentity, NodeError> {
        self.members
            .get(&party)
            .ok_or_else(|| NodeError::Security(format!("node {party} is not a cluster member")))
    }

    /// Seals an outgoing engine message.
    pub(crate) fn seal(&self, message: &Message) -> Result<Envelope, NodeError> {
        let (to, body) = match message.to {
            Recipient::Party(to) => {
                let context = self.context(message.round, self.me.get(), to.get());
                (
                    to.get(),
                    seal_direct(self.secret, self.member(to)?, &context, &message.payload),
                )
            }
            Recipient::Broadcast => {
                let context = self.context(message.round, self.me.get(), 0);
                (0, sign_broadcast(self.secret, &context, &message.payload))
            }
        };
        Ok(Envelope {
            from: u32::from(self.me.get()),
            to: u32::from(to),
            round: u32::from(message.round),
            body,
        })
    }

    /// Signs a node-level broadcast (the key-generation confirmation).
    pub(crate) fn sign_broadcast(&self, round: u8, payload: &[u8]) -> Envelope {
        let context = self.context(round, self.me.get(), 0);
        Envelope {
            from: u32::from(self.me.get()),
            to: 0,
            round: u32::from(round),
            body: sign_broadcast(self.secret, &context, payload),
        }
    }

    /// Checks the envelope's addressing and opens it. Returns the sender, the recipient and the
    /// plaintext payload.
    pub(crate) fn open(
        &self,
        envelope: &Envelope,
        max_round: u8,
    ) -> Result<(PartyId, Recipient, u8, Vec<u8>), NodeError> {
        if envelope.body.len() > MAX_BODY_LEN {
            return Err(NodeError::Security(format!(
                "envelope of {} bytes is over the limit of {MAX_BODY_LEN}",
                envelope.body.len()
            )));
        }
        let from = u8::try_from(envelope.from)
            .ok()
            .and_then(|f| PartyId::new(f).ok())
            .ok_or_else(|| {
                NodeError::Security(format!(
                    "envelope names sender {}, not a cluster member",
                    envelope.from
                ))
            })?;
        if from == self.me {
            return Err(NodeError::Security(
                "envelope claims to come from this node".into(),
            ));
        }
        let round = u8::try_from(envelope.round)
            .ok()
            .filter(|r| (1..=max_round).contains(r))
            .ok_or_else(|| {
                NodeError::Security(format!(
                    "envelope names round {}, outside 1..={max_round}",
                    envelope.round
                ))
            })?;
        let sender = self.member(from)?;
        match envelope.to {
            0 => {
                let context = self.context(round, from.get(), 0);
                let payload = open_broadcast(sender, &context, &envelope.body).map_err(|e| {
                    NodeError::Security(format!("broadcast from node {from}, round {round}: {e}"))
                })?;
                Ok((from, Recipient::Broadcast, round, payload.to_vec()))
            }
            to if to == u32::from(self.me.get()) => {
                let context = self.context(round, from.get(), self.me.get());
                let payload =
                    open_direct(self.secret, sender, &context, &envelope.body).map_err(|e| {
                        NodeError::Security(format!(
                            "envelope from node {from}, round {round}: {e}"
                        ))
                    })?;
                Ok((from, Recipient::Party(self.me), round, payload.to_vec()))
            }
            other => Err(NodeError::Security(format!(
                "envelope from node {from} is addressed to node {other}, not to this node"
            ))),
        }
    }
}
