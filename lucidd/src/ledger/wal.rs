//! The write-ahead log in front of redb: how a small commit costs one sequential write
//! and one `fdatasync`.
//!
//! Each commit group is appended to a preallocated, pre-zeroed file and synced before
//! anyone is acknowledged; the same group goes into redb in a non-durable transaction.
//! When redb next commits durably (every checkpoint), everything in the log is in redb
//! and the log starts over at offset 0. On open, groups that redb lacks are replayed.
//!
//! A group is `magic u32 | len u32 | first_seq u64 | count u32 | crc32 u32 | payload`
//! where the payload is packed record encodings and the CRC covers `first_seq`,
//! `count` and the payload. Replay stops at the first group that is torn (bad magic or
//! CRC) or does not continue the ledger: after a restart at offset 0 the bytes beyond
//! the write position are older groups, whose sequence numbers are all behind the head.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;

const MAGIC: u32 = 0x4c57_414c; // "LWAL"
const HEADER: usize = 24;

/// A group read back from the log.
pub struct WalGroup {
    /// Sequence number of its first record.
    pub first_seq: u64,
    /// Packed record encodings.
    pub packed: Vec<u8>,
}

/// The open log.
pub struct Wal {
    file: File,
    pos: u64,
}

impl Wal {
    /// Opens (creating and pre-zeroing `capacity` bytes if new) the log and returns
    /// every intact group in it, in order.
    pub fn open(path: &Path, capacity: u64) -> io::Result<(Wal, Vec<WalGroup>)> {
        let fresh = !path.exists();
        let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
        if fresh || file.metadata()?.len() < capacity {
            // Writing real zeros (not set_len or fallocate) means later writes only
            // overwrite initialised blocks, so fdatasync flushes data and no metadata.
            let zeros = vec![0u8; 1 << 20];
            let mut written = file.metadata()?.len();
            while written < capacity {
                file.write_all_at(&zeros, written)?;
                written += zeros.len() as u64;
            }
            file.sync_all()?;
            if let Some(dir) = path.parent() {
                File::open(dir)?.sync_all()?;
            }
        }
        let mut data = Vec::new();
        file.read_to_end(&mut data)?;
        Ok((Wal { file, pos: 0 }, parse(&data)))
    }

    /// Appends a group and syncs it to disk.
    pub fn append(&mut self, first_seq: u64, count: u32, packed: &[u8]) -> io::Result<()> {
        let mut buf = Vec::with_capacity(HEADER + packed.len());
        buf.extend_from_slice(&MAGIC.to_le_bytes());
        buf.extend_from_slice(&(packed.len() as u32).to_le_bytes());
        buf.extend_from_slice(&first_seq.to_le_bytes());
        buf.extend_from_slice(&count.to_le_bytes());
        buf.extend_from_slice(&crc(first_seq, count, packed).to_le_bytes());
        buf.extend_from_slice(packed);
        // A zeroed header after the group ends replay there even if older groups follow.
        buf.extend_from_slice(&[0u8; HEADER]);
        self.file.write_all_at(&buf, self.pos)?;
        self.file.sync_data()?;
        self.pos += (buf.len() - HEADER) as u64;
        Ok(())
    }

    /// Starts over at offset 0; call only after redb holds everything durably.
    pub fn reset(&mut self) {
        self.pos = 0;
    }

    /// Bytes written since the last reset.
    pub fn len(&self) -> u64 {
        self.pos
    }

    /// Whether nothing was written since the last reset.
    pub fn is_empty(&self) -> bool {
        self.pos == 0
    }
}

fn crc(first_seq: u64, count: u32, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&first_seq.to_le_bytes());
    h.update(&count.to_le_bytes());
    h.update(payload);
    h.finalize()
}

fn parse(data: &[u8]) -> Vec<WalGroup> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while let Some(head) = data.get(pos..pos + HEADER) {
        let word = |i: usize| u32::from_le_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
        if word(0) != MAGIC {
            break;
        }
        let len = word(4) as usize;
        let first_seq = u64::from_le_bytes([head[8], head[9], head[10], head[11], head[12], head[13], head[14], head[15]]);
        let count = word(16);
        let Some(payload) = data.get(pos + HEADER..pos + HEADER + len) else { break };
        if crc(first_seq, count, payload) != word(20) {
            break;
        }
        out.push(WalGroup { first_seq, packed: payload.to_vec() });
        pos += HEADER + len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_round_trip_and_torn_tail_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        let (mut wal, groups) = Wal::open(&path, 1 << 20).unwrap();
        assert!(groups.is_empty());
        wal.append(0, 1, b"abc").unwrap();
        wal.append(1, 2, b"defg").unwrap();
        drop(wal);
        let (mut wal, groups) = Wal::open(&path, 1 << 20).unwrap();
        assert_eq!(groups.iter().map(|g| g.first_seq).collect::<Vec<_>>(), vec![0, 1]);
        assert_eq!(groups[1].packed, b"defg");
        // After a reset the next group overwrites the first; replay ends after it.
        wal.reset();
        wal.append(3, 1, b"x").unwrap();
        drop(wal);
        let (_, groups) = Wal::open(&path, 1 << 20).unwrap();
        assert_eq!(groups.iter().map(|g| g.first_seq).collect::<Vec<_>>(), vec![3]);
        // A torn group (bad CRC) ends replay.
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(b"Z", HEADER as u64).unwrap();
        let (_, groups) = Wal::open(&path, 1 << 20).unwrap();
        assert!(groups.is_empty());
    }
}
