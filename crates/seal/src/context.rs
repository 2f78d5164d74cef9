//! What an envelope is bound to. Everything here goes into the AEAD's associated data or the
//! broadcast signature, so an envelope only opens in the exact context it was made for.

/// The context of one envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context<'a> {
    pub cluster_id: &'a str,
    /// 1 = key generation, 2 = signing (the engine's protocol byte).
    pub protocol: u8,
    pub session_id: &'a [u8; 32],
    pub round: u8,
    pub from: u8,
    /// 0 for a broadcast.
    pub to: u8,
    /// A hash of what the session is about (key id, signers, message hash), so that two nodes
    /// given different requests under one session id cannot talk to each other.
    pub binding: &'a [u8; 32],
}

impl Context<'_> {
    /// The canonical encoding: a domain tag and fixed-width or length-prefixed fields.
    pub(crate) fn encode(&self, domain: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(domain.len() + self.cluster_id.len() + 80);
        out.extend_from_slice(domain);
        out.extend_from_slice(&(self.cluster_id.len() as u32).to_be_bytes());
        out.extend_from_slice(self.cluster_id.as_bytes());
        out.push(self.protocol);
        out.extend_from_slice(self.session_id);
        out.push(self.round);
        out.push(self.from);
        out.push(self.to);
        out.extend_from_slice(self.binding);
        out
    }
}
