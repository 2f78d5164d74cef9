//! The signing request, defined once for the coordinator and the nodes: which key signs what.
//! A request validates itself when it is built (from the public API or the node protocol, see
//! [`proto`]), computes the hash a node signs, and exposes what policy rules inspect.
//!
//! Adding a payload kind is: a variant of [`Payload`] (its hash, encoding and decoding here),
//! its proto fields and conversions in [`proto`], and the rules that inspect it in
//! `shardsign-policy`.

mod error;
mod ids;
mod payload;
mod printable;
pub mod proto;
mod session;

pub use error::RequestError;
pub use ids::{InvalidKeyId, KeyId, MAX_KEY_ID_LEN, MAX_REQUEST_ID_LEN, RequestId};
pub use payload::{Payload, PayloadKind, TypedDataPayload};
pub use printable::{MAX_PRINTED_CHARS, Printable};
pub use session::{
    SESSION_ID_LEN, SESSION_ID_MAX_AGE_MS, SESSION_ID_MAX_AHEAD_MS, SESSION_ID_MEMORY_SECS,
    SessionIdError, check_session_id_time, new_session_id, session_id_time_ms, unix_now_ms,
};

/// A checked signing request: the key and what it is asked to sign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignRequest {
    pub key_id: KeyId,
    pub payload: Payload,
}

impl SignRequest {
    /// The 32-byte hash the nodes sign: each node recomputes it from the payload itself.
    pub fn signing_hash(&self) -> [u8; 32] {
        self.payload.signing_hash()
    }
}
