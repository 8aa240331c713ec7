//! The outbox journal: where a batch of telemetry records becomes durable before the store
//! has it. The store's commit writes a dozen pages and the file grows, so its flush waits for
//! the file system's journal as well; here a batch is one write into a file of fixed size whose
//! blocks are already allocated and written, then `fdatasync` (about a third of the time here,
//! see docs/decisions.md). The outbox copies journaled records into the store without waiting
//! for the disk, and makes the store durable (a checkpoint) each second, when a half is full
//! and on `flush`.
//!
//! The file has two halves, written in turn: when the outbox moves on to the other half, the
//! checkpoint of the records in the half it left runs while new batches go on into the other
//! one, so no answer waits for the store's commit. A half is used again only once its
//! checkpoint is done. When the agent starts, records the journal holds beyond the store's are
//! put into the store first ([`Journal::recover`]).
//!
//! A frame: `MAGIC`, the payload's length and its CRC-32 (little-endian u32 each), then the
//! payload: the first record's `seq` (u64), the record count (u32), and each record's
//! acceptance time (u64, ms), length (u32) and bytes. Frames follow each other from the start
//! of a half with consecutive `seq`s; reading a half stops at the first frame that is torn,
//! fails its CRC or does not continue the sequence (the frames of an earlier use of the half
//! have lower `seq`s).

use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::FileExt as _;
use std::path::Path;

use super::record::OutboxRecord;

const MAGIC: &[u8; 4] = b"EFJ1";
const HEADER: usize = 12;
/// Size of the journal file.
pub const JOURNAL_BYTES: u64 = 16 * 1024 * 1024;
/// Size of each of its halves.
const HALF_BYTES: u64 = JOURNAL_BYTES / 2;

#[derive(Debug)]
pub struct Journal {
    file: File,
    /// Where the half being written starts.
    half: u64,
    /// Where the next frame goes in it.
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
        Ok(Self {
            file,
            half: 0,
            end: 0,
        })
    }

    /// The records with `seq >= from_seq` in the frames at `path` (none when there is no
    /// journal), in `seq` order, as far as their `seq`s follow each other.
    pub fn recover(path: &Path, from_seq: u64) -> io::Result<Vec<OutboxRecord>> {
        let file = match File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let size = file.metadata()?.len();
        let mut records = Vec::new();
        for half in [0, HALF_BYTES] {
            read_half(&file, half, (half + HALF_BYTES).min(size), &mut records)?;
        }
        records.retain(|r| r.seq >= from_seq);
        records.sort_by_key(|r| r.seq);
        let run = records
            .windows(2)
            .take_while(|pair| pair[0].seq.checked_add(1) == Some(pair[1].seq))
            .count();
        records.truncate(run + 1);
        Ok(records)
    }

    /// Whether a frame of `records` would fit after the frames in the half being written.
    pub fn fits(&self, records: &[OutboxRecord]) -> bool {
        self.end + frame_len(records) as u64 <= HALF_BYTES
    }

    /// Whether the half being written has no frame yet.
    pub fn is_empty(&self) -> bool {
        self.end == 0
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
        self.file.write_all_at(&frame, self.half + self.end)?;
        self.file.sync_data()?;
        self.end += frame.len() as u64;
        Ok(())
    }

    /// Moves on to the other half, whose records must all be durable in the store.
    pub fn switch(&mut self) {
        self.half = HALF_BYTES - self.half;
        self.end = 0;
    }
}

