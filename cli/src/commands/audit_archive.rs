//! `shardsign audit export` and `audit verify-segment`: archive the records before a date as a
//! segment that verifies on its own and links to the live chain (`shardsign_audit::segment`).

use std::io::BufWriter;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde_json::json;
use shardsign_audit::segment::{SegmentSummary, SegmentWriter, verify_segment};
use shardsign_audit::{AuditEntry, GENESIS, StoredRecord};
use shardsign_client::api;

use crate::output::Out;

const PAGE: u32 = 1000;

/// Milliseconds since the Unix epoch for `YYYY-MM-DD` (UTC midnight), `YYYY-MM-DDTHH:MM:SSZ`
/// or `@SECONDS[.mmm]`.
pub fn parse_date(text: &str) -> anyhow::Result<i64> {
    let bad = || {
        anyhow::anyhow!(
            "--before `{text}`: expected YYYY-MM-DD, YYYY-MM-DDTHH:MM:SSZ or @UNIX_SECONDS[.mmm]"
        )
    };
    if let Some(stamp) = text.strip_prefix('@') {
        let (seconds, millis) = stamp.split_once('.').unwrap_or((stamp, "0"));
        let seconds: i64 = seconds.parse().map_err(|_| bad())?;
        if millis.is_empty() || millis.len() > 3 || !millis.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let millis: i64 = format!("{millis:0<3}").parse().map_err(|_| bad())?;
        return seconds
            .checked_mul(1000)
            .and_then(|ms| ms.checked_add(millis))
            .filter(|ms| *ms >= 0)
            .ok_or_else(bad);
    }
    let (date, time) = match text.split_once('T') {
        Some((date, time)) => (date, Some(time.strip_suffix('Z').ok_or_else(bad)?)),
        None => (text, None),
    };
    let numbers = |part: &str, sep: char, count: usize| -> anyhow::Result<Vec<i64>> {
        let values: Vec<i64> = part
            .split(sep)
            .map(|n| n.parse::<i64>().map_err(|_| bad()))
            .collect::<Result<_, _>>()?;
        if values.len() != count {
            return Err(bad());
        }
        Ok(values)
    };
    let ymd = numbers(date, '-', 3)?;
    let (year, month, day) = (ymd[0], ymd[1], ymd[2]);
    if !(1970..=9999).contains(&year) || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return Err(bad());
    }
    let hms = match time {
        Some(time) => numbers(time, ':', 3)?,
        None => vec![0, 0, 0],
    };
    if !(0..24).contains(&hms[0]) || !(0..60).contains(&hms[1]) || !(0..60).contains(&hms[2]) {
        return Err(bad());
    }
    let days = days_from_civil(year, month, day);
    Ok(((days * 24 + hms[0]) * 60 + hms[1]) * 60_000 + hms[2] * 1000)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn stored(record: api::AuditRecord) -> StoredRecord {
    StoredRecord {
        seq: record.seq,
        entry: AuditEntry {
            at_ms: record.at_unix_ms,
            api_key_id: record.api_key_id,
            operation: record.operation,
            key_id: record.key_id,
            decision: record.decision,
            detail: record.detail,
            tx_hash: record.tx_hash,
            request_id: record.request_id,
            peer: record.peer,
        },
        prev_hash: record.prev_hash,
        hash: record.hash,
    }
}

