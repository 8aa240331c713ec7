//! The outbox journal: where a batch of telemetry records becomes durable before the store
//! has it. The store's commit writes a dozen pages and the file grows, so its flush waits for
//! the file system's journal as well; here a batch is one write into a file of fixed size whose
//! blocks are already allocated and written, then `fdatasync` (about a third of the time here,
//! see docs/decisions.md). The outbox writer copies journaled records into the store without
//! waiting for the disk, and makes the store durable each second, when the journal is full and
//! on `flush`, after which the journal starts again from its beginning. When the agent starts,
//! records the journal holds beyond the store's are put into the store first
//! ([`Journal::recover`]).
//!
//! A frame: `MAGIC`, the payload's length and its CRC-32 (little-endian u32 each), then the
//! payload: the first record's `seq` (u64), the record count (u32), and each record's
//! acceptance time (u64, ms), length (u32) and bytes. Frames follow each other from offset 0
//! with consecutive `seq`s; reading stops at the first frame that is torn, fails its CRC or does
//! not continue the sequence (the frames of an earlier pass through the file have lower
//! `seq`s).

use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::FileExt as _;
use std::path::Path;

use crate::store::OutboxRecord;

const MAGIC: &[u8; 4] = b"EFJ1";
const HEADER: usize = 12;
/// Size of the journal file.
pub const JOURNAL_BYTES: u64 = 16 * 1024 * 1024;

#[derive(Debug)]
pub struct Journal {
    file: File,
    /// Where the next frame goes.
    end: u64,
}

impl Journal {
    /// Opens the journal at `path`, creating it (written with zeros, so that a later write
    /// changes no file system metadata) when it is missing or of another size. The next
    /// frame goes at its beginning: open it only once its records are in the store.
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        if file.metadata()?.len() != JOURNAL_BYTES {
            file.set_len(0)?;
            let zeros = vec![0u8; 1024 * 1024];
            let mut writer = &file;
            for _ in 0..JOURNAL_BYTES / zeros.len() as u64 {
                writer.write_all(&zeros)?;
            }
            file.sync_all()?;
            if let Some(dir) = path.parent() {
                File::open(dir)?.sync_all()?;
            }
        }
        Ok(Self { file, end: 0 })
    }

    /// The records with `seq >= from_seq` in the frames at `path` (none when there is no
    /// journal), in `seq` order.
    pub fn recover(path: &Path, from_seq: u64) -> io::Result<Vec<OutboxRecord>> {
        let file = match File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let size = file.metadata()?.len();
        let mut records = Vec::new();
        let mut at = 0;
        let mut next_seq = None;
        let mut header = [0u8; HEADER];
        let mut payload = Vec::new();
        while at + HEADER as u64 <= size {
            file.read_exact_at(&mut header, at)?;
            let payload_len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
            if &header[..4] != MAGIC || at + (HEADER as u64) + u64::from(payload_len) > size {
                break;
            }
            payload.resize(payload_len as usize, 0);
            file.read_exact_at(&mut payload, at + HEADER as u64)?;
            let crc = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
            let Some(frame) = (crc32fast::hash(&payload) == crc)
                .then(|| read_payload(&payload))
                .flatten()
            else {
                break;
            };
            if next_seq.is_some_and(|next| next != frame.first_seq) {
                break;
            }
            next_seq = Some(frame.first_seq + frame.records.len() as u64);
            records.extend(frame.records.into_iter().filter(|r| r.seq >= from_seq));
            at += (HEADER + payload.len()) as u64;
        }
        Ok(records)
    }

    /// Whether a frame of `records` would fit after the frames written since the beginning.
    pub fn fits(&self, records: &[OutboxRecord]) -> bool {
        self.end + frame_len(records) as u64 <= JOURNAL_BYTES
    }

    /// Writes `records` (consecutive `seq`s) as the next frame and returns once they are on
    /// disk. The caller checks [`Journal::fits`] first.
    pub fn append(&mut self, records: &[OutboxRecord]) -> io::Result<()> {
        let mut frame = Vec::with_capacity(frame_len(records));
        frame.extend_from_slice(MAGIC);
        frame.extend_from_slice(&[0; 8]);
        frame.extend_from_slice(&records.first().map_or(0, |r| r.seq).to_le_bytes());
        frame.extend_from_slice(&(records.len() as u32).to_le_bytes());
        for record in records {
            frame.extend_from_slice(&record.accepted_ms.to_le_bytes());
            frame.extend_from_slice(&(record.payload.len() as u32).to_le_bytes());
            frame.extend_from_slice(&record.payload);
        }
        let payload_len = (frame.len() - HEADER) as u32;
        let crc = crc32fast::hash(&frame[HEADER..]);
        frame[4..8].copy_from_slice(&payload_len.to_le_bytes());
        frame[8..12].copy_from_slice(&crc.to_le_bytes());
        self.file.write_all_at(&frame, self.end)?;
        self.file.sync_data()?;
        self.end += frame.len() as u64;
        Ok(())
    }

    /// Starts again from the beginning: every record written so far is durable in the store.
    /// The first frame is marked invalid (without waiting for the disk), so that opening the
    /// store after a clean stop reads nothing here.
    pub fn restart(&mut self) -> io::Result<()> {
        if self.end > 0 {
            self.file.write_all_at(&[0; 4], 0)?;
        }
        self.end = 0;
        Ok(())
    }
}

