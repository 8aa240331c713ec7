//! The outbox's tests: seqs and store order across restarts and journal halves, frames and packing.

use super::*;
use edgefleet_common::telemetry::{EventRecord, MAX_MESSAGE_RECORDS};

fn event(error: &str) -> TelemetryRecord {
    TelemetryRecord::Event(EventRecord {
        source: None,
        error: error.to_owned(),
    })
}

#[tokio::test]
async fn records_get_consecutive_seqs_and_reach_the_store_in_order_across_a_restart() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("agent.redb");
    let store = Store::open(&path).expect("open");
    let outbox = Outbox::start(store.clone(), "device".into(), u64::MAX);
    let relay = AcceptanceRelay::start();
    let committed = outbox.committed.clone();
    assert_eq!(outbox.record("m", event("a")).await.expect("a"), 1);
    assert_eq!(
        outbox
            .record_through(&relay, "m", event("b"))
            .await
            .expect("b"),
        2
    );
    outbox.submit("n", event("c")).expect("c");
    // Acknowledged records reach the store (where the link reads them) without a flush.
    tokio::time::timeout(Duration::from_secs(10), committed.notified())
        .await
        .expect("the store has the acknowledged records");
    outbox.flush().await;
    drop(outbox);
    drop(store);

    // A new outbox on the reopened store (once the writer has let it go) continues the
    // sequence.
    let store = Store::open_waiting(&path, Duration::from_secs(10)).expect("reopen");
    let outbox = Outbox::start(store.clone(), "device".into(), u64::MAX);
    assert_eq!(outbox.record("m", event("d")).await.expect("d"), 4);
    outbox.flush().await;
    let records = store.outbox_after(0, 10).expect("read");
    let summary: Vec<_> = records
        .iter()
        .map(|r| {
            let (module, json) = unframe(&r.payload).expect("framed");
            let envelope: serde_json::Value = serde_json::from_slice(json).expect("json");
            (
                r.seq,
                module.to_owned(),
                envelope["seq"].as_u64(),
                envelope["body"]["error"].clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (1, "m".to_owned(), Some(1), "a".into()),
            (2, "m".to_owned(), Some(2), "b".into()),
            (3, "n".to_owned(), Some(3), "c".into()),
            (4, "m".to_owned(), Some(4), "d".into()),
        ]
    );
}

#[tokio::test]
async fn records_that_fill_the_journals_halves_or_do_not_fit_one_reach_the_store_in_order() {
    let dir = tempfile::tempdir().expect("dir");
    let store = Store::open(&dir.path().join("agent.redb")).expect("open");
    let outbox = Outbox::start(store.clone(), "device".into(), u64::MAX);
    // 40 records of 512 KiB fill each 8 MiB half more than once; the 9 MiB one fits no
    // half and is committed to the store instead.
    let sizes: Vec<usize> = (0..40)
        .map(|i| if i == 25 { 9 << 20 } else { 512 << 10 })
        .collect();
    for (i, size) in sizes.iter().enumerate() {
        let seq = outbox
            .record("m", event(&"x".repeat(*size)))
            .await
            .expect("recorded");
        assert_eq!(seq, i as u64 + 1);
    }
    outbox.flush().await;
    let stored: Vec<_> = store
        .outbox_after(0, 100)
        .expect("read")
        .iter()
        .map(|r| {
            let (_, json) = unframe(&r.payload).expect("framed");
            let envelope: serde_json::Value = serde_json::from_slice(json).expect("json");
            (
                r.seq,
                envelope["body"]["error"].as_str().map_or(0, str::len),
            )
        })
        .collect();
    let expected: Vec<_> = (1..).zip(sizes).collect();
    assert_eq!(stored, expected);
}

#[test]
fn frames_round_trip() {
    let f = frame("diabetes", b"{\"a\":1}");
    assert_eq!(unframe(&f), Some(("diabetes", &b"{\"a\":1}"[..])));
    assert_eq!(unframe(&[0]), None);
}

fn record(seq: u64, module: &str, json: &str) -> OutboxRecord {
    OutboxRecord {
        seq,
        accepted_ms: 0,
        payload: frame(module, json.as_bytes()),
    }
}

#[test]
fn consecutive_records_of_a_module_share_a_message() {
    let mut records = vec![
        record(1, "a", "1"),
        record(2, "a", "2"),
        OutboxRecord {
            seq: 3,
            accepted_ms: 0,
            payload: vec![9],
        },
        record(4, "b", "4"),
        record(5, "a", "5"),
    ];
    let (messages, through) = pack(&records, 10);
    let summary: Vec<_> = messages
        .iter()
        .map(|m| {
            (
                m.module.as_str(),
                m.last_seq,
                String::from_utf8_lossy(&m.payload).into_owned(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("a", 2, "[1,2]".to_owned()),
            ("b", 4, "[4]".to_owned()),
            ("a", 5, "[5]".to_owned())
        ]
    );
    assert_eq!(through, 5);
    // A message limit stops before the next message begins.
    let (messages, through) = pack(&records, 2);
    assert_eq!(messages.len(), 2);
    assert_eq!(through, 4);
    // A full message starts the next one.
    records = (1..=MAX_MESSAGE_RECORDS as u64 + 1)
        .map(|s| record(s, "a", "0"))
        .collect();
    let (messages, _) = pack(&records, 10);
    assert_eq!(
        messages.iter().map(|m| m.last_seq).collect::<Vec<_>>(),
        [MAX_MESSAGE_RECORDS as u64, MAX_MESSAGE_RECORDS as u64 + 1]
    );
    // A trailing record that cannot be sent is consumed.
    let (messages, through) = pack(
        &[OutboxRecord {
            seq: 9,
            accepted_ms: 0,
            payload: vec![],
        }],
        10,
    );
    assert!(messages.is_empty());
    assert_eq!(through, 9);
}
