//! The audit log's storage: append under the connection lock (so the chain has one order),
//! read back for verification and listing.

use rusqlite::{Connection, OptionalExtension, params};

use super::Registry;
use crate::audit::{self, AuditEntry, AuditReport, GENESIS, StoredRecord};
use crate::error::CoordError;

const COLUMNS: &str = "seq, at_ms, api_key_id, operation, key_id, decision, detail, tx_hash, request_id, peer, prev_hash, hash";

fn read_record(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredRecord> {
    Ok(StoredRecord {
        seq: row.get::<_, i64>(0)? as u64,
        entry: AuditEntry {
            at_ms: row.get(1)?,
            api_key_id: row.get(2)?,
            operation: row.get(3)?,
            key_id: row.get(4)?,
            decision: row.get(5)?,
            detail: row.get(6)?,
            tx_hash: row.get(7)?,
            request_id: row.get(8)?,
            peer: row.get(9)?,
        },
        prev_hash: row.get(10)?,
        hash: row.get(11)?,
    })
}

impl Registry {
    /// Appends a record to the chain in its own transaction; returns its sequence number.
    pub fn append_audit(&self, entry: AuditEntry) -> Result<u64, CoordError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let seq = append(&tx, entry)?;
        tx.commit()?;
        Ok(seq)
    }
}

/// Caps every caller-supplied field at a fixed length before it is stored (the audit log is never
/// deleted, so a refused request must not be able to write much into it), with control characters
/// escaped (a terminal showing `shardsign audit list` must not run a caller's escape sequences).
fn bound_fields(entry: &mut AuditEntry) {
    for field in [
        &mut entry.detail,
        &mut entry.request_id,
        &mut entry.key_id,
        &mut entry.api_key_id,
        &mut entry.operation,
        &mut entry.peer,
    ] {
        escape_controls(field);
    }
    cap(&mut entry.detail, audit::MAX_DETAIL_LEN);
    cap(&mut entry.request_id, audit::MAX_ID_LEN);
    cap(&mut entry.key_id, audit::MAX_ID_LEN);
    cap(&mut entry.api_key_id, audit::MAX_ID_LEN);
    cap(&mut entry.operation, audit::MAX_ID_LEN);
    cap(&mut entry.peer, audit::MAX_ID_LEN);
}

/// Replaces control characters with their escapes (`\n`, `\u{1b}`); other text is kept.
fn escape_controls(text: &mut String) {
    if text.chars().any(char::is_control) {
        *text = text
            .chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_debug().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect();
    }
}

/// Cuts `text` to at most `max` bytes (on a character boundary), marking the cut.
fn cap(text: &mut String, max: usize) {
    if text.len() <= max {
        return;
    }
    let mut cut = max.saturating_sub(3);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
    text.push('…');
}

/// Appends a record to the chain within the caller's transaction (which keeps the chain in one
/// order: the connection is held for the whole transaction).
pub(super) fn append(tx: &Connection, mut entry: AuditEntry) -> Result<u64, CoordError> {
    bound_fields(&mut entry);
    let last: Option<(i64, Vec<u8>)> = tx
        .query_row(
            "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let (seq, prev) = match last {
        Some((seq, hash)) => (
            seq as u64 + 1,
            <[u8; 32]>::try_from(hash.as_slice()).unwrap_or(GENESIS),
        ),
        None => (1, GENESIS),
    };
    let hash = audit::chain_hash(seq, &entry, &prev);
    tx.execute(
        &format!("INSERT INTO audit ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"),
        params![
            seq as i64,
            entry.at_ms,
            entry.api_key_id,
            entry.operation,
            entry.key_id,
            entry.decision,
            entry.detail,
            entry.tx_hash,
            entry.request_id,
            entry.peer,
            prev.as_slice(),
            hash.as_slice(),
        ],
    )?;
    Ok(seq)
}

impl Registry {
    /// Walks the whole chain.
    pub fn verify_audit(&self) -> Result<AuditReport, CoordError> {
        let conn = self.conn();
        let mut statement = conn.prepare(&format!("SELECT {COLUMNS} FROM audit ORDER BY seq"))?;
        let mut rows = statement.query([])?;
        let mut records = Vec::new();
        // Stream in chunks so a long log is not held in memory at once.
        let mut report: Option<AuditReport> = None;
        let mut offset_records = 0u64;
        let mut prev_hash = GENESIS;
        loop {
            records.clear();
            while records.len() < 10_000 {
                match rows.next()? {
                    Some(row) => records.push(read_record(row)?),
                    None => break,
                }
            }
            if records.is_empty() {
                break;
            }
            // Re-base the chunk on the previous one's head.
            let chunk = audit::verify_continuing(offset_records, prev_hash, records.drain(..));
            offset_records = chunk.records;
            prev_hash = chunk.head_hash;
            if chunk.broken.is_some() {
                report = Some(chunk);
                break;
            }
        }
        Ok(report.unwrap_or(AuditReport {
            records: offset_records,
            broken: None,
            head_hash: prev_hash,
        }))
    }

    pub fn list_audit(&self, after_seq: u64, limit: u32) -> Result<Vec<StoredRecord>, CoordError> {
        let conn = self.conn();
        let mut statement = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM audit WHERE seq > ?1 ORDER BY seq LIMIT ?2"
        ))?;
        let rows = statement.query_map(params![after_seq as i64, limit], read_record)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_supplied_fields_are_capped_before_they_are_stored() {
        let mut entry = AuditEntry {
            request_id: "r".repeat(200_000),
            key_id: "é".repeat(1000),
            detail: "d".repeat(10_000),
            peer: "p".repeat(500),
            ..Default::default()
        };
        bound_fields(&mut entry);
        assert!(entry.request_id.len() <= audit::MAX_ID_LEN && entry.request_id.ends_with('…'));
        assert!(entry.key_id.len() <= audit::MAX_ID_LEN && entry.key_id.starts_with('é'));
        assert!(entry.detail.len() <= audit::MAX_DETAIL_LEN);
        assert!(entry.peer.len() <= audit::MAX_ID_LEN);
        let mut short = AuditEntry {
            request_id: "req-1".into(),
            ..Default::default()
        };
        bound_fields(&mut short);
        assert_eq!(short.request_id, "req-1", "short fields are kept whole");
        let mut hostile = AuditEntry {
            request_id: "r\u{1b}[2J\nforged".into(),
            detail: "tab\there".into(),
            ..Default::default()
        };
        bound_fields(&mut hostile);
        assert_eq!(hostile.request_id, "r\\u{1b}[2J\\nforged");
        assert_eq!(hostile.detail, "tab\\there");
    }
}