fn frame_len(records: &[OutboxRecord]) -> usize {
    HEADER + 12 + records.iter().map(|r| 12 + r.payload.len()).sum::<usize>()
}

struct Frame {
    first_seq: u64,
    records: Vec<OutboxRecord>,
}

/// A frame's payload, if it is whole.
fn read_payload(payload: &[u8]) -> Option<Frame> {
    let u32_at = |at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(
            payload.get(at..at + 4)?.try_into().ok()?,
        ))
    };
    let u64_at = |at: usize| -> Option<u64> {
        Some(u64::from_le_bytes(
            payload.get(at..at + 8)?.try_into().ok()?,
        ))
    };
    let first_seq = u64_at(0)?;
    let count = u32_at(8)? as usize;
    let mut records = Vec::with_capacity(count.min(payload.len() / 12));
    let mut at = 12;
    for seq in (first_seq..).take(count) {
        let accepted_ms = u64_at(at)?;
        let len = u32_at(at + 8)? as usize;
        records.push(OutboxRecord {
            seq,
            accepted_ms,
            payload: payload.get(at + 12..at + 12 + len)?.to_vec(),
        });
        at += 12 + len;
    }
    Some(Frame { first_seq, records })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(first: u64, values: &[&str]) -> Vec<OutboxRecord> {
        (first..)
            .zip(values)
            .map(|(seq, v)| OutboxRecord {
                seq,
                accepted_ms: seq * 1000,
                payload: v.as_bytes().to_vec(),
            })
            .collect()
    }

    #[test]
    fn frames_are_read_back_in_order_until_the_sequence_breaks() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("outbox.journal");
        assert!(Journal::recover(&path, 0).expect("none").is_empty());

        let mut journal = Journal::open(&path).expect("open");
        assert_eq!(std::fs::metadata(&path).expect("size").len(), JOURNAL_BYTES);
        journal.append(&records(1, &["a", "b"])).expect("append");
        journal.append(&records(3, &["c"])).expect("append");
        assert_eq!(
            Journal::recover(&path, 0).expect("read"),
            records(1, &["a", "b", "c"])
        );

        // A second pass: the frame of seq 4 replaces the first frame; the old second frame
        // (seq 3) does not continue it and is not read.
        journal.restart().expect("restart");
        assert!(
            Journal::recover(&path, 0).expect("read").is_empty(),
            "after a restart nothing is read until the next frame"
        );
        journal.append(&records(4, &["dd", "e"])).expect("append");
        assert_eq!(
            Journal::recover(&path, 0).expect("read"),
            records(4, &["dd", "e"])
        );
        assert_eq!(
            Journal::recover(&path, 5).expect("read"),
            records(5, &["e"]),
            "records below from_seq are left out"
        );

        // Reopening keeps the file (no new zeros) and writes from the beginning.
        drop(journal);
        let mut journal = Journal::open(&path).expect("reopen");
        assert_eq!(
            Journal::recover(&path, 0).expect("read"),
            records(4, &["dd", "e"])
        );
        journal.append(&records(6, &["f"])).expect("append");
        assert_eq!(
            Journal::recover(&path, 0).expect("read"),
            records(6, &["f"])
        );
    }

    #[test]
    fn a_torn_or_corrupt_frame_ends_the_journal() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("outbox.journal");
        let mut journal = Journal::open(&path).expect("open");
        journal.append(&records(1, &["first"])).expect("append");
        let second = journal.end;
        journal.append(&records(2, &["second"])).expect("append");
        let file = OpenOptions::new().write(true).open(&path).expect("file");
        // One byte of the second frame's payload changed: its CRC fails.
        file.write_all_at(b"X", second + HEADER as u64 + 14)
            .expect("corrupt");
        assert_eq!(
            Journal::recover(&path, 0).expect("read"),
            records(1, &["first"])
        );
        // A frame cut short (its length runs past the file) ends it too.
        file.write_all_at(&u32::MAX.to_le_bytes(), 4).expect("tear");
        assert!(Journal::recover(&path, 0).expect("read").is_empty());
    }

    #[test]
    fn a_frame_that_does_not_fit_is_refused_before_it_is_written() {
        let dir = tempfile::tempdir().expect("dir");
        let mut journal = Journal::open(&dir.path().join("outbox.journal")).expect("open");
        let big = vec![OutboxRecord {
            seq: 1,
            accepted_ms: 0,
            payload: vec![0u8; JOURNAL_BYTES as usize],
        }];
        assert!(!journal.fits(&big));
        let small = records(1, &["a"]);
        assert!(journal.fits(&small));
        journal.end = JOURNAL_BYTES - frame_len(&small) as u64;
        assert!(journal.fits(&small));
        journal.end += 1;
        assert!(!journal.fits(&small));
    }
}
