//! Archive segments: a run of consecutive audit records written as JSON lines, with the hash
//! the run continues from and the hash it ends in. A segment verifies on its own (every record's
//! hash recomputed, every link checked), and links to the live chain: the record after its last
//! names the segment's head hash as its `prev_hash`. Audit rows are never deleted from the
//! database; a segment is what an operator ships to cold storage.
//!
//! ```text
//! {"format":"shardsign-audit-segment-v1","first_seq":1,"prev_hash":"00…00"}
//! {"seq":1,"at_ms":…,"api_key_id":…,…,"prev_hash":"00…00","hash":"…"}
//! …
//! {"end":true,"last_seq":42,"records":42,"head_hash":"…"}
//! ```

use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::{AuditEntry, StoredRecord, chain_hash};

pub const FORMAT: &str = "shardsign-audit-segment-v1";
/// Longest line read back: a record's fields are capped far below this.
pub const MAX_LINE_LEN: usize = 64 * 1024;

#[derive(Debug, Error)]
pub enum SegmentError {
    #[error("cannot read or write the segment: {0}")]
    Io(#[from] std::io::Error),
    #[error("segment line {line}: {problem}")]
    Malformed { line: u64, problem: String },
    #[error("segment record {seq}: {problem}")]
    Broken { seq: u64, problem: String },
    #[error("the segment ends without its closing line (truncated?)")]
    Truncated,
}

/// What a segment covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentSummary {
    /// The first record's sequence number (`last_seq + 1` when the segment is empty).
    pub first_seq: u64,
    pub last_seq: u64,
    pub records: u64,
    /// The hash the segment continues from (the genesis hash for a segment from record 1).
    pub prev_hash: [u8; 32],
    /// The last record's hash: the next record of the live chain links to it.
    pub head_hash: [u8; 32],
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    format: String,
    first_seq: u64,
    prev_hash: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    seq: u64,
    at_ms: i64,
    api_key_id: String,
    operation: String,
    key_id: String,
    decision: String,
    detail: String,
    tx_hash: String,
    request_id: String,
    peer: String,
    prev_hash: String,
    hash: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Trailer {
    end: bool,
    last_seq: u64,
    records: u64,
    head_hash: String,
}

/// Checks one record against the chain so far; returns its hash.
fn link(seq: u64, prev: &[u8; 32], record: &StoredRecord) -> Result<[u8; 32], SegmentError> {
    let broken = |problem: String| SegmentError::Broken {
        seq: record.seq,
        problem,
    };
    if record.seq != seq {
        return Err(broken(format!("expected record {seq} here")));
    }
    if record.prev_hash != prev {
        return Err(broken(format!("does not link to record {}", seq - 1)));
    }
    let hash = chain_hash(record.seq, &record.entry, prev);
    if record.hash != hash {
        return Err(broken(
            "altered: its content does not match its hash".into(),
        ));
    }
    Ok(hash)
}

/// Writes a segment, checking the chain as it goes: a broken run is never archived.
pub struct SegmentWriter<W: Write> {
    out: W,
    summary: SegmentSummary,
}

impl<W: Write> SegmentWriter<W> {
    /// Starts a segment whose first record is `first_seq`, continuing from `prev_hash`.
    pub fn new(mut out: W, first_seq: u64, prev_hash: [u8; 32]) -> Result<Self, SegmentError> {
        write_line(
            &mut out,
            &Header {
                format: FORMAT.into(),
                first_seq,
                prev_hash: hex::encode(prev_hash),
            },
        )?;
        Ok(SegmentWriter {
            out,
            summary: SegmentSummary {
                first_seq,
                last_seq: first_seq.saturating_sub(1),
                records: 0,
                prev_hash,
                head_hash: prev_hash,
            },
        })
    }

    pub fn push(&mut self, record: &StoredRecord) -> Result<(), SegmentError> {
        let seq = self.summary.last_seq + 1;
        let hash = link(seq, &self.summary.head_hash, record)?;
        let e = &record.entry;
        write_line(
            &mut self.out,
            &Record {
                seq: record.seq,
                at_ms: e.at_ms,
                api_key_id: e.api_key_id.clone(),
                operation: e.operation.clone(),
                key_id: e.key_id.clone(),
                decision: e.decision.clone(),
                detail: e.detail.clone(),
                tx_hash: hex::encode(&e.tx_hash),
                request_id: e.request_id.clone(),
                peer: e.peer.clone(),
                prev_hash: hex::encode(&record.prev_hash),
                hash: hex::encode(hash),
            },
        )?;
        self.summary.last_seq = seq;
        self.summary.records += 1;
        self.summary.head_hash = hash;
        Ok(())
    }

