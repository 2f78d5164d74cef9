//! Share repair (the engine's `repair_term` / `repair_assemble`): the two surviving parties (the
//! helpers) each compute a masked term for the party whose share is lost (the target); only the
//! sum of both terms is the target's share, so neither helper learns it. The target checks the
//! sum against the group's public key package and gets a **hollow** share: right share, right
//! key, but no multiplication (OT) state, so it cannot sign until a complete refresh across all
//! three parties gives every party new shares and new OT state.
//!
//! What this layer does not do (it is the caller's, see the engine's preconditions): decide who
//! may be the target (a term hands the target a share, so naming the target is a membership
//! change), carry terms confidentially (seal them to the target's identity), and run the
//! complete refresh right after. The engine's own checks that this layer adds to: a hollow share
//! refuses to sign and refuses the fast refresh (which needs OT state), and the repair id must
//! be the same non-empty value at both helpers.

use zeroize::Zeroizing;

use crate::codec;
use crate::error::TssError;
use crate::ids::{PARTIES, PartyId, THRESHOLD};
use crate::package::PublicPackage;
use crate::share::KeyShare;

const TERM_VERSION: u8 = 1;
/// Largest encoded repair term accepted (a scalar, a point, ids, a chain code: ~150 bytes).
pub const MAX_TERM_LEN: usize = 1024;

/// The helpers for repairing `target`: the two other parties, in order.
pub fn helpers_for(target: PartyId) -> [PartyId; 2] {
    let mut others = PARTIES.into_iter().filter(|p| *p != target);
    [
        others.next().expect("three parties"),
        others.next().expect("three parties"),
    ]
}

impl KeyShare {
    /// This helper's term for rebuilding `target`'s share under `repair_id` (the same at both
    /// helpers). Secret: it must reach the target only.
    pub fn repair_term(
        &self,
        target: PartyId,
        repair_id: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, TssError> {
        if self.is_hollow() {
            return Err(TssError::InvalidShare(
                "a share rebuilt by repair helps no repair until a complete refresh".into(),
            ));
        }
        let helpers = helpers_for(target).map(PartyId::to_dkls);
        let term = self
            .party()
            .repair_term(&helpers, target.to_dkls(), repair_id)
            .map_err(|e| TssError::InvalidShare(format!("repair term refused: {e:?}")))?;
        // Serialised straight into a wiped buffer of the maximum size (as shares are): no
        // growing vector leaves a copy of the secret term behind.
        let mut out = Zeroizing::new(vec![0u8; MAX_TERM_LEN]);
        out[0] = TERM_VERSION;
        let used = postcard::to_slice(&term, &mut out[1..])
            .map_err(|_| TssError::InvalidShare("a repair term does not fit its buffer".into()))?
            .len();
        out.truncate(1 + used);
        Ok(out)
    }
}

/// The target's hollow share from both helpers' terms, checked against `package` (the sum must
/// be the verifying share `package` names for `target`).
pub fn repair_assemble(
    package: &PublicPackage,
    target: PartyId,
    terms: &[&[u8]],
) -> Result<KeyShare, TssError> {
    if terms.len() != usize::from(THRESHOLD) {
        return Err(TssError::InvalidShare(format!(
            "repair needs the terms of both helpers, got {}",
            terms.len()
        )));
    }
    let decoded = terms
        .iter()
        .map(|bytes| {
            if bytes.len() > MAX_TERM_LEN {
                return Err(TssError::InvalidShare(format!(
                    "a repair term of {} bytes is over the limit of {MAX_TERM_LEN}",
                    bytes.len()
                )));
            }
            match bytes.split_first() {
                Some((&TERM_VERSION, rest)) => codec::decode(rest).map_err(|_| {
                    TssError::InvalidShare("a repair term is truncated or corrupt".into())
                }),
                _ => Err(TssError::InvalidShare(
                    "a repair term of an unknown version".into(),
                )),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    let party = dkls23::protocols::repair::repair_assemble(
        package.inner(),
        target.to_dkls(),
        &decoded,
        |_| String::new(),
    )
    .map_err(|e| TssError::InvalidShare(format!("repair refused: {e:?}")))?;
    let share = KeyShare::from_party(party)?;
    if !share.is_hollow() || !package.matches(&share) {
        return Err(TssError::InvalidShare(
            "the repaired share does not match the key's package".into(),
        ));
    }
    Ok(share)
}
