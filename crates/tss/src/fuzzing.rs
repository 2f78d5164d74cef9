//! Every engine payload type's decoder, for the fuzz targets only (feature `fuzzing`, which no
//! build of the workspace turns on). The live-protocol target runs a key generation per input
//! (about one per second when instrumented); this one decodes at full speed.

use dkls23::protocols::dkg::{
    BroadcastDerivationPhase2to4, BroadcastDerivationPhase3to4, ProofCommitment,
    TransmitInitMulPhase3to4, TransmitInitZeroSharePhase2to4, TransmitInitZeroSharePhase3to4,
};
use dkls23::protocols::refresh::{TransmitRefreshPhase2to4, TransmitRefreshPhase3to4};
use dkls23::protocols::repair::RepairTerm;
use dkls23::protocols::signing::{Broadcast3to4, TransmitPhase1to2, TransmitPhase2to3};
use k256::{Scalar, Secp256k1};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec;

/// How many payload kinds [`decode_payload`] knows.
pub const KINDS: u8 = 12;

/// Decodes `bytes` as payload kind `kind % KINDS` (0 fragment; 1-4 key generation rounds 2-3;
/// 5 refresh proof; 6-8 signing rounds 1-3; 9-10 fast refresh rounds 2-3; 11 repair term). Returns whether it decoded; what decodes re-encodes
/// to bytes that decode and re-encode the same (one reading of any accepted payload).
pub fn decode_payload(kind: u8, bytes: &[u8]) -> bool {
    match kind % KINDS {
        0 => round_trip::<Scalar>(bytes),
        1 => round_trip::<(ProofCommitment<Secp256k1>, BroadcastDerivationPhase2to4)>(bytes),
        2 => round_trip::<TransmitInitZeroSharePhase2to4>(bytes),
        3 => round_trip::<BroadcastDerivationPhase3to4>(bytes),
        4 => round_trip::<(
            TransmitInitZeroSharePhase3to4,
            TransmitInitMulPhase3to4<Secp256k1>,
        )>(bytes),
        5 => round_trip::<ProofCommitment<Secp256k1>>(bytes),
        6 => round_trip::<TransmitPhase1to2>(bytes),
        7 => round_trip::<TransmitPhase2to3<Secp256k1>>(bytes),
        8 => round_trip::<Broadcast3to4<Secp256k1>>(bytes),
        9 => round_trip::<TransmitRefreshPhase2to4>(bytes),
        10 => round_trip::<TransmitRefreshPhase3to4>(bytes),
        _ => round_trip::<RepairTerm<Secp256k1>>(bytes),
    }
}

fn round_trip<T: Serialize + DeserializeOwned>(bytes: &[u8]) -> bool {
    let Ok(value) = codec::decode::<T>(bytes) else {
        return false;
    };
    let first = codec::encode(&value);
    let again: T = codec::decode(&first).expect("an encoded payload decodes");
    assert_eq!(
        codec::encode(&again),
        first,
        "a payload re-encodes differently"
    );
    true
}
