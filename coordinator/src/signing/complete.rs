//! The end of every signing request: its audit row and, for a fresh signature, its idempotency
//! record, made durable in one group commit (one fsync shared with every request waiting).
//! A failed write fails the request: no signature leaves without its record.

use std::time::Instant;

use crate::access::auth::Caller;
use crate::audit::{AuditEntry, Decision};
use crate::error::CoordError;
use crate::metrics::CoordinatorMetrics;
use crate::registry::{IdempotencyRecord, Registry};
use crate::signing::admission::Admitted;

/// A signing response before it is made durable: the hash the audit row names, and for a fresh
/// signature the idempotency record to store and the admission to keep once stored (a replayed
/// response was stored before).
pub struct Signed<'a, T> {
    evidence: Vec<u8>,
    value: T,
    fresh: Option<(IdempotencyRecord, Admitted<'a>)>,
}

impl<'a, T> Signed<'a, T> {
    pub fn replayed(evidence: Vec<u8>, value: T) -> Self {
        Signed {
            evidence,
            value,
            fresh: None,
        }
    }

    pub fn fresh(
        evidence: Vec<u8>,
        value: T,
        record: IdempotencyRecord,
        admitted: Admitted<'a>,
    ) -> Self {
        Signed {
            evidence,
            value,
            fresh: Some((record, admitted)),
        }
    }
}

/// Writes the outcome's audit row (and idempotency record) and returns what the caller gets.
pub async fn complete<T: prost::Message + Default>(
    registry: &Registry,
    metrics: &CoordinatorMetrics,
    caller: &Caller,
    operation: &'static str,
    key_id: &str,
    request_id: &str,
    outcome: Result<Signed<'_, T>, CoordError>,
) -> Result<T, CoordError> {
    let (decision, detail, tx_hash) = match &outcome {
        Ok(signed) => (Decision::Allowed, String::new(), signed.evidence.clone()),
        Err(error) => (Decision::of(error), error.to_string(), Vec::new()),
    };
    let entry = caller.audit_entry(AuditEntry {
        operation: operation.to_string(),
        key_id: key_id.to_string(),
        decision: decision.as_str().to_string(),
        detail,
        tx_hash,
        request_id: request_id.to_string(),
        ..Default::default()
    });
    let (outcome, record) = match outcome {
        Ok(Signed {
            value,
            fresh: Some((record, admitted)),
            ..
        }) => (Ok((value, Some(admitted))), Some(record)),
        Ok(Signed { value, .. }) => (Ok((value, None)), None),
        Err(error) => (Err(error), None),
    };
    // A fresh signature keeps its spend reservations in the same write as its record.
    let keep = match &outcome {
        Ok((_, Some(admitted))) => admitted.reservations().to_vec(),
        _ => Vec::new(),
    };
    let writing = Instant::now();
    let written = registry.complete_signing(entry, record, keep).wait().await;
    tracing::debug!(
        stage = "audit",
        micros = writing.elapsed().as_micros() as u64,
        "timing"
    );
    // One result: the response to return instead of ours (if any), or why there is none
    // (the write failed, or the request id was reused for another request).
    let written = written.and_then(|completed| completed.earlier_response);
    let decision_name = match (&written, decision) {
        (Err(_), Decision::Allowed) => Decision::Failed.as_str(),
        _ => decision.as_str(),
    };
    metrics.signed(operation, decision_name, caller.started.elapsed());
    match (outcome, written) {
        (Ok((value, admitted)), Ok(earlier)) => {
            if let Some(admitted) = admitted {
                admitted.commit();
            }
            match earlier {
                // A concurrent call with the same request id stored its response first.
                Some(bytes) => T::decode(bytes.as_slice())
                    .map_err(|_| CoordError::config("registry", "a stored response is unreadable")),
                None => Ok(value),
            }
        }
        (Ok(_), Err(error @ CoordError::RequestIdReused(_))) => Err(error),
        (Ok(_), Err(error)) => {
            tracing::error!(%error, "audit write failed; the signature is withheld");
            Err(error)
        }
        (Err(error), Err(audit_error)) => {
            tracing::error!(error = %audit_error, "audit write failed for a refused or failed request");
            Err(error)
        }
        (Err(error), Ok(_)) => Err(error),
    }
}