/// Writes the records after `after_seq` made before `before_ms` to `out_path` (via a temporary
/// file renamed into place: never a half-written segment), checking the chain as it goes and
/// that the live chain's next record links to the segment's head.
pub async fn export(
    admin: &mut shardsign_client::AdminStub,
    before_ms: i64,
    after_seq: u64,
    out_path: &Path,
    out: Out,
) -> anyhow::Result<()> {
    // The hash the segment continues from: the genesis hash, or record `after_seq`'s own.
    let prev = match after_seq {
        0 => GENESIS,
        seq => page(admin, seq - 1, 1)
            .await?
            .first()
            .filter(|r| r.seq == seq)
            .and_then(|r| <[u8; 32]>::try_from(r.hash.as_slice()).ok())
            .ok_or_else(|| anyhow::anyhow!("--after {seq}: the audit log has no record {seq}"))?,
    };
    let partial = PathBuf::from(format!("{}.partial", out_path.display()));
    let file = std::fs::File::create(&partial)
        .with_context(|| format!("cannot create {}", partial.display()))?;
    let mut writer = SegmentWriter::new(BufWriter::new(file), after_seq + 1, prev)?;
    let mut next_link: Option<(u64, Vec<u8>)> = None;
    let mut after = after_seq;
    'pages: loop {
        let records = page(admin, after, PAGE).await?;
        if records.is_empty() {
            break;
        }
        for record in records {
            after = record.seq;
            if record.at_unix_ms >= before_ms {
                next_link = Some((record.seq, record.prev_hash));
                break 'pages;
            }
            writer.push(&stored(record))?;
        }
    }
    let summary = writer.finish()?;
    if let Some((seq, prev)) = &next_link
        && prev.as_slice() != summary.head_hash.as_slice()
    {
        let _ = std::fs::remove_file(&partial);
        bail!(
            "record {seq} of the live chain does not link to the segment's head: run `shardsign audit verify`"
        );
    }
    std::fs::rename(&partial, out_path)
        .with_context(|| format!("cannot move the segment to {}", out_path.display()))?;
    report(&summary, out_path, next_link.map(|(seq, _)| seq), out);
    Ok(())
}

/// Up to `limit` records after `after_seq`, oldest first.
async fn page(
    admin: &mut shardsign_client::AdminStub,
    after_seq: u64,
    limit: u32,
) -> anyhow::Result<Vec<api::AuditRecord>> {
    Ok(admin
        .list_audit(api::ListAuditRequest { after_seq, limit })
        .await
        .map_err(shardsign_client::ClientError::from)?
        .into_inner()
        .records)
}

fn report(summary: &SegmentSummary, path: &Path, linked_by: Option<u64>, out: Out) {
    let value = json!({"path": path.display().to_string(), "first_seq": summary.first_seq,
        "last_seq": summary.last_seq, "records": summary.records,
        "prev_hash": hex::encode(summary.prev_hash), "head_hash": hex::encode(summary.head_hash),
        "next_record_links": linked_by});
    out.show(&value, || {
        let link = match linked_by {
            Some(seq) => format!("; live record {seq} links to it"),
            None => String::new(),
        };
        format!(
            "segment {}: records {}..={} ({}), head {}{link}",
            path.display(),
            summary.first_seq,
            summary.last_seq,
            summary.records,
            hex::encode(summary.head_hash)
        )
    });
}

/// Verifies a segment file offline.
pub fn verify_file(path: &Path, out: Out) -> anyhow::Result<()> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let summary = verify_segment(std::io::BufReader::new(file))
        .with_context(|| format!("{} does not verify", path.display()))?;
    report(&summary, path, None, out);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_parse_to_utc_milliseconds() {
        assert_eq!(parse_date("1970-01-01").unwrap(), 0);
        assert_eq!(parse_date("2026-11-26").unwrap(), 1_795_651_200_000);
        assert_eq!(parse_date("2000-03-01T12:30:05Z").unwrap(), 951_913_805_000);
        assert_eq!(parse_date("@1700000000").unwrap(), 1_700_000_000_000);
        assert_eq!(parse_date("@1700000000.5").unwrap(), 1_700_000_000_500);
        assert_eq!(parse_date("@1700000000.012").unwrap(), 1_700_000_000_012);
        for bad in [
            "2026-13-01",
            "2026-11",
            "yesterday",
            "2026-11-26T10:00:00",
            "@x",
            "1969-12-31",
            "@1.1234",
            "@-5",
            "@1.",
        ] {
            assert!(parse_date(bad).is_err(), "{bad}");
        }
    }
}