    pub fn summary(&self) -> &SegmentSummary {
        &self.summary
    }

    /// Writes the closing line and flushes.
    pub fn finish(mut self) -> Result<SegmentSummary, SegmentError> {
        write_line(
            &mut self.out,
            &Trailer {
                end: true,
                last_seq: self.summary.last_seq,
                records: self.summary.records,
                head_hash: hex::encode(self.summary.head_hash),
            },
        )?;
        self.out.flush()?;
        Ok(self.summary)
    }
}

fn write_line(out: &mut impl Write, value: &impl Serialize) -> Result<(), SegmentError> {
    serde_json::to_writer(&mut *out, value).map_err(std::io::Error::from)?;
    out.write_all(b"\n")?;
    Ok(())
}

/// Reads a segment back and verifies it: format, every record's hash and link, the closing line.
pub fn verify_segment(input: impl BufRead) -> Result<SegmentSummary, SegmentError> {
    let mut lines = BoundedLines { input, number: 0 };
    let header: Header = lines.parse()?.ok_or(SegmentError::Truncated)?;
    if header.format != FORMAT {
        return Err(lines.malformed(format!("format `{}`, expected `{FORMAT}`", header.format)));
    }
    let prev = lines.hash(&header.prev_hash)?;
    let mut summary = SegmentSummary {
        first_seq: header.first_seq,
        last_seq: header.first_seq.saturating_sub(1),
        records: 0,
        prev_hash: prev,
        head_hash: prev,
    };
    loop {
        let Some(line) = lines.next_line()? else {
            return Err(SegmentError::Truncated);
        };
        if let Ok(trailer) = serde_json::from_str::<Trailer>(&line) {
            let matches = trailer.end
                && trailer.last_seq == summary.last_seq
                && trailer.records == summary.records
                && trailer.head_hash == hex::encode(summary.head_hash);
            if !matches {
                return Err(
                    lines.malformed("the closing line does not match the records before it".into())
                );
            }
            if lines.next_line()?.is_some() {
                return Err(lines.malformed("lines after the closing line".into()));
            }
            return Ok(summary);
        }
        let record: Record = serde_json::from_str(&line)
            .map_err(|e| lines.malformed(format!("not a record: {e}")))?;
        let stored = StoredRecord {
            seq: record.seq,
            entry: AuditEntry {
                at_ms: record.at_ms,
                api_key_id: record.api_key_id,
                operation: record.operation,
                key_id: record.key_id,
                decision: record.decision,
                detail: record.detail,
                tx_hash: lines.bytes(&record.tx_hash)?,
                request_id: record.request_id,
                peer: record.peer,
            },
            prev_hash: lines.bytes(&record.prev_hash)?,
            hash: lines.bytes(&record.hash)?,
        };
        summary.head_hash = link(summary.last_seq + 1, &summary.head_hash, &stored)?;
        summary.last_seq += 1;
        summary.records += 1;
    }
}

/// Lines with a length limit checked before a line is kept whole.
struct BoundedLines<R> {
    input: R,
    number: u64,
}

impl<R: BufRead> BoundedLines<R> {
    fn next_line(&mut self) -> Result<Option<String>, SegmentError> {
        let mut line = Vec::new();
        let read = std::io::Read::take(&mut self.input, MAX_LINE_LEN as u64 + 1)
            .read_until(b'\n', &mut line)?;
        if read == 0 {
            return Ok(None);
        }
        self.number += 1;
        if line.len() > MAX_LINE_LEN {
            return Err(self.malformed(format!("longer than {MAX_LINE_LEN} bytes")));
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        String::from_utf8(line)
            .map(Some)
            .map_err(|_| self.malformed("not UTF-8".into()))
    }

    fn parse<T: for<'de> Deserialize<'de>>(&mut self) -> Result<Option<T>, SegmentError> {
        let Some(line) = self.next_line()? else {
            return Ok(None);
        };
        serde_json::from_str(&line)
            .map(Some)
            .map_err(|e| self.malformed(e.to_string()))
    }

    fn bytes(&self, text: &str) -> Result<Vec<u8>, SegmentError> {
        hex::decode(text).map_err(|_| self.malformed(format!("`{text}` is not hex")))
    }

    fn hash(&self, text: &str) -> Result<[u8; 32], SegmentError> {
        self.bytes(text)?
            .try_into()
            .map_err(|_| self.malformed("a hash is 32 bytes".into()))
    }

    fn malformed(&self, problem: String) -> SegmentError {
        SegmentError::Malformed {
            line: self.number,
            problem,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::GENESIS;
    use crate::test_chain as chain;

    fn write(records: &[StoredRecord], first_seq: u64, prev: [u8; 32]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut writer = SegmentWriter::new(&mut out, first_seq, prev).unwrap();
        for record in records {
            writer.push(record).unwrap();
        }
        writer.finish().unwrap();
        out
    }

    #[test]
    fn a_segment_verifies_and_its_head_links_to_the_next_record() {
        let records = chain(10);
        let first = write(&records[..4], 1, GENESIS);
        let summary = verify_segment(first.as_slice()).unwrap();
        assert_eq!(
            (summary.first_seq, summary.last_seq, summary.records),
            (1, 4, 4)
        );
        assert_eq!(
            records[4].prev_hash, summary.head_hash,
            "the live chain continues from it"
        );
        // The next segment continues from the first one's head.
        let prev: [u8; 32] = records[3].hash.as_slice().try_into().unwrap();
        let second = write(&records[4..], 5, prev);
        let next = verify_segment(second.as_slice()).unwrap();
        assert_eq!((next.prev_hash, next.last_seq), (summary.head_hash, 10));
        // An empty segment is valid and says where it stands.
        let empty = verify_segment(write(&[], 1, GENESIS).as_slice()).unwrap();
        assert_eq!((empty.records, empty.head_hash), (0, GENESIS));
    }

    #[test]
    fn an_edited_dropped_or_truncated_segment_fails_naming_where() {
        let records = chain(5);
        let text = String::from_utf8(write(&records, 1, GENESIS)).unwrap();
        let edited = text.replace("req-3", "req-9");
        let error = verify_segment(edited.as_bytes()).unwrap_err();
        assert!(
            matches!(error, SegmentError::Broken { seq: 3, .. }),
            "{error}"
        );

        let lines: Vec<&str> = text.lines().collect();
        let dropped = [&lines[..2], &lines[3..]].concat().join("\n");
        let error = verify_segment(dropped.as_bytes()).unwrap_err();
        assert!(
            matches!(error, SegmentError::Broken { seq: 3, .. }),
            "{error}"
        );

        let truncated = lines[..4].join("\n");
        assert!(matches!(
            verify_segment(truncated.as_bytes()),
            Err(SegmentError::Truncated)
        ));
        // A forged closing line (records cut, trailer rewritten) does not match.
        let forged = format!(
            "{}\n{{\"end\":true,\"last_seq\":5,\"records\":5,\"head_hash\":\"{}\"}}",
            lines[..4].join("\n"),
            "00".repeat(32)
        );
        assert!(matches!(
            verify_segment(forged.as_bytes()),
            Err(SegmentError::Malformed { .. })
        ));
    }

    #[test]
    fn the_writer_refuses_to_archive_a_broken_run() {
        let mut records = chain(3);
        records[1].entry.detail = "edited".into();
        let mut out = Vec::new();
        let mut writer = SegmentWriter::new(&mut out, 1, GENESIS).unwrap();
        writer.push(&records[0]).unwrap();
        assert!(matches!(
            writer.push(&records[1]),
            Err(SegmentError::Broken { seq: 2, .. })
        ));
    }

    #[test]
    fn an_overlong_line_is_refused_before_it_is_kept() {
        let mut text = write(&[], 1, GENESIS);
        text.splice(0..0, vec![b' '; MAX_LINE_LEN + 10]);
        let error = verify_segment(text.as_slice()).unwrap_err();
        assert!(error.to_string().contains("longer than"), "{error}");
    }
}
