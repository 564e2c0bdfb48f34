//! Records filtered inside the batches a broker returns (one partition's
//! `records` of a Fetch response): each batch is decoded (decompressed) by
//! the `kafka-protocol` crate, and a batch that loses records is encoded
//! again with the records kept, in the same codec, keeping its offsets:
//!
//! - a batch that keeps every record is passed on as its bytes, untouched;
//! - a batch that keeps some is re-encoded, and the last batch it becomes
//!   ends at the original last offset (`lastOffsetDelta` set, CRC-32C
//!   recomputed), so that the consumer's next fetch starts after what it did
//!   not see;
//! - a batch that keeps none becomes a batch of no records with the
//!   original header (base offset, last offset delta, producer, flags), as
//!   compaction leaves them: it still advances the consumer;
//! - control batches (transaction markers), legacy message sets, and a
//!   partial batch at the end (the broker cuts at the fetch's byte limit)
//!   are passed on untouched.
//!
//! The last two steps patch fields of the batch header at their fixed
//! offsets in the v2 format; everything else is the crate's.
//!
//! And the other way ([`add_baggage`]): the batches of a produce request
//! whose records need a `baggage` member get it, re-encoded in their codec
//! (a produce batch's offsets and sequences are the records' own, kept).

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::records::{
    Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
};

/// Offsets in a v2 record batch.
const BATCH_LENGTH: usize = 8;
const MAGIC: usize = 16;
const CRC: usize = 17;
const ATTRIBUTES: usize = 21;
const LAST_OFFSET_DELTA: usize = 23;
const RECORD_COUNT: usize = 57;
/// A v2 batch's header, records excluded.
const HEADER: usize = 61;
/// Attribute bits: the codec, and a control batch.
const CODEC_MASK: i16 = 0b111;
const CONTROL: i16 = 1 << 5;

/// How many records a filter kept and dropped.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counted {
    pub kept: u64,
    pub dropped: u64,
    /// Produced records that got the sandbox's key.
    pub keyed: u64,
}

/// `records` with only the records `keep` accepts (see the module doc).
/// Bytes are copied only from the first batch that changes: when none
/// does, the result is `records` itself.
pub fn filter(records: &Bytes, keep: impl Fn(&Record) -> bool) -> Result<(Bytes, Counted), String> {
    let mut out = BytesMut::new();
    // `records[..copied]` is in `out` (rewritten); the rest is not yet.
    let mut copied = 0;
    let mut counted = Counted::default();
    let mut at = 0;
    while let Some(size) = batch_size(&records[at..]) {
        let start = at;
        let batch = records.slice(at..at + size);
        at += size;
        let attributes = i16::from_be_bytes([batch[ATTRIBUTES], batch[ATTRIBUTES + 1]]);
        if batch[MAGIC] != 2 || attributes & CONTROL != 0 {
            continue;
        }
        let set = RecordBatchDecoder::decode(&mut batch.clone()).map_err(|e| e.to_string())?;
        let kept: Vec<&Record> = set.records.iter().filter(|r| keep(r)).collect();
        counted.kept += kept.len() as u64;
        counted.dropped += (set.records.len() - kept.len()) as u64;
        if kept.len() == set.records.len() {
            continue;
        }
        out.put_slice(&records[copied..start]);
        copied = at;
        if kept.is_empty() {
            empty_batch(&batch, &mut out);
            continue;
        }
        let last_offset = i64::from_be_bytes(batch[..8].try_into().map_err(|_| "short")?)
            + i64::from(i32::from_be_bytes(
                batch[LAST_OFFSET_DELTA..LAST_OFFSET_DELTA + 4]
                    .try_into()
                    .map_err(|_| "short")?,
            ));
        let from = out.len();
        let options = RecordEncodeOptions {
            version: 2,
            compression: set.compression,
        };
        RecordBatchEncoder::encode(&mut out, kept.iter().copied(), &options)
            .map_err(|e| e.to_string())?;
        end_at(&mut out[from..], last_offset);
    }
    if copied == 0 {
        return Ok((records.clone(), counted));
    }
    // What follows the last change, a partial last batch included (the
    // consumer skips it and fetches it again).
    out.put_slice(&records[copied..]);
    Ok((out.freeze(), counted))
}

