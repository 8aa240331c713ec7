//! The delivery rule, branch by branch: duplicates, gaps, floors, pages and several devices.

use super::*;

/// What a backend read of a device committed through `committed` that has `seqs` stored (all
/// of them: the page was not full).
fn read(committed: u64, seqs: impl IntoIterator<Item = u64>) -> Stored {
    Stored::above(committed, seqs, usize::MAX)
}

fn one(device: &str, stored: Stored) -> BTreeMap<&str, Stored> {
    BTreeMap::from([(device, stored)])
}

fn keys(device: &str, seqs: impl IntoIterator<Item = u64>) -> Vec<(&str, u64)> {
    seqs.into_iter().map(|s| (device, s)).collect()
}

#[test]
fn an_empty_message_delivers_nothing_and_acknowledges_no_device() {
    assert_eq!(deliver(&[], &[], &BTreeMap::new()), Delivery::default());
    assert!(devices(&[], &[]).is_empty());
}

#[test]
fn new_contiguous_records_are_all_stored_and_acknowledged_through_the_last() {
    let delivery = deliver(&keys("gw", 1..=3), &[], &one("gw", Stored::default()));
    assert_eq!(delivery.insert, [0, 1, 2]);
    assert!(delivery.duplicates.is_empty());
    assert_eq!(delivery.committed, BTreeMap::from([("gw", 3)]));
    assert!(delivery.read_on.is_empty());
}

#[test]
fn a_device_the_backend_did_not_read_has_nothing_stored() {
    let delivery = deliver(&keys("gw", [1, 2]), &[], &BTreeMap::new());
    assert_eq!(delivery.insert, [0, 1]);
    assert_eq!(delivery.committed, BTreeMap::from([("gw", 2)]));
}

#[test]
fn a_repeat_within_the_message_is_stored_once_the_first_one() {
    let delivery = deliver(&keys("gw", [1, 2, 2, 3, 1]), &[], &BTreeMap::new());
    assert_eq!(delivery.insert, [0, 1, 3]);
    assert_eq!(delivery.duplicates, [2, 4]);
    assert_eq!(delivery.committed["gw"], 3);
}

#[test]
fn a_seq_already_stored_is_not_stored_again_and_is_acknowledged_again() {
    // 2 is stored and committed; 4 is stored above a gap at 3.
    let mut stored = read(2, [4]);
    stored.seqs.insert(2);
    let delivery = deliver(&keys("gw", [2, 3, 3, 4]), &[], &one("gw", stored));
    assert_eq!(delivery.insert, [1]);
    assert_eq!(delivery.duplicates, [0, 2, 3]);
    assert_eq!(delivery.committed["gw"], 4);
}

#[test]
fn only_repeats_leave_the_acknowledgement_where_it_was() {
    let mut stored = read(5, []);
    stored.seqs.extend([4, 5]);
    let delivery = deliver(&keys("gw", [4, 5]), &[], &one("gw", stored));
    assert!(delivery.insert.is_empty());
    assert_eq!(delivery.duplicates, [0, 1]);
    assert_eq!(delivery.committed["gw"], 5);
}

#[test]
fn a_gap_stops_the_acknowledgement_before_it() {
    let delivery = deliver(&keys("gw", [1, 2, 4, 5]), &[], &BTreeMap::new());
    assert_eq!(delivery.insert, [0, 1, 2, 3]);
    assert_eq!(delivery.committed["gw"], 2);
    // Stored records above the committed seq do not pass a gap either.
    let delivery = deliver(&keys("gw", [4]), &[], &one("gw", read(2, [5, 6])));
    assert_eq!(delivery.committed["gw"], 2);
}

#[test]
fn a_record_filling_the_gap_moves_the_acknowledgement_through_the_stored_ones_after_it() {
    let delivery = deliver(&keys("gw", [3]), &[], &one("gw", read(2, [4, 5, 7])));
    assert_eq!(delivery.insert, [0]);
    assert_eq!(delivery.committed["gw"], 5);
    // Out of order within the message too.
    let delivery = deliver(&keys("gw", [5, 4, 3]), &[], &one("gw", read(2, [])));
    assert_eq!(delivery.committed["gw"], 5);
}

#[test]
fn records_below_the_committed_seq_that_are_not_stored_are_stored() {
    // Dropped by the retention, say, and sent again.
    let delivery = deliver(&keys("gw", [1, 2]), &[], &one("gw", read(7, [])));
    assert_eq!(delivery.insert, [0, 1]);
    assert_eq!(delivery.committed["gw"], 7);
}

#[test]
fn a_floor_below_the_committed_seq_changes_nothing() {
    let delivery = deliver(&[], &[("gw", 3)], &one("gw", read(5, [7])));
    assert_eq!(delivery.committed, BTreeMap::from([("gw", 5)]));
}