/// Appends the records of the frames in `[start, end)` of `file` that follow each other.
fn read_half(file: &File, start: u64, end: u64, records: &mut Vec<OutboxRecord>) -> io::Result<()> {
    let mut at = start;
    let mut next_seq = None;
    let mut header = [0u8; HEADER];
    let mut payload = Vec::new();
    while at + HEADER as u64 <= end {
        file.read_exact_at(&mut header, at)?;
        let payload_len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if &header[..4] != MAGIC || at + (HEADER as u64) + u64::from(payload_len) > end {
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
        // read_payload checked that the frame's `seq`s fit in a u64.
        next_seq = Some(frame.first_seq + frame.records.len() as u64);
        records.extend(frame.records);
        at += (HEADER + payload.len()) as u64;
    }
    Ok(())
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
    // A frame whose `seq`s would pass u64::MAX was not written by the outbox.
    first_seq.checked_add(count as u64)?;
    let mut records = Vec::with_capacity(count.min(payload.len() / 12));
    let mut at = 12;
    for seq in (0..count as u64).map(|i| first_seq + i) {
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
    fn frames_are_read_back_in_order_from_both_halves() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("outbox.journal");
        assert!(Journal::recover(&path, 0).expect("none").is_empty());

        let mut journal = Journal::open(&path).expect("open");
        assert_eq!(std::fs::metadata(&path).expect("size").len(), JOURNAL_BYTES);
        assert!(journal.is_empty());
        journal.append(&records(1, &["a", "b"])).expect("append");
        journal.append(&records(3, &["c"])).expect("append");
        assert!(!journal.is_empty());
        assert_eq!(
            Journal::recover(&path, 0).expect("read"),
            records(1, &["a", "b", "c"])
        );

        // The second half's frames follow on from the first's.
        journal.switch();
        assert!(journal.is_empty());
        journal.append(&records(4, &["dd", "e"])).expect("append");
        assert_eq!(
            Journal::recover(&path, 0).expect("read"),
            records(1, &["a", "b", "c", "dd", "e"])
        );
        assert_eq!(
            Journal::recover(&path, 5).expect("read"),
            records(5, &["e"]),
            "records below from_seq are left out"
        );

        // Back in the first half, the frame of seq 6 replaces its first frame; the old second
        // frame (seq 3) does not continue it and is not read.
        journal.switch();
        journal.append(&records(6, &["f"])).expect("append");
        assert_eq!(
            Journal::recover(&path, 0).expect("read"),
            records(4, &["dd", "e", "f"])
        );

        // Reopening keeps the file (no new zeros) and writes from the first half's beginning.
        drop(journal);
        let mut journal = Journal::open(&path).expect("reopen");
        assert_eq!(
            Journal::recover(&path, 6).expect("read"),
            records(6, &["f"])
        );
        journal.append(&records(7, &["g"])).expect("append");
        assert_eq!(
            Journal::recover(&path, 7).expect("read"),
            records(7, &["g"])
        );
        // Records that do not follow on from the first one read are left out.
        assert_eq!(
            Journal::recover(&path, 0).expect("read"),
            records(4, &["dd", "e"])
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
        journal.end = HALF_BYTES - frame_len(&small) as u64;
        assert!(journal.fits(&small));
        journal.end += 1;
        assert!(!journal.fits(&small));
    }

    /// Found by `scripts/fuzz outbox_journal` (fuzz/regressions/outbox_journal/ keeps the
    /// input): a frame with a valid CRC whose first `seq` is u64::MAX made recovery overflow,
    /// a panic at start in a debug build and a wrapped `seq` in a release one. Such a frame
    /// is not the outbox's and ends the half like a corrupt one.
    #[test]
    fn a_frame_whose_seqs_pass_the_largest_seq_ends_the_journal_without_a_panic() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("outbox.journal");
        let record = |seq: u64| OutboxRecord {
            seq,
            accepted_ms: 1,
            payload: b"x".to_vec(),
        };
        let mut journal = Journal::open(&path).expect("open");
        journal.append(&[record(u64::MAX)]).expect("append");
        assert!(Journal::recover(&path, 0).expect("recover").is_empty());

        let mut journal = Journal::open(&path).expect("open");
        journal
            .append(&[record(u64::MAX - 2), record(u64::MAX - 1)])
            .expect("append");
        let seqs: Vec<u64> = Journal::recover(&path, 0)
            .expect("recover")
            .iter()
            .map(|r| r.seq)
            .collect();
        assert_eq!(seqs, [u64::MAX - 2, u64::MAX - 1]);
    }
}
