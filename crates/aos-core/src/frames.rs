//! The on-disk framing shared by the embedded durable backends (the work queue's log and the
//! state store's log): files of records, each `[body length: u32 LE][crc32 of body: u32 LE][body]`.
//!
//! A torn or corrupt record ends the readable part of a file: everything before it is intact, and
//! only a write that never completed (and so was never acknowledged to anyone) can be lost.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

/// Records larger than this are treated as corruption when reading.
const MAX_RECORD: usize = 256 * 1024 * 1024;

/// Appends one record to `buf`, its body written by `body`.
pub(crate) fn append(buf: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>)) {
    let start = buf.len();
    buf.extend_from_slice(&[0; 8]);
    body(buf);
    let body_len = (buf.len() - start - 8) as u32;
    let crc = crc32fast::hash(&buf[start + 8..]);
    buf[start..start + 4].copy_from_slice(&body_len.to_le_bytes());
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// What reading a file found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ReadOutcome {
    /// Bytes of intact records from the start.
    pub valid_len: u64,
    /// Whether bytes after `valid_len` had to be ignored.
    pub torn: bool,
}

/// Calls `each` with the body of every intact record of the file at `path`, in order, until it
/// returns false (a body it cannot decode counts as corruption).
pub(crate) fn read(path: &Path, mut each: impl FnMut(&[u8]) -> bool) -> io::Result<ReadOutcome> {
    let data = fs::read(path)?;
    let mut pos = 0usize;
    while pos + 8 <= data.len() {
        let len =
            u32::from_le_bytes([data[pos], data[pos + 1], data[pos + 2], data[pos + 3]]) as usize;
        let crc = u32::from_le_bytes([data[pos + 4], data[pos + 5], data[pos + 6], data[pos + 7]]);
        let Some(body) = data
            .get(pos + 8..pos + 8 + len)
            .filter(|_| len <= MAX_RECORD)
        else {
            break;
        };
        if crc32fast::hash(body) != crc || !each(body) {
            break;
        }
        pos += 8 + len;
    }
    Ok(ReadOutcome {
        valid_len: pos as u64,
        torn: pos != data.len(),
    })
}

pub(crate) fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:020}.seg"))
}

/// Segment numbers present in `dir`, ascending.
pub(crate) fn list_segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut numbers: Vec<u64> = fs::read_dir(dir)?
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let name = entry.file_name();
            let name = name.to_str()?;
            name.strip_suffix(".seg")?.parse().ok()
        })
        .collect();
    numbers.sort_unstable();
    Ok(numbers)
}

/// A length-prefixed field of a record body: at most `u32::MAX` bytes.
pub(crate) fn put_bytes(buf: &mut Vec<u8>, bytes: &[u8]) {
    buf.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    buf.extend_from_slice(bytes);
}

/// Reads a field written by [`put_bytes`] from the front of `rest`.
pub(crate) fn take_bytes<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let bytes = rest.get(4..4 + len)?;
    *rest = &rest[4 + len..];
    Some(bytes)
}

/// Locks `dir` for this process (an exclusive `flock` on `dir/LOCK`, held while the file is open):
/// two processes appending to one log would corrupt it.
pub(crate) fn lock_dir(dir: &Path) -> io::Result<File> {
    use std::os::fd::AsRawFd;
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("LOCK"))?;
    // SAFETY: flock on a file descriptor we own; no memory is involved.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let err = io::Error::last_os_error();
        return Err(if err.kind() == io::ErrorKind::WouldBlock {
            io::Error::new(
                io::ErrorKind::WouldBlock,
                format!(
                    "the directory {} is in use by another process; stop it, or give this node its own `node.data_dir`",
                    dir.display()
                ),
            )
        } else {
            err
        });
    }
    Ok(file)
}
