//! The telemetry delivery rule, for both backends: which records of a message are new (a
//! `(device, seq)` counts once: a repeat, against the store or earlier in the message, is a
//! duplicate; the embedded backend still writes a duplicate's envelope over the stored one,
//! PostgreSQL keeps the first) and each device's acknowledgement, its committed-through `seq`: the highest one up to
//! which the fleet has every record, or knows the device dropped them (a floor it said).
//!
//! The rule decides from what a backend read in its transaction and does no I/O, so the
//! embedded and PostgreSQL stores keep only their reads and writes and cannot drift apart.
//! A backend reads, per device, its stored committed seq, which of the message's seqs it has,
//! and a page of the seqs it has above the committed one ([`Stored`]); the acknowledgement
//! walks up through stored and arriving seqs. Should the walk run past the page, the backend
//! stores the new records, reads the next page and lets the walk go on
//! ([`Delivery::walk_on`]).

use std::collections::{BTreeMap, BTreeSet};

/// What a backend read of one device's telemetry in the transaction that stores a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Stored {
    /// The seq the device is committed through, as stored (0 before its first record).
    pub committed: u64,
    /// Seqs of the device that are stored: at least every stored one among the message's, and
    /// every stored one above `committed` up to `read_through`.
    pub seqs: BTreeSet<u64>,
    /// How far above `committed` `seqs` holds everything stored: `u64::MAX` when the backend
    /// read up to the device's newest record, else the last seq of the (full) page it read.
    pub read_through: u64,
}

impl Default for Stored {
    /// Nothing stored.
    fn default() -> Self {
        Self {
            committed: 0,
            seqs: BTreeSet::new(),
            read_through: u64::MAX,
        }
    }
}

impl Stored {
    /// What a backend read above `committed`: the stored seqs of a page of at most `page`
    /// of them, oldest first from `committed + 1`. A full page may stop short of the newest.
    pub fn above(committed: u64, seqs: impl IntoIterator<Item = u64>, page: usize) -> Self {
        let seqs: BTreeSet<u64> = seqs.into_iter().collect();
        let read_through = match seqs.last() {
            Some(&last) if seqs.len() >= page => last,
            _ => u64::MAX,
        };
        Self {
            committed,
            seqs,
            read_through,
        }
    }
}

/// What the rule makes of a message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Delivery<'a> {
    /// The records to store, as indices into the message: the first of each `(device, seq)`
    /// that is not stored yet, in message order.
    pub insert: Vec<usize>,
    /// The records not to store, as indices into the message: their `(device, seq)` is stored
    /// already or came earlier in the message.
    pub duplicates: Vec<usize>,
    /// Each device's new committed-through seq: its acknowledgement.
    pub committed: BTreeMap<&'a str, u64>,
    /// Devices whose walk went past the page their backend read, with the seq they are
    /// committed through so far: once `insert` is stored, the backend reads the next page
    /// above it and calls [`Delivery::walk_on`]. Empty when every device is in `committed`.
    pub read_on: BTreeMap<&'a str, u64>,
}

impl<'a> Delivery<'a> {
    /// Lets the walk of the devices in `read_on` go on, with what their backend read above
    /// the seq each reached (after storing `insert`); a device left out of `stored` is taken
    /// to have nothing stored above it.
    pub fn walk_on(&mut self, stored: &BTreeMap<&'a str, Stored>) {
        let walked = deliver(&[], &[], &self.read_on_stored(stored));
        self.read_on = walked.read_on;
        self.committed.extend(walked.committed);
    }

    fn read_on_stored(&self, stored: &BTreeMap<&'a str, Stored>) -> BTreeMap<&'a str, Stored> {
        self.read_on
            .iter()
            .map(|(&device, &through)| {
                let read = stored.get(device).cloned().unwrap_or_default();
                (
                    device,
                    Stored {
                        committed: through,
                        ..read
                    },
                )
            })
            .collect()
    }
}

/// The devices a message acknowledges, in order (the order in which a backend locks them):
/// every device it has records of, and every device that said a floor.
pub(super) fn devices<'a>(records: &[(&'a str, u64)], floors: &[(&'a str, u64)]) -> Vec<&'a str> {
    let devices: BTreeSet<&str> = records.iter().chain(floors).map(|&(d, _)| d).collect();
    devices.into_iter().collect()
}

/// The delivery rule. `records` are the message's `(device, seq)`s in order; `floors` the seqs
/// below which devices hold nothing any more (a device's highest counts); `stored` what the
/// backend read of each device of the message. Records below a device's committed seq are
/// stored like any other (they are kept until the retention drops them).
pub(super) fn deliver<'a>(
    records: &[(&'a str, u64)],
    floors: &[(&'a str, u64)],
    stored: &BTreeMap<&'a str, Stored>,
) -> Delivery<'a> {
    let nothing = Stored::default();
    let stored_of = |device: &str| stored.get(device).unwrap_or(&nothing);
    let mut delivery = Delivery::default();
    let mut arriving: BTreeMap<&str, BTreeSet<u64>> = BTreeMap::new();
    for (i, &(device, seq)) in records.iter().enumerate() {
        let seqs = arriving.entry(device).or_default();
        if stored_of(device).seqs.contains(&seq) || !seqs.insert(seq) {
            delivery.duplicates.push(i);
        } else {
            delivery.insert.push(i);
        }
    }
    let mut starts: BTreeMap<&str, u64> = devices(records, floors)
        .into_iter()
        .chain(stored.keys().copied())
        .map(|device| (device, stored_of(device).committed))
        .collect();
    for &(device, floor) in floors {
        if let Some(start) = starts.get_mut(device) {
            *start = (*start).max(floor);
        }
    }
    let none = BTreeSet::new();
    for (device, start) in starts {
        let read = stored_of(device);
        let arrived = arriving.get(device).unwrap_or(&none);
        let (through, read_on) = walk(start, read, arrived);
        if read_on {
            delivery.read_on.insert(device, through);
        } else {
            delivery.committed.insert(device, through);
        }
    }
    delivery
}

/// From `start`, the highest seq up to which every one is stored (`read`) or `arrived`, and
/// whether the walk stopped at a seq past what was read rather than at a gap.
fn walk(start: u64, read: &Stored, arrived: &BTreeSet<u64>) -> (u64, bool) {
    let mut through = start;
    while let Some(next) = through.checked_add(1) {
        if !(arrived.contains(&next) || read.seqs.contains(&next)) {
            return (through, next > read.read_through);
        }
        through = next;
    }
    (through, false)
}

#[cfg(test)]
mod tests;
