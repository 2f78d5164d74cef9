//! Identifiers with meaning: party indices and session ids are never interchangeable.

use std::fmt;

use crate::error::TssError;

/// Parties that must sign together.
pub const THRESHOLD: u8 = 2;

/// A signer's index in the 2-of-3 cluster: 1, 2 or 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartyId(u8);

/// The three parties of a cluster.
pub const PARTIES: [PartyId; 3] = [PartyId(1), PartyId(2), PartyId(3)];

impl PartyId {
    pub fn new(index: u8) -> Result<Self, TssError> {
        match index {
            1..=3 => Ok(PartyId(index)),
            _ => Err(TssError::InvalidParty(index)),
        }
    }

    pub fn get(self) -> u8 {
        self.0
    }

    pub(crate) fn to_dkls(self) -> dkls23::protocols::PartyIndex {
        // 1..=3 is always a valid dkls23 index.
        dkls23::protocols::PartyIndex::new(self.0).expect("party ids are 1..=3")
    }

    pub(crate) fn from_dkls(index: dkls23::protocols::PartyIndex) -> Option<Self> {
        PartyId::new(index.as_u8()).ok()
    }
}

impl fmt::Display for PartyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A 32-byte session id. The caller makes it fresh (random) for every session; all participants
/// of one session use the same value.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionId(pub [u8; 32]);

impl SessionId {
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({self})")
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in &self.0[..8] {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}
