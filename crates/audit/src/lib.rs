//! The audit log's records and their hash chain. Each record's hash covers its fields and the
//! previous record's hash, so editing, inserting or deleting a record breaks every link after it;
//! `verify` walks the chain and names the first broken record. Truncating the tail leaves a valid
//! shorter chain: the head hash is reported so operators can anchor it elsewhere.
//!
//! Records never hold a secret: API keys appear by their public id only. Old records can be
//! archived as a [`segment`] that verifies on its own and links to the live chain.

pub mod segment;

use sha2::{Digest, Sha256};

/// One record's content, before it is chained.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuditEntry {
    pub at_ms: i64,
    pub api_key_id: String,
    pub operation: String,
    pub key_id: String,
    pub decision: String,
    pub detail: String,
    pub tx_hash: Vec<u8>,
    pub request_id: String,
    pub peer: String,
}

/// The hash before the first record.
pub const GENESIS: [u8; 32] = [0; 32];

/// Longest detail kept (a refusal message; longer ones are cut).
pub const MAX_DETAIL_LEN: usize = 1024;
/// Longest id kept (request id, key id, API key id, operation, peer; longer ones are cut).
pub const MAX_ID_LEN: usize = 160;

/// The chained hash of record `seq`.
pub fn chain_hash(seq: u64, entry: &AuditEntry, prev: &[u8; 32]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(b"shardsign-audit-v1\0");
    hasher.update(seq.to_be_bytes());
    hasher.update(entry.at_ms.to_be_bytes());
    for field in [
        entry.api_key_id.as_bytes(),
        entry.operation.as_bytes(),
        entry.key_id.as_bytes(),
        entry.decision.as_bytes(),
        entry.detail.as_bytes(),
        entry.tx_hash.as_slice(),
        entry.request_id.as_bytes(),
        entry.peer.as_bytes(),
    ] {
        // Length-prefixed, so moving bytes between fields changes the hash.
        hasher.update((field.len() as u64).to_be_bytes());
        hasher.update(field);
    }
    hasher.update(prev);
    hasher.finalize().into()
}

/// A valid chain of `n` records (tests of this crate).
#[cfg(test)]
pub(crate) fn test_chain(n: u64) -> Vec<StoredRecord> {
    let mut prev = GENESIS;
    (1..=n)
        .map(|seq| {
            let entry = AuditEntry {
                at_ms: seq as i64 * 1000,
                api_key_id: "ak_1".into(),
                operation: "sign_transaction".into(),
                decision: "allowed".into(),
                tx_hash: vec![seq as u8; 32],
                request_id: format!("req-{seq}"),
                ..Default::default()
            };
            let hash = chain_hash(seq, &entry, &prev);
            let record = StoredRecord {
                seq,
                entry,
                prev_hash: prev.to_vec(),
                hash: hash.to_vec(),
            };
            prev = hash;
            record
        })
        .collect()
}

/// What `verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditReport {
    pub records: u64,
    /// The first record that does not match, and why.
    pub broken: Option<(u64, String)>,
    pub head_hash: [u8; 32],
}

/// A stored record: its sequence number, content and the two stored hashes.
pub struct StoredRecord {
    pub seq: u64,
    pub entry: AuditEntry,
    pub prev_hash: Vec<u8>,
    pub hash: Vec<u8>,
}

/// Walks records in order; stops at the first broken one.
pub fn verify(records: impl Iterator<Item = StoredRecord>) -> AuditReport {
    verify_continuing(0, GENESIS, records)
}

/// `verify` from a point already checked: `count` records ending in hash `prev`.
pub fn verify_continuing(
    mut count: u64,
    mut prev: [u8; 32],
    records: impl Iterator<Item = StoredRecord>,
) -> AuditReport {
    for record in records {
        let expected_seq = count + 1;
        let problem = if record.seq != expected_seq {
            Some(format!(
                "record {expected_seq} is missing (next stored record is {})",
                record.seq
            ))
        } else if record.prev_hash != prev {
            Some(format!(
                "record {} does not link to record {}",
                record.seq, count
            ))
        } else if record.hash != chain_hash(record.seq, &record.entry, &prev) {
            Some(format!(
                "record {} was altered: its content does not match its hash",
                record.seq
            ))
        } else {
            None
        };
        if let Some(problem) = problem {
            return AuditReport {
                records: count,
                broken: Some((expected_seq.min(record.seq), problem)),
                head_hash: prev,
            };
        }
        prev = record.hash.as_slice().try_into().unwrap_or(GENESIS);
        count += 1;
    }
    AuditReport {
        records: count,
        broken: None,
        head_hash: prev,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_chain as chain;

    #[test]
    fn an_intact_chain_verifies_and_each_break_is_found() {
        let report = verify(chain(5).into_iter());
        assert_eq!((report.records, report.broken), (5, None));

        let mut edited = chain(5);
        edited[2].entry.decision = "refused".into();
        assert_eq!(verify(edited.into_iter()).broken.unwrap().0, 3);

        let mut removed = chain(5);
        removed.remove(1);
        assert_eq!(verify(removed.into_iter()).broken.unwrap().0, 2);

        let mut relinked = chain(5);
        relinked[3].prev_hash = vec![1; 32];
        assert_eq!(verify(relinked.into_iter()).broken.unwrap().0, 4);

        // Moving bytes between fields changes the hash.
        let a = AuditEntry {
            api_key_id: "ab".into(),
            operation: "c".into(),
            ..Default::default()
        };
        let b = AuditEntry {
            api_key_id: "a".into(),
            operation: "bc".into(),
            ..Default::default()
        };
        assert_ne!(chain_hash(1, &a, &GENESIS), chain_hash(1, &b, &GENESIS));
    }
}
