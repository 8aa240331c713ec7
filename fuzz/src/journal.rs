//! The telemetry outbox journal, read when the agent starts after a crash: the file may hold
//! anything (a torn write, a disk error, an older format), and recovery must return the
//! records it can trust and never panic.

/// The bytes as the journal file, and again with each frame's CRC-32 made right (a mutated
/// frame almost never carries the CRC of its payload, which would stop recovery at the first
/// frame); each recovered from `seq` 0 and from a `seq` taken from the input, as the agent does
/// with the store's last `seq`.
pub fn recover(data: &[u8]) {
    let from_seq = data
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes);
    for bytes in [data.to_vec(), with_crcs(data)] {
        let path = crate::write_scratch("outbox.journal", &bytes);
        for from in [0, from_seq] {
            match edgefleet_agent::parsers::recover_journal(&path, from) {
                Ok(records) => {
                    // Consecutive `seq`s, all at or after `from`.
                    for pair in records.windows(2) {
                        assert_eq!(pair[0].seq.checked_add(1), Some(pair[1].seq));
                    }
                    assert!(records.iter().all(|r| r.seq >= from));
                }
                Err(e) => panic!("reading a journal file that exists: {e}"),
            }
        }
    }
}

/// `data` with the CRC field of each frame (`EFJ1`, length, CRC-32, payload) set to its
/// payload's CRC-32, frame after frame from the start while the frames fit.
fn with_crcs(data: &[u8]) -> Vec<u8> {
    let mut out = data.to_vec();
    let mut at = 0usize;
    while at + 12 <= out.len() && &out[at..at + 4] == b"EFJ1" {
        let len = u32::from_le_bytes([out[at + 4], out[at + 5], out[at + 6], out[at + 7]]) as usize;
        let Some(payload) = out.get(at + 12..at + 12 + len) else {
            break;
        };
        let crc = crc32fast::hash(payload).to_le_bytes();
        out[at + 8..at + 12].copy_from_slice(&crc);
        at += 12 + len;
    }
    out
}
