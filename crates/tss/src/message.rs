//! The engine's message: who sent it, to whom, for which session, protocol and round, and an
//! opaque payload. Encoded as a fixed 41-byte header (version first) and the payload.

use crate::error::TssError;
use crate::ids::{PartyId, SessionId};

/// Largest encoded message accepted, checked before anything is parsed. The largest real message
/// (a signing round-1 message, ~95 KB) fits with room to spare.
pub const MAX_MESSAGE_LEN: usize = 256 * 1024;

const VERSION: u8 = 1;
const HEADER_LEN: usize = 1 + 1 + 1 + 1 + 1 + 32 + 4;

/// The protocol a message belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Dkg,
    Sign,
    /// Share refresh: new shares of the same key (the old ones stop working with the new ones).
    Refresh,
}

impl Protocol {
    /// The protocol's byte on the wire (messages, and the sealing context that binds them).
    pub fn to_byte(self) -> u8 {
        match self {
            Protocol::Dkg => 1,
            Protocol::Sign => 2,
            Protocol::Refresh => 3,
        }
    }

    /// A short stable name, for logs and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Dkg => "keygen",
            Protocol::Sign => "sign",
            Protocol::Refresh => "refresh",
        }
    }

    fn from_byte(byte: u8) -> Result<Self, TssError> {
        match byte {
            1 => Ok(Protocol::Dkg),
            3 => Ok(Protocol::Refresh),
            2 => Ok(Protocol::Sign),
            other => Err(TssError::MalformedMessage(format!(
                "unknown protocol {other}"
            ))),
        }
    }
}

/// Where a message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Recipient {
    /// To one party; its contents are secret to that party.
    Party(PartyId),
    /// The same contents to every other participant; all must see identical bytes.
    Broadcast,
}

/// One protocol message.
#[derive(Clone, PartialEq, Eq)]
pub struct Message {
    pub session_id: SessionId,
    pub protocol: Protocol,
    pub round: u8,
    pub from: PartyId,
    pub to: Recipient,
    pub payload: Vec<u8>,
}

// Payloads carry secret material (DKG polynomial evaluations, OT data): never print them.
impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message")
            .field("session_id", &self.session_id)
            .field("protocol", &self.protocol)
            .field("round", &self.round)
            .field("from", &self.from)
            .field("to", &self.to)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

// Payloads can carry secret protocol values; wipe them when the message goes away.
impl Drop for Message {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.payload);
    }
}

impl Message {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.payload.len());
        out.push(VERSION);
        out.push(self.protocol.to_byte());
        out.push(self.round);
        out.push(self.from.get());
        out.push(match self.to {
            Recipient::Party(party) => party.get(),
            Recipient::Broadcast => 0,
        });
        out.extend_from_slice(self.session_id.as_bytes());
        // Payloads are bounded far below 4 GiB by construction.
        out.extend_from_slice(&(self.payload.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.payload);
        out
    }

    /// Decodes one message; the size is checked before anything else.
    pub fn decode(bytes: &[u8]) -> Result<Self, TssError> {
        if bytes.len() > MAX_MESSAGE_LEN {
            return Err(TssError::MessageTooLarge {
                len: bytes.len(),
                max: MAX_MESSAGE_LEN,
            });
        }
        if bytes.len() < HEADER_LEN {
            return Err(TssError::MalformedMessage(format!(
                "{} bytes is shorter than the {HEADER_LEN}-byte header",
                bytes.len()
            )));
        }
        if bytes[0] != VERSION {
            return Err(TssError::UnsupportedVersion(bytes[0]));
        }
        let protocol = Protocol::from_byte(bytes[1])?;
        let round = bytes[2];
        let from = PartyId::new(bytes[3])?;
        let to = match bytes[4] {
            0 => Recipient::Broadcast,
            index => Recipient::Party(PartyId::new(index)?),
        };
        let mut session = [0u8; 32];
        session.copy_from_slice(&bytes[5..37]);
        let len = u32::from_be_bytes([bytes[37], bytes[38], bytes[39], bytes[40]]) as usize;
        if bytes.len() - HEADER_LEN != len {
            return Err(TssError::MalformedMessage(format!(
                "payload length field says {len} bytes, {} present",
                bytes.len() - HEADER_LEN
            )));
        }
        Ok(Message {
            session_id: SessionId(session),
            protocol,
            round,
            from,
            to,
            payload: bytes[HEADER_LEN..].to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Message {
        Message {
            session_id: SessionId([7; 32]),
            protocol: Protocol::Sign,
            round: 2,
            from: PartyId::new(1).unwrap(),
            to: Recipient::Party(PartyId::new(3).unwrap()),
            payload: vec![1, 2, 3],
        }
    }

    #[test]
    fn round_trips() {
        let message = sample();
        assert_eq!(Message::decode(&message.encode()).unwrap(), message);
        let mut broadcast = sample();
        broadcast.to = Recipient::Broadcast;
        assert_eq!(Message::decode(&broadcast.encode()).unwrap(), broadcast);
    }

    #[test]
    fn truncated_extended_oversized_and_unknown_version_are_refused() {
        let bytes = sample().encode();
        assert!(matches!(
            Message::decode(&bytes[..bytes.len() - 1]),
            Err(TssError::MalformedMessage(_))
        ));
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            Message::decode(&longer),
            Err(TssError::MalformedMessage(_))
        ));
        assert!(matches!(
            Message::decode(&bytes[..10]),
            Err(TssError::MalformedMessage(_))
        ));
        let mut version = bytes.clone();
        version[0] = 9;
        assert_eq!(
            Message::decode(&version),
            Err(TssError::UnsupportedVersion(9))
        );
        let huge = vec![1u8; MAX_MESSAGE_LEN + 1];
        assert!(matches!(
            Message::decode(&huge),
            Err(TssError::MessageTooLarge { .. })
        ));
        let mut party = bytes;
        party[3] = 4;
        assert_eq!(Message::decode(&party), Err(TssError::InvalidParty(4)));
    }

    #[test]
    fn debug_does_not_print_the_payload() {
        let mut message = sample();
        message.payload = vec![0xAB; 4];
        let printed = format!("{message:?}");
        assert!(!printed.contains("171"), "{printed}");
        assert!(printed.contains("payload_len: 4"));
    }
}
