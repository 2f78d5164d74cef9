//! The audit log's storage: appended under the audit table's lock (so the chain has one order,
//! whichever coordinator writes), read back for verification and listing.

use super::Registry;
use super::db::{Row, Sql, args};
use crate::audit::{self, AuditEntry, AuditReport, GENESIS, StoredRecord};
use crate::error::CoordError;

const COLUMNS: &str = "seq, at_ms, api_key_id, operation, key_id, decision, detail, tx_hash, request_id, peer, prev_hash, hash";

fn read_record(row: &Row) -> Result<StoredRecord, CoordError> {
    Ok(StoredRecord {
        seq: row.int(0)? as u64,
        entry: AuditEntry {
            at_ms: row.int(1)?,
            api_key_id: row.text(2)?,
            operation: row.text(3)?,
            key_id: row.text(4)?,
            decision: row.text(5)?,
            detail: row.text(6)?,
            tx_hash: row.blob(7)?,
            request_id: row.text(8)?,
            peer: row.text(9)?,
        },
        prev_hash: row.blob(10)?,
        hash: row.blob(11)?,
    })
}

impl Registry {
    /// Appends a record to the chain in its own transaction; returns its sequence number.
    pub fn append_audit(&self, entry: AuditEntry) -> Result<u64, CoordError> {
        self.write(|sql| append(sql, entry))
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

/// Appends a record to the chain within the caller's transaction, which holds the audit
/// table's lock from here to its end: the chain has one order.
pub(super) fn append(sql: &mut dyn Sql, mut entry: AuditEntry) -> Result<u64, CoordError> {
    bound_fields(&mut entry);
    sql.lock_table("audit")?;
    let last = sql.query_opt("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1", &[])?;
    let (seq, prev) = match last {
        Some(row) => (
            row.int(0)? as u64 + 1,
            <[u8; 32]>::try_from(row.blob(1)?.as_slice()).unwrap_or(GENESIS),
        ),
        None => (1, GENESIS),
    };
    let hash = audit::chain_hash(seq, &entry, &prev);
    sql.execute(
        &format!("INSERT INTO audit ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"),
        args![
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

/// Records read per query of the audit walk (a long log is never held in memory at once).
const WALK_CHUNK: u32 = 10_000;

impl Registry {
    /// Walks the whole chain, a chunk at a time, on a connection of its own: appends go on.
    pub fn verify_audit(&self) -> Result<AuditReport, CoordError> {
        self.read_long(|sql| {
            let mut records = 0u64;
            let mut head_hash = GENESIS;
            let mut after = 0u64;
            loop {
                let rows = sql.query(
                    &format!("SELECT {COLUMNS} FROM audit WHERE seq > ?1 ORDER BY seq LIMIT ?2"),
                    args![after as i64, WALK_CHUNK],
                )?;
                let Some(last) = rows.last() else { break };
                after = last.int(0)? as u64;
                let chunk = rows
                    .iter()
                    .map(read_record)
                    .collect::<Result<Vec<_>, _>>()?;
                // Re-base the chunk on the previous one's head.
                let report = audit::verify_continuing(records, head_hash, chunk.into_iter());
                if report.broken.is_some() {
                    return Ok(report);
                }
                records = report.records;
                head_hash = report.head_hash;
            }
            Ok(AuditReport {
                records,
                broken: None,
                head_hash,
            })
        })
    }

    pub fn list_audit(&self, after_seq: u64, limit: u32) -> Result<Vec<StoredRecord>, CoordError> {
        self.read(|sql| {
            sql.query(
                &format!("SELECT {COLUMNS} FROM audit WHERE seq > ?1 ORDER BY seq LIMIT ?2"),
                args![after_seq as i64, limit],
            )?
            .iter()
            .map(read_record)
            .collect()
        })
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