/// `records` (a partition's batches in a produce request) with `member`
/// added to the `baggage` header of every record `needs` picks (a new
/// header, or appended to the record's own `baggage`); returns how many.
pub fn add_baggage(
    records: &Bytes,
    member: &str,
    needs: impl Fn(&Record) -> bool,
) -> Result<(Bytes, u64), String> {
    let mut out = BytesMut::with_capacity(records.len() + 64);
    let mut added = 0;
    let mut at = 0;
    while at < records.len() {
        let Some(size) = batch_size(&records[at..]) else {
            return Err("a produce request with a partial batch".to_owned());
        };
        let batch = records.slice(at..at + size);
        at += size;
        let mut set = RecordBatchDecoder::decode(&mut batch.clone()).map_err(|e| e.to_string())?;
        let mut changed = false;
        for record in &mut set.records {
            if record.control || !needs(record) {
                continue;
            }
            let name = kafka_protocol::protocol::StrBytes::from_static_str("baggage");
            let value = match record.headers.get(&name).cloned().flatten() {
                Some(own) if !own.is_empty() => {
                    format!("{},{member}", String::from_utf8_lossy(&own))
                }
                _ => member.to_owned(),
            };
            record.headers.insert(name, Some(Bytes::from(value)));
            added += 1;
            changed = true;
        }
        if !changed {
            out.put_slice(&batch);
            continue;
        }
        let options = RecordEncodeOptions {
            version: 2,
            compression: set.compression,
        };
        RecordBatchEncoder::encode(&mut out, set.records.iter(), &options)
            .map_err(|e| e.to_string())?;
    }
    Ok((out.freeze(), added))
}

/// The size of the whole batch at the start of `bytes`, if it is all there.
fn batch_size(bytes: &[u8]) -> Option<usize> {
    let length = bytes.get(BATCH_LENGTH..BATCH_LENGTH + 4)?;
    let length = usize::try_from(i32::from_be_bytes(length.try_into().ok()?)).ok()?;
    let size = BATCH_LENGTH + 4 + length;
    (size >= HEADER && bytes.len() >= size).then_some(size)
}

/// `batch`'s header as a batch of no records, uncompressed.
fn empty_batch(batch: &[u8], out: &mut BytesMut) {
    let start = out.len();
    out.put_slice(&batch[..HEADER]);
    let header = &mut out[start..];
    header[BATCH_LENGTH..BATCH_LENGTH + 4].copy_from_slice(
        &i32::try_from(HEADER - BATCH_LENGTH - 4)
            .unwrap_or(0)
            .to_be_bytes(),
    );
    let attributes = i16::from_be_bytes([header[ATTRIBUTES], header[ATTRIBUTES + 1]]);
    header[ATTRIBUTES..ATTRIBUTES + 2].copy_from_slice(&(attributes & !CODEC_MASK).to_be_bytes());
    header[RECORD_COUNT..RECORD_COUNT + 4].copy_from_slice(&0i32.to_be_bytes());
    seal(header);
}

/// Makes the last of the batches in `encoded` end at `last_offset`.
fn end_at(encoded: &mut [u8], last_offset: i64) {
    let mut at = 0;
    let mut last = None;
    while let Some(size) = batch_size(&encoded[at..]) {
        last = Some(at..at + size);
        at += size;
    }
    let Some(range) = last else { return };
    let batch = &mut encoded[range];
    let base = i64::from_be_bytes(batch[..8].try_into().unwrap_or_default());
    let delta = i32::try_from(last_offset - base).unwrap_or(i32::MAX);
    batch[LAST_OFFSET_DELTA..LAST_OFFSET_DELTA + 4].copy_from_slice(&delta.to_be_bytes());
    seal(batch);
}

/// Recomputes a batch's CRC-32C (over everything after the CRC field).
fn seal(batch: &mut [u8]) {
    let crc = crc32c::crc32c(&batch[ATTRIBUTES..]);
    batch[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
}

#[cfg(test)]
mod tests;
