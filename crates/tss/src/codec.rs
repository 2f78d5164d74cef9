//! The stable payload encoding (postcard, whose wire format is frozen at 1.0) with bounds checked
//! before decoding and trailing bytes refused.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::TssError;
use crate::ids::PartyId;

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serialising our own in-memory protocol values cannot fail: postcard fails only on
    // unsupported serde features (none are used by dkls23's message types) or on a full buffer.
    postcard::to_allocvec(value).expect("postcard encodes dkls23 messages")
}

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let (value, rest) = postcard::take_from_bytes::<T>(bytes).map_err(|e| e.to_string())?;
    if !rest.is_empty() {
        return Err(format!("{} trailing bytes", rest.len()));
    }
    Ok(value)
}

/// Decodes a payload from `from`; a failure blames the sender.
pub(crate) fn decode_from<T: DeserializeOwned>(
    from: PartyId,
    payload: &[u8],
) -> Result<T, TssError> {
    decode(payload).map_err(|reason| TssError::MalformedPayload { from, reason })
}

/// The engine message inside an envelope names other parties than the envelope does.
pub(crate) fn impersonation(from: PartyId) -> TssError {
    TssError::MalformedPayload {
        from,
        reason: "the engine message names other parties than its envelope".into(),
    }
}

/// The party an engine message is for.
pub(crate) fn recipient_of(
    parties: &dkls23::protocols::PartiesMessage,
) -> Result<PartyId, TssError> {
    PartyId::from_dkls(parties.receiver).ok_or_else(|| TssError::Protocol {
        culprit: None,
        ban: false,
        reason: "engine addressed a message outside the cluster".into(),
    })
}

/// The sender and receiver inside an engine message must match the envelope's (`from` to `me`).
pub(crate) fn check_parties(
    me: PartyId,
    from: PartyId,
    parties: &dkls23::protocols::PartiesMessage,
) -> Result<(), TssError> {
    if parties.sender != from.to_dkls() || parties.receiver != me.to_dkls() {
        return Err(impersonation(from));
    }
    Ok(())
}
