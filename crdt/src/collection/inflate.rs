//! A bound on how far Automerge bytes inflate, checked before Automerge sees them.
//!
//! Automerge inflates DEFLATE data without a limit of its own, so a few
//! hundred kilobytes from a peer can expand into gigabytes (a "decompression
//! bomb"). Two places in the storage format hold DEFLATE data:
//!
//! - a compressed change chunk (type 2), whose whole body is raw DEFLATE;
//! - a document chunk (type 0), whose change and op columns may each be
//!   DEFLATE-compressed, marked by bit `0x08` of the column's specification.
//!
//! [`check`] walks every chunk header, locates that data and inflates it in a
//! fixed-size window, counting output bytes only, so the check itself uses a
//! few kilobytes whatever the input claims. Everything compressed in one call
//! shares one budget. Input the walk cannot parse is left for Automerge to
//! refuse with its own error, except that a document layout the walk cannot
//! follow is refused here, as Automerge would then refuse it too.

use miniz_oxide::inflate::stream::{InflateState, inflate};
use miniz_oxide::{DataFormat, MZFlush, MZStatus};

use super::DecodeError;
use super::shard::{CHUNK_COMPRESSED_CHANGE, CHUNK_DOCUMENT, chunk_header};

/// Bit of a column specification marking DEFLATE-compressed column data.
const DEFLATE_BIT: u64 = 0x08;

/// Output window of the counting inflater.
const WINDOW: usize = 32 * 1024;

/// Checks that the DEFLATE data in `bytes` (a sequence of Automerge chunks)
/// inflates to at most `budget` bytes in total.
pub(crate) fn check(bytes: &[u8], budget: usize) -> Result<(), DecodeError> {
    let mut left = budget;
    let mut offset = 0;
    while offset < bytes.len() {
        let header = chunk_header(bytes, offset)?;
        let body = &bytes[offset + header.header_len..offset + header.total];
        match header.kind {
            CHUNK_COMPRESSED_CHANGE => spend(body, &mut left, budget)?,
            CHUNK_DOCUMENT => check_document(body, offset, &mut left, budget)?,
            _ => {}
        }
        offset += header.total;
    }
    Ok(())
}

/// Walks a document chunk's body: actors, heads, change column metadata, op
/// column metadata, then the change and op column data in that order.
fn check_document(
    body: &[u8],
    offset: usize,
    left: &mut usize,
    budget: usize,
) -> Result<(), DecodeError> {
    let framing = || DecodeError::Framing { offset };
    let mut cursor = Cursor { bytes: body, at: 0 };
    let actors = cursor.uleb().ok_or_else(framing)?;
    for _ in 0..actors {
        let len = cursor.uleb().ok_or_else(framing)?;
        cursor.skip(len).ok_or_else(framing)?;
    }
    let heads = cursor.uleb().ok_or_else(framing)?;
    cursor
        .skip(heads.checked_mul(32).ok_or_else(framing)?)
        .ok_or_else(framing)?;
    // Each column costs at least two bytes of metadata, so the loops below
    // are bounded by the input whatever count it claims.
    let mut columns: Vec<(bool, u64)> = Vec::new();
    for _ in 0..2 {
        let count = cursor.uleb().ok_or_else(framing)?;
        for _ in 0..count {
            let spec = cursor.uleb().ok_or_else(framing)?;
            let len = cursor.uleb().ok_or_else(framing)?;
            columns.push((spec & DEFLATE_BIT != 0, len));
        }
    }
    for (deflated, len) in columns {
        let data = cursor.take(len).ok_or_else(framing)?;
        if deflated {
            spend(data, left, budget)?;
        }
    }
    Ok(())
}

/// Inflates raw DEFLATE `data`, discarding the output, and takes its size off
/// `left`. A malformed or truncated stream stops the count: Automerge refuses
/// it later, and what was counted so far is all it could produce.
fn spend(data: &[u8], left: &mut usize, budget: usize) -> Result<(), DecodeError> {
    let mut state = InflateState::new_boxed(DataFormat::Raw);
    let mut window = vec![0u8; WINDOW];
    let mut input = data;
    loop {
        let result = inflate(&mut state, input, &mut window, MZFlush::None);
        input = &input[result.bytes_consumed.min(input.len())..];
        *left = left
            .checked_sub(result.bytes_written)
            .ok_or(DecodeError::Inflate { limit: budget })?;
        match result.status {
            Ok(MZStatus::StreamEnd) | Err(_) => return Ok(()),
            Ok(_) if result.bytes_consumed == 0 && result.bytes_written == 0 => return Ok(()),
            Ok(_) => {}
        }
    }
}