#[test]
fn a_floor_above_the_committed_seq_moves_it_there_and_on_through_what_is_stored() {
    // The device dropped 5..=9: it holds 10 on, and the fleet has 10 and 11.
    let delivery = deliver(&[], &[("gw", 9)], &one("gw", read(4, [10, 11, 13])));
    assert_eq!(delivery.committed, BTreeMap::from([("gw", 11)]));
    // With records arriving in the same message.
    let delivery = deliver(
        &keys("gw", [12]),
        &[("gw", 9)],
        &one("gw", read(4, [10, 11])),
    );
    assert_eq!(delivery.committed["gw"], 12);
    // Of several floors of a device, the highest counts.
    let floors = [("gw", 6), ("gw", 9), ("gw", 7)];
    let delivery = deliver(&[], &floors, &one("gw", read(4, [])));
    assert_eq!(delivery.committed["gw"], 9);
}

#[test]
fn a_device_that_said_a_floor_is_acknowledged_without_records() {
    let records = keys("a", [1]);
    let floors = [("b", 3)];
    assert_eq!(devices(&records, &floors), ["a", "b"]);
    let delivery = deliver(&records, &floors, &BTreeMap::new());
    assert_eq!(delivery.committed, BTreeMap::from([("a", 1), ("b", 3)]));
}

#[test]
fn several_devices_in_one_message_each_have_their_own_seqs() {
    let records = [("b", 1), ("a", 1), ("b", 2), ("a", 1), ("c", 5), ("b", 4)];
    let stored = BTreeMap::from([("a", read(0, [])), ("b", read(0, [])), ("c", read(3, [4]))]);
    assert_eq!(devices(&records, &[]), ["a", "b", "c"]);
    let delivery = deliver(&records, &[("c", 2)], &stored);
    assert_eq!(delivery.insert, [0, 1, 2, 4, 5]);
    assert_eq!(delivery.duplicates, [3]);
    assert_eq!(
        delivery.committed,
        BTreeMap::from([("a", 1), ("b", 2), ("c", 5)])
    );
}

#[test]
fn a_walk_past_a_full_page_reads_on_and_goes_on_through_the_next_pages() {
    // The backend read a page of 3 above 2: 4, 5, 6; there may be more.
    let page = Stored::above(2, [4, 5, 6], 3);
    assert_eq!(page.read_through, 6);
    let mut delivery = deliver(&keys("gw", [3]), &[], &one("gw", page));
    assert_eq!(delivery.insert, [0]);
    assert!(delivery.committed.is_empty());
    assert_eq!(delivery.read_on, BTreeMap::from([("gw", 6)]));
    // The next page is full too, and contiguous.
    delivery.walk_on(&one("gw", Stored::above(6, [7, 8, 9], 3)));
    assert_eq!(delivery.read_on, BTreeMap::from([("gw", 9)]));
    // The last one has a gap.
    delivery.walk_on(&one("gw", Stored::above(9, [10, 12], 3)));
    assert!(delivery.read_on.is_empty());
    assert_eq!(delivery.committed, BTreeMap::from([("gw", 10)]));
}

#[test]
fn a_walk_that_ends_within_a_full_page_does_not_read_on() {
    let page = Stored::above(2, [3, 5, 6], 3);
    let delivery = deliver(&[], &[], &one("gw", page));
    assert_eq!(delivery.committed, BTreeMap::from([("gw", 3)]));
    assert!(delivery.read_on.is_empty());
}

#[test]
fn a_walk_goes_past_the_page_through_arriving_and_matched_seqs_then_reads_on() {
    // The page ends at 4; 5 arrives and 6 is known stored (a repeat): 7 is unknown.
    let mut page = Stored::above(2, [3, 4], 2);
    page.seqs.insert(6);
    let mut delivery = deliver(&keys("gw", [5, 6]), &[], &one("gw", page));
    assert_eq!(delivery.insert, [0]);
    assert_eq!(delivery.duplicates, [1]);
    assert_eq!(delivery.read_on, BTreeMap::from([("gw", 6)]));
    // A floor past the page reads on from the floor.
    let delivery_floor = deliver(&[], &[("gw", 20)], &one("gw", Stored::above(2, [3, 4], 2)));
    assert_eq!(delivery_floor.read_on, BTreeMap::from([("gw", 20)]));
    // Nothing stored above 6: done. A device the walk does not read on is left as it was.
    delivery.walk_on(&BTreeMap::new());
    assert_eq!(delivery.committed, BTreeMap::from([("gw", 6)]));
    assert!(delivery.read_on.is_empty());
}

#[test]
fn a_page_that_is_not_full_holds_everything_above_the_committed_seq() {
    assert_eq!(Stored::above(2, [], 3).read_through, u64::MAX);
    assert_eq!(Stored::above(2, [3, 4], 3).read_through, u64::MAX);
    assert_eq!(Stored::above(2, [4, 3, 5], 3).read_through, 5);
    assert_eq!(Stored::default(), Stored::above(0, [], 1));
}

#[test]
fn the_highest_seq_ends_the_walk() {
    let delivery = deliver(&[], &[("gw", u64::MAX)], &BTreeMap::new());
    assert_eq!(delivery.committed, BTreeMap::from([("gw", u64::MAX)]));
    let delivery = deliver(
        &keys("gw", [u64::MAX]),
        &[("gw", u64::MAX - 1)],
        &BTreeMap::new(),
    );
    assert_eq!(delivery.committed["gw"], u64::MAX);
}
