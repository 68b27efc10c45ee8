//! The records of the embedded work queue's log: an append-only log split into segment files,
//! framed as [`crate::frames`] describes.

use std::io;
use std::path::Path;

pub(crate) use crate::frames::{ReadOutcome, list_segments, segment_path};

const KIND_SEGMENT_START: u8 = 0;
const KIND_PUSH: u8 = 1;
const KIND_ACK: u8 = 2;
const KIND_ATTEMPT: u8 = 3;

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Record<'a> {
    /// First record of every segment: ids below `next_id` have been handed out.
    SegmentStart {
        next_id: u64,
    },
    Push {
        queue: &'a str,
        id: u64,
        attempts: u32,
        payload: &'a [u8],
    },
    Ack {
        queue: &'a str,
        id: u64,
    },
    Attempt {
        queue: &'a str,
        id: u64,
        attempts: u32,
    },
}

pub(crate) fn encode(buf: &mut Vec<u8>, record: &Record<'_>) {
    crate::frames::append(buf, |buf| encode_body(buf, record));
}

fn encode_body(buf: &mut Vec<u8>, record: &Record<'_>) {
    let put_queue = |buf: &mut Vec<u8>, queue: &str, id: u64| {
        // Queue names are validated to at most 64 bytes.
        buf.push(queue.len() as u8);
        buf.extend_from_slice(queue.as_bytes());
        buf.extend_from_slice(&id.to_le_bytes());
    };
    match record {
        Record::SegmentStart { next_id } => {
            buf.push(KIND_SEGMENT_START);
            buf.extend_from_slice(&next_id.to_le_bytes());
        }
        Record::Push {
            queue,
            id,
            attempts,
            payload,
        } => {
            buf.push(KIND_PUSH);
            put_queue(buf, queue, *id);
            buf.extend_from_slice(&attempts.to_le_bytes());
            buf.extend_from_slice(payload);
        }
        Record::Ack { queue, id } => {
            buf.push(KIND_ACK);
            put_queue(buf, queue, *id);
        }
        Record::Attempt {
            queue,
            id,
            attempts,
        } => {
            buf.push(KIND_ATTEMPT);
            put_queue(buf, queue, *id);
            buf.extend_from_slice(&attempts.to_le_bytes());
        }
    }
}

fn decode(body: &[u8]) -> Option<Record<'_>> {
    let (&kind, rest) = body.split_first()?;
    if kind == KIND_SEGMENT_START {
        return Some(Record::SegmentStart {
            next_id: u64::from_le_bytes(rest.try_into().ok()?),
        });
    }
    let (&qlen, rest) = rest.split_first()?;
    let queue = std::str::from_utf8(rest.get(..qlen as usize)?).ok()?;
    let rest = &rest[qlen as usize..];
    let id = u64::from_le_bytes(rest.get(..8)?.try_into().ok()?);
    let rest = &rest[8..];
    let attempts = || Some(u32::from_le_bytes(rest.get(..4)?.try_into().ok()?));
    match kind {
        KIND_PUSH => Some(Record::Push {
            queue,
            id,
            attempts: attempts()?,
            payload: &rest[4..],
        }),
        KIND_ACK if rest.is_empty() => Some(Record::Ack { queue, id }),
        KIND_ATTEMPT if rest.len() == 4 => Some(Record::Attempt {
            queue,
            id,
            attempts: attempts()?,
        }),
        _ => None,
    }
}

/// Calls `each` for every intact record of the segment at `path`, in order.
pub(crate) fn read_segment(
    path: &Path,
    mut each: impl FnMut(Record<'_>),
) -> io::Result<ReadOutcome> {
    crate::frames::read(path, |body| match decode(body) {
        Some(record) => {
            each(record);
            true
        }
        None => false,
    })
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    #[test]
    fn records_round_trip_and_a_torn_tail_is_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = segment_path(dir.path(), 1);
        let records = [
            Record::SegmentStart { next_id: 7 },
            Record::Push {
                queue: "q",
                id: 7,
                attempts: 0,
                payload: b"hello",
            },
            Record::Attempt {
                queue: "q",
                id: 7,
                attempts: 2,
            },
            Record::Ack { queue: "q", id: 7 },
        ];
        let mut buf = Vec::new();
        for r in &records {
            encode(&mut buf, r);
        }
        let intact = buf.len() as u64;
        // Half of a further record, as a crash in the middle of a write leaves it.
        let mut tail = Vec::new();
        encode(
            &mut tail,
            &Record::Push {
                queue: "q",
                id: 8,
                attempts: 0,
                payload: b"lost",
            },
        );
        buf.extend_from_slice(&tail[..tail.len() / 2]);
        fs::write(&path, &buf).expect("write");

        let mut kinds = Vec::new();
        let outcome = read_segment(&path, |r| kinds.push(format!("{r:?}"))).expect("read");
        assert_eq!(kinds.len(), 4);
        assert!(kinds[1].contains("104, 101, 108, 108, 111"));
        assert_eq!(
            outcome,
            ReadOutcome {
                valid_len: intact,
                torn: true
            }
        );
    }
}
