//! The telemetry outbox journal, read when the agent starts after a crash: the file may hold
//! anything (a torn write, a disk error, an older format), and recovery must return the
//! records it can trust and never panic.

/// The bytes as the journal file, recovered from `seq` 0 and from a later `seq` taken from the
/// input, as the agent does with the store's last `seq`.
pub fn recover(data: &[u8]) {
    let path = crate::write_scratch("outbox.journal", data);
    let from_seq = data
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes);
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