/// A read position in a byte slice.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    /// An unsigned LEB128 value of at most 64 bits.
    fn uleb(&mut self) -> Option<u64> {
        let mut value: u64 = 0;
        for shift in (0..64).step_by(7) {
            let byte = *self.bytes.get(self.at)?;
            self.at += 1;
            let bits = u64::from(byte & 0x7f);
            if shift == 63 && bits > 1 {
                return None;
            }
            value |= bits << shift;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    fn take(&mut self, len: u64) -> Option<&'a [u8]> {
        let len = usize::try_from(len).ok()?;
        let end = self.at.checked_add(len)?;
        let out = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(out)
    }

    fn skip(&mut self, len: u64) -> Option<()> {
        self.take(len).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use automerge::transaction::Transactable;
    use automerge::{ActorId, Automerge, ROOT};

    /// A chunk of `kind` around `body`, with a checksum nobody checks here.
    pub(crate) fn chunk(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![0x85, 0x6f, 0x4a, 0x83, 0, 0, 0, 0, kind];
        let mut len = body.len() as u64;
        loop {
            let byte = (len & 0x7f) as u8;
            len >>= 7;
            if len == 0 {
                out.push(byte);
                break;
            }
            out.push(byte | 0x80);
        }
        out.extend_from_slice(body);
        out
    }

    fn zeros_deflated(len: usize) -> Vec<u8> {
        miniz_oxide::deflate::compress_to_vec(&vec![0u8; len], 9)
    }

    #[test]
    fn a_compressed_change_is_counted_against_the_budget() {
        let body = zeros_deflated(100_000);
        let bytes = chunk(CHUNK_COMPRESSED_CHANGE, &body);
        assert!(check(&bytes, 100_000).is_ok());
        assert!(matches!(
            check(&bytes, 99_999),
            Err(DecodeError::Inflate { limit: 99_999 })
        ));
    }

    #[test]
    fn the_budget_is_shared_by_every_chunk() {
        let one = chunk(CHUNK_COMPRESSED_CHANGE, &zeros_deflated(60_000));
        let two = [one.clone(), one].concat();
        assert!(check(&two, 120_000).is_ok());
        assert!(check(&two, 119_999).is_err());
    }

    #[test]
    fn deflated_document_columns_are_counted() {
        let column = zeros_deflated(50_000);
        let mut body = vec![0, 0]; // no actors, no heads
        body.push(1); // one change column
        body.push(0x10 | 0x08); // id 1, type 0, deflated
        body.extend(uleb(column.len() as u64));
        body.push(1); // one op column, stored plain
        body.push(0x20);
        body.push(3);
        body.extend_from_slice(&column);
        body.extend_from_slice(&[1, 2, 3]);
        let bytes = chunk(CHUNK_DOCUMENT, &body);
        assert!(check(&bytes, 50_000).is_ok());
        assert!(matches!(
            check(&bytes, 49_999),
            Err(DecodeError::Inflate { .. })
        ));
        // Column data shorter than the metadata claims.
        let cut = chunk(CHUNK_DOCUMENT, &body[..body.len() - 1]);
        assert!(matches!(
            check(&cut, 1 << 30),
            Err(DecodeError::Framing { offset: 0 })
        ));
    }

    #[test]
    fn real_automerge_saves_pass_and_are_measured() {
        let mut doc = Automerge::new().with_actor(ActorId::from([1u8; 16]));
        let mut tx = doc.transaction();
        for i in 0..2_000 {
            tx.put(
                ROOT,
                format!("key-{i}"),
                "the same long-ish value, again and again",
            )
            .unwrap();
        }
        tx.commit();
        let save = doc.save();
        assert!(check(&save, 64 << 20).is_ok());
        assert!(check(&doc.save_after(&[]), 64 << 20).is_ok());
        // The save has deflated columns: a tiny budget trips.
        assert!(check(&save, 16).is_err());
        let change = doc.get_changes(&[]).pop().unwrap();
        let mut compressed = change.clone();
        let bytes = compressed.bytes().to_vec();
        assert!(check(&bytes, 64 << 20).is_ok());
    }

    fn uleb(mut value: u64) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let byte = (value & 0x7f) as u8;
            value >>= 7;
            if value == 0 {
                out.push(byte);
                return out;
            }
            out.push(byte | 0x80);
        }
    }
}
